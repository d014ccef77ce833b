-- firefly.grow.neighbourhood: the neighbourhood ∂(f_t, ε) a growth step
-- searches, as the user writes it, checked and resolved per unit.
--
-- A neighbourhood is a table of options. Some are about the whole step
-- (steps, lr, rule, points, loss, generator, optimizer, project, penalty,
-- selection, last_conv_zero_out, quiet, method, where, and the method's own
-- options); the others are about each unit (split, new, layers, eps, init,
-- cap) and may differ per unit:
--
--   { steps = 2,                                  -- the whole step
--     split = true, new = 8,                      -- every unit ...
--     default = { new = 4 },                      -- ... unless named below
--     ["features.*"] = { layers = { candidates = 4 } },  -- a pattern
--     ["1"] = { split = false, new = 16 } }       -- a unit by name
--
-- A unit takes, in this order, each later one overriding: the top-level
-- per-unit fields, `default`, every pattern that matches it (`*` any run
-- of characters, `?` one; shorter patterns first), its own name. `default`
-- may also be a function(unit) -> settings, and so may the whole
-- neighbourhood; `unit` is {name, kind, width, depth, position, conv}.
-- A key that is neither an option nor a unit's name or pattern is an
-- error naming it, the nearest option and the units.
local ff = require "firefly"
local options = require "firefly.options"
local batches_mod = require "firefly.grow.batches"

local N = {}

local GLOBAL = { "steps", "lr", "rule", "points", "loss", "generator", "optimizer", "project", "penalty",
  "selection", "last_conv_zero_out", "quiet", "method", "where" }
local PER_UNIT = { "split", "new", "layers", "eps", "init", "cap" }
N.PER_UNIT = PER_UNIT

local function bad(key, want, v)
  error(string.format("grow.propose: neighbourhood %s must be %s, got %s", key, want,
    type(v) == "string" and string.format("%q", v) or tostring(v)), 0)
end

local function is_count(v)
  return type(v) == "number" and v == v and v >= 0 and v < 2 ^ 53 and v == math.floor(v)
end

local function check_choice(key, v, choices)
  if v == nil then return end
  for _, c in ipairs(choices) do if v == c then return end end
  error(string.format("grow.propose: %s must be one of %s, got %s", key, table.concat(choices, ", "),
    tostring(v)), 0)
end

local function check_number(key, v, ok, want)
  if v == nil then return end
  if type(v) ~= "number" or v ~= v or v == math.huge or v == -math.huge or not ok(v) then bad(key, want, v) end
end

local function check_type(key, v, t, want)
  if v ~= nil and type(v) ~= t then bad(key, want, v) end
end

-- A count of candidates: a whole number >= 0, or {candidates = n, ...}.
local function count_of(key, v, extra)
  if v == nil then return 0 end
  if type(v) == "table" then
    local known = { candidates = true }
    for _, k in ipairs(extra or {}) do known[k] = true end
    options.check("grow.propose: neighbourhood " .. key, v, known, "field")
    for k, x in pairs(v) do
      if not is_count(x) then bad(key .. "." .. k, "a whole number >= 0", x) end
    end
    return v.candidates or 0
  end
  if not is_count(v) then bad(key, "a whole number >= 0 (candidates per unit) or a table {candidates =, ...}", v) end
  return v
end
N.count_of = count_of

-- The per-unit fields of one table, checked (`where`: how to name it).
local function check_unit_fields(t, where)
  local pre = where == "" and "" or where .. "."
  check_type(pre .. "split", t.split, "boolean", "true or false")
  count_of(pre .. "new", t.new)
  count_of(pre .. "layers", t.layers, { "max_new_layers" })
  check_number(pre .. "eps", t.eps, function(v) return v > 0 end, "a number > 0 (the largest step |ε_i|)")
  check_choice(pre .. "init", t.init, { "paper", "official" })
  check_number(pre .. "cap", t.cap, function(v) return v >= 0 end, "a number >= 0 (neurons kept on the unit)")
end

-- The options of the whole step, checked.
local function check_global(nb)
  check_choice("rule", nb.rule, { "endpoint", "midpoint", "exact" })
  check_choice("optimizer", nb.optimizer, { "adam", "rmsprop" })
  check_choice("selection", nb.selection, { "paper", "official" })
  for _, k in ipairs { "project", "last_conv_zero_out", "quiet" } do check_type(k, nb[k], "boolean", "true or false") end
  check_type("loss", nb.loss, "function", "a function(output, target) -> loss")
  check_number("lr", nb.lr, function(v) return v > 0 end, "a number > 0")
  check_number("penalty", nb.penalty, function(v) return v >= 0 end, "a number >= 0")
  check_number("steps", nb.steps, function(v) return v >= 0 and v == math.floor(v) end,
    "a whole number >= 0 (passes of step 1)")
  check_number("points", nb.points, function(v) return v >= 1 and v == math.floor(v) end, "a whole number >= 1")
  if nb.generator ~= nil and (type(nb.generator) ~= "userdata" or not pcall(nb.generator.get_state, nb.generator)) then
    bad("generator", "an ff.Generator", nb.generator)
  end
  if nb.where ~= nil then
    if type(nb.where) ~= "table" then bad("where", "a list of unit names", nb.where) end
    for i, w in ipairs(nb.where) do
      if type(w) ~= "string" then bad("where[" .. i .. "]", "a unit name (a string)", w) end
    end
  end
end

local function unit_names(units)
  local names = {}
  for i, u in ipairs(units) do names[i] = u.name end
  return table.concat(names, ", ")
end

-- A glob (`*`, `?`) as an anchored Lua pattern.
local function glob(key)
  return "^" .. key:gsub("[%^%$%(%)%%%.%[%]%+%-]", "%%%0"):gsub("%*", ".*"):gsub("%?", ".") .. "$"
end

local function is_pattern(key) return key:find("[%*%?]") ~= nil end

-- What a function neighbourhood sees of a unit.
local function unit_info(u)
  return { name = u.name, kind = u.kind, width = u.producer.weight:size(1), depth = u.depth,
    position = u.position, conv = u.conv }
end

local function merge(into, t)
  for _, k in ipairs(PER_UNIT) do if t[k] ~= nil then into[k] = t[k] end end
end

-- The settings a function gives a unit, checked.
local function call_settings(fn, u)
  local ok, t = pcall(fn, unit_info(u))
  if not ok then error(string.format("grow.propose: the neighbourhood function failed on unit %s: %s", u.name,
    tostring(t)), 0) end
  if t == nil then return {} end
  if type(t) ~= "table" then
    error(string.format("grow.propose: the neighbourhood function must return a table of unit settings for "
      .. "unit %s, got %s", u.name, type(t)), 0)
  end
  options.check("grow.propose: neighbourhood function, unit " .. u.name, t, PER_UNIT, "unit setting")
  check_unit_fields(t, "unit " .. u.name)
  return t
end

-- N.check(nb, method) checks every option of the whole step and the
-- top-level per-unit fields; nb may be a function (per-unit only).
function N.check(nb, method)
  if type(nb) == "function" then return end
  local known = {}
  for _, k in ipairs(GLOBAL) do known[k] = true end
  for _, k in ipairs(PER_UNIT) do known[k] = true end
  known.default = true
  for k in pairs(method and method.options or {}) do known[k] = true end
  for k in pairs(nb) do
    if type(k) ~= "string" then
      error(string.format("grow.propose: neighbourhood keys are option names or unit names, got %s", tostring(k)), 0)
    end
  end
  check_global(nb)
  check_unit_fields(nb, "")
  local d = nb.default
  if d ~= nil and type(d) ~= "table" and type(d) ~= "function" then
    bad("default", "a table of unit settings or a function(unit)", d)
  end
  if type(d) == "table" then
    options.check("grow.propose: neighbourhood default", d, PER_UNIT, "unit setting")
    check_unit_fields(d, "default")
  end
end

-- N.resolve(nb, units, method) -> settings, one table per unit {split, new,
-- layers, max_new_layers, eps, init, cap}, after N.check.
function N.resolve(nb, units, method)
  local fn
  if type(nb) == "function" then fn, nb = nb, {} end
  local known = {}
  for _, k in ipairs(GLOBAL) do known[k] = true end
  for _, k in ipairs(PER_UNIT) do known[k] = true end
  known.default = true
  for k in pairs(method and method.options or {}) do known[k] = true end
  -- the unit keys: exact names and patterns, each matching some unit
  local by_name, patterns = {}, {}
  for _, u in ipairs(units) do by_name[u.name] = u end
  for k, v in pairs(nb) do
    if not known[k] then
      local matched = by_name[k] ~= nil
      if is_pattern(k) then
        for _, u in ipairs(units) do if u.name:match(glob(k)) then matched = true end end
      end
      if not matched then
        local near = options.nearest(k, known)
        error(string.format("grow.propose: unknown neighbourhood option '%s'%s%s, nor is it the name or pattern "
          .. "of a unit (units: %s)", k, nb.method and " for method " .. tostring(nb.method) or "",
          near and " (did you mean '" .. near .. "'?)" or "", unit_names(units)), 0)
      end
      if type(v) ~= "table" then bad("'" .. k .. "'", "a table of unit settings", v) end
      options.check("grow.propose: neighbourhood '" .. k .. "'", v, PER_UNIT, "unit setting")
      check_unit_fields(v, "'" .. k .. "'")
      if is_pattern(k) then patterns[#patterns + 1] = k end
    end
  end
  table.sort(patterns, function(a, b)
    local la, lb = #a:gsub("[%*%?]", ""), #b:gsub("[%*%?]", "")
    if la ~= lb then return la < lb end
    return a < b
  end)
  local settings = {}
  for k, u in ipairs(units) do
    local s = { split = true, new = 0, layers = 0, eps = 1e-2, init = "paper" }
    merge(s, nb)
    if type(nb.default) == "table" then merge(s, nb.default) end
    if type(nb.default) == "function" then merge(s, call_settings(nb.default, u)) end
    if fn then merge(s, call_settings(fn, u)) end
    for _, p in ipairs(patterns) do
      if u.name:match(glob(p)) then merge(s, nb[p]) end
    end
    if by_name[u.name] and nb[u.name] and not known[u.name] then merge(s, nb[u.name]) end
    s.new = count_of("new", s.new)
    s.layers = count_of("layers", s.layers, { "max_new_layers" })
    s.split = s.split ~= false
    settings[k] = s
  end
  return settings
end

-- The two-level budget's limit on new layers (the whole step's): from the
-- top-level `layers` table, else from `default`'s.
function N.max_new_layers(nb)
  if type(nb) ~= "table" then return nil end
  if type(nb.layers) == "table" and nb.layers.max_new_layers then return nb.layers.max_new_layers end
  local d = nb.default
  if type(d) == "table" and type(d.layers) == "table" then return d.layers.max_new_layers end
  return nil
end

-- Bytes the over-grown network needs, roughly: every candidate tensor with
-- its gradient and two Adam moments, and the activations of one batch of
-- new neurons and layers (at most the input's H·W positions). An estimate
-- to refuse the impossible before allocating, not a budget.
local function estimate_bytes(units, settings, x)
  local batch = x:size(1)
  local positions = x:dim() == 4 and x:size(3) * x:size(4) or 1
  local floats = 0
  for k, u in ipairs(units) do
    local s = settings[k]
    local w, cw = u.producer.weight, u.consumer.weight
    local row = w:numel() / w:size(1)
    local out = cw:size(1) * u.spatial * (cw:numel() / (cw:size(1) * cw:size(2)))
    if s.split then floats = floats + 4 * w:numel() end
    floats = floats + 4 * s.new * (row + out) + 3 * batch * s.new * positions
    floats = floats + 4 * s.layers * 2 * w:size(1) * (u.conv and 9 or 1) + 3 * batch * s.layers * positions
  end
  return 4 * floats
end

function N.check_memory(units, settings, batches)
  local need = estimate_bytes(units, settings, batches_mod.first(batches))
  local total = ff.system_memory()
  if total > 0 and need > 0.8 * total then
    local new, layers = 0, 0
    for _, s in ipairs(settings) do new, layers = math.max(new, s.new), math.max(layers, s.layers) end
    error(string.format("grow.propose: this neighbourhood (new = %d, layers = %d per unit at most) needs about "
      .. "%.1f GiB for its candidates, more than this machine's %.1f GiB allows: fewer candidates per unit, "
      .. "or fewer units (where)", new, layers, need / 2 ^ 30, total / 2 ^ 30), 0)
  end
end

-- The units and their settings as a table.
function N.describe(units, settings)
  local lines = { string.format("  %-12s %-7s %6s  %-5s %5s %6s %8s  %-8s %5s", "unit", "layer", "width", "split",
    "new", "layers", "eps", "init", "cap") }
  for k, u in ipairs(units) do
    local s = settings[k]
    lines[#lines + 1] = string.format("  %-12s %-7s %6d  %-5s %5d %6d %8.3g  %-8s %5s", u.name, u.kind,
      u.producer.weight:size(1), tostring(s.split), s.new, s.layers, s.eps, s.init, s.cap and tostring(s.cap) or "-")
  end
  return table.concat(lines, "\n")
end

return N
