-- firefly.continual.cpg: CPG, "Compacting, Picking and Growing" (Hung et
-- al., NeurIPS 2019), the state of the art the paper's continual claim is
-- measured against, as a baseline in the same harness, on the same
-- backbones (backbone.lua) as Firefly.
--
-- One dense network; every weight has an owner (0: free). Task t:
--   pick    a real-valued mask score per weight owned by earlier tasks,
--           binarised at `mask_threshold` (straight-through gradient, as
--           Piggyback), learned with Adam at `mask_lr` while the free
--           weights, task t's biases, batch norm and head train at `lr`
--           for `epochs`: task t computes with W·pick over old weights and
--           its own values over free ones;
--   grow    while the validation accuracy is below `target` (and at most
--           `max_grow` times): widen every layer by `grow_fraction` of its
--           initial width (new neurons, all their weights free), retrain;
--   compact gradual pruning of the free weights task t trained (Zhu &
--           Gupta's cubic schedule to `prune` of them over `prune_steps`
--           steps, `prune_epochs` of retraining after each), stopping
--           before the validation accuracy drops more than `tolerance`
--           below its value before pruning; the pruned weights are
--           released (zero, free for later tasks), the rest become task
--           t's and are frozen.
-- Task k computes with its own layer sizes (the widths when it was
-- learned: later neurons and their weights are never part of it) and W
-- times a fixed 0/1 tensor (its own weights and its picks): old tasks stay
-- bit-identical, as in CPG. Batch norm, biases and the head are per task.
-- Size: weights with an owner (the paper's count; released ones are not)
-- plus the per-task biases, batch norm and heads; `dense_params` counts the
-- whole grown tensors; the picks are bits, counted apart.
local ff = require "firefly"
local nn = ff.nn
local U = require "firefly.continual.util"
local backbone = require "firefly.continual.backbone"

local CPG = {}
CPG.__index = CPG

CPG.defaults = {
  epochs = 3, lr = 1e-3, batch_size = 64, seed = 1, quiet = true,
  mask_lr = 5e-4, mask_init = 1e-2, mask_threshold = 5e-3,
  prune = 0.5, prune_steps = 3, prune_epochs = 1, tolerance = 0.01,
  target = 0, grow_fraction = 0.25, max_grow = 2,
}
for k, v in pairs(backbone.defaults()) do CPG.defaults[k] = v end

local checks = {
  epochs = U.int(0), lr = U.num(0, true), batch_size = U.int(1), seed = U.int(0), quiet = U.bool,
  mask_lr = U.num(0, true), mask_init = U.num(-math.huge), mask_threshold = U.num(-math.huge),
  prune = function(v) if type(v) ~= "number" or v < 0 or v >= 1 then return "must be a number in [0, 1)" end end,
  prune_steps = U.int(0), prune_epochs = U.int(0), tolerance = U.num(0),
  target = function(v) if type(v) ~= "number" or v < 0 or v > 1 then return "must be an accuracy in [0, 1]" end end,
  grow_fraction = U.num(0, true), max_grow = U.int(0),
}
for k, v in pairs(backbone.checks(U)) do checks[k] = v end

-- continual.CPG{input_dim | input_shape + cfg, ...}: see CPG.defaults.
function CPG.new(opts)
  local o = backbone.resolve(U.options("continual.CPG", opts, CPG.defaults, checks))
  local d = backbone.describe("continual.CPG", o)
  local self = setmetatable({ name = "cpg", o = o, d = d, gen = ff.Generator(o.seed), tasks = 0, log = {},
    W = {}, owner = {}, widths = {}, use = {}, bias = {}, bn = {}, heads = {}, picks = {} }, CPG)
  self.k = d.conv and 9 or 1
  local prev = d.in_features
  for l, w in ipairs(d.widths) do
    self.W[l] = self:shape_zeros(w, prev)
    self.owner[l] = self:shape_zeros(w, prev)
    prev = w
  end
  self.cur = {}
  for l, w in ipairs(d.widths) do self.cur[l] = w end
  return self
end

function CPG:shape_zeros(rows, cols)
  return self.d.conv and ff.zeros(rows, cols, 3, 3) or ff.zeros(rows, cols)
end

-- Fresh weights for a rows x cols layer (kaiming-uniform as nn's layers).
function CPG:fresh(rows, cols)
  if self.d.conv then
    return nn.Conv2d(cols, rows, 3, { padding = 1, bias = false, generator = self.gen }).weight:detach()
  end
  return nn.Linear(cols, rows, { generator = self.gen }).weight:detach()
end

local function in_width(self, l, widths)
  return l == 1 and self.d.in_features or widths[l - 1]
end

local function narrow2(t, rows, cols)
  return t:narrow(1, 1, rows):narrow(2, 1, cols)
end

-- The network of task k: layer l computes with `weight(l)` (a function),
-- task k's biases, batch norm (batch statistics when `train`) and head.
function CPG:run(k, x, weight, widths, train, momentum)
  local d = self.d
  return backbone.forward(d, x, function(l)
    return weight(l), self.bias[k] and self.bias[k][l], d.bn and self.bn[k][l] or nil
  end, self.heads[k], train, momentum or 0.1)
end

function CPG:forward(k, x, train)
  if math.type(k) ~= "integer" or k < 1 or k > self.tasks then
    error(string.format("continual: task must be an integer in 1..%d, got %s", self.tasks, tostring(k)), 2)
  end
  if self.state and k == self.tasks then return self:run_current(x, train) end
  local widths = self.widths[k]
  return self:run(k, x, function(l)
    return narrow2(self.W[l], widths[l], in_width(self, l, widths)) * self.use[k][l]
  end, widths, train)
end

---------------------------------------------------------------- the task being learned

-- The current task's layer l: its own values over free weights, W times
-- the binarised pick scores (straight-through) over old ones, and (while
-- compacting) the kept ones only among its free weights.
function CPG:current_weight(l)
  local S = self.state
  local rows, cols = self.cur[l], in_width(self, l, self.cur)
  local own = narrow2(self.owner[l], rows, cols)
  local free = own:eq(0)
  local W = S.T[l] * (S.keep and S.keep[l] * free or free)
  if S.M then
    local M = S.M[l]
    local hard = M:detach():gt(self.o.mask_threshold)
    W = W + narrow2(self.W[l], rows, cols) * own:gt(0) * (hard + (M - M:detach()))
  elseif S.picks and S.picks[l] then
    W = W + narrow2(self.W[l], rows, cols) * own:gt(0) * S.picks[l]
  end
  return W
end

function CPG:run_current(x, train, momentum)
  return self:run(self.tasks, x, function(l) return self:current_weight(l) end, self.cur, train, momentum)
end

function CPG:trainable()
  local S, list = self.state, {}
  local t = self.tasks
  for l = 1, #self.W do
    list[#list + 1] = S.T[l]
    if self.bias[t] then list[#list + 1] = self.bias[t][l] end
    if self.bn[t] then list[#list + 1] = self.bn[t][l].weight; list[#list + 1] = self.bn[t][l].bias end
  end
  list[#list + 1] = self.heads[t].weight
  list[#list + 1] = self.heads[t].bias
  return list
end

function CPG:fit(task, epochs, with_masks, label)
  local groups = { { self:trainable(), self.o.lr } }
  if with_masks and self.state.M then groups[2] = { self.state.M, self.o.mask_lr } end
  local loss = U.fit { forward = function(x) return self:run_current(x, true) end, groups = groups,
    data = task.train, epochs = epochs, batch_size = self.o.batch_size, generator = self.gen, label = label,
    quiet = self.o.quiet }
  if self.d.bn and epochs > 0 then
    U.recalibrate(function(x, m) self:run_current(x, true, m) end, task.train, self.o.batch_size)
  end
  return loss
end

function CPG:valid_accuracy(task)
  return U.evaluate(function(x) return self:run_current(x) end, task.valid).accuracy
end

-- Widen every layer by `add[l]` neurons: new rows and columns of W and
-- owner (free), of the current task's values (fresh for new rows), pick
-- scores, biases, batch norm (identity) and head columns (fresh).
function CPG:widen(add)
  local t, S = self.tasks, self.state
  ff.no_grad(function()
    local prev_old, prev_new = self.d.in_features, self.d.in_features
    for l = 1, #self.W do
      local rows, nrows = self.cur[l], self.cur[l] + add[l]
      local function grow(x, fill_rows)
        local out = self:shape_zeros(nrows, prev_new)
        narrow2(out, rows, prev_old):copy_(narrow2(x, rows, prev_old))
        if fill_rows and add[l] > 0 then out:narrow(1, rows + 1, add[l]):copy_(fill_rows) end
        return out
      end
      local Wr = self.W[l]
      -- W and owner cover every task's widths: they grow to the new size
      self.W[l] = grow(Wr)
      self.owner[l] = grow(self.owner[l])
      local fresh = self:fresh(nrows, prev_new)
      local T = grow(S.T[l]:detach(), add[l] > 0 and fresh:narrow(1, rows + 1, add[l]) or nil)
      if prev_new > prev_old then
        -- new inputs of existing neurons: free, start small (fresh values)
        T:narrow(1, 1, rows):narrow(2, prev_old + 1, prev_new - prev_old)
            :copy_(fresh:narrow(1, 1, rows):narrow(2, prev_old + 1, prev_new - prev_old))
      end
      S.T[l] = T:requires_grad(true)
      if S.M then S.M[l] = grow(S.M[l]:detach()):requires_grad(true) end
      if self.bias[t] then
        self.bias[t][l] = ff.cat({ self.bias[t][l]:detach(), ff.zeros(add[l]) }):requires_grad(true)
      end
      if self.bn[t] then
        local B = self.bn[t][l]
        local ext = { weight = 1, bias = 0, running_mean = 0, running_var = 1 }
        for name, v in pairs(ext) do
          local grown = ff.cat({ B[name]:detach(), ff.full({ add[l] }, v) })
          B[name] = (name == "weight" or name == "bias") and grown:requires_grad(true) or grown
        end
      end
      prev_old, prev_new = rows, nrows
      self.cur[l] = nrows
    end
    local H = self.heads[t]
    local S2 = self.d.spatial
    local extra = add[#self.W] * S2
    if extra > 0 then
      local fresh = nn.Linear(self.cur[#self.W] * S2, H.weight:size(1), { generator = self.gen }).weight:detach()
      H.weight = ff.cat({ H.weight:detach(), fresh:narrow(2, H.weight:size(2) + 1, extra) }, 2):requires_grad(true)
    end
  end)
end

-- Gradual pruning of the current task's free weights: keep[l] marks the
-- ones kept; step i of n prunes the smallest |values| per layer down to
-- prune·(1 − (1 − i/n)³) of them. Returns false when nothing is free.
function CPG:prune_to(fraction)
  local S = self.state
  S.keep = {}
  local any = false
  ff.no_grad(function()
    for l = 1, #self.W do
      local rows, cols = self.cur[l], in_width(self, l, self.cur)
      local free = narrow2(self.owner[l], rows, cols):eq(0)
      local mag = (S.T[l]:detach():abs() * free):contiguous():view(-1):totable()
      local fr = free:contiguous():view(-1):totable()
      local vals = {}
      for i, f in ipairs(fr) do if f ~= 0 then vals[#vals + 1] = mag[i] end end
      local n = math.floor(#vals * fraction)
      if #vals > 0 then any = true end
      if n > 0 then
        table.sort(vals)
        local cut = vals[n]
        -- magnitudes <= the n-th smallest are released (ties: all of them)
        S.keep[l] = (S.T[l]:detach():abs()):gt(cut)
      else
        S.keep[l] = ff.ones(S.T[l]:size())
      end
    end
  end)
  return any
end

-- Learns task t (in order); returns a summary.
function CPG:learn(task, t)
  assert(t == self.tasks + 1, "cpg: tasks are learned in order")
  local o, d = self.o, self.d
  self.tasks = t
  local S = { T = {}, M = t > 1 and {} or nil }
  self.state = S
  local prev = d.in_features
  for l = 1, #self.W do
    local rows = self.cur[l]
    S.T[l] = self:fresh(rows, prev):requires_grad(true)
    if S.M then S.M[l] = ff.full(self.W[l]:size(), o.mask_init):requires_grad(true) end
    prev = rows
  end
  if not (d.conv and d.bn) then
    self.bias[t] = {}
    for l = 1, #self.W do self.bias[t][l] = ff.zeros(self.cur[l]):requires_grad(true) end
  end
  if d.bn then
    self.bn[t] = {}
    for l = 1, #self.W do
      local w = self.cur[l]
      self.bn[t][l] = { weight = ff.ones(w):requires_grad(true), bias = ff.zeros(w):requires_grad(true),
        running_mean = ff.zeros(w), running_var = ff.ones(w) }
    end
  end
  local lin = nn.Linear(self.cur[#self.W] * d.spatial, task.n_classes, { generator = self.gen })
  self.heads[t] = { weight = lin.weight:detach():requires_grad(true), bias = lin.bias:detach():requires_grad(true) }
  -- pick and train
  self:fit(task, o.epochs, true, "cpg task " .. t)
  local acc = self:valid_accuracy(task)
  local summary = { task = t, grown = 0, grows = 0 }
  -- grow while below the target
  while acc < o.target and summary.grows < o.max_grow do
    local add = {}
    for l, w in ipairs(d.widths) do add[l] = math.max(1, math.ceil(o.grow_fraction * w)) end
    self:widen(add)
    summary.grows = summary.grows + 1
    for _, a in ipairs(add) do summary.grown = summary.grown + a end
    self:fit(task, o.epochs, true, "cpg task " .. t .. " grown")
    acc = self:valid_accuracy(task)
  end
  summary.valid_accuracy = acc
  -- the picks are fixed from here on (binary)
  local picks = {}
  if S.M then
    ff.no_grad(function()
      for l = 1, #self.W do picks[l] = S.M[l]:detach():gt(o.mask_threshold) end
    end)
    S.M = nil
    S.picks = picks
  end
  -- compact: gradual pruning, stopped before the accuracy drops too far
  local kept_state, pruned = nil, 0
  local function snapshot()
    local s = { keep = S.keep, params = {} }
    for i, p in ipairs(self:trainable()) do s.params[i] = p:detach():clone() end
    return s
  end
  local function restore(s)
    S.keep = s.keep
    ff.no_grad(function()
      for i, p in ipairs(self:trainable()) do p:copy_(s.params[i]) end
    end)
  end
  if o.prune > 0 and o.prune_steps > 0 then
    local base = acc
    kept_state = snapshot()
    for i = 1, o.prune_steps do
      local frac = o.prune * (1 - (1 - i / o.prune_steps) ^ 3)
      if not self:prune_to(frac) then break end
      self:fit(task, o.prune_epochs, false, string.format("cpg task %d prune %.2f", t, frac))
      local a = self:valid_accuracy(task)
      if a < base - o.tolerance then
        restore(kept_state)
        break
      end
      kept_state, pruned, acc = snapshot(), frac, a
    end
    restore(kept_state)
  end
  summary.pruned, summary.valid_accuracy = pruned, acc
  -- freeze: kept free weights become task t's, the rest are released
  ff.no_grad(function()
    self.widths[t], self.use[t] = {}, {}
    for l = 1, #self.W do
      local rows, cols = self.cur[l], in_width(self, l, self.cur)
      self.widths[t][l] = rows
      local own = narrow2(self.owner[l], rows, cols)
      local free = own:eq(0)
      local mine = S.keep and S.keep[l] and (free * S.keep[l]) or free
      local Wv = narrow2(self.W[l], rows, cols)
      Wv:copy_(Wv * (1 - mine) + S.T[l]:detach() * mine)
      own:copy_(own + mine * t)
      local use = mine
      if picks[l] then
        local pick = narrow2(picks[l], rows, cols) * own:gt(0) * own:lt(t)
        use = use + pick
        self.picks[t] = self.picks[t] or {}
        self.picks[t][l] = pick
      end
      self.use[t][l] = use:contiguous()
    end
  end)
  for _, p in ipairs(self:trainable()) do p:requires_grad(false) end
  self.state = nil
  summary.mask_usage = self:pick_usage(t)
  return summary
end

-- Weights with an owner plus every task's biases, batch norm and head.
function CPG:num_params()
  local n = 0
  for l = 1, #self.W do n = n + self.owner[l]:gt(0):sum():item() end
  return math.tointeger(n) + self:task_extras()
end

function CPG:task_extras()
  local n = 0
  for t = 1, self.tasks do
    for l = 1, #self.W do
      if self.bias[t] then n = n + self.bias[t][l]:numel() end
      if self.bn[t] then n = n + 2 * self.bn[t][l].weight:numel() end
    end
    if self.heads[t] then n = n + self.heads[t].weight:numel() + self.heads[t].bias:numel() end
  end
  return n
end

function CPG:dense_params()
  local n = 0
  for l = 1, #self.W do n = n + self.W[l]:numel() end
  return n + self:task_extras()
end

-- Weights of task t's network it took from earlier tasks, over the old
-- weights it could have taken.
function CPG:pick_usage(t)
  if not self.picks[t] then return nil end
  local on, all = 0, 0
  for l, p in pairs(self.picks[t]) do
    on = on + p:sum():item()
    local rows, cols = self.widths[t][l], in_width(self, l, self.widths[t])
    local own = narrow2(self.owner[l], rows, cols)
    all = all + (own:gt(0) * own:lt(t)):sum():item()
  end
  return on / math.max(all, 1)
end

return CPG
