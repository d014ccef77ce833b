-- firefly.gradcheck: compare autograd's gradients with central finite
-- differences, so users can check their own functions (and the test suite
-- checks every op of the engine).
--
-- ff.gradcheck(fn, inputs [, opts]) -> ok, report
--   fn      a function of the tensors in `inputs` returning one tensor
--   inputs  a list of tensors; those with requires_grad are checked
--   opts    eps (1e-3), atol (1e-2), rtol (1e-2), seed (0)
-- A non-scalar result y is reduced to the scalar sum(R * y) with fixed
-- random weights R, so every output element takes part. The engine is
-- float32: differences in float32 are accurate to about 1e-3 relative with
-- eps = 1e-3 for inputs of order 1, hence the default tolerances. The
-- scalar is summed in double precision (Lua numbers).
local core = require "firefly.core"

local function weighted_sum(y, R)
  local a, b = y:reshape(-1):totable(), R
  local s = 0.0
  for j = 1, #a do s = s + a[j] * b[j] end
  return s
end

local function flat_values(t)
  return t:reshape(-1):totable()
end

local options = require "firefly.options"

local function gradcheck(fn, inputs, opts)
  if type(fn) ~= "function" then error("gradcheck: argument #1 must be a function, got " .. type(fn), 2) end
  if type(inputs) ~= "table" then
    error("gradcheck: argument #2 must be a list of tensors, got " .. type(inputs), 2)
  end
  for i, x in ipairs(inputs) do
    if getmetatable(x) ~= getmetatable(core.zeros(0)) then
      error(string.format("gradcheck: input %d must be a tensor, got %s", i, type(x)), 2)
    end
  end
  options.check("gradcheck", opts, { eps = true, atol = true, rtol = true, seed = true }, "option", 2)
  opts = opts or {}
  local eps, atol, rtol = opts.eps or 1e-3, opts.atol or 1e-2, opts.rtol or 1e-2
  local y = fn(table.unpack(inputs))
  assert(core.Tensor.numel and y.numel, "gradcheck: fn must return a tensor")
  if not y:requires_grad() then
    return false, "gradcheck: the result does not require grad (no input has requires_grad)"
  end
  local R = core.randn(y:size(), core.Generator(opts.seed or 0))
  local Rflat = flat_values(R)
  for _, x in ipairs(inputs) do
    if core.Tensor.requires_grad(x) then x.grad = nil end
  end
  y:backward(R)
  local worst = { err = -1 }
  for i, x in ipairs(inputs) do
    if x:requires_grad() then
      local analytic = x.grad and flat_values(x.grad) or {}
      local flat = x:view(-1)
      for j = 1, x:numel() do
        local orig = flat[j]
        local fp, fm = core.no_grad(function()
          flat[j] = orig + eps
          local p = weighted_sum(fn(table.unpack(inputs)), Rflat)
          flat[j] = orig - eps
          local m = weighted_sum(fn(table.unpack(inputs)), Rflat)
          flat[j] = orig
          return p, m
        end)
        local numeric = (fp - fm) / (2 * eps)
        local a = analytic[j] or 0
        local err = math.abs(a - numeric) - (atol + rtol * math.abs(numeric))
        if err > worst.err then
          worst = { err = err, input = i, index = j, analytic = a, numeric = numeric }
        end
      end
    end
  end
  if worst.err > 0 then
    return false, string.format(
      "gradcheck: input %d element %d: autograd %.6g, finite differences %.6g (atol %g, rtol %g)",
      worst.input, worst.index, worst.analytic, worst.numeric, atol, rtol)
  end
  return true, "ok"
end

return gradcheck
