-- test_grow_edit: growable units are found by walking the network, and
-- materialised splits and new neurons preserve the function (at zero
-- perturbation / zero outgoing weights), with optimiser state carried over.
package.path = "tests/lua/?.lua;" .. package.path
local testlib = require "testlib"
local lu = testlib.lu
local ff = require "firefly"
local nn = ff.nn
local units = require "firefly.grow.units"
local edit = require "firefly.grow.edit"

local function names(list)
  local out = {}
  for i, u in ipairs(list) do out[i] = u.name end
  return out
end

TestUnits = {}

function TestUnits:test_mlp_vgg_residual()
  lu.assertEquals(names(units.units(nn.mlp { 4, 8, 8, 2, bn = true })), { "1", "4" })
  local vgg = nn.vgg { cfg = { 4, "M", 8, "M" }, in_channels = 1, classes = 3, input_size = 8 }
  local us = units.units(vgg)
  lu.assertEquals(names(us), { "1", "5" })
  lu.assertEquals(us[2].spatial, 4) -- 8 channels of 2x2 flattened into the Linear
  local res = nn.Sequential { nn.Linear(3, 5), nn.Residual(nn.Sequential { nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 5) }),
    nn.Linear(5, 2) }
  -- the trunk grows through the block (its f reads and writes the trunk's
  -- neurons), and so does the block's hidden layer
  lu.assertEquals(names(units.units(res)), { "1", "2.f.1" })
  lu.assertEquals(#units.units(res)[1].between, 1)
  -- a block's output ending the Sequential is tied to the network's output
  local tail = nn.Sequential { nn.Linear(3, 5), nn.Residual(nn.Sequential { nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 5) }) }
  lu.assertEquals(names(units.units(tail)), { "2.f.1" })
  lu.assertEquals(names(units.units(nn.mlp { 4, 8, 8, 2 }, { "3" })), { "3" })
end

local function check_preserved(net, x, grow)
  net:eval()
  local before = ff.no_grad(net, x)
  grow(units.units(net))
  local after = ff.no_grad(net, x)
  lu.assertTrue(after:allclose(before, 1e-5, 1e-5), "max diff " .. (after - before):abs():max():item())
end

local function zeros_like(t) return ff.zeros(t:size()) end

TestPreservation = {}

function TestPreservation:test_split_at_zero_and_add_with_zero_outgoing_mlp_bn()
  ff.manual_seed(1)
  local net = nn.mlp { 6, 5, 4, 3, bn = true }
  -- give batch norm non-trivial statistics first
  net(ff.randn(32, 6))
  check_preserved(net, ff.randn(7, 6), function(us)
    local u = us[1]
    edit.split(u, { 2, 5 }, ff.zeros(2, 6))
    edit.add(u, ff.randn(3, 6), ff.randn(3), ff.zeros(4, 3))
    lu.assertEquals(u.producer.weight:size(), { 10, 6 })
    lu.assertEquals(u.consumer.weight:size(), { 4, 10 })
    lu.assertEquals(u.between[1].running_var:size(1), 10)
  end)
end

function TestPreservation:test_conv_flatten_linear()
  ff.manual_seed(2)
  local net = nn.vgg { cfg = { 4, "M", 6, "M" }, in_channels = 2, classes = 3, input_size = 8 }
  net(ff.randn(4, 2, 8, 8))
  check_preserved(net, ff.randn(3, 2, 8, 8), function(us)
    edit.split(us[1], { 1, 4 }, ff.zeros(2, 2, 3, 3))
    edit.add(us[1], ff.randn(2, 2, 3, 3), nil, ff.zeros(6, 2, 3, 3))
    -- unit 2's producer now reads 8 channels
    edit.split(us[2], { 3 }, ff.zeros(1, 8, 3, 3))
    edit.add(us[2], ff.randn(2, 8, 3, 3), nil, ff.zeros(3, 2 * 4))
  end)
end

function TestPreservation:test_inside_residual()
  ff.manual_seed(3)
  local net = nn.Sequential { nn.Linear(3, 5), nn.Residual(nn.Sequential { nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 5) }) }
  check_preserved(net, ff.randn(4, 3), function(us)
    edit.split(us[1], { 7 }, ff.zeros(1, 5), ff.zeros(1))
    edit.add(us[1], ff.randn(2, 5), ff.randn(2), ff.zeros(5, 2))
  end)
end

function TestPreservation:test_trunk_through_residual_blocks()
  -- a trunk unit whose neurons pass through residual blocks (MLP and conv
  -- with batch norm): split children and new neurons carry the blocks'
  -- columns and rows along, and the function is unchanged
  ff.manual_seed(7)
  local mlp = nn.Sequential { nn.Linear(3, 5), nn.Tanh(),
    nn.Residual(nn.Sequential { nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 5) }), nn.Linear(5, 2) }
  check_preserved(mlp, ff.randn(6, 3), function(us)
    lu.assertEquals(us[1].name, "1")
    edit.split(us[1], { 2, 5 }, ff.randn(2, 3) * 0, ff.zeros(2))
    edit.add(us[1], ff.randn(2, 3), ff.randn(2), ff.zeros(2, 2))
    local f = mlp._children[3][2]._children[1][2]
    lu.assertEquals(f._children[1][2].weight:size(), { 4, 9 })
    lu.assertEquals(f._children[3][2].weight:size(), { 9, 4 })
    lu.assertEquals(mlp._children[4][2].weight:size(), { 2, 9 })
  end)
  local conv = nn.Sequential { nn.Conv2d(2, 4, 3, { padding = 1, bias = false }), nn.BatchNorm2d(4), nn.ReLU(),
    nn.Residual(nn.Sequential { nn.Conv2d(4, 3, 3, { padding = 1 }), nn.ReLU(), nn.Conv2d(3, 4, 3, { padding = 1 }) }),
    nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 4, 3) }
  conv(ff.randn(5, 2, 4, 4))
  check_preserved(conv, ff.randn(3, 2, 4, 4), function(us)
    lu.assertEquals(us[1].name, "1")
    lu.assertEquals(us[1].spatial, 4)
    edit.split(us[1], { 1, 3 }, ff.zeros(2, 2, 3, 3))
    edit.add(us[1], ff.randn(1, 2, 3, 3), nil, ff.zeros(3, 4))
    -- the block's hidden layer is a unit of its own, grown after the trunk
    local inner = units.units(conv)[2]
    lu.assertEquals(inner.name, "4.f.1")
    edit.split(inner, { 2 }, ff.zeros(1, 7, 3, 3), ff.zeros(1))
    edit.add(inner, ff.randn(2, 7, 3, 3), nil, ff.zeros(7, 2, 3, 3))
  end)
end

function TestPreservation:test_split_moves_function_only_at_second_order()
  -- ½[σ(θ+εδ) + σ(θ−εδ)] − σ(θ) = O(ε²): halving ε quarters the change
  ff.manual_seed(4)
  local x = ff.randn(16, 4)
  local function change(eps)
    ff.manual_seed(5)
    local net = nn.mlp { 4, 6, 2, act = "tanh" }
    local before = ff.no_grad(net, x)
    local d = ff.randn(1, 4, ff.Generator(9)) * eps
    edit.split(units.units(net)[1], { 3 }, d)
    return (ff.no_grad(net, x) - before):abs():max():item()
  end
  local r = change(1e-2) / change(5e-3)
  lu.assertTrue(r > 3.5 and r < 4.5, "ratio " .. r)
end

TestRemap = {}

function TestRemap:test_momentum_of_old_weights_unchanged()
  ff.manual_seed(6)
  local net = nn.mlp { 4, 5, 3 }
  local opt = ff.optim.SGD(net:named_parameters(), { lr = 0.1, momentum = 0.9 })
  local x, y = ff.randn(8, 4), ff.randint(1, 3, 8)
  for _ = 1, 2 do opt:zero_grad(); ff.cross_entropy(net(x), y):backward(); opt:step() end
  local u = units.units(net)[1]
  local w_buf = opt:state_of(u.producer.weight).momentum_buffer:clone()
  local c_buf = opt:state_of(u.consumer.weight).momentum_buffer:clone()
  opt:remap(edit.split(u, { 2 }, ff.zeros(1, 4)))
  opt:remap(edit.add(u, ff.randn(1, 4), nil, ff.zeros(3, 1)))
  lu.assertEquals(u.producer.weight:size(), { 7, 4 })
  local wb = opt:state_of(u.producer.weight).momentum_buffer
  lu.assertTrue(wb:narrow(1, 1, 5):equal(w_buf), "old rows' momentum unchanged")
  lu.assertTrue(wb[6]:equal(w_buf[2]), "the split child starts with its parent's momentum")
  lu.assertEquals(wb[7]:abs():sum():item(), 0, "a new neuron starts at zero momentum")
  local cb = opt:state_of(u.consumer.weight).momentum_buffer
  lu.assertTrue(cb:select(2, 2):equal(c_buf:select(2, 2) * 0.5), "split column halved")
  lu.assertTrue(cb:select(2, 6):equal(c_buf:select(2, 2) * 0.5))
  lu.assertTrue(cb:select(2, 1):equal(c_buf:select(2, 1)))
  lu.assertEquals(cb:select(2, 7):abs():sum():item(), 0)
  -- training goes on with the grown parameters
  opt:zero_grad()
  ff.cross_entropy(net(x), y):backward()
  opt:step()
end

os.exit(testlib.run())
