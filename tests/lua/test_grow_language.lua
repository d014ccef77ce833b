-- test_grow_language: the neighbourhood as a language: settings per unit
-- (by name, by pattern, by a function), checked against the network's
-- units; and the budget forms, one resolve for select, grow.run and
-- recipes.
package.path = "tests/lua/?.lua;" .. package.path
local testlib = require "testlib"
local lu = testlib.lu
local ff = require "firefly"
local nn = ff.nn

local function mlp_setup()
  ff.manual_seed(11)
  local g = ff.Generator(11)
  local net = nn.mlp { 3, 5, 4, 2, act = "tanh", generator = g }
  local x = ff.randn(64, 3, g)
  local y = ff.randint(1, 2, 64, g)
  return net, { { x, y } }
end

-- features (a named Sequential) then a classifier: units "features.1"
-- and "3".
local function conv_setup()
  ff.manual_seed(12)
  local g = ff.Generator(12)
  local features = nn.Sequential { nn.Conv2d(1, 4, 3, { padding = 1 }), nn.ReLU(), nn.Conv2d(4, 4, 3, { padding = 1 }),
    nn.ReLU(), nn.MaxPool2d(2) }
  local net = nn.Sequential {}
  net:add(features, "features")
  net:add(nn.Flatten()); net:add(nn.Linear(64, 6)); net:add(nn.ReLU()); net:add(nn.Linear(6, 3))
  local x = ff.randn(16, 1, 8, 8, g)
  return net, { { x, ff.randint(1, 3, 16, g) } }
end

-- The kinds of candidate each unit has, as "split+new".
local function kinds(p)
  local out = {}
  for k, entry in ipairs(p.scores) do
    local list = {}
    for _, kind in ipairs { "split", "new", "layer" } do
      if entry[kind] then list[#list + 1] = kind .. ":" .. entry[kind]:numel() end
    end
    out[p.units[k].name] = table.concat(list, "+")
  end
  return out
end

TestPerUnit = {}

function TestPerUnit:test_new_on_one_unit_split_on_another()
  local net, batches = mlp_setup()
  local names = {}
  for _, u in ipairs(ff.grow.units(net)) do names[#names + 1] = u.name end
  lu.assertEquals(names, { "1", "3" })
  local p = ff.grow.propose(net, { split = false, ["1"] = { new = 6 }, ["3"] = { split = true },
    generator = ff.Generator(1), quiet = true }, batches)
  lu.assertEquals(kinds(p), { ["1"] = "new:6", ["3"] = "split:4" })
  -- printed: the neighbourhood as a table of units and settings
  local printed = tostring(p)
  lu.assertStrContains(printed, "neighbourhood:")
  lu.assertTrue(printed:find("\n  1 +Linear +5  false +6 ") ~= nil, printed)
  lu.assertTrue(printed:find("\n  3 +Linear +4  true +0 ") ~= nil, printed)
  local _, _, r = p:select(3):apply()
  lu.assertEquals(r.neurons_after - r.neurons_before, 3)
  lu.assertTrue(r.preserved <= 1e-6)
end

function TestPerUnit:test_pattern_adds_layers_only_under_features()
  local net, batches = conv_setup()
  local p = ff.grow.propose(net, { new = 2, ["features.*"] = { layers = { candidates = 3 } },
    layers = { max_new_layers = 1 }, generator = ff.Generator(2), quiet = true }, batches)
  lu.assertEquals(kinds(p), { ["features.1"] = "split:4+new:2+layer:3", ["3"] = "split:6+new:2" })
  p:select(12)
  local _, _, r = p:apply()
  lu.assertTrue(r.preserved <= 1e-5)
end

function TestPerUnit:test_precedence_default_pattern_name()
  local net, batches = conv_setup()
  local p = ff.grow.propose(net, { new = 1, default = { new = 2 }, ["*"] = { new = 3 }, ["feat*"] = { new = 4 },
    ["3"] = { new = 5 }, steps = 0, generator = ff.Generator(3), quiet = true }, batches)
  lu.assertEquals(p.settings[1].new, 4) -- the longer pattern after the shorter
  lu.assertEquals(p.settings[2].new, 5) -- the name last
end

function TestPerUnit:test_function_neighbourhood()
  local net, batches = conv_setup()
  local seen = {}
  local p = ff.grow.propose(net, function(unit)
    seen[#seen + 1] = string.format("%s %s %d %d %d %s", unit.name, unit.kind, unit.width, unit.depth, unit.position,
      tostring(unit.conv))
    return { new = unit.position * 2, split = not unit.conv, eps = unit.conv and 5e-3 or 1e-2 }
  end, batches)
  lu.assertEquals(seen, { "features.1 Conv2d 4 1 1 true", "3 Linear 6 0 2 false" })
  lu.assertEquals(kinds(p), { ["features.1"] = "new:2", ["3"] = "split:6+new:4" })
  -- each unit's ε bounds its own steps
  lu.assertTrue(p.og.units[1].new.e:abs():max():item() <= 5e-3 * (1 + 1e-6))
  -- and the paper's selection steps by the unit's ε
  p:select(6)
  for _, c in ipairs(p.selected) do
    lu.assertEquals(math.abs(c.eps_hat), c.unit == 1 and 5e-3 or 1e-2)
  end
  -- a function as `default`, with options of the whole step beside it
  local q = ff.grow.propose(net, { steps = 0, default = function(u) return { new = u.conv and 1 or 3 } end,
    quiet = true }, batches)
  lu.assertEquals(kinds(q), { ["features.1"] = "split:4+new:1", ["3"] = "split:6+new:3" })
end

function TestPerUnit:test_caps_per_unit()
  local net, batches = mlp_setup()
  local p = ff.grow.propose(net, { new = 4, ["1"] = { cap = 1 }, generator = ff.Generator(4), quiet = true }, batches)
  p:select(6)
  local per = {}
  for _, c in ipairs(p.selected) do per[c.unit] = (per[c.unit] or 0) + 1 end
  lu.assertEquals(per[1], 1)
end

function TestPerUnit:test_errors_name_the_unit()
  local net, batches = mlp_setup()
  local function err(nb) return testlib.error_of(ff.grow.propose, net, nb, batches) end
  local e = err { ["7"] = { new = 2 } }
  lu.assertStrContains(e, "'7'")
  lu.assertStrContains(e, "units: 1, 3")
  e = err { ["conv*"] = { new = 2 } }
  lu.assertStrContains(e, "'conv*'")
  lu.assertStrContains(e, "units: 1, 3")
  lu.assertStrContains(err { nwe = 2 }, "did you mean 'new'")
  lu.assertStrContains(err { ["1"] = 5 }, "table of unit settings")
  lu.assertStrContains(err { ["1"] = { nwe = 3 } }, "did you mean 'new'")
  lu.assertStrContains(err { ["1"] = { steps = 3 } }, "unknown unit setting 'steps'")
  lu.assertStrContains(err { ["1"] = { new = -3 } }, "'1'.new")
  lu.assertStrContains(err { default = { eps = 0 } }, "default.eps")
  lu.assertStrContains(err(function() return { new = "many" } end), "unit 1.new")
  lu.assertStrContains(err(function() error("boom") end), "failed on unit 1")
  e = err { where = { "7" } }
  lu.assertStrContains(e, "unit '7'")
  lu.assertStrContains(e, "units: 1, 3")
  lu.assertStrContains(err { split = { "3" } }, "split must be true or false")
end

-- Every baseline reads the same per-unit settings: random grows only
-- where the neighbourhood has candidates, net2net copies only where split.
function TestPerUnit:test_methods_read_settings()
  local net, batches = mlp_setup()
  local p = ff.grow.propose(net, { method = "random", split = false, ["3"] = { new = 3 },
    generator = ff.Generator(5), quiet = true }, batches)
  lu.assertEquals(kinds(p), { ["1"] = "", ["3"] = "new:3" })
  local q = ff.grow.propose(net, { method = "net2net", ["1"] = { split = false }, generator = ff.Generator(5),
    quiet = true }, batches)
  lu.assertEquals(kinds(q), { ["1"] = "", ["3"] = "split:4" })
end

-- A recipe (run sandboxed, as `firefly grow` runs it) grows only where its
-- neighbourhood has candidates: new neurons on unit "1", nothing on "3".
function TestPerUnit:test_recipe_with_per_unit_neighbourhood()
  local dir = os.tmpname()
  os.remove(dir)
  local path = dir .. ".lua"
  testlib.write_file(path, [[
return {
  seed = 2, phases = 3, epochs = 1, score_batches = 2, batch_size = 64,
  data = function(ff)
    local ds = ff.data.two_moons { n = 256, noise = 0.1, seed = 7 }
    return ds, ds
  end,
  net = function(ff) return ff.nn.mlp { 2, 3, 3, 2, act = "tanh" } end,
  optim = function(ff, params) return ff.optim.SGD(params, { lr = 0.1, momentum = 0.9 }) end,
  neighbourhood = { steps = 1, lr = 1e-2, split = false, ["1"] = { new = 4 } },
  eta = 2,
}]])
  local R = ff.grow.recipe
  local rows = R.run(R.load(path), { out = dir, quiet = true })
  os.remove(path)
  os.execute("rm -rf '" .. dir .. "'")
  lu.assertEquals(#rows, 3)
  -- unit 1 grew by the whole budget each phase, unit 3 not at all
  lu.assertEquals(rows[1].widths, "3-3")
  lu.assertEquals(rows[2].widths, "5-3")
  lu.assertEquals(rows[3].widths, "7-3")
end

TestBudget = {}

-- One resolve: the same forms in select and in grow.run.
function TestBudget:test_forms_select_accepts()
  local net, batches = mlp_setup()
  local function selected(eta)
    local p = ff.grow.propose(net, { new = 4, steps = 0, generator = ff.Generator(6), quiet = true }, batches)
    return #p:select(eta).selected
  end
  lu.assertEquals(selected(3), 3)
  lu.assertEquals(selected { neurons = 2 }, 2)
  lu.assertEquals(selected { ratio = 0.5 }, 4) -- half of 9 neurons
  lu.assertEquals(selected { ratio = 0.35, inclusive = true }, 4)
  lu.assertEquals(selected(ff.grow.budget.fixed(2)), 2)
  lu.assertEquals(selected(function(_, n) return ff.grow.budget.neurons(n) // 3 end), 3)
  lu.assertEquals(selected(nil), 3) -- the one default, {ratio = 0.35}: floor(0.35 * 9)
  lu.assertIs(ff.schedule, ff.grow.budget)
  local p = ff.grow.propose(net, { new = 4, steps = 0, quiet = true }, batches)
  lu.assertStrContains(testlib.error_of(p.select, p, { nerons = 2 }), "did you mean 'neurons'")
  lu.assertStrContains(testlib.error_of(p.select, p, { ratio = 0 }), "ratio must be a number > 0")
  lu.assertStrContains(testlib.error_of(p.select, p, -1), "non-negative")
  lu.assertStrContains(testlib.error_of(p.select, p, function() error("no") end), "schedule failed")
end

os.exit(testlib.run())
