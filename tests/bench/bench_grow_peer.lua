-- bench_grow_peer.lua: the engine side of bench_grow_peer.py, one Firefly
-- growth step (ff.grow.propose, the paper preset with the midpoint rule)
-- on the MLP 784-256-256-10 and 8 Fashion-MNIST batches of 128.
--
--   ./firefly tests/bench/bench_grow_peer.lua export FILE
--       writes the network, the batches and the candidates' initial
--       perturbations (exactly what propose builds from the same
--       generator) to FILE (safetensors), for the PyTorch twin
--   ./firefly tests/bench/bench_grow_peer.lua run FILE THREADS [REPS]
--       loads FILE, runs two untimed proposes, then REPS timed ones (a
--       process that has trained is warm: glibc's malloc starts with a
--       128 KiB mmap threshold, exactly one 128x256 float buffer, and the
--       first two proposes of a fresh process pay mmap and page faults on
--       most of their buffers until it adapts, 1.6x a warm one); prints
--       one JSON line: seconds per propose (wall and CPU time: os.clock
--       counts every thread), and every candidate's gate
--       gradient (the `effect` of p:candidates()) by unit and kind
local ff = require "firefly"
local cjson = require "cjson"
local overgrown = require "firefly.grow.overgrown"
local units_mod = require "firefly.grow.units"

local NEW, SEED, NBATCH, B = 16, 7, 8, 128
local mode, path = arg[1], arg[2]

local function neighbourhood()
  return ff.grow.neighbourhood("paper", { rule = "midpoint", points = 2, new = NEW,
    generator = ff.Generator(SEED), quiet = true })
end

local function network()
  ff.manual_seed(1)
  return ff.nn.mlp { 784, 256, 256, 10 }
end

if mode == "export" then
  local net = network()
  local data = ff.data.fashion_mnist { split = "train" }
  local xs, ys = {}, {}
  for b = 1, NBATCH do
    xs[b] = data.x:narrow(1, (b - 1) * B + 1, B):contiguous():view(B, 784)
    ys[b] = data.y:narrow(1, (b - 1) * B + 1, B):contiguous()
  end
  local nb = neighbourhood()
  local og = overgrown.build(net, units_mod.units(net, nil), { split = true, new = NEW, layers = 0,
    eps = nb.eps, generator = nb.generator, init = nb.init })
  ff.save(path, { net = net:parameters(), x = xs, y = ys, init = og:perturbations() })
  print("exported " .. path)
elseif mode == "run" then
  local threads, reps = tonumber(arg[3] or 1), tonumber(arg[4] or 1)
  ff.set_num_threads(threads)
  local saved = ff.load(path)
  local net = network()
  ff.no_grad(function()
    for i, p in ipairs(net:parameters()) do p:copy_(saved.net[i]) end
  end)
  local batches = {}
  for b = 1, #saved.x do batches[b] = { saved.x[b], saved.y[b] } end
  local p = ff.grow.propose(net, neighbourhood(), batches) -- warm-up (and the check below)
  ff.grow.propose(net, neighbourhood(), batches)
  local seconds, cpu = {}, {}
  for r = 1, reps do
    collectgarbage()
    local t, c = ff.clock(), os.clock()
    ff.grow.propose(net, neighbourhood(), batches)
    seconds[r], cpu[r] = ff.clock() - t, os.clock() - c
  end
  local effects = {}
  for _, c in ipairs(p:candidates()) do
    local key = c.unit .. "." .. c.kind
    effects[key] = effects[key] or {}
    effects[key][c.index] = c.effect
  end
  print(cjson.encode { seconds = seconds, cpu_seconds = cpu, effects = effects })
else
  io.stderr:write("usage: bench_grow_peer.lua export FILE | run FILE THREADS [REPS]\n")
  os.exit(2)
end
