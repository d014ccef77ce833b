-- firefly.grow.command: `firefly grow RECIPE.lua [options] [key=value ...]`:
-- the command line of recipes. It confines the library's file access to
-- the data locations, the paths the command line names and --out (unless
-- --trust), sets the limits (--max-seconds, --max-memory), then loads the
-- recipe (sandboxed) and runs it (firefly.grow.recipe).
local ff = require "firefly"
local options = require "firefly.options"
local sandbox = require "firefly.sandbox"
local recipe = require "firefly.grow.recipe"
local dist = require "firefly.dist"

local C = {}

local function whole(v) return type(v) == "number" and v == math.floor(v) and v >= 0 and v < 2 ^ 53 end

local usage = [[
usage: firefly grow RECIPE.lua [--seed N] [--out DIR] [--resume] [--quiet] [--trust]
                     [--allow-read PATH] [--allow-write DIR] [--max-seconds S]
                     [--max-memory MB] [key=value ...]
Runs a growth recipe (a Lua file returning a table; see spec/grow.md) in a
sandbox: the recipe sees ff, math, string, table, utf8, coroutine,
os.time/os.clock and the basic functions; no io, os, debug, load, require.
It reads data from the data locations ($FIREFLY_DATA, the Debian data sets)
and paths given here, and writes only under --out.
  --seed N           seed of the run (default: the recipe's seed, else 1)
  --out DIR          where the phase log and checkpoint go (default out/<recipe name>)
  --resume           go on from DIR's checkpoint (written after every phase);
                     it must be this recipe's, with the same overrides
                     (given none, the recorded ones are reused)
  --quiet            no per-epoch and per-phase lines
  --trust            run the recipe with the full library, unconfined (your own
                     recipes only; trust=true is the same)
  --allow-read PATH  let the sandboxed recipe read PATH (a file or directory)
  --allow-write DIR  let the sandboxed recipe write under DIR
  --max-seconds S    stop the recipe after S seconds of wall time
  --max-memory MB    stop the recipe past MB of Lua memory or of tensors
                     (default: 8192 MB of Lua memory, tensors unbounded)
  key=value          override a recipe field; dotted keys reach into tables]]
-- (firefly --help prints it too)
C.usage = usage

local function number_arg(args, i, name, what)
  local v = tonumber(args[i + 1])
  if not v or v ~= v or v <= 0 or v == math.huge then error("grow: " .. name .. " needs " .. what, 0) end
  return v
end

local function parse_args(args)
  local path, opts, overrides = nil, { allow_read = {}, allow_write = {} }, {}
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "--seed" then
      opts.seed = tonumber(args[i + 1]); i = i + 1
      if not opts.seed or not whole(opts.seed) then error("grow: --seed needs a whole number >= 0", 0) end
    elseif a == "--out" then opts.out = args[i + 1]; i = i + 1
      if not opts.out or opts.out == "" then error("grow: --out needs a directory", 0) end
    elseif a == "--quiet" then opts.quiet = true
    elseif a == "--resume" then opts.resume = true
    elseif a == "--trust" or a == "trust=true" then opts.trust = true
    elseif a == "--allow-read" or a == "--allow-write" then
      local p = args[i + 1]; i = i + 1
      if not p or p == "" then error("grow: " .. a .. " needs a path", 0) end
      local list = a == "--allow-read" and opts.allow_read or opts.allow_write
      list[#list + 1] = p
    elseif a == "--max-seconds" then opts.max_seconds = number_arg(args, i, a, "a number of seconds > 0"); i = i + 1
    elseif a == "--max-memory" then opts.max_memory = number_arg(args, i, a, "a number of megabytes > 0"); i = i + 1
    elseif a == "--help" or a == "-h" then opts.help = true
    elseif a:find("=", 1, true) and not a:find("^%-") then overrides[#overrides + 1] = a
    elseif a:find("^%-") then
      local known = { "--seed", "--out", "--quiet", "--resume", "--trust", "--allow-read", "--allow-write",
        "--max-seconds", "--max-memory", "--help" }
      error("grow: unknown option '" .. a .. "'" .. options.hint(a, known) .. "\n" .. usage, 0)
    elseif not path then path = a
    else error("grow: unexpected argument '" .. a .. "'\n" .. usage, 0) end
    i = i + 1
  end
  return path, opts, overrides
end

-- What a sandboxed recipe may read and write: the data locations, the
-- recipe, the paths the command line names, and --out.
local function confinement(path, opts, overrides)
  local read = ff.data.locations()
  read[#read + 1] = path
  for _, p in ipairs(opts.allow_read) do read[#read + 1] = p end
  for _, o in ipairs(overrides) do
    local v = o:match("^[^=]*=(.+)$")
    if v and not tonumber(v) and v ~= "true" and v ~= "false" and v:find("/", 1, true) then read[#read + 1] = v end
  end
  local write = { opts.out }
  for _, p in ipairs(opts.allow_write) do write[#write + 1] = p end
  return { read = read, write = write }
end

local function checkpoint_note(out)
  local ckpath = out .. "/checkpoint.safetensors"
  if not require("firefly.io").file_size(ckpath) then return "no checkpoint had been written" end
  local ok, ck = pcall(ff.load, ckpath)
  local phase = ok and type(ck) == "table" and ck.phase
  return string.format("the last checkpoint, %s%s, is as it was: go on with --resume", ckpath,
    phase and string.format(" (after phase %d)", phase) or "")
end

-- The `firefly grow` command: args as strings.
function C.main(...)
  if sandbox.confined() then error("grow: a sandboxed recipe cannot run another recipe", 0) end
  local path, opts, overrides = parse_args({ ... })
  if opts.help then print(usage); return end
  if not path then error("grow: no recipe given\n" .. usage, 0) end
  opts.out = opts.out or ("out/" .. (path:match("([^/]+)%.lua$") or "grow"))
  local memory = (opts.max_memory or 8192) * 2 ^ 20
  -- the Lua heap always has a (generous) ceiling; tensors only when asked
  sandbox.limits { seconds = opts.max_seconds, memory = memory, tensors = opts.max_memory ~= nil }
  if not opts.trust then sandbox.confine(confinement(path, opts, overrides)) end
  local ok, rows = pcall(function()
    local r = recipe.load(path, { trust = opts.trust })
    return (recipe.run(r, { seed = opts.seed, out = opts.out, quiet = opts.quiet, resume = opts.resume,
      overrides = overrides }))
  end)
  local why = sandbox.unlimit()
  sandbox.release()
  if not ok then
    if why then error("grow: " .. path .. ": " .. why .. "; " .. checkpoint_note(opts.out), 0) end
    error(type(rows) == "string" and rows or "grow: the recipe raised a " .. type(rows) .. " value", 0)
  end
  if rows.interrupted then -- Ctrl-C: grow.run returned the phases done
    if dist.is_main() then
      print(string.format("interrupted after %d phases; log and checkpoint in %s (--resume goes on)", #rows,
        opts.out))
    end
    return
  end
  local last = rows[#rows]
  if not dist.is_main() then return end
  print(string.format("done: widths %s, %d params, test accuracy %s; log in %s/grow.csv", last.widths,
    last.params, last.test_acc and string.format("%.4f", last.test_acc) or "-", opts.out))
end

return C
