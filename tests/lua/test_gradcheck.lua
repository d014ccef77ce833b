-- test_gradcheck: walks the op table (ff.ops()) and checks every op's
-- gradient against central finite differences. The cases live in
-- tests/lua/gradcheck/<family>.lua; an op without a case fails here, and so
-- does a family whose cases never produce the op they are listed under.
package.path = "tests/lua/?.lua;" .. package.path
local testlib = require "testlib"
local lu = testlib.lu
local ff = require "firefly"

local cases = {}
for path in io.popen("ls tests/lua/gradcheck/*.lua"):lines() do
  local family = dofile(path)
  for op, list in pairs(family) do
    lu.assertNil(cases[op], "two families define cases for " .. op)
    cases[op] = list
  end
end

local function run_case(op, k, case)
  local g = ff.Generator(1000 + k)
  local inputs = case.inputs(ff, g)
  local skip = {}
  for _, pos in ipairs(case.no_grad or {}) do skip[pos] = true end
  for i, x in ipairs(inputs) do
    if ff.is_tensor(x) and not skip[i] then x:requires_grad(true) end
  end
  local fn = function(...) return case.fn(ff, ...) end
  local ok, report = ff.gradcheck(fn, inputs, case.tol)
  lu.assertTrue(ok, op .. " case " .. k .. " (" .. (case.note or "") .. "): " .. report)
  return fn(table.unpack(inputs)):grad_fn()
end

TestGradcheck = {}

for _, op in ipairs(ff.ops()) do
  TestGradcheck["test_" .. op] = function()
    local list = cases[op]
    lu.assertNotNil(list, "op " .. op .. " has no gradient check in tests/lua/gradcheck/")
    lu.assertTrue(#list > 0, "op " .. op .. " has an empty list of cases")
    local produced = false
    for k, case in ipairs(list) do
      if run_case(op, k, case) == op then produced = true end
    end
    lu.assertTrue(produced, "no case for " .. op .. " returns a result made by " .. op)
  end
end

function TestGradcheck:test_no_cases_for_unknown_ops()
  local known = {}
  for _, op in ipairs(ff.ops()) do known[op] = true end
  for op in pairs(cases) do lu.assertTrue(known[op], "cases for unknown op " .. op) end
end

function TestGradcheck:test_gradcheck_catches_a_wrong_gradient()
  -- a hook that corrupts the gradient must make gradcheck fail
  local x = ff.randn(3, ff.Generator(1)):requires_grad(true)
  local ok = ff.gradcheck(function(a)
    local y = a:matmul(ff.eye(3))
    -- gradcheck re-runs fn under no_grad for the differences: no hook then
    if ff.is_grad_enabled() then y:register_hook(function(g) return g * 2 end) end
    return y
  end, { x })
  lu.assertFalse(ok)
end

os.exit(testlib.run())
