-- fashion_grow: grow an MLP on Fashion-MNIST by Firefly descent, from 16
-- hidden neurons per layer. Each phase trains two epochs, then grows by one
-- Firefly step (splits of existing neurons and new neurons, scored on 8
-- batches); prints a table per phase and logs it to out/fashion_grow.
--   ./firefly examples/fashion_grow.lua [phases] [seed]
local ff = require "firefly"
local nn, data = ff.nn, ff.data

local phases = tonumber(arg and arg[1]) or 10
local seed = tonumber(arg and arg[2]) or 1
ff.manual_seed(seed)

local train_set = data.fashion_mnist { split = "train" }
local test_set = data.fashion_mnist { split = "test" }
for _, ds in ipairs { train_set, test_set } do ds.x = ds.x:view(ds:size(), 784) end

local net = nn.mlp { 784, 16, 16, 10 }
local opt = ff.optim.SGD(net:named_parameters(), { lr = 0.05, momentum = 0.9 })
local loader = data.DataLoader(train_set, { batch_size = 128, shuffle = true, generator = ff.Generator(seed) })

print(net)
local rows = ff.grow.run {
  net = net, data = loader, test = test_set, optim = opt, phases = phases, epochs = 2,
  neighbourhood = { new = 32, eps = 1e-2, steps = 1, lr = 1e-2, generator = ff.Generator(seed + 1) },
  eta = { ratio = 0.35 }, score_batches = 8, log = "out/fashion_grow",
}
print(net)
local last = rows[#rows]
print(string.format("grew to %s hidden neurons (%d params): test accuracy %.4f; log in out/fashion_grow/grow.csv",
  last.widths, last.params, last.test_acc))
