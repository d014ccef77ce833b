-- test_interp: the `firefly` executable driven from outside, through pipes,
-- temp files and signals: options, scripts and their `arg`, exit statuses,
-- the REPL (printing, `;`, multi-line input, errors, Ctrl-C, history).
-- Run from the repository root: ./firefly tests/lua/test_interp.lua
package.path = "tests/lua/?.lua;" .. package.path
local testlib = require "testlib"
local lu = testlib.lu

-- LUA_INIT from the developer's environment would print things of its own.
local FIREFLY = "env -u LUA_INIT -u LUA_INIT_5_4 ./firefly"

local function sh_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

local function write_file(name, content)
  local f = assert(io.open(name, "w"))
  f:write(content)
  f:close()
  return name
end

local function read_file(name)
  local f = io.open(name)
  if not f then return "" end
  local s = f:read("a")
  f:close()
  return s
end

-- Temp files made by a test, removed by teardown.
local temps = {}
local function tmp(content)
  local name = os.tmpname()
  temps[#temps + 1] = name
  if content then write_file(name, content) end
  return name
end

-- Runs the shell command `cmd` with `input` on stdin (a file: not a tty;
-- a pipe inside `cmd` wins). Returns stdout, stderr and the exit status.
local function run(cmd, input)
  local inp, out, err = tmp(input or ""), tmp(), tmp()
  local _, how, code = os.execute(string.format("{ %s; } <%s >%s 2>%s", cmd, inp, out, err))
  if how == "signal" then code = 128 + code end
  return read_file(out), read_file(err), code
end

-- The REPL fed through a pipe, as `printf ... | firefly -i`.
local function repl(input)
  return run(FIREFLY .. " -i", input)
end

local function sleep(seconds)
  os.execute("sleep " .. seconds)
end

-- Polls `done()` every 50 ms for up to `seconds`; returns its last value.
local function wait_for(done, seconds)
  for _ = 1, seconds * 20 do
    if done() then return true end
    sleep(0.05)
  end
  return done()
end

-- Starts `args` (firefly's arguments, without single quotes) in the
-- background with stdin from the file `stdin`. The handle knows the pid
-- (exec keeps the shell's), the output files and, once the process has
-- ended, its exit status. The pid is known before stdin is opened, which
-- may wait (a FIFO).
local function spawn(args, stdin)
  local h = { pidf = tmp(), out = tmp(), err = tmp(), rcf = tmp() }
  os.remove(h.rcf)
  os.execute(string.format(
    "(sh -c 'echo $$ >%s; exec %s %s <%s >%s 2>%s'; echo $? >%s) >/dev/null 2>&1 &",
    h.pidf, FIREFLY, args, stdin, h.out, h.err, h.rcf))
  lu.assertTrue(wait_for(function() return read_file(h.pidf):match("%d+") end, 10),
    "the process did not start")
  h.pid = read_file(h.pidf):match("%d+")
  return h
end

local function signal(h, sig)
  os.execute(string.format("kill -%s %s 2>/dev/null", sig, h.pid))
end

-- Waits for the end of the process (kills it after 10 s); returns its status.
local function finish(h)
  if not wait_for(function() return read_file(h.rcf) ~= "" end, 10) then
    signal(h, "KILL")
    wait_for(function() return read_file(h.rcf) ~= "" end, 5)
    lu.fail("the process did not end; stderr: " .. read_file(h.err))
  end
  return tonumber(read_file(h.rcf))
end

TestInterp = {}

function TestInterp:teardown()
  for _, name in ipairs(temps) do os.remove(name) end
  temps = {}
end

-- REPL ------------------------------------------------------------------

function TestInterp:test_expression_prints_through_a_pipe()
  local out, err, code = run("printf '1+1\\n' | " .. FIREFLY .. " -i")
  lu.assertEquals(out, "2\n")
  lu.assertEquals(err, "")
  lu.assertEquals(code, 0)
end

function TestInterp:test_statement_then_expression()
  local out, err = repl("x = 3;\nx*2\n")
  lu.assertEquals(out, "6\n")
  lu.assertEquals(err, "")
end

function TestInterp:test_trailing_semicolon_silences()
  local out = repl("x = 3\nx*2;\n1+1 ;  \nprint('side effect');\n'shown'\n")
  lu.assertEquals(out, "side effect\nshown\n")
end

function TestInterp:test_tensors_print_whole_and_as_summaries_in_tables()
  local out = repl("ff.ones(2)\n{a = 1, t = ff.zeros(2, 3)}\n")
  lu.assertEquals(out, " 1  1\n[Tensor 2]\n{a = 1, t = [Tensor 2x3]}\n")
end

function TestInterp:test_statements_and_empty_results_print_nothing()
  local out = repl("local y = 1\nf = function() end\nf()\n\n-- a comment\nnil\n")
  lu.assertEquals(out, "nil\n") -- only the expression `nil`
end

function TestInterp:test_multiline_function()
  local out, err = repl("function f(a)\nreturn a+1\nend\nf(1)\n")
  lu.assertEquals(out, "2\n")
  lu.assertEquals(err, "")
end

function TestInterp:test_multiline_statement_and_expression()
  local out = repl("for i = 1, 2 do\n  print(i)\nend\n{1,\n2}\nmath.max(1,\n5)\n")
  lu.assertEquals(out, "1\n2\n{1, 2}\n5\n")
end

function TestInterp:test_incomplete_input_at_eof_is_reported()
  local out, err, code = repl("for i = 1, 2 do\n")
  lu.assertEquals(out, "")
  lu.assertStrContains(err, "<eof>")
  lu.assertEquals(code, 0)
end

function TestInterp:test_runtime_error_keeps_the_session()
  local out, err, code = repl("error('boom')\nprint('after')\n1+2\n")
  lu.assertEquals(out, "after\n3\n")
  lu.assertStrContains(err, "stdin:1: boom")
  lu.assertStrContains(err, "stack traceback:")
  lu.assertEquals(code, 0)
end

function TestInterp:test_syntax_error_is_shown()
  local out, err, code = repl("x = = 1\nprint('ok')\n")
  lu.assertEquals(out, "ok\n")
  lu.assertStrContains(err, "stdin:1:")
  lu.assertStrContains(err, "near '='")
  lu.assertEquals(code, 0)
end

function TestInterp:test_error_objects()
  local _, err = repl("error({})\nerror(setmetatable({}, {__tostring = function() return 'OBJ' end}))\n")
  lu.assertStrContains(err, "(error object is a table value)")
  lu.assertStrContains(err, "OBJ")
end

function TestInterp:test_ff_is_preloaded()
  local out, err = repl("type(ff)\nff == require 'firefly'\n")
  lu.assertEquals(out, "table\ntrue\n")
  lu.assertEquals(err, "")
end

function TestInterp:test_ff_and_help_are_preloaded_in_scripts_and_e()
  local out, err, code = run(FIREFLY .. " -e 'print(type(ff), ff == require \"firefly\", type(help))'")
  lu.assertEquals({ out, err, code }, { "table\ttrue\ttable\n", "", 0 })
  local script = tmp("print(ff.ones(2):sum():item())\nlocal ff2 = require 'firefly'\nprint(ff2 == ff)\n")
  out, err, code = run(FIREFLY .. " " .. script)
  lu.assertEquals({ out, err, code }, { "2.0\ntrue\n", "", 0 })
  -- from stdin as a chunk too
  out = run(FIREFLY, "print(ff.zeros(3):size(1))\n")
  lu.assertEquals(out, "3\n")
end

-- The first example of every spec file, copied into a file as it is, runs
-- under ./firefly and prints what the spec says.
function TestInterp:test_spec_examples_run_as_scripts()
  local n = 0
  for path in io.popen("ls spec/*.md"):lines() do
    local text = read_file(path)
    local code, rest = text:match("```lua\n(.-)```(.*)")
    if code then
      local expected = rest:match("^%s*```output\n(.-)```")
      local out, err, status = run(FIREFLY .. " " .. tmp(code))
      lu.assertEquals({ err, status }, { "", 0 }, path)
      if expected then
        local function trim(s) return (s:gsub("[ \t]+\n", "\n"):gsub("\n+$", "")) end
        lu.assertEquals(trim(out), trim(expected), path)
      end
      n = n + 1
    end
  end
  lu.assertTrue(n >= 8, "spec examples found: " .. n)
end

function TestInterp:test_eof_ends_with_status_0()
  local out, err, code = repl("")
  lu.assertEquals({ out, err, code }, { "", "", 0 })
end

function TestInterp:test_prompts_follow_lua()
  -- Not a terminal: no prompt even when _PROMPT is set.
  local out = repl("_PROMPT = 'ff> '\n1\n")
  lu.assertEquals(out, "1\n")
end

-- Pretty printer ----------------------------------------------------------

function TestInterp:test_print_scalars_and_several_results()
  local out = repl("'x', 2, 2.5, nil, true\n'top level strings are raw'\n")
  lu.assertEquals(out, "x\t2\t2.5\tnil\ttrue\ntop level strings are raw\n")
end

function TestInterp:test_several_results_with_many_lines_each_start_a_line()
  -- tabs as lua when every value fits on a line; a tensor (or any value of
  -- several lines) makes each value start on a line of its own
  local out = repl("1, ff.ones(2), 'x'\nff.zeros(1), ff.ones(1)\n")
  lu.assertEquals(out, "1\n 1  1\n[Tensor 2]\nx\n 0\n[Tensor 1]\n 1\n[Tensor 1]\n")
end

function TestInterp:test_print_tables()
  local out = repl(table.concat({
    "{}",
    "{1, 2, 3}",
    "{b = 1, a = 'x', [10] = true, ['not a name'] = 0, ['end'] = 1}",
    "{1, {a = 1}}",
    "", -- the end
  }, "\n"))
  lu.assertEquals(out, table.concat({
    "{}",
    "{1, 2, 3}",
    '{[10] = true, a = "x", b = 1, ["end"] = 1, ["not a name"] = 0}',
    "{",
    "  1,",
    "  {a = 1}",
    "}",
    "",
  }, "\n"))
end

function TestInterp:test_print_marks_cycles_and_limits_depth()
  local out = repl("t = {} t.self = t return t\n{{{{{1}}}}}\n")
  lu.assertStrContains(out, "{self = <cycle>}")
  lu.assertStrContains(out, "{...}")
end

function TestInterp:test_print_uses_tostring()
  local out = repl("setmetatable({}, {__tostring = function() return 'OBJ' end})\n"
    .. "{setmetatable({}, {__tostring = function() return 'A\\nB' end})}\n")
  lu.assertEquals(out, "OBJ\n{\n  A\n  B\n}\n")
end

function TestInterp:test_print_tensor()
  local ff = require "firefly"
  if type(ff.zeros) ~= "function" then
    lu.skip("ff.zeros is not there yet")
  end
  local out = repl("ff.zeros(2, 3)\n")
  lu.assertEquals(out, tostring(ff.zeros(2, 3)) .. "\n")
end

-- Options and scripts -----------------------------------------------------

function TestInterp:test_e_runs_code_in_order()
  local out, err, code = run(FIREFLY .. " -e 'x = 1' -e 'print(x + 1)' -e'print(\"attached\")'")
  lu.assertEquals(out, "2\nattached\n")
  lu.assertEquals(err, "")
  lu.assertEquals(code, 0)
end

function TestInterp:test_e_error_exits_1()
  local out, err, code = run(FIREFLY .. " -e 'error(\"boom\")' -e 'print(\"not reached\")'")
  lu.assertEquals(out, "")
  lu.assertStrContains(err, "firefly: (command line):1: boom")
  lu.assertStrContains(err, "stack traceback:")
  lu.assertEquals(code, 1)
end

function TestInterp:test_script_gets_arg()
  local script = tmp("print(arg[0], arg[1], arg[2], #arg, arg[-1], arg[-2])\n"
    .. "print(select('#', ...), ...)\n")
  local out, err, code = run(FIREFLY .. " -e 'x=1' " .. script .. " a 'b c'")
  lu.assertEquals(out, script .. "\ta\tb c\t2\tx=1\t-e\n2\ta\tb c\n")
  lu.assertEquals(err, "")
  lu.assertEquals(code, 0)
end

function TestInterp:test_arg_without_script()
  local out = run(FIREFLY .. " -e 'print(arg[0], arg[1], arg[2])'")
  lu.assertEquals(out, "./firefly\t-e\tprint(arg[0], arg[1], arg[2])\n")
end

function TestInterp:test_script_error_exits_1_with_traceback()
  local script = tmp("local function inner() error('bad thing') end\ninner()\n")
  local out, err, code = run(FIREFLY .. " " .. script)
  lu.assertEquals(out, "")
  lu.assertStrContains(err, "firefly: " .. script .. ":1: bad thing\n")
  lu.assertStrContains(err, "stack traceback:")
  lu.assertStrContains(err, "in local 'inner'")
  lu.assertEquals(code, 1)
end

function TestInterp:test_script_syntax_error_and_missing_script()
  local _, err, code = run(FIREFLY .. " " .. tmp("x = = 1\n"))
  lu.assertStrContains(err, "near '='")
  lu.assertEquals(code, 1)
  _, err, code = run(FIREFLY .. " /nonexistent/script.lua")
  lu.assertStrContains(err, "firefly: cannot open /nonexistent/script.lua")
  lu.assertEquals(code, 1)
end

function TestInterp:test_i_after_script()
  local script = tmp("y = 20\n")
  local out, _, code = run(FIREFLY .. " -i " .. script, "y + 1\n")
  lu.assertEquals(out, "21\n")
  lu.assertEquals(code, 0)
end

function TestInterp:test_i_not_reached_when_script_fails()
  local out, err, code = run(FIREFLY .. " -i -e 'error(\"early\")'", "print('repl')\n")
  lu.assertEquals(out, "")
  lu.assertStrContains(err, "early")
  lu.assertEquals(code, 1)
end

function TestInterp:test_version()
  local out, err, code = run(FIREFLY .. " -v")
  lu.assertStrMatches(out, "Firefly %d+%.%d+%.%d+ on Lua 5%.4%.%d+\n")
  local ff = require "firefly"
  if type(ff.version) == "string" then
    lu.assertStrContains(out, "Firefly " .. ff.version .. " on ")
  end
  lu.assertEquals({ err, code }, { "", 0 })
end

function TestInterp:test_help()
  local out, err, code = run(FIREFLY .. " --help")
  for _, word in ipairs({ "usage: firefly", "-e stat", "-i", "-l mod", "-v", "-E",
      "--", "FIREFLY_HISTORY", "LUA_INIT", "LUA_PATH" }) do
    lu.assertStrContains(out, word)
  end
  lu.assertEquals({ err, code }, { "", 0 })
end

-- Every option `firefly grow` parses (an `a == "--x"` in command.lua) is in
-- firefly --help, and so is every subcommand's usage.
function TestInterp:test_help_lists_every_grow_option()
  local out = run(FIREFLY .. " --help")
  local source = read_file("lib/firefly/grow/command.lua")
  local n = 0
  for opt in source:gmatch('a == "(%-%-[%w%-]+)"') do
    if opt ~= "--help" then
      lu.assertStrContains(out, "  " .. opt, false, "firefly --help misses grow's " .. opt)
      n = n + 1
    end
  end
  lu.assertTrue(n >= 4, "grow options found in command.lua: " .. n)
  -- and every option of `firefly export`
  local m = 0
  for opt in read_file("lib/firefly/export/init.lua"):gmatch('a == "(%-%-[%w%-]+)"') do
    if opt ~= "--help" then
      lu.assertStrContains(out, opt, false, "firefly --help misses export's " .. opt)
      m = m + 1
    end
  end
  lu.assertTrue(m >= 2, "export options found: " .. m)
  lu.assertStrContains(out, "usage: firefly export CHECKPOINT")
  lu.assertStrContains(out, "usage: firefly grow RECIPE.lua")
  lu.assertStrContains(out, "key=value")
  lu.assertStrContains(out, "help(")
end

-- make help: one line for each target of .PHONY.
function TestInterp:test_make_help_lists_every_target()
  local out, _, code = run("make --no-print-directory -s help")
  lu.assertEquals(code, 0)
  local phony = read_file("Makefile"):match("\n%.PHONY:([^\n]*)")
  lu.assertNotNil(phony)
  local n = 0
  for target in phony:gmatch("%S+") do
    lu.assertNotNil(out:find("\n  " .. target:gsub("%-", "%%-") .. " +%S[^\n]*\n"), "make help misses " .. target)
    n = n + 1
  end
  lu.assertTrue(n >= 10)
end

function TestInterp:test_help_in_the_repl_prints_the_spec_entry()
  local out, err = repl("help(ff.grow.propose)\nhelp('nn.Linear')\nhelp()\n")
  lu.assertEquals(err, "")
  lu.assertStrContains(out, "ff.grow.propose  (spec/grow.md)\n\n## One growth step: `propose`")
  lu.assertStrContains(out, "| `nn.Linear(in, out")
  lu.assertStrContains(out, "  ff.optim ")
end

function TestInterp:test_bad_options_exit_1_with_usage()
  local out, err, code = run(FIREFLY .. " -Z")
  lu.assertEquals(out, "")
  lu.assertStrContains(err, "unrecognized option '-Z'")
  lu.assertStrContains(err, "usage: firefly")
  lu.assertEquals(code, 1)
  _, err, code = run(FIREFLY .. " -e")
  lu.assertStrContains(err, "'-e' needs an argument")
  lu.assertEquals(code, 1)
end

function TestInterp:test_l_loads_a_module()
  local dir = tmp()
  os.remove(dir)
  os.execute("mkdir " .. dir)
  write_file(dir .. "/mymod.lua", "return {x = 42}\n")
  local env = "LUA_PATH=" .. sh_quote(dir .. "/?.lua;;") .. " "
  local out, err, code = run(env .. FIREFLY .. " -l mymod -e 'print(mymod.x)'")
  lu.assertEquals({ out, err, code }, { "42\n", "", 0 })
  out = run(env .. FIREFLY .. " -l m=mymod -e 'print(m.x, mymod)'")
  lu.assertEquals(out, "42\tnil\n")
  os.execute("rm -r " .. dir)
  _, err, code = run(FIREFLY .. " -l no_such_module")
  lu.assertStrContains(err, "module 'no_such_module' not found")
  lu.assertEquals(code, 1)
end

function TestInterp:test_firefly_is_found_from_anywhere()
  -- package.path gets <exedir>/lib, and firefly.core is linked in.
  local out, err, code = run("d=$(pwd); cd / && env -u LUA_INIT -u LUA_INIT_5_4 \"$d/firefly\""
    .. " -l ff=firefly -e 'print(type(ff), package.preload[\"firefly.core\"] ~= nil)'")
  lu.assertEquals({ out, err, code }, { "table\ttrue\n", "", 0 })
end

function TestInterp:test_lua_init_and_E()
  local init = "env -u LUA_INIT_5_4 LUA_INIT='print(\"init\")' ./firefly"
  lu.assertEquals(run(init .. " -e 'print(1)'"), "init\n1\n")
  lu.assertEquals(run(init .. " -E -e 'print(1)'"), "1\n")
  -- The versioned name wins; @file runs a file.
  lu.assertEquals(run("env LUA_INIT_5_4='print(54)' LUA_INIT='print(1)' ./firefly -e ''"), "54\n")
  local file = tmp("print('from file')\n")
  lu.assertEquals(run("env LUA_INIT_5_4=@" .. file .. " ./firefly -e ''"), "from file\n")
  -- A failing LUA_INIT stops everything.
  local _, err, code = run("env LUA_INIT_5_4='error(\"bad init\")' ./firefly -e 'print(1)'")
  lu.assertStrContains(err, "bad init")
  lu.assertEquals(code, 1)
end

function TestInterp:test_E_ignores_lua_path()
  local check = " -e 'print(package.path:find(\"/nowhere/\", 1, true) ~= nil)'"
  lu.assertEquals(run("LUA_PATH='/nowhere/?.lua' " .. FIREFLY .. check), "true\n")
  lu.assertEquals(run("LUA_PATH='/nowhere/?.lua' " .. FIREFLY .. " -E" .. check), "false\n")
end

-- stdin -------------------------------------------------------------------

function TestInterp:test_stdin_not_a_tty_runs_as_a_chunk()
  local out, err, code = run("echo 'print(7)' | " .. FIREFLY)
  lu.assertEquals({ out, err, code }, { "7\n", "", 0 })
  -- A chunk, not lines: `1+1` alone is not a statement.
  _, err, code = run(FIREFLY, "1+1\n")
  lu.assertStrContains(err, "firefly: stdin:1:")
  lu.assertEquals(code, 1)
end

function TestInterp:test_dash_runs_stdin_with_args()
  local out, _, code = run(FIREFLY .. " - a b", "print(arg[0], ...)\n")
  lu.assertEquals({ out, code }, { "-\ta\tb\n", 0 })
  _, _, code = run(FIREFLY .. " -", "error('x')\n")
  lu.assertEquals(code, 1)
end

function TestInterp:test_double_dash_stops_options()
  local script = tmp("print(...)\n")
  local out, _, code = run(FIREFLY .. " -- " .. script .. " -e -i")
  lu.assertEquals({ out, code }, { "-e\t-i\n", 0 })
end

-- Ctrl-C ------------------------------------------------------------------
-- Each test waits until the Lua code has said "ready" before sending
-- SIGINT, so no sleep decides the outcome; a process that survives a lost
-- signal is killed after 10 s and fails the test instead of hanging.

function TestInterp:test_sigint_interrupts_a_script()
  local script = tmp("io.write('ready\\n') io.stdout:flush() while true do end\n")
  local h = spawn(script, "/dev/null")
  lu.assertTrue(wait_for(function() return read_file(h.out) == "ready\n" end, 10))
  signal(h, "INT")
  lu.assertEquals(finish(h), 1)
  local err = read_file(h.err)
  lu.assertStrContains(err, "firefly: interrupted!")
  lu.assertStrContains(err, "stack traceback:")
end

function TestInterp:test_sigint_interrupts_a_repl_chunk_not_the_session()
  local input = tmp("io.write('ready\\n') io.stdout:flush() while true do end\nprint(42)\n")
  local h = spawn("-i", input)
  lu.assertTrue(wait_for(function() return read_file(h.out) ~= "" end, 10))
  signal(h, "INT")
  lu.assertEquals(finish(h), 0)
  lu.assertEquals(read_file(h.out), "ready\n42\n")
  lu.assertStrContains(read_file(h.err), "interrupted!")
end

function TestInterp:test_sigint_at_the_prompt_keeps_the_session()
  -- The REPL waits on a FIFO that this test writes to (opened after the
  -- spawn, so that no child inherits a write end and EOF can come).
  local fifo = tmp()
  os.remove(fifo)
  lu.assertTrue(os.execute("mkfifo " .. fifo))
  local h = spawn("-i", fifo)
  local w = assert(io.open(fifo, "w")) -- meets the REPL's open
  w:write("print(1)\n")
  w:flush()
  lu.assertTrue(wait_for(function() return read_file(h.out) == "1\n" end, 10))
  -- Now it waits for a line (or finishes print(1): then it reports an
  -- interrupted chunk, which is fine too). Either way it must go on.
  signal(h, "INT")
  sleep(0.2)
  w:write("print(2)\n")
  w:close()
  lu.assertEquals(finish(h), 0)
  lu.assertEquals(read_file(h.out), "1\n2\n")
end

-- Ctrl-C during train.fit and grow.run: they stop after the batch and
-- return what they did (here without a terminal: no progress line; the
-- terminal's side is in test_repl_tty.lua).
local fit_script = [[
ff.manual_seed(1)
local ds = ff.data.DataLoader(ff.data.two_moons{n = 64, noise = 0.1, seed = 1},
  {batch_size = 32, generator = ff.Generator(1)})
local net = ff.nn.mlp{2, 4, 2}
local opt = ff.optim.SGD(net:named_parameters(), {lr = 0.1})
local rows
if arg[1] == "fit" then
  rows = ff.train.fit{model = net, optim = opt, data = ds, epochs = 1000000,
    on_epoch = function(e) if e == 3 then io.write("ready\n") io.stdout:flush() end end}
else
  rows = ff.grow.run{net = net, optim = opt, data = ds, phases = 100000, eta = 1,
    on_phase = function(t) if t == 2 then io.write("ready\n") io.stdout:flush() end end}
end
print("returned", #rows >= 2, rows.interrupted, rows[#rows].epoch or rows[#rows].phase)
print("after")
]]

local function interrupt_loop(which)
  local h = spawn(tmp(fit_script) .. " " .. which, "/dev/null")
  lu.assertTrue(wait_for(function() return read_file(h.out):find("ready\n") ~= nil end, 10))
  signal(h, "INT")
  lu.assertEquals(finish(h), 0, read_file(h.err))
  local out, err = read_file(h.out), read_file(h.err)
  lu.assertNotNil(out:find("returned\ttrue\ttrue\t%d+\nafter\n"), out:sub(-3000))
  lu.assertNotStrContains(err, "traceback")
  return out, err
end

function TestInterp:test_sigint_stops_train_fit_which_returns_its_rows()
  local _, err = interrupt_loop("fit")
  lu.assertNotNil(err:find("train%.fit: interrupted in epoch %d+; %d+ epochs done\n"), err:sub(-3000))
end

function TestInterp:test_sigint_stops_grow_run_which_returns_its_rows()
  local out, err = interrupt_loop("grow")
  lu.assertNotNil(err:find("grow%.run: interrupted; %d+ phases done\n"), err:sub(-3000))
  lu.assertNotStrContains(err, "train.fit: interrupted") -- the outer loop says it
  lu.assertStrContains(out, "phase  widths  params") -- the table of the phases done
  lu.assertNotStrContains(err, "run ETA") -- no progress line off a terminal
  lu.assertNotStrContains(err, "\r")
end

function TestInterp:test_os_execute_results_and_sigint_while_it_waits()
  local out = run(FIREFLY .. [[ -e 'print(os.execute("exit 3")); print(os.execute("true")); ]]
    .. [[print(os.execute()); print(os.execute("kill -INT $$"))']])
  lu.assertEquals(out, "nil\texit\t3\ntrue\texit\t0\ntrue\nnil\tsignal\t2\n") -- as lua5.4's
  -- system() would ignore a Ctrl-C that comes while the child runs
  local h = spawn(tmp("io.write('ready\\n') io.stdout:flush() os.execute('sleep 1') print('after')\n"), "/dev/null")
  lu.assertTrue(wait_for(function() return read_file(h.out) == "ready\n" end, 10))
  signal(h, "INT")
  lu.assertEquals(finish(h), 1)
  lu.assertEquals(read_file(h.out), "ready\n")
  lu.assertStrContains(read_file(h.err), "interrupted!")
end

function TestInterp:test_a_second_sigint_interrupts_at_once()
  -- the loop that stops after its batch may be stuck in one: Ctrl-C again
  local script = tmp([[
local ds = ff.data.two_moons{n = 64, noise = 0.1, seed = 1}
local net = ff.nn.mlp{2, 4, 2}
ff.train.fit{model = net, optim = ff.optim.SGD(net:named_parameters(), {lr = 0.1}), data = ds,
  epochs = 10, quiet = true, on_step = function()
    io.write("ready\n") io.stdout:flush()
    while true do end
  end}
]])
  local h = spawn(script, "/dev/null")
  lu.assertTrue(wait_for(function() return read_file(h.out) == "ready\n" end, 10))
  signal(h, "INT")
  sleep(0.2)
  signal(h, "INT")
  lu.assertEquals(finish(h), 1)
  lu.assertStrContains(read_file(h.err), "interrupted!")
end

-- History -----------------------------------------------------------------
-- History is kept only when stdin is a terminal (readline), so this test
-- runs the REPL under script(1), which gives it a pseudo-terminal.

function TestInterp:test_history_goes_to_FIREFLY_HISTORY()
  if not os.execute("command -v script >/dev/null 2>&1") then
    lu.skip("script(1) (util-linux) is not installed: no pseudo-terminal")
  end
  local hist = tmp()
  os.remove(hist)
  local out, _, code = run("FIREFLY_HISTORY=" .. hist
    .. " script -qec 'env -u LUA_INIT -u LUA_INIT_5_4 ./firefly -i' /dev/null",
    "x = 41\nx + 1\nx + 1\n")
  lu.assertEquals(code, 0)
  lu.assertStrContains(out, "Firefly ") -- the banner, on a terminal only
  lu.assertStrContains(out, "42")
  -- Repeated lines are kept once; each entry follows its "#<time>" line.
  lu.assertStrMatches(read_file(hist), "#%d+\nx = 41\n#%d+\nx %+ 1\n")
end

os.exit(testlib.run())
