-- test_nn_ops: the nn functions (linear, conv2d, pools, flatten, batch_norm,
-- layer_norm, dropout) against naive references written here in Lua, their
-- options, and their error messages. Gradients are checked by
-- test_gradcheck.lua (cases in tests/lua/gradcheck/nn.lua).
package.path = "tests/lua/?.lua;" .. package.path
local testlib = require "testlib"
local lu = testlib.lu
local ff = require "firefly"
local error_of = testlib.error_of

local function shape(t) return table.concat(t:size(), "x") end

-- Largest |a - b| over two nested tables of one shape.
local function max_diff(a, b)
  if type(a) == "number" then return math.abs(a - b) end
  lu.assertEquals(#a, #b)
  local m = 0
  for i = 1, #a do m = math.max(m, max_diff(a[i], b[i])) end
  return m
end

local function assert_close(t, ref, tol)
  local d = max_diff(t:totable(), ref)
  lu.assertTrue(d <= (tol or 1e-4), "max difference " .. d)
end

local function pair(v) return type(v) == "table" and v or { v, v } end

-- Nested table of zeros of the given shape.
local function zeros(dims, k)
  k = k or 1
  local t = {}
  for i = 1, dims[k] do t[i] = k == #dims and 0 or zeros(dims, k + 1) end
  return t
end

-- ---------------------------------------------------------------------------
-- naive references (nested tables in, nested tables out)

local function naive_conv(x, w, b, opts)
  opts = opts or {}
  local s, p, d = pair(opts.stride or 1), pair(opts.padding or 0), pair(opts.dilation or 1)
  local G = opts.groups or 1
  local N, C, H, W = #x, #x[1], #x[1][1], #x[1][1][1]
  local O, Cg, kh, kw = #w, #w[1], #w[1][1], #w[1][1][1]
  local Og = O // G
  local OH = (H + 2 * p[1] - d[1] * (kh - 1) - 1) // s[1] + 1
  local OW = (W + 2 * p[2] - d[2] * (kw - 1) - 1) // s[2] + 1
  local y = zeros { N, O, OH, OW }
  for n = 1, N do
    for o = 1, O do
      local grp = (o - 1) // Og
      for i = 1, OH do
        for j = 1, OW do
          local acc = b and b[o] or 0
          for c = 1, Cg do
            for u = 1, kh do
              for v = 1, kw do
                local ih = (i - 1) * s[1] - p[1] + (u - 1) * d[1] + 1
                local iw = (j - 1) * s[2] - p[2] + (v - 1) * d[2] + 1
                if ih >= 1 and ih <= H and iw >= 1 and iw <= W then
                  acc = acc + x[n][grp * Cg + c][ih][iw] * w[o][c][u][v]
                end
              end
            end
          end
          y[n][o][i][j] = acc
        end
      end
    end
  end
  return y
end

-- Pool every plane of a 4-D table; reduce(values, count) gives one output
-- from the in-range values of a window of `count` positions (padding included).
local function naive_pool(x, kernel, opts, reduce)
  opts = opts or {}
  local k = pair(kernel)
  local s, p = pair(opts.stride or kernel), pair(opts.padding or 0)
  local H, W = #x[1][1], #x[1][1][1]
  local OH, OW = (H + 2 * p[1] - k[1]) // s[1] + 1, (W + 2 * p[2] - k[2]) // s[2] + 1
  local y = zeros { #x, #x[1], OH, OW }
  for n = 1, #x do
    for c = 1, #x[1] do
      for i = 1, OH do
        for j = 1, OW do
          local vals = {}
          for u = 1, k[1] do
            for v = 1, k[2] do
              local ih, iw = (i - 1) * s[1] - p[1] + u, (j - 1) * s[2] - p[2] + v
              if ih >= 1 and ih <= H and iw >= 1 and iw <= W then vals[#vals + 1] = x[n][c][ih][iw] end
            end
          end
          y[n][c][i][j] = reduce(vals, k[1] * k[2])
        end
      end
    end
  end
  return y
end

local function max_of(vals)
  local m = -math.huge
  for _, v in ipairs(vals) do m = math.max(m, v) end
  return m
end

local function mean_over(vals, count)
  local s = 0
  for _, v in ipairs(vals) do s = s + v end
  return s / count
end

local function naive_adaptive(x, oh, ow)
  local H, W = #x[1][1], #x[1][1][1]
  local y = zeros { #x, #x[1], oh, ow }
  for n = 1, #x do
    for c = 1, #x[1] do
      for i = 0, oh - 1 do
        for j = 0, ow - 1 do
          local h0, h1 = (i * H) // oh, -((-(i + 1) * H) // oh) -- floor, ceil
          local w0, w1 = (j * W) // ow, -((-(j + 1) * W) // ow)
          local s = 0
          for h = h0, h1 - 1 do
            for w = w0, w1 - 1 do s = s + x[n][c][h + 1][w + 1] end
          end
          y[n][c][i + 1][j + 1] = s / ((h1 - h0) * (w1 - w0))
        end
      end
    end
  end
  return y
end

-- ---------------------------------------------------------------------------

TestLinear = {}

function TestLinear:test_equals_matmul_plus_bias()
  local g = ff.Generator(1)
  local x, w, b = ff.randn(4, 5, g), ff.randn(3, 5, g), ff.randn(3, g)
  assert_close(ff.linear(x, w, b), (x:matmul(w:t()) + b):totable(), 1e-5)
  assert_close(ff.linear(x, w), x:matmul(w:t()):totable(), 1e-5)
end

function TestLinear:test_leading_dims_are_rows()
  local g = ff.Generator(2)
  local x, w, b = ff.randn(2, 3, 5, g), ff.randn(4, 5, g), ff.randn(4, g)
  local y = ff.linear(x, w, b)
  lu.assertEquals(shape(y), "2x3x4")
  assert_close(y:reshape(6, 4), (x:reshape(6, 5):matmul(w:t()) + b):totable(), 1e-5)
  -- a non-contiguous 3-D input is read correctly too
  local xt = ff.randn(2, 5, 3, g):transpose(2, 3)
  assert_close(ff.linear(xt, w, b), (xt:contiguous():reshape(6, 5):matmul(w:t()) + b):reshape(2, 3, 4):totable(), 1e-5)
  lu.assertEquals(shape(ff.linear(ff.randn(5, g), w)), "4")
end

function TestLinear:test_errors()
  local x, w = ff.randn(4, 5), ff.randn(3, 6)
  lu.assertStrContains(error_of(ff.linear, x, w), "linear: weight has shape 3x6, expected 3x5")
  lu.assertStrContains(error_of(ff.linear, x, ff.randn(3, 5), ff.randn(4)), "linear: bias has shape 4, expected 3")
  lu.assertStrContains(error_of(ff.linear, x, ff.randn(5)), "linear: weight has shape 5, expected 2 dims")
end

-- ---------------------------------------------------------------------------

TestConv2d = {}

local conv_cases = {
  { "plain", { 2, 3, 5, 5 }, { 4, 3, 3, 3 }, nil },
  { "stride 2", { 1, 2, 7, 6 }, { 3, 2, 3, 3 }, { stride = 2 } },
  { "padding 1", { 1, 2, 5, 5 }, { 3, 2, 3, 3 }, { padding = 1 } },
  { "stride 2 padding 1", { 2, 2, 6, 7 }, { 2, 2, 3, 3 }, { stride = 2, padding = 1 } },
  { "dilation 2 padding 2", { 1, 2, 7, 7 }, { 2, 2, 3, 3 }, { dilation = 2, padding = 2 } },
  { "dilation and stride", { 1, 1, 9, 8 }, { 2, 1, 3, 2 }, { dilation = { 2, 3 }, stride = { 2, 1 } } },
  { "groups 2", { 2, 4, 5, 5 }, { 6, 2, 3, 3 }, { groups = 2, padding = 1 } },
  { "depthwise", { 2, 3, 5, 5 }, { 3, 1, 3, 3 }, { groups = 3, padding = 1 } },
  { "depthwise x2 stride 2 dilation 2", { 1, 2, 8, 8 }, { 4, 1, 3, 3 },
    { groups = 2, stride = 2, padding = 2, dilation = 2 } },
  { "1x1", { 2, 3, 4, 4 }, { 5, 3, 1, 1 }, nil },
  { "1x1 stride 2", { 1, 3, 5, 5 }, { 2, 3, 1, 1 }, { stride = 2 } },
  { "rectangular", { 1, 2, 6, 7 }, { 3, 2, 2, 3 }, { stride = { 2, 1 }, padding = { 1, 0 } } },
  { "kernel as large as the padded input", { 1, 1, 3, 3 }, { 1, 1, 5, 5 }, { padding = 1 } },
  -- "same" padding at stride 1 takes the flattened-plane path of im2col;
  -- these have taps that read nothing but padding
  { "same padding, one-row input", { 2, 2, 1, 5 }, { 3, 2, 3, 3 }, { padding = 1 } },
  { "same padding, 5x5 kernel on 2x6", { 1, 2, 2, 6 }, { 2, 2, 5, 5 }, { padding = 2 } },
  { "same padding, dilation 3", { 1, 1, 4, 7 }, { 2, 1, 3, 3 }, { padding = 3, dilation = 3 } },
  { "same width only", { 1, 2, 5, 6 }, { 2, 2, 3, 3 }, { padding = { 0, 1 } } },
}

function TestConv2d:test_against_direct_convolution()
  local g = ff.Generator(3)
  for _, c in ipairs(conv_cases) do
    local name, xs, ws, opts = c[1], c[2], c[3], c[4]
    local x, w, b = ff.randn(xs, g), ff.randn(ws, g), ff.randn(ws[1], g)
    for _, bias in ipairs { true, false } do
      local y = bias and ff.conv2d(x, w, b, opts) or ff.conv2d(x, w, opts)
      local ref = naive_conv(x:totable(), w:totable(), bias and b:totable() or nil, opts)
      local ok, err = pcall(assert_close, y, ref, 1e-4)
      lu.assertTrue(ok, name .. (bias and " with bias" or " without bias") .. ": " .. tostring(err))
    end
  end
end

function TestConv2d:test_noncontiguous_input_and_weight()
  local g = ff.Generator(4)
  local x = ff.randn(2, 3, 6, 5, g):transpose(3, 4)
  local w = ff.randn(4, 3, 3, 3, g):transpose(3, 4)
  local y = ff.conv2d(x, w, nil, { padding = 1 })
  assert_close(y, naive_conv(x:totable(), w:totable(), nil, { padding = 1 }), 1e-4)
end

function TestConv2d:test_bias_gradient_counts_pixels()
  local x, w = ff.randn(2, 3, 5, 5), ff.randn(4, 3, 3, 3)
  local b = ff.zeros(4):requires_grad(true)
  ff.conv2d(x, w, b, { stride = 2, padding = 1 }):sum():backward()
  lu.assertEquals(b.grad:totable(), { 18, 18, 18, 18 }) -- 2 samples x 3x3 outputs
end

function TestConv2d:test_errors()
  local x = ff.randn(1, 3, 5, 5)
  lu.assertStrContains(error_of(ff.conv2d, x, ff.randn(16, 2, 3, 3)),
    "conv2d: weight has shape 16x2x3x3, expected 16x3x3x3")
  lu.assertStrContains(error_of(ff.conv2d, ff.randn(1, 16, 5, 5), ff.randn(16, 3, 3, 3), { groups = 16 }),
    "conv2d: weight has shape 16x3x3x3, expected 16x1x3x3 for input 1x16x5x5 with groups = 16")
  lu.assertStrContains(error_of(ff.conv2d, x, ff.randn(4, 3, 3, 3), { groups = 2 }), "not divisible by groups")
  lu.assertStrContains(error_of(ff.conv2d, x, ff.randn(4, 3, 7, 7)), "conv2d: output size is 0x0 (<= 0)")
  lu.assertStrContains(error_of(ff.conv2d, ff.randn(3, 5, 5), ff.randn(4, 3, 3, 3)),
    "conv2d: input has shape 3x5x5, expected 4 dims")
  lu.assertStrContains(error_of(ff.conv2d, x, ff.randn(4, 3, 3, 3), ff.randn(5)),
    "conv2d: bias has shape 5, expected 4")
  lu.assertStrContains(error_of(ff.conv2d, x, ff.randn(4, 3, 3, 3), { strides = 2 }),
    "conv2d: unknown option 'strides' (did you mean 'stride'?)")
  lu.assertStrContains(error_of(ff.conv2d, x, ff.randn(4, 3, 3, 3), { stride = 0 }),
    "conv2d: stride must be >= 1, got 0x0")
  lu.assertStrContains(error_of(ff.conv2d, x, ff.randn(4, 3, 3, 3), { padding = -1 }), "padding must be >= 0")
  lu.assertStrContains(error_of(ff.conv2d, x, ff.randn(4, 3, 3, 3), { stride = 1.5 }),
    "conv2d: option stride must be an integer")
  lu.assertStrContains(error_of(ff.conv2d, x, ff.randn(4, 3, 3, 3), { padding = 1 << 40 }),
    "conv2d: option padding 1099511627776 is out of range")
  lu.assertStrContains(error_of(ff.conv2d, x, ff.randn(4, 3, 3, 3), { padding = { 1, 2, 3 } }),
    "conv2d: option padding must be a number or a pair {h, w}")
  lu.assertStrContains(error_of(ff.conv2d, x, ff.randn(4, 3, 3, 3), "same"),
    "conv2d: argument #3 must be a bias tensor, nil or an options table, got string")
  lu.assertStrContains(error_of(ff.conv2d, x, ff.randn(4, 3, 3, 3), nil, 1),
    "conv2d: argument #4 must be an options table, got number")
end

-- ---------------------------------------------------------------------------

TestPool = {}

local pool_cases = {
  { 2, nil },
  { 2, { stride = 1 } },
  { 3, { stride = 2, padding = 1 } },
  { { 3, 2 }, { stride = { 1, 2 }, padding = { 1, 0 } } },
  { 2, { stride = 3, padding = 1 } },
  { 1, nil },
}

function TestPool:test_max_pool_against_reference()
  local g = ff.Generator(5)
  local x = ff.randn(2, 3, 7, 6, g)
  for i, c in ipairs(pool_cases) do
    local ok, err = pcall(assert_close, ff.max_pool2d(x, c[1], c[2]), naive_pool(x:totable(), c[1], c[2], max_of), 0)
    lu.assertTrue(ok, "case " .. i .. ": " .. tostring(err))
  end
end

function TestPool:test_avg_pool_counts_padding()
  local g = ff.Generator(6)
  local x = ff.randn(2, 3, 7, 6, g)
  for i, c in ipairs(pool_cases) do
    local ok, err = pcall(assert_close, ff.avg_pool2d(x, c[1], c[2]), naive_pool(x:totable(), c[1], c[2], mean_over), 1e-5)
    lu.assertTrue(ok, "case " .. i .. ": " .. tostring(err))
  end
  -- a corner window with padding 1 sees 4 of its 9 positions
  local ones = ff.ones(1, 1, 4, 4)
  lu.assertAlmostEquals(ff.avg_pool2d(ones, 3, { stride = 1, padding = 1 })[{ 1, 1, 1, 1 }], 4 / 9, 1e-6)
end

function TestPool:test_adaptive_avg_pool()
  local g = ff.Generator(7)
  local x = ff.randn(2, 3, 7, 5, g)
  for _, s in ipairs { { 1, 1 }, { 3, 2 }, { 7, 5 }, { 4, 4 }, { 9, 6 } } do
    assert_close(ff.adaptive_avg_pool2d(x, s), naive_adaptive(x:totable(), s[1], s[2]), 1e-5)
  end
  -- 1x1 is global average pooling
  assert_close(ff.adaptive_avg_pool2d(x, 1):reshape(2, 3), x:reshape(2, 3, 35):mean(3):totable(), 1e-5)
end

function TestPool:test_unbatched_and_noncontiguous()
  local x = ff.randn(3, 6, 4):transpose(2, 3) -- 3x4x6, not contiguous
  lu.assertEquals(shape(ff.max_pool2d(x, 2)), "3x2x3")
  assert_close(ff.max_pool2d(x, 2), ff.max_pool2d(x:contiguous():unsqueeze(1), 2):squeeze(1):totable(), 0)
end

function TestPool:test_max_pool_nan_wins()
  local x = ff.tensor { { { { 1, 0 / 0, 5, 2 }, { 3, 2, 1, 0 } } } }:requires_grad(true)
  local y = ff.max_pool2d(x, 2):totable()[1][1][1]
  lu.assertTrue(y[1] ~= y[1], "NaN expected") -- torch propagates NaN
  lu.assertEquals(y[2], 5)
  ff.max_pool2d(x, 2):sum():backward()
  lu.assertEquals(x.grad:totable(), { { { { 0, 1, 1, 0 }, { 0, 0, 0, 0 } } } })
end

-- The 2x2 stride-2 pool has a four-windows-at-a-time path for rows of
-- width >= 8 and a scalar tail: on ties (values from {0, 1, 2}), -inf and
-- NaN, both must give the first maximum in row-major order and send the
-- gradient there, as the Lua reference does.
function TestPool:test_halving_pool_ties_nan_and_tails()
  local g = ff.Generator(11)
  for _, W in ipairs { 8, 9, 12, 17, 28 } do
    local H = 5
    local x = ff.randint(0, 2, { 2, 3, H, W }, g)
    local xt = x:totable()
    xt[1][1][1][1], xt[1][2][2][W - 1] = -math.huge, 0 / 0 -- a -inf; a NaN in the last window
    xt[2][3][3][3], xt[2][3][4][4] = 0 / 0, 0 / 0       -- two NaNs in one window: the first wins
    xt[2][1][1][1], xt[2][1][1][2], xt[2][1][2][1], xt[2][1][2][2] = -math.huge, -math.huge, -math.huge, -math.huge
    x = ff.tensor(xt):requires_grad(true)
    local gy = ff.randn({ 2, 3, H // 2, W // 2 }, g)
    local y = ff.max_pool2d(x, 2)
    y:backward(gy)
    local yt, gyt, dx = y:totable(), gy:totable(), x.grad:totable()
    local want = zeros { 2, 3, H, W }
    for n = 1, 2 do
      for c = 1, 3 do
        for i = 1, H // 2 do
          for j = 1, W // 2 do
            local bi, bj, best = 2 * i - 1, 2 * j - 1, -math.huge
            local nan = false
            for u = 0, 1 do
              for v = 0, 1 do
                local val = xt[n][c][2 * i - 1 + u][2 * j - 1 + v]
                if val ~= val and not nan then nan, bi, bj = true, 2 * i - 1 + u, 2 * j - 1 + v
                elseif not nan and val > best then best, bi, bj = val, 2 * i - 1 + u, 2 * j - 1 + v end
              end
            end
            local got = yt[n][c][i][j]
            if nan then
              lu.assertTrue(got ~= got, string.format("W=%d (%d,%d,%d,%d): NaN expected", W, n, c, i, j))
            else
              lu.assertEquals(got, best, string.format("W=%d (%d,%d,%d,%d)", W, n, c, i, j))
            end
            want[n][c][bi][bj] = want[n][c][bi][bj] + gyt[n][c][i][j]
          end
        end
      end
    end
    lu.assertEquals(dx, want, "W=" .. W .. ": gradient at the first maximum")
  end
end

function TestPool:test_max_pool_gradient_goes_to_the_argmax()
  local x = ff.tensor { { { { 1, 5 }, { 3, 2 } } } }:requires_grad(true)
  ff.max_pool2d(x, 2):sum():backward()
  lu.assertEquals(x.grad:totable(), { { { { 0, 1 }, { 0, 0 } } } })
end

function TestPool:test_errors()
  local x = ff.randn(1, 1, 4, 4)
  lu.assertStrContains(error_of(ff.max_pool2d, x, 2, { padding = 2 }),
    "max_pool2d: padding must be between 0 and half the kernel")
  lu.assertStrContains(error_of(ff.max_pool2d, x, 5), "max_pool2d: output size is 0x0 (<= 0)")
  lu.assertStrContains(error_of(ff.avg_pool2d, x, 0), "avg_pool2d: kernel must be >= 1")
  lu.assertStrContains(error_of(ff.avg_pool2d, x, 2, { stride = 0 }), "avg_pool2d: stride must be >= 1")
  lu.assertStrContains(error_of(ff.max_pool2d, x, 2, { dilation = 2 }), "max_pool2d: unknown option 'dilation' (known: stride, padding)")
  lu.assertStrContains(error_of(ff.max_pool2d, ff.randn(4, 4), 2), "max_pool2d: input has shape 4x4, expected 4 dims")
  lu.assertStrContains(error_of(ff.max_pool2d, x), "max_pool2d: kernel must be an integer")
  lu.assertStrContains(error_of(ff.adaptive_avg_pool2d, x, 0), "adaptive_avg_pool2d: output size must be >= 1")
end

-- ---------------------------------------------------------------------------

TestFlatten = {}

function TestFlatten:test_keeps_the_batch_dim()
  local x = ff.randn(2, 3, 4, 5)
  lu.assertEquals(shape(ff.flatten(x)), "2x60")
  lu.assertEquals(shape(ff.flatten(x, 1)), "120")
  lu.assertEquals(shape(ff.flatten(x, 2, 3)), "2x12x5")
  lu.assertEquals(shape(ff.flatten(x, -2)), "2x3x20")
  lu.assertEquals(shape(ff.flatten(ff.randn(7))), "7")
  assert_close(ff.flatten(x), x:reshape(2, 60):totable(), 0)
  -- non-contiguous input: copied in the right order
  local xt = x:transpose(2, 4)
  assert_close(ff.flatten(xt), xt:contiguous():reshape(2, 60):totable(), 0)
  lu.assertStrContains(error_of(ff.flatten, x, 3, 2), "flatten: end_dim 2 comes before start_dim 3")
  lu.assertStrContains(error_of(ff.flatten, x, 5), "flatten: dim 5 out of range")
end

-- ---------------------------------------------------------------------------

TestBatchNorm = {}

function TestBatchNorm:test_running_statistics_update()
  -- channel 1 holds {1, 2, 3, 6}: mean 3, biased var 3.5, unbiased 14/3
  local x = ff.tensor { { 1, 10 }, { 2, 20 }, { 3, 30 }, { 6, 60 } }
  local rm, rv = ff.zeros(2), ff.ones(2)
  local y = ff.batch_norm(x, { running_mean = rm, running_var = rv, momentum = 0.1 })
  lu.assertAlmostEquals(rm[1], 0.3, 1e-6)
  lu.assertAlmostEquals(rm[2], 3.0, 1e-5)
  lu.assertAlmostEquals(rv[1], 0.9 + 0.1 * 14 / 3, 1e-6)
  lu.assertAlmostEquals(rv[2], 0.9 + 0.1 * 1400 / 3, 1e-3)
  -- normalised by the batch statistics (biased variance)
  lu.assertAlmostEquals(y[{ 1, 1 }], (1 - 3) / math.sqrt(3.5 + 1e-5), 1e-5)
  lu.assertAlmostEquals(y[{ 4, 2 }], (60 - 30) / math.sqrt(350 + 1e-5), 1e-5)
end

function TestBatchNorm:test_train_output_is_normalised_4d()
  local g = ff.Generator(8)
  local x = ff.randn(4, 3, 5, 5, g) * 3 + 2
  local w, b = ff.tensor { 1, 2, 0.5 }, ff.tensor { 0, -1, 3 }
  local y = ff.batch_norm(x, { weight = w, bias = b })
  -- per channel: mean = bias, std = weight
  local yc = y:transpose(1, 2):reshape(3, 100)
  assert_close(yc:mean(2), { 0, -1, 3 }, 1e-5)
  assert_close(yc:var(2, false), { 1, 4, 0.25 }, 1e-3)
end

function TestBatchNorm:test_eval_uses_running_statistics()
  local x = ff.randn(3, 2, 4)
  local rm, rv = ff.tensor { 0.5, -1 }, ff.tensor { 4, 0.25 }
  local w, b = ff.tensor { 2, 3 }, ff.tensor { 1, 0 }
  local y = ff.batch_norm(x, { weight = w, bias = b, running_mean = rm, running_var = rv, training = false, eps = 0 })
  local xt, yt = x:totable(), y:totable()
  local m, v, ww, bb = { 0.5, -1 }, { 4, 0.25 }, { 2, 3 }, { 1, 0 }
  for n = 1, 3 do
    for c = 1, 2 do
      for l = 1, 4 do
        lu.assertAlmostEquals(yt[n][c][l], (xt[n][c][l] - m[c]) / math.sqrt(v[c]) * ww[c] + bb[c], 1e-5)
      end
    end
  end
  -- eval does not touch the running statistics
  lu.assertEquals(rm:totable(), { 0.5, -1 })
  lu.assertEquals(rv:totable(), { 4, 0.25 })
end

function TestBatchNorm:test_eval_backward_is_the_affine_map()
  local x = ff.randn(3, 2):requires_grad(true)
  local rm, rv = ff.zeros(2), ff.tensor { 4, 1 }
  ff.batch_norm(x, { running_mean = rm, running_var = rv, training = false, eps = 0 }):sum():backward()
  assert_close(x.grad, { { 0.5, 1 }, { 0.5, 1 }, { 0.5, 1 } }, 1e-6)
end

function TestBatchNorm:test_errors()
  local x = ff.randn(4, 3)
  lu.assertStrContains(error_of(ff.batch_norm, x, { training = false }),
    "batch_norm: eval mode needs running_mean and running_var")
  lu.assertStrContains(error_of(ff.batch_norm, x, { weight = ff.ones(4) }),
    "batch_norm: weight has shape 4, expected 3 (the channels of input 4x3)")
  lu.assertStrContains(error_of(ff.batch_norm, x, { running_mean = ff.zeros(3) }),
    "give both running_mean and running_var")
  lu.assertStrContains(error_of(ff.batch_norm, ff.randn(1, 3)), "expected more than 1 value per channel when training")
  lu.assertStrContains(error_of(ff.batch_norm, x, { momentum = 2 }), "momentum must be in [0, 1]")
  lu.assertStrContains(error_of(ff.batch_norm, x, { epsilon = 1 }), "batch_norm: unknown option 'epsilon' (did you mean 'eps'?)")
  lu.assertStrContains(error_of(ff.batch_norm, x, { weight = 1 }), "batch_norm: option weight must be an open tensor")
  lu.assertStrContains(error_of(ff.batch_norm, x, { training = 1 }), "option training must be a boolean")
  lu.assertStrContains(error_of(ff.batch_norm, ff.randn(4)), "batch_norm: input has shape 4, expected at least 2 dims")
end

-- ---------------------------------------------------------------------------

TestLayerNorm = {}

function TestLayerNorm:test_values()
  local x = ff.tensor { { 1, 2, 3, 6 }, { -1, -1, 1, 1 } }
  local y = ff.layer_norm(x, 4, { eps = 0 }):totable()
  local s = math.sqrt(3.5)
  lu.assertAlmostEquals(y[1][1], -2 / s, 1e-6)
  lu.assertAlmostEquals(y[1][4], 3 / s, 1e-6)
  lu.assertAlmostEquals(y[2][1], -1, 1e-6)
  -- weight and bias are applied after normalising, per element
  local w, b = ff.tensor { 1, 2, 3, 4 }, ff.tensor { 0, 0, 0, 10 }
  local yw = ff.layer_norm(x, { 4 }, { weight = w, bias = b, eps = 0 }):totable()
  lu.assertAlmostEquals(yw[2][4], 14, 1e-5)
  lu.assertAlmostEquals(yw[1][2], -2 / s, 1e-5)
end

function TestLayerNorm:test_trailing_dims()
  local x = ff.randn(2, 3, 4) * 5 + 1
  local y = ff.layer_norm(x, { 3, 4 })
  local rows = y:reshape(2, 12)
  assert_close(rows:mean(2), { 0, 0 }, 1e-5)
  assert_close(rows:var(2, false), { 1, 1 }, 1e-3)
end

function TestLayerNorm:test_errors()
  local x = ff.randn(2, 3, 4)
  lu.assertStrContains(error_of(ff.layer_norm, x, 3), "layer_norm: normalized shape 3 does not match the last dims of input 2x3x4")
  lu.assertStrContains(error_of(ff.layer_norm, x, { 4, 4 }), "normalized shape 4x4 does not match")
  lu.assertStrContains(error_of(ff.layer_norm, x, 4, { weight = ff.ones(3) }),
    "layer_norm: weight has shape 3, expected 4 (the last 1 dims of input 2x3x4)")
  lu.assertStrContains(error_of(ff.layer_norm, x, 4, { elementwise_affine = false }),
    "layer_norm: unknown option 'elementwise_affine' (known: weight, bias, eps)")
  lu.assertStrContains(error_of(ff.layer_norm, x), "layer_norm: argument #2 must be the normalised shape")
end

-- ---------------------------------------------------------------------------

TestDropout = {}

function TestDropout:test_mask_statistics_and_scaling()
  local x = ff.ones(100, 100)
  local y = ff.dropout(x, 0.25, true, ff.Generator(1))
  local kept = 0
  for _, row in ipairs(y:totable()) do
    for _, v in ipairs(row) do
      lu.assertTrue(v == 0 or math.abs(v - 1 / 0.75) < 1e-6, "value " .. v)
      if v ~= 0 then kept = kept + 1 end
    end
  end
  -- 7,500 expected; 5 standard deviations is about 217
  lu.assertTrue(math.abs(kept - 7500) < 220, "kept " .. kept)
  -- the expectation is preserved
  lu.assertAlmostEquals(y:mean():item(), 1, 0.03)
end

function TestDropout:test_reproducible_with_a_generator()
  local x = ff.randn(50)
  local a = ff.dropout(x, 0.5, true, ff.Generator(7)):totable()
  local b = ff.dropout(x, 0.5, true, ff.Generator(7)):totable()
  lu.assertEquals(a, b)
  local c = ff.dropout(x, 0.5, true, ff.Generator(8)):totable()
  lu.assertNotEquals(a, c)
end

function TestDropout:test_eval_p0_and_p1()
  local x = ff.randn(3, 4)
  lu.assertEquals(ff.dropout(x, 0.5, false):totable(), x:totable())
  lu.assertEquals(ff.dropout(x, 0):totable(), x:totable())
  lu.assertEquals(ff.dropout(x, 1):totable(), ff.zeros(3, 4):totable())
  -- the result is a new tensor, not the input
  local y = ff.dropout(x, 0.5, false)
  y:fill_(0)
  lu.assertNotEquals(x:totable(), y:totable())
end

function TestDropout:test_gradient_uses_the_same_mask()
  local x = ff.ones(20):requires_grad(true)
  local y = ff.dropout(x, 0.5, true, ff.Generator(3))
  y:sum():backward()
  lu.assertEquals(x.grad:totable(), y:detach():totable())
end

function TestDropout:test_errors()
  local x = ff.randn(3)
  lu.assertStrContains(error_of(ff.dropout, x, 1.5), "dropout: probability must be in [0, 1], got 1.5")
  lu.assertStrContains(error_of(ff.dropout, x), "number expected")
  lu.assertStrContains(error_of(ff.dropout, x, 0.5, "yes"), "boolean (training) expected")
  lu.assertStrContains(error_of(ff.dropout, x, 0.5, true, 42), "firefly.Generator expected")
end

os.exit(testlib.run())
