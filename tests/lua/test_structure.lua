-- test_structure: the shape of the library, as the style guide asks for
-- it: no require cycles between modules, grow/ in small files that never
-- read a container's private fields or compare class names (modules say
-- what they are), and no reference to a document the repository lacks.
package.path = "tests/lua/?.lua;" .. package.path
local testlib = require "testlib"
local lu = testlib.lu

local function lines_of(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function lua_files(dir)
  local list = {}
  local p = assert(io.popen("find " .. dir .. " -name '*.lua' | sort"))
  for line in p:lines() do list[#list + 1] = line end
  p:close()
  return list
end

-- "lib/firefly/grow/select.lua" -> "firefly.grow.select"
local function module_of(path)
  local m = path:gsub("^lib/", ""):gsub("%.lua$", ""):gsub("/", ".")
  return (m:gsub("%.init$", ""))
end

TestStructure = {}

-- Every require a module makes, at load or inside a function, is an edge;
-- a cycle means two modules should be split differently (a require inside
-- a function only hides it).
function TestStructure:test_no_require_cycles()
  local edges, known = {}, {}
  for _, path in ipairs(lua_files("lib/firefly")) do known[module_of(path)] = path end
  for name, path in pairs(known) do
    edges[name] = {}
    for dep in lines_of(path):gmatch("require%s*%(?%s*[\"']([%w%._]+)[\"']") do
      if known[dep] and dep ~= "firefly" and dep ~= name then edges[name][#edges[name] + 1] = dep end
    end
  end
  local state, stack = {}, {}
  local function visit(n)
    state[n] = "open"
    stack[#stack + 1] = n
    for _, d in ipairs(edges[n]) do
      if state[d] == "open" then
        local cycle = {}
        for i = #stack, 1, -1 do
          table.insert(cycle, 1, stack[i])
          if stack[i] == d then break end
        end
        cycle[#cycle + 1] = d
        lu.fail("require cycle: " .. table.concat(cycle, " -> "))
      elseif not state[d] then
        visit(d)
      end
    end
    stack[#stack] = nil
    state[n] = "done"
  end
  local names = {}
  for n in pairs(edges) do names[#names + 1] = n end
  table.sort(names)
  for _, n in ipairs(names) do if not state[n] then visit(n) end end
end

function TestStructure:test_grow_files_are_small_and_ask_modules()
  for _, path in ipairs(lua_files("lib/firefly/grow")) do
    local s = lines_of(path)
    local n = select(2, s:gsub("\n", "\n"))
    lu.assertTrue(n <= 400, path .. " has " .. n .. " lines")
    lu.assertNil(s:find("%f[%w_]_children", 1), path .. " reads _children")
    lu.assertNil(s:find("__name", 1, true), path .. " reads a class name")
    for _, cls in ipairs { "Linear", "Conv2d", "BatchNorm1d", "BatchNorm2d", "MaxPool2d", "AvgPool2d", "Flatten",
      "GlobalAvgPool", "Dropout", "Residual", "Sequential", "Identity" } do
      lu.assertNil(s:find("== \"" .. cls .. "\"", 1, true), path .. " compares a class name: " .. cls)
      lu.assertNil(s:find("~= \"" .. cls .. "\"", 1, true), path .. " compares a class name: " .. cls)
    end
  end
end

-- One checker for option tables (firefly.options: one message shape, the
-- nearest known key): no module writes its own "unknown option" loop.
-- (grow/command.lua names unknown command-line flags, through the same
-- options.hint.)
function TestStructure:test_one_options_checker()
  for _, path in ipairs(lua_files("lib/firefly")) do
    if not path:find("options%.lua$") and not path:find("grow/command%.lua$") then
      local s = lines_of(path)
      lu.assertNil(s:find("unknown option '", 1, true), path .. " writes its own unknown-option message")
    end
  end
end

function TestStructure:test_no_references_to_missing_documents()
  for _, dir in ipairs { "lib", "spec", "examples" } do
    local p = assert(io.popen("grep -rln 'firefly-method.md' " .. dir .. " 2>/dev/null"))
    local hits = p:read("a")
    p:close()
    lu.assertEquals(hits, "", "references to firefly-method.md, which is not in the repository")
  end
end

os.exit(testlib.run())
