-- make_exports: the networks test_export.py checks, exported to torch and
-- ONNX, with an input and our output for each.
--   ./firefly tests/python/make_exports.lua DIR
-- writes DIR/<case>/{torch,onnx}/..., DIR/<case>/io.safetensors (input,
-- output: eval mode) and DIR/cases.json. The grown networks go through a
-- checkpoint and the `firefly export` command, as a user would.
local ff = require "firefly"
local nn = ff.nn
local fio = ff.io

local dir = assert(arg[1], "usage: make_exports.lua DIR")
local exe = arg[-1] or "./firefly"

-- Training-mode passes so batch-norm running statistics are not 0 and 1.
local function warm(net, shape, g)
  net:train()
  ff.no_grad(function()
    for _ = 1, 3 do net(ff.randn(shape, g) * 2 + 0.5) end
  end)
  net:eval()
end

local function sh(s) return fio.shell_quote(s) end

local cases = {}

local function add(name, net, example, opts)
  opts = opts or {}
  local g = ff.Generator(#cases + 100)
  local shape = { 4, table.unpack(example) }
  if not opts.grown then warm(net, shape, g) end
  net:eval()
  local x = ff.randn(shape, g)
  local y = ff.no_grad(net, x)
  local d = dir .. "/" .. name
  assert(fio.mkdir(d))
  if opts.cli then
    ff.save(d .. "/checkpoint.safetensors", { format = "firefly-grow-1", phase = 2, net = net })
    for _, f in ipairs { "torch", "onnx" } do
      local cmd = string.format("%s export %s --to %s %s --input-shape %s >/dev/null", sh(exe),
        sh(d .. "/checkpoint.safetensors"), f, sh(d .. "/" .. f), table.concat(example, ","))
      assert(os.execute(cmd), "failed: " .. cmd)
    end
  else
    fio.export(net, d .. "/torch", { format = "torch" })
    fio.export(net, d .. "/onnx", { format = "onnx", input_shape = example })
  end
  fio.save_tensors(d .. "/io.safetensors", { input = x, output = y })
  local kinds = {}
  net:apply(function(m) kinds[getmetatable(m).__name] = true end)
  local list = {}
  for k in pairs(kinds) do list[#list + 1] = k end
  table.sort(list)
  cases[#cases + 1] = { name = name, modules = fio.json_array(list), grown = opts.grown or false }
end

ff.manual_seed(11)

add("mlp", nn.mlp { 20, 16, 12, 5, bn = true, dropout = 0.2 }, { 20 })

add("vgg", nn.vgg { cfg = { 4, "M", 8, "M" }, in_channels = 1, classes = 10, input_size = 28 },
  { 1, 28, 28 })

add("vgg_gap", nn.vgg { cfg = { 4, "M", 6 }, in_channels = 3, classes = 4, act = "elu" }, { 3, 12, 12 })

-- Every module type export knows, with options away from their defaults.
do
  local net = nn.Sequential {
    nn.Conv2d(3, 6, 3, { stride = 2, padding = 1 }),
    nn.BatchNorm2d(6),
    nn.LeakyReLU(0.2),
    nn.Conv2d(6, 6, 3, { groups = 3, padding = 2, dilation = 2, bias = false }),
    nn.ELU(0.5),
    nn.AvgPool2d(2, { padding = 1 }),
    nn.Residual(nn.Sequential { nn.Conv2d(6, 6, 1), nn.SiLU() }),
    nn.MaxPool2d(3, { stride = 1, padding = 1 }),
    nn.Flatten(3),            -- N x 6 x 9
    nn.LayerNorm(9),
    nn.Linear(9, 5),          -- over the last dim of a 3-d input
    nn.GELU(),
    nn.Flatten(),
    nn.Linear(30, 8),
    nn.Tanh(),
    nn.Dropout(0.3),
    nn.Identity(),
    nn.Linear(8, 8),
    nn.Sigmoid(),
    nn.Softplus(2),
    nn.RBF(),
    nn.BatchNorm1d(8, { affine = false }),
    nn.LayerNorm(8, { affine = false }),
    nn.Softplus(),
    nn.ReLU(),
  }
  net:add(nn.Linear(8, 3, { bias = false }), "head")
  add("zoo", net, { 3, 8, 8 })
end

-- Grown by Firefly: splits, new neurons and inserted residual layers.
local function grow(net, batches, steps, budget)
  for step = 1, steps do
    local p = ff.grow.propose(net, { new = 4, layers = { candidates = 4, max_new_layers = 1 },
      quiet = true, generator = ff.Generator(40 + step) }, batches)
    p:select(budget)
    local kinds = {}
    for _, c in ipairs(p.selected) do kinds[c.kind] = true end
    assert(kinds.split and kinds.new and kinds.layer,
      "grow step " .. step .. " did not select splits, new neurons and a layer")
    p:apply()
  end
  return net
end

do
  local g = ff.Generator(5)
  local net = nn.mlp { 6, 8, 8, 3 }
  local batches = { { ff.randn(32, 6, g), ff.randint(1, 3, 32, g) } }
  add("grown_mlp", grow(net, batches, 2, { neurons = 12 }), { 6 }, { grown = true, cli = true })
end

do
  local g = ff.Generator(6)
  local net = nn.vgg { cfg = { 4, "M", 6, "M" }, in_channels = 1, classes = 3, input_size = 8 }
  local batches = { { ff.randn(16, 1, 8, 8, g), ff.randint(1, 3, 16, g) } }
  warm(net, { 16, 1, 8, 8 }, g)
  net:train()
  add("grown_vgg", grow(net, batches, 1, { neurons = 10 }), { 1, 8, 8 }, { grown = true, cli = true })
end

assert(fio.write_atomic(dir .. "/cases.json", fio.json_encode(fio.json_array(cases))))
