-- test_recipe_strict: recipes and grow.run options are checked like every
-- other options table (unknown fields and overrides name the nearest known
-- key, every field is type- and range-checked, internal errors name the
-- recipe field), and --resume resumes the same run or says why not.
package.path = "tests/lua/?.lua;" .. package.path
local testlib = require "testlib"
local lu = testlib.lu
local ff = require "firefly"
local R = ff.grow.recipe
local command = require "firefly.grow.command"

local base = os.tmpname()
os.remove(base)
os.execute("mkdir -p '" .. base .. "'")

-- A recipe file of a fraction of a second; `extra` is Lua text inserted
-- into its table, `data` replaces its data function.
local n_recipes = 0
local function recipe_file(extra, data)
  n_recipes = n_recipes + 1
  local path = string.format("%s/r%d.lua", base, n_recipes)
  testlib.write_file(path, string.format([[
return {
  seed = 1, phases = 2, epochs = 1, score_batches = 1, batch_size = 64,
  data = %s,
  net = function(ff) return ff.nn.mlp { 2, 3, 2 } end,
  optim = function(ff, p) return ff.optim.SGD(p, { lr = 0.1 }) end,
  neighbourhood = { new = 2, steps = 1 },
  eta = 2,
  %s
}]], data or "function(ff) local ds = ff.data.two_moons { n = 64, seed = 7 } return ds, ds end", extra or ""))
  return path
end

local function main_error(...)
  local ok, err = pcall(command.main, ...)
  lu.assertFalse(ok, "expected an error")
  return tostring(err)
end

local function out_dir(name) return base .. "/" .. name end

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

TestStrictRecipe = {}

function TestStrictRecipe:test_misspelt_field_is_an_error_with_a_suggestion()
  local path = recipe_file("neighborhood = { new = 2 },")
  local err = main_error(path, "--out", out_dir("misspelt"), "--quiet")
  lu.assertStrContains(err, "unknown recipe field 'neighborhood'")
  lu.assertStrContains(err, "did you mean 'neighbourhood'?")
  lu.assertFalse(exists(out_dir("misspelt")), "nothing written")
end

function TestStrictRecipe:test_misspelt_override_is_an_error_with_a_suggestion()
  local path = recipe_file()
  local err = main_error(path, "--out", out_dir("ovr"), "--quiet", "epoch=1")
  lu.assertStrContains(err, "unknown override 'epoch'")
  lu.assertStrContains(err, "did you mean 'epochs'?")
  err = main_error(path, "--out", out_dir("ovr"), "--quiet", "neighborhood.new=3")
  lu.assertStrContains(err, "did you mean 'neighbourhood'?")
  -- a function field is not a value, and a dotted key needs a table
  lu.assertStrContains(main_error(path, "--out", out_dir("ovr"), "--quiet", "data=x"), "'data' is a function")
  lu.assertStrContains(main_error(path, "--out", out_dir("ovr"), "--quiet", "eta.ratio=0.5"), "not a table")
  lu.assertStrContains(main_error(path, "--out", out_dir("ovr"), "--quiet", "--sede", "3"), "did you mean '--seed'?")
  lu.assertFalse(exists(out_dir("ovr")), "nothing written")
end

function TestStrictRecipe:test_every_field_is_type_and_range_checked()
  local path = recipe_file()
  for _, case in ipairs {
    { "phases=0", "field 'phases' must be a whole number >= 1, got 0" },
    { "epochs=-1", "field 'epochs' must be a whole number >= 1, got -1" },
    { "score_batches=0", "field 'score_batches' must be a whole number >= 1 or \"all\", got 0" },
    { "batch_size=0", "field 'batch_size'" },
    { "phases=abc", "field 'phases' must be a whole number >= 1, got \"abc\"" },
    { "phases=1.5", "field 'phases'" },
    { "eta=0", "field 'eta'" },
    { "checkpoint_every=0", "field 'checkpoint_every'" },
    { "on_nan=retry", "field 'on_nan'" },
    { "seed=-2", "field 'seed'" },
    { "neighbourhood.eps=-1", "field 'neighbourhood': grow.propose: neighbourhood eps must be" },
    { "neighbourhood.method=magic", "field 'neighbourhood': grow.propose: method must be one of" },
    { "neighbourhood.steps=x", "field 'neighbourhood'" },
  } do
    lu.assertStrContains(main_error(path, "--out", out_dir("range"), "--quiet", case[1]), case[2])
  end
  lu.assertStrContains(main_error(path, "--out", out_dir("range"), "--quiet", "--seed", "x"), "--seed needs")
  lu.assertStrContains(main_error(path, "--out", out_dir("range"), "--quiet", "--max-seconds", "0"), "--max-seconds needs")
  lu.assertFalse(exists(out_dir("range")), "nothing written")
end

function TestStrictRecipe:test_a_function_as_neighbourhood_is_per_unit_settings()
  -- function(unit) -> settings, as grow.propose takes it; its own errors name the field
  local path = recipe_file("neighbourhood = function(unit) return { new = 3, split = false } end,")
  local dir = out_dir("nbfn")
  command.main(path, "--out", dir, "--quiet")
  local rows = ff.load(dir .. "/checkpoint.safetensors").rows
  lu.assertEquals(rows[1].neurons_added, 2) -- eta = 2 of the 3 new candidates, no split
  local bad = recipe_file("neighbourhood = function(unit) return { nwe = 3 } end,")
  local err = main_error(bad, "--out", out_dir("nbfn2"), "--quiet")
  lu.assertStrContains(err, "recipe field 'neighbourhood'")
  lu.assertStrContains(err, "'nwe'")
  lu.assertStrContains(main_error(recipe_file("neighbourhood = 5,"), "--out", out_dir("nbfn3"), "--quiet"),
    "field 'neighbourhood' must be a table of options")
end

function TestStrictRecipe:test_bad_data_and_internal_errors_name_the_field()
  local empty = recipe_file(nil, "function(ff) local ds = ff.data.two_moons { n = 64, seed = 7 } " ..
    "return ds:subset({}), ds end")
  lu.assertStrContains(main_error(empty, "--out", out_dir("d1"), "--quiet"), "recipe field 'data'")
  local none = recipe_file(nil, "function(ff) return nil end")
  lu.assertStrContains(main_error(none, "--out", out_dir("d2"), "--quiet"),
    "recipe field 'data' must return a training set")
  local broken = recipe_file(nil, "function(ff) local t = nil; return t.x end")
  local err = main_error(broken, "--out", out_dir("d3"), "--quiet")
  lu.assertStrContains(err, "recipe field 'data'")
  lu.assertStrContains(err, "attempt to index a nil value")
  local nonet = recipe_file()
  testlib.write_file(nonet, testlib.read_file(nonet):gsub("return ff%.nn%.mlp { 2, 3, 2 }", "return 5"))
  lu.assertStrContains(main_error(nonet, "--out", out_dir("d4"), "--quiet"),
    "recipe field 'net' must return a network")
  local missing = string.format("%s/missing.lua", base)
  testlib.write_file(missing, "return { net = function() end, optim = function() end }")
  lu.assertStrContains(main_error(missing, "--out", out_dir("d5"), "--quiet"), "missing field 'data'")
end

function TestStrictRecipe:test_vgg_cfg_is_checked()
  lu.assertStrContains(testlib.error_of(ff.nn.vgg, { cfg = { "X" } }), "vgg: cfg[1] must be a channel count")
  lu.assertStrContains(testlib.error_of(ff.nn.vgg, { cfg = { 4, "M", 0 } }), "vgg: cfg[3]")
  lu.assertStrContains(testlib.error_of(ff.nn.vgg, { cfg = {} }), "vgg: cfg must be a non-empty list")
end

TestStrictRun = {}

local function run_opts(extra)
  ff.manual_seed(1)
  local ds = ff.data.two_moons { n = 64, seed = 7 }
  local net = ff.nn.mlp { 2, 3, 2 }
  local opts = { net = net, data = ds, test = ds, optim = ff.optim.SGD(net:named_parameters(), { lr = 0.1 }),
    phases = 2, epochs = 1, quiet = true, neighbourhood = { new = 2 }, eta = 1, score_batches = 1 }
  for k, v in pairs(extra or {}) do opts[k] = v end
  return opts
end

function TestStrictRun:test_grow_run_takes_a_data_set()
  local opts = run_opts()
  local rows = ff.grow.run(opts)
  lu.assertEquals(#rows, 2)
  lu.assertTrue(rows[2].neurons > rows[1].neurons)
end

function TestStrictRun:test_grow_run_takes_a_function_neighbourhood()
  local rows = ff.grow.run(run_opts { neighbourhood = function(unit) return { new = 2, split = false } end, eta = 2 })
  lu.assertEquals(rows[1].neurons_added, 2)
end

function TestStrictRun:test_grow_run_rejects_bad_options_by_name()
  lu.assertStrContains(testlib.error_of(ff.grow.run, run_opts { phase = 3 }), "did you mean 'phases'?")
  lu.assertStrContains(testlib.error_of(ff.grow.run, run_opts { neighborhood = {} }), "did you mean 'neighbourhood'?")
  lu.assertStrContains(testlib.error_of(ff.grow.run, run_opts { phases = 0 }), "grow.run: phases must be a whole number >= 1, got 0")
  lu.assertStrContains(testlib.error_of(ff.grow.run, run_opts { epochs = -1 }), "grow.run: epochs must be")
  lu.assertStrContains(testlib.error_of(ff.grow.run, run_opts { score_batches = 0 }), "grow.run: score_batches must be")
  lu.assertStrContains(testlib.error_of(ff.grow.run, run_opts { eta = -1 }), "grow.run: eta must be")
  lu.assertStrContains(testlib.error_of(ff.grow.run, run_opts { neighbourhood = 5 }),
    "grow.run: neighbourhood must be a table of options")
  lu.assertStrContains(testlib.error_of(ff.grow.run, run_opts { data = {} }), "grow.run: data must be a DataLoader or a data set")
  lu.assertStrContains(testlib.error_of(ff.grow.run, run_opts { net = {} }), "grow.run: net must be a network")
  local ds = ff.data.two_moons { n = 64, seed = 7 }
  lu.assertStrContains(testlib.error_of(ff.grow.run, run_opts { data = ds:subset({}) }), "grow.run: data is empty")
  lu.assertStrContains(testlib.error_of(ff.grow.run, run_opts { neighbourhood = { batches = 0 } }),
    "neighbourhood.batches must be")
  lu.assertStrContains(testlib.error_of(ff.grow.run, 5), "grow.run: expected a table of options")
end

-- The bad-input sweep of the growth layer's run options and recipes: a
-- clear error naming the function, the process alive, nothing changed.
TestBadInputSweep = {}

function TestBadInputSweep:test_grow_run_options()
  local ds = ff.data.two_moons { n = 64, seed = 7 }
  for _, case in ipairs {
    { phases = 0 }, { phases = -3 }, { phases = 1.5 }, { phases = "2" }, { phases = 0 / 0 }, { phases = math.huge },
    { epochs = 0 }, { epochs = "x" }, { score_batches = 0 }, { score_batches = "some" }, { score_batches = {} },
    { batch_size = 0 }, { eta = 0 }, { eta = -2 }, { eta = "x" }, { eta = { ratio = 0 } }, { eta = { ratio = "x" } },
    { neighbourhood = 5 }, { neighbourhood = "paper" }, { neighbourhood = { batches = -1 } },
    { data = 5 }, { data = {} }, { data = ds:subset({}) }, { test = 5 }, { val = "x" }, { net = 5 }, { optim = {} },
    { log = 5 }, { log = "" }, { checkpoint = 5 }, { resume = {} }, { on_phase = 5 }, { lr_schedule = 5 },
    { reset_optim = 5 }, { loss = 5 }, { quiet = "yes" }, { plot = 1 }, { checkpoint_every = 0 },
    { on_nan = "retry" }, { nan_lr_factor = 2 }, { max_rollbacks = -1 }, { recipe = 5 }, { epoch = 1 },
  } do
    local opts = run_opts()
    local net = opts.net
    for k, v in pairs(case) do opts[k] = v end
    local before = {}
    for i, p in ipairs(net:parameters()) do before[i] = p:clone() end
    local ok, err = pcall(ff.grow.run, opts)
    local k = next(case)
    lu.assertFalse(ok, "grow.run " .. k .. " = " .. tostring(case[k]))
    lu.assertStrContains(tostring(err), "grow.run: ")
    lu.assertStrContains(tostring(err), k)
    for i, p in ipairs(net:parameters()) do lu.assertTrue(p:equal(before[i]), "parameters unchanged: " .. k) end
  end
end

function TestBadInputSweep:test_recipe_overrides_and_fields()
  local path = recipe_file()
  local dir = out_dir("sweep")
  for _, o in ipairs { "phases=0", "phases=-1", "phases=nan", "phases=inf", "phases=1e99", "epochs=0",
    "epochs=abc", "score_batches=0", "score_batches=-1", "batch_size=0", "batch_size=2.5", "eta=0", "eta=-1",
    "eta=abc", "seed=-1", "seed=0.5", "checkpoint_every=0", "max_rollbacks=-1", "nan_lr_factor=1",
    "on_nan=x", "reset_optim=2", "loss=5", "neighbourhood=5", "net=x", "optim.x=1", "phases.x=1", "=3",
    "unknown=1", "description=5" } do
    local ok, err = pcall(command.main, path, "--out", dir, "--quiet", o)
    lu.assertFalse(ok, o)
    lu.assertStrContains(tostring(err), "grow: ")
    lu.assertFalse(exists(dir), "nothing written: " .. o)
  end
  for _, field in ipairs { "phases = {}", "epochs = 'x'", "data = 5", "net = {}", "optim = 'x'", "eta = true",
    "neighbourhood = 'paper'", "score_batches = 'x'", "loss = {}", "seed = 'x'", "[1] = 2" } do
    local p = recipe_file(field .. ",")
    local ok, err = pcall(command.main, p, "--out", dir, "--quiet")
    lu.assertFalse(ok, field)
    lu.assertStrContains(tostring(err), "grow: recipe ")
    lu.assertFalse(exists(dir), "nothing written: " .. field)
  end
end

-- Random overrides (keys near and far from the fields, dotted or not,
-- values of every kind): each is applied and checked, or refused with a
-- "grow: " message; never an internal error.
function TestBadInputSweep:test_random_overrides()
  local recipe = R.load(recipe_file())
  local g = ff.Generator(5)
  local function below(n) return math.min(n, math.floor(ff.rand({ 1 }, g):item() * n) + 1) end
  local function pick(list) return list[below(#list)] end
  local keys = { "seed", "phases", "epochs", "score_batches", "batch_size", "eta", "eta.ratio", "neighbourhood",
    "neighbourhood.new", "neighbourhood.eps", "data", "net", "optim", "checkpoint_every", "on_nan", "loss",
    "nan_lr_factor", "max_rollbacks", "reset_optim", "description", "phase", "epoch", "neighborhood.new", "x.y.z",
    "eta.ratio.x", "seed.x", "", ".", "a..b", "_", "PHASES" }
  local values = { "0", "1", "-1", "2.5", "1e308", "-1e308", "inf", "-inf", "nan", "0x10", "true", "false", "", "abc",
    "all", "stop", "rollback", "mse", "1e-2", "9007199254740993", "{}", "nil" }
  local accepted, refused = 0, 0
  for _ = 1, 400 do
    local overrides = {}
    for i = 1, below(3) do overrides[i] = pick(keys) .. "=" .. pick(values) end
    local ok, err = pcall(R.configure, recipe, overrides)
    if ok then
      accepted = accepted + 1
      lu.assertEquals(type(err), "table")
    else
      refused = refused + 1
      lu.assertEquals(type(err), "string", table.concat(overrides, " "))
      lu.assertStrContains(err, "grow: ", false, table.concat(overrides, " "))
      lu.assertNil(err:find("attempt to", 1, true), err)
    end
  end
  lu.assertTrue(accepted > 10 and refused > 100, accepted .. " accepted, " .. refused .. " refused")
end

TestResume = {}

function TestResume:test_checkpoint_records_the_recipe()
  local path = recipe_file()
  local dir = out_dir("rec")
  command.main(path, "--out", dir, "--quiet", "phases=3")
  local ck = ff.load(dir .. "/checkpoint.safetensors")
  lu.assertEquals(ck.recipe.hash, R.hash(testlib.read_file(path)))
  lu.assertEquals(ck.recipe.overrides, { "phases=3" })
  lu.assertEquals(ck.recipe.config.phases, 3)
  lu.assertEquals(ck.recipe.config.seed, 1)
end

function TestResume:test_resume_refuses_another_recipes_checkpoint()
  local a, b = recipe_file(), recipe_file("description = 'another recipe',")
  local dir = out_dir("other")
  R.run(R.load(a), { out = dir, quiet = true, stop_after = 1 })
  local before = testlib.read_file(dir .. "/grow.jsonl")
  local err = main_error(b, "--out", dir, "--quiet", "--resume")
  lu.assertStrContains(err, "was written by another recipe")
  lu.assertStrContains(err, a)
  lu.assertEquals(testlib.read_file(dir .. "/grow.jsonl"), before, "the log is untouched")
end

function TestResume:test_resume_refuses_other_overrides_and_reuses_the_recorded_ones()
  local path = recipe_file()
  local dir = out_dir("ovr_resume")
  R.run(R.load(path), { out = dir, quiet = true, stop_after = 1, overrides = { "phases=3" } })
  local err = main_error(path, "--out", dir, "--quiet", "--resume", "phases=4")
  lu.assertStrContains(err, "phases: the checkpoint has 3, this run 4")
  lu.assertStrContains(err, "overrides recorded: phases=3")
  lu.assertStrContains(main_error(path, "--out", dir, "--quiet", "--resume", "--seed", "9"),
    "seed: the checkpoint has 1, this run 9")
  -- no overrides given: the recorded phases=3 is used (the recipe says 2)
  local rows = R.run(R.load(path), { out = dir, quiet = true, resume = true })
  lu.assertEquals(#rows, 3)
  -- the same overrides repeated are fine
  R.run(R.load(path), { out = dir, quiet = true, resume = true, overrides = { "phases=3" } })
end

function TestResume:test_resume_without_a_checkpoint_says_it_starts_fresh()
  local path = recipe_file()
  local dir = out_dir("fresh")
  local p = io.popen(string.format("./firefly grow %s --out %s --resume 2>&1", path, dir))
  local out = p:read("a")
  lu.assertTrue(p:close(), out)
  lu.assertStrContains(out, "no checkpoint in " .. dir .. "; starting fresh")
  lu.assertTrue(exists(dir .. "/checkpoint.safetensors"))
end

function TestResume:test_cli_typo_exits_non_zero()
  local path = recipe_file()
  local p = io.popen(string.format("./firefly grow %s --out %s epoch=1 2>&1", path, out_dir("cli")))
  local out = p:read("a")
  lu.assertNotEquals(p:close(), true, "exit status")
  lu.assertStrContains(out, "did you mean 'epochs'?")
end

local status = testlib.run()
os.execute("rm -rf '" .. base .. "'")
os.exit(status)
