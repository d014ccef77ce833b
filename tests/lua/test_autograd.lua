-- test_autograd: the autograd machinery as users see it: leaves and
-- accumulation, no_grad, detach, retain_graph, retain_grad, hooks, in-place
-- safety, long chains and memory across many steps.
package.path = "tests/lua/?.lua;" .. package.path
local testlib = require "testlib"
local lu = testlib.lu
local ff = require "firefly"
local error_of = testlib.error_of

TestLeaves = {}

function TestLeaves:test_accumulates_across_backward_calls()
  local x = ff.tensor({ 1, 2, 3 }, { requires_grad = true })
  lu.assertTrue(x:requires_grad())
  lu.assertTrue(x:is_leaf())
  local y = (x * x):sum()
  lu.assertEquals(y:grad_fn(), "sum")
  lu.assertFalse(y:is_leaf())
  y:backward()
  lu.assertEquals(x.grad:totable(), { 2, 4, 6 })
  ;(x * 3):sum():backward()
  lu.assertEquals(x.grad:totable(), { 5, 7, 9 })
  lu.assertTrue(x.grad == x.grad, "t.grad is the same object while unchanged")
  x:zero_grad()
  lu.assertEquals(x.grad:totable(), { 0, 0, 0 })
  x.grad = nil
  lu.assertNil(x.grad)
  x.grad = ff.ones(3)
  lu.assertEquals(x.grad:totable(), { 1, 1, 1 })
  lu.assertStrContains(error_of(function() x.grad = ff.ones(2) end), "shape 2")
end

function TestLeaves:test_shared_gradients_are_not_aliased()
  -- add's backward hands one tensor to both inputs; each leaf must own its
  -- gradient, or accumulating into one would change the other.
  local a, b = ff.ones(3):requires_grad(true), ff.ones(3):requires_grad(true)
  for _ = 1, 2 do (a + b):sum():backward() end
  lu.assertEquals(a.grad:totable(), { 2, 2, 2 })
  lu.assertEquals(b.grad:totable(), { 2, 2, 2 })
  local c = ff.ones(2):requires_grad(true)
  for _ = 1, 3 do (c + c):sum():backward() end
  lu.assertEquals(c.grad:totable(), { 6, 6 })
  -- a hook's replacement kept by the caller is not written into later
  local kept
  local d = ff.ones(2):requires_grad(true)
  d:register_hook(function(g) kept = g * 1; return kept end)
  for _ = 1, 2 do (d * 1):sum():backward() end
  lu.assertEquals(d.grad:totable(), { 2, 2 })
  lu.assertEquals(kept:totable(), { 1, 1 })
end

function TestLeaves:test_gradient_flows_only_to_leaves_that_ask()
  local a = ff.ones(2):requires_grad(true)
  local b = ff.ones(2)
  ;(a * b):sum():backward()
  lu.assertNotNil(a.grad)
  lu.assertNil(b.grad)
  lu.assertFalse((b * 2):requires_grad())
end

function TestLeaves:test_errors()
  local x = ff.ones(2, 2):requires_grad(true)
  local y = x * 2
  lu.assertStrContains(error_of(y.requires_grad, y, false), "only leaf")
  lu.assertStrContains(error_of(y.backward, y), "one-element")
  lu.assertStrContains(error_of(y.backward, y, ff.ones(3)), "shape 3")
  lu.assertStrContains(error_of(function() ff.ones(2):sum():backward() end), "does not require grad")
  lu.assertStrContains(error_of(x.add_, x, 1), "in place")
  lu.assertStrContains(error_of(function() x[1] = 0 end), "in place")
end

TestModes = {}

function TestModes:test_no_grad()
  local x = ff.ones(3):requires_grad(true)
  local y, extra = ff.no_grad(function(a) return a * 2, "passed" end, x)
  lu.assertFalse(y:requires_grad())
  lu.assertEquals(extra, "passed")
  lu.assertTrue(ff.is_grad_enabled())
  -- restored after an error too
  lu.assertStrContains(error_of(ff.no_grad, function() error("inside") end), "inside")
  lu.assertTrue(ff.is_grad_enabled())
  -- in-place updates of parameters are allowed under no_grad
  ff.no_grad(function() x:sub_(0.5) end)
  lu.assertEquals(x:totable(), { 0.5, 0.5, 0.5 })
  lu.assertTrue(ff.set_grad_enabled(false))
  lu.assertFalse((x * 1):requires_grad())
  ff.set_grad_enabled(true)
end

function TestModes:test_detach()
  local x = ff.ones(2):requires_grad(true)
  local d = (x * 2):detach()
  lu.assertFalse(d:requires_grad())
  lu.assertTrue(d:is_leaf())
  lu.assertEquals(d:totable(), { 2, 2 })
end

function TestModes:test_retain_graph()
  local x = ff.tensor({ 2 }, { requires_grad = true })
  local y = (x * x):sum()
  y:backward({ retain_graph = true })
  y:backward()
  lu.assertEquals(x.grad:totable(), { 8 })
  lu.assertStrContains(error_of(y.backward, y), "retain_graph")
end

-- backward's options go through the binding's one checker: a typo is an
-- error naming the nearest key (it used to free the graph silently), the
-- value is type-checked, and nothing ran.
function TestModes:test_backward_options_checked()
  local x = ff.tensor({ 2 }, { requires_grad = true })
  local y = (x * x):sum()
  lu.assertStrContains(error_of(y.backward, y, { retain_grpah = true }),
    "backward: unknown option 'retain_grpah' (did you mean 'retain_graph'?)")
  lu.assertStrContains(error_of(y.backward, y, ff.tensor(1), { retain = true }),
    "backward: unknown option 'retain' (did you mean 'retain_graph'?)")
  lu.assertStrContains(error_of(y.backward, y, { retain_graph = 1 }),
    "backward: option retain_graph must be a boolean, got number")
  lu.assertStrContains(error_of(y.backward, y, { [1] = true }), "backward: option names must be strings")
  lu.assertNil(x.grad)
  y:backward({ retain_graph = true })
  y:backward(ff.tensor(1), { retain_graph = false })
  lu.assertEquals(x.grad:totable(), { 8 })
end

function TestModes:test_retain_grad_of_intermediate()
  local x = ff.tensor({ 1, 2 }, { requires_grad = true })
  local h = x * 3
  h:retain_grad()
  local y = (h * h):sum()
  y:backward()
  lu.assertEquals(h.grad:totable(), { 6, 12 })
  lu.assertEquals(x.grad:totable(), { 18, 36 })
end

TestHooks = {}

function TestHooks:test_hook_sees_and_replaces_gradient()
  local x = ff.tensor({ 1, 2 }, { requires_grad = true })
  local seen
  local h = x * 1
  h:register_hook(function(g) seen = g:totable() end)
  local handle = x:register_hook(function(g) return g * 10 end)
  ;(h * ff.tensor { 3, 4 }):sum():backward()
  lu.assertEquals(seen, { 3, 4 })
  lu.assertEquals(x.grad:totable(), { 30, 40 })
  handle:remove()
  x.grad = nil
  ;(x * 1):sum():backward()
  lu.assertEquals(x.grad:totable(), { 1, 1 })
end

function TestHooks:test_hook_errors_abort_backward_cleanly()
  local x = ff.ones(2):requires_grad(true)
  x:register_hook(function() error("hook failed") end)
  lu.assertStrContains(error_of(function() (x * 2):sum():backward() end), "hook failed")
  local y = ff.ones(2):requires_grad(true)
  y:register_hook(function() return "not a tensor" end)
  lu.assertStrContains(error_of(function() (y * 2):sum():backward() end), "tensor or nil")
  local z = ff.ones(2):requires_grad(true)
  z:register_hook(function() return ff.ones(3) end)
  lu.assertStrContains(error_of(function() (z * 2):sum():backward() end), "shape 3")
  lu.assertStrContains(error_of(ff.ones(2).register_hook, ff.ones(2), print), "does not require grad")
end

TestSafety = {}

function TestSafety:test_modified_saved_tensor_is_detected()
  local x = ff.ones(3):requires_grad(true)
  local w = ff.tensor { 1, 2, 3 }
  local y = (x * w):sum() -- mul saves w
  w:mul_(2)
  lu.assertStrContains(error_of(y.backward, y), "modified in place")
end

function TestSafety:test_long_chain_backward_and_free()
  -- 100,000 ops: neither the backward walk nor freeing the graph may
  -- recurse on the C stack.
  local x = ff.ones(1):requires_grad(true)
  local y = x
  for _ = 1, 100000 do y = y * 1.0 end
  y:sum():backward()
  lu.assertEquals(x.grad:totable(), { 1 })
  y = nil
  collectgarbage()
end

function TestSafety:test_memory_flat_over_many_steps()
  -- 10,000 steps of a small model: live engine memory must not grow.
  local g = ff.Generator(0)
  local W1 = ff.randn(16, 8, g):mul_(0.1):requires_grad(true)
  local W2 = ff.randn(4, 16, g):mul_(0.1):requires_grad(true)
  local x, y = ff.randn(32, 8, g), ff.randn(32, 4, g)
  local function step()
    local h = x:matmul(W1:t()):maximum(0)
    local loss = ((h:matmul(W2:t()) - y) ^ 2):mean()
    loss:backward()
    ff.no_grad(function()
      W1:sub_(W1.grad * 0.01)
      W2:sub_(W2.grad * 0.01)
    end)
    W1:zero_grad()
    W2:zero_grad()
    return loss:item()
  end
  local first = step()
  for _ = 1, 1000 do step() end
  collectgarbage()
  local live1 = ff.memory()
  for _ = 1, 9000 do step() end
  collectgarbage()
  local live2 = ff.memory()
  lu.assertTrue(live2 <= live1 + 4096, string.format("live bytes grew from %d to %d", live1, live2))
  lu.assertTrue(step() < first)
end

os.exit(testlib.run())
