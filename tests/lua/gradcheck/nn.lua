-- Gradient checks of the nn ops: linear (op_linear.c), conv2d (op_conv.c),
-- the pools (op_pool.c), batch_norm and layer_norm (op_norm.c), dropout
-- (op_dropout.c). Inputs are small: the harness differentiates every element.

-- A tensor of the given shape holding distinct values at least 0.05 apart in
-- random order, so a max never has a near tie that the finite-difference step
-- (1e-3) could flip.
local function tie_free(ff, g, shape)
  local n = 1
  for _, s in ipairs(shape) do n = n * s end
  local v = {}
  for i = 1, n do v[i] = (i - n / 2) * 0.05 end
  for i = n, 2, -1 do
    local j = g:random(i)
    v[i], v[j] = v[j], v[i]
  end
  return ff.tensor(v):reshape(shape)
end

local function conv(note, xs, ws, opts, bias)
  return {
    note = note,
    fn = function(ff, x, w, b) return ff.conv2d(x, w, b, opts) end,
    inputs = function(ff, g)
      return { ff.randn(xs, g), ff.randn(ws, g), bias and ff.randn(ws[1], g) or nil }
    end,
  }
end

local function pool(name, note, shape, kernel, opts)
  return {
    note = note,
    fn = function(ff, x) return ff[name](x, kernel, opts) end,
    inputs = function(ff, g)
      return { name == "max_pool2d" and tie_free(ff, g, shape) or ff.randn(shape, g) }
    end,
  }
end

local function adaptive(note, shape, size)
  return {
    note = note,
    fn = function(ff, x) return ff.adaptive_avg_pool2d(x, size) end,
    inputs = function(ff, g) return { ff.randn(shape, g) } end,
  }
end

-- batch_norm with weight and bias; running statistics are extra inputs
-- excluded from the check (positions 4 and 5), updated in training.
-- relu: the fused relu(batch_norm(x)).
local function bn(note, shape, training, relu)
  local C = shape[2]
  return {
    note = note,
    fn = function(ff, x, w, b, rm, rv)
      return ff.batch_norm(x, { weight = w, bias = b, running_mean = rm, running_var = rv,
                                training = training, relu = relu })
    end,
    inputs = function(ff, g)
      return { ff.randn(shape, g), ff.randn(C, g), ff.randn(C, g), ff.randn(C, g),
               ff.rand(C, g) + 0.5 }
    end,
    no_grad = { 4, 5 },
  }
end

return {
  linear = {
    {
      note = "with bias",
      fn = function(ff, x, w, b) return ff.linear(x, w, b) end,
      inputs = function(ff, g) return { ff.randn(4, 5, g), ff.randn(3, 5, g), ff.randn(3, g) } end,
    },
    {
      note = "without bias",
      fn = function(ff, x, w) return ff.linear(x, w) end,
      inputs = function(ff, g) return { ff.randn(4, 5, g), ff.randn(3, 5, g) } end,
    },
    {
      note = "3-D x",
      fn = function(ff, x, w, b) return ff.linear(x, w, b) end,
      inputs = function(ff, g) return { ff.randn(2, 3, 5, g), ff.randn(4, 5, g), ff.randn(4, g) } end,
    },
    {
      note = "transposed x and W",
      fn = function(ff, x, w) return ff.linear(x:t(), w:t()) end,
      inputs = function(ff, g) return { ff.randn(5, 4, g), ff.randn(5, 3, g) } end,
    },
  },

  conv2d = {
    conv("plain 3x3", { 2, 3, 5, 5 }, { 4, 3, 3, 3 }, nil, true),
    conv("stride 2, padding 1", { 2, 3, 6, 5 }, { 4, 3, 3, 3 }, { stride = 2, padding = 1 }, true),
    conv("dilation 2, padding 2", { 1, 2, 7, 6 }, { 3, 2, 3, 3 }, { dilation = 2, padding = 2 }, true),
    conv("groups 2", { 2, 4, 5, 5 }, { 6, 2, 3, 3 }, { groups = 2, padding = 1 }, true),
    conv("depthwise", { 2, 3, 5, 5 }, { 3, 1, 3, 3 }, { groups = 3, padding = 1 }, true),
    conv("depthwise x2, stride 2", { 1, 2, 6, 6 }, { 4, 1, 3, 3 }, { groups = 2, stride = 2, padding = 1 }, true),
    conv("no bias, rectangular kernel and stride", { 1, 2, 6, 7 }, { 3, 2, 2, 3 },
         { stride = { 2, 1 }, padding = { 1, 0 } }, false),
    conv("1x1 kernel", { 2, 3, 4, 4 }, { 5, 3, 1, 1 }, nil, true),
    -- stride 1 takes dx as a convolution of gy; padding beyond the kernel's
    -- reach (or stride > 1) takes dx by col2im
    conv("2x2 kernel, 3 -> 5 channels, no padding", { 2, 3, 5, 4 }, { 5, 3, 2, 2 }, nil, true),
    conv("1x1 kernel with padding 1 (col2im)", { 1, 2, 3, 3 }, { 3, 2, 1, 1 }, { padding = 1 }, true),
    conv("groups 2, stride 1, dilation 2", { 1, 4, 6, 6 }, { 2, 2, 3, 3 }, { groups = 2, dilation = 2, padding = 1 }, true),
    {
      note = "non-contiguous input",
      fn = function(ff, x, w, b) return ff.conv2d(x:transpose(3, 4), w, b, { padding = 1 }) end,
      inputs = function(ff, g) return { ff.randn(2, 3, 4, 5, g), ff.randn(2, 3, 3, 3, g), ff.randn(2, g) } end,
    },
  },

  max_pool2d = {
    pool("max_pool2d", "2x2 stride 2", { 2, 2, 6, 6 }, 2),
    pool("max_pool2d", "3x3 stride 2 padding 1", { 1, 3, 7, 6 }, 3, { stride = 2, padding = 1 }),
    pool("max_pool2d", "overlapping 3x2 stride 1", { 1, 2, 5, 5 }, { 3, 2 }, { stride = 1, padding = { 1, 0 } }),
    pool("max_pool2d", "unbatched, stride 3 > kernel", { 2, 7, 7 }, 2, { stride = 3, padding = 1 }),
  },

  avg_pool2d = {
    pool("avg_pool2d", "2x2 stride 2", { 2, 2, 6, 6 }, 2),
    pool("avg_pool2d", "3x3 stride 2 padding 1 (padding counted)", { 1, 3, 7, 6 }, 3, { stride = 2, padding = 1 }),
    pool("avg_pool2d", "overlapping 3x2 stride 1", { 1, 2, 5, 5 }, { 3, 2 }, { stride = 1, padding = { 1, 0 } }),
  },

  adaptive_avg_pool2d = {
    adaptive("global (1x1)", { 2, 3, 5, 4 }, 1),
    adaptive("uneven windows 3x2 from 7x5", { 1, 2, 7, 5 }, { 3, 2 }),
    adaptive("larger than the input", { 1, 2, 3, 3 }, 5),
  },

  batch_norm = {
    bn("train, 2-D", { 6, 3 }, true),
    bn("train, 4-D", { 3, 2, 3, 3 }, true),
    bn("train, 3-D", { 2, 3, 4 }, true),
    bn("eval, 4-D (running statistics)", { 2, 3, 2, 2 }, false),
    bn("train, 4-D, fused relu", { 3, 2, 3, 3 }, true, true),
    bn("train, 2-D, fused relu", { 6, 3 }, true, true),
    bn("eval, 4-D, fused relu", { 2, 3, 2, 2 }, false, true),
    {
      note = "train, fused relu, no affine",
      fn = function(ff, x) return ff.batch_norm(x, { relu = true }) end,
      inputs = function(ff, g) return { ff.randn(4, 2, 3, g) } end,
    },
    {
      note = "train, no affine, no running statistics",
      fn = function(ff, x) return ff.batch_norm(x) end,
      inputs = function(ff, g) return { ff.randn(4, 2, 3, g) } end,
    },
  },

  layer_norm = {
    {
      note = "last dim, weight and bias",
      fn = function(ff, x, w, b) return ff.layer_norm(x, 5, { weight = w, bias = b }) end,
      inputs = function(ff, g) return { ff.randn(3, 5, g), ff.randn(5, g), ff.randn(5, g) } end,
    },
    {
      note = "last two dims",
      fn = function(ff, x, w, b) return ff.layer_norm(x, { 3, 4 }, { weight = w, bias = b }) end,
      inputs = function(ff, g) return { ff.randn(2, 3, 4, g), ff.randn(3, 4, g), ff.randn(3, 4, g) } end,
    },
    {
      note = "no affine",
      fn = function(ff, x) return ff.layer_norm(x, 6) end,
      inputs = function(ff, g) return { ff.randn(2, 2, 6, g) } end,
    },
  },

  dropout = {
    {
      note = "p = 0.5, fixed generator",
      fn = function(ff, x) return ff.dropout(x, 0.5, true, ff.Generator(1)) end,
      inputs = function(ff, g) return { ff.randn(3, 4, g) } end,
    },
    {
      note = "eval: identity",
      fn = function(ff, x) return ff.dropout(x, 0.5, false) end,
      inputs = function(ff, g) return { ff.randn(3, 4, g) } end,
    },
  },
}
