-- fashion_grow: grow networks on Fashion-MNIST by Firefly descent from a
-- tiny start (the README's `make run`).
--   ./firefly examples/fashion_grow.lua [phases] [seed] [mlp|cnn|both] [method]
-- ("-" keeps an argument's default: fashion_grow.lua - - mlp gradmax)
-- mlp: 784-16-16-10, phases of two epochs (SGD), splits, new neurons and
--      new layers (I + h blocks, at most one per phase);
-- cnn: a small VGG (conv 4, pool, conv 8, pool, linear) with batch norm,
--      phases of one epoch (Adam), splits and new channels;
-- both (default): the MLP, then the VGG, then one table and one plot.
-- Each phase trains, then grows by one Firefly step scored on 8 batches
-- with a budget of 0.35 of the current neurons; every phase is logged to
-- out/fashion_grow_<kind>/ (grow.csv, grow.jsonl, plots) and the two runs
-- are compared in out/fashion_grow/accuracy.png.
--
-- The growth method is one line: METHOD below (or a 4th argument), one of
-- firefly, random, nash, split_exact, split_fast, net2net, gradmax
-- (spec/grow.md). NASH ranks its children on 5000 training examples held
-- out as validation data. Both networks use ReLU, whose derivative at 0 is
-- 0 here: published GradMax (zero incoming weights) could not train its
-- neurons, so gradmax runs transposed (zero = "outgoing").
local ff = require "firefly"
local nn, data = ff.nn, ff.data

local METHOD = arg and arg[4] or "firefly"
local ZERO = METHOD == "gradmax" and "outgoing" or nil

local kind = arg and arg[3] or "both"
if kind == "-" then kind = "both" end
if kind ~= "mlp" and kind ~= "cnn" and kind ~= "both" then
  error("fashion_grow: kind must be mlp, cnn or both, got " .. kind)
end
local seed = tonumber(arg and arg[2]) or 1

local function run(which)
  local phases = tonumber(arg and arg[1]) or (which == "mlp" and 10 or 6)
  ff.manual_seed(seed)
  local train_set = data.fashion_mnist { split = "train" }
  local test_set = data.fashion_mnist { split = "test" }
  local val_set
  if METHOD == "nash" then val_set, train_set = train_set:split(5000 / train_set:size(), ff.Generator(seed)) end
  local net, opt, epochs, nb
  if which == "mlp" then
    for _, ds in ipairs { train_set, test_set, val_set } do ds.x = ds.x:view(ds:size(), 784) end
    net = nn.mlp { 784, 16, 16, 10 }
    opt = ff.optim.SGD(net:named_parameters(), { lr = 0.05, momentum = 0.9 })
    epochs = 2
    nb = ff.grow.neighbourhood { method = METHOD, new = 32, layers = { candidates = 8, max_new_layers = 1 },
      lr = 1e-2, generator = ff.Generator(seed + 1), zero = ZERO }
  else
    net = nn.vgg { cfg = { 4, "M", 8, "M" }, in_channels = 1, classes = 10, input_size = 28 }
    opt = ff.optim.Adam(net:named_parameters(), { lr = 2e-3 })
    epochs = 1
    nb = ff.grow.neighbourhood { method = METHOD, new = 8, lr = 1e-2, generator = ff.Generator(seed + 1), zero = ZERO }
  end
  local loader = data.DataLoader(train_set, { batch_size = 128, shuffle = true, generator = ff.Generator(seed) })
  print(net)
  local out = "out/fashion_grow_" .. which .. (METHOD == "firefly" and "" or "_" .. METHOD)
  -- The checkpoint holds the grown network: `firefly export` reads it.
  local rows = ff.grow.run {
    net = net, data = loader, test = test_set, optim = opt, phases = phases, epochs = epochs,
    neighbourhood = nb, eta = { ratio = 0.35 }, score_batches = 8, val = val_set,
    log = out, checkpoint = out .. "/checkpoint.safetensors",
  }
  print(net)
  for _, r in ipairs(rows) do r.net = which end
  return rows
end

local all = {}
for _, which in ipairs(kind == "both" and { "mlp", "cnn" } or { kind }) do
  for _, r in ipairs(run(which)) do all[#all + 1] = r end
end

-- One table of every phase; the widths column as wide as its longest entry
-- (inserted layers make the MLP's list long).
local ww = #"widths"
for _, r in ipairs(all) do ww = math.max(ww, #r.widths) end
print(string.format("\n%-4s %5s  %-" .. ww .. "s %8s %9s %9s %6s %11s %11s %8s", "net", "phase", "widths", "params",
  "train loss", "test acc", "grew", "dL pred", "dL meas", "grow s"))
for _, r in ipairs(all) do
  print(string.format("%-4s %5d  %-" .. ww .. "s %8d %9.4f %9.4f %6s %11s %11s %8s", r.net, r.phase, r.widths, r.params,
    r.train_loss, r.test_acc, r.grown or "-", r.predicted_dloss and string.format("%.3e", r.predicted_dloss) or "-",
    r.measured_dloss and string.format("%.3e", r.measured_dloss) or "-",
    r.grow_seconds and string.format("%.2f", r.grow_seconds) or "-"))
end
local suffix = METHOD == "firefly" and "" or "_" .. METHOD
local paths = ff.plot.from_rows(all, { x = "params", y = "test_acc", by = "net", path = "out/fashion_grow/accuracy" .. suffix,
  title = METHOD .. " growth on Fashion-MNIST", xlabel = "parameters", ylabel = "test accuracy", logx = true })
print("plot: " .. (paths.png or paths.dat))
