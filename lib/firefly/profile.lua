-- firefly.profile: where a computation spends its time, op by op.
--
--   local report = ff.profile.run(step)      -- profile one call of step()
--   print(report)                            -- a table, slowest op first
--   ff.profile.start() ... ff.profile.stop() -- the same around any code
--
-- The engine times every op's forward (each ff.* op call that records or
-- computes) and backward (each op's step of a backward pass) on a wall
-- clock; `other` is the rest of the wall time: Lua, gradient accumulation
-- between ops, optimiser updates and in-place arithmetic, which are not ops
-- of the graph. Off, profiling costs one branch per op.
local core = require "firefly.core"

local P = {}

local started -- the clock at start(), while a profile runs

local report_mt = {}
report_mt.__index = report_mt

-- start(): resets the counters and starts timing. An error while another
-- profile runs: they share the engine's counters.
function P.start()
  if started then
    error("ff.profile.start: a profile is already running; stop it first", 2)
  end
  core.profile_reset()
  core.profile_set(true)
  started = core.clock()
end

-- stop() -> report: stops timing and returns what was measured since start():
--   report.wall     seconds between start() and stop()
--   report.ops      rows, slowest first: {op, seconds, forward = {calls, seconds},
--                   backward = {calls, seconds}}
--   report.other    wall minus the ops' seconds (never below 0)
function P.stop()
  if not started then
    error("ff.profile.stop: no profile is running (call ff.profile.start first)", 2)
  end
  local wall = core.clock() - started
  core.profile_set(false)
  started = nil
  local ops, total = {}, 0
  for _, r in ipairs(core.profile_read()) do
    local row = { op = r[1], forward = { calls = r[2], seconds = r[3] },
                  backward = { calls = r[4], seconds = r[5] } }
    row.seconds = r[3] + r[5]
    total = total + row.seconds
    ops[#ops + 1] = row
  end
  table.sort(ops, function(a, b)
    if a.seconds ~= b.seconds then return a.seconds > b.seconds end
    return a.op < b.op
  end)
  return setmetatable({ wall = wall, ops = ops, other = math.max(0, wall - total) }, report_mt)
end

-- running() -> whether a profile is running.
function P.running() return started ~= nil end

-- run(fn, ...) -> report, fn's results: profiles one call of fn(...). An
-- error in fn stops the profile and is raised again.
function P.run(fn, ...)
  if type(fn) ~= "function" then
    error(string.format("ff.profile.run: argument #1 must be a function, got %s", type(fn)), 2)
  end
  P.start()
  local res = table.pack(pcall(fn, ...))
  local report = P.stop()
  if not res[1] then error(res[2], 0) end
  return report, table.unpack(res, 2, res.n)
end

local function ms(s) return string.format("%10.3f", s * 1000) end

-- report:format() -> the table as text: per op its calls and milliseconds
-- forward and backward, the total and its share of the wall time.
function report_mt:format()
  local lines = {
    string.format("%-18s %7s %10s %7s %10s %10s %6s", "op", "fwd n", "fwd ms", "bwd n",
      "bwd ms", "total ms", "%wall"),
  }
  local wall = self.wall > 0 and self.wall or 1
  local function line(name, fn_, fs, bn, bs, total)
    lines[#lines + 1] = string.format("%-18s %7s %s %7s %s %s %5.1f%%", name, fn_, fs, bn, bs,
      ms(total), 100 * total / wall)
  end
  for _, r in ipairs(self.ops) do
    line(r.op, r.forward.calls, ms(r.forward.seconds), r.backward.calls, ms(r.backward.seconds),
      r.seconds)
  end
  line("(other)", "", string.rep(" ", 10), "", string.rep(" ", 10), self.other)
  lines[#lines + 1] = string.format("wall %.3f ms", self.wall * 1000)
  return table.concat(lines, "\n")
end

report_mt.__tostring = report_mt.format

return P
