-- firefly.grow.run: Algorithm 1 of the paper, end to end: train the current
-- network for some epochs, grow it by one Firefly step, carry the
-- optimiser's state across, repeat; log every phase.
--
--   ff.grow.run{ net =, data =, test =, optim =, phases = 4, epochs = 1,
--                neighbourhood = {...}, eta = {ratio = 0.35}, score_batches = 8,
--                log = "out/grow", quiet = false, plot = true }
--
-- eta, the growth budget of phase t, is a number of neurons, {ratio = r}
-- (r times the current number of neurons in growable units, at least 1),
-- a budget table ({params = P}, ...), or a function(t, net) -> budget such
-- as the ff.grow.budget ones (budget.resolve reads every form; none:
-- budget.DEFAULT). `preset = "paper" | "official"` sets the neighbourhood
-- (unless given) and the run's defaults of that preset (grow.run_presets:
-- the official one's eta, score_batches = "all", reset_optim); the run's
-- own options win. The neighbourhood's `method` picks
-- the growth method (Firefly, or a baseline: spec/grow.md); every method
-- logs the same row, with its name, the neurons and parameters it added
-- and (timing.*) its wall time. NASH ranks its children on `val`. `loss`
-- (a name or a function, as train.fit takes) is the training loss and,
-- unless the neighbourhood has its own, the growth step's.
local ff = require "firefly"
local units_mod = require "firefly.grow.units"
local propose = require "firefly.grow.proposal"
local dist = require "firefly.dist" -- several ranks: spec/dist.md, "Growth"

local R = {}

local schedule = require "firefly.grow.budget"
local presets = require "firefly.grow.presets"

-- Neurons of the growable units, and their widths as "24-19".
local function widths(net)
  local per = {}
  for _, u in ipairs(units_mod.units(net)) do per[#per + 1] = units_mod.width(u) end
  return table.concat(per, "-")
end


-- The first n batches of a loader, as the scoring data of a growth step
-- ("all": the loader itself, one pass per use).
local function first_batches(loader, n)
  if n == "all" and dist.size() == 1 then return loader end
  return dist.local_batches(loader, n) -- this rank's rows of each batch
end

local check = require("firefly.grow.run_options").check
local is_loader = require("firefly.grow.run_options").is_loader

-- Generator states travel as hex (checkpoint metadata is JSON text).
local function hex(s) return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end)) end
local function unhex(h) return (h:gsub("%x%x", function(b) return string.char(tonumber(b, 16)) end)) end

-- Everything a later phase depends on: the network, the optimiser's
-- state, every random stream, the epoch and the rows so far. Written
-- atomically (ff.save), so a killed run leaves the previous phase's.
local function save_checkpoint(path, net, opt, loader, nb, phase, epoch, rows, timings, partial, recipe)
  ff.save(path, {
    recipe = recipe or false,
    format = "firefly-grow-1", phase = phase, epoch = epoch, net = net, optim = opt:state_dict(),
    rng = hex(ff.get_rng_state():get_state()),
    loader_rng = loader.generator and hex(loader.generator:get_state()) or false,
    loader_epoch = loader.epoch or 0,
    nb_rng = nb.generator and hex(nb.generator:get_state()) or false,
    rows = rows, timing = timings or {}, partial = partial or false,
  })
end

-- Put the random streams back where the checkpoint left them.
local function restore_streams(ck, loader, nb)
  local g = ff.Generator()
  g:set_state(unhex(ck.rng))
  ff.set_rng_state(g)
  if ck.loader_rng and loader.generator then loader.generator:set_state(unhex(ck.loader_rng)) end
  loader.epoch = ck.loader_epoch
  if ck.nb_rng and nb.generator then nb.generator:set_state(unhex(ck.nb_rng)) end
end

R.save_checkpoint = save_checkpoint

-- Plots of a run so far, next to its log: test accuracy and training loss
-- against parameters (one point per phase).
function R.plot(dir, rows, name)
  local plot = require "firefly.plot"
  local last = rows[#rows]
  name = name or last.method or "firefly"
  if last.test_acc then
    plot.from_rows(rows, { x = "params", y = "test_acc", name = name, path = dir .. "/accuracy",
      title = "test accuracy after each phase", xlabel = "parameters", ylabel = "test accuracy" })
  end
  plot.from_rows(rows, { x = "params", y = "train_loss", name = name, path = dir .. "/loss",
    title = "training loss after each phase", xlabel = "parameters", ylabel = "training loss" })
end

-- The neighbourhood a phase's step uses: NASH trains its children on the
-- run's training data and ranks them on its validation data.
local function step_neighbourhood(nb, opts)
  if nb.method ~= "nash" and not (opts.loss and not nb.loss) then return nb end
  local copy = {}
  for k, v in pairs(nb) do copy[k] = v end
  -- the run's loss is the growth step's too, unless the neighbourhood has one
  if not copy.loss and opts.loss then copy.loss = ff.train.loss_fn(opts.loss) end
  if nb.method ~= "nash" then return copy end
  copy.train = copy.train or opts.data
  copy.val = copy.val or opts.val
  if not copy.val then
    error("grow.run: method nash needs validation data: pass val = (a DataLoader or dataset), never the test set", 3)
  end
  return copy
end

-- What the grow log holds of a row: all but the wall time.
local function logged(row)
  local out = {}
  for k, v in pairs(row) do if k ~= "grow_seconds" then out[k] = v end end
  return out
end

-- The logs of a run: on resume they are rewritten from the checkpoint's
-- rows, so a run killed after logging a phase but before checkpointing it
-- does not log that phase twice.
local function open_logs(dir, ck)
  if not dir then return nil end
  local logs = { grow = ff.logging.Logger { dir = dir, name = "grow" },
    timing = ff.logging.Logger { dir = dir, name = "timing" } }
  if ck then
    for _, row in ipairs(ck.rows) do logs.grow:write(logged(row)) end
    for _, row in ipairs(ck.timing or {}) do logs.timing:write(row) end
  end
  return logs
end

-- The state a phase starts from, in memory, for on_nan = "rollback".
local function snapshot(net, opt, loader, nb)
  local snap = { optim = opt:state_dict(), rng = ff.get_rng_state():get_state(),
    loader_rng = loader.generator and loader.generator:get_state(), loader_epoch = loader.epoch,
    nb_rng = nb.generator and nb.generator:get_state(), tensors = {} }
  for _, list in ipairs { net:named_parameters(), net:named_buffers() } do
    for _, e in ipairs(list) do snap.tensors[#snap.tensors + 1] = { e.param, e.param:clone() } end
  end
  return snap
end

local function restore(snap, opt, loader, nb)
  ff.no_grad(function()
    for _, pair in ipairs(snap.tensors) do pair[1]:copy_(pair[2]) end
  end)
  opt:load_state_dict(snap.optim)
  local g = ff.Generator()
  g:set_state(snap.rng)
  ff.set_rng_state(g)
  if snap.loader_rng then loader.generator:set_state(snap.loader_rng) end
  loader.epoch = snap.loader_epoch
  if snap.nb_rng then nb.generator:set_state(snap.nb_rng) end
end

local function check_every(opts)
  local n = opts.checkpoint_every
  if n == nil then return end
  if type(n) ~= "number" or n < 1 or n ~= math.floor(n) then
    error("grow.run: checkpoint_every must be a positive whole number of epochs, got " .. tostring(n), 3)
  end
  if not opts.checkpoint then error("grow.run: checkpoint_every needs checkpoint = path", 3) end
end

local function check_on_nan(opts)
  local mode = opts.on_nan or "stop"
  if mode ~= "stop" and mode ~= "rollback" then
    error("grow.run: on_nan must be \"stop\" or \"rollback\", got " .. tostring(mode), 3)
  end
  local factor = opts.nan_lr_factor or 0.5
  if type(factor) ~= "number" or not (factor > 0 and factor < 1) then
    error("grow.run: nan_lr_factor must be a number in (0, 1), got " .. tostring(factor), 3)
  end
  local tries = opts.max_rollbacks or 3
  if type(tries) ~= "number" or tries < 0 or tries ~= math.floor(tries) then
    error("grow.run: max_rollbacks must be a non-negative integer, got " .. tostring(tries), 3)
  end
  return mode, factor, tries
end

-- Training of phase t, with the numerical-fault policy: a non-finite loss
-- or gradient stops the run (the last checkpoint, written after the last
-- good phase, stays), or rolls the phase back to its start, lowers the
-- learning rate and trains it again.
--
-- With checkpoint_every = N, a checkpoint is also written after every N
-- epochs inside the phase (`partial`: the phase's epochs so far and its
-- schedule's state), and a resumed run trains only the phase's remaining
-- epochs.
local function train_phase(opts, t, epoch, state, rows, timings)
  local net, opt, loader = opts.net, state.opt, opts.data
  local snap = state.on_nan == "rollback" and snapshot(net, opt, loader, state.nb)
  local rollbacks = 0
  local partial = state.partial
  state.partial = nil
  while true do
    local sched
    if opts.lr_schedule then
      opt.lr = state.base_lr
      sched = opts.lr_schedule(opt, t)
      if partial and partial.schedule then sched:load_state_dict(partial.schedule) end
    end
    local done = partial and partial.rows or {}
    local epochs = (opts.epochs or 1) - #done
    local on_epoch
    if opts.checkpoint and opts.checkpoint_every then
      local so_far = {}
      for i, r in ipairs(done) do so_far[i] = r end
      on_epoch = function(e, row)
        so_far[#so_far + 1] = row
        if #so_far % opts.checkpoint_every == 0 and #so_far < (opts.epochs or 1) then
          if dist.is_main() then -- dist: rank 0 writes
            save_checkpoint(opts.checkpoint, net, opt, loader, state.nb, t - 1, e, rows, timings,
              { phase = t, rows = so_far, schedule = sched and sched:state_dict() or false }, opts.recipe)
          end
        end
      end
    end
    local ok, fit = pcall(ff.train.fit, { model = net, data = loader, optim = opt, epochs = epochs,
      test = opts.test, quiet = opts.quiet, start_epoch = epoch + #done + 1, label = "phase " .. t,
      schedule = sched, loss = opts.loss, on_epoch = on_epoch })
    if ok then
      local all = { interrupted = fit.interrupted }
      for _, r in ipairs(done) do all[#all + 1] = r end
      for _, r in ipairs(fit) do all[#all + 1] = r end
      return all
    end
    local fault = type(fit) == "string" and fit:find("^train%.fit: .-: non%-finite")
    if not fault then error(fit, 0) end
    if state.on_nan == "rollback" and rollbacks < state.max_rollbacks then
      rollbacks = rollbacks + 1
      restore(snap, opt, loader, state.nb) -- the phase's first lr too
      state.base_lr = state.base_lr * state.nan_lr_factor
      opt.lr = opt.lr * state.nan_lr_factor ^ rollbacks
      if not opts.quiet then
        print(string.format("%s\nphase %d rolled back to its start (%d of %d); lr now %.3g", fit, t, rollbacks,
          state.max_rollbacks, opt.lr))
      end
    else
      local kept = opts.checkpoint and (t > 1 or opts.resume)
        and string.format("the last good checkpoint (after phase %d) is %s", t - 1, opts.checkpoint)
        or "no checkpoint was written (pass checkpoint = path to keep one after every phase)"
      error(string.format("grow.run: phase %d stopped: %s%s; %s", t, fit,
        rollbacks > 0 and string.format(" (after %d rollbacks)", rollbacks) or "", kept), 0)
    end
  end
end

-- The table printed at the end of a run: columns as wide as their cells.
local summary_columns = {
  { "phase" }, { "widths" }, { "params" }, { "train_loss", "train loss", "%.4f" },
  { "test_acc", "test acc", "%.4f" }, { "grown", "grew" }, { "predicted_dloss", "dL predicted", "%.2e" },
  { "measured_dloss", "dL measured", "%.2e" }, { "grow_seconds", "grow s", "%.2f" },
}

-- Returns the list of per-phase rows. With `checkpoint = path` the state
-- after every phase is saved there; `resume = <a loaded checkpoint>` goes
-- on from it (the caller has rebuilt net and optim from it). Ctrl-C (under
-- the firefly interpreter) stops after the current batch: the rows of the
-- phases done are returned, with rows.interrupted = true (the checkpoint
-- and logs hold those phases).
-- A preset's run defaults under the user's options, and its neighbourhood
-- when none is given.
local function with_preset(opts)
  if not opts.preset then return opts end
  local copy = {}
  for k, v in pairs(presets.run_presets[opts.preset]) do copy[k] = v end
  for k, v in pairs(opts) do copy[k] = v end
  copy.neighbourhood = copy.neighbourhood or presets.neighbourhood(opts.preset)
  return copy
end

function R.run(opts)
  check(opts)
  opts = with_preset(opts)
  if not is_loader(opts.data) then
    -- a data set, as train.fit takes it: shuffled batches drawn from the
    -- default generator (so ff.manual_seed decides the order)
    local copy = {}
    for k, v in pairs(opts) do copy[k] = v end
    copy.data = ff.data.DataLoader(opts.data, { batch_size = opts.batch_size or 128, shuffle = true })
    opts = copy
  end
  local stop <close> = ff.logging.on_interrupt()
  local net, loader = opts.net, opts.data
  local nb = opts.neighbourhood or {}
  -- a function(unit) -> settings: the per-unit form, as propose reads it
  if type(nb) == "function" then nb = { default = nb } end
  local state = { opt = opts.optim, nb = nb, base_lr = opts.optim.lr }
  state.on_nan, state.nan_lr_factor, state.max_rollbacks = check_on_nan(opts)
  check_every(opts)
  -- grow.* holds only what a seed determines, so two runs' logs compare
  -- byte for byte; wall times go to timing.*
  local ck = opts.resume
  local logs = dist.is_main() and open_logs(opts.log, ck) or nil -- dist: rank 0 logs
  local rows, timings, epoch, first = {}, {}, 0, 1
  local eta = opts.eta
  local reset = opts.reset_optim
  local step_batches = opts.score_batches or 8
  local step_nb = step_neighbourhood(nb, opts)
  if ck then
    rows, timings, first = ck.rows, ck.timing or {}, ck.phase + 1
    -- a checkpoint inside a phase: its epochs so far are done
    epoch = ck.epoch - (ck.partial and #ck.partial.rows or 0)
    state.partial = ck.partial or nil
    restore_streams(ck, loader, nb)
  end
  -- phase k of N and the run's ETA, in front of the epochs' bars
  local progress <close> = ff.logging.run_progress { phases = opts.phases or 4, steps = opts.epochs or 1,
    first = first, quiet = opts.quiet }
  for t = first, opts.phases or 4 do
    progress:set_phase(t)
    local fit = train_phase(opts, t, epoch, state, rows, timings)
    if fit.interrupted then rows.interrupted = true; break end
    local opt = state.opt
    epoch = epoch + #fit
    local last = fit[#fit]
    local train_seconds = 0
    for _, r in ipairs(fit) do train_seconds = train_seconds + r.seconds end
    local row = { phase = t, method = nb.method or "firefly", epoch = epoch, neurons = schedule.neurons(net),
      widths = widths(net),
      params = net:num_params(),
      train_loss = last.train_loss, train_acc = last.train_acc, test_acc = last.test_acc,
      test_loss = last.test_loss }
    if t < (opts.phases or 4) then
      local t0 = ff.clock()
      dist.sync_rng() -- dist: every rank draws the candidates' initialisation alike
      progress:show("growing")
      local p = propose.propose(net, step_nb, first_batches(loader, step_batches))
      p:select(schedule.resolve(eta, t, net, "grow.run"))
      -- the optimiser's state follows every edit; the released code then
      -- forgets it (reset_optim = true), or builds a new optimiser
      -- (reset_optim = function(net) -> optimiser)
      local _, _, report = p:apply(opt)
      if type(reset) == "function" then state.opt = reset(net)
      elseif reset then opt:reset_state() end
      row.grow_seconds = ff.clock() - t0
      row.grown = report.selected
      row.neurons_added = report.neurons_after - report.neurons_before
      row.params_added = report.params_after - report.params_before
      row.predicted_dloss, row.measured_dloss = report.predicted, report.measured
    end
    -- dist: every rank must hold the same network and optimiser state
    dist.check_consistent(net, state.opt, "after phase " .. t)
    rows[#rows + 1] = row
    timings[#timings + 1] = { phase = t, train_seconds = train_seconds, grow_seconds = row.grow_seconds or 0 }
    if logs then
      logs.grow:write(logged(row))
      logs.timing:write(timings[#timings])
    end
    progress:clear()
    if not opts.quiet and dist.is_main() then
      print(string.format("phase %d  widths %-12s params %7d  train loss %.4f  test acc %s  %s", t,
        row.widths, row.params, row.train_loss, row.test_acc and string.format("%.4f", row.test_acc) or "-",
        row.grown and string.format("grew %d (dL predicted %.2e, measured %.2e, %.2f s)", row.grown,
          row.predicted_dloss, row.measured_dloss, row.grow_seconds) or ""))
    end
    -- Ctrl-C on a terminal reaches gnuplot (or mkdir) too: a plot it
    -- stopped is the run's interrupt, not its failure
    local plot_stopped = false
    if logs and opts.plot ~= false and #rows >= 2 then
      local ok, err = pcall(R.plot, opts.log, rows)
      plot_stopped = not ok and (stop:asked() or tostring(err):find("gnuplot failed (signal 2)", 1, true) ~= nil)
      if not ok and not plot_stopped then error(err, 0) end
    end
    if opts.checkpoint and dist.is_main() then -- dist: rank 0 writes
      save_checkpoint(opts.checkpoint, net, state.opt, loader, nb, t, epoch, rows, timings, nil, opts.recipe)
    end
    if opts.on_phase and opts.on_phase(t, row) == false then break end
    if stop:asked() or plot_stopped then rows.interrupted = true; break end
  end
  if logs then logs.grow:close(); logs.timing:close() end
  progress:close()
  if rows.interrupted and stop.outermost and not opts.quiet then
    io.stderr:write(string.format("grow.run: interrupted; %d phases done\n", #rows))
  end
  if not opts.quiet and dist.is_main() and #rows > 0 then print(ff.logging.table(rows, summary_columns)) end
  return rows
end

return R
