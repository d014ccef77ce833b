-- test_threads: the ops that split their loops over the engine's threads
-- (batch norm and its fused relu, activations, pooling, elementwise, long
-- sums, the backward of sum and mean, conv2d) give the same bits on 1 and on 2 threads, forward and
-- backward, also over many loops back to back on the persistent pool, whose
-- workers stop cleanly at exit and unload; and the op profile counts what ran. The inputs are large enough (over 2^20 floats touched) for the
-- loops to split.
package.path = "tests/lua/?.lua;" .. package.path
local testlib = require "testlib"
local lu = testlib.lu
local ff = require "firefly"
local error_of = testlib.error_of

local initial_threads = ff.get_num_threads()

-- Runs f() on 1 thread and on 2, returning both results (lists of tensors).
local function on_1_and_2(f)
  ff.set_num_threads(1)
  local ok1, one = pcall(f)
  ff.set_num_threads(2)
  local ok2, two = pcall(f)
  ff.set_num_threads(initial_threads)
  assert(ok1, one)
  assert(ok2, two)
  return one, two
end

local function assert_same_bits(one, two, what)
  lu.assertEquals(#one, #two)
  for i = 1, #one do
    lu.assertTrue(one[i]:equal(two[i]), string.format("%s: result %d differs between 1 and 2 threads", what, i))
  end
end

-- y = f(x leaves...) seeded with gy; returns y and the gradients of the leaves.
local function forward_backward(f, leaves, gy)
  for _, t in ipairs(leaves) do t.grad = nil end
  local y = f()
  y:backward(gy)
  local out = { y:detach() }
  for _, t in ipairs(leaves) do out[#out + 1] = t.grad end
  return out
end

TestThreads = {}

function TestThreads:test_batch_norm_relu_pool()
  local g = ff.Generator(3)
  local x = ff.randn({ 32, 16, 48, 48 }, g):requires_grad(true)
  local w = ff.rand({ 16 }, g):requires_grad(true)
  local b = ff.randn({ 16 }, g):requires_grad(true)
  local gy = ff.randn({ 32, 16, 24, 24 }, g)
  local function f()
    local rm, rv = ff.zeros(16), ff.ones(16)
    local h = ff.batch_norm(x, { weight = w, bias = b, running_mean = rm, running_var = rv, training = true })
    return ff.max_pool2d(ff.relu(h), 2)
  end
  local one, two = on_1_and_2(function() return forward_backward(f, { x, w, b }, gy) end)
  assert_same_bits(one, two, "batch_norm+relu+max_pool2d")
end

-- relu(batch_norm(x)) as one op (relu = true) gives the bits of the two
-- ops, in training and eval, with and without weight and bias, 4-D and
-- 2-D, on 1 and on 2 threads (4-D inputs large enough to split).
function TestThreads:test_batch_norm_fused_relu()
  local g = ff.Generator(11)
  local cases = {
    { shape = { 32, 24, 40, 40 }, training = true, affine = true },
    { shape = { 32, 24, 40, 40 }, training = false, affine = true },
    { shape = { 32, 24, 40, 40 }, training = true, affine = false },
    { shape = { 64, 20 }, training = true, affine = true },
  }
  for k, case in ipairs(cases) do
    local C = case.shape[2]
    local x = (ff.randn(case.shape, g) * 2 + 0.3):requires_grad(true)
    local leaves = { x }
    local w, b
    if case.affine then
      w = (ff.randn({ C }, g) * 0.5 + 1):requires_grad(true)
      b = (ff.randn({ C }, g) * 0.5):requires_grad(true)
      leaves = { x, w, b }
    end
    local rm0, rv0 = ff.randn({ C }, g) * 0.1, ff.rand({ C }, g) + 0.5
    local gy = ff.randn(case.shape, g)
    local function run(relu)
      local rm, rv = rm0:clone(), rv0:clone()
      local out = forward_backward(function()
        local y = ff.batch_norm(x, { weight = w, bias = b, running_mean = rm, running_var = rv,
                                     training = case.training, relu = relu })
        return relu and y or y:relu()
      end, leaves, gy)
      out[#out + 1], out[#out + 2] = rm, rv
      return out
    end
    local one, two = on_1_and_2(function() return { run(true), run(false) } end)
    local what = "case " .. k .. ": "
    assert_same_bits(one[1], one[2], what .. "fused against batch_norm then relu, 1 thread")
    assert_same_bits(two[1], two[2], what .. "fused against batch_norm then relu, 2 threads")
    assert_same_bits(one[1], two[1], what .. "fused, 1 against 2 threads")
    lu.assertEquals(one[1][1]:min():item(), 0) -- the relu did cut
  end
  lu.assertStrContains(error_of(ff.batch_norm, ff.randn(4, 3), { relu = 1 }),
    "batch_norm: option relu must be a boolean")
end

-- nn.Sequential runs a BatchNorm followed by a ReLU as the fused op (no
-- relu op runs), with the bits of the modules run one by one; a ReLU whose
-- forward is patched on the instance is still called.
function TestThreads:test_sequential_fuses_batch_norm_relu()
  local nn = ff.nn
  local g = ff.Generator(12)
  local net = nn.Sequential { nn.Conv2d(3, 4, 3, { padding = 1 }), nn.BatchNorm2d(4), nn.ReLU(),
                              nn.Flatten(), nn.Linear(4 * 5 * 5, 6), nn.BatchNorm1d(6), nn.ReLU() }
  local x = ff.randn({ 8, 3, 5, 5 }, g)
  local function grads()
    local out = {}
    for _, p in ipairs(net:parameters()) do out[#out + 1] = p.grad; p.grad = nil end
    return out
  end
  local y
  local report = ff.profile.run(function() y = net(x); y:sum():backward() end)
  local fused = grads()
  local ops = {}
  for _, r in ipairs(report.ops) do ops[r.op] = r end
  lu.assertNil(ops.relu)
  lu.assertEquals(ops.batch_norm.forward.calls, 2)
  -- the same network one module at a time
  local h = x
  for i = 1, #net do h = net:get(i):forward(h) end
  h:sum():backward()
  lu.assertTrue(h:equal(y))
  assert_same_bits(fused, grads(), "Sequential's fused batch norm + relu")
  -- a patched ReLU runs
  local seen = 0
  local relu = net:get(3)
  relu.forward = function(self, t) seen = seen + 1; return getmetatable(self).forward(self, t) end
  lu.assertTrue(net(x):equal(y))
  relu.forward = nil
  lu.assertEquals(seen, 1)
  -- and a ReLU module made another activation on the instance is that one
  relu.act = "tanh"
  local want = net:get(4)(ff.tanh(net:get(2)(net:get(1)(x))))
  for i = 5, #net do want = net:get(i)(want) end
  lu.assertTrue(net(x):equal(want))
  relu.act = "relu"
end

-- A sum over more than one chunk (2^16 elements) adds per-chunk sums split
-- over the threads, in chunk order: the same bits on 1 and 2 threads for
-- sum, mean, var and norm, also per row.
function TestThreads:test_long_sums()
  local g = ff.Generator(9)
  local x = ff.randn({ 3, 1000, 1001 }, g) + 0.1 -- not a multiple of the chunk
  local one, two = on_1_and_2(function()
    return { x:sum(), x:mean(), x:var(), x:norm(), x:norm(3), x:reshape(3, 1001000):sum(2) }
  end)
  assert_same_bits(one, two, "long sums")
  -- the same value as the sum of the rows' sums, to rounding
  local rows = x:reshape(3000, 1001):sum(2):totable()
  local ref = 0
  for _, v in ipairs(rows) do ref = ref + v end
  lu.assertAlmostEquals(one[1]:item(), ref, 1e-3 * math.abs(ref) + 1e-2)
end

-- The summation order written out in Lua's doubles (eight partial sums per
-- chunk of 2^16, the tail spread over them, chunks added in order): the
-- build of row_sum the loader picks on this CPU (AVX2 where there is one,
-- reduce.c) gives exactly the bits of that order, as the plain C build does.
function TestThreads:test_sum_order_exact()
  local function as_float(v) return (string.unpack("<f", string.pack("<f", v))) end
  local function ref_sum(v)
    local total, CH = 0, 1 << 16
    for c0 = 1, #v, CH do
      local n = math.min(CH, #v - c0 + 1)
      local a, i = { 0, 0, 0, 0, 0, 0, 0, 0 }, 0
      while i + 8 <= n do
        for k = 1, 8 do a[k] = a[k] + v[c0 + i + k - 1] end
        i = i + 8
      end
      local k = 1
      while i < n do a[k], i, k = a[k] + v[c0 + i], i + 1, k + 1 end
      total = total + (((a[1] + a[2]) + (a[3] + a[4])) + ((a[5] + a[6]) + (a[7] + a[8])))
    end
    return as_float(total)
  end
  local g = ff.Generator(10)
  for _, n in ipairs({ 13, 4099, (1 << 16) * 2 + 7 }) do
    local x = ff.randn({ n }, g) * 3 + 0.25
    local want = ref_sum(x:totable())
    for _, nt in ipairs({ 1, 2 }) do
      ff.set_num_threads(nt)
      lu.assertEquals(x:sum():item(), want, string.format("sum of %d on %d threads", n, nt))
    end
    ff.set_num_threads(initial_threads)
  end
end

function TestThreads:test_general_pool_and_activations()
  local g = ff.Generator(4)
  local x = ff.randn({ 16, 16, 64, 64 }, g):requires_grad(true)
  local gy = ff.randn({ 16, 16, 32, 32 }, g)
  local function f()
    local h = ff.gelu(ff.tanh(x) * 2 + 0.5)
    return ff.max_pool2d(h, 3, { stride = 2, padding = 1 })
  end
  local one, two = on_1_and_2(function() return forward_backward(f, { x }, gy) end)
  assert_same_bits(one, two, "tanh, mul, add, gelu, 3x3 max_pool2d")
end

function TestThreads:test_elementwise_flat_layouts()
  local g = ff.Generator(5)
  local a, c = ff.randn({ 1 << 20 }, g), ff.randn({ 1 << 20 }, g)
  local one, two = on_1_and_2(function()
    local io = a:clone()
    io:mul_(c)
    io:add_(0.25)
    return { a + c, a * 3, ff.tensor(2) - c, a:exp(), io, a:abs():sqrt_() }
  end)
  assert_same_bits(one, two, "elementwise")
end

function TestThreads:test_sum_and_mean_backward()
  local g = ff.Generator(7)
  local x = ff.randn({ 16, 16, 64, 64 }, g):requires_grad(true)
  local gy = ff.randn({ 16, 64, 64 }, g)
  local one, two = on_1_and_2(function()
    local a = forward_backward(function() return x:sum(2) end, { x }, gy)
    local b = forward_backward(function() return x:mean() * 3 end, { x })
    local c = forward_backward(function() return x:sum(4):sum() end, { x })
    return { a[2], b[2], c[2] }
  end)
  assert_same_bits(one, two, "sum and mean backward")
  lu.assertEquals(one[2][{ 16, 16, 64, 64 }], 3 / (16 * 16 * 64 * 64))
end

-- conv2d's weight gradient sums per-thread partial sums, so only its
-- output and input gradient are bit-equal across thread counts.
function TestThreads:test_conv2d()
  local g = ff.Generator(6)
  local x = ff.randn({ 16, 8, 20, 20 }, g):requires_grad(true)
  local w = ff.randn({ 8, 8, 3, 3 }, g):requires_grad(true)
  local gy = ff.randn({ 16, 8, 20, 20 }, g)
  local one, two = on_1_and_2(function()
    return forward_backward(function() return ff.conv2d(x, w, nil, { padding = 1 }) end, { x, w }, gy)
  end)
  assert_same_bits({ one[1], one[2] }, { two[1], two[2] }, "conv2d output and dx")
  lu.assertTrue(one[3]:allclose(two[3], 1e-5, 1e-4), "conv2d dw on 1 and 2 threads")
end

-- The same for every conv2d algorithm (ff.set_conv_algo): the direct
-- kernels split the batch as im2col does, each output summed by one thread.
function TestThreads:test_conv2d_every_algo()
  local g = ff.Generator(7)
  local x = ff.randn({ 8, 6, 30, 30 }, g):requires_grad(true)
  local w = ff.randn({ 10, 6, 3, 3 }, g):requires_grad(true)
  local b = ff.randn({ 10 }, g):requires_grad(true)
  local gy = ff.randn({ 8, 10, 30, 30 }, g)
  local ref
  for _, algo in ipairs { "im2col", "direct", "direct_avx2", "direct_portable" } do
    local before = ff.set_conv_algo(algo)
    local ok, one, two = pcall(on_1_and_2, function()
      return forward_backward(function() return ff.conv2d(x, w, b, { padding = 1 }) end, { x, w, b }, gy)
    end)
    ff.set_conv_algo(before)
    assert(ok, one)
    assert_same_bits({ one[1], one[2], one[4] }, { two[1], two[2], two[4] }, algo .. ": conv2d y, dx, db")
    lu.assertTrue(one[3]:allclose(two[3], 1e-5, 1e-4), algo .. ": conv2d dw on 1 and 2 threads")
    ref = ref or one
    for i = 1, 4 do
      lu.assertTrue(one[i]:allclose(ref[i], 1e-4, 1e-4), algo .. ": result " .. i .. " against im2col")
    end
  end
  lu.assertEquals(ff.conv_algo(), "auto")
end

function TestThreads:test_conv_algo_errors()
  lu.assertErrorMsgContains("invalid option 'winograd'", ff.set_conv_algo, "winograd")
  lu.assertErrorMsgContains("set_conv_algo' (string expected", ff.set_conv_algo)
  local before = ff.set_conv_algo("im2col")
  lu.assertEquals(before, "auto")
  lu.assertEquals(select(2, ff.conv_algo()), "im2col")
  lu.assertEquals(ff.set_conv_algo("auto"), "im2col")
end

-- The engine's own sgemm (ff.set_gemm): linear's forward and both
-- gradients (products with every transpose) are the same bits on 1 and 2
-- threads for each build of it, and agree with OpenBLAS to rounding.
function TestThreads:test_linear_every_gemm()
  local g = ff.Generator(9)
  local x = ff.randn({ 128, 300 }, g):requires_grad(true)
  local w = ff.randn({ 200, 300 }, g):requires_grad(true)
  local b = ff.randn({ 200 }, g):requires_grad(true)
  local gy = ff.randn({ 128, 200 }, g)
  local ref
  for _, algo in ipairs { "blas", "own", "own_avx2", "own_portable", "auto" } do
    local before = ff.set_gemm(algo)
    local ok, one, two = pcall(on_1_and_2, function()
      return forward_backward(function() return ff.linear(x, w, b) end, { x, w, b }, gy)
    end)
    ff.set_gemm(before)
    assert(ok, one)
    if algo ~= "blas" then -- OpenBLAS's own split may round differently
      assert_same_bits(one, two, algo .. ": linear y, dx, dW, db")
    end
    ref = ref or one
    for i = 1, 4 do
      lu.assertTrue(one[i]:allclose(ref[i], 1e-4, 1e-4), algo .. ": result " .. i .. " against blas")
    end
  end
  lu.assertEquals(ff.gemm(), "auto")
end

-- conv2d's per-sample products (im2col, 1x1 and strided convolutions) go
-- through the same sgemm choice as matmul: for each build, the same bits
-- on 1 and 2 threads (dw: summed over the batch split, to rounding), and
-- OpenBLAS's results to rounding. A single sample's product is the one
-- the own kernel itself splits over the threads.
function TestThreads:test_conv2d_products_every_gemm()
  local g = ff.Generator(11)
  local cases = {
    { { 6, 8, 14, 14 }, { 16, 8, 1, 1 }, {} },
    { { 6, 8, 14, 14 }, { 16, 8, 3, 3 }, { padding = 1, stride = 2 } },
    { { 1, 64, 32, 32 }, { 64, 64, 1, 1 }, {} },
  }
  for k, c in ipairs(cases) do
    local x = ff.randn(c[1], g):requires_grad(true)
    local w = ff.randn(c[2], g):requires_grad(true)
    local b = ff.randn({ c[2][1] }, g):requires_grad(true)
    local gy = ff.conv2d(x:detach(), w:detach(), nil, c[3]):detach():normal_(0, 1, g)
    local ref
    for _, algo in ipairs { "blas", "own", "own_avx2", "own_portable", "auto" } do
      local before = ff.set_gemm(algo)
      local ok, one, two = pcall(on_1_and_2, function()
        return forward_backward(function() return ff.conv2d(x, w, b, c[3]) end, { x, w, b }, gy)
      end)
      ff.set_gemm(before)
      assert(ok, one)
      local what = string.format("case %d, %s", k, algo)
      if algo ~= "blas" then
        assert_same_bits({ one[1], one[2], one[4] }, { two[1], two[2], two[4] }, what .. ": conv2d y, dx, db")
      end
      lu.assertTrue(one[3]:allclose(two[3], 1e-5, 1e-4), what .. ": conv2d dw on 1 and 2 threads")
      ref = ref or one
      for i = 1, 4 do
        lu.assertTrue(one[i]:allclose(ref[i], 1e-4, 1e-4), what .. ": result " .. i .. " against blas")
      end
    end
  end
end

function TestThreads:test_gemm_errors()
  lu.assertErrorMsgContains("invalid option 'mkl'", ff.set_gemm, "mkl")
  lu.assertErrorMsgContains("set_gemm' (string expected", ff.set_gemm)
  lu.assertEquals(ff.set_gemm("blas"), "auto")
  lu.assertEquals(select(2, ff.gemm()), "blas")
  lu.assertEquals(ff.set_gemm("auto"), "blas")
end

-- Small products run on one BLAS thread (matmul.c): the thread count is
-- back afterwards, and a small product gives one thread's bits on any
-- count (a large one need not: OpenBLAS's split changes its rounding).
function TestThreads:test_small_products_on_one_thread()
  local g = ff.Generator(9)
  local x = ff.randn({ 128, 256 }, g):requires_grad(true)
  local W = ff.randn({ 10, 256 }, g):requires_grad(true)
  local gy = ff.randn({ 128, 10 }, g)
  local one, two = on_1_and_2(function()
    local r = forward_backward(function() return ff.linear(x, W) end, { x, W }, gy)
    r[#r + 1] = ff.tensor(ff.get_num_threads())
    return r
  end)
  assert_same_bits({ one[1], one[2], one[3] }, { two[1], two[2], two[3] }, "128x256 by 256x10, forward and backward")
  lu.assertEquals(two[4]:item(), 2)
end

-- The split loops run on a persistent pool (engine/core/parallel.c): many
-- loops back to back, with the thread count changing between them, give
-- the bits of one thread each time.
function TestThreads:test_pool_back_to_back_loops()
  local g = ff.Generator(8)
  local a, c = ff.randn({ 1 << 20 }, g), ff.randn({ 1 << 20 }, g)
  ff.set_num_threads(1)
  local ref = { (a + c):relu(), (a * c):exp() }
  local bad = 0
  for k = 1, 60 do
    ff.set_num_threads(({ 2, 3, 1, 2 })[k % 4 + 1])
    local r = { (a + c):relu(), (a * c):exp() }
    for i = 1, 2 do
      if not r[i]:equal(ref[i]) then bad = bad + 1 end
    end
  end
  ff.set_num_threads(initial_threads)
  lu.assertEquals(bad, 0)
end

-- The pool's workers are stopped when the process exits and when stock
-- lua5.4 unloads core.so at lua_close (a worker left running would run
-- code of an unmapped library: a crash in about 1 run of 5 without the
-- pool's destructor, hence 5 runs); os.exit too.
function TestThreads:test_pool_exit_and_unload()
  local preload = testlib.stock_lua_preload()
  local chunk = [[local ff = require "firefly"; ff.set_num_threads(2); ]] ..
    [[local x = ff.randn({ 1 << 21 }); for i = 1, 20 do x = (x * 0.5):relu() end; print("done", x:numel())]]
  local stock = preload .. "LUA_PATH='lib/?.lua;lib/?/init.lua;;' LUA_CPATH='build/?.so;;' lua5.4 -e '" .. chunk .. "'"
  local cmds = {
    stock, stock, stock, stock, stock,
    "./firefly -e '" .. chunk .. "'",
    "./firefly -e '" .. chunk .. "; os.exit(0, true)'",
    "./firefly -e '" .. chunk .. "; os.exit(0)'",
  }
  for _, cmd in ipairs(cmds) do
    local p = io.popen("timeout 60 env " .. cmd .. " 2>&1")
    local out = p:read("a")
    local ok = p:close()
    lu.assertTrue(ok, cmd .. ": " .. out)
    lu.assertStrContains(out, "done\t2097152")
  end
end

TestProfile = {}

function TestProfile:test_counts_forward_and_backward_calls()
  local x = ff.randn({ 8, 3, 6, 6 }):requires_grad(true)
  local w = ff.randn({ 4, 3, 3, 3 }):requires_grad(true)
  local report, value = ff.profile.run(function()
    local y = ff.relu(ff.conv2d(x, w))
    y:sum():backward()
    return 42
  end)
  lu.assertEquals(value, 42)
  local by = {}
  for _, r in ipairs(report.ops) do by[r.op] = r end
  lu.assertEquals(by.conv2d.forward.calls, 1)
  lu.assertEquals(by.conv2d.backward.calls, 1)
  lu.assertEquals(by.relu.forward.calls, 1)
  lu.assertEquals(by.sum.backward.calls, 1)
  for i = 2, #report.ops do
    lu.assertTrue(report.ops[i - 1].seconds >= report.ops[i].seconds, "slowest first")
  end
  local total = report.other
  for _, r in ipairs(report.ops) do
    lu.assertTrue(r.seconds >= 0)
    total = total + r.seconds
  end
  lu.assertTrue(total >= report.wall - 1e-9, "ops + other cover the wall time")
  local text = tostring(report)
  lu.assertStrContains(text, "conv2d")
  lu.assertStrContains(text, "(other)")
  lu.assertStrContains(text, "wall ")
end

function TestProfile:test_off_outside_a_profile_and_errors()
  ff.profile.run(function() ff.randn(3):relu() end)
  lu.assertFalse(ff.profile.running())
  ff.randn(3):relu() -- not counted: the next profile starts from zero
  local report = ff.profile.run(function() end)
  lu.assertEquals(#report.ops, 0)
  -- an error in the profiled function stops the profile and goes on up
  local err = error_of(ff.profile.run, function() error("boom", 0) end)
  lu.assertEquals(err, "boom")
  lu.assertFalse(ff.profile.running())
  lu.assertStrContains(error_of(ff.profile.run, 42), "ff.profile.run: argument #1 must be a function, got number")
  lu.assertStrContains(error_of(ff.profile.stop), "ff.profile.stop: no profile is running")
  ff.profile.start()
  lu.assertStrContains(error_of(ff.profile.start), "ff.profile.start: a profile is already running")
  ff.profile.stop()
end

os.exit(testlib.run())
