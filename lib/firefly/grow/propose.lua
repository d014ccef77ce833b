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
local batches_mod = require "firefly.grow.batches"
local apply_mod = require "firefly.grow.apply"
local options = require "firefly.options"

local each_batch, mean_loss, loss_of = batches_mod.each_batch, batches_mod.mean_loss, batches_mod.loss_of
local widths, neuron_count = units_mod.widths, units_mod.neuron_count

local P = {}
P.__index = P

local record_positions -- defined below

-- The score rule when a neighbourhood names none: the paper's average
-- gradient along each candidate's path, by the midpoint rule on 2 points
-- (exact for a loss quadratic in the step, as a split's is to second
-- order; the endpoint rule overstates splits 2x). The "paper" preset
-- reads these; "official" keeps the released code's endpoint rule.
P.DEFAULT_RULE, P.DEFAULT_POINTS = "midpoint", 2

local function bad(key, want, v)
  error(string.format("grow.propose: neighbourhood %s must be %s, got %s", key, want,
    type(v) == "string" and string.format("%q", v) or tostring(v)), 0)
end

local function check_choice(nb, key, choices)
  local v = nb[key]
  if v == nil then return end
  for _, c in ipairs(choices) do if v == c then return end end
  error(string.format("grow.propose: %s must be one of %s, got %s", key, table.concat(choices, ", "),
    tostring(v)), 0)
end

local function is_count(v)
  return type(v) == "number" and v == v and v >= 0 and v < 2 ^ 53 and v == math.floor(v)
end

-- A count of candidates: a whole number >= 0, or a table {candidates = n,
-- ...} with the given extra fields.
local function check_count(nb, key, extra)
  local v = nb[key]
  if v == nil then return 0 end
  if type(v) == "table" then
    local known = { candidates = true }
    for _, k in ipairs(extra or {}) do known[k] = true end
    options.check("grow.propose: neighbourhood " .. key, v, known, "field")
    for k, x in pairs(v) do
      if not is_count(x) then bad(key .. "." .. k, "a whole number >= 0", x) end
    end
    return v.candidates or 0
  end
  if not is_count(v) then
    bad(key, "a whole number >= 0 (candidates per unit)" .. (extra and " or a table {candidates =, ...}" or ""), v)
  end
  return v
end

local function check_number(nb, key, ok, want)
  local v = nb[key]
  if v == nil then return end
  if type(v) ~= "number" or v ~= v or v == math.huge or v == -math.huge or not ok(v) then bad(key, want, v) end
end

local function check_type(nb, key, t, want)
  local v = nb[key]
  if v ~= nil and type(v) ~= t then bad(key, want, v) end
end

local NB_OPTIONS = { "split", "new", "eps", "where", "steps", "lr", "rule", "points", "loss", "generator",
  "optimizer", "project", "penalty", "selection", "layers", "init", "last_conv_zero_out", "quiet", "method",
  -- read by grow.run
  "batches", "eta", "reset_optim" }

-- Every field of a neighbourhood, by name, type and range, before anything
-- is built: a bad value is an error naming it, never a default or a NaN
-- that surfaces later in the weights.
local function check_nb(nb, method)
  local known = {}
  for _, k in ipairs(NB_OPTIONS) do known[k] = true end
  for k in pairs(method and method.options or {}) do known[k] = true end
  for k in pairs(nb) do
    if not known[k] then
      error(string.format("grow.propose: unknown neighbourhood option '%s'%s%s", tostring(k),
        nb.method and " for method " .. tostring(nb.method) or "", options.hint(tostring(k), known)), 0)
    end
  end
  check_choice(nb, "rule", { "endpoint", "midpoint", "exact" })
  check_choice(nb, "optimizer", { "adam", "rmsprop" })
  check_choice(nb, "selection", { "paper", "official" })
  check_choice(nb, "init", { "paper", "official" })
  check_type(nb, "split", "boolean", "true or false")
  for _, k in ipairs { "project", "last_conv_zero_out", "quiet" } do check_type(nb, k, "boolean", "true or false") end
  check_type(nb, "loss", "function", "a function(output, target) -> loss")
  check_count(nb, "new")
  check_count(nb, "layers", { "max_new_layers" })
  check_number(nb, "eps", function(v) return v > 0 end, "a number > 0 (the largest step |ε_i|)")
  check_number(nb, "lr", function(v) return v > 0 end, "a number > 0")
  check_number(nb, "penalty", function(v) return v >= 0 end, "a number >= 0")
  check_number(nb, "steps", function(v) return v >= 0 and v == math.floor(v) end, "a whole number >= 0 (passes of step 1)")
  check_number(nb, "points", function(v) return v >= 1 and v == math.floor(v) end, "a whole number >= 1")
  if nb.generator ~= nil and (type(nb.generator) ~= "userdata" or not pcall(nb.generator.get_state, nb.generator)) then
    bad("generator", "an ff.Generator", nb.generator)
  end
  if nb.where ~= nil then
    if type(nb.where) ~= "table" then bad("where", "a list of unit names", nb.where) end
    for i, w in ipairs(nb.where) do
      if type(w) ~= "string" then bad("where[" .. i .. "]", "a unit name (a string)", w) end
    end
  end
end

-- Bytes the over-grown network of a neighbourhood needs, roughly: every
-- candidate tensor with its gradient and two Adam moments, and the
-- activations of one batch of new neurons and layers (at most the input's
-- H·W positions). An estimate to refuse the impossible before allocating,
-- not a budget.
local function estimate_bytes(units, nb, x)
  local new = check_count(nb, "new")
  local layers = check_count(nb, "layers", { "max_new_layers" })
  local batch = x:size(1)
  local positions = x:dim() == 4 and x:size(3) * x:size(4) or 1
  local floats = 0
  for _, u in ipairs(units) do
    local w = u.producer.weight
    local row = w:numel() / w:size(1)
    local out = u.consumer.weight:size(1) * u.spatial * (u.consumer.weight:numel() / (u.consumer.weight:size(1) * u.consumer.weight:size(2)))
    if nb.split ~= false then floats = floats + 4 * w:numel() end
    floats = floats + 4 * new * (row + out) + 3 * batch * new * positions
    local width = w:size(1)
    floats = floats + 4 * layers * 2 * width * (u.kind == "Conv2d" and 9 or 1) + 3 * batch * layers * positions
  end
  return 4 * floats
end

local function check_memory(units, nb, batches)
  if (nb.method or "firefly") ~= "firefly" then return end
  local x = batches_mod.first(batches)
  local need = estimate_bytes(units, nb, x)
  local total = ff.system_memory()
  if total > 0 and need > 0.8 * total then
    error(string.format("grow.propose: this neighbourhood (new = %s, layers = %s) needs about %.1f GiB for its "
      .. "candidates, more than this machine's %.1f GiB allows: fewer candidates per unit, or fewer units (where)",
      tostring(type(nb.new) == "table" and nb.new.candidates or nb.new or 0),
      tostring(type(nb.layers) == "table" and nb.layers.candidates or nb.layers or 0),
      need / 2 ^ 30, total / 2 ^ 30), 0)
  end
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
    local b = 0
    each_batch(batches, function(x, y)
      b = b + 1
      opt:zero_grad()
      local loss = lf(og(x), y)
      if nb.penalty and nb.penalty > 0 then loss = loss + penalty(og, nb.penalty) end
      local l = loss:item()
      if l ~= l or l == math.huge or l == -math.huge then
        error(string.format("grow.propose: step 1 (pass %d, batch %d): the over-grown network's loss is %s "
          .. "(lower lr or eps); the network is unchanged", pass, b, tostring(l)), 0)
      end
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
  if (nb.rule or P.DEFAULT_RULE) == "midpoint" then
    alphas = {}
    local g = nb.points or P.DEFAULT_POINTS
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

-- Firefly descent itself: the over-grown network, step 1, step 2.
local function firefly(ctx)
  local nb = ctx.nb
  local new = type(nb.new) == "table" and nb.new.candidates or nb.new or 0
  local layers = type(nb.layers) == "table" and nb.layers.candidates or nb.layers or 0
  local og = overgrown.build(ctx.net, ctx.units, { split = nb.split ~= false, new = new, layers = layers,
    eps = nb.eps, generator = nb.generator, init = nb.init })
  step1(og, nb, ctx.batches, ctx.lf)
  local scores = step2(og, nb, ctx.batches, ctx.lf)
  for k, entry in ipairs(scores) do
    for kind, sc in pairs(entry) do
      if not batches_mod.finite(sc) then
        error(string.format("grow.propose: step 2 gave non-finite %s scores on unit %s (lower lr or eps); "
          .. "the network is unchanged", kind, og.units[k].unit.name), 0)
      end
    end
  end
  return { og = og, scores = scores }
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
  if type(net) ~= "table" or type(net.parameters) ~= "function" then
    error("grow.propose: argument #1 must be a network (an nn module), got " .. type(net), 2)
  end
  nb = nb or {}
  if type(nb) ~= "table" then
    error("grow.propose: argument #2 (the neighbourhood) must be a table of options, got " .. type(nb), 2)
  end
  batches_mod.check_arg("grow.propose", batches)
  local method = method_of(nb)
  check_nb(nb, method)
  local t0 = ff.clock()
  local lf = loss_of(nb)
  local us = units_mod.units(net, nb.where)
  if #us == 0 then error("grow.propose: the network has no growable units", 2) end
  check_memory(us, nb, batches)
  local was_training = net.training
  net:eval()
  -- freeze the network's weights: step 1 moves only the perturbations
  -- (each parameter gets its own flag back: some are frozen on purpose)
  local frozen = {}
  for _, p in ipairs(net:parameters()) do frozen[#frozen + 1] = { p, p:requires_grad() }; p:requires_grad(false) end
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
  for _, f in ipairs(frozen) do f[1]:requires_grad(f[2]) end
  net:train(was_training)
  if not ok then error(err, 0) end
  return err
end

-- Every candidate as {unit = k, kind = "split" | "new" | "layer" | "deeper", index = i,
-- score = s, step = ε̃ (signed for gated neurons, |v_i| for splits),
-- dir = sign(ε̃) (+1 for splits), effect = s·|ε̃| (the gate gradient: the
-- first-order effect of keeping the candidate at its trained step)}.
--
-- The sign convention, in one place: a score is the derivative of the loss
-- along the candidate's trained step, dir·v (v = the raw perturbation: a
-- split's row, a new neuron's φ(xu + c)·o), because step 2 divides the
-- gate gradient by |ε̃|. So the step selection chooses, ε̂, is a step along
-- dir·v, and apply must materialise ε̂·dir·v. Dropping dir would add every
-- neuron trained to a negative ε̃ in the direction that raises the loss.
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
            dir = steps[i] < 0 and -1 or 1, effect = s * math.abs(steps[i]) }
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
    -- a split is symmetric (θ ± ε̂δ are the same two children whatever
    -- the sign of ε̂), so one whose score is not negative cannot lower the
    -- loss: ε̂ = −ε·sign(s) would predict a fall that the split reverses
    if ok and not fixed and c.kind == "split" and not (c.score < 0) then ok = false end
    if ok and c.kind == "layer" and not opened[k] then
      ok = n_opened < max_layers
      if ok then opened[k], n_opened = true, n_opened + 1 end
    end
    if ok then
      c.trained = fixed
      -- ε̂ is a step along the candidate's trained direction dir·v: its
      -- own length (official), or ε against the score's sign (paper)
      c.eps_hat = fixed and math.abs(c.step) or (c.score > 0 and -eps or eps)
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

P.apply = apply_mod.apply

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
      and string.format("Firefly proposal: %d units, rule %s, %.2f s", #self.scores, self.nb.rule or P.DEFAULT_RULE,
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
