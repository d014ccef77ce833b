-- The gradient reducer (dist.grad_reducer) on each rank of an mpirun job
-- (started by test_dist.lua): overlap on and off and dist.sum_grads give
-- the same bytes, a parameter used twice is reduced again from its final
-- gradient, a rank without rows posts the same buckets, and train.fit
-- with overlap gives the weights it gives without. Any failure raises;
-- ends with "rank R: reducer ok".
package.path = "tests/lua/?.lua;" .. package.path
local testlib = require "testlib"
local ff = require "firefly"
local d = ff.dist
local r, n = d.rank(), d.size()
assert(n >= 2, "run under mpirun -np 2 or more")

local function expect_error(pattern, fn, ...)
  local ok, err = pcall(fn, ...)
  assert(not ok, "expected an error matching " .. pattern)
  assert(tostring(err):find(pattern, 1, true), "unexpected message: " .. tostring(err))
end

-- lin is used twice (its gradients arrive twice), unused never gets one,
-- only_main gets one on rank 0 only
local g = ff.Generator(1)
local lin = ff.nn.Linear(8, 8, { generator = g })
local head = ff.nn.Linear(8, 3, { generator = g })
local unused = ff.randn({ 4 }, g):requires_grad(true)
local only_main = ff.randn({ 3 }, g):requires_grad(true)
local params = { lin.weight, lin.bias, unused, head.weight, head.bias, only_main }

-- step s's gradients on this rank, then summed by `reduce`; returns the
-- bytes of every gradient ("nil" for a missing one) and the reduced loss
local function run(reduce, s, rows)
  for _, p in ipairs(params) do p.grad = nil end
  local w = rows / 6
  local loss = ff.tensor({ 0 })
  local pre, post = reduce(w)
  pre()
  if rows > 0 then
    local x = ff.randn({ rows, 8 }, ff.Generator(100 * s + r))
    local out = head(lin(lin(x)):tanh())
    if r == 0 then out = out + only_main end
    local l = out:pow(2):mean()
    l:backward()
    loss = ff.tensor({ l:item() })
  end
  post(loss)
  local bytes = {}
  for i, p in ipairs(params) do bytes[i] = p.grad and testlib.float_bytes(p.grad) or "nil" end
  return bytes, loss:item()
end

local function with_sum_grads(w)
  local extra
  return function() end, function(loss) d.sum_grads(params, w, { loss }) end
end
local function with_reducer(red)
  return function(w)
    return function() red:begin(w) end, function(loss) red:finish({ loss }) end
  end
end

local off = d.grad_reducer(params, { overlap = false, bucket_values = 20 })
local on = d.grad_reducer(params, { overlap = true, bucket_values = 20 })
assert(off.layout().buckets == 2 and on.layout().buckets == 2, "buckets of >= 20 values, backward order: 30 and 76")
assert(off.layout().values == 64 + 8 + 4 + 24 + 3 + 3)
assert(on.layout().overlap and not off.layout().overlap)
for s = 1, 3 do
  -- rank 1 has no rows in step 3: it posts every bucket after its (absent) backward
  local rows = (s == 3 and r == 1) and 0 or 3 + r
  local a, la = run(with_sum_grads, s, rows)
  local b, lb = run(with_reducer(off), s, rows)
  local c, lc = run(with_reducer(on), s, rows)
  assert(la == lb and lb == lc, "losses differ in step " .. s)
  for i = 1, #params do
    assert(a[i] == b[i], string.format("step %d: parameter %d differs between sum_grads and the reducer", s, i))
    assert(b[i] == c[i], string.format("step %d: parameter %d differs between overlap off and on", s, i))
  end
  assert(a[3] == "nil", "a gradient missing on every rank stays missing")
  assert(a[6] ~= "nil", "a gradient present on one rank is summed on all")
  local L = on.layout()
  if s == 1 then
    assert(L.redone >= 1, "lin's second gradient came after its bucket was filled: reduced again")
  elseif s == 2 then
    assert(L.redone == 0, "the second step knows lin is used twice")
    -- (on rank 1 the first bucket waits for only_main's gradient, which
    -- never comes there, and later buckets wait for the first: posts go in
    -- bucket order)
    assert(r ~= 0 or L.early >= 1, "some bucket was posted during the backward")
  end
  assert(off.layout().early == 0 and off.layout().redone == 0)
end
off.close()
on.close()
expect_error("the reducer was closed", function() on:begin(1) end)

-- bad calls
expect_error("dist.grad_reducer: unknown option 'overlapp'", d.grad_reducer, params, { overlapp = true })
expect_error("dist.grad_reducer: bucket_values must be an integer >= 1", d.grad_reducer, params, { bucket_values = 0 })
expect_error("dist.set_overlap: expected true or false", d.set_overlap, "yes")

-- train.fit with overlap on: the weights of overlap off, to the bit
local function fit(ov)
  d.set_overlap(ov)
  local gen = ff.Generator(5)
  local x, y = ff.randn({ 96, 12 }, gen), ff.randint(1, 4, 96, gen)
  local net = ff.nn.mlp { 12, 16, 16, 4, generator = ff.Generator(6) }
  local opt = ff.optim.SGD(net:named_parameters(), { lr = 0.1, momentum = 0.9 })
  ff.train.fit { model = net, data = ff.data.DataLoader(ff.data.Dataset(x, y), { batch_size = 24, shuffle = false }),
    optim = opt, epochs = 2, quiet = true }
  local parts = {}
  for _, e in ipairs(net:named_parameters()) do parts[#parts + 1] = testlib.float_bytes(e.param) end
  d.set_overlap(false)
  return table.concat(parts)
end
assert(fit(false) == fit(true), "train.fit: overlap changed the weights")
assert(not d.overlap())

print(string.format("rank %d: reducer ok", r))
