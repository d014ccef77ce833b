-- Gradient checks of broadcasting arithmetic and elementwise math
-- (op_arith.c). Inputs stay clear of kinks (abs at 0, clamp's bounds,
-- maximum/minimum ties) by more than the finite-difference step.

-- -2 .. 2 evenly in `shape`: no value within 0.18 of 0.
local function spread(ff, ...)
  local shape = { ... }
  local n = 1
  for _, s in ipairs(shape) do n = n * s end
  return ff.linspace(-2, 2, n):reshape(shape)
end

-- (3, 4) and a (4) row, far apart everywhere (> 0.1): no ties.
local function separated(ff)
  return { spread(ff, 3, 4), ff.tensor { -0.95, -0.05, 0.55, 1.45 } }
end

-- Uniform in [0.5, 2): bases of log, sqrt, pow and divisors.
local function pos(ff, g, ...)
  return ff.rand({ ... }, g) * 1.5 + 0.5
end

return {
  add = {
    { fn = function(ff, a, b) return a + b end, note = "(3,4) + (4)",
      inputs = function(ff, g) return { ff.randn(3, 4, g), ff.randn(4, g) } end },
    { fn = function(ff, a, b) return a:add(b) end, note = "(3,1) + (1,4)",
      inputs = function(ff, g) return { ff.randn(3, 1, g), ff.randn(1, 4, g) } end },
    { fn = function(ff, a, b) return a + b end, note = "rank 0 + (2,3)",
      inputs = function(ff, g) return { ff.randn(g), ff.randn(2, 3, g) } end },
    { fn = function(ff, a, b) return a:t() + b end, note = "non-contiguous",
      inputs = function(ff, g) return { ff.randn(4, 3, g), ff.randn(3, 4, g) } end },
    { fn = function(ff, a) return a + 2 end, note = "a number",
      inputs = function(ff, g) return { ff.randn(2, 3, g) } end },
    { fn = function(ff, a) return a + a end, note = "one input twice",
      inputs = function(ff, g) return { ff.randn(2, 3, g) } end },
  },
  sub = {
    { fn = function(ff, a, b) return a - b end, note = "(3,4) - (3,1)",
      inputs = function(ff, g) return { ff.randn(3, 4, g), ff.randn(3, 1, g) } end },
    { fn = function(ff, a, b) return b:sub(a) end, note = "(1,4) - (2,3,1)",
      inputs = function(ff, g) return { ff.randn(2, 3, 1, g), ff.randn(1, 4, g) } end },
    { fn = function(ff, a) return 1 - a:t() end, note = "number - non-contiguous",
      inputs = function(ff, g) return { ff.randn(3, 4, g) } end },
  },
  mul = {
    { fn = function(ff, a, b) return a * b end, note = "(3,1) * (1,4)",
      inputs = function(ff, g) return { ff.randn(3, 1, g), ff.randn(1, 4, g) } end },
    { fn = function(ff, a, b) return a:mul(b) end, note = "(2,3,4) * rank 0",
      inputs = function(ff, g) return { ff.randn(2, 3, 4, g), ff.randn(g) } end },
    { fn = function(ff, a, b) return a:t() * b end, note = "non-contiguous",
      inputs = function(ff, g) return { ff.randn(4, 3, g), ff.randn(3, 4, g) } end },
    { fn = function(ff, a) return a * a end, note = "a square: both paths accumulate",
      inputs = function(ff, g) return { ff.randn(3, 4, g) } end },
  },
  div = {
    { fn = function(ff, a, b) return a / b end, note = "(3,4) / (4)",
      inputs = function(ff, g) return { ff.randn(3, 4, g), pos(ff, g, 4) } end },
    { fn = function(ff, a, b) return a:div(b) end, note = "(3,1) / (1,4)",
      inputs = function(ff, g) return { ff.randn(3, 1, g), pos(ff, g, 1, 4) } end },
    { fn = function(ff, b) return 1 / b:t() end, note = "number / non-contiguous",
      inputs = function(ff, g) return { pos(ff, g, 3, 4) } end },
  },
  pow = {
    { fn = function(ff, a, b) return a:pow(b) end, note = "both inputs, (3,4) ^ (4)",
      inputs = function(ff, g) return { pos(ff, g, 3, 4), ff.randn(4, g) } end },
    { fn = function(ff, a) return a ^ 3 end, note = "a number exponent",
      inputs = function(ff, g) return { ff.randn(3, 4, g) } end },
    { fn = function(ff, b) return 2 ^ b end, note = "a number base",
      inputs = function(ff, g) return { ff.randn(3, 4, g) } end },
    { fn = function(ff, a, b) return a:t():pow(b) end, note = "non-contiguous, rank-0 exponent",
      inputs = function(ff, g) return { pos(ff, g, 4, 3), ff.randn(g) } end },
  },
  maximum = {
    { fn = function(ff, a, b) return a:maximum(b) end, note = "(3,4) vs (4), no ties",
      inputs = separated },
    { fn = function(ff, a, b) return a:t():maximum(b) end, note = "non-contiguous, no ties",
      inputs = function(ff) return { spread(ff, 4, 3), ff.tensor { -1.45, -0.35, 0.35, 1.45 } } end },
    { fn = function(ff, a) return a:maximum(a) end, note = "all ties: half and half",
      inputs = function(ff, g) return { ff.randn(3, 4, g) } end },
  },
  minimum = {
    { fn = function(ff, a, b) return a:minimum(b) end, note = "(3,4) vs (4), no ties",
      inputs = separated },
    { fn = function(ff, a, b) return b:minimum(a:t()) end, note = "non-contiguous, no ties",
      inputs = function(ff) return { spread(ff, 4, 3), ff.tensor { -1.45, -0.35, 0.35, 1.45 } } end },
    { fn = function(ff, a) return a:minimum(a) end, note = "all ties: half and half",
      inputs = function(ff, g) return { ff.randn(3, 4, g) } end },
  },
  neg = {
    { fn = function(ff, a) return -a end,
      inputs = function(ff, g) return { ff.randn(3, 4, g) } end },
    { fn = function(ff, a) return a:t():neg() end, note = "non-contiguous",
      inputs = function(ff, g) return { ff.randn(3, 4, g) } end },
  },
  exp = {
    { fn = function(ff, a) return a:exp() end,
      inputs = function(ff, g) return { ff.randn(2, 3, 4, g) } end },
    { fn = function(ff, a) return a:t():exp() end, note = "non-contiguous",
      inputs = function(ff, g) return { ff.randn(3, 4, g) } end },
  },
  log = {
    { fn = function(ff, a) return a:log() end,
      inputs = function(ff, g) return { pos(ff, g, 3, 4) } end },
    { fn = function(ff, a) return a:t():log() end, note = "non-contiguous",
      inputs = function(ff, g) return { pos(ff, g, 3, 4) } end },
  },
  sqrt = {
    { fn = function(ff, a) return a:sqrt() end,
      inputs = function(ff, g) return { pos(ff, g, 3, 4) } end },
  },
  abs = {
    { fn = function(ff, a) return a:abs() end, note = "away from 0",
      inputs = function(ff) return { spread(ff, 3, 4) } end },
    { fn = function(ff, a) return a:t():abs() end, note = "non-contiguous",
      inputs = function(ff) return { spread(ff, 4, 5) } end },
  },
  clamp = {
    { fn = function(ff, a) return a:clamp(-0.5, 0.5) end, note = "both bounds",
      inputs = function(ff) return { ff.linspace(-1.5, 1.5, 12):reshape(3, 4) } end },
    { fn = function(ff, a) return a:clamp(-0.5) end, note = "lower bound only",
      inputs = function(ff) return { ff.linspace(-1.5, 1.5, 12):reshape(3, 4) } end },
    { fn = function(ff, a) return a:t():clamp(nil, 0.5) end, note = "upper only, non-contiguous",
      inputs = function(ff) return { ff.linspace(-1.5, 1.5, 12):reshape(3, 4) } end },
  },
  where = {
    { fn = function(ff, a, b)
        return ff.where(ff.tensor { { 1, 0, 1, 0 }, { 0, 0, 1, 1 }, { 1, 1, 0, 0 } }, a, b)
      end, note = "(3,4) and (4)",
      inputs = function(ff, g) return { ff.randn(3, 4, g), ff.randn(4, g) } end },
    { fn = function(ff, a) return ff.where(ff.tensor { { 1 }, { 0 }, { 1 } }, a, 0) end,
      note = "a (3,1) condition, a number",
      inputs = function(ff, g) return { ff.randn(3, 4, g) } end },
  },
}
