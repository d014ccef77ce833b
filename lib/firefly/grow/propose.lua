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
local ff = require "firefly"
local units_mod = require "firefly.grow.units"
local edit = require "firefly.grow.edit"
local overgrown = require "firefly.grow.overgrown"

local P = {}
P.__index = P

local insert_layer, record_positions -- defined below

local function check_choice(nb, key, choices)
  local v = nb[key]
  if v == nil then return end
  for _, c in ipairs(choices) do if v == c then return end end
  error(string.format("grow.propose: %s must be one of %s, got %s", key, table.concat(choices, ", "),
    tostring(v)), 4)
end

local function check_nb(nb, method)
  local allowed = { split = 1, new = 1, eps = 1, where = 1, steps = 1, lr = 1, rule = 1, points = 1,
    loss = 1, generator = 1, optimizer = 1, project = 1, penalty = 1, selection = 1, layers = 1,
    init = 1, last_conv_zero_out = 1, quiet = 1, method = 1,
    -- read by grow.run
    batches = 1, eta = 1, reset_optim = 1 }
  for k in pairs(method and method.options or {}) do allowed[k] = 1 end
  for k in pairs(nb) do
    if not allowed[k] then
      error(string.format("grow.propose: unknown neighbourhood option '%s'%s", tostring(k),
        nb.method and " for method " .. nb.method or ""), 3)
    end
  end
  check_choice(nb, "rule", { "endpoint", "midpoint", "exact" })
  check_choice(nb, "optimizer", { "adam", "rmsprop" })
  check_choice(nb, "selection", { "paper", "official" })
  check_choice(nb, "init", { "paper", "official" })
end

-- batches: a DataLoader, or a list of {x, y}. With a label, a progress
-- line on a terminal (growth over a whole training set takes a while).
local function each_batch(batches, fn, label, quiet)
  local bar = label and ff.logging.progress { total = #batches, label = label, quiet = quiet, unit = "batch" }
  local done = 0
  local function one(x, y)
    fn(x, y)
    done = done + 1
    if bar then bar:update(done) end
  end
  if batches.iter then
    for x, y in batches:iter() do one(x, y) end
  else
    for _, b in ipairs(batches) do one(b[1], b[2]) end
  end
  if bar then bar:finish() end
end

local function loss_of(nb)
  return nb.loss or function(out, y) return ff.cross_entropy(out, y) end
end

-- Gated neurons (new neurons, a candidate layer's) onto |e| <= ε and
-- ||(u, c, o)|| <= 1 per neuron; o holds neuron j's outgoing weights in its
-- dim-2 block j.
local function project_neurons(n, eps)
  local k = n.e:size(1)
  n.e:clamp_(-eps, eps)
  local u, o = n.u:view(k, -1), n.o:view(n.o:size(1), k, -1)
  local norm = (u:pow(2):sum(2) + n.b:pow(2) + o:pow(2):sum(3):sum(1)):sqrt():clamp(1, nil)
  u:div_(norm:unsqueeze(2))
  n.b:div_(norm)
  o:div_(norm:view(1, k, 1))
end

-- Projection onto the constraints: rows of v (= εδ) to norm <= ε, gated
-- neurons as above.
local function project(og, eps)
  ff.no_grad(function()
    for _, c in ipairs(og.units) do
      if c.split then
        local v = c.split.v
        local rows = v:view(v:size(1), -1)
        rows:mul_((rows:norm(2, 2, true):clamp(eps, nil)):pow(-1) * eps)
      end
      if c.new then project_neurons(c.new, eps) end
      if c.layer then project_neurons(c.layer, eps) end
    end
  end)
end

-- The released code's penalty: λ(‖v‖² + 10⁻²‖new neurons' weights‖²).
local function penalty(og, lambda)
  local total
  for _, c in ipairs(og.units) do
    local terms = {}
    if c.split then terms[#terms + 1] = c.split.v:pow(2):sum() end
    for _, kind in ipairs { "new", "layer" } do
      local n = c[kind]
      if n then terms[#terms + 1] = (n.u:pow(2):sum() + n.o:pow(2):sum()) * 1e-2 end
    end
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
  for pass = 1, steps do
    each_batch(batches, function(x, y)
      opt:zero_grad()
      local loss = lf(og(x), y)
      if nb.penalty and nb.penalty > 0 then loss = loss + penalty(og, nb.penalty) end
      loss:backward()
      opt:step()
      if nb.project ~= false then project(og, nb.eps or 1e-2) end
    end, string.format("grow step 1 (%d/%d)", pass, steps), nb.quiet)
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
    end, "grow step 2 (alpha " .. a .. ")", nb.quiet)
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

local function widths(us)
  local w = {}
  for i, u in ipairs(us) do w[i] = units_mod.width(u) end
  return table.concat(w, "-")
end

local function neuron_count(us)
  local n = 0
  for _, u in ipairs(us) do n = n + units_mod.width(u) end
  return n
end

-- Firefly descent itself: the over-grown network, step 1, step 2.
local function firefly(ctx)
  local nb = ctx.nb
  local new = type(nb.new) == "table" and nb.new.candidates or nb.new or 0
  local layers = type(nb.layers) == "table" and nb.layers.candidates or nb.layers or 0
  local og = overgrown.build(ctx.net, ctx.units, { split = nb.split ~= false, new = new, layers = layers,
    eps = nb.eps, generator = nb.generator, init = nb.init })
  step1(og, nb, ctx.batches, ctx.lf)
  return { og = og, scores = step2(og, nb, ctx.batches, ctx.lf) }
end

-- The growth methods by name: Firefly here, the baselines in methods/.
local METHODS = { "firefly", "random", "nash", "split_exact", "split_fast", "net2net", "gradmax" }
local function method_of(nb)
  local name = nb.method or "firefly"
  if name == "firefly" then return { name = "firefly", build = firefly } end
  for _, m in ipairs(METHODS) do
    if m == name then
      local ok, mod = pcall(require, "firefly.grow.methods." .. name)
      if not ok then error("grow.propose: method " .. name .. " failed to load: " .. tostring(mod), 4) end
      return mod
    end
  end
  error(string.format("grow.propose: method must be one of %s, got %s", table.concat(METHODS, ", "),
    tostring(name)), 4)
end
P.METHODS = METHODS

-- Helpers the methods share with Firefly.
P.util = { each_batch = each_batch, mean_loss = mean_loss, loss_of = loss_of }

-- grow.propose(net, nb, batches) -> proposal
--
-- A method's build(ctx) gets {net, nb, batches, lf, units} with the
-- network in evaluation mode and its weights frozen, and returns the
-- over-grown network `og` holding its candidates (split rows v, new
-- neurons' u, b, o, e, candidate layers) and their `scores`, shaped as
-- Firefly's; optionally `order(self, list, budget)` (the candidates in
-- the order selection considers them, and only those it may keep),
-- `predict(self, c)` (the loss change it predicts for candidate c; else
-- ε̂·s), `fixed_steps` (apply each candidate's own step ε̃, as the
-- official selection does), `after_split(self, cand, map)` (a hook after
-- each unit's split edit), `insert_deeper(self, cand)` (for candidates of
-- kind "deeper", one per unit in cand.deeper = {kernel, positions, e}: put
-- an identity layer at the unit's width in place, return its remap
-- entries) and `materialise(self, opt)` (apply it its own way; returns
-- what apply does).
function P.propose(net, nb, batches)
  nb = nb or {}
  local method = method_of(nb)
  check_nb(nb, method)
  local t0 = ff.clock()
  local lf = loss_of(nb)
  local us = units_mod.units(net, nb.where)
  if #us == 0 then error("grow.propose: the network has no growable units", 2) end
  local was_training = net.training
  net:eval()
  -- freeze the network's weights: step 1 moves only the perturbations
  local frozen = {}
  for _, p in ipairs(net:parameters()) do frozen[#frozen + 1] = p; p:requires_grad(false) end
  local ok, err = pcall(function()
    local self = method.build { net = net, nb = nb, batches = batches, lf = lf, units = us }
    self.net, self.nb, self.batches, self.lf, self.method = net, nb, batches, lf, method.name
    self.loss_before = mean_loss(net, batches, lf)
    self.widths_before, self.neurons_before = widths(us), neuron_count(us)
    setmetatable(self, P)
    self.positions = record_positions(self) -- in evaluation mode, like the rest of the step
    self.seconds = ff.clock() - t0
    return self
  end)
  for _, p in ipairs(frozen) do p:requires_grad(true) end
  net:train(was_training)
  if not ok then error(err, 0) end
  return err
end

-- Every candidate as {unit = k, kind = "split" | "new" | "layer" | "deeper", index = i,
-- score = s, step = ε̃ (signed for gated neurons, |v_i| for splits),
-- effect = s·|ε̃| (the gate gradient: the first-order effect of keeping the
-- candidate at its trained step)}.
function P:candidates()
  local list = {}
  for k, entry in ipairs(self.scores) do
    local cand = self.og.units[k]
    for _, kind in ipairs { "split", "new", "layer", "deeper" } do
      if entry[kind] then
        local steps = kind == "split" and cand.split.v:view(cand.split.v:size(1), -1):norm(2, 2):totable()
          or cand[kind].e:totable()
        for i, s in ipairs(entry[kind]:totable()) do
          list[#list + 1] = { unit = k, kind = kind, index = i, score = s, step = steps[i],
            effect = s * math.abs(steps[i]) }
        end
      end
    end
  end
  return list
end

---------------------------------------------------------------- cost model

-- The parameters (or multiply-adds per example) of the layers a selection
-- touches, as a function of how many neurons each unit gains (n[k]) and
-- how many neurons each unit's new layer gets (l[k]) and whether it gets an
-- identity layer (d[k], kind "deeper", Net2DeeperNet). Selection charges a
-- candidate the difference this total makes, so the charges add up to
-- exactly what apply adds. Each weight layer is rows x cols x kernel (+
-- bias per row); a unit's neurons are rows of its producer and of the last
-- layer of each residual block between, columns of its consumer (x spatial)
-- and of each block's first layer, and entries of its batch norms.
local function weight_layers(self)
  local layers, by_module = {}, {}
  local function layer(m)
    if by_module[m] then return by_module[m] end
    local w = m.weight
    local L = { rows = w:size(1), cols = w:size(2), kernel = w:numel() // (w:size(1) * w:size(2)),
      bias = m.bias and 1 or 0, positions = self.positions[m] or 1, drows = {}, dcols = {} }
    layers[#layers + 1] = L
    by_module[m] = L
    return L
  end
  local bns = {}
  for k, cand in ipairs(self.og.units) do
    local u = cand.unit
    table.insert(layer(u.producer).drows, { k, 1 })
    table.insert(layer(u.consumer).dcols, { k, u.spatial })
    for _, m in ipairs(u.between) do
      local first, last = units_mod.residual_ends(m, u.producer.weight:size(1))
      if first then
        table.insert(layer(first).dcols, { k, 1 })
        table.insert(layer(last).drows, { k, 1 })
      elseif m.weight then
        bns[#bns + 1] = { k, 2 }
      end
    end
  end
  return layers, bns
end

local function total_cost(self, n, l, flops, d)
  local cost = 0
  for _, L in ipairs(self.cost_layers) do
    local r, c = L.rows, L.cols
    for _, d in ipairs(L.drows) do r = r + n[d[1]] * d[2] end
    for _, d in ipairs(L.dcols) do c = c + n[d[1]] * d[2] end
    cost = cost + (r * c * L.kernel + (flops and 0 or r * L.bias)) * (flops and L.positions or 1)
  end
  if not flops then
    for _, b in ipairs(self.cost_bns) do cost = cost + n[b[1]] * b[2] end
  end
  -- new layers: a block of l[k] neurons at the unit's width w (two weight
  -- layers, the first one's bias and batch norm, the second one's bias)
  for k, cand in ipairs(self.og.units) do
    local L = cand.layer
    if L and l[k] > 0 then
      local w = cand.unit.producer.weight:size(1) + n[k]
      local kernel = L.conv and 9 or 1
      if flops then
        cost = cost + 2 * l[k] * w * kernel * (self.positions[L] or 1)
      else
        cost = cost + 2 * l[k] * w * kernel + l[k] * (1 + (L.bn and 2 or 0)) + w
      end
    end
    -- an identity layer: w x w (x kernel) weights and w biases at the
    -- unit's width after this step (its neurons are the unit's, copied)
    local D = cand.deeper
    if D and d and d[k] > 0 then
      local w = cand.unit.producer.weight:size(1) + n[k]
      cost = cost + (flops and w * w * D.kernel * D.positions or w * w * D.kernel + w)
    end
  end
  return cost
end

local function marginal(self, c, n, l, flops, d)
  local before = total_cost(self, n, l, flops, d)
  local t = c.kind == "layer" and l or c.kind == "deeper" and d or n
  t[c.unit] = t[c.unit] + 1
  local after = total_cost(self, n, l, flops, d)
  t[c.unit] = t[c.unit] - 1
  return after - before
end

-- The neurons a candidate adds: one, plus its copy in the unit's identity
-- layer when the unit gets one; an identity layer adds the unit's width.
local function neurons_of(self, c, n, d)
  local k = c.unit
  if c.kind == "deeper" then return self.og.units[k].unit.producer.weight:size(1) + n[k] end
  return (c.kind ~= "layer" and d[k] > 0) and 2 or 1
end

-- Output positions (H·W) of every weight layer and candidate layer, from
-- one over-grown forward pass of one example: FLOP costs need them.
function record_positions(self)
  -- the first batch only (a whole loader would be read to its end)
  local batches, x = self.batches, nil
  if batches.iter then
    for bx in batches:iter() do x = bx; break end
  else
    x = batches[1][1]
  end
  local og = self.og
  og.record = {}
  ff.no_grad(function() og:forward(x:narrow(1, 1, 1)) end)
  local positions = og.record
  og.record = nil
  return positions
end

---------------------------------------------------------------- selection

-- A budget: a number of neurons, or a table {neurons =, params =, flops =,
-- per_unit = k or {[unit name] = k}, pool = "global" | "unit"}.
local function check_budget(eta)
  if type(eta) == "number" then
    if eta ~= eta or eta < 0 then error("grow.select: eta must be a non-negative number, got " .. eta, 3) end
    return { neurons = eta }
  end
  if type(eta) ~= "table" then
    error("grow.select: eta must be a number of neurons or a table {neurons =, params =, flops =, per_unit =, pool =}", 3)
  end
  for k, v in pairs(eta) do
    if k == "pool" then
      if v ~= "global" and v ~= "unit" then error("grow.select: pool must be \"global\" or \"unit\", got " .. tostring(v), 3) end
    elseif k == "per_unit" then
      if type(v) ~= "number" and type(v) ~= "table" then error("grow.select: per_unit must be a number or a table of numbers by unit name", 3) end
    elseif k == "neurons" or k == "params" or k == "flops" then
      if type(v) ~= "number" or v ~= v or v < 0 then
        error(string.format("grow.select: %s must be a non-negative number, got %s", k, tostring(v)), 3)
      end
    else
      error("grow.select: unknown budget field '" .. tostring(k) .. "' (neurons, params, flops, per_unit, pool)", 3)
    end
  end
  return eta
end

-- The order candidates are considered in. The paper: by |s|; the released
-- code: the most negative gate gradient first; complexity-aware: by |s| per
-- unit of cost before anything is selected.
local function ranked(self, list, budget, official)
  local metric = budget.flops and "flops" or budget.params and "params" or nil
  if metric then
    local n0, l0, d0 = {}, {}, {}
    for k = 1, #self.og.units do n0[k], l0[k], d0[k] = 0, 0, 0 end
    for _, c in ipairs(list) do
      c.rank = math.abs(c.score) / math.max(marginal(self, c, n0, l0, metric == "flops", d0), 1e-30)
    end
    table.sort(list, function(a, b) return a.rank > b.rank end)
  elseif official then
    table.sort(list, function(a, b) return a.effect < b.effect end)
  else
    table.sort(list, function(a, b) return math.abs(a.score) > math.abs(b.score) end)
  end
  return list
end

-- Keep the candidates the budget allows, greedily in ranked order (one pool,
-- or one per unit with pool = "unit": each unit gets the whole budget).
-- The paper sets ε̂ = −ε·sign(s); the released code ("official" selection)
-- keeps the trained steps ε̃. Either way the prediction is Σ ε̂_i s_i.
-- New layers obey the two-level budget: at most max_new_layers layers get
-- a neuron (a layer counts once one of its neurons is kept).
function P:select(eta)
  local budget = check_budget(eta)
  local official = self.nb.selection == "official"
  self.cost_layers, self.cost_bns = weight_layers(self)
  local fixed = official or self.fixed_steps
  local list = self.order and self:order(self:candidates(), budget) or ranked(self, self:candidates(), budget, official)
  local nunits = #self.og.units
  local eps = self.nb.eps or 1e-2
  local max_layers = (type(self.nb.layers) == "table" and self.nb.layers.max_new_layers) or math.huge
  local per_pool = budget.pool == "unit"
  local function cap_of(k)
    local cap = budget.per_unit
    if type(cap) == "table" then cap = cap[self.og.units[k].unit.name] end
    return cap or math.huge
  end
  local n, l, d, kept = {}, {}, {}, {}
  for k = 1, nunits do n[k], l[k], d[k], kept[k] = 0, 0, 0, 0 end
  local spent = { neurons = {}, params = {}, flops = {} }
  local function pool(k) return per_pool and k or 0 end
  local opened, n_opened = {}, 0
  self.selected, self.predicted = {}, 0
  local total_params, total_flops = 0, 0
  for _, c in ipairs(list) do
    local k, p = c.unit, pool(c.unit)
    local dn = neurons_of(self, c, n, d)
    local ok = kept[k] < cap_of(k) and (spent.neurons[p] or 0) + dn <= (budget.neurons or math.huge)
    local dp, df = 0, 0
    if ok and budget.params then
      dp = marginal(self, c, n, l, false, d)
      ok = (spent.params[p] or 0) + dp <= budget.params
    end
    if ok and budget.flops then
      df = marginal(self, c, n, l, true, d)
      ok = (spent.flops[p] or 0) + df <= budget.flops
    end
    if ok and c.kind == "layer" and not opened[k] then
      ok = n_opened < max_layers
      if ok then opened[k], n_opened = true, n_opened + 1 end
    end
    if ok then
      c.trained = fixed
      c.eps_hat = fixed and c.step or (c.score > 0 and -eps or eps)
      self.predicted = self.predicted + (self.predict and self:predict(c) or c.eps_hat * c.score)
      self.selected[#self.selected + 1] = c
      spent.neurons[p] = (spent.neurons[p] or 0) + dn
      spent.params[p] = (spent.params[p] or 0) + dp
      spent.flops[p] = (spent.flops[p] or 0) + df
      total_params, total_flops = total_params + dp, total_flops + df
      kept[k] = kept[k] + 1
      if c.kind == "layer" then l[k] = l[k] + 1 elseif c.kind == "deeper" then d[k] = d[k] + 1 else n[k] = n[k] + 1 end
    end
  end
  self.cost = budget.params and total_params or nil
  self.flops = budget.flops and total_flops or nil
  self.budget = budget
  return self
end

---------------------------------------------------------------- apply

-- How each grown module's weight rows (dim 1) and columns (dim 2) map to
-- those it had at proposal time, composed over the edits of this apply:
-- maps[module][dim] = {src = {...}, scale = {...}}. A later unit's
-- candidates were built against the old shapes and are brought up to date
-- through them (new inputs read with zero weights, split inputs with half).
local function track(maps, modules, entries)
  for _, m in ipairs(modules) do
    for _, e in ipairs(entries) do
      if m.weight == e.new then
        maps[m] = maps[m] or {}
        for d, src in pairs(e.index or {}) do
          local prev, scale = maps[m][d], e.scale and e.scale[d]
          local out = { src = {}, scale = {} }
          for j, s in ipairs(src) do
            out.src[j] = s > 0 and (prev and prev.src[s] or s) or 0
            out.scale[j] = s > 0 and (scale and scale[j] or 1) * (prev and prev.scale[s] or 1) or 1
          end
          maps[m][d] = out
        end
      end
    end
  end
end

-- t (built against module m's old dim-`dim` size) brought up to date.
local function updated(maps, m, dim, t, tdim)
  local map = maps[m] and maps[m][dim]
  if not map then return t end
  return edit.gather(t, tdim or dim, map.src, map.scale)
end

-- A column map read off a row map: each source neuron's copies share its
-- weight (a split parent's two children read half each).
local function columns_of(rows)
  local count = {}
  for _, s in ipairs(rows) do if s > 0 then count[s] = (count[s] or 0) + 1 end end
  local scale = {}
  for j, s in ipairs(rows) do scale[j] = s > 0 and 1 / count[s] or 1 end
  return rows, scale
end

-- Insert the selected neurons of a candidate layer as a Residual block at
-- its place: x + W2 act(W1 x + b1) (conv units: conv 3x3, an identity
-- batch norm when the unit has one, act, conv 3x3), W2's neuron blocks
-- scaled by the steps. The block reads the unit's neurons as they are after
-- this step's edits: split children half each, new neurons nothing; it
-- writes the same to both children and nothing to new neurons. Returns
-- remap entries for the new parameters (no old state).
local nn_mod
function insert_layer(cand, sel, maps)
  nn_mod = nn_mod or require("firefly.nn")
  local unit, L = cand.unit, cand.layer
  local width = unit.producer.weight:size(1)
  local idx, steps = {}, {}
  for j, c in ipairs(sel) do idx[j] = c.index; steps[j] = c.eps_hat end
  local k = #idx
  local rows = maps[unit.producer] and maps[unit.producer][1]
  local w1 = L.u:detach():index_select(1, ff.tensor(idx))
  local b1 = L.b:detach():index_select(1, ff.tensor(idx))
  local w2 = L.o:detach():index_select(2, ff.tensor(idx))
  w2 = w2 * ff.tensor(steps):view(L.conv and { 1, k, 1, 1 } or { 1, k })
  if rows then
    local src, scale = columns_of(rows.src)
    w1 = edit.gather(w1, 2, src, scale)
    w2 = edit.gather(w2, 1, src)
  end
  local layers
  if L.conv then
    local first = nn_mod.Conv2d(width, k, 3, { padding = 1 })
    local second = nn_mod.Conv2d(k, width, 3, { padding = 1 })
    layers = { first, second }
    local act = nn_mod.activation(L.act.act, L.act.param)
    local seq = L.bn and { first, nn_mod.BatchNorm2d(k), act, second } or { first, act, second }
    L.block = nn_mod.Residual(nn_mod.Sequential(seq))
  else
    local first, second = nn_mod.Linear(width, k), nn_mod.Linear(k, width)
    layers = { first, second }
    L.block = nn_mod.Residual(nn_mod.Sequential { first, nn_mod.activation(L.act.act, L.act.param), second })
  end
  ff.no_grad(function()
    layers[1].weight:copy_(w1); layers[1].bias:copy_(b1)
    layers[2].weight:copy_(w2); layers[2].bias:zero_()
  end)
  -- its place: before between[at], or before the consumer
  local anchor = unit.between[L.at] or unit.consumer
  local pos
  for i, ch in ipairs(unit.parent._children) do if ch[2] == anchor then pos = i end end
  unit.parent:insert(pos, L.block)
  local entries = {}
  for _, p in ipairs(L.block:parameters()) do entries[#entries + 1] = { new = p } end
  return entries
end

-- Materialise the selection, unit by unit in network order. With an
-- optimiser, its state follows every edit (opt:remap after each one: a
-- layer can be edited twice, as one unit's consumer and the next one's
-- producer). Returns the network, the list of remap maps in the order they
-- apply, and a report.
function P:apply(opt)
  if not self.selected then error("grow.apply: select() first", 2) end
  if self.applied then error("grow.apply: this proposal was applied already; propose again", 2) end
  self.applied = true
  if self.materialise then return self:materialise(opt) end
  local t0 = ff.clock()
  local params_before = self.net:num_params()
  local maps, track_maps = {}, {}
  local modules = {}
  for _, cand in ipairs(self.og.units) do
    modules[#modules + 1] = cand.unit.producer
    modules[#modules + 1] = cand.unit.consumer
  end
  local function done(map)
    maps[#maps + 1] = map
    track(track_maps, modules, map)
    if opt then opt:remap(map) end
  end
  local by_unit = {}
  for _, c in ipairs(self.selected) do
    by_unit[c.unit] = by_unit[c.unit] or { split = {}, new = {}, layer = {}, deeper = {} }
    table.insert(by_unit[c.unit][c.kind], c)
  end
  -- the official quirk: new neurons of the last conv unit (the one whose
  -- consumer is a Linear) start with zero outgoing weights
  local quirk = self.nb.last_conv_zero_out
  for k, cand in ipairs(self.og.units) do
    local sel = by_unit[k]
    if sel then
      local unit = cand.unit
      local P0 = unit.producer
      if #sel.split > 0 then
        local idx, rows = {}, {}
        for j, c in ipairs(sel.split) do
          idx[j] = c.index
          local v = cand.split.v[c.index]
          -- the trained v itself (official), or its direction times ε̂ (paper)
          rows[j] = (c.trained and v or v / math.max(v:norm():item(), 1e-12) * c.eps_hat):detach()
        end
        local map = edit.split(unit, idx, updated(track_maps, P0, 2, ff.stack(rows)))
        if self.after_split then self:after_split(cand, map) end
        done(map)
      end
      if #sel.new > 0 then
        local idx, e_hat = {}, {}
        for j, c in ipairs(sel.new) do idx[j] = c.index; e_hat[j] = c.eps_hat end
        local n = cand.new
        local kk = #idx
        local u = updated(track_maps, P0, 2, n.u:detach():index_select(1, ff.tensor(idx)))
        local b = n.b:detach():index_select(1, ff.tensor(idx))
        -- outgoing weights of the selected neurons, times their steps, in
        -- the consumer's layout (k blocks of `spatial` columns, or k input
        -- channels), with rows the consumer gained this step
        local o = n.o:detach()
        local out_rows = o:size(1)
        o = o:view(out_rows, n.e:size(1), -1):index_select(2, ff.tensor(idx)) * ff.tensor(e_hat):view(1, kk, 1)
        local oshape = n.o:size()
        oshape[2] = oshape[2] // n.e:size(1) * kk
        o = updated(track_maps, unit.consumer, 1, o:reshape(oshape))
        if quirk and unit.kind == "Conv2d" and getmetatable(unit.consumer).__name == "Linear" then o = o * 0 end
        done(edit.add(unit, u, b, o))
      end
      if #sel.layer > 0 then done(insert_layer(cand, sel.layer, track_maps)) end
      -- an identity layer at the unit's width after its edits (Net2Net)
      if #sel.deeper > 0 then done(self:insert_deeper(cand)) end
    end
  end
  local was_training = self.net.training
  self.net:eval()
  local loss_after = mean_loss(self.net, self.batches, self.lf)
  self.net:train(was_training)
  local us = units_mod.units(self.net)
  local report = setmetatable({
    predicted = self.predicted, measured = loss_after - self.loss_before,
    loss_before = self.loss_before, loss_after = loss_after,
    params_before = params_before, params_after = self.net:num_params(),
    neurons_before = self.neurons_before, neurons_after = neuron_count(us),
    widths_before = self.widths_before, widths_after = widths(us),
    selected = #self.selected, cost = self.cost, flops = self.flops,
    seconds = self.seconds + (ff.clock() - t0), propose_seconds = self.seconds,
    apply_seconds = ff.clock() - t0,
  }, { __tostring = function(r)
    return string.format("grew %d candidates: widths %s -> %s, neurons %d -> %d, params %d -> %d\n"
      .. "  dL predicted %.4g, measured %.4g (loss %.4f -> %.4f on the scoring batches); %.2f s",
      r.selected, r.widths_before, r.widths_after, r.neurons_before, r.neurons_after, r.params_before,
      r.params_after, r.predicted, r.measured, r.loss_before, r.loss_after, r.seconds)
  end })
  return self.net, maps, report
end

---------------------------------------------------------------- printing

local function fmt_score(s) return string.format("%10.3g", s) end

-- The proposal as a table: one line per unit and kind of candidate, with
-- the range of scores and, once selected, how many were kept.
function P:__tostring()
  local kept = {}
  for _, c in ipairs(self.selected or {}) do
    local key = c.unit .. c.kind
    kept[key] = (kept[key] or 0) + 1
  end
  local lines = {
    self.method == "firefly"
      and string.format("Firefly proposal: %d units, rule %s, %.2f s", #self.scores, self.nb.rule or "endpoint",
        self.seconds or 0)
      or string.format("%s proposal: %d units, %.2f s", self.method, #self.scores, self.seconds or 0),
    string.format("  %-10s %-7s %6s  %-6s %6s %10s %10s %10s%s", "unit", "layer", "width", "kind", "count",
      "min s", "max s", "max |s|", self.selected and "   kept" or ""),
  }
  for k, entry in ipairs(self.scores) do
    local u = self.og.units[k].unit
    for _, kind in ipairs { "split", "new", "layer", "deeper" } do
      local s = entry[kind]
      if s then
        lines[#lines + 1] = string.format("  %-10s %-7s %6d  %-6s %6d %s %s %s%s", u.name, u.kind,
          units_mod.width(u), kind, s:numel(), fmt_score(s:min():item()), fmt_score(s:max():item()),
          fmt_score(s:abs():max():item()), self.selected and string.format(" %6d", kept[k .. kind] or 0) or "")
      end
    end
  end
  if self.selected then
    local extra = ""
    if self.cost then extra = extra .. string.format(", cost %d params", self.cost) end
    if self.flops then extra = extra .. string.format(", %d flops", self.flops) end
    lines[#lines + 1] = string.format("  selected %d, predicted dL %.4g%s", #self.selected, self.predicted, extra)
  end
  return table.concat(lines, "\n")
end

-- The best n candidates (by |s|) as printable lines.
function P:top(n)
  local list = self:candidates()
  table.sort(list, function(a, b) return math.abs(a.score) > math.abs(b.score) end)
  local lines = { string.format("  %-10s %-6s %6s %12s %12s", "unit", "kind", "index", "score", "step") }
  for i = 1, math.min(n or 10, #list) do
    local c = list[i]
    lines[#lines + 1] = string.format("  %-10s %-6s %6d %12.4g %12.4g", self.og.units[c.unit].unit.name, c.kind,
      c.index, c.score, c.step)
  end
  return table.concat(lines, "\n")
end

return P
