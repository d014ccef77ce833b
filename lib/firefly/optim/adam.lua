-- firefly.optim.adam: Adam (L2 decay added to the gradient) and AdamW
-- (decoupled decay), exactly torch.optim.Adam / AdamW (amsgrad off):
--   g = grad + wd * p                          (Adam only)
--   p = p * (1 - lr * wd)                      (AdamW only)
--   m = b1 * m + (1 - b1) * g
--   v = b2 * v + (1 - b2) * g^2
--   p = p - (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
-- with t the parameter's own step count (kept across remap).
local ff = require "firefly"
local base = require "firefly.optim.optimizer"
local option, check = base.option, base.check

local function update(decoupled)
  return function(o, p, g, st)
    local b1, b2 = o.betas[1], o.betas[2]
    if o.weight_decay ~= 0 then
      if decoupled then p:mul_(1 - o.lr * o.weight_decay) else g = g + p * o.weight_decay end
    end
    local m, v = st.exp_avg, st.exp_avg_sq
    if m == nil then
      m = ff.zeros(p:size())
      st.exp_avg = m
    end
    if v == nil then
      v = ff.zeros(p:size())
      st.exp_avg_sq = v
    end
    m:mul_(b1):add_(g * (1 - b1))
    v:mul_(b2):add_(g * g * (1 - b2))
    local t = st.step
    local bc1, bc2 = 1 - b1 ^ t, 1 - b2 ^ t
    local denom = v:sqrt():div_(math.sqrt(bc2)):add_(o.eps)
    p:sub_((m / denom):mul_(o.lr / bc1))
  end
end

-- The fused rule's buffers (optimizer.lua, Optimizer:_fused_step).
local function fused(o, st, p)
  return st.exp_avg or ff.zeros(p:size()), st.exp_avg_sq or ff.zeros(p:size()), false, false
end

local function keep(st, m, v)
  st.exp_avg, st.exp_avg_sq = m, v
end

local function kind(name, decay)
  return {
    fused = fused,
    keep = keep,
    name = name,
    options = {
      option("lr", 1e-3, check.nonneg),
      option("betas", { 0.9, 0.999 }, check.betas),
      option("eps", 1e-8, check.nonneg),
      option("weight_decay", decay, check.nonneg),
    },
    buffers = { { name = "exp_avg", order = 1 }, { name = "exp_avg_sq", order = 2 } },
    update = update(name == "AdamW"),
  }
end

return { Adam = kind("Adam", 0), AdamW = kind("AdamW", 1e-2) }
