-- test_io: checkpoints (ff.save, ff.load, ff.io): round trips, the bytes of
-- the safetensors format, interop with files written by other tools,
-- atomic saves, and corrupt files, which must fail cleanly.
package.path = "tests/lua/?.lua;" .. package.path
local testlib = require "testlib"
local lu = testlib.lu
local ff = require "firefly"
local fio = require "firefly.io"
local cjson = require "cjson"

---------------------------------------------------------------- helpers

local read_file, write_file = testlib.read_file, testlib.write_file

-- A safetensors file from a header string and the data bytes.
local function st_bytes(header, data)
  return string.pack("<I8", #header) .. header .. (data or "")
end

-- Header text and data bytes of a file's contents.
local function split(bytes)
  local n = string.unpack("<I8", bytes)
  return bytes:sub(9, 8 + n), bytes:sub(9 + n)
end

local function floats(...)
  local n = select("#", ...)
  return string.pack("<" .. string.rep("f", n), ...)
end

local function tmpdir()
  local p = io.popen("mktemp -d")
  local d = p:read("l")
  p:close()
  return d
end

local function rmdir(d) os.execute("rm -rf '" .. d .. "'") end

local function listdir(d)
  local names = {}
  for n in io.popen("ls -A '" .. d .. "'"):lines() do names[#names + 1] = n end
  table.sort(names)
  return names
end

local function round_trip(obj)
  local p = os.tmpname()
  ff.save(p, obj)
  local r = ff.load(p)
  os.remove(p)
  return r
end

-- The error of ff.load on the given file contents.
local function load_error(bytes, loader)
  local p = os.tmpname()
  write_file(p, bytes)
  local ok, err = pcall(loader or ff.load, p)
  os.remove(p)
  lu.assertFalse(ok, "expected load to fail")
  err = tostring(err)
  lu.assertStrContains(err, "load")
  return err
end

-- ff.load of the given file contents.
local function load_bytes(bytes)
  local p = os.tmpname()
  write_file(p, bytes)
  local r = ff.load(p)
  os.remove(p)
  return r
end

-- A valid firefly file's header (decoded) and data, to corrupt.
local function sample_file()
  local p = os.tmpname()
  ff.save(p, { w = ff.arange(6):view(2, 3), b = ff.ones(3), step = 4 })
  local bytes = read_file(p)
  os.remove(p)
  local h, data = split(bytes)
  return cjson.decode(h), data, bytes
end

-- Re-encode a (modified) header with the original data.
local function rebuild(h, data) return st_bytes(cjson.encode(h), data) end

---------------------------------------------------------------- round trips

TestIoRoundTrip = {}

function TestIoRoundTrip:test_tensors_of_every_rank()
  local cases = {
    ff.tensor(3.5),                                   -- rank 0
    ff.randn(7),
    ff.randn(3, 4),
    ff.randn(2, 3, 4),
    ff.randn(2, 1, 3, 2),
    ff.zeros(0),                                      -- empty
    ff.zeros(2, 0, 3),
    ff.randn(4, 5):t(),                               -- transposed view
    ff.randn(3, 6):narrow(2, 2, 3),                   -- narrowed view
    ff.tensor { 1, 2, 3 }:view(3, 1):expand(3, 4),    -- stride 0
    ff.randn(2, 3, 4, 5):permute(4, 2, 1, 3),
  }
  for i, t in ipairs(cases) do
    local r = round_trip(t)
    lu.assertTrue(ff.is_tensor(r), "case " .. i)
    lu.assertEquals(r:size(), t:size(), "case " .. i)
    lu.assertTrue(r:equal(t), "case " .. i)
    lu.assertTrue(r:is_contiguous())
  end
end

function TestIoRoundTrip:test_special_float_values_exact()
  local t = ff.tensor { 0, -0.0, 1 / 0, -1 / 0, 1e-45, 3.4028234663852886e38, 0.1 }
  local nan = ff.tensor { 0 / 0 }
  local r = round_trip({ t = t, nan = nan })
  lu.assertTrue(r.t:equal(t))
  lu.assertEquals(1 / r.t[2], -1 / 0) -- the sign of -0 survives
  local v = r.nan[1]
  lu.assertTrue(v ~= v)
end

function TestIoRoundTrip:test_nested_tables_and_scalars()
  local obj = {
    int = 42, negint = -7, maxint = math.maxinteger, minint = math.mininteger,
    float = 0.1, third = 1 / 3, whole = 3.0, negzero = -0.0, inf = math.huge, ninf = -math.huge,
    s = "hello", empty = "", utf8 = "héllo ✓", binary = "\0\1\255\254 bytes",
    code = "os.exit(1)", yes = true, no = false,
    list = { 1, 2, { 3, { 4, {} } } },
    [1] = "one", [2.5] = "two and a half", [true] = "key true", [false] = "key false",
    ["a key.with [odd] chars"] = { nested = { deeper = { deepest = "x" } } },
  }
  local r = round_trip(obj)
  lu.assertEquals(r, obj)
  lu.assertEquals(math.type(r.int), "integer")
  lu.assertEquals(math.type(r.whole), "float")
  lu.assertEquals(math.type(r.list[1]), "integer")
  lu.assertEquals(r.maxint, math.maxinteger)
  lu.assertEquals(r.minint, math.mininteger)
  lu.assertEquals(r.float, 0.1)
  lu.assertEquals(r.third, 1 / 3)
  lu.assertEquals(1 / r.negzero, -math.huge)
  lu.assertEquals(r.code, "os.exit(1)") -- data, never run
  local n = round_trip({ x = 0 / 0 }).x
  lu.assertTrue(n ~= n)
  -- Roots that are not tables.
  lu.assertEquals(round_trip("just a string"), "just a string")
  lu.assertEquals(round_trip(12), 12)
  lu.assertEquals(round_trip(false), false)
  lu.assertEquals(round_trip({}), {})
end

function TestIoRoundTrip:test_shared_tensors_stay_shared()
  local w = ff.randn(3, 3)
  local obj = { a = w, b = { c = w }, list = { w, w } }
  local r = round_trip(obj)
  lu.assertTrue(r.a == r.b.c and r.a == r.list[1] and r.a == r.list[2])
  lu.assertTrue(r.a:equal(w))
  -- Stored once: one header entry.
  local p = os.tmpname()
  ff.save(p, obj)
  local h = cjson.decode((split(read_file(p))))
  os.remove(p)
  local n = 0
  for k in pairs(h) do if k ~= "__metadata__" then n = n + 1 end end
  lu.assertEquals(n, 1)
end

function TestIoRoundTrip:test_shared_tables_stay_shared()
  local shared = { lr = 0.1 }
  local g = ff.Generator(3)
  local r = round_trip({ x = shared, y = { shared }, g1 = g, g2 = g })
  lu.assertTrue(r.x == r.y[1])
  lu.assertTrue(r.g1 == r.g2)
end

function TestIoRoundTrip:test_tensor_keys()
  local w = ff.randn(2)
  local r = round_trip({ params = { w }, state = { [w] = { step = 3 } } })
  local key = r.params[1]
  lu.assertEquals(r.state[key].step, 3)
end

function TestIoRoundTrip:test_requires_grad_preserved()
  local a = ff.randn(2, 2):requires_grad(true)
  local b = ff.randn(2)
  local r = round_trip({ a = a, b = b, y = (a * 2) })
  lu.assertTrue(r.a:requires_grad())
  lu.assertFalse(r.b:requires_grad())
  lu.assertTrue(r.a:is_leaf())
  lu.assertTrue(r.y:requires_grad()) -- restored as a leaf that requires grad
  lu.assertTrue(r.y:equal(a * 2))
  local loss = (r.a * r.a):sum()
  loss:backward()
  lu.assertTrue(r.a.grad:allclose(r.a * 2))
end

function TestIoRoundTrip:test_generator_continues_the_same_stream()
  local g = ff.Generator(1234)
  ff.randn(17, g) -- advance it, including an odd normal tail
  g:random()
  local r = round_trip({ gen = g })
  lu.assertEquals(getmetatable(r.gen), getmetatable(g))
  lu.assertTrue(r.gen ~= g)
  lu.assertEquals(r.gen:get_state(), g:get_state())
  local a, b = ff.randn(1000, g), ff.randn(1000, r.gen)
  lu.assertTrue(a:equal(b))
  for _ = 1, 10 do lu.assertEquals(r.gen:random(), g:random()) end
  -- The default stream too, through get_rng_state/set_rng_state.
  ff.manual_seed(99)
  ff.rand(5)
  local saved = round_trip(ff.get_rng_state())
  local x = ff.rand(8)
  ff.set_rng_state(saved)
  lu.assertTrue(ff.rand(8):equal(x))
end

-- A registered class, stored as its name and fields.
local Point = { __name = "test.Point" }
Point.__index = Point
function Point.new(x, y) return setmetatable({ x = x, y = y }, Point) end
function Point:norm2() return self.x * self.x + self.y * self.y end
fio.register_class("test.Point", Point)

-- A registered class with its own serialize/deserialize.
local Box = { __name = "test.Box" }
Box.__index = Box
fio.register_class("test.Box", Box, {
  serialize = function(b) return { contents = b.contents, size = #b.contents } end,
  deserialize = function(s)
    assert(#s.contents == s.size)
    return setmetatable({ contents = s.contents, restored = true }, Box)
  end,
})

function TestIoRoundTrip:test_registered_classes()
  local w = ff.randn(4)
  local layer = setmetatable({ weight = w, tied = w, origin = Point.new(1, 2) }, Point)
  local obj = { layer = layer, again = layer, box = setmetatable({ contents = { w, "x" } }, Box) }
  local r = round_trip(obj)
  lu.assertEquals(getmetatable(r.layer), Point)
  lu.assertTrue(r.layer == r.again)
  lu.assertTrue(r.layer.weight == r.layer.tied)
  lu.assertTrue(r.layer.weight:equal(w))
  lu.assertEquals(r.layer.origin:norm2(), 5)
  lu.assertEquals(getmetatable(r.box), Box)
  lu.assertTrue(r.box.restored)
  lu.assertTrue(r.box.contents[1] == r.layer.weight) -- shared across classes
  lu.assertEquals(r.box.contents[2], "x")
end

function TestIoRoundTrip:test_nn_model()
  local nn = ff.nn
  local m = nn.Sequential { nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2) }
  local r = round_trip({ model = m, epoch = 3 })
  lu.assertEquals(tostring(r.model), tostring(m))
  local x = ff.randn(5, 4)
  lu.assertTrue(r.model(x):equal(m(x)))
  lu.assertEquals(#r.model:parameters(), 4)
  for _, p in ipairs(r.model:parameters()) do lu.assertTrue(p:requires_grad()) end
end

function TestIoRoundTrip:test_ff_save_load_and_ff_io()
  lu.assertTrue(ff.io == fio)
  local p = os.tmpname()
  fio.save(p, { a = 1 })
  lu.assertEquals(ff.load(p), { a = 1 })
  ff.save(p, { b = 2 })
  lu.assertEquals(fio.load(p), { b = 2 })
  os.remove(p)
end

function TestIoRoundTrip:test_deterministic_bytes()
  local obj = { z = ff.arange(3), a = { 1, 2, x = "y", [2.5] = true }, m = ff.ones(2) }
  local p1, p2 = os.tmpname(), os.tmpname()
  ff.save(p1, obj)
  ff.save(p2, obj)
  lu.assertEquals(read_file(p1), read_file(p2))
  os.remove(p1)
  os.remove(p2)
end

---------------------------------------------------------------- the format

TestIoFormat = {}

function TestIoFormat:test_written_files_follow_the_spec()
  local p = os.tmpname()
  local w = ff.tensor { { 1, 2, 3 }, { 4, 5, 6 } }
  local b = ff.tensor { -1.5 }
  ff.save(p, { layer = { weight = w, bias = b }, s = ff.tensor(7) })
  local bytes = read_file(p)
  os.remove(p)
  local n = string.unpack("<I8", bytes)
  lu.assertEquals(n % 8, 0)                  -- padded to a multiple of 8
  local header, data = split(bytes)
  lu.assertEquals(#header, n)
  lu.assertEquals(header:sub(1, 1), "{")
  local body = header:match("^(.-)%s*$")
  lu.assertTrue(#header - #body < 8)
  lu.assertEquals(header:sub(#body + 1), string.rep(" ", #header - #body)) -- spaces only
  local h = cjson.decode(header)
  lu.assertEquals(h.__metadata__.format, "firefly-1")
  lu.assertEquals(type(h.__metadata__.firefly), "string")
  local tree = cjson.decode(h.__metadata__.firefly)
  lu.assertEquals(type(tree.table), "table")
  -- Entries: F32, shapes, offsets packed in order without gaps.
  local entries = {}
  for name, e in pairs(h) do
    if name ~= "__metadata__" then
      lu.assertEquals(e.dtype, "F32")
      entries[#entries + 1] = { name = name, e = e }
    end
  end
  lu.assertEquals(#entries, 3)
  table.sort(entries, function(x, y) return x.e.data_offsets[1] < y.e.data_offsets[1] end)
  local pos = 0
  for _, en in ipairs(entries) do
    lu.assertEquals(en.e.data_offsets[1], pos)
    local numel = 1
    for _, d in ipairs(en.e.shape) do numel = numel * d end
    pos = pos + 4 * numel
    lu.assertEquals(en.e.data_offsets[2], pos)
  end
  lu.assertEquals(pos, #data)
  -- Names follow the path in the object; data is little-endian F32.
  lu.assertEquals(h["layer.weight"].shape, { 2, 3 })
  lu.assertEquals(h["s"].shape, {})
  local wo = h["layer.weight"].data_offsets
  lu.assertEquals(data:sub(wo[1] + 1, wo[2]), floats(1, 2, 3, 4, 5, 6))
  local bo = h["layer.bias"].data_offsets
  lu.assertEquals(data:sub(bo[1] + 1, bo[2]), floats(-1.5))
end

function TestIoFormat:test_hand_built_file_loads()
  -- As another tool writes it: no padding, keys in any order, a foreign
  -- __metadata__, a scalar and an empty tensor.
  local header = '{"bias":{"dtype":"F32","shape":[2],"data_offsets":[16,24]},' ..
    '"__metadata__":{"format":"pt"},' ..
    '"weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},' ..
    '"scale":{"dtype":"F32","shape":[],"data_offsets":[24,28]},' ..
    '"none":{"dtype":"F32","shape":[0,5],"data_offsets":[28,28]}}'
  local data = floats(1, 2, 3, 4) .. floats(0.5, -0.25) .. floats(10)
  local p = os.tmpname()
  write_file(p, st_bytes(header, data))
  local t, md = fio.load_tensors(p)
  lu.assertTrue(t.weight:equal(ff.tensor { { 1, 2 }, { 3, 4 } }))
  lu.assertTrue(t.bias:equal(ff.tensor { 0.5, -0.25 }))
  lu.assertEquals(t.scale:dim(), 0)
  lu.assertEquals(t.scale:item(), 10)
  lu.assertEquals(t.none:size(), { 0, 5 })
  lu.assertEquals(md, { format = "pt" })
  -- ff.load of a file without firefly metadata gives the same table.
  local r = ff.load(p)
  lu.assertTrue(r.weight:equal(t.weight))
  os.remove(p)
  -- A file with no tensors at all.
  write_file(p, st_bytes("{}"))
  lu.assertEquals(fio.load_tensors(p), {})
  os.remove(p)
end

function TestIoFormat:test_save_tensors_round_trip()
  local p = os.tmpname()
  local t = { ["model.weight"] = ff.randn(3, 2), bias = ff.randn(2, 3):t(), scalar = ff.tensor(1) }
  fio.save_tensors(p, t, { format = "pt", note = "hello" })
  local r, md = fio.load_tensors(p)
  for k, v in pairs(t) do lu.assertTrue(r[k]:equal(v), k) end
  lu.assertEquals(md, { format = "pt", note = "hello" })
  local h = cjson.decode((split(read_file(p))))
  lu.assertNil(h.__metadata__.firefly)
  -- Without metadata, no __metadata__ entry is written.
  fio.save_tensors(p, { a = ff.ones(1) })
  h = cjson.decode((split(read_file(p))))
  lu.assertNil(h.__metadata__)
  -- Checkpoints read as plain tensors too.
  ff.save(p, { x = { y = ff.ones(2) } })
  lu.assertTrue(fio.load_tensors(p)["x.y"]:equal(ff.ones(2)))
  os.remove(p)
end

function TestIoFormat:test_save_tensors_errors()
  local p = os.tmpname()
  lu.assertStrContains(testlib.error_of(fio.save_tensors, p, { [1] = ff.ones(1) }), "bad tensor name")
  lu.assertStrContains(testlib.error_of(fio.save_tensors, p, { __metadata__ = ff.ones(1) }), "bad tensor name")
  lu.assertStrContains(testlib.error_of(fio.save_tensors, p, { a = 3 }), "value at a is a number, expected a tensor")
  lu.assertStrContains(testlib.error_of(fio.save_tensors, p, { a = ff.ones(1) }, { n = 1 }), "metadata")
  lu.assertStrContains(testlib.error_of(fio.save_tensors, p, "x"), "argument #2")
  os.remove(p)
end

function TestIoFormat:test_low_level_binding()
  local p = os.tmpname()
  local h = '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'
  ff.io_write_atomic(p, h, { ff.tensor { 1, 2 } })
  local json, start, size = ff.io_read_header(p)
  lu.assertEquals(json:match("^(.-)%s*$"), h)
  lu.assertEquals(start, 8 + #json)
  lu.assertEquals(size, start + 8)
  lu.assertTrue(ff.io_read_tensor(p, start, 0, 8, { 2 }):equal(ff.tensor { 1, 2 }))
  lu.assertStrContains(testlib.error_of(ff.io_read_tensor, p, start, 0, 8, { 3 }), "needs 12")
  lu.assertStrContains(testlib.error_of(ff.io_read_tensor, p, start, 4, 12, { 2 }), "beyond")
  lu.assertStrContains(testlib.error_of(ff.io_write_atomic, p, h, { 1 }), "expected a tensor")
  os.remove(p)
end

---------------------------------------------------------------- atomicity

TestIoAtomic = {}

function TestIoAtomic:test_failed_save_keeps_the_old_file()
  local d = tmpdir()
  local p = d .. "/ckpt.safetensors"
  ff.save(p, { w = ff.ones(4), step = 1 })
  local before = read_file(p)
  -- Tensors come first in traversal order; the function is found after.
  local err = testlib.error_of(ff.save, p, { a = ff.randn(100), b = ff.randn(10), z = { f = print } })
  lu.assertStrContains(err, "save: value at z.f is a function; cannot be saved")
  lu.assertEquals(read_file(p), before)
  lu.assertEquals(listdir(d), { "ckpt.safetensors" })
  lu.assertEquals(ff.load(p).step, 1)
  -- Saving over a directory fails at the rename: no temporary is left.
  os.execute("mkdir '" .. d .. "/sub'")
  err = testlib.error_of(ff.save, d .. "/sub", { x = ff.ones(2) })
  lu.assertStrContains(err, "rename")
  lu.assertEquals(listdir(d), { "ckpt.safetensors", "sub" })
  -- A successful save replaces the file.
  ff.save(p, { w = ff.zeros(2), step = 2 })
  lu.assertEquals(ff.load(p).step, 2)
  lu.assertEquals(listdir(d), { "ckpt.safetensors", "sub" })
  rmdir(d)
end

function TestIoAtomic:test_unwritable_directory()
  local d = tmpdir()
  local p = d .. "/missing/ckpt"
  local err = testlib.error_of(ff.save, p, { w = ff.ones(2) })
  lu.assertStrContains(err, d .. "/missing/ckpt")
  lu.assertStrContains(err, "No such file or directory")
  -- A regular file where a directory should be.
  write_file(d .. "/file", "x")
  err = testlib.error_of(ff.save, d .. "/file/ckpt", 1)
  lu.assertStrContains(err, "Not a directory")
  lu.assertEquals(listdir(d), { "file" })
  rmdir(d)
end

---------------------------------------------------------------- save errors

TestIoSaveErrors = {}

function TestIoSaveErrors:test_unsavable_values_name_their_path()
  local p = os.tmpname()
  local function err(obj) return testlib.error_of(ff.save, p, obj) end
  lu.assertStrContains(err({ model = { layers = { 1, 2, { act = print } } } }),
    "save: value at model.layers[3].act is a function; cannot be saved")
  lu.assertStrContains(err(print), "save: the value to save is a function")
  lu.assertStrContains(err({ co = coroutine.create(print) }), "value at co is a coroutine")
  lu.assertStrContains(err({ f = io.stdout }), "value at f is a userdata (FILE*); only tensors and generators")
  lu.assertStrContains(err({ ["odd key"] = { print } }), 'value at ["odd key"][1] is a function')
  lu.assertStrContains(err({ obj = setmetatable({}, { __name = "Widget" }) }),
    "value at obj has a metatable that is not a registered class ('Widget'); register it with ff.io.register_class")
  lu.assertStrContains(err(nil), "nothing to save")
  local closed = ff.ones(2)
  closed:close()
  lu.assertStrContains(err({ t = closed }), "value at t is a closed tensor")
  os.remove(p)
end

function TestIoSaveErrors:test_cycles()
  local p = os.tmpname()
  local a = { name = "a" }
  a.child = { parent = a }
  lu.assertStrContains(testlib.error_of(ff.save, p, { root = a }),
    "save: value at root.child.parent refers back to root (an enclosing table): cycles cannot be saved")
  local s = {}
  s[1] = s
  lu.assertStrContains(testlib.error_of(ff.save, p, s), "value at [1] refers back to the value being saved")
  local obj = setmetatable({}, Point)
  obj.me = obj
  lu.assertStrContains(testlib.error_of(ff.save, p, obj), "value at me refers back")
  os.remove(p)
end

function TestIoSaveErrors:test_too_deep()
  local t = {}
  local cur = t
  for _ = 1, 400 do cur.next = {}; cur = cur.next end
  local p = os.tmpname()
  lu.assertStrContains(testlib.error_of(ff.save, p, t), "nested too deeply")
  os.remove(p)
  -- 300 levels save and load.
  t = {}
  cur = t
  for _ = 1, 300 do cur.next = {}; cur = cur.next end
  cur.leaf = 1
  local r = round_trip(t)
  for _ = 1, 300 do r = r.next end
  lu.assertEquals(r.leaf, 1)
end

function TestIoSaveErrors:test_bad_arguments()
  lu.assertStrContains(testlib.error_of(ff.save, nil, 1), "save: argument #1 must be a file path")
  lu.assertStrContains(testlib.error_of(ff.save, "", 1), "an empty string")
  lu.assertStrContains(testlib.error_of(ff.load, 5), "load: argument #1 must be a file path")
  lu.assertStrContains(testlib.error_of(ff.load, "x", { map_location = "cpu" }), "unknown option 'map_location'")
  lu.assertStrContains(testlib.error_of(fio.register_class, "", {}), "non-empty class name")
  lu.assertStrContains(testlib.error_of(fio.register_class, "x", 1), "metatable")
  lu.assertStrContains(testlib.error_of(fio.register_class, "x", {}, { serialize = print }), "both")
  lu.assertStrContains(testlib.error_of(fio.register_class, "x", {}, { dump = print }), "unknown option 'dump'")
end

function TestIoSaveErrors:test_serialize_errors()
  local Bad = {}
  fio.register_class("test.Bad", Bad, {
    serialize = function() error("no way") end, deserialize = function(s) return s end })
  local p = os.tmpname()
  lu.assertStrContains(testlib.error_of(ff.save, p, { b = setmetatable({}, Bad) }),
    "value at b (class test.Bad): serialize failed")
  os.remove(p)
end

---------------------------------------------------------------- corrupt files

TestIoCorrupt = {}

function TestIoCorrupt:test_truncated_at_every_byte()
  local g = ff.Generator(5)
  local p = os.tmpname()
  ff.save(p, { w = ff.randn(3, 2, g), b = ff.tensor { 1, 2 }, gen = g, n = 3, s = "x" })
  local bytes = read_file(p)
  lu.assertTrue(#bytes > 100)
  for n = 0, #bytes - 1 do
    write_file(p, bytes:sub(1, n))
    local ok, err = pcall(ff.load, p)
    lu.assertFalse(ok, "loaded a file truncated to " .. n .. " bytes")
    lu.assertStrContains(tostring(err), "load: ")
    ok = pcall(fio.load_tensors, p)
    lu.assertFalse(ok)
  end
  write_file(p, bytes)
  lu.assertEquals(ff.load(p).n, 3)
  os.remove(p)
end

function TestIoCorrupt:test_missing_and_short_files()
  lu.assertStrContains(testlib.error_of(ff.load, "/nonexistent/x.safetensors"),
    "load: cannot open '/nonexistent/x.safetensors': No such file or directory")
  lu.assertStrContains(load_error(""), "shorter than the 8-byte header length")
  lu.assertStrContains(load_error("abc"), "shorter than")
  lu.assertStrContains(testlib.error_of(ff.load, "/tmp"), "not a regular file")
end

function TestIoCorrupt:test_header_length_lies()
  lu.assertStrContains(load_error(string.pack("<I8", 1 << 40) .. "{}"), "exceeds the limit")
  lu.assertStrContains(load_error(string.pack("<I8", -1) .. "{}"), "exceeds the limit")
  lu.assertStrContains(load_error(string.pack("<I8", 100) .. "{}"),
    "header length 100 but only 2 bytes follow")
  lu.assertStrContains(load_error(string.pack("<I8", 0)), "too small")
end

function TestIoCorrupt:test_header_not_json()
  lu.assertStrContains(load_error(st_bytes("{not json}   ")), "not valid JSON")
  lu.assertStrContains(load_error(st_bytes("[1, 2, 3]")), "not a JSON object")
  lu.assertStrContains(load_error(st_bytes('"text"')), "not a JSON object")
  lu.assertStrContains(load_error(st_bytes('{"a": 1} trailing')), "not valid JSON")
  lu.assertStrContains(load_error(st_bytes('{"a": NaN}')), "not valid JSON")
  lu.assertStrContains(load_error(st_bytes('{"a": 5}')), "tensor 'a' is not described by an object")
  lu.assertStrContains(load_error(st_bytes('{"__metadata__": {"x": 1}}')), "__metadata__ entry 'x' is not a string")
  lu.assertStrContains(load_error(st_bytes(string.rep("[", 5000))), "not a JSON object")
  lu.assertStrContains(load_error(st_bytes(string.rep('{"a":', 5000) .. "1" .. string.rep("}", 5000))),
    "not valid JSON")
end

local function entry(dtype, shape, b, e)
  return string.format('"%s":{"dtype":"%s","shape":[%s],"data_offsets":[%s,%s]}', "t", dtype,
    table.concat(shape, ","), tostring(b), tostring(e))
end

function TestIoCorrupt:test_bad_offsets()
  local data = floats(1, 2, 3, 4)
  local function err(header) return load_error(st_bytes(header, data), fio.load_tensors) end
  lu.assertStrContains(err('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},' ..
    '"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}'), "overlap")
  lu.assertStrContains(err('{' .. entry("F32", { 4 }, 4, 20) .. '}'), "beyond the data section")
  lu.assertStrContains(err('{' .. entry("F32", { 3 }, 0, 16) .. '}'), "has shape 3 (12 bytes of F32) but data_offsets [0, 16] hold 16 bytes")
  lu.assertStrContains(err('{' .. entry("F32", { 2 }, 0, 8) .. '}'), "the data section has 16 bytes but the tensors cover 8")
  lu.assertStrContains(err('{' .. entry("F32", { 2 }, 8, 16) .. '}'), "bytes 0 to 8 of the data section belong to no tensor")
  lu.assertStrContains(err('{' .. entry("F32", { 4 }, 16, 0) .. '}'), "bad data_offsets")
  lu.assertStrContains(err('{' .. entry("F32", { 4 }, -16, 0) .. '}'), "bad data_offsets")
  lu.assertStrContains(err('{' .. entry("F32", { 4 }, 0.5, 16) .. '}'), "bad data_offsets")
  lu.assertStrContains(err('{' .. entry("F32", { 4 }, 0, 1e300) .. '}'), "bad data_offsets")
  lu.assertStrContains(err('{"t":{"dtype":"F32","shape":[4],"data_offsets":[0]}}'), "data_offsets")
  lu.assertStrContains(err('{"t":{"dtype":"F32","shape":[4],"data_offsets":{"a":0}}}'), "data_offsets")
  lu.assertStrContains(err('{' .. entry("F32", { -4 }, 0, 16) .. '}'), "bad size in its shape")
  lu.assertStrContains(err('{' .. entry("F32", { 1, 1, 1, 1, 1, 1, 1, 1, 4 }, 0, 16) .. '}'), "9 dims")
  lu.assertStrContains(err('{' .. entry("F32", { 1 << 40, 1 << 40, 1 << 40 }, 0, 16) .. '}'), "but data_offsets")
  lu.assertStrContains(err('{"t":{"dtype":"F32","shape":{"x":1},"data_offsets":[0,16]}}'), "no shape list")
  lu.assertStrContains(err('{"t":{"dtype":"F32","shape":[4],"data_offsets":[0,null]}}'), "bad data_offsets")
  lu.assertStrContains(err('{"t":{"shape":[4],"data_offsets":[0,16]}}'), "has no dtype")
end

function TestIoCorrupt:test_other_dtypes()
  local err = load_error(st_bytes('{' .. entry("F16", { 2 }, 0, 4) .. '}', "abcd"))
  lu.assertStrContains(err, "tensor 't'")
  lu.assertStrContains(err, "dtype F16 is not supported; only F32")
  lu.assertStrContains(load_error(st_bytes('{' .. entry("BF16", { 2 }, 0, 4) .. '}', "abcd"), fio.load_tensors),
    "dtype BF16 is not supported; only F32")
end

function TestIoCorrupt:test_metadata_inconsistent_with_header()
  local h, data = sample_file()
  -- The header says 3x2 where the metadata says 2x3.
  local h1 = cjson.decode(cjson.encode(h))
  h1.w.shape = { 3, 2 }
  lu.assertStrContains(load_error(rebuild(h1, data)),
    "tensor 'w' has shape 3x2 in the header but 2x3 in the metadata (at w)")
  -- The metadata names a tensor the header lacks.
  local h2 = cjson.decode(cjson.encode(h))
  h2.__metadata__.firefly = h2.__metadata__.firefly:gsub('"tensor":"b"', '"tensor":"missing"')
  lu.assertStrContains(load_error(rebuild(h2, data)),
    "the metadata refers to tensor 'missing', which is not in the file (at b)")
  -- Metadata that is not JSON, a newer format, a missing format.
  local h3 = cjson.decode(cjson.encode(h))
  h3.__metadata__.firefly = "{oops"
  lu.assertStrContains(load_error(rebuild(h3, data)), "firefly metadata is not valid JSON")
  h3.__metadata__.firefly = h.__metadata__.firefly
  h3.__metadata__.format = "firefly-2"
  lu.assertStrContains(load_error(rebuild(h3, data)), "has format 'firefly-2'; this version of Firefly reads firefly-1")
  h3.__metadata__.format = nil
  lu.assertStrContains(load_error(rebuild(h3, data)), "has format (none)")
end

-- A file whose data is one tensor "t" of shape {2} and whose tree is `tree`.
local function tree_file(tree)
  local header = string.format('{"__metadata__":{"format":"firefly-1","firefly":%s},%s}',
    cjson.encode(tree), entry("F32", { 2 }, 0, 8))
  return st_bytes(header, floats(1, 2))
end

function TestIoCorrupt:test_bad_object_trees()
  local cases = {
    { '{"int":"abc"}', "bad integer abc" },
    { '{"int":"99999999999999999999"}', "bad integer" },
    { '{"float":"1.5x"}', "bad float" },
    { '{"bytes":"zz"}', "bad hex string" },
    { '{"ref":5}', "reference to an unknown object id 5" },
    { '{"generator":"00"}', "generator state is not 64 hex digits" },
    { '{"generator":"' .. string.rep("0", 64) .. '"}', "invalid generator state" },
    { '{"table":5}', "entries are not a list" },
    { '{"table":[[1]]}', "not a [key, value] pair" },
    { '{"table":[["a",1],["a",2]]}', "unexpected number" },
    { '{"table":[["a",true],["a",false]]}', "duplicate key" },
    { '{"table":[[{"float":"nan"},1]]}', "key is NaN" },
    { 'null', "unexpected null" },
    { '12', "unexpected number" },
    { '{"what":1}', "unknown node" },
    { '{"tensor":5}', "tensor name is not a string" },
    { '{"tensor":"t"}', "has no shape in the metadata" },
    { '{"tensor":"t","shape":[2],"requires_grad":"yes"}', "requires_grad that is not a boolean" },
    { '{"class":"test.Point"}', "has neither fields nor state" },
    { '{"class":7,"fields":[]}', "class name is not a string" },
    { '{"class":"test.Point","state":{"table":[]}}', "has no deserialize" },
    { '{"table":[["a",{"table":[],"id":1}],["b",{"table":[],"id":1}]]}', "defined twice" },
    { '{"table":[["a",{"table":[["x",{"ref":1}]],"id":1}]]}', "unknown object id 1" },
  }
  cases[#cases + 1] = { string.rep('{"table":[["a",', 400) .. "true" .. string.rep("]]}", 400),
    "firefly metadata is not valid JSON" }
  for _, c in ipairs(cases) do
    local err = load_error(tree_file(c[1]))
    lu.assertStrContains(err, c[2], false)
  end
  -- Well-formed trees over the same file load.
  lu.assertTrue(load_bytes(tree_file('{"tensor":"t","shape":[2]}')):equal(ff.tensor { 1, 2 }))
  local r = load_bytes(tree_file('{"table":[["a",{"table":[],"id":1}],["b",{"ref":1}]]}'))
  lu.assertTrue(r.a == r.b)
end

function TestIoCorrupt:test_unknown_class()
  local err = load_error(tree_file('{"table":[["m",{"class":"my.Unknown","fields":[]}]]}'))
  lu.assertStrContains(err, "class 'my.Unknown' (at m), which is not registered")
  lu.assertStrContains(err, "require the module that defines it")
  -- A deserialize that fails.
  local Fussy = {}
  fio.register_class("test.Fussy", Fussy, {
    serialize = function() return {} end, deserialize = function() error("refused") end })
  lu.assertStrContains(load_error(tree_file('{"class":"test.Fussy","state":{"table":[]}}')),
    "deserialize of class 'test.Fussy' failed")
end

function TestIoCorrupt:test_random_corruption_never_crashes()
  local _, _, bytes = sample_file()
  local p = os.tmpname()
  local rng = ff.Generator(2024)
  local loaded, failed = 0, 0
  for _ = 1, 400 do
    local b = { bytes:byte(1, -1) }
    for _ = 1, rng:random(4) do
      b[rng:random(#b)] = rng:random(256) - 1
    end
    local s = {}
    for i, v in ipairs(b) do s[i] = string.char(v) end
    write_file(p, table.concat(s))
    local ok, err = pcall(ff.load, p)
    if ok then loaded = loaded + 1 else
      failed = failed + 1
      lu.assertStrContains(tostring(err), "load")
    end
  end
  lu.assertEquals(loaded + failed, 400)
  os.remove(p)
end

os.exit(testlib.run())
