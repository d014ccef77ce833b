-- Gradient checks of the fused growth ops (op_grow.c): split_act with its
-- five inputs z, s, scale, shift, gain. The full matrix of activations, modes and
-- layouts is in tests/c/test_op_grads.c and tests/lua/test_split_act.lua;
-- these are its cases through the binding.

-- Per-channel a, b for z of rank 2 or 4 (a away from 0).
local function affine(ff, g, C)
  return ff.rand(C, g) + 0.5, ff.randn(C, g) * 0.5
end

local function per_channel(t, rank)
  if rank == 4 then return t:view(1, t:size(1), 1, 1) end
  return t
end

-- z, s, a, b whose pre-activations a (z ± s) + b are N(0,1) pushed 0.1
-- away from 0, the kink of relu.
local function kink_free(ff, g, shape)
  local function off_zero()
    local x = ff.randn(shape, g)
    return x + x:sign() * 0.1
  end
  local up, um = off_zero(), off_zero()
  local a, b = affine(ff, g, shape[2])
  local av, bv = per_channel(a, #shape), per_channel(b, #shape)
  return { ((up + um) * 0.5 - bv) / av, (up - um) * 0.5 / av, a, b }
end

local function random(shape, with_affine)
  return function(ff, g)
    local z, s = ff.randn(shape, g), ff.randn(shape, g) * 0.5
    if not with_affine then return { z, s } end
    local a, b = affine(ff, g, shape[2])
    return { z, s, a, b }
  end
end

return {
  split_act = {
    {
      note = "tanh, mean, 2-D, scale and shift",
      fn = function(ff, z, s, a, b) return ff.split_act(z, s, { act = "tanh", scale = a, shift = b }) end,
      inputs = random({ 4, 3 }, true),
    },
    {
      note = "softplus beta 2, pair, 4-D, scale and shift",
      fn = function(ff, z, s, a, b)
        return ff.split_act(z, s, { act = "softplus", param = 2, scale = a, shift = b, pair = true })
      end,
      inputs = random({ 2, 3, 2, 2 }, true),
    },
    {
      note = "relu, mean, 4-D, away from the kink",
      fn = function(ff, z, s, a, b) return z:split_act(s, { scale = a, shift = b }) end,
      inputs = function(ff, g) return kink_free(ff, g, { 2, 3, 2, 2 }) end,
    },
    {
      note = "gelu, pair, 2-D, no affine",
      fn = function(ff, z, s) return ff.split_act(z, s, { act = "gelu", pair = true }) end,
      inputs = random({ 3, 4 }, false),
    },
    {
      note = "tanh, mean, 2-D, scale, shift and gain",
      fn = function(ff, z, s, a, b, k) return ff.split_act(z, s, { act = "tanh", scale = a, shift = b, gain = k }) end,
      inputs = function(ff, g)
        local t = random({ 4, 3 }, true)(ff, g)
        t[5] = ff.rand(3, g) + 0.5
        return t
      end,
    },
    {
      note = "sigmoid, pair, 4-D, gain only",
      fn = function(ff, z, s, k) return ff.split_act(z, s, { act = "sigmoid", gain = k, pair = true }) end,
      inputs = function(ff, g) return { ff.randn(2, 3, 2, 2, g), ff.randn(2, 3, 2, 2, g), ff.rand(3, g) - 0.5 } end,
    },
    {
      note = "silu, non-contiguous z and s",
      fn = function(ff, z, s, a) return ff.split_act(z:t(), s:t(), { act = "silu", scale = a }) end,
      inputs = function(ff, g) return { ff.randn(3, 4, g), ff.randn(3, 4, g), ff.rand(3, g) + 0.5 } end,
    },
  },
}
