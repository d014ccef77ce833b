-- bench_dist: data-parallel throughput and growth under MPI (run by
-- tests/bench/dist.sh, which starts it on 1 rank x 1 thread, 2 ranks x 1
-- thread and 1 rank x 2 threads). arg[1] = "mlp" | "vgg" | "grow".
-- Prints one line on the main rank:
--   bench_dist <case> ranks R threads T samples/s S step_ms M allreduce_ms A allreduce_MB B
-- Synthetic data (the speed does not depend on the values); the global
-- batch is 128 on any number of ranks.
local ff = require "firefly"
local d = ff.dist
local case = arg[1] or "mlp"
local steps = tonumber(arg[2]) or (case == "vgg" and 12 or 120)

local function synthetic(n, shape, classes)
  local g = ff.Generator(1)
  local x = ff.randn({ n, table.unpack(shape) }, g)
  local y = ff.randint(1, classes, n, g)
  return ff.data.Dataset(x, y)
end

local function build()
  if case == "vgg" then
    return ff.nn.vgg { preset = "small", in_channels = 1, classes = 10, input_size = 28, generator = ff.Generator(2) },
        synthetic(128 * (steps + 2), { 1, 28, 28 }, 10)
  end
  return ff.nn.mlp { 784, 256, 256, 10, generator = ff.Generator(2) }, synthetic(128 * (steps + 2), { 784 }, 10)
end

local net, ds = build()
local opt = ff.optim.SGD(net:named_parameters(), { lr = 0.01, momentum = 0.9 })

if case == "grow" then
  -- one growth phase of the fashion_mlp recipe's kind on the MLP: propose
  -- (step 1 and 2 on 8 scoring batches), select, apply
  local loader = ff.data.DataLoader(ds, { batch_size = 128, generator = ff.Generator(3) })
  local small = ff.nn.mlp { 784, 64, 64, 10, generator = ff.Generator(2) }
  local o = ff.optim.SGD(small:named_parameters(), { lr = 0.01, momentum = 0.9 })
  d.barrier()
  local best = math.huge
  for _ = 1, 3 do
    local t0 = ff.clock()
    local batches = d.local_batches(loader, 8)
    d.sync_rng()
    local p = ff.grow.propose(small, { new = 32, eps = 1e-2, steps = 1, lr = 1e-2, quiet = true }, batches)
    p:select(16)
    p:apply(o)
    d.check_consistent(small, o, "bench")
    local secs = d.allreduce_numbers({ ff.clock() - t0 }, "max")[1]
    best = math.min(best, secs)
  end
  if d.is_main() then
    print(string.format("bench_dist grow ranks %d threads %d phase_s %.3f", d.size(), ff.get_num_threads(), best))
  end
  return
end

local loader = ff.data.DataLoader(ds, { batch_size = 128, shuffle = false, drop_last = true })
-- one untimed epoch of two steps first (start-up, allocation caches)
local warm = ff.data.DataLoader(synthetic(256, case == "vgg" and { 1, 28, 28 } or { 784 }, 10), { batch_size = 128 })
ff.train.fit { model = net, data = warm, optim = opt, quiet = true }
d.barrier()
d.stats(true)
local t0 = ff.clock()
ff.train.fit { model = net, data = loader, optim = opt, quiet = true }
local secs = d.allreduce_numbers({ ff.clock() - t0 }, "max")[1]
local bytes, wait = d.stats()
local n = #loader
if d.is_main() then
  print(string.format("bench_dist %s ranks %d threads %d samples/s %.0f step_ms %.2f allreduce_ms %.2f allreduce_MB %.3f",
    case, d.size(), ff.get_num_threads(), n * 128 / secs, secs / n * 1e3, wait / n * 1e3, bytes / n / 2 ^ 20))
end
