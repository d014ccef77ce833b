-- firefly.continual.firefly: continual learning by Firefly growth
-- (task-incremental). Task 1 trains (and optionally grows) a network,
-- then freezes it. Each later task t learns a mask over the frozen
-- neurons (masks.lua) and a new head, then grows by Firefly descent while
-- its validation loss stays above `threshold`, at most `budget` neurons
-- per task, `grow_step` per round. Growth runs ff.grow on task t's view
-- (blocknet.lua): new neurons (or conv channels) and, with `unlock`,
-- unlocked copies θ_i + ε δ_i of old neurons that task t owns and trains
-- (the frozen original masked for task t and kept for the old tasks),
-- scored and selected together under the same budget. The grown rows and columns are
-- task t's own pieces, so earlier tasks' predictions stay bit-identical.
-- The backbone is an MLP (`hidden`) or a VGG-style conv net (`cfg`).
local ff = require "firefly"
local U = require "firefly.continual.util"
local BlockNet = require "firefly.continual.blocknet"
local masks = require "firefly.continual.masks"
local backbone = require "firefly.continual.backbone"

local F = {}
F.__index = F

F.defaults = {
  input_dim = false, hidden = { 64, 64 }, cfg = false, width = 1, bn = "auto", head = "avg", input_shape = false,
  unlock = false, epochs = 3, lr = 1e-3, batch_size = 64,
  mask_epochs = 1, mask_lr = 0.05, mask_penalty = 0.5, mask_init = 3,
  threshold = 0.1, budget = 32, grow_step = 8, grow_epochs = false, candidates = 16,
  eps = 1e-2, grow_steps = 1, grow_lr = 1e-2, score_batches = 4, grow_first = false,
  seed = 1, quiet = true,
}

local checks = {
  unlock = U.bool, epochs = U.int(0), lr = U.num(0, true), batch_size = U.int(1),
  mask_epochs = U.int(0), mask_lr = U.num(0, true), mask_penalty = U.num(0), mask_init = U.num(-math.huge),
  threshold = U.num(0), budget = U.int(0), grow_step = U.int(1), grow_epochs = U.int(0),
  candidates = U.int(1), eps = U.num(0, true), grow_steps = U.int(0), grow_lr = U.num(0, true),
  score_batches = U.int(1), grow_first = U.bool, seed = U.int(0), quiet = U.bool,
}
for k, v in pairs(backbone.checks(U)) do checks[k] = v end

-- continual.Firefly{input_dim = D, ...}: see F.defaults and spec/continual.md.
function F.new(opts)
  local o = U.options("continual.Firefly", opts, F.defaults, checks)
  o = backbone.resolve(o)
  local d = backbone.describe("continual.Firefly", o)
  if o.grow_step > o.candidates * #d.widths then
    error(string.format("continual.Firefly: option 'grow_step' (%d) is more than the candidates per round (%d = candidates x layers)",
      o.grow_step, o.candidates * #d.widths), 2)
  end
  local self = setmetatable({ name = o.unlock and "firefly+unlock" or "firefly", o = o, gen = ff.Generator(o.seed),
    log = {} }, F)
  self.net = BlockNet.new { describe = d, generator = self.gen }
  self.d = d
  return self
end

function F:forward(t, x) return self.net:forward(t, x) end
-- Parameters tasks use (the compact count), and as stored (dense blocks).
function F:num_params() return self.net:num_params() end
function F:dense_params() return self.net:dense_params() end

-- Trains task t's own tensors for `epochs` with the masks fixed.
function F:train_task(t, task, epochs, label)
  local net = self.net
  local loss = U.fit { forward = function(x) return net:forward(t, x, nil, true) end, params = net:task_parameters(t),
    lr = self.o.lr, data = task.train, epochs = epochs, batch_size = self.o.batch_size,
    generator = self.gen, label = label, quiet = self.o.quiet }
  if net.d.bn and epochs > 0 then
    U.recalibrate(function(x, m) net:forward(t, x, nil, true, m) end, task.train, self.o.batch_size)
  end
  return loss
end

function F:valid_loss(t, task)
  local net = self.net
  return U.evaluate(function(x) return net:forward(t, x) end, task.valid).loss
end

-- Unlock candidates of task t's view: one per old (frozen) neuron it
-- reads. Unlocking neuron i replaces it, for task t only, by a copy
-- θ_i + ε δ_i that task t owns and trains (with the same outgoing
-- weights, so at ε = 0 the function is unchanged). Its first-order effect
-- is ε ⟨∇_θi L, δ_i⟩, steepest for δ_i = −∇/‖∇‖ (‖δ_i‖ <= 1, as Firefly's
-- other candidates): score s_i = −‖∇_θi L‖, the same "loss change per unit
-- step" as ff.grow's scores of new neurons, so both kinds are ranked
-- together by |s|. The gradient is read on the scoring batches with
-- batch norm in evaluation mode (as grow.propose does).
local function unlock_candidates(net, t, view, batches)
  local lins = BlockNet.weight_layers(view)
  view:eval()
  for _, b in ipairs(batches) do ff.cross_entropy(view(b[1]), b[2]):backward() end
  local list = {}
  ff.no_grad(function()
    for l = 1, #net.layers do
      local _, n_old = net:visible(l, t)
      local m = lins[l]
      if n_old > 0 and m.weight.grad then
        local g = m.weight.grad:contiguous():view(m.weight:size(1), -1):narrow(1, 1, n_old) / #batches
        local gb = m.bias and m.bias.grad and (m.bias.grad:narrow(1, 1, n_old) / #batches)
        local sq = g:pow(2):sum(2)
        if gb then sq = sq + gb:pow(2) end
        local norms = sq:sqrt():totable()
        for i, n in ipairs(norms) do
          if n > 0 then
            list[#list + 1] = { kind = "unlock", layer = l, index = i, score = -n,
              dir = (m.weight.grad:narrow(1, i, 1) / (-n * #batches)):contiguous(),
              dir_bias = gb and (gb:narrow(1, i, 1) / -n) or nil }
          end
        end
      end
    end
  end)
  for _, p in ipairs(view:parameters()) do p.grad = nil end
  view:train()
  return list
end

-- One growth round of task t: propose on the view, keep k, copy back.
-- Without unlocking, grow.propose's own selection keeps the best k new
-- neurons. With it, its new-neuron candidates and the unlock candidates
-- are ranked together by |s|, the best k are kept (each adds one neuron
-- to task t), the new ones applied through grow.apply (the proposal's
-- `order` hook hands it exactly those), the unlocked rows moved by
-- ε̂ = ε along δ_i. Returns the neurons task t gained, how many of them
-- are unlocked copies, and grow.apply's report (nil when only unlocks).
function F:grow_round(t, task, k, round)
  local o = self.o
  local view = self.net:view(t)
  local batches = U.batches(task.train, o.score_batches, o.batch_size)
  if self.net.d.conv then
    for _, b in ipairs(batches) do b[1] = backbone.input(self.net.d, b[1]) end
  end
  local unlocks = (o.unlock and t > 1) and unlock_candidates(self.net, t, view, batches) or {}
  local p = ff.grow.propose(view, { split = t == 1, new = o.candidates, eps = o.eps, steps = o.grow_steps,
    lr = o.grow_lr, generator = ff.Generator(o.seed * 100003 + t * 1009 + round), quiet = o.quiet }, batches)
  local chosen_unlock = {}
  if #unlocks > 0 then
    local list = {}
    for _, c in ipairs(p:candidates()) do list[#list + 1] = c end
    for _, c in ipairs(unlocks) do list[#list + 1] = c end
    table.sort(list, function(a, b) return math.abs(a.score) > math.abs(b.score) end)
    local chosen_new = {}
    for i = 1, math.min(k, #list) do
      local c = list[i]
      if c.kind == "unlock" then chosen_unlock[#chosen_unlock + 1] = c else chosen_new[#chosen_new + 1] = c end
    end
    p.order = function() return chosen_new end
    k = #chosen_new
  end
  local report
  if k > 0 then
    p:select(k)
    report = select(3, p:apply())
  end
  local rows = {}
  if #chosen_unlock > 0 then
    local lins = BlockNet.weight_layers(view)
    ff.no_grad(function()
      for _, c in ipairs(chosen_unlock) do
        local m = lins[c.layer]
        local cols = c.dir:size(2)
        m.weight:narrow(1, c.index, 1):narrow(2, 1, cols):add_(c.dir * o.eps)
        if c.dir_bias then m.bias:narrow(1, c.index, 1):add_(c.dir_bias * o.eps) end
        rows[c.layer] = rows[c.layer] or {}
        table.insert(rows[c.layer], c.index)
      end
    end)
  end
  local added, unlocked = self.net:absorb(t, view, rows)
  return added, unlocked, report or { predicted = 0, measured = 0 }
end

-- Grows task t while its validation loss is above the threshold and its
-- budget is not spent; each round is logged in self.log.
function F:grow(t, task)
  local o = self.o
  local grown, round, unlocked = 0, 0, 0
  local loss = self:valid_loss(t, task)
  while loss > o.threshold and grown < o.budget do
    round = round + 1
    local added, unl, report = self:grow_round(t, task, math.min(o.grow_step, o.budget - grown), round)
    if added <= 0 then break end
    grown, unlocked = grown + added, unlocked + unl
    self:train_task(t, task, o.grow_epochs or o.epochs, string.format("task %d grown %d", t, grown))
    local after = self:valid_loss(t, task)
    self.log[#self.log + 1] = { task = t, round = round, valid_loss_before = loss, added = added, unlocked = unl,
      grown = grown, valid_loss = after, predicted = report.predicted, measured = report.measured }
    loss = after
  end
  return grown, loss, unlocked
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
    summary.grown, summary.valid_loss, summary.unlocked = self:grow(t, task)
  else
    summary.grown, summary.valid_loss = 0, self:valid_loss(t, task)
  end
  summary.born = net:born(t)
  net:freeze(t)
  return summary
end

return F
