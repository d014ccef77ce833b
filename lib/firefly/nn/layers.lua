-- firefly.nn.layers: the layers (Linear, Conv2d, normalisation, activations,
-- pooling, Flatten, Dropout, Identity). Each is a thin class over one
-- functional op of the engine; the maths and its gradient live there.
local ff = require "firefly"
local module = require "firefly.nn.module"
local class, Module, initialise = module.class, module.Module, module.initialise
local check_keys = require("firefly.options").check

local L = {}

-- What each layer is, for code that edits networks (ff.grow): a producer
-- has output neurons (`neurons = "features"`: rows of a Linear's weight;
-- `"channels"`: output channels of a Conv2d) and can be run with other
-- weights (`with_weights`); a per-neuron layer acts on each neuron alone
-- (`per_neuron` says how: "norm", "activation", "dropout", "maxpool",
-- "avgpool", "flatten" (channels become features), "identity",
-- "depthwise": a Conv2d with groups = in = out channels, one kernel per
-- neuron, whose rows grow with the neurons it reads). A layer
-- that mixes neurons (LayerNorm) declares neither. A new layer type that
-- declares these is growable without any change to ff.grow.

local function shape_str(t) return table.concat(t:size(), "x") end

-- Options table with defaults; unknown keys are errors (typos do not pass).
local function options(what, opts, defaults)
  opts = opts or {}
  check_keys(what, opts, defaults, "option", 3)
  local o = {}
  for k, v in pairs(defaults) do
    if opts[k] == nil then o[k] = v else o[k] = opts[k] end
  end
  return o
end

local function check_int(what, name, v, min)
  if math.type(v) ~= "integer" or v < min then
    error(string.format("%s: %s must be an integer >= %d, got %s", what, name, min, tostring(v)), 3)
  end
end

-- nil in a defaults table cannot be told from "absent": use false instead.
local NONE = false

---------------------------------------------------------------- Linear

-- y = x Wᵀ + b. Default init as torch: W, b ~ U(-1/sqrt(in), 1/sqrt(in))
-- (kaiming_uniform with a = sqrt(5)); opts.init picks another (module.inits).
local Linear = class("Linear", Module)
L.Linear = Linear

function L.Linear_new(in_features, out_features, opts)
  check_int("Linear", "in_features", in_features, 1)
  check_int("Linear", "out_features", out_features, 1)
  local o = options("Linear", opts, { bias = true, generator = NONE, init = NONE })
  local self = Module.init(setmetatable({}, Linear))
  self.in_features, self.out_features = in_features, out_features
  local w, b = initialise("Linear", o.init or nil, { out_features, in_features },
    in_features, out_features, o.generator or nil)
  self:register_parameter("weight", w)
  self:register_parameter("bias", o.bias and b or nil)
  return self
end

Linear.neurons = "features"

function Linear:forward(x)
  return ff.linear(x, self.weight, self.bias)
end

-- The same layer's op with weights w (out x in) and bias b (or nil).
function Linear:with_weights(x, w, b)
  return ff.linear(x, w, b)
end

function Linear:extra_repr()
  return string.format("%d -> %d%s", self.weight:size(2), self.weight:size(1),
    self.bias and "" or ", no bias")
end

---------------------------------------------------------------- Conv2d

local Conv2d = class("Conv2d", Module)
L.Conv2d = Conv2d

local function pair(v) return type(v) == "table" and { v[1], v[2] } or { v, v } end

function L.Conv2d_new(in_channels, out_channels, kernel, opts)
  check_int("Conv2d", "in_channels", in_channels, 1)
  check_int("Conv2d", "out_channels", out_channels, 1)
  local o = options("Conv2d", opts,
    { stride = 1, padding = 0, dilation = 1, groups = 1, bias = true, generator = NONE, init = NONE })
  check_int("Conv2d", "groups", o.groups, 1)
  if in_channels % o.groups ~= 0 or out_channels % o.groups ~= 0 then
    error(string.format("Conv2d: channels %d -> %d are not divisible by groups = %d",
      in_channels, out_channels, o.groups), 2)
  end
  local k = pair(kernel)
  local self = Module.init(setmetatable({}, Conv2d))
  self.in_channels, self.out_channels, self.kernel = in_channels, out_channels, k
  self.stride, self.padding, self.dilation, self.groups =
      pair(o.stride), pair(o.padding), pair(o.dilation), o.groups
  local fan_in = in_channels // o.groups * k[1] * k[2]
  local w, b = initialise("Conv2d", o.init or nil, { out_channels, in_channels // o.groups, k[1], k[2] },
    fan_in, out_channels // o.groups * k[1] * k[2], o.generator or nil)
  self:register_parameter("weight", w)
  self:register_parameter("bias", o.bias and b or nil)
  -- A depthwise convolution (groups = in = out > 1) filters each channel
  -- alone: it is a per-neuron layer of the producer before it, not a
  -- producer (is_producer needs groups = 1). Declared on the instance,
  -- since it depends on the shape; growth keeps groups equal to the width.
  if o.groups > 1 and o.groups == in_channels and o.groups == out_channels then
    self.per_neuron = "depthwise"
  end
  return self
end

Conv2d.neurons = "channels"

function Conv2d:forward(x)
  return ff.conv2d(x, self.weight, self.bias,
    { stride = self.stride, padding = self.padding, dilation = self.dilation, groups = self.groups })
end

-- The same convolution (stride, padding, dilation) with weights w and bias
-- b (or nil); growth edits only ungrouped convolutions.
function Conv2d:with_weights(x, w, b)
  return ff.conv2d(x, w, b, { stride = self.stride, padding = self.padding, dilation = self.dilation })
end

function Conv2d:extra_repr()
  local w = self.weight
  local s = string.format("%d -> %d, %dx%d", w:size(2) * self.groups, w:size(1), w:size(3), w:size(4))
  if self.stride[1] ~= 1 or self.stride[2] ~= 1 then s = s .. ", stride " .. self.stride[1] end
  if self.padding[1] ~= 0 or self.padding[2] ~= 0 then s = s .. ", padding " .. self.padding[1] end
  if self.groups ~= 1 then s = s .. ", groups " .. self.groups end
  return self.bias and s or s .. ", no bias"
end

---------------------------------------------------------------- normalisation

local BatchNorm = class("BatchNorm", Module)
L.BatchNorm = BatchNorm

local function batchnorm_new(cls, what, features, opts)
  check_int(what, "num_features", features, 1)
  local o = options(what, opts, { eps = 1e-5, momentum = 0.1, affine = true, track_running_stats = true,
    sync = false })
  local self = Module.init(setmetatable({}, cls))
  self.eps, self.momentum = o.eps, o.momentum
  if o.sync then self.sync = true end
  if o.affine then
    self:register_parameter("weight", ff.ones(features))
    self:register_parameter("bias", ff.zeros(features))
  end
  if o.track_running_stats then
    self:register_buffer("running_mean", ff.zeros(features))
    self:register_buffer("running_var", ff.ones(features))
  end
  return self
end

BatchNorm.per_neuron = "norm"

-- Synchronised batch norm (sync = true, under several ranks, training):
-- the batch statistics are those of the global batch, in two passes over
-- ranks: the per-channel sums of x and the row count go through one
-- allreduce, giving the global mean; then the per-channel sums of
-- (x - mean)^2 through a second, giving the variance. Not one pass of the
-- sums of x and x^2 (var = E[x^2] - E[x]^2): in float that cancels when a
-- channel's mean is large against its spread. (It was not what makes
-- MobileNetV1's 2-rank run differ from one process's: that is rounding
-- amplified by the network, spec/dist.md.) Each global sum takes the value of the
-- allreduce and the gradient path of the local sum; the same allreduce
-- runs on its gradient in the backward (a hook), weighted by each rank's
-- rows, since train.fit later scales each rank's gradient by its share
-- of the batch. Composed of ordinary ops, so autograd follows.
local function global_sum(dist, t, b)
  local global = ff.no_grad(function() return dist.allreduce(t:detach():clone()) end)
  local s = t + (global - t):detach()
  if s:requires_grad() then s:register_hook(function(g)
    return dist.allreduce(g:mul(b):contiguous()):div(b)
  end) end
  return s, global
end

local function sync_batch_norm(self, x)
  local dist = require "firefly.dist"
  local C = x:size(2)
  local xc = x:dim() == 2 and x or x:transpose(1, 2):reshape(C, -1):t()
  local b = xc:size(1)
  local sums, global = global_sum(dist, ff.cat({ xc:sum(1), ff.full({ 1 }, b) }), b)
  local n = global:narrow(1, C + 1, 1):item()
  local mean = sums:narrow(1, 1, C) / n
  local centred = xc - mean:reshape(1, C)
  local var = global_sum(dist, (centred * centred):sum(1), b) / n
  local shape = { 1, C }
  for _ = 3, x:dim() do shape[#shape + 1] = 1 end
  local y = (x - mean:reshape(shape)) / (var + self.eps):sqrt():reshape(shape)
  if self.weight then y = y * self.weight:reshape(shape) + self.bias:reshape(shape) end
  if self.running_mean then
    ff.no_grad(function()
      local m = self.momentum
      local unbiased = var:detach() * (n / math.max(n - 1, 1))
      self.running_mean:mul_(1 - m):add_(mean:detach() * m)
      self.running_var:mul_(1 - m):add_(unbiased * m)
    end)
  end
  return y
end

-- forward(x [, relu]): with relu = true (Sequential passes it when a ReLU
-- follows, see containers.lua), returns relu(batch_norm(x)), true: one op
-- that makes fewer passes over memory and gives the same bits; a second
-- result that is not true means the relu was not applied (synchronised
-- statistics are composed of ordinary ops).
function BatchNorm:forward(x, relu)
  if self.sync and self.training and require("firefly.dist").size() > 1 then
    return sync_batch_norm(self, x)
  end
  return ff.batch_norm(x, {
    weight = self.weight, bias = self.bias,
    running_mean = self.running_mean, running_var = self.running_var,
    training = self.training or not self.running_mean,
    momentum = self.momentum, eps = self.eps, relu = relu == true }), relu == true
end

function BatchNorm:extra_repr()
  local n = (self.weight or self.running_mean):size(1)
  return tostring(n)
end

L.BatchNorm1d = class("BatchNorm1d", BatchNorm)
L.BatchNorm2d = class("BatchNorm2d", BatchNorm)
function L.BatchNorm1d_new(n, opts) return batchnorm_new(L.BatchNorm1d, "BatchNorm1d", n, opts) end
function L.BatchNorm2d_new(n, opts) return batchnorm_new(L.BatchNorm2d, "BatchNorm2d", n, opts) end

local LayerNorm = class("LayerNorm", Module)
L.LayerNorm = LayerNorm

-- normalized: the trailing shape normalised over (a number or a table).
function L.LayerNorm_new(normalized, opts)
  local o = options("LayerNorm", opts, { eps = 1e-5, affine = true })
  local shape = type(normalized) == "table" and normalized or { normalized }
  local self = Module.init(setmetatable({}, LayerNorm))
  self.normalized, self.eps = shape, o.eps
  if o.affine then
    self:register_parameter("weight", ff.ones(shape))
    self:register_parameter("bias", ff.zeros(shape))
  end
  return self
end

function LayerNorm:forward(x)
  return ff.layer_norm(x, self.normalized, { weight = self.weight, bias = self.bias, eps = self.eps })
end

function LayerNorm:extra_repr() return table.concat(self.normalized, "x") end

---------------------------------------------------------------- activations

-- Activation modules: name -> {method, parameter option, default}.
local activations = {
  ReLU = { "relu" }, Tanh = { "tanh" }, Sigmoid = { "sigmoid" }, GELU = { "gelu" },
  SiLU = { "silu" }, RBF = { "rbf" },
  LeakyReLU = { "leaky_relu", 0.01 }, ELU = { "elu", 1.0 }, Softplus = { "softplus", 1.0 },
}
L.activation_names = {}

for name, spec in pairs(activations) do
  local cls = class(name, Module)
  L[name] = cls
  cls.per_neuron = "activation"
  L.activation_names[spec[1]] = name
  L[name .. "_new"] = function(param)
    local self = Module.init(setmetatable({}, cls))
    self.act, self.param = spec[1], param or spec[2]
    return self
  end
  cls.forward = function(self, x)
    if self.param then return x[self.act](x, self.param) end
    return x[self.act](x)
  end
  cls.extra_repr = function(self) return self.param and tostring(self.param) or "" end
end

---------------------------------------------------------------- pooling, shape

local MaxPool2d = class("MaxPool2d", Module)
local AvgPool2d = class("AvgPool2d", Module)
L.MaxPool2d, L.AvgPool2d = MaxPool2d, AvgPool2d
MaxPool2d.per_neuron, AvgPool2d.per_neuron = "maxpool", "avgpool"

local function pool_new(cls, what, kernel, opts)
  local o = options(what, opts, { stride = NONE, padding = 0 })
  local self = Module.init(setmetatable({}, cls))
  self.kernel, self.stride, self.padding = pair(kernel), pair(o.stride or kernel), pair(o.padding)
  return self
end

function L.MaxPool2d_new(k, opts) return pool_new(MaxPool2d, "MaxPool2d", k, opts) end
function L.AvgPool2d_new(k, opts) return pool_new(AvgPool2d, "AvgPool2d", k, opts) end

function MaxPool2d:forward(x)
  return ff.max_pool2d(x, self.kernel, { stride = self.stride, padding = self.padding })
end

function AvgPool2d:forward(x)
  return ff.avg_pool2d(x, self.kernel, { stride = self.stride, padding = self.padding })
end

function MaxPool2d:extra_repr() return self.kernel[1] .. "x" .. self.kernel[2] end
AvgPool2d.extra_repr = MaxPool2d.extra_repr

-- Global average pooling: N x C x H x W -> N x C.
local GlobalAvgPool = class("GlobalAvgPool", Module)
L.GlobalAvgPool = GlobalAvgPool
GlobalAvgPool.per_neuron = "flatten"
function L.GlobalAvgPool_new() return Module.init(setmetatable({}, GlobalAvgPool)) end
function GlobalAvgPool:forward(x)
  return ff.flatten(ff.adaptive_avg_pool2d(x, 1))
end

local Flatten = class("Flatten", Module)
L.Flatten = Flatten
Flatten.per_neuron = "flatten"
function L.Flatten_new(start_dim)
  local self = Module.init(setmetatable({}, Flatten))
  self.start_dim = start_dim or 2
  return self
end
function Flatten:forward(x) return ff.flatten(x, self.start_dim) end

local Dropout = class("Dropout", Module)
L.Dropout = Dropout
Dropout.per_neuron = "dropout"
function L.Dropout_new(p, opts)
  if type(p) ~= "number" or p < 0 or p > 1 then
    error("Dropout: p must be a number in [0, 1], got " .. tostring(p), 2)
  end
  local o = options("Dropout", opts, { generator = NONE })
  local self = Module.init(setmetatable({}, Dropout))
  self.p, self.generator = p, o.generator or nil
  return self
end
function Dropout:forward(x) return ff.dropout(x, self.p, self.training, self.generator) end
function Dropout:extra_repr() return tostring(self.p) end

local Identity = class("Identity", Module)
L.Identity = Identity
Identity.per_neuron = "identity"
function L.Identity_new() return Module.init(setmetatable({}, Identity)) end
function Identity:forward(x) return x end

L.shape_str = shape_str
return L
