-- firefly.grow: growing networks by Firefly neural architecture descent.
--
-- This is being built in steps (see spec/grow.md). Available now: finding
-- the growable units of a network, materialising splits and new neurons
-- with the optimiser remap they need, and the reference over-grown network
-- of MLP units with its gates.
local units = require "firefly.grow.units"
local edit = require "firefly.grow.edit"
local overgrown = require "firefly.grow.overgrown"
local propose = require "firefly.grow.propose"
local run = require "firefly.grow.run"
local recipe = require "firefly.grow.recipe"

local grow = {}

grow.units = units.units
grow.width = units.width
grow.split = edit.split
grow.add = edit.add
grow.overgrown = overgrown.build
grow.propose = propose.propose
grow.run = run.run
grow.recipe = recipe

-- Neighbourhood presets (firefly-method.md sections 3 and 4): the paper's
-- method (the defaults), and the released code's behaviour: 70 new-neuron
-- candidates per unit, RMSprop (lr 1e-3, alpha 0.9, momentum 0.1) for one
-- pass, an L2 penalty instead of the constraints, endpoint scores, the most
-- negative scores kept with their trained steps. Its budget is 0.35 of the
-- neurons (eta = {ratio = 0.35}) and it restarts the optimiser after growth
-- (grow.run's reset_optim).
grow.presets = {
  paper = { split = true, new = 16, eps = 1e-2, steps = 1, lr = 1e-3, rule = "endpoint",
    project = true, selection = "paper" },
  official = { split = true, new = 70, eps = 1e-2, steps = 1, lr = 1e-3, optimizer = "rmsprop",
    project = false, penalty = 1e-2, rule = "endpoint", selection = "official" },
}

-- A neighbourhood: a preset's fields overridden by `opts`
-- (grow.neighbourhood("official", {new = 32})).
function grow.neighbourhood(preset, opts)
  if type(preset) == "table" then preset, opts = "paper", preset end
  local base = grow.presets[preset or "paper"]
  if not base then error("grow.neighbourhood: unknown preset '" .. tostring(preset) .. "'", 2) end
  local nb = {}
  for k, v in pairs(base) do nb[k] = v end
  for k, v in pairs(opts or {}) do nb[k] = v end
  return nb
end

return grow
