-- method = "random": random growth, the paper's simplest baseline. The
-- over-grown network's candidates as drawn: every neuron's split along a
-- random unit direction times `step` (θ ± step·δ), and random new neurons
-- (incoming and outgoing weights of unit variance per input) scaled by
-- `step`; no optimisation, and selection in a uniformly random order
-- (within the budget, as for every method).
local ff = require "firefly"
local overgrown = require "firefly.grow.overgrown"

local M = { name = "random", options = { step = true } }

function M.build(ctx)
  local nb = ctx.nb
  local step = nb.step or 1e-2
  if type(step) ~= "number" or not (step > 0) then
    error("grow.propose: random: step must be a positive number, got " .. tostring(step), 0)
  end
  local g = nb.generator
  -- the neighbourhood's candidates per unit, each drawn at length `step`
  local per_unit = {}
  for k, s in ipairs(ctx.settings) do
    per_unit[k] = { split = s.split, new = s.new, layers = s.layers, eps = step, init = "paper" }
  end
  local og = overgrown.build(ctx.net, ctx.units, { per_unit = per_unit, generator = g })
  -- uniform selection: each candidate's score is a uniform draw, and
  -- selection takes them in that order
  local scores = {}
  for k, c in ipairs(og.units) do
    local entry = {}
    if c.split then entry.split = ff.rand({ c.split.v:size(1) }, g) end
    if c.new then entry.new = ff.rand({ c.new.e:size(1) }, g) end
    if c.layer then entry.layer = ff.rand({ c.layer.e:size(1) }, g) end
    scores[k] = entry
  end
  return {
    og = og, scores = scores, fixed_steps = true,
    order = function(_, list)
      table.sort(list, function(a, b) return a.score > b.score end)
      return list
    end,
    -- no model of the loss: nothing predicted
    predict = function() return 0 end,
  }
end

return M
