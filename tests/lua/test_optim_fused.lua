-- test_optim_fused: the fused optimiser step (one C call for every
-- parameter, engine/core/optim.c) gives the same bits as the Lua rules of
-- each kind, over several steps and every option that changes the rule;
-- step_if_finite stops before any update on a NaN or infinite gradient.
package.path = "tests/lua/?.lua;" .. package.path
local testlib = require "testlib"
local lu = testlib.lu
local ff = require "firefly"

-- "{k = v, ...}" of an options table, for messages
local function describe(o)
  local keys, parts = {}, {}
  for k in pairs(o) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do
    local v = o[k]
    parts[#parts + 1] = k .. " = " .. (type(v) == "table" and "{" .. table.concat(v, ", ") .. "}" or tostring(v))
  end
  return "{" .. table.concat(parts, ", ") .. "}"
end

local shapes = { { 7, 5 }, { 5 }, { 3, 2, 3, 3 }, { 1 } }

local function make_params(seed)
  local g = ff.Generator(seed)
  local ps = {}
  for i, s in ipairs(shapes) do ps[i] = ff.randn(s, g):requires_grad(true) end
  return ps
end

-- n steps of opt over ps with gradients drawn from seed; a parameter
-- without a gradient at step 2 checks that skipped parameters stay put.
local function run(make_opt, fused, n)
  local ps = make_params(1)
  local opt = make_opt(ps)
  opt._fused = fused
  local g = ff.Generator(2)
  for step = 1, n do
    for i, p in ipairs(ps) do
      p.grad = (step == 2 and i == 2) and nil or ff.randn(p:size(), g)
    end
    opt:step()
  end
  return ps, opt
end

local function assert_same(make_opt, what)
  local a, oa = run(make_opt, true, 4)
  local b, ob = run(make_opt, false, 4)
  for i = 1, #a do
    lu.assertTrue(a[i]:equal(b[i]), what .. ": parameter " .. i .. " differs from the Lua rule")
    local sa, sb = oa:state_of(a[i]), ob:state_of(b[i])
    lu.assertEquals(sa.step, sb.step, what .. ": step count of parameter " .. i)
    for k, v in pairs(sb) do
      if ff.is_tensor(v) then
        lu.assertTrue(ff.is_tensor(sa[k]) and sa[k]:equal(v), what .. ": state " .. k .. " of parameter " .. i)
      end
    end
    for k, v in pairs(sa) do
      if ff.is_tensor(v) then lu.assertNotNil(sb[k], what .. ": extra state " .. k) end
    end
  end
end

TestOptimFused = {}

function TestOptimFused:test_sgd_same_bits()
  for _, o in ipairs {
    { lr = 0.1 }, { lr = 0.1, momentum = 0.9 }, { lr = 0.05, momentum = 0.9, dampening = 0.3 },
    { lr = 0.05, momentum = 0.8, nesterov = true, weight_decay = 1e-2 }, { lr = 0.1, weight_decay = 0.1 },
  } do
    assert_same(function(ps) return ff.optim.SGD(ps, o) end, "SGD " .. describe(o))
  end
end

function TestOptimFused:test_adam_same_bits()
  for _, o in ipairs { {}, { lr = 0.01, betas = { 0.8, 0.99 }, eps = 1e-6 }, { lr = 0.01, weight_decay = 0.1 } } do
    assert_same(function(ps) return ff.optim.Adam(ps, o) end, "Adam " .. describe(o))
    assert_same(function(ps) return ff.optim.AdamW(ps, o) end, "AdamW " .. describe(o))
  end
end

function TestOptimFused:test_rmsprop_same_bits()
  for _, o in ipairs {
    {}, { lr = 0.01, momentum = 0.1, alpha = 0.9 }, { centered = true }, { centered = true, momentum = 0.5, weight_decay = 0.01 },
  } do
    assert_same(function(ps) return ff.optim.RMSprop(ps, o) end, "RMSprop " .. describe(o))
  end
end

function TestOptimFused:test_step_if_finite()
  for _, fused in ipairs { true, false } do
    local ps = make_params(3)
    local opt = ff.optim.SGD({ { name = "w", param = ps[1] }, ps[2] }, { lr = 0.1, momentum = 0.9 })
    opt._fused = fused
    ps[1].grad, ps[2].grad = ff.ones(ps[1]:size()), ff.ones(ps[2]:size())
    lu.assertNil(opt:step_if_finite())
    local before = { ps[1]:clone(), ps[2]:clone(), opt:state_of(ps[1]).momentum_buffer:clone() }
    local g = ff.ones(ps[2]:size())
    g[{ 3 }] = 0 / 0
    ps[2].grad = g
    lu.assertEquals(opt:step_if_finite(), "parameter 2")
    ps[2].grad = ff.ones(ps[2]:size())
    local g1 = ff.ones(ps[1]:size())
    g1[{ 2, 2 }] = math.huge
    ps[1].grad = g1
    lu.assertEquals(opt:step_if_finite(), "w")
    lu.assertTrue(ps[1]:equal(before[1]) and ps[2]:equal(before[2]), "nothing updated")
    lu.assertTrue(opt:state_of(ps[1]).momentum_buffer:equal(before[3]), "state untouched")
    lu.assertEquals(opt:state_of(ps[1]).step, 1)
  end
end

-- A parameter that is not contiguous takes the Lua rules (same result).
function TestOptimFused:test_noncontiguous_falls_back()
  local p = ff.randn(4, 3, ff.Generator(5)):t():requires_grad(true)
  lu.assertFalse(p:is_contiguous())
  local q = p:detach():clone():requires_grad(true)
  local a, b = ff.optim.Adam({ p }, { lr = 0.1 }), ff.optim.Adam({ q }, { lr = 0.1 })
  b._fused = false
  for _ = 1, 2 do
    p.grad, q.grad = ff.ones(3, 4), ff.ones(3, 4)
    a:step(); b:step()
  end
  lu.assertTrue(p:contiguous():equal(q))
end

function TestOptimFused:test_errors()
  local optim_step = require("firefly.core")._optim_step
  local p = ff.zeros(3)
  lu.assertErrorMsgContains("gradient 1 has shape 2, expected 3", optim_step, "SGD", { lr = 1 }, { p, ff.zeros(2), false, false, false, 1, false }, false)
  lu.assertErrorMsgContains("state buffer 1 of parameter 1", optim_step, "Adam", { lr = 1 }, { p, ff.zeros(3), false, false, false, 1, false }, false)
  lu.assertErrorMsgContains("7 values per parameter", optim_step, "SGD", { lr = 1 }, { p }, false)
  lu.assertErrorMsgContains("invalid option 'Lion'", optim_step, "Lion", {}, {}, false)
end

os.exit(testlib.run())
