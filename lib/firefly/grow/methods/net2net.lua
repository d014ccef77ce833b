-- method = "net2net": Net2Net (Chen, Goodfellow, Shlens 2016, "Net2Net:
-- accelerating learning via knowledge transfer"), function-preserving
-- growth with no model of the loss.
--
-- Net2WiderNet: a selected neuron becomes two identical copies (a split
-- with a zero direction: each copy gets half the outgoing weights, the
-- copy count being two), then symmetry is broken by noise that keeps the
-- function exact: +ν on one copy's outgoing weights, −ν on the other's,
-- ν ~ N(0, (noise · rms of the consumer's weights)²) per weight. The two
-- copies compute the same activation, so the consumer's sum is unchanged;
-- their gradients differ from the first step on. Every existing neuron is
-- one candidate, so a neuron is copied at most once per phase (twice the
-- copies of the paper's random mapping g would need two phases).
--
-- Net2DeeperNet (`deeper` = how many identity layers a phase may insert,
-- default 0): at a unit's layer place (where Firefly puts its candidate
-- layer: before the consumer, or before Flatten or global pooling for a
-- conv unit) a Linear(w, w) with weight I and bias 0, or a 3x3 Conv2d with
-- the identity kernel and padding 1, followed by a ReLU when what reaches
-- that place is a ReLU output (possibly pooled, flattened or dropped out):
-- ReLU is idempotent on those non-negative inputs, so the function stays
-- exact, and the new layer is a growable unit of its own (producer, ReLU,
-- the old consumer). Anything else (another activation, a residual block
-- or a batch norm after the ReLU) gets the layer alone. No batch norm: the
-- identity layer has its own bias. A layer costs w·w·kernel + w
-- parameters and w neurons at the unit's width after the phase's copies.
--
-- Selection: candidates in a uniformly random order drawn at proposal
-- time from `generator` (so select is repeatable on a proposal), the
-- identity layers first (at most `deeper` of them, units drawn at random),
-- then copies until the budget is spent. Nothing is predicted.
local ff = require "firefly"
local overgrown = require "firefly.grow.overgrown"
local units_mod = require "firefly.grow.units"

local M = { name = "net2net", options = { noise = true, deeper = true } }


local function check(nb)
  local noise = nb.noise or 1e-2
  if type(noise) ~= "number" or not (noise >= 0) then
    error("grow.propose: net2net: noise must be a non-negative number, got " .. tostring(nb.noise), 0)
  end
  local deeper = nb.deeper or 0
  deeper = type(deeper) == "number" and deeper >= 0 and deeper == math.floor(deeper) and deeper < math.huge
    and math.tointeger(deeper)
  if not deeper then
    error("grow.propose: net2net: deeper must be a non-negative integer (identity layers per phase), got "
      .. tostring(nb.deeper), 0)
  end
  return noise, deeper
end

-- Where a unit's identity layer goes: before between[at] (#between + 1:
-- before the consumer), where Firefly's candidate layers go.
local layer_position = require("firefly.grow.overgrown").layer_position

-- Layers that keep a non-negative input non-negative.
local KEEPS_SIGN = { maxpool = true, avgpool = true, flatten = true, dropout = true, identity = true }

-- Whether what reaches between[at] is a ReLU output.
local function relu_at(unit, at)
  local nonneg = false
  for i = 1, at - 1 do
    local m = unit.between[i]
    if m.act == "relu" then nonneg = true
    elseif not KEEPS_SIGN[m.per_neuron] then nonneg = false end
  end
  return nonneg
end

local function anchor_of(unit, at) return unit.between[at] or unit.consumer end

-- Output positions (H·W) of each identity layer: the size of what reaches
-- its anchor, from one forward pass of one example (FLOP budgets need it).
local function record_positions(net, batches, deeper)
  local x
  if batches.iter then
    for bx in batches:iter() do x = bx; break end
  else
    x = batches[1][1]
  end
  local patched = {}
  for _, D in ipairs(deeper) do
    local m = D.anchor
    local fwd = getmetatable(m).forward
    m.forward = function(self, t)
      D.positions = t:dim() == 4 and t:size(3) * t:size(4) or 1
      return fwd(self, t)
    end
    patched[#patched + 1] = m
  end
  local ok, err = pcall(ff.no_grad, function() net(x:narrow(1, 1, 1)) end)
  for _, m in ipairs(patched) do m.forward = nil end
  if not ok then error(err, 0) end
end

function M.build(ctx)
  local nb = ctx.nb
  local noise, n_deeper = check(nb)
  local g = nb.generator
  local og = overgrown.build(ctx.net, ctx.units, { split = false, new = 0 })
  local scores, keys, rms, deeper = {}, {}, {}, {}
  for k, c in ipairs(og.units) do
    local u = c.unit
    local w = u.producer.weight
    local m = w:size(1)
    scores[k], keys[k] = {}, {}
    if ctx.settings[k].split then
      -- copies: splits along zero directions
      c.split = { v = ff.zeros(w:size()), gate = ff.zeros(m) }
      scores[k].split = ff.zeros(m)
      keys[k].split = ff.rand({ m }, g):totable()
    end
    local at = n_deeper > 0 and layer_position(u)
    if at then
      c.deeper = { at = at, anchor = anchor_of(u, at), conv = u.conv, relu = relu_at(u, at),
        kernel = u.conv and 9 or 1, positions = 1, e = ff.ones(1) }
      deeper[#deeper + 1] = c.deeper
      scores[k].deeper = ff.zeros(1)
      keys[k].deeper = { ff.rand({ 1 }, g):item() }
    end
    local cw = u.consumer.weight
    rms[k] = cw:pow(2):mean():sqrt():item()
  end
  if #deeper > 0 then record_positions(ctx.net, ctx.batches, deeper) end
  return {
    og = og, scores = scores, keys = keys, rms = rms, noise = noise, n_deeper = n_deeper, generator = g,
    fixed_steps = true,
    order = M.order, predict = function() return 0 end,
    after_split = M.after_split, insert_deeper = M.insert_deeper,
  }
end

-- The random order: at most n_deeper identity layers first, then copies.
function M.order(self, list)
  local layers, copies = {}, {}
  for _, c in ipairs(list) do
    c.key = self.keys[c.unit][c.kind][c.index]
    if c.kind == "deeper" then layers[#layers + 1] = c else copies[#copies + 1] = c end
  end
  local by_key = function(a, b) return a.key < b.key end
  table.sort(layers, by_key)
  table.sort(copies, by_key)
  local out = {}
  for i = 1, math.min(self.n_deeper, #layers) do out[#out + 1] = layers[i] end
  for _, c in ipairs(copies) do out[#out + 1] = c end
  return out
end

-- After a unit's copies are made: the consumer's columns of each pair of
-- copies are the columns the edit's map reads from the same old column
-- (one column per copy, `spatial` of them after Flatten, an input channel
-- of a Conv2d consumer); +ν on the first, −ν on the second. Residual
-- blocks in between write the same to both copies, so they stay equal.
function M.after_split(self, cand, map)
  -- (no noise in apply's preservation trial, where every step is zero)
  if self.noise == 0 or self.step_scale == 0 then return end
  local consumer = cand.unit.consumer
  local entry
  for _, e in ipairs(map) do if e.new == consumer.weight then entry = e end end
  if not entry then
    error("grow.apply: net2net: the consumer of unit " .. cand.unit.name .. " is frozen (no remap entry)", 0)
  end
  local first, a, b = {}, {}, {}
  for j, s in ipairs(entry.index[2]) do
    if first[s] then a[#a + 1], b[#b + 1] = first[s], j else first[s] = j end
  end
  if #a == 0 then return end
  local shape = consumer.weight:size()
  shape[2] = #a
  local k = 0
  for i, c in ipairs(self.og.units) do if c == cand then k = i end end
  local nu = ff.randn(shape, self.generator) * (self.noise * self.rms[k])
  ff.no_grad(function()
    consumer.weight:index_add_(2, ff.tensor(a), nu)
    consumer.weight:index_add_(2, ff.tensor(b), -nu)
  end)
end

-- The identity layer at the unit's width now (after its copies), inserted
-- before its anchor; returns remap entries for its fresh parameters.
function M.insert_deeper(_, cand)
  local nn = require "firefly.nn"
  local unit, D = cand.unit, cand.deeper
  local w = unit.producer.weight:size(1)
  local layer
  if D.conv then
    layer = nn.Conv2d(w, w, 3, { padding = 1, init = "zeros" })
    ff.no_grad(function() layer.weight:narrow(3, 2, 1):narrow(4, 2, 1):copy_(ff.eye(w):view(w, w, 1, 1)) end)
  else
    layer = nn.Linear(w, w, { init = "zeros" })
    ff.no_grad(function() layer.weight:copy_(ff.eye(w)) end)
  end
  local pos = unit.parent:index_of(D.anchor)
  if D.relu then unit.parent:insert(pos, nn.ReLU()) end
  unit.parent:insert(pos, layer)
  return { { new = layer.weight }, { new = layer.bias } }
end

return M
