-- fashion_grow: grow a network on Fashion-MNIST by Firefly descent.
--   ./firefly examples/fashion_grow.lua [phases] [seed] [mlp|cnn]
-- mlp (default, `make run`): 784-16-16-10, ten phases of two epochs (SGD).
-- cnn: a small VGG (conv 4, pool, conv 8, pool, linear), phases of one
--      epoch (Adam).
-- Each phase trains, then grows by one Firefly step (splits of existing
-- neurons and new neurons, scored on 8 batches, budget 0.35 of the current
-- neurons); prints a table per phase and logs it to out/fashion_grow_<kind>.
local ff = require "firefly"
local nn, data = ff.nn, ff.data

local kind = arg and arg[3] or "mlp"
if kind ~= "mlp" and kind ~= "cnn" then error("fashion_grow: kind must be mlp or cnn, got " .. kind) end
local phases = tonumber(arg and arg[1]) or (kind == "mlp" and 10 or 6)
local seed = tonumber(arg and arg[2]) or 1
ff.manual_seed(seed)

local train_set = data.fashion_mnist { split = "train" }
local test_set = data.fashion_mnist { split = "test" }

local net, opt, epochs
if kind == "mlp" then
  for _, ds in ipairs { train_set, test_set } do ds.x = ds.x:view(ds:size(), 784) end
  net = nn.mlp { 784, 16, 16, 10 }
  opt = ff.optim.SGD(net:named_parameters(), { lr = 0.05, momentum = 0.9 })
  epochs = 2
else
  net = nn.vgg { cfg = { 4, "M", 8, "M" }, in_channels = 1, classes = 10, input_size = 28 }
  opt = ff.optim.Adam(net:named_parameters(), { lr = 2e-3 })
  epochs = 1
end
local loader = data.DataLoader(train_set, { batch_size = 128, shuffle = true, generator = ff.Generator(seed) })

print(net)
local log = "out/fashion_grow_" .. kind
local rows = ff.grow.run {
  net = net, data = loader, test = test_set, optim = opt, phases = phases, epochs = epochs,
  neighbourhood = { new = kind == "mlp" and 32 or 8, eps = 1e-2, steps = 1, lr = 1e-2,
    generator = ff.Generator(seed + 1) },
  eta = { ratio = 0.35 }, score_batches = 8, log = log,
}
print(net)
local last = rows[#rows]
print(string.format("grew to widths %s (%d params): test accuracy %.4f; log in %s/grow.csv",
  last.widths, last.params, last.test_acc, log))
