-- firefly.optim.clip: gradient clipping by the total norm, as torch's
-- torch.nn.utils.clip_grad_norm_.
local ff = require "firefly"

local M = {}

-- Tensors from a tensor, a list of tensors or {name =, param =} entries.
local function tensors(params)
  if ff.is_tensor(params) then return { params } end
  if type(params) ~= "table" then
    error("clip_grad_norm: params must be a tensor or a list of tensors (got " .. type(params) .. ")", 3)
  end
  local out = {}
  for i, e in ipairs(params) do
    local p = ff.is_tensor(e) and e or (type(e) == "table" and e.param)
    if not ff.is_tensor(p) then
      error(string.format("clip_grad_norm: params[%d] is neither a tensor nor a {name =, param =} entry", i), 3)
    end
    out[i] = p
  end
  return out
end

-- clip_grad_norm(params, max_norm [, norm_type = 2]) -> the total norm of all
-- gradients taken together (before clipping). When it exceeds max_norm every
-- gradient is multiplied by max_norm / (total + 1e-6), in place. The 1e-6 is
-- torch's, so clipped norms match torch's. Params without .grad are skipped.
function M.clip_grad_norm(params, max_norm, norm_type)
  norm_type = norm_type or 2
  if norm_type == "inf" then norm_type = math.huge end
  if type(max_norm) ~= "number" or not (max_norm >= 0) then
    error("clip_grad_norm: max_norm must be a number >= 0 (got " .. tostring(max_norm) .. ")", 2)
  end
  if type(norm_type) ~= "number" or not (norm_type > 0) then
    error("clip_grad_norm: norm_type must be a number > 0 or math.huge (got " .. tostring(norm_type) .. ")", 2)
  end
  local grads = {}
  for _, p in ipairs(tensors(params)) do
    local g = p.grad
    if g ~= nil then grads[#grads + 1] = g end
  end
  -- the norm of the per-tensor norms is the norm of all entries together
  local total = 0
  for _, g in ipairs(grads) do
    local n = g:numel() > 0 and g:norm(norm_type):item() or 0
    if norm_type == math.huge then total = math.max(total, n) else total = total + n ^ norm_type end
  end
  if norm_type ~= math.huge then total = total ^ (1 / norm_type) end
  local coef = max_norm / (total + 1e-6)
  if coef < 1 then
    for _, g in ipairs(grads) do g:mul_(coef) end
  end
  return total
end

return M
