-- method = "split_fast": fast splitting steepest descent (Wang et al.
-- 2019, "Energy-aware neural architecture optimization with fast
-- splitting steepest descent"). The same minimum eigenpairs of the
-- splitting matrices as split_exact, without forming them: products S_i·v
-- come from autograd on the quadratic form
--   q(V) = ½ Σ_i Σ_r a_ri (z_r·v_i)²,   ∇_{v_i} q = S_i v_i
-- (z·v_i over every row and position is the producer's op with weight V:
-- a Linear, or a conv2d of the input for conv units), for all neurons at
-- once, and the Rayleigh quotient vᵀS_iv/vᵀv is minimised for all neurons
-- at once. Same candidates, scores, order and prediction as split_exact.
--
-- The minimiser: gradient descent on the Rayleigh quotient with the best
-- step and momentum, i.e. each iteration minimises it exactly over the
-- span of the current vector, its gradient (the residual S v − λ v) and
-- the previous step (LOBPCG with one vector, Knyazev 2001): one product
-- S·v per iteration, and a 3 x 3 eigenproblem per neuron. It converges
-- far faster than a fixed step would; the paper leaves the optimiser open.
-- Options: step (1e-2), fraction (1), iters (30: products per neuron,
-- plus one to evaluate the final quotient); start vectors from
-- nb.generator (reproducible for a seed).
local ff = require "firefly"
local splitting = require "firefly.grow.methods.splitting"
local dist = require "firefly.dist"

local M = { name = "split_fast", options = { step = true, fraction = true, iters = true } }

local DEFAULT_ITERS = 30

local function col(t) return t:unsqueeze(2) end
local function dot(a, b) return (a * b):sum(2) end

-- An operator V (m x d) -> S V, one row per neuron, from the stored taps
-- of a unit: per batch its producer input and a (times the batch's
-- examples), divided by all the examples.
local function hvp_of(u, stored, total)
  local shape = u.producer.weight:size()
  return function(V)
    local leaf = V:reshape(shape):detach():requires_grad(true)
    for _, b in ipairs(stored) do
      local y = splitting.produce(u, b.input, leaf)
      local q = (b.a * y * y):sum() * 0.5
      q:backward()
    end
    return splitting.over_ranks(leaf.grad):view(V:size(1), -1) / total
  end
end

-- v (unit rows) made orthogonal to the unit rows of each basis: twice,
-- for float32 (one pass leaves a component of the order of its rounding).
-- Returns the result and the coefficients removed, per basis.
local function orthogonalise(v, basis)
  local coef = {}
  for j = 1, #basis do coef[j] = 0 end
  for _ = 1, 2 do
    for j, q in ipairs(basis) do
      local c = dot(q, v)
      v = v - q * col(c)
      coef[j] = coef[j] + c
    end
  end
  return v, coef
end

-- Minimum eigenpairs of the m operators behind hvp, from unit rows v:
-- λ (m) and unit rows (m x d).
local function minimise(hvp, v, iters)
  local m = v:size(1)
  v = v / col(v:norm(2, 2):clamp(1e-30, nil))
  local Sv = hvp(v)
  local p, Sp = ff.zeros(v:size()), ff.zeros(v:size())
  for _ = 1, iters do
    local lam = dot(v, Sv)
    local scale = Sv:norm(2, 2) + lam:abs() + 1e-30
    -- the gradient direction, orthonormal to v; none once it vanishes
    local r = orthogonalise(Sv - v * col(lam), { v })
    local rn = r:norm(2, 2)
    local r_ok = rn:gt(scale * 1e-6)
    r = r / col(rn:clamp(1e-30, nil)) * col(r_ok)
    local Sr = hvp(r)
    -- the previous step, orthonormal to both; none when it is (nearly)
    -- in their span. S p by linearity: S p̂ = (S p − α S v − β S r̂)/|p⊥|
    local pn0 = p:norm(2, 2)
    local pp, coef = orthogonalise(p, { v, r })
    local pn = pp:norm(2, 2)
    local p_ok = pn:gt(pn0 * 1e-3) * pn:gt(0)
    local inv = col(p_ok / pn:clamp(1e-30, nil))
    local ph = pp * inv
    local Sph = (Sp - Sv * col(coef[1]) - Sr * col(coef[2])) * inv
    -- the Rayleigh quotient on span{v, r, p}: a 3 x 3 eigenproblem each,
    -- directions that are missing pushed to the top of the spectrum
    local big = scale * 10 + 1
    local m22 = dot(r, Sr) * r_ok + big * (1 - r_ok)
    local m33 = dot(ph, Sph) * p_ok + big * (1 - p_ok)
    local m21, m31, m32 = dot(r, Sv), dot(ph, Sv), dot(ph, Sr)
    local M3 = ff.stack({ ff.stack({ lam, m21, m31 }, 2), ff.stack({ m21, m22, m32 }, 2),
      ff.stack({ m31, m32, m33 }, 2) }, 2)
    local _, Y = ff.linalg.eigh(M3, { k = 1 })
    Y = Y:view(m, 3)
    local y1, y2, y3 = Y:narrow(2, 1, 1), Y:narrow(2, 2, 1), Y:narrow(2, 3, 1)
    p, Sp = r * y2 + ph * y3, Sr * y2 + Sph * y3
    v, Sv = v * y1 + p, Sv * y1 + Sp
    local vn = col(v:norm(2, 2):clamp(1e-30, nil))
    v, Sv = v / vn, Sv / vn
  end
  -- the reported λ is the exact quotient of the returned vector (S v by
  -- linearity drifts a little over the iterations)
  v = splitting.canonical_sign(v)
  return dot(v, hvp(v)), v
end

function M.build(ctx)
  local nb = ctx.nb
  splitting.check_options(M.name, nb)
  local iters = nb.iters or DEFAULT_ITERS
  local t0 = ff.clock()
  local stored = {}
  for k = 1, #ctx.units do stored[k] = {} end
  local total = splitting.collect(ctx, M.name, function(k, input, a, n)
    table.insert(stored[k], { input = input, a = a * n })
  end)
  local t1 = ff.clock()
  local lambdas, dirs = {}, {}
  for k, u in ipairs(ctx.units) do
    local w = u.producer.weight
    local v0 = ff.randn({ w:size(1), w:numel() // w:size(1) }, nb.generator)
    dist.broadcast_list({ v0 }) -- dist: rank 0's start on every rank
    lambdas[k], dirs[k] = minimise(hvp_of(u, stored[k], total), v0, iters)
  end
  local self = splitting.proposal(ctx, lambdas, dirs)
  self.timing = { taps = t1 - t0, eigen = ff.clock() - t1 }
  return self
end

return M
