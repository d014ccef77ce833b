-- test_nn: the module library: every layer's shapes and parameters, naming,
-- modes, printing, error positions, builders, initialisation, checkpoints,
-- and short training runs that must reach a loss threshold.
package.path = "tests/lua/?.lua;" .. package.path
local testlib = require "testlib"
local lu = testlib.lu
local ff = require "firefly"
local nn = ff.nn
local error_of = testlib.error_of

local function shape(t) return table.concat(t:size(), "x") end

TestLayers = {}

function TestLayers:test_every_layer_forward_shape()
  local g = ff.Generator(0)
  local x2, x4 = ff.randn(5, 8, g), ff.randn(2, 3, 8, 8, g)
  local cases = {
    { nn.Linear(8, 4), x2, "5x4" },
    { nn.Linear(8, 4, { bias = false }), x2, "5x4" },
    { nn.Conv2d(3, 6, 3, { padding = 1 }), x4, "2x6x8x8" },
    { nn.Conv2d(3, 6, 3, { stride = 2 }), x4, "2x6x3x3" },
    { nn.Conv2d(3, 3, 3, { padding = 1, groups = 3 }), x4, "2x3x8x8" },
    { nn.BatchNorm1d(8), x2, "5x8" },
    { nn.BatchNorm2d(3), x4, "2x3x8x8" },
    { nn.LayerNorm(8), x2, "5x8" },
    { nn.MaxPool2d(2), x4, "2x3x4x4" },
    { nn.AvgPool2d(2), x4, "2x3x4x4" },
    { nn.GlobalAvgPool(), x4, "2x3" },
    { nn.Flatten(), x4, "2x192" },
    { nn.Dropout(0.5), x2, "5x8" },
    { nn.Identity(), x2, "5x8" },
  }
  for name in pairs(nn.activation_names) do
    cases[#cases + 1] = { nn.activation(name), x2, "5x8" }
  end
  for _, c in ipairs(cases) do
    lu.assertEquals(shape(c[1](c[2])), c[3], tostring(c[1]))
  end
end

function TestLayers:test_linear_matches_formula_and_init_bounds()
  local l = nn.Linear(100, 50, { generator = ff.Generator(1) })
  local bound = 1 / math.sqrt(100)
  lu.assertTrue(l.weight:abs():max():item() <= bound)
  lu.assertTrue(l.weight:abs():max():item() > 0.9 * bound)
  lu.assertTrue(l.bias:abs():max():item() <= bound)
  local x = ff.randn(3, 100)
  lu.assertTrue(l(x):allclose(x:matmul(l.weight:t()) + l.bias, 1e-5, 1e-5))
  lu.assertTrue(l.weight:requires_grad() and l.weight:is_leaf())
end

function TestLayers:test_init_options()
  local z = nn.Linear(4, 3, { init = "zeros" })
  lu.assertEquals(z.weight:abs():sum():item(), 0)
  local x = nn.Linear(300, 200, { init = "xavier_uniform", generator = ff.Generator(1) })
  local bound = math.sqrt(6 / 500)
  lu.assertTrue(x.weight:abs():max():item() <= bound and x.weight:abs():max():item() > 0.9 * bound)
  local k = nn.Conv2d(16, 8, 3, { init = "kaiming_normal", generator = ff.Generator(2) })
  lu.assertAlmostEquals(k.weight:var():item(), 2 / (16 * 9), 0.2 * 2 / (16 * 9))
  local custom = nn.Linear(2, 2, { init = function(shape) return ff.ones(shape), ff.full({ shape[1] }, 7) end })
  lu.assertEquals(custom.bias:totable(), { 7, 7 })
  lu.assertStrContains(error_of(nn.Linear, 2, 2, { init = "he" }), "unknown init 'he'")
end

function TestLayers:test_batchnorm_modes()
  local bn = nn.BatchNorm1d(3)
  local x = ff.randn(64, 3, ff.Generator(2)) * 2 + 5
  local y = bn(x)
  lu.assertAlmostEquals(y:mean(1):abs():max():item(), 0, 1e-4)
  lu.assertTrue(bn.running_mean:min():item() > 0.3) -- moved towards 5 by momentum 0.1
  bn:eval()
  lu.assertFalse(bn.training)
  local before = bn.running_mean:clone()
  bn(x)
  lu.assertTrue(bn.running_mean:equal(before), "eval mode must not update running stats")
end

function TestLayers:test_bad_constructor_arguments()
  lu.assertStrContains(error_of(nn.Linear, 0, 3), "in_features")
  lu.assertStrContains(error_of(nn.Linear, 3, 2, { bais = true }), "unknown option 'bais'")
  lu.assertStrContains(error_of(nn.Conv2d, 3, 4, 3, { groups = 2 }), "divisible")
  lu.assertStrContains(error_of(nn.Dropout, 2), "[0, 1]")
  lu.assertStrContains(error_of(nn.activation, "swish2"), "unknown activation")
end

TestContainers = {}

function TestContainers:test_names_and_parameters()
  local net = nn.Sequential { nn.Linear(4, 3), nn.ReLU(), nn.Residual(nn.Sequential { nn.Linear(3, 3) }) }
  net:add(nn.Linear(3, 2), "head")
  local names = {}
  for _, p in ipairs(net:named_parameters()) do names[#names + 1] = p.name end
  lu.assertEquals(names, { "1.weight", "1.bias", "3.f.1.weight", "3.f.1.bias", "head.weight", "head.bias" })
  lu.assertEquals(net:num_params(), 15 + 12 + 8)
  lu.assertEquals(#net:parameters(), 6)
  lu.assertEquals(#net, 4)
  local count = 0
  net:apply(function() count = count + 1 end)
  lu.assertEquals(count, 7)
end

function TestContainers:test_train_eval_and_zero_grad()
  local net = nn.mlp { 4, 8, 2, bn = true, dropout = 0.2 }
  net:eval()
  for _, m in ipairs(net:named_modules()) do lu.assertFalse(m[2].training) end
  net:train()
  lu.assertTrue(net:get(2).training)
  net(ff.randn(6, 4)):sum():backward()
  lu.assertNotNil(net:parameters()[1].grad)
  net:zero_grad()
  for _, p in ipairs(net:parameters()) do lu.assertNil(p.grad) end
end

function TestContainers:test_errors_name_their_position()
  local net = nn.Sequential { nn.Linear(4, 3), nn.Sequential { nn.ReLU(), nn.Linear(5, 2) } }
  local msg = error_of(net, ff.randn(2, 4))
  lu.assertStrContains(msg, "in module 2 (Sequential) of Sequential")
  lu.assertStrContains(msg, "in module 2 (Linear) of Sequential")
  lu.assertStrContains(msg, "linear")
end

function TestContainers:test_insert_remove_renumber()
  local net = nn.Sequential { nn.Linear(2, 2), nn.Linear(2, 2) }
  net:insert(2, nn.ReLU())
  lu.assertEquals(net._children[3][1], "3")
  lu.assertEquals(getmetatable(net:get(2)).__name, "ReLU")
  net:remove(2)
  lu.assertEquals(#net, 2)
end

function TestContainers:test_residual_is_identity_at_zero()
  local f = nn.Sequential { nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 3) }
  ff.no_grad(function() f:get(3).weight:zero_(); f:get(3).bias:zero_() end)
  local r = nn.Residual(f)
  local x = ff.randn(4, 3)
  lu.assertTrue(r(x):equal(x))
end

function TestContainers:test_prints_a_tree()
  local s = tostring(nn.mlp { 784, 64, 10 })
  lu.assertStrContains(s, "Sequential (3 modules, 50,890 params)")
  lu.assertStrContains(s, "(1) Linear(784 -> 64)")
  lu.assertStrContains(s, "50,240")
end

TestBuilders = {}

function TestBuilders:test_mlp_vgg_mobilenet()
  local mlp = nn.mlp { 784, 64, 64, 10, act = "tanh", bn = true }
  lu.assertEquals(shape(mlp(ff.randn(2, 784))), "2x10")
  lu.assertEquals(getmetatable(mlp:get(3)).__name, "Tanh")
  local vgg = nn.vgg { cfg = { 8, 8, "M", 16, "M" }, in_channels = 1, classes = 10, input_size = 28 }
  lu.assertEquals(shape(vgg(ff.randn(2, 1, 28, 28))), "2x10")
  local vgg19 = nn.vgg { preset = "vgg19", width = 0.25, in_channels = 3, classes = 10 }
  local convs = 0
  vgg19:apply(function(m) if getmetatable(m).__name == "Conv2d" then convs = convs + 1 end end)
  lu.assertEquals(convs, 16)
  lu.assertEquals(vgg19:get(1).weight:size(1), 16) -- the paper starts VGG-19 at 16 channels
  lu.assertEquals(shape(vgg19(ff.randn(1, 3, 32, 32))), "1x10")
  local mob = nn.mobilenet_v1 { width = 0.25, in_channels = 1, classes = 10, stem_stride = 1 }
  lu.assertEquals(shape(mob(ff.randn(1, 1, 28, 28))), "1x10")
  lu.assertStrContains(error_of(nn.vgg, { preset = "vgg99" }), "unknown preset")
  lu.assertStrContains(error_of(nn.mlp, { 3 }), "at least")
end

TestTraining = {}

local function fit_moons(model, opt_fn, epochs)
  ff.manual_seed(3)
  local ds = ff.data.two_moons { n = 256, noise = 0.1, seed = 3 }
  local loader = ff.data.DataLoader(ds, { batch_size = 32, shuffle = true, generator = ff.Generator(3) })
  local opt = opt_fn(model:named_parameters())
  return ff.train.fit { model = model, data = loader, optim = opt, epochs = epochs, quiet = true }
end

function TestTraining:test_mlp_reaches_loss_threshold()
  local rows = fit_moons(nn.mlp { 2, 32, 32, 2 },
    function(p) return ff.optim.SGD(p, { lr = 0.1, momentum = 0.9 }) end, 30)
  lu.assertTrue(rows[#rows].train_loss < 0.05, "loss " .. rows[#rows].train_loss)
  lu.assertTrue(rows[#rows].train_acc > 0.98)
end

function TestTraining:test_bn_mlp_with_adam_reaches_threshold()
  local rows = fit_moons(nn.mlp { 2, 32, 2, bn = true },
    function(p) return ff.optim.Adam(p, { lr = 0.01 }) end, 30)
  lu.assertTrue(rows[#rows].train_loss < 0.1, "loss " .. rows[#rows].train_loss)
end

function TestTraining:test_small_cnn_learns()
  -- 4x4 "images" whose class is the bright quadrant
  local g = ff.Generator(4)
  local n = 128
  local x = ff.randn(n, 1, 4, 4, g) * 0.1
  local y = ff.randint(1, 4, n, g)
  for i = 1, n do
    local q = y[i] - 1
    local r, c = (q // 2) * 2 + 1, (q % 2) * 2 + 1
    x[i][1]:narrow(1, r, 2):narrow(2, c, 2):add_(1)
  end
  local net = nn.Sequential { nn.Conv2d(1, 4, 3, { padding = 1 }), nn.BatchNorm2d(4), nn.ReLU(),
    nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16, 4) }
  local opt = ff.optim.Adam(net:named_parameters(), { lr = 0.02 })
  local loader = ff.data.DataLoader({ x = x, y = y, size = function() return n end },
    { batch_size = 32, shuffle = true, generator = ff.Generator(5) })
  local rows = ff.train.fit { model = net, data = loader, optim = opt, epochs = 15, quiet = true }
  lu.assertTrue(rows[#rows].train_acc > 0.95, "accuracy " .. rows[#rows].train_acc)
end

TestCheckpoint = {}

function TestCheckpoint:test_network_and_optimizer_resume_bit_identically()
  local function setup()
    ff.manual_seed(7)
    local net = nn.mlp { 4, 16, 3, bn = true }
    local opt = ff.optim.Adam(net:named_parameters(), { lr = 0.01 })
    return net, opt
  end
  local g = ff.Generator(9)
  local x, y = ff.randn(32, 4, g), ff.randint(1, 3, 32, g)
  local function step(net, opt)
    opt:zero_grad()
    ff.cross_entropy(net(x), y):backward()
    opt:step()
  end
  local net, opt = setup()
  for _ = 1, 3 do step(net, opt) end
  local path = os.tmpname()
  ff.save(path, { model = net, optim = opt:state_dict() })
  for _ = 1, 3 do step(net, opt) end
  local ck = ff.load(path)
  os.remove(path)
  local net2 = ck.model
  local opt2 = ff.optim.Adam(net2:named_parameters(), { lr = 0.01 })
  opt2:load_state_dict(ck.optim)
  for _ = 1, 3 do step(net2, opt2) end
  local p1, p2 = net:parameters(), net2:parameters()
  for i = 1, #p1 do lu.assertTrue(p1[i]:equal(p2[i]), "parameter " .. i) end
  lu.assertTrue(net:get(2).running_mean:equal(net2:get(2).running_mean))
  lu.assertEquals(tostring(net2), tostring(net))
end

os.exit(testlib.run())
