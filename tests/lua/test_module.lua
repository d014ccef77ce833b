-- test_module: the module loads from stock lua5.4 (LUA_PATH/LUA_CPATH as the
-- README says), from an installed tree (make install PREFIX=...) and from a
-- LuaRocks tree (luarocks make); a C program builds against the installed
-- engine with pkg-config; the man page is installed and well formed.
package.path = "tests/lua/?.lua;" .. package.path
local testlib = require "testlib"
local lu = testlib.lu

local preload = testlib.stock_lua_preload()

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
  -- C users: headers, libfirefly (static and shared) and firefly.pc
  local sanitize = os.getenv("SANITIZE") == "1" and "-fsanitize=address,undefined " or ""
  local pc = "PKG_CONFIG_PATH='" .. prefix .. "/lib/pkgconfig' "
  ok, out = run(pc .. "pkg-config --cflags --libs firefly")
  lu.assertTrue(ok, out)
  lu.assertStrContains(out, "-I" .. prefix .. "/include/firefly")
  lu.assertStrContains(out, "-lfirefly")
  local exe = prefix .. "/matmul_backward"
  ok, out = run("${CC:-cc} " .. sanitize .. "-o " .. exe .. " tests/install/matmul_backward.c $(" ..
    pc .. "pkg-config --cflags --libs firefly)")
  lu.assertTrue(ok, out)
  ok, out = run("ASAN_OPTIONS=detect_leaks=0 LD_LIBRARY_PATH='" .. prefix .. "/lib' " .. exe)
  lu.assertTrue(ok, out)
  lu.assertEquals(out, "sum 30 grad 1 1 2 1 1 2\n")
  -- the same program linked statically
  ok, out = run("${CC:-cc} " .. sanitize .. "-o " .. exe .. "_static tests/install/matmul_backward.c $(" ..
    pc .. "pkg-config --static --cflags firefly) " .. prefix .. "/lib/libfirefly.a $(" .. pc ..
    "pkg-config --static --libs-only-l firefly | sed 's/-lfirefly//') && " .. exe .. "_static")
  lu.assertTrue(ok, out)
  lu.assertStrContains(out, "sum 30 grad 1 1 2 1 1 2")
  -- the man page, with every subcommand
  ok, out = run("MANWIDTH=80 man -l " .. prefix .. "/share/man/man1/firefly.1 | col -b")
  lu.assertTrue(ok, out)
  for _, s in ipairs { "firefly grow", "firefly export", "--to torch", "--input-shape", "-e stat",
    "LUA_INIT", "FIREFLY_HISTORY", "--resume" } do
    lu.assertStrContains(out, s)
  end
  ok, out = run("groff -man -Tutf8 -ww -z " .. prefix .. "/share/man/man1/firefly.1")
  lu.assertTrue(ok, out)
  lu.assertEquals(out, "")
  lu.assertNotNil(io.open(prefix .. "/share/firefly/firefly_torch.py"))
  os.execute("rm -rf '" .. prefix .. "'")
end

-- luarocks make (the top-level rockspec) into a temporary tree: stock
-- lua5.4 requires the module from there, and the rock's interpreter runs.
function TestModule:test_luarocks_make()
  local tree = os.tmpname()
  os.remove(tree)
  local rocks = "luarocks --lua-version 5.4 --tree '" .. tree .. "' "
  local ok, out = run(rocks .. "make")
  lu.assertTrue(ok, out)
  lu.assertStrContains(out, "firefly 0.1.0-1 is now installed")
  ok, out = run("cd / && eval \"$(" .. rocks .. "path)\" && " ..
    "lua5.4 -e 'local ff = require \"firefly\"; print(ff.eye(3):sum():item(), " ..
    "package.searchpath(\"firefly.core\", package.cpath))'")
  lu.assertTrue(ok, out)
  lu.assertStrContains(out, "3.0\t" .. tree .. "/lib/lua/5.4/firefly/core.so")
  ok, out = run("cd / && " .. tree .. "/bin/firefly -e 'print(require(\"firefly\").ones(2):sum():item())'")
  lu.assertTrue(ok, out)
  lu.assertStrContains(out, "2.0")
  os.execute("rm -rf '" .. tree .. "'")
end

os.exit(testlib.run())
