-- A rank that fails while the other waits in a collective (started by
-- test_dist.lua): arg[1] = "error" (a Lua error), "kill" (SIGKILL) or
-- "early" (a clean exit before the collective). The job must end, never hang.
local ff = require "firefly"
local d = ff.dist
if d.rank() == 1 then
  if arg[1] == "kill" then
    local pid = io.open("/proc/self/stat"):read("l"):match("^(%d+)")
    os.execute("kill -9 " .. pid)
  elseif arg[1] == "early" then
    os.exit(0)
  else
    error("rank 1 fails on purpose")
  end
end
d.allreduce(ff.ones(3))
print("rank " .. d.rank() .. " went past the allreduce")
