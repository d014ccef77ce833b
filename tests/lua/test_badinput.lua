-- test_badinput: every exported function and method, called with wrong
-- types, wrong shapes, empty and scalar tensors, NaN, infinities, huge and
-- negative numbers. Each call must return or raise a Lua error with a
-- string message; a crash kills this suite, which the runner counts as a
-- failure. (Run it under `make SANITIZE=1 test` to catch silent corruption.)
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
      -- a method called on something that is not a tensor
      for _, bad in ipairs({ 1, "s", {}, ff.Generator(1) }) do
        local ok, err = pcall(fn, bad)
        lu.assertTrue(ok or type(err) == "string")
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
  for _, op in ipairs(ops) do
    for _, a in ipairs(operands) do
      for _, b in ipairs({ 1, -1, 0, 4, { 1, 1 }, { 9, 9 }, { 1, 1, 1 }, "sum", ff.zeros(2, 3), nan }) do
        local ok, err = pcall(op, a, b)
        lu.assertTrue(ok or err ~= nil)
      end
    end
  end
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
