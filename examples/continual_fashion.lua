-- continual_fashion: task-incremental continual learning on Fashion-MNIST
-- by Firefly growth (with and without unlocked neurons), against CPG
-- (compacting, picking and growing), EWC, fine-tuning and one network per
-- task, in one harness, on an MLP or a small VGG.
--
--   firefly examples/continual_fashion.lua [--backbone mlp|vgg] [--bench split|pairs|permuted|cifar100]
--       [--tasks N] [--epochs N] [--train N] [--test N] [--hidden 64,64] [--cfg small] [--width X]
--       [--start X] [--seeds 1,2,3] [--methods firefly,firefly+unlock,cpg,ewc,finetune,separate] [--lambda X]
--       [--path DIR] [--out DIR] [--quiet] [--full]
--
-- --backbone mlp (the default): a 784-64-64 MLP, 3 epochs per task, all the
-- training data of split Fashion-MNIST (5 tasks x 2 classes; 10 % of each
-- task's training samples are its validation set).
-- --backbone vgg: nn.vgg's "small" cfg {32, 32, M, 64, 64, M} at width 0.5
-- (16-16-M-32-32-M channels, 3x3 convolutions, batch norm, ReLU, global
-- average pooling) with **1 epoch per task on 1000 training and 500 test
-- images per task** so that all six methods run in a few minutes on two
-- cores; it says so in its output. --cfg / --width pick any nn.vgg cfg.
-- --start X: Firefly starts from X times the baselines' widths (0.25 for
-- the MLP: 16-16; 0.5 for the VGG) and grows task 1 too (grow_first), as
-- the method does: it starts small and grows where the loss asks for it.
-- --start 1 gives it the baselines' network. Sizes are always relative
-- to one network of the baselines' widths.
-- --bench pairs: 10 two-class tasks, each a different pair of classes
-- (the longer stream); --bench cifar100 --path DIR: the paper's 20 tasks
-- (skipped with a message when the files are absent).
-- --seeds 1,2,3: the whole comparison once per seed, then mean and
-- standard deviation per method. --full: bigger MLP (256-256), 10 epochs.
-- The tables, accuracy matrices, continual.csv/.jsonl and the plots go to
-- --out (default out/continual, one subdirectory per seed with --seeds).
local ff = require "firefly"
local C = ff.continual

local STRINGS = { backbone = true, bench = true, path = true, out = true, hidden = true, methods = true, cfg = true,
  seeds = true }

local function parse(argv)
  local o = { backbone = "mlp", tasks = false, epochs = false, train = false, test = false, hidden = "64,64",
    cfg = "small", width = false, start = false, seeds = "1", bench = "split", path = false, out = "out/continual",
    methods = "firefly,firefly+unlock,cpg,ewc,finetune,separate", lambda = 1000, quiet = false, full = false }
  local given = {}
  local i = 1
  while i <= #argv do
    local key = argv[i]:match("^%-%-(.+)$")
    if not key or o[key] == nil then
      error("continual_fashion: unknown argument '" .. argv[i] .. "' (see the header of this file)", 0)
    end
    if key == "quiet" or key == "full" then
      o[key] = true
    else
      given[key] = true
      local v = argv[i + 1]
      if v == nil then error("continual_fashion: " .. argv[i] .. " needs a value", 0) end
      if not STRINGS[key] then
        v = tonumber(v) or error("continual_fashion: " .. argv[i] .. " needs a number, got " .. v, 0)
        if math.type(v) == "float" and v == math.floor(v) and key ~= "lambda" and key ~= "width" and key ~= "start" then
          v = math.tointeger(v)
        end
      end
      o[key] = v
      i = i + 1
    end
    i = i + 1
  end
  if o.backbone ~= "mlp" and o.backbone ~= "vgg" then
    error("continual_fashion: --backbone must be mlp or vgg, got " .. o.backbone, 0)
  end
  local vgg = o.backbone == "vgg"
  if not given.epochs then o.epochs = vgg and 1 or (o.full and 10 or 3) end
  if o.full and not given.hidden then o.hidden = "256,256" end
  if not given.start then o.start = vgg and 0.5 or 0.25 end
  if vgg then
    if not given.train then o.train = 1000 end
    if not given.test then o.test = 500 end
    if not given.width then o.width = 0.5 end
  end
  local hidden, methods, seeds = {}, {}, {}
  for w in o.hidden:gmatch("[^,]+") do hidden[#hidden + 1] = math.tointeger(tonumber(w)) end
  for m in o.methods:gmatch("[^,]+") do methods[#methods + 1] = m end
  for s in o.seeds:gmatch("[^,]+") do seeds[#seeds + 1] = math.tointeger(tonumber(s)) end
  o.hidden, o.methods, o.seeds = hidden, methods, seeds
  return o
end

local o = parse(arg or {})
local vgg = o.backbone == "vgg"
local t0 = ff.clock()

-- The backbone every method shares, and each method's own settings.
local function options(stream, seed)
  local common = { epochs = o.epochs, seed = seed }
  if vgg then
    common.cfg, common.width = o.cfg, o.width
  else
    common.hidden = o.hidden
  end
  local per = {
    -- Firefly grows while the task's validation loss is above 0.05, at most
    -- 32 neurons (MLP) or 16 channels (VGG) per task, 8 per round.
    firefly = vgg and { threshold = 0.05, budget = 16, grow_step = 8, candidates = 8, score_batches = 2 }
      or { threshold = 0.05, budget = 32, grow_step = 8, candidates = 16 },
    -- CPG grows (by a quarter of each layer) while the validation accuracy
    -- is below 97 %, then prunes up to half the task's free weights while
    -- the accuracy stays within 1 point.
    cpg = { target = 0.97, max_grow = 1, prune = 0.5, prune_steps = 3, prune_epochs = 1, tolerance = 0.01 },
    ewc = { lambda = o.lambda },
  }
  if o.start ~= 1 then
    if vgg then
      per.firefly.width = o.width * o.start
    else
      per.firefly.hidden = {}
      for i, w in ipairs(o.hidden) do per.firefly.hidden[i] = math.max(1, math.floor(w * o.start + 0.5)) end
    end
    per.firefly.grow_first = true
  end
  per["firefly+unlock"] = {}
  for k, v in pairs(per.firefly) do per["firefly+unlock"][k] = v end
  return common, per
end

local function one_seed(seed, out)
  ff.manual_seed(seed)
  local stream, why = C.bench.load(o.bench, { train_per_task = o.train or nil, test_per_task = o.test or nil,
    seed = seed, path = o.path or nil, tasks = o.tasks or nil })
  if not stream then return nil, why end
  local common, per = options(stream, seed)
  local arch = vgg and string.format("VGG cfg %s x %.2f (batch norm, average pooling)", o.cfg, o.width)
      or string.format("MLP %d-%s", stream.input_dim, table.concat(o.hidden, "-"))
  if o.start ~= 1 then
    arch = arch .. string.format("; Firefly starts from %.2f of its widths and grows task 1 too", o.start)
  end
  print(string.format("seed %d, %s: %d tasks, %s; %s, %d epoch%s per task%s", seed, stream.name, #stream.tasks,
    stream.note, arch, o.epochs, o.epochs == 1 and "" or "s",
    vgg and " (a reduced setting: data subsets, one epoch)" or " (a reduced setting: small MLP, few epochs)"))
  local results = C.compare { stream = stream, methods = o.methods, out = out, quiet = o.quiet,
    options = common, method_options = per }
  for _, r in ipairs(results) do
    print("\n" .. r.method .. ": accuracy after each task (rows) on each task (columns)")
    print(C.metrics.format(r.R))
    if r.method:match("^firefly") then
      for t, s in ipairs(r.summaries) do
        print(string.format("  task %d: neurons born %s%s%s, validation loss %.4f", t, table.concat(s.born, "+"),
          (s.unlocked or 0) > 0 and string.format(" (%d unlocked)", s.unlocked) or "",
          s.mask_usage and string.format(", old neurons used %.0f%%", 100 * s.mask_usage) or "", s.valid_loss))
      end
    elseif r.method == "cpg" then
      for t, s in ipairs(r.summaries) do
        print(string.format("  task %d: grown %d, pruned %.0f%%%s, validation accuracy %.4f", t, s.grown,
          100 * s.pruned, s.mask_usage and string.format(", old weights picked %.0f%%", 100 * s.mask_usage) or "",
          s.valid_accuracy))
      end
    end
  end
  print("\n" .. C.format_table(results))
  return results
end

local all = {}
for i, seed in ipairs(o.seeds) do
  local results, why = one_seed(seed, #o.seeds > 1 and (o.out .. "/seed" .. seed) or o.out)
  if not results then
    print("skipping " .. o.bench .. ": " .. why)
    return
  end
  all[i] = results
end

if #o.seeds > 1 then
  local function stats(xs)
    local m = 0
    for _, x in ipairs(xs) do m = m + x end
    m = m / #xs
    local v = 0
    for _, x in ipairs(xs) do v = v + (x - m) ^ 2 end
    return m, math.sqrt(v / math.max(#xs - 1, 1))
  end
  print(string.format("\nover %d seeds (%s): mean ± standard deviation", #o.seeds, table.concat(o.seeds, ",")))
  print(string.format("%-15s %17s %17s %19s %15s %9s", "method", "avg acc", "forgetting", "params", "rel size", "seconds"))
  for j, r in ipairs(all[1]) do
    local col = { acc = {}, fgt = {}, params = {}, rel = {}, sec = {} }
    for i = 1, #all do
      local x = all[i][j]
      col.acc[i], col.fgt[i], col.params[i], col.rel[i], col.sec[i] = x.average_accuracy, x.forgetting, x.params,
          x.relative_size, x.seconds
    end
    local a, sa = stats(col.acc)
    local f, sf = stats(col.fgt)
    local p, sp = stats(col.params)
    local rs, srs = stats(col.rel)
    local sec = stats(col.sec)
    print(string.format("%-15s %8.4f ± %.4f %8.4f ± %.4f %9.0f ± %7.0f %6.2f ± %.2f %9.1f", r.method, a, sa, f, sf, p,
      sp, rs, srs, sec))
  end
end
print(string.format("\nlogs and plots in %s (continual.csv, average_accuracy.png, size.png); %.1f s in all",
  o.out, ff.clock() - t0))
