-- firefly.export.describe: a network as a plain tree that other frameworks
-- can rebuild. Each node is
--   { type = "Linear", name = "0", path = "3.f.0", config = {...},
--     tensors = { {key = "weight", name = "3.f.0.weight", tensor = T}, ... },
--     children = { node, ... } }
-- with PyTorch's conventions: positional children of a Sequential count
-- from 0, tensor names are the keys of torch's state_dict, sizes and
-- options use torch's argument names, dims count from 0. Sizes are read
-- from the tensors, not from fields, so a grown network describes itself
-- as it is now.
--
-- It reads each module's bookkeeping lists (_params, _buffers, _children),
-- as a checkpoint does: it needs a module's own tensors and its children's
-- names, which the public API (named_parameters, named_modules) gives only
-- flattened over the whole subtree.
--
-- Only the classes listed in `rules` are known: an unknown module (a user's
-- own class) is refused with its path, since a wrong guess would give a
-- network that runs but computes something else.
local layers = require "firefly.nn.layers"
local containers = require "firefly.nn.containers"

local D = {}

local function list(t) return { t[1], t[2] } end

local function bn_config(m, what)
  local t = m.weight or m.running_mean
  if not t then
    error(string.format("io.export: %s without weights or running statistics: its size is unknown", what), 0)
  end
  return { num_features = t:size(1), eps = m.eps, momentum = m.momentum,
    affine = m.weight ~= nil, track_running_stats = m.running_mean ~= nil }
end

local function pool_config(m)
  return { kernel_size = list(m.kernel), stride = list(m.stride), padding = list(m.padding) }
end

-- class metatable -> function(module) -> type name, config
local rules = {
  [containers.Sequential] = function() return "Sequential", {} end,
  [containers.Residual] = function() return "Residual", {} end,
  [layers.Linear] = function(m)
    return "Linear", { in_features = m.weight:size(2), out_features = m.weight:size(1),
      bias = m.bias ~= nil }
  end,
  [layers.Conv2d] = function(m)
    local w = m.weight
    return "Conv2d", { in_channels = w:size(2) * m.groups, out_channels = w:size(1),
      kernel_size = { w:size(3), w:size(4) }, stride = list(m.stride), padding = list(m.padding),
      dilation = list(m.dilation), groups = m.groups, bias = m.bias ~= nil }
  end,
  [layers.BatchNorm1d] = function(m) return "BatchNorm1d", bn_config(m, "BatchNorm1d") end,
  [layers.BatchNorm2d] = function(m) return "BatchNorm2d", bn_config(m, "BatchNorm2d") end,
  [layers.LayerNorm] = function(m)
    local shape = {}
    for i, d in ipairs(m.normalized) do shape[i] = d end
    return "LayerNorm", { normalized_shape = shape, eps = m.eps, elementwise_affine = m.weight ~= nil }
  end,
  [layers.ReLU] = function() return "ReLU", {} end,
  [layers.Tanh] = function() return "Tanh", {} end,
  [layers.Sigmoid] = function() return "Sigmoid", {} end,
  [layers.GELU] = function() return "GELU", {} end,
  [layers.SiLU] = function() return "SiLU", {} end,
  -- e^(-x^2/2): no torch class; tools/firefly_torch.py defines one.
  [layers.RBF] = function() return "RBF", {} end,
  [layers.LeakyReLU] = function(m) return "LeakyReLU", { negative_slope = m.param } end,
  [layers.ELU] = function(m) return "ELU", { alpha = m.param } end,
  -- The engine's softplus returns x above beta x > 20, as torch's default.
  [layers.Softplus] = function(m) return "Softplus", { beta = m.param, threshold = 20 } end,
  [layers.MaxPool2d] = function(m) return "MaxPool2d", pool_config(m) end,
  [layers.AvgPool2d] = function(m)
    local c = pool_config(m)
    c.count_include_pad = true -- padding counts as zeros (engine/core/op_pool.c)
    return "AvgPool2d", c
  end,
  -- adaptive_avg_pool2d to 1x1, then flatten: N x C x H x W -> N x C.
  [layers.GlobalAvgPool] = function() return "GlobalAvgPool", {} end,
  [layers.Flatten] = function(m)
    local s = m.start_dim
    return "Flatten", { start_dim = s > 0 and s - 1 or s, end_dim = -1 }
  end,
  [layers.Dropout] = function(m) return "Dropout", { p = m.p } end,
  [layers.Identity] = function() return "Identity", {} end,
}

-- The type names export knows, sorted (for messages and docs).
function D.known_types()
  local out = {}
  for cls in pairs(rules) do out[#out + 1] = cls.__name end
  table.sort(out)
  return out
end

-- A child's name in torch: positional names "1", "2", ... count from 0.
local function torch_name(name, where)
  local n = math.tointeger(tonumber(name))
  if n and tostring(n) == name then
    if n < 1 then error("io.export: child '" .. name .. "' of " .. where .. " has a position below 1", 0) end
    return tostring(n - 1)
  end
  if name == "" or name:find(".", 1, true) then
    error("io.export: child '" .. name .. "' of " .. where ..
      " has a name torch cannot take (empty or with a '.')", 0)
  end
  return name
end

local function describe(m, name, path)
  local mt = getmetatable(m)
  local rule = type(m) == "table" and rules[mt]
  local where = path == "" and "the network" or "module " .. path
  if not rule then
    local cname = type(mt) == "table" and rawget(mt, "__name")
    error(string.format("io.export: %s is a %s, which export does not know (known: %s)", where,
      type(cname) == "string" and cname or type(m), table.concat(D.known_types(), ", ")), 0)
  end
  local tname, config = rule(m)
  local node = { type = tname, name = name, path = path, config = config, tensors = {}, children = {} }
  for _, field in ipairs { "_params", "_buffers" } do
    for _, key in ipairs(m[field]) do
      local t = m[key]
      if t ~= nil then
        node.tensors[#node.tensors + 1] = { key = key, name = path == "" and key or path .. "." .. key,
          tensor = t:detach():contiguous(), buffer = field == "_buffers" }
      end
    end
  end
  for _, c in ipairs(m._children) do
    local cname = torch_name(c[1], where)
    node.children[#node.children + 1] = describe(c[2], cname, path == "" and cname or path .. "." .. cname)
  end
  return node
end

-- describe(net) -> root node (see the top of this file).
function D.describe(net)
  return describe(net, "", "")
end

-- The shape of one example (without the batch dim) the network reads,
-- guessed from its first layer that fixes one: Linear {in}, Conv2d
-- {C, "height", "width"}, ... Strings are symbolic sizes. nil when no
-- layer says.
function D.input_shape(node)
  local c = node.config
  if node.type == "Linear" then return { c.in_features } end
  if node.type == "Conv2d" then return { c.in_channels, "height", "width" } end
  if node.type == "BatchNorm1d" then return { c.num_features } end
  if node.type == "BatchNorm2d" then return { c.num_features, "height", "width" } end
  if node.type == "LayerNorm" then return { table.unpack(c.normalized_shape) } end
  for _, ch in ipairs(node.children) do
    local s = D.input_shape(ch)
    if s then return s end
    -- a layer that changes the shape before any of those: give up
    if ch.type == "Flatten" or ch.type == "GlobalAvgPool" then return nil end
  end
  return nil
end

return D
