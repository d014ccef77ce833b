-- test_badinput: every exported function and method, called with wrong
-- types, wrong shapes, empty and scalar tensors, NaN, infinities, huge and
-- negative numbers. Each call must return or raise a Lua error with a
-- string message of our own (never an internal "attempt to index a nil
-- value"); a crash kills this suite, which the runner counts as a
-- failure. (Run it under `make SANITIZE=1 test` to catch silent corruption.)
-- Then the creation functions' arguments and options tables, and the
-- growth layer's unit names, one by one.
package.path = "tests/lua/?.lua;" .. package.path
local testlib = require "testlib"
local lu = testlib.lu
local ff = require "firefly"

local nan, inf = 0 / 0, math.huge

-- Receivers: the tensors a method may be called on.
local function receivers()
  local closed = ff.zeros(2)
  closed:close()
  return {
    ff.arange(6):view(2, 3), ff.arange(6):view(2, 3):t(), ff.zeros(0), ff.zeros(3, 0),
    ff.tensor(5), ff.ones(1, 1, 1), ff.ones(3):expand(4, 3), closed,
    ff.tensor { nan, inf, -inf },
  }
end

-- Argument lists tried after the receiver.
local function arglists()
  local t23, t5 = ff.ones(2, 3), ff.ones(5)
  local values = { nil, "x", {}, { 1, "a" }, { {} }, -1, 0, 1, 2, 3, 0.5, nan, inf, -inf,
    2 ^ 62, math.mininteger, math.maxinteger, t23, t5, ff.zeros(0), ff.tensor(1), print,
    { 1, 2 }, { 7 }, { 2 ^ 40, 2 ^ 40 }, ff.Generator(1) }
  local lists = { {} }
  for _, a in ipairs(values) do lists[#lists + 1] = { a } end
  for _, a in ipairs({ 1, -1, 2, 0, 9 }) do
    for _, b in ipairs(values) do lists[#lists + 1] = { a, b } end
  end
  for _, a in ipairs({ 1, 2, -1 }) do
    for _, b in ipairs({ 1, -1, 0, 2 ^ 62, { 1 }, t23, ff.tensor { { 1, 2, 3 } } }) do
      for _, c in ipairs({ 1, 0, -1, 2 ^ 62, t23, t5, ff.ones(1, 3), nan }) do
        lists[#lists + 1] = { a, b, c }
      end
    end
  end
  lists[#lists + 1] = { nil, nil, nil, nil }
  return lists
end

-- Functions that would legitimately run for long or allocate gigabytes on
-- some of these arguments are called with them too: every size above is
-- either small or impossible, so nothing here succeeds slowly.
local function sweep(fn, name, with_receivers)
  local calls, errors = 0, 0
  local recv = with_receivers and receivers() or { false }
  for _, r in ipairs(recv) do
    for _, args in ipairs(arglists()) do
      local ok, err
      if r then
        ok, err = pcall(fn, r, table.unpack(args, 1, 3))
      else
        ok, err = pcall(fn, table.unpack(args, 1, 3))
      end
      calls = calls + 1
      if not ok then
        errors = errors + 1
        lu.assertEquals(type(err), "string", name .. ": error is not a string")
        lu.assertTrue(#err > 0, name .. ": empty error message")
        lu.assertNil(err:match("attempt to"), name .. ": an internal error: " .. err)
      end
    end
  end
  return calls, errors
end

TestBadInput = {}

function TestBadInput:test_every_method()
  local total = 0
  local names = {}
  for name in pairs(ff.Tensor) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    local fn = ff.Tensor[name]
    if type(fn) == "function" and name ~= "close" then
      total = total + sweep(fn, name, true)
      -- a method called on something that is not a tensor: an error of ours
      for _, bad in ipairs({ 1, "s", {}, ff.Generator(1) }) do
        local ok, err = pcall(fn, bad)
        lu.assertFalse(ok, name .. " accepted a " .. type(bad) .. " as its tensor")
        lu.assertEquals(type(err), "string", name)
        lu.assertNil(err:match("attempt to"), name .. ": an internal error: " .. err)
      end
    end
    collectgarbage()
  end
  lu.assertTrue(total > 10000)
end

function TestBadInput:test_every_module_function()
  local skip = { clock = true, memory = true, get_num_threads = true, get_rng_state = true }
  local names = {}
  for name, fn in pairs(ff) do
    if type(fn) == "function" and not ff.Tensor[name] and not skip[name] then
      names[#names + 1] = name
    end
  end
  table.sort(names)
  local saved = ff.get_num_threads()
  for _, name in ipairs(names) do
    sweep(ff[name], name, false)
    collectgarbage()
  end
  ff.set_num_threads(saved)
end

function TestBadInput:test_operators()
  local operands = { 1, nan, "2", {}, ff.zeros(2, 3), ff.zeros(3, 2), ff.zeros(0), ff.tensor(1), true }
  local ops = {
    function(a, b) return a + b end, function(a, b) return a - b end,
    function(a, b) return a * b end, function(a, b) return a / b end,
    function(a, b) return a ^ b end, function(a) return -a end,
    function(a) return #a end, function(a, b) return a[b] end,
    function(a, b) a[b] = 1 end, function(a) return tostring(a) end,
  }
  local failed = 0
  for i, op in ipairs(ops) do
    for _, a in ipairs(operands) do
      for _, b in ipairs({ 1, -1, 0, 4, { 1, 1 }, { 9, 9 }, { 1, 1, 1 }, "sum", ff.zeros(2, 3), nan }) do
        local ok, err = pcall(op, a, b)
        -- a tensor's metamethods answer with a message of their own (Lua
        -- itself answers when neither operand is a tensor)
        local ours = ff.is_tensor(a) or (i <= 5 and ff.is_tensor(b))
        if not ok then
          failed = failed + 1
          lu.assertEquals(type(err), "string")
          if ours then lu.assertNil(err:match("attempt to"), "an internal error: " .. err) end
        end
      end
    end
  end
  lu.assertTrue(failed > 100)
  -- shapes that do not broadcast, and out-of-range indices, must fail
  local a, b = ff.zeros(2, 3), ff.zeros(3, 2)
  for i = 1, 5 do lu.assertStrContains(testlib.error_of(ops[i], a, b), "do not broadcast") end
  lu.assertStrContains(testlib.error_of(ops[8], a, 4), "index 4 out of range for dim 1 of a tensor of shape 2x3")
  lu.assertStrContains(testlib.error_of(ops[9], a, "sum"), "cannot set field 'sum' of a tensor")
end

-- Creation functions: an argument they do not read, an options key they do
-- not know or a value of the wrong type is an error naming the function.
function TestBadInput:test_creation_arguments()
  local cases = {
    { function() return ff.zeros("a") end, "zeros: argument #1 must be a size or a shape table, got string" },
    { function() return ff.ones("a") end, "ones: argument #1 must be a size or a shape table, got string" },
    { function() return ff.empty(true) end, "empty: argument #1 must be a size or a shape table, got boolean" },
    { function() return ff.zeros(2, "a") end, "zeros: unexpected argument #2 (string)" },
    { function() return ff.zeros({ 2 }, 3) end, "zeros: unexpected argument #2 (number)" },
    { function() return ff.full({ 2 }, "x") end, "full: argument #2 (the value) must be a number, got string" },
    { function() return ff.full(2, 1) end, "full: argument #1 must be a shape table, got number" },
    { function() return ff.full({ 2 }, 1, 5) end, "full: unexpected argument #3 (number)" },
    { function() return ff.eye(2, 2, 5) end, "eye: unexpected argument #3 (number)" },
    { function() return ff.tensor({ 1 }, 5) end, "tensor: unexpected argument #2 (number)" },
    { function() return ff.tensor("x") end, "tensor: argument #1 must be a number or a nested table of numbers" },
    { function() return ff.randn(2, 5, "g") end, "randn: argument #3 (after the shape) must be an ff.Generator" },
    { function() return ff.rand({ 2 }, 5) end, "rand: argument #2 (after the shape) must be an ff.Generator, got number" },
    { function() return ff.randn(2, ff.Generator(1), 3) end, "randn: unexpected argument #3 (number)" },
    { function() return ff.bernoulli(0.5, { 2 }, {}) end, "bernoulli: argument #3 (after the shape) must be an ff.Generator" },
    -- options tables
    { function() return ff.zeros(2, 3, { dtyp = "f" }) end, "zeros: unknown option 'dtyp' (known: requires_grad)" },
    { function() return ff.tensor({ 1, 2 }, { require_grad = true }) end,
      "tensor: unknown option 'require_grad' (did you mean 'requires_grad'?)" },
    { function() return ff.ones(2, { requires_grad = 1 }) end, "ones: option requires_grad must be a boolean, got number" },
    { function() return ff.randn(2, { generator = 5 }) end, "randn: option generator must be an ff.Generator, got number" },
    { function() return ff.randint(1, 3, 4, { generater = ff.Generator(1) }) end,
      "randint: unknown option 'generater' (did you mean 'generator'?)" },
    { function() return ff.zeros(2, { generator = ff.Generator(1) }) end, "zeros: unknown option 'generator'" },
    { function() return ff.data.randperm(4, 5) end, "randperm: the generator must be an ff.Generator, got number" },
    { function() return ff.data.two_moons { n = 8 }:split(0.5, 5) end,
      "split: the generator must be an ff.Generator, got number" },
    { function() return ff.gradcheck(ff.exp, { ff.ones(2) }, { epsilon = 1 }) end,
      "gradcheck: unknown option 'epsilon' (did you mean 'eps'?)" },
  }
  for _, c in ipairs(cases) do lu.assertStrContains(testlib.error_of(c[1]), c[2]) end
  -- what works still works: options, a generator in them, a scalar
  local t = ff.randn(3, { requires_grad = true, generator = ff.Generator(4) })
  lu.assertTrue(t:requires_grad())
  lu.assertTrue(t:detach():equal(ff.randn(3, ff.Generator(4))))
  lu.assertEquals(ff.zeros():dim(), 0)
  lu.assertEquals(ff.zeros({ requires_grad = true }):requires_grad(), true)
  lu.assertEquals(ff.tensor({ 1, 2 }, { requires_grad = false }):numel(), 2)
  lu.assertEquals(ff.zeros({}):dim(), 0)
end

-- A unit name that is no unit, or a network that is not one, is named (not
-- "the network has no growable units"), before anything changes.
function TestBadInput:test_grow_units_named()
  local net = ff.nn.mlp { 2, 3, 3, 2 }
  local batches = { { ff.randn(4, 2, ff.Generator(1)), ff.tensor { 1, 2, 1, 2 } } }
  local w = net:get(1).weight:clone()
  local function err(...) return testlib.error_of(ff.grow.propose, ...) end
  lu.assertStrContains(err(net, { where = { "7" } }, batches), "where names unit '7', which the network does not have (units: 1, 3)")
  lu.assertStrContains(err(net, { where = { "1", "2" } }, batches), "where names unit '2', which the network does not have (units: 1, 3)")
  lu.assertStrContains(err(net, { where = "1" }, batches), "where must be a list of unit names")
  lu.assertStrContains(err(net, { where = { true } }, batches), "where[1] must be a unit name")
  lu.assertStrContains(testlib.error_of(ff.grow.units, net, { true }), "grow.units: where[1] must be a unit name, got boolean")
  lu.assertStrContains(err(net, { where = {} }, batches), "where lists no units (units: 1, 3)")
  lu.assertStrContains(err("net", {}, batches), "argument #1 must be a network (an nn module), got string")
  lu.assertStrContains(err(batches, {}, batches), "argument #1 must be a network (an nn module), got table")
  lu.assertStrContains(testlib.error_of(ff.grow.units, 5), "grow.units: argument #1 must be a network (an nn module), got number")
  lu.assertTrue(net:get(1).weight:equal(w))
  lu.assertTrue(net:get(1).weight:requires_grad())
  -- names as numbers are names
  lu.assertEquals(#ff.grow.units(net, { 3 }), 1)
  lu.assertEquals(ff.grow.units(net, { "3" })[1].name, "3")
end

function TestBadInput:test_messages_name_function_and_shapes()
  local a = ff.ones(2, 3)
  local cases = {
    { function() return a:matmul(ff.ones(4, 2)) end, { "matmul", "4x2", "2x3" } },
    { function() return a:view(4, 2) end, { "view", "2x3", "4x2" } },
    { function() return a:sum(5) end, { "sum", "dim 5", "rank 2" } },
    { function() return ff.cat({ a, ff.ones(2, 2) }, 1) end, { "cat", "2x2" } },
    { function() return a:index_select(2, { 4 }) end, { "index_select", "4" } },
    { function() return a:gather(1, ff.tensor { { 1.5, 1, 1 } }) end, { "gather", "1.5" } },
    { function() return a:narrow(1, 2, 5) end, { "narrow", "2x3" } },
    { function() return a:expand(3, 3) end, { "expand", "2x3", "3x3" } },
    { function() return a:item() end, { "item", "2x3" } },
    { function() return ff.where(ff.ones(4), a, 0) end, { "where", "4", "2x3" } },
  }
  for _, c in ipairs(cases) do
    local msg = testlib.error_of(c[1])
    for _, part in ipairs(c[2]) do lu.assertStrContains(msg, part) end
  end
end

os.exit(testlib.run())
