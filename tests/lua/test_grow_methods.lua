-- test_grow_methods: every growth method under the one API (propose,
-- select, apply, grow.run): budgets kept exactly, reproducible for a seed,
-- logged alike; and the random and NASH baselines themselves.
package.path = "tests/lua/?.lua;" .. package.path
local testlib = require "testlib"
local lu = testlib.lu
local ff = require "firefly"
local nn = ff.nn

local function setup(seed)
  ff.manual_seed(seed or 21)
  local ds = ff.data.two_moons { n = 320, noise = 0.1, seed = 21 }
  local train, val = ds:split(0.8, ff.Generator(4))
  local net = nn.mlp { 2, 6, 6, 2, act = "relu" }
  local opt = ff.optim.Adam(net:named_parameters(), { lr = 1e-2 })
  local loader = ff.data.DataLoader(train, { batch_size = 32, shuffle = true, generator = ff.Generator(21) })
  ff.train.fit { model = net, data = loader, optim = opt, epochs = 2, quiet = true }
  local batches = { { train.x:narrow(1, 1, 128), train.y:narrow(1, 1, 128) } }
  return net, opt, batches, loader, val
end

-- The options each method needs beyond the common ones.
local function nb_of(method, seed, val, loader)
  local nb = { method = method, new = 4, generator = ff.Generator(seed), quiet = true }
  if method == "nash" then nb.val, nb.train, nb.children, nb.child_epochs = val, loader, 2, 1 end
  -- (a ReLU net: published GradMax refuses it, its transpose takes it;
  -- test_grow_baselines runs both)
  if method == "gradmax" then nb.zero = "outgoing" end
  return nb
end

local function weights(net)
  local out = {}
  for _, p in ipairs(net:named_parameters()) do out[#out + 1] = p.name .. "=" .. table.concat(p.param:view(-1):totable(), ",") end
  return table.concat(out, ";")
end

-- Every method; each baseline's own suite tests its maths.
local METHODS = { "firefly", "random", "nash", "split_exact", "split_fast", "net2net", "gradmax" }

TestMethods = {}

function TestMethods:test_neuron_budget_is_exact()
  for _, m in ipairs(METHODS) do
    local net, opt, batches, loader, val = setup()
    local p = ff.grow.propose(net, nb_of(m, 3, val, loader), batches)
    p:select(5)
    local _, _, r = p:apply(opt)
    lu.assertEquals(r.selected, 5, m)
    lu.assertEquals(r.neurons_after - r.neurons_before, 5, m)
    -- every method's operators preserve the function at zero step
    lu.assertTrue(type(r.preserved) == "number" and r.preserved <= 1e-5, m .. ": preserved " .. tostring(r.preserved))
  end
end

function TestMethods:test_params_budget_is_exact()
  for _, m in ipairs(METHODS) do
    local net, opt, batches, loader, val = setup()
    local p = ff.grow.propose(net, nb_of(m, 3, val, loader), batches)
    p:select { params = 40 }
    local _, _, r = p:apply(opt)
    lu.assertTrue(p.cost <= 40, m)
    lu.assertEquals(r.params_after - r.params_before, p.cost, m)
    lu.assertTrue(r.selected > 0, m)
  end
end

function TestMethods:test_reproducible_for_a_seed()
  for _, m in ipairs(METHODS) do
    local out = {}
    for run = 1, 2 do
      local net, opt, batches, loader, val = setup()
      local p = ff.grow.propose(net, nb_of(m, 7, val, loader), batches)
      p:select(4)
      p:apply(opt)
      out[run] = weights(net)
    end
    lu.assertEquals(out[1], out[2], m)
  end
end

function TestMethods:test_unknown_method()
  local net, _, batches = setup()
  local msg = testlib.error_of(ff.grow.propose, net, { method = "nas" }, batches)
  lu.assertStrContains(msg, "grow.propose: method must be one of firefly, random, nash")
  msg = testlib.error_of(ff.grow.propose, net, { method = "random", children = 3 }, batches)
  lu.assertStrContains(msg, "unknown neighbourhood option 'children' for method random")
end

TestRandom = {}

function TestRandom:test_steps_and_printing()
  local net, _, batches = setup()
  local p = ff.grow.propose(net, { method = "random", new = 3, step = 0.05, generator = ff.Generator(2) }, batches)
  lu.assertStrContains(tostring(p), "random proposal: 2 units")
  for _, c in ipairs(p.og.units) do
    local norms = c.split.v:view(c.split.v:size(1), -1):norm(2, 2)
    lu.assertTrue((norms - 0.05):abs():max():item() < 1e-6)
    lu.assertTrue((c.new.e - 0.05):abs():max():item() < 1e-7)
  end
  p:select(4)
  lu.assertEquals(p.predicted, 0)
  -- a kept split moves its parent by exactly the drawn step: θ ± v
  p = ff.grow.propose(net, { method = "random", new = 0, where = { "1" }, step = 0.05, generator = ff.Generator(2) },
    batches)
  p:select(1)
  local i = p.selected[1].index
  local w, v = net:get(1).weight:clone(), p.og.units[1].split.v[i]:clone()
  p:apply()
  local grown = net:get(1).weight
  lu.assertTrue((grown[i] - (w[i] + v)):abs():max():item() < 1e-6)
  lu.assertTrue((grown[grown:size(1)] - (w[i] - v)):abs():max():item() < 1e-6)
  lu.assertStrContains(testlib.error_of(ff.grow.propose, net, { method = "random", step = -1 }, batches),
    "random: step must be a positive number")
end

-- Uniform selection: over many seeds every neuron of a unit gets split
-- about equally often.
function TestRandom:test_selection_is_uniform()
  local net, _, batches = setup()
  local counts = {}
  for i = 1, 6 do counts[i] = 0 end
  local trials = 300
  for s = 1, trials do
    local p = ff.grow.propose(net, { method = "random", new = 0, where = { "1" }, generator = ff.Generator(s) }, batches)
    p:select(1)
    counts[p.selected[1].index] = counts[p.selected[1].index] + 1
  end
  -- each of 6 neurons: mean 50, sd ~6.5; 4 sd either way
  for i = 1, 6 do lu.assertTrue(counts[i] > 24 and counts[i] < 76, table.concat(counts, " ")) end
end

TestNash = {}

function TestNash:test_keeps_the_best_child_on_validation()
  local net, opt, batches, loader, val = setup()
  local p = ff.grow.propose(net, nb_of("nash", 5, val, loader), batches)
  p:select(4)
  local _, _, r = p:apply(opt)
  lu.assertEquals(#r.children, 2)
  local best = r.children[r.best_child]
  for _, c in ipairs(r.children) do lu.assertTrue(best.val_acc >= c.val_acc) end
  -- the network now is the winner: its validation numbers are the child's
  local e = ff.train.evaluate(net, val)
  lu.assertAlmostEquals(e.accuracy, best.val_acc, 1e-9)
  lu.assertAlmostEquals(e.loss, best.val_loss, 1e-5)
  lu.assertEquals(r.neurons_after - r.neurons_before, 4)
  -- and it trains on with the optimiser (state forgotten, shapes followed)
  ff.train.fit { model = net, data = loader, optim = opt, epochs = 1, quiet = true }
end

function TestNash:test_needs_validation_data()
  local net, _, batches = setup()
  lu.assertStrContains(testlib.error_of(ff.grow.propose, net, { method = "nash" }, batches),
    "nash needs val")
  lu.assertStrContains(testlib.error_of(ff.grow.propose, net, { method = "nash", val = {}, children = 0 }, batches),
    "children must be a positive integer")
end

TestRun = {}

function TestRun:test_rows_name_the_method_and_what_it_added()
  for _, m in ipairs { "random", "nash" } do
    local net, opt, _, loader, val = setup()
    local nb = { method = m, new = 2, generator = ff.Generator(1), quiet = true }
    if m == "nash" then nb.children, nb.child_epochs = 2, 1 end
    local rows = ff.grow.run { net = net, data = loader, optim = opt, phases = 2, epochs = 1, quiet = true,
      neighbourhood = nb, eta = 3, score_batches = 2, val = val }
    lu.assertEquals(rows[1].method, m)
    lu.assertEquals(rows[1].neurons_added, 3)
    lu.assertEquals(rows[1].params_added, rows[2].params - rows[1].params)
    lu.assertTrue(rows[1].grow_seconds >= 0)
  end
  local net, opt, _, loader = setup()
  lu.assertStrContains(testlib.error_of(ff.grow.run, { net = net, data = loader, optim = opt, phases = 2,
    quiet = true, neighbourhood = { method = "nash" } }), "method nash needs validation data")
end

function TestRun:test_a_regression_loss_drives_training_and_growth()
  ff.manual_seed(3)
  local ds = ff.data.teacher { n = 128, d_in = 3, width = 6, seed = 3 }
  local net = nn.mlp { 3, 2, 1, act = "rbf" }
  local opt = ff.optim.Adam(net:named_parameters(), { lr = 1e-2 })
  local loader = ff.data.DataLoader(ds, { batch_size = 32, generator = ff.Generator(3) })
  local rows = ff.grow.run { net = net, data = loader, optim = opt, phases = 2, epochs = 2, quiet = true,
    neighbourhood = { new = 2, generator = ff.Generator(4) }, eta = 1, score_batches = 2, loss = "mse" }
  lu.assertEquals(rows[2].widths, "3")
  lu.assertTrue(rows[2].train_loss < rows[1].train_loss)
  lu.assertStrContains(testlib.error_of(ff.grow.run, { net = net, data = loader, optim = opt, quiet = true,
    loss = "hinge" }), "train: unknown loss 'hinge' (cross_entropy, mse, bce_with_logits)")
end

os.exit(testlib.run())
