-- firefly.plot: line plots of run logs through gnuplot (ff.plot).
--
-- A plot is a set of files beside each other: path.dat (the data, one
-- block per series), path.gp (the gnuplot script that draws it, kept so a
-- user can restyle it and rerun `gnuplot NAME.gp` in that directory) and
-- the images path.png and path.svg. The data and the script are always
-- written, so a machine without gnuplot (Debian: gnuplot-nox) still keeps
-- everything needed to draw the plot later. Every file is replaced
-- atomically, images included (gnuplot renders under a temporary name
-- beside the target, then we rename): a killed run never leaves half a file.
--
-- Missing values: NaN (in x, y or spread) is written as NaN and gnuplot
-- leaves a gap in the line there; a phase that measured nothing is not an
-- error. Infinities and non-numbers are errors: they are bugs upstream.
local ff = require "firefly"
local fio = require "firefly.io"
local sandbox = require "firefly.sandbox" -- file access of a sandboxed recipe
local cjson = require "cjson"
local options = require "firefly.options"

local plot = {}

-- The gnuplot executable: nil until looked up (once), then its path, or
-- false when there is none. Tests set it to false to act as if gnuplot
-- were not installed.
plot._gnuplot = nil
local warned = false -- the missing-gnuplot note is printed once per process

local function find_gnuplot()
  if plot._gnuplot == nil then
    local p = io.popen("command -v gnuplot 2>/dev/null") -- sandbox: internal (no path)
    local found = p and p:read("l")
    if p then p:close() end
    plot._gnuplot = (found and found ~= "") and found or false
  end
  return plot._gnuplot
end

-- ff.plot.available(): true when gnuplot is installed (images get drawn).
function plot.available()
  return find_gnuplot() and true or false
end

---------------------------------------------------------------- errors

-- Errors detected here are raised as PlotError objects and re-raised by the
-- public function at its caller's line; anything else is a bug and passes
-- through untouched.
local PlotError = {}

local function fail(fmt, ...)
  error(setmetatable({ msg = string.format(fmt, ...) }, PlotError), 0)
end

local function public(impl)
  return function(...)
    local r = table.pack(pcall(impl, ...))
    if r[1] then return table.unpack(r, 2, r.n) end
    if getmetatable(r[2]) == PlotError then error(r[2].msg, 2) end
    error(r[2], 0)
  end
end

local function describe(v)
  if type(v) == "string" then return string.format("a string (%q)", v) end
  if v == nil or type(v) == "boolean" then return tostring(v) end
  return "a " .. type(v)
end

local function check_options(fn, opts, allowed)
  if type(opts) ~= "table" then fail("%s: options must be a table, got %s", fn, type(opts)) end
  local ok, err = pcall(options.check, fn, opts, allowed, "option", 0)
  if not ok then fail("%s", err) end
end

local function opt_string(fn, opts, key)
  local v = opts[key]
  if v ~= nil and type(v) ~= "string" then
    fail("%s: option '%s' must be a string, got %s", fn, key, describe(v))
  end
  return v
end

local function opt_boolean(fn, opts, key)
  local v = opts[key]
  if v ~= nil and type(v) ~= "boolean" then
    fail("%s: option '%s' must be true or false, got %s", fn, key, describe(v))
  end
  return v or false
end

---------------------------------------------------------------- series

local is_list = fio.is_array

-- A list of numbers (a Lua list or a 1-D tensor) checked value by value.
local function number_list(fn, where, name, v)
  if ff.is_tensor(v) then
    if v:dim() ~= 1 then
      fail("%s: %s: %s is a tensor with %d dims, expected a list or a 1-D tensor", fn, where, name, v:dim())
    end
    v = v:totable()
  end
  if type(v) ~= "table" then
    fail("%s: %s: %s must be a list of numbers, got %s", fn, where, name, describe(v))
  end
  if not is_list(v) then
    fail("%s: %s: %s is not a list (it has holes or non-integer keys)", fn, where, name)
  end
  for i = 1, #v do
    local x = v[i]
    if type(x) ~= "number" then
      fail("%s: %s: %s[%d] is %s, expected a number", fn, where, name, i, describe(x))
    end
    if x == math.huge or x == -math.huge then
      fail("%s: %s: %s[%d] is infinite (use NaN for a missing value)", fn, where, name, i)
    end
  end
  return v
end

local SERIES_FIELDS = { "name", "x", "y", "spread" }

local function check_series(fn, i, s, logx, logy)
  local o_log = { x = logx, y = logy }
  if type(s) ~= "table" then
    fail("%s: series %d is %s, expected a table {name=, x=, y=}", fn, i, describe(s))
  end
  local ok, err = pcall(options.check, string.format("%s: series %d", fn, i), s, SERIES_FIELDS, "field", 0)
  if not ok then fail("%s", err) end
  local name = s.name
  if name ~= nil and type(name) ~= "string" and type(name) ~= "number" then
    fail("%s: series %d: name must be a string, got %s", fn, i, describe(name))
  end
  local where = name ~= nil and string.format("series %d (%s)", i, tostring(name)) or ("series " .. i)
  name = name ~= nil and tostring(name) or ("series " .. i)
  if s.x == nil then fail("%s: %s has no x", fn, where) end
  if s.y == nil then fail("%s: %s has no y", fn, where) end
  local x = number_list(fn, where, "x", s.x)
  local y = number_list(fn, where, "y", s.y)
  if #x ~= #y then fail("%s: %s: x has %d values but y has %d", fn, where, #x, #y) end
  if #x == 0 then fail("%s: %s is empty (x and y have no values)", fn, where) end
  local spread
  if s.spread ~= nil then
    spread = number_list(fn, where, "spread", s.spread)
    if #spread ~= #y then fail("%s: %s: spread has %d values but y has %d", fn, where, #spread, #y) end
    for j, d in ipairs(spread) do
      if d < 0 then fail("%s: %s: spread[%d] = %s is negative", fn, where, j, tostring(d)) end
    end
  end
  local defined = false
  for j = 1, #x do
    for _, axis in ipairs { "x", "y" } do
      local v = axis == "x" and x[j] or y[j]
      if o_log[axis] and v <= 0 then
        fail("%s: %s: %s[%d] = %s is not positive, but log%s is set", fn, where, axis, j, tostring(v), axis)
      end
    end
    if x[j] == x[j] and y[j] == y[j] then defined = true end
  end
  -- gnuplot stops on a series with nothing to draw; say which one it is.
  if not defined then fail("%s: %s has no point with both x and y defined (all NaN)", fn, where) end
  return { name = name, x = x, y = y, spread = spread }
end

---------------------------------------------------------------- files

-- Numbers as the shortest text that reads back as the same value, so the
-- .dat file holds the data exactly.
local function num_str(v)
  if math.type(v) == "integer" then return string.format("%d", v) end
  if v ~= v then return "NaN" end
  local s
  for p = 15, 17 do
    s = string.format("%." .. p .. "g", v)
    if tonumber(s) == v then break end
  end
  return s
end

-- One line of text (a legend entry, a label) without control characters.
local function one_line(s) return (s:gsub("%c", " ")) end

-- A gnuplot single-quoted string: no escapes inside but '' for a quote.
local function gp_str(s) return "'" .. one_line(s):gsub("'", "''") .. "'" end

local function dat_text(base, o)
  local b = one_line(base)
  local out = {
    string.format("# %s.dat: the data of %s.gp (ff.plot), one block per series,", b, b),
    "# two blank lines apart (gnuplot's index 0, 1, ...); NaN marks a missing value.",
  }
  if o.title then out[#out + 1] = "# title: " .. one_line(o.title) end
  if o.xlabel then out[#out + 1] = "# x: " .. one_line(o.xlabel) end
  if o.ylabel then out[#out + 1] = "# y: " .. one_line(o.ylabel) end
  for i, s in ipairs(o.series) do
    if i > 1 then out[#out + 1] = "\n" end -- with the line's own newline: two blank lines
    out[#out + 1] = string.format("# series %d (index %d): %s", i, i - 1, one_line(s.name))
    out[#out + 1] = s.spread and "# x y spread" or "# x y"
    for j = 1, #s.x do
      local line = num_str(s.x[j]) .. " " .. num_str(s.y[j])
      if s.spread then line = line .. " " .. num_str(s.spread[j]) end
      out[#out + 1] = line
    end
  end
  return table.concat(out, "\n") .. "\n"
end

local TERMINALS = {
  -- pngcairo draws anti-aliased lines and transparent bands; the libgd png
  -- terminal is the fallback of gnuplot builds without cairo.
  png = function(w, h)
    return string.format("if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n" ..
      "  set terminal pngcairo size %d,%d noenhanced font 'sans,10'\n" ..
      "} else {\n" ..
      "  set terminal png size %d,%d noenhanced truecolor\n" ..
      "}", w, h, w, h)
  end,
  svg = function(w, h)
    return string.format("set terminal svg size %d,%d dynamic noenhanced font 'sans,10' " ..
      "background rgb 'white'", w, h)
  end,
}

local function gp_text(base, o)
  local b = one_line(base)
  local out = {
    string.format("# %s.gp: written by ff.plot. Edit and redraw with `gnuplot %s.gp`", b, b),
    string.format("# run in this directory: it reads %s.dat and writes %s.", b,
      #o.formats > 0 and b .. "." .. table.concat(o.formats, ", " .. b .. ".")
      or "no image: it draws on gnuplot's default terminal (gnuplot -p)"),
    "data = " .. gp_str(base .. ".dat"),
  }
  -- ff.plot passes temporary output names with -e; a rerun by hand writes
  -- the real ones.
  for _, fmt in ipairs(o.formats) do
    out[#out + 1] = string.format('if (!exists("%s_out")) %s_out = %s', fmt, fmt, gp_str(base .. "." .. fmt))
  end
  out[#out + 1] = ""
  if o.title then out[#out + 1] = "set title " .. gp_str(o.title) end
  if o.xlabel then out[#out + 1] = "set xlabel " .. gp_str(o.xlabel) end
  if o.ylabel then out[#out + 1] = "set ylabel " .. gp_str(o.ylabel) end
  if o.logx then out[#out + 1] = "set logscale x" end
  if o.logy then out[#out + 1] = "set logscale y" end
  out[#out + 1] = "set grid"
  -- x spans the data (gnuplot would round a log axis out to whole decades),
  -- with a margin so that the end points stay clear of the border.
  out[#out + 1] = "set autoscale xfix"
  out[#out + 1] = "set offsets graph 0.03, graph 0.03, 0, 0"
  out[#out + 1] = o.key and ("set key " .. o.key) or "unset key"
  out[#out + 1] = "set style fill transparent solid 0.2 noborder"
  local items = {}
  for i, s in ipairs(o.series) do
    local src = string.format("data index %d using 1:", i - 1)
    local style = string.format("lc %d lw 2 pt 7 ps 0.8 title %s", i, gp_str(s.name))
    if s.spread and o.spread_style == "bars" then
      items[#items + 1] = src .. "2:3 with yerrorlines " .. style
    else
      if s.spread then
        items[#items + 1] = src .. string.format("($2-$3):($2+$3) with filledcurves lc %d notitle", i)
      end
      items[#items + 1] = src .. "2 with linespoints " .. style
    end
  end
  local plot_cmd = "plot " .. table.concat(items, ", \\\n     ")
  if #o.formats == 0 then
    out[#out + 1] = ""
    out[#out + 1] = plot_cmd
  end
  for k, fmt in ipairs(o.formats) do
    out[#out + 1] = ""
    out[#out + 1] = TERMINALS[fmt](o.size[1], o.size[2])
    out[#out + 1] = "set output " .. fmt .. "_out"
    out[#out + 1] = k == 1 and plot_cmd or "replot"
  end
  if #o.formats > 0 then out[#out + 1] = "unset output" end
  return table.concat(out, "\n") .. "\n"
end

local function write(fn, path, text)
  local ok, err = fio.write_atomic(path, text)
  if not ok then fail("%s: %s", fn, err) end
end

local file_size = fio.file_size

-- (gnuplot's messages, in a temporary file the C library names)
local function read_all(path)
  local f = io.open(path, "rb") -- sandbox: internal (os.tmpname)
  if not f then return "" end
  local s = f:read("a") or ""
  f:close()
  return s
end

-- Runs gnuplot on NAME.gp in its directory with temporary output names,
-- then renames each image into place. Nothing is renamed unless every
-- image was drawn, and no temporary file outlives the call.
local function render(fn, gnuplot, dir, base, path, formats, written)
  local q = fio.shell_quote
  local tmps, vars = {}, {}
  for _, fmt in ipairs(formats) do
    tmps[fmt] = fio.temp_path(path .. "." .. fmt)
    vars[#vars + 1] = string.format("%s_out = %s", fmt, gp_str(tmps[fmt]:match("[^/]*$")))
  end
  local errfile = os.tmpname()
  -- "./" keeps a name that starts with '-' from reading as an option.
  local rel_dir = dir:sub(1, 1) == "/" and dir or "./" .. dir
  local cmd = string.format("cd %s && %s -e %s %s >%s 2>&1", q(rel_dir), q(gnuplot),
    q(table.concat(vars, "; ")), q("./" .. base .. ".gp"), q(errfile))
  local ok, how, code = sandbox.execute(cmd, path, fn)
  local msgs = read_all(errfile):gsub("%s+$", "")
  os.remove(errfile) -- sandbox: internal (os.tmpname)
  local function cleanup() for _, t in pairs(tmps) do sandbox.remove(t, fn) end end
  if not ok then
    cleanup()
    if #msgs > 2000 then msgs = msgs:sub(1, 2000) .. " ..." end
    fail("%s: gnuplot failed (%s %s) drawing %s.gp:\n%s", fn, how == "signal" and "signal" or "exit status",
      tostring(code), path, msgs ~= "" and msgs or "(no message)")
  end
  for _, fmt in ipairs(formats) do
    if (file_size(tmps[fmt]) or 0) == 0 then
      cleanup()
      fail("%s: gnuplot drew no %s image for %s.gp%s", fn, fmt, path, msgs ~= "" and (":\n" .. msgs) or "")
    end
  end
  for _, fmt in ipairs(formats) do
    local final = path .. "." .. fmt
    local rok, rerr = sandbox.rename(tmps[fmt], final, fn)
    if not rok then
      cleanup()
      fail("%s: cannot rename '%s' to '%s': %s", fn, tmps[fmt], final, tostring(rerr))
    end
    tmps[fmt] = nil
    written[fmt] = final
  end
  -- Warnings of a successful run (points dropped by a log scale, say) are
  -- worth seeing.
  if msgs ~= "" then io.stderr:write("plot: gnuplot: ", msgs, "\n") end
end

---------------------------------------------------------------- plot.lines

local LINES_OPTIONS = { path = true, title = true, xlabel = true, ylabel = true, series = true,
  logx = true, logy = true, formats = true, key = true, size = true, spread_style = true }
local FORMATS = { png = true, svg = true }

local function lines(fn, opts)
  check_options(fn, opts, LINES_OPTIONS)
  local path = opts.path
  if type(path) ~= "string" or path == "" or path:sub(-1) == "/" then
    fail("%s: option 'path' must be a file path without extension (\"out/run/accuracy\"), got %s",
      fn, path == "" and "an empty string" or describe(path))
  end
  if path:find("%c") then fail("%s: option 'path' holds a control character (%q)", fn, path) end
  local o = { title = opt_string(fn, opts, "title"), xlabel = opt_string(fn, opts, "xlabel"),
    ylabel = opt_string(fn, opts, "ylabel"), logx = opt_boolean(fn, opts, "logx"),
    logy = opt_boolean(fn, opts, "logy") }
  local formats = opts.formats == nil and { "png", "svg" } or opts.formats
  if type(formats) == "string" then formats = { formats } end
  if type(formats) ~= "table" then
    fail("%s: option 'formats' must be a list such as {\"png\", \"svg\"}, got %s", fn, describe(formats))
  end
  o.formats = {}
  local seen = {}
  for i, f in ipairs(formats) do
    if not FORMATS[f] then fail("%s: formats[%d] is %s; expected \"png\" or \"svg\"", fn, i, describe(f)) end
    if not seen[f] then o.formats[#o.formats + 1] = f; seen[f] = true end
  end
  local key = opts.key
  if key == nil then key = "top left reverse Left" end
  if key ~= false and (type(key) ~= "string" or not key:match("^[%a ]+$")) then
    fail("%s: option 'key' must be a gnuplot key position such as \"bottom right\", or false, got %s",
      fn, describe(key))
  end
  o.key = key
  local size = opts.size or { 800, 500 }
  if type(size) ~= "table" or math.type(size[1]) ~= "integer" or math.type(size[2]) ~= "integer"
      or size[1] < 1 or size[2] < 1 then
    fail("%s: option 'size' must be {width, height} in pixels, positive integers", fn)
  end
  o.size = size
  o.spread_style = opts.spread_style or "band"
  if o.spread_style ~= "band" and o.spread_style ~= "bars" then
    fail("%s: option 'spread_style' must be \"band\" or \"bars\", got %s", fn, describe(opts.spread_style))
  end
  local series = opts.series
  if type(series) ~= "table" or #series == 0 or not is_list(series) then
    fail("%s: option 'series' must be a non-empty list of series {name=, x=, y=, spread=}", fn)
  end
  o.series = {}
  for i, s in ipairs(series) do o.series[i] = check_series(fn, i, s, o.logx, o.logy) end

  local dir = path:match("^(.*)/[^/]*$") or "."
  if dir == "" then dir = "/" end
  local base = path:match("[^/]*$")
  local ok, err = fio.mkdir(dir)
  if not ok then fail("%s: %s", fn, err) end
  local written = { dat = path .. ".dat", gp = path .. ".gp" }
  write(fn, written.dat, dat_text(base, o))
  write(fn, written.gp, gp_text(base, o))
  if #o.formats == 0 then return written end
  local gnuplot = find_gnuplot()
  if not gnuplot then
    if not warned then
      warned = true
      io.stderr:write("plot: gnuplot not found (apt-get install gnuplot-nox); wrote the data to ",
        written.dat, "\n")
    end
    return written
  end
  render(fn, gnuplot, dir, base, path, o.formats, written)
  return written
end

-- ff.plot.lines{path=, series={{name=, x=, y=, spread=}, ...}, title=, xlabel=,
-- ylabel=, logx=, logy=, formats={"png", "svg"}, key=, size=, spread_style=}
-- -> {dat=, gp=, png=, svg=}: the paths written.
plot.lines = public(function(opts) return lines("plot.lines", opts) end)

---------------------------------------------------------------- rows and logs

local ROWS_OPTIONS = { x = true, y = true, by = true, spread = true, name = true }
for k in pairs(LINES_OPTIONS) do
  if k ~= "series" then ROWS_OPTIONS[k] = true end
end

-- A cell of a row; JSON null (cjson.null) is a missing value like nil.
local function cell(row, col)
  local v = row[col]
  if v == cjson.null then return nil end
  return v
end

local NONE = {} -- the group of rows without a `by` value

local function from_rows(fn, rows, opts)
  if type(rows) ~= "table" or not is_list(rows) then
    fail("%s: argument #1 must be a list of rows (tables), got %s", fn, describe(rows))
  end
  if opts == nil then fail("%s: argument #2 must be an options table {x=, y=, path=, ...}", fn) end
  check_options(fn, opts, ROWS_OPTIONS)
  local x = opts.x
  if type(x) ~= "string" then fail("%s: option 'x' must be a column name, got %s", fn, describe(x)) end
  local ycols = opts.y
  if type(ycols) == "string" then ycols = { ycols } end
  if type(ycols) ~= "table" or #ycols == 0 then
    fail("%s: option 'y' must be a column name or a list of them, got %s", fn, describe(opts.y))
  end
  for i, c in ipairs(ycols) do
    if type(c) ~= "string" then fail("%s: option 'y'[%d] must be a column name, got %s", fn, i, describe(c)) end
  end
  local by, spread = opt_string(fn, opts, "by"), opt_string(fn, opts, "spread")
  local name = opt_string(fn, opts, "name")
  if spread and #ycols > 1 then fail("%s: option 'spread' needs a single y column", fn) end

  local groups, order = {}, {}
  local function number(i, col, v)
    if type(v) ~= "number" then fail("%s: row %d: %s is %s, expected a number", fn, i, col, describe(v)) end
    return v
  end
  for i, row in ipairs(rows) do
    if type(row) ~= "table" then fail("%s: row %d is %s, expected a table", fn, i, describe(row)) end
    local key = NONE
    if by then
      key = cell(row, by)
      if key == nil then
        key = NONE
      elseif type(key) ~= "string" and type(key) ~= "number" and type(key) ~= "boolean" then
        fail("%s: row %d: %s is %s; a 'by' column holds strings, numbers or booleans",
          fn, i, by, describe(key))
      elseif key ~= key then
        key = "NaN" -- NaN is no table key
      end
    end
    -- Rows lacking x or y are skipped: logs mix kinds of rows (per epoch,
    -- per phase), and each plot picks the columns of one kind.
    local xv = cell(row, x)
    for _, c in ipairs(ycols) do
      local yv = cell(row, c)
      if xv ~= nil and yv ~= nil then
        local gkey = #ycols > 1 and (tostring(key) .. "\0" .. c) or key
        local g = groups[gkey]
        if not g then
          local gname
          if by then gname = key == NONE and ("(no " .. by .. ")") or tostring(key) end
          if #ycols > 1 then gname = gname and (gname .. " " .. c) or c end
          g = { name = gname or name or c, x = {}, y = {}, spread = spread and {} or nil }
          groups[gkey] = g
          order[#order + 1] = g
        end
        g.x[#g.x + 1] = number(i, x, xv)
        g.y[#g.y + 1] = number(i, c, yv)
        if spread then
          local sv = cell(row, spread)
          g.spread[#g.spread + 1] = sv == nil and 0 / 0 or number(i, spread, sv)
        end
      end
    end
  end
  if #order == 0 then
    fail("%s: no row has both '%s' and '%s' (%d rows)", fn, x, table.concat(ycols, "' or '"), #rows)
  end
  local lopts = { series = order, xlabel = x, ylabel = #ycols == 1 and ycols[1] or nil }
  for k, v in pairs(opts) do
    if LINES_OPTIONS[k] then lopts[k] = v end
  end
  return lines(fn, lopts)
end

-- ff.plot.from_rows(rows, {x=, y=, by=, spread=, name=, path=, ...}): one
-- series per distinct value of column `by` (in order of first appearance),
-- or one per y column when y is a list; points in row order.
plot.from_rows = public(function(rows, opts) return from_rows("plot.from_rows", rows, opts) end)

-- ff.plot.from_log(path.jsonl, opts): from_rows on a JSON-lines log
-- (ff.logging.Logger writes them). The plot goes beside the log,
-- LOG_Y.*, unless opts.path says where.
plot.from_log = public(function(path, opts)
  local fn = "plot.from_log"
  if type(path) ~= "string" or path == "" then
    fail("%s: argument #1 must be the path of a JSON-lines log, got %s", fn, describe(path))
  end
  if type(opts) ~= "table" then fail("%s: argument #2 must be an options table {x=, y=, ...}", fn) end
  local f, err = sandbox.open(path, "r", fn)
  if not f then fail("%s: cannot read the log: %s", fn, tostring(err)) end
  f:close()
  local ok, rows = pcall(require("firefly.logging").read_jsonl, path)
  if not ok then fail("%s: cannot read the log '%s': %s", fn, path, tostring(rows)) end
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  if o.path == nil then
    local ys = type(o.y) == "table" and table.concat(o.y, "_") or tostring(o.y)
    o.path = path:gsub("%.jsonl$", "") .. "_" .. ys
  end
  return from_rows(fn, rows, o)
end)

return plot
