-- firefly.continual.ewc: elastic weight consolidation (Kirkpatrick et al.
-- 2017). After each task s, the diagonal Fisher F_s of the shared weights
-- and their values θ*_s are kept; later tasks add
--     Σ_s λ/2 Σ_i F_s,i (θ_i − θ*_s,i)²
-- to their loss (one term per earlier task, as in the paper's sum of
-- penalties). The Fisher is the empirical one: the mean over `samples`
-- training samples of the squared gradient of log p(y | x) at the true
-- label, one backward pass per sample.
local ff = require "firefly"

local E = {}

-- E.fisher(loss_of, params, ds, {samples = 200, generator}) -> list of
-- tensors shaped like params. loss_of(x, y) is −log p(y | x) for a batch.
function E.fisher(loss_of, params, ds, o)
  o = o or {}
  local n = math.min(o.samples or 200, ds:size())
  local idx = ff.data.randperm(ds:size(), o.generator):narrow(1, 1, n)
  local F = {}
  for i, p in ipairs(params) do F[i] = ff.zeros(p:size()) end
  for k = 1, n do
    local j = math.tointeger(idx[k])
    for _, p in ipairs(params) do p.grad = nil end
    loss_of(ds.x:narrow(1, j, 1), ds.y:narrow(1, j, 1)):backward()
    ff.no_grad(function()
      for i, p in ipairs(params) do
        if p.grad then F[i]:add_(p.grad * p.grad) end
      end
    end)
  end
  for _, p in ipairs(params) do p.grad = nil end
  ff.no_grad(function() for i = 1, #F do F[i]:div_(n) end end)
  return F
end

-- E.penalty(params, anchors, lambda): anchors is a list of {fisher =
-- {...}, star = {...}} (one per earlier task). nil when there is none.
function E.penalty(params, anchors, lambda)
  local total
  for _, a in ipairs(anchors) do
    for i, p in ipairs(params) do
      local d = p - a.star[i]
      local term = (a.fisher[i] * d * d):sum()
      total = total and total + term or term
    end
  end
  return total and total * (lambda / 2) or nil
end

return E
