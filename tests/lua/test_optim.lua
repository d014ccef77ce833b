-- test_optim: optimisers against torch's update rules computed here in Lua
-- doubles, convergence on a quadratic, state_dict round trips, remap across
-- growth, gradient clipping, lr schedules and error messages.
package.path = "tests/lua/?.lua;" .. package.path
local testlib = require "testlib"
local lu = testlib.lu
local ff = require "firefly"
local error_of = testlib.error_of

-- ---- helpers ---------------------------------------------------------------

-- float32 against doubles: a few ulps, amplified a little by the divisions
local RTOL, ATOL = 2e-5, 1e-7

local function assert_close(t, expected, msg)
  local got = ff.is_tensor(t) and t:totable() or t
  lu.assertEquals(#got, #expected, msg)
  for i = 1, #expected do
    local e = expected[i]
    if math.abs(got[i] - e) > ATOL + RTOL * math.abs(e) then
      lu.fail(string.format("%s: element %d is %.9g, expected %.9g", msg or "values", i, got[i], e))
    end
  end
end

local function copy(list) return { table.unpack(list) } end

-- Values exactly representable in float32, so the reference starts from the
-- very numbers the engine holds.
local P0 = { 0.5, -1.25, 2 }
local GRADS = { { 0.25, -1.5, 3 }, { -0.75, 0.5, 1.25 }, { 1, 0.125, -2 } }

-- Runs `opt` on one parameter for #GRADS steps with the given gradients;
-- returns the parameter after each step (as tables).
local function run(make, grads)
  local p = ff.tensor(P0):requires_grad(true)
  local opt = make({ p })
  local out = {}
  for s, g in ipairs(grads) do
    p.grad = ff.tensor(g)
    opt:step()
    out[s] = p:totable()
  end
  return out, p, opt
end

-- Reference implementations: torch's formulas, elementwise, in doubles.
local ref = {}

function ref.sgd(o, grads)
  local p, buf, out = copy(P0), nil, {}
  local mu, damp, wd = o.momentum or 0, o.dampening or 0, o.weight_decay or 0
  for s, grad in ipairs(grads) do
    local new_buf = {}
    for i = 1, #p do
      local g = grad[i] + wd * p[i]
      if mu ~= 0 then
        local b = buf and (mu * buf[i] + (1 - damp) * g) or g
        new_buf[i] = b
        g = o.nesterov and (g + mu * b) or b
      end
      p[i] = p[i] - o.lr * g
    end
    buf = new_buf
    out[s] = copy(p)
  end
  return out
end

function ref.adam(o, grads, decoupled)
  local p, m, v, out = copy(P0), { 0, 0, 0 }, { 0, 0, 0 }, {}
  local b1, b2 = o.betas[1], o.betas[2]
  for t, grad in ipairs(grads) do
    for i = 1, #p do
      local g = grad[i]
      if decoupled then p[i] = p[i] * (1 - o.lr * o.weight_decay) else g = g + o.weight_decay * p[i] end
      m[i] = b1 * m[i] + (1 - b1) * g
      v[i] = b2 * v[i] + (1 - b2) * g * g
      local denom = math.sqrt(v[i]) / math.sqrt(1 - b2 ^ t) + o.eps
      p[i] = p[i] - o.lr / (1 - b1 ^ t) * m[i] / denom
    end
    out[t] = copy(p)
  end
  return out
end

function ref.rmsprop(o, grads)
  local p, sq, ga, buf, out = copy(P0), { 0, 0, 0 }, { 0, 0, 0 }, { 0, 0, 0 }, {}
  for s, grad in ipairs(grads) do
    for i = 1, #p do
      local g = grad[i] + o.weight_decay * p[i]
      sq[i] = o.alpha * sq[i] + (1 - o.alpha) * g * g
      local avg
      if o.centered then
        ga[i] = o.alpha * ga[i] + (1 - o.alpha) * g
        avg = math.sqrt(sq[i] - ga[i] * ga[i]) + o.eps
      else
        avg = math.sqrt(sq[i]) + o.eps
      end
      if o.momentum > 0 then
        buf[i] = o.momentum * buf[i] + g / avg
        p[i] = p[i] - o.lr * buf[i]
      else
        p[i] = p[i] - o.lr * g / avg
      end
    end
    out[s] = copy(p)
  end
  return out
end

local function check_against(make, expected)
  local got = run(make, GRADS)
  for s = 1, #expected do assert_close(got[s], expected[s], "step " .. s) end
end

-- ---- SGD ---------------------------------------------------------------------

TestSGD = {}

-- Worked by hand: w = 1, loss w^2 (g = 2w), lr 0.1, momentum 0.9, Nesterov,
-- weight decay 0.1.
-- step 1: g = 2 + 0.1 = 2.1, b = 2.1, g = 2.1 + 0.9*2.1 = 3.99, w = 0.601
-- step 2: g = 1.202 + 0.0601 = 1.2621, b = 0.9*2.1 + 1.2621 = 3.1521,
--         g = 1.2621 + 0.9*3.1521 = 4.09899, w = 0.601 - 0.409899 = 0.191101
function TestSGD:test_two_nesterov_steps_by_hand()
  local w = ff.tensor { 1 }:requires_grad(true)
  local opt = ff.optim.SGD({ w }, { lr = 0.1, momentum = 0.9, nesterov = true, weight_decay = 0.1 })
  local expect = { 0.601, 0.191101 }
  for s = 1, 2 do
    opt:zero_grad()
    ;(w * w):sum():backward()
    opt:step()
    assert_close(w, { expect[s] }, "step " .. s)
  end
  assert_close(opt:state_of(w).momentum_buffer, { 3.1521 }, "buffer")
  lu.assertEquals(opt:state_of(w).step, 2)
end

function TestSGD:test_plain()
  local o = { lr = 0.1 }
  check_against(function(ps) return ff.optim.SGD(ps, o) end, ref.sgd(o, GRADS))
end

function TestSGD:test_momentum_nesterov_weight_decay()
  local o = { lr = 0.05, momentum = 0.9, nesterov = true, weight_decay = 0.01 }
  check_against(function(ps) return ff.optim.SGD(ps, o) end, ref.sgd(o, GRADS))
end

function TestSGD:test_dampening_skips_the_first_step()
  local o = { lr = 0.1, momentum = 0.8, dampening = 0.5 }
  check_against(function(ps) return ff.optim.SGD(ps, o) end, ref.sgd(o, GRADS))
  -- the first buffer is the gradient itself, undamped (torch)
  local _, p, opt = run(function(ps) return ff.optim.SGD(ps, o) end, { GRADS[1] })
  assert_close(opt:state_of(p).momentum_buffer, GRADS[1], "first buffer")
end

function TestSGD:test_skips_params_without_grad()
  local a, b = ff.ones(2):requires_grad(true), ff.ones(2):requires_grad(true)
  local opt = ff.optim.SGD({ a, b }, { lr = 0.5, momentum = 0.9 })
  a.grad = ff.ones(2)
  opt:step()
  lu.assertTrue(a:equal(ff.full({ 2 }, 0.5)))
  lu.assertTrue(b:equal(ff.ones(2)))
  lu.assertNil(opt:state_of(b))
end

function TestSGD:test_zero_grad_drops_gradients()
  local a = ff.ones(2):requires_grad(true)
  local opt = ff.optim.SGD({ a }, { lr = 0.1 })
  a.grad = ff.ones(2)
  opt:zero_grad()
  lu.assertNil(a.grad)
end

function TestSGD:test_lr_is_a_writable_field()
  local a = ff.ones(1):requires_grad(true)
  local opt = ff.optim.SGD({ a }, { lr = 0.1 })
  lu.assertEquals(opt.lr, 0.1)
  opt.lr = 0.5
  a.grad = ff.ones(1)
  opt:step()
  assert_close(a, { 0.5 })
end

-- ---- Adam, AdamW -------------------------------------------------------------

TestAdam = {}

-- The first bias-corrected step moves each entry by lr * g / (|g| + eps).
function TestAdam:test_first_step_is_lr_times_sign()
  local got = run(function(ps) return ff.optim.Adam(ps, { lr = 0.01 }) end, { GRADS[1] })
  local expect = {}
  for i, g in ipairs(GRADS[1]) do expect[i] = P0[i] - 0.01 * g / (math.abs(g) + 1e-8) end
  assert_close(got[1], expect)
end

function TestAdam:test_bias_corrected_steps_with_l2()
  local o = { lr = 0.01, betas = { 0.8, 0.99 }, eps = 1e-6, weight_decay = 0.1 }
  check_against(function(ps) return ff.optim.Adam(ps, o) end, ref.adam(o, GRADS, false))
end

function TestAdam:test_adamw_decoupled_decay()
  local o = { lr = 0.01, betas = { 0.9, 0.999 }, eps = 1e-8, weight_decay = 0.5 }
  check_against(function(ps) return ff.optim.AdamW(ps, o) end, ref.adam(o, GRADS, true))
end

function TestAdam:test_defaults()
  local p = ff.ones(1):requires_grad(true)
  local a, w = ff.optim.Adam({ p }), ff.optim.AdamW({ p })
  lu.assertEquals({ a.lr, a.betas, a.eps, a.weight_decay }, { 1e-3, { 0.9, 0.999 }, 1e-8, 0 })
  lu.assertEquals(w.weight_decay, 1e-2)
  local r = ff.optim.RMSprop({ p })
  lu.assertEquals({ r.lr, r.alpha, r.eps, r.momentum, r.centered }, { 1e-2, 0.99, 1e-8, 0, false })
end

-- ---- RMSprop -----------------------------------------------------------------

TestRMSprop = {}

function TestRMSprop:test_plain()
  local o = { lr = 0.01, alpha = 0.99, eps = 1e-8, momentum = 0, centered = false, weight_decay = 0 }
  check_against(function(ps) return ff.optim.RMSprop(ps, o) end, ref.rmsprop(o, GRADS))
end

function TestRMSprop:test_centered_with_momentum_and_decay()
  local o = { lr = 0.01, alpha = 0.9, eps = 1e-8, momentum = 0.5, centered = true, weight_decay = 0.1 }
  check_against(function(ps) return ff.optim.RMSprop(ps, o) end, ref.rmsprop(o, GRADS))
end

-- The released Firefly code's settings (lr 1e-3, alpha 0.9, momentum 0.1).
function TestRMSprop:test_official_settings()
  local o = { lr = 1e-3, alpha = 0.9, eps = 1e-8, momentum = 0.1, centered = false, weight_decay = 0 }
  check_against(function(ps) return ff.optim.RMSprop(ps, o) end, ref.rmsprop(o, GRADS))
end

-- ---- convergence on ||A x - b||^2 ----------------------------------------------

TestConvergence = {}

-- A well-conditioned least-squares problem with a known exact solution, so
-- the loss can go to zero; returns the loss after `steps` steps.
local function least_squares(make, steps)
  local g = ff.Generator(7)
  local A = ff.randn(8, 3, g) * 0.5 + ff.eye(8, 3)
  local xstar = ff.tensor { { 1 }, { -2 }, { 0.5 } }
  local b = ff.matmul(A, xstar)
  local x = ff.zeros(3, 1):requires_grad(true)
  local opt = make({ { name = "x", param = x } })
  local loss
  for _ = 1, steps do
    opt:zero_grad()
    local r = ff.matmul(A, x) - b
    loss = (r * r):sum()
    loss:backward()
    opt:step()
  end
  return loss:item(), x
end

function TestConvergence:test_sgd()
  local start = least_squares(function(ps) return ff.optim.SGD(ps, { lr = 0.01 }) end, 1)
  local loss = least_squares(function(ps) return ff.optim.SGD(ps, { lr = 0.02 }) end, 300)
  lu.assertTrue(loss < 1e-4 and loss < start, "loss " .. loss)
end

function TestConvergence:test_sgd_nesterov()
  local loss = least_squares(function(ps) return ff.optim.SGD(ps, { lr = 0.01, momentum = 0.9, nesterov = true }) end, 200)
  lu.assertTrue(loss < 1e-4, "loss " .. loss)
end

function TestConvergence:test_adam()
  local loss, x = least_squares(function(ps) return ff.optim.Adam(ps, { lr = 0.05 }) end, 500)
  lu.assertTrue(loss < 1e-3, "loss " .. loss)
  lu.assertTrue(x:allclose(ff.tensor { { 1 }, { -2 }, { 0.5 } }, 0, 2e-2))
end

function TestConvergence:test_adamw()
  -- decoupled decay pulls towards 0, so the floor is a little above zero
  local loss = least_squares(function(ps) return ff.optim.AdamW(ps, { lr = 0.05, weight_decay = 1e-3 }) end, 500)
  lu.assertTrue(loss < 1e-2, "loss " .. loss)
end

function TestConvergence:test_rmsprop()
  local loss = least_squares(function(ps) return ff.optim.RMSprop(ps, { lr = 0.01, momentum = 0.5, centered = true }) end, 500)
  lu.assertTrue(loss < 1e-3, "loss " .. loss)
end

-- ---- state_dict ------------------------------------------------------------------

TestStateDict = {}

local MAKERS = {
  SGD = function(ps) return ff.optim.SGD(ps, { lr = 0.1, momentum = 0.9, nesterov = true, weight_decay = 1e-3 }) end,
  Adam = function(ps) return ff.optim.Adam(ps, { lr = 0.01, weight_decay = 1e-2 }) end,
  AdamW = function(ps) return ff.optim.AdamW(ps, { lr = 0.01 }) end,
  RMSprop = function(ps) return ff.optim.RMSprop(ps, { lr = 0.01, momentum = 0.3, centered = true }) end,
}

-- Two named params; gradients drawn from a seeded generator, step by step.
local function model()
  local g = ff.Generator(3)
  return {
    { name = "fc.weight", param = ff.randn(3, 2, g):requires_grad(true) },
    { name = "fc.bias", param = ff.randn(3, g):requires_grad(true) },
  }
end

local function clone_model(m)
  local out = {}
  for i, e in ipairs(m) do out[i] = { name = e.name, param = e.param:detach():clone():requires_grad(true) } end
  return out
end

local function steps(opt, m, gen, k)
  for _ = 1, k do
    for _, e in ipairs(m) do e.param.grad = ff.randn(e.param:size(), gen) end
    opt:step()
  end
end

-- Only numbers, strings, tensors and tables of them: what a checkpoint holds.
local function assert_plain(v, path)
  local tv = type(v)
  if tv == "table" then
    for k, x in pairs(v) do
      lu.assertTrue(type(k) == "string" or math.type(k) == "integer", path .. ": key " .. tostring(k))
      assert_plain(x, path .. "." .. tostring(k))
    end
  else
    lu.assertTrue(tv == "number" or tv == "string" or ff.is_tensor(v), path .. " is a " .. tv)
  end
end

function TestStateDict:test_round_trip_continues_bit_identically()
  for name, make in pairs(MAKERS) do
    local m1 = model()
    local o1 = make(m1)
    steps(o1, m1, ff.Generator(10), 3)
    local sd = o1:state_dict()
    assert_plain(sd, name)
    lu.assertEquals(sd.optimizer, name)
    lu.assertEquals(sd.params, { "fc.weight", "fc.bias" })
    -- a fresh optimiser on copies of the parameters, loaded from the dict
    local m2 = clone_model(m1)
    local o2 = make(m2)
    o2:load_state_dict(sd)
    steps(o1, m1, ff.Generator(11), 4)
    steps(o2, m2, ff.Generator(11), 4)
    for i = 1, 2 do
      lu.assertTrue(m1[i].param:equal(m2[i].param), name .. ": " .. m1[i].name .. " differs")
    end
    lu.assertEquals(o2:state_of(m2[1].param).step, 7)
  end
end

-- What a model gives: named_parameters() entries, names kept as keys.
function TestStateDict:test_model_named_parameters()
  local model = ff.nn.Sequential { ff.nn.Linear(2, 3), ff.nn.ReLU(), ff.nn.Linear(3, 1) }
  local named = model:named_parameters()
  local opt = ff.optim.Adam(named, { lr = 0.01 })
  local before = named[1].param:clone()
  model(ff.ones(4, 2)):sum():backward()
  opt:step()
  lu.assertFalse(named[1].param:equal(before))
  local sd = opt:state_dict()
  for i, e in ipairs(named) do
    lu.assertEquals(sd.params[i], e.name)
    lu.assertEquals(sd.state[e.name].exp_avg:size(), e.param:size())
  end
end

-- Through a checkpoint file (ff.io), optimiser and scheduler together.
function TestStateDict:test_through_a_checkpoint_file()
  local ok, io_mod = pcall(require, "firefly.io")
  lu.skipIf(not ok or not io_mod.save, "firefly.io not available")
  local m1 = model()
  local o1 = MAKERS.RMSprop(m1)
  local s1 = ff.optim.schedule.multistep(o1, { milestones = { 3, 1 } })
  steps(o1, m1, ff.Generator(5), 2)
  s1:step()
  local path = os.tmpname()
  io_mod.save(path, { optim = o1:state_dict(), schedule = s1:state_dict() })
  local back = io_mod.load(path)
  os.remove(path)
  local m2 = clone_model(m1)
  local o2 = MAKERS.RMSprop(m2)
  local s2 = ff.optim.schedule.multistep(o2, { milestones = { 9 } })
  o2:load_state_dict(back.optim)
  s2:load_state_dict(back.schedule)
  lu.assertEquals(o2.lr, o1.lr)
  lu.assertEquals(s2:step(), s1:step())
  steps(o1, m1, ff.Generator(6), 2)
  steps(o2, m2, ff.Generator(6), 2)
  for i = 1, 2 do lu.assertTrue(m1[i].param:equal(m2[i].param)) end
end

function TestStateDict:test_saved_dict_is_a_copy()
  local m = model()
  local opt = MAKERS.SGD(m)
  steps(opt, m, ff.Generator(1), 1)
  local sd = opt:state_dict()
  local before = sd.state["fc.bias"].momentum_buffer:clone()
  steps(opt, m, ff.Generator(2), 1)
  lu.assertTrue(sd.state["fc.bias"].momentum_buffer:equal(before))
end

function TestStateDict:test_restores_options_and_flags()
  local m = model()
  local a = ff.optim.SGD(m, { lr = 0.3, momentum = 0.5, nesterov = true })
  local sd = a:state_dict()
  lu.assertEquals(sd.options.nesterov, 1)
  local b = ff.optim.SGD(clone_model(m), { lr = 1 })
  b:load_state_dict(sd)
  lu.assertEquals({ b.lr, b.momentum, b.nesterov }, { 0.3, 0.5, true })
end

function TestStateDict:test_positional_keys_for_plain_tensors()
  local p, q = ff.ones(2):requires_grad(true), ff.ones(3):requires_grad(true)
  local opt = ff.optim.Adam({ p, q })
  q.grad = ff.ones(3)
  opt:step()
  local sd = opt:state_dict()
  lu.assertEquals(sd.params, { 1, 2 })
  lu.assertNil(sd.state[1])
  lu.assertEquals(sd.state[2].step, 1)
end

function TestStateDict:test_shape_mismatch_names_param_and_shapes()
  local m = model()
  local opt = MAKERS.Adam(m)
  steps(opt, m, ff.Generator(1), 1)
  local sd = opt:state_dict()
  local other = { { name = "fc.weight", param = ff.zeros(4, 2):requires_grad(true) },
    { name = "fc.bias", param = ff.zeros(3):requires_grad(true) } }
  local o2 = MAKERS.Adam(other)
  local msg = error_of(o2.load_state_dict, o2, sd)
  lu.assertStrContains(msg, "Adam.load_state_dict: parameter 'fc.weight'")
  lu.assertStrContains(msg, "shape 3x2, but the parameter has shape 4x2")
  lu.assertNil(o2:state_of(other[2].param)) -- nothing loaded
end

function TestStateDict:test_wrong_optimiser_and_missing_params()
  local m = model()
  local sd = MAKERS.SGD(m):state_dict()
  local a = MAKERS.Adam(clone_model(m))
  lu.assertStrContains(error_of(a.load_state_dict, a, sd), "the state_dict is for SGD, not Adam")
  local one = ff.optim.SGD({ m[1] }, { lr = 0.1 })
  lu.assertStrContains(error_of(one.load_state_dict, one, sd), "parameter 'fc.bias', which this optimiser does not hold")
  local sd1 = one:state_dict()
  local two = ff.optim.SGD(clone_model(m), { lr = 0.1 })
  lu.assertStrContains(error_of(two.load_state_dict, two, sd1), "parameter 'fc.bias' is missing from the state_dict")
end

-- ---- remap -----------------------------------------------------------------------

TestRemap = {}

-- A 3x2 weight with momentum, grown to 5x2: rows 1..3 kept, row 4 a copy of
-- row 2 (a split child, its momentum halved), row 5 brand new.
function TestRemap:test_rows_grown_with_momentum()
  local w = ff.tensor { { 1, 2 }, { 3, 4 }, { 5, 6 } }:requires_grad(true)
  local opt = ff.optim.SGD({ { name = "fc1.weight", param = w } }, { lr = 0.1, momentum = 0.9 })
  for s = 1, 2 do
    w.grad = ff.tensor { { 1, -1 }, { 2, 0.5 }, { -3, 4 } } * s
    opt:step()
  end
  local old_buf = opt:state_of(w).momentum_buffer:clone()
  local grown = ff.cat({ w:detach(), w:detach():index_select(1, { 2 }), ff.zeros(1, 2) }):requires_grad(true)
  opt:remap { { old = w, new = grown, index = { [1] = { 1, 2, 3, 2, 0 } }, scale = { [1] = { 1, 1, 1, 0.5, 1 } } } }
  lu.assertEquals(opt:params()[1], grown)
  lu.assertNil(opt:state_of(w))
  local st = opt:state_of(grown)
  lu.assertEquals(st.step, 2)
  local buf = st.momentum_buffer
  lu.assertEquals(buf:size(), { 5, 2 })
  lu.assertTrue(buf:narrow(1, 1, 3):equal(old_buf), "old rows bit-identical")
  lu.assertTrue(buf[4]:equal(old_buf[2] * 0.5), "split child's momentum halved")
  lu.assertTrue(buf[5]:equal(ff.zeros(2)), "new row's momentum is zero")
  -- one more step: b = 0.9 b + g, p = p - 0.1 b
  local g = ff.tensor { { 1, 1 }, { 1, 1 }, { 1, 1 }, { 1, 1 }, { 1, 1 } }
  local expect_buf = buf * 0.9 + g
  local expect_p = grown:detach() - expect_buf * 0.1
  grown.grad = g
  opt:step()
  lu.assertTrue(st.momentum_buffer:allclose(expect_buf))
  lu.assertTrue(grown:allclose(expect_p))
  -- by hand, row 5 (new): b = 1, p = 0 - 0.1
  assert_close(grown[5], { -0.1, -0.1 }, "new row")
  -- by hand, buffer row 1 col 1: b1 = 1, b2 = 0.9 + 2 = 2.9, b3 = 2.61 + 1 = 3.61
  assert_close({ st.momentum_buffer[{ 1, 1 }] }, { 3.61 }, "old row")
  lu.assertEquals(st.step, 3)
end

-- The next layer's weight grows along its input dim (columns).
function TestRemap:test_columns_and_other_params_untouched()
  local w = ff.ones(2, 3):requires_grad(true)
  local b = ff.ones(2):requires_grad(true)
  local opt = ff.optim.SGD({ w, b }, { lr = 0.1, momentum = 0.9 })
  w.grad = ff.arange(6):view(2, 3)
  b.grad = ff.ones(2)
  opt:step()
  local bbuf = opt:state_of(b).momentum_buffer
  local w2 = ff.ones(2, 4):requires_grad(true)
  opt:remap { { old = w, new = w2, index = { [2] = { 1, 2, 3, 3 } }, scale = { [2] = { 1, 1, 0.5, 0.5 } } } }
  lu.assertTrue(opt:state_of(w2).momentum_buffer:equal(ff.tensor { { 0, 1, 1, 1 }, { 3, 4, 2.5, 2.5 } }))
  lu.assertEquals(opt:state_of(b).momentum_buffer, bbuf) -- same tensor
  lu.assertEquals(opt:params(), { w2, b })
end

-- Adam's first moment takes the scale, its second moment the scale squared
-- (both stay those of gradients scaled by s); new entries are zero.
function TestRemap:test_adam_moments()
  local w = ff.ones(2, 2):requires_grad(true)
  local opt = ff.optim.Adam({ w }, { lr = 0.01 })
  w.grad = ff.tensor { { 1, 2 }, { 3, 4 } }
  opt:step()
  local st = opt:state_of(w)
  local m, v = st.exp_avg:clone(), st.exp_avg_sq:clone()
  local w2 = ff.ones(3, 2):requires_grad(true)
  opt:remap { { old = w, new = w2, index = { [1] = { 0, 2, 1 } }, scale = { [1] = { 1, 0.5, 1 } } } }
  local s2 = opt:state_of(w2)
  lu.assertEquals(s2.step, 1)
  lu.assertTrue(s2.exp_avg:equal(ff.cat({ ff.zeros(1, 2), m:narrow(1, 2, 1) * 0.5, m:narrow(1, 1, 1) })))
  lu.assertTrue(s2.exp_avg_sq:equal(ff.cat({ ff.zeros(1, 2), v:narrow(1, 2, 1) * 0.25, v:narrow(1, 1, 1) })))
end

-- Index lists may be 1-D tensors (as growth code computes them).
function TestRemap:test_tensor_index()
  local w = ff.ones(2, 2):requires_grad(true)
  local opt = ff.optim.SGD({ w }, { lr = 0.1, momentum = 0.9 })
  w.grad = ff.tensor { { 1, 2 }, { 3, 4 } }
  opt:step()
  local w2 = ff.ones(2, 3):requires_grad(true)
  opt:remap { old = w, new = w2, index = { [2] = ff.tensor { 2, 0, 1 } } } -- a single entry
  lu.assertTrue(opt:state_of(w2).momentum_buffer:equal(ff.tensor { { 2, 0, 1 }, { 4, 0, 3 } }))
end

function TestRemap:test_append_a_new_param()
  local w = ff.ones(2):requires_grad(true)
  local opt = ff.optim.SGD({ { name = "a", param = w } }, { lr = 0.1, momentum = 0.9 })
  local extra = ff.zeros(3):requires_grad(true)
  opt:remap { { new = extra, name = "block.weight" } }
  lu.assertEquals(opt:params(), { w, extra })
  lu.assertNil(opt:state_of(extra))
  lu.assertEquals(opt:state_dict().params, { "a", "block.weight" })
  extra.grad = ff.ones(3)
  opt:step()
  assert_close(extra, { -0.1, -0.1, -0.1 })
end

function TestRemap:test_param_without_state_stays_without()
  local w = ff.ones(2, 2):requires_grad(true)
  local opt = ff.optim.RMSprop({ w })
  local w2 = ff.ones(3, 2):requires_grad(true)
  opt:remap { { old = w, new = w2, index = { [1] = { 1, 2, 0 } } } }
  lu.assertNil(opt:state_of(w2))
  lu.assertEquals(opt:params()[1], w2)
end

function TestRemap:test_rmsprop_every_buffer()
  local w = ff.ones(2):requires_grad(true)
  local opt = ff.optim.RMSprop({ w }, { momentum = 0.5, centered = true })
  w.grad = ff.tensor { 1, -2 }
  opt:step()
  local w2 = ff.ones(3):requires_grad(true)
  opt:remap { { old = w, new = w2, index = { [1] = { 2, 0, 1 } } } }
  local st = opt:state_of(w2)
  for _, k in ipairs { "square_avg", "momentum_buffer", "grad_avg" } do
    lu.assertEquals(st[k]:size(), { 3 }, k)
    lu.assertEquals(st[k][2], 0, k)
  end
  assert_close(st.grad_avg, { -0.02, 0, 0.01 }, "grad_avg")
end

function TestRemap:test_errors()
  local w = ff.ones(3, 2):requires_grad(true)
  local opt = ff.optim.SGD({ { name = "fc1.weight", param = w } }, { lr = 0.1, momentum = 0.9 })
  w.grad = ff.ones(3, 2)
  opt:step()
  local stranger = ff.ones(3, 2):requires_grad(true)
  lu.assertStrContains(error_of(opt.remap, opt, { { old = stranger, new = ff.ones(4, 2) } }),
    "SGD.remap: entry 1: the old param (shape 3x2) is not held by this optimiser")
  lu.assertStrContains(error_of(opt.remap, opt, { { old = w, new = ff.ones(5, 3), index = { [1] = { 1, 2, 3, 0, 0 } } } }),
    "entry 1 ('fc1.weight'): dim 2 has size 2 in the old param (3x2) and 3 in the new one (5x3), and index gives no map for it")
  lu.assertStrContains(error_of(opt.remap, opt, { { old = w, new = ff.ones(4, 2), index = { [1] = { 1, 2, 4, 0 } } } }),
    "index[1][3] = 4 is out of range")
  lu.assertStrContains(error_of(opt.remap, opt, { { old = w, new = ff.ones(4, 2), index = { [1] = { 1, 2 } } } }),
    "index[1] has 2 entries, but the new param (4x2) has size 4 along dim 1")
  lu.assertStrContains(error_of(opt.remap, opt, { { old = w, new = ff.ones(3, 2, 1) } }), "ranks differ")
  lu.assertStrContains(error_of(opt.remap, opt, { { new = ff.ones(2), name = "fc1.weight" } }),
    "two parameters would be named 'fc1.weight'")
  -- a failed remap leaves the optimiser as it was
  lu.assertEquals(opt:params(), { w })
  lu.assertEquals(opt:state_of(w).step, 1)
end

-- ---- clip_grad_norm -------------------------------------------------------------

TestClip = {}

function TestClip:test_scales_to_max_norm()
  local a, b = ff.zeros(2):requires_grad(true), ff.zeros(1):requires_grad(true)
  a.grad, b.grad = ff.tensor { 3, 0 }, ff.tensor { 4 }
  local c = ff.zeros(1):requires_grad(true) -- no gradient: skipped
  local total = ff.optim.clip_grad_norm({ a, b, c }, 1)
  lu.assertAlmostEquals(total, 5, 1e-6)
  local k = 1 / (5 + 1e-6)
  assert_close(a.grad, { 3 * k, 0 })
  assert_close(b.grad, { 4 * k })
  lu.assertNil(c.grad)
end

function TestClip:test_below_max_untouched()
  local a = ff.zeros(2):requires_grad(true)
  a.grad = ff.tensor { 0.3, 0.4 }
  local before = a.grad:clone()
  lu.assertAlmostEquals(ff.optim.clip_grad_norm({ { name = "a", param = a } }, 1), 0.5, 1e-6)
  lu.assertTrue(a.grad:equal(before))
end

function TestClip:test_other_norms()
  local a = ff.zeros(3):requires_grad(true)
  a.grad = ff.tensor { 1, -4, 2 }
  lu.assertAlmostEquals(ff.optim.clip_grad_norm(a, 100, math.huge), 4, 1e-6)
  lu.assertAlmostEquals(ff.optim.clip_grad_norm(a, 100, 1), 7, 1e-6)
  lu.assertAlmostEquals(ff.optim.clip_grad_norm(a, 2, "inf"), 4, 1e-6)
  assert_close(a.grad, { 0.5, -2, 1 })
  lu.assertStrContains(error_of(ff.optim.clip_grad_norm, a, -1), "max_norm must be a number >= 0")
end

-- ---- schedules ---------------------------------------------------------------------

TestSchedule = {}

local function lrs(sched, opt, n)
  local out = { opt.lr }
  for i = 1, n do out[i + 1] = sched:step() end
  return out
end

local function opt_with(lr) return ff.optim.SGD({ ff.ones(1):requires_grad(true) }, { lr = lr }) end

function TestSchedule:test_step()
  local opt = opt_with(1)
  local s = ff.optim.schedule.step(opt, { step_size = 2, gamma = 0.5 })
  assert_close(lrs(s, opt, 6), { 1, 1, 0.5, 0.5, 0.25, 0.25, 0.125 })
end

function TestSchedule:test_multistep()
  local opt = opt_with(0.1)
  local s = ff.optim.schedule.multistep(opt, { milestones = { 4, 2 } })
  assert_close(lrs(s, opt, 5), { 0.1, 0.1, 0.01, 0.01, 0.001, 0.001 })
end

-- torch's CosineAnnealingLR(T_max = 4): eta_min + (base - eta_min)(1 + cos(pi t/4))/2
function TestSchedule:test_cosine_matches_torch()
  local opt = opt_with(0.1)
  local s = ff.optim.schedule.cosine(opt, { total = 4, min_lr = 0.01 })
  local c = math.cos(math.pi / 4)
  assert_close(lrs(s, opt, 5), { 0.1, 0.01 + 0.09 * (1 + c) / 2, 0.055, 0.01 + 0.09 * (1 - c) / 2, 0.01, 0.01 })
end

function TestSchedule:test_cosine_with_warmup()
  local opt = opt_with(1)
  local s = ff.optim.schedule.cosine(opt, { total = 6, warmup = 2 })
  local c = math.cos(math.pi / 4)
  assert_close(lrs(s, opt, 7), { 0, 0.5, 1, (1 + c) / 2, 0.5, (1 - c) / 2, 0, 0 })
end

function TestSchedule:test_constant_and_get_lr()
  local opt = opt_with(0.2)
  local s = ff.optim.schedule.constant(opt)
  assert_close(lrs(s, opt, 3), { 0.2, 0.2, 0.2, 0.2 })
  lu.assertEquals(s:get_lr(), 0.2)
  lu.assertEquals(s.last_epoch, 3)
end

function TestSchedule:test_state_dict_round_trip()
  local opt = opt_with(1)
  local s = ff.optim.schedule.step(opt, { step_size = 2, gamma = 0.5 })
  for _ = 1, 3 do s:step() end
  local sd = s:state_dict()
  assert_plain(sd, "schedule")
  local opt2 = opt_with(7)
  local s2 = ff.optim.schedule.step(opt2, { step_size = 5 })
  s2:load_state_dict(sd)
  lu.assertEquals(opt2.lr, 0.5)
  lu.assertEquals(s2:step(), s:step())
  lu.assertEquals(opt2.lr, opt.lr)
  local c = ff.optim.schedule.cosine(opt2, { total = 3 })
  lu.assertStrContains(error_of(c.load_state_dict, c, sd), "the state_dict is for schedule.step")
end

function TestSchedule:test_errors()
  local opt = opt_with(1)
  local S = ff.optim.schedule
  lu.assertStrContains(error_of(S.step, opt, {}), "schedule.step: option 'step_size' is required")
  lu.assertStrContains(error_of(S.step, opt, { step_size = 0 }), "option 'step_size' must be a whole number >= 1 (got 0)")
  lu.assertStrContains(error_of(S.step, opt, { step_size = 2, gama = 0.1 }), "schedule.step: unknown option 'gama'")
  lu.assertStrContains(error_of(S.multistep, opt, { milestones = { 2, 1.5 } }), "option 'milestones' must be a list")
  lu.assertStrContains(error_of(S.cosine, opt, { total = 5, warmup = 5 }), "option 'warmup' must be a whole number >= 0 and below total")
  lu.assertStrContains(error_of(S.constant, {}), "argument #1 must be an optimiser")
end

-- ---- errors ---------------------------------------------------------------------------

TestErrors = {}

function TestErrors:test_bad_options()
  local p = { ff.ones(1):requires_grad(true) }
  local O = ff.optim
  lu.assertStrContains(error_of(O.SGD, p, {}), "SGD: option 'lr' is required")
  lu.assertStrContains(error_of(O.SGD, p, { lr = -1 }), "SGD: option 'lr' must be a number >= 0 (got -1)")
  lu.assertStrContains(error_of(O.SGD, p, { lr = 0.1, momentun = 0.9 }),
    "SGD: unknown option 'momentun' (did you mean 'momentum'?)")
  lu.assertStrContains(error_of(O.SGD, p, { lr = 0.1, momentum = 1.5 }), "SGD: option 'momentum' must be a number in [0, 1)")
  lu.assertStrContains(error_of(O.SGD, p, { lr = 0.1, nesterov = true }),
    "SGD: nesterov = true needs momentum > 0 and dampening = 0")
  lu.assertStrContains(error_of(O.SGD, p, { lr = 0.1, momentum = 0.9, dampening = 0.1, nesterov = true }), "dampening = 0")
  lu.assertStrContains(error_of(O.SGD, p, { lr = 0.1, nesterov = 1 }), "SGD: option 'nesterov' must be true or false")
  lu.assertStrContains(error_of(O.Adam, p, { betas = { 0.9, 1 } }), "Adam: option 'betas' must be a pair {beta1, beta2} of numbers in [0, 1)")
  lu.assertStrContains(error_of(O.AdamW, p, { eps = -1 }), "AdamW: option 'eps' must be a number >= 0")
  lu.assertStrContains(error_of(O.Adam, p, { amsgrad = true }), "Adam: unknown option 'amsgrad'")
  lu.assertStrContains(error_of(O.RMSprop, p, { alpha = 1 }), "RMSprop: option 'alpha' must be a number in [0, 1)")
  lu.assertStrContains(error_of(O.RMSprop, p, { momentum = -0.1 }), "RMSprop: option 'momentum'")
  lu.assertStrContains(error_of(O.RMSprop, p, { weight_decay = 0 / 0 }), "RMSprop: option 'weight_decay' must be a number >= 0")
end

function TestErrors:test_bad_params()
  local O = ff.optim
  local x = ff.ones(2):requires_grad(true)
  lu.assertStrContains(error_of(O.SGD, {}, { lr = 1 }), "SGD: no parameters to optimise")
  lu.assertStrContains(error_of(O.SGD, { x * 2 }, { lr = 1 }), "SGD: parameter #1 is not a leaf tensor")
  lu.assertStrContains(error_of(O.Adam, { x, x }), "Adam: parameter #2 appears more than once")
  lu.assertStrContains(error_of(O.Adam, { { name = "w" } }), "Adam: params[1] is neither a tensor nor")
  lu.assertStrContains(error_of(O.Adam, { { name = "w", param = x }, { name = "w", param = ff.ones(1) } }),
    "Adam: two parameters are named 'w'")
  lu.assertStrContains(error_of(O.Adam, 3), "Adam: params must be a list")
end

-- Options are fields a scheduler or user may write; step() checks them again.
function TestErrors:test_bad_write_caught_at_step()
  local x = ff.ones(2):requires_grad(true)
  local opt = ff.optim.SGD({ x }, { lr = 0.1 })
  opt.lr = -0.5
  x.grad = ff.ones(2)
  lu.assertStrContains(error_of(opt.step, opt), "SGD.step: option 'lr' must be a number >= 0 (got -0.5)")
end

function TestErrors:test_tostring()
  local opt = ff.optim.Adam({ ff.ones(1):requires_grad(true) })
  lu.assertEquals(tostring(opt), "Adam(lr=0.001, betas={0.9, 0.999}, eps=1e-08, weight_decay=0; 1 params)")
end

os.exit(testlib.run())
