-- firefly.grow.run_options: the check of grow.run's options table. Every
-- option is checked before anything runs: a misspelt key, a wrong type or
-- an out-of-range value is an error naming the option and the value (and
-- the nearest known key), never an internal error phases later.
local ff = require "firefly"
local options = require "firefly.options"

local KNOWN = { "net", "data", "test", "optim", "phases", "epochs", "neighbourhood", "eta", "score_batches", "log",
  "quiet", "on_phase", "checkpoint", "resume", "reset_optim", "lr_schedule", "plot", "val", "on_nan",
  "nan_lr_factor", "max_rollbacks", "loss", "checkpoint_every", "batch_size", "recipe", "preset" }

local function describe(v)
  if type(v) == "string" then return string.format("%q", v) end
  if type(v) == "table" or type(v) == "function" or type(v) == "userdata" then return "a " .. type(v) end
  return tostring(v)
end

local function whole(v, lo)
  return type(v) == "number" and v == math.floor(v) and v >= lo and v < 2 ^ 53
end

local function is_dataset(v) return type(v) == "table" and ff.is_tensor(rawget(v, "x")) end
local function is_loader(v) return type(v) == "table" and type(v.iter) == "function" end

-- check(opts): raises at grow.run's caller on the first bad option.
local function check(opts)
  if type(opts) ~= "table" then error("grow.run: expected a table of options, got " .. type(opts), 3) end
  options.check("grow.run", opts, KNOWN, "option", 3)
  for _, k in ipairs { "net", "data", "optim" } do
    if not opts[k] then error("grow.run: missing '" .. k .. "'", 3) end
  end
  local function bad(k, what, level)
    error(string.format("grow.run: %s must be %s, got %s", k, what, describe(opts[k])), level or 4)
  end
  local function expect(k, ok, what) if opts[k] ~= nil and not ok(opts[k]) then bad(k, what, 5) end end
  local net = opts.net
  if type(net) ~= "table" or type(net.named_parameters) ~= "function" or type(net.forward) ~= "function" then
    bad("net", "a network (an ff.nn module)")
  end
  if not (is_loader(opts.data) or is_dataset(opts.data)) then bad("data", "a DataLoader or a data set") end
  local n = is_loader(opts.data) and #opts.data or opts.data.x:size(1)
  if n == 0 then error("grow.run: data is empty (no training batches)", 3) end
  expect("test", function(v) return is_loader(v) or is_dataset(v) end, "a DataLoader or a data set")
  expect("val", function(v) return is_loader(v) or is_dataset(v) end, "a DataLoader or a data set")
  if type(opts.optim) ~= "table" or type(opts.optim.step) ~= "function" then bad("optim", "an optimiser") end
  expect("phases", function(v) return whole(v, 1) end, "a whole number >= 1")
  expect("epochs", function(v) return whole(v, 1) end, "a whole number >= 1")
  expect("batch_size", function(v) return whole(v, 1) end, "a whole number >= 1")
  expect("score_batches", function(v) return v == "all" or whole(v, 1) end, "a whole number >= 1 or \"all\"")
  -- (a function(unit) -> settings is a neighbourhood too: grow.propose's
  -- per-unit form, read as {default = fn})
  expect("neighbourhood", function(v) return type(v) == "table" or type(v) == "function" end,
    "a table of options ({new = 32, eps = 1e-2, ...}) or a function(unit) -> settings")
  if type(opts.neighbourhood) == "table" and opts.neighbourhood.batches ~= nil then
    local b = opts.neighbourhood.batches
    if not (b == "all" or whole(b, 1)) then
      error("grow.run: neighbourhood.batches must be a whole number >= 1 or \"all\", got " .. describe(b), 3)
    end
  end
  expect("eta", function(v)
    if type(v) == "number" then return v > 0 and v ~= math.huge end
    if type(v) == "table" and v.ratio ~= nil then return type(v.ratio) == "number" and v.ratio > 0 end
    return type(v) == "table" or type(v) == "function"
  end, "a number of neurons > 0, {ratio = r > 0}, a budget table or a function(t, net) -> budget")
  expect("preset", function(v) return v == "paper" or v == "official" end, '"paper" or "official"')
  expect("log", function(v) return type(v) == "string" and v ~= "" end, "a directory path")
  expect("checkpoint", function(v) return type(v) == "string" and v ~= "" end, "a file path")
  expect("resume", function(v) return type(v) == "table" and v.format == "firefly-grow-1" end, "a loaded growth checkpoint")
  expect("on_phase", function(v) return type(v) == "function" end, "a function(t, row)")
  expect("lr_schedule", function(v) return type(v) == "function" end, "a function(optim, t) -> schedule")
  expect("reset_optim", function(v) return type(v) == "boolean" or type(v) == "function" end,
    "true, false or a function(net) -> optimiser")
  expect("loss", function(v) return type(v) == "string" or type(v) == "function" end, "a loss name or a function")
  expect("quiet", function(v) return type(v) == "boolean" end, "true or false")
  expect("plot", function(v) return type(v) == "boolean" end, "true or false")
  expect("recipe", function(v) return type(v) == "table" end, "a table (what the checkpoint records of the recipe)")
end

return { check = check, is_loader = is_loader, is_dataset = is_dataset, KNOWN = KNOWN }
