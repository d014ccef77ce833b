-- The growth decisions of a run, for the helpers that compare one process
-- with two ranks: dofile'd once, it wraps proposal:select and returns the
-- list it fills, one string per selection (its candidates' unit, kind and
-- index, in selection order: the decision itself).
local P = require "firefly.grow.proposal"
local decisions = {}
local select = P.select
P.select = function(self, eta)
  local r = select(self, eta)
  local keys = {}
  for _, c in ipairs(self.selected) do keys[#keys + 1] = string.format("%d%s%d", c.unit, c.kind, c.index) end
  decisions[#decisions + 1] = table.concat(keys, ",")
  return r
end
return decisions
