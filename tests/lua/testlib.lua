-- testlib: shared by the LuaUnit suites. run() runs the suite and prints the
-- line the test runner sums ("<suite>: N passed, N failed").
package.path = "tests/lua/?.lua;" .. package.path
local lu = require "luaunit"

local M = { lu = lu }

function M.run()
  local runner = lu.LuaUnit.new()
  runner:setOutputType("text")
  runner:runSuite()
  local r = runner.result
  local failed = r.notSuccessCount
  local passed = r.runCount - failed - (r.skippedCount or 0)
  local suite = (arg and arg[0] or "suite"):match("([^/]+)%.lua$") or "suite"
  print(string.format("%s: %d passed, %d failed", suite, passed, failed))
  return failed == 0 and 0 or 1
end

-- Error message of fn(...) (fails the test when fn does not raise).
function M.error_of(fn, ...)
  local ok, err = pcall(fn, ...)
  lu.assertFalse(ok, "expected an error")
  return tostring(err)
end

-- A whole file as a string (fails the test when it cannot be read).
function M.read_file(path)
  local f = assert(io.open(path, "rb"))
  local data = f:read("a")
  f:close()
  return data
end

function M.write_file(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

return M
