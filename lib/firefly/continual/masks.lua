-- firefly.continual.masks: which frozen neurons a new task uses.
--
-- Parametrisation: one logit s_i per older neuron i of each hidden layer
-- and per task; the gate g_i = sigmoid(s_i) multiplies the neuron's output
-- for this task only (the weights stay frozen). The logits start at
-- `init` (3: g ≈ 0.95, every old neuron on) and are trained jointly with
-- the task's new head on
--     cross-entropy + λ · mean_i g_i
-- (an L1 penalty on the gates, which are positive, averaged so that λ is
-- the loss one would trade for using every old neuron). Then each gate is
-- binarised at 0.5 (s_i > 0). A layer whose gates all fall below 0.5 keeps
-- its one largest gate, so that the task's sub-network stays connected.
-- The head is then trained further with the binary mask fixed (by the
-- caller), which removes the mismatch between the soft and the hard mask.
local ff = require "firefly"
local U = require "firefly.continual.util"

local M = {}

-- The sparsity penalty λ · mean(g) over all layers' gates.
function M.penalty(gates, lambda)
  local total, count
  for _, g in ipairs(gates) do
    local s = g:sum()
    total = total and total + s or s
    count = (count or 0) + g:numel()
  end
  return total * (lambda / count)
end

-- Binary masks from logits: 1 where s > 0 (g > 0.5), at least one per layer.
function M.binarise(logits)
  local masks = {}
  ff.no_grad(function()
    for l, s in ipairs(logits) do
      local m = s:gt(0)
      if m:sum():item() == 0 and s:numel() > 0 then m[s:argmax():item()] = 1 end
      masks[l] = m
    end
  end)
  return masks
end

-- M.learn(net, t, task, o) learns task t's masks over the older neurons of
-- a BlockNet (training its head too), stores the binary masks in net and
-- returns {usage = fraction of older neurons kept, kept = {per layer}}.
-- o: mask_epochs, mask_lr, lr, mask_penalty, mask_init, batch_size,
-- generator, quiet.
function M.learn(net, t, task, o)
  local logits = {}
  for l = 1, #net.layers do
    logits[l] = ff.full({ net:width(l, t - 1) }, o.mask_init):requires_grad(true)
  end
  local function gates()
    local g = {}
    for l, s in ipairs(logits) do g[l] = s:sigmoid() end
    return g
  end
  local current
  U.fit {
    forward = function(x) current = gates(); return net:forward(t, x, current, true) end,
    penalty = o.mask_penalty > 0 and function() return M.penalty(current, o.mask_penalty) end or nil,
    groups = { { logits, o.mask_lr }, { net:task_parameters(t), o.lr } },
    data = task.train, epochs = o.mask_epochs, batch_size = o.batch_size, generator = o.generator,
    label = "task " .. t .. " masks", quiet = o.quiet,
  }
  local masks = M.binarise(logits)
  local kept, on, all = {}, 0, 0
  for l, m in ipairs(masks) do
    net.masks[t][l] = m
    kept[l] = m:sum():item()
    on, all = on + kept[l], all + m:numel()
  end
  return { usage = on / math.max(all, 1), kept = kept, logits = logits }
end

return M
