-- firefly.grow.overgrown: the over-grown network of one growth phase, as a
-- composition of the engine's differentiable ops, for units of Linear and
-- Conv2d layers in the top-level Sequential (a producer, per-neuron layers,
-- a consumer; see units.lua). A reference implementation: the fused C
-- operators of the descent will be checked against it.
--
-- Around each unit, every candidate edit is present at once:
--   split of neuron i   ½[φ(z_i + s_i) + φ(z_i − s_i)], s_i = (α + y_i)·(x·v_iᵀ)
--                       with v_i = ε_i δ_i (a row shaped like the producer's
--                       weight row), in place of φ(z_i)
--   new neuron j        (α + y'_j)·e_j·φ(x·u_jᵀ + c_j) added through outgoing
--                       weights o_j into the consumer's output
-- where φ is the unit's per-neuron layers (batch norm in evaluation mode,
-- the activation), new neurons see only the activation (their batch norm
-- starts as the identity), and y, y' are gates held at 0: one backward pass
-- gives ∂L/∂y for every candidate, the gate trick of the paper. α scales
-- every perturbation at once (α = 1: the endpoint rule; α in
-- {(2k−1)/2g}: the midpoint rule's points).
local ff = require "firefly"

local O = {}
O.__index = O

local function class_of(m) return getmetatable(m).__name end

-- φ for existing neurons: every per-neuron layer.
local function phi(unit, z)
  for _, m in ipairs(unit.between) do z = m(z) end
  return z
end

-- A new neuron's output times its step, `scale` (one value per neuron):
-- the activations and pooling of the unit, but not its batch norm (a new
-- neuron's entries are the identity) nor dropout; the scale is applied
-- before Flatten or GlobalAvgPool and after any max pooling (which does not
-- commute with a negative scale).
local function phi_new(unit, z, scale)
  local scaled = false
  local function apply_scale(t)
    scaled = true
    if t:dim() == 4 then return t * scale:view(1, scale:size(1), 1, 1) end
    return t * scale
  end
  for _, m in ipairs(unit.between) do
    local cls = class_of(m)
    if cls == "Flatten" or cls == "GlobalAvgPool" then
      if not scaled then z = apply_scale(z) end
      z = m(z)
    elseif cls ~= "BatchNorm1d" and cls ~= "BatchNorm2d" and cls ~= "Dropout" then
      z = m(z)
    end
  end
  if not scaled then z = apply_scale(z) end
  return z
end

-- The producer's op on x with weight w and bias b (conv options shared).
local function produce(unit, x, w, b)
  local p = unit.producer
  if unit.kind == "Linear" then return ff.linear(x, w, b) end
  return ff.conv2d(x, w, b, { stride = p.stride, padding = p.padding, dilation = p.dilation })
end

-- The consumer's op on the new neurons' (scaled) outputs with weights o.
local function consume(unit, a, o)
  local c = unit.consumer
  if class_of(c) == "Linear" then return ff.linear(a, o) end
  return ff.conv2d(a, o, nil, { stride = c.stride, padding = c.padding, dilation = c.dilation })
end

-- Per-channel gate/step as a tensor broadcasting over z's layout.
local function per_neuron(t, z)
  if z:dim() == 4 then return t:view(1, t:size(1), 1, 1) end
  return t
end

-- The shape of the outgoing weights of n new neurons: the consumer's weight
-- with n in its input dim (times `spatial` for a Linear after Flatten).
local function outgoing_shape(unit, n)
  local shape = unit.consumer.weight:size()
  shape[2] = n * (class_of(unit.consumer) == "Linear" and unit.spatial or 1)
  return shape
end

-- The activation a new layer uses: the unit's own (else ReLU).
local function first_activation(unit)
  for _, m in ipairs(unit.between) do
    if m.act then return m end
  end
  return require("firefly.nn").ReLU()
end

-- {m, 1, 1, ...}: one value per row of a weight of v's rank
local function per_row_shape(v)
  local shape = { v:size(1) }
  for i = 2, v:dim() do shape[i] = 1 end
  return shape
end

-- O.build(net, units, opts) -> over-grown network
-- opts: split (true), new (number of new-neuron candidates per unit, 0),
-- eps (initial |ε|, 1e-2), generator.
function O.build(net, units, opts)
  opts = opts or {}
  local g = opts.generator
  local eps = opts.eps or 1e-2
  local self = setmetatable({ net = net, units = {}, alpha = 1 }, O)
  for _, u in ipairs(units) do
    local row = u.producer.weight:size()      -- m x fan-in shape
    local m = table.remove(row, 1)
    local fan_in = 1
    for _, d in ipairs(row) do fan_in = fan_in * d end
    local c = { unit = u }
    if opts.split ~= false then
      -- random directions, rows of norm eps
      local v = ff.randn(u.producer.weight:size(), g)
      v = v / v:view(m, -1):norm(2, 2):view(per_row_shape(v)) * eps
      c.split = { v = v:detach():requires_grad(true), gate = ff.zeros(m):requires_grad(true) }
    end
    local n = opts.new or 0
    if n > 0 then
      local ushape = { n, table.unpack(row) }
      local oshape = outgoing_shape(u, n)
      local fan_o = 1
      for i = 2, #oshape do fan_o = fan_o * oshape[i] end
      c.new = {
        u = (ff.randn(ushape, g) / math.sqrt(fan_in)):requires_grad(true),
        b = ff.zeros(n):requires_grad(true),
        o = (ff.randn(oshape, g) / math.sqrt(fan_o)):requires_grad(true),
        e = ff.full({ n }, eps):requires_grad(true),
        gate = ff.zeros(n):requires_grad(true),
      }
    end
    local nl = opts.layers or 0
    if nl > 0 then
      if class_of(u.consumer) ~= "Linear" or u.spatial ~= 1 or u.kind ~= "Linear" then
        error("grow.overgrown: new layers are supported between Linear layers only (unit " .. u.name .. ")", 2)
      end
      -- a residual layer I + h before the consumer: h(z) = Σ_j e_j act(z u_jᵀ + c_j) o_j
      c.layer = {
        u = (ff.randn(nl, m, g) / math.sqrt(m)):requires_grad(true),
        b = ff.zeros(nl):requires_grad(true),
        o = (ff.randn(m, nl, g) / math.sqrt(nl)):requires_grad(true),
        e = ff.full({ nl }, eps):requires_grad(true),
        gate = ff.zeros(nl):requires_grad(true),
        act = first_activation(u),
      }
    end
    self.units[#self.units + 1] = c
  end
  -- where each unit starts and ends in the top-level Sequential
  self.at = {}
  for idx, cand in ipairs(self.units) do
    local first, last
    for i, ch in ipairs(net._children) do
      if ch[2] == cand.unit.producer then first = i end
      if ch[2] == cand.unit.consumer then last = i end
    end
    if not first or not last then
      error("grow.overgrown: unit " .. cand.unit.name .. " is not in the top-level Sequential", 2)
    end
    self.at[first] = { idx = idx, last = last }
  end
  return self
end

-- The perturbation tensors step 1 optimises (ε and δ of every candidate).
function O:perturbations()
  local list = {}
  for _, c in ipairs(self.units) do
    if c.split then list[#list + 1] = c.split.v end
    for _, kind in ipairs { "new", "layer" } do
      if c[kind] then
        for _, k in ipairs { "u", "b", "o", "e" } do list[#list + 1] = c[kind][k] end
      end
    end
  end
  return list
end

function O:gates()
  local list = {}
  for _, c in ipairs(self.units) do
    if c.split then list[#list + 1] = c.split.gate end
    if c.new then list[#list + 1] = c.new.gate end
    if c.layer then list[#list + 1] = c.layer.gate end
  end
  return list
end

-- A unit's producer applied with every candidate: returns the per-neuron
-- output (after φ) and the new neurons' contribution to the consumer's
-- output. `extra` is the previous unit's contribution to this producer's
-- output (units chain: one unit's consumer is the next one's producer).
local function unit_forward(self, c, x, extra)
  local u = c.unit
  local z = produce(u, x, u.producer.weight, u.producer.bias)
  if extra then z = z + extra end
  local hidden
  if c.split then
    local s = produce(u, x, c.split.v) * per_neuron(c.split.gate + self.alpha, z)
    hidden = (phi(u, z + s) + phi(u, z - s)) * 0.5
  else
    hidden = phi(u, z)
  end
  if c.layer then -- the candidate layer I + h, before the consumer
    local L = c.layer
    hidden = hidden + ff.linear(L.act(ff.linear(hidden, L.u, L.b)) * (L.e * (L.gate + self.alpha)), L.o)
  end
  local contribution
  if c.new then
    local n = c.new
    local a = phi_new(u, produce(u, x, n.u, n.b), n.e * (n.gate + self.alpha))
    contribution = consume(u, a, n.o)
  end
  return hidden, contribution
end

-- The over-grown network's output for input x.
function O:forward(x)
  local kids = self.net._children
  local extra -- new neurons' contribution waiting for its consumer
  local i = 1
  while i <= #kids do
    local at = self.at[i]
    if at then
      x, extra = unit_forward(self, self.units[at.idx], x, extra)
      i = at.last -- the consumer comes next: it takes `extra`
    else
      x = kids[i][2](x)
      if extra then x = x + extra; extra = nil end
      i = i + 1
    end
  end
  return x
end

O.__call = function(self, x) return self:forward(x) end

return O
