-- firefly.grow.propose: one growth step of Firefly descent, scriptable from
-- the REPL:
--
--   local p = ff.grow.propose(net, nb, batches)  -- build + optimise + score
--   print(p)                                     -- candidates per unit
--   p:select(8)                                  -- keep the best 8
--   local net, maps, report = p:apply(opt)       -- materialise; opt follows
--
-- Step 1 optimises the perturbations (ε, δ) of every candidate with the
-- network's weights frozen and batch norm in evaluation mode, projecting
-- after each step onto |ε_i| <= ε and ||δ_i|| <= 1. Step 2 scores each
-- candidate by the average gradient of the loss along its own step
-- (firefly-method.md section 3) through the gates, with the endpoint rule
-- (α = 1), the midpoint rule (g points) or the exact rule (each
-- candidate's own path, one forward each); selection keeps the η largest
-- |s_i| and sets ε̂_i = −ε·sign(s_i), predicting ΔL = Σ ε̂_i s_i.
--
-- Units of Linear and Conv2d layers in the top-level Sequential (see
-- overgrown.lua).
local ff = require "firefly"
local units_mod = require "firefly.grow.units"
local edit = require "firefly.grow.edit"
local overgrown = require "firefly.grow.overgrown"

local P = {}
P.__index = P

local pad_cols, insert_layer -- defined below

local function check_choice(nb, key, choices)
  local v = nb[key]
  if v == nil then return end
  for _, c in ipairs(choices) do if v == c then return end end
  error(string.format("grow.propose: %s must be one of %s, got %s", key, table.concat(choices, ", "),
    tostring(v)), 4)
end

local function check_nb(nb)
  local allowed = { split = 1, new = 1, eps = 1, where = 1, steps = 1, lr = 1, rule = 1, points = 1,
    loss = 1, generator = 1, optimizer = 1, project = 1, penalty = 1, selection = 1, layers = 1 }
  for k in pairs(nb) do
    if not allowed[k] then error("grow.propose: unknown neighbourhood option '" .. tostring(k) .. "'", 3) end
  end
  check_choice(nb, "rule", { "endpoint", "midpoint", "exact" })
  check_choice(nb, "optimizer", { "adam", "rmsprop" })
  check_choice(nb, "selection", { "paper", "official" })
end

-- batches: a DataLoader, or a list of {x, y}
local function each_batch(batches, fn)
  if batches.iter then
    for x, y in batches:iter() do fn(x, y) end
  else
    for _, b in ipairs(batches) do fn(b[1], b[2]) end
  end
end

local function loss_of(nb)
  return nb.loss or function(out, y) return ff.cross_entropy(out, y) end
end

-- Projection onto the constraints: rows of v (= εδ) to norm <= ε; new
-- neurons: |e| <= ε and ||(u, c, o)|| <= 1.
local function project(og, eps)
  ff.no_grad(function()
    for _, c in ipairs(og.units) do
      if c.split then
        local v = c.split.v
        local m = v:size(1)
        local rows = v:view(m, -1)
        rows:mul_((rows:norm(2, 2, true):clamp(eps, nil)):pow(-1) * eps)
      end
      if c.layer then -- o is (width x k): a neuron's outgoing weights are a column
        local L = c.layer
        L.e:clamp_(-eps, eps)
        local norm = (L.u:pow(2):sum(2) + L.b:pow(2) + L.o:pow(2):sum(1)):sqrt():clamp(1, nil)
        L.u:div_(norm:unsqueeze(2))
        L.b:div_(norm)
        L.o:div_(norm:unsqueeze(1))
      end
      if c.new then
        local n = c.new
        local k = n.e:size(1)
        n.e:clamp_(-eps, eps)
        local u, o = n.u:view(k, -1), n.o:view(n.o:size(1), k, -1)
        local norm = (u:pow(2):sum(2) + n.b:pow(2) + o:pow(2):sum(3):sum(1)):sqrt():clamp(1, nil)
        u:div_(norm:unsqueeze(2))
        n.b:div_(norm)
        o:div_(norm:view(1, k, 1))
      end
    end
  end)
end

-- The released code's penalty: λ(‖v‖² + 10⁻²‖new neurons' weights‖²).
local function penalty(og, lambda)
  local total
  for _, c in ipairs(og.units) do
    local terms = {}
    if c.split then terms[#terms + 1] = c.split.v:pow(2):sum() end
    if c.new then terms[#terms + 1] = (c.new.u:pow(2):sum() + c.new.o:pow(2):sum()) * 1e-2 end
    for _, t in ipairs(terms) do total = total and total + t or t end
  end
  return total * lambda
end

local function step1(og, nb, batches, lf)
  local steps = nb.steps or 1
  if steps <= 0 then return end
  local params = og:perturbations()
  local opt = nb.optimizer == "rmsprop"
      and ff.optim.RMSprop(params, { lr = nb.lr or 1e-3, alpha = 0.9, momentum = 0.1 })
      or ff.optim.Adam(params, { lr = nb.lr or 1e-3 })
  for _ = 1, steps do
    each_batch(batches, function(x, y)
      opt:zero_grad()
      local loss = lf(og(x), y)
      if nb.penalty and nb.penalty > 0 then loss = loss + penalty(og, nb.penalty) end
      loss:backward()
      opt:step()
      if nb.project ~= false then project(og, nb.eps or 1e-2) end
    end)
  end
end

-- The exact rule: each candidate's own path, the others held at their
-- trained steps. By the fundamental theorem of calculus the average
-- gradient along [0, ε̃_i] is [L(ε̃) − L(ε̃ with candidate i off)] / ε̃_i, and
-- the gate switches it off (α + y_i = 0 at y_i = −1): one forward pass per
-- candidate and batch, for small networks and for checking the fast rules.
local function exact_sums(og, batches, lf)
  local gates = og:gates()
  local sums = {}
  for i, gt in ipairs(gates) do sums[i] = ff.zeros(gt:size()) end
  local count = 0
  ff.no_grad(function()
    each_batch(batches, function(x, y)
      local base = lf(og(x), y):item()
      for i, gt in ipairs(gates) do
        for j = 1, gt:size(1) do
          gt[j] = -1
          sums[i][j] = sums[i][j] + (base - lf(og(x), y):item())
          gt[j] = 0
        end
      end
      count = count + 1
    end)
  end)
  return sums, count
end

-- Gate gradients summed over batches and quadrature points.
local function gradient_sums(og, nb, batches, lf)
  local alphas = { 1 }
  if nb.rule == "midpoint" then
    alphas = {}
    local g = nb.points or 4
    for k = 1, g do alphas[k] = (2 * k - 1) / (2 * g) end
  end
  local gates = og:gates()
  local sums = {}
  for i, gt in ipairs(gates) do sums[i] = ff.zeros(gt:size()); gt.grad = nil end
  local count = 0
  for _, a in ipairs(alphas) do
    og.alpha = a
    each_batch(batches, function(x, y)
      lf(og(x), y):backward()
      ff.no_grad(function()
        for i, gt in ipairs(gates) do sums[i]:add_(gt.grad); gt.grad = nil end
      end)
      count = count + 1
    end)
  end
  og.alpha = 1
  return sums, count
end

-- Scores: the summed gate effects averaged and divided by each candidate's
-- step, s_i = mean ∂L/∂y_i / ε̃_i (the gradient along the step).
local function step2(og, nb, batches, lf)
  local sums, count
  if nb.rule == "exact" then
    sums, count = exact_sums(og, batches, lf)
  else
    sums, count = gradient_sums(og, nb, batches, lf)
  end
  -- per-candidate steps ε̃
  local scores, k = {}, 1
  for _, c in ipairs(og.units) do
    local entry = {}
    if c.split then
      entry.split = ff.no_grad(function()
        local v = c.split.v
        return sums[k] / count / v:view(v:size(1), -1):norm(2, 2):clamp(1e-12, nil)
      end)
      k = k + 1
    end
    for _, kind in ipairs { "new", "layer" } do
      if c[kind] then
        entry[kind] = ff.no_grad(function()
          return sums[k] / count / c[kind].e:abs():clamp(1e-12, nil)
        end)
        k = k + 1
      end
    end
    scores[#scores + 1] = entry
  end
  return scores
end

local function mean_loss(net, batches, lf)
  local total, n = 0, 0
  ff.no_grad(function()
    each_batch(batches, function(x, y)
      total = total + lf(net(x), y):item() * x:size(1)
      n = n + x:size(1)
    end)
  end)
  return total / math.max(n, 1)
end

-- grow.propose(net, nb, batches) -> proposal
function P.propose(net, nb, batches)
  nb = nb or {}
  check_nb(nb)
  local t0 = ff.clock()
  local lf = loss_of(nb)
  -- the over-grown forward handles units of the top-level Sequential;
  -- units inside inserted Residual blocks wait for the fused operators
  local us = {}
  for _, u in ipairs(units_mod.units(net, nb.where)) do
    if not u.name:find(".", 1, true) then us[#us + 1] = u end
  end
  if #us == 0 then error("grow.propose: the network has no growable units", 2) end
  local was_training = net.training
  net:eval()
  -- freeze the network's weights: step 1 moves only the perturbations
  local frozen = {}
  for _, p in ipairs(net:parameters()) do frozen[#frozen + 1] = p; p:requires_grad(false) end
  local new = type(nb.new) == "table" and nb.new.candidates or nb.new or 0
  local ok, err = pcall(function()
    local layers = type(nb.layers) == "table" and nb.layers.candidates or nb.layers or 0
    local og = overgrown.build(net, us, { split = nb.split ~= false, new = new, layers = layers,
      eps = nb.eps, generator = nb.generator })
    step1(og, nb, batches, lf)
    local self = setmetatable({ net = net, og = og, nb = nb, batches = batches, lf = lf,
      loss_before = mean_loss(net, batches, lf) }, P)
    self.scores = step2(og, nb, batches, lf)
    self.seconds = ff.clock() - t0
    return self
  end)
  for _, p in ipairs(frozen) do p:requires_grad(true) end
  net:train(was_training)
  if not ok then error(err, 0) end
  return err
end

-- Every candidate as {unit = k, kind = "split" | "new", index = i, score = s}.
function P:candidates()
  local list = {}
  for k, entry in ipairs(self.scores) do
    for _, kind in ipairs { "split", "new", "layer" } do
      if entry[kind] then
        for i, s in ipairs(entry[kind]:totable()) do
          list[#list + 1] = { unit = k, kind = kind, index = i, score = s }
        end
      end
    end
  end
  return list
end

-- The step of candidate c as trained by step 1 (|v_i| or e_j, signed).
local function trained_step(self, c)
  local cand = self.og.units[c.unit]
  if c.kind == "split" then return cand.split.v[c.index]:norm():item() end
  return cand[c.kind].e[c.index]
end

-- Parameters a candidate adds given what is already selected (marginal
-- cost, so the charges add up exactly): a neuron's producer row (and bias),
-- its batch-norm entries and its consumer columns, where a neighbouring
-- unit's selected neurons lengthen the row (the previous unit grows this
-- producer's inputs) or the column (the next unit grows this consumer's
-- outputs), and this unit's selected layer neurons read it; a new-layer
-- neuron reads and writes the unit's width as it will be.
local function marginal_cost(self, c, n, l)
  local units = self.og.units
  local u = units[c.unit].unit
  local prev = units[c.unit - 1] and units[c.unit - 1].unit.consumer == u.producer
  local nxt = units[c.unit + 1] and units[c.unit + 1].unit.producer == u.consumer
  local width = u.producer.weight:size(1) + n[c.unit]
  -- a layer block's second Linear has a bias of the unit's width: paid when
  -- the block opens, and one more entry per neuron added after that
  if c.kind == "layer" then return 2 * width + 1 + (l[c.unit] == 0 and width or 0) end
  local row = u.producer.weight:numel() // u.producer.weight:size(1) + (u.producer.bias and 1 or 0)
  if prev then row = row + n[c.unit - 1] end
  local col = u.consumer.weight:numel() // (u.consumer.weight:size(2) // u.spatial)
  if nxt then col = col + n[c.unit + 1] * u.spatial end
  local bn = 0
  for _, m in ipairs(u.between) do if m.weight then bn = bn + 2 end end
  return row + col + bn + (l[c.unit] > 0 and 2 * l[c.unit] + 1 or 0)
end

-- Keep eta candidates. The paper: the largest |s|, with ε̂ = −ε·sign(s).
-- eta = {params = P} charges each candidate its parameter cost instead and
-- keeps candidates greedily by |s| per parameter while the total stays
-- within P (C(f) <= C(f_t) + P).
-- The released code ("official" selection): the most negative s, keeping
-- the trained steps ε̃. Either way the prediction is Σ ε̂_i s_i.
function P:select(eta)
  local list = self:candidates()
  local official = self.nb.selection == "official"
  local budget
  if type(eta) == "table" then
    budget = eta.params
    if type(budget) ~= "number" or budget < 0 then
      error("grow.select: eta must be a number of neurons or {params = n}", 2)
    end
    eta = math.huge
    -- greedy by |s| per parameter, at the cost before any selection
    local n0, l0 = {}, {}
    for k = 1, #self.og.units do n0[k], l0[k] = 0, 0 end
    for _, c in ipairs(list) do c.rank = math.abs(c.score) / marginal_cost(self, c, n0, l0) end
    table.sort(list, function(a, b) return a.rank > b.rank end)
  elseif official then
    table.sort(list, function(a, b) return a.score < b.score end)
  else
    table.sort(list, function(a, b) return math.abs(a.score) > math.abs(b.score) end)
  end
  local spent = 0
  local n, l = {}, {}
  for k = 1, #self.og.units do n[k], l[k] = 0, 0 end
  local eps = self.nb.eps or 1e-2
  -- the two-level budget of new layers: at most max_new_layers layers get
  -- any neuron (a layer counts once one of its neurons is kept)
  local max_layers = (self.nb.layers or {}).max_new_layers or math.huge
  local opened, n_opened = {}, 0
  self.selected, self.predicted = {}, 0
  for _, c in ipairs(list) do
    if #self.selected >= eta then break end
    local cost = budget and marginal_cost(self, c, n, l) or 0
    local allowed = not budget or spent + cost <= budget
    if allowed and c.kind == "layer" and not opened[c.unit] then
      allowed = n_opened < max_layers
      if allowed then opened[c.unit], n_opened = true, n_opened + 1 end
    end
    if allowed then
      if official then
        c.trained = true
        c.eps_hat = trained_step(self, c)
      else
        c.eps_hat = c.score > 0 and -eps or eps
      end
      self.predicted = self.predicted + c.eps_hat * c.score
      self.selected[#self.selected + 1] = c
      spent = spent + cost
      if c.kind == "layer" then l[c.unit] = l[c.unit] + 1 else n[c.unit] = n[c.unit] + 1 end
    end
  end
  self.cost = budget and spent or nil
  return self
end

-- Pad the rows of t (k x d_old ...) with zero columns up to d (a unit
-- whose producer gained inputs from an earlier unit's growth).
function pad_cols(t, d)
  local have = t:size(2)
  if have == d then return t end
  local shape = t:size()
  shape[2] = d - have
  return ff.cat({ t, ff.zeros(shape) }, 2)
end

-- Insert the selected neurons of a candidate layer as a Residual block
-- before the unit's consumer: x + W2 act(W1 x + b1), W2's columns scaled by
-- the steps. Inputs added to the unit in this step (new neurons, split
-- children) get zero weights in the block. Returns remap entries for the
-- new parameters (no old state).
local nn_mod
function insert_layer(net, cand, sel)
  nn_mod = nn_mod or require("firefly.nn")
  local unit, L = cand.unit, cand.layer
  local width = unit.producer.weight:size(1)
  local idx, steps = {}, {}
  for j, c in ipairs(sel) do idx[j] = c.index; steps[j] = c.eps_hat end
  local k = #idx
  local w1 = pad_cols(L.u:detach():index_select(1, idx), width)
  local b1 = L.b:detach():index_select(1, idx)
  local w2 = L.o:detach():index_select(2, idx) * ff.tensor(steps)
  if w2:size(1) < width then w2 = ff.cat({ w2, ff.zeros(width - w2:size(1), k) }, 1) end
  local first = nn_mod.Linear(width, k)
  local second = nn_mod.Linear(k, width)
  ff.no_grad(function()
    first.weight:copy_(w1); first.bias:copy_(b1)
    second.weight:copy_(w2); second.bias:zero_()
  end)
  local act = nn_mod.activation(L.act.act, L.act.param)
  local block = nn_mod.Residual(nn_mod.Sequential { first, act, second })
  local pos
  for i, ch in ipairs(net._children) do if ch[2] == unit.consumer then pos = i end end
  net:insert(pos, block)
  return {
    { new = first.weight }, { new = first.bias }, { new = second.weight }, { new = second.bias },
  }
end

-- Materialise the selection (units in network order). With an optimiser,
-- its state follows every edit (opt:remap after each one: a layer can be
-- edited twice, as one unit's consumer and the next one's producer).
-- Returns the network, the list of remap maps in the order they apply,
-- and a report.
function P:apply(opt)
  if not self.selected then error("grow.apply: select() first", 2) end
  local params_before = self.net:num_params()
  local maps = {}
  local function done(map)
    maps[#maps + 1] = map
    if opt then opt:remap(map) end
  end
  local by_unit = {}
  for _, c in ipairs(self.selected) do
    by_unit[c.unit] = by_unit[c.unit] or { split = {}, new = {}, layer = {} }
    table.insert(by_unit[c.unit][c.kind], c)
  end
  for k, cand in ipairs(self.og.units) do
    local sel = by_unit[k]
    if sel then
      local unit = cand.unit
      local d = unit.producer.weight:size(2)
      if #sel.split > 0 then
        local idx, rows = {}, {}
        for j, c in ipairs(sel.split) do
          idx[j] = c.index
          local v = cand.split.v[c.index]
          -- the trained v itself (official), or its direction times ε̂ (paper)
          rows[j] = (c.trained and v or v / math.max(v:norm():item(), 1e-12) * c.eps_hat):detach()
        end
        done(edit.split(unit, idx, pad_cols(ff.stack(rows), d)))
      end
      if #sel.new > 0 then
        local idx, e_hat = {}, {}
        for j, c in ipairs(sel.new) do idx[j] = c.index; e_hat[j] = c.eps_hat end
        local n = cand.new
        local u = pad_cols(n.u:detach():index_select(1, idx), d)
        local b = n.b:detach():index_select(1, idx)
        -- outgoing weights of the selected neurons, times their steps, in
        -- the consumer's layout (k blocks of `spatial` columns, or k input
        -- channels)
        local out_rows = n.o:size(1)
        local o = n.o:detach():view(out_rows, n.e:size(1), -1):index_select(2, idx)
          * ff.tensor(e_hat):view(1, #idx, 1)
        local oshape = n.o:size()
        oshape[2] = oshape[2] // n.e:size(1) * #idx
        done(edit.add(unit, u, b, o:reshape(oshape)))
      end
      if #sel.layer > 0 then done(insert_layer(self.net, cand, sel.layer)) end
    end
  end
  local was_training = self.net.training
  self.net:eval()
  local loss_after = mean_loss(self.net, self.batches, self.lf)
  self.net:train(was_training)
  local report = {
    predicted = self.predicted, measured = loss_after - self.loss_before,
    loss_before = self.loss_before, loss_after = loss_after,
    params_before = params_before, params_after = self.net:num_params(),
    selected = #self.selected, seconds = self.seconds,
  }
  return self.net, maps, report
end

function P:__tostring()
  local lines = { string.format("Firefly proposal: %d units, %.2f s", #self.scores, self.seconds or 0) }
  for k, entry in ipairs(self.scores) do
    local u = self.og.units[k].unit
    local parts = {}
    for _, kind in ipairs { "split", "new", "layer" } do
      if entry[kind] then
        local s = entry[kind]
        parts[#parts + 1] = string.format("%d %s (|s| max %.3g)", s:numel(), kind, s:abs():max():item())
      end
    end
    lines[#lines + 1] = string.format("  unit %s (%s, %d neurons): %s", u.name, u.kind,
      units_mod.width(u), table.concat(parts, ", "))
  end
  if self.selected then
    lines[#lines + 1] = string.format("  selected %d, predicted dL %.4g", #self.selected, self.predicted)
  end
  return table.concat(lines, "\n")
end

return P
