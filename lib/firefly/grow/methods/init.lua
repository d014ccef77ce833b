-- firefly.grow.methods: the growth methods by name. Each is a module with
-- `name`, `options` (the neighbourhood options it adds) and build(ctx)
-- (see proposal.lua for ctx and what build returns). Firefly is one of
-- them; register() adds a user's own under the same API.
local M = {}

local NAMES = { "firefly", "random", "nash", "split_exact", "split_fast", "net2net", "gradmax" }
M.NAMES = NAMES

local registered = {}

-- The method called `name` (loaded on first use: the baselines pull in
-- LAPACK-backed and autograd-heavy code that a Firefly run never needs).
function M.get(name)
  if registered[name] then return registered[name] end
  for _, n in ipairs(NAMES) do
    if n == name then
      local ok, mod = pcall(require, "firefly.grow.methods." .. name)
      if not ok then error("grow.propose: method " .. name .. " failed to load: " .. tostring(mod), 0) end
      registered[name] = mod
      return mod
    end
  end
  local names = { table.unpack(NAMES) }
  for n in pairs(registered) do
    local known = false
    for _, m in ipairs(NAMES) do known = known or m == n end
    if not known then names[#names + 1] = n end
  end
  error(string.format("grow.propose: method must be one of %s, got %s", table.concat(names, ", "), tostring(name)), 0)
end

-- register(mod): a method of the user's, usable as nb.method = mod.name.
function M.register(mod)
  if type(mod) ~= "table" or type(mod.name) ~= "string" or type(mod.build) ~= "function" then
    error("grow.methods.register: expected a table {name = string, build = function(ctx), options = {...}}", 2)
  end
  registered[mod.name] = mod
  return mod
end

return M
