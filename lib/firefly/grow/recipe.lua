-- firefly.grow.recipe: growth recipes, and `firefly grow RECIPE.lua`.
--
-- A recipe is a Lua file returning a table:
--   return {
--     seed = 1, phases = 10, epochs = 2, score_batches = 8,
--     data = function(ff) return train_loader_or_dataset, test_dataset end,
--     net = function(ff) return ff.nn.mlp{...} end,
--     optim = function(ff, named_params) return ff.optim.SGD(named_params, {...}) end,
--     neighbourhood = { new = 32, eps = 1e-2, steps = 1, lr = 1e-2 },
--     eta = { ratio = 0.35 },            -- or a number, or function(ff) return ff.grow.budget...
--     batch_size = 128,                  -- when data returns a dataset
--     checkpoint_every = N,              -- also checkpoint every N epochs inside a phase
--   }
-- The run is fully determined by the recipe and the seed: the default
-- generator is seeded before anything is built, and the data order and the
-- growth candidates draw from generators seeded from it.
--
-- `firefly grow RECIPE.lua [--seed N] [--out DIR] [key=value ...]`
-- (firefly.grow.command) loads and runs one; key=value overrides a field
-- (numbers, true/false or strings; dotted keys reach into tables:
-- neighbourhood.new=64).
--
-- Recipes are shared files, so they are checked as strictly as any option
-- table (an unknown field or override is an error with the nearest known
-- name, every field is type- and range-checked) and run in a sandbox
-- (firefly.sandbox) unless the command line says --trust.
local ff = require "firefly"
local options = require "firefly.options"
local sandbox = require "firefly.sandbox"
local record = require "firefly.grow.record"
local neighbourhood = require "firefly.grow.neighbourhood"
local methods = require "firefly.grow.methods"
local dist = require "firefly.dist"

local R = {}

---------------------------------------------------------------- fields

local function whole(v, lo)
  return math.type(v) == "integer" or (type(v) == "number" and v == math.floor(v) and v >= lo and v < 2 ^ 53)
end

local function is_whole(lo)
  return function(v) return whole(v, lo) and v >= lo, "a whole number >= " .. lo end
end

-- Each field: a check returning ok and what the field must be.
local FIELDS = {
  seed = is_whole(0),
  phases = is_whole(1),
  epochs = is_whole(1),
  batch_size = is_whole(1),
  checkpoint_every = is_whole(1),
  max_rollbacks = is_whole(0),
  score_batches = function(v) return v == "all" or (whole(v, 1) and v >= 1), "a whole number >= 1 or \"all\"" end,
  data = function(v) return type(v) == "function", "a function(ff) -> train, test" end,
  net = function(v) return type(v) == "function", "a function(ff) -> network" end,
  optim = function(v) return type(v) == "function", "a function(ff, named_params) -> optimiser" end,
  neighbourhood = function(v)
    return type(v) == "table" or type(v) == "function",
      "a table of options ({new = 32, eps = 1e-2, ...}) or a function(unit) -> settings"
  end,
  eta = function(v)
    local what = "a number of neurons > 0, {ratio = r} with r > 0, a budget table, or a function(ff) -> schedule"
    if type(v) == "number" then return v > 0 and v == v and v ~= math.huge, what end
    if type(v) == "table" then
      if v.ratio ~= nil then return type(v.ratio) == "number" and v.ratio > 0 and v.ratio ~= math.huge, what end
      return true, what
    end
    return type(v) == "function", what
  end,
  loss = function(v) return type(v) == "string" or type(v) == "function", "a loss name or a function" end,
  on_nan = function(v) return v == "stop" or v == "rollback", "\"stop\" or \"rollback\"" end,
  nan_lr_factor = function(v) return type(v) == "number" and v > 0 and v < 1, "a number in (0, 1)" end,
  reset_optim = function(v) return type(v) == "boolean", "true or false" end,
  description = function(v) return type(v) == "string", "a string" end,
  preset = function(v) return v == "paper" or v == "official", "\"paper\" or \"official\"" end,
  -- dist: K fixed parts per batch, bit-identical on 1, 2 or 4 ranks (spec/dist.md)
  deterministic = function(v)
    return type(v) == "boolean" or (whole(v, 1) and v >= 1), "a whole number of parts >= 1, true or false"
  end,
}
R.FIELDS = {}
for k in pairs(FIELDS) do R.FIELDS[#R.FIELDS + 1] = k end
table.sort(R.FIELDS)

local function show(v)
  if type(v) == "string" then return string.format("%q", v) end
  if type(v) == "table" or type(v) == "function" or type(v) == "userdata" then return "a " .. type(v) end
  return tostring(v)
end

-- Checks every field of a recipe; `where` names it in messages.
local function check_recipe(recipe, where)
  if type(recipe) ~= "table" then error(string.format("grow: %s must return a table, got %s", where, type(recipe)), 0) end
  for k in pairs(recipe) do
    if FIELDS[k] == nil then
      error(string.format("grow: %s: unknown recipe field '%s'%s", where, tostring(k), options.hint(tostring(k), FIELDS)), 0)
    end
  end
  for _, k in ipairs { "data", "net", "optim" } do
    if recipe[k] == nil then error(string.format("grow: %s: missing field '%s' (%s)", where, k, select(2, FIELDS[k]())), 0) end
  end
  for _, k in ipairs(R.FIELDS) do
    local v = recipe[k]
    if v ~= nil then
      local ok, what = FIELDS[k](v)
      if not ok then error(string.format("grow: %s: field '%s' must be %s, got %s", where, k, what, show(v)), 0) end
    end
  end
end
R.check = check_recipe

---------------------------------------------------------------- overrides

local function parse_value(v)
  if v == "true" then return true end
  if v == "false" then return false end
  return tonumber(v) or v
end

-- Apply "a.b.c=value" to the recipe table: the first key must be a known
-- field, a function field cannot be overridden, and a dotted key needs a
-- table where it reaches.
local function override(recipe, assignment)
  local key, value = assignment:match("^([%w_%.]+)=(.*)$")
  if not key then error("grow: bad override '" .. assignment .. "' (expected key=value)", 0) end
  local parts = {}
  for p in key:gmatch("[^%.]+") do parts[#parts + 1] = p end
  if #parts == 0 then error("grow: bad override '" .. assignment .. "' (expected key=value)", 0) end
  if FIELDS[parts[1]] == nil then
    error(string.format("grow: unknown override '%s'%s", parts[1], options.hint(parts[1], FIELDS)), 0)
  end
  local t = recipe
  for i = 1, #parts - 1 do
    local v = t[parts[i]]
    if v == nil then
      v = {}
      t[parts[i]] = v
    elseif type(v) ~= "table" then
      error(string.format("grow: override '%s': '%s' is %s in the recipe, not a table", assignment,
        table.concat(parts, ".", 1, i), show(v)), 0)
    end
    t = v
  end
  local last = parts[#parts]
  if type(t[last]) == "function" then
    error(string.format("grow: override '%s': '%s' is a function in the recipe and cannot be set from the command line",
      assignment, key), 0)
  end
  t[last] = parse_value(value)
end

-- A copy of a recipe's tables (functions and objects as they are), so
-- that overrides never change the table the caller holds.
local function copy(v, seen)
  if type(v) ~= "table" or getmetatable(v) ~= nil then return v end
  seen = seen or {}
  if seen[v] then return seen[v] end
  local c = {}
  seen[v] = c
  for k, x in pairs(v) do c[k] = copy(x, seen) end
  return c
end

-- configure(recipe, overrides [, where]) -> a copy of recipe with the
-- overrides ("key=value" strings) applied and every field checked.
function R.configure(recipe, overrides, where)
  recipe = copy(recipe)
  for _, o in ipairs(overrides or {}) do
    if type(o) ~= "string" then error("grow: an override must be a string key=value, got " .. type(o), 0) end
    override(recipe, o)
  end
  check_recipe(recipe, where or "recipe")
  -- the neighbourhood's values are checked now, not after the first phase
  -- (its unknown keys may name units: those wait for the network)
  local nb = recipe.neighbourhood
  if type(nb) == "table" then
    local ok, err = pcall(function() neighbourhood.check(nb, methods.get(nb.method or "firefly")) end)
    if not ok then error("grow: " .. (where or "recipe") .. ": field 'neighbourhood': " .. tostring(err), 0) end
  end
  return recipe
end

---------------------------------------------------------------- loading

local loaded = setmetatable({}, { __mode = "k" }) -- recipe table -> {path, hash, sandbox}

local function read_text(path)
  local f, err = io.open(path, "rb")
  if not f then error("grow: cannot read recipe " .. tostring(err), 0) end
  local text = f:read("a")
  f:close()
  if not text then error("grow: cannot read recipe " .. path, 0) end
  return text
end

-- Load a recipe file: as text only (a precompiled chunk is refused: Lua
-- does not verify bytecode), in a sandbox unless opts.trust. The functions
-- it returns keep the sandbox's environment when they run later.
function R.load(path, opts)
  opts = options.check("grow.recipe.load", opts or {}, { "trust" })
  if type(path) ~= "string" then error("grow.recipe.load: argument #1 must be a recipe path, got " .. type(path), 2) end
  local text = read_text(path)
  if text:sub(1, 1) == "\27" then
    error("grow: recipe " .. path .. " is a precompiled Lua chunk; recipes are loaded as text only " ..
      "(Lua does not verify bytecode): use its source file", 0)
  end
  local sb = not opts.trust and sandbox.new() or nil
  -- (a trusted recipe's chunk is named "=path": the same in messages, but
  -- never taken for a sandboxed one's functions, which stay confined)
  local chunk, err = load(text, (sb and "@" or "=") .. path, "t", sb and sb.env or _G)
  if not chunk then error("grow: cannot load recipe " .. tostring(err), 0) end
  if sb then sandbox.bind("@" .. path) end
  local ok, recipe = pcall(chunk)
  if not ok then
    local why = sandbox.stopped()
    error("grow: recipe " .. path .. ": " .. (why or tostring(recipe)), 0)
  end
  if type(recipe) ~= "table" then error("grow: recipe " .. path .. " must return a table, got " .. type(recipe), 0) end
  if sb then recipe = sb.unwrap(recipe) end
  check_recipe(recipe, "recipe " .. path)
  loaded[recipe] = { path = path, hash = record.hash(text), sandbox = sb }
  return recipe
end

---------------------------------------------------------------- running

-- Calls a recipe function; an error names the field.
local function call_field(name, fn, ...)
  local r = table.pack(pcall(fn, ...))
  if not r[1] then
    local why = sandbox.stopped()
    if why then error(why, 0) end
    error(string.format("grow: recipe field '%s': %s", name, tostring(r[2])), 0)
  end
  return table.unpack(r, 2, r.n)
end

local function is_dataset(v) return type(v) == "table" and ff.is_tensor(rawget(v, "x")) end
local function is_loader(v) return type(v) == "table" and type(v.iter) == "function" end

local function check_data(train, test)
  local function size(d) return is_loader(d) and #d or d.x:size(1) end
  if not (is_dataset(train) or is_loader(train)) then
    error("grow: recipe field 'data' must return a training set (a data set or a DataLoader) first, got " ..
      show(train), 0)
  end
  if size(train) == 0 then error("grow: recipe field 'data' returned an empty training set", 0) end
  if test ~= nil then
    if not (is_dataset(test) or is_loader(test)) then
      error("grow: recipe field 'data' must return a test set (a data set or a DataLoader) second, or nothing; got " ..
        show(test), 0)
    end
    if size(test) == 0 then error("grow: recipe field 'data' returned an empty test set", 0) end
  end
end

local RUN_OPTIONS = { "seed", "out", "quiet", "resume", "stop_after", "overrides" }

-- Run a recipe table; opts: seed, out (log directory; the checkpoint of
-- every phase goes there too), quiet, resume (go on from out's checkpoint
-- when there is one; it must be this recipe's, with the same overrides),
-- overrides (a list of "key=value"), stop_after (end after that phase:
-- for tests).
function R.run(recipe, opts)
  opts = options.check("grow.recipe.run", opts or {}, RUN_OPTIONS)
  if type(recipe) ~= "table" then error("grow.recipe.run: argument #1 must be a recipe table, got " .. type(recipe), 2) end
  if not dist.is_main() then -- dist: rank 0 prints
    local copy = { quiet = true }
    for k, v in pairs(opts) do if k ~= "quiet" then copy[k] = v end end
    opts = copy
  end
  local info = loaded[recipe] or {}
  local sb = info.sandbox
  local view = sb and sb.ff or ff
  local where = "recipe " .. (info.path or "table")
  recipe = copy(recipe)
  local ckpath = opts.out and opts.out .. "/checkpoint.safetensors"
  local ck
  if opts.resume then
    if not ckpath then error("grow.recipe.run: resume needs out (the directory of the checkpoint)", 2) end
    if require("firefly.io").file_size(ckpath) then
      ck = ff.load(ckpath)
      if type(ck) ~= "table" or ck.format ~= "firefly-grow-1" then
        error("grow: " .. ckpath .. " is not a growth checkpoint", 0)
      end
    elseif not opts.quiet then
      print(string.format("grow: --resume: no checkpoint in %s; starting fresh", opts.out))
    elseif dist.is_main() then
      io.stderr:write(string.format("grow: --resume: no checkpoint in %s; starting fresh\n", opts.out))
    end
  end
  local overrides = record.list(opts.overrides)
  local seed = opts.seed
  if ck and type(ck.recipe) == "table" then
    -- resuming without repeating the overrides (or the seed) reuses the
    -- recorded ones
    if #overrides == 0 then overrides = record.list(ck.recipe.overrides) end
    if seed == nil and type(ck.recipe.seed) == "number" then seed = ck.recipe.seed end
  end
  recipe = R.configure(recipe, overrides, where)
  if seed ~= nil and not (whole(seed, 0) and seed >= 0) then
    error("grow: the seed must be a whole number >= 0, got " .. show(seed), 0)
  end
  seed = seed or recipe.seed or 1
  local rec = { hash = info.hash or false, path = info.path or false, overrides = overrides, seed = seed,
    config = record.config(recipe, seed) }
  if ck then record.check_resume(ckpath, ck.recipe, rec) end

  -- dist: deterministic = K makes 1, 2 or 4 ranks bit-identical (spec/dist.md)
  if recipe.deterministic ~= nil then dist.set_deterministic(recipe.deterministic) end
  ff.manual_seed(seed)
  local train, test = call_field("data", recipe.data, view)
  check_data(train, test)
  local loader = is_loader(train) and train or ff.data.DataLoader(train, {
    batch_size = recipe.batch_size or 128, shuffle = true, generator = ff.Generator(seed) })
  local net = ck and ck.net or call_field("net", recipe.net, view)
  if type(net) ~= "table" or type(net.named_parameters) ~= "function" or type(net.forward) ~= "function" then
    error("grow: recipe field 'net' must return a network (an ff.nn module), got " .. show(net), 0)
  end
  local optim = call_field("optim", recipe.optim, view, net:named_parameters())
  if type(optim) ~= "table" or type(optim.step) ~= "function" or type(optim.state_dict) ~= "function" then
    error("grow: recipe field 'optim' must return an optimiser (ff.optim.SGD, ...), got " .. show(optim), 0)
  end
  if ck then optim:load_state_dict(ck.optim) end
  local nb = {}
  if type(recipe.neighbourhood) == "function" then nb.default = recipe.neighbourhood -- per unit, as propose reads it
  else
    -- a preset's neighbourhood under the recipe's own fields
    if recipe.preset then nb = ff.grow.neighbourhood(recipe.preset) end
    for k, v in pairs(recipe.neighbourhood or {}) do nb[k] = v end
  end
  nb.generator = nb.generator or ff.Generator(seed + 1)
  -- no eta: the preset's, else the one default (grow.run, budget.DEFAULT)
  local eta = recipe.eta
  if type(eta) == "function" then
    eta = call_field("eta", eta, view)
    if sb then eta = sb.unwrap(eta) end
    local t = type(eta)
    if not (t == "function" or t == "table" or (t == "number" and eta > 0)) then
      error("grow: recipe field 'eta' must return a budget (a number > 0, a table or a schedule function), got " ..
        show(eta), 0)
    end
  end
  if not opts.quiet then
    if ck then print(string.format("resuming after phase %d (%s)", ck.phase, ckpath)) end
    print(net)
  end
  local ok, rows = pcall(ff.grow.run, { net = net, data = loader, test = test, optim = optim,
    phases = recipe.phases or 4, epochs = recipe.epochs or 1, neighbourhood = nb, eta = eta,
    score_batches = recipe.score_batches, preset = recipe.preset, log = opts.out, quiet = opts.quiet,
    checkpoint = ckpath, resume = ck, checkpoint_every = recipe.checkpoint_every, loss = recipe.loss,
    on_nan = recipe.on_nan, nan_lr_factor = recipe.nan_lr_factor, max_rollbacks = recipe.max_rollbacks,
    reset_optim = recipe.reset_optim, recipe = rec,
    on_phase = opts.stop_after and function(t) return t < opts.stop_after end })
  if not ok then
    local why = sandbox.stopped()
    if why then error(why, 0) end
    local msg = tostring(rows)
    -- the growth step's errors come from the recipe's neighbourhood or eta
    if msg:find("grow%.propose") or msg:find("grow%.select") or msg:find("grow%.budget") then
      msg = "grow: recipe field 'neighbourhood' / 'eta': " .. msg
    end
    error(msg, 0)
  end
  if not opts.quiet then print(net) end
  return rows, net
end

R.hash = record.hash

return R
