-- firefly.grow.run: Algorithm 1 of the paper, end to end: train the current
-- network for some epochs, grow it by one Firefly step, carry the
-- optimiser's state across, repeat; log every phase.
--
--   ff.grow.run{ net =, data =, test =, optim =, phases = 4, epochs = 1,
--                neighbourhood = {...}, eta = 16, score_batches = 8,
--                log = "out/grow", quiet = false }
--
-- eta, the growth budget of phase t (neurons), is a number, {ratio = r}
-- (r times the current number of neurons in growable units, at least 1),
-- or a function(t, net) -> number such as the ff.schedule ones.
local ff = require "firefly"
local units_mod = require "firefly.grow.units"
local propose = require "firefly.grow.propose"

local R = {}

local function neurons(net)
  local n, per = 0, {}
  for _, u in ipairs(units_mod.units(net)) do
    local w = units_mod.width(u)
    n = n + w
    per[#per + 1] = w
  end
  return n, table.concat(per, "-")
end

local function budget(eta, t, net)
  if type(eta) == "function" then return math.floor(eta(t, net)) end
  if type(eta) == "table" then
    return math.max(1, math.floor((eta.ratio or 0.35) * (neurons(net))))
  end
  return eta
end

-- The first n batches of a loader, as the scoring data of a growth step.
local function first_batches(loader, n)
  local list = {}
  for x, y in loader:iter() do
    list[#list + 1] = { x, y }
    if #list >= n then break end
  end
  return list
end

local function check(opts)
  local allowed = { net = 1, data = 1, test = 1, optim = 1, phases = 1, epochs = 1, neighbourhood = 1,
    eta = 1, score_batches = 1, log = 1, quiet = 1, on_phase = 1 }
  for k in pairs(opts) do
    if not allowed[k] then error("grow.run: unknown option '" .. tostring(k) .. "'", 3) end
  end
  for _, k in ipairs { "net", "data", "optim" } do
    if not opts[k] then error("grow.run: missing '" .. k .. "'", 3) end
  end
end

-- Returns the list of per-phase rows.
function R.run(opts)
  check(opts)
  local net, loader = opts.net, opts.data
  local opt = opts.optim
  -- grow.* holds only what a seed determines, so two runs' logs compare
  -- byte for byte; wall times go to timing.*
  local logger = opts.log and ff.logging.Logger { dir = opts.log, name = "grow" }
  local timing = opts.log and ff.logging.Logger { dir = opts.log, name = "timing" }
  local rows = {}
  local epoch = 0
  for t = 1, opts.phases or 4 do
    local fit = ff.train.fit { model = net, data = loader, optim = opt, epochs = opts.epochs or 1,
      test = opts.test, quiet = opts.quiet, start_epoch = epoch + 1, label = "phase " .. t }
    epoch = epoch + #fit
    local last = fit[#fit]
    local train_seconds = 0
    for _, r in ipairs(fit) do train_seconds = train_seconds + r.seconds end
    local n, shape = neurons(net)
    local row = { phase = t, epoch = epoch, neurons = n, widths = shape, params = net:num_params(),
      train_loss = last.train_loss, train_acc = last.train_acc, test_acc = last.test_acc,
      test_loss = last.test_loss }
    if t < (opts.phases or 4) then
      local t0 = ff.clock()
      local p = propose.propose(net, opts.neighbourhood or {},
        first_batches(loader, opts.score_batches or 8))
      p:select(budget(opts.eta or 16, t, net))
      local _, _, report = p:apply(opt)
      row.grow_seconds = ff.clock() - t0
      row.grown = report.selected
      row.predicted_dloss, row.measured_dloss = report.predicted, report.measured
    end
    rows[#rows + 1] = row
    if logger then
      local logged = {}
      for k, v in pairs(row) do if k ~= "grow_seconds" then logged[k] = v end end
      logger:write(logged)
      timing:write { phase = t, train_seconds = train_seconds, grow_seconds = row.grow_seconds or 0 }
    end
    if not opts.quiet then
      print(string.format("phase %d  widths %-12s params %7d  train loss %.4f  test acc %s  %s", t,
        row.widths, row.params, row.train_loss, row.test_acc and string.format("%.4f", row.test_acc) or "-",
        row.grown and string.format("grew %d (dL predicted %.2e, measured %.2e, %.2f s)", row.grown,
          row.predicted_dloss, row.measured_dloss, row.grow_seconds) or ""))
    end
    if opts.on_phase and opts.on_phase(t, row) == false then break end
  end
  if logger then logger:close(); timing:close() end
  return rows
end

return R
