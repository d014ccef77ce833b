-- firefly.grow.units: which neurons of a network can grow.
--
-- A growable unit is a producer layer (Linear, or Conv2d without groups)
-- whose output neurons are read by one consumer layer (Linear or Conv2d),
-- with only per-neuron layers in between: batch norm, activations, dropout,
-- pooling, Flatten, GlobalAvgPool, Identity (firefly-method.md section 8).
-- Growing the producer adds output rows, entries of the per-neuron layers,
-- and input columns of the consumer; through Flatten one conv channel is
-- `spatial` consecutive input features of the next Linear.
--
-- The walk covers nested Sequentials and the inside of Residual blocks.
-- The last layer of a Sequential feeds whatever follows the Sequential (the
-- network's output, or a residual sum whose width is tied to the trunk), so
-- it is never a producer.
local U = {}

local PRODUCER = { Linear = true, Conv2d = true }
local PER_NEURON = {
  BatchNorm1d = true, BatchNorm2d = true, Dropout = true, MaxPool2d = true, AvgPool2d = true,
  Flatten = true, GlobalAvgPool = true, Identity = true,
}

local function class_of(m) return getmetatable(m).__name end

local function is_activation(m)
  return m.act ~= nil and m.forward ~= nil and #m._params == 0
end

local function per_neuron(m)
  return PER_NEURON[class_of(m)] or is_activation(m)
end

-- Output neurons: rows of a Linear's weight, output channels of a Conv2d's.
local function width(m) return m.weight:size(1) end

local function fan_in(m)
  return m.weight:size(2) * (class_of(m) == "Conv2d" and m.groups or 1)
end

-- Units of one Sequential (and, recursively, of its nested containers).
local function walk(seq, prefix, out)
  local kids = seq._children
  for i, c in ipairs(kids) do
    local name = prefix == "" and c[1] or prefix .. "." .. c[1]
    local m = c[2]
    local cls = class_of(m)
    if cls == "Sequential" then
      walk(m, name, out)
    elseif cls == "Residual" then
      walk(m._children[1][2], name .. ".f", out)
    elseif PRODUCER[cls] and not (cls == "Conv2d" and m.groups ~= 1) then
      local between, consumer = {}, nil
      for j = i + 1, #kids do
        local n = kids[j][2]
        if per_neuron(n) then
          between[#between + 1] = n
        else
          if PRODUCER[class_of(n)] and not (class_of(n) == "Conv2d" and n.groups ~= 1) then
            consumer = n
          end
          break
        end
      end
      if consumer then
        local spatial = fan_in(consumer) // width(m)
        if spatial * width(m) == fan_in(consumer) and (spatial == 1 or class_of(consumer) == "Linear") then
          out[#out + 1] = { name = name, producer = m, between = between, consumer = consumer,
            spatial = spatial, kind = cls }
        end
      end
    end
  end
end

-- units(net [, where]) -> list of units {name, producer, between, consumer,
-- spatial, kind}; `where` (a list of names) keeps only those producers.
function U.units(net, where)
  local out = {}
  if class_of(net) == "Sequential" then walk(net, "", out)
  elseif class_of(net) == "Residual" then walk(net._children[1][2], "f", out) end
  if where then
    local keep = {}
    for _, w in ipairs(where) do keep[w] = true end
    local filtered = {}
    for _, u in ipairs(out) do if keep[u.name] then filtered[#filtered + 1] = u end end
    out = filtered
  end
  return out
end

-- The number of neurons of a unit (rows of Linear, channels of Conv2d).
U.width = function(u) return width(u.producer) end

return U
