-- grow_fig4: the paper's Fig. 4 networks grown wider from a thin start:
-- VGG-19's layout or MobileNetV1's (depthwise-separable blocks), with
-- every growth method of the harness at the same schedule, budget (η =
-- 0.35 of the current neurons per phase), data, training and seeds; then,
-- per seed, a fixed network of each method's final widths trained from
-- scratch for the same total epochs, with the same optimiser, batches and
-- data (accuracy, parameters, wall time).
--
--   ./firefly examples/grow_fig4.lua --net vgg19|mobilenet [--full] [--seeds N]
--        [--data fashion|cifar10 --path DIR] [--methods firefly,random,...] [--out DIR] [--probe N]
--        [--no-scratch | --scratch-only] [--tiny]
--
--   mpirun -np 2 ./firefly examples/grow_fig4.lua --net vgg19 [...]
--
-- Under mpirun every run is data-parallel (spec/dist.md): each rank reads
-- its rows of every global batch, the ranks sum their gradients and score
-- sums, and all take the same decisions; rank 0 prints and writes the
-- logs. Both networks have batch norm, which then normalises with the
-- global batch's statistics (sync), so 2 ranks train and score like one
-- process within float rounding. VGG-19 then takes the same decisions;
-- MobileNetV1 amplifies rounding (a ReLU input on its kink, batch norm
-- scales whose gradient is rounding-sized before Adam's first step), so
-- its 2-rank run differs from one process about as much as a 1-ulp change
-- of the input does (spec/dist.md, "MobileNetV1: rounding decides"). Not bit for bit: the deterministic mode
-- of spec/dist.md leaves batch norm's running statistics out, and these
-- networks score and test with them. --tiny: a seconds-long setting for
-- the tests (256 training examples, 128 validation, 256 test, 2 phases).
--
-- --no-scratch skips the from-scratch runs. --scratch-only runs only them,
-- for seeds 1..N, at the final widths DIR/summary.json logged (DIR: --out,
-- else out/grow_fig4/NET when it holds a summary, else the committed logs
-- in examples/results/fig4_NET), adding to DIR/scratch.jsonl and keeping
-- the runs it already holds. Methods of one seed that end at the same
-- widths share one from-scratch run.
--
-- Data: Fashion-MNIST padded to 32x32 (the paper's CIFAR-10 input size);
-- --data cifar10 --path DIR uses CIFAR-10's binary files when they are
-- there (else it says so and stops).
-- Default scale (minutes per method and seed on 2 cores; not the paper's):
-- the networks at 1/32 of their width (VGG-19: 2 channels in the first
-- block, 16 in the last; MobileNetV1: 1/16, stem 2, last block 64),
-- 4000 training examples, 1000 validation, 2000 test, 3 phases of 1 epoch
-- (batches of 64; Adam, lr 2e-3 for VGG, 1e-2 for the thin MobileNet, which
-- barely moves in so few steps otherwise), NASH with 2 children of 1
-- epoch, 3 seeds. --full: 1/8 of the width,
-- the whole training set (55000 after 5000 for validation), the test set,
-- 6 phases of 5 epochs (batches of 128), NASH with 4 children of 1 epoch
-- (VGG-19: about 13 hours, MobileNetV1: 13, of training alone for 7 methods x 3 seeds on
-- this machine, extrapolated from --probe's measured rate, not measured;
-- it does not finish here).
-- --probe N: no growth; trains the scale's start network on N batches and
-- writes DIR/probe_<scale>.json, the measured seconds per batch and the
-- hours the whole run's training would take at that rate (an
-- extrapolation, and a lower bound: growth, NASH's children, testing and
-- the wider networks of later phases come on top).
-- Every point of the accuracy-vs-parameters curves is after the same
-- training since its growth (one phase's epochs).
-- Writes DIR/<method>_s<seed>/grow.* (per-phase rows), DIR/results.jsonl
-- (every phase of every method and seed, with growth and wall seconds),
-- DIR/scratch.jsonl, DIR/summary.json; examples/results.lua turns them
-- into RESULTS.md's table and verdicts.
local ff = require "firefly"
local scratch_runs = dofile(((arg and arg[0] or ""):match("^(.*)[/\\]") or ".") .. "/scratch_runs.lua")

local ALL = { "firefly", "random", "nash", "split_exact", "split_fast", "net2net", "gradmax" }

local function parse(args)
  local o = { data = "fashion", seeds = 3, methods = ALL, scratch = true }
  local i = 1
  while args[i] do
    local a, v = args[i], args[i + 1]
    if a == "--full" then o.full = true; i = i - 1
    elseif a == "--net" then o.net = v
    elseif a == "--data" then o.data = v
    elseif a == "--path" then o.path = v
    elseif a == "--out" then o.out = v
    elseif a == "--seeds" then o.seeds = math.tointeger(tonumber(v))
    elseif a == "--probe" then
      o.probe = math.tointeger(tonumber(v))
      if not o.probe or o.probe < 1 then error("grow_fig4: --probe must be a number of batches >= 1, got " .. tostring(v), 0) end
    elseif a == "--tiny" then o.tiny = true; i = i - 1
    elseif a == "--no-scratch" then o.scratch = false; i = i - 1
    elseif a == "--scratch-only" then o.scratch_only = true; i = i - 1
    elseif a == "--methods" then
      o.methods = {}
      for m in v:gmatch("[^,]+") do o.methods[#o.methods + 1] = m end
    else error("grow_fig4: unknown argument " .. a .. " (--net, --full, --tiny, --seeds, --data, --path, --methods, --out, --probe, --no-scratch, --scratch-only)", 0) end
    i = i + 2
  end
  if o.net ~= "vgg19" and o.net ~= "mobilenet" then error("grow_fig4: --net must be vgg19 or mobilenet", 0) end
  if o.data ~= "fashion" and o.data ~= "cifar10" then error("grow_fig4: --data must be fashion or cifar10", 0) end
  if not o.seeds or o.seeds < 1 then error("grow_fig4: --seeds must be an integer >= 1", 0) end
  if o.full and o.tiny then error("grow_fig4: --full and --tiny exclude each other", 0) end
  if o.scratch_only and not o.scratch then error("grow_fig4: --scratch-only and --no-scratch exclude each other", 0) end
  local name = o.net .. (o.data == "cifar10" and "_cifar10" or "")
  if not o.out and o.scratch_only then
    -- the growth logs to follow: a fresh run's, else the committed ones
    local f = io.open("out/grow_fig4/" .. name .. "/summary.json", "rb")
    if f then f:close() else o.out = "examples/results/fig4_" .. name end
  end
  o.out = o.out or ("out/grow_fig4/" .. name)
  return o
end

local o = parse(arg or {})
-- (under mpirun: rank 0 prints and writes; a plain process is rank 0)
local main = ff.dist.is_main()
local function say(fmt, ...)
  if main then print(string.format(fmt, ...)); io.stdout:flush() end
end
local S = o.tiny
  and { width = { vgg19 = 1 / 32, mobilenet = 1 / 16 }, train = 256, val = 128, test = 256, phases = 2, epochs = 1,
        children = 2, child_epochs = 1, lr = { vgg19 = 2e-3, mobilenet = 1e-2 }, batch = 64 }
  or o.full
  and { width = { vgg19 = 1 / 8, mobilenet = 1 / 8 }, train = nil, val = 5000, test = nil, phases = 6, epochs = 5,
        children = 4, child_epochs = 1, lr = { vgg19 = 2e-3, mobilenet = 5e-3 }, batch = 128 }
  or { width = { vgg19 = 1 / 32, mobilenet = 1 / 16 }, train = 4000, val = 1000, test = 2000, phases = 3, epochs = 1,
       children = 2, child_epochs = 1, lr = { vgg19 = 2e-3, mobilenet = 1e-2 }, batch = 64 }

---------------------------------------------------------------- data

-- x (N, C, 28, 28) into the middle of (N, C, 32, 32) zeros.
local function pad32(ds)
  local x = ds.x
  if x:size(3) == 32 then return ds end
  local n, c = x:size(1), x:size(2)
  local out = ff.zeros(n, c, 32, 32)
  out:narrow(3, 3, 28):narrow(4, 3, 28):copy_(x)
  return ff.data.Dataset(out, ds.y)
end

local function first(ds, n, seed)
  if not n or n >= ds:size() then return ds end
  return ds:subset(ff.data.randperm(ds:size(), ff.Generator(seed)):narrow(1, 1, n))
end

local function load_data()
  local train, test
  if o.data == "fashion" then
    train, test = ff.data.fashion_mnist { split = "train" }, ff.data.fashion_mnist { split = "test" }
  else
    local ok, err = pcall(function()
      train = ff.data.cifar10 { path = o.path or "data/cifar10", split = "train" }
      test = ff.data.cifar10 { path = o.path or "data/cifar10", split = "test" }
    end)
    if not ok then
      say("grow_fig4: CIFAR-10 skipped: its files are not there (%s)", tostring(err))
      os.exit(0)
    end
  end
  -- the same subsets for every method and seed (seed 1000): only the
  -- networks' seeds vary
  train, test = pad32(train), pad32(test)
  local val, rest = train:split(S.val / train:size(), ff.Generator(1000))
  return first(rest, S.train, 1001), val, first(test, S.test, 1002)
end

local train, val, test = load_data()
local shape = train.x:size()
if main then ff.io.mkdir(o.out) end
local scale = o.full and "full" or o.tiny and "tiny" or "default"

---------------------------------------------------------------- networks

-- The thin start; or, with widths (the units' widths in order), the same
-- layout at those widths (the from-scratch baseline).
local function build(widths)
  local w = S.width[o.net]
  if o.net == "vgg19" then
    local cfg = {}
    for i, v in ipairs(ff.nn.vgg.presets.vgg19) do cfg[i] = v end
    local k = 0
    for i, v in ipairs(cfg) do
      if v ~= "M" then
        k = k + 1
        cfg[i] = widths and widths[k] or math.max(1, math.floor(v * w + 0.5))
      end
    end
    return ff.nn.vgg { cfg = cfg, in_channels = shape[2], classes = 10 }
  end
  return ff.nn.mobilenet_v1 { width = not widths and w or nil, channels = widths, in_channels = shape[2],
    classes = 10, stem_stride = 1 }
end

-- Under mpirun, batch norm on the global batch's statistics (a no-op in
-- one process): each rank's own half-batch statistics would train a
-- different network from one process's, and average its running
-- statistics into ones no process computed.
local function built(widths)
  local net = build(widths)
  if ff.dist.size() > 1 then
    net:apply(function(m)
      if tostring(getmetatable(m).__name):match("^BatchNorm") then m.sync = true end
    end)
  end
  return net
end

---------------------------------------------------------------- runs

local function neighbourhood(method, seed)
  local nb = ff.grow.neighbourhood { method = method, new = 8, lr = 1e-2, generator = ff.Generator(seed + 1),
    quiet = true, zero = method == "gradmax" and "outgoing" or nil }
  if method == "nash" then
    nb.children, nb.child_epochs = S.children, S.child_epochs
    nb.train = first(train, 2000, seed + 2)
  end
  return nb
end

local function loader_of(seed)
  return ff.data.DataLoader(train, { batch_size = S.batch, shuffle = true, generator = ff.Generator(seed) })
end

local function grow(method, seed)
  ff.manual_seed(seed)
  local net = built()
  local opt = ff.optim.Adam(net:named_parameters(), { lr = S.lr[o.net] })
  local t0 = ff.clock()
  local rows = ff.grow.run { net = net, data = loader_of(seed), test = test, val = val, optim = opt,
    phases = S.phases, epochs = S.epochs, neighbourhood = neighbourhood(method, seed), eta = { ratio = 0.35 },
    score_batches = 8, log = string.format("%s/%s_s%d", o.out, method, seed), plot = false, quiet = true }
  local total, grow_s = ff.clock() - t0, 0
  for _, r in ipairs(rows) do
    grow_s = grow_s + (r.grow_seconds or 0)
    r.seed, r.net, r.grow_seconds_total = seed, o.net, grow_s
  end
  return rows, total, grow_s
end

-- A fixed network of the given widths ("9-8-11") trained from scratch for
-- the growth runs' total epochs.
local function scratch(widths_s, seed)
  local epochs = S.phases * S.epochs
  ff.manual_seed(seed + 500)
  local net = built(scratch_runs.widths_of(widths_s))
  local opt = ff.optim.Adam(net:named_parameters(), { lr = S.lr[o.net] })
  local t0 = ff.clock()
  local fit = ff.train.fit { model = net, data = loader_of(seed), optim = opt, epochs = epochs, test = test,
    quiet = true }
  return { seed = seed, net = o.net, widths = widths_s, params = net:num_params(), epochs = epochs,
    test_acc = fit[#fit].test_acc, seconds = ff.clock() - t0 }
end

if o.probe then
  ff.manual_seed(1)
  local net = built()
  local opt = ff.optim.Adam(net:named_parameters(), { lr = S.lr[o.net] })
  local sub = first(train, o.probe * S.batch, 1)
  local t0 = ff.clock()
  ff.train.fit { model = net, data = ff.data.DataLoader(sub, { batch_size = S.batch, shuffle = true,
    generator = ff.Generator(1) }), optim = opt, epochs = 1, quiet = true }
  local secs = ff.clock() - t0
  local per_batch = secs / o.probe
  local per_epoch = math.ceil(train:size() / S.batch)
  local epochs = S.phases * S.epochs
  local p = { net = o.net, scale = scale, batches = o.probe, batch_size = S.batch,
    seconds = secs, seconds_per_batch = per_batch, batches_per_epoch = per_epoch, params = net:num_params(),
    hours_per_epoch = per_batch * per_epoch / 3600, epochs = epochs, methods = #o.methods, seeds = o.seeds,
    hours_extrapolated = per_batch * per_epoch * epochs * #o.methods * o.seeds / 3600,
    runs = string.format("%s's layout at 1/%d of its width, %d training examples, %d validation, %d test, %d phases "
      .. "of %d epochs (batches of %d), NASH with %d children, %d methods x %d seeds", o.net == "vgg19" and "VGG-19"
      or "MobileNetV1", math.floor(1 / S.width[o.net] + 0.5), train:size(), val:size(), test:size(), S.phases,
      S.epochs, S.batch, S.children, #o.methods, o.seeds) }
  if main then ff.io.write_atomic(string.format("%s/probe_%s.json", o.out, p.scale), require("cjson").encode(p)) end
  say(("%s %s: %d batches of %d in %.1f s (%.3f s per batch); %.2f h per epoch; the whole run's "
    .. "training extrapolated: %.1f h (a lower bound)"), o.net, p.scale, o.probe, S.batch, secs, per_batch,
    p.hours_per_epoch, p.hours_extrapolated)
  os.exit(0)
end

local all, summary, scratch_rows = {}, {}, {}
local t_start = ff.clock()
local logged -- --scratch-only: the growth runs' summary.json, decoded

-- The logs so far, rewritten after every seed (a run stopped early still
-- leaves whole seeds to read).
local function write_logs(seeds_done)
  if not main then return end
  local function write_jsonl(name, rows)
    local lines = {}
    for i, r in ipairs(rows) do lines[i] = require("cjson").encode(r) end
    ff.io.write_atomic(o.out .. "/" .. name .. ".jsonl", table.concat(lines, "\n") .. (#lines > 0 and "\n" or ""))
  end
  write_jsonl("scratch", scratch_rows)
  if logged then
    -- following logged growth runs: their results.jsonl and summary stay
    -- as they were but for the from-scratch rows and the total time
    logged.scratch, logged.seconds = scratch_rows, ff.clock() - t_start
    ff.io.write_atomic(o.out .. "/summary.json", require("cjson").encode(logged))
    return
  end
  write_jsonl("results", all)
  ff.io.write_atomic(o.out .. "/summary.json", require("cjson").encode {
    experiment = "grow_fig4", net = o.net, data = o.data, scale = scale, ranks = ff.dist.size(),
    seeds = seeds_done, phases = S.phases, epochs = S.epochs, width = S.width[o.net], lr = S.lr[o.net],
    batch_size = S.batch, train = train:size(), val = val:size(), test = test:size(), nash_children = S.children,
    eta = 0.35, seconds = ff.clock() - t_start, runs = summary, scratch = scratch_rows })
end

local function scratch_seed(seed, finals, seeds_done)
  scratch_runs.run_seed(seed, finals, scratch_rows, S.phases * S.epochs, scratch, function(r)
    say("%-9s %-12s seed %d  acc %.4f  params %8d  widths %s  total %7.1f s", o.net, "scratch", seed,
      r.test_acc, r.params, r.widths, r.seconds)
    write_logs(seeds_done)
  end)
end

if o.scratch_only then
  local S0
  S0, all, scratch_rows = scratch_runs.read_logs(o.out, "grow_fig4")
  logged = S0
  if S0.net ~= o.net or S0.data ~= o.data or S0.scale ~= scale then
    error(string.format("grow_fig4: --scratch-only: %s/summary.json logged %s on %s at %s scale, not %s on %s at %s",
      o.out, tostring(S0.net), tostring(S0.data), tostring(S0.scale), o.net, o.data, scale), 0)
  end
  summary = S0.runs
  t_start = t_start - (S0.seconds or 0)
  local n0 = #scratch_rows
  for seed = 1, o.seeds do
    local finals = scratch_runs.finals(summary, seed)
    if #finals == 0 then error("grow_fig4: --scratch-only: no growth run of seed " .. seed .. " in " .. o.out, 0) end
    scratch_seed(seed, finals, S0.seeds)
  end
  say("%s: %d from-scratch runs (%d new); logs in %s", o.net, #scratch_rows, #scratch_rows - n0, o.out)
  os.exit(0)
end

for seed = 1, o.seeds do
  for _, m in ipairs(o.methods) do
    local rows, secs, grow_s = grow(m, seed)
    for _, r in ipairs(rows) do r.run_seconds = secs; all[#all + 1] = r end
    local last = rows[#rows]
    summary[#summary + 1] = { method = m, seed = seed, test_acc = last.test_acc, params = last.params,
      widths = last.widths, grow_seconds = grow_s, seconds = secs }
    say("%-9s %-12s seed %d  acc %.4f  params %8d  grow %7.1f s  total %7.1f s", o.net, m, seed,
      last.test_acc, last.params, grow_s, secs)
  end
  write_logs(seed)
  if o.scratch then scratch_seed(seed, scratch_runs.finals(summary, seed), seed) end
end
say("%s: %d runs in %.0f s; logs in %s", o.net, #summary + #scratch_rows, ff.clock() - t_start, o.out)
