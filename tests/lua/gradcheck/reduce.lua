-- Gradient checks of the reductions (op_reduce.c): every one over all
-- dims, over a dim with and without keepdim, and on a non-contiguous input.

-- start, start + step, ... shuffled (i -> 7i mod n) into `shape`: distinct
-- values in no particular order, so max/min and the inf-norm have no ties.
local function distinct(ff, start, step, ...)
  local shape = { ... }
  local n = 1
  for _, s in ipairs(shape) do n = n * s end
  assert(n % 7 ~= 0, "distinct: 7 must not divide the element count")
  local v = {}
  for i = 0, n - 1 do v[i + 1] = start + step * ((7 * i) % n) end
  return ff.tensor(v):reshape(shape)
end

local function r234(ff, g) return { ff.randn(2, 3, 4, g) } end
local function r34(ff, g) return { ff.randn(3, 4, g) } end
-- -1.15 .. 1.15 by 0.1: no ties
local function d234(ff) return { distinct(ff, -1.15, 0.1, 2, 3, 4) } end
-- -1.13 .. 1.17 by 0.1: no two |x| equal, none near 0
local function abs234(ff) return { distinct(ff, -1.13, 0.1, 2, 3, 4) } end

-- Cases of reduction `call(a, dim, keepdim)` over the usual dims.
local function over_dims(call, inputs)
  return {
    { fn = function(ff, a) return call(a) end, note = "all dims", inputs = inputs },
    { fn = function(ff, a) return call(a, 2) end, note = "dim 2", inputs = inputs },
    { fn = function(ff, a) return call(a, 1, true) end, note = "dim 1, keepdim", inputs = inputs },
    { fn = function(ff, a) return call(a, -1) end, note = "last dim", inputs = inputs },
    { fn = function(ff, a) return call(a, 3, true) end, note = "dim 3, keepdim",
      inputs = inputs },
    { fn = function(ff, a) return call(a:transpose(1, 3), 2) end, note = "non-contiguous",
      inputs = inputs },
  }
end

local spec = {
  sum = over_dims(function(a, d, k) return a:sum(d, k) end, r234),
  mean = over_dims(function(a, d, k) return a:mean(d, k) end, r234),
  max = over_dims(function(a, d, k)
    if d then return (a:max(d, k)) end -- values only (the indices are not differentiable)
    return a:max()
  end, d234),
  min = over_dims(function(a, d, k)
    if d then return (a:min(d, k)) end
    return a:min()
  end, d234),
  var = over_dims(function(a, d, k) return a:var(d, true, k) end, r234),
  norm = over_dims(function(a, d, k) return a:norm(2, d, k) end, r234),
}

table.insert(spec.sum, { fn = function(ff, a) return a:sum(2, true):sum() end,
  note = "sum of a sum", inputs = r34 })
table.insert(spec.mean, { fn = function(ff, a) return ff.mean(a:t()) end,
  note = "module function, 2-D transposed", inputs = r34 })
table.insert(spec.max, { fn = function(ff, a) return a:max() end,
  note = "all elements, 2-D", inputs = function(ff) return { distinct(ff, -1, 0.2, 3, 4) } end })
table.insert(spec.var, { fn = function(ff, a) return a:var(2, false) end,
  note = "biased", inputs = r234 })
table.insert(spec.var, { fn = function(ff, a) return a:var(nil, false, true) end,
  note = "biased, all dims, keepdim", inputs = r234 })
for _, case in ipairs {
  { 1, "p = 1, all dims" }, { 3, "p = 3, all dims" }, { 0.7, "p = 0.7, all dims" },
  { math.huge, "p = inf, all dims" },
} do
  table.insert(spec.norm, { fn = function(ff, a) return a:norm(case[1]) end,
    note = case[2], inputs = abs234 })
end
for _, case in ipairs {
  { 1, 2, false, "p = 1, dim 2" }, { 3, 1, true, "p = 3, dim 1, keepdim" },
  { math.huge, 3, false, "p = inf, dim 3" }, { math.huge, 2, true, "p = inf, dim 2, keepdim" },
  { 0.5, 3, true, "p = 0.5, dim 3, keepdim" },
} do
  table.insert(spec.norm, { fn = function(ff, a) return a:norm(case[1], case[2], case[3]) end,
    note = case[4], inputs = abs234 })
end

return spec
