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

-- Creation functions take an optional last argument {requires_grad = true}:
-- ff.randn(3, 4, {requires_grad = true}). A shape given as a table is a
-- list, so an options table is told apart by its key.
local function with_options(create)
  return function(...)
    local n = select("#", ...)
    local last = n > 0 and select(n, ...) or nil
    if type(last) == "table" and not ff.is_tensor(last) and rawget(last, "requires_grad") ~= nil then
      local t = create(table.unpack({ ... }, 1, n - 1))
      return t:requires_grad(last.requires_grad and true or false)
    end
    return create(...)
  end
end
for _, name in ipairs { "tensor", "zeros", "ones", "full", "empty", "arange", "linspace", "eye",
  "rand", "randn", "randint", "bernoulli" } do
  ff[name] = with_options(core[name])
end

local tensor_mt = getmetatable(core.zeros(0))

-- true when x is a tensor (any other value gives false).
function ff.is_tensor(x)
  return getmetatable(x) == tensor_mt
end

-- Submodules load on first use: ff.nn, ff.optim, ff.data, ...
local submodules = { nn = true, optim = true, data = true, train = true, io = true,
  grow = true, schedule = true, logging = true, plot = true, continual = true,
  profile = true }
setmetatable(ff, {
  __index = function(t, key)
    if submodules[key] then
      local m = require("firefly." .. key)
      rawset(t, key, m)
      return m
    end
  end,
})

function ff.save(path, obj) return require("firefly.io").save(path, obj) end
function ff.load(path, opts) return require("firefly.io").load(path, opts) end

return ff
