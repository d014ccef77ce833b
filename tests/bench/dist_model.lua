-- dist_model: the scaling model of spec/dist.md as tables. Step time of
-- data-parallel training on N ranks (one per node):
--   T(N) = compute per rank + 2(N-1)/N * bytes / bandwidth + 2(N-1) * latency
-- (a ring allreduce of the gradients: reduce-scatter then allgather, each
-- N-1 rounds of bytes/N). Usage:
--   ./firefly tests/bench/dist_model.lua NAME PARAMS STEP_MS_PER_128_ROWS
-- STEP_MS is one rank's measured step on a batch of 128 rows (one core).
local name, params, t128 = arg[1], tonumber(arg[2]), tonumber(arg[3])
local bytes = params * 4
local links = { { "10 Gb/s", 10e9 / 8, 20e-6 }, { "100 Gb/s", 100e9 / 8, 3e-6 } }

local function comm(N, bw, lat)
  return 2 * (N - 1) / N * bytes / bw + 2 * (N - 1) * lat
end

print(string.format("%s: %d parameters (%.2f MB of fp32 gradients), %.1f ms per step of 128 rows on one core",
  name, params, bytes / 1e6, t128))
print()
print("| N | allreduce 10 Gb/s | allreduce 100 Gb/s | efficiency, 128 rows/rank, 10 / 100 Gb/s | speedup, global batch 4096, 10 / 100 Gb/s |")
print("|---|---|---|---|---|")
local N = 2
while N <= 256 do
  local c10, c100 = comm(N, links[1][2], links[1][3]), comm(N, links[2][2], links[2][3])
  local t = t128 / 1e3
  local weak10, weak100 = t / (t + c10), t / (t + c100)
  local T1 = t * 4096 / 128 -- one rank on the whole global batch
  local s10 = T1 / (T1 / N + c10)
  local s100 = T1 / (T1 / N + c100)
  print(string.format("| %d | %.2f ms | %.2f ms | %.3f / %.3f | %.1f / %.1f |", N, c10 * 1e3, c100 * 1e3,
    weak10, weak100, s10, s100))
  N = N * 2
end
