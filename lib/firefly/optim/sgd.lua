-- firefly.optim.sgd: stochastic gradient descent with momentum, dampening,
-- Nesterov momentum and L2 weight decay, exactly torch.optim.SGD's rule:
--   g = grad + wd * p
--   b = g                          (first step)
--   b = mu * b + (1 - dampening) * g   (later steps)
--   g = g + mu * b  (nesterov)  or  g = b
--   p = p - lr * g
local ff = require "firefly"
local base = require "firefly.optim.optimizer"
local option, check = base.option, base.check

local SGD = {
  name = "SGD",
  options = {
    option("lr", nil, check.nonneg),
    option("momentum", 0, check.decay),
    option("dampening", 0, check.unit),
    option("nesterov", false, check.flag),
    option("weight_decay", 0, check.nonneg),
  },
  buffers = { { name = "momentum_buffer", order = 1 } },
}

-- Nesterov's look-ahead is only defined on an undamped momentum buffer.
function SGD.check(o)
  if o.nesterov and (o.momentum <= 0 or o.dampening ~= 0) then
    return "nesterov = true needs momentum > 0 and dampening = 0"
  end
end

-- The fused rule's buffers (optimizer.lua, Optimizer:_fused_step): the
-- momentum buffer, fresh (set to the gradient) on the first step.
function SGD.fused(o, st, p)
  if o.momentum == 0 then return false, false, false, false end
  local buf = st.momentum_buffer
  if buf == nil then return ff.empty(p:size()), false, false, true end
  return buf, false, false, false
end

function SGD.keep(st, b1)
  if b1 then st.momentum_buffer = b1 end
end

function SGD.update(o, p, g, st)
  if o.weight_decay ~= 0 then g = g + p * o.weight_decay end
  if o.momentum ~= 0 then
    local buf = st.momentum_buffer
    if buf == nil then
      -- torch starts the buffer at the gradient itself, undamped
      buf = g:clone()
      st.momentum_buffer = buf
    else
      buf:mul_(o.momentum)
      if o.dampening ~= 0 then buf:add_(g * (1 - o.dampening)) else buf:add_(g) end
    end
    if o.nesterov then g = g + buf * o.momentum else g = buf end
  end
  p:sub_(g * o.lr)
end

return SGD
