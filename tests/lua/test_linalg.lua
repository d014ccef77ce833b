-- test_linalg: ff.linalg.eigh (LAPACK ssyevr) by A·v = λv with orthonormal
-- v, partial spectra and batches; ff.unfold against conv2d; neither
-- records a gradient; errors name the function, the argument and shapes.
package.path = "tests/lua/?.lua;" .. package.path
local testlib = require "testlib"
local lu = testlib.lu
local ff = require "firefly"

local function symmetric(...)
  local A = ff.randn(...)
  local n = A:dim()
  return (A + A:transpose(n - 1, n)) * 0.5
end

local function max_abs(t) return t:abs():max():item() end

TestEigh = {}

function TestEigh:test_full_spectrum_of_a_batch()
  ff.manual_seed(1)
  local A = symmetric(3, 7, 7)
  local w, V = ff.linalg.eigh(A)
  lu.assertEquals(w:size(), { 3, 7 })
  lu.assertEquals(V:size(), { 3, 7, 7 })
  -- A V = V diag(w), VᵀV = I, ascending
  lu.assertTrue(max_abs(A:matmul(V) - V * w:unsqueeze(2)) < 1e-5)
  lu.assertTrue(max_abs(V:transpose(2, 3):matmul(V) - ff.eye(7)) < 1e-5)
  local diffs = w:narrow(2, 2, 6) - w:narrow(2, 1, 6)
  lu.assertTrue(diffs:min():item() >= 0)
end

function TestEigh:test_partial_spectra()
  ff.manual_seed(2)
  local A = symmetric(10, 10)
  local w = ff.linalg.eigh(A)
  local ws, Vs = ff.linalg.eigh(A, { k = 2 })
  local wl, Vl = ff.linalg.eigh(A, { k = 3, largest = true })
  lu.assertEquals(Vs:size(), { 10, 2 })
  lu.assertTrue(max_abs(ws - w:narrow(1, 1, 2)) < 1e-5)
  lu.assertTrue(max_abs(wl - w:narrow(1, 8, 3)) < 1e-5)
  lu.assertTrue(max_abs(A:matmul(Vl) - Vl * wl) < 1e-5)
  -- each vector's largest entry is positive
  for j = 1, 2 do
    local col = Vs:narrow(2, j, 1):reshape(10)
    local idx = col:abs():argmax(1):item()
    lu.assertTrue(col[idx] > 0)
  end
end

function TestEigh:test_lower_triangle_only_and_no_grad()
  local A = ff.tensor { { 2, 99 }, { 1, 2 } }:requires_grad(true) -- upper ignored
  local w, V = ff.linalg.eigh(A)
  lu.assertTrue(max_abs(w - ff.tensor { 1, 3 }) < 1e-6)
  lu.assertFalse(w:requires_grad())
  lu.assertFalse(V:requires_grad())
  -- a transposed (strided) view reads the same lower triangle of the copy
  local B = symmetric(5, 5)
  lu.assertTrue(max_abs(ff.linalg.eigh(B:t()) - ff.linalg.eigh(B)) < 1e-5)
end

function TestEigh:test_errors()
  local function err(...) return testlib.error_of(ff.linalg.eigh, ...) end
  lu.assertStrContains(err(ff.ones(3, 4)), "linalg.eigh: A must be square, got 3x4")
  lu.assertStrContains(err(ff.ones(2, 3, 4)), "linalg.eigh: A must be square, got 2x3x4")
  lu.assertStrContains(err(ff.ones(3)), "linalg.eigh: A must have at least 2 dims (..., d, d), got 3")
  lu.assertStrContains(err(ff.tensor(1)), "got scalar")
  lu.assertStrContains(err(ff.zeros(0, 0)), "at least 1x1")
  lu.assertStrContains(err(ff.tensor { { 1, 0 }, { 0 / 0, 1 } }), "linalg.eigh: A has a NaN at (2, 1) of matrix 1")
  lu.assertStrContains(err(ff.ones(2, 2, 2):index_add_(1, ff.tensor { 2 }, ff.full({ 1, 2, 2 }, math.huge))),
    "an infinity at (1, 1) of matrix 2")
  lu.assertStrContains(err(ff.eye(3), { k = 4 }), "linalg.eigh: k must be in 1..3 for A of shape 3x3, got 4")
  lu.assertStrContains(err(ff.eye(3), { k = 0 }), "k must be in 1..3")
  lu.assertStrContains(err(ff.eye(3), { k = 1.5 }), "option k must be an integer, got a fraction")
  lu.assertStrContains(err(ff.eye(3), { largest = 1 }), "option largest must be a boolean, got number")
  lu.assertStrContains(err(ff.eye(3), { kk = 1 }), "linalg.eigh: unknown option 'kk' (did you mean 'k'?)")
  lu.assertStrContains(err(ff.eye(3), 3), "argument #2 must be an options table, got number")
  lu.assertStrContains(err({}), "Tensor expected")
  -- the whole sweep of odd arguments: errors, never a crash
  for _, a in ipairs { ff.zeros(0), ff.zeros(2, 0, 0), ff.ones(1, 1), ff.tensor { { math.huge } } } do
    for _, o in ipairs { {}, { k = 2 ^ 62 }, { k = -1 }, { k = math.mininteger }, { largest = true } } do
      local ok, e = pcall(ff.linalg.eigh, a, o)
      lu.assertTrue(ok or type(e) == "string")
    end
  end
end

TestUnfold = {}

function TestUnfold:test_matches_conv2d()
  ff.manual_seed(3)
  local cases = {
    { 3, {} }, { 3, { padding = 1 } }, { { 2, 3 }, { stride = { 2, 1 }, padding = { 1, 0 } } },
    { 3, { dilation = 2, padding = 2 } }, { 1, {} }, { 2, { stride = 2 } },
  }
  local x = ff.randn(2, 3, 7, 6)
  for _, c in ipairs(cases) do
    local k = type(c[1]) == "table" and c[1] or { c[1], c[1] }
    local w = ff.randn(4, 3, k[1], k[2])
    local y = ff.conv2d(x, w, c[2])
    local u = ff.unfold(x, c[1], c[2])
    lu.assertEquals(u:size(), { 2, 3 * k[1] * k[2], y:size(3) * y:size(4) })
    local via = w:view(4, -1):matmul(u):view(y:size())
    lu.assertTrue(max_abs(via - y) < 1e-5, "kernel " .. k[1] .. "x" .. k[2])
  end
  -- a strided input gives the same patches
  local xt = x:transpose(3, 4)
  lu.assertTrue(ff.unfold(xt, 3):equal(ff.unfold(xt:contiguous(), 3)))
end

function TestUnfold:test_no_grad_and_errors()
  local x = ff.randn(1, 2, 4, 4):requires_grad(true)
  lu.assertFalse(ff.unfold(x, 2):requires_grad())
  local function err(...) return testlib.error_of(ff.unfold, ...) end
  lu.assertStrContains(err(ff.ones(2, 3), 1), "unfold: input has shape 2x3, expected 4 dims (N x C x H x W)")
  lu.assertStrContains(err(x, 5), "unfold: output size is 0x0 (<= 0) for input 1x2x4x4 with kernel 5x5")
  lu.assertStrContains(err(x, 0), "unfold: kernel must be >= 1, got 0x0")
  lu.assertStrContains(err(x, 2, { stride = 0 }), "unfold: stride must be >= 1")
  lu.assertStrContains(err(x, 2, { padding = -1 }), "unfold: padding must be >= 0")
  lu.assertStrContains(err(x, 2, { dilation = { 1, 0 } }), "unfold: dilation must be >= 1, got 1x0")
  lu.assertStrContains(err(x, 2, { strides = 1 }), "unfold: unknown option 'strides' (did you mean 'stride'?)")
  lu.assertStrContains(err(x), "argument #2 (kernel) must be a number or a pair {kh, kw}")
  lu.assertStrContains(err(x, 1.5), "kernel must be an integer or a pair {h, w} of integers, got a fraction")
  lu.assertStrContains(err(x, { 1, 2, 3 }), "got a table of 3 entries")
  lu.assertStrContains(err(x, 2 ^ 40), "kernel 1099511627776 is out of range")
end

os.exit(testlib.run())
