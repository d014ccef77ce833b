-- method = "split_exact": splitting steepest descent (Liu, Wu, Wang 2019,
-- "Splitting steepest descent for growing neural architectures", NeurIPS
-- 2019). Per neuron i of every unit it forms the splitting matrix
--   S_i = E[∂L/∂h_i · σ''(u_i) · c_i² · z zᵀ]   (see splitting.lua)
-- over the first `fraction` of the batches, takes its smallest eigenpair
-- (λ_min, v_min) with ff.linalg.eigh, and proposes splitting neuron i into
-- θ_i ± step·v_min, scored by λ_min, most negative first, only λ_min < 0,
-- predicting a loss change of (step²/2)·λ_min. Options: step (1e-2),
-- fraction (1). New neurons and layers are not part of this method
-- (nb.new and nb.layers are ignored).
local ff = require "firefly"
local splitting = require "firefly.grow.methods.splitting"

local M = { name = "split_exact", options = { step = true, fraction = true } }

-- At most this many floats in one temporary of the accumulation (a
-- chunk of neurons times the rows times d); one neuron at least.
local CHUNK = 2 ^ 22

-- S[i] += Σ_r A[r, i] z_r z_rᵀ for every neuron i (S: m x d x d), a
-- chunk of neurons per product: Zᵀ · (A_i ⊙ Z).
local function accumulate(S, Z, A)
  local R, d, m = Z:size(1), Z:size(2), A:size(2)
  local chunk = math.max(1, math.floor(CHUNK / math.max(R * d, 1)))
  local Zt, At = Z:t(), A:t()
  for i = 1, m, chunk do
    local c = math.min(chunk, m - i + 1)
    local weighted = At:narrow(1, i, c):unsqueeze(3) * Z:unsqueeze(1) -- c x R x d
    S:narrow(1, i, c):add_(Zt:matmul(weighted))
  end
end

function M.build(ctx)
  splitting.check_options(M.name, ctx.nb)
  local t0 = ff.clock()
  local mats = {}
  for k, u in ipairs(ctx.units) do
    local w = u.producer.weight
    local d = w:numel() // w:size(1)
    mats[k] = ff.zeros(w:size(1), d, d)
  end
  local total = splitting.collect(ctx, M.name, function(k, input, a, n)
    local Z, A = splitting.rows(ctx.units[k], input, a)
    accumulate(mats[k], Z, A * n) -- a batch weighs by its examples
  end)
  local t1 = ff.clock()
  local lambdas, dirs = {}, {}
  for k, S in ipairs(mats) do
    S = splitting.over_ranks(S)
    mats[k] = S
    local values, vectors = ff.linalg.eigh(S:div_(total), { k = 1 })
    lambdas[k] = values:view(-1)
    dirs[k] = vectors:view(S:size(1), S:size(2))
  end
  local self = splitting.proposal(ctx, lambdas, dirs)
  self.matrices = mats -- the splitting matrices, per unit (m x d x d)
  self.timing = { matrices = t1 - t0, eigh = ff.clock() - t1 }
  return self
end

return M
