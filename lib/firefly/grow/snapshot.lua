-- firefly.grow.snapshot: all-or-nothing edits of a network and its
-- optimiser.
--
--   local s = snapshot.take(net, opt, {generator})
--   ... edits that may fail half-way ...
--   snapshot.restore(s)   -- net, opt and the generators exactly as taken
--
-- Growth replaces tensors (a grown weight is a new tensor assigned to the
-- module) and inserts modules, and some methods also write into existing
-- tensors in place (NASH copies its winner's weights in). So a snapshot
-- keeps both: every module's fields (its child list and parameter names
-- copied one level down) and a copy of the data of every parameter, buffer
-- and optimiser buffer, which restore writes back into the same tensor
-- objects: whoever holds a reference to a parameter still holds the
-- network's parameter afterwards. The random streams are part of it too,
-- so a failed apply followed by a good one draws what a single good apply
-- would have.
local ff = require "firefly"

local S = {}

local function copy_table(t, depth)
  local out = {}
  for k, v in pairs(t) do
    if depth > 1 and type(v) == "table" and getmetatable(v) == nil then v = copy_table(v, depth - 1) end
    out[k] = v
  end
  return out
end

-- A module's fields: plain tables (child lists and their {name, module}
-- pairs, parameter and buffer names, options) copied, modules and tensors
-- by reference.
local function module_fields(m)
  local f = {}
  for k, v in pairs(m) do
    if type(v) == "table" and getmetatable(v) == nil then v = copy_table(v, 2) end
    f[k] = v
  end
  return f
end

local function set_fields(obj, fields)
  for k in pairs(obj) do obj[k] = nil end
  for k, v in pairs(fields) do obj[k] = v end
end

function S.take(net, opt, generators)
  local s = { modules = {}, data = {}, opt = opt, generators = {} }
  local function keep(t)
    if ff.is_tensor(t) and not s.data[t] then s.data[t] = t:detach():clone() end
  end
  for _, pair in ipairs(net:named_modules()) do
    local m = pair[2]
    s.modules[#s.modules + 1] = { m, module_fields(m) }
    for _, list in ipairs { m._params, m._buffers } do
      for _, name in ipairs(list) do keep(m[name]) end
    end
  end
  if opt then
    s.opt_fields = module_fields(opt)
    for _, st in pairs(opt._state or {}) do
      for _, v in pairs(st) do keep(v) end
    end
  end
  s.rng = ff.get_rng_state()
  for _, g in ipairs(generators or {}) do
    if g ~= nil and type(g) ~= "number" then s.generators[#s.generators + 1] = { g, g:get_state() } end
  end
  return s
end

-- Fields are copied again on the way back, so one snapshot can be
-- restored more than once (apply's trial pass, then a failure).
function S.restore(s)
  for _, e in ipairs(s.modules) do set_fields(e[1], module_fields(e[2])) end
  if s.opt then set_fields(s.opt, module_fields(s.opt_fields)) end
  ff.no_grad(function()
    for t, copy in pairs(s.data) do t:copy_(copy) end
  end)
  ff.set_rng_state(s.rng)
  for _, e in ipairs(s.generators) do e[1]:set_state(e[2]) end
end

return S
