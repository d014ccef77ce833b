-- firefly.grow.units: which neurons of a network can grow.
--
-- A growable unit is a producer layer (Linear, or Conv2d without groups)
-- whose output neurons are read by one consumer layer (Linear or Conv2d),
-- with only per-neuron layers in between: batch norm, activations, dropout,
-- pooling, Flatten, GlobalAvgPool, Identity (firefly-method.md section 8),
-- and residual blocks x + f(x) whose f reads and writes the unit's width
-- (f's first layer is a Linear or Conv2d reading the neurons, its last one
-- writes them): a neuron added to the unit adds an input column to f's
-- first layer and an output row to f's last layer. This is what lets a
-- layer keep growing after Firefly inserted a new layer behind it.
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
U.class_of = class_of

local function is_activation(m)
  return m.act ~= nil and m.forward ~= nil and #m._params == 0
end

local function per_neuron(m)
  return PER_NEURON[class_of(m)] or is_activation(m)
end

local function is_producer(m)
  return PRODUCER[class_of(m)] and not (class_of(m) == "Conv2d" and m.groups ~= 1)
end

-- Output neurons: rows of a Linear's weight, output channels of a Conv2d's.
local function width(m) return m.weight:size(1) end

local function fan_in(m)
  return m.weight:size(2) * (class_of(m) == "Conv2d" and m.groups or 1)
end

-- The first and last layers of a residual block's f when f is a Sequential
-- that reads and writes `w` neurons through producer layers; else nil.
function U.residual_ends(m, w)
  if class_of(m) ~= "Residual" then return nil end
  local f = m._children[1][2]
  if class_of(f) ~= "Sequential" or #f._children < 1 then return nil end
  local first, last = f._children[1][2], f._children[#f._children][2]
  if not (is_producer(first) and is_producer(last)) then return nil end
  if first.weight:size(2) ~= w or last.weight:size(1) ~= w then return nil end
  return first, last
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
    elseif is_producer(m) then
      local between, consumer = {}, nil
      for j = i + 1, #kids do
        local n = kids[j][2]
        if per_neuron(n) or U.residual_ends(n, width(m)) then
          between[#between + 1] = n
        else
          if is_producer(n) then consumer = n end
          break
        end
      end
      if consumer then
        local spatial = fan_in(consumer) // width(m)
        if spatial * width(m) == fan_in(consumer) and (spatial == 1 or class_of(consumer) == "Linear") then
          out[#out + 1] = { name = name, producer = m, between = between, consumer = consumer,
            spatial = spatial, kind = cls, parent = seq }
        end
      end
    end
  end
end

-- units(net [, where]) -> list of units {name, producer, between, consumer,
-- spatial, kind, parent (the Sequential holding them)}, in network order;
-- `where` (a list of names) keeps only those producers.
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

-- The widths of a list of units as "16-16", and their neurons in all.
function U.widths(us)
  local w = {}
  for i, u in ipairs(us) do w[i] = width(u.producer) end
  return table.concat(w, "-")
end

function U.neuron_count(us)
  local n = 0
  for _, u in ipairs(us) do n = n + width(u.producer) end
  return n
end

return U
