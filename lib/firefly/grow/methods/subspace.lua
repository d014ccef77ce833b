-- firefly.grow.methods.subspace: the top singular vectors of a linear
-- operator given only as products (GradMax's M = E[g zᵀ], formed or by
-- autograd), by subspace iteration with a Jacobi eigensolver on the small
-- projected problem, in double precision.
local ff = require "firefly"
local dist = require "firefly.dist"

-- dist: a random draw is rank 0's on every rank (the operator's products
-- are summed over ranks, so everything else is already the same)
local function randn(shape, g)
  local t = ff.randn(shape, g)
  dist.broadcast_list({ t })
  return t
end

local S = {}

-- Eigenpairs of a small symmetric matrix (a table of rows) by cyclic
-- Jacobi rotations in double precision: values in decreasing order and
-- the matching eigenvectors as the columns of a table of rows.
local function jacobi(A)
  local n = #A
  local a, v = {}, {}
  for i = 1, n do
    a[i], v[i] = {}, {}
    for j = 1, n do a[i][j], v[i][j] = A[i][j], i == j and 1 or 0 end
  end
  -- until the off-diagonal part is below float32's resolution of the
  -- input, or stops shrinking (rounding)
  local last = math.huge
  for _ = 1, 60 do
    local off, total = 0, 0
    for i = 1, n do
      for j = 1, n do
        total = total + a[i][j] ^ 2
        if i ~= j then off = off + a[i][j] ^ 2 end
      end
    end
    if off <= 1e-18 * total or off >= last then break end
    last = off
    for p = 1, n - 1 do
      for q = p + 1, n do
        local apq = a[p][q]
        if apq ~= 0 then
          local theta = (a[q][q] - a[p][p]) / (2 * apq)
          local t = (theta >= 0 and 1 or -1) / (math.abs(theta) + math.sqrt(theta * theta + 1))
          local c = 1 / math.sqrt(t * t + 1)
          local s = t * c
          for k = 1, n do
            local akp, akq = a[k][p], a[k][q]
            a[k][p], a[k][q] = c * akp - s * akq, s * akp + c * akq
          end
          for k = 1, n do
            local apk, aqk = a[p][k], a[q][k]
            a[p][k], a[q][k] = c * apk - s * aqk, s * apk + c * aqk
          end
          for k = 1, n do
            local vkp, vkq = v[k][p], v[k][q]
            v[k][p], v[k][q] = c * vkp - s * vkq, s * vkp + c * vkq
          end
        end
      end
    end
  end
  local order = {}
  for i = 1, n do order[i] = i end
  table.sort(order, function(i, j) return a[i][i] > a[j][j] end)
  local values, vectors = {}, {}
  for r = 1, n do
    values[r] = a[order[r]][order[r]]
    vectors[r] = {}
  end
  for i = 1, n do
    for r = 1, n do vectors[i][r] = v[i][order[r]] end
  end
  return values, vectors
end
S.jacobi = jacobi

-- The rows of A (p x d) made orthonormal by Gram–Schmidt, twice per row
-- (float32 needs the second pass); a row that is (numerically) in the
-- span of the ones before it is replaced by a random direction.
local function orthonormal_rows(A, g)
  local p, d = A:size(1), A:size(2)
  local Q = ff.zeros(p, d)
  for i = 1, p do
    local v = A[i]:clone()
    for _ = 1, 4 do
      local before = v:norm():item()
      if i > 1 then
        local q = Q:narrow(1, 1, i - 1)
        for _ = 1, 2 do v = v - q:t():matmul(q:matmul(v)) end
      end
      local n = v:norm():item()
      if n > 1e-4 * before and n > 0 then
        Q[i] = v / n
        break
      end
      v = randn({ d }, g)
    end
  end
  return Q
end

-- Top k right singular vectors (rows of a k x d tensor) and singular
-- values of an operator {fwd = V (p x d) -> B applied to each row (p x
-- n_out), bwd = W (p x n_out) -> Bᵀ applied to each row (p x d), d,
-- n_out}.
local function top_singular(op, k, iters, g)
  local d = op.d
  local p = math.min(math.max(2 * k, k + 8), d)
  local V
  if p == d then
    V = ff.eye(d)
  else
    V = orthonormal_rows(op.bwd(randn({ p, op.n_out }, g)), g)
    for _ = 1, iters do V = orthonormal_rows(op.bwd(op.fwd(V)), g) end
  end
  local W = op.fwd(V)
  local _, vectors = jacobi(W:matmul(W:t()):totable())
  local E = ff.tensor(vectors):narrow(2, 1, k) -- p x k
  local top = E:t():matmul(V)
  -- σ_j = ‖B u_j‖ from the rotated products, not √λ_j: small singular
  -- values keep float32's absolute accuracy instead of its square root
  local lengths = top:norm(2, 2)
  local sigma = (E:t():matmul(W):norm(2, 2) / lengths):totable()
  return top / lengths:view(k, 1), sigma
end
S.top_singular = top_singular

return S
