-- grow_wider: the paper's growing-wider experiment (Fig. 4a and 4b). A
-- VGG-style network starts at a tiny width and grows wider over several
-- phases with each growth method in turn, under the same schedule, budget
-- (η_t = 0.35 of the current neurons), data, seeds and training; test
-- accuracy against parameters after every phase (4a), and the wall time
-- each method spends growing (4b); then, per seed, a fixed network of each
-- method's final widths trained from scratch for the same total epochs
-- (growth against training from scratch at every method's final size).
--
--   ./firefly examples/grow_wider.lua [--full] [--data fashion|cifar10 --path DIR]
--        [--methods firefly,random,...] [--seeds N | --seed N] [--no-scratch | --scratch-only] [--out DIR]
--
-- --seeds N runs seeds 1..N (default 3), --seeds 2,3 those seeds (seeds vary the networks'
-- initialisation, the batch order and the candidates, never the data
-- split); --seed N runs that one seed only. --no-scratch skips the
-- from-scratch runs; --scratch-only runs only them, for the given seeds,
-- from the final widths DIR/summary.json logged (so they can follow the
-- growth runs later), adding to DIR/scratch.jsonl.
-- Default scale (about 10 minutes per seed on 2 cores): Fashion-MNIST, conv 4, pool,
-- conv 8, pool, linear; 5 phases of one epoch (Adam); NASH with 4 children
-- trained one epoch on 10000 examples each. --full: VGG-19's layout at a
-- quarter of its width (16 channels in the first block), 10 phases of 10
-- epochs, NASH with 8 children of 2 epochs on the whole training set
-- (hours; meant for CIFAR-10: --data cifar10 --path DIR with the binary
-- version's data_batch_*.bin and test_batch.bin).
-- 5000 training examples are held out as validation data for every
-- method (NASH ranks its children on them); the test set is only tested.
-- Writes DIR/<method>_s<seed>/grow.* and timing.*, DIR/results.jsonl (every
-- phase of every method and seed), DIR/scratch.jsonl (the from-scratch
-- runs), DIR/summary.json (rewritten after every seed, so a run stopped
-- early leaves whole seeds to read), and the plots DIR/fig4a and DIR/fig4b
-- (.png, .svg; seed 1).
local ff = require "firefly"
local scratch_runs = dofile(((arg and arg[0] or ""):match("^(.*)[/\\]") or ".") .. "/scratch_runs.lua")

local ALL = { "firefly", "split_exact", "split_fast", "nash", "random", "net2net", "gradmax" }

local function parse(args)
  local o = { data = "fashion", out = "out/grow_wider", seeds = { 1, 2, 3 }, methods = ALL, scratch = true }
  local i = 1
  while args[i] do
    local a, v = args[i], args[i + 1]
    if a == "--full" then o.full = true; i = i - 1
    elseif a == "--data" then o.data = v
    elseif a == "--path" then o.path = v
    elseif a == "--out" then o.out = v
    elseif a == "--seed" or a == "--seeds" then
      -- --seeds N is seeds 1..N; --seeds 2,3 (a list) or --seed N exactly those
      o.seeds = {}
      for t in tostring(v):gmatch("[^,]+") do
        local n = math.tointeger(tonumber(t))
        if not n or n < 1 then error("grow_wider: " .. a .. " wants integers >= 1, got " .. tostring(v), 0) end
        o.seeds[#o.seeds + 1] = n
      end
      if #o.seeds == 0 then error("grow_wider: " .. a .. " wants integers >= 1, got " .. tostring(v), 0) end
      if a == "--seeds" and #o.seeds == 1 and not tostring(v):find(",") then
        local n = o.seeds[1]
        for k = 1, n do o.seeds[k] = k end
      end
    elseif a == "--no-scratch" then o.scratch = false; i = i - 1
    elseif a == "--scratch-only" then o.scratch_only = true; i = i - 1
    elseif a == "--methods" then
      o.methods = {}
      for m in v:gmatch("[^,]+") do o.methods[#o.methods + 1] = m end
    else error("grow_wider: unknown argument " .. a .. " (--full, --data, --path, --methods, --seeds, --seed, --no-scratch, --scratch-only, --out)", 0) end
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
  -- the same split for every seed (seed 1's, as the one-seed runs had):
  -- only the networks and their training vary between seeds
  local val, rest = train:split(5000 / train:size(), ff.Generator(1))
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

-- The layout at the given widths (one per conv, in order), or the tiny start.
local function build(widths)
  local cfg, k = {}, 0
  for j, v in ipairs(S.cfg) do
    if v ~= "M" and widths then k = k + 1; v = widths[k] end
    cfg[j] = v
  end
  return ff.nn.vgg { cfg = cfg, in_channels = shape[2], classes = 10, input_size = shape[3] }
end

local function loader_of(seed)
  return ff.data.DataLoader(train, { batch_size = 128, shuffle = true, generator = ff.Generator(seed) })
end

local function run(method, seed)
  ff.manual_seed(seed)
  local net = build()
  local opt = ff.optim.Adam(net:named_parameters(), { lr = 2e-3 })
  local t0 = ff.clock()
  local rows = ff.grow.run { net = net, data = loader_of(seed), test = test, val = val, optim = opt, phases = S.phases,
    epochs = S.epochs, neighbourhood = neighbourhood(method, seed), eta = { ratio = 0.35 }, score_batches = 8,
    log = string.format("%s/%s_s%d", o.out, method, seed), plot = false, quiet = true }
  local secs, grow_s = ff.clock() - t0, 0
  for _, r in ipairs(rows) do
    grow_s = grow_s + (r.grow_seconds or 0)
    r.grow_seconds_total, r.seed, r.run_seconds = grow_s, seed, secs
  end
  return rows, secs, grow_s
end

-- A fixed network of the given widths trained from a fresh initialisation
-- for the growth runs' total epochs, with their optimiser and batches.
local function scratch(widths_s, seed)
  ff.manual_seed(seed + 500)
  local net = build(scratch_runs.widths_of(widths_s))
  local opt = ff.optim.Adam(net:named_parameters(), { lr = 2e-3 })
  local t0 = ff.clock()
  local fit = ff.train.fit { model = net, data = loader_of(seed), optim = opt, epochs = S.phases * S.epochs,
    test = test, quiet = true }
  return { seed = seed, widths = widths_s, params = net:num_params(), epochs = S.phases * S.epochs,
    test_acc = fit[#fit].test_acc, seconds = ff.clock() - t0 }
end

local all, summary, scratch_rows = {}, {}, {}
local t_start = ff.clock()

local function write_logs(seeds_done)
  local cjson = require "cjson"
  local function write_jsonl(name, rows)
    local lines = {}
    for i, r in ipairs(rows) do lines[i] = cjson.encode(r) end
    ff.io.write_atomic(o.out .. "/" .. name .. ".jsonl", table.concat(lines, "\n") .. (#lines > 0 and "\n" or ""))
  end
  write_jsonl("results", all)
  write_jsonl("scratch", scratch_rows)
  ff.io.write_atomic(o.out .. "/summary.json", cjson.encode {
    experiment = "grow_wider", data = o.data, scale = o.full and "full" or "default", seeds = seeds_done,
    phases = S.phases, epochs = S.epochs, cfg = S.cfg, train = train:size(), val = val:size(), test = test:size(),
    nash_children = S.children, eta = 0.35, lr = 2e-3, batch_size = 128, seconds = ff.clock() - t_start, runs = summary,
    scratch = scratch_rows, note = o.note })
end

-- one from-scratch run per distinct final widths of a seed (methods that
-- end at the same widths share it: same seed, same network, same result);
-- the logs rewritten after each, so a stopped run keeps what it did
local function scratch_seed(seed, finals, seeds_done)
  scratch_runs.run_seed(seed, finals, scratch_rows, S.phases * S.epochs, scratch, function(r)
    print(string.format("%-12s seed %d  acc %.4f  params %7d  widths %-12s %21s %7.1f s", "scratch", seed,
      r.test_acc, r.params, r.widths, "", r.seconds))
    io.stdout:flush()
    write_logs(seeds_done)
  end)
end

if o.scratch_only then
  local S0
  S0, all, scratch_rows = scratch_runs.read_logs(o.out, "grow_wider")
  summary, o.note = S0.runs, S0.note
  t_start = t_start - (S0.seconds or 0)
  for _, seed in ipairs(o.seeds) do
    local finals = scratch_runs.finals(summary, seed)
    if #finals == 0 then error("grow_wider: --scratch-only: no growth run of seed " .. seed .. " in " .. o.out, 0) end
    scratch_seed(seed, finals, S0.seeds)
  end
  print(string.format("%d from-scratch runs; logs in %s", #scratch_rows, o.out))
  os.exit(0)
end

local done = {}
for _, seed in ipairs(o.seeds) do
  local finals = {}
  for _, m in ipairs(o.methods) do
    local rows, secs, grow_s = run(m, seed)
    for _, r in ipairs(rows) do all[#all + 1] = r end
    local last = rows[#rows]
    finals[#finals + 1] = last.widths
    summary[#summary + 1] = { method = m, seed = seed, test_acc = last.test_acc, params = last.params,
      widths = last.widths, grow_seconds = grow_s, seconds = secs }
    print(string.format("%-12s seed %d  acc %.4f  params %7d  widths %-12s grow %7.2f s  total %7.1f s", m, seed,
      last.test_acc, last.params, last.widths, grow_s, secs))
    io.stdout:flush()
  end
  done[#done + 1] = seed
  write_logs(done)
  if o.scratch then scratch_seed(seed, finals, done) end
end

local first = {}
for _, r in ipairs(all) do if r.seed == o.seeds[1] then first[#first + 1] = r end end
ff.plot.from_rows(first, { x = "params", y = "test_acc", by = "method", path = o.out .. "/fig4a",
  title = "growing wider on " .. o.data .. ": test accuracy vs parameters", xlabel = "parameters",
  ylabel = "test accuracy", logx = true })
local paths = ff.plot.from_rows(first, { x = "phase", y = "grow_seconds_total", by = "method", path = o.out .. "/fig4b",
  title = "time spent growing (cumulative)", xlabel = "phase", ylabel = "seconds", logy = true })
print("plots: " .. o.out .. "/fig4a, " .. (paths.png or paths.dat))
print(string.format("%d runs in %.0f s; logs in %s", #summary + #scratch_rows, ff.clock() - t_start, o.out))
