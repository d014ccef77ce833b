-- firefly.nn.module: the Module base class and the class helper.
--
-- A module is a Lua table whose class is its metatable. Parameters and
-- buffers are ordinary fields (self.weight, self.running_mean) listed by
-- name in self._params / self._buffers, so growth can replace a tensor by a
-- larger one with a plain assignment; children are listed in self._children
-- as {name, module} in order. Names are stable and dotted ("3.weight",
-- "features.1.bias"), so optimiser state and checkpoints can refer to them.
local ff = require "firefly"

local M = {}

local classes = {}

-- Register a class under `name`, optionally inheriting from `parent`.
-- Instances print and serialise under that name.
function M.class(name, parent)
  local cls = {}
  cls.__index = cls
  cls.__name = name
  cls.__call = function(self, ...) return self:forward(...) end
  cls.__tostring = function(self) return self:tostring() end
  if parent then setmetatable(cls, { __index = parent }) end
  classes[name] = cls
  local ok, io = pcall(require, "firefly.io")
  if ok and io.register_class then io.register_class("nn." .. name, cls) end
  return cls
end

function M.classes() return classes end

local Module = M.class("Module")
M.Module = Module

-- Called by every constructor: the bookkeeping fields.
function Module.init(self)
  self._params, self._buffers, self._children = {}, {}, {}
  self.training = true
  return self
end

local function add_name(list, name)
  for _, n in ipairs(list) do if n == name then return end end
  list[#list + 1] = name
end

-- A parameter is a field the optimiser updates; the tensor is made a leaf
-- that requires grad. Assigning self[name] later (growth) keeps the name.
function Module:register_parameter(name, t)
  add_name(self._params, name)
  self[name] = t and t:requires_grad(true) or nil
end

-- A buffer is state that is saved but not trained (running statistics).
function Module:register_buffer(name, t)
  add_name(self._buffers, name)
  self[name] = t
end

function Module:add_child(name, m)
  self._children[#self._children + 1] = { name, m }
  return m
end

-- The module's type as printed ("Linear", "Sequential", ...).
function Module:type_name() return getmetatable(self).__name end

function Module:children()
  local list = {}
  for i, c in ipairs(self._children) do list[i] = c[2] end
  return list
end

-- Depth-first, parents before children: {name, module} with dotted names.
function Module:named_modules(prefix, out)
  out = out or {}
  prefix = prefix or ""
  out[#out + 1] = { prefix, self }
  for _, c in ipairs(self._children) do
    c[2]:named_modules(prefix == "" and c[1] or prefix .. "." .. c[1], out)
  end
  return out
end

local function named(self, field)
  local out = {}
  for _, pair in ipairs(self:named_modules()) do
    local prefix, m = pair[1], pair[2]
    for _, name in ipairs(m[field]) do
      if m[name] ~= nil then
        out[#out + 1] = { name = prefix == "" and name or prefix .. "." .. name, param = m[name] }
      end
    end
  end
  return out
end

function Module:named_parameters() return named(self, "_params") end
function Module:named_buffers() return named(self, "_buffers") end

function Module:parameters()
  local list = {}
  for i, p in ipairs(self:named_parameters()) do list[i] = p.param end
  return list
end

function Module:num_params()
  local n = 0
  for _, p in ipairs(self:parameters()) do n = n + p:numel() end
  return n
end

function Module:zero_grad()
  for _, p in ipairs(self:parameters()) do p.grad = nil end
end

function Module:apply(fn)
  for _, pair in ipairs(self:named_modules()) do fn(pair[2]) end
  return self
end

function Module:train(on)
  if on == nil then on = true end
  return self:apply(function(m) m.training = on end)
end

function Module:eval() return self:train(false) end

function Module:forward()
  error(getmetatable(self).__name .. ": forward is not defined", 2)
end

-- One line for a leaf module; containers override this to print a tree.
function Module:extra_repr() return "" end

function Module:tostring()
  local name = getmetatable(self).__name
  local extra = self:extra_repr()
  return extra == "" and name .. "()" or name .. "(" .. extra .. ")"
end

-- Error messages of a child, prefixed with where it sits.
function M.call_child(parent_name, index, child, ...)
  local ok, a, b, c = pcall(child.forward, child, ...)
  if ok then return a, b, c end
  local msg = tostring(a):gsub("^[^:]*:%d+: ", "")
  error(string.format("in module %s (%s) of %s: %s", tostring(index),
    getmetatable(child).__name, parent_name, msg), 0)
end

-- Uniform(-bound, bound) initialisation from a generator (or the default).
function M.uniform(shape, bound, g)
  return ff.rand(shape, g):mul_(2 * bound):sub_(bound)
end

-- Weight initialisations by name, for the `init` option of Linear and
-- Conv2d: each returns the weight and the bias (or nil) for a layer with
-- the given weight shape, fan-in, fan-out and generator.
--   kaiming_uniform  torch's default: W, b ~ U(±1/sqrt(fan_in))
--   kaiming_normal   He et al. for ReLU: W ~ N(0, 2/fan_in), b = 0
--   xavier_uniform   Glorot: W ~ U(±sqrt(6/(fan_in+fan_out))), b = 0
--   xavier_normal    W ~ N(0, 2/(fan_in+fan_out)), b = 0
--   zeros            W = 0, b = 0 (a new neuron's outgoing weights)
-- A function(wshape, fan_in, fan_out, g) -> W, b may be given instead.
M.inits = {
  kaiming_uniform = function(shape, fan_in, _, g)
    local bound = 1 / math.sqrt(fan_in)
    return M.uniform(shape, bound, g), M.uniform({ shape[1] }, bound, g)
  end,
  kaiming_normal = function(shape, fan_in, _, g)
    return ff.randn(shape, g):mul_(math.sqrt(2 / fan_in)), ff.zeros(shape[1])
  end,
  xavier_uniform = function(shape, fan_in, fan_out, g)
    return M.uniform(shape, math.sqrt(6 / (fan_in + fan_out)), g), ff.zeros(shape[1])
  end,
  xavier_normal = function(shape, fan_in, fan_out, g)
    return ff.randn(shape, g):mul_(math.sqrt(2 / (fan_in + fan_out))), ff.zeros(shape[1])
  end,
  zeros = function(shape) return ff.zeros(shape), ff.zeros(shape[1]) end,
}

function M.initialise(what, init, shape, fan_in, fan_out, g)
  local fn = type(init) == "function" and init or M.inits[init or "kaiming_uniform"]
  if not fn then
    error(string.format("%s: unknown init '%s' (kaiming_uniform, kaiming_normal, xavier_uniform, xavier_normal, zeros, or a function)",
      what, tostring(init)), 4)
  end
  return fn(shape, fan_in, fan_out, g)
end

return M
