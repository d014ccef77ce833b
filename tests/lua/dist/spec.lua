-- Every example of spec/dist.md on each rank of an mpirun job (started by
-- test_dist.lua). Prints "rank R: N passed, N failed" and the failures.
package.path = "tests/lua/?.lua;" .. package.path
local testlib = require "testlib"
local ff = require "firefly"
local d = ff.dist

local function trim_lines(s)
  return (s:gsub("[ \t]+\n", "\n"):gsub("\n+$", ""))
end

local passed, failed = 0, 0
for i, ex in ipairs(testlib.spec_examples("spec/dist.md")) do
  local out = {}
  local env = setmetatable({ ff = ff }, { __index = _G })
  env.print = function(...)
    local parts = table.pack(...)
    for k = 1, parts.n do parts[k] = tostring(parts[k]) end
    out[#out + 1] = table.concat(parts, "\t", 1, parts.n)
  end
  local chunk, err = load(ex.code, "=spec/dist.md:" .. ex.line, "t", env)
  local ok = chunk ~= nil
  if ok then ok, err = pcall(chunk) end
  if ok and ex.output and trim_lines(table.concat(out, "\n")) ~= trim_lines(ex.output) then
    ok, err = false, "printed output differs:\n" .. table.concat(out, "\n")
  end
  if ok then passed = passed + 1 else
    failed = failed + 1
    print(string.format("rank %d: example %d (line %d) failed: %s", d.rank(), i, ex.line, tostring(err)))
  end
end
d.barrier()
print(string.format("rank %d: %d passed, %d failed", d.rank(), passed, failed))
