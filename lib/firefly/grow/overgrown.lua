-- firefly.grow.overgrown: the over-grown network of one growth phase, for
-- MLP units (a Linear producer, per-neuron layers, a Linear consumer), as a
-- composition of the engine's differentiable ops. A reference
-- implementation: the fused C operators of the descent will be checked
-- against it.
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

-- φ for existing neurons: every per-neuron layer; for new ones: only the
-- activations (batch-norm entries of new neurons are the identity).
local function phi(unit, z, new)
  for _, m in ipairs(unit.between) do
    local cls = class_of(m)
    if not new or (cls ~= "BatchNorm1d" and cls ~= "Dropout") then z = m(z) end
  end
  return z
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
    if u.kind ~= "Linear" or class_of(u.consumer) ~= "Linear" or u.spatial ~= 1 then
      error("grow.overgrown: unit " .. u.name .. " is not Linear -> Linear (conv units are not supported yet)", 2)
    end
    local m, d = u.producer.weight:size(1), u.producer.weight:size(2)
    local k = u.consumer.weight:size(1)
    local c = { unit = u }
    if opts.split ~= false then
      -- directions of norm eps per row
      local v = ff.randn(m, d, g)
      v = v / v:norm(2, 2, true) * eps
      c.split = { v = v:detach():requires_grad(true), gate = ff.zeros(m):requires_grad(true) }
    end
    local n = opts.new or 0
    if n > 0 then
      c.new = {
        u = (ff.randn(n, d, g) / math.sqrt(d)):requires_grad(true),
        b = ff.zeros(n):requires_grad(true),
        o = (ff.randn(k, n, g) / math.sqrt(n)):requires_grad(true),
        e = ff.full({ n }, eps):requires_grad(true),
        gate = ff.zeros(n):requires_grad(true),
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
    if c.new then
      for _, k in ipairs { "u", "b", "o", "e" } do list[#list + 1] = c.new[k] end
    end
  end
  return list
end

function O:gates()
  local list = {}
  for _, c in ipairs(self.units) do
    if c.split then list[#list + 1] = c.split.gate end
    if c.new then list[#list + 1] = c.new.gate end
  end
  return list
end

-- A unit's producer applied with every candidate: returns the per-neuron
-- output (after φ) and the new neurons' contribution to the consumer's
-- output. `extra` is the previous unit's contribution to this producer's
-- output (units chain: one unit's consumer is the next one's producer).
local function unit_forward(self, c, x, extra)
  local u = c.unit
  local z = ff.linear(x, u.producer.weight, u.producer.bias)
  if extra then z = z + extra end
  local hidden
  if c.split then
    local s = ff.linear(x, c.split.v) * (c.split.gate + self.alpha)
    hidden = (phi(u, z + s) + phi(u, z - s)) * 0.5
  else
    hidden = phi(u, z)
  end
  local contribution
  if c.new then
    local n = c.new
    local a = phi(u, ff.linear(x, n.u, n.b), true)
    contribution = ff.linear(a * (n.e * (n.gate + self.alpha)), n.o)
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
