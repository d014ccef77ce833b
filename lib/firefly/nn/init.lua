-- firefly.nn: neural-network modules, in the spirit of torch's nn.
--
--   local nn = ff.nn
--   local net = nn.Sequential{ nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10) }
--   local y = net(x)
--
-- Constructors are functions (nn.Linear(...)); classes are nn.classes().
local module = require "firefly.nn.module"
local layers = require "firefly.nn.layers"
local containers = require "firefly.nn.containers"
local builders -- loaded below (it uses the constructors)

local nn = { Module = module.Module, class = module.class, classes = module.classes,
  inits = module.inits }

-- Every layer class X with a constructor X_new becomes nn.X(...).
for _, src in ipairs { layers, containers } do
  for key, fn in pairs(src) do
    local name = type(key) == "string" and key:match("^(.+)_new$")
    if name then nn[name] = fn end
  end
end

nn.activation_names = layers.activation_names

-- The activation module for a name ("relu" -> nn.ReLU()).
function nn.activation(name, param)
  local cls = layers.activation_names[name]
  if not cls then
    local known = {}
    for k in pairs(layers.activation_names) do known[#known + 1] = k end
    table.sort(known)
    error("nn.activation: unknown activation '" .. tostring(name) .. "' (known: " ..
      table.concat(known, ", ") .. ")", 2)
  end
  return nn[cls](param)
end

builders = require "firefly.nn.builders"
builders.install(nn)

return nn
