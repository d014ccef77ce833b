-- fashion_mlp: the classic MLP baseline on Fashion-MNIST.
-- MLP 784-256-256-10, ReLU, SGD (lr 0.05, momentum 0.9, cosine decay to 0
-- over the run), batch 128, 5 epochs.
-- The data set's published MLP baseline is about 0.88 test accuracy.
--   ./firefly examples/fashion_mlp.lua [epochs] [seed]
local ff = require "firefly"
local nn, data = ff.nn, ff.data

local epochs = tonumber(arg and arg[1]) or 5
local seed = tonumber(arg and arg[2]) or 1
ff.manual_seed(seed)

local train_set = data.fashion_mnist { split = "train" }
local test_set = data.fashion_mnist { split = "test" }
local flat = function(ds) ds.x = ds.x:view(ds:size(), 784); return ds end
flat(train_set); flat(test_set)

local net = nn.mlp { 784, 256, 256, 10, act = "relu" }
print(net)
local opt = ff.optim.SGD(net:named_parameters(), { lr = 0.05, momentum = 0.9 })
local schedule = ff.optim.schedule.cosine(opt, { total = epochs })
local loader = data.DataLoader(train_set, { batch_size = 128, shuffle = true, generator = ff.Generator(seed) })

local t0 = ff.clock()
local rows = ff.train.fit { model = net, data = loader, optim = opt, schedule = schedule,
  epochs = epochs, test = test_set,
  log = "out/fashion_mlp" }
local last = rows[#rows]
print(string.format("test accuracy %.4f after %d epochs, %.1f s/epoch (%.1f s total)",
  last.test_acc, epochs, (ff.clock() - t0) / epochs, ff.clock() - t0))
