-- A short data-parallel training run (started by test_dist.lua, on one
-- process or under mpirun): arg[1] = "plain" or "det" (deterministic = 4),
-- arg[2] = a file the main rank writes: one line per epoch (train loss,
-- val loss, val accuracy), then every weight, all as %.9g (exact for
-- float32). arg[3] = "bn" adds batch norm, "syncbn" synchronised batch norm.
local ff = require "firefly"
local d = ff.dist
local mode, out, bn = arg[1], arg[2], arg[3] == "bn" or arg[3] == "syncbn"

ff.manual_seed(3)
local ds = ff.data.spirals { n = 300, classes = 3, seed = 1 }
local val = ff.data.spirals { n = 90, classes = 3, seed = 2 }
local net = ff.nn.mlp { 2, 32, 32, 3, bn = bn, generator = ff.Generator(4) }
if arg[3] == "syncbn" then
  for _, pair in ipairs(net:named_modules()) do
    if getmetatable(pair[2]).__name == "BatchNorm1d" then pair[2].sync = true end
  end
end
local opt = ff.optim.SGD(net:named_parameters(), { lr = 0.1, momentum = 0.9 })
-- 300 rows in batches of 64: the last batch (44 rows) splits unevenly
local loader = ff.data.DataLoader(ds, { batch_size = 64, shuffle = true, generator = ff.Generator(5) })
local rows = ff.train.fit { model = net, data = loader, optim = opt, epochs = 3, val = val, quiet = true,
  deterministic = mode == "det" or nil }
d.check_consistent(net, opt, "after training")
if d.is_main() then
  local f = assert(io.open(out, "w"))
  for _, r in ipairs(rows) do
    f:write(string.format("epoch %.9g %.9g %.9g %.9g\n", r.train_loss, r.val_loss, r.val_acc, r.train_acc))
  end
  for _, e in ipairs(net:named_parameters()) do
    local v = e.param:reshape(-1):totable()
    for i = 1, #v do f:write(string.format("%.9g\n", v[i])) end
  end
  f:close()
end
