-- Gradient checks of the activations (op_act.c). Piecewise functions get
-- inputs at least 0.05 away from their kink at 0; softplus with a threshold
-- gets inputs away from the switch point.

-- N(0,1) pushed 0.05 away from 0 (x + 0.05 sign(x)).
local function off_zero(ff, g, ...)
  local x = ff.randn({ ... }, g)
  return x + x:sign() * 0.05
end

local function normal(ff, g) return { ff.randn(3, 5, g) } end
local function kinked(ff, g) return { off_zero(ff, g, 3, 5) } end

-- Cases every activation gets: a plain (3, 5) input, a transposed one, and
-- a rank-3 one.
local function cases(call, inputs)
  return {
    { fn = function(ff, a) return call(a) end, inputs = inputs },
    { fn = function(ff, a) return call(a:t()) end, note = "non-contiguous", inputs = inputs },
    { fn = function(ff, a) return call(a:reshape(3, 1, 5)) end, note = "rank 3",
      inputs = inputs },
  }
end

local spec = {
  relu = cases(function(a) return a:relu() end, kinked),
  leaky_relu = cases(function(a) return a:leaky_relu() end, kinked),
  elu = cases(function(a) return a:elu() end, kinked),
  gelu = cases(function(a) return a:gelu() end, normal),
  silu = cases(function(a) return a:silu() end, normal),
  tanh = cases(function(a) return a:tanh() end, normal),
  sigmoid = cases(function(a) return a:sigmoid() end, normal),
  softplus = cases(function(a) return a:softplus() end, normal),
  rbf = cases(function(a) return a:rbf() end, normal),
}

-- parameters, and the module-function spelling
table.insert(spec.leaky_relu, { fn = function(ff, a) return ff.leaky_relu(a, 0.2) end,
  note = "slope 0.2", inputs = kinked })
table.insert(spec.elu, { fn = function(ff, a) return a:elu(0.7) end,
  note = "alpha 0.7", inputs = kinked })
table.insert(spec.softplus, { fn = function(ff, a) return a:softplus(2) end,
  note = "beta 2", inputs = normal })
table.insert(spec.softplus, { fn = function(ff, a) return ff.softplus(a, 2, 3) end,
  note = "beta 2, threshold 3: linear above x = 1.5 (inputs 1.42 and 1.74 around it)",
  inputs = function(ff) return { ff.linspace(-3, 3, 20):reshape(4, 5) } end })
table.insert(spec.softplus, { fn = function(ff, a) return a:softplus(-0.5) end,
  note = "negative beta", inputs = normal })
table.insert(spec.tanh, { fn = function(ff, a) return ff.tanh(a * 3) end,
  note = "saturating", inputs = normal })

return spec
