-- firefly.export.onnx: a network as an ONNX model (opset 13) in
-- dir/model.onnx, the inference graph of eval mode.
--
-- This file maps each module to ONNX operators and builds the graph as a
-- Lua table; the protobuf bytes come from ff.onnx_encode
-- (engine/lua/onnx.c), which fills the C structs that protobuf-c generates
-- from Debian's onnx.proto (libonnx-dev) at build time: no hand-written
-- wire format. Weights keep their torch names (as in the torch export) as
-- initializers; operators that opset 13 lacks (GELU, SiLU, the RBF,
-- LayerNorm) are spelled with elementary ones, which are exact up to
-- rounding.
local fio = require "firefly.io"
local core = require "firefly.core"
local ff = require "firefly"

local X = {}

X.OPSET, X.IR_VERSION = 13, 7 -- IR 7 is the version of opset 13's release
X.FILE = "model.onnx"

-- The graph being built: nodes, initializers, and a counter per name so
-- value names are unique and say where they come from.
local function new_graph()
  return { nodes = {}, inits = {}, used = {}, consts = {} }
end

local function fresh(g, base)
  base = base == "" and "value" or base
  local name, n = base, 1
  while g.used[name] do
    n = n + 1
    name = base .. "_" .. n
  end
  g.used[name] = true
  return name
end

-- emit(g, op, inputs, attrs, base) -> the node's output name.
local function emit(g, op, inputs, attrs, base)
  local out = fresh(g, base .. "/" .. op)
  g.nodes[#g.nodes + 1] = { op = op, name = out, inputs = inputs, outputs = { out },
    attrs = attrs or {} }
  return out
end

local function tensor_init(g, name, t)
  g.used[name] = true
  g.inits[#g.inits + 1] = { name = name, tensor = t }
  return name
end

-- A float scalar constant (shared between uses).
local function const(g, v)
  local key = fio.float_str(v)
  if not g.consts[key] then
    local name = fresh(g, "const_" .. key)
    g.inits[#g.inits + 1] = { name = name, floats = { v }, dims = {} }
    g.consts[key] = name
  end
  return g.consts[key]
end

local function filled(g, base, n, v)
  local name = fresh(g, base)
  local vals = {}
  for i = 1, n do vals[i] = v end
  g.inits[#g.inits + 1] = { name = name, floats = vals, dims = { n } }
  return name
end

local function tensor_of(node, key)
  for _, t in ipairs(node.tensors) do
    if t.key == key then return t end
  end
end

-- The initializer of a module's tensor, under its torch name.
local function weight(g, node, key)
  local t = tensor_of(node, key)
  return t and tensor_init(g, t.name, t.tensor)
end

local function ints(name, list) return { name = name, ints = list } end
local function int(name, v) return { name = name, i = v } end
local function float(name, v) return { name = name, f = v } end

-- [top, left, bottom, right]: ONNX pads are begins then ends.
local function pads(p) return { p[1], p[2], p[1], p[2] } end

local function refuse(node, why)
  error(string.format("io.export: module %s (%s) cannot be written as ONNX: %s",
    node.path == "" and "(the network)" or node.path, node.type, why), 0)
end

local emitters = {}

-- Each emitter: (g, node, x, rank) -> y, rank of y.
function emitters.Sequential(g, node, x, rank)
  for _, c in ipairs(node.children) do
    x, rank = emitters[c.type](g, c, x, rank)
  end
  return x, rank
end

function emitters.Residual(g, node, x, rank)
  local y, r = emitters.Sequential(g, node, x, rank)
  if r ~= rank then refuse(node, "its branch changes the number of dims") end
  return emit(g, "Add", { x, y }, nil, node.path), rank
end

function emitters.Linear(g, node, x, rank)
  local w, b = weight(g, node, "weight"), weight(g, node, "bias")
  if rank == 2 then
    return emit(g, "Gemm", b and { x, w, b } or { x, w }, { int("transB", 1) }, node.path), 2
  end
  -- Gemm is 2-D only: x Wᵀ (+ b) over the last dim.
  local wt = emit(g, "Transpose", { w }, { ints("perm", { 1, 0 }) }, node.path)
  local y = emit(g, "MatMul", { x, wt }, nil, node.path)
  if b then y = emit(g, "Add", { y, b }, nil, node.path) end
  return y, rank
end

function emitters.Conv2d(g, node, x, rank)
  local c = node.config
  local w, b = weight(g, node, "weight"), weight(g, node, "bias")
  return emit(g, "Conv", b and { x, w, b } or { x, w }, {
    ints("kernel_shape", c.kernel_size), ints("strides", c.stride), ints("pads", pads(c.padding)),
    ints("dilations", c.dilation), int("group", c.groups) }, node.path), rank
end

local function batchnorm(g, node, x, rank)
  local c = node.config
  if not c.track_running_stats then
    refuse(node, "it normalises by batch statistics even in eval mode (no running statistics)")
  end
  local n = c.num_features
  local scale = weight(g, node, "weight") or filled(g, node.path .. ".weight", n, 1.0)
  local bias = weight(g, node, "bias") or filled(g, node.path .. ".bias", n, 0.0)
  return emit(g, "BatchNormalization",
    { x, scale, bias, weight(g, node, "running_mean"), weight(g, node, "running_var") },
    { float("epsilon", c.eps), float("momentum", 1 - c.momentum) }, node.path), rank
end
emitters.BatchNorm1d, emitters.BatchNorm2d = batchnorm, batchnorm

-- (x - mean) / sqrt(var + eps) * w + b over the trailing dims (the
-- biased variance, as the engine; LayerNormalization is opset 17).
function emitters.LayerNorm(g, node, x, rank)
  local c, p = node.config, node.path
  local axes = {}
  for i = #c.normalized_shape, 1, -1 do axes[#axes + 1] = -i end
  local mean = emit(g, "ReduceMean", { x }, { ints("axes", axes), int("keepdims", 1) }, p)
  local d = emit(g, "Sub", { x, mean }, nil, p)
  local var = emit(g, "ReduceMean", { emit(g, "Mul", { d, d }, nil, p) },
    { ints("axes", axes), int("keepdims", 1) }, p)
  local std = emit(g, "Sqrt", { emit(g, "Add", { var, const(g, c.eps) }, nil, p) }, nil, p)
  local y = emit(g, "Div", { d, std }, nil, p)
  local w, b = weight(g, node, "weight"), weight(g, node, "bias")
  if w then y = emit(g, "Mul", { y, w }, nil, p) end
  if b then y = emit(g, "Add", { y, b }, nil, p) end
  return y, rank
end

local function simple(op)
  return function(g, node, x, rank) return emit(g, op, { x }, nil, node.path), rank end
end
emitters.ReLU, emitters.Tanh, emitters.Sigmoid = simple("Relu"), simple("Tanh"), simple("Sigmoid")

function emitters.LeakyReLU(g, node, x, rank)
  return emit(g, "LeakyRelu", { x }, { float("alpha", node.config.negative_slope) }, node.path), rank
end

function emitters.ELU(g, node, x, rank)
  return emit(g, "Elu", { x }, { float("alpha", node.config.alpha) }, node.path), rank
end

-- softplus(beta x) / beta; past the threshold both give x up to e^-20.
function emitters.Softplus(g, node, x, rank)
  local beta, p = node.config.beta, node.path
  if beta == 1 then return emit(g, "Softplus", { x }, nil, p), rank end
  local y = emit(g, "Softplus", { emit(g, "Mul", { x, const(g, beta) }, nil, p) }, nil, p)
  return emit(g, "Div", { y, const(g, beta) }, nil, p), rank
end

-- x Φ(x) = x (1 + erf(x / √2)) / 2, the exact GELU the engine computes.
function emitters.GELU(g, node, x, rank)
  local p = node.path
  local e = emit(g, "Erf", { emit(g, "Div", { x, const(g, math.sqrt(2)) }, nil, p) }, nil, p)
  local h = emit(g, "Mul", { emit(g, "Add", { e, const(g, 1.0) }, nil, p), const(g, 0.5) }, nil, p)
  return emit(g, "Mul", { x, h }, nil, p), rank
end

function emitters.SiLU(g, node, x, rank)
  return emit(g, "Mul", { x, emit(g, "Sigmoid", { x }, nil, node.path) }, nil, node.path), rank
end

-- e^(-x²/2)
function emitters.RBF(g, node, x, rank)
  local p = node.path
  local sq = emit(g, "Mul", { x, x }, nil, p)
  return emit(g, "Exp", { emit(g, "Mul", { sq, const(g, -0.5) }, nil, p) }, nil, p), rank
end

function emitters.MaxPool2d(g, node, x, rank)
  local c = node.config
  return emit(g, "MaxPool", { x }, { ints("kernel_shape", c.kernel_size), ints("strides", c.stride),
    ints("pads", pads(c.padding)) }, node.path), rank
end

function emitters.AvgPool2d(g, node, x, rank)
  local c = node.config
  return emit(g, "AveragePool", { x }, { ints("kernel_shape", c.kernel_size),
    ints("strides", c.stride), ints("pads", pads(c.padding)), int("count_include_pad", 1) },
    node.path), rank
end

function emitters.GlobalAvgPool(g, node, x, rank)
  if rank ~= 4 then refuse(node, "it needs N x C x H x W input, got " .. rank .. " dims") end
  local y = emit(g, "GlobalAveragePool", { x }, nil, node.path)
  return emit(g, "Flatten", { y }, { int("axis", 1) }, node.path), 2
end

-- flatten(start_dim) keeps the dims before start_dim: ONNX Flatten when
-- that leaves two dims, else a Reshape to {0, ..., 0, -1} (0 = keep).
function emitters.Flatten(g, node, x, rank)
  local s = node.config.start_dim
  if s < 0 then s = rank + s end
  if s < 0 or s >= rank then refuse(node, "start_dim is out of range for " .. rank .. " dims") end
  if s == 1 then return emit(g, "Flatten", { x }, { int("axis", 1) }, node.path), 2 end
  local shape = {}
  for i = 1, s do shape[i] = 0 end
  shape[s + 1] = -1
  local name = fresh(g, node.path .. ".shape")
  g.inits[#g.inits + 1] = { name = name, int64s = shape, dims = { #shape } }
  return emit(g, "Reshape", { x, name }, nil, node.path), s + 1
end

-- Identity in eval mode: no node at all.
local function pass(_, _, x, rank) return x, rank end
emitters.Dropout, emitters.Identity = pass, pass

-- write(root, dir, input_shape): input_shape per example (strings are
-- symbolic sizes); the batch dim is "batch".
function X.write(root, dir, input_shape)
  local g = new_graph()
  g.used.input = true
  local dims = { "batch" }
  for i, d in ipairs(input_shape) do dims[i + 1] = d end
  local y, rank = emitters[root.type](g, root, "input", #dims)
  if y == "input" then
    y = emit(g, "Identity", { y }, nil, "output")
  end
  -- The last node's output becomes "output".
  for _, n in ipairs(g.nodes) do
    for i, o in ipairs(n.inputs) do if o == y then n.inputs[i] = "output" end end
    if n.outputs[1] == y then n.outputs[1] = "output" end
  end
  local out_dims = { "batch" }
  for i = 2, rank do out_dims[i] = "output_" .. (i - 1) end
  local model = {
    ir_version = X.IR_VERSION, opset = X.OPSET, producer_name = "firefly",
    producer_version = ff.version or "?",
    graph = { name = "firefly", nodes = g.nodes, initializers = g.inits,
      inputs = { { name = "input", dims = dims } },
      -- Only the rank is ours: the sizes are left to the reader's shape
      -- inference (the checker requires a shape; the tests compare it).
      outputs = { { name = "output", dims = out_dims } } },
  }
  local bytes = core.onnx_encode(model)
  local path = dir .. "/" .. X.FILE
  local ok, err = fio.write_atomic(path, bytes)
  if not ok then error("io.export: " .. err, 0) end
  return { path }
end

return X
