-- firefly.continual.util: what every continual learner shares: option
-- checking with messages that name the function and the option, a plain
-- training loop over a task's loader (the learners' forward is a function
-- of the task, not an nn module, so ff.train.fit does not fit), and
-- evaluation with a given forward.
local ff = require "firefly"

local U = {}

-- U.options("continual.firefly", opts, defaults, checks) -> table
-- Unknown keys are errors (a typo must not silently fall back to a
-- default); checks[k](v) returns an error text when v is bad.
function U.options(fname, opts, defaults, checks)
  if opts ~= nil and type(opts) ~= "table" then
    error(string.format("%s: options must be a table, got %s", fname, type(opts)), 3)
  end
  opts = opts or {}
  require("firefly.options").check(fname, opts, defaults, "option", 3)
  local o = {}
  for k, v in pairs(defaults) do
    if opts[k] == nil then o[k] = v else o[k] = opts[k] end
  end
  for k, check in pairs(checks or {}) do
    if opts[k] ~= nil then
      local msg = check(opts[k])
      if msg then error(string.format("%s: option '%s' %s, got %s", fname, k, msg, tostring(opts[k])), 3) end
    end
  end
  return o
end

-- Reusable checks for U.options.
function U.int(min)
  return function(v)
    if math.type(v) ~= "integer" or v < min then return "must be an integer >= " .. min end
  end
end
function U.num(min, strict)
  return function(v)
    if type(v) ~= "number" or v ~= v or (strict and v <= min) or (not strict and v < min) then
      return "must be a number " .. (strict and "> " or ">= ") .. min
    end
  end
end
function U.bool(v) if type(v) ~= "boolean" then return "must be true or false" end end
function U.widths(v)
  if type(v) ~= "table" or #v == 0 then return "must be a non-empty list of layer widths" end
  for _, w in ipairs(v) do
    if math.type(w) ~= "integer" or w < 1 then return "must list integer widths >= 1" end
  end
end

-- The sum of p:numel() over a list of tensors.
function U.numel(list)
  local n = 0
  for _, p in ipairs(list) do n = n + p:numel() end
  return n
end

-- U.fit{forward, params, data, epochs, lr, batch_size, generator, penalty,
-- label, quiet} trains `params` with Adam on cross-entropy (plus
-- penalty() when given) over `epochs` passes of `data` (a Dataset).
-- `groups = {{params, lr}, ...}` instead gives each group its own Adam
-- (mask logits learn faster than weights). Returns the mean training loss
-- of the last epoch.
function U.fit(o)
  local groups = o.groups or { { o.params, o.lr } }
  local opts = {}
  for _, g in ipairs(groups) do
    if #g[1] > 0 then opts[#opts + 1] = ff.optim.Adam(g[1], { lr = g[2] }) end
  end
  if o.epochs <= 0 or #opts == 0 then return nil end
  local opt = {
    zero_grad = function() for _, x in ipairs(opts) do x:zero_grad() end end,
    step = function() for _, x in ipairs(opts) do x:step() end end,
  }
  local loader = ff.data.DataLoader(o.data, { batch_size = o.batch_size, generator = o.generator })
  local last
  for epoch = 1, o.epochs do
    local bar = ff.logging.progress { total = #loader, label = string.format("%s epoch %d/%d",
      o.label or "train", epoch, o.epochs), quiet = o.quiet, unit = "batch" }
    local total, n, done = 0, 0, 0
    for x, y in loader:iter() do
      opt.zero_grad()
      local loss = ff.cross_entropy(o.forward(x), y)
      if o.penalty then loss = loss + o.penalty() end
      loss:backward()
      opt.step()
      local l = loss:item()
      total, n, done = total + l * x:size(1), n + x:size(1), done + 1
      bar:update(done, { loss = l })
    end
    bar:finish()
    last = total / n
  end
  return last
end

-- Re-estimates batch norm's running statistics after training, as the
-- cumulative average over one pass of `data` in order: run(x, momentum)
-- runs the network in training mode (batch statistics) with that momentum,
-- without recording. Batch i (1-based) uses momentum 1/i, so the running
-- values end as the mean of the batches' statistics. With few batches per
-- task (one epoch on a subset) the usual exponential average (momentum
-- 0.1) would still remember its starting point.
function U.recalibrate(run, data, batch_size)
  local n = data:size()
  ff.no_grad(function()
    local i = 0
    for start = 1, n, batch_size do
      i = i + 1
      local len = math.min(batch_size, n - start + 1)
      run(data.x:narrow(1, start, len), 1 / i)
    end
  end)
end

-- Loss and accuracy of forward(x) on a data set, without recording, in
-- fixed batches (the same batches every time: predictions are compared
-- bit for bit across tasks).
function U.evaluate(forward, ds, batch_size)
  batch_size = batch_size or 1000
  local n = ds:size()
  local loss, correct = 0, 0
  ff.no_grad(function()
    for start = 1, n, batch_size do
      local len = math.min(batch_size, n - start + 1)
      local x, y = ds.x:narrow(1, start, len), ds.y:narrow(1, start, len)
      local out = forward(x)
      loss = loss + ff.cross_entropy(out, y):item() * len
      correct = correct + out:argmax(2):eq(y):sum():item()
    end
  end)
  return { loss = loss / n, accuracy = correct / n, n = n }
end

-- The first `count` batches of a data set in order, as {x, y} pairs: the
-- scoring data of a growth step.
function U.batches(ds, count, batch_size)
  local list = {}
  local n = ds:size()
  for i = 1, count do
    local start = (i - 1) * batch_size + 1
    if start > n then break end
    local len = math.min(batch_size, n - start + 1)
    list[#list + 1] = { ds.x:narrow(1, start, len), ds.y:narrow(1, start, len) }
  end
  return list
end

return U
