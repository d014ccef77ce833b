-- Collectives and their errors on each rank of an mpirun job (started by
-- test_dist.lua); any failure raises, so the job exits non-zero. Ends with
-- "rank R: collectives ok".
local ff = require "firefly"
local d = ff.dist
local r, n = d.rank(), d.size()
assert(n >= 2, "run under mpirun -np 2 or more")
assert(ff.get_num_threads() >= 1)

local function expect_error(pattern, fn, ...)
  local ok, err = pcall(fn, ...)
  assert(not ok, "expected an error matching " .. pattern)
  assert(tostring(err):find(pattern, 1, true), "unexpected message: " .. tostring(err))
end

-- sum, mean, max, min
local t = ff.full({ 2, 3 }, r + 1)
d.allreduce(t)
assert(t:sum():item() == 6 * n * (n + 1) / 2)
t = ff.full({ 5 }, r + 1)
d.allreduce(t, "mean")
assert(math.abs(t:totable()[1] - (n + 1) / 2) < 1e-6)
t = ff.tensor({ r, -r })
d.allreduce(t, "max")
assert(t:totable()[1] == n - 1 and t:totable()[2] == 0)
t = ff.tensor({ r, -r })
d.allreduce(t, "min")
assert(t:totable()[1] == 0 and t:totable()[2] == -(n - 1))

-- a tensor larger than one bucket (1 Mi floats): several in flight
local big = ff.arange(0, 2500000):add(r)
d.allreduce(big)
local v = big:narrow(1, 2400001, 3):totable()
assert(v[1] == n * 2400000 + n * (n - 1) / 2, "big allreduce: " .. v[1])

-- broadcast from each root, allgather
for root = 0, n - 1 do
  local b = ff.full({ 1200000 }, r * 10 + 1)
  d.broadcast(b, root)
  assert(b:min():item() == root * 10 + 1 and b:max():item() == root * 10 + 1)
end
local g = d.allgather(ff.tensor({ { r, 2 * r } }))
assert(g:size(1) == n and g:size(2) == 1 and g:size(3) == 2)
assert(g:select(1, n):totable()[1][2] == 2 * (n - 1))

-- numbers in double
local s = d.allreduce_numbers({ 1e-9, r })
assert(math.abs(s[1] - n * 1e-9) < 1e-20 and s[2] == n * (n - 1) / 2)

-- bad calls: an error on every rank, never a hang
expect_error("dist.broadcast: root rank " .. n .. " does not exist (ranks are 0.." .. (n - 1) .. ")",
  d.broadcast, ff.zeros(3), n)
expect_error("dist.allreduce: ranks disagree: rank 0 passed allreduce(sum) of a tensor of shape 3, rank 1 passed allreduce(sum) of a tensor of shape 4",
  d.allreduce, ff.zeros(r == 0 and 3 or 4))
expect_error("ranks disagree: rank 0 passed allreduce(sum) of a tensor of shape 2x2, rank 1 passed allreduce(max)",
  d.allreduce, ff.zeros(2, 2), r == 0 and "sum" or "max")
expect_error("dist.broadcast: ranks disagree: rank 0 passed broadcast from root 0 of a tensor of shape 2, rank 1 passed broadcast from root 1",
  d.broadcast, ff.zeros(2), r == 0 and 0 or 1)
expect_error("dist.allgather: ranks disagree", d.allgather, ff.zeros(r + 1))
expect_error("dist.allreduce: argument #1 must be contiguous", d.allreduce, ff.zeros(3, 4):t())
-- and the world still works afterwards
t = ff.ones(3)
d.allreduce(t)
assert(t:sum():item() == 3 * n)

-- gradients: weighted sum, a gradient missing everywhere stays missing
local p1, p2, p3 = ff.zeros(2):requires_grad(true), ff.zeros(3):requires_grad(true), ff.zeros(1):requires_grad(true)
p1.grad = ff.full({ 2 }, r + 1)
if r == 0 then p2.grad = ff.ones(3) end
d.sum_grads({ p1, p2, p3 }, 0.5)
assert(p1.grad:sum():item() == 2 * 0.5 * n * (n + 1) / 2)
assert(p2.grad and p2.grad:sum():item() == 1.5, "p2 grad")
assert(p3.grad == nil, "p3 grad should stay missing")

-- the consistency check names the first tensor that differs
local net = ff.nn.Sequential { ff.nn.Linear(3, 4), ff.nn.ReLU(), ff.nn.Linear(4, 2) }
d.broadcast_module(net)
local opt = ff.optim.Adam(net:named_parameters(), { lr = 0.01 })
local x = ff.randn(5, 3, ff.Generator(7))
opt:zero_grad()
net(x):sum():backward()
d.sum_grads(opt:params())
opt:step()
assert(d.check_consistent(net, opt, "after a step"))
if r == 1 then
  ff.no_grad(function() net:get(3).bias:add_(1e-3) end)
end
expect_error("dist.check_consistent: ranks diverged after the nudge: 3.bias differs between rank 0 and rank 1",
  d.check_consistent, net, opt, "after the nudge")

d.barrier()
print(string.format("rank %d: collectives ok", r))
