-- firefly.grow.taps: what the baselines read off one forward and backward
-- pass of the network, per growable unit: the producer's input, the
-- pre-activation of the unit's first activation (after its batch norm),
-- ∂L/∂(that activation's output), ∂L/∂(the consumer's output), and the
-- batch norm's per-neuron scale γ/√(var + eps) (evaluation mode).
--
--   local tp = taps.new(net, units)
--   local loss, t = tp:collect(x, y, lf)   -- t[k] for units[k]
--
-- It is the over-grown network (overgrown.lua) with no candidates and its
-- taps set, so it walks every container the way growth does.
local ff = require "firefly"
local overgrown = require "firefly.grow.overgrown"
local units_mod = require "firefly.grow.units"

local T = {}
T.__index = T

local function bn_scale(unit)
  local m = unit.between[1]
  if not (m and m.per_neuron == "norm") or not m.running_var then return nil end
  local scale = (m.running_var + m.eps):pow(-0.5)
  if m.weight then scale = scale * m.weight end
  return scale:detach()
end

function T.new(net, units)
  local og = overgrown.build(net, units, { split = false, new = 0 })
  return setmetatable({ og = og, units = units }, T)
end

-- One forward and backward on (x, y); the network's weights get no
-- gradient (propose freezes them). Returns the loss and the taps.
function T:collect(x, y, lf)
  local og = self.og
  og.taps = {}
  for _, c in ipairs(og.units) do og.taps[c] = {} end
  local loss = lf(og(x), y)
  loss:backward()
  local out = {}
  for k, c in ipairs(og.units) do
    local t = og.taps[c]
    out[k] = {
      input = t.input and t.input:detach(), pre = t.pre,
      act_grad = t.act_probe and t.act_probe.grad,
      out_grad = t.out_probe and t.out_probe.grad,
      bn_scale = bn_scale(c.unit),
    }
  end
  og.taps = nil
  return loss:item(), out
end

return T
