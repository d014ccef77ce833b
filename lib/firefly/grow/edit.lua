-- firefly.grow.edit: materialising growth on a unit (see units.lua):
-- splitting existing neurons and adding new ones, in place, with the index
-- map that carries optimiser state across (opt:remap).
--
-- split: neuron i becomes two children with incoming weights θ_i + ε δ_i
-- (kept at position i) and θ_i − ε δ_i (appended); each child gets half of
-- the parent's outgoing weights; batch-norm entries are duplicated. With
-- ε δ = 0 the network computes the same function.
-- add: new neurons with incoming weights (and bias) and outgoing weights;
-- their batch-norm entries start as the identity (γ = 1, β = 0, mean 0,
-- var 1). With zero outgoing weights the function is unchanged.
local ff = require "firefly"

local E = {}

local function class_of(m) return getmetatable(m).__name end

-- rows of t (along dim 1) followed by `extra` (a tensor with the same
-- trailing shape, or nil)
local function append_rows(t, extra)
  if not extra or extra:size(1) == 0 then return t:clone() end
  return ff.cat({ t, extra }, 1)
end

-- Columns of a consumer weight for neuron i (1-based): the `spatial`
-- consecutive input features of a Linear after Flatten, or input channel
-- i of a Conv2d / Linear (spatial = 1).
local function columns(consumer, i, spatial)
  return consumer.weight:narrow(2, (i - 1) * spatial + 1, spatial)
end

-- Replace the per-neuron entries of every layer between producer and
-- consumer: rows `src` (1-based, 0 = identity entry) appended.
local function grow_between(unit, src)
  for _, m in ipairs(unit.between) do
    local cls = class_of(m)
    if cls == "BatchNorm1d" or cls == "BatchNorm2d" then
      local defaults = { weight = 1, bias = 0, running_mean = 0, running_var = 1 }
      for name, d in pairs(defaults) do
        local t = m[name]
        if t then
          local extra = ff.full({ #src }, d)
          for k, s in ipairs(src) do if s > 0 then extra[k] = t[s] end end
          local grown = append_rows(t:detach(), extra)
          if t:requires_grad() then m:register_parameter(name, grown) else m[name] = grown end
        end
      end
    end
  end
end

local function identity_index(n)
  local idx = {}
  for i = 1, n do idx[i] = i end
  return idx
end

-- The optimiser map for one grown unit: producer rows and BN entries follow
-- `src` (0 = new), consumer columns follow `csrc` with `cscale`.
local function remap_entries(unit, old, src, csrc, cscale)
  local entries = {}
  local rows = identity_index(old.m)
  for _, s in ipairs(src) do rows[#rows + 1] = s end
  entries[#entries + 1] = { old = old.pw, new = unit.producer.weight, index = { [1] = rows } }
  if old.pb then entries[#entries + 1] = { old = old.pb, new = unit.producer.bias, index = { [1] = rows } } end
  for k, m in ipairs(unit.between) do
    for _, name in ipairs { "weight", "bias" } do
      if old.bn[k] and old.bn[k][name] then
        entries[#entries + 1] = { old = old.bn[k][name], new = m[name], index = { [1] = rows } }
      end
    end
  end
  entries[#entries + 1] = { old = old.cw, new = unit.consumer.weight, index = { [2] = csrc }, scale = { [2] = cscale } }
  return entries
end

-- Keep the layers' size fields in step with their weights (they print and
-- checkpoint from them).
local function update_sizes(unit)
  local p, c = unit.producer, unit.consumer
  local m = p.weight:size(1)
  if p.out_features then p.out_features = m end
  if p.out_channels then p.out_channels = m end
  if c.in_features then c.in_features = c.weight:size(2) end
  if c.in_channels then c.in_channels = c.weight:size(2) * c.groups end
end

local function snapshot(unit)
  local old = { pw = unit.producer.weight, pb = unit.producer.bias, cw = unit.consumer.weight,
    m = unit.producer.weight:size(1), bn = {} }
  for k, m in ipairs(unit.between) do
    if m.weight or m.bias then old.bn[k] = { weight = m.weight, bias = m.bias } end
  end
  return old
end

-- The consumer's new input columns: for each old column c, its source c
-- and scale (0.5 for split parents); then the appended blocks.
local function consumer_columns(unit, old, parents, new_blocks)
  local sp = unit.spatial
  local csrc, cscale = {}, {}
  local halved = {}
  for _, i in ipairs(parents) do halved[i] = true end
  for i = 1, old.m do
    for s = 1, sp do
      local c = (i - 1) * sp + s
      csrc[#csrc + 1] = c
      cscale[#cscale + 1] = halved[i] and 0.5 or 1
    end
  end
  for _, b in ipairs(new_blocks) do
    for s = 1, sp do
      csrc[#csrc + 1] = b > 0 and (b - 1) * sp + s or 0
      cscale[#cscale + 1] = b > 0 and 0.5 or 1
    end
  end
  return csrc, cscale
end

-- E.split(unit, neurons, delta [, delta_bias]) splits the listed neurons
-- (1-based) along directions delta (one row per neuron, shaped like the
-- producer's weight rows, already scaled by ε). Returns the remap entries.
function E.split(unit, neurons, delta, delta_bias)
  local p, c = unit.producer, unit.consumer
  local k = #neurons
  if delta:size(1) ~= k then
    error(string.format("grow.split: %d directions for %d neurons", delta:size(1), k), 2)
  end
  local old = snapshot(unit)
  return ff.no_grad(function()
    local idx = ff.tensor(neurons)
    local rows = p.weight:index_select(1, idx)
    local w = p.weight:detach():clone()
    w:index_add_(1, idx, delta)                        -- θ + εδ in place of the parent
    p:register_parameter("weight", append_rows(w, rows - delta)) -- θ − εδ appended
    if p.bias then
      local b = p.bias:detach():clone()
      local rb = p.bias:index_select(1, idx)
      local db = delta_bias or ff.zeros(k)
      b:index_add_(1, idx, db)
      p:register_parameter("bias", append_rows(b, rb - db))
    end
    grow_between(unit, neurons)
    -- consumer: parents' columns halved, the halves appended for the children
    local cw = c.weight:detach():clone()
    local halves = {}
    for j, i in ipairs(neurons) do
      local col = columns({ weight = cw }, i, unit.spatial)
      col:mul_(0.5)
      halves[j] = col:clone()
    end
    c:register_parameter("weight", ff.cat({ cw, table.unpack(halves) }, 2))
    update_sizes(unit)
    local csrc, cscale = consumer_columns(unit, old, neurons, neurons)
    return remap_entries(unit, old, neurons, csrc, cscale)
  end)
end

-- E.add(unit, w_in [, b_in], w_out) appends k new neurons: w_in has k rows
-- shaped like the producer's weight rows, b_in k entries (zeros if nil),
-- w_out the consumer's new input columns (consumer rows x k*spatial, or
-- for a Conv2d consumer O x k x kh x kw). Returns the remap entries.
function E.add(unit, w_in, b_in, w_out)
  local p, c = unit.producer, unit.consumer
  local k = w_in:size(1)
  local old = snapshot(unit)
  return ff.no_grad(function()
    p:register_parameter("weight", append_rows(p.weight:detach(), w_in))
    if p.bias then p:register_parameter("bias", append_rows(p.bias:detach(), b_in or ff.zeros(k))) end
    local src = {}
    for j = 1, k do src[j] = 0 end
    grow_between(unit, src)
    c:register_parameter("weight", ff.cat({ c.weight:detach(), w_out }, 2))
    update_sizes(unit)
    local csrc, cscale = consumer_columns(unit, old, {}, src)
    return remap_entries(unit, old, src, csrc, cscale)
  end)
end

return E
