-- test_io_untrusted: checkpoints as untrusted input. Loading must never run
-- code from the file, must check every offset against the real file (again
-- at read time: the file may change after its header was read), must cap the
-- header and must refuse truncated or lying files with a message naming the
-- file. test_io.lua covers the format's own checks; this adds the hostile
-- cases and a mutation loop over the header (the C reader itself is fuzzed
-- by tests/fuzz/fuzz_io_file.c).
package.path = "tests/lua/?.lua;" .. package.path
local testlib = require "testlib"
local lu = testlib.lu
local ff = require "firefly"
local fio = require "firefly.io"
local cjson = require "cjson"

local read_file, write_file = testlib.read_file, testlib.write_file

local function st_bytes(header, data)
  return string.pack("<I8", #header) .. header .. (data or "")
end

local function floats(...)
  return string.pack("<" .. string.rep("f", select("#", ...)), ...)
end

-- pcall(loader, file with these bytes) -> ok, result or message
local function try_load(bytes, loader)
  local p = os.tmpname()
  write_file(p, bytes)
  local r = table.pack(pcall(loader or ff.load, p))
  os.remove(p)
  return table.unpack(r, 1, r.n)
end

local function load_error(bytes, loader)
  local ok, err = try_load(bytes, loader)
  lu.assertFalse(ok, "expected load to fail")
  err = tostring(err)
  lu.assertStrContains(err, "load")
  return err
end

-- A file whose data is one tensor "t" of shape {2} and whose object tree is
-- `tree` (a table, as JSON text inside the header's metadata string).
local function tree_file(tree)
  local header = string.format(
    '{"__metadata__":{"format":"firefly-1","firefly":%s},' ..
    '"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', cjson.encode(cjson.encode(tree)))
  return st_bytes(header, floats(1, 2))
end

---------------------------------------------------------------- no code runs

TestUntrustedCode = {}

-- Every way Lua can run code from text or from a file, watched while a
-- checkpoint loads: none may be used, and require only for Firefly's own
-- modules (the registered class prefixes).
function TestUntrustedCode:test_load_runs_no_code_from_the_file()
  local p = os.tmpname()
  ff.save(p, { model = ff.nn.Sequential(ff.nn.Linear(3, 2), ff.nn.ReLU()),
    code = "os.exit(1)", chunk = "return os.execute('touch /tmp/pwned')",
    meta = { __index = "os.exit", __gc = "x", __close = "y", __tostring = "z" } })
  local calls = {}
  local saved = { load = load, dofile = dofile, loadfile = loadfile, require = require }
  local function spy(name)
    return function(...)
      calls[#calls + 1] = name .. "(" .. tostring((...)) .. ")"
      return saved[name](...)
    end
  end
  load, dofile, loadfile = spy("load"), spy("dofile"), spy("loadfile")
  require = spy("require")
  local ok, r = pcall(ff.load, p)
  load, dofile, loadfile, require = saved.load, saved.dofile, saved.loadfile, saved.require
  os.remove(p)
  lu.assertTrue(ok, tostring(r))
  for _, c in ipairs(calls) do
    lu.assertNotNil(c:match("^require%(firefly[%.%w_]*%)$"), "load called " .. c)
  end
  lu.assertEquals(r.code, "os.exit(1)")
  -- Keys that are metamethod names are plain data: no metatable appears.
  lu.assertNil(getmetatable(r.meta))
  lu.assertEquals(r.meta.__index, "os.exit")
  lu.assertEquals(tostring(r.model), tostring(ff.nn.Sequential(ff.nn.Linear(3, 2), ff.nn.ReLU())))
end

-- A class name is never turned into a module name: only the prefixes of
-- io.class_modules (nn., optim.) load anything, and only Firefly's modules.
function TestUntrustedCode:test_unknown_class_prefix_requires_nothing()
  local dir = os.tmpname()
  os.remove(dir)
  os.execute("mkdir -p '" .. dir .. "'")
  write_file(dir .. "/evilmod.lua", "FF_PWNED = true; return {}")
  local old_path = package.path
  package.path = dir .. "/?.lua;" .. package.path
  for _, name in ipairs { "evilmod.X", "evilmod", "evilmod.nn.Linear", "nn/../evilmod.X" } do
    local err = load_error(tree_file { class = name, fields = {} })
    lu.assertStrContains(err, "not registered")
  end
  package.path = old_path
  os.execute("rm -rf '" .. dir .. "'")
  lu.assertNil(rawget(_G, "FF_PWNED"))
  lu.assertNil(package.loaded.evilmod)
end

-- Shared values are defined after their contents: a table referring to its
-- own id cannot build a cycle, it is an unknown reference.
function TestUntrustedCode:test_self_reference_is_an_error_not_a_cycle()
  local err = load_error(tree_file { id = 1, table = { { "a", { ref = 1 } } } })
  lu.assertStrContains(err, "unknown object id 1")
end

function TestUntrustedCode:test_deep_trees_fail_cleanly()
  -- Deeper than the JSON decoder's limit, in the header and in the tree.
  lu.assertStrContains(load_error(st_bytes(string.rep("[", 100000))), "not a JSON object")
  local deep = string.rep('{"table":[["a",', 2000) .. "true" .. string.rep("]]}", 2000)
  local header = string.format('{"__metadata__":{"format":"firefly-1","firefly":%s}}',
    cjson.encode(deep))
  lu.assertStrContains(load_error(st_bytes(header)), "not valid JSON")
end

---------------------------------------------------------------- sizes and offsets

TestUntrustedSizes = {}

-- The cap holds at its exact edge, before anything is allocated: a sparse
-- file long enough for the header it announces.
function TestUntrustedSizes:test_header_cap_at_its_edge()
  local p = os.tmpname()
  local f = assert(io.open(p, "wb"))
  f:write(string.pack("<I8", (100 << 20) + 1), "{")
  f:seek("set", (100 << 20) + 16)
  f:write("}")
  f:close()
  local ok, err = pcall(ff.load, p)
  os.remove(p)
  lu.assertFalse(ok)
  lu.assertStrContains(tostring(err), "header length 104857601 exceeds the limit of 104857600 bytes")
end

-- Offsets are checked again against the file when the data is read: the
-- file may have shrunk since its header was checked.
function TestUntrustedSizes:test_file_truncated_after_the_header_was_read()
  local p = os.tmpname()
  fio.save_tensors(p, { a = ff.arange(6) })
  local _, start, size = ff.io_read_header(p)
  write_file(p, read_file(p):sub(1, size - 4))
  local err = testlib.error_of(ff.io_read_tensor, p, start, 0, 24, { 6 })
  lu.assertStrContains(err, "truncated or corrupt")
  lu.assertStrContains(err, p)
  os.remove(p)
end

function TestUntrustedSizes:test_low_level_reader_refuses_hostile_ranges()
  local p = os.tmpname()
  fio.save_tensors(p, { a = ff.arange(4) })
  local _, start = ff.io_read_header(p)
  local function err(...) return testlib.error_of(ff.io_read_tensor, p, ...) end
  lu.assertStrContains(err(start, 4, 20, { 4 }), "beyond")
  lu.assertStrContains(err(start, -4, 12, { 4 }), "bad data range")
  lu.assertStrContains(err(start, 8, 4, { 1 }), "bad data range")
  lu.assertStrContains(err(0, 0, 16, { 4 }), "bad data range")
  lu.assertStrContains(err(start, 0, 16, { -4 }), "negative")
  lu.assertStrContains(err(start, 0, 16, { 2, 3 }), "needs 24")
  lu.assertStrContains(err(start + 1000, 0, 16, { 4 }), "beyond")
  os.remove(p)
end

-- An empty tensor whose other sizes are huge: 0 bytes of data, so the
-- offsets agree, but its strides would overflow; refused by the C reader.
function TestUntrustedSizes:test_empty_tensor_with_huge_sizes()
  local header = '{"t":{"dtype":"F32","shape":[0,1099511627776,1099511627776],' ..
    '"data_offsets":[0,0]}}'
  local err = load_error(st_bytes(header), fio.load_tensors)
  lu.assertStrContains(err, "too large")
end

-- The last of two entries with one name wins in the JSON decoder; the
-- other's bytes then belong to no tensor, which is refused.
function TestUntrustedSizes:test_duplicate_names_in_the_header()
  local header = '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},' ..
    '"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}'
  local err = load_error(st_bytes(header, floats(1, 2)), fio.load_tensors)
  lu.assertStrContains(err, "belong to no tensor")
end

function TestUntrustedSizes:test_truncated_file_names_the_file_and_the_cause()
  local p = os.tmpname()
  ff.save(p, { w = ff.ones(16) })
  local bytes = read_file(p)
  write_file(p, bytes:sub(1, #bytes - 1))
  local ok, err = pcall(ff.load, p)
  lu.assertFalse(ok)
  lu.assertStrContains(tostring(err), p)
  lu.assertStrContains(tostring(err), "truncated")
  os.remove(p)
end

---------------------------------------------------------------- mutation loop

TestUntrustedMutations = {}

local hostile_numbers = { 0, 1, 3, 4, 7, 8, 12, 16, 24, 28, -1, -4, 0.5, 1e300, 2 ^ 53,
  2 ^ 53 + 2, 2 ^ 62, 2 ^ 63, 2 ^ 64, 4294967296, 1099511627776 }

-- Random structured edits of a valid header (sizes, offsets, dtypes, extra
-- or missing entries, the object tree): every result loads consistently or
-- fails with a "load:" message; none crashes or hangs.
function TestUntrustedMutations:test_header_mutations_never_crash()
  local p = os.tmpname()
  ff.save(p, { w = ff.arange(6):view(2, 3), b = ff.ones(1), n = 2, s = "x" })
  local bytes = read_file(p)
  local n = string.unpack("<I8", bytes)
  local header, data = bytes:sub(9, 8 + n), bytes:sub(9 + n)
  local rng = ff.Generator(77)
  local function pick(t) return t[rng:random(#t)] end
  local loaded, failed = 0, 0
  for _ = 1, 300 do
    local h = cjson.decode(header)
    for _ = 1, rng:random(3) do
      local e = h[pick { "w", "b" }]
      local what = rng:random(7)
      if what == 1 then e.shape = { pick(hostile_numbers), pick(hostile_numbers) }
      elseif what == 2 then e.shape = { pick(hostile_numbers) }
      elseif what == 3 then e.data_offsets = { pick(hostile_numbers), pick(hostile_numbers) }
      elseif what == 4 then e.data_offsets[rng:random(2)] = pick(hostile_numbers)
      elseif what == 5 then e.dtype = pick { "F16", "I64", "", "F32 " }
      elseif what == 6 then h["x" .. rng:random(3)] = { dtype = "F32", shape = { 1 },
          data_offsets = { pick(hostile_numbers), pick(hostile_numbers) } }
      else
        local tree = h.__metadata__.firefly
        local i = rng:random(#tree)
        h.__metadata__.firefly = tree:sub(1, i - 1) .. string.char(rng:random(256) - 1) ..
          tree:sub(i + 1)
      end
    end
    local cut = rng:random(8) == 1 and rng:random(#data) - 1 or #data
    local file = st_bytes(cjson.encode(h), data:sub(1, cut))
    for _, loader in ipairs { ff.load, fio.load_tensors } do
      local ok, r = try_load(file, loader)
      if ok then
        loaded = loaded + 1
        if loader == fio.load_tensors then
          for name, t in pairs(r) do
            local en = h[name]
            lu.assertEquals(4 * t:numel(), en.data_offsets[2] - en.data_offsets[1])
          end
        end
      else
        failed = failed + 1
        lu.assertStrContains(tostring(r), "load")
      end
    end
  end
  os.remove(p)
  lu.assertEquals(loaded + failed, 600)
  lu.assertTrue(failed > 300, "most mutations must be refused, " .. failed .. " were")
end

os.exit(testlib.run())
