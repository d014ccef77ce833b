-- firefly.grow.recipe: growth recipes, and `firefly grow RECIPE.lua`.
--
-- A recipe is a Lua file returning a table:
--   return {
--     seed = 1, phases = 10, epochs = 2, score_batches = 8,
--     data = function(ff) return train_loader_or_dataset, test_dataset end,
--     net = function(ff) return ff.nn.mlp{...} end,
--     optim = function(ff, named_params) return ff.optim.SGD(named_params, {...}) end,
--     neighbourhood = { new = 32, eps = 1e-2, steps = 1, lr = 1e-2 },
--     eta = { ratio = 0.35 },            -- or a number, or function(ff) return ff.schedule...
--     batch_size = 128,                  -- when data returns a dataset
--     checkpoint_every = N,              -- also checkpoint every N epochs inside a phase
--   }
-- The run is fully determined by the recipe and the seed: the default
-- generator is seeded before anything is built, and the data order and the
-- growth candidates draw from generators seeded from it.
--
--   firefly grow RECIPE.lua [--seed N] [--out DIR] [key=value ...]
-- key=value overrides a field (numbers, true/false or strings; dotted keys
-- reach into tables: neighbourhood.new=64).
local ff = require "firefly"

local R = {}

local function parse_value(v)
  if v == "true" then return true end
  if v == "false" then return false end
  return tonumber(v) or v
end

-- Apply "a.b.c=value" to the recipe table.
local function override(recipe, assignment)
  local key, value = assignment:match("^([%w_%.]+)=(.*)$")
  if not key then error("grow: bad override '" .. assignment .. "' (expected key=value)", 0) end
  local t, parts = recipe, {}
  for p in key:gmatch("[^%.]+") do parts[#parts + 1] = p end
  for i = 1, #parts - 1 do
    if type(t[parts[i]]) ~= "table" then t[parts[i]] = {} end
    t = t[parts[i]]
  end
  t[parts[#parts]] = parse_value(value)
end

-- Load a recipe file (it is code: recipes are run, checkpoints are data).
function R.load(path)
  local chunk, err = loadfile(path)
  if not chunk then error("grow: cannot load recipe " .. tostring(err), 0) end
  local recipe = chunk()
  if type(recipe) ~= "table" then error("grow: recipe " .. path .. " must return a table", 0) end
  for _, k in ipairs { "data", "net", "optim" } do
    if type(recipe[k]) ~= "function" then
      error("grow: recipe " .. path .. ": field '" .. k .. "' must be a function", 0)
    end
  end
  return recipe
end

-- Run a recipe table; opts: seed, out (log directory; the checkpoint of
-- every phase goes there too), quiet, resume (go on from out's checkpoint
-- when there is one), stop_after (end after that phase: for tests).
function R.run(recipe, opts)
  opts = opts or {}
  if not require("firefly.dist").is_main() then -- dist: rank 0 prints
    local copy = { quiet = true }
    for k, v in pairs(opts) do if k ~= "quiet" then copy[k] = v end end
    opts = copy
  end
  local seed = opts.seed or recipe.seed or 1
  -- dist: deterministic = K makes 1, 2 or 4 ranks bit-identical (spec/dist.md)
  if recipe.deterministic ~= nil then require("firefly.dist").set_deterministic(recipe.deterministic) end
  ff.manual_seed(seed)
  local train, test = recipe.data(ff)
  local loader = train.iter and train or ff.data.DataLoader(train, {
    batch_size = recipe.batch_size or 128, shuffle = true, generator = ff.Generator(seed) })
  local ckpath = opts.out and opts.out .. "/checkpoint.safetensors"
  local ck
  if opts.resume and ckpath and io.open(ckpath) then
    ck = ff.load(ckpath)
    if ck.format ~= "firefly-grow-1" then error("grow: " .. ckpath .. " is not a growth checkpoint", 0) end
  end
  local net = ck and ck.net or recipe.net(ff)
  local optim = recipe.optim(ff, net:named_parameters())
  if ck then optim:load_state_dict(ck.optim) end
  local nb = {}
  for k, v in pairs(recipe.neighbourhood or {}) do nb[k] = v end
  nb.generator = nb.generator or ff.Generator(seed + 1)
  local eta = recipe.eta or { ratio = 0.35 }
  if type(eta) == "function" then eta = eta(ff) end
  if not opts.quiet then
    if ck then print(string.format("resuming after phase %d (%s)", ck.phase, ckpath)) end
    print(net)
  end
  local rows = ff.grow.run { net = net, data = loader, test = test, optim = optim,
    phases = recipe.phases or 4, epochs = recipe.epochs or 1, neighbourhood = nb, eta = eta,
    score_batches = recipe.score_batches or 8, log = opts.out, quiet = opts.quiet,
    checkpoint = ckpath, resume = ck, checkpoint_every = recipe.checkpoint_every,
    on_phase = opts.stop_after and function(t) return t < opts.stop_after end }
  if not opts.quiet then print(net) end
  return rows, net
end

local usage = [[
usage: firefly grow RECIPE.lua [--seed N] [--out DIR] [--resume] [--quiet] [key=value ...]
Runs a growth recipe (a Lua file returning a table; see spec/grow.md).
  --seed N    seed of the run (default: the recipe's seed, else 1)
  --out DIR   where the phase log and checkpoint go (default out/<recipe name>)
  --resume    go on from DIR's checkpoint (written after every phase)
  --quiet     no per-epoch and per-phase lines
  key=value   override a recipe field; dotted keys reach into tables]]

-- The `firefly grow` command: args as strings.
function R.main(...)
  local args = { ... }
  local path, opts, overrides = nil, {}, {}
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "--seed" then opts.seed = tonumber(args[i + 1]); i = i + 1
      if not opts.seed then error("grow: --seed needs a number", 0) end
    elseif a == "--out" then opts.out = args[i + 1]; i = i + 1
      if not opts.out then error("grow: --out needs a directory", 0) end
    elseif a == "--quiet" then opts.quiet = true
    elseif a == "--resume" then opts.resume = true
    elseif a == "--help" or a == "-h" then print(usage); return
    elseif a:find("=", 1, true) then overrides[#overrides + 1] = a
    elseif not path then path = a
    else error("grow: unexpected argument '" .. a .. "'\n" .. usage, 0) end
    i = i + 1
  end
  if not path then error("grow: no recipe given\n" .. usage, 0) end
  local recipe = R.load(path)
  for _, o in ipairs(overrides) do override(recipe, o) end
  opts.out = opts.out or ("out/" .. (path:match("([^/]+)%.lua$") or "grow"))
  local rows = R.run(recipe, opts)
  local last = rows[#rows]
  if not require("firefly.dist").is_main() then return end
  print(string.format("done: widths %s, %d params, test accuracy %s; log in %s/grow.csv", last.widths,
    last.params, last.test_acc and string.format("%.4f", last.test_acc) or "-", opts.out))
end

return R
