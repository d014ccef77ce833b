-- firefly.continual.blocknet: an MLP whose neurons are owned by the task
-- that grew them, stored so that learning a task never touches what an
-- earlier task computes.
--
-- Layer l's weight is a staircase of blocks W[a][b] (rows: neurons born at
-- task a, columns: inputs born at task b). Task t owns two pieces per layer:
--   R[t]  its new neurons' rows, over every input visible at task t
--         (= the blocks W[t][1..t]), with their biases b[t];
--   C[t]  the columns of its new inputs in the rows of older neurons
--         (= W[1..t-1][t]); the input layer's features never grow, so
--         layer 1 has no C.
-- Task k's matrix is built by appending, for a = 1..k, C[a] as columns and
-- then R[a] as rows: it holds only blocks with a, b <= k, so its shape and
-- values do not depend on later tasks, and neither does the product (GEMM
-- rounding depends on shapes: an old task is never computed through a
-- wider matrix). Task k also has its own head (over the last layer's
-- neurons born at tasks <= k) and, for k > 1, a binary mask per layer over
-- the neurons born before it (a masked neuron's output is multiplied by 0
-- for task k; the neurons task k grew are always on).
--
-- For growth, view(t) builds task t's sub-network as a plain nn.Sequential
-- MLP (masked neurons left out, which for ReLU is the same function), so
-- ff.grow can propose and apply on it; absorb(t, view) copies the grown
-- rows and columns back into task t's own pieces. Old rows x old columns
-- are never copied back.
local ff = require "firefly"
local nn = ff.nn

local BN = {}
BN.__index = BN

local function range(a, b)
  local r = {}
  for i = a, b do r[#r + 1] = i end
  return r
end

local function concat(a, b)
  local r = {}
  for _, v in ipairs(a) do r[#r + 1] = v end
  for _, v in ipairs(b) do r[#r + 1] = v end
  return r
end

-- BlockNet{input_dim, hidden = {64, 64}, generator}
function BN.new(o)
  local self = setmetatable({ input_dim = o.input_dim, hidden = o.hidden, generator = o.generator,
    layers = {}, heads = {}, masks = {}, tasks = 0 }, BN)
  for l = 1, #o.hidden do self.layers[l] = { R = {}, C = {}, b = {}, n = {} } end
  return self
end

-- Neurons of layer l born at tasks <= t (layer 0: the input features).
function BN:width(l, t)
  if l == 0 then return self.input_dim end
  local n = 0
  for a = 1, math.min(t, self.tasks) do n = n + self.layers[l].n[a] end
  return n
end

local function linear_init(fan_in, out, gen)
  local lin = nn.Linear(math.max(fan_in, 1), out, { generator = gen })
  return lin.weight:detach(), lin.bias:detach()
end

-- Starts task t (= tasks + 1) with its head of `classes` outputs. Task 1
-- gets the initial hidden widths; later tasks start with no new neuron
-- (they grow them) and masks of ones.
function BN:begin_task(t, classes)
  assert(t == self.tasks + 1, "blocknet: tasks begin in order")
  self.tasks = t
  for l, L in ipairs(self.layers) do
    local n = t == 1 and self.hidden[l] or 0
    local cols = self:width(l - 1, t - 1) + (l > 1 and self.layers[l - 1].n[t] or 0)
    L.n[t] = n
    if t == 1 then
      L.R[t], L.b[t] = linear_init(cols, n, self.generator)
    else
      L.R[t], L.b[t] = ff.zeros(0, cols), ff.zeros(0)
    end
    if l > 1 then L.C[t] = ff.zeros(self:width(l, t - 1), 0) end
  end
  local w, b = linear_init(self:width(#self.layers, t), classes, self.generator)
  if t > 1 and self:width(#self.layers, t) == 0 then w = ff.zeros(classes, 0) end
  self.heads[t] = { weight = w, bias = b }
  if t > 1 then
    self.masks[t] = {}
    for l = 1, #self.layers do self.masks[t][l] = ff.ones(self:width(l, t - 1)) end
  end
  for _, p in ipairs(self:task_parameters(t)) do p:requires_grad(true) end
end

-- Layer l's weight and bias for task k (the staircase of blocks a, b <= k).
function BN:layer(l, k)
  local L = self.layers[l]
  local W, b
  for a = 1, k do
    local C = L.C[a]
    if W and C and C:numel() > 0 then W = ff.cat({ W, C }, 2) end
    if L.R[a]:size(1) > 0 then
      W = W and ff.cat({ W, L.R[a] }, 1) or L.R[a]
      b = b and ff.cat({ b, L.b[a] }) or L.b[a]
    end
  end
  return W, b
end

-- The mask of layer l for task k as a vector over its neurons born at
-- tasks <= k: the stored binary mask (or `gates`, real-valued while they
-- are learned) over older neurons, then ones. nil for task 1.
function BN:mask(l, k, gates)
  if k == 1 then return nil end
  local old = gates and gates[l] or self.masks[k][l]
  local n = self.layers[l].n[k]
  if n == 0 then return old end
  if old:numel() == 0 then return nil end
  return ff.cat({ old, ff.ones(n) })
end

-- Task k's output for x (N x input_dim).
function BN:forward(k, x, gates)
  if math.type(k) ~= "integer" or k < 1 or k > self.tasks then
    error(string.format("continual: task must be an integer in 1..%d, got %s", self.tasks, tostring(k)), 2)
  end
  local h = x
  for l = 1, #self.layers do
    local W, b = self:layer(l, k)
    h = ff.linear(h, W, b):relu()
    local m = self:mask(l, k, gates)
    if m then h = h * m end
  end
  local head = self.heads[k]
  return ff.linear(h, head.weight, head.bias)
end

-- The tensors task t owns (its pieces and its head), non-empty ones only.
function BN:task_parameters(t)
  local list = {}
  for _, L in ipairs(self.layers) do
    for _, p in ipairs { L.R[t], L.b[t], L.C[t] } do
      if p and p:numel() > 0 then list[#list + 1] = p end
    end
  end
  local h = self.heads[t]
  if h then
    if h.weight:numel() > 0 then list[#list + 1] = h.weight end
    list[#list + 1] = h.bias
  end
  return list
end

-- After task t: its tensors are frozen (no later task's gradient reaches
-- them anyway; this makes it explicit and cheaper).
function BN:freeze(t)
  for _, p in ipairs(self:task_parameters(t)) do p:requires_grad(false) end
end

-- Parameters stored for all tasks so far (blocks, biases, heads); masks
-- are bits, counted apart by mask_bits.
function BN:num_params()
  local n = 0
  for t = 1, self.tasks do
    for _, p in ipairs(self:task_parameters(t)) do n = n + p:numel() end
  end
  return n
end

function BN:mask_bits()
  local n = 0
  for t = 2, self.tasks do
    for _, m in ipairs(self.masks[t]) do n = n + m:numel() end
  end
  return n
end

-- Neurons born at task t, per layer: {n_1, n_2, ...}.
function BN:born(t)
  local r = {}
  for l, L in ipairs(self.layers) do r[l] = L.n[t] end
  return r
end

---------------------------------------------------------------- growth view

-- Rows of layer l that task t's view keeps, in stored positions: the
-- unmasked older neurons, then every neuron task t owns.
function BN:visible(l, t)
  if l == 0 then return range(1, self.input_dim) end
  local old = {}
  if t > 1 then
    local m = self.masks[t][l]:totable()
    for i, v in ipairs(m) do if v ~= 0 then old[#old + 1] = i end end
  end
  local before = self:width(l, t - 1)
  return concat(old, range(before + 1, before + self.layers[l].n[t])), #old
end

-- The view's layers are built with a throwaway generator (their weights
-- are replaced at once), so building a view never moves the default stream.
local SCRATCH = ff.Generator(0)

local function pick(t, dim, idx)
  if #idx == t:size(dim) then return t:clone() end
  return t:index_select(dim, idx)
end

-- Task t's sub-network as nn.Sequential{Linear, ReLU, ..., Linear}: its
-- matrices restricted to the visible rows and columns, copied (growth
-- replaces the view's tensors, never the stored ones).
function BN:view(t)
  local mods = {}
  ff.no_grad(function()
    for l = 1, #self.layers do
      local W, b = self:layer(l, t)
      local rows, cols = self:visible(l, t), self:visible(l - 1, t)
      local lin = nn.Linear(#cols, #rows, { generator = SCRATCH })
      lin.weight = pick(pick(W, 1, rows), 2, cols):requires_grad(true)
      lin.bias = pick(b, 1, rows):requires_grad(true)
      mods[#mods + 1] = lin
      mods[#mods + 1] = nn.ReLU()
    end
    local head = self.heads[t]
    local cols = self:visible(#self.layers, t)
    local lin = nn.Linear(#cols, head.weight:size(1), { generator = SCRATCH })
    lin.weight = pick(head.weight, 2, cols):requires_grad(true)
    lin.bias = head.bias:clone():requires_grad(true)
    mods[#mods + 1] = lin
  end)
  return nn.Sequential(mods)
end

-- zeros(rows, cols) with src's columns placed at `at` (positions along dim).
local function place(rows, cols, dim, at, src)
  local out = ff.zeros(rows, cols)
  if #at > 0 and src:numel() > 0 then out:index_add_(dim, at, src) end
  return out
end

-- Copies a grown view back into task t's pieces: the view's rows past the
-- visible old neurons become R[t] (its columns put back at their stored
-- positions, masked inputs reading zeros), the view's columns past the
-- visible old inputs in old rows become C[t], and the head's columns are
-- put back the same way. Returns the number of neurons added.
function BN:absorb(t, view)
  local lins = {}
  for _, m in ipairs(view:children()) do
    if m.weight then lins[#lins + 1] = m end
  end
  local added = 0
  local old_rows, new_n = {}, {}
  for l = 1, #self.layers do
    local _, n_old = self:visible(l, t)
    old_rows[l] = n_old
    new_n[l] = lins[l].weight:size(1) - n_old
    added = added + new_n[l] - self.layers[l].n[t]
  end
  ff.no_grad(function()
    -- stored positions of the visible columns after growth
    local function positions(l)
      if l == 0 then return range(1, self.input_dim) end
      local vis, n_old = self:visible(l, t)
      local before = self:width(l, t - 1)
      local pos = {}
      for i = 1, n_old do pos[i] = vis[i] end
      for i = 1, new_n[l] do pos[n_old + i] = before + i end
      return pos, n_old
    end
    for l = 1, #self.layers do
      local L, V, vb = self.layers[l], lins[l].weight:detach(), lins[l].bias:detach()
      local cols, n_old_in = positions(l - 1)
      local rows_old = old_rows[l]
      local n_in = l == 1 and self.input_dim or self:width(l - 1, t - 1) + new_n[l - 1]
      local newrows = V:narrow(1, rows_old + 1, new_n[l])
      L.R[t] = place(new_n[l], n_in, 2, cols, newrows)
      L.b[t] = vb:narrow(1, rows_old + 1, new_n[l]):clone()
      if l > 1 then
        local n_new_in = new_n[l - 1]
        local vis_old = self:visible(l, t)
        local at = {}
        for i = 1, rows_old do at[i] = vis_old[i] end
        local top = rows_old > 0 and n_new_in > 0
            and V:narrow(1, 1, rows_old):narrow(2, (n_old_in or 0) + 1, n_new_in) or ff.zeros(0, n_new_in)
        L.C[t] = place(self:width(l, t - 1), n_new_in, 1, at, top:contiguous())
      end
    end
    for l = 1, #self.layers do self.layers[l].n[t] = new_n[l] end
    local H = lins[#lins].weight:detach()
    local pos = positions(#self.layers)
    self.heads[t].weight = place(H:size(1), self:width(#self.layers, t), 2, pos, H:contiguous())
    self.heads[t].bias = lins[#lins].bias:detach():clone()
  end)
  for _, p in ipairs(self:task_parameters(t)) do p:requires_grad(true) end
  return added
end

return BN
