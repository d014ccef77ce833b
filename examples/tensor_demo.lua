-- tensor_demo: what `make run` shows until the Fashion-MNIST growth recipe
-- lands (examples/fashion_grow.lua): the engine's tensors, a seeded random
-- least-squares fit solved by gradient steps, and sgemm speed on this machine.
local ff = require "firefly"

ff.manual_seed(0)
print("A 2x3 tensor and its transpose:")
local t = ff.tensor { { 1, 2, 3 }, { 4, 5, 6 } }
print(t)
print(t:t())

-- Least squares by gradient descent: recover w from y = X w.
local n, d = 512, 8
local X = ff.randn(n, d)
local w_true = ff.arange(1, d + 1):view(d, 1)
local y = X:matmul(w_true)
local w = ff.zeros(d, 1)
for step = 1, 200 do
  local r = X:matmul(w) - y                      -- residual, n x 1
  local grad = X:t():matmul(r) * (2 / n)         -- d x 1
  w:sub_(grad * 0.1)
  if step % 50 == 0 then
    print(string.format("step %3d  loss %.3e", step, (r ^ 2):mean():item()))
  end
end
print("recovered w:", w:view(d))

-- sgemm throughput through the engine.
local size = 1024
local a, b = ff.randn(size, size), ff.randn(size, size)
a:matmul(b)
local reps, t0 = 5, ff.clock()
for _ = 1, reps do a:matmul(b) end
local secs = (ff.clock() - t0) / reps
print(string.format("matmul %dx%d: %.1f ms, %.0f GFLOP/s (%d BLAS threads)",
  size, size, secs * 1e3, 2 * size ^ 3 / secs / 1e9, ff.get_num_threads()))
