-- toy_teacher: the paper's toy experiment (Fig. 3a and 3b). A student
-- with one hidden layer of RBF neurons, y = W2 rbf(W1 x + b1) + b2, grows
-- one neuron per phase on regression data from a random teacher network of
-- the same form; its training loss is plotted against its number of
-- neurons for
--   3a: Firefly (splits and new neurons), Firefly with splits only, with
--       new neurons only, random growth and exact splitting (splitting
--       steepest descent);
--   3b: Firefly with m' = 1, 5, 20, 50 new-neuron candidates;
-- over several seeds (mean and spread across seeds).
--
--   ./firefly examples/toy_teacher.lua [--full] [--seeds N] [--out DIR]
--
-- Default scale (minutes on 2 cores): teacher 20-60-1, 2000 examples,
-- student grown from 1 to 21 neurons, 5 seeds. --full: teacher 50-100-1,
-- 5000 examples, 1 to 31 neurons, 5 seeds.
-- Writes DIR/toy.jsonl and toy.csv (one row per method, seed and size),
-- DIR/summary.json (mean and spread per method and size), and the plots
-- DIR/fig3a.{png,svg} and DIR/fig3b.{png,svg}.
local ff = require "firefly"

local function parse(args)
  local o = { full = false, out = "out/toy_teacher" }
  local i = 1
  while args[i] do
    local a = args[i]
    if a == "--full" then o.full = true
    elseif a == "--seeds" then o.seeds = tonumber(args[i + 1]); i = i + 1
    elseif a == "--out" then o.out = args[i + 1]; i = i + 1
    else error("toy_teacher: unknown argument " .. a .. " (--full, --seeds N, --out DIR)", 0) end
    i = i + 1
  end
  return o
end

local o = parse(arg or {})
local S = o.full and { d = 50, width = 100, n = 5000, phases = 31, seeds = 5, epochs = 40 }
  or { d = 20, width = 60, n = 2000, phases = 21, seeds = 5, epochs = 30 }
S.seeds = o.seeds or S.seeds

-- Each curve: a label and a neighbourhood (Firefly's preset fields plus
-- the method). All grow one neuron per phase.
local curves = {
  { fig = "3a", label = "firefly", nb = { new = 20 } },
  { fig = "3a", label = "firefly split only", nb = { new = 0 } },
  { fig = "3a", label = "firefly new only", nb = { new = 20, split = false } },
  { fig = "3a", label = "random", nb = { method = "random", new = 1, step = 1e-2 } },
  { fig = "3a", label = "exact splitting", nb = { method = "split_exact", step = 1e-2 } },
  { fig = "3b", label = "m'=1", nb = { new = 1, split = false } },
  { fig = "3b", label = "m'=5", nb = { new = 5, split = false } },
  { fig = "3b", label = "m'=20", nb = { new = 20, split = false } },
  { fig = "3b", label = "m'=50", nb = { new = 50, split = false } },
}

local teacher = ff.data.teacher { n = S.n, d_in = S.d, width = S.width, act = "rbf", seed = 100 }

-- One growth run: the student's training loss (evaluated after each
-- phase's training) at each size.
local function run(curve, seed)
  ff.manual_seed(seed)
  local net = ff.nn.mlp { S.d, 1, 1, act = "rbf" }
  local opt = ff.optim.Adam(net:named_parameters(), { lr = 1e-2 })
  local loader = ff.data.DataLoader(teacher, { batch_size = 100, shuffle = true, generator = ff.Generator(seed) })
  local nb = ff.grow.neighbourhood(curve.nb)
  nb.lr, nb.steps, nb.eps = 1e-2, 3, 1e-2
  nb.generator, nb.quiet = ff.Generator(seed + 1000), true
  local out = {}
  ff.grow.run { net = net, data = loader, optim = opt, phases = S.phases, epochs = S.epochs, neighbourhood = nb,
    eta = 1, score_batches = 4, loss = "mse", quiet = true, plot = false,
    on_phase = function(t, row)
      local e = ff.train.evaluate(net, teacher, { loss = "mse" })
      out[#out + 1] = { method = curve.label, fig = curve.fig, seed = seed, neurons = row.neurons,
        train_loss = e.loss, grow_seconds = row.grow_seconds or 0 }
    end }
  return out
end

local rows = {}
local total = #curves * S.seeds
local bar = ff.logging.progress { total = total, label = "toy runs", unit = "run" }
local done, t0 = 0, ff.clock()
for _, c in ipairs(curves) do
  for seed = 1, S.seeds do
    for _, r in ipairs(run(c, seed)) do rows[#rows + 1] = r end
    done = done + 1
    bar:update(done)
  end
end
bar:finish()

-- mean and spread (min, max over seeds) per method and size
local summary, order = {}, {}
for _, r in ipairs(rows) do
  local key = r.method .. "\0" .. r.neurons
  local s = summary[key]
  if not s then
    s = { method = r.method, fig = r.fig, neurons = r.neurons, losses = {} }
    summary[key] = s
    order[#order + 1] = s
  end
  s.losses[#s.losses + 1] = r.train_loss
end
local flat = {}
for _, s in ipairs(order) do
  local sum, lo, hi = 0, math.huge, -math.huge
  for _, l in ipairs(s.losses) do sum, lo, hi = sum + l, math.min(lo, l), math.max(hi, l) end
  local mean = sum / #s.losses
  local var = 0
  for _, l in ipairs(s.losses) do var = var + (l - mean) ^ 2 end
  flat[#flat + 1] = { method = s.method, fig = s.fig, neurons = s.neurons, mean = mean, min = lo, max = hi,
    sd = math.sqrt(var / math.max(#s.losses - 1, 1)), seeds = #s.losses }
end

ff.io.mkdir(o.out)
local log = ff.logging.Logger { dir = o.out, name = "toy" }
for _, r in ipairs(rows) do log:write(r) end
log:close()
local cjson = require "cjson"
ff.io.write_atomic(o.out .. "/summary.json", cjson.encode {
  experiment = "toy_teacher", scale = o.full and "full" or "default", settings = S,
  seconds = ff.clock() - t0, rows = flat })

for _, fig in ipairs { "3a", "3b" } do
  local pts = {}
  for _, f in ipairs(flat) do if f.fig == fig then pts[#pts + 1] = f end end
  local paths = ff.plot.from_rows(pts, { x = "neurons", y = "mean", by = "method", path = o.out .. "/fig" .. fig,
    title = fig == "3a" and "toy teacher: training loss vs neurons (mean over seeds)"
      or "toy teacher: new-neuron candidates m'", xlabel = "hidden neurons", ylabel = "training loss (MSE)",
    logy = true })
  print("plot: " .. (paths.png or paths.dat))
end

-- the table: mean (sd) at a few sizes
local sizes = {}
for _, n in ipairs { 3, 5, 9, S.phases } do sizes[#sizes + 1] = n end
local head = string.format("%-20s", "method")
for _, n in ipairs(sizes) do head = head .. string.format(" %20s", n .. " neurons") end
print(head)
local seen = {}
for _, f in ipairs(flat) do
  if not seen[f.method] then
    seen[f.method] = true
    local line = string.format("%-20s", f.method)
    for _, n in ipairs(sizes) do
      local cell = "-"
      for _, g in ipairs(flat) do
        if g.method == f.method and g.neurons == n then cell = string.format("%.4f (%.4f)", g.mean, g.sd) end
      end
      line = line .. string.format(" %20s", cell)
    end
    print(line)
  end
end
print(string.format("%d runs in %.0f s; logs in %s", total, ff.clock() - t0, o.out))
