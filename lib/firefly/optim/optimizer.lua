-- firefly.optim.optimizer: what every optimiser shares. An optimiser keeps a
-- list of parameter tensors and, per tensor, a small state table (step count
-- and buffers of the parameter's shape). State is never flattened into one
-- vector: growth changes shapes between phases, and remap() rebuilds each
-- tensor's state on its own.
--
-- A kind (SGD, Adam, ...) is a table:
--   name     "SGD"
--   options  list of { name, default, check(v) -> ok, "what is expected" }
--   check    optional function(opts) -> message when a combination of
--            options is invalid (nesterov without momentum ...)
--   buffers  list of { name, order } for the state tensors it may create;
--            order 2 marks averages of squared gradients (remap scales them
--            by the square of the scale)
--   update   function(opts, param, grad, state) doing one step in place
local ff = require "firefly"
local remap = require "firefly.optim.remap"
local options = require "firefly.options"

local Optimizer = {}
Optimizer.__index = Optimizer

local M = { Optimizer = Optimizer }

local shape_str = remap.shape_str

-- ---- option checks, shared by the kinds ----------------------------------

local function finite(v) return type(v) == "number" and v == v and v > -math.huge and v < math.huge end

M.check = {
  nonneg = { function(v) return finite(v) and v >= 0 end, "a number >= 0" },
  -- [0, 1): a decay factor of 1 or more would never forget (or diverge)
  decay = { function(v) return finite(v) and v >= 0 and v < 1 end, "a number in [0, 1)" },
  unit = { function(v) return finite(v) and v >= 0 and v <= 1 end, "a number in [0, 1]" },
  flag = { function(v) return type(v) == "boolean" end, "true or false" },
  betas = { function(v)
    return type(v) == "table" and #v == 2 and finite(v[1]) and finite(v[2])
      and v[1] >= 0 and v[1] < 1 and v[2] >= 0 and v[2] < 1
  end, "a pair {beta1, beta2} of numbers in [0, 1)" },
}

-- An option description: name, default (nil: required), one of M.check.
function M.option(name, default, check)
  return { name = name, default = default, check = check[1], expect = check[2] }
end

-- ---- parameters ----------------------------------------------------------

-- Parameters come as tensors or as { name =, param = } entries (what
-- Module:named_parameters() returns); mixed lists are allowed. Returns the
-- tensors and their names (false for an unnamed tensor).
local function normalise_params(who, params)
  if ff.is_tensor(params) then params = { params } end
  if type(params) ~= "table" then
    error(string.format("%s: params must be a list of tensors or of {name =, param =} entries (got %s)",
      who, type(params)), 3)
  end
  local list, names, seen, seen_name = {}, {}, {}, {}
  for i, entry in ipairs(params) do
    local p, name = entry, false
    if not ff.is_tensor(entry) then
      if type(entry) ~= "table" or not ff.is_tensor(entry.param) then
        error(string.format("%s: params[%d] is neither a tensor nor a {name =, param = tensor} entry", who, i), 3)
      end
      p, name = entry.param, entry.name or false
      if name and type(name) ~= "string" then
        error(string.format("%s: params[%d].name must be a string", who, i), 3)
      end
    end
    local label = name and ("'" .. name .. "'") or ("#" .. i)
    if not p:is_leaf() then
      error(string.format("%s: parameter %s is not a leaf tensor (an op produced it); optimise the tensors it was computed from", who, label), 3)
    end
    if seen[p] then error(string.format("%s: parameter %s appears more than once", who, label), 3) end
    if name and seen_name[name] then error(string.format("%s: two parameters are named '%s'", who, name), 3) end
    seen[p] = true
    if name then seen_name[name] = true end
    list[i], names[i] = p, name
  end
  if #list == 0 then error(who .. ": no parameters to optimise (empty list)", 3) end
  return list, names
end

-- ---- options -------------------------------------------------------------

-- Checks every option value found in `values` (a table keyed by option name)
-- and the kind's combination rules. Raises "<who>: option 'x' must be ...".
local function check_options(kind, who, values, level)
  for _, o in ipairs(kind.options) do
    local v = values[o.name]
    if v == nil then
      error(string.format("%s: option '%s' is required", who, o.name), level + 1)
    end
    local ok = o.check(v)
    if not ok then
      local shown = type(v) == "table" and "a table" or tostring(v)
      error(string.format("%s: option '%s' must be %s (got %s)", who, o.name, o.expect, shown), level + 1)
    end
  end
  if kind.check then
    local msg = kind.check(values)
    if msg then error(who .. ": " .. msg, level + 1) end
  end
end

local function copy_option(v)
  if type(v) == "table" then return { table.unpack(v) } end
  return v
end

-- ---- construction --------------------------------------------------------

-- Builds an optimiser of `kind`: options become plain fields (opt.lr, ...)
-- so schedulers and users can read and write them.
function M.new(kind, params, opts)
  opts = opts or {}
  if type(opts) ~= "table" then error(kind.name .. ": options must be a table", 2) end
  local known = {}
  for _, o in ipairs(kind.options) do known[#known + 1] = o.name end
  options.check(kind.name, opts, known, "option", 2)
  local list, names = normalise_params(kind.name, params)
  local self = setmetatable({ _kind = kind, _params = list, _names = names, _state = {} }, Optimizer)
  for _, o in ipairs(kind.options) do
    local v = opts[o.name]
    if v == nil then v = o.default end
    self[o.name] = copy_option(v)
  end
  check_options(kind, kind.name, self, 2)
  return self
end

-- ---- the public methods --------------------------------------------------

-- The key of parameter i in state_dict: its name, else its position.
function Optimizer:_key(i)
  return self._names[i] or i
end

-- One update of every parameter that has a gradient, in place, without
-- recording. Options are checked again because they are writable fields.
function Optimizer:step()
  local kind = self._kind
  check_options(kind, kind.name .. ".step", self, 2)
  if self:_fused_step(false) ~= false then return end
  ff.no_grad(function()
    for _, p in ipairs(self._params) do
      local g = p.grad
      if g ~= nil then
        local st = self._state[p]
        if not st then
          st = { step = 0 }
          self._state[p] = st
        end
        st.step = st.step + 1
        kind.update(self, p, g, st)
      end
    end
  end)
end

-- The fused step (engine/lua/optim.c): every parameter in one C call, the
-- same bits as kind.update (tests/lua/test_optim_fused.lua), without a
-- dozen tensor ops per parameter. A kind opts in with `fused`, a function
-- (opts, state, param) -> buf1, buf2, buf3, fresh giving the state buffers
-- its rule reads (false where unused; new ones are returned, not stored,
-- until the step succeeds) and whether the first is fresh (SGD's momentum
-- starts at the gradient). Returns false when it cannot run (a kind
-- without it, a non-contiguous tensor, or opt._fused == false, which the
-- tests use to get the Lua rules); else the index of the first parameter
-- whose gradient is not finite when check_finite is set (nothing updated),
-- or nil after updating.
local optim_step = require("firefly.core")._optim_step

function Optimizer:_fused_step(check_finite)
  local kind = self._kind
  if not kind.fused or self._fused == false then return false end
  local entries, index, fresh_bufs, k = {}, {}, {}, 0
  for i, p in ipairs(self._params) do
    local g = p.grad
    if g ~= nil then
      local st = self._state[p] or { step = 0 }
      local b1, b2, b3, fresh = kind.fused(self, st, p)
      if not p:is_contiguous() then return false end
      for _, b in ipairs { b1, b2, b3 } do
        if b and not b:is_contiguous() then return false end
      end
      entries[k + 1], entries[k + 2], entries[k + 3] = p, g, b1
      entries[k + 4], entries[k + 5], entries[k + 6], entries[k + 7] = b2, b3, st.step + 1, fresh or false
      k = k + 7
      index[#index + 1] = i
      fresh_bufs[#fresh_bufs + 1] = { p, st, b1, b2, b3 }
    end
  end
  local bad = optim_step(kind.name, self, entries, check_finite)
  if bad then return index[bad] end
  -- the step happened: keep the state it used
  for _, e in ipairs(fresh_bufs) do
    local p, st = e[1], e[2]
    self._state[p] = st
    st.step = st.step + 1
    kind.keep(st, e[3], e[4], e[5])
  end
  return nil
end

-- opt:step() with the finiteness check of every gradient fused in front:
-- returns the name (or "parameter <i>") of the first parameter whose
-- gradient has a NaN or an infinity, and then updates nothing; else nil.
function Optimizer:step_if_finite()
  local kind = self._kind
  check_options(kind, kind.name .. ".step_if_finite", self, 2)
  local bad = self:_fused_step(true)
  if bad == false then
    for i, p in ipairs(self._params) do
      local g = p.grad
      if g then
        local s = g:sum():item() -- in double: non-finite only from NaN/inf entries
        if s ~= s or s == math.huge or s == -math.huge then bad = i break end
      end
    end
    if not bad then self:step() end
  end
  if bad then return self._names[bad] or ("parameter " .. bad) end
  return nil
end

-- Drops every gradient (.grad = nil), as torch's zero_grad(set_to_none=True):
-- cheaper than filling with zeros, and step() then skips unused params.
function Optimizer:zero_grad()
  for _, p in ipairs(self._params) do p.grad = nil end
end

-- The parameter tensors, in order (a new list).
function Optimizer:params()
  return { table.unpack(self._params) }
end

-- The parameters as { name =, param = } entries (name is nil when unnamed).
function Optimizer:named_params()
  local out = {}
  for i, p in ipairs(self._params) do out[i] = { name = self._names[i] or nil, param = p } end
  return out
end

-- The state table of one parameter ({ step =, <buffer> = tensor ... }) or nil
-- before its first step. The tensors are the live buffers, not copies.
function Optimizer:state_of(p)
  return self._state[p]
end

-- A plain table (numbers, strings, tensors) a checkpoint writer can save.
-- Flags are saved as 0 or 1 so that the table holds nothing else. Tensors
-- are copies, so further steps do not change a saved state_dict.
function Optimizer:state_dict()
  local kind = self._kind
  local options = {}
  for _, o in ipairs(kind.options) do
    local v = self[o.name]
    if type(v) == "boolean" then v = v and 1 or 0 end
    options[o.name] = copy_option(v)
  end
  local keys, state = {}, {}
  for i, p in ipairs(self._params) do
    local key = self:_key(i)
    keys[i] = key
    local st = self._state[p]
    if st then
      local saved = { step = st.step }
      for _, b in ipairs(kind.buffers) do
        if st[b.name] then saved[b.name] = st[b.name]:clone() end
      end
      state[key] = saved
    end
  end
  return { optimizer = kind.name, options = options, params = keys, state = state }
end

-- Restores options and per-parameter state from state_dict(). Parameters are
-- matched by name (or position when unnamed). Everything is checked before
-- anything changes, so a failed load leaves the optimiser as it was.
function Optimizer:load_state_dict(sd)
  local kind = self._kind
  local who = kind.name .. ".load_state_dict"
  if type(sd) ~= "table" then error(who .. ": expected a table from state_dict()", 2) end
  if sd.optimizer ~= kind.name then
    error(string.format("%s: the state_dict is for %s, not %s", who, tostring(sd.optimizer), kind.name), 2)
  end
  if type(sd.options) ~= "table" or type(sd.params) ~= "table" or type(sd.state) ~= "table" then
    error(who .. ": malformed state_dict (needs options, params and state tables)", 2)
  end
  -- options: flags come back from 0/1
  local options = {}
  for _, o in ipairs(kind.options) do
    local v = sd.options[o.name]
    if type(o.default) == "boolean" and type(v) == "number" then v = v ~= 0 end
    options[o.name] = copy_option(v)
  end
  check_options(kind, who, options, 2)
  -- the same parameters on both sides
  local mine = {}
  for i in ipairs(self._params) do mine[self:_key(i)] = i end
  local theirs = {}
  for _, key in ipairs(sd.params) do
    if not mine[key] then
      error(string.format("%s: the state_dict has parameter %s, which this optimiser does not hold",
        who, type(key) == "string" and "'" .. key .. "'" or "#" .. tostring(key)), 2)
    end
    theirs[key] = true
  end
  for key in pairs(mine) do
    if not theirs[key] then
      error(string.format("%s: this optimiser's parameter %s is missing from the state_dict",
        who, type(key) == "string" and "'" .. key .. "'" or "#" .. tostring(key)), 2)
    end
  end
  -- per-parameter state, shapes checked against the parameters
  local new_state = {}
  for key, saved in pairs(sd.state) do
    local i = mine[key]
    local label = type(key) == "string" and "'" .. key .. "'" or "#" .. tostring(key)
    if not i then error(string.format("%s: state for unknown parameter %s", who, label), 2) end
    local p = self._params[i]
    local step = saved.step
    if type(step) ~= "number" or step < 0 or step ~= math.floor(step) then
      error(string.format("%s: parameter %s: step must be a whole number >= 0", who, label), 2)
    end
    local st = { step = math.tointeger(step) }
    for _, b in ipairs(kind.buffers) do
      local t = saved[b.name]
      if t ~= nil then
        if not ff.is_tensor(t) then
          error(string.format("%s: parameter %s: %s must be a tensor", who, label, b.name), 2)
        end
        if shape_str(t) ~= shape_str(p) then
          error(string.format("%s: parameter %s: %s has shape %s, but the parameter has shape %s",
            who, label, b.name, shape_str(t), shape_str(p)), 2)
        end
        st[b.name] = t:clone()
      end
    end
    new_state[p] = st
  end
  for _, o in ipairs(kind.options) do self[o.name] = options[o.name] end
  self._state = new_state
end

-- Carries per-parameter state across growth; see firefly.optim.remap.
-- Forget every parameter's state (momentum, moments, step counts): the
-- released Firefly code's fresh optimiser after growth, without rebuilding.
function Optimizer:reset_state()
  self._state = {}
end

function Optimizer:remap(map)
  remap.apply(self, map, 2)
end

function Optimizer:__tostring()
  local parts = {}
  for _, o in ipairs(self._kind.options) do
    local v = self[o.name]
    if type(v) == "table" then v = "{" .. table.concat(v, ", ") .. "}" end
    parts[#parts + 1] = o.name .. "=" .. tostring(v)
  end
  return string.format("%s(%s; %d params)", self._kind.name, table.concat(parts, ", "), #self._params)
end

return M
