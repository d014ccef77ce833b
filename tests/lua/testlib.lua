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

-- Examples of one markdown file: { {code=, output=, line=} ... }
function M.spec_examples(path)
  local f = assert(io.open(path))
  local text = f:read("a")
  f:close()
  local found, pos, prev_end = {}, 1, nil
  while true do
    local s, e, lang, body = text:find("```(%w*)\n(.-)```", pos)
    if not s then break end
    local _, line = text:sub(1, s):gsub("\n", "")
    if lang == "lua" then
      found[#found + 1] = { code = body, line = line + 2 }
      prev_end = e
    elseif lang == "output" and prev_end and text:sub(prev_end + 1, s - 1):match("^%s*$") then
      found[#found].output = body
      prev_end = nil
    else
      prev_end = nil
    end
    pos = e + 1
  end
  return found
end

-- Error message of fn(...) (fails the test when fn does not raise).
function M.error_of(fn, ...)
  local ok, err = pcall(fn, ...)
  lu.assertFalse(ok, "expected an error")
  return tostring(err)
end

-- A proposal's over-grown network with only the selected candidates at
-- their chosen steps ε̂·dir (every other step zero): what apply must
-- materialise, for the growth tests that compare the two.
function M.restrict_to_selection(p)
  local ff = require "firefly"
  local chosen = {}
  for _, c in ipairs(p.selected) do chosen[c.unit .. c.kind .. c.index] = c end
  ff.no_grad(function()
    for k, cand in ipairs(p.og.units) do
      local v = cand.split.v
      for i = 1, v:size(1) do
        local c = chosen[k .. "split" .. i]
        if c then v[i]:mul_(c.eps_hat * c.dir / v[i]:norm():item()) else v[i]:zero_() end
      end
      for _, kind in ipairs { "new", "layer" } do
        local e = cand[kind].e
        for i = 1, e:size(1) do
          local c = chosen[k .. kind .. i]
          e[i] = c and c.eps_hat * c.dir or 0
        end
      end
    end
  end)
end

-- The float32 bytes of a tensor's values (equal bytes, not just equal
-- values: -0 and 0, or two NaNs, tell apart).
function M.float_bytes(t)
  local flat = t:contiguous():view(-1):totable()
  local parts = {}
  for i, v in ipairs(flat) do parts[i] = string.pack("<f", v) end
  return table.concat(parts)
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

-- Multiply-adds per example of every Linear and Conv2d layer (weight
-- entries times output positions), counted on a forward pass.
function M.macs(net, x)
  local total = 0
  local patched = {}
  net:apply(function(m)
    local cls = getmetatable(m).__name
    if cls == "Linear" or cls == "Conv2d" then
      patched[#patched + 1] = m
      local fwd = getmetatable(m).forward
      m.forward = function(self, input)
        local out = fwd(self, input)
        total = total + m.weight:numel() * (out:dim() == 4 and out:size(3) * out:size(4) or 1)
        return out
      end
    end
  end)
  require("firefly").no_grad(net, x:narrow(1, 1, 1))
  for _, m in ipairs(patched) do m.forward = nil end
  return total
end

-- The environment prefix for running stock lua5.4 on the module: under
-- `make SANITIZE=1 test` the module is built with ASan, which must be
-- loaded before anything else when an uninstrumented lua5.4 loads it.
function M.stock_lua_preload()
  if os.getenv("SANITIZE") ~= "1" then return "" end
  local p = io.popen("${CC:-cc} -print-file-name=libasan.so")
  local path = p:read("l")
  p:close()
  return "LD_PRELOAD=" .. path .. " ASAN_OPTIONS=detect_leaks=0 "
end

return M
