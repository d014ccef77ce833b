-- test_module: the module loads from stock lua5.4 (LUA_PATH/LUA_CPATH as the
-- README says) and from an installed tree (make install PREFIX=...).
package.path = "tests/lua/?.lua;" .. package.path
local testlib = require "testlib"
local lu = testlib.lu

-- Under `make SANITIZE=1 test` the module is built with ASan, which must be
-- loaded before anything else when a stock (uninstrumented) lua5.4 loads it.
local preload = ""
if os.getenv("SANITIZE") == "1" then
  local p = io.popen("${CC:-cc} -print-file-name=libasan.so")
  preload = "LD_PRELOAD=" .. p:read("l") .. " ASAN_OPTIONS=detect_leaks=0 "
  p:close()
end

local function run(cmd)
  cmd = cmd:gsub("lua5%.4 ", preload .. "lua5.4 ")
  local p = io.popen(cmd .. " 2>&1")
  local out = p:read("a")
  local ok = p:close()
  return ok, out
end

TestModule = {}

function TestModule:test_stock_lua_loads_the_module()
  local ok, out = run([[LUA_PATH='lib/?.lua;lib/?/init.lua;;' LUA_CPATH='build/?.so;;' ]] ..
    [[lua5.4 -e 'local ff = require "firefly"; print(ff.eye(2):sum():item(), ff.version)']])
  lu.assertTrue(ok, out)
  lu.assertStrContains(out, "2.0")
end

function TestModule:test_make_install_prefix()
  local prefix = os.tmpname()
  os.remove(prefix)
  local ok, out = run("make -s install PREFIX=" .. prefix)
  lu.assertTrue(ok, out)
  -- the installed interpreter finds its library from anywhere
  ok, out = run("cd / && " .. prefix .. "/bin/firefly -e 'print(ff == nil, require(\"firefly\").ones(3):sum():item())'")
  lu.assertTrue(ok, out)
  lu.assertStrContains(out, "3.0")
  ok, out = run("cd / && LUA_PATH='" .. prefix .. "/share/lua/5.4/?.lua;" .. prefix ..
    "/share/lua/5.4/?/init.lua;;' LUA_CPATH='" .. prefix .. "/lib/lua/5.4/?.so;;' " ..
    "lua5.4 -e 'print(require(\"firefly\").zeros(2, 2):numel())'")
  lu.assertTrue(ok, out)
  lu.assertStrContains(out, "4")
  os.execute("rm -rf '" .. prefix .. "'")
end

os.exit(testlib.run())
