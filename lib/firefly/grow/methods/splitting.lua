-- firefly.grow.methods.splitting: what the two splitting baselines share
-- (split_exact.lua and split_fast.lua; Liu, Wu, Wang 2019, "Splitting
-- steepest descent for growing neural architectures", and Wang et al.
-- 2019, "Energy-aware neural architecture optimization with fast splitting
-- steepest descent").
--
-- The math. Neuron i of a unit has pre-activation z_i = θ_i·x + b_i, a
-- batch norm in evaluation mode u_i = c_i z_i + s_i (c_i = 1 without one)
-- and activation output h_i = σ(u_i). Split into children θ_i ± v, each
-- with half the outgoing weights, the consumer reads
--   ½[σ(u_i + c_i v·x) + σ(u_i − c_i v·x)] = h_i + ½ σ''(u_i) c_i² (v·x)² + O(v⁴)
-- so the loss changes by ½ vᵀ S_i v + O(v⁴) with the splitting matrix
--   S_i = Σ_r a_ri z_r z_rᵀ,   a_ri = ∂L/∂h_ri · σ''(u_ri) · c_i²
-- where r runs over the examples (and, for Conv2d, the output positions:
-- z_r is then the input patch the filter reads there) and ∂L/∂h comes from
-- the loss as lf returns it (the batch mean for cross_entropy). Over
-- several batches each batch counts by its number of examples, as the
-- loss the proposal reports (propose's mean_loss) weighs them. There is no
-- first-order term: the children's average is even in v. Splitting along
-- ±step·v_min (a unit eigenvector of λ_min(S_i)) changes the loss by
-- (step²/2)·λ_min, which lowers it only when λ_min < 0.
local ff = require "firefly"
local dist = require "firefly.dist" -- several ranks: spec/dist.md, "Growth"
local overgrown = require "firefly.grow.overgrown"
local taps_mod = require "firefly.grow.taps"
local units_mod = require "firefly.grow.units"

local S = {}


-- ReLU's σ'' is zero almost everywhere; as the original code does, the
-- splitting matrix uses softplus(β = 3)'s instead: β s(βx)(1 − s(βx)).
S.SURROGATE_BETA = 3

-- Activations with a true second derivative (ff.act_d2), by name.
local SMOOTH = { tanh = true, sigmoid = true, softplus = true, gelu = true, silu = true, elu = true,
  rbf = true }

-- σ''(x) for an activation module (its .act name and .param). leaky_relu
-- is αx + (1 − α)·relu(x), so its surrogate is (1 − α) times ReLU's.
local function curvature(method, unit, act)
  local name, param = act.act, act.param
  local beta = S.SURROGATE_BETA
  if name == "relu" then
    return function(x) return ff.act_d2("softplus", x, beta) end
  elseif name == "leaky_relu" then
    local k = 1 - (param or 0.01)
    return function(x) return ff.act_d2("softplus", x, beta) * k end
  elseif SMOOTH[name] then
    return function(x) return ff.act_d2(name, x, param or 1) end
  end
  error(string.format("grow.propose: %s: unit %s has activation %s, which has no second derivative here "
    .. "(known: relu, leaky_relu, tanh, sigmoid, softplus, gelu, silu, elu, rbf)", method, unit.name,
    tostring(name)), 0)
end

local function is_bn(m) return m.per_neuron == "norm" end
local display_name = units_mod.display_name

-- The unit's neurons as the method reads them: an activation directly
-- after the producer, or a batch norm (with running statistics) and then
-- one. Anything else is an error: the taps' pre-activation would not be
-- u_i, and the formula above would not hold.
local function unit_curvature(method, u)
  local m, k = u.between[1], 1
  if m and is_bn(m) then
    if not (m.running_mean and m.running_var) then
      error(string.format("grow.propose: %s: unit %s: its %s keeps no running statistics (evaluation mode "
        .. "needs them)", method, u.name, display_name(m)), 0)
    end
    k, m = 2, u.between[2]
  end
  if not (m and m.act) then
    error(string.format("grow.propose: %s: unit %s (%s): the layers after the producer must start with an "
      .. "activation, or a batch norm then an activation; got %s", method, u.name, u.kind,
      k == 2 and "BatchNorm then " .. (m and display_name(m) or "nothing") or (m and display_name(m) or "nothing")), 0)
  end
  return curvature(method, u, m)
end

---------------------------------------------------------------- options

local function check_positive(method, key, v, integer)
  if v == nil then return end
  if type(v) ~= "number" or not (v > 0) or v == math.huge or (integer and math.type(v) ~= "integer") then
    error(string.format("grow.propose: %s: %s must be a positive %s, got %s", method, key,
      integer and "integer" or "number", tostring(v)), 0)
  end
end

-- The options both methods take: step (1e-2) and fraction (1). nb.new and
-- nb.layers are not part of these methods and are ignored; nb.split =
-- false leaves nothing to do and is an error.
function S.check_options(method, nb)
  if nb.split == false then
    error("grow.propose: " .. method .. ": split = false leaves nothing to grow (this method only splits)", 0)
  end
  check_positive(method, "step", nb.step)
  local f = nb.fraction
  if f ~= nil and (type(f) ~= "number" or not (f > 0 and f <= 1)) then
    error("grow.propose: " .. method .. ": fraction must be a number in (0, 1], got " .. tostring(f), 0)
  end
  check_positive(method, "iters", nb.iters, true)
end

---------------------------------------------------------------- taps

-- dist: the data sums over every rank's rows, so every rank finds the
-- same eigenpairs
S.over_ranks = require("firefly.grow.batches").over_ranks

-- The batches used: the first ceil(fraction · #batches) of them (at least
-- one), in order, so that a seed gives the same ones.
local function used_count(batches, fraction)
  local n = #batches
  if n == 0 then error("grow.propose: no batches to estimate the splitting matrices from", 0) end
  return math.max(1, math.min(n, math.ceil((fraction or 1) * n - 1e-9)))
end

local function each_used(batches, count, fn)
  local done = 0
  if batches.iter then
    for x, y in batches:iter() do
      done = done + 1
      if done > count then break end
      fn(x, y)
    end
  else
    for i = 1, count do fn(batches[i][1], batches[i][2]) end
  end
end

-- For every used batch, one forward and backward through the taps, and
-- per unit k: fn(k, input, a, n) with the producer's input, a = ∂L/∂h ·
-- σ''(u) · c² in the producer's output layout ((N, m) or (N, m, H, W)),
-- and n the batch's examples. Returns the examples seen in all (over
-- every rank: the methods sum their own terms over ranks).
function S.collect(ctx, method, fn)
  local curv = {}
  for k, u in ipairs(ctx.units) do curv[k] = unit_curvature(method, u) end
  local tp = taps_mod.new(ctx.net, ctx.units)
  local total, batch = 0, 0
  each_used(ctx.batches, used_count(ctx.batches, ctx.nb.fraction), function(x, y)
    local _, t = tp:collect(x, y, ctx.lf)
    local n = x:size(1)
    total, batch = total + n, batch + 1
    ff.no_grad(function()
      for k, u in ipairs(ctx.units) do
        local tk = t[k]
        local a = tk.act_grad and tk.act_grad * curv[k](tk.pre) or ff.zeros(tk.pre:size())
        if tk.bn_scale then
          local c2 = tk.bn_scale:pow(2)
          a = a * (a:dim() == 4 and c2:view(1, -1, 1, 1) or c2)
        end
        local check = a:abs():sum():item()
        if check ~= check or check == math.huge then
          error(string.format("grow.propose: %s: unit %s: the loss or its gradient is not finite on batch %d",
            method, u.name, batch), 0)
        end
        fn(k, tk.input, a, n)
      end
    end)
  end)
  return dist.sum_numbers(total) -- dist: every rank's examples
end

-- The rows z_r and coefficients a_r of the splitting matrices: (R, d) and
-- (R, m), r over examples (and output positions). Conv2d: the input
-- patches, from ff.unfold with the producer's stride, padding and dilation
-- (rows of d = C·kh·kw, ordered as the filter's weights are).
function S.rows(u, input, a)
  if not u.conv then
    return input:reshape(-1, input:size(input:dim())), a:reshape(-1, a:size(a:dim()))
  end
  local p, w = u.producer, u.producer.weight
  local patches = ff.unfold(input, { w:size(3), w:size(4) },
    { stride = p.stride, padding = p.padding, dilation = p.dilation })
  local z = patches:transpose(2, 3):reshape(-1, patches:size(2))
  return z, a:permute(1, 3, 4, 2):reshape(-1, a:size(2))
end

-- The producer's op on x with weight rows V (no bias): z·v for every row
-- and position, as the forward computes z·θ.
function S.produce(u, x, V)
  return u.producer:with_weights(x, V)
end

-- Unit rows, each signed so that its entry of largest magnitude is
-- positive (ff.linalg.eigh's rule, so both methods split the same way).
function S.canonical_sign(V)
  local top = V:gather(2, V:abs():argmax(2, true))
  local sign = top:sign()
  return V * (sign + sign:eq(0)) -- a zero row stays zero
end

---------------------------------------------------------------- proposal

-- The proposal of both methods from per-unit λ_min (m) and unit
-- directions (m, d): candidates split neuron i into θ_i ± step·v_i
-- (fixed steps), score λ_min, considered most negative first and only
-- while negative, each predicting (step²/2)·λ_min.
function S.proposal(ctx, lambdas, dirs)
  local step = ctx.nb.step or 1e-2
  -- (a private generator: the random directions are overwritten below,
  -- and the default generator must not move)
  local og = overgrown.build(ctx.net, ctx.units, { split = true, new = 0, generator = ff.Generator(0) })
  local scores = {}
  for k, c in ipairs(og.units) do
    local w = c.unit.producer.weight
    c.split.v = (dirs[k] * step):view(w:size())
    scores[k] = { split = lambdas[k] }
  end
  return {
    og = og, scores = scores, fixed_steps = true, split_step = step,
    order = function(_, list)
      local keep = {}
      for _, c in ipairs(list) do if c.score < 0 then keep[#keep + 1] = c end end
      table.sort(keep, function(a, b)
        if a.score ~= b.score then return a.score < b.score end
        if a.unit ~= b.unit then return a.unit < b.unit end
        return a.index < b.index
      end)
      return keep
    end,
    predict = function(self, c) return 0.5 * self.split_step ^ 2 * c.score end,
  }
end

return S
