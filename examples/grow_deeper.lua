-- grow_deeper: growing wider only against growing wider and deeper (new
-- I + h layers) by Firefly descent at equal parameter budgets: every phase
-- of both runs may add the same number of parameters, so the comparison is
-- at equal size. Test accuracy against parameters per variant and seed.
--
--   ./firefly examples/grow_deeper.lua [--full] [--seeds N] [--out DIR]
--
-- Default scale (about a minute on 2 cores): Fashion-MNIST, MLP 784-16-16-10,
-- 10 phases of two epochs (SGD), 3000 parameters per phase, 3 seeds.
-- --full: 16 phases of 5 epochs, 6000 parameters per phase, 3 seeds.
-- Writes DIR/<variant>_<seed>/grow.*, DIR/results.jsonl and .csv,
-- DIR/summary.json and the plot DIR/deeper.{png,svg}.
local ff = require "firefly"

local o = { out = "out/grow_deeper" }
do
  local args, i = arg or {}, 1
  while args[i] do
    local a = args[i]
    if a == "--full" then o.full = true
    elseif a == "--seeds" then o.seeds = tonumber(args[i + 1]); i = i + 1
    elseif a == "--out" then o.out = args[i + 1]; i = i + 1
    else error("grow_deeper: unknown argument " .. a .. " (--full, --seeds N, --out DIR)", 0) end
    i = i + 1
  end
end
local S = o.full and { phases = 16, epochs = 5, params = 6000, seeds = 3 }
  or { phases = 10, epochs = 2, params = 3000, seeds = 3 }
S.seeds = o.seeds or S.seeds

local variants = {
  { name = "wider", nb = { new = 32 } },
  { name = "wider+deeper", nb = { new = 32, layers = { candidates = 16, max_new_layers = 1 } } },
}

local train = ff.data.fashion_mnist { split = "train" }
local test = ff.data.fashion_mnist { split = "test" }
for _, ds in ipairs { train, test } do ds.x = ds.x:view(ds:size(), 784) end

local function run(v, seed)
  ff.manual_seed(seed)
  local net = ff.nn.mlp { 784, 16, 16, 10 }
  local opt = ff.optim.SGD(net:named_parameters(), { lr = 0.05, momentum = 0.9 })
  local loader = ff.data.DataLoader(train, { batch_size = 128, shuffle = true, generator = ff.Generator(seed) })
  local nb = ff.grow.neighbourhood(v.nb)
  nb.lr, nb.generator, nb.quiet = 1e-2, ff.Generator(seed + 1), true
  local rows = ff.grow.run { net = net, data = loader, test = test, optim = opt, phases = S.phases, epochs = S.epochs,
    neighbourhood = nb, eta = { params = S.params }, score_batches = 8, log = o.out .. "/" .. v.name .. "_" .. seed,
    plot = false, quiet = true }
  for _, r in ipairs(rows) do r.variant, r.seed, r.depth = v.name, seed, #ff.grow.units(net) end
  return rows, net
end

local all, summary = {}, {}
local bar = ff.logging.progress { total = #variants * S.seeds, label = "grow_deeper", unit = "run" }
local t0, done = ff.clock(), 0
for _, v in ipairs(variants) do
  for seed = 1, S.seeds do
    local rows, net = run(v, seed)
    for _, r in ipairs(rows) do all[#all + 1] = r end
    local last = rows[#rows]
    summary[#summary + 1] = { variant = v.name, seed = seed, test_acc = last.test_acc, params = last.params,
      widths = last.widths, units = #ff.grow.units(net) }
    done = done + 1
    bar:update(done)
  end
end
bar:finish()

local log = ff.logging.Logger { dir = o.out, name = "results" }
for _, r in ipairs(all) do log:write(r) end
log:close()
ff.io.write_atomic(o.out .. "/summary.json", require("cjson").encode {
  experiment = "grow_deeper", scale = o.full and "full" or "default", settings = S, runs = summary,
  seconds = ff.clock() - t0 })
for _, r in ipairs(all) do r.curve = r.variant .. " (seed " .. r.seed .. ")" end
local paths = ff.plot.from_rows(all, { x = "params", y = "test_acc", by = "curve", path = o.out .. "/deeper",
  title = "wider vs wider + deeper at equal parameter budgets", xlabel = "parameters", ylabel = "test accuracy" })
print("plot: " .. (paths.png or paths.dat))
print(string.format("\n%-14s %4s %9s %9s %-22s", "variant", "seed", "test acc", "params", "widths"))
for _, s in ipairs(summary) do
  print(string.format("%-14s %4d %9.4f %9d %-22s", s.variant, s.seed, s.test_acc, s.params, s.widths))
end
print(string.format("%d runs in %.0f s", #summary, ff.clock() - t0))
