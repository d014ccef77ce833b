-- firefly.optim: optimisers that work per tensor (never on one flattened
-- vector, since growth changes shapes), gradient clipping and lr schedules.
-- ff.optim.SGD(params, opts), .Adam, .AdamW, .RMSprop; see spec/optim.md.
local base = require "firefly.optim.optimizer"
local adam = require "firefly.optim.adam"

local optim = {}

local kinds = {
  SGD = require "firefly.optim.sgd",
  Adam = adam.Adam,
  AdamW = adam.AdamW,
  RMSprop = require "firefly.optim.rmsprop",
}

for name, kind in pairs(kinds) do
  optim[name] = function(params, opts) return base.new(kind, params, opts) end
end

optim.clip_grad_norm = require("firefly.optim.clip").clip_grad_norm
optim.schedule = require "firefly.optim.schedule"

-- Whether x is an optimiser made by this module.
function optim.is_optimizer(x)
  return getmetatable(x) == base.Optimizer
end

return optim
