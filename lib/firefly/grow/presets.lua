-- firefly.grow.presets: the paper's method and the released code's, as
-- named settings.
local firefly = require "firefly.grow.methods.firefly"

local P = {}

-- The paper's
-- method (the defaults), and the released code's behaviour: 70 new-neuron
-- candidates per unit initialised as it does, RMSprop (lr 1e-3, alpha 0.9,
-- momentum 0.1) for one pass over the whole training set, an L2 penalty
-- instead of the constraints, endpoint scores over one more pass, the most
-- negative gate gradients kept with their trained steps, int(0.35 n) + 1
-- of them, zero outgoing weights for the last conv layer's new neurons,
-- and the optimiser's state forgotten after growth. What a preset says of
-- the run rather than of the step (the budget, the batches the step
-- uses, the optimiser's state) is in grow.run_presets: grow.run{preset =
-- "official"} takes both.
P.presets = {
  paper = { split = true, new = 16, eps = 1e-2, steps = 1, lr = 1e-3, rule = firefly.DEFAULT_RULE,
    points = firefly.DEFAULT_POINTS,
    project = true, selection = "paper", init = "paper" },
  official = { split = true, new = 70, eps = 1e-2, steps = 1, lr = 1e-3, optimizer = "rmsprop",
    project = false, penalty = 1e-2, rule = "endpoint", selection = "official", init = "official",
    last_conv_zero_out = true },
}
P.run_presets = {
  paper = {},
  official = { score_batches = "all", eta = { ratio = 0.35, inclusive = true }, reset_optim = true },
}

-- A neighbourhood: a preset's fields overridden by `opts`
-- (grow.neighbourhood("official", {new = 32})).
function P.neighbourhood(preset, opts)
  if type(preset) == "table" then preset, opts = "paper", preset end
  local base = P.presets[preset or "paper"]
  if not base then error("grow.neighbourhood: unknown preset '" .. tostring(preset) .. "'", 2) end
  -- table fields (eta) are copied too: editing a neighbourhood never
  -- changes the preset
  local nb = {}
  for k, v in pairs(base) do
    if type(v) == "table" then
      nb[k] = {}
      for kk, vv in pairs(v) do nb[k][kk] = vv end
    else
      nb[k] = v
    end
  end
  for k, v in pairs(opts or {}) do nb[k] = v end
  return nb
end

return P
