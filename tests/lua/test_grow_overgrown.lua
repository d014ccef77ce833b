-- test_grow_overgrown: the reference over-grown network of MLP units:
-- function preservation at zero perturbation, gate gradients against
-- finite differences, splits scoring zero at the origin and non-zero at
-- the endpoint, and the first-order prediction of a new-neuron step
-- against the loss change measured after materialising it.
package.path = "tests/lua/?.lua;" .. package.path
local testlib = require "testlib"
local lu = testlib.lu
local ff = require "firefly"
local nn = ff.nn
local overgrown = require "firefly.grow.overgrown"

local function setup(bn)
  ff.manual_seed(11)
  local net = nn.mlp { 5, 6, 4, 3, bn = bn, act = "tanh" }
  if bn then net(ff.randn(64, 5)) end -- running statistics
  net:eval()
  local g = ff.Generator(12)
  local x, y = ff.randn(16, 5, g), ff.randint(1, 3, 16, g)
  local og = overgrown.build(net, ff.grow.units(net), { new = 3, eps = 1e-2, generator = ff.Generator(13) })
  return net, og, x, y
end

TestOvergrown = {}

function TestOvergrown:test_zero_perturbation_is_the_base_network()
  for _, bn in ipairs { false, true } do
    local net, og, x = setup(bn)
    ff.no_grad(function()
      for _, c in ipairs(og.units) do
        c.split.v:zero_()
        c.new.e:zero_()
      end
    end)
    local a, b = ff.no_grad(og, x), ff.no_grad(net, x)
    lu.assertTrue(a:allclose(b, 1e-5, 1e-6), "max diff " .. (a - b):abs():max():item())
  end
end

function TestOvergrown:test_gate_gradients_match_finite_differences()
  local net, _, x, y = setup(true)
  -- splits, new neurons and new layers all at once
  local og = overgrown.build(net, ff.grow.units(net), { new = 3, layers = 2, eps = 1e-2,
    generator = ff.Generator(14) })
  local gates = og:gates()
  lu.assertEquals(#gates, 6)
  local ok, report = ff.gradcheck(function() return ff.cross_entropy(og(x), y) end, gates,
    { eps = 1e-2, atol = 1e-4, rtol = 1e-2 })
  lu.assertTrue(ok, report)
end

function TestOvergrown:test_split_scores_vanish_at_the_origin_only()
  local _, og, x, y = setup(false)
  local gate = og.units[1].split.gate
  og.alpha = 0
  ff.cross_entropy(og(x), y):backward()
  lu.assertEquals(gate.grad:abs():max():item(), 0)
  gate.grad = nil
  og.alpha = 1
  ff.cross_entropy(og(x), y):backward()
  lu.assertTrue(gate.grad:abs():max():item() > 0)
end

function TestOvergrown:test_first_order_prediction_of_new_neurons()
  local net, og, x, y = setup(false)
  local c = og.units[1]
  local unit = c.unit
  -- s_j = dL/de_j at e = 0 (new neurons act at first order)
  ff.no_grad(function() c.split.v:zero_(); c.new.e:zero_() end)
  ff.cross_entropy(og(x), y):backward()
  local s = c.new.e.grad:clone()
  local eps = 1e-3
  local e_hat = s:sign() * -eps
  local predicted = (e_hat * s):sum():item()
  local before = ff.no_grad(function() return ff.cross_entropy(net(x), y):item() end)
  ff.grow.add(unit, c.new.u:detach(), c.new.b:detach(), c.new.o:detach() * e_hat)
  local after = ff.no_grad(function() return ff.cross_entropy(net(x), y):item() end)
  local measured = after - before
  lu.assertTrue(predicted < 0)
  lu.assertTrue(math.abs(measured - predicted) <= 0.1 * math.abs(predicted),
    string.format("predicted %.6g, measured %.6g", predicted, measured))
end

TestOvergrownConv = {}

local function conv_setup(gap)
  ff.manual_seed(41)
  local net = nn.vgg { cfg = { 4, "M", 6 }, in_channels = 1, classes = 3, input_size = (not gap) and 8 or nil }
  net(ff.randn(16, 1, 8, 8)) -- batch-norm statistics
  net:eval()
  local g = ff.Generator(42)
  local x, y = ff.randn(6, 1, 8, 8, g), ff.randint(1, 3, 6, g)
  local og = overgrown.build(net, ff.grow.units(net), { new = 2, eps = 1e-2, generator = ff.Generator(43) })
  return net, og, x, y
end

function TestOvergrownConv:test_units_and_zero_perturbation()
  for _, gap in ipairs { false, true } do
    local net, og, x = conv_setup(gap)
    lu.assertEquals(#og.units, 2)
    lu.assertEquals(og.units[2].unit.spatial, gap and 1 or 16)
    ff.no_grad(function()
      for _, c in ipairs(og.units) do c.split.v:zero_(); c.new.e:zero_() end
    end)
    local a, b = ff.no_grad(og, x), ff.no_grad(net, x)
    lu.assertTrue(a:allclose(b, 1e-5, 1e-6), "max diff " .. (a - b):abs():max():item())
  end
end

function TestOvergrownConv:test_gate_gradients_match_finite_differences()
  local _, og, x, y = conv_setup(false)
  local ok, report = ff.gradcheck(function() return ff.cross_entropy(og(x), y) end, og:gates(),
    { eps = 1e-2, atol = 1e-4, rtol = 2e-2 })
  lu.assertTrue(ok, report)
end

function TestOvergrownConv:test_propose_predicts_the_loss_change()
  local net, _, x, y = conv_setup(false)
  net:train()
  local p = ff.grow.propose(net, { new = 3, steps = 1, lr = 1e-2, generator = ff.Generator(44) }, { { x, y } })
  p:select(3)
  local _, _, r = p:apply()
  lu.assertTrue(r.predicted < 0)
  lu.assertTrue(math.abs(r.measured - r.predicted) <= 0.5 * math.abs(r.predicted),
    string.format("predicted %.4g measured %.4g", r.predicted, r.measured))
  -- the grown network still runs and keeps its output shape
  lu.assertEquals(net(x):size(), { 6, 3 })
end

-- Networks with every kind of boundary: batch norm, a residual block in the
-- trunk, max pooling, Flatten, and the blocks' own hidden units.
local function nested(kind)
  ff.manual_seed(61)
  local net
  if kind == "mlp" then
    net = nn.Sequential { nn.Linear(5, 6), nn.BatchNorm1d(6), nn.Tanh(),
      nn.Residual(nn.Sequential { nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 6) }), nn.Linear(6, 4), nn.Tanh(),
      nn.Linear(4, 3) }
    net(ff.randn(64, 5))
  else
    net = nn.Sequential { nn.Conv2d(2, 4, 3, { padding = 1, bias = false }), nn.BatchNorm2d(4), nn.ReLU(),
      nn.Residual(nn.Sequential { nn.Conv2d(4, 3, 3, { padding = 1 }), nn.ReLU(), nn.Conv2d(3, 4, 3, { padding = 1 }) }),
      nn.MaxPool2d(2), nn.Conv2d(4, 5, 3, { padding = 1 }), nn.ReLU(), nn.Flatten(), nn.Linear(5 * 4, 3) }
    net(ff.randn(16, 2, 4, 4))
  end
  net:eval()
  local g = ff.Generator(62)
  local x = kind == "mlp" and ff.randn(12, 5, g) or ff.randn(6, 2, 4, 4, g)
  return net, x, ff.randint(1, 3, x:size(1), g)
end

TestNested = {}

function TestNested:test_zero_steps_are_the_base_network()
  for _, kind in ipairs { "mlp", "conv" } do
    local net, x = nested(kind)
    local us = ff.grow.units(net)
    lu.assertEquals(#us, 3, kind) -- the trunk unit, the block's hidden unit, the next unit
    local og = overgrown.build(net, us, { new = 2, layers = 2, generator = ff.Generator(63) })
    ff.no_grad(function()
      for _, c in ipairs(og.units) do c.split.v:zero_(); c.new.e:zero_(); c.layer.e:zero_() end
    end)
    local a, b = ff.no_grad(og, x), ff.no_grad(net, x)
    lu.assertTrue(a:allclose(b, 1e-5, 1e-6), kind .. ": max diff " .. (a - b):abs():max():item())
  end
end

function TestNested:test_gate_gradients_match_finite_differences()
  for _, kind in ipairs { "mlp", "conv" } do
    local net, x, y = nested(kind)
    local og = overgrown.build(net, ff.grow.units(net), { new = 2, layers = 2, generator = ff.Generator(64) })
    local ok, report = ff.gradcheck(function() return ff.cross_entropy(og(x), y) end, og:gates(),
      { eps = 1e-2, atol = 1e-4, rtol = 2e-2 })
    lu.assertTrue(ok, kind .. ": " .. tostring(report))
  end
end

function TestNested:test_fused_split_act_agrees_with_the_composition()
  -- the fused engine op for the children's batch norm and activation gives
  -- the output and gate gradients of the plain composition
  lu.assertNotNil(ff.split_act)
  for _, kind in ipairs { "mlp", "conv" } do
    local net, x, y = nested(kind)
    local og = overgrown.build(net, ff.grow.units(net), { new = 2, layers = 2, generator = ff.Generator(66) })
    local function run()
      for _, gt in ipairs(og:gates()) do gt.grad = nil end
      local out = og(x)
      ff.cross_entropy(out, y):backward()
      local grads = {}
      for i, gt in ipairs(og:gates()) do grads[i] = gt.grad:clone() end
      return out:detach(), grads
    end
    local fused_out, fused = run()
    overgrown.no_fuse = true
    local plain_out, plain = run()
    overgrown.no_fuse = nil
    lu.assertTrue(fused_out:allclose(plain_out, 1e-5, 1e-6), kind)
    for i = 1, #plain do
      lu.assertTrue(fused[i]:allclose(plain[i], 1e-4, 1e-7), kind .. " gate " .. i)
    end
  end
end

function TestNested:test_memo_keeps_every_bit()
  -- propose memoises the first unit's products per batch (overgrown.memo):
  -- with it off, partly filled or whole, the same scores and steps, and
  -- the loss before growth is the network's own, bit for bit
  local batches_mod = require "firefly.grow.batches"
  for _, kind in ipairs { "mlp", "conv" } do
    local net, x, y = nested(kind)
    local g = ff.Generator(67)
    local x2 = kind == "mlp" and ff.randn(12, 5, g) or ff.randn(6, 2, 4, 4, g)
    local batches = { { x, y }, { x2, ff.randint(1, 3, x2:size(1), g) } }
    local function propose(cap, rule)
      local saved = overgrown.MEMO_BYTES
      overgrown.MEMO_BYTES = cap or saved
      local ok, p = pcall(ff.grow.propose, net, { new = 2, layers = 2, steps = 2, lr = 1e-2, rule = rule,
        points = 3, generator = ff.Generator(68), quiet = true }, batches)
      overgrown.MEMO_BYTES = saved
      assert(ok, p)
      return p
    end
    for _, rule in ipairs { "midpoint", "endpoint" } do
      local off, part, on = propose(0, rule), propose(4 * x:size(1) * 4 * 2, rule), propose(nil, rule)
      local a, b, c = off:candidates(), part:candidates(), on:candidates()
      lu.assertEquals(#a, #c)
      lu.assertTrue(#a > 0)
      for i = 1, #a do
        lu.assertEquals(b[i].score, a[i].score, kind .. " " .. rule .. " candidate " .. i)
        lu.assertEquals(c[i].score, a[i].score, kind .. " " .. rule .. " candidate " .. i)
        lu.assertEquals(c[i].step, a[i].step)
      end
      net:eval()
      local own = batches_mod.mean_loss(net, batches, batches_mod.loss_of({}))
      lu.assertEquals(on.loss_before, own, kind)
      lu.assertEquals(off.loss_before, own, kind)
    end
  end
end

function TestNested:test_gates_inside_split_act()
  -- the split gates scale s inside split_act (its gain) rather than by a
  -- product of their own (overgrown.no_fused_gate): step 1 follows the same
  -- bits (s's gradient is the same product), so the steps are equal; the
  -- gates' gradients are the same sums, bit for bit where a channel is one
  -- value per row (MLP), in another order over a conv's positions
  for _, kind in ipairs { "mlp", "conv" } do
    local net, x, y = nested(kind)
    local function propose(plain)
      overgrown.no_fused_gate = plain or nil
      local ok, p = pcall(ff.grow.propose, net, { new = 2, layers = 2, steps = 2, lr = 1e-2,
        generator = ff.Generator(70), quiet = true }, { { x, y } })
      overgrown.no_fused_gate = nil
      assert(ok, p)
      return p:candidates()
    end
    local a, b = propose(true), propose(false)
    lu.assertEquals(#a, #b)
    local big, splits = 0, 0
    for i = 1, #a do big = math.max(big, math.abs(a[i].effect)) end
    for i = 1, #a do
      lu.assertEquals(b[i].step, a[i].step, kind .. " candidate " .. i)
      if kind == "mlp" then
        lu.assertEquals(b[i].score, a[i].score, kind .. " candidate " .. i)
      else
        lu.assertTrue(math.abs(b[i].effect - a[i].effect) <= 1e-5 * big, kind .. " candidate " .. i)
      end
      if a[i].kind == "split" then splits = splits + 1 end
    end
    lu.assertTrue(splits > 0 and big > 0)
  end
end

function TestNested:test_penalty_squares_keep_the_gradient_bits()
  -- the official preset's penalty squares as t * t, not t:pow(2) (powf is
  -- slow): the gradient step 1 follows must be the same bits
  local t = ff.randn({ 64, 33 }, ff.Generator(69)):mul_(1e-2):requires_grad(true)
  local by_mul = (t * t):sum() * 1e-2
  by_mul:backward()
  local a = t.grad:clone()
  t.grad = nil
  local by_pow = t:pow(2):sum() * 1e-2
  by_pow:backward()
  lu.assertTrue(a:equal(t.grad))
end

local restrict = testlib.restrict_to_selection

function TestNested:test_materialised_equals_the_restricted_overgrown_network()
  for _, kind in ipairs { "mlp", "conv" } do
    local net, x, y = nested(kind)
    -- (splits with a score >= 0 cannot lower the loss and are never
    -- selected: a budget of 20 reaches the negative ones; one new neuron
    -- per unit, because new neurons of a unit train to nearly the same
    -- direction and several of them at once interact at second order,
    -- which a first-order prediction does not see)
    local p = ff.grow.propose(net, { new = 1, layers = { candidates = 2, max_new_layers = 2 }, steps = 1,
      lr = 1e-2, generator = ff.Generator(65) }, { { x, y } })
    p:select(20)
    local kinds = {}
    for _, c in ipairs(p.selected) do kinds[c.kind] = true end
    lu.assertTrue(kinds.split and kinds.new and kinds.layer, kind .. ": every kind selected")
    restrict(p)
    local expected = ff.no_grad(p.og, x)
    local params = net:num_params()
    local _, _, r = p:apply()
    net:eval()
    local got = ff.no_grad(net, x)
    lu.assertTrue(got:allclose(expected, 1e-4, 1e-5), kind .. ": max diff " .. (got - expected):abs():max():item())
    lu.assertTrue(r.params_after > params)
    lu.assertTrue(r.neurons_after > r.neurons_before)
    -- and it predicted the change it made
    lu.assertTrue(math.abs(r.measured - r.predicted) <= 0.5 * math.abs(r.predicted),
      string.format("%s: predicted %.4g measured %.4g", kind, r.predicted, r.measured))
  end
end

os.exit(testlib.run())
