-- firefly.optim.rmsprop: RMSprop, exactly torch.optim.RMSprop:
--   g = grad + wd * p
--   v = alpha * v + (1 - alpha) * g^2
--   centered: a = alpha * a + (1 - alpha) * g;  d = sqrt(v - a^2) + eps
--   else:     d = sqrt(v) + eps
--   momentum > 0: b = momentum * b + g / d;  p = p - lr * b
--   else:         p = p - lr * g / d
local ff = require "firefly"
local base = require "firefly.optim.optimizer"
local option, check = base.option, base.check

local RMSprop = {
  name = "RMSprop",
  options = {
    option("lr", 1e-2, check.nonneg),
    option("alpha", 0.99, check.decay),
    option("eps", 1e-8, check.nonneg),
    option("momentum", 0, check.decay),
    option("centered", false, check.flag),
    option("weight_decay", 0, check.nonneg),
  },
  buffers = {
    { name = "square_avg", order = 2 },
    { name = "momentum_buffer", order = 1 },
    { name = "grad_avg", order = 1 },
  },
}

local function buffer(st, name, p)
  local b = st[name]
  if b == nil then
    b = ff.zeros(p:size())
    st[name] = b
  end
  return b
end

-- The fused rule's buffers (optimizer.lua, Optimizer:_fused_step).
function RMSprop.fused(o, st, p)
  local function get(name, wanted)
    if not wanted then return false end
    return st[name] or ff.zeros(p:size())
  end
  return get("square_avg", true), get("momentum_buffer", o.momentum > 0), get("grad_avg", o.centered), false
end

function RMSprop.keep(st, sq, mb, ga)
  st.square_avg = sq
  if mb then st.momentum_buffer = mb end
  if ga then st.grad_avg = ga end
end

function RMSprop.update(o, p, g, st)
  if o.weight_decay ~= 0 then g = g + p * o.weight_decay end
  local sq = buffer(st, "square_avg", p)
  sq:mul_(o.alpha):add_(g * g * (1 - o.alpha))
  local denom
  if o.centered then
    local ga = buffer(st, "grad_avg", p)
    ga:mul_(o.alpha):add_(g * (1 - o.alpha))
    -- v - a^2 >= 0 in exact arithmetic; clamping only removes the NaN that
    -- float rounding could give (torch would return NaN there)
    denom = (sq - ga * ga):clamp_(0, nil):sqrt_():add_(o.eps)
  else
    denom = sq:sqrt():add_(o.eps)
  end
  if o.momentum > 0 then
    local buf = buffer(st, "momentum_buffer", p)
    buf:mul_(o.momentum):add_(g / denom)
    p:sub_(buf * o.lr)
  else
    p:sub_((g / denom):mul_(o.lr))
  end
end

return RMSprop
