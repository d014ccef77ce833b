-- test_functional: activations, softmax and losses as Lua users see them:
-- values against scalar formulas written here, stability at large inputs,
-- 1-based labels, option tables, error messages, and act_d2 against finite
-- differences of the first derivative.
package.path = "tests/lua/?.lua;" .. package.path
local testlib = require "testlib"
local lu = testlib.lu
local ff = require "firefly"
local error_of = testlib.error_of

-- ---- scalar references (Lua 5.4 has no math.tanh, erf, log1p) ----

local exp, log, sqrt = math.exp, math.log, math.sqrt

local function sigmoid(x)
  if x >= 0 then return 1 / (1 + exp(-x)) end
  local e = exp(x)
  return e / (1 + e)
end

local function tanh(x) return 2 * sigmoid(2 * x) - 1 end

-- erf by its Taylor series (|x| < 3) or its asymptotic complement: plenty
-- for float32 comparisons.
local function erf(x)
  local ax = math.abs(x)
  if ax > 3 then
    local t, s, term = 1 / (ax * ax), 1, 1
    for n = 1, 6 do
      term = -term * (2 * n - 1) * t / 2
      s = s + term
    end
    local v = 1 - exp(-ax * ax) / (ax * sqrt(math.pi)) * s
    return x < 0 and -v or v
  end
  local sum, term = x, x
  for n = 1, 60 do
    term = -term * x * x / n
    sum = sum + term / (2 * n + 1)
  end
  return 2 / sqrt(math.pi) * sum
end

local ref = {
  relu = function(x) return x > 0 and x or 0 end,
  leaky_relu = function(x, s) return x > 0 and x or (s or 0.01) * x end,
  elu = function(x, a) return x > 0 and x or (a or 1) * (exp(x) - 1) end,
  gelu = function(x) return x * 0.5 * (1 + erf(x / sqrt(2))) end,
  silu = function(x) return x * sigmoid(x) end,
  tanh = tanh,
  sigmoid = sigmoid,
  softplus = function(x, b, th)
    b, th = b or 1, th or 20
    if b * x > th then return x end
    return log(1 + exp(b * x)) / b
  end,
  rbf = function(x) return exp(-x * x / 2) end,
}

local XS = { -3, -1.5, -0.5, -0.01, 0, 0.01, 0.3, 1, 2.5, 4 }

local function assert_close(got, want, tol, what)
  tol = tol or 1e-5
  lu.assertTrue(math.abs(got - want) <= tol * (1 + math.abs(want)),
    string.format("%s: got %.9g, expected %.9g", what or "value", got, want))
end

local function assert_all_close(t, want, tol, what)
  local got = t:reshape(-1):totable()
  lu.assertEquals(#got, #want, what)
  for i = 1, #want do assert_close(got[i], want[i], tol, (what or "") .. " [" .. i .. "]") end
end

local function map(xs, f, ...)
  local r = {}
  for i, x in ipairs(xs) do r[i] = f(x, ...) end
  return r
end

-- ---- activations ----

TestActivations = {}

function TestActivations:test_values_against_formulas()
  local x = ff.tensor(XS)
  for name, f in pairs(ref) do
    assert_all_close(x[name](x), map(XS, f), 1e-5, name)
  end
end

function TestActivations:test_parameters()
  local x = ff.tensor(XS)
  assert_all_close(x:leaky_relu(0.2), map(XS, ref.leaky_relu, 0.2), 1e-6, "leaky_relu 0.2")
  assert_all_close(x:elu(0.5), map(XS, ref.elu, 0.5), 1e-6, "elu 0.5")
  assert_all_close(x:softplus(2), map(XS, ref.softplus, 2), 1e-5, "softplus beta 2")
  assert_all_close(x:softplus(2, 3), map(XS, ref.softplus, 2, 3), 1e-5, "softplus threshold 3")
  assert_all_close(x:softplus(-1), map(XS, ref.softplus, -1), 1e-5, "softplus beta -1")
end

function TestActivations:test_module_functions_match_methods()
  local x = ff.randn(4, 5, ff.Generator(3))
  for name in pairs(ref) do
    lu.assertTrue(ff[name](x):equal(x[name](x)), name)
  end
  lu.assertTrue(ff.leaky_relu(x, 0.3):equal(x:leaky_relu(0.3)))
end

function TestActivations:test_shapes_and_layouts()
  local x = ff.randn(3, 4, ff.Generator(4))
  local y = x:t():gelu()
  lu.assertEquals(y:size(), { 4, 3 })
  lu.assertTrue(y:equal(x:t():contiguous():gelu()))
  lu.assertEquals(ff.zeros(0, 3):relu():size(), { 0, 3 })
  lu.assertEquals(ff.tensor(2):sigmoid():dim(), 0)
end

function TestActivations:test_large_inputs_stay_finite()
  -- e^-100 survives as a float denormal: compare with a tolerance
  local x = ff.tensor { -100, 100 }
  assert_all_close(x:sigmoid(), { 0, 1 }, 1e-7, "sigmoid")
  assert_all_close(x:tanh(), { -1, 1 }, 1e-7, "tanh")
  assert_all_close(x:softplus(), { 0, 100 }, 1e-7, "softplus")
  assert_all_close(x:softplus(1, 1000), { 0, 100 }, 1e-7, "softplus without threshold")
  assert_all_close(x:silu(), { 0, 100 }, 1e-7, "silu")
  assert_all_close(x:gelu(), { 0, 100 }, 1e-7, "gelu")
  assert_all_close(x:rbf(), { 0, 0 }, 1e-7, "rbf")
end

function TestActivations:test_gradients()
  local x = ff.tensor(XS):requires_grad(true)
  x:sigmoid():sum():backward()
  assert_all_close(x.grad, map(XS, function(v) return sigmoid(v) * (1 - sigmoid(v)) end), 1e-5)
  x.grad = nil
  x:relu():sum():backward()
  assert_all_close(x.grad, map(XS, function(v) return v > 0 and 1 or 0 end), 0)
  x.grad = nil
  x:leaky_relu(0.2):sum():backward()
  assert_all_close(x.grad, map(XS, function(v) return v > 0 and 1 or 0.2 end), 1e-7)
end

function TestActivations:test_errors()
  lu.assertStrContains(error_of(ff.softplus, ff.ones(2), 0), "softplus: beta must be a non-zero number")
  lu.assertStrContains(error_of(ff.relu, 3), "Tensor expected")
  lu.assertStrContains(error_of(ff.elu, ff.ones(2), "x"), "number expected")
end

-- ---- softmax ----

TestSoftmax = {}

function TestSoftmax:test_rows_and_columns_sum_to_one()
  local x = ff.randn(3, 5, ff.Generator(5)) * 3
  assert_all_close(x:softmax(2):sum(2), { 1, 1, 1 }, 1e-6, "rows")
  assert_all_close(x:softmax(1):sum(1), { 1, 1, 1, 1, 1 }, 1e-6, "columns")
  assert_all_close(x:softmax(-1):sum(-1), { 1, 1, 1 }, 1e-6, "dim -1")
  local y = ff.randn(2, 3, 4, ff.Generator(6)):softmax(2)
  assert_all_close(y:sum(2), map({ 1, 1, 1, 1, 1, 1, 1, 1 }, function(v) return v end), 1e-6)
end

function TestSoftmax:test_values()
  local y = ff.tensor { 1, 2, 3 }:softmax(1)
  local z = exp(1) + exp(2) + exp(3)
  assert_all_close(y, { exp(1) / z, exp(2) / z, exp(3) / z }, 1e-6)
  assert_all_close(ff.tensor { 1, 2, 3 }:log_softmax(1), { 1 - log(z), 2 - log(z), 3 - log(z) }, 1e-6)
end

function TestSoftmax:test_stable_for_large_inputs()
  local x = ff.tensor { { 1000, 1000 }, { 1000, 0 }, { -1000, -1000 } }
  lu.assertEquals(x:softmax(2):totable(), { { 0.5, 0.5 }, { 1, 0 }, { 0.5, 0.5 } })
  local l = x:log_softmax(2):totable()
  assert_close(l[1][1], -log(2), 1e-6)
  lu.assertEquals(l[2], { 0, -1000 })
  assert_close(l[3][2], -log(2), 1e-6)
end

function TestSoftmax:test_log_softmax_is_log_of_softmax()
  local x = ff.randn(4, 6, ff.Generator(7)) * 2
  for dim = 1, 2 do
    local a, b = x:log_softmax(dim):reshape(-1):totable(), x:softmax(dim):log():reshape(-1):totable()
    for i = 1, #a do assert_close(a[i], b[i], 1e-5, "dim " .. dim) end
  end
end

function TestSoftmax:test_errors()
  local x = ff.ones(2, 3)
  lu.assertStrContains(error_of(x.softmax, x, 3), "softmax: dim 3 out of range for a tensor of rank 2")
  lu.assertStrContains(error_of(x.log_softmax, x), "number expected")
  lu.assertStrContains(error_of(ff.softmax, x, 0), "softmax: dim 0 out of range")
end

-- ---- cross_entropy, nll_loss ----

-- logits and 1-based labels computed by hand below
local LOGITS = { { 1, 2, 3 }, { 0.5, 0.1, -1 } }
local LABELS = { 3, 1 }

local function lse(row)
  local s = 0
  for _, v in ipairs(row) do s = s + exp(v) end
  return log(s)
end

-- -(1-s) log p_y - (s/C) sum_c log p_c for one row
local function ce_ref(row, y, s)
  s = s or 0
  local l, sum = lse(row), 0
  for _, v in ipairs(row) do sum = sum + (v - l) end
  return -(1 - s) * (row[y] - l) - s / #row * sum
end

TestCrossEntropy = {}

function TestCrossEntropy:test_against_hand_computation()
  local x = ff.tensor(LOGITS)
  local l1, l2 = ce_ref(LOGITS[1], 3), ce_ref(LOGITS[2], 1)
  assert_close(ff.cross_entropy(x, ff.tensor(LABELS)):item(), (l1 + l2) / 2, 1e-6, "mean")
  assert_close(ff.cross_entropy(x, LABELS, { reduction = "sum" }):item(), l1 + l2, 1e-6, "sum")
  local none = ff.cross_entropy(x, LABELS, { reduction = "none" })
  lu.assertEquals(none:size(), { 2 })
  assert_all_close(none, { l1, l2 }, 1e-6, "none")
  lu.assertEquals(ff.cross_entropy(x, LABELS, { reduction = "mean" }):dim(), 0)
end

function TestCrossEntropy:test_label_smoothing()
  local x = ff.tensor(LOGITS)
  for _, s in ipairs { 0.1, 0.5, 1 } do
    local want = { ce_ref(LOGITS[1], 3, s), ce_ref(LOGITS[2], 1, s) }
    assert_all_close(ff.cross_entropy(x, LABELS, { reduction = "none", label_smoothing = s }),
      want, 1e-6, "smoothing " .. s)
    assert_close(ff.cross_entropy(x, LABELS, { label_smoothing = s }):item(),
      (want[1] + want[2]) / 2, 1e-6, "smoothing mean " .. s)
  end
end

function TestCrossEntropy:test_stable_for_large_logits()
  local x = ff.tensor { { 1000, 0, -1000 }, { -1000, 1000, 999 } }
  assert_all_close(ff.cross_entropy(x, { 1, 3 }, { reduction = "none" }),
    { 0, log(1 + exp(-1)) + 1 }, 1e-5)
end

function TestCrossEntropy:test_equals_nll_of_log_softmax()
  local g = ff.Generator(8)
  local x, y = ff.randn(6, 4, g), ff.tensor { 1, 4, 2, 2, 3, 4 }
  for _, red in ipairs { "mean", "sum", "none" } do
    local a = ff.cross_entropy(x, y, { reduction = red })
    local b = ff.nll_loss(x:log_softmax(2), y, { reduction = red })
    lu.assertTrue(a:allclose(b, 1e-5, 1e-6), red)
  end
end

function TestCrossEntropy:test_gradient_is_softmax_minus_target()
  local x = ff.tensor(LOGITS):requires_grad(true)
  ff.cross_entropy(x, LABELS):backward()
  local p = ff.tensor(LOGITS):softmax(2):totable()
  local want = {
    (p[1][1]) / 2, (p[1][2]) / 2, (p[1][3] - 1) / 2,
    (p[2][1] - 1) / 2, (p[2][2]) / 2, (p[2][3]) / 2,
  }
  assert_all_close(x.grad, want, 1e-6)
end

function TestCrossEntropy:test_nll_loss_values()
  local x = ff.tensor { { -0.1, -2, -3 }, { -1, -0.5, -4 } }
  assert_close(ff.nll_loss(x, { 1, 2 }):item(), (0.1 + 0.5) / 2, 1e-6)
  assert_close(ff.nll_loss(x, { 3, 3 }, { reduction = "sum" }):item(), 7, 1e-6)
  lu.assertEquals(ff.nll_loss(x, { 2, 1 }, { reduction = "none" }):totable(), { 2, 1 })
end

function TestCrossEntropy:test_bad_labels()
  local x = ff.zeros(2, 10)
  lu.assertStrContains(error_of(ff.cross_entropy, x, { 1, 11 }),
    "cross_entropy: label 11 out of range for 10 classes")
  lu.assertStrContains(error_of(ff.cross_entropy, x, ff.tensor { 0, 1 }),
    "cross_entropy: label 0 out of range for 10 classes")
  lu.assertStrContains(error_of(ff.cross_entropy, x, { 1.5, 1 }),
    "cross_entropy: label 1.5 at position 1 is not an integer")
  lu.assertStrContains(error_of(ff.nll_loss, x, { 1, -2 }),
    "nll_loss: label -2 out of range for 10 classes")
  lu.assertStrContains(error_of(ff.cross_entropy, x, { 1, 2, 3 }),
    "cross_entropy: labels have shape 3, expected 2 (one per row of the 2x10 input)")
  lu.assertStrContains(error_of(ff.cross_entropy, x, ff.ones(2, 1)),
    "cross_entropy: labels have shape 2x1, expected 2")
  lu.assertStrContains(error_of(ff.cross_entropy, x, "3"), "tensor or table of class indices")
end

function TestCrossEntropy:test_bad_inputs_and_options()
  local y = { 1, 2 }
  lu.assertStrContains(error_of(ff.cross_entropy, ff.zeros(10), { 1 }),
    "cross_entropy: input must be 2-D (N x C), got shape 10")
  lu.assertStrContains(error_of(ff.cross_entropy, ff.zeros(2, 3, 4), y),
    "cross_entropy: input must be 2-D (N x C), got shape 2x3x4")
  local x = ff.zeros(2, 3)
  lu.assertStrContains(error_of(ff.cross_entropy, x, y, { reduction = "avg" }),
    'cross_entropy: reduction must be "mean", "sum" or "none", got "avg"')
  lu.assertStrContains(error_of(ff.cross_entropy, x, y, { reduction = 1 }),
    'reduction must be "mean", "sum" or "none", got number')
  lu.assertStrContains(error_of(ff.cross_entropy, x, y, { smoothing = 0.1 }),
    "cross_entropy: unknown option 'smoothing' (known: reduction, label_smoothing)")
  lu.assertStrContains(error_of(ff.cross_entropy, x, y, { label_smoothing = 1.5 }),
    "cross_entropy: label_smoothing must be in [0, 1]")
  lu.assertStrContains(error_of(ff.cross_entropy, x, y, { label_smoothing = "a" }),
    "cross_entropy: label_smoothing must be a number")
  lu.assertStrContains(error_of(ff.cross_entropy, x, y, "mean"),
    "cross_entropy: argument #3 must be an options table, got string")
  lu.assertStrContains(error_of(ff.nll_loss, x, y, { label_smoothing = 0.1 }),
    "nll_loss: unknown option 'label_smoothing' (known: reduction)")
  lu.assertStrContains(error_of(ff.mse_loss, x, x, { reducton = "sum" }),
    "mse_loss: unknown option 'reducton' (did you mean 'reduction'?)")
  lu.assertStrContains(error_of(ff.cross_entropy, x, y, { label_smothing = 0.1 }),
    "cross_entropy: unknown option 'label_smothing' (did you mean 'label_smoothing'?)")
end

-- ---- mse_loss, bce_with_logits ----

TestLosses = {}

function TestLosses:test_mse_values()
  local a, b = ff.tensor { { 1, 2 }, { 3, 4 } }, ff.tensor { { 1.5, 2 }, { 1, 4 } }
  assert_close(ff.mse_loss(a, b):item(), (0.25 + 4) / 4, 1e-7)
  assert_close(ff.mse_loss(a, b, { reduction = "sum" }):item(), 4.25, 1e-7)
  lu.assertEquals(ff.mse_loss(a, b, { reduction = "none" }):totable(), { { 0.25, 0 }, { 4, 0 } })
  -- broadcast: the mean is over the broadcast shape
  assert_close(ff.mse_loss(a, ff.tensor { 1, 2 }):item(), (0 + 0 + 4 + 4) / 4, 1e-7)
end

function TestLosses:test_mse_gradients()
  local a = ff.tensor { 1, 2, 3 }:requires_grad(true)
  local b = ff.tensor { 0, 2, 5 }:requires_grad(true)
  ff.mse_loss(a, b):backward()
  assert_all_close(a.grad, { 2 / 3, 0, -4 / 3 }, 1e-6)
  assert_all_close(b.grad, { -2 / 3, 0, 4 / 3 }, 1e-6)
end

local function bce_ref(x, y)
  return -(y * log(sigmoid(x)) + (1 - y) * log(1 - sigmoid(x)))
end

function TestLosses:test_bce_values()
  local xs, ys = { -2, -0.5, 0, 1, 3 }, { 0, 1, 0.5, 1, 0.2 }
  local want, total = {}, 0
  for i = 1, #xs do
    want[i] = bce_ref(xs[i], ys[i])
    total = total + want[i]
  end
  local x, y = ff.tensor(xs), ff.tensor(ys)
  assert_all_close(ff.bce_with_logits(x, y, { reduction = "none" }), want, 1e-6)
  assert_close(ff.bce_with_logits(x, y):item(), total / #xs, 1e-6)
  assert_close(ff.bce_with_logits(x, y, { reduction = "sum" }):item(), total, 1e-6)
end

function TestLosses:test_bce_stable_for_large_logits()
  local l = ff.bce_with_logits(ff.tensor { 100, -100, 100 }, ff.tensor { 0, 1, 1 },
    { reduction = "none" })
  assert_all_close(l, { 100, 100, 0 }, 1e-7)
end

function TestLosses:test_bce_gradients()
  local x = ff.tensor { -1, 0, 2 }:requires_grad(true)
  local y = ff.tensor { 0, 1, 0.5 }:requires_grad(true)
  ff.bce_with_logits(x, y, { reduction = "sum" }):backward()
  assert_all_close(x.grad, { sigmoid(-1), 0.5 - 1, sigmoid(2) - 0.5 }, 1e-6)
  assert_all_close(y.grad, { 1, 0, -2 }, 1e-6)
end

function TestLosses:test_errors()
  lu.assertStrContains(error_of(ff.bce_with_logits, ff.zeros(3), ff.zeros(3, 1)),
    "bce_with_logits: target has shape 3x1, expected the input's shape 3")
  lu.assertStrContains(error_of(ff.mse_loss, ff.zeros(3), ff.zeros(4)),
    "mse_loss: shapes 3 and 4 do not broadcast")
  lu.assertStrContains(error_of(ff.mse_loss, ff.zeros(3), ff.zeros(3), { reduction = "max" }),
    'mse_loss: reduction must be "mean", "sum" or "none", got "max"')
  lu.assertStrContains(error_of(ff.bce_with_logits, ff.zeros(3), 1), "Tensor expected")
end

-- ---- act_d2 ----

TestActD2 = {}

-- f'(x) through autograd (the gradient of sum f(x)).
local function first_derivative(name, x, param)
  local v = x:clone():requires_grad(true)
  local y = param and v[name](v, param) or v[name](v)
  y:sum():backward()
  return v.grad
end

function TestActD2:test_matches_differences_of_the_first_derivative()
  local h = 1e-2
  -- no point within h of a kink (0)
  local x = ff.linspace(-3.05, 2.95, 31)
  for _, case in ipairs {
    { "elu" }, { "elu", 0.5 }, { "gelu" }, { "silu" }, { "tanh" }, { "sigmoid" },
    { "softplus" }, { "softplus", 3 }, { "rbf" }, { "relu" }, { "leaky_relu" },
  } do
    local name, param = case[1], case[2]
    local d2 = ff.act_d2(name, x, param)
    local num = (first_derivative(name, x + h, param) - first_derivative(name, x - h, param)) / (2 * h)
    local a, b = d2:totable(), num:totable()
    for i = 1, #a do
      assert_close(a[i], b[i], 2e-3, string.format("%s(%s) at %g", name, tostring(param), x[i]))
    end
  end
end

function TestActD2:test_formulas()
  local xs = { -2, -0.5, 0.5, 1.5 }
  local x = ff.tensor(xs)
  assert_all_close(ff.act_d2("tanh", x),
    map(xs, function(v) return -2 * tanh(v) * (1 - tanh(v) ^ 2) end), 1e-5)
  assert_all_close(ff.act_d2("rbf", x),
    map(xs, function(v) return (v * v - 1) * exp(-v * v / 2) end), 1e-5)
  assert_all_close(ff.act_d2("softplus", x, 2),
    map(xs, function(v) return 2 * sigmoid(2 * v) * (1 - sigmoid(2 * v)) end), 1e-5)
  lu.assertEquals(ff.act_d2("relu", x):totable(), { 0, 0, 0, 0 })
  lu.assertEquals(ff.act_d2("leaky_relu", x, 0.2):totable(), { 0, 0, 0, 0 })
end

function TestActD2:test_plain_kernel_and_errors()
  local x = ff.randn(3, ff.Generator(9)):requires_grad(true)
  lu.assertFalse(ff.act_d2("gelu", x):requires_grad())
  lu.assertStrContains(error_of(ff.act_d2, "swish", x),
    'act_d2: unknown activation "swish" (known: relu, leaky_relu, elu, gelu, silu, tanh, sigmoid, softplus, rbf)')
  lu.assertStrContains(error_of(ff.act_d2, "softplus", x, 0), "act_d2: softplus beta must be a non-zero number")
  lu.assertStrContains(error_of(ff.act_d2, x), "string expected")
end

os.exit(testlib.run())
