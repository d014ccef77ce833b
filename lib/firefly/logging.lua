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

-- log.progress{total = n, label = "epoch 1", quiet = false, unit = "batch"}
-- p:update(done, {loss = 0.31}) redraws at most 10 times a second.
function log.progress(opts)
  local self = setmetatable({}, Progress)
  self.total, self.label, self.unit = opts.total, opts.label or "", opts.unit or "it"
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
  io.stderr:write(string.format("\r%s [%s%s] %d/%d %.1f %s/s ETA %s %s\27[K", self.label,
    string.rep("=", filled), string.rep(" ", width - filled), done, self.total, rate, self.unit,
    clock_str((self.total - done) / math.max(rate, 1e-9)), table.concat(parts, " ")))
  io.stderr:flush()
end

-- Clear the bar; the caller prints its own summary line.
function Progress:finish()
  if self.tty then io.stderr:write("\r\27[K"); io.stderr:flush() end
  return ff.clock() - self.start
end

return log
