-- firefly.grow.budget: the growth budget η_t, what a growth phase may add,
-- in one place. A budget is
--   a number                    that many neurons;
--   {neurons =, params =, flops =, per_unit =, pool =}
--                               limits (any of them) as select charges them;
--   {ratio = r [, inclusive = true]}
--                               a fraction of the current neurons;
--   function(t, net) -> budget  a schedule: the constructors below, or the
--                               user's own.
-- resolve(eta, t, net) turns any of these into the table select() spends,
-- and is what grow.run, recipes and proposal:select all call, so a form
-- accepted by one is accepted by all. DEFAULT is the one default.
-- (ff.schedule is the same module under its earlier name.)
local units = require "firefly.grow.units"

local S = {}

-- The budget of a phase when none is given: the released code's rule, a
-- third of the current neurons and a bit more.
S.DEFAULT = { ratio = 0.35 }

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

-- The budget table select() spends, checked: unknown fields, negative or
-- non-numeric limits are errors naming `who`.
local BUDGET_FIELDS = { neurons = true, params = true, flops = true, per_unit = true, pool = true }

function S.check(b, who)
  who = who or "grow.select"
  if type(b) == "number" then
    if b ~= b or b < 0 or b == math.huge then
      error(string.format("%s: a budget must be a non-negative number of neurons, got %s", who, tostring(b)), 0)
    end
    return { neurons = math.floor(b) }
  end
  if type(b) ~= "table" then
    error(string.format("%s: a budget is a number of neurons, a table {neurons =, params =, flops =, per_unit =, "
      .. "pool =}, {ratio = r} or a function(t, net), got %s", who, type(b)), 0)
  end
  local options = require "firefly.options"
  options.check(who, b, BUDGET_FIELDS, "budget field")
  for k, v in pairs(b) do
    if k == "pool" then
      if v ~= "global" and v ~= "unit" then
        error(string.format("%s: pool must be \"global\" or \"unit\", got %s", who, tostring(v)), 0)
      end
    elseif k == "per_unit" then
      if type(v) == "table" then
        for name, cap in pairs(v) do
          if type(name) ~= "string" or type(cap) ~= "number" or not (cap >= 0) then
            error(string.format("%s: per_unit must map unit names to numbers >= 0", who), 0)
          end
        end
      elseif type(v) ~= "number" or not (v >= 0) then
        error(string.format("%s: per_unit must be a number >= 0 or a table of numbers by unit name, got %s", who,
          tostring(v)), 0)
      end
    elseif type(v) ~= "number" or v ~= v or v < 0 then
      error(string.format("%s: %s must be a non-negative number, got %s", who, k, tostring(v)), 0)
    end
  end
  return b
end

-- resolve(eta, t, net [, who]) -> a checked budget table for phase t of
-- net: eta in any of the forms above (nil: DEFAULT).
function S.resolve(eta, t, net, who)
  who = who or "grow.budget"
  if eta == nil then eta = S.DEFAULT end
  if type(eta) == "table" and eta.ratio ~= nil then
    local options = require "firefly.options"
    options.check(who, eta, { ratio = true, inclusive = true }, "budget field")
    if type(eta.ratio) ~= "number" or not (eta.ratio > 0) then
      error(string.format("%s: ratio must be a number > 0, got %s", who, tostring(eta.ratio)), 0)
    end
    eta = S.ratio(eta.ratio, { inclusive = eta.inclusive })
  end
  if type(eta) == "function" then
    local ok, b = pcall(eta, t, net)
    if not ok then error(string.format("%s: the budget schedule failed at phase %s: %s", who, tostring(t), tostring(b)), 0) end
    eta = b
  end
  local b = S.check(eta, who)
  return b
end

return S
