-- firefly.options: one way to check the option tables users write.
--
--   local options = require "firefly.options"
--   options.check("grow.run", opts, { epochs = true, eta = true })
--   --> error "grow.run: unknown option 'epoch' (did you mean 'epochs'?)"
--
-- A misspelt key must never fall back to a default silently: every
-- options table, recipe field and override goes through check(), which
-- names the function, the key and the nearest known key (or lists them
-- all when none is near).
local O = {}

-- Edit distance (insertions, deletions, substitutions, adjacent swaps).
local function distance(a, b)
  local la, lb = #a, #b
  local prev2, prev, cur = {}, {}, {}
  for j = 0, lb do prev[j] = j end
  for i = 1, la do
    cur = { [0] = i }
    for j = 1, lb do
      local cost = a:byte(i) == b:byte(j) and 0 or 1
      local d = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
      if i > 1 and j > 1 and a:byte(i) == b:byte(j - 1) and a:byte(i - 1) == b:byte(j) then
        d = math.min(d, prev2[j - 2] + 1)
      end
      cur[j] = d
    end
    prev2, prev = prev, cur
  end
  return prev[lb]
end
O.distance = distance

local function names_of(known)
  local names = {}
  if known[1] ~= nil then
    for _, k in ipairs(known) do names[#names + 1] = tostring(k) end
  else
    for k in pairs(known) do names[#names + 1] = tostring(k) end
  end
  table.sort(names)
  return names
end

-- The known name nearest to `name`, or nil when none is close enough to be
-- a plausible typo (at most a third of the name's letters, at least 2).
-- engine/lua/options.c applies the same rule to the binding's options.
function O.nearest(name, known)
  if type(name) ~= "string" then return nil end
  local best, best_d
  local lname = name:lower()
  for _, k in ipairs(names_of(known)) do
    local d = distance(lname, k:lower())
    -- one starts with the other ('epsilon' for 'eps', 'retain' for
    -- 'retain_graph'): a plausible typo whatever the lengths
    local lk = k:lower()
    local shorter = math.min(#lname, #lk)
    if shorter >= 3 and lk:sub(1, shorter) == lname:sub(1, shorter) then d = math.min(d, 1) end
    if not best_d or d < best_d then best, best_d = k, d end
  end
  if best_d and best_d <= math.max(2, #name // 3) then return best end
  return nil
end

-- " (did you mean 'x'?)", or " (known: a, b, c)" when nothing is near.
function O.hint(name, known)
  local near = O.nearest(name, known)
  if near then return string.format(" (did you mean '%s'?)", near) end
  return " (known: " .. table.concat(names_of(known), ", ") .. ")"
end

-- check(who, opts, known [, what [, level]]): raise on the first key of
-- `opts` that `known` (a set or a list) lacks. `what` names the kind of
-- key in the message ("option", "recipe field", "override", ...); level
-- is error()'s, counted from the caller of check (0: no position).
function O.check(who, opts, known, what, level)
  if opts == nil then return opts end
  if type(opts) ~= "table" then
    error(string.format("%s: expected a table of %ss, got %s", who, what or "option", type(opts)),
      level == 0 and 0 or (level or 2) + 1)
  end
  local set = known
  if known[1] ~= nil then
    set = {}
    for _, k in ipairs(known) do set[k] = true end
  end
  local bad = {}
  for k in pairs(opts) do
    if set[k] == nil then bad[#bad + 1] = k end
  end
  if #bad > 0 then
    table.sort(bad, function(a, b) return tostring(a) < tostring(b) end)
    local k = bad[1]
    error(string.format("%s: unknown %s '%s'%s", who, what or "option", tostring(k), O.hint(tostring(k), set)),
      level == 0 and 0 or (level or 2) + 1)
  end
  return opts
end

return O
