-- ff_worker.lua: the engine side of tests/bench/bench_ops.py.
--
-- Run as `./firefly tests/bench/ff_worker.lua`; it reads one command per
-- line on stdin and answers with one line on stdout:
--
--   setup CASE THREADS  -> "ok" | "unavailable: <error>"
--       sets the BLAS thread count, builds the case's inputs (ff.randn) and
--       runs one step (a warm-up that also proves the ops exist).
--   run N [LEAD]        -> "time <seconds for N steps>" | "error: <msg>"
--       LEAD (default 0) untimed steps first, straight before the timed ones.
--   check CASE          -> "check <v1> <v2> ..." | "unavailable: <error>"
--       one step on deterministic inputs (the same formula as the driver's);
--       prints the output's norm, then each gradient's norm, so the driver
--       can tell a fast wrong path from a fast right one.
--   mem                 -> "mem <VmHWM kB> <VmRSS kB> <ff live bytes> <ff peak bytes>"
--       VmHWM is the peak resident size since the last setup (setup resets
--       it through /proc/self/clear_refs).
--   info                -> "info <key=value> ..."
--   quit
--
-- A case is one function below: it takes a tensor maker `mk(shape, salt,
-- scale)` and returns `step, grads`, where step() does one forward+backward
-- (and returns the output) and grads() lists the tensors whose .grad the
-- check reports. Each step clears the gradients it will produce first, as
-- the torch side sets .grad = None, so both pay the same accumulation.
-- The timed loop calls step() and nothing else: no forced collection, the
-- engine's own memory accounting runs the collector as it would for a user.

local ff = require "firefly"

local cases = {}

local function clear(list)
  for _, t in ipairs(list) do t.grad = nil end
end

local function norms(y, list)
  local out = { y:norm():item() }
  for _, t in ipairs(list) do
    out[#out + 1] = t.grad and t.grad:norm():item() or 0 / 0
  end
  return out
end

-- linear: x (B, in) needs no gradient (a first layer); W and b do.
local function linear_case(B, I, O)
  return function(mk)
    local x = mk({ B, I }, 1, 1)
    local W = mk({ O, I }, 2, 0.05):requires_grad(true)
    local b = mk({ O }, 3, 0.1):requires_grad(true)
    local ps = { W, b }
    local function step()
      clear(ps)
      local y = ff.linear(x, W, b)
      y:sum():backward()
      return y
    end
    return step, ps
  end
end
cases.linear_784_256 = linear_case(128, 784, 256)
cases.linear_256_10 = linear_case(128, 256, 10)

-- conv2d 3x3, padding 1: a middle layer, so x needs its gradient too.
local function conv_case(B, C, HW)
  return function(mk)
    local x = mk({ B, C, HW, HW }, 1, 1):requires_grad(true)
    local W = mk({ C, C, 3, 3 }, 2, 0.05):requires_grad(true)
    local b = mk({ C }, 3, 0.1):requires_grad(true)
    local ps = { x, W, b }
    local opts = { stride = 1, padding = 1 }
    local function step()
      clear(ps)
      local y = ff.conv2d(x, W, b, opts)
      y:sum():backward()
      return y
    end
    return step, ps
  end
end
cases.conv_32 = conv_case(128, 32, 28)
cases.conv_64 = conv_case(128, 64, 28)

-- batch_norm (training mode: batch statistics, running statistics updated)
-- then relu; x, weight and bias need gradients. The engine runs them as its
-- one fused op (relu = true: the bits of batch_norm then :relu(), with one
-- pass over memory fewer each way), as nn.Sequential does for a BatchNorm
-- followed by a ReLU; BENCH_BN_UNFUSED=1 times the two ops instead.
cases.bn_relu = function(mk)
  local C = 32
  local x = mk({ 128, C, 28, 28 }, 1, 1):requires_grad(true)
  local g = (mk({ C }, 2, 0.1) + 1):requires_grad(true)
  local be = mk({ C }, 3, 0.1):requires_grad(true)
  local rm, rv = ff.zeros(C), ff.ones(C)
  local ps = { x, g, be }
  local unfused = (os.getenv("BENCH_BN_UNFUSED") or "") ~= ""
  local bn_opts = { weight = g, bias = be, running_mean = rm, running_var = rv,
    training = true, momentum = 0.1, eps = 1e-5 }
  if not unfused then bn_opts.relu = true end -- absent otherwise: older builds reject the key
  local function step()
    clear(ps)
    local y = ff.batch_norm(x, bn_opts)
    if unfused then y = y:relu() end
    y:sum():backward()
    return y
  end
  return step, ps
end

-- One SGD step of an MLP 784-256-256-10 with cross-entropy (mean over the
-- batch), batch 128; the update p -= lr * grad runs without recording.
cases.mlp_step = function(mk, labels)
  local x = mk({ 128, 784 }, 1, 1)
  local y = labels(128)
  local sizes = { 784, 256, 256, 10 }
  local ps = {}
  for l = 1, 3 do
    ps[#ps + 1] = mk({ sizes[l + 1], sizes[l] }, 2 * l, 1 / math.sqrt(sizes[l])):requires_grad(true)
    ps[#ps + 1] = mk({ sizes[l + 1] }, 2 * l + 1, 0.01):requires_grad(true)
  end
  local lr = 0.01
  local function update()
    for _, p in ipairs(ps) do p:sub_(p.grad * lr) end
  end
  local function step()
    clear(ps)
    local h = ff.linear(x, ps[1], ps[2]):relu()
    h = ff.linear(h, ps[3], ps[4]):relu()
    local loss = ff.cross_entropy(ff.linear(h, ps[5], ps[6]), y)
    loss:backward()
    ff.no_grad(update)
    return loss
  end
  return step, ps
end

-- The small VGG of examples/fashion_cnn.lua (conv 32, 32, pool, 64, 64,
-- pool; 3x3, BN, ReLU; flatten, linear), built with ff.nn as a user would.
-- Parameters are set deterministically in their (shared) order: rank > 1
-- scaled by 1/sqrt(fan_in), rank 1 as 1 + 0.1 * mk (BN weights and biases
-- alike), so the driver's check can compare both sides.
local function small_vgg(mk)
  local net = ff.nn.vgg { preset = "small", in_channels = 1, classes = 10, input_size = 28 }
  local ps = net:parameters()
  ff.no_grad(function()
    for i, p in ipairs(ps) do
      local shape = p:size()
      if #shape > 1 then
        p:copy_(mk(shape, 10 + i, 1 / math.sqrt(p:numel() / shape[1])))
      else
        p:copy_(mk(shape, 10 + i, 0.1) + 1)
      end
    end
  end)
  return net, ps
end

-- One SGD (momentum 0.9) training step of the small VGG, batch 128.
cases.vgg_step = function(mk, labels)
  local net, ps = small_vgg(mk)
  local x, y = mk({ 128, 1, 28, 28 }, 1, 1), labels(128)
  local opt = ff.optim.SGD(ps, { lr = 0.01, momentum = 0.9 })
  local function step()
    opt:zero_grad()
    local loss = ff.cross_entropy(net(x), y)
    loss:backward()
    opt:step()
    return loss
  end
  return step, ps
end

-- Inference of the small VGG (eval mode, no recording), batch 128.
cases.vgg_infer = function(mk)
  local net = small_vgg(mk)
  net:eval()
  local x = mk({ 128, 1, 28, 28 }, 1, 1)
  return function() return ff.no_grad(net, x) end, {}
end

-- The ceiling: one sgemm of 1024x1024 by 1024x1024 through ff.matmul.
cases.sgemm_1024 = function(mk)
  local a, b = mk({ 1024, 1024 }, 1, 1), mk({ 1024, 1024 }, 2, 1)
  return function() return a:matmul(b) end, {}
end

-- ---- inputs ----

local function shape_numel(shape)
  local n = 1
  for _, s in ipairs(shape) do n = n * s end
  return n
end

-- Random inputs for timing (values do not affect speed).
local function mk_random(shape, _, scale)
  return ff.randn(shape) * scale
end
local function labels_random(n)
  return ff.randint(1, 10, n)
end

-- Deterministic inputs: scale * sin(0.7548776662 * i + salt) over the flat
-- index i, computed in double and rounded to float, exactly as the driver
-- computes them for torch (torch.sin on float64, then .float()).
local function mk_det(shape, salt, scale)
  local n, v = shape_numel(shape), {}
  for i = 0, n - 1 do v[i + 1] = scale * math.sin(0.7548776662 * i + salt) end
  return ff.tensor(v):reshape(shape)
end
local function labels_det(n)
  local v = {}
  for i = 0, n - 1 do v[i + 1] = (i * 7) % 10 + 1 end
  return ff.tensor(v)
end

-- ---- memory ----

local function proc_status(key)
  local f = io.open("/proc/self/status")
  if not f then return -1 end
  local s = f:read("a")
  f:close()
  return tonumber(s:match(key .. ":%s*(%d+)")) or -1
end

-- Resets VmHWM to the current RSS (Linux >= 4.0); harmless if refused.
local function reset_peak()
  local f = io.open("/proc/self/clear_refs", "w")
  if f then
    f:write("5")
    f:close()
  end
end

local function blas_path()
  local f = io.open("/proc/self/maps")
  if not f then return "?" end
  for line in f:lines() do
    local p = line:match("(/%S*openblas%S*)")
    if p then f:close() return p end
  end
  f:close()
  return "?"
end

-- ---- protocol ----

local function oneline(msg)
  return (tostring(msg):gsub("[\r\n]+", " | "))
end

local function reply(s)
  io.write(s, "\n")
  io.flush()
end

local step -- the current case's step function

local handlers = {}

function handlers.setup(name, threads)
  step = nil
  collectgarbage("collect")
  collectgarbage("collect")
  local make = cases[name]
  if not make then return "unavailable: no such case " .. tostring(name) end
  ff.set_num_threads(tonumber(threads) or 1)
  reset_peak()
  local ok, err = pcall(function()
    local s = make(mk_random, labels_random)
    s() -- warm-up, and proof that every op of the case exists
    step = s
  end)
  if not ok then return "unavailable: " .. oneline(err) end
  return "ok"
end

function handlers.run(n, lead)
  if not step then return "error: no case set up" end
  n, lead = tonumber(n) or 1, tonumber(lead) or 0
  local s = step
  local ok, res = pcall(function()
    for _ = 1, lead do s() end
    local t0 = ff.clock()
    for _ = 1, n do s() end
    return ff.clock() - t0
  end)
  if not ok then return "error: " .. oneline(res) end
  return string.format("time %.9f", res)
end

function handlers.check(name)
  local make = cases[name]
  if not make then return "unavailable: no such case " .. tostring(name) end
  local ok, res = pcall(function()
    local s, grads = make(mk_det, labels_det)
    local y = s()
    return norms(y, grads)
  end)
  collectgarbage("collect")
  if not ok then return "unavailable: " .. oneline(res) end
  local parts = {}
  for i, v in ipairs(res) do parts[i] = string.format("%.9g", v) end
  return "check " .. table.concat(parts, " ")
end

function handlers.mem()
  local live, peak = ff.memory()
  return string.format("mem %d %d %d %d", proc_status("VmHWM"), proc_status("VmRSS"), live, peak)
end

function handlers.info()
  return string.format("info firefly=%s lua=%s openblas=%s vmrss_kb=%d", ff.version,
    (_VERSION:gsub(" ", "_")), blas_path(), proc_status("VmRSS"))
end

for line in io.lines() do
  local cmd, a, b = line:match("^(%S+)%s*(%S*)%s*(%S*)")
  if cmd == "quit" then break end
  local h = cmd and handlers[cmd]
  if h then
    local ok, res = pcall(h, a, b)
    reply(ok and res or "error: " .. oneline(res))
  elseif cmd then
    reply("error: unknown command " .. cmd)
  end
end
