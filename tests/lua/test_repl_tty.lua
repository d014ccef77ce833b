-- test_repl_tty: what the `firefly` REPL does on a terminal, driven through
-- a pseudo-terminal (tests/lua/pty_session.py): Tab completion of lazily
-- loaded modules and tensor methods, multi-line history entries, and Ctrl-C
-- during train.fit and grow.run (the progress line cleared, what was done
-- returned), with grow.run's whole-run progress line.
-- Run from the repository root: ./firefly tests/lua/test_repl_tty.lua
package.path = "tests/lua/?.lua;" .. package.path
local testlib = require "testlib"
local lu = testlib.lu

local function sh_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

local function read_file(name)
  local f = io.open(name)
  if not f then return "" end
  local s = f:read("a")
  f:close()
  return s
end

local temps = {}
local function tmpdir()
  local name = os.tmpname()
  os.remove(name)
  assert(os.execute("mkdir " .. name))
  temps[#temps + 1] = name
  return name
end

-- Runs `./firefly args` on a terminal whose HOME is `home` (history goes
-- to home/.firefly_history) and plays `actions` (see pty_session.py).
-- Returns what the terminal showed and the exit status. TERM is set: CI
-- runners often have none, and the line editor's echo differs on a dumb
-- terminal.
local function session(home, args, actions)
  local cmd = "exec env -u LUA_INIT -u LUA_INIT_5_4 -u FIREFLY_HISTORY HOME=" .. home
    .. " TERM=xterm COLUMNS=200 ./firefly " .. args
  local parts = { "python3 tests/lua/pty_session.py", sh_quote(cmd) }
  for _, a in ipairs(actions) do parts[#parts + 1] = sh_quote(a) end
  local out = os.tmpname()
  local _, _, code = os.execute(table.concat(parts, " ") .. " >" .. out .. " 2>&1")
  local text = read_file(out)
  os.remove(out)
  return text, code
end

local PROMPT = "wait:> $" -- a prompt waiting, nothing typed after it

TestReplTty = {}

function TestReplTty:setUp()
  if not os.execute("command -v python3 >/dev/null 2>&1") then
    lu.fail("python3 is needed to drive a pseudo-terminal (make deps installs it)")
  end
end

function TestReplTty:tearDown()
  for _, d in ipairs(temps) do os.execute("rm -rf " .. d) end
  temps = {}
end

function TestReplTty:test_tab_completes_lazy_modules_and_tensor_methods()
  local out, code = session(tmpdir(), "", {
    "wait:> ", "send:rawget(ff, 'grow') == nil\n", "wait:true",
    -- ff.grow is not loaded yet: completed from ff's __submodules
    "send:x1 = ff.gro\t", [[wait:ff\.grow]], "send:.propo\t", "wait:propose", "send:\n", PROMPT,
    "send:x1 == ff.grow.propose\n", "wait:true",
    -- a dotted name inside help("...")
    "send:help('optim.clip_g\t", "wait:clip_grad_norm'", "send:)\n", [[wait:ff\.optim\.clip_grad_norm  \(spec/optim\.md\)]],
    PROMPT,
    "send:t = ff.zeros(2, 3)\n", PROMPT,
    "send:t:trans\t", "wait:transpose", "send:(1, 2):size(1)\n", "wait:[\r\n]3\r\n", PROMPT,
    "send:\4",
  })
  lu.assertEquals(code, 0, out:sub(-3000))
  lu.assertStrContains(out, "x1 = ff.grow.propose")
  lu.assertStrContains(out, "t:transpose(1, 2)")
end

function TestReplTty:test_a_multiline_entry_is_one_history_entry()
  local home = tmpdir()
  local out, code = session(home, "", {
    "wait:> ", "send:function inc(a)\n", "wait:>> ", "send:return a + 1\n", "wait:>> ", "send:end\n",
    PROMPT, "send:inc(1)\n", "wait:2", PROMPT, "send:\4",
  })
  lu.assertEquals(code, 0, out:sub(-3000))
  local entries = {}
  for entry in (read_file(home .. "/.firefly_history") .. "#0\n"):gmatch("#%d+\n(.-)\n%f[#]") do
    entries[#entries + 1] = entry
  end
  lu.assertEquals(entries, { "function inc(a)\nreturn a + 1\nend", "inc(1)" })
  -- a new session recalls the definition whole: two steps up, Enter
  out, code = session(home, "", {
    "wait:> ", "send:\27[A\27[A", "wait:end", "send:\n", PROMPT, "send:inc(41)\n", "wait:42", PROMPT, "send:\4",
  })
  lu.assertEquals(code, 0, out:sub(-3000))
  lu.assertStrContains(out, "42")
  lu.assertNotStrContains(out, "attempt to call")
end

local setup = [[
ff.manual_seed(1)
ds = ff.data.DataLoader(ff.data.two_moons{n = 64, noise = 0.1, seed = 1}, {batch_size = 16, generator = ff.Generator(1)})
net = ff.nn.mlp{2, 4, 2}
opt = ff.optim.SGD(net:named_parameters(), {lr = 0.1})
]]

local function setup_file()
  local dir = tmpdir()
  local f = assert(io.open(dir .. "/setup.lua", "w"))
  f:write(setup)
  f:close()
  return dir, dir .. "/setup.lua"
end

function TestReplTty:test_ctrl_c_in_train_fit_clears_the_bar_and_returns_the_epochs_done()
  local home, script = setup_file()
  local out, code = session(home, "-i " .. script, {
    "wait:> ", "send:h = ff.train.fit{model = net, optim = opt, data = ds, epochs = 1000000, "
      .. "on_epoch = function(e) if e == 5 then print(('ydaer'):reverse()) end end}\n",
    "wait:ready", [=[wait:\[=+ *\]]=], -- a bar on screen
    "send:\3", PROMPT, "send:#h >= 5, h.interrupted, h[#h].epoch == #h\n", "wait:true\ttrue\ttrue", PROMPT,
    "send:\4",
  })
  lu.assertEquals(code, 0, out:sub(-3000))
  -- the line is cleared ("\r" + erase) right before the note, no traceback
  lu.assertNotNil(out:find("\r\27%[Ktrain%.fit: interrupted in epoch %d+; %d+ epochs done\r\n"), out:sub(-3000))
  lu.assertNotStrContains(out, "traceback")
  lu.assertNotStrContains(out, "interrupted!")
end

function TestReplTty:test_ctrl_c_in_grow_run_shows_whole_run_progress_and_returns_the_phases_done()
  local home, script = setup_file()
  local out, code = session(home, "-i " .. script, {
    "wait:> ", "send:rows = ff.grow.run{net = net, optim = opt, data = ds, phases = 100000, epochs = 2, eta = 1, "
      .. "on_phase = function(t) if t == 3 then print(('ydaer'):reverse()) end end}\n",
    "wait:ready", [[wait:phase \d+/100000 +\d+% run ETA [\d:-]+ \| phase \d+ epoch \d+ \[]],
    "send:\3", PROMPT, "send:#rows >= 3, rows.interrupted, rows[#rows].phase == #rows\n",
    "wait:true\ttrue\ttrue", PROMPT, "send:\4",
  })
  lu.assertEquals(code, 0, out:sub(-3000))
  lu.assertNotNil(out:find("\r\27%[Kgrow%.run: interrupted; %d+ phases done\r\n"), out:sub(-3000))
  lu.assertNotStrContains(out, "train.fit: interrupted")
  lu.assertNotStrContains(out, "traceback")
  -- one line: every redraw fits in the terminal's width (COLUMNS = 200)
  local draws = 0
  for line in out:gmatch("\r([^\r\n]*)\27%[K") do
    draws = draws + 1
    lu.assertTrue(#line < 200, line)
  end
  lu.assertTrue(draws > 3)
  -- the table of the phases done
  lu.assertNotNil(out:find("phase  widths  params  train loss[^\r]*\r\n +1  4 "), out:sub(-3000))
end

-- `firefly grow` on a terminal: Ctrl-C reaches the whole foreground
-- group, gnuplot drawing the run's plots included; the run stops with
-- the phases done logged and says how to go on.
function TestReplTty:test_ctrl_c_in_firefly_grow_stops_with_the_phases_done_logged()
  local dir = tmpdir()
  local f = assert(io.open(dir .. "/recipe.lua", "w"))
  f:write([[
return {
  seed = 1, phases = 100000, epochs = 1, eta = 1, batch_size = 16,
  data = function(ff) return ff.data.two_moons{n = 64, noise = 0.1, seed = 1} end,
  net = function(ff) return ff.nn.mlp{2, 4, 2} end,
  optim = function(ff, params) return ff.optim.SGD(params, {lr = 0.1}) end,
}
]])
  f:close()
  local out, code = session(dir, "grow " .. dir .. "/recipe.lua --out " .. dir .. "/out", {
    "wait:phase 3  widths", "send:\3", "wait:interrupted after \\d+ phases",
  })
  lu.assertEquals(code, 0, out:sub(-3000))
  local n = tonumber(out:match("interrupted after (%d+) phases; log and checkpoint in "))
  lu.assertNotNil(n, out:sub(-3000))
  lu.assertTrue(n >= 3)
  lu.assertNotStrContains(out, "traceback")
  -- the log holds exactly the phases done
  local _, lines = read_file(dir .. "/out/grow.csv"):gsub("\n", "")
  lu.assertEquals(lines, n + 1)
end

os.exit(testlib.run())
