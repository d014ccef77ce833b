-- firefly.schedule: growth budgets η_t, the number of neurons a growth
-- phase may add. Each constructor returns a function(t, net) -> n that
-- ff.grow.run calls before growth step t; any such function of the user's
-- works as well.
local units = require "firefly.grow.units"

local S = {}

-- Neurons currently in the growable units of net.
function S.neurons(net)
  local n = 0
  for _, u in ipairs(units.units(net)) do n = n + units.width(u) end
  return n
end

local function check_positive(what, v)
  if type(v) ~= "number" or v ~= v or v <= 0 then
    error(string.format("schedule.%s: expected a positive number, got %s", what, tostring(v)), 3)
  end
end

-- The same n every phase.
function S.fixed(n)
  check_positive("fixed", n)
  return function() return math.floor(n) end
end

-- A fraction r of the current neurons (at least 1): the released code's
-- rule with r = 0.35.
function S.ratio(r)
  check_positive("ratio", r)
  return function(_, net) return math.max(1, math.floor(r * S.neurons(net))) end
end

-- Grow linearly to `target` neurons by the end of growth step `steps`:
-- each step adds an equal share of what is left.
function S.linear(opts)
  check_positive("linear target", opts and opts.target)
  check_positive("linear steps", opts.steps)
  return function(t, net)
    local left = opts.target - S.neurons(net)
    if left <= 0 then return 0 end
    local remaining_steps = math.max(1, opts.steps - t + 1)
    return math.ceil(left / remaining_steps)
  end
end

-- A parameter budget per phase, turned into neurons at the average cost of
-- a neuron now (its incoming and outgoing weights and bias).
function S.params(budget)
  check_positive("params", budget)
  return function(_, net)
    local cost, n = 0, 0
    for _, u in ipairs(units.units(net)) do
      local w = units.width(u)
      cost = cost + u.producer.weight:numel() + (u.producer.bias and w or 0) + u.consumer.weight:numel()
      n = n + w
    end
    if n == 0 then return 0 end
    -- each neuron costs its row of the producer and its columns of the consumer
    local per = cost / n
    return math.max(1, math.floor(budget / per))
  end
end

-- Cap another schedule at `max` neurons per phase.
function S.capped(schedule, max)
  check_positive("capped", max)
  return function(t, net) return math.min(max, schedule(t, net)) end
end

return S
