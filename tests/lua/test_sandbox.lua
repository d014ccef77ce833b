-- test_sandbox: `firefly grow` runs a recipe as untrusted code. A recipe
-- that reaches for the shell, files, modules, bytecode, the real
-- environment (through metatables or ff's internals) or writes outside
-- --out is refused with a clear message and changes nothing on disk; a
-- precompiled recipe is refused; --trust lifts the restrictions; runaway
-- recipes stop at --max-seconds / --max-memory with the last checkpoint
-- intact; the shipped recipes run sandboxed.
package.path = "tests/lua/?.lua;" .. package.path
local testlib = require "testlib"
local lu = testlib.lu
local ff = require "firefly"
local R = ff.grow.recipe
local command = require "firefly.grow.command"
local sandbox = require "firefly.sandbox"

local base = os.tmpname()
os.remove(base)
os.execute("mkdir -p '" .. base .. "'")

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

-- The files under base, as one sorted string (to see that nothing changed).
local function listing()
  local p = io.popen("cd '" .. base .. "' && find . | sort")
  local s = p:read("a")
  p:close()
  return s
end

-- A small recipe whose data function first runs `attack` (Lua text, with
-- ff in scope); `fields` adds to its table.
local n = 0
local function recipe(attack, fields)
  n = n + 1
  local path = string.format("%s/r%d.lua", base, n)
  testlib.write_file(path, string.format([[
local attack = function(ff) %s
end
return {
  seed = 1, phases = 2, epochs = 1, score_batches = 1, batch_size = 64,
  data = function(ff) attack(ff) local ds = ff.data.two_moons { n = 64, seed = 7 } return ds, ds end,
  net = function(ff) return ff.nn.mlp { 2, 3, 2 } end,
  optim = function(ff, p) return ff.optim.SGD(p, { lr = 0.1 }) end,
  neighbourhood = { new = 2 }, eta = 1,
  %s
}]], attack or "", fields or ""))
  return path
end

-- Runs `firefly grow` in this process; returns ok and the message.
local function grow(path, ...)
  local ok, err = pcall(command.main, path, "--out", base .. "/out" .. n, "--quiet", ...)
  lu.assertFalse(sandbox.confined(), "the confinement ends with the run")
  return ok, tostring(err)
end

-- The attack is refused with `expect` in the message, and nothing on disk
-- changed (the run fails in its data function, before any log).
local function refused(attack, expect)
  local before = listing()
  local path = recipe(attack)
  before = listing()
  local ok, err = grow(path)
  lu.assertFalse(ok, "refused: " .. attack)
  lu.assertStrContains(err, expect)
  lu.assertEquals(listing(), before, "nothing changed on disk: " .. attack)
  lu.assertFalse(exists(base .. "/pwned"))
  return err
end

local PWNED = base .. "/pwned"

TestSandbox = {}

function TestSandbox:test_shell_files_modules_and_bytecode_are_refused()
  refused(string.format("os.execute('touch %s')", PWNED), "os.execute is not available to recipes")
  refused(string.format("io.open('%s', 'w')", PWNED), "'io' is not available to recipes")
  refused("require 'os'", "'require' is not available to recipes")
  refused("local f = load(string.dump(function() end)); f()", "'load' is not available to recipes")
  refused("local s = string.dump(function() end)", "attempt to call a nil value (field 'dump')")
  refused(string.format("loadfile('%s')", PWNED), "'loadfile' is not available")
  refused(string.format("dofile('%s')", PWNED), "'dofile' is not available")
  refused("local x = debug.getinfo(1)", "'debug' is not available to recipes")
  refused("local x = package.loaded", "'package' is not available to recipes")
  refused("collectgarbage('stop')", "collectgarbage is available to recipes only as collectgarbage(\"count\")")
  refused("setmetatable({}, { __gc = function() end })", "__gc finalizers are not available")
  refused("local e = os.getenv('HOME')", "os.getenv is not available to recipes")
  -- a refusal says how to lift it
  lu.assertStrContains(refused("require 'io'", "not available"), "--trust")
end

function TestSandbox:test_writes_outside_out_are_refused()
  local err = refused(string.format("ff.save('%s', { a = 1 })", PWNED), "save: a sandboxed recipe may not write '" .. PWNED)
  lu.assertStrContains(err, "--allow-write")
  refused(string.format("ff.save('%s/out%d/../pwned', { a = 1 })", base, n + 1), "may not write")
  -- C opens a path up to its first NUL byte: such a path is refused
  refused(string.format("ff.save('%s\\0/../out%d/x', { a = 1 })", PWNED, n + 1), "holds a NUL byte")
  refused(string.format("ff.data.csv('/etc/passwd\\0/../../%s/x')", base), "holds a NUL byte")
  refused("ff.read_idx(5)", "may not read '5'") -- a number is a path to io.open and the engine
  refused(string.format("ff.io.mkdir('%s')", PWNED), "mkdir: a sandboxed recipe may not write")
  refused(string.format("ff.io.write_atomic('%s', 'x')", PWNED), "may not write")
  refused(string.format("ff.io_write_atomic('%s', '{}', {})", PWNED), "io_write_atomic: a sandboxed recipe may not write")
  refused(string.format("ff.logging.Logger { dir = '%s' }", PWNED), "may not write")
  refused(string.format("ff.plot.from_rows({{a=1,b=2},{a=2,b=3}}, {x='a', y='b', path='%s'})", PWNED),
    "may not write")
  refused(string.format("ff.train.fit { model = ff.nn.mlp{2,2}, data = ff.data.two_moons{n=8}, " ..
    "optim = ff.optim.SGD(ff.nn.mlp{2,2}:named_parameters(), {lr=0.1}), log = '%s', quiet = true }", PWNED),
    "may not write")
end

function TestSandbox:test_reads_outside_the_data_locations_are_refused()
  local secret = base .. "/secret.txt"
  testlib.write_file(secret, "1,2\n3,4\n")
  local err = refused(string.format("ff.data.csv('%s')", secret), "csv: a sandboxed recipe may not read '" .. secret)
  lu.assertStrContains(err, "--allow-read")
  refused(string.format("ff.load('%s')", secret), "load: a sandboxed recipe may not read")
  refused(string.format("ff.read_idx('%s')", secret), "read_idx: a sandboxed recipe may not read")
  refused(string.format("ff.read_cifar('%s')", secret), "read_cifar: a sandboxed recipe may not read")
  refused(string.format("ff.logging.read_jsonl('%s')", secret), "read_jsonl: a sandboxed recipe may not read")
  local elsewhere = base .. "/mnist"
  lu.assertStrContains(refused(string.format("ff.data.mnist { path = '%s' }", elsewhere), "may not read"),
    "--allow-read " .. elsewhere)
  -- --allow-read lets it
  local ok, msg = grow(recipe(string.format("assert(ff.data.csv('%s', { header = false }):size() == 2)", secret)),
    "--allow-read", secret)
  lu.assertTrue(ok, msg)
end

function TestSandbox:test_the_real_environment_is_not_reachable_through_metatables()
  refused("getmetatable('').__index.rep = function() end", "is read-only in a recipe")
  refused("local d = getmetatable('').__index.dump", "is not available to recipes")
  refused("getmetatable(ff).__index = nil", "attempt to index a string value")
  refused("setmetatable(ff, {})", "cannot change a protected metatable")
  refused("local mt = getmetatable(ff.zeros(1)); mt.__gc = nil", "is read-only in a recipe")
  refused("local mt = getmetatable(ff.nn.mlp{2,2}); mt.forward = nil", "is read-only in a recipe")
  refused("getmetatable(_G).__index = nil", "attempt to index a string value")
  refused("local s = getmetatable(''); local x = s.__index.format; s.__index = {}", "is read-only in a recipe")
  -- the real string table is unchanged
  lu.assertEquals(("x"):rep(3), "xxx")
end

function TestSandbox:test_ff_does_not_leak_privileged_values()
  refused("ff.nn = nil", "ff is read-only in a recipe")
  refused("local r = ff.grow.recipe", "ff.grow.recipe is not available to recipes")
  refused("ff.data.FASHION_MNIST_DIR = '/'", "is read-only in a recipe")
  refused("ff.io.class_modules.x = 'os'", "is read-only in a recipe")
  refused("rawset(ff, 'x', 1); assert(ff.x == 1); local y = ff.io.class_modules; y.z = 1", "is read-only")
end

-- Every value a recipe can reach from its globals, ff and the metatables
-- of what it gets back is walked: none is a privileged table or function.
function TestSandbox:test_crawl_finds_no_privileged_value()
  local sb = sandbox.new()
  local env = sb.env
  for name in pairs(ff.grow) do local _ = ff.grow[name] end -- load the lazy submodules
  for _, name in ipairs { "nn", "optim", "data", "train", "io", "grow", "schedule", "logging", "plot", "continual", "profile" } do
    local _ = ff[name]
  end
  local bad = {}
  for _, t in ipairs { io, os, debug, package, package.loaded, _G, sandbox, require("firefly.core") } do bad[t] = true end
  for _, f in ipairs { require, load, loadfile, dofile, io.open, io.popen, os.execute, os.remove, os.rename,
    os.exit, os.getenv, debug.sethook, debug.getupvalue, debug.setmetatable, string.dump, collectgarbage,
    getmetatable, setmetatable, sandbox.release, sandbox.confine, sandbox.unlimit, command.main, R.load,
    require("firefly.interp").memory_limit } do
    bad[f] = true
  end
  for _, name in ipairs(sandbox.RAW_FILE_FUNCTIONS) do bad[require("firefly.core")[name]] = true end
  local seen, leaks, refusals, count = {}, {}, 0, 0
  local function walk(v, path, depth)
    if bad[v] then leaks[#leaks + 1] = path end
    local tv = type(v)
    if (tv ~= "table" and tv ~= "userdata") or seen[v] or depth > 12 then return end
    seen[v] = true
    count = count + 1
    local mt = env.getmetatable(v)
    if mt ~= nil then walk(mt, path .. "<mt>", depth + 1) end
    if tv == "table" then
      -- the keys of the table a view shows (a refused key is skipped, its
      -- siblings are still walked)
      local real = sb.unwrap(v)
      local keys = {}
      if real ~= v then
        for k in next, real do keys[#keys + 1] = k end
      else
        for k in next, v do keys[#keys + 1] = k end
      end
      for _, k in ipairs(keys) do
        local ok, x = pcall(function() return v[k] end)
        if ok then walk(x, path .. "." .. tostring(k), depth + 1) else refusals = refusals + 1 end
      end
    end
  end
  walk(env, "_ENV", 0)
  -- and what recipes get back from the library
  walk(ff.data.two_moons { n = 8 }, "dataset", 0)
  walk(ff.data.DataLoader(ff.data.two_moons { n = 8 }, { batch_size = 4 }), "loader", 0)
  local net = ff.nn.mlp { 2, 3, 2 }
  walk(net, "net", 0)
  walk(ff.optim.SGD(net:named_parameters(), { lr = 0.1 }), "optim", 0)
  walk(ff.Generator(1), "generator", 0)
  walk(ff.zeros(2), "tensor", 0)
  lu.assertEquals(leaks, {})
  print(string.format("  crawl: %d tables and objects, %d refused keys", count, refusals))
  lu.assertTrue(count > 80, "walked " .. count .. " tables")
  lu.assertTrue(refusals > 0, "refused keys")
end

function TestSandbox:test_recipe_functions_stay_confined_after_the_run()
  -- the recipe leaves a class hook behind; trusted code triggers it later
  local path = recipe(string.format([[
    local Evil = {}
    ff.io.register_class("test.Evil", Evil, {
      serialize = function(obj) ff.save('%s', { a = 1 }); return {} end,
      deserialize = function(t) return setmetatable({}, Evil) end })]], PWNED))
  local ok, err = grow(path)
  lu.assertTrue(ok, err)
  local mt = ff.io.registered_class("test.Evil")
  lu.assertNotNil(mt)
  local err2 = testlib.error_of(ff.save, base .. "/trusted.ckpt", setmetatable({}, mt))
  lu.assertStrContains(err2, "may not write '" .. PWNED)
  lu.assertFalse(exists(PWNED))
  ff.io.register_class("test.Evil", {}) -- drop the hooks
end

function TestSandbox:test_precompiled_recipe_is_refused()
  local path = base .. "/compiled.lua"
  testlib.write_file(path, string.dump(load(testlib.read_file(recipe()))))
  local ok, err = grow(path)
  lu.assertFalse(ok)
  lu.assertStrContains(err, "is a precompiled Lua chunk; recipes are loaded as text only")
  ok, err = grow(path, "--trust")
  lu.assertFalse(ok)
  lu.assertStrContains(err, "precompiled")
end

function TestSandbox:test_trust_lifts_the_restrictions()
  local target = base .. "/trusted.txt"
  local path = recipe(string.format("local f = io.open('%s', 'w'); f:write('ok'); f:close(); " ..
    "ff.save('%s.ckpt', { a = 1 }); assert(require 'os' == os)", target, target))
  local ok, err = grow(path)
  lu.assertFalse(ok)
  lu.assertFalse(exists(target))
  ok, err = grow(path, "--trust")
  lu.assertTrue(ok, err)
  lu.assertEquals(testlib.read_file(target), "ok")
  lu.assertTrue(exists(target .. ".ckpt"))
  -- trust=true on the command line is the same; inside the recipe it is an unknown field
  os.remove(target)
  ok, err = grow(path, "trust=true")
  lu.assertTrue(ok, err)
  ok, err = grow(recipe("", "trust = true,"))
  lu.assertFalse(ok)
  lu.assertStrContains(err, "unknown recipe field 'trust'")
end

function TestSandbox:test_functions_the_recipe_returns_stay_sandboxed()
  -- net, optim and eta run later, outside the chunk: still sandboxed
  local path = recipe("", string.format(
    "eta = function(ff) return function(t, net) io.open('%s', 'w') return 1 end end,", PWNED))
  testlib.write_file(path, (testlib.read_file(path):gsub("neighbourhood = { new = 2 }, eta = 1,", "neighbourhood = { new = 2 },")))
  local ok, err = grow(path)
  lu.assertFalse(ok)
  lu.assertStrContains(err, "'io' is not available to recipes")
  lu.assertFalse(exists(PWNED))
end

function TestSandbox:test_runaway_recipe_stops_at_max_seconds_keeping_the_checkpoint()
  -- phase 1 grows and checkpoints; the budget of phase 2 never returns
  local path = recipe("", "phases = 3,")
  testlib.write_file(path, (testlib.read_file(path):gsub("eta = 1,",
    "eta = function(ff) return function(t) if t >= 2 then while true do pcall(function() while true do end end) end end return 1 end end,")))
  local out = base .. "/out" .. n
  local t0 = ff.clock()
  local ok, err = grow(path, "--max-seconds", "1.5")
  lu.assertFalse(ok)
  lu.assertTrue(ff.clock() - t0 < 30)
  lu.assertStrContains(err, "ran past --max-seconds 1.5")
  lu.assertStrContains(err, "the last checkpoint, " .. out .. "/checkpoint.safetensors (after phase 1), is as it was")
  local ck = ff.load(out .. "/checkpoint.safetensors")
  lu.assertEquals(ck.phase, 1)
  -- a loop in a coroutine, or one whose stop a coroutine catches, stops too
  for _, attack in ipairs {
    "coroutine.wrap(function() while true do end end)()",
    "local co = coroutine.create(function() while true do end end); coroutine.resume(co); while true do end",
  } do
    ok, err = grow(recipe(attack), "--max-seconds", "0.5")
    lu.assertFalse(ok)
    lu.assertStrContains(err, "ran past --max-seconds 0.5")
    lu.assertStrContains(err, "no checkpoint had been written")
  end
end

function TestSandbox:test_runaway_memory_stops_at_max_memory()
  local ok, err = grow(recipe("local t = {} for i = 1, 1e9 do t[i] = { i, i, i } end"), "--max-memory", "64")
  lu.assertFalse(ok)
  lu.assertStrContains(err, "went past --max-memory 64 MB of Lua memory")
  lu.assertStrContains(err, "no checkpoint had been written")
  -- the limit is gone after the run
  lu.assertEquals(#string.rep("x", 100 * 2 ^ 20), 100 * 2 ^ 20)
  ok, err = grow(recipe("local t = {} for i = 1, 1e9 do t[i] = ff.zeros(1024, 1024) end"), "--max-memory", "64")
  lu.assertFalse(ok)
  lu.assertStrContains(err, "tensors went past --max-memory 64 MB")
end

function TestSandbox:test_library_file_access_goes_through_the_sandbox()
  -- every io.open, io.lines, os.remove, os.rename, os.execute and
  -- io.popen of the library is one of the sandbox's checked functions, or
  -- says why it is internal (a name the library makes, never a recipe)
  local p = io.popen("grep -rnE 'io\\.open|io\\.lines|os\\.remove|os\\.rename|os\\.execute|io\\.popen' lib/firefly " ..
    "| grep -v '^lib/firefly/sandbox.lua' | grep -v 'sandbox: internal'")
  local hits = p:read("a")
  p:close()
  -- the recipe runner reads the recipe file before any confinement
  hits = hits:gsub("[^\n]*grow/recipe.lua:%d+:  local f, err = io.open%(path, \"rb\"%)\n", "")
  lu.assertEquals(hits, "")
end

function TestSandbox:test_shipped_recipes_run_sandboxed()
  local ok, err = grow("examples/recipes/moons.lua")
  lu.assertTrue(ok, err)
  -- one short phase of the Fashion-MNIST recipe (a few seconds)
  ok, err = grow("examples/recipes/fashion_mlp.lua", "phases=1", "epochs=1")
  lu.assertTrue(ok, err)
end

function TestSandbox:test_scripts_are_not_sandboxed()
  local p = io.popen("./firefly -e \"assert(io.open and os.execute and require and load); print('full')\" 2>&1")
  local out = p:read("a")
  p:close()
  lu.assertStrContains(out, "full")
end

local status = testlib.run()
os.execute("rm -rf '" .. base .. "'")
os.exit(status)
