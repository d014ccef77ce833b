-- firefly.grow.overgrown: the over-grown network of one growth phase: the
-- network with every candidate edit of its units present at once, each
-- behind a gate, so that one backward pass gives ∂L/∂gate for every
-- candidate (the paper's gate trick).
--
-- Around each unit (a producer, per-neuron layers, a consumer; see
-- units.lua), anywhere in nested Sequentials and Residual blocks:
--   split of neuron i   children z_i ± s_i, s_i = (α + y_i)·(x·v_iᵀ), with
--                       v_i = ε_i δ_i (a row shaped like the producer's
--                       weight row), carried through the per-neuron layers
--                       separately and averaged before the consumer (its
--                       columns are halved and duplicated); a residual block
--                       in between reads the children's average and adds
--                       the same to both (its columns halve too)
--   new neuron j        (α + y'_j)·e_j·φ(x·u_jᵀ + c_j) added through outgoing
--                       weights o_j into the consumer's output
--   new layer           a residual block I + h at the unit's width, h(z) =
--                       Σ_j (α + y''_j)·e_j·σ(z·u_jᵀ + c_j)·o_j, before the
--                       consumer (conv units: before Flatten or global
--                       pooling, as a conv-act-conv block)
-- φ is the unit's per-neuron layers (batch norm in evaluation mode, the
-- activation, pooling, a depthwise conv: a new neuron's kernel is the
-- centre tap). A new neuron's batch norm starts as the identity,
-- so it sees only the activation and pooling, and it bypasses residual
-- blocks in between (their rows and columns for it start at zero). The
-- gates y are zeros: ∂L/∂y_i is the effect of scaling candidate i's step.
-- α scales every perturbation at once (α = 1: the endpoint rule; α in
-- {(2k−1)/2g}: the midpoint rule's points).
--
-- The split children travel as one batch of 2N (z + s stacked over z − s):
-- every layer between runs once, and the fused engine op ff.split_act
-- does the leading batch norm and activation of both children in one pass,
-- with the split gates as its per-channel gain on s.
local ff = require "firefly"
local units_mod = require "firefly.grow.units"
local candidates = require "firefly.grow.candidates"

local O = {}
O.__index = O

local gated, split_directions, candidate_layer = candidates.gated, candidates.split_directions, candidates.layer
local outgoing_shape = candidates.outgoing_shape
O.outgoing_shape, O.layer_position = outgoing_shape, candidates.layer_position

local tap_pre, tap_probe -- defined below

-- The producer's op on x with weight w and bias b (conv options shared).
local function produce(unit, x, w, b)
  return unit.producer:with_weights(x, w, b)
end

O.produce = produce

-- The consumer's op on the new neurons' (scaled) outputs with weights o.
local function consume(unit, a, o)
  return unit.consumer:with_weights(a, o)
end
O.consume = consume

-- A per-neuron vector as a tensor broadcasting over z's layout.
local function per_neuron(t, z)
  if z:dim() == 4 then return t:view(1, t:size(1), 1, 1) end
  return t
end

-- Output positions (H·W) of a layer's output, noted while og.record is set.
local function note(self, key, t)
  if self.record then self.record[key] = t:dim() == 4 and t:size(3) * t:size(4) or 1 end
end

local function is_bn(m) return m.per_neuron == "norm" end

-- New neurons through a depthwise conv m (z holds only their channels):
-- their kernels start as the centre tap (units.depthwise_kernel, what
-- apply writes), so they pass at m's stride, padding and dilation.
function O.depthwise_new(m, z)
  local n = z:size(2)
  return ff.conv2d(z, units_mod.depthwise_kernel(m, n), nil,
    { stride = m.stride, padding = m.padding, dilation = m.dilation, groups = n })
end

-- A new neuron's output times its step, `scale` (one value per neuron):
-- the activations and pooling of the unit, but not its batch norm (a new
-- neuron's entries are the identity), dropout or residual blocks; the
-- scale is applied before Flatten or GlobalAvgPool and after any max
-- pooling (which does not commute with a negative scale).
local function phi_new(unit, z, scale)
  local scaled = false
  local function apply_scale(t)
    scaled = true
    return t * per_neuron(scale, t)
  end
  for _, m in ipairs(unit.between) do
    if m.per_neuron == "flatten" then
      if not scaled then z = apply_scale(z) end
      z = m(z)
    elseif m.per_neuron == "depthwise" then
      z = O.depthwise_new(m, z)
    elseif m.per_neuron and not is_bn(m) and m.per_neuron ~= "dropout" then
      z = m(z)
    end
  end
  if not scaled then z = apply_scale(z) end
  return z
end

-- O.build(net, units, opts) -> over-grown network
-- opts: split (true), new (new-neuron candidates per unit, 0), layers
-- (new-layer neurons per unit, 0), eps (initial |ε|, 1e-2), init ("paper"
-- or "official"), generator; or per_unit = {settings of unit 1, ...}, each
-- with the fields split, new, layers, eps and init (a neighbourhood that
-- differs per unit: neighbourhood.lua resolves it).
function O.build(net, units, opts)
  opts = opts or {}
  local g = opts.generator
  local self = setmetatable({ net = net, units = {}, alpha = 1, by_producer = {} }, O)
  for idx, u in ipairs(units) do
    local s = opts.per_unit and opts.per_unit[idx] or opts
    local init, eps = s.init or "paper", s.eps or 1e-2
    local c = { unit = u, eps = eps }
    if s.split ~= false then c.split = split_directions(u.producer.weight, eps, init, g) end
    local n = s.new or 0
    if n > 0 then
      local ushape = u.producer.weight:size()
      ushape[1] = n
      c.new = gated(n, ushape, outgoing_shape(u, n), eps, init, g, u.producer.bias == nil)
    end
    if (s.layers or 0) > 0 then c.layer = candidate_layer(u, s.layers, eps, init, g) end
    -- where the unit's consumer sits in the Sequential holding both
    c.consumer_pos = u.parent:index_of(u.consumer)
    self.units[idx] = c
    self.by_producer[u.producer] = c
  end
  return self
end

-- The perturbation tensors step 1 optimises (ε and δ of every candidate).
function O:perturbations()
  local list = {}
  for _, c in ipairs(self.units) do
    if c.split then list[#list + 1] = c.split.v end
    for _, kind in ipairs { "new", "layer" } do
      if c[kind] then
        for _, k in ipairs { "u", "b", "o", "e" } do
          if c[kind][k]:requires_grad() then list[#list + 1] = c[kind][k] end
        end
      end
    end
  end
  return list
end

function O:gates()
  local list = {}
  for _, c in ipairs(self.units) do
    if c.split then list[#list + 1] = c.split.gate end
    if c.new then list[#list + 1] = c.new.gate end
    if c.layer then list[#list + 1] = c.layer.gate end
  end
  return list
end

-- h(z) of a candidate layer: its gated neurons read z and write back at
-- z's width.
local function layer_h(self, L, z)
  local pre, a
  if L.conv then
    pre = ff.conv2d(z, L.u, L.b, { padding = 1 })
  else
    pre = ff.linear(z, L.u, L.b)
  end
  a = L.act(pre)
  a = a * per_neuron(L.e * (L.gate + self.alpha), a)
  if L.conv then return ff.conv2d(a, L.o, nil, { padding = 1 }) end
  return ff.linear(a, L.o)
end

-- The children's average of a 2N batch (z + s stacked over z − s).
local function average(pair)
  local n = pair:size(1) // 2
  return (pair:narrow(1, 1, n) + pair:narrow(1, n + 1, n)) * 0.5
end

-- A residual stage (a block in between, or the candidate layer) on the
-- current representation: split children read their average and both
-- get the same addition.
local function residual_stage(h, pair, fn)
  if pair then
    local r = fn(average(pair))
    return nil, pair + ff.cat({ r, r }, 1)
  end
  return h + fn(h), nil
end

-- The batch norm (evaluation mode) and activation that open a unit's
-- per-neuron layers, as split_act's options; the number of layers taken.
local function fusable_prefix(between)
  local k, opts = 1, {}
  local m = between[k]
  if m and is_bn(m) and m.running_mean and m.running_var then
    local scale = (m.running_var + m.eps):pow(-0.5)
    if m.weight then scale = scale * m.weight end
    local shift = -m.running_mean * scale
    if m.bias then shift = shift + m.bias end
    opts.scale, opts.shift = scale, shift
    k = k + 1
    m = between[k]
  end
  if m and m.act then
    opts.act, opts.param = m.act, m.param
    return opts, k
  end
  return nil, 0
end

-- Taps (og.taps = {[candidate] = {}}, set by taps.lua): a plain forward
-- that notes, per unit, the producer's input, the pre-activation of its
-- first activation (after batch norm), and zero probes added to that
-- activation's output and to the consumer's output, whose gradients after
-- a backward are ∂L/∂(activation output) and ∂L/∂(consumer output).
function tap_pre(tap, h)
  tap.pre = h:detach()
  return h
end

function tap_probe(tap, key, t)
  local probe = ff.zeros(t:size()):requires_grad(true)
  tap[key .. "_probe"] = probe
  return t + probe
end

-- Products that repeat from pass to pass (og.memo, which a method sets for
-- one propose: O.new_memo()). A unit whose input needs no gradient (the
-- data: the first unit) reads the same batch tensor every pass, and its
-- producer's weights are frozen: its output is computed once per batch.
-- While the perturbations stay put (memo.fixed: step 2 on several points)
-- so are its split product and its new neurons' pre-activations. The same
-- op on the same inputs gives the same bits; the memo stops growing at
-- O.MEMO_BYTES, which the phase's memory counts (the MLP's 8 batches need
-- 2 MiB; the small VGG's first conv 13 MiB per batch and product, so it
-- keeps two batches and stays near twice the training memory).
O.MEMO_BYTES = 32 * 2 ^ 20

function O.new_memo()
  return { bytes = 0, by_input = setmetatable({}, { __mode = "k" }), fixed = false }
end

local function memoised(self, c, key, x, fn)
  local memo = rawget(self, "memo")
  if not memo or (key ~= "z" and not memo.fixed) or x:requires_grad() then return fn() end
  local per = memo.by_input[x]
  local entry = per and per[c]
  if entry and entry[key] then return entry[key] end
  local t = fn()
  if memo.bytes + 4 * t:numel() > O.MEMO_BYTES then return t end
  memo.bytes = memo.bytes + 4 * t:numel()
  if not per then per = {}; memo.by_input[x] = per end
  if not entry then entry = {}; per[c] = entry end
  entry[key] = t
  return t
end

-- A unit's producer applied with every candidate: returns the consumer's
-- input and the new neurons' contribution to the consumer's output.
-- `extra` is the previous unit's contribution to this producer's output
-- (units chain: one unit's consumer is the next one's producer).
function O:unit_forward(c, x, extra)
  local u = c.unit
  local tap = self.taps and self.taps[c]
  if tap then tap.input = x end
  local z = memoised(self, c, "z", x, function() return produce(u, x, u.producer.weight, u.producer.bias) end)
  note(self, u.producer, z)
  if extra then z = z + extra end
  if self.out_tap then z = tap_probe(self.out_tap, "out", z); self.out_tap = nil end
  local between, split, L, new = u.between, c.split, c.layer, c.new
  if self.bare then split, L, new = nil, nil, nil end
  local h, pair = z, nil
  local first = 1
  if split then
    local s = memoised(self, c, "s", x, function() return produce(u, x, split.v) end)
    local gain = split.gate + self.alpha
    local fused, taken = nil, 0
    -- (O.no_fuse: the plain composition, for tests)
    if not O.no_fuse then fused, taken = fusable_prefix(between) end
    h = nil
    -- the gates scale s inside split_act (its gain, whose gradient it sums
    -- in the same pass); O.no_fused_gate: the product of its own, for tests
    if fused and not (L and L.at <= taken) and not O.no_fused_gate then
      fused.gain = gain
    else
      s = s * per_neuron(gain, z)
    end
    if fused and not (L and L.at <= taken) then
      -- the children's average commutes with what is linear per neuron
      -- (batch norm in evaluation, Flatten, average pooling, dropout in
      -- evaluation, residual stages, which read the average anyway): unless
      -- a max pool or another activation follows, the op averages the
      -- children itself and no 2N batch is kept
      fused.pair = false
      for k = taken + 1, #between do
        local m = between[k]
        if m.per_neuron == "maxpool" or m.per_neuron == "activation" then fused.pair = true end
      end
      if fused.pair then pair = ff.split_act(z, s, fused) else h = ff.split_act(z, s, fused) end
      first = taken + 1
    else
      pair = ff.cat({ z + s, z - s }, 1)
    end
  end
  local function layer_here(k)
    if L and L.at == k then
      note(self, L, h or pair)
      h, pair = residual_stage(h, pair, function(t) return layer_h(self, L, t) end)
    end
  end
  for k = first, #between do
    layer_here(k)
    local m = between[k]
    if m.container == "residual" then
      h, pair = residual_stage(h, pair, function(t) return self:module(m:body(), t) end)
    elseif pair then
      pair = m(pair)
    elseif tap and m.act and not tap.pre then
      h = tap_probe(tap, "act", m(tap_pre(tap, h)))
    else
      h = m(h)
    end
    -- (a depthwise conv's output positions: its FLOP cost per neuron)
    if m.per_neuron == "depthwise" then note(self, m, h or pair) end
  end
  layer_here(#between + 1)
  if pair then h = average(pair) end
  local contribution
  if new then
    local n = new
    local pre = memoised(self, c, "new", x, function() return produce(u, x, n.u, n.b) end)
    local a = phi_new(u, pre, n.e * (n.gate + self.alpha))
    contribution = consume(u, a, n.o)
  end
  return h, contribution
end

-- One module of the network, over-grown where it holds units.
function O:module(m, x)
  if m.container == "sequential" then return self:run(m, x) end
  if m.container == "residual" then return x + self:module(m:body(), x) end
  local y = m(x)
  if m.weight then note(self, m, y) end
  return y
end

-- A Sequential's children in order; a unit's producer runs its candidates
-- and hands over to its consumer.
function O:run(seq, x)
  local kids = seq:named_children()
  local extra -- new neurons' contribution waiting for its consumer
  local tapped -- the unit whose consumer comes next, when tapping
  local i = 1
  while i <= #kids do
    local c = self.by_producer[kids[i][2]]
    if c then
      -- (a consumer that produces the next unit: its output is that unit's z)
      self.out_tap, tapped = tapped, nil
      x, extra = self:unit_forward(c, x, extra)
      i = c.consumer_pos -- the consumer comes next: it takes `extra`
      tapped = self.taps and self.taps[c]
    else
      x = self:module(kids[i][2], x)
      if extra then x = x + extra; extra = nil end
      if tapped then x = tap_probe(tapped, "out", x); tapped = nil end
      i = i + 1
    end
  end
  return x
end

-- The over-grown network's output for input x.
function O:forward(x) return self:module(self.net, x) end

-- The network's own output, every candidate left out (the same ops as
-- net(x)), through the memo: the loss before growth reuses what the memo
-- holds.
function O:forward_bare(x)
  self.bare = true
  local ok, y = pcall(self.forward, self, x)
  self.bare = nil
  if not ok then error(y, 0) end
  return y
end

O.__call = function(self, x) return self:forward(x) end

return O
