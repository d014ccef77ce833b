-- bench_grow.lua: the cost of one Firefly growth phase (propose: step 1 +
-- step 2; select; apply) against one training epoch of the same network,
-- and the engine's peak memory during a growth step against a training
-- step of the same network on the same batches.
-- Run by tests/bench/run.sh (./firefly tests/bench/bench_grow.lua); writes
-- build/bench/grow.json.
local ff = require "firefly"
local cjson = require "cjson"

local function median(t)
  local s = { table.unpack(t) }
  table.sort(s)
  return s[(#s + 1) // 2]
end

local train = ff.data.fashion_mnist { split = "train" }
local flat = ff.data.fashion_mnist { split = "train" }
flat.x = flat.x:view(flat:size(), 784)

local function train_step(net, opt, x, y)
  opt:zero_grad()
  ff.cross_entropy(net(x), y):backward()
  opt:step()
end

-- Bytes the autograd graph of one batch holds (the activations and saved
-- tensors a backward pass needs), after a full collection: the working set
-- of a step without the collector's pacing (up to 32 MiB of garbage may
-- wait between collections, whatever the method).
local function graph_bytes(forward, x, y)
  collectgarbage()
  local before = ff.memory()
  local loss = ff.cross_entropy(forward(x), y)
  collectgarbage()
  local held = ff.memory() - before
  loss = nil
  return held
end

local function numel(list)
  local n = 0
  for _, t in ipairs(list) do n = n + t:numel() end
  return n
end

local results = {}

-- epoch_batches: measure a whole epoch (nil), or that many batches and
-- scale to the epoch (the VGG's epoch takes minutes).
local function case(label, make, data, nb, step_batches, epoch_batches)
  ff.manual_seed(1)
  local net = make()
  local opt = ff.optim.SGD(net:named_parameters(), { lr = 0.05, momentum = 0.9 })
  local loader = ff.data.DataLoader(data, { batch_size = 128, shuffle = true, generator = ff.Generator(1) })
  local per_epoch = #loader
  local t0 = ff.clock()
  local seen = 0
  local batches, times = {}, {}
  for x, y in loader:iter() do
    local t = ff.clock()
    train_step(net, opt, x, y)
    times[#times + 1] = ff.clock() - t
    seen = seen + 1
    if #batches < 8 then batches[#batches + 1] = { x, y } end
    if epoch_batches and seen >= epoch_batches then break end
  end
  local epoch = epoch_batches and median(times) * per_epoch or ff.clock() - t0
  local step = step_batches == "all" and loader or { table.unpack(batches, 1, step_batches) }
  -- memory of training: parameters, gradients and momentum, and one
  -- batch's graph; of growth: the frozen parameters, every candidate's
  -- perturbation with its gradient and two moments (Adam, RMSprop), one
  -- batch's graph of the over-grown network and propose's memo
  local x, y = batches[1][1], batches[1][2]
  local params = numel(net:parameters())
  local train_mem = 3 * params * 4 + graph_bytes(function(t) return net(t) end, x, y)
  local phase_times, grow_mem = {}, 0
  for rep = 1, (step_batches == "all" and 1 or 3) do
    collectgarbage()
    local t = ff.clock()
    local p = ff.grow.propose(net, nb, step)
    p:select(8)
    phase_times[rep] = ff.clock() - t
    if rep == 1 then
      net:eval()
      for _, w in ipairs(net:parameters()) do w:requires_grad(false) end
      -- (+ what propose memoised per batch: the first unit's products)
      grow_mem = (params + 4 * numel(p.og:perturbations())) * 4 + graph_bytes(function(t) return p.og(t) end, x, y)
        + (p.memo_bytes or 0)
      for _, w in ipairs(net:parameters()) do w:requires_grad(true) end
      net:train()
    end
    t = ff.clock()
    if rep == 3 or step_batches == "all" then p:apply(opt) end
    phase_times[rep] = phase_times[rep] + ff.clock() - t
  end
  local phase = median(phase_times)
  print(string.format("%-46s epoch %7.2f s  phase %7.3f s = %5.3f epochs  memory: training %6.1f MB, growth %6.1f MB = %.2fx",
    label, epoch, phase, phase / epoch, train_mem / 2 ^ 20, grow_mem / 2 ^ 20, grow_mem / train_mem))
  results[#results + 1] = { case = label, epoch_seconds = epoch, phase_seconds = phase, epochs = phase / epoch,
    train_bytes = train_mem, grow_bytes = grow_mem, memory_ratio = grow_mem / train_mem }
end

local function mlp() return ff.nn.mlp { 784, 256, 256, 10 } end
local function vgg()
  return ff.nn.vgg { preset = "small", in_channels = 1, classes = 10, input_size = 28 }
end

print("one growth phase vs one epoch (Fashion-MNIST, batch 128; phases: median of 3)")
-- the score rule's cost: the paper's midpoint rule (the default, 2 points)
-- against the endpoint rule (1 pass of step 2)
case("MLP 784-256-256-10, 32 new/unit, 8 batches", mlp, flat,
  { new = 32, lr = 1e-2, generator = ff.Generator(2), quiet = true }, 8)
case("MLP 784-256-256-10, 32 new/unit, 8 b., endpoint", mlp, flat,
  { new = 32, lr = 1e-2, rule = "endpoint", generator = ff.Generator(2), quiet = true }, 8)
case("MLP 784-256-256-10, + new layers, 8 batches", mlp, flat,
  { new = 32, layers = { candidates = 16, max_new_layers = 1 }, lr = 1e-2, generator = ff.Generator(2), quiet = true }, 8)
case("MLP 784-256-256-10, official: 70 new, all data", mlp, flat,
  ff.grow.neighbourhood("official", { generator = ff.Generator(2), quiet = true }), "all")
case("small VGG (32,32,M,64,64,M), 16 new/unit, 8 b.", vgg, train,
  { new = 16, lr = 1e-2, generator = ff.Generator(2), quiet = true }, 8, 12)
case("small VGG, 16 new/unit, 8 b., endpoint", vgg, train,
  { new = 16, lr = 1e-2, rule = "endpoint", generator = ff.Generator(2), quiet = true }, 8, 12)

os.execute("mkdir -p build/bench")
local f = assert(io.open("build/bench/grow.json", "w"))
f:write(cjson.encode(results), "\n")
f:close()
