-- firefly.train: the training loop (train.fit) and evaluation
-- (train.evaluate), with a progress display and per-epoch logs.
local ff = require "firefly"
local dist = require "firefly.dist"

local train = {}

-- Losses by name; a function(output, target) -> scalar tensor also works.
local losses = {
  cross_entropy = function(out, y) return ff.cross_entropy(out, y) end,
  mse = function(out, y) return ff.mse_loss(out, y) end,
  bce_with_logits = function(out, y) return ff.bce_with_logits(out, y) end,
}

local function loss_fn(spec)
  if type(spec) == "function" then return spec end
  local fn = losses[spec or "cross_entropy"]
  if not fn then error("train: unknown loss '" .. tostring(spec) .. "' (cross_entropy, mse, bce_with_logits)", 3) end
  return fn
end
-- (a name or a function -> the function; grow.run reads it too)
train.loss_fn = loss_fn

-- A DataLoader, or a dataset wrapped in one (no shuffling, batch 256).
local function as_loader(data, batch_size)
  if data == nil then return nil end
  if data.iter then return data end
  return ff.data.DataLoader(data, { batch_size = batch_size or 256, shuffle = false })
end

local function correct(out, y)
  if out:dim() ~= 2 or y:dim() ~= 1 then return nil end
  return out:argmax(2):eq(y):sum():item()
end

-- train.evaluate(model, data [, {loss =, batch_size =, deterministic =}])
--   -> {loss =, accuracy =, n =}
-- Runs in eval mode without recording; restores the model's mode. Under
-- several ranks each evaluates its rows of every batch and the sums are
-- reduced; deterministic = K sums K fixed parts of each batch in order
-- (bit-identical on any number of ranks dividing K).
function train.evaluate(model, data, opts)
  opts = opts or {}
  require("firefly.options").check("train.evaluate", opts, { loss = true, batch_size = true, deterministic = true })
  if opts.deterministic == true then opts = { loss = opts.loss, batch_size = opts.batch_size, deterministic = 4 } end
  if opts.deterministic == false then opts.deterministic = nil end
  local loader = as_loader(data, opts.batch_size)
  local lf = loss_fn(opts.loss)
  local was_training = model.training
  model:eval()
  local total, hits, n, classify = 0, 0, 0, true
  local function add(x, y)
    local out = model(x)
    local b = x:size(1)
    total = total + lf(out, y):item() * b
    local c = correct(out, y)
    if c then hits = hits + c else classify = false end
    n = n + b
  end
  local K = opts.deterministic
  ff.no_grad(function()
    if K then
      -- K fixed parts per batch, each part's sums kept apart and added in
      -- part order at the end: the same floats on any number of ranks
      -- (adding zeros from the other ranks is exact)
      local R, N = dist.rank(), dist.size()
      local per, sums = K // N, {}
      for i = 1, 3 * K do sums[i] = 0 end
      for len, off, x, y in loader:iter_shard(R, N) do
        for k = R * per, (R + 1) * per - 1 do
          local lo, cnt = ff.data.shard_rows(len, k, K)
          if cnt > 0 then
            local xk, yk = x:narrow(1, lo - off + 1, cnt), y and y:narrow(1, lo - off + 1, cnt)
            local out = model(xk)
            sums[3 * k + 1] = sums[3 * k + 1] + lf(out, yk):item() * cnt
            local c = correct(out, yk)
            if c then sums[3 * k + 2] = sums[3 * k + 2] + c else classify = false end
            sums[3 * k + 3] = sums[3 * k + 3] + cnt
          end
        end
      end
      sums[#sums + 1] = classify and 0 or 1
      sums = dist.allreduce_numbers(sums)
      for k = 0, K - 1 do
        total, hits, n = total + sums[3 * k + 1], hits + sums[3 * k + 2], n + sums[3 * k + 3]
      end
      classify = sums[3 * K + 1] == 0
    elseif dist.size() == 1 then
      for x, y in loader:iter() do add(x, y) end
    else
      -- each rank its rows of every batch, then the sums over ranks
      for _, _, x, y in loader:iter_shard(dist.rank(), dist.size()) do
        if x then add(x, y) end
      end
      local s = dist.allreduce_numbers({ total, hits, n, classify and 0 or 1 })
      total, hits, n, classify = s[1], s[2], s[3], s[4] == 0
    end
  end)
  model:train(was_training)
  return { loss = total / math.max(n, 1), accuracy = classify and hits / math.max(n, 1) or nil, n = n }
end

local function check_fit(opts)
  for _, k in ipairs { "model", "data", "optim" } do
    if opts[k] == nil then error("train.fit: missing '" .. k .. "'", 3) end
  end
  local allowed = { model = 1, data = 1, optim = 1, epochs = 1, schedule = 1, loss = 1, val = 1,
    test = 1, on_epoch = 1, log = 1, quiet = 1, label = 1, clip = 1, start_epoch = 1, on_step = 1,
    deterministic = 1 }
  require("firefly.options").check("train.fit", opts, allowed, "option", 3)
  local det = opts.deterministic
  if det == nil then det = dist.deterministic() end
  if det ~= nil and det ~= false then
    local k = det == true and 4 or det
    if math.type(k) ~= "integer" or k < 1 then
      error("train.fit: deterministic must be true or a number of parts >= 1, got " .. tostring(det), 3)
    end
    if k % dist.size() ~= 0 then
      error(string.format("train.fit: deterministic = %d parts cannot be split over %d ranks " ..
        "(the number of ranks must divide it)", k, dist.size()), 3)
    end
  end
end

local function finite(t)
  local s = t:sum():item() -- sums accumulate in double: NaN or ±inf only from NaN/inf entries
  return s == s and s ~= math.huge and s ~= -math.huge
end

-- The first parameter whose gradient is not finite (its name, or its
-- position), or nil.
local function bad_gradient(opt)
  for i, e in ipairs(opt:named_params()) do
    local g = e.param.grad
    if g and not finite(g) then return e.name or ("parameter " .. i) end
  end
end

-- Where a non-finite loss comes from: the first parameter that is not
-- finite, else the first module of a Sequential (recursively) whose output
-- is not finite on x; nil if none is found.
local function first_nonfinite(model, x)
  for _, e in ipairs(model:named_parameters()) do
    if not finite(e.param) then return "parameter " .. e.name end
  end
  local function walk(m, input, prefix)
    if getmetatable(m).__name ~= "Sequential" then return nil, m(input) end
    for _, c in ipairs(m._children) do
      local name = prefix .. c[1]
      local out = c[2](input)
      if not finite(out) then
        local inner = getmetatable(c[2]).__name == "Sequential" and walk(c[2], input, name .. ".")
        return inner or string.format("module %s (%s)", name, getmetatable(c[2]).__name), out
      end
      input = out
    end
    return nil, input
  end
  return ff.no_grad(function() return (walk(model, x, "")) end)
end

-- A non-finite loss or gradient stops training with where and when; the
-- message starts "train.fit: <label>: non-finite" (grow.run's on_nan
-- recognises it).
local function nonfinite_error(bar, label, step, what)
  bar:finish()
  error(string.format("train.fit: %s: non-finite %s at step %d", label, what, step), 0)
end

-- One epoch over loader; returns mean loss, accuracy, seconds, and true
-- when Ctrl-C (`stop`) ended it after a batch.
local function run_epoch(opts, loader, lf, label, stop)
  local model, opt = opts.model, opts.optim
  model:train()
  local bar <close> = ff.logging.progress { total = #loader, label = label, quiet = opts.quiet, unit = "batch",
    run_step = true }
  local total, hits, n, classify, step = 0, 0, 0, true, 0
  for x, y in loader:iter() do
    local out = model(x)
    local loss = lf(out, y)
    local l = loss:item()
    if l ~= l or l == math.huge or l == -math.huge then
      local where = first_nonfinite(model, x)
      nonfinite_error(bar, label, step + 1, string.format("loss (%s)%s", tostring(l),
        where and ", first seen in the output of " .. where or ""))
    end
    opt:zero_grad()
    loss:backward()
    -- checked before the step, so the weights stay the last good ones;
    -- without clipping, in the same C call as the step (step_if_finite)
    if opts.clip or not opt.step_if_finite then
      local bad = bad_gradient(opt)
      if bad then nonfinite_error(bar, label, step + 1, "gradient of " .. bad) end
      if opts.clip then ff.optim.clip_grad_norm(opt:params(), opts.clip) end
      opt:step()
    else
      local bad = opt:step_if_finite()
      if bad then nonfinite_error(bar, label, step + 1, "gradient of " .. bad) end
    end
    local b = x:size(1)
    total = total + l * b
    local c = ff.no_grad(correct, out, y)
    if c then hits = hits + c else classify = false end
    n, step = n + b, step + 1
    if opts.on_step then opts.on_step(step, l) end
    bar:update(step, { loss = total / n })
    if stop:asked() then return nil, nil, bar:finish(), true end
  end
  local secs = bar:finish()
  return total / math.max(n, 1), classify and hits / math.max(n, 1) or nil, secs
end

-- ---- data-parallel epochs (several ranks, or deterministic mode) ----
--
-- Every rank reads its rows of each global batch (loader:iter_shard), so
-- the batches and their order are those of one process with the same seed.
-- A rank's gradient of its local mean loss, weighted by its share of the
-- batch, sums over ranks to the gradient of the global mean: one bucketed
-- allreduce per step, which carries the loss too, so every rank sees the
-- same loss and gradients and takes the same decisions (non-finite
-- checks, clipping). Batch norm normalises with each rank's own batch
-- statistics; the running statistics are averaged over ranks after the
-- epoch.
--
-- deterministic = K (true: 4): each global batch is cut into K fixed parts
-- (data.shard_rows), each part's gradient computed alone, and the K
-- gradients summed in part order after one allgather, so the sum is the
-- same floats in the same order on 1, 2 or 4 ranks: bit-identical
-- weights and logs (as long as each rank runs the same thread count).

-- The gradients of params (zeros where missing) and extra numbers as one
-- flat tensor.
local function flat_grads(params, extra)
  local parts = {}
  for i, p in ipairs(params) do
    local g = p.grad
    parts[i] = g and g:reshape(-1) or ff.zeros(p:numel())
  end
  parts[#parts + 1] = ff.tensor(extra)
  return ff.cat(parts)
end

-- flat (from flat_grads) back into the gradients; returns the extras.
local function unflat_grads(params, flat, nextra)
  local off = 1
  for _, p in ipairs(params) do
    local n = p:numel()
    p.grad = flat:narrow(1, off, n):reshape(p:size())
    off = off + n
  end
  return flat:narrow(1, off, nextra):totable()
end

local function step_deterministic(opts, params, lf, len, off, x, y, K)
  local model = opts.model
  local R, N = dist.rank(), dist.size()
  local per = K // N
  local rows, hits, classify = {}, 0, true
  for k = R * per, (R + 1) * per - 1 do
    local lo, cnt = ff.data.shard_rows(len, k, K)
    local flat
    if cnt > 0 then
      local xk = x:narrow(1, lo - off + 1, cnt)
      local yk = y and y:narrow(1, lo - off + 1, cnt)
      local out = model(xk)
      local loss = lf(out, yk)
      opts.optim:zero_grad()
      loss:backward()
      local w = cnt / len
      flat = flat_grads(params, { loss:item() }):mul(w)
      local c = ff.no_grad(correct, out, yk)
      if c then hits = hits + c else classify = false end
    else
      local total = 1
      for _, p in ipairs(params) do total = total + p:numel() end
      flat = ff.zeros(total)
    end
    rows[#rows + 1] = flat
  end
  local all = dist.allgather(ff.stack(rows)) -- N x per x (P+1), in part order
  local sum = ff.no_grad(function() return all:reshape(K, -1):sum(1) end)
  return unflat_grads(params, sum, 1)[1], hits, classify
end

local function run_epoch_dist(opts, loader, lf, label)
  local model, opt = opts.model, opts.optim
  local R, N = dist.rank(), dist.size()
  local det = opts.deterministic
  local K = det == true and 4 or det
  model:train()
  local bar = ff.logging.progress { total = #loader, label = label, unit = "batch", run_step = true,
    quiet = opts.quiet or not dist.is_main() }
  local params = opt:params()
  local reducer = not K and dist.grad_reducer(params)
  -- closed however the epoch ends, so its hooks never act on a later
  -- backward outside this loop
  local _ <close> = reducer and setmetatable({}, { __close = function() reducer:close() end }) or nil
  local total, hits, n, classify, step = 0, 0, 0, true, 0
  for len, off, x, y in loader:iter_shard(R, N) do
    local l
    if K then
      local h, c
      l, h, c = step_deterministic(opts, params, lf, len, off, x, y, K)
      hits, classify = hits + h, classify and c
    else
      opt:zero_grad()
      reducer:begin((x and x:size(1) or 0) / len)
      local local_loss = 0
      if x then
        local out = model(x)
        local loss = lf(out, y)
        loss:backward()
        local_loss = loss:item()
        local c = ff.no_grad(correct, out, y)
        if c then hits = hits + c else classify = false end
      end
      local lt = ff.tensor({ local_loss })
      reducer:finish({ lt })
      l = lt:item()
    end
    if l ~= l or l == math.huge or l == -math.huge then
      local where = x and first_nonfinite(model, x)
      nonfinite_error(bar, label, step + 1, string.format("loss (%s)%s", tostring(l),
        where and ", first seen in the output of " .. where or ""))
    end
    local bad = bad_gradient(opt)
    if bad then nonfinite_error(bar, label, step + 1, "gradient of " .. bad) end
    if opts.clip then ff.optim.clip_grad_norm(opt:params(), opts.clip) end
    opt:step()
    total = total + l * len
    n, step = n + len, step + 1
    if opts.on_step then opts.on_step(step, l) end
    bar:update(step, { loss = total / n })
  end
  local secs = bar:finish()
  local s = dist.allreduce_numbers({ hits, classify and 0 or 1 })
  dist.average_buffers(model)
  return total / math.max(n, 1), s[2] == 0 and s[1] / math.max(n, 1) or nil, secs
end

local function fmt(v, f) return v and string.format(f, v) or "-" end

-- train.fit{model =, data =, optim =, epochs = 1, schedule = nil, loss = "cross_entropy",
--           val = nil, test = nil, on_epoch = nil, log = nil, quiet = false}
-- data/val/test: DataLoaders or datasets. schedule: a scheduler stepped once
-- per epoch. log: a directory (writes train.csv and train.jsonl there) or a
-- log.Logger. on_epoch(epoch, row) may return false to stop early.
-- Returns the list of per-epoch rows. Ctrl-C (under the firefly
-- interpreter) ends the epoch after its batch: the rows of the epochs done
-- are returned, with rows.interrupted = true.
function train.fit(opts)
  check_fit(opts)
  local stop <close> = ff.logging.on_interrupt()
  local loader = as_loader(opts.data)
  local lf = loss_fn(opts.loss)
  local logger = opts.log
  if type(logger) == "string" and dist.is_main() then logger = ff.logging.Logger { dir = logger, name = "train" } end
  local rows = {}
  local first = opts.start_epoch or 1
  if opts.deterministic == nil and dist.deterministic() then
    local copy = {}
    for k, v in pairs(opts) do copy[k] = v end
    copy.deterministic = dist.deterministic() -- the run-wide default (dist.set_deterministic)
    opts = copy
  end
  local parallel = dist.size() > 1 or (opts.deterministic ~= nil and opts.deterministic ~= false)
  local main = dist.is_main()
  if dist.size() > 1 then dist.broadcast_module(opts.model) end
  for epoch = first, first + (opts.epochs or 1) - 1 do
    local label = (opts.label and opts.label .. " " or "") .. "epoch " .. epoch
    local lr = opts.optim.lr
    local tl, ta, secs, stopped
    if parallel then
      tl, ta, secs = run_epoch_dist(opts, loader, lf, label)
    else
      tl, ta, secs, stopped = run_epoch(opts, loader, lf, label, stop)
    end
    if stopped then
      rows.interrupted = true
      if stop.outermost and not opts.quiet then
        io.stderr:write(string.format("train.fit: interrupted in %s; %d epochs done\n", label, #rows))
      end
      break
    end
    if opts.schedule then opts.schedule:step() end
    local row = { epoch = epoch, train_loss = tl, train_acc = ta, lr = lr, seconds = secs }
    for _, which in ipairs { "val", "test" } do
      if opts[which] then
        local r = train.evaluate(opts.model, opts[which], { loss = opts.loss,
          deterministic = opts.deterministic ~= false and opts.deterministic or nil })
        row[which .. "_loss"], row[which .. "_acc"] = r.loss, r.accuracy
      end
    end
    rows[#rows + 1] = row
    if logger and main then logger:write(row) end
    if not opts.quiet and main then
      print(string.format("%s  loss %.4f  acc %s  val %s  test %s  lr %.3g  %.1fs", label, tl,
        fmt(ta, "%.4f"), fmt(row.val_acc, "%.4f"), fmt(row.test_acc, "%.4f"), lr, secs))
    end
    if opts.on_epoch and opts.on_epoch(epoch, row) == false then break end
  end
  return rows
end

return train
