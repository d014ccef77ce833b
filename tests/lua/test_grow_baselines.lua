-- test_grow_baselines: the Net2Net and GradMax baselines. Both preserve
-- the function exactly at growth (an MLP, a conv net with batch norm, ReLU
-- or tanh, max pooling and Flatten, a net with a residual block between),
-- training then moves what they added; GradMax's outgoing weights (as
-- published; the incoming ones with zero = "outgoing") are the top
-- singular vectors of E[g zᵀ], no other outgoing weights give the new
-- incoming weights a larger gradient (brute force), and its scores are the
-- gradient norms measured on the grown net; budgets are exact, seeds
-- reproduce, Adam follows.
package.path = "tests/lua/?.lua;" .. package.path
local testlib = require "testlib"
local lu = testlib.lu
local ff = require "firefly"
local nn = ff.nn
local gradmax = require "firefly.grow.methods.gradmax"

local NETS = {}

function NETS.mlp()
  return nn.mlp { 8, 6, 5, 3, act = "relu" }, { 8 }
end

-- conv units: (BN, ReLU, MaxPool) into a conv, (BN, ReLU, Flatten) into a Linear
function NETS.conv()
  return nn.Sequential { nn.Conv2d(2, 3, 3, { padding = 1 }), nn.BatchNorm2d(3), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(3, 4, 3, { padding = 1 }), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 16, 3) },
    { 2, 8, 8 }
end

-- a residual block between the first unit's producer and its consumer
function NETS.residual()
  return nn.Sequential { nn.Linear(4, 6), nn.ReLU(),
    nn.Residual(nn.Sequential { nn.Linear(6, 3), nn.ReLU(), nn.Linear(3, 6) }), nn.Linear(6, 3) }, { 4 }
end

-- Every activation of net made `act` (published GradMax needs a slope at
-- 0, which this engine's ReLU lacks).
local function set_act(net, act)
  net:apply(function(m) if m.act and #m:parameters() == 0 then m.act, m.param = act, nil end end)
  return net
end

-- A network (batch norm statistics set by a few training-mode passes)
-- and two scoring batches.
local function setup(kind, seed, act)
  ff.manual_seed(seed or 11)
  local net, shape = NETS[kind]()
  if act then set_act(net, act) end
  local g = ff.Generator(seed or 11)
  local batches = {}
  for i = 1, 2 do
    local s = { 12 }
    for _, d in ipairs(shape) do s[#s + 1] = d end
    batches[i] = { ff.randn(s, g), ff.randint(1, 3, 12, g) }
  end
  ff.no_grad(function() for _, b in ipairs(batches) do net(b[1] * 2 + 0.5) end end)
  net:eval()
  return net, batches
end

local function outputs(net, batches)
  local was = net.training
  net:eval()
  local out = {}
  for i, b in ipairs(batches) do out[i] = ff.no_grad(net, b[1]) end
  net:train(was)
  return out
end

local function max_change(a, b)
  local worst = 0
  for i = 1, #a do worst = math.max(worst, (a[i] - b[i]):abs():max():item()) end
  return worst
end

local function count(net, cls)
  local n = 0
  net:apply(function(m) if getmetatable(m).__name == cls then n = n + 1 end end)
  return n
end

local CASES = {
  { name = "net2net wider", nb = { method = "net2net", noise = 0.1 } },
  { name = "net2net deeper", nb = { method = "net2net", deeper = 2 } },
  { name = "gradmax", nb = { method = "gradmax", new = 3 }, act = "tanh" },
  { name = "gradmax zero outgoing", nb = { method = "gradmax", new = 3, zero = "outgoing" } },
}

local function nb_of(case, seed)
  local nb = { generator = ff.Generator(seed or 5) }
  for k, v in pairs(case.nb) do nb[k] = v end
  return nb
end

TestPreserve = {}

function TestPreserve:test_function_preserved_exactly()
  for _, kind in ipairs { "mlp", "conv", "residual" } do
    for _, case in ipairs(CASES) do
      local net, batches = setup(kind, nil, case.act)
      local before = outputs(net, batches)
      local layers = count(net, "Linear") + count(net, "Conv2d")
      local units = #ff.grow.units(net)
      local p = ff.grow.propose(net, nb_of(case), batches)
      p:select(40)
      local _, _, r = p:apply()
      local label = kind .. ", " .. case.name
      lu.assertTrue(r.selected > 0, label)
      lu.assertTrue(r.params_after > r.params_before, label)
      local change = max_change(before, outputs(net, batches))
      lu.assertTrue(change <= 1e-5, label .. ": max |change| " .. change)
      lu.assertTrue(r.preserved <= 1e-5, label .. ": report.preserved " .. tostring(r.preserved))
      if case.nb.deeper then
        -- the identity layers went in and are growable units themselves
        local added = count(net, "Linear") + count(net, "Conv2d") - layers
        lu.assertTrue(added >= 1, label)
        lu.assertEquals(#ff.grow.units(net), units + added, label)
      end
    end
  end
end

function TestPreserve:test_deeper_layers()
  -- a ReLU follows the identity layer only where ReLU outputs reach it:
  -- after the first unit's ReLU and max pool, and after the second's
  -- ReLU (before Flatten); the residual net's first unit feeds its layer
  -- through a residual sum (no ReLU), its inner unit through a ReLU
  local net, batches = setup("conv")
  ff.grow.propose(net, { method = "net2net", deeper = 2, split = false }, batches):select(100):apply()
  local kinds = {}
  for i, ch in ipairs(net._children) do kinds[i] = getmetatable(ch[2]).__name end
  lu.assertEquals(table.concat(kinds, " "), "Conv2d BatchNorm2d ReLU MaxPool2d Conv2d ReLU Conv2d BatchNorm2d ReLU "
    .. "Conv2d ReLU Flatten Linear")
  local c = net:get(5)
  lu.assertEquals(c.weight:size(), { 3, 3, 3, 3 })
  lu.assertEquals(c.weight:sum():item(), 3)
  lu.assertEquals(c.weight[{ 2, 2, 2, 2 }], 1)
  net, batches = setup("residual")
  ff.grow.propose(net, { method = "net2net", deeper = 2, split = false }, batches):select(100):apply()
  kinds = {}
  for i, ch in ipairs(net._children) do kinds[i] = getmetatable(ch[2]).__name end
  lu.assertEquals(table.concat(kinds, " "), "Linear ReLU Residual Linear Linear")
  local f = net:get(3)._children[1][2]
  kinds = {}
  for i, ch in ipairs(f._children) do kinds[i] = getmetatable(ch[2]).__name end
  lu.assertEquals(table.concat(kinds, " "), "Linear ReLU Linear ReLU Linear")
  lu.assertTrue(net:get(4).weight:equal(ff.eye(6)))
  -- at most `deeper` layers a phase, units drawn at random
  net, batches = setup("mlp")
  local p = ff.grow.propose(net, { method = "net2net", deeper = 1, generator = ff.Generator(3) }, batches)
  p:select(100)
  local n = 0
  for _, s in ipairs(p.selected) do if s.kind == "deeper" then n = n + 1 end end
  lu.assertEquals(n, 1)
end

TestNet2Net = {}

function TestNet2Net:test_copies_then_training_breaks_symmetry()
  for _, kind in ipairs { "mlp", "conv", "residual" } do
    local net, batches = setup(kind)
    local unit = ff.grow.units(net)[1]
    local m = unit.producer.weight:size(1)
    local consumer_before = unit.consumer.weight:clone()
    local p = ff.grow.propose(net, { method = "net2net", where = { unit.name }, generator = ff.Generator(2) }, batches)
    p:select(2)
    local parents = {}
    for j, c in ipairs(p.selected) do parents[j] = c.index end
    local opt = ff.optim.SGD(net:named_parameters(), { lr = 0.1 })
    p:apply(opt)
    local w, cw = unit.producer.weight, unit.consumer.weight
    local sp = unit.spatial
    for j, i in ipairs(parents) do
      -- identical copies; their outgoing weights sum to the parent's
      lu.assertTrue(w[i]:equal(w[m + j]), kind)
      local a = cw:narrow(2, (i - 1) * sp + 1, sp)
      local b = cw:narrow(2, (m + j - 1) * sp + 1, sp)
      lu.assertTrue((a + b):allclose(consumer_before:narrow(2, (i - 1) * sp + 1, sp), 1e-5, 1e-6), kind)
      lu.assertFalse(a:allclose(b, 1e-3, 1e-5), kind .. ": noise breaks the symmetry")
    end
    net:train()
    for _ = 1, 3 do
      for _, b in ipairs(batches) do
        opt:zero_grad()
        ff.cross_entropy(net(b[1]), b[2]):backward()
        opt:step()
      end
    end
    for j, i in ipairs(parents) do
      local diff = (unit.producer.weight[i] - unit.producer.weight[m + j]):abs():max():item()
      lu.assertTrue(diff > 1e-6, kind .. ": copies still equal after training, " .. diff)
    end
  end
end

function TestNet2Net:test_options_checked()
  local net, batches = setup("mlp")
  lu.assertStrContains(testlib.error_of(ff.grow.propose, net, { method = "net2net", noise = -1 }, batches),
    "net2net: noise must be a non-negative number")
  lu.assertStrContains(testlib.error_of(ff.grow.propose, net, { method = "net2net", deeper = 1.5 }, batches),
    "net2net: deeper must be a non-negative integer")
  lu.assertStrContains(testlib.error_of(ff.grow.propose, net, { method = "net2net", norm = 1 }, batches),
    "unknown neighbourhood option 'norm' for method net2net")
end

TestGradMax = {}

-- M = E[g zᵀ] for the first unit of an MLP, computed from its layers by
-- hand: z the input, g = ∂L/∂(consumer output), batches weighted by size.
local function first_unit_matrix(net, batches)
  local M
  local total = 0
  for _, b in ipairs(batches) do total = total + b[1]:size(1) end
  for _, b in ipairs(batches) do
    local h = ff.no_grad(function() return net:get(3)(net:get(2)(net:get(1)(b[1]))) end)
    h = h:requires_grad(true)
    local out = h
    for i = 4, #net do out = net:get(i)(out) end
    ff.cross_entropy(out, b[2]):backward()
    local term = h.grad:t():matmul(b[1]) * (b[1]:size(1) / total)
    M = M and M + term or term
  end
  return M
end

-- Top eigenvectors of a symmetric matrix by power iteration with deflation.
local function top_eigen(A, k)
  local vs, ls = {}, {}
  for j = 1, k do
    local v = ff.randn({ A:size(1) }, ff.Generator(j))
    for _ = 1, 3000 do
      v = A:matmul(v)
      for i = 1, j - 1 do v = v - vs[i] * (vs[i] * v):sum() end
      v = v / v:norm()
    end
    vs[j], ls[j] = v, (v * A:matmul(v)):sum():item()
  end
  return vs, ls
end

-- Published GradMax: the new neurons' outgoing weights are c times the top
-- left singular vectors of M (top eigenvectors of M Mᵀ), their incoming
-- weights and biases zero, their scores σ_j·φ'(0) (tanh: 1).
function TestGradMax:test_outgoing_weights_are_top_left_singular_vectors()
  for _, force in ipairs { false, true } do
    gradmax.force_operator = force -- also the autograd operator on the MLP
    local net, batches = setup("mlp", nil, "tanh")
    local M = first_unit_matrix(net, batches)
    local vs, ls = top_eigen(M:matmul(M:t()), 3)
    local p = ff.grow.propose(net, { method = "gradmax", new = 3, iters = 8, generator = ff.Generator(4) }, batches)
    gradmax.force_operator = false
    local c = p.og.units[1].new
    local cw = net:get(3).weight
    local norm = cw:norm(2, 1):mean():item() -- each old neuron's outgoing column
    lu.assertAlmostEquals(p.norms[1], norm, 1e-6)
    lu.assertEquals(c.u:abs():max():item(), 0)
    lu.assertEquals(c.b:abs():max():item(), 0)
    lu.assertEquals(c.o:size(), { 5, 3 })
    for j = 1, 3 do
      local o = c.o:select(2, j)
      lu.assertAlmostEquals(o:norm():item(), norm, 1e-4 * norm)
      local cos = math.abs((o * vs[j]):sum():item()) / o:norm():item()
      lu.assertTrue(cos > 1 - 1e-4, string.format("neuron %d: |cos| %.6f (operator %s)", j, cos, tostring(force)))
      local sigma = math.sqrt(ls[j])
      lu.assertTrue(math.abs(p.scores[1].new[j] - sigma) <= 1e-4 * sigma, string.format("sigma %d: %g vs %g", j,
        p.scores[1].new[j], sigma))
    end
  end
end

-- ‖∂L/∂u‖ of N new neurons added to the first unit of an MLP (Linear,
-- act, Linear, ...) by hand, with zero incoming weights and biases and
-- outgoing weights the columns of O: one backward of the real network.
local function incoming_grad_norms(net, batches, O)
  local n = O:size(2)
  local w1, b1 = net:get(1).weight:detach(), net:get(1).bias:detach()
  local W = ff.cat({ w1, ff.zeros(n, w1:size(2)) }, 1):requires_grad(true)
  local B = ff.cat { b1, ff.zeros(n) }
  local W2 = ff.cat({ net:get(3).weight:detach(), O }, 2)
  local total = 0
  for _, b in ipairs(batches) do total = total + b[1]:size(1) end
  for _, b in ipairs(batches) do
    local out = ff.linear(net:get(2)(ff.linear(b[1], W, B)), W2, net:get(3).bias:detach())
    for i = 4, #net do out = net:get(i)(out) end
    (ff.cross_entropy(out, b[2]) * (b[1]:size(1) / total)):backward()
  end
  return W.grad:narrow(1, w1:size(1) + 1, n):norm(2, 2)
end

function TestGradMax:test_brute_force_maximiser()
  -- tanh: φ(0) = 0, φ'(0) = 1, so the gradient of a zero incoming row is
  -- exactly Mᵀo and brute force over o on the real network must not beat
  -- the chosen outgoing weights
  local net, batches = setup("mlp", 3, "tanh")
  local before = outputs(net, batches)
  local g = ff.Generator(9)
  local p = ff.grow.propose(net, { method = "gradmax", new = 3, where = { "1" }, generator = ff.Generator(2) },
    batches)
  local c = p.norms[1]
  local chosen = p.og.units[1].new.o:clone()
  local R = ff.randn({ 5, 4000 }, g)
  R = R / R:norm(2, 1, true) * c
  local random = incoming_grad_norms(net, batches, R)
  -- orthogonal to the first chosen direction: the second neuron's rival
  local o1 = chosen:select(2, 1) / c
  local R2 = R - o1:view(5, 1) * (o1:view(1, 5):matmul(R))
  R2 = R2 / R2:norm(2, 1, true) * c
  local random2 = incoming_grad_norms(net, batches, R2)
  p:select(3)
  local _, _, r = p:apply()
  lu.assertEquals(r.selected, 3)
  -- function preserved; the outgoing weights went in as chosen
  lu.assertTrue(max_change(before, outputs(net, batches)) <= 1e-6)
  lu.assertTrue(r.preserved <= 1e-6, "report.preserved " .. tostring(r.preserved))
  lu.assertTrue(net:get(3).weight:narrow(2, 7, 3):equal(chosen))
  lu.assertEquals(net:get(1).weight:narrow(1, 7, 3):abs():max():item(), 0)
  -- measured on the grown net, through the real network
  local w = net:get(1).weight
  w.grad = nil
  local total = 0
  for _, b in ipairs(batches) do total = total + b[1]:size(1) end
  for _, b in ipairs(batches) do (ff.cross_entropy(net(b[1]), b[2]) * (b[1]:size(1) / total)):backward() end
  local measured = w.grad:narrow(1, 7, 3):norm(2, 2):totable()
  for j = 1, 3 do
    local want = p.scores[1].new[j] * c
    lu.assertTrue(math.abs(measured[j] - want) <= 1e-4 * want, string.format("neuron %d: %g vs %g", j, measured[j], want))
  end
  local best, best2 = random:max():item(), random2:max():item()
  lu.assertTrue(best <= measured[1] * (1 + 1e-4), string.format("random %g beats chosen %g", best, measured[1]))
  lu.assertTrue(best2 <= measured[2] * (1 + 1e-4), string.format("random %g beats chosen %g", best2, measured[2]))
  -- (the search came close: the maximum is not a fluke of the check)
  lu.assertTrue(best >= 0.97 * measured[1], string.format("brute force reached %g of %g", best, measured[1]))
  lu.assertTrue(best2 >= 0.97 * measured[2], string.format("brute force reached %g of %g", best2, measured[2]))
end

-- zero = "outgoing", the transpose: incoming weights the top right
-- singular vectors of M, outgoing weights zero.
function TestGradMax:test_zero_outgoing_incoming_weights_are_top_singular_vectors()
  for _, force in ipairs { false, true } do
    gradmax.force_operator = force -- also the autograd operator on the MLP
    local net, batches = setup("mlp")
    net:get(2).act = "tanh" -- (any activation: it is linearised)
    local M = first_unit_matrix(net, batches)
    local vs, ls = top_eigen(M:t():matmul(M), 3)
    local p = ff.grow.propose(net, { method = "gradmax", zero = "outgoing", new = 3, iters = 8,
      generator = ff.Generator(4) }, batches)
    gradmax.force_operator = false
    local c = p.og.units[1].new
    local w = net:get(1).weight
    local norm = w:norm(2, 2):mean():item()
    lu.assertAlmostEquals(p.norms[1], norm, 1e-6)
    for j = 1, 3 do
      local u = c.u[j]
      lu.assertAlmostEquals(u:norm():item(), norm, 1e-4 * norm)
      local cos = math.abs((u * vs[j]):sum():item()) / u:norm():item()
      lu.assertTrue(cos > 1 - 1e-4, string.format("neuron %d: |cos| %.6f (operator %s)", j, cos, tostring(force)))
      local sigma = math.sqrt(ls[j])
      lu.assertTrue(math.abs(p.scores[1].new[j] - sigma) <= 1e-4 * sigma, string.format("sigma %d: %g vs %g", j,
        p.scores[1].new[j], sigma))
      lu.assertEquals(c.b[j], 0)
    end
    lu.assertEquals(c.o:abs():max():item(), 0)
  end
end

-- The new neurons' gradient norms on the grown net, per unit: of their
-- outgoing weights (the consumer's columns or input channels) or of their
-- incoming ones (the producer's rows or filters).
local function new_grad_norms(net, batches, unit, first, count, side)
  local total = 0
  for _, b in ipairs(batches) do total = total + b[1]:size(1) end
  local w = side == "in" and unit.producer.weight or unit.consumer.weight
  w.grad = nil
  for _, b in ipairs(batches) do (ff.cross_entropy(net(b[1]), b[2]) * (b[1]:size(1) / total)):backward() end
  local out, sp = {}, unit.spatial
  for j = 1, count do
    if side == "in" then
      out[j] = w.grad[first + j - 1]:norm():item()
    else
      out[j] = w.grad:narrow(2, (first + j - 2) * sp + 1, sp):norm():item()
    end
  end
  return out
end

function TestGradMax:test_scores_are_the_measured_gradient_norms()
  -- linear per-neuron paths (Identity, average pooling; a new neuron's
  -- batch norm is the identity up to its eps), so the linearisation is
  -- exact: a Linear unit, a conv into a conv, a conv through pooling and
  -- Flatten into a Linear; both variants
  local nets = {
    function() return nn.Sequential { nn.Linear(8, 6), nn.Identity(), nn.Linear(6, 3) }, { 8 } end,
    function()
      return nn.Sequential { nn.Conv2d(2, 3, 3, { padding = 1 }), nn.BatchNorm2d(3), nn.Identity(),
        nn.Conv2d(3, 4, 3, { padding = 1 }), nn.Identity(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(4 * 16, 3) },
        { 2, 8, 8 }
    end,
    -- tanh (slope 1 at 0) between conv layers: exact only as published
    -- (the transpose's incoming weights are not 0, tanh is not linear there)
    function()
      return nn.Sequential { nn.Conv2d(2, 3, 3, { padding = 1 }), nn.Tanh(), nn.Conv2d(3, 4, 3, { stride = 2 }),
        nn.Tanh(), nn.Flatten(), nn.Linear(4 * 9, 3) }, { 2, 8, 8 }
    end,
  }
  for _, zero in ipairs { "incoming", "outgoing" } do
    for t, make in ipairs(nets) do
      if zero == "outgoing" and t == 3 then break end
      ff.manual_seed(17)
      local net, shape = make()
      local g = ff.Generator(17)
      local batches = {}
      for i = 1, 2 do
        local s = { 10 + i }
        for _, d in ipairs(shape) do s[#s + 1] = d end
        batches[i] = { ff.randn(s, g), ff.randint(1, 3, 10 + i, g) }
      end
      net:eval()
      local before = outputs(net, batches)
      local p = ff.grow.propose(net, { method = "gradmax", zero = zero, new = 3, norm = 0.5,
        generator = ff.Generator(1) }, batches)
      local scores, widths = {}, {}
      for k, c in ipairs(p.og.units) do
        scores[k] = p.scores[k].new:totable()
        widths[k] = c.unit.producer.weight:size(1)
      end
      -- scores sorted, largest first
      for k = 1, #scores do
        for j = 2, #scores[k] do lu.assertTrue(scores[k][j] <= scores[k][j - 1] + 1e-7) end
      end
      p:select(100)
      p:apply()
      lu.assertTrue(max_change(before, outputs(net, batches)) <= 1e-6, zero .. " net " .. t)
      for k, unit in ipairs(ff.grow.units(net)) do
        local measured = new_grad_norms(net, batches, unit, widths[k] + 1, 3, zero == "incoming" and "in" or "out")
        for j = 1, 3 do
          local want = scores[k][j] * 0.5
          -- (past the rank of B: σ = 0 up to float32 rounding of σ_1)
          lu.assertTrue(math.abs(measured[j] - want) <= 1e-3 * want + 1e-5 * scores[k][1],
            string.format("%s: net %d unit %d neuron %d: measured %.6g, score x norm %.6g", zero, t, k, j,
              measured[j], want))
        end
      end
    end
  end
end

function TestGradMax:test_new_neurons_train()
  for _, zero in ipairs { "incoming", "outgoing" } do
    local net, batches = setup("conv", nil, zero == "incoming" and "tanh" or nil)
    local opt = ff.optim.SGD(net:named_parameters(), { lr = 0.1 })
    local p = ff.grow.propose(net, { method = "gradmax", zero = zero, new = 2, generator = ff.Generator(2) }, batches)
    p:select(4)
    p:apply(opt)
    local unit = ff.grow.units(net)[2]
    local m = unit.producer.weight:size(1)
    local kept = 0
    for _, c in ipairs(p.selected) do if c.unit == 2 then kept = kept + 1 end end
    lu.assertTrue(kept > 0)
    -- the side set to zero: outgoing columns, or incoming filters
    local function zero_side()
      if zero == "outgoing" then
        return unit.consumer.weight:narrow(2, (m - kept) * unit.spatial + 1, kept * unit.spatial)
      end
      return unit.producer.weight:narrow(1, m - kept + 1, kept)
    end
    lu.assertEquals(zero_side():abs():max():item(), 0, zero)
    net:train()
    opt:zero_grad()
    ff.cross_entropy(net(batches[1][1]), batches[1][2]):backward()
    opt:step()
    lu.assertTrue(zero_side():abs():max():item() > 0, zero)
  end
end

function TestGradMax:test_activation_checked()
  -- ReLU: derivative 0 at 0 here, the neurons would never train; sigmoid:
  -- 0.5 at 0, the function would change. Refused before anything changes.
  for _, case in ipairs { { "relu", "derivative 0 at 0" }, { "sigmoid", "gives 0.5 at 0" } } do
    local net, batches = setup("mlp", nil, case[1])
    local before = outputs(net, batches)
    local msg = testlib.error_of(ff.grow.propose, net, { method = "gradmax" }, batches)
    lu.assertStrContains(msg, "grow.propose: gradmax: unit 1's activation")
    lu.assertStrContains(msg, case[2])
    lu.assertStrContains(msg, 'zero = "outgoing"')
    lu.assertEquals(max_change(before, outputs(net, batches)), 0)
    -- the transpose takes them
    lu.assertTrue(#ff.grow.propose(net, { method = "gradmax", zero = "outgoing", new = 2 }, batches):select(2)
      .selected == 2)
  end
  -- a slope other than 1 is measured (it scales the scores)
  local _, slope = gradmax.at_zero(ff.grow.units((setup("mlp", nil, "gelu")))[1])
  lu.assertAlmostEquals(slope, 0.5, 1e-6)
end

function TestGradMax:test_options_checked()
  local net, batches = setup("mlp", nil, "tanh")
  lu.assertStrContains(testlib.error_of(ff.grow.propose, net, { method = "gradmax", norm = 0 }, batches),
    "gradmax: norm must be a positive number")
  lu.assertStrContains(testlib.error_of(ff.grow.propose, net, { method = "gradmax", iters = -1 }, batches),
    "gradmax: iters must be a non-negative integer")
  lu.assertStrContains(testlib.error_of(ff.grow.propose, net, { method = "gradmax", zero = "in" }, batches),
    'gradmax: zero must be "incoming" (as published) or "outgoing", got in')
  lu.assertStrContains(testlib.error_of(ff.grow.propose, net, { method = "gradmax", noise = 1 }, batches),
    "unknown neighbourhood option 'noise' for method gradmax")
  -- candidates capped at the dimension searched: the consumer's weights
  -- per neuron (as published), the fan-in (zero outgoing)
  local p = ff.grow.propose(net, { method = "gradmax", new = 50 }, batches)
  lu.assertEquals(p.scores[1].new:numel(), 5)
  lu.assertEquals(p.scores[2].new:numel(), 3)
  p = ff.grow.propose(net, { method = "gradmax", zero = "outgoing", new = 50 }, batches)
  lu.assertEquals(p.scores[1].new:numel(), 8)
  lu.assertEquals(p.scores[2].new:numel(), 6)
  -- per-unit settings: new neurons on one unit only; 16 by default
  p = ff.grow.propose(net, { method = "gradmax", default = { new = 0 }, ["1"] = { new = 2 } }, batches)
  lu.assertEquals(p.scores[1].new:numel(), 2)
  lu.assertNil(p.scores[2].new)
  p = ff.grow.propose(net, { method = "gradmax", zero = "outgoing" }, batches)
  lu.assertEquals(p.scores[1].new:numel(), 8)
end

function TestGradMax:test_jacobi()
  local A = ff.tensor { { 4, 1, 0.5 }, { 1, 3, 0.2 }, { 0.5, 0.2, 1 } }
  local values, vectors = gradmax.jacobi(A:totable())
  local V = ff.tensor(vectors)
  for j = 1, 3 do
    local v = V:select(2, j)
    lu.assertTrue((A:matmul(v) - v * values[j]):abs():max():item() < 1e-5)
  end
  lu.assertTrue(values[1] >= values[2] and values[2] >= values[3])
end

TestBudgets = {}

local METHODS = {
  { name = "net2net", nb = { method = "net2net" } },
  { name = "net2net deeper", nb = { method = "net2net", deeper = 1 } },
  { name = "gradmax", nb = { method = "gradmax", new = 4 }, act = "tanh" },
  { name = "gradmax zero outgoing", nb = { method = "gradmax", new = 4, zero = "outgoing" } },
}

function TestBudgets:test_neuron_budget_is_exact()
  for _, kind in ipairs { "mlp", "conv", "residual" } do
    for _, case in ipairs(METHODS) do
      local net, batches = setup(kind, nil, case.act)
      local p = ff.grow.propose(net, nb_of(case, 3), batches)
      p:select(7)
      local widths = {}
      for k, c in ipairs(p.og.units) do widths[k] = c.unit.producer.weight:size(1) end
      local _, _, r = p:apply()
      local label = kind .. ", " .. case.name
      if case.nb.deeper then
        -- the identity layer comes first and takes its unit's width; each
        -- copy in that unit then counts twice (the layer copies it too)
        local layer_unit, want = nil, 0
        for _, c in ipairs(p.selected) do
          if c.kind == "deeper" then
            layer_unit, want = c.unit, want + widths[c.unit]
          else
            want = want + (c.unit == layer_unit and 2 or 1)
          end
        end
        lu.assertNotNil(layer_unit, label)
        lu.assertTrue(want <= 7 and want >= 6, label .. ": " .. want)
        lu.assertEquals(r.neurons_after - r.neurons_before, want, label)
      else
        lu.assertEquals(r.selected, 7, label)
        lu.assertEquals(r.neurons_after - r.neurons_before, 7, label)
      end
    end
  end
end

function TestBudgets:test_params_budget_is_exact()
  for _, kind in ipairs { "mlp", "conv", "residual" } do
    for _, case in ipairs(METHODS) do
      for _, budget in ipairs { 60, 250 } do
        local net, batches = setup(kind, nil, case.act)
        local p = ff.grow.propose(net, nb_of(case, 3), batches)
        p:select { params = budget }
        local _, _, r = p:apply()
        local label = string.format("%s, %s, %d params", kind, case.name, budget)
        lu.assertTrue(r.selected > 0, label)
        lu.assertTrue(p.cost <= budget, label)
        lu.assertEquals(r.params_after - r.params_before, p.cost, label)
      end
    end
  end
end

function TestBudgets:test_flop_budget_with_identity_layers()
  for _, budget in ipairs { 3000, 20000 } do
    local net, batches = setup("conv")
    local x = batches[1][1]
    local p = ff.grow.propose(net, { method = "net2net", deeper = 2, generator = ff.Generator(6) }, batches)
    p:select { flops = budget }
    local before = testlib.macs(net, x)
    p:apply()
    lu.assertTrue(p.flops <= budget)
    lu.assertEquals(testlib.macs(net, x) - before, p.flops, "budget " .. budget)
  end
end

local function weights(net)
  local out = {}
  for _, p in ipairs(net:named_parameters()) do
    out[#out + 1] = p.name .. "=" .. table.concat(p.param:view(-1):totable(), ",")
  end
  return table.concat(out, ";")
end

function TestBudgets:test_reproducible_for_a_seed()
  for _, case in ipairs(CASES) do
    local out = {}
    for run = 1, 3 do
      local net, batches = setup("conv", nil, case.act)
      local p = ff.grow.propose(net, nb_of(case, run == 3 and 8 or 7), batches)
      p:select(30)
      p:apply()
      out[run] = weights(net)
    end
    lu.assertEquals(out[1], out[2], case.name)
    if case.nb.method == "net2net" then lu.assertNotEquals(out[1], out[3], case.name) end
  end
end

function TestBudgets:test_adam_state_follows()
  for _, case in ipairs(CASES) do
    local net, batches = setup("conv", nil, case.act)
    net:train()
    local opt = ff.optim.Adam(net:named_parameters(), { lr = 1e-3 })
    local function step()
      opt:zero_grad()
      ff.cross_entropy(net(batches[1][1]), batches[1][2]):backward()
      opt:step()
    end
    step()
    local p = ff.grow.propose(net, nb_of(case), batches)
    p:select(30)
    p:apply(opt)
    -- the optimiser holds exactly the grown network's parameters
    local held = {}
    for _, t in ipairs(opt:params()) do held[t] = true end
    local n = 0
    for _, t in ipairs(net:parameters()) do
      lu.assertTrue(held[t], case.name)
      n = n + 1
    end
    lu.assertEquals(#opt:params(), n, case.name)
    step()
    step()
  end
end

function TestBudgets:test_in_the_loop()
  ff.manual_seed(3)
  local ds = ff.data.two_moons { n = 128, noise = 0.1, seed = 3 }
  for _, m in ipairs { "net2net", "gradmax" } do
    local net = nn.mlp { 2, 4, 4, 2, act = m == "gradmax" and "tanh" or "relu" }
    local opt = ff.optim.Adam(net:named_parameters(), { lr = 1e-2 })
    local loader = ff.data.DataLoader(ds, { batch_size = 32, shuffle = true, generator = ff.Generator(1) })
    local rows = ff.grow.run { net = net, data = loader, optim = opt, phases = 3, epochs = 1, quiet = true, eta = 3,
      score_batches = 2, neighbourhood = { method = m, deeper = m == "net2net" and 1 or nil, new = 3,
        generator = ff.Generator(2) } }
    lu.assertEquals(rows[1].method, m)
    lu.assertTrue(rows[3].params > rows[1].params, m)
    lu.assertAlmostEquals(rows[1].measured_dloss, 0, 1e-6)
  end
end

os.exit(testlib.run())
