-- continual_fashion: task-incremental continual learning on split
-- Fashion-MNIST (5 tasks x 2 classes) by Firefly growth, against
-- fine-tuning, one network per task and EWC, in one harness.
--
--   firefly examples/continual_fashion.lua [--tasks N] [--epochs N]
--       [--train N] [--test N] [--hidden 32,32] [--seed N]
--       [--bench split|permuted|cifar100] [--path DIR] [--out DIR]
--       [--methods firefly,finetune,separate,ewc] [--lambda X] [--quiet] [--full]
--
-- To stay within a few minutes on two cores it uses a small MLP (784-64-64)
-- and 3 epochs per task, on all the data by default (10 % of each task's
-- training samples are its validation set); --train N / --test N take
-- random subsets per task. It says so in its output. The table, the accuracy matrices, continual.csv/.jsonl and
-- the plots go to --out (default out/continual). --full: the paper's
-- setting as far as an MLP goes: 784-256-256 and 10 epochs per task (its
-- CIFAR-100 stream is --bench cifar100 --path DIR; explicit options win).
local ff = require "firefly"
local C = ff.continual

local function parse(argv)
  local o = { tasks = nil, epochs = 3, train = 0, test = 0, hidden = "64,64", seed = 1,
    bench = "split", path = nil, out = "out/continual", methods = "firefly,finetune,separate,ewc",
    lambda = 1000, quiet = false, full = false }
  local given = {}
  local i = 1
  while i <= #argv do
    local key = argv[i]:match("^%-%-(.+)$")
    if not key or o[key] == nil and key ~= "tasks" and key ~= "path" then
      error("continual_fashion: unknown argument '" .. argv[i] .. "' (see the header of this file)", 0)
    end
    if key == "quiet" or key == "full" then
      o[key] = true
    else
      given[key] = true
      local v = argv[i + 1]
      if v == nil then error("continual_fashion: " .. argv[i] .. " needs a value", 0) end
      if key ~= "bench" and key ~= "path" and key ~= "out" and key ~= "hidden" and key ~= "methods" then
        v = tonumber(v) or error("continual_fashion: " .. argv[i] .. " needs a number, got " .. v, 0)
        if math.type(v) == "float" and v == math.floor(v) and key ~= "lambda" then v = math.tointeger(v) end
      end
      o[key] = v
      i = i + 1
    end
    i = i + 1
  end
  if o.full then
    if not given.epochs then o.epochs = 10 end
    if not given.hidden then o.hidden = "256,256" end
  end
  local hidden, methods = {}, {}
  for w in o.hidden:gmatch("[^,]+") do hidden[#hidden + 1] = math.tointeger(tonumber(w)) end
  for m in o.methods:gmatch("[^,]+") do methods[#methods + 1] = m end
  o.hidden, o.methods = hidden, methods
  return o
end

local o = parse(arg or {})
ff.manual_seed(o.seed)
local t0 = ff.clock()
local bench_opts = { train_per_task = o.train > 0 and o.train or nil, test_per_task = o.test > 0 and o.test or nil, seed = o.seed, path = o.path,
  tasks = o.tasks }
local stream, why = C.bench.load(o.bench, bench_opts)
if not stream then
  print("skipping " .. o.bench .. ": " .. why)
  return
end
print(string.format("%s: %d tasks, %s; MLP %d-%s, %d epochs per task (a reduced setting: small MLP, few epochs)",
  stream.name, #stream.tasks, stream.note, stream.input_dim, table.concat(o.hidden, "-"), o.epochs))

local results = C.compare {
  stream = stream, methods = o.methods, out = o.out, quiet = o.quiet,
  options = { hidden = o.hidden, epochs = o.epochs, seed = o.seed },
  method_options = {
    -- Firefly grows at most 32 neurons per task, 8 per round, while the
    -- task's validation loss is above 0.05.
    firefly = { threshold = 0.05, budget = 32, grow_step = 8, candidates = 16 },
    ewc = { lambda = o.lambda },
  },
}

for _, r in ipairs(results) do
  print("\n" .. r.method .. ": accuracy after each task (rows) on each task (columns)")
  print(C.metrics.format(r.R))
  if r.method == "firefly" then
    for t, s in ipairs(r.summaries) do
      print(string.format("  task %d: neurons born %s%s, validation loss %.4f", t, table.concat(s.born, "+"),
        s.mask_usage and string.format(", old neurons used %.0f%%", 100 * s.mask_usage) or "", s.valid_loss))
    end
  end
end
print("\n" .. C.format_table(results))
print(string.format("\nlogs and plots in %s (continual.csv, average_accuracy.png, size.png); %.1f s in all",
  o.out, ff.clock() - t0))
