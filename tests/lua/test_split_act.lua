-- test_split_act: the fused split candidate ff.split_act (op_grow.c)
-- against its composition from the engine's elementwise ops,
--   ½[φ(a(z+s)+b) + φ(a(z−s)+b)]   (pair: the two terms joined along dim 1)
-- for every activation, both modes, ranks 2 and 4, with and without the
-- affine map: values, gradients of all four inputs (five with a gain),
-- s = 0, the memory the graph keeps, and the error messages of bad
-- arguments.
package.path = "tests/lua/?.lua;" .. package.path
local testlib = require "testlib"
local lu = testlib.lu
local ff = require "firefly"
local error_of = testlib.error_of

-- Every activation, with the Tensor method composing it; opts are the
-- split_act options naming it (non-default parameters where it has some).
local ACTS = {
  { opts = { act = "relu" }, phi = function(x) return x:relu() end },
  { opts = { act = "leaky_relu", param = 0.2 }, phi = function(x) return x:leaky_relu(0.2) end },
  { opts = { act = "elu", param = 0.7 }, phi = function(x) return x:elu(0.7) end },
  { opts = { act = "gelu" }, phi = function(x) return x:gelu() end },
  { opts = { act = "silu" }, phi = function(x) return x:silu() end },
  { opts = { act = "tanh" }, phi = function(x) return x:tanh() end },
  { opts = { act = "sigmoid" }, phi = function(x) return x:sigmoid() end },
  { opts = { act = "softplus" }, phi = function(x) return x:softplus() end },
  { opts = { act = "softplus", param = 2, threshold = 3 }, phi = function(x) return x:softplus(2, 3) end },
  { opts = { act = "rbf" }, phi = function(x) return x:rbf() end },
  { opts = { act = "identity" }, phi = function(x) return x end },
}

-- Runs shorter and longer than the kernels' blocks of 16: (N, C) walks the
-- channels in a run, (N, C, H, W) one channel per run unless H = W = 1.
local SHAPES = { { 5, 7 }, { 3, 37 }, { 3, 4, 5, 6 }, { 2, 3, 6, 7 }, { 2, 20, 1, 1 } }

local function per_channel(t, rank)
  if rank == 4 then return t:view(1, t:size(1), 1, 1) end
  return t
end

-- The reference, from the engine's differentiable ops.
local function composed(phi, z, s, o)
  local function affine(x)
    if o.scale then x = x * per_channel(o.scale, x:dim()) end
    if o.shift then x = x + per_channel(o.shift, x:dim()) end
    return x
  end
  if o.gain then s = s * per_channel(o.gain, s:dim()) end
  local p, m = phi(affine(z + s)), phi(affine(z - s))
  if o.pair then return ff.cat({ p, m }, 1) end
  return (p + m) * 0.5
end

-- The options of one case: the activation's, the mode, scale and shift.
local function options(act, pair, a, b)
  local o = { pair = pair, scale = a, shift = b }
  for k, v in pairs(act.opts) do o[k] = v end
  return o
end

-- z, s, and a (away from 0, one negative) and b of z's channels.
local function inputs(shape, seed)
  local g = ff.Generator(seed)
  local z, s = ff.randn(shape, g), ff.randn(shape, g) * 0.5
  local a = ff.rand(shape[2], g) + 0.5
  a[1] = -a[1]
  return z, s, a, ff.randn(shape[2], g) * 0.5
end

local function max_abs(t) return t:abs():max():item() end

local function describe(act, shape, pair, affine)
  return string.format("%s (%s), %s, %s, %s", act.opts.act, tostring(act.opts.param),
    table.concat(shape, "x"), pair and "pair" or "mean", affine and "affine" or "no affine")
end

-- Every case: fn(act, shape, pair, affine, seed).
local function each_case(fn)
  local seed = 0
  for _, act in ipairs(ACTS) do
    for _, shape in ipairs(SHAPES) do
      for _, pair in ipairs { false, true } do
        for _, affine in ipairs { false, true } do
          seed = seed + 1
          fn(act, shape, pair, affine, seed)
        end
      end
    end
  end
end

TestSplitAct = {}

function TestSplitAct:test_forward_matches_the_composition()
  each_case(function(act, shape, pair, affine, seed)
    local z, s, a, b = inputs(shape, seed)
    if not affine then a, b = nil, nil end
    local o = options(act, pair, a, b)
    local y, ref = ff.split_act(z, s, o), composed(act.phi, z, s, o)
    lu.assertEquals(y:size(), ref:size())
    local d = max_abs(y - ref)
    lu.assertTrue(d <= 1e-6, describe(act, shape, pair, affine) .. ": max difference " .. d)
  end)
end

function TestSplitAct:test_gradients_match_the_composition()
  each_case(function(act, shape, pair, affine, seed)
    local z, s, a, b = inputs(shape, seed)
    if not affine then a, b = nil, nil end
    local leaves = { z, s, a, b }
    for _, t in pairs(leaves) do t:requires_grad(true) end
    local o = options(act, pair, a, b)
    local fused = ff.split_act(z, s, o)
    local R = ff.randn(fused:size(), ff.Generator(100 + seed))
    fused:backward(R)
    local got = {}
    for k, t in pairs(leaves) do got[k], t.grad = t.grad, nil end
    composed(act.phi, z, s, o):backward(R)
    for k, t in pairs(leaves) do
      local scale = math.max(1, max_abs(t.grad))
      local d = max_abs(got[k] - t.grad) / scale
      lu.assertTrue(d <= 1e-5, describe(act, shape, pair, affine) .. ": input " .. k ..
        " differs by " .. d .. " (relative to " .. scale .. ")")
    end
  end)
end

function TestSplitAct:test_gain_matches_the_composition()
  -- gain k (growth's gates): the op on k·s, and k's gradient, against s * k
  each_case(function(act, shape, pair, affine, seed)
    if not affine then return end
    local z, s, a, b = inputs(shape, seed)
    local k = ff.rand(shape[2], ff.Generator(200 + seed)) + 0.5
    k[1] = -k[1]
    local leaves = { z, s, a, b, k }
    for _, t in ipairs(leaves) do t:requires_grad(true) end
    local o = options(act, pair, a, b)
    o.gain = k
    local fused, ref = ff.split_act(z, s, o), composed(act.phi, z, s, o)
    lu.assertTrue(max_abs(fused - ref) <= 1e-6, describe(act, shape, pair, affine))
    local R = ff.randn(fused:size(), ff.Generator(300 + seed))
    fused:backward(R)
    local got = {}
    for i, t in ipairs(leaves) do got[i], t.grad = t.grad, nil end
    ref:backward(R)
    for i, t in ipairs(leaves) do
      local scale = math.max(1, max_abs(t.grad))
      local d = max_abs(got[i] - t.grad) / scale
      lu.assertTrue(d <= 1e-5, describe(act, shape, pair, affine) .. ": input " .. i .. " differs by " .. d)
    end
  end)
end

function TestSplitAct:test_zero_perturbation_is_the_activation_exactly()
  each_case(function(act, shape, pair, affine, seed)
    local z, _, a, b = inputs(shape, seed)
    if not affine then a, b = nil, nil end
    local o = options(act, pair, a, b)
    local y = ff.split_act(z, ff.zeros(shape), o)
    local x = z
    if a then x = x * per_channel(a, #shape) end
    if b then x = x + per_channel(b, #shape) end
    local want = act.phi(x)
    if pair then want = ff.cat({ want, want }, 1) end
    lu.assertTrue(y:equal(want), describe(act, shape, pair, affine))
  end)
end

function TestSplitAct:test_defaults_and_the_method()
  local z, s = inputs({ 4, 6 }, 7)
  lu.assertTrue(z:split_act(s):equal(ff.split_act(z, s, { act = "relu" })))
  lu.assertTrue(ff.split_act(z, s, {}):equal(composed(ACTS[1].phi, z, s, {})))
  -- the activations' own defaults: slope 0.01, alpha 1, beta 1 and threshold 20
  for name, phi in pairs {
    leaky_relu = function(x) return x:leaky_relu() end,
    elu = function(x) return x:elu() end,
    softplus = function(x) return x:softplus() end,
  } do
    local d = max_abs(ff.split_act(z, s, { act = name }) - composed(phi, z, s, {}))
    lu.assertTrue(d <= 1e-6, name .. ": " .. d)
  end
end

function TestSplitAct:test_pair_halves_are_the_two_children()
  local z, s, a, b = inputs({ 2, 3, 4, 4 }, 8)
  local y = ff.split_act(z, s, { act = "tanh", scale = a, shift = b, pair = true })
  lu.assertEquals(y:size(), { 4, 3, 4, 4 })
  -- with s = 0, mean mode is one child: φ(a(z ± s) + b) from z ± s itself
  local o, zero = { act = "tanh", scale = a, shift = b }, ff.zeros(2, 3, 4, 4)
  lu.assertTrue(y:narrow(1, 1, 2):equal(ff.split_act(z + s, zero, o)))
  lu.assertTrue(y:narrow(1, 3, 2):equal(ff.split_act(z - s, zero, o)))
  local mean = ff.split_act(z, s, { act = "tanh", scale = a, shift = b })
  local halves = (y:narrow(1, 1, 2) + y:narrow(1, 3, 2)) * 0.5
  lu.assertTrue(max_abs(halves - mean) <= 1e-6)
end

function TestSplitAct:test_records_one_node_and_no_grad_records_none()
  local z, s, a, b = inputs({ 3, 4 }, 9)
  z:requires_grad(true)
  local y = ff.split_act(z, s, { scale = a, shift = b })
  lu.assertEquals(y:grad_fn(), "split_act")
  local n = ff.no_grad(function() return ff.split_act(z, s) end)
  lu.assertFalse(n:requires_grad())
  -- only z requires grad: s, scale and shift get none
  y:sum():backward()
  lu.assertNotNil(z.grad)
  lu.assertNil(s.grad)
  lu.assertNil(a.grad)
end

function TestSplitAct:test_non_contiguous_inputs()
  local z, s, a, b = inputs({ 6, 5 }, 10)
  local zt, st = z:t():contiguous():t(), s:t():contiguous():t()
  lu.assertFalse(zt:is_contiguous())
  local o = { act = "gelu", scale = a, shift = b, pair = true }
  lu.assertTrue(ff.split_act(zt, st, o):equal(ff.split_act(z, s, o)))
end

-- The graph of the fused op keeps its inputs only; the composition keeps
-- a temporary of z's size per op.
function TestSplitAct:test_the_graph_keeps_less_memory()
  local z, s, a, b = inputs({ 64, 16, 8, 8 }, 11)
  z:requires_grad(true)
  s:requires_grad(true)
  local o = { scale = a, shift = b }
  local function kept(fn)
    collectgarbage()
    local before = ff.memory()
    local y = fn()
    collectgarbage()
    local bytes = ff.memory() - before
    y:sum():backward()
    return bytes
  end
  local fused = kept(function() return ff.split_act(z, s, o) end)
  local ref = kept(function() return composed(ACTS[1].phi, z, s, o) end)
  local size = 4 * z:numel()
  lu.assertTrue(fused <= size + 4096, "fused op keeps " .. fused .. " bytes")
  lu.assertTrue(ref >= 4 * size, "composition keeps " .. ref .. " bytes")
end

function TestSplitAct:test_errors_name_split_act()
  local z, s = ff.zeros(4, 5), ff.zeros(4, 5)
  local cases = {
    { { z, ff.zeros(4, 3) }, "split_act: argument #2 (s) has shape 4x3, expected 4x5 to match argument #1 (z)" },
    { { ff.zeros(4, 5, 2), ff.zeros(4, 5, 2) }, "split_act: argument #1 (z) has shape 4x5x2, expected 2 dims" },
    { { z, s, { scale = ff.ones(4) } }, "split_act: scale has shape 4, expected 5 (one per channel: dim 2 of argument #1 (z), 4x5)" },
    { { z, s, { shift = ff.ones(1, 5) } }, "split_act: shift has shape 1x5, expected 5" },
    { { z, s, { gain = ff.ones(3) } }, "split_act: gain has shape 3, expected 5" },
    { { z, s, { act = "swish" } }, "split_act: unknown activation \"swish\" (known: relu, leaky_relu," },
    { { z, s, { act = 1 } }, "split_act: option act must be an activation name" },
    { { z, s, { activation = "relu" } }, "split_act: unknown option 'activation' (did you mean 'act'?)" },
    { { z, s, { scale = 2 } }, "split_act: option scale must be an open tensor, got number" },
    { { z, s, { param = "x", act = "elu" } }, "split_act: option param must be a number, got string" },
    { { z, s, { pair = 1 } }, "split_act: option pair must be a boolean, got number" },
    { { z, s, { act = "tanh", param = 2 } }, "split_act: activation tanh takes no param" },
    { { z, s, { act = "elu", threshold = 2 } }, "split_act: option threshold is softplus's, not elu's" },
    { { z, s, { act = "softplus", param = 0 } }, "split_act: softplus beta must be a non-zero number, got 0" },
    { { z, s, 3 }, "split_act: argument #3 must be an options table, got number" },
    { { z, s, { [1] = "relu" } }, "split_act: option names must be strings" },
    { { z }, "split_act" },
  }
  for _, c in ipairs(cases) do
    local err = error_of(ff.split_act, table.unpack(c[1]))
    lu.assertStrContains(err, c[2])
  end
end

os.exit(testlib.run())
