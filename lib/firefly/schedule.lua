-- firefly.schedule: growth budgets η_t, what a growth phase may add. Each
-- constructor returns a function(t, net) -> budget that ff.grow.run calls
-- before growth step t, where a budget is a number of neurons or a table
-- {neurons =, params =, flops =, per_unit =, pool =} as proposal:select
-- takes it; any such function of the user's works as well.
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
-- rule with r = 0.35. {inclusive = true} keeps one more, as the released
-- code's inclusive threshold does.
function S.ratio(r, opts)
  check_positive("ratio", r)
  local extra = opts and opts.inclusive and 1 or 0
  return function(_, net) return math.max(1, math.floor(r * S.neurons(net))) + extra end
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

-- At most P parameters per phase, charged exactly: selection takes
-- candidates by score per parameter while the parameters they add stay
-- within P (C(f) <= C(f_t) + P).
function S.params(budget)
  check_positive("params", budget)
  return function() return { params = budget } end
end

-- At most F multiply-adds per example per phase, charged the same way.
function S.flops(budget)
  check_positive("flops", budget)
  return function() return { flops = budget } end
end

-- A budget as a table.
local function as_table(b)
  if type(b) == "table" then
    local t = {}
    for k, v in pairs(b) do t[k] = v end
    return t
  end
  return { neurons = b }
end
S.as_table = as_table

-- Cap another schedule at `max` neurons per phase.
function S.capped(schedule, max)
  check_positive("capped", max)
  return function(t, net)
    local b = schedule(t, net)
    if type(b) == "number" then return math.min(max, b) end
    b = as_table(b)
    b.neurons = math.min(max, b.neurons or math.huge)
    return b
  end
end

-- Cap another schedule at `cap` neurons per unit: a number for every unit,
-- or a table {[unit name] = k} (units not named are not capped).
function S.per_unit(schedule, cap)
  if type(cap) ~= "table" then check_positive("per_unit", cap) end
  return function(t, net)
    local b = as_table(schedule(t, net))
    b.per_unit = cap
    return b
  end
end

return S
