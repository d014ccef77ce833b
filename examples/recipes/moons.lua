-- A small growth recipe on two moons (seconds): grows a 2-3-3-2 MLP.
--   ./firefly grow examples/recipes/moons.lua --seed 3
return {
  seed = 1, phases = 3, epochs = 2, score_batches = 2, batch_size = 64,
  data = function(ff)
    local ds = ff.data.two_moons { n = 256, noise = 0.1, seed = 7 }
    return ds, ds
  end,
  net = function(ff) return ff.nn.mlp { 2, 3, 3, 2, act = "tanh" } end,
  optim = function(ff, params) return ff.optim.SGD(params, { lr = 0.1, momentum = 0.9 }) end,
  neighbourhood = { new = 4, eps = 1e-2, steps = 1, lr = 1e-2 },
  eta = { ratio = 0.5 },
}
