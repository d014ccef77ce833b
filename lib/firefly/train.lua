-- firefly.train: the training loop (train.fit) and evaluation
-- (train.evaluate), with a progress display and per-epoch logs.
local ff = require "firefly"

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

-- train.evaluate(model, data [, {loss =, batch_size =}]) -> {loss =, accuracy =, n =}
-- Runs in eval mode without recording; restores the model's mode.
function train.evaluate(model, data, opts)
  opts = opts or {}
  local loader = as_loader(data, opts.batch_size)
  local lf = loss_fn(opts.loss)
  local was_training = model.training
  model:eval()
  local total, hits, n, classify = 0, 0, 0, true
  ff.no_grad(function()
    for x, y in loader:iter() do
      local out = model(x)
      local b = x:size(1)
      total = total + lf(out, y):item() * b
      local c = correct(out, y)
      if c then hits = hits + c else classify = false end
      n = n + b
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
    test = 1, on_epoch = 1, log = 1, quiet = 1, label = 1, clip = 1, start_epoch = 1, on_step = 1 }
  for k in pairs(opts) do
    if not allowed[k] then error("train.fit: unknown option '" .. tostring(k) .. "'", 3) end
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

-- One epoch over loader; returns mean loss, accuracy, seconds.
local function run_epoch(opts, loader, lf, label)
  local model, opt = opts.model, opts.optim
  model:train()
  local bar = ff.logging.progress { total = #loader, label = label, quiet = opts.quiet, unit = "batch" }
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
  end
  local secs = bar:finish()
  return total / math.max(n, 1), classify and hits / math.max(n, 1) or nil, secs
end

local function fmt(v, f) return v and string.format(f, v) or "-" end

-- train.fit{model =, data =, optim =, epochs = 1, schedule = nil, loss = "cross_entropy",
--           val = nil, test = nil, on_epoch = nil, log = nil, quiet = false}
-- data/val/test: DataLoaders or datasets. schedule: a scheduler stepped once
-- per epoch. log: a directory (writes train.csv and train.jsonl there) or a
-- log.Logger. on_epoch(epoch, row) may return false to stop early.
-- Returns the list of per-epoch rows.
function train.fit(opts)
  check_fit(opts)
  local loader = as_loader(opts.data)
  local lf = loss_fn(opts.loss)
  local logger = opts.log
  if type(logger) == "string" then logger = ff.logging.Logger { dir = logger, name = "train" } end
  local rows = {}
  local first = opts.start_epoch or 1
  for epoch = first, first + (opts.epochs or 1) - 1 do
    local label = (opts.label and opts.label .. " " or "") .. "epoch " .. epoch
    local lr = opts.optim.lr
    local tl, ta, secs = run_epoch(opts, loader, lf, label)
    if opts.schedule then opts.schedule:step() end
    local row = { epoch = epoch, train_loss = tl, train_acc = ta, lr = lr, seconds = secs }
    for _, which in ipairs { "val", "test" } do
      if opts[which] then
        local r = train.evaluate(opts.model, opts[which], { loss = opts.loss })
        row[which .. "_loss"], row[which .. "_acc"] = r.loss, r.accuracy
      end
    end
    rows[#rows + 1] = row
    if logger then logger:write(row) end
    if not opts.quiet then
      print(string.format("%s  loss %.4f  acc %s  val %s  test %s  lr %.3g  %.1fs", label, tl,
        fmt(ta, "%.4f"), fmt(row.val_acc, "%.4f"), fmt(row.test_acc, "%.4f"), lr, secs))
    end
    if opts.on_epoch and opts.on_epoch(epoch, row) == false then break end
  end
  return rows
end

return train
