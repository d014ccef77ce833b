-- test_grow_propose: one Firefly step from the REPL-level API on an MLP:
-- propose (step 1 + step 2), select, apply; the predicted loss change
-- against the measured one, constraints after step 1, and training on.
package.path = "tests/lua/?.lua;" .. package.path
local testlib = require "testlib"
local lu = testlib.lu
local ff = require "firefly"
local nn = ff.nn

local function setup()
  ff.manual_seed(21)
  local ds = ff.data.two_moons { n = 256, noise = 0.1, seed = 21 }
  local net = nn.mlp { 2, 4, 4, 2, act = "tanh" }
  local opt = ff.optim.SGD(net:named_parameters(), { lr = 0.1, momentum = 0.9 })
  local loader = ff.data.DataLoader(ds, { batch_size = 64, shuffle = true, generator = ff.Generator(21) })
  ff.train.fit { model = net, data = loader, optim = opt, epochs = 3, quiet = true }
  local batches = {}
  for i = 1, 2 do
    local idx = ff.arange(1 + (i - 1) * 128, 1 + i * 128)
    batches[i] = { ds.x:index_select(1, idx), ds.y:index_select(1, idx) }
  end
  return net, opt, batches, loader
end

TestPropose = {}

function TestPropose:test_step_predicts_the_loss_change()
  local net, opt, batches = setup()
  local p = ff.grow.propose(net, { new = 4, eps = 1e-2, steps = 2, lr = 1e-2,
    generator = ff.Generator(5) }, batches)
  -- printed: one line per unit and kind, with its width and scores
  lu.assertStrContains(tostring(p), "max |s|")
  lu.assertTrue(tostring(p):find("\n  1 +Linear +4  split +4 ") ~= nil, tostring(p))
  lu.assertTrue(tostring(p):find("\n  3 +Linear +4  new +4 ") ~= nil, tostring(p))
  -- step 1 kept every candidate inside the constraints
  for _, c in ipairs(p.og.units) do
    lu.assertTrue(c.split.v:norm(2, 2):max():item() <= 1e-2 * (1 + 1e-5))
    lu.assertTrue(c.new.e:abs():max():item() <= 1e-2 * (1 + 1e-5))
  end
  p:select(4)
  lu.assertStrContains(tostring(p), "selected 4")
  local before = net:num_params()
  local grown, maps, report = p:apply(opt)
  lu.assertEquals(grown, net)
  lu.assertTrue(report.params_after > before)
  lu.assertTrue(report.predicted < 0)
  lu.assertTrue(math.abs(report.measured - report.predicted) <= 0.5 * math.abs(report.predicted),
    string.format("predicted %.4g measured %.4g", report.predicted, report.measured))
  lu.assertTrue(#maps >= 1 and #maps <= 4) -- split and/or add on each unit touched
  -- the optimiser followed the grown layers, and training goes on
  local x, y = batches[1][1], batches[1][2]
  opt:zero_grad()
  ff.cross_entropy(net(x), y):backward()
  opt:step()
end

function TestPropose:test_midpoint_rule_and_errors()
  local net, _, batches = setup()
  local pe = ff.grow.propose(net, { new = 2, steps = 0, rule = "endpoint", generator = ff.Generator(3) }, batches)
  local pm = ff.grow.propose(net, { new = 2, steps = 0, rule = "midpoint", points = 3,
    generator = ff.Generator(3) }, batches)
  local se, sm = pe.scores[1].split, pm.scores[1].split
  lu.assertFalse(se:equal(sm))
  -- a split's midpoint score is about half its endpoint score (linear in α)
  lu.assertTrue((sm * 2 - se):abs():max():item() <= 0.2 * se:abs():max():item())
  lu.assertStrContains(testlib.error_of(ff.grow.propose, net, { nwe = 2 }, batches), "unknown neighbourhood option")
  lu.assertStrContains(testlib.error_of(ff.grow.propose, net, { rule = "simpson" }, batches), "endpoint")
  lu.assertTrue(net:parameters()[1]:requires_grad(), "weights unfrozen after propose")
end

function TestPropose:test_midpoint_agrees_with_exact()
  -- the exact rule walks each candidate's own path; the midpoint rule's
  -- diagonal path must agree on a small net, and the endpoint rule must be
  -- off by the factor 2 a split's linear-in-alpha gradient predicts
  local net, _, batches = setup()
  local function scores(rule, points)
    return ff.grow.propose(net, { new = 3, steps = 0, rule = rule, points = points,
      generator = ff.Generator(3) }, batches).scores
  end
  local exact, mid, endp = scores("exact"), scores("midpoint", 8), scores("endpoint")
  for u = 1, 2 do
    for _, kind in ipairs { "split", "new" } do
      local e, m = exact[u][kind], mid[u][kind]
      local worst = ((m - e):abs() - e:abs() * 0.1):max():item()
      lu.assertTrue(worst <= 2e-6, string.format("unit %d %s: midpoint %s vs exact %s", u, kind,
        table.concat(m:totable(), " "), table.concat(e:totable(), " ")))
    end
    local ratio = endp[u].split:norm():item() / exact[u].split:norm():item()
    lu.assertTrue(ratio > 1.6 and ratio < 2.4, "endpoint / exact split scores: " .. ratio)
  end
end

function TestPropose:test_official_preset()
  local net, opt, batches = setup()
  local nb = ff.grow.neighbourhood("official", { new = 4, generator = ff.Generator(7) })
  lu.assertEquals(nb.optimizer, "rmsprop")
  lu.assertEquals(ff.grow.neighbourhood({ new = 3 }).selection, "paper")
  lu.assertStrContains(testlib.error_of(ff.grow.neighbourhood, "nash"), "unknown preset")
  local p = ff.grow.propose(net, nb, batches)
  p:select(3)
  -- the most negative gate gradients (score times trained step), each kept
  -- with its trained step
  local all = p:candidates()
  table.sort(all, function(a, b) return a.effect < b.effect end)
  for i, c in ipairs(p.selected) do
    lu.assertEquals(c.effect, all[i].effect)
    lu.assertEquals(c.eps_hat, c.step)
    lu.assertTrue(c.trained)
  end
  -- the released code's initialisation: unit steps for new neurons, small
  -- outgoing weights
  lu.assertEquals(nb.init, "official")
  -- what the preset says of the run is the run's (grow.run{preset =})
  local run = ff.grow.run_presets.official
  lu.assertEquals(run.score_batches, "all")
  lu.assertEquals(run.eta.ratio, 0.35)
  lu.assertNil(nb.batches)
  lu.assertStrContains(testlib.error_of(ff.grow.propose, net, { eta = 3 }, batches), "unknown neighbourhood option 'eta'")
  local _, _, r = p:apply(opt)
  lu.assertTrue(r.predicted < 0)
  lu.assertTrue(r.measured < 0, "measured " .. r.measured)
end

function TestPropose:test_new_layers_two_level_budget()
  local net, opt, batches = setup()
  local function count_residuals(n)
    local k = 0
    n:apply(function(m) if getmetatable(m).__name == "Residual" then k = k + 1 end end)
    return k
  end
  -- over-grown with layer candidates only: zero steps give the base network
  local og = require("firefly.grow.overgrown").build(net, ff.grow.units(net),
    { split = false, layers = 3, generator = ff.Generator(8) })
  ff.no_grad(function() for _, c in ipairs(og.units) do c.layer.e:zero_() end end)
  local x, y = batches[1][1], batches[1][2]
  lu.assertTrue(ff.no_grad(og, x):allclose(ff.no_grad(net, x), 1e-6, 1e-6))
  local p = ff.grow.propose(net, { split = false, layers = { candidates = 4, max_new_layers = 1 },
    steps = 1, lr = 1e-2, generator = ff.Generator(9) }, batches)
  lu.assertTrue(tostring(p):find("layer +4 ") ~= nil, tostring(p))
  p:select(3)
  local units_opened = {}
  for _, c in ipairs(p.selected) do
    lu.assertEquals(c.kind, "layer")
    units_opened[c.unit] = true
  end
  local n_opened = 0
  for _ in pairs(units_opened) do n_opened = n_opened + 1 end
  lu.assertEquals(n_opened, 1)
  local _, _, r = p:apply(opt)
  lu.assertEquals(count_residuals(net), 1)
  lu.assertTrue(r.predicted < 0)
  lu.assertTrue(math.abs(r.measured - r.predicted) <= 0.5 * math.abs(r.predicted),
    string.format("predicted %.4g measured %.4g", r.predicted, r.measured))
  -- the inserted block trains with the rest, and its hidden layer is growable
  opt:zero_grad(); ff.cross_entropy(net(x), y):backward(); opt:step()
  local names = {}
  for _, u in ipairs(ff.grow.units(net)) do names[#names + 1] = u.name end
  lu.assertStrContains(table.concat(names, " "), ".f.1")
  -- and the next step still works (it grows the top-level units)
  local p2 = ff.grow.propose(net, { new = 2, steps = 0, generator = ff.Generator(10) }, batches)
  p2:select(2):apply(opt)
end

function TestPropose:test_parameter_budget_selection()
  local net, opt, batches = setup()
  local p = ff.grow.propose(net, { new = 4, steps = 0, generator = ff.Generator(12) }, batches)
  p:select { params = 40 }
  lu.assertTrue(#p.selected > 0)
  lu.assertTrue(p.cost <= 40)
  local before = net:num_params()
  p:apply(opt)
  -- the parameters actually added are what selection charged
  lu.assertEquals(net:num_params() - before, p.cost)
  lu.assertStrContains(testlib.error_of(p.select, p, { flop = 3 }), "unknown budget field 'flop'")
  lu.assertStrContains(testlib.error_of(p.select, p, { params = -1 }), "params must be a non-negative number")
  -- with new layers in the neighbourhood too
  local p2 = ff.grow.propose(net, { new = 3, layers = { candidates = 3, max_new_layers = 2 }, steps = 0,
    generator = ff.Generator(13) }, batches)
  for _, budget in ipairs { 30, 80 } do
    local q = ff.grow.propose(net, { new = 3, layers = { candidates = 3, max_new_layers = 2 }, steps = 0,
      generator = ff.Generator(13) }, batches)
    q:select { params = budget }
    local b = net:num_params()
    q:apply()
    lu.assertEquals(net:num_params() - b, q.cost, "budget " .. budget)
    lu.assertTrue(q.cost <= budget)
  end
  lu.assertNotNil(p2)
end

function TestPropose:test_flop_and_per_unit_budgets()
  -- a conv net with a residual block in the trunk: the FLOPs charged equal
  -- the multiply-adds the grown network gains
  local function build()
    ff.manual_seed(51)
    return nn.Sequential { nn.Conv2d(1, 3, 3, { padding = 1 }), nn.ReLU(),
      nn.Residual(nn.Sequential { nn.Conv2d(3, 2, 3, { padding = 1 }), nn.ReLU(), nn.Conv2d(2, 3, 3, { padding = 1 }) }),
      nn.MaxPool2d(2), nn.Conv2d(3, 4, 3, { padding = 1 }), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 16, 3) }
  end
  local net = build()
  local g = ff.Generator(52)
  local x, y = ff.randn(8, 1, 8, 8, g), ff.randint(1, 3, 8, g)
  for _, budget in ipairs { 3000, 12000 } do
    local p = ff.grow.propose(net, { new = 3, layers = { candidates = 2, max_new_layers = 1 }, steps = 0,
      generator = ff.Generator(53) }, { { x, y } })
    p:select { flops = budget }
    lu.assertTrue(#p.selected > 0)
    lu.assertTrue(p.flops <= budget)
    local before = testlib.macs(net, x)
    p:apply()
    lu.assertEquals(testlib.macs(net, x) - before, p.flops, "budget " .. budget)
  end
  -- (the second phase grew the new layers' hidden units too)
  lu.assertTrue(#ff.grow.units(net) > 3)
  -- per-unit caps and one pool per unit
  net = build()
  local p = ff.grow.propose(net, { new = 3, steps = 0, generator = ff.Generator(54) }, { { x, y } })
  local names = {}
  for k, c in ipairs(p.og.units) do names[k] = c.unit.name end
  lu.assertEquals(#names, 3) -- the trunk conv, the block's hidden conv, the second conv
  p:select { neurons = 5, per_unit = 1 }
  local per = {}
  for _, c in ipairs(p.selected) do per[c.unit] = (per[c.unit] or 0) + 1 end
  for k = 1, 3 do lu.assertTrue((per[k] or 0) <= 1) end
  p:select { neurons = 2, pool = "unit", per_unit = { [names[1]] = 1 } }
  per = {}
  for _, c in ipairs(p.selected) do per[c.unit] = (per[c.unit] or 0) + 1 end
  lu.assertEquals(per, { 1, 2, 2 })
end

TestRun = {}

function TestRun:test_phases_grow_and_log_reproducibly()
  local function once()
    ff.manual_seed(31)
    local ds = ff.data.two_moons { n = 256, noise = 0.1, seed = 31 }
    local net = nn.mlp { 2, 3, 3, 2, act = "tanh" }
    local opt = ff.optim.SGD(net:named_parameters(), { lr = 0.1, momentum = 0.9 })
    local loader = ff.data.DataLoader(ds, { batch_size = 64, shuffle = true, generator = ff.Generator(31) })
    local dir = os.tmpname()
    os.remove(dir)
    local rows = ff.grow.run { net = net, data = loader, test = ds, optim = opt, phases = 3, epochs = 2,
      neighbourhood = { new = 4, steps = 1, lr = 1e-2, generator = ff.Generator(32) },
      eta = { ratio = 0.5 }, score_batches = 2, log = dir, quiet = true }
    local logged = ff.logging.read_jsonl(dir .. "/grow.jsonl")
    os.execute("rm -rf '" .. dir .. "'")
    return rows, logged, net
  end
  local rows, logged, net = once()
  lu.assertEquals(#rows, 3)
  lu.assertEquals(#logged, 3)
  lu.assertTrue(rows[3].params > rows[1].params)
  lu.assertEquals(rows[1].widths, "3-3")
  lu.assertEquals(rows[2].neurons, 3 + 3 + rows[1].grown)
  lu.assertEquals(net:num_params(), rows[3].params)
  lu.assertTrue(rows[1].measured_dloss < 0)
  -- the same seed gives the same run
  local rows2 = once()
  -- the released code's fresh optimiser after growth
  local ds = ff.data.two_moons { n = 128, noise = 0.1, seed = 33 }
  local net2 = nn.mlp { 2, 3, 2 }
  local made = 0
  local function fresh(n)
    made = made + 1
    return ff.optim.SGD(n:named_parameters(), { lr = 0.1 })
  end
  ff.grow.run { net = net2, data = ff.data.DataLoader(ds, { batch_size = 64, generator = ff.Generator(1) }),
    optim = fresh(net2), phases = 3, epochs = 1, quiet = true, eta = 2, score_batches = 1,
    preset = "official", neighbourhood = ff.grow.neighbourhood("official", { new = 2, generator = ff.Generator(2) }),
    reset_optim = fresh }
  lu.assertEquals(made, 3)
  for i = 1, 3 do
    lu.assertEquals(rows2[i].widths, rows[i].widths)
    lu.assertEquals(rows2[i].train_loss, rows[i].train_loss)
  end
end

function TestRun:test_official_preset_in_the_loop()
  -- the released code's loop: step 1 and the scores over the whole
  -- training set, int(0.35 n) + 1 neurons, the optimiser's state forgotten
  ff.manual_seed(35)
  local ds = ff.data.two_moons { n = 256, noise = 0.1, seed = 35 }
  local net = nn.mlp { 2, 6, 4, 2, act = "tanh" }
  local opt = ff.optim.SGD(net:named_parameters(), { lr = 0.1, momentum = 0.9 })
  local loader = ff.data.DataLoader(ds, { batch_size = 64, shuffle = true, generator = ff.Generator(35) })
  local states = {}
  local rows = ff.grow.run { net = net, data = loader, optim = opt, phases = 2, epochs = 1, quiet = true,
    preset = "official", neighbourhood = ff.grow.neighbourhood("official", { new = 3, generator = ff.Generator(36) }),
    lr_schedule = function(o) return ff.optim.schedule.step(o, { step_size = 1, gamma = 0.5 }) end,
    on_phase = function(t)
      local n = 0
      for _, p in ipairs(opt:params()) do if opt:state_of(p) then n = n + 1 end end
      states[t] = { n = n, lr = opt.lr }
    end }
  lu.assertEquals(rows[1].grown, math.floor(0.35 * 10) + 1)
  lu.assertEquals(states[1].n, 0, "no state left after growth")
  lu.assertEquals(states[1].lr, 0.05) -- one epoch of the phase's step schedule
  lu.assertEquals(states[2].lr, 0.05) -- restarted from 0.1 for phase 2
  lu.assertTrue(states[2].n > 0)
end

TestRecipe = {}

function TestRecipe:test_resume_after_any_phase_is_bit_identical()
  local R = ff.grow.recipe
  local read = testlib.read_file
  local base = os.tmpname()
  os.remove(base)
  local _, full = R.run(R.load("examples/recipes/moons.lua"), { out = base .. "full", quiet = true })
  for stop = 1, 2 do
    local dir = base .. "stop" .. stop
    R.run(R.load("examples/recipes/moons.lua"), { out = dir, quiet = true, stop_after = stop })
    local _, resumed = R.run(R.load("examples/recipes/moons.lua"), { out = dir, quiet = true, resume = true })
    lu.assertEquals(read(dir .. "/grow.jsonl"), read(base .. "full/grow.jsonl"), "logs after stopping at " .. stop)
    local pa, pb = full:parameters(), resumed:parameters()
    lu.assertEquals(#pa, #pb)
    for i = 1, #pa do lu.assertTrue(pa[i]:equal(pb[i]), "parameter " .. i .. " after stopping at " .. stop) end
    os.execute("rm -rf '" .. dir .. "'")
  end
  os.execute("rm -rf '" .. base .. "full'")
end

function TestRecipe:test_same_recipe_and_seed_give_identical_logs()
  local function run(seed, dir, extra)
    local cmd = string.format("./firefly grow examples/recipes/moons.lua --seed %d --out %s --quiet %s 2>&1",
      seed, dir, extra or "")
    local p = io.popen(cmd)
    local out = p:read("a")
    lu.assertTrue(p:close(), out)
    local f = assert(io.open(dir .. "/grow.jsonl"))
    local text = f:read("a")
    f:close()
    os.execute("rm -rf '" .. dir .. "'")
    return text, out
  end
  local base = os.tmpname()
  os.remove(base)
  local a, out = run(3, base .. "a")
  local b = run(3, base .. "b")
  local c = run(4, base .. "c")
  local d = run(3, base .. "d", "phases=2")
  lu.assertStrContains(out, "done: widths")
  lu.assertEquals(a, b)
  lu.assertNotEquals(a, c)
  local _, lines = d:gsub("\n", "")
  lu.assertEquals(lines, 2)
end

os.exit(testlib.run())
