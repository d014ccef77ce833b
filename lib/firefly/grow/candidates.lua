-- firefly.grow.candidates: drawing the candidates of one unit, before
-- step 1 trains them: split directions v = εδ, gated new neurons (incoming
-- weights u, bias b, outgoing weights o, step e), and the neurons of a
-- candidate layer (a residual block I + h at the unit's width), by the
-- paper's initialisation or the released code's (init = "official").
local ff = require "firefly"
local units_mod = require "firefly.grow.units"

local C = {}

local function is_bn(m) return m.per_neuron == "norm" end

-- The shape of the outgoing weights of n new neurons: the consumer's weight
-- with n in its input dim (times `spatial` for a Linear after Flatten).
local function outgoing_shape(unit, n)
  local shape = unit.consumer.weight:size()
  shape[2] = n * (units_mod.is_conv(unit.consumer) and 1 or unit.spatial)
  return shape
end
C.outgoing_shape = outgoing_shape

-- The activation a new layer uses: the unit's own (else ReLU).
local function first_activation(unit)
  for _, m in ipairs(unit.between) do
    if m.act then return m end
  end
  return require("firefly.nn").ReLU()
end

-- Where a unit's candidate layer goes: before between[at] (at = #between
-- + 1: before the consumer). Conv units take it before Flatten or global
-- pooling, where the neurons are still channels.
local function layer_position(unit)
  if unit.conv then
    for k, m in ipairs(unit.between) do
      if m.per_neuron == "flatten" then return k end
    end
    if not units_mod.is_conv(unit.consumer) then return nil end
  elseif units_mod.is_conv(unit.consumer) or unit.spatial ~= 1 then
    return nil
  end
  return #unit.between + 1
end
C.layer_position = layer_position

local function numel_of(shape)
  local n = 1
  for _, d in ipairs(shape) do n = n * d end
  return n
end

-- Gated neurons (new neurons, or a candidate layer's): incoming weights u
-- (k rows), biases b, outgoing weights o (k blocks along dim 2), steps e.
-- The paper's initialisation: u of unit variance per input, o likewise,
-- e = ε (projection then keeps ||(u, b, o)|| <= 1); the released code's:
-- u ~ N(0, 0.1²), o ~ U(−0.01, 0.01), and a unit step (its new neurons
-- are not scaled: the outgoing weights are the step).
function C.gated(k, ushape, oshape, eps, init, g, no_bias)
  local fan_in = numel_of(ushape) // k
  local fan_o = numel_of(oshape) // oshape[1]
  local u, o, e
  if init == "official" then
    u = ff.randn(ushape, g) * 0.1
    o = (ff.rand(oshape, g) * 2 - 1) * 0.01
    e = ff.ones(k)
  else
    u = ff.randn(ushape, g) / math.sqrt(fan_in)
    o = ff.randn(oshape, g) / math.sqrt(fan_o)
    e = ff.full({ k }, eps)
  end
  -- a producer without bias gives its new neurons none (b stays zero)
  return { u = u:requires_grad(true), b = ff.zeros(k):requires_grad(not no_bias), o = o:requires_grad(true),
    e = e:requires_grad(true), gate = ff.zeros(k):requires_grad(true) }
end

-- Split directions v = εδ: random rows of norm ε (paper), or the released
-- code's U(−0.1, 0.1) entries.
function C.split_directions(w, eps, init, g)
  local v
  if init == "official" then
    v = (ff.rand(w:size(), g) * 2 - 1) * 0.1
  else
    local m = w:size(1)
    v = ff.randn(w:size(), g)
    local shape = { m }
    for i = 2, v:dim() do shape[i] = 1 end
    v = v / v:view(m, -1):norm(2, 2):view(shape) * eps
  end
  return { v = v:detach():requires_grad(true), gate = ff.zeros(w:size(1)):requires_grad(true) }
end

function C.layer(u, k, eps, init, g)
  local at = layer_position(u)
  if not at then
    error("grow.overgrown: unit " .. u.name .. " takes no new layer (its neurons are flattened into a "
      .. units_mod.display_name(u.consumer) .. ")", 3)
  end
  local w = u.producer.weight:size(1)
  local L
  if u.conv then
    L = C.gated(k, { k, w, 3, 3 }, { w, k, 3, 3 }, eps, init, g)
    L.conv = true
    for _, m in ipairs(u.between) do if is_bn(m) then L.bn = true end end
  else
    L = C.gated(k, { k, w }, { w, k }, eps, init, g)
  end
  L.at, L.act = at, first_activation(u)
  return L
end

return C
