-- test_spec: every ```lua example in spec/*.md runs as a test, so the
-- reference cannot rot. An example followed directly by an ```output block
-- must print exactly that (trailing spaces ignored).
package.path = "tests/lua/?.lua;" .. package.path
local testlib = require "testlib"
local lu = testlib.lu
local ff = require "firefly"

local function trim_lines(s)
  return (s:gsub("[ \t]+\n", "\n"):gsub("\n+$", ""))
end

local examples = testlib.spec_examples

TestSpec = {}

local function run_example(path, ex)
  local out = {}
  local env = setmetatable({ ff = ff }, { __index = _G })
  env.print = function(...)
    local parts = table.pack(...)
    for i = 1, parts.n do parts[i] = tostring(parts[i]) end
    out[#out + 1] = table.concat(parts, "\t", 1, parts.n)
  end
  local chunk, err = load(ex.code, "=" .. path .. ":" .. ex.line, "t", env)
  lu.assertNotNil(chunk, err)
  chunk()
  if ex.output then
    lu.assertEquals(trim_lines(table.concat(out, "\n")), trim_lines(ex.output),
      path .. ":" .. ex.line .. ": printed output differs")
  end
end

local files = {}
for f in io.popen("ls spec/*.md 2>/dev/null"):lines() do files[#files + 1] = f end
for _, path in ipairs(files) do
  for i, ex in ipairs(examples(path)) do
    local name = path:match("([^/]+)%.md$") .. "_" .. string.format("%03d", i) .. "_line" .. ex.line
    TestSpec["test_" .. name] = function() run_example(path, ex) end
  end
end

os.exit(testlib.run())
