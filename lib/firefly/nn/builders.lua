-- firefly.nn.builders: whole networks from a few numbers: nn.mlp, nn.vgg
-- (with the VGG presets, the paper's VGG-19 among them) and
-- nn.mobilenet_v1. All of them are plain Sequentials, so the growth code
-- walks them like any hand-written network.
local options = require "firefly.options"

local B = {}

-- The named options of a spec (its list part holds the sizes).
local function check_options(what, opts, allowed)
  local named = {}
  for k, v in pairs(opts) do
    if type(k) ~= "number" then named[k] = v end
  end
  options.check(what, named, allowed, "option", 3)
end

-- nn.mlp{784, 64, 64, 10, act = "relu", bn = false, dropout = 0}
local function mlp(nn, spec)
  check_options("mlp", spec, { act = true, bn = true, dropout = true, generator = true })
  if #spec < 2 then error("mlp: give at least an input and an output size, e.g. {784, 10}", 2) end
  local act, g = spec.act or "relu", spec.generator
  local net = nn.Sequential()
  for i = 1, #spec - 1 do
    net:add(nn.Linear(spec[i], spec[i + 1], { generator = g }))
    if i < #spec - 1 then
      if spec.bn then net:add(nn.BatchNorm1d(spec[i + 1])) end
      net:add(nn.activation(act))
      if spec.dropout and spec.dropout > 0 then net:add(nn.Dropout(spec.dropout)) end
    end
  end
  return net
end

local presets = {
  vgg11 = { 64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M" },
  vgg16 = { 64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M" },
  vgg19 = { 64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
    512, 512, 512, 512, "M" },
  small = { 32, 32, "M", 64, 64, "M" },
}
B.vgg_presets = presets

-- nn.vgg{cfg = {16, 16, "M", ...} | preset = "vgg19", width = 1, in_channels = 3,
--        classes = 10, bn = true, act = "relu", input_size = nil}
-- Numbers are 3x3 convolutions (padding 1) followed by BN and the
-- activation; "M" is a 2x2 max pool. The classifier is global average
-- pooling then Linear, or, when input_size is given, Flatten then Linear
-- over the remaining map. width multiplies every channel count (the paper
-- grows VGG-19 from 16 channels per layer: width = 0.25).
local function vgg(nn, spec)
  check_options("vgg", spec, { cfg = true, preset = true, width = true, in_channels = true,
    classes = true, bn = true, act = true, input_size = true, generator = true })
  local cfg = spec.cfg or presets[spec.preset or "vgg19"]
  if not cfg then error("vgg: unknown preset '" .. tostring(spec.preset) .. "'", 2) end
  if type(cfg) ~= "table" or #cfg == 0 then
    error("vgg: cfg must be a non-empty list of channel counts and \"M\" (max pooling), got " .. type(cfg), 2)
  end
  for i, v in ipairs(cfg) do
    if v ~= "M" and not (type(v) == "number" and v == math.floor(v) and v >= 1 and v < 2 ^ 31) then
      error(string.format("vgg: cfg[%d] must be a channel count (a whole number >= 1) or \"M\" (max pooling), got %s",
        i, type(v) == "string" and string.format("%q", v) or tostring(v)), 2)
    end
  end
  local width, g = spec.width or 1, spec.generator
  local bn = spec.bn ~= false
  local net = nn.Sequential()
  local c, size = spec.in_channels or 3, spec.input_size
  for _, v in ipairs(cfg) do
    if v == "M" then
      net:add(nn.MaxPool2d(2))
      if size then size = size // 2 end
    else
      local out = math.max(1, math.floor(v * width + 0.5))
      net:add(nn.Conv2d(c, out, 3, { padding = 1, bias = not bn, generator = g }))
      if bn then net:add(nn.BatchNorm2d(out)) end
      net:add(nn.activation(spec.act or "relu"))
      c = out
    end
  end
  if size then
    net:add(nn.Flatten())
    net:add(nn.Linear(c * size * size, spec.classes or 10, { generator = g }))
  else
    net:add(nn.GlobalAvgPool())
    net:add(nn.Linear(c, spec.classes or 10, { generator = g }))
  end
  return net
end

-- nn.mobilenet_v1{width = 1, in_channels = 3, classes = 10, stem_stride = 2}
-- Howard et al. 2017: a 3x3 stem, then 13 depthwise-separable blocks
-- (depthwise 3x3 conv with groups = channels, BN, ReLU, pointwise 1x1
-- conv, BN, ReLU), global average pooling and a Linear classifier. Use
-- stem_stride = 1 for 28x28 or 32x32 inputs. channels = {stem, block 1,
-- ..., block 13} (14 numbers) sets every width instead of `width` (a grown
-- network's widths, to train the same shape from scratch).
local function mobilenet_v1(nn, spec)
  check_options("mobilenet_v1", spec, { width = true, in_channels = true, classes = true,
    stem_stride = true, generator = true, channels = true })
  local width, g = spec.width or 1, spec.generator
  local blocks = { { 64, 1 }, { 128, 2 }, { 128, 1 }, { 256, 2 }, { 256, 1 }, { 512, 2 },
    { 512, 1 }, { 512, 1 }, { 512, 1 }, { 512, 1 }, { 512, 1 }, { 1024, 2 }, { 1024, 1 } }
  local chans = spec.channels
  if chans ~= nil then
    if type(chans) ~= "table" or #chans ~= #blocks + 1 then
      error(string.format("mobilenet_v1: channels must be a list of %d widths (the stem, then each block), got %s",
        #blocks + 1, type(chans) == "table" and #chans .. " entries" or type(chans)), 3)
    end
    for i, v in ipairs(chans) do
      if math.type(v) ~= "integer" or v < 1 then
        error(string.format("mobilenet_v1: channels[%d] must be an integer >= 1, got %s", i, tostring(v)), 3)
      end
    end
  end
  local k = 0
  local function ch(n)
    k = k + 1
    if chans then return chans[k] end
    return math.max(1, math.floor(n * width + 0.5))
  end
  local net = nn.Sequential()
  local c = ch(32)
  net:add(nn.Conv2d(spec.in_channels or 3, c, 3,
    { stride = spec.stem_stride or 2, padding = 1, bias = false, generator = g }))
  net:add(nn.BatchNorm2d(c))
  net:add(nn.ReLU())
  for _, b in ipairs(blocks) do
    local out = ch(b[1])
    local dw = nn.Conv2d(c, c, 3, { stride = b[2], padding = 1, groups = c, bias = false, generator = g })
    -- (one channel: groups = 1 cannot say it; the block stays depthwise
    -- when growth widens it)
    dw.per_neuron = "depthwise"
    net:add(dw)
    net:add(nn.BatchNorm2d(c))
    net:add(nn.ReLU())
    net:add(nn.Conv2d(c, out, 1, { bias = false, generator = g }))
    net:add(nn.BatchNorm2d(out))
    net:add(nn.ReLU())
    c = out
  end
  net:add(nn.GlobalAvgPool())
  net:add(nn.Linear(c, spec.classes or 10, { generator = g }))
  return net
end

function B.install(nn)
  nn.mlp = function(spec) return mlp(nn, spec) end
  nn.vgg = setmetatable({ presets = presets }, {
    __call = function(_, spec) return vgg(nn, spec) end,
  })
  nn.mobilenet_v1 = function(spec) return mobilenet_v1(nn, spec or {}) end
end

return B
