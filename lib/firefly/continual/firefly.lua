-- firefly.continual.firefly: continual learning by Firefly growth
-- (task-incremental). Task 1 trains (and optionally grows) a network,
-- then freezes it. Each later task t learns a mask over the frozen
-- neurons (masks.lua) and a new head, then grows new neurons by Firefly
-- descent while its validation loss stays above `threshold`, at most
-- `budget` neurons per task, `grow_step` per round. Growth runs ff.grow on
-- task t's view (blocknet.lua) with only new-neuron candidates, never
-- splits of old neurons (split = false); the grown rows and columns are
-- task t's own pieces, so earlier tasks' predictions stay bit-identical.
local ff = require "firefly"
local U = require "firefly.continual.util"
local BlockNet = require "firefly.continual.blocknet"
local masks = require "firefly.continual.masks"

local F = {}
F.__index = F

F.defaults = {
  input_dim = false, hidden = { 64, 64 }, epochs = 3, lr = 1e-3, batch_size = 64,
  mask_epochs = 1, mask_lr = 0.05, mask_penalty = 0.5, mask_init = 3,
  threshold = 0.1, budget = 32, grow_step = 8, grow_epochs = false, candidates = 16,
  eps = 1e-2, grow_steps = 1, grow_lr = 1e-2, score_batches = 4, grow_first = false,
  seed = 1, quiet = true,
}

local checks = {
  input_dim = U.int(1), hidden = U.widths, epochs = U.int(0), lr = U.num(0, true), batch_size = U.int(1),
  mask_epochs = U.int(0), mask_lr = U.num(0, true), mask_penalty = U.num(0), mask_init = U.num(-math.huge),
  threshold = U.num(0), budget = U.int(0), grow_step = U.int(1), grow_epochs = U.int(0),
  candidates = U.int(1), eps = U.num(0, true), grow_steps = U.int(0), grow_lr = U.num(0, true),
  score_batches = U.int(1), grow_first = U.bool, seed = U.int(0), quiet = U.bool,
}

-- continual.Firefly{input_dim = D, ...}: see F.defaults and spec/continual.md.
function F.new(opts)
  local o = U.options("continual.Firefly", opts, F.defaults, checks)
  if not o.input_dim then error("continual.Firefly: option 'input_dim' is required", 2) end
  if o.grow_step > o.candidates * #o.hidden then
    error(string.format("continual.Firefly: option 'grow_step' (%d) is more than the candidates per round (%d = candidates x layers)",
      o.grow_step, o.candidates * #o.hidden), 2)
  end
  local self = setmetatable({ name = "firefly", o = o, gen = ff.Generator(o.seed), log = {} }, F)
  self.net = BlockNet.new { input_dim = o.input_dim, hidden = o.hidden, generator = self.gen }
  return self
end

function F:forward(t, x) return self.net:forward(t, x) end
function F:num_params() return self.net:num_params() end

-- Trains task t's own tensors for `epochs` with the masks fixed.
function F:train_task(t, task, epochs, label)
  local net = self.net
  return U.fit { forward = function(x) return net:forward(t, x) end, params = net:task_parameters(t),
    lr = self.o.lr, data = task.train, epochs = epochs, batch_size = self.o.batch_size,
    generator = self.gen, label = label, quiet = self.o.quiet }
end

function F:valid_loss(t, task)
  local net = self.net
  return U.evaluate(function(x) return net:forward(t, x) end, task.valid).loss
end

-- One growth round of task t: propose on the view, keep k, copy back.
function F:grow_round(t, task, k, round)
  local o = self.o
  local view = self.net:view(t)
  local p = ff.grow.propose(view, { split = t == 1, new = o.candidates, eps = o.eps, steps = o.grow_steps,
    lr = o.grow_lr, generator = ff.Generator(o.seed * 100003 + t * 1009 + round), quiet = o.quiet },
    U.batches(task.train, o.score_batches, o.batch_size))
  p:select(k)
  local _, _, report = p:apply()
  return self.net:absorb(t, view), report
end

-- Grows task t while its validation loss is above the threshold and its
-- budget is not spent; each round is logged in self.log.
function F:grow(t, task)
  local o = self.o
  local grown, round = 0, 0
  local loss = self:valid_loss(t, task)
  while loss > o.threshold and grown < o.budget do
    round = round + 1
    local added, report = self:grow_round(t, task, math.min(o.grow_step, o.budget - grown), round)
    if added <= 0 then break end
    grown = grown + added
    self:train_task(t, task, o.grow_epochs or o.epochs, string.format("task %d grown %d", t, grown))
    local after = self:valid_loss(t, task)
    self.log[#self.log + 1] = { task = t, round = round, valid_loss_before = loss, added = added,
      grown = grown, valid_loss = after, predicted = report.predicted, measured = report.measured }
    loss = after
  end
  return grown, loss
end

-- Learns task t (tasks come in order 1, 2, ...). Returns a summary.
function F:learn(task, t)
  local o, net = self.o, self.net
  net:begin_task(t, task.n_classes)
  local summary = { task = t }
  if t > 1 then
    local m = masks.learn(net, t, task, { mask_epochs = o.mask_epochs, mask_lr = o.mask_lr, lr = o.lr,
      mask_penalty = o.mask_penalty, mask_init = o.mask_init, batch_size = o.batch_size,
      generator = self.gen, quiet = o.quiet })
    summary.mask_usage = m.usage
  end
  self:train_task(t, task, o.epochs, "task " .. t)
  if t > 1 or o.grow_first then
    summary.grown, summary.valid_loss = self:grow(t, task)
  else
    summary.grown, summary.valid_loss = 0, self:valid_loss(t, task)
  end
  summary.born = net:born(t)
  net:freeze(t)
  return summary
end

return F
