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

local tensor_mt = getmetatable(core.zeros(0))

-- true when x is a tensor (any other value gives false).
function ff.is_tensor(x)
  return getmetatable(x) == tensor_mt
end

return ff
