-- test_plot: ff.plot: the data file byte for byte, the gnuplot script, the
-- images (when gnuplot is installed), the path without gnuplot, a failing
-- gnuplot, bad input, plots of logged rows, and no temporary file left.
-- Run from the repository root: ./firefly tests/lua/test_plot.lua
package.path = "tests/lua/?.lua;" .. package.path
local testlib = require "testlib"
local lu = testlib.lu
local ff = require "firefly"
local fio = require "firefly.io"

---------------------------------------------------------------- helpers

local q = fio.shell_quote

local read_file, write_file = testlib.read_file, testlib.write_file

local function exists(p)
  local f = io.open(p, "rb")
  if f then f:close() end
  return f ~= nil
end

local function tmpdir()
  local p = io.popen("mktemp -d")
  local d = p:read("l")
  p:close()
  return d
end

local function rmdir(d) os.execute("rm -rf " .. q(d)) end

local function listdir(d)
  local names = {}
  for n in io.popen("ls -A " .. q(d)):lines() do names[#names + 1] = n end
  table.sort(names)
  return names
end

-- A stand-in for gnuplot: a shell script with the given body.
local function fake_gnuplot(dir, body)
  local p = dir .. "/fake-gnuplot"
  write_file(p, "#!/bin/sh\n" .. body .. "\n")
  os.execute("chmod +x " .. q(p))
  return p
end

-- Runs fn with ff.plot using the given gnuplot (a path, or false for none).
local function with_gnuplot(value, fn)
  local saved = ff.plot._gnuplot
  ff.plot._gnuplot = value
  local ok, err = pcall(fn)
  ff.plot._gnuplot = saved
  if not ok then error(err, 0) end
end

local function two_series()
  return {
    { name = "firefly", x = { 100, 200, 400 }, y = { 0.5, 0.625, 0.75 }, spread = { 0.01, 0.02, 0.03 } },
    { name = "random", x = { 100, 300 }, y = { 0.4, 0.1 + 0.2 } },
  }
end

---------------------------------------------------------------- data and script

TestPlotFiles = {}

function TestPlotFiles:setUp() self.dir = tmpdir() end
function TestPlotFiles:tearDown() rmdir(self.dir) end

function TestPlotFiles:test_dat_has_the_data_exactly()
  local path = self.dir .. "/acc"
  ff.plot.lines { path = path, title = "Accuracy", xlabel = "params", ylabel = "test acc",
    series = two_series(), formats = {} }
  lu.assertEquals(read_file(path .. ".dat"), table.concat({
    "# acc.dat: the data of acc.gp (ff.plot), one block per series,",
    "# two blank lines apart (gnuplot's index 0, 1, ...); NaN marks a missing value.",
    "# title: Accuracy",
    "# x: params",
    "# y: test acc",
    "# series 1 (index 0): firefly",
    "# x y spread",
    "100 0.5 0.01",
    "200 0.625 0.02",
    "400 0.75 0.03",
    "",
    "",
    "# series 2 (index 1): random",
    "# x y",
    "100 0.4",
    "300 0.30000000000000004", -- the shortest text that reads back as the same double
    "",
  }, "\n"))
end

function TestPlotFiles:test_numbers_read_back_exactly_and_nan_is_a_gap()
  local path = self.dir .. "/n"
  local y = { 1 / 3, 2 ^ -30, 1e300, -0.1, 0 / 0, 12345678901234 }
  local x = { 1, 2, 3, 4, 5, 6 }
  ff.plot.lines { path = path, series = { { x = x, y = y } }, formats = {} }
  local got = {}
  for line in io.lines(path .. ".dat") do
    if not line:match("^#") and line ~= "" then got[#got + 1] = line:match("^%S+ (%S+)$") end
  end
  lu.assertEquals(#got, #y)
  for i, v in ipairs(y) do
    if v ~= v then lu.assertEquals(got[i], "NaN") else lu.assertEquals(tonumber(got[i]), v) end
  end
  lu.assertEquals(got[6], "12345678901234")
end

function TestPlotFiles:test_gp_script_reads_the_dat_and_names_the_images()
  local path = self.dir .. "/acc"
  local r = ff.plot.lines { path = path, title = "it's", series = two_series(), logx = true,
    formats = { "png", "svg" } }
  lu.assertEquals(r.dat, path .. ".dat")
  lu.assertEquals(r.gp, path .. ".gp")
  local gp = read_file(path .. ".gp")
  lu.assertStrContains(gp, "data = 'acc.dat'")
  lu.assertStrContains(gp, "png_out = 'acc.png'")
  lu.assertStrContains(gp, "svg_out = 'acc.svg'")
  lu.assertStrContains(gp, "set title 'it''s'")
  lu.assertStrContains(gp, "set logscale x")
  lu.assertNotStrContains(gp, "set logscale y")
  lu.assertStrContains(gp, "title 'firefly'")
  lu.assertStrContains(gp, "filledcurves") -- the ± band of the series with a spread
  lu.assertNotStrContains(gp, self.dir)     -- names are relative: the directory can move
end

function TestPlotFiles:test_spread_as_error_bars()
  local path = self.dir .. "/bars"
  ff.plot.lines { path = path, series = two_series(), spread_style = "bars", formats = {} }
  local gp = read_file(path .. ".gp")
  lu.assertStrContains(gp, "using 1:2:3 with yerrorlines")
  lu.assertNotStrContains(gp, "filledcurves")
end

function TestPlotFiles:test_creates_missing_directories()
  local path = self.dir .. "/a/b c/plot"
  ff.plot.lines { path = path, series = two_series(), formats = {} }
  lu.assertTrue(exists(path .. ".dat"))
  lu.assertTrue(exists(path .. ".gp"))
end

function TestPlotFiles:test_accepts_tensors()
  local path = self.dir .. "/t"
  ff.plot.lines { path = path, series = { { name = "t", x = ff.tensor { 1, 2 }, y = ff.tensor { 0.5, 0.25 } } },
    formats = {} }
  lu.assertStrContains(read_file(path .. ".dat"), "\n1 0.5\n2 0.25\n")
end

---------------------------------------------------------------- images

TestPlotRender = {}

function TestPlotRender:setUp() self.dir = tmpdir() end
function TestPlotRender:tearDown() rmdir(self.dir) end

function TestPlotRender:test_png_and_svg()
  if not ff.plot.available() then lu.skip("gnuplot is not installed") end
  -- A directory and a name with spaces and quotes: the shell sees them whole.
  local path = self.dir .. "/it's a \"run\"/acc $x"
  local r = ff.plot.lines { path = path, title = "Accuracy", xlabel = "params", ylabel = "acc",
    series = two_series(), logx = true, formats = { "png", "svg" } }
  lu.assertEquals(r.png, path .. ".png")
  lu.assertEquals(r.svg, path .. ".svg")
  lu.assertEquals(read_file(r.png):sub(1, 8), "\137PNG\r\n\26\n")
  lu.assertStrContains(read_file(r.svg), "<svg")
  -- Only the four files: the temporary images were renamed into place.
  lu.assertEquals(listdir(self.dir .. "/it's a \"run\""),
    { "acc $x.dat", "acc $x.gp", "acc $x.png", "acc $x.svg" })
end

function TestPlotRender:test_rerunning_the_script_by_hand()
  if not ff.plot.available() then lu.skip("gnuplot is not installed") end
  local path = self.dir .. "/acc"
  ff.plot.lines { path = path, series = two_series(), formats = { "png" } }
  os.remove(path .. ".png")
  lu.assertTrue(os.execute("cd " .. q(self.dir) .. " && gnuplot acc.gp 2>/dev/null"))
  lu.assertEquals(read_file(path .. ".png"):sub(1, 4), "\137PNG")
end

function TestPlotRender:test_replaces_an_old_image()
  if not ff.plot.available() then lu.skip("gnuplot is not installed") end
  local path = self.dir .. "/acc"
  write_file(path .. ".svg", "old")
  ff.plot.lines { path = path, series = two_series(), formats = { "svg" } }
  lu.assertStrContains(read_file(path .. ".svg"), "<svg")
  lu.assertEquals(listdir(self.dir), { "acc.dat", "acc.gp", "acc.svg" })
end

function TestPlotRender:test_gnuplot_failure_raises_with_its_stderr()
  local gp = fake_gnuplot(self.dir, "echo 'line 7: undefined variable: oops' >&2; exit 3")
  local path = self.dir .. "/out/acc"
  with_gnuplot(gp, function()
    local err = testlib.error_of(ff.plot.lines, { path = path, series = two_series() })
    lu.assertStrContains(err, "plot.lines: gnuplot failed (exit status 3)")
    lu.assertStrContains(err, "line 7: undefined variable: oops")
  end)
  -- The data and the script stay for a look; no image, no temporary file.
  lu.assertEquals(listdir(self.dir .. "/out"), { "acc.dat", "acc.gp" })
end

function TestPlotRender:test_no_image_drawn_is_an_error()
  local gp = fake_gnuplot(self.dir, "exit 0")
  local path = self.dir .. "/acc"
  with_gnuplot(gp, function()
    local err = testlib.error_of(ff.plot.lines, { path = path, series = two_series(), formats = { "png" } })
    lu.assertStrContains(err, "plot.lines: gnuplot drew no png image")
  end)
  lu.assertFalse(exists(path .. ".png"))
end

---------------------------------------------------------------- without gnuplot

TestPlotNoGnuplot = {}

function TestPlotNoGnuplot:setUp() self.dir = tmpdir() end
function TestPlotNoGnuplot:tearDown() rmdir(self.dir) end

function TestPlotNoGnuplot:test_writes_dat_and_gp_and_warns_once()
  -- A fresh process: the note is printed once per process.
  local script = self.dir .. "/s.lua"
  write_file(script, string.format([[
local ff = require "firefly"
ff.plot._gnuplot = false
assert(ff.plot.available() == false)
local s = {{name = "a", x = {1, 2}, y = {3, 4}}}
local r = ff.plot.lines{path = %q, series = s}
assert(r.dat and r.gp and not r.png and not r.svg)
ff.plot.lines{path = %q, series = s}
print("ok")
]], self.dir .. "/one", self.dir .. "/two"))
  local out, err = self.dir .. "/out", self.dir .. "/err"
  local ok = os.execute(string.format("env -u LUA_INIT -u LUA_INIT_5_4 ./firefly %s >%s 2>%s",
    q(script), q(out), q(err)))
  lu.assertTrue(ok, read_file(err))
  lu.assertEquals(read_file(out), "ok\n")
  lu.assertEquals(read_file(err), "plot: gnuplot not found (apt-get install gnuplot-nox); wrote the data to "
    .. self.dir .. "/one.dat\n")
  for _, name in ipairs { "one", "two" } do
    lu.assertTrue(exists(self.dir .. "/" .. name .. ".dat"))
    lu.assertTrue(exists(self.dir .. "/" .. name .. ".gp"))
    lu.assertFalse(exists(self.dir .. "/" .. name .. ".png"))
  end
end

---------------------------------------------------------------- bad input

TestPlotErrors = {}

local function lines_err(opts)
  opts.path = opts.path or "/nonexistent-plot-dir/never" -- input errors come before any write
  opts.formats = {}
  return testlib.error_of(ff.plot.lines, opts)
end

function TestPlotErrors:test_series()
  lu.assertStrContains(lines_err { series = { { name = "a", x = { 1, 2, 3 }, y = { 1, 2 } } } },
    "plot.lines: series 1 (a): x has 3 values but y has 2")
  lu.assertStrContains(lines_err { series = { { name = "a", x = {}, y = {} } } },
    "plot.lines: series 1 (a) is empty")
  lu.assertStrContains(lines_err { series = { { x = { 1 }, y = { 1 } }, { name = "b", x = { 1, "2" }, y = { 1, 2 } } } },
    "plot.lines: series 2 (b): x[2] is a string (\"2\"), expected a number")
  lu.assertStrContains(lines_err { series = { { name = "a", x = { 1 }, y = { math.huge } } } },
    "plot.lines: series 1 (a): y[1] is infinite")
  lu.assertStrContains(lines_err { series = { { name = "a", x = { 1, 2 }, y = { 0 / 0, 0 / 0 } } } },
    "plot.lines: series 1 (a) has no point with both x and y defined")
  lu.assertStrContains(lines_err { series = { { name = "a", x = { 1 }, y = { 1 }, spread = { 1, 2 } } } },
    "plot.lines: series 1 (a): spread has 2 values but y has 1")
  lu.assertStrContains(lines_err { series = { { name = "a", x = { 1 }, y = { 1 }, spread = { -1 } } } },
    "plot.lines: series 1 (a): spread[1] = -1 is negative")
  lu.assertStrContains(lines_err { series = { { name = "a", x = { 1 } } } }, "plot.lines: series 1 (a) has no y")
  lu.assertStrContains(lines_err { series = { { name = "a", x = { 1 }, y = { 1 }, colour = 2 } } },
    "plot.lines: series 1: unknown field 'colour'")
  lu.assertStrContains(lines_err { series = { { x = { 0, 1 }, y = { 1, 1 } } }, logx = true },
    "plot.lines: series 1: x[1] = 0 is not positive, but logx is set")
  lu.assertStrContains(lines_err { series = {} }, "plot.lines: option 'series' must be a non-empty list")
end

function TestPlotErrors:test_options()
  local s = { { x = { 1 }, y = { 1 } } }
  lu.assertStrContains(testlib.error_of(ff.plot.lines, { series = s }), "plot.lines: option 'path' must be a file path")
  lu.assertStrContains(lines_err { series = s, xlable = "p" }, "plot.lines: unknown option 'xlable'")
  lu.assertStrContains(lines_err { series = s, logy = 1 }, "plot.lines: option 'logy' must be true or false")
  lu.assertStrContains(lines_err { series = s, title = {} }, "plot.lines: option 'title' must be a string")
  lu.assertStrContains(testlib.error_of(ff.plot.lines, { path = "/tmp/x", series = s, formats = { "gif" } }),
    "plot.lines: formats[1] is a string (\"gif\"); expected \"png\" or \"svg\"")
  lu.assertStrContains(lines_err { series = s, key = "top; system('x')" }, "plot.lines: option 'key'")
  lu.assertStrContains(testlib.error_of(ff.plot.lines, nil), "plot.lines: options must be a table")
end

function TestPlotErrors:test_error_points_at_the_caller()
  local err = testlib.error_of(function()
    ff.plot.lines { path = "/nonexistent-plot-dir/never", series = { { x = { 1 }, y = {} } } }
  end)
  lu.assertStrContains(err, "test_plot.lua:")
end

---------------------------------------------------------------- rows and logs

TestPlotRows = {}

function TestPlotRows:setUp() self.dir = tmpdir() end
function TestPlotRows:tearDown() rmdir(self.dir) end

local rows = {
  { method = "firefly", phase = 1, params = 1000, test_acc = 0.8 },
  { method = "random", phase = 1, params = 1000, test_acc = 0.7 },
  { method = "firefly", phase = 2, params = 2000, test_acc = 0.85 },
  { method = "random", phase = 2, params = 2100, test_acc = 0.75 },
  { epoch = 3, train_loss = 0.3 }, -- another kind of row: skipped
  { method = "firefly", phase = 3, params = 4000, test_acc = 0.9 },
}

-- The series blocks of a .dat file: { {name=, lines={...}}, ... }
local function blocks(path)
  local out = {}
  for line in io.lines(path) do
    local name = line:match("^# series %d+ %(index %d+%): (.*)$")
    if name then out[#out + 1] = { name = name, lines = {} }
    elseif #out > 0 and line ~= "" and not line:match("^#") then
      table.insert(out[#out].lines, line)
    end
  end
  return out
end

function TestPlotRows:test_by_makes_one_series_per_value()
  local path = self.dir .. "/acc"
  ff.plot.from_rows(rows, { x = "params", y = "test_acc", by = "method", path = path, formats = {} })
  lu.assertEquals(blocks(path .. ".dat"), {
    { name = "firefly", lines = { "1000 0.8", "2000 0.85", "4000 0.9" } },
    { name = "random", lines = { "1000 0.7", "2100 0.75" } },
  })
  local dat = read_file(path .. ".dat")
  lu.assertStrContains(dat, "# x: params\n# y: test_acc\n") -- labels default to the columns
end

function TestPlotRows:test_one_series_without_by_and_several_y_columns()
  local path = self.dir .. "/p"
  ff.plot.from_rows(rows, { x = "phase", y = "params", path = path, formats = {} })
  local b = blocks(path .. ".dat")
  lu.assertEquals(#b, 1)
  lu.assertEquals(b[1].name, "params")
  lu.assertEquals(#b[1].lines, 5)
  local r2 = { { phase = 1, a = 1, b = 2 }, { phase = 2, a = 3, b = 4 } }
  ff.plot.from_rows(r2, { x = "phase", y = { "a", "b" }, path = path, formats = {} })
  lu.assertEquals(blocks(path .. ".dat"), { { name = "a", lines = { "1 1", "2 3" } },
    { name = "b", lines = { "1 2", "2 4" } } })
end

function TestPlotRows:test_spread_column()
  local path = self.dir .. "/s"
  ff.plot.from_rows({ { p = 1, acc = 0.5, sd = 0.1 }, { p = 2, acc = 0.6 } },
    { x = "p", y = "acc", spread = "sd", path = path, formats = {} })
  lu.assertEquals(blocks(path .. ".dat"), { { name = "acc", lines = { "1 0.5 0.1", "2 0.6 NaN" } } })
end

function TestPlotRows:test_from_log()
  local log = ff.logging.Logger { dir = self.dir, name = "phases" }
  for _, r in ipairs(rows) do log:write(r) end
  log:close()
  local r = ff.plot.from_log(self.dir .. "/phases.jsonl",
    { x = "params", y = "test_acc", by = "method", formats = {} })
  lu.assertEquals(r.dat, self.dir .. "/phases_test_acc.dat")
  lu.assertEquals(#blocks(r.dat), 2)
  lu.assertStrContains(testlib.error_of(ff.plot.from_log, self.dir .. "/none.jsonl", { x = "a", y = "b" }),
    "plot.from_log: cannot read the log")
end

function TestPlotRows:test_errors()
  local path = self.dir .. "/e"
  lu.assertStrContains(testlib.error_of(ff.plot.from_rows, rows, { x = "params", y = "nope", path = path }),
    "plot.from_rows: no row has both 'params' and 'nope'")
  lu.assertStrContains(testlib.error_of(ff.plot.from_rows, { { a = 1, b = "x" } }, { x = "a", y = "b", path = path }),
    "plot.from_rows: row 1: b is a string (\"x\"), expected a number")
  lu.assertStrContains(testlib.error_of(ff.plot.from_rows, rows, { y = "a", path = path }),
    "plot.from_rows: option 'x' must be a column name")
  lu.assertStrContains(testlib.error_of(ff.plot.from_rows, rows, { x = "a", y = "b", path = path, series = {} }),
    "plot.from_rows: unknown option 'series'")
  lu.assertStrContains(testlib.error_of(ff.plot.from_rows, "rows", { x = "a", y = "b" }),
    "plot.from_rows: argument #1 must be a list of rows")
end

os.exit(testlib.run())
