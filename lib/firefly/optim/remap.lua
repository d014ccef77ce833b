-- firefly.optim.remap: carries an optimiser's per-parameter state across a
-- layer that grew. Growth gives, for each changed parameter, which old entry
-- each new entry comes from along the dims that changed; every state tensor
-- of the old parameter (momentum, Adam moments, ...) is rebuilt the same way
-- with index_select, so momentum survives growth instead of being lost.
local ff = require "firefly"

local M = {}

-- "3x2", as in the engine's messages
local function shape_str(t)
  local s = t:size()
  return #s == 0 and "scalar" or table.concat(s, "x")
end
M.shape_str = shape_str

-- A list of numbers from a table or a 1-D tensor.
local function as_list(v)
  if ff.is_tensor(v) then
    if v:dim() ~= 1 then return nil end
    return v:totable()
  end
  if type(v) ~= "table" then return nil end
  return v
end

local function is_dim(d, rank)
  return math.type(d) == "integer" and d >= 1 and d <= rank
end

-- Checks one entry against the old and new shapes and returns the per-dim
-- plan: for each dim in order { dim, src (1-based, 0 = none), mask (list of
-- 0/1 when some src is 0), scale (list or nil) }.
local function plan_entry(fail, e, old, new)
  local os, ns = old:size(), new:size()
  if #os ~= #ns then
    fail("the old param has shape %s and the new one %s: their ranks differ", shape_str(old), shape_str(new))
  end
  local rank = #ns
  local index, scale = e.index or {}, e.scale or {}
  if type(index) ~= "table" then fail("index must be a table { [dim] = {src, ...} }") end
  if type(scale) ~= "table" then fail("scale must be a table { [dim] = {s, ...} }") end
  local plan = {}
  for d, v in pairs(index) do
    if not is_dim(d, rank) then fail("index has dim %s, expected 1..%d", tostring(d), rank) end
    local src = as_list(v)
    if not src then fail("index[%d] must be a list of positions or a 1-D tensor", d) end
    if #src ~= ns[d] then
      fail("index[%d] has %d entries, but the new param (%s) has size %d along dim %d",
        d, #src, shape_str(new), ns[d], d)
    end
    local safe, mask, any_zero = {}, {}, false
    for k, s in ipairs(src) do
      if math.type(s) ~= "integer" and not (type(s) == "number" and s == math.floor(s)) then
        fail("index[%d][%d] is not a whole number (%s)", d, k, tostring(s))
      end
      s = math.tointeger(s)
      if s < 0 or s > os[d] then
        fail("index[%d][%d] = %d is out of range: the old param (%s) has size %d along dim %d (0 means a new entry)",
          d, k, s, shape_str(old), os[d], d)
      end
      -- a 0 (new entry) still needs some valid source for index_select; the
      -- mask then zeroes it (a mask, not a multiply, so inf/nan cannot leak)
      safe[k], mask[k] = s == 0 and 1 or s, s == 0 and 0 or 1
      if s == 0 then any_zero = true end
    end
    plan[d] = { dim = d, src = safe, mask = any_zero and mask or nil, none = os[d] == 0 }
  end
  for d, v in pairs(scale) do
    if not is_dim(d, rank) then fail("scale has dim %s, expected 1..%d", tostring(d), rank) end
    local s = as_list(v)
    if not s then fail("scale[%d] must be a list of numbers or a 1-D tensor", d) end
    if #s ~= ns[d] then
      fail("scale[%d] has %d entries, but the new param (%s) has size %d along dim %d",
        d, #s, shape_str(new), ns[d], d)
    end
    for k, x in ipairs(s) do
      if type(x) ~= "number" then fail("scale[%d][%d] is not a number", d, k) end
    end
    plan[d] = plan[d] or { dim = d }
    plan[d].scale = s
  end
  for d = 1, rank do
    if not index[d] and os[d] ~= ns[d] then
      fail("dim %d has size %d in the old param (%s) and %d in the new one (%s), and index gives no map for it",
        d, os[d], shape_str(old), ns[d], shape_str(new))
    end
  end
  local ordered = {}
  for d = 1, rank do if plan[d] then ordered[#ordered + 1] = plan[d] end end
  return ordered
end

-- A 1-D list as a tensor broadcasting along dim d of a rank-r tensor.
local function along(list, d, r)
  local shape = {}
  for i = 1, r do shape[i] = 1 end
  shape[d] = #list
  return ff.tensor(list):view(shape)
end

-- The state tensor t rebuilt for the new shape. order 2 (averages of squared
-- gradients) takes the square of the scale, so that the state is that of
-- gradients scaled by s and Adam's m / sqrt(v) keeps its value.
local function rebuild(t, plan, order)
  local out, r = t, t:dim()
  for _, op in ipairs(plan) do
    if op.src then
      if op.none then
        -- the old dim is empty: every entry is new (all sources were 0)
        local shape = out:size()
        shape[op.dim] = #op.src
        out = ff.zeros(shape)
      else
        out = out:index_select(op.dim, op.src)
      end
      if op.mask then out = ff.where(along(op.mask, op.dim, r), out, 0) end
    end
    if op.scale then
      local s = op.scale
      if order == 2 then
        s = {}
        for k, x in ipairs(op.scale) do s[k] = x * x end
      end
      out = out * along(s, op.dim, r)
    end
  end
  if out == t then out = t:clone() end
  return out
end

-- opt:remap(map): see spec/optim.md. All entries are checked and all new
-- states built before the optimiser changes, so an error leaves it intact.
function M.apply(opt, map, level)
  local kind = opt._kind
  local who = kind.name .. ".remap"
  if type(map) ~= "table" then error(who .. ": map must be a list of {old =, new =, index =} entries", level + 1) end
  if map.new ~= nil then map = { map } end -- a single entry
  local pos = {}
  for i, p in ipairs(opt._params) do pos[p] = i end
  local used_old, used_new, plans = {}, {}, {}
  for k, e in ipairs(map) do
    local label = "entry " .. k
    local function fail(fmt, ...)
      error(string.format("%s: %s: " .. fmt, who, label, ...), level + 2)
    end
    if type(e) ~= "table" then fail("expected a table {old =, new =, index =}") end
    if not ff.is_tensor(e.new) then fail("new must be a tensor") end
    if not e.new:is_leaf() then fail("the new param is not a leaf tensor") end
    if e.name ~= nil and type(e.name) ~= "string" then fail("name must be a string") end
    local i
    if e.old ~= nil then
      if not ff.is_tensor(e.old) then fail("old must be a tensor or nil") end
      i = pos[e.old]
      if not i then fail("the old param (shape %s) is not held by this optimiser", shape_str(e.old)) end
      if opt._names[i] then label = label .. " ('" .. opt._names[i] .. "')" end
      if used_old[e.old] then fail("the old param appears in two entries") end
      used_old[e.old] = true
    end
    if pos[e.new] and e.new ~= e.old then fail("the new param (shape %s) is already held by this optimiser", shape_str(e.new)) end
    if used_new[e.new] then fail("the new param appears in two entries") end
    used_new[e.new] = true
    local name = e.name or (i and opt._names[i]) or false
    local new_state
    if e.old ~= nil then
      local plan = plan_entry(fail, e, e.old, e.new)
      local st = opt._state[e.old]
      if st then
        new_state = { step = st.step }
        for _, b in ipairs(kind.buffers) do
          if st[b.name] then new_state[b.name] = rebuild(st[b.name], plan, b.order) end
        end
      end
    end
    plans[k] = { pos = i, old = e.old, new = e.new, name = name, state = new_state }
  end
  -- names stay unique
  local names = { table.unpack(opt._names) }
  local n = #opt._params
  for _, pl in ipairs(plans) do
    if pl.pos then names[pl.pos] = pl.name else n = n + 1; names[n] = pl.name end
  end
  local seen = {}
  for _, name in ipairs(names) do
    if name then
      if seen[name] then error(string.format("%s: two parameters would be named '%s'", who, name), level + 1) end
      seen[name] = true
    end
  end
  -- commit
  for _, pl in ipairs(plans) do
    if pl.old ~= nil then
      opt._state[pl.old] = nil
      opt._params[pl.pos] = pl.new
    else
      opt._params[#opt._params + 1] = pl.new
    end
    opt._state[pl.new] = pl.state
  end
  opt._names = names
end

return M
