-- test_grow_depthwise: growth through depthwise-separable blocks
-- (MobileNetV1): a pointwise conv's neurons pass through batch norm, ReLU
-- and a depthwise conv (one kernel per neuron) before the next pointwise
-- conv. The depthwise conv is a per-neuron layer of the unit: growing the
-- unit grows its kernels (split children copy the parent's, new neurons
-- get the centre tap). Checked: the units, the over-grown network at zero
-- steps and its gate gradients, the materialised network against the
-- restricted over-grown one, every method's exact budget and
-- report.preserved, FLOP costs, and a checkpoint of the grown network.
package.path = "tests/lua/?.lua;" .. package.path
local testlib = require "testlib"
local lu = testlib.lu
local ff = require "firefly"
local nn = ff.nn
local overgrown = require "firefly.grow.overgrown"

-- A stem and two depthwise-separable blocks (one with stride 2), global
-- pooling and a classifier: MobileNetV1's pattern at a few channels.
local function block_net()
  ff.manual_seed(71)
  local net = nn.Sequential {
    nn.Conv2d(1, 4, 3, { padding = 1, bias = false }), nn.BatchNorm2d(4), nn.ReLU(),
    nn.Conv2d(4, 4, 3, { padding = 1, stride = 2, groups = 4, bias = false }), nn.BatchNorm2d(4), nn.ReLU(),
    nn.Conv2d(4, 6, 1, { bias = false }), nn.BatchNorm2d(6), nn.ReLU(),
    nn.Conv2d(6, 6, 3, { padding = 1, groups = 6 }), nn.BatchNorm2d(6), nn.ReLU(),
    nn.Conv2d(6, 5, 1, { bias = false }), nn.BatchNorm2d(5), nn.ReLU(),
    nn.GlobalAvgPool(), nn.Linear(5, 3) }
  net(ff.randn(32, 1, 8, 8)) -- batch-norm statistics
  -- non-trivial batch-norm entries, so that copies and identities differ
  ff.no_grad(function()
    for _, p in ipairs(net:named_parameters()) do
      if p.param:dim() == 1 then p.param:add_(ff.randn(p.param:size(1), ff.Generator(72)) * 0.1) end
    end
  end)
  net:eval()
  local g = ff.Generator(73)
  local x = ff.randn(6, 1, 8, 8, g)
  return net, x, ff.randint(1, 3, 6, g)
end

TestDepthwise = {}

function TestDepthwise:test_a_depthwise_conv_is_a_per_neuron_layer()
  local net = block_net()
  lu.assertEquals(net:get(4).per_neuron, "depthwise")
  lu.assertNil(net:get(1).per_neuron) -- an ordinary conv is a producer
  lu.assertNil(nn.Conv2d(4, 8, 3, { groups = 4 }).per_neuron) -- grouped, not depthwise
  local us = ff.grow.units(net)
  lu.assertEquals(#us, 3)
  for k, u in ipairs(us) do
    lu.assertEquals(u.spatial, 1)
    local dw = 0
    for _, m in ipairs(u.between) do if m.per_neuron == "depthwise" then dw = dw + 1 end end
    lu.assertEquals(dw, k < 3 and 1 or 0, u.name)
  end
  lu.assertIs(us[1].consumer, net:get(7))
  lu.assertIs(us[2].consumer, net:get(13))
  -- mobilenet_v1: the stem and each block's pointwise conv are units
  local mb = nn.mobilenet_v1 { width = 0.0625, in_channels = 1, classes = 3, stem_stride = 1 }
  lu.assertEquals(#ff.grow.units(mb), 14)
  -- a one-channel depthwise conv (groups = 1) stays per-neuron, not a unit
  local one = nn.mobilenet_v1 { channels = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14 }, in_channels = 1 }
  local w = {}
  for _, u in ipairs(ff.grow.units(one)) do w[#w + 1] = ff.grow.width(u) end
  lu.assertEquals(table.concat(w, "-"), "1-2-3-4-5-6-7-8-9-10-11-12-13-14")
  lu.assertErrorMsgContains("channels must be a list of 14 widths", nn.mobilenet_v1, { channels = { 1, 2 } })
end

function TestDepthwise:test_zero_steps_are_the_base_network()
  local net, x = block_net()
  local og = overgrown.build(net, ff.grow.units(net), { new = 2, layers = 2, generator = ff.Generator(74) })
  ff.no_grad(function()
    for _, c in ipairs(og.units) do c.split.v:zero_(); c.new.e:zero_(); c.layer.e:zero_() end
  end)
  local a, b = ff.no_grad(og, x), ff.no_grad(net, x)
  lu.assertTrue(a:allclose(b, 1e-5, 1e-6), "max diff " .. (a - b):abs():max():item())
end

function TestDepthwise:test_gate_gradients_match_finite_differences()
  local net, x, y = block_net()
  local og = overgrown.build(net, ff.grow.units(net), { new = 2, layers = 2, generator = ff.Generator(75) })
  local ok, report = ff.gradcheck(function() return ff.cross_entropy(og(x), y) end, og:gates(),
    { eps = 1e-2, atol = 1e-4, rtol = 2e-2 })
  lu.assertTrue(ok, tostring(report))
end

local restrict = testlib.restrict_to_selection

function TestDepthwise:test_materialised_equals_the_restricted_overgrown_network()
  local net, x, y = block_net()
  local p = ff.grow.propose(net, { new = 1, layers = { candidates = 2, max_new_layers = 2 }, steps = 1,
    lr = 1e-2, generator = ff.Generator(76) }, { { x, y } })
  p:select(20)
  local kinds = {}
  for _, c in ipairs(p.selected) do kinds[c.kind] = true end
  lu.assertTrue(kinds.split and kinds.new, "splits and new neurons selected")
  restrict(p)
  local expected = ff.no_grad(p.og, x)
  local _, _, r = p:apply()
  net:eval()
  local got = ff.no_grad(net, x)
  lu.assertTrue(got:allclose(expected, 1e-4, 1e-5), "max diff " .. (got - expected):abs():max():item())
  lu.assertTrue(r.preserved <= 1e-5, "preserved " .. r.preserved)
  -- the depthwise convs grew with their units and stay depthwise
  for _, i in ipairs { 4, 10 } do
    local dw = net:get(i)
    local c = net:get(i - 3).weight:size(1)
    lu.assertEquals(dw.weight:size(), { c, 1, 3, 3 })
    lu.assertEquals({ dw.groups, dw.in_channels, dw.out_channels }, { c, c, c })
    lu.assertEquals(dw.per_neuron, "depthwise")
  end
end

function TestDepthwise:test_kernels_follow_the_row_map()
  -- split children copy their parent's kernel; new neurons get the centre tap
  local net = block_net()
  local us = ff.grow.units(net)
  local dw = net:get(4)
  local old = dw.weight:detach():clone()
  local edit = require "firefly.grow.edit"
  edit.split(us[1], { 2 }, ff.zeros(1, 1, 3, 3))
  edit.add(us[1], ff.randn(1, 1, 3, 3), nil, ff.zeros(6, 1, 1, 1))
  lu.assertEquals(dw.weight:size(1), 6)
  lu.assertTrue(dw.weight:narrow(1, 1, 4):equal(old))
  lu.assertTrue(dw.weight[5]:equal(old[2]))
  local centre = ff.zeros(1, 3, 3)
  centre[1][2][2] = 1
  lu.assertTrue(dw.weight[6]:equal(centre))
end

local METHODS = { "firefly", "random", "nash", "split_exact", "split_fast", "net2net", "gradmax" }

function TestDepthwise:test_every_method_keeps_its_budget_and_the_function()
  for _, m in ipairs(METHODS) do
    local net, x, y = block_net()
    local nb = { method = m, new = 2, generator = ff.Generator(77), quiet = true }
    -- (GradMax under ReLU trains only the transpose: spec/grow.md)
    if m == "gradmax" then nb.zero = "outgoing" end
    if m == "nash" then
      local ds = ff.data.Dataset(x, y)
      nb.val, nb.train, nb.children, nb.child_epochs = ds, ff.data.DataLoader(ds, { batch_size = 6 }), 2, 1
    end
    local p = ff.grow.propose(net, nb, { { x, y } })
    p:select { params = 120 }
    local _, _, r = p:apply()
    lu.assertTrue(r.selected > 0, m)
    lu.assertTrue(r.params_after - r.params_before <= 120, m)
    -- (NASH's p.cost is not its winning child's, on plain conv nets too:
    -- a separate issue; the others charge exactly what apply adds)
    if m ~= "nash" then lu.assertEquals(r.params_after - r.params_before, p.cost, m) end
    lu.assertTrue(type(r.preserved) == "number" and r.preserved <= 1e-5, m .. ": preserved " .. tostring(r.preserved))
    net:eval()
    lu.assertEquals(net(x):size(), { 6, 3 }, m)
  end
end

function TestDepthwise:test_flops_budget_counts_the_depthwise_kernels()
  -- one new neuron of the stem (1 -> 4, 3x3 at 8x8) costs its kernel at
  -- 64 positions, its depthwise kernel at the 16 positions of the stride-2
  -- depthwise conv, and its column of the 1x1 consumer (6 rows, 16
  -- positions): 9*64 + 9*16 + 6*16 = 816 multiply-adds per example
  local net, x, y = block_net()
  local p = ff.grow.propose(net, { method = "random", split = false, new = 2, where = { "1" },
    generator = ff.Generator(78), quiet = true }, { { x, y } })
  p:select { flops = 1000 }
  lu.assertEquals(#p.selected, 1)
  lu.assertEquals(p.flops, 816)
end

function TestDepthwise:test_a_grown_network_checkpoints()
  local net, x, y = block_net()
  local p = ff.grow.propose(net, { method = "random", new = 2, generator = ff.Generator(79), quiet = true },
    { { x, y } })
  p:select(6)
  p:apply()
  net:eval()
  local path = os.tmpname()
  ff.save(path, net)
  local back = ff.load(path)
  os.remove(path)
  back:eval()
  lu.assertTrue(ff.no_grad(back, x):equal(ff.no_grad(net, x)))
  lu.assertEquals(back:get(4).per_neuron, "depthwise")
  lu.assertEquals(back:get(4).groups, net:get(4).groups)
end

function TestDepthwise:test_the_fig4_recipe_refuses_bad_arguments()
  -- (parsed before any data is read: these cost no training)
  for args, msg in pairs { ["--net resnet"] = "--net must be vgg19 or mobilenet",
    ["--net vgg19 --seeds 0"] = "--seeds must be an integer >= 1",
    ["--net vgg19 --epochs 3"] = "unknown argument --epochs",
    ["--net vgg19 --scratch-only --no-scratch"] = "--scratch-only and --no-scratch exclude each other" } do
    local p = io.popen("./firefly examples/grow_fig4.lua " .. args .. " 2>&1")
    local out = p:read("a")
    lu.assertTrue(not p:close(), args .. ": exits with a failure")
    lu.assertStrContains(out, msg)
  end
end

os.exit(testlib.run())
