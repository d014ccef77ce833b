-- bench_dist: data-parallel throughput and growth under MPI (run by
-- tests/bench/dist.sh, which starts it on 1 rank x 1 thread, 2 ranks x 1
-- thread and 1 rank x 2 threads). arg[1] = "mlp" | "vgg" | "grow";
-- arg[2] = steps; arg[3] = "overlap" to overlap the allreduce with the
-- backward (dist.set_overlap). Prints one line on the main rank:
--   bench_dist <case> ranks R threads T overlap O samples/s S step_ms M allreduce_ms A allreduce_MB B
--     median_step_ms MS median_samples/s MSS
-- and on several ranks a second line, the parts of a step (medians over
-- the steps, the slower rank's where ranks differ):
--   bench_dist <case> parts compute_ms C wait_ms W reduce_ms R raw_ms X
-- compute = forward and backward of the local rows; wait = a barrier
-- after it (the other rank's lag); reduce = the gradient sum proper
-- (dist.grad_reducer, no overlap); raw = one allreduce of the same bytes
-- on a buffer used step after step, the transport's ceiling.
-- Synthetic data (the speed does not depend on the values); the global
-- batch is 128 on any number of ranks.
local ff = require "firefly"
local d = ff.dist
local case = arg[1] or "mlp"
local steps = tonumber(arg[2]) or (case == "vgg" and 12 or 120)
d.set_overlap(arg[3] == "overlap")

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
local step_s, last = {}, t0
ff.train.fit { model = net, data = loader, optim = opt, quiet = true,
  on_step = function(k) local t = ff.clock(); step_s[k] = t - last; last = t end }
local secs = d.allreduce_numbers({ ff.clock() - t0 }, "max")[1]
-- the median step (the slower rank's): on a shared machine a few steps
-- that wait for a time slice move the mean far more than the median
table.sort(step_s)
local median_step = d.allreduce_numbers({ step_s[(#step_s + 1) // 2] }, "max")[1]
local bytes, wait = d.stats()
local n = #loader
if d.is_main() then
  print(string.format("bench_dist %s ranks %d threads %d overlap %s samples/s %.0f step_ms %.2f allreduce_ms %.2f allreduce_MB %.3f median_step_ms %.2f median_samples/s %.0f",
    case, d.size(), ff.get_num_threads(), d.overlap() and "on" or "off", n * 128 / secs, secs / n * 1e3, wait / n * 1e3, bytes / n / 2 ^ 20,
    median_step * 1e3, 128 / median_step))
end
if d.size() == 1 then return end

-- The parts of a step, timed one by one with barriers between them.
local params = opt:params()
local red = d.grad_reducer(params, { overlap = false })
local P = 0
for _, p in ipairs(params) do P = P + p:numel() end
local raw = ff.zeros(P + 1)
local T = { {}, {}, {}, {} }
local k = 0
for len, _, x, y in loader:iter_shard(d.rank(), d.size()) do
  k = k + 1
  if k > math.min(n, 40) then break end
  d.barrier()
  local t0 = ff.clock()
  opt:zero_grad()
  red:begin(x:size(1) / len)
  local loss = ff.cross_entropy(net(x), y)
  loss:backward()
  local lt = ff.tensor({ loss:item() })
  local t1 = ff.clock()
  d.barrier()
  local t2 = ff.clock()
  red:finish({ lt })
  local t3 = ff.clock()
  d.barrier()
  local t4 = ff.clock()
  d.allreduce(raw)
  local t5 = ff.clock()
  local v = d.allreduce_numbers({ t1 - t0, t2 - t1, t3 - t2, t5 - t4 }, "max")
  for i = 1, 4 do T[i][k] = v[i] end
end
red:close()
local function median(v)
  table.sort(v)
  return v[(#v + 1) // 2] * 1e3
end
if d.is_main() then
  print(string.format("bench_dist %s parts compute_ms %.3f wait_ms %.3f reduce_ms %.3f raw_ms %.3f",
    case, median(T[1]), median(T[2]), median(T[3]), median(T[4])))
end
