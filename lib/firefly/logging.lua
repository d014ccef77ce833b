-- firefly.logging: run logs (CSV and JSON lines, one row per epoch or phase) and
-- the progress display of long loops.
--
-- Rows are flushed as they are written, so a killed run keeps everything up
-- to its last completed row. The progress display redraws one line on a
-- terminal and prints nothing in between when output goes to a file or a
-- pipe (only the summary lines the caller prints).
local ff = require "firefly"
local cjson = require "cjson"
local fio = require "firefly.io"
local sandbox = require "firefly.sandbox" -- file access of a sandboxed recipe

local log = {}

---------------------------------------------------------------- Logger

local Logger = {}
Logger.__index = Logger

local function csv_cell(v)
  if type(v) == "number" then
    if math.type(v) == "integer" then return tostring(v) end
    return string.format("%.8g", v)
  end
  local s = tostring(v == nil and "" or v)
  if s:find('[,"\n]') then s = '"' .. s:gsub('"', '""') .. '"' end
  return s
end

-- log.Logger{dir = "out", name = "train", columns = {...}, append = false}
-- writes dir/name.csv and dir/name.jsonl. The CSV columns are `columns`, or
-- the keys of the first row in sorted order.
function log.Logger(opts)
  opts = opts or {}
  local dir, name = opts.dir or ".", opts.name or "log"
  fio.mkdir(dir) -- a failure shows as the open error below
  local self = setmetatable({ columns = opts.columns, rows = {} }, Logger)
  self.csv_path, self.jsonl_path = dir .. "/" .. name .. ".csv", dir .. "/" .. name .. ".jsonl"
  local mode = opts.append and "a" or "w"
  self.csv = assert(sandbox.open(self.csv_path, mode, "Logger"))
  self.jsonl = assert(sandbox.open(self.jsonl_path, mode, "Logger"))
  self.header_written = opts.append and self.csv:seek("end") > 0
  return self
end

-- One JSON object with its keys sorted: the same row gives the same bytes
-- in every process (table order is not stable across runs), so two runs'
-- logs can be compared byte for byte.
local function json_row(row)
  local keys = {}
  for k in pairs(row) do keys[#keys + 1] = k end
  table.sort(keys)
  local parts = {}
  for i, k in ipairs(keys) do parts[i] = cjson.encode(tostring(k)) .. ":" .. cjson.encode(row[k]) end
  return "{" .. table.concat(parts, ",") .. "}"
end

function Logger:write(row)
  if not self.columns then
    self.columns = {}
    for k in pairs(row) do self.columns[#self.columns + 1] = k end
    table.sort(self.columns)
  end
  if not self.header_written then
    self.csv:write(table.concat(self.columns, ","), "\n")
    self.header_written = true
  end
  local cells = {}
  for i, c in ipairs(self.columns) do cells[i] = csv_cell(row[c]) end
  self.csv:write(table.concat(cells, ","), "\n")
  self.csv:flush()
  self.jsonl:write(json_row(row), "\n")
  self.jsonl:flush()
  self.rows[#self.rows + 1] = row
end

function Logger:close()
  if self.csv then self.csv:close(); self.csv = nil end
  if self.jsonl then self.jsonl:close(); self.jsonl = nil end
end

-- Read a JSON-lines log back as a list of rows.
function log.read_jsonl(path)
  local rows = {}
  for line in sandbox.lines(path, "read_jsonl") do
    if line:match("%S") then rows[#rows + 1] = cjson.decode(line) end
  end
  return rows
end

---------------------------------------------------------------- Progress

local Progress = {}
Progress.__index = Progress

local function clock_str(s)
  if s ~= s or s == math.huge then return "--:--" end
  s = math.floor(s + 0.5)
  if s >= 3600 then return string.format("%d:%02d:%02d", s // 3600, s % 3600 // 60, s % 60) end
  return string.format("%02d:%02d", s // 60, s % 60)
end

-- A line wider than the terminal wraps, and "\r" then returns only to its
-- last row: every redraw would leave a row behind. $COLUMNS when the shell
-- exports it, else 80.
local function columns()
  local n = tonumber(os.getenv("COLUMNS") or "")
  return n and n >= 20 and n or 80
end

-- The run around the bars (grow.run's phases), if one is on screen: each
-- bar's line starts with its state, so a terminal shows one line.
local outer = nil

local function draw(text)
  local width = columns() - 1
  if #text > width then text = text:sub(1, width) end
  io.stderr:write("\r", text, "\27[K")
  io.stderr:flush()
end

-- log.progress{total = n, label = "epoch 1", quiet = false, unit = "batch",
-- run_step = false} p:update(done, {loss = 0.31}) redraws at most 10 times
-- a second. run_step: the bar is one of the steps a run's progress counts
-- (train.fit's epochs; a growth step's passes are not).
-- A bar is to-be-closed (local bar <close> = ...): leaving its scope, by
-- an error too, clears it.
function log.progress(opts)
  local self = setmetatable({}, Progress)
  self.total, self.label, self.unit = opts.total, opts.label or "", opts.unit or "it"
  self.run_step = opts.run_step
  self.tty = not opts.quiet and ff.isatty(2)
  self.start, self.last_draw, self.done = ff.clock(), -1, 0
  return self
end

function Progress:update(done, fields)
  self.done, self.fields = done, fields
  if not self.tty then return end
  local now = ff.clock()
  if now - self.last_draw < 0.1 and done < self.total then return end
  self.last_draw = now
  local elapsed = now - self.start
  local rate = done / math.max(elapsed, 1e-9)
  local frac = self.total > 0 and done / self.total or 1
  local width = 24
  local filled = math.floor(frac * width + 0.5)
  local parts = {}
  for k, v in pairs(fields or {}) do
    parts[#parts + 1] = type(v) == "number" and string.format("%s %.4g", k, v) or k .. " " .. tostring(v)
  end
  table.sort(parts)
  local prefix = outer and outer:status(self.run_step and frac or 0) .. " | " or ""
  draw(prefix .. string.format("%s [%s%s] %d/%d %.1f %s/s ETA %s %s", self.label,
    string.rep("=", filled), string.rep(" ", width - filled), done, self.total, rate, self.unit,
    clock_str((self.total - done) / math.max(rate, 1e-9)), table.concat(parts, " ")))
end

-- Clear the bar; the caller prints its own summary line. Once only: a
-- second call (or closing it) returns the same seconds.
function Progress:finish()
  if not self.seconds then
    if self.tty then io.stderr:write("\r\27[K"); io.stderr:flush() end
    self.seconds = ff.clock() - self.start
    if outer and self.run_step then outer:advance() end
  end
  return self.seconds
end

Progress.__close = Progress.finish

---------------------------------------------------------------- The whole run

local Run = {}
Run.__index = Run

-- log.run_progress{phases = N, steps = S, first = 1, label = "phase",
-- quiet = false}: the progress of a run of N phases, each of S bars (the
-- epochs of a phase): "phase 2/4 40% run ETA 01:10", in front of each bar's
-- line on a terminal, nothing otherwise. The ETA takes the run's pace so
-- far (growth steps included) over the bars still to come. To-be-closed:
-- closing it clears its line and detaches it from the bars.
function log.run_progress(opts)
  local self = setmetatable({ phases = opts.phases, steps = math.max(opts.steps or 1, 1),
    phase = opts.first or 1, first = opts.first or 1, label = opts.label or "phase", done = 0 }, Run)
  self.tty = not opts.quiet and ff.isatty(2)
  self.start = ff.clock()
  self.total = (self.phases - self.first + 1) * self.steps
  if self.tty then self.saved, outer = outer, self end
  return self
end

-- One bar finished.
function Run:advance() self.done = self.done + 1 end

-- Phase t begins.
function Run:set_phase(t) self.phase = t end

-- "phase 2/4 40% ETA 01:10", with `frac` of the current bar done.
function Run:status(frac)
  local done = math.min(self.done + (frac or 0), self.total)
  local elapsed = ff.clock() - self.start
  local eta = done > 0 and elapsed * (self.total - done) / done or 0 / 0
  return string.format("%s %d/%d %3.0f%% run ETA %s", self.label, self.phase, self.phases,
    100 * done / math.max(self.total, 1), clock_str(eta))
end

-- Show what the run does between bars ("growing").
function Run:show(what)
  if self.tty then draw(self:status() .. (what and " | " .. what or "")) end
end

-- Clear the line (before the caller prints).
function Run:clear()
  if self.tty then io.stderr:write("\r\27[K"); io.stderr:flush() end
end

function Run:close()
  if self.tty and outer == self then
    self:clear()
    outer = self.saved
  end
end

Run.__close = Run.close

---------------------------------------------------------------- Ctrl-C

-- Under the firefly interpreter, Ctrl-C during a long loop (train.fit,
-- grow.run) is a request to stop at the next safe point, not an error cut
-- through the middle of an optimiser step: the loop ends after its batch,
-- clears its progress line and returns what it did. A second Ctrl-C
-- interrupts at once. Elsewhere (stock lua5.4) Ctrl-C stays what it is.
local interp = package.preload["firefly.interp"] and require "firefly.interp"

local Stop = {}
Stop.__index = Stop

-- local stop <close> = log.on_interrupt(): stop:asked() is true once
-- Ctrl-C came; stop.outermost is true for the outermost loop (the one
-- that should say it stopped). Closing it stops listening.
function log.on_interrupt()
  local depth = interp and interp.listen() or 1
  return setmetatable({ outermost = depth == 1, listening = interp ~= nil }, Stop)
end

function Stop:asked() return self.listening and interp.stop_asked() end

function Stop:__close()
  if self.listening then
    self.listening = false
    interp.unlisten()
  end
end

---------------------------------------------------------------- Tables

-- log.table(rows, columns) -> text: a header and one line per row, each
-- column as wide as its widest cell (numbers right-aligned), so the table
-- stays aligned however wide its values get. columns: a list of
-- {key, title, format} (format: a string.format pattern or a function).
function log.table(rows, cols)
  local cells, widths, numeric = {}, {}, {}
  for j, c in ipairs(cols) do widths[j] = #(c[2] or c[1]) end
  for i, row in ipairs(rows) do
    cells[i] = {}
    for j, c in ipairs(cols) do
      local v = row[c[1]]
      local s
      if v == nil then s = "-"
      elseif type(c[3]) == "function" then s = c[3](v, row)
      elseif c[3] then s = string.format(c[3], v)
      else s = tostring(v) end
      if type(v) == "number" then numeric[j] = true end
      cells[i][j] = s
      widths[j] = math.max(widths[j], #s)
    end
  end
  local function line(values)
    local out = {}
    for j, s in ipairs(values) do
      local pad = string.rep(" ", widths[j] - #s)
      out[j] = numeric[j] and pad .. s or s .. pad
    end
    return (table.concat(out, "  "):gsub("%s+$", ""))
  end
  local head = {}
  for j, c in ipairs(cols) do head[j] = c[2] or c[1] end
  local lines = { line(head) }
  for i = 1, #rows do lines[#lines + 1] = line(cells[i]) end
  return table.concat(lines, "\n")
end

return log
