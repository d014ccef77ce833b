-- Grow an MLP on Fashion-MNIST from 16 hidden neurons per layer by Firefly
-- descent: ten phases of two epochs, budget 0.35 of the current neurons.
--   ./firefly grow examples/recipes/fashion_mlp.lua [--seed N] [phases=4]
--   mpirun -np 2 ./firefly grow examples/recipes/fashion_mlp.lua   (1, 2 or 4)
-- Deterministic (4 fixed parts per batch): 1, 2 and 4 processes grow the
-- same widths with bit-identical logs; without it, summation order alone
-- changes the grown network from phase 2 (spec/dist.md, "Growth").
-- On one process it costs 2.1x the wall time (47-68 s against 22-35 s,
-- 10 phases): deterministic=false on the command line to skip it.
return {
  seed = 1, phases = 10, epochs = 2, score_batches = 8, batch_size = 128, deterministic = 4,
  data = function(ff)
    local train = ff.data.fashion_mnist { split = "train" }
    local test = ff.data.fashion_mnist { split = "test" }
    for _, ds in ipairs { train, test } do ds.x = ds.x:view(ds:size(), 784) end
    return train, test
  end,
  net = function(ff) return ff.nn.mlp { 784, 16, 16, 10 } end,
  optim = function(ff, params) return ff.optim.SGD(params, { lr = 0.05, momentum = 0.9 }) end,
  neighbourhood = { new = 32, eps = 1e-2, steps = 1, lr = 1e-2 },
  eta = function(ff) return ff.schedule.ratio(0.35) end,
}
