-- bench_grow.lua: the cost of one Firefly growth phase (propose: step 1 +
-- step 2; select; apply) against one training epoch of the same network,
-- and the engine memory of the over-grown network against plain training.
-- Run by tests/bench/run.sh (./firefly tests/bench/bench_grow.lua).
local ff = require "firefly"

local function median(t)
  table.sort(t)
  return t[(#t + 1) // 2]
end

local train = ff.data.fashion_mnist { split = "train" }
train.x = train.x:view(train:size(), 784)

local function case(label, widths, nb, score_batches)
  ff.manual_seed(1)
  local net = ff.nn.mlp(widths)
  local opt = ff.optim.SGD(net:named_parameters(), { lr = 0.05, momentum = 0.9 })
  local loader = ff.data.DataLoader(train, { batch_size = 128, shuffle = true, generator = ff.Generator(1) })
  -- one epoch
  local t0 = ff.clock()
  for x, y in loader:iter() do
    opt:zero_grad()
    ff.cross_entropy(net(x), y):backward()
    opt:step()
  end
  local epoch = ff.clock() - t0
  local batches = {}
  for x, y in loader:iter() do
    batches[#batches + 1] = { x, y }
    if #batches >= score_batches then break end
  end
  -- memory: what training holds beyond the data (parameters, gradients,
  -- optimiser state), and what a proposal holds on top of that (the
  -- candidates' perturbations, gates and step 1's optimiser state), both
  -- measured after a full collection (transient garbage depends on the
  -- collector's pacing, not on the method)
  collectgarbage()
  local with_net = ff.memory()
  local times, held = {}, 0
  for rep = 1, 3 do
    collectgarbage()
    local t = ff.clock()
    local p = ff.grow.propose(net, nb, batches)
    collectgarbage()
    held = math.max(held, ff.memory() - with_net)
    p:select(8)
    if rep == 3 then p:apply(opt) end
    times[rep] = ff.clock() - t
  end
  local params = 0
  for _, t in ipairs(net:parameters()) do params = params + t:numel() * 4 end
  local phase = median(times)
  -- training state: parameters + gradients + momentum = 3x the parameters
  print(string.format("%-44s epoch %6.2f s  phase %6.3f s = %5.3f epochs  proposal holds %5.1f MB = %.2fx training state",
    label, epoch, phase, phase / epoch, held / 2 ^ 20, held / (3 * params)))
end

print("one growth phase vs one epoch (Fashion-MNIST, batch 128, median of 3 phases)")
case("MLP 784-256-256-10, 32 new/unit, 8 batches", { 784, 256, 256, 10 },
  { new = 32, steps = 1, lr = 1e-2, generator = ff.Generator(2) }, 8)
case("MLP 784-256-256-10, official (70 new), 8 b.", { 784, 256, 256, 10 },
  ff.grow.neighbourhood("official", { generator = ff.Generator(2) }), 8)
case("MLP 784-64-64-10, 32 new/unit, 32 batches", { 784, 64, 64, 10 },
  { new = 32, steps = 1, lr = 1e-2, generator = ff.Generator(2) }, 32)
