-- grow_wider: the paper's growing-wider experiment (Fig. 4a and 4b). A
-- VGG-style network starts at a tiny width and grows wider over several
-- phases with each growth method in turn, under the same schedule, budget
-- (η_t = 0.35 of the current neurons), data, seeds and training; test
-- accuracy against parameters after every phase (4a), and the wall time
-- each method spends growing (4b).
--
--   ./firefly examples/grow_wider.lua [--full] [--data fashion|cifar10 --path DIR]
--                                     [--methods firefly,random,...] [--seed N] [--out DIR]
--
-- Default scale (about 10 minutes on 2 cores): Fashion-MNIST, conv 4, pool,
-- conv 8, pool, linear; 5 phases of one epoch (Adam); NASH with 4 children
-- trained one epoch on 10000 examples each. --full: VGG-19's layout at a
-- quarter of its width (16 channels in the first block), 10 phases of 10
-- epochs, NASH with 8 children of 2 epochs on the whole training set
-- (hours; meant for CIFAR-10: --data cifar10 --path DIR with the binary
-- version's data_batch_*.bin and test_batch.bin).
-- 5000 training examples are held out as validation data for every
-- method (NASH ranks its children on them); the test set is only tested.
-- Writes DIR/<method>/grow.* and timing.*, DIR/results.jsonl and .csv (every
-- phase of every method), DIR/summary.json, and the plots DIR/fig4a and
-- DIR/fig4b (.png, .svg).
local ff = require "firefly"

local ALL = { "firefly", "split_exact", "split_fast", "nash", "random", "net2net", "gradmax" }

local function parse(args)
  local o = { data = "fashion", out = "out/grow_wider", seed = 1, methods = ALL }
  local i = 1
  while args[i] do
    local a, v = args[i], args[i + 1]
    if a == "--full" then o.full = true; i = i - 1
    elseif a == "--data" then o.data = v
    elseif a == "--path" then o.path = v
    elseif a == "--out" then o.out = v
    elseif a == "--seed" then o.seed = tonumber(v)
    elseif a == "--methods" then
      o.methods = {}
      for m in v:gmatch("[^,]+") do o.methods[#o.methods + 1] = m end
    else error("grow_wider: unknown argument " .. a, 0) end
    i = i + 2
  end
  if o.data ~= "fashion" and o.data ~= "cifar10" then error("grow_wider: --data must be fashion or cifar10", 0) end
  if o.data == "cifar10" and not o.path then error("grow_wider: --data cifar10 needs --path DIR", 0) end
  return o
end

local o = parse(arg or {})
local S = o.full
  and { cfg = { 16, 16, "M", 32, 32, "M", 64, 64, 64, 64, "M", 128, 128, 128, 128, "M", 128, 128, 128, 128, "M" },
        phases = 10, epochs = 10, children = 8, child_epochs = 2, child_examples = nil }
  or { cfg = { 4, "M", 8, "M" }, phases = 5, epochs = 1, children = 4, child_epochs = 1, child_examples = 10000 }

local function load_data()
  local train, test
  if o.data == "fashion" then
    train, test = ff.data.fashion_mnist { split = "train" }, ff.data.fashion_mnist { split = "test" }
  else
    train = ff.data.cifar10 { path = o.path, split = "train" }
    test = ff.data.cifar10 { path = o.path, split = "test" }
  end
  local val, rest = train:split(5000 / train:size(), ff.Generator(o.seed))
  return rest, val, test
end

local train, val, test = load_data()
local shape = train.x:size()
ff.io.mkdir(o.out)

local function neighbourhood(method, seed)
  -- (ReLU nets: published GradMax's zero incoming weights would never
  -- train under a ReLU of derivative 0 at 0, so it runs transposed)
  local nb = ff.grow.neighbourhood { method = method, new = 8, lr = 1e-2, generator = ff.Generator(seed + 1),
    quiet = true, zero = method == "gradmax" and "outgoing" or nil }
  if method == "nash" then
    nb.children, nb.child_epochs = S.children, S.child_epochs
    if S.child_examples then
      nb.train = train:subset(ff.data.randperm(train:size(), ff.Generator(seed + 2)):narrow(1, 1, S.child_examples))
    end
  end
  return nb
end

local function run(method)
  ff.manual_seed(o.seed)
  local net = ff.nn.vgg { cfg = S.cfg, in_channels = shape[2], classes = 10, input_size = shape[3] }
  local opt = ff.optim.Adam(net:named_parameters(), { lr = 2e-3 })
  local loader = ff.data.DataLoader(train, { batch_size = 128, shuffle = true, generator = ff.Generator(o.seed) })
  local t0 = ff.clock()
  local rows = ff.grow.run { net = net, data = loader, test = test, val = val, optim = opt, phases = S.phases,
    epochs = S.epochs, neighbourhood = neighbourhood(method, o.seed), eta = { ratio = 0.35 }, score_batches = 8,
    log = o.out .. "/" .. method, plot = false }
  local grow_s, cum = 0, {}
  for _, r in ipairs(rows) do
    grow_s = grow_s + (r.grow_seconds or 0)
    r.grow_seconds_total = grow_s
  end
  return rows, ff.clock() - t0, grow_s
end

local all, summary = {}, {}
for _, m in ipairs(o.methods) do
  print(string.format("== %s", m))
  local rows, secs, grow_s = run(m)
  for _, r in ipairs(rows) do all[#all + 1] = r end
  local last = rows[#rows]
  summary[#summary + 1] = { method = m, test_acc = last.test_acc, params = last.params, widths = last.widths,
    grow_seconds = grow_s, seconds = secs }
end

local log = ff.logging.Logger { dir = o.out, name = "results" }
for _, r in ipairs(all) do log:write(r) end
log:close()
ff.io.write_atomic(o.out .. "/summary.json", require("cjson").encode {
  experiment = "grow_wider", data = o.data, scale = o.full and "full" or "default", seed = o.seed,
  phases = S.phases, epochs = S.epochs, methods = summary })

ff.plot.from_rows(all, { x = "params", y = "test_acc", by = "method", path = o.out .. "/fig4a",
  title = "growing wider on " .. o.data .. ": test accuracy vs parameters", xlabel = "parameters",
  ylabel = "test accuracy", logx = true })
local paths = ff.plot.from_rows(all, { x = "phase", y = "grow_seconds_total", by = "method", path = o.out .. "/fig4b",
  title = "time spent growing (cumulative)", xlabel = "phase", ylabel = "seconds", logy = true })
print("plots: " .. o.out .. "/fig4a, " .. (paths.png or paths.dat))

print(string.format("\n%-12s %9s %9s %-16s %10s %10s", "method", "test acc", "params", "widths", "grow s", "total s"))
for _, s in ipairs(summary) do
  print(string.format("%-12s %9.4f %9d %-16s %10.2f %10.1f", s.method, s.test_acc, s.params, s.widths,
    s.grow_seconds, s.seconds))
end
