-- method = "gradmax": GradMax (Evci, van Merriënboer, Unterthiner,
-- Vladymyrov, Pedregosa 2022, "GradMax: growing neural networks using
-- gradient information", ICLR 2022). New neurons only, as published: zero
-- incoming weights and bias (the function is preserved exactly), outgoing
-- weights chosen to maximise the norm of the gradient of the incoming ones.
--
-- The math. A new neuron with incoming weights u and outgoing weights o
-- adds o·φ(u·z) to the consumer's output (z: the producer's input). At
-- u = 0, ∂L/∂u = φ'(0) E[z gᵀ] o = φ'(0) Mᵀ o with g = ∂L/∂(consumer
-- output) and M = E[g zᵀ] (consumer rows x fan-in). Under ‖o‖ = c the best
-- k neurons are c times the top k *left* singular vectors of M, and neuron
-- j's incoming gradient norm is |φ'(0)|·σ_j·c. The reference code finds
-- them the same way (an auxiliary zero layer from the producer's input to
-- the consumer's output, whose gradient is Mᵀ), with the activation
-- linearised, and trains with a ReLU whose derivative at 0 is 1.
--
-- The activation. A zero pre-activation must give a zero output (φ(0) =
-- 0), else the network's function changes: refused. Its derivative there
-- is measured (autograd at 0 through the unit's activations) and scales
-- the scores, so they are the gradient norms the grown network really
-- has. This engine's ReLU has derivative 0 at 0 (as torch), so new neurons
-- with zero incoming weights would get no gradient and never train: also
-- refused, naming the ways out (an activation with a slope at 0, or the
-- transpose below).
--
-- zero = "outgoing" is that transpose (GradMax's other possible reading,
-- kept because it trains under any activation): zero outgoing weights and
-- incoming weights c times the top k *right* singular vectors of M, which
-- maximise the norm of ∂L/∂o = E[g φ(u·z)] ≈ M u (φ linearised at 0, as
-- the paper assumes). Its scores are σ_j, its default c the mean norm of
-- the producer's incoming rows.
--
-- Conv units, pooling and Flatten: the same with the linear operator
-- B: u ↦ ∂L/∂o of the linearised path: the producer's op with weight u
-- (no bias), then the per-neuron layers with activations as the identity,
-- a new neuron's batch norm as the identity (its entries start so;
-- evaluation mode), dropout as the identity (evaluation), max pooling as
-- average pooling of the same window (the linearisation of a max at equal
-- inputs; padding counted as zeros), residual blocks skipped (a new neuron
-- bypasses them: its rows and columns there start at zero), Flatten and
-- global pooling as they are, then the consumer's op with o. B u is the
-- gradient of ⟨g, consumer(path(u), o)⟩ in o, Bᵀ r its gradient in u at
-- o = r (the pairing is bilinear, so neither depends on where it is
-- taken: u and o start at zero); the published method wants the top
-- singular vectors of Bᵀ, the transpose those of B. They come from
-- block subspace iteration with p = min(max(2k, k + 8), d) vectors (d:
-- the dimension searched: the consumer's weights per neuron, or the
-- producer's fan-in), `iters` rounds (default 2: with that much
-- oversampling the small VGG's scores are within 0.05% of 10 rounds'),
-- then Rayleigh–Ritz on the p x p Gram (a Jacobi eigensolver in Lua), σ_j
-- read as the length of the image; when p = d the start is the whole space
-- and the result is exact. A Linear unit with Linear consumer forms M
-- itself, so every product is one matmul.
--
-- Data: the scoring batches, each weighted by its number of examples (as
-- the loss the proposal reports); g and z are read off one forward and
-- backward per batch (taps.lua).
--
-- Candidates per unit: `new` (default 16), capped at d (there are only d
-- orthogonal directions); past the rank of M the singular values are 0
-- and the directions any orthonormal completion. Norm: the `norm` option,
-- else the mean norm of the existing neurons' weights on the side that is
-- set (outgoing: the consumer's columns, or input channels; incoming: the
-- producer's rows), so new neurons look like old ones (the reference's
-- "mean_norm"). Score: the gradient norm gained per unit of norm; the
-- order is by score·c (the gradient norm the neuron brings), largest
-- first. Nothing is predicted: the loss does not change at growth, the
-- gain shows in the training steps after it. Steps are e = 1, so apply
-- adds the neurons with exactly the weights built here.
local ff = require "firefly"
local overgrown = require "firefly.grow.overgrown"
local taps_mod = require "firefly.grow.taps"
local units_mod = require "firefly.grow.units"
local subspace = require "firefly.grow.methods.subspace"
local dist = require "firefly.dist" -- several ranks: spec/dist.md, "Growth"

local M = { name = "gradmax", options = { norm = true, iters = true, zero = true } }
local top_singular = subspace.top_singular
M.top_singular, M.jacobi = top_singular, subspace.jacobi


-- (tests: use the autograd operator even where M can be formed)
M.force_operator = false

-- v as an integer >= 0 (16.0 is fine), else nil.
local function count(v)
  if type(v) ~= "number" or v < 0 or v ~= math.floor(v) or v == math.huge then return nil end
  return math.tointeger(v)
end

local function check(nb)
  local norm = nb.norm
  if norm ~= nil and (type(norm) ~= "number" or not (norm > 0) or norm == math.huge) then
    error("grow.propose: gradmax: norm must be a positive number, got " .. tostring(norm), 0)
  end
  local iters = count(nb.iters or 2)
  if not iters then
    error("grow.propose: gradmax: iters must be a non-negative integer, got " .. tostring(nb.iters), 0)
  end
  local zero = nb.zero or "incoming"
  if zero ~= "incoming" and zero ~= "outgoing" then
    error("grow.propose: gradmax: zero must be \"incoming\" (as published) or \"outgoing\", got "
      .. tostring(nb.zero), 0)
  end
  return norm, iters, zero
end

-- Candidates per unit: the neighbourhood's `new` for each unit (per-unit
-- settings included), or 16 everywhere when it gives `new` nowhere.
local function counts(ctx)
  local nb, given = ctx.nb, ctx.nb.new ~= nil or type(ctx.nb.default) == "function"
  for _, v in pairs(nb) do
    if type(v) == "table" and v.new ~= nil then given = true end
  end
  local out = {}
  for k = 1, #ctx.units do out[k] = given and ctx.settings[k].new or 16 end
  return out
end

---------------------------------------------------------------- the operators

local produce, consume = overgrown.produce, overgrown.consume

-- dist: the data sums over every rank's rows, so every rank finds the
-- same singular vectors
local over_ranks = require("firefly.grow.batches").over_ranks

-- The per-neuron layers linearised for a new neuron (see the top).
local function linear_path(unit, z)
  for _, m in ipairs(unit.between) do
    local role = m.per_neuron
    if role == "maxpool" then
      z = ff.avg_pool2d(z, m.kernel, { stride = m.stride, padding = m.padding })
    elseif role == "avgpool" or role == "flatten" then
      z = m(z)
    elseif role == "depthwise" then
      -- a new neuron's depthwise kernel starts as the centre tap (linear)
      z = overgrown.depthwise_new(m, z)
    end
  end
  return z
end

local function is_plain(unit, data)
  if unit.conv or units_mod.is_conv(unit.consumer) or unit.spatial ~= 1 then return false end
  for _, m in ipairs(unit.between) do
    local role = m.per_neuron
    if role == "maxpool" or role == "avgpool" or role == "flatten" then return false end
  end
  return data[1].x:dim() == 2
end

-- Shapes of p new neurons' incoming and outgoing weights.
local function in_shape(unit, p)
  local s = unit.producer.weight:size()
  s[1] = p
  return s
end

local out_shape = overgrown.outgoing_shape

-- M = E[g zᵀ] formed: B u = M u, Bᵀ r = Mᵀ r.
local function explicit_operator(unit, data)
  local Mt
  for _, b in ipairs(data) do
    local term = b.g:t():matmul(b.x) * b.w
    Mt = Mt and Mt + term or term
  end
  Mt = over_ranks(Mt)
  return {
    d = Mt:size(2), n_out = Mt:size(1), matrix = Mt,
    fwd = function(V) return V:matmul(Mt:t()) end,
    bwd = function(W) return W:matmul(Mt) end,
    to_consumer = function(W) return W:t():contiguous() end,
  }
end

-- B by autograd: one backward per batch for p vectors at once (neuron j's
-- outgoing weights are block j of o, so the pairing sums over neurons).
local function autograd_operator(unit, data)
  local rows = unit.consumer.weight:size(1)
  local conv_out = units_mod.is_conv(unit.consumer)
  local per = conv_out and unit.consumer.weight:numel() // (rows * unit.consumer.weight:size(2)) or unit.spatial
  -- o (consumer layout) <-> one row per neuron
  local function to_rows(o, p)
    if conv_out then return o:transpose(1, 2):reshape(p, -1) end
    return o:view(rows, p, per):transpose(1, 2):reshape(p, -1)
  end
  local function from_rows(w, p)
    if conv_out then return w:view(p, rows, unit.consumer.weight:size(3), unit.consumer.weight:size(4)):transpose(1, 2):contiguous() end
    return w:view(p, rows, per):transpose(1, 2):reshape(rows, p * per)
  end
  local function pairing(u, o)
    for _, b in ipairs(data) do
      ((consume(unit, linear_path(unit, produce(unit, b.x, u)), o) * b.g):sum() * b.w):backward()
    end
  end
  return {
    d = unit.producer.weight:numel() // unit.producer.weight:size(1), n_out = rows * per,
    fwd = function(V)
      local p = V:size(1)
      local o = ff.zeros(out_shape(unit, p)):requires_grad(true)
      pairing(V:reshape(in_shape(unit, p)), o)
      return to_rows(over_ranks(o.grad), p)
    end,
    bwd = function(W)
      local p = W:size(1)
      local u = ff.zeros(in_shape(unit, p)):requires_grad(true)
      pairing(u, from_rows(W, p))
      return over_ranks(u.grad):reshape(p, -1)
    end,
    to_consumer = function(W) return from_rows(W, W:size(1)) end,
  }
end

function M.operator(unit, data)
  if not M.force_operator and is_plain(unit, data) then return explicit_operator(unit, data) end
  return autograd_operator(unit, data)
end

-- Bᵀ as an operator: its right singular vectors are B's left ones.
local function transposed(op)
  return { d = op.n_out, n_out = op.d, fwd = op.bwd, bwd = op.fwd }
end
M.transposed = transposed

---------------------------------------------------------------- the activation at 0

-- φ(0) and φ'(0) of the unit's activations (composed, in order; batch
-- norm, pooling and the rest map a new neuron's zeros to zeros).
local function at_zero(unit)
  local x = ff.zeros(1):requires_grad(true)
  local y, names = x, {}
  for _, m in ipairs(unit.between) do
    if m.per_neuron == "activation" then
      y = m(y)
      names[#names + 1] = units_mod.display_name(m)
    end
  end
  if #names == 0 then return 0, 1, "identity" end
  y:sum():backward()
  return y:item(), x.grad:item(), table.concat(names, " then ")
end
M.at_zero = at_zero

local function check_activation(unit)
  local value, slope, name = at_zero(unit)
  if value ~= 0 then
    error(string.format("grow.propose: gradmax: unit %s's activation %s gives %g at 0, so a new neuron with "
      .. "zero incoming weights would change the network's output; use zero = \"outgoing\"", unit.name, name,
      value), 0)
  end
  if slope == 0 then
    error(string.format("grow.propose: gradmax: unit %s's activation %s has derivative 0 at 0 (as torch's), "
      .. "so new neurons with zero incoming weights would get no gradient and never train (the reference "
      .. "code trains with a ReLU of derivative 1 at 0); use an activation with a slope at 0 (tanh, "
      .. "leaky_relu, elu, gelu) or zero = \"outgoing\" (zero outgoing weights instead)", unit.name, name), 0)
  end
  return slope
end

---------------------------------------------------------------- build

-- Per unit, per batch: the producer's input z, g = ∂L/∂(consumer output)
-- and the batch's weight (its share of the examples).
local function collect(ctx)
  local each_batch = require("firefly.grow.batches").each_batch
  local tp = taps_mod.new(ctx.net, ctx.units)
  local data, total = {}, 0
  for k = 1, #ctx.units do data[k] = {} end
  each_batch(ctx.batches, function(x, y)
    local _, t = tp:collect(x, y, ctx.lf)
    local n = x:size(1)
    total = total + n
    for k, tk in ipairs(t) do
      if not tk.out_grad then
        error("grow.propose: gradmax: no gradient reached the consumer of unit " .. ctx.units[k].name, 0)
      end
      table.insert(data[k], { x = tk.input, g = tk.out_grad, w = n })
    end
  end)
  total = dist.sum_numbers(total) -- dist: every rank's rows weigh alike
  for k = 1, #data do for _, b in ipairs(data[k]) do b.w = b.w / total end end
  return data
end

function M.build(ctx)
  local nb = ctx.nb
  local norm_opt, iters, zero = check(nb)
  local new = counts(ctx)
  local any = false
  for _, n in ipairs(new) do any = any or n > 0 end
  local g = nb.generator
  local og = overgrown.build(ctx.net, ctx.units, { split = false, new = 0 })
  local slopes = {}
  if zero == "incoming" then
    for k, c in ipairs(og.units) do slopes[k] = check_activation(c.unit) end
  end
  local data = any and collect(ctx)
  local scores, norms = {}, {}
  for k, c in ipairs(og.units) do
    local unit = c.unit
    local w, cw = unit.producer.weight, unit.consumer.weight
    local m = w:size(1)
    if zero == "incoming" then
      -- each existing neuron's outgoing weights: its columns (or input
      -- channel) of the consumer
      norms[k] = norm_opt or cw:view(cw:size(1), m, -1):pow(2):sum(3):sum(1):sqrt():mean():item()
    else
      norms[k] = norm_opt or w:view(m, -1):norm(2, 2):mean():item()
    end
    scores[k] = {}
    local op = new[k] > 0 and M.operator(unit, data[k])
    local kk = op and math.min(new[k], zero == "incoming" and op.n_out or op.d) or 0
    if kk > 0 then
      if zero == "incoming" then
        local top, sigma = top_singular(transposed(op), kk, iters, g)
        c.new = { u = ff.zeros(in_shape(unit, kk)), b = ff.zeros(kk), o = op.to_consumer(top * norms[k]),
          e = ff.ones(kk), gate = ff.zeros(kk) }
        scores[k].new = ff.tensor(sigma) * math.abs(slopes[k])
      else
        local top, sigma = top_singular(op, kk, iters, g)
        c.new = { u = (top * norms[k]):reshape(in_shape(unit, kk)), b = ff.zeros(kk), o = ff.zeros(out_shape(unit, kk)),
          e = ff.ones(kk), gate = ff.zeros(kk) }
        scores[k].new = ff.tensor(sigma)
      end
    end
  end
  return {
    og = og, scores = scores, norms = norms, fixed_steps = true,
    order = function(self, list)
      for _, c in ipairs(list) do c.gain = c.score * self.norms[c.unit] end
      table.sort(list, function(a, b) return a.gain > b.gain end)
      return list
    end,
    predict = function() return 0 end,
  }
end

return M
