-- firefly.continual.blocknet: a network (MLP or VGG-style conv net, see
-- backbone.lua) whose neurons are owned by the task that grew them, stored
-- so that learning a task never touches what an earlier task computes.
--
-- A "neuron" is a row of a Linear or an output channel of a Conv2d. Layer
-- l's weight is a staircase of blocks W[a][b] (rows: neurons born at task
-- a, columns: inputs born at task b; a conv block is rows x cols x 3 x 3).
-- Task t owns two pieces per layer:
--   R[t]  its new neurons' rows, over every input visible at task t
--         (= the blocks W[t][1..t]), with their biases b[t] (none for a
--         conv followed by batch norm);
--   C[t]  the columns of its new inputs in the rows of older neurons
--         (= W[1..t-1][t]); the input layer's features never grow, so
--         layer 1 has no C.
-- Task k's weight is built by appending, for a = 1..k, C[a] as columns and
-- then R[a] as rows: it holds only blocks with a, b <= k, so its shape and
-- values do not depend on later tasks, and neither does the product (GEMM
-- rounding depends on shapes: an old task is never computed through a
-- wider matrix). Task k also has its own head (over the last layer's
-- neurons born at tasks <= k, times the positions per channel when the
-- head flattens a map), its own batch norm per layer (affine entries and
-- running statistics over all its layer's neurons: no later task ever
-- moves them) and, for k > 1, a binary mask per layer over the neurons
-- born before it (a masked neuron's output is multiplied by 0 for task k).
--
-- For growth, view(t) builds task t's sub-network as a plain nn.Sequential
-- (masked neurons left out, which for ReLU is the same function), so
-- ff.grow can propose and apply on it; absorb(t, view, unlock) copies the
-- grown rows, columns, batch-norm entries and head back into task t's own
-- pieces. Old rows x old columns are never copied back. An old neuron
-- task t unlocked becomes a neuron of task t (a copy it trains), and the
-- frozen original is masked for task t: it stays with the old tasks.
local ff = require "firefly"
local nn = ff.nn
local backbone = require "firefly.continual.backbone"

local BN = {}
BN.__index = BN

local function range(a, b)
  local r = {}
  for i = a, b do r[#r + 1] = i end
  return r
end

-- BlockNet{input_dim, hidden = {64, 64}, generator} (an MLP) or
-- BlockNet{input_shape = {C, H, W}, cfg = {...}, bn, head, width, generator}.
function BN.new(o)
  local d = o.describe or backbone.describe("continual.BlockNet", backbone.resolve(o))
  local self = setmetatable({ d = d, input_dim = d.in_features, hidden = d.widths, generator = o.generator,
    layers = {}, heads = {}, masks = {}, bn = {}, tasks = 0, momentum = o.momentum or 0.1 }, BN)
  for l, w in ipairs(d.widths) do
    self.layers[l] = { R = {}, C = {}, b = {}, n = {}, conv = d.conv, init = w }
  end
  return self
end

-- Neurons of layer l born at tasks <= t (layer 0: the input features or channels).
function BN:width(l, t)
  if l == 0 then return self.input_dim end
  local n = 0
  for a = 1, math.min(t, self.tasks) do n = n + (self.layers[l].n[a] or 0) end
  return n
end

-- Fresh incoming weights (and bias, nil for a conv before batch norm).
function BN:init_rows(l, fan_in, out)
  local gen = self.generator
  if self.d.conv then
    local c = nn.Conv2d(math.max(fan_in, 1), out, 3, { padding = 1, bias = not self.d.bn, generator = gen })
    return c.weight:detach(), c.bias and c.bias:detach()
  end
  local lin = nn.Linear(math.max(fan_in, 1), out, { generator = gen })
  return lin.weight:detach(), lin.bias:detach()
end

function BN:has_bias() return not (self.d.conv and self.d.bn) end

local function empty(rows, cols, conv)
  return conv and ff.zeros(rows, cols, 3, 3) or ff.zeros(rows, cols)
end

-- Starts task t (= tasks + 1) with its head of `classes` outputs. Task 1
-- gets the initial widths; later tasks start with no new neuron (they grow
-- them), masks of ones and batch norm copied from task t - 1.
function BN:begin_task(t, classes)
  assert(t == self.tasks + 1, "blocknet: tasks begin in order")
  self.tasks = t
  local conv = self.d.conv
  for l, L in ipairs(self.layers) do
    local n = t == 1 and L.init or 0
    local cols = self:width(l - 1, t - 1) + (l > 1 and self.layers[l - 1].n[t] or 0)
    L.n[t] = n
    if t == 1 then
      L.R[t], L.b[t] = self:init_rows(l, cols, n)
    else
      L.R[t], L.b[t] = empty(0, cols, conv), self:has_bias() and ff.zeros(0) or nil
    end
    if l > 1 then L.C[t] = empty(self:width(l, t - 1), 0, conv) end
  end
  if self.d.bn then
    self.bn[t] = {}
    for l = 1, #self.layers do
      local w = self:width(l, t)
      local prev = self.bn[t - 1] and self.bn[t - 1][l]
      local B = {}
      if prev then
        for k, v in pairs(prev) do B[k] = v:detach():clone() end
      else
        B = { weight = ff.ones(w), bias = ff.zeros(w), running_mean = ff.zeros(w), running_var = ff.ones(w) }
      end
      self.bn[t][l] = B
    end
  end
  local fd = self:width(#self.layers, t) * self.d.spatial
  local lin = nn.Linear(math.max(fd, 1), classes, { generator = self.generator })
  local w = lin.weight:detach()
  if fd == 0 then w = ff.zeros(classes, 0) end
  self.heads[t] = { weight = w, bias = lin.bias:detach() }
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
      if L.b[a] then b = b and ff.cat({ b, L.b[a] }) or L.b[a] end
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

-- Task k's output for x (N x input features, or N x C x H x W). `train`:
-- task k's batch norm uses (and updates) batch statistics; only the task
-- being learned is ever run so. `momentum` overrides the running
-- statistics' momentum (recalibration).
function BN:forward(k, x, gates, train, momentum)
  if math.type(k) ~= "integer" or k < 1 or k > self.tasks then
    error(string.format("continual: task must be an integer in 1..%d, got %s", self.tasks, tostring(k)), 2)
  end
  local d = self.d
  return backbone.forward(d, x, function(l)
    local W, b = self:layer(l, k)
    return W, b, d.bn and self.bn[k][l] or nil
  end, self.heads[k], train, momentum or self.momentum, function(l, h)
    -- task k's mask over the old neurons of layer l
    local m = self:mask(l, k, gates)
    if m then h = h * (d.conv and m:view(1, -1, 1, 1) or m) end
    return h
  end)
end

-- The tensors task t owns and trains (its pieces, its batch norm's affine
-- entries and its head), non-empty ones only.
function BN:task_parameters(t)
  local list = {}
  for l, L in ipairs(self.layers) do
    for _, p in ipairs { L.R[t], L.b[t] or false, L.C[t] or false } do
      if p and p:numel() > 0 then list[#list + 1] = p end
    end
    local B = self.bn[t] and self.bn[t][l]
    if B then list[#list + 1] = B.weight; list[#list + 1] = B.bias end
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

-- Parameters stored for all tasks so far, dense (every block entry, with
-- the zeros where a task's neurons meet neurons it masks).
function BN:dense_params()
  local n = 0
  for t = 1, self.tasks do
    for _, p in ipairs(self:task_parameters(t)) do n = n + p:numel() end
  end
  return n
end

-- Positions of layer l's neurons that task t reads: every neuron it owns
-- and the older ones its mask keeps. Layer 0: the inputs.
function BN:used(l, t)
  if l == 0 then return self.input_dim end
  local n = self.layers[l].n[t]
  if t > 1 then n = n + math.tointeger(self.masks[t][l]:sum():item()) end
  return n
end

-- Parameters tasks actually use (the paper's size): task t's rows over the
-- inputs it reads, its columns in the older rows it keeps, its biases, its
-- batch norm over the neurons it reads and its head over them. The zeros
-- of dense blocks where its neurons meet masked ones are not counted
-- (dense_params - num_params of them).
function BN:num_params()
  local n = 0
  local k = self.d.conv and 9 or 1
  for t = 1, self.tasks do
    for l, L in ipairs(self.layers) do
      local own = L.n[t]
      n = n + own * self:used(l - 1, t) * k + (L.b[t] and own or 0)
      if l > 1 and t > 1 then
        n = n + (self:used(l, t) - own) * self.layers[l - 1].n[t] * k
      end
      if self.bn[t] then n = n + 2 * self:used(l, t) end
    end
    local h = self.heads[t]
    n = n + h.weight:size(1) * (self:used(#self.layers, t) * self.d.spatial + 1)
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
-- unmasked older neurons, then every neuron task t owns. Second result:
-- how many of them are older.
function BN:visible(l, t)
  if l == 0 then return range(1, self.input_dim), 0 end
  local old = {}
  if t > 1 then
    local m = self.masks[t][l]:totable()
    for i, v in ipairs(m) do if v ~= 0 then old[#old + 1] = i end end
  end
  local before = self:width(l, t - 1)
  local n_old = #old
  for i = before + 1, before + self.layers[l].n[t] do old[#old + 1] = i end
  return old, n_old
end

-- The view's layers are built with a throwaway generator (their weights
-- are replaced at once), so building a view never moves the default stream.
local SCRATCH = ff.Generator(0)

local function pick(t, dim, idx)
  if #idx == t:size(dim) then return t:clone() end
  return t:index_select(dim, idx)
end

-- Positions per channel p -> the head's columns (p-1)·S+1 .. p·S.
local function spread(pos, S)
  if S == 1 then return pos end
  local out = {}
  for _, p in ipairs(pos) do
    for s = 1, S do out[#out + 1] = (p - 1) * S + s end
  end
  return out
end

-- Task t's sub-network as nn.Sequential{Linear|Conv2d, [BatchNorm], ReLU,
-- [MaxPool2d], ..., [GlobalAvgPool|Flatten], Linear}: its tensors
-- restricted to the visible rows and columns, copied (growth replaces the
-- view's tensors, never the stored ones). Conv views read images.
function BN:view(t)
  local d = self.d
  local mods = {}
  ff.no_grad(function()
    local l = 0
    for _, s in ipairs(d.stages) do
      if s.kind == "pool" then
        mods[#mods + 1] = nn.MaxPool2d(2)
      else
        l = l + 1
        local W, b = self:layer(l, t)
        local rows, cols = self:visible(l, t), self:visible(l - 1, t)
        local m
        if d.conv then
          m = nn.Conv2d(#cols, #rows, 3, { padding = 1, bias = b ~= nil, generator = SCRATCH })
        else
          m = nn.Linear(#cols, #rows, { generator = SCRATCH })
        end
        m.weight = pick(pick(W, 1, rows), 2, cols):requires_grad(true)
        if b then m.bias = pick(b, 1, rows):requires_grad(true) end
        mods[#mods + 1] = m
        if d.bn then
          local B = self.bn[t][l]
          local bn = d.conv and nn.BatchNorm2d(#rows, { momentum = self.momentum })
              or nn.BatchNorm1d(#rows, { momentum = self.momentum })
          bn.weight = pick(B.weight, 1, rows):requires_grad(true)
          bn.bias = pick(B.bias, 1, rows):requires_grad(true)
          bn.running_mean = pick(B.running_mean, 1, rows)
          bn.running_var = pick(B.running_var, 1, rows)
          mods[#mods + 1] = bn
        end
        mods[#mods + 1] = nn.ReLU()
      end
    end
    if d.conv then mods[#mods + 1] = d.head == "avg" and nn.GlobalAvgPool() or nn.Flatten() end
    local head = self.heads[t]
    local cols = spread(self:visible(#self.layers, t), d.spatial)
    local lin = nn.Linear(#cols, head.weight:size(1), { generator = SCRATCH })
    lin.weight = pick(head.weight, 2, cols):requires_grad(true)
    lin.bias = head.bias:clone():requires_grad(true)
    mods[#mods + 1] = lin
  end)
  local view = nn.Sequential(mods)
  view.rows = {}
  for l = 1, #self.layers do view.rows[l] = #self:visible(l, t) end
  return view
end

-- The view's weight layers in order (producers, then the head).
local function weight_layers(view)
  local list = {}
  for _, m in ipairs(view:children()) do
    local cls = getmetatable(m).__name
    if cls == "Linear" or cls == "Conv2d" then list[#list + 1] = m end
  end
  return list
end

BN.weight_layers = weight_layers

local function batch_norms(view)
  local list = {}
  for _, m in ipairs(view:children()) do
    local cls = getmetatable(m).__name
    if cls == "BatchNorm1d" or cls == "BatchNorm2d" then list[#list + 1] = m end
  end
  return list
end

-- zeros(shape) with src's slices placed at positions `at` along dim.
local function place(shape, dim, at, src)
  local out = ff.zeros(table.unpack(shape))
  if #at > 0 and src:numel() > 0 then out:index_add_(dim, at, src:contiguous()) end
  return out
end

local function shape_of(t) return t:size() end

-- Copies a grown view back into task t's pieces. The view's rows of each
-- layer are sorted into older neurons (frozen, never copied back) and
-- neurons of task t: the rows it owned, the old neurons it unlocked
-- (`unlock[l]`, a list of view rows: their copy becomes task t's and the
-- frozen original is masked for task t) and the rows growth appended.
-- Task t's rows become R[t] (their columns put back at stored positions,
-- masked inputs reading zeros), its columns in older rows C[t], its
-- batch-norm entries and head columns go back to their stored positions.
-- Returns the number of neurons task t gained (unlocked copies included)
-- and the number of old neurons it unlocked.
function BN:absorb(t, view, unlock)
  local lins = weight_layers(view)
  local bns = batch_norms(view)
  local L = #self.layers
  if #lins ~= L + 1 then error("blocknet.absorb: the view lost or gained a layer", 2) end
  unlock = unlock or {}
  local olds, owns, unlocked = {}, {}, {}
  local added, n_unlocked = 0, 0
  for l = 1, L do
    local vis, n_old = self:visible(l, t)
    local n_before = view.rows[l]
    local take = {}
    for _, j in ipairs(unlock[l] or {}) do
      if j < 1 or j > n_old then error("blocknet.absorb: only old neurons can be unlocked", 2) end
      take[j] = true
    end
    olds[l], owns[l], unlocked[l] = {}, {}, {}
    -- rows task t owned before growth keep their order, then the copies
    -- of unlocked neurons, then appended rows
    for j = n_old + 1, n_before do owns[l][#owns[l] + 1] = j end
    for j = 1, n_old do
      if take[j] then
        owns[l][#owns[l] + 1] = j
        unlocked[l][#unlocked[l] + 1] = vis[j]
        n_unlocked = n_unlocked + 1
      else
        olds[l][#olds[l] + 1] = { j, vis[j] }
      end
    end
    for j = n_before + 1, lins[l].weight:size(1) do owns[l][#owns[l] + 1] = j end
    added = added + #owns[l] - self.layers[l].n[t]
  end
  ff.no_grad(function()
    -- stored position of each view column of layer l's input (l = 0: the
    -- input features), given layer l-1's sorting
    local function positions(l)
      if l == 0 then return range(1, self.input_dim) end
      local pos = {}
      local before = self:width(l, t - 1)
      for _, o in ipairs(olds[l]) do pos[o[1]] = o[2] end
      for i, j in ipairs(owns[l]) do pos[j] = before + i end
      return pos
    end
    local function list_of(pos, n)
      local r = {}
      for j = 1, n do r[j] = pos[j] end
      return r
    end
    for l = 1, L do
      local Lr = self.layers[l]
      local V = lins[l].weight:detach()
      local vb = lins[l].bias and lins[l].bias:detach()
      local own_idx = owns[l]
      local n_own = #own_idx
      local in_pos = list_of(positions(l - 1), V:size(2))
      local n_in = l == 1 and self.input_dim or self:width(l - 1, t - 1) + #owns[l - 1]
      local rows = n_own > 0 and V:index_select(1, own_idx) or nil
      local shape = shape_of(V)
      shape[1], shape[2] = n_own, n_in
      Lr.R[t] = rows and place(shape, 2, in_pos, rows) or ff.zeros(table.unpack(shape))
      if vb then Lr.b[t] = n_own > 0 and vb:index_select(1, own_idx) or ff.zeros(0) end
      if l > 1 then
        -- older rows x task t's input columns
        local own_in = owns[l - 1]
        local cshape = shape_of(V)
        cshape[1], cshape[2] = self:width(l, t - 1), #own_in
        local at, picked = {}, {}
        for i, o in ipairs(olds[l]) do at[i], picked[i] = o[2], o[1] end
        if #at > 0 and #own_in > 0 then
          local top = V:index_select(1, picked):index_select(2, own_in)
          Lr.C[t] = place(cshape, 1, at, top)
        else
          Lr.C[t] = ff.zeros(table.unpack(cshape))
        end
      end
      if self.d.bn then
        local B, vbn = self.bn[t][l], bns[l]
        local width = self:width(l, t - 1) + n_own
        local vpos = list_of(positions(l), vbn.weight:size(1))
        for _, name in ipairs { "weight", "bias", "running_mean", "running_var" } do
          -- older neurons' entries as they were (masked ones are never
          -- read), then the view's at their stored positions
          local old = B[name]:totable()
          local f = {}
          local fill = (name == "weight" or name == "running_var") and 1 or 0
          for i = 1, width do f[i] = i <= self:width(l, t - 1) and old[i] or fill end
          for i, v in ipairs(vbn[name]:detach():totable()) do f[vpos[i]] = v end
          B[name] = ff.tensor(f)
        end
      end
    end
    for l = 1, L do
      self.layers[l].n[t] = #owns[l]
      if t > 1 then
        for _, p in ipairs(unlocked[l]) do self.masks[t][l][p] = 0 end
      end
    end
    local H = lins[L + 1].weight:detach()
    local pos = spread(list_of(positions(L), H:size(2) // self.d.spatial), self.d.spatial)
    self.heads[t].weight = place({ H:size(1), self:width(L, t) * self.d.spatial }, 2, pos, H)
    self.heads[t].bias = lins[L + 1].bias:detach():clone()
  end)
  for _, p in ipairs(self:task_parameters(t)) do p:requires_grad(true) end
  return added, n_unlocked
end

return BN
