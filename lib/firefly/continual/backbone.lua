-- firefly.continual.backbone: the one description of a continual learner's
-- trunk, shared by Firefly's block network, the baselines and CPG so that
-- every method of a comparison runs on the same architecture.
--
-- A backbone is either an MLP (`hidden = {64, 64}`: Linear + ReLU layers)
-- or a VGG-style conv net (`cfg = {32, 32, "M", 64, 64, "M"}` or a preset
-- name of nn.vgg: 3x3 convolutions with padding 1, each followed by batch
-- norm (`bn`, on by default for conv) and ReLU; "M" a 2x2 max pool),
-- ending in global average pooling (`head = "avg"`) or a flatten over the
-- remaining map (`head = "flatten"`) before the per-task head. Conv
-- backbones read images of `input_shape = {C, H, W}` (the streams store
-- flat rows; they are reshaped on the way in).
--
-- describe(o) turns options into {conv, stages, widths, in_features,
-- spatial, bn, input_shape}: stages is the list {kind = "linear" | "conv" |
-- "pool", out = n} in network order, widths the producers' widths, spatial
-- the number of positions per channel the head reads (1 unless flatten).
local ff = require "firefly"
local nn = ff.nn

local B = {}

B.OPTIONS = { hidden = true, cfg = true, width = true, bn = true, head = true, input_shape = true,
  input_dim = true }

-- The backbone's error messages name the learner (`who`).
function B.describe(who, o)
  local d = { bn = false }
  if o.cfg then
    local cfg = o.cfg
    if type(cfg) == "string" then
      cfg = nn.vgg.presets[cfg]
      if not cfg then error(string.format("%s: option 'cfg' names no nn.vgg preset, got '%s'", who, o.cfg), 4) end
    end
    if type(cfg) ~= "table" or #cfg == 0 then
      error(who .. ": option 'cfg' must be a list of channel counts and \"M\" (or an nn.vgg preset name)", 4)
    end
    local shape = o.input_shape
    if type(shape) ~= "table" or #shape ~= 3 then
      error(who .. ": a conv backbone (option 'cfg') needs option 'input_shape' = {C, H, W}", 4)
    end
    d.conv, d.input_shape, d.bn = true, shape, o.bn ~= false
    d.stages, d.widths = {}, {}
    local h, w = shape[2], shape[3]
    for _, v in ipairs(cfg) do
      if v == "M" then
        d.stages[#d.stages + 1] = { kind = "pool" }
        h, w = h // 2, w // 2
        if h < 1 or w < 1 then
          error(string.format("%s: option 'cfg' pools a %dx%d input below 1x1", who, shape[2], shape[3]), 4)
        end
      elseif math.type(v) == "integer" and v >= 1 then
        local c = math.max(1, math.floor(v * (o.width or 1) + 0.5))
        d.stages[#d.stages + 1] = { kind = "conv", out = c }
        d.widths[#d.widths + 1] = c
      else
        error(string.format("%s: option 'cfg' holds %s (expected channel counts >= 1 and \"M\")", who, tostring(v)), 4)
      end
    end
    if #d.widths == 0 then error(who .. ": option 'cfg' has no convolution", 4) end
    d.in_features = shape[1]
    d.head = o.head or "avg"
    if d.head ~= "avg" and d.head ~= "flatten" then
      error(string.format("%s: option 'head' must be \"avg\" or \"flatten\", got %s", who, tostring(o.head)), 4)
    end
    d.spatial = d.head == "flatten" and h * w or 1
  else
    if not o.input_dim then error(who .. ": option 'input_dim' is required", 4) end
    d.conv, d.bn, d.spatial, d.head = false, o.bn == true, 1, "linear"
    d.in_features = o.input_dim
    d.widths = {}
    d.stages = {}
    for i, w in ipairs(o.hidden) do
      d.widths[i] = w
      d.stages[i] = { kind = "linear", out = w }
    end
  end
  return d
end

-- Flat rows (N x C·H·W) as images for a conv backbone.
function B.input(d, x)
  if d.conv and x:dim() == 2 then
    local s = d.input_shape
    return x:reshape(x:size(1), s[1], s[2], s[3])
  end
  return x
end

-- The trunk as an nn.Sequential (the baselines' network without its head):
-- stages with batch norm and ReLU, then the pooling or flatten the head reads.
-- One task's forward pass over d's stages (the block network's and CPG's
-- alike): layer l computes with layer(l) -> W, b, bn (a table of batch
-- norm tensors, or nil), then ReLU, then after(l, h) when given; 2x2 max
-- pooling between; the head {weight, bias} last. `train`: batch norm uses
-- (and updates) batch statistics, with `momentum`.
function B.forward(d, x, layer, head, train, momentum, after)
  local h = B.input(d, x)
  local l = 0
  for _, s in ipairs(d.stages) do
    if s.kind == "pool" then
      h = ff.max_pool2d(h, 2)
    else
      l = l + 1
      local W, b, bn = layer(l)
      h = d.conv and ff.conv2d(h, W, b, { padding = 1 }) or ff.linear(h, W, b)
      if bn then
        h = ff.batch_norm(h, { weight = bn.weight, bias = bn.bias, running_mean = bn.running_mean,
          running_var = bn.running_var, training = train == true, momentum = momentum })
      end
      h = h:relu()
      if after then h = after(l, h) end
    end
  end
  if d.conv then h = d.head == "avg" and ff.flatten(ff.adaptive_avg_pool2d(h, 1)) or ff.flatten(h) end
  return ff.linear(h, head.weight, head.bias)
end

function B.trunk(d, gen)
  local mods, prev = {}, d.in_features
  for _, s in ipairs(d.stages) do
    if s.kind == "pool" then
      mods[#mods + 1] = nn.MaxPool2d(2)
    elseif s.kind == "conv" then
      mods[#mods + 1] = nn.Conv2d(prev, s.out, 3, { padding = 1, bias = not d.bn, generator = gen })
      if d.bn then mods[#mods + 1] = nn.BatchNorm2d(s.out) end
      mods[#mods + 1] = nn.ReLU()
      prev = s.out
    else
      mods[#mods + 1] = nn.Linear(prev, s.out, { generator = gen })
      if d.bn then mods[#mods + 1] = nn.BatchNorm1d(s.out) end
      mods[#mods + 1] = nn.ReLU()
      prev = s.out
    end
  end
  if d.conv then mods[#mods + 1] = d.head == "avg" and nn.GlobalAvgPool() or nn.Flatten() end
  return nn.Sequential(mods)
end

-- Inputs the head reads: the last width times the positions per channel.
function B.feature_dim(d) return d.widths[#d.widths] * d.spatial end

-- Parameters of one trunk (weights, biases, batch norm's affine entries).
function B.trunk_params(d)
  local n, prev = 0, d.in_features
  for _, s in ipairs(d.stages) do
    if s.kind ~= "pool" then
      local k = s.kind == "conv" and 9 or 1
      n = n + prev * s.out * k + (d.bn and 2 * s.out or s.out)
      prev = s.out
    end
  end
  return n
end

-- Common option checks for the backbone options (util's checkers).
function B.checks(U)
  return {
    input_dim = U.int(1), hidden = U.widths, bn = U.bool,
    width = U.num(0, true),
    head = function(v) if v ~= "avg" and v ~= "flatten" then return "must be \"avg\" or \"flatten\"" end end,
    input_shape = function(v)
      if type(v) ~= "table" or #v ~= 3 then return "must be {C, H, W}" end
      for _, s in ipairs(v) do if math.type(s) ~= "integer" or s < 1 then return "must hold integers >= 1" end end
    end,
  }
end

-- Backbone defaults every learner accepts.
function B.defaults()
  return { input_dim = false, hidden = { 64, 64 }, cfg = false, width = 1, bn = "auto", head = "avg",
    input_shape = false }
end

-- The backbone options of `o` with their defaults filled in.
function B.fill(o)
  local r = {}
  for k, v in pairs(B.defaults()) do r[k] = v end
  for k in pairs(B.OPTIONS) do if o[k] ~= nil then r[k] = o[k] end end
  return r
end

-- bn = "auto": on for conv, off for MLP.
function B.resolve(o)
  local r = {}
  for k, v in pairs(o) do r[k] = v end
  if r.bn == "auto" then r.bn = r.cfg and true or false end
  return r
end

return B
