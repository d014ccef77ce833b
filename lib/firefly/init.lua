-- firefly: the Lua module, conventionally `local ff = require "firefly"`.
-- The C engine is firefly.core; the pure-Lua parts live beside this file.
local core = require "firefly.core"
require "firefly.tensor" -- adds Lua-written methods to core.Tensor

local ff = {}
for k, v in pairs(core) do ff[k] = v end

-- Every tensor method is also a function of the module, as in torch:
-- ff.exp(t) == t:exp(), ff.add(a, b) == a:add(b).
for name, fn in pairs(core.Tensor) do
  if ff[name] == nil and not name:match("^__") then ff[name] = fn end
end

ff.gradcheck = require "firefly.gradcheck"
ff.dist = nil -- core.dist is the C half; firefly.dist (loaded on use) is the module

-- Creation functions take an optional last argument {requires_grad = true}
-- (random ones also {generator = g}): ff.randn(3, 4, {requires_grad = true}).
-- A shape or the values given as a table are a list, so an options table
-- is told apart by a key that is not a list index; its keys are checked
-- like every other options table (a misspelt one is an error, not ignored).
local options = require "firefly.options"

local function is_options(t)
  if type(t) ~= "table" or getmetatable(t) ~= nil then return false end
  for k in pairs(t) do
    if math.type(k) ~= "integer" or k < 1 then return true end
  end
  return false
end

-- create(...), its errors raised at the caller's line (not this file's).
local function call(create, ...)
  local ok, t = pcall(create, ...)
  if not ok then
    if type(t) == "string" then t = t:gsub("^[^\n]-init%.lua:%d+: ", "") end
    error(t, 3)
  end
  return t
end

local function with_options(name, create, random)
  local known = random and { requires_grad = true, generator = true } or { requires_grad = true }
  return function(...)
    local n = select("#", ...)
    local last = n > 0 and select(n, ...) or nil
    if not is_options(last) then
      local t = call(create, ...) -- (not a tail call: errors point at the caller)
      return t
    end
    options.check(name, last, known, "option", 2)
    local rg, g = last.requires_grad, last.generator
    if rg ~= nil and type(rg) ~= "boolean" then
      error(string.format("%s: option requires_grad must be a boolean, got %s", name, type(rg)), 2)
    end
    if g ~= nil and (getmetatable(g) or {}).__name ~= "firefly.Generator" then
      error(string.format("%s: option generator must be an ff.Generator, got %s", name, type(g)), 2)
    end
    local args = { ... }
    args[n] = g -- after the shape, where a generator goes (or nothing)
    local t = call(create, table.unpack(args, 1, n))
    if rg ~= nil then t:requires_grad(rg) end
    return t
  end
end
for _, name in ipairs { "tensor", "zeros", "ones", "full", "empty", "arange", "linspace", "eye" } do
  ff[name] = with_options(name, core[name], false)
end
for _, name in ipairs { "rand", "randn", "randint", "bernoulli" } do
  ff[name] = with_options(name, core[name], true)
end

local tensor_mt = getmetatable(core.zeros(0))

-- true when x is a tensor (any other value gives false).
function ff.is_tensor(x)
  return getmetatable(x) == tensor_mt
end

-- Submodules load on first use: ff.nn, ff.optim, ff.data, ... The set is
-- in the metatable as __submodules, for what lists a module's names before
-- loading them (the REPL's completion, help()).
local submodules = { nn = true, optim = true, data = true, train = true, io = true,
  grow = true, schedule = true, logging = true, plot = true, continual = true,
  profile = true, dist = true, help = true }
-- ff.io.export(net, dir, opts) is firefly.export's: it builds on
-- firefly.io (files, JSON), so firefly.io cannot require it back.
local function with_export(io_mod)
  if io_mod.export == nil then
    io_mod.export = function(...) return require("firefly.export").export(...) end
  end
  return io_mod
end

setmetatable(ff, {
  __submodules = submodules,
  __index = function(t, key)
    if submodules[key] then
      local m = require("firefly." .. key)
      if key == "io" then with_export(m) end
      rawset(t, key, m)
      return m
    end
  end,
})

-- The engine's file readers and writers, checked against a sandboxed
-- recipe's confinement (firefly.sandbox) before they open anything.
local sandbox = require "firefly.sandbox"
for _, name in ipairs(sandbox.RAW_FILE_FUNCTIONS) do
  ff[name] = sandbox.guard(core[name], name:match("write") and "write" or "read", name)
end

function ff.save(path, obj) return require("firefly.io").save(path, obj) end
function ff.load(path, opts) return require("firefly.io").load(path, opts) end

return ff
