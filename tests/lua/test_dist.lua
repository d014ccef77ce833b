-- test_dist: ff.dist over Open MPI. Each test starts a job with
-- `mpirun -np 2 --oversubscribe` on a helper script in tests/lua/dist/ and
-- reads its output and exit status; tests/run.sh allows mpirun as root.
-- Every job runs under `timeout`, so a hang fails the test instead of the
-- suite.
package.path = "tests/lua/?.lua;" .. package.path
local testlib = require "testlib"
local lu = testlib.lu
local ff = require "firefly"

local FIREFLY = "env -u LUA_INIT -u LUA_INIT_5_4 ./firefly"

-- Runs cmd with a deadline; returns its output (stdout and stderr), exit
-- status and wall seconds.
local function run(cmd, limit)
  local t0 = ff.clock()
  local p = io.popen(string.format("timeout %d %s 2>&1; echo \"rc=$?\"", limit or 60, cmd))
  local out = p:read("a")
  p:close()
  local rc = tonumber(out:match("rc=(%d+)%s*$"))
  return out, rc, ff.clock() - t0
end

-- A firefly script under mpirun on n ranks (2).
local function mpirun(script, args, opts)
  opts = opts or {}
  local env = opts.env and ("env " .. opts.env .. " ") or ""
  return run(string.format("%smpirun -np %d --oversubscribe %s %s %s", env, opts.np or 2, FIREFLY,
    script, args or ""), opts.limit)
end

TestDist = {}

function TestDist.test_plain_process_is_one_rank_without_mpi()
  local out, rc = run(FIREFLY .. [[ -e '
    local ff = require "firefly"
    local d = ff.dist
    local t = d.allreduce(ff.ones(3))
    local maps = io.open("/proc/self/maps"):read("a")
    print(d.rank(), d.size(), d.active(), d.is_main(), t:sum():item(), maps:find("libmpi") == nil)']])
  lu.assertEquals(rc, 0, out)
  lu.assertStrContains(out, "0\t1\tfalse\ttrue\t3.0\ttrue")
end

function TestDist.test_collectives_and_bad_calls_on_two_ranks()
  local out, rc = mpirun("tests/lua/dist/collectives.lua")
  lu.assertEquals(rc, 0, out)
  lu.assertStrContains(out, "rank 0: collectives ok")
  lu.assertStrContains(out, "rank 1: collectives ok")
end

function TestDist.test_spec_examples_on_two_ranks()
  local out, rc = mpirun("tests/lua/dist/spec.lua")
  lu.assertEquals(rc, 0, out)
  for r = 0, 1 do
    local p, f = out:match("rank " .. r .. ": (%d+) passed, (%d+) failed")
    lu.assertNotNil(p, out)
    lu.assertEquals(tonumber(f), 0, out)
    lu.assertTrue(tonumber(p) >= 3, out)
  end
end

function TestDist.test_a_failing_rank_ends_the_job()
  local out, rc, secs = mpirun("tests/lua/dist/fail.lua", "error")
  lu.assertNotEquals(rc, 0, out)
  lu.assertNotEquals(rc, 124, "the job hung:\n" .. out)
  lu.assertStrContains(out, "rank 1 fails on purpose")
  lu.assertStrContains(out, "MPI_ABORT was invoked on rank 1")
  lu.assertNotStrContains(out, "went past")
  lu.assertTrue(secs < 30, out)
end

function TestDist.test_a_killed_rank_ends_the_job()
  local out, rc = mpirun("tests/lua/dist/fail.lua", "kill")
  lu.assertNotEquals(rc, 0, out)
  lu.assertNotEquals(rc, 124, "the job hung:\n" .. out)
  lu.assertStrContains(out, "rank 1")
  lu.assertStrContains(out, "signal 9")
  lu.assertNotStrContains(out, "went past")
end

function TestDist.test_a_rank_that_leaves_early_is_a_bounded_wait()
  local out, rc = mpirun("tests/lua/dist/fail.lua", "early", { env = "FF_DIST_TIMEOUT=2" })
  lu.assertNotEquals(rc, 0, out)
  lu.assertNotEquals(rc, 124, "the job hung:\n" .. out)
  lu.assertStrContains(out, "dist.allreduce: no answer from every rank within 2 s")
  lu.assertNotStrContains(out, "went past")
end

os.exit(testlib.run())
