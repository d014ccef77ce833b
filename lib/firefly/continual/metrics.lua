-- firefly.continual.metrics: the accuracy matrix of a task stream and the
-- numbers read from it. R[i][j] is the test accuracy on task j after
-- learning tasks 1..i (j <= i; a lower-triangular table of rows).
local M = {}

local function check(R, T, fname)
  if type(R) ~= "table" or #R == 0 then
    error(fname .. ": argument #1 must be a non-empty accuracy matrix (a list of rows)", 3)
  end
  T = T or #R
  if math.type(T) ~= "integer" or T < 1 or T > #R then
    error(string.format("%s: argument #2 (task) must be an integer in 1..%d, got %s", fname, #R, tostring(T)), 3)
  end
  for j = 1, T do
    if type(R[T][j]) ~= "number" then
      error(string.format("%s: R[%d][%d] is missing (row %d must hold tasks 1..%d)", fname, T, j, T, T), 3)
    end
  end
  return T
end

-- Average accuracy after task T (the last by default): mean_j R[T][j].
function M.average_accuracy(R, T)
  T = check(R, T, "continual.metrics.average_accuracy")
  local s = 0
  for j = 1, T do s = s + R[T][j] end
  return s / T
end

-- Forgetting after task T: mean over j < T of max_{j <= i < T} R[i][j] −
-- R[T][j] (Chaudhry et al. 2018), the drop from each old task's best
-- accuracy. 0 after the first task (no old task to forget).
function M.forgetting(R, T)
  T = check(R, T, "continual.metrics.forgetting")
  if T == 1 then return 0 end
  local s = 0
  for j = 1, T - 1 do
    local best = -math.huge
    for i = j, T - 1 do
      if type(R[i][j]) ~= "number" then
        error(string.format("continual.metrics.forgetting: R[%d][%d] is missing", i, j), 2)
      end
      best = math.max(best, R[i][j])
    end
    s = s + best - R[T][j]
  end
  return s / (T - 1)
end

-- Backward transfer (Lopez-Paz & Ranzato 2017): mean_{j<T} R[T][j] − R[j][j].
function M.backward_transfer(R, T)
  T = check(R, T, "continual.metrics.backward_transfer")
  if T == 1 then return 0 end
  local s = 0
  for j = 1, T - 1 do s = s + R[T][j] - R[j][j] end
  return s / (T - 1)
end

-- The matrix as text, one row per task learned, "-" above the diagonal.
function M.format(R)
  local lines = {}
  for i, row in ipairs(R) do
    local cells = {}
    for j = 1, #R do cells[j] = row[j] and string.format("%6.3f", row[j]) or "     -" end
    lines[i] = string.format("after %2d: %s", i, table.concat(cells, " "))
  end
  return table.concat(lines, "\n")
end

return M
