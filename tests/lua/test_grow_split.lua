-- test_grow_split: the splitting baselines (method = "split_exact" and
-- "split_fast"): the splitting matrices against finite differences of the
-- loss of the split network (MLP and conv + batch norm), λ_min against the
-- measured loss change of a split, the fast method's eigenvalues against
-- the exact ones, budgets, reproducibility and errors.
package.path = "tests/lua/?.lua;" .. package.path
local testlib = require "testlib"
local lu = testlib.lu
local ff = require "firefly"
local nn = ff.nn
local overgrown = require "firefly.grow.overgrown"

-- A small MLP with smooth activations (two units: the second reads the
-- first one's activations) and one fixed batch of random labels.
local function mlp_setup(act)
  ff.manual_seed(3)
  local a1, a2 = act and act() or nn.Softplus(), act and act() or nn.Tanh()
  local net = nn.Sequential { nn.Linear(5, 6), a1, nn.Linear(6, 4), a2, nn.Linear(4, 3) }
  local g = ff.Generator(4)
  local batches = {}
  for i = 1, 2 do batches[i] = { ff.randn({ 32, 5 }, g), ff.randint(1, 3, { 32 }, g) } end
  return net, batches
end

-- Conv2d -> BatchNorm2d (running statistics and affine map far from the
-- identity) -> tanh -> Flatten -> Linear.
local function conv_setup(act)
  ff.manual_seed(5)
  local bn = nn.BatchNorm2d(3)
  local net = nn.Sequential { nn.Conv2d(2, 3, 3, { padding = 1 }), bn, act or nn.Tanh(), nn.Flatten(),
    nn.Linear(3 * 4 * 4, 3) }
  local g = ff.Generator(6)
  ff.no_grad(function()
    bn.running_mean:copy_(ff.randn({ 3 }, g) * 0.3)
    bn.running_var:copy_(ff.rand({ 3 }, g) * 2 + 0.5)
    bn.weight:copy_(ff.rand({ 3 }, g) + 0.5)
    bn.bias:copy_(ff.randn({ 3 }, g) * 0.2)
  end)
  local batches = { { ff.randn({ 16, 2, 4, 4 }, g), ff.randint(1, 3, { 16 }, g) } }
  return net, batches
end

-- The loss (batch-size weighted mean, evaluation mode) with only neuron i
-- of unit k split into θ_i ± v (v shaped like the producer's weight row),
-- through the over-grown network.
local function split_loss_fn(net, batches)
  net:eval()
  local units = ff.grow.units(net)
  local og = overgrown.build(net, units, { split = true, new = 0, generator = ff.Generator(1) })
  for _, c in ipairs(og.units) do c.split.v = ff.zeros(c.split.v:size()) end
  return function(k, i, v)
    local V = og.units[k].split.v
    return ff.no_grad(function()
      V:zero_()
      if v then V[i]:copy_(v:view(V[i]:size())) end
      local total, n = 0, 0
      for _, b in ipairs(batches) do
        total = total + ff.cross_entropy(og(b[1]), b[2]):item() * b[1]:size(1)
        n = n + b[1]:size(1)
      end
      return total / n
    end)
  end
end

-- S_jk = (L(t(e_j + e_k)) − L(t(e_j − e_k))) / (2t²) for neuron i of unit k.
-- Its error is O(t²) from the fourth-order term plus the loss's float32
-- rounding over 2t²: t is chosen where both are well inside the tolerance
-- (the conv net's batch norm scales perturbations by up to ~2, so it
-- takes a smaller t; halving t was checked to cut its error by 4).
local function polarised(L, k, i, d, t)
  local S = ff.zeros(d, d)
  local function e(j, kk, sign)
    local v = ff.zeros(d)
    v[j] = t
    v[kk] = v[kk] + sign * t
    return v
  end
  for j = 1, d do
    for kk = 1, j do
      local s = (L(k, i, e(j, kk, 1)) - L(k, i, e(j, kk, -1))) / (2 * t * t)
      S[{ j, kk }] = s
      S[{ kk, j }] = s
    end
  end
  return S
end

local function assert_close(got, want, rel, abs, what)
  local err = (got - want):abs():max():item()
  local tol = rel * want:abs():max():item() + abs
  lu.assertTrue(err <= tol, string.format("%s: max error %.3g > %.3g (scale %.3g)", what, err, tol,
    want:abs():max():item()))
end

TestSplitExact = {}

function TestSplitExact:test_matrix_matches_finite_differences_mlp()
  local net, batches = mlp_setup()
  local p = ff.grow.propose(net, { method = "split_exact" }, batches)
  local L = split_loss_fn(net, batches)
  for k, d in ipairs { 5, 6 } do
    for _, i in ipairs { 1, 4 } do
      local S = p.matrices[k][i]
      assert_close(polarised(L, k, i, d, 0.03), S, 0.02, 2e-5, "unit " .. k .. " neuron " .. i)
      -- and the quadratic form along the eigenvector: Q(v) = 2(L(v) − L)
      local v = p.og.units[k].split.v[i]:reshape(-1) / 1e-2 * 0.05
      local Q = 2 * (L(k, i, v) - L(k, i))
      local vSv = (v:view(1, -1):matmul(S):view(-1) * v):sum():item()
      lu.assertTrue(math.abs(Q - vSv) <= 0.03 * math.abs(vSv) + 1e-6, string.format("Q %.4g vs vSv %.4g", Q, vSv))
    end
  end
end

function TestSplitExact:test_matrix_matches_finite_differences_conv_bn()
  local net, batches = conv_setup()
  local p = ff.grow.propose(net, { method = "split_exact" }, batches)
  local units = ff.grow.units(net)
  lu.assertEquals(#units, 1)
  lu.assertEquals(units[1].kind, "Conv2d")
  local L = split_loss_fn(net, batches)
  for _, i in ipairs { 1, 3 } do
    assert_close(polarised(L, 1, i, 18, 0.01), p.matrices[1][i], 0.03, 2e-5, "conv neuron " .. i)
  end
  -- the batch norm scale matters: without it the matrices differ
  local bn = net._children[2][2]
  lu.assertTrue((bn.running_var + bn.eps):pow(-0.5):mul(bn.weight):sub(1):abs():max():item() > 0.1)
end

function TestSplitExact:test_lambda_predicts_the_measured_change()
  local net, batches = mlp_setup()
  local p = ff.grow.propose(net, { method = "split_exact", step = 0.05 }, batches)
  -- the most negative λ_min, split along its eigenvector, lowers the loss
  -- by (step²/2)·λ_min to second order
  p:select(1)
  local c = p.selected[1]
  for _, other in ipairs(p:candidates()) do lu.assertTrue(c.score <= other.score) end
  lu.assertTrue(c.score < 0)
  local _, _, r = p:apply()
  lu.assertAlmostEquals(r.predicted, 0.5 * 0.05 ^ 2 * c.score, 1e-12)
  lu.assertTrue(r.measured < 0, "measured " .. r.measured)
  lu.assertTrue(math.abs(r.measured - r.predicted) <= 0.05 * math.abs(r.predicted),
    string.format("predicted %.4g, measured %.4g", r.predicted, r.measured))
  lu.assertEquals(r.neurons_after, r.neurons_before + 1)
end

function TestSplitExact:test_only_negative_lambdas_in_order()
  local net, batches = mlp_setup()
  local p = ff.grow.propose(net, { method = "split_exact" }, batches)
  local negative = 0
  for _, c in ipairs(p:candidates()) do if c.score < 0 then negative = negative + 1 end end
  p:select(1000)
  lu.assertEquals(#p.selected, negative)
  for j = 2, #p.selected do lu.assertTrue(p.selected[j - 1].score <= p.selected[j].score) end
  -- each candidate is the eigenvector of λ_min, times the step
  local u = p.og.units[1]
  local S, v = p.matrices[1][2], u.split.v[2]:reshape(-1)
  lu.assertAlmostEquals(v:norm():item(), 1e-2, 1e-7)
  assert_close(S:matmul(v), v * p.scores[1].split[2], 1e-3, 1e-9, "S v = λ v")
end

function TestSplitExact:test_relu_uses_the_softplus_surrogate()
  -- ReLU's σ'' is 0 a.e.: the matrices use softplus(β = 3)'s instead;
  -- the first unit's against an explicit computation
  local net, batches = mlp_setup(function() return nn.ReLU() end)
  local p = ff.grow.propose(net, { method = "split_exact" }, batches)
  net:eval()
  local S = ff.zeros(6, 5, 5)
  local W, b = net._children[1][2].weight, net._children[1][2].bias
  for _, bt in ipairs(batches) do
    local x = bt[1]:clone()
    local h = ff.linear(x, W:detach(), b:detach())
    -- ∂L/∂(the activation's output), through the rest of the network
    local a_out = h:relu():detach():requires_grad(true)
    local out = net._children[5][2](net._children[4][2](net._children[3][2](a_out)))
    ff.cross_entropy(out, bt[2]):backward()
    local a = a_out.grad * ff.act_d2("softplus", h, 3) * x:size(1)
    for i = 1, 6 do
      S[i]:add_(x:t():matmul(x * a:narrow(2, i, 1)))
    end
  end
  S:div_(64)
  assert_close(p.matrices[1], S, 1e-4, 1e-7, "relu surrogate")
end

function TestSplitExact:test_fraction_and_loaders()
  local net, batches = mlp_setup()
  -- fraction = 0.5 of two batches: the first one only
  local half = ff.grow.propose(net, { method = "split_exact", fraction = 0.5 }, batches)
  local first = ff.grow.propose(net, { method = "split_exact" }, { batches[1] })
  lu.assertTrue(half.matrices[1]:equal(first.matrices[1]))
  -- a DataLoader in order gives the batches of the list
  local ds = ff.data.Dataset(ff.cat({ batches[1][1], batches[2][1] }), ff.cat({ batches[1][2], batches[2][2] }))
  local loader = ff.data.DataLoader(ds, { batch_size = 32 })
  local all = ff.grow.propose(net, { method = "split_exact" }, batches)
  local via = ff.grow.propose(net, { method = "split_exact" }, loader)
  assert_close(via.matrices[2], all.matrices[2], 1e-6, 1e-9, "loader")
  -- the batches weigh by their examples: one batch of 64 is the mean of two of 32
  local one = ff.grow.propose(net, { method = "split_exact" }, { { ds.x, ds.y } })
  assert_close(one.matrices[1], all.matrices[1], 1e-5, 1e-9, "weighting")
end

TestSplitFast = {}

function TestSplitFast:test_eigenvalues_match_exact()
  for _, setup in ipairs { mlp_setup, conv_setup,
    function() return mlp_setup(function() return nn.ReLU() end) end } do
    local net, batches = setup()
    local pe = ff.grow.propose(net, { method = "split_exact" }, batches)
    local pf = ff.grow.propose(net, { method = "split_fast", generator = ff.Generator(9) }, batches)
    lu.assertEquals(pf.method, "split_fast")
    for k = 1, #pe.scores do
      local e, f = pe.scores[k].split, pf.scores[k].split
      assert_close(f, e, 0.02, 1e-7, "unit " .. k .. " eigenvalues")
      -- the same directions up to sign (a simple λ_min here)
      local ve = pe.og.units[k].split.v:view(e:size(1), -1)
      local vf = pf.og.units[k].split.v:view(e:size(1), -1)
      local cos = (ve * vf):sum(2):abs() / 1e-4
      lu.assertTrue(cos:min():item() > 0.95, "unit " .. k .. ": |cos| " .. cos:min():item())
    end
  end
end

function TestSplitFast:test_few_iterations_are_worse_but_valid()
  local net, batches = conv_setup()
  local pe = ff.grow.propose(net, { method = "split_exact" }, batches)
  local p1 = ff.grow.propose(net, { method = "split_fast", iters = 1, generator = ff.Generator(9) }, batches)
  -- a Rayleigh quotient is never below λ_min
  lu.assertTrue((p1.scores[1].split - pe.scores[1].split):min():item() >= -1e-6)
end

-- Budgets and reproducibility: both methods.
TestSplitBudgets = {}

local function grow_once(method, eta, seed)
  local net, batches = mlp_setup()
  local p = ff.grow.propose(net, { method = method, generator = ff.Generator(seed or 1) }, batches)
  p:select(eta)
  local _, _, r = p:apply()
  return net, p, r
end

function TestSplitBudgets:test_neuron_budget()
  for _, method in ipairs { "split_exact", "split_fast" } do
    local _, p, r = grow_once(method, 3)
    lu.assertEquals(#p.selected, 3)
    lu.assertEquals(r.neurons_after - r.neurons_before, 3)
    lu.assertTrue(r.predicted < 0)
  end
end

function TestSplitBudgets:test_params_budget()
  for _, method in ipairs { "split_exact", "split_fast" } do
    for _, P in ipairs { 15, 40 } do
      local _, p, r = grow_once(method, { params = P })
      lu.assertTrue(#p.selected > 0)
      lu.assertEquals(r.params_after - r.params_before, p.cost)
      lu.assertTrue(p.cost <= P)
    end
  end
end

function TestSplitBudgets:test_reproducible_for_a_seed()
  for _, method in ipairs { "split_exact", "split_fast" } do
    local a = grow_once(method, 4, 7)
    local b = grow_once(method, 4, 7)
    local pa, pb = a:parameters(), b:parameters()
    lu.assertEquals(#pa, #pb)
    for i = 1, #pa do lu.assertTrue(pa[i]:equal(pb[i]), method .. ": parameter " .. i) end
  end
end

function TestSplitBudgets:test_grow_run()
  -- one step by hand: the optimiser follows the split and trains it
  local net, batches = mlp_setup()
  local opt = ff.optim.SGD(net:named_parameters(), { lr = 0.01 })
  local p = ff.grow.propose(net, { method = "split_fast", fraction = 0.5, iters = 5 }, batches)
  p:select(2)
  local _, _, r = p:apply(opt)
  lu.assertEquals(r.selected, 2)
  lu.assertEquals(r.neurons_after - r.neurons_before, 2)
  lu.assertTrue(math.abs(r.measured) < 0.05, "a split barely moves the loss: " .. r.measured)
  local held = {}
  for _, t in ipairs(opt:params()) do held[t] = true end
  for _, t in ipairs(net:parameters()) do lu.assertTrue(held[t], "the optimiser lost a grown parameter") end
  lu.assertEquals(#opt:params(), #net:parameters())
  local x, y = batches[1][1], batches[1][2]
  local before = ff.no_grad(function() return ff.cross_entropy(net(x), y):item() end)
  local w = net:get(1).weight:clone()
  opt:zero_grad()
  ff.cross_entropy(net(x), y):backward()
  opt:step()
  lu.assertFalse(net:get(1).weight:equal(w), "the step moved nothing")
  local after = ff.no_grad(function() return ff.cross_entropy(net(x), y):item() end)
  lu.assertTrue(after < before, string.format("loss %g -> %g after a step", before, after))

  -- the whole loop: grow.run with the method grows every phase but the last
  net = mlp_setup()
  opt = ff.optim.SGD(net:named_parameters(), { lr = 0.01 })
  local ds = ff.data.Dataset(ff.cat { batches[1][1], batches[2][1] }, ff.cat { batches[1][2], batches[2][2] })
  local loader = ff.data.DataLoader(ds, { batch_size = 16, shuffle = true, generator = ff.Generator(1) })
  local rows = ff.grow.run { net = net, data = loader, optim = opt, phases = 3, epochs = 1, quiet = true, eta = 2,
    score_batches = 2, neighbourhood = { method = "split_fast", fraction = 0.5, iters = 5 } }
  lu.assertEquals(#rows, 3)
  lu.assertEquals(rows[1].method, "split_fast")
  lu.assertEquals(rows[2].neurons - rows[1].neurons, 2)
  lu.assertEquals(rows[3].neurons - rows[2].neurons, 2)
  lu.assertEquals(rows[3].neurons, 6 + 4 + 4)
end

TestSplitErrors = {}

function TestSplitErrors:test_bad_options()
  local net, batches = mlp_setup()
  local function err(nb) return testlib.error_of(ff.grow.propose, net, nb, batches) end
  for _, m in ipairs { "split_exact", "split_fast" } do
    lu.assertStrContains(err { method = m, step = -1 }, m .. ": step must be a positive number, got -1")
    lu.assertStrContains(err { method = m, step = "big" }, "step must be a positive number")
    lu.assertStrContains(err { method = m, fraction = 2 }, m .. ": fraction must be a number in (0, 1], got 2")
    lu.assertStrContains(err { method = m, fraction = 0 }, "fraction must be a number in (0, 1]")
    lu.assertStrContains(err { method = m, split = false }, m .. ": split = false leaves nothing to grow")
    lu.assertStrContains(err { method = m, stpe = 1 }, "unknown neighbourhood option 'stpe' for method " .. m)
  end
  lu.assertStrContains(err { method = "split_fast", iters = 0 }, "split_fast: iters must be a positive integer, got 0")
  lu.assertStrContains(err { method = "split_fast", iters = 2.5 }, "iters must be a positive integer")
  lu.assertStrContains(err { method = "split_exact", iters = 3 }, "unknown neighbourhood option 'iters'")
  lu.assertTrue(net:parameters()[1]:requires_grad(), "weights unfrozen after a failed propose")
end

function TestSplitErrors:test_unsupported_units()
  local x, y = ff.randn(8, 3), ff.randint(1, 2, 8)
  local function err(net, method)
    return testlib.error_of(ff.grow.propose, net, { method = method or "split_exact" }, { { x, y } })
  end
  -- no activation right after the producer
  local net = nn.Sequential { nn.Linear(3, 4), nn.Dropout(0.5), nn.Tanh(), nn.Linear(4, 2) }
  lu.assertStrContains(err(net), "split_exact: unit 1 (Linear): the layers after the producer must start with an "
    .. "activation, or a batch norm then an activation; got Dropout")
  net = nn.Sequential { nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2) }
  lu.assertStrContains(err(net, "split_fast"), "got BatchNorm then nothing")
  -- an activation without a second derivative
  local act = nn.Tanh()
  act.act = "hardtanh"
  net = nn.Sequential { nn.Linear(3, 4), act, nn.Linear(4, 2) }
  lu.assertStrContains(err(net), "split_exact: unit 1 has activation hardtanh, which has no second derivative")
  -- a loss that is not finite
  net = nn.Sequential { nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2) }
  local bad = { { ff.full({ 8, 3 }, 0 / 0), y } }
  lu.assertStrContains(testlib.error_of(ff.grow.propose, net, { method = "split_fast" }, bad),
    "split_fast: unit 1: the loss or its gradient is not finite on batch 1")
end

os.exit(testlib.run())
