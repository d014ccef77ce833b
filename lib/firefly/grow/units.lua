-- firefly.grow.units: which neurons of a network can grow.
--
-- A growable unit is a producer layer (Linear, or Conv2d without groups)
-- whose output neurons are read by one consumer layer (Linear or Conv2d),
-- with only per-neuron layers in between: batch norm, activations, dropout,
-- pooling, Flatten, GlobalAvgPool, Identity (spec/grow.md, "Growable units"),
-- and residual blocks x + f(x) whose f reads and writes the unit's width
-- (f's first layer is a Linear or Conv2d reading the neurons, its last one
-- writes them): a neuron added to the unit adds an input column to f's
-- first layer and an output row to f's last layer. This is what lets a
-- layer keep growing after Firefly inserted a new layer behind it.
-- A depthwise convolution (per_neuron = "depthwise", MobileNet's blocks) is
-- one of those per-neuron layers: it filters each neuron alone, so a
-- neuron added to the unit adds a kernel to it (see U.depthwise_kernel).
-- Growing the producer adds output rows, entries of the per-neuron layers,
-- and input columns of the consumer; through Flatten one conv channel is
-- `spatial` consecutive input features of the next Linear.
--
-- The walk covers nested Sequentials and the inside of Residual blocks.
-- The last layer of a Sequential feeds whatever follows the Sequential (the
-- network's output, or a residual sum whose width is tied to the trunk), so
-- it is never a producer.
local ff = require "firefly"

local U = {}

-- What a module is, as it says itself (nn declares `neurons`,
-- `per_neuron` and `container` on its classes): grow never looks at class
-- names, so a new layer type that declares these grows without a change
-- here.
local function display_name(m) return m:type_name() end
U.display_name = display_name

local function per_neuron(m) return m.per_neuron ~= nil end
U.per_neuron = per_neuron

-- (a layer that says it is per-neuron never produces: a depthwise conv of
-- one channel has groups = 1 but must stay depthwise when it grows)
local function is_producer(m)
  return m.neurons ~= nil and (m.groups or 1) == 1 and m.weight ~= nil and m.per_neuron == nil
end
U.is_producer = is_producer

-- Whether a producer's neurons are channels (a conv layer) or features.
local function is_conv(m) return m.neurons == "channels" end
U.is_conv = is_conv

-- Output neurons: rows of a Linear's weight, output channels of a Conv2d's.
local function width(m) return m.weight:size(1) end

local function fan_in(m)
  return m.weight:size(2) * (m.groups or 1)
end

-- The kernels of n new neurons in a depthwise convolution m: zeros with
-- the centre tap 1, so a new neuron passes through it as through the
-- identity (at m's stride; exactly so for odd kernels padded by half of
-- their dilated size, as MobileNet's 3x3 padding 1). Shared by apply
-- (edit.lua) and the over-grown network, which must agree.
function U.depthwise_kernel(m, n)
  local kh, kw = m.weight:size(3), m.weight:size(4)
  local k = ff.zeros(n, 1, kh, kw)
  if n > 0 then k:narrow(3, (kh + 1) // 2, 1):narrow(4, (kw + 1) // 2, 1):fill_(1) end
  return k
end

-- The first and last layers of a residual block's f when f is a Sequential
-- that reads and writes `w` neurons through producer layers; else nil.
function U.residual_ends(m, w)
  if m.container ~= "residual" then return nil end
  local f = m:body()
  if f.container ~= "sequential" or #f == 0 then return nil end
  local first, last = f:get(1), f:get(#f)
  if not (is_producer(first) and is_producer(last)) then return nil end
  if first.weight:size(2) ~= w or last.weight:size(1) ~= w then return nil end
  return first, last
end

-- Units of one Sequential (and, recursively, of its nested containers).
local function walk(seq, prefix, out, depth)
  local kids = seq:named_children()
  for i, c in ipairs(kids) do
    local name = prefix == "" and c[1] or prefix .. "." .. c[1]
    local m = c[2]
    if m.container == "sequential" then
      walk(m, name, out, depth + 1)
    elseif m.container == "residual" then
      walk(m:body(), name .. ".f", out, depth + 1)
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
        if spatial * width(m) == fan_in(consumer) and (spatial == 1 or not is_conv(consumer)) then
          out[#out + 1] = { name = name, producer = m, between = between, consumer = consumer,
            spatial = spatial, kind = display_name(m), conv = is_conv(m), parent = seq, depth = depth,
            position = #out + 1 }
        end
      end
    end
  end
end

-- units(net [, where [, who]]) -> list of units {name, producer, between,
-- consumer, spatial, kind (the producer's type, for display), conv (its
-- neurons are channels), parent (the Sequential holding them), depth (how
-- many containers hold it below the network), position (its place in the
-- list)}, in network order; `where` (a list of names) keeps only those
-- producers. A net that is not a module, or a name in `where` that is no
-- unit, is an error naming it (and listing the units): a typo must not
-- read as "the network has no growable units". `who` names the caller.
function U.units(net, where, who)
  who = who or "grow.units"
  if not (type(net) == "table" and type(net.forward) == "function" and type(net.type_name) == "function") then
    error(string.format("%s: argument #1 must be a network (an nn module), got %s", who, type(net)), 3)
  end
  local out = {}
  if net.container == "sequential" then walk(net, "", out, 0)
  elseif net.container == "residual" then walk(net:body(), "f", out, 1) end
  if where ~= nil then
    if type(where) ~= "table" or getmetatable(where) ~= nil then
      error(string.format("%s: where must be a list of unit names, got %s", who, type(where)), 3)
    end
    local names, known = {}, {}
    for _, u in ipairs(out) do names[#names + 1] = u.name; known[u.name] = true end
    local listed = #names > 0 and table.concat(names, ", ") or "none"
    local keep, n = {}, 0
    for k, w in pairs(where) do
      if math.type(k) ~= "integer" then
        error(string.format("%s: where must be a list of unit names, got a key '%s'", who, tostring(k)), 3)
      end
      local name = math.type(w) == "integer" and tostring(w) or w
      if type(name) ~= "string" then
        error(string.format("%s: where[%d] must be a unit name, got %s", who, k, type(w)), 3)
      end
      if not known[name] then
        error(string.format("%s: where names unit '%s', which the network does not have (units: %s)", who, name,
          listed), 3)
      end
      keep[name], n = true, n + 1
    end
    if n == 0 then error(string.format("%s: where lists no units (units: %s)", who, listed), 3) end
    local filtered = {}
    for _, u in ipairs(out) do if keep[u.name] then filtered[#filtered + 1] = u end end
    out = filtered
    for k, u in ipairs(out) do u.position = k end
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
