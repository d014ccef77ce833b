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
--
-- Every edit is one row map of the neuron dimension: `src[j]` is the old
-- neuron new neuron j copies (0: a new one). Each tensor indexed by neurons
-- follows it: rows of the producer, per-neuron entries (batch norm, the
-- kernels of a depthwise conv), residual blocks in
-- between (their first layer's input columns, halved for split parents
-- like the consumer's; their last layer's output rows, copied for split
-- children, zero for new neurons, so a block adds the same to both
-- children and nothing to a new neuron), and the consumer's columns.
local ff = require "firefly"
local units = require "firefly.grow.units"

local E = {}


-- {n, 1, 1, ...}: one value per entry of dim `dim` of a rank-`rank` tensor
local function along(dim, n, rank)
  local shape = {}
  for i = 1, rank do shape[i] = 1 end
  shape[dim] = n
  return shape
end

-- t gathered along `dim` by src (1-based; 0 = `fill`), times `scale` (a
-- list, or nil): the one gather every edit is made of.
local function gather(t, dim, src, scale, fill)
  local idx, keep, any_new = {}, {}, false
  for j, s in ipairs(src) do
    idx[j] = s > 0 and s or 1
    keep[j] = s > 0 and (scale and scale[j] or 1) or 0
    any_new = any_new or s == 0
  end
  local out = t:index_select(dim, ff.tensor(idx))
  if scale or any_new then out = out * ff.tensor(keep):view(along(dim, #src, t:dim())) end
  if any_new and fill and fill ~= 0 then
    local f = {}
    for j, s in ipairs(src) do f[j] = s == 0 and fill or 0 end
    out = out + ff.tensor(f):view(along(dim, #src, t:dim()))
  end
  return out
end
E.gather = gather

local function identity_plus(m, src)
  local rows = {}
  for i = 1, m do rows[i] = i end
  for _, s in ipairs(src) do rows[#rows + 1] = s end
  return rows
end

-- The column map of a reader of the neurons (the consumer, or a residual
-- block's first layer): for each old column its source and scale (0.5 for
-- split parents), then the appended columns, `spatial` per neuron.
local function column_map(m, src, spatial)
  local csrc, cscale = {}, {}
  local halved = {}
  for _, s in ipairs(src) do if s > 0 then halved[s] = true end end
  for i = 1, m do
    for k = 1, spatial do
      csrc[#csrc + 1] = (i - 1) * spatial + k
      cscale[#cscale + 1] = halved[i] and 0.5 or 1
    end
  end
  for _, s in ipairs(src) do
    for k = 1, spatial do
      csrc[#csrc + 1] = s > 0 and (s - 1) * spatial + k or 0
      cscale[#cscale + 1] = s > 0 and 0.5 or 1
    end
  end
  return csrc, cscale
end
E.column_map = column_map

-- Replace a module's parameter or buffer by `value`, keeping it a
-- parameter if it was one; returns the remap entry of a parameter.
local function replace(m, name, value, index, scale)
  local old = m[name]
  if not old then return nil end
  if old:requires_grad() then
    m:register_parameter(name, value)
    return { old = old, new = m[name], index = index, scale = scale }
  end
  m[name] = value
  return nil
end

-- Keep the layers' size fields in step with their weights (they print and
-- checkpoint from them).
local function update_sizes(m)
  local w = m.weight
  if m.out_features then m.out_features = w:size(1) end
  if m.out_channels then m.out_channels = w:size(1) end
  if m.in_features then m.in_features = w:size(2) end
  if m.in_channels then m.in_channels = w:size(2) * (m.groups or 1) end
end

-- Every tensor between producer and consumer follows the row map `src`
-- appended to the old neurons.
local function grow_between(unit, m_old, src, entries)
  local rows = identity_plus(m_old, src)
  local function add(e) if e then entries[#entries + 1] = e end end
  for _, m in ipairs(unit.between) do
    if m.per_neuron == "norm" then
      local defaults = { weight = 1, bias = 0, running_mean = 0, running_var = 1 }
      for _, name in ipairs { "weight", "bias", "running_mean", "running_var" } do
        if m[name] then
          add(replace(m, name, gather(m[name]:detach(), 1, rows, nil, defaults[name]), { [1] = rows }))
        end
      end
    elseif m.per_neuron == "depthwise" then
      -- a depthwise conv's kernels are per neuron: split children copy the
      -- parent's, new neurons get the identity-like centre tap (the kernel
      -- the over-grown network scored them with); groups = the new width
      local w = gather(m.weight:detach(), 1, rows)
      local centre = units.depthwise_kernel(m, 1)
      for j, s in ipairs(src) do
        if s == 0 then w:narrow(1, m_old + j, 1):copy_(centre) end
      end
      add(replace(m, "weight", w, { [1] = rows }))
      if m.bias then add(replace(m, "bias", gather(m.bias:detach(), 1, rows), { [1] = rows })) end
      m.groups = #rows
      m.in_channels, m.out_channels = #rows, #rows
    elseif m.container == "residual" then
      local first, last = units.residual_ends(m, m_old)
      local csrc, cscale = column_map(m_old, src, 1)
      add(replace(first, "weight", gather(first.weight:detach(), 2, csrc, cscale), { [2] = csrc }, { [2] = cscale }))
      add(replace(last, "weight", gather(last.weight:detach(), 1, rows), { [1] = rows }))
      if last.bias then add(replace(last, "bias", gather(last.bias:detach(), 1, rows), { [1] = rows })) end
      update_sizes(first); update_sizes(last)
    end
  end
end

-- The consumer's columns after the row map, `fresh` (or zeros) in the
-- appended columns of new neurons.
local function grow_consumer(unit, m_old, src, fresh, entries)
  local c = unit.consumer
  local csrc, cscale = column_map(m_old, src, unit.spatial)
  local w = gather(c.weight:detach(), 2, csrc, cscale)
  if fresh then
    local sp = unit.spatial
    local j = 0
    for k, s in ipairs(src) do
      if s == 0 then
        w:narrow(2, (m_old + k - 1) * sp + 1, sp):copy_(fresh:narrow(2, j * sp + 1, sp))
        j = j + 1
      end
    end
  end
  entries[#entries + 1] = replace(c, "weight", w, { [2] = csrc }, { [2] = cscale })
  update_sizes(c)
end

-- The edit both operations are: the producer's rows follow `src` (then
-- `set_rows(w, b)` writes the appended rows in place), and so does every
-- tensor between and the consumer's columns (`w_out` in those of new
-- neurons). Returns the remap entries.
local function grow_unit(unit, src, set_rows, w_out)
  local p = unit.producer
  local m = p.weight:size(1)
  return ff.no_grad(function()
    local entries = {}
    local rows = identity_plus(m, src)
    local w = gather(p.weight:detach(), 1, rows)
    local b = p.bias and gather(p.bias:detach(), 1, rows)
    set_rows(w, b, m)
    entries[#entries + 1] = replace(p, "weight", w, { [1] = rows })
    if b then entries[#entries + 1] = replace(p, "bias", b, { [1] = rows }) end
    update_sizes(p)
    grow_between(unit, m, src, entries)
    grow_consumer(unit, m, src, w_out, entries)
    return entries
  end)
end

-- E.split(unit, neurons, delta [, delta_bias]) splits the listed neurons
-- (1-based) along directions delta (one row per neuron, shaped like the
-- producer's weight rows, already scaled by ε). Returns the remap entries.
function E.split(unit, neurons, delta, delta_bias)
  local k = #neurons
  if delta:size(1) ~= k then
    error(string.format("grow.split: %d directions for %d neurons", delta:size(1), k), 2)
  end
  local idx = ff.tensor(neurons)
  -- θ + εδ in place of the parent, θ − εδ appended (the rows arrive as
  -- copies of the parents)
  return grow_unit(unit, neurons, function(w, b, m)
    w:index_add_(1, idx, delta)
    w:narrow(1, m + 1, k):sub_(delta)
    if b and delta_bias then
      b:index_add_(1, idx, delta_bias)
      b:narrow(1, m + 1, k):sub_(delta_bias)
    end
  end)
end

-- E.add(unit, w_in [, b_in], w_out) appends k new neurons: w_in has k rows
-- shaped like the producer's weight rows, b_in k entries (zeros if nil),
-- w_out the consumer's new input columns (consumer rows x k*spatial, or
-- for a Conv2d consumer O x k x kh x kw). Returns the remap entries.
function E.add(unit, w_in, b_in, w_out)
  local k = w_in:size(1)
  local src = {}
  for j = 1, k do src[j] = 0 end
  return grow_unit(unit, src, function(w, b, m)
    w:narrow(1, m + 1, k):copy_(w_in)
    if b and b_in then b:narrow(1, m + 1, k):copy_(b_in) end
  end, w_out)
end

return E
