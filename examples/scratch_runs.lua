-- scratch_runs: the from-scratch baseline that grow_wider and grow_fig4
-- share (not a recipe; they load it with dofile beside themselves).
-- After the growth runs, a fixed network of each method's final widths is
-- trained from a fresh initialisation for the growth runs' total epochs;
-- methods of one seed that end at the same widths share one run (same
-- seed, same network, same result), and a run already in the logs is kept,
-- not redone, so the baseline can follow the growth runs later
-- (--scratch-only) and a stopped run resumes where it was.
local cjson = require "cjson"

local M = {}

-- "9-8-11" -> { 9, 8, 11 }
function M.widths_of(s)
  local out = {}
  for v in s:gmatch("%d+") do out[#out + 1] = math.tointeger(tonumber(v)) end
  return out
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function read_jsonl(path)
  local rows, s = {}, read_file(path)
  for line in (s or ""):gmatch("[^\n]+") do rows[#rows + 1] = cjson.decode(line) end
  return rows
end

-- The growth runs' logs in DIR: the decoded summary.json, the rows of
-- results.jsonl and of scratch.jsonl (empty when absent). `who` names the
-- recipe in the error when there is no summary to read.
function M.read_logs(dir, who)
  local s = read_file(dir .. "/summary.json")
  if not s then error(who .. ": --scratch-only needs the growth runs' " .. dir .. "/summary.json", 0) end
  return cjson.decode(s), read_jsonl(dir .. "/results.jsonl"), read_jsonl(dir .. "/scratch.jsonl")
end

-- The distinct final widths of `seed`'s growth runs in `runs` (summary
-- rows), in the order the methods ran.
function M.finals(runs, seed)
  local out, seen = {}, {}
  for _, r in ipairs(runs) do
    if r.seed == seed and not seen[r.widths] then seen[r.widths] = true; out[#out + 1] = r.widths end
  end
  return out
end

-- Trains from scratch at each of `finals` (width strings) of `seed` that
-- `rows` (the scratch rows so far, appended to) does not already hold for
-- that seed and `epochs`. train(widths_string, seed) returns the new row;
-- after(row) runs after each (print, rewrite the logs).
function M.run_seed(seed, finals, rows, epochs, train, after)
  local seen = {}
  for _, r in ipairs(rows) do
    if r.seed == seed and (r.epochs == nil or r.epochs == epochs) then seen[r.widths] = true end
  end
  for _, w in ipairs(finals) do
    if not seen[w] then
      seen[w] = true
      local r = train(w, seed)
      rows[#rows + 1] = r
      after(r)
    end
  end
end

return M
