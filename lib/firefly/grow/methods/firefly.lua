-- method = "firefly": Firefly neural architecture descent itself, one
-- growth step's steps 1 and 2 (the paper's Algorithm 1; the selection and
-- apply that follow are every method's, in select.lua and apply.lua).
--
-- Step 1 optimises the perturbations (ε, δ) of every candidate of the
-- over-grown network (overgrown.lua) with the network's weights frozen and
-- batch norm in evaluation mode, projecting after each step onto |ε_i| <= ε
-- and ||δ_i|| <= 1 (ε per unit: the neighbourhood may set it per unit).
-- Step 2 scores each candidate by the average gradient of the loss along
-- its own step through the gates: the midpoint rule (g points on the
-- diagonal path; the default), the endpoint rule (α = 1, the released
-- code's), or the exact rule (each candidate's own path, one forward each).
local ff = require "firefly"
local core = require "firefly.core"
local overgrown = require "firefly.grow.overgrown"
local batches_mod = require "firefly.grow.batches"
local dist = require "firefly.dist" -- several ranks: spec/dist.md, "Growth"

local each_batch = batches_mod.each_batch

local M = { name = "firefly", options = {} }

-- The score rule when a neighbourhood names none: the paper's average
-- gradient along each candidate's path, by the midpoint rule on 2 points
-- (exact for a loss quadratic in the step, as a split's is to second
-- order; the endpoint rule overstates splits 2x). The "paper" preset
-- reads these; "official" keeps the released code's endpoint rule.
M.DEFAULT_RULE, M.DEFAULT_POINTS = "midpoint", 2

-- Gated neurons (new neurons, a candidate layer's) onto |e| <= ε and
-- ||(u, c, o)|| <= 1 per neuron; o holds neuron j's outgoing weights in its
-- dim-2 block j. This composition is the reference (M.composed_projection);
-- step 1 runs the engine's one-call version of it (the same bits,
-- engine/core/grow_project.c), ~15 tensor ops per group fewer per batch.
local function project_neurons(n, eps)
  local k = n.e:size(1)
  n.e:clamp_(-eps, eps)
  local u, o = n.u:view(k, -1), n.o:view(n.o:size(1), k, -1)
  local norm = (u:pow(2):sum(2) + n.b:pow(2) + o:pow(2):sum(3):sum(1)):sqrt():clamp(1, nil)
  u:div_(norm:unsqueeze(2))
  n.b:div_(norm)
  o:div_(norm:view(1, k, 1))
end

local function project_rows(v, eps)
  local rows = v:view(v:size(1), -1)
  rows:mul_((rows:norm(2, 2, true):clamp(eps, nil)):pow(-1) * eps)
end

local function fused_neurons(n, eps) core._grow_project_neurons(n.e, n.u, n.b, n.o, eps) end

-- Projection onto the constraints: rows of v (= εδ) to norm <= ε, gated
-- neurons as above, with each unit's own ε.
local function project(og)
  local rows, neurons = core._grow_project_rows, fused_neurons
  if M.composed_projection then rows, neurons = project_rows, project_neurons end
  ff.no_grad(function()
    for _, c in ipairs(og.units) do
      local eps = c.eps
      if c.split then rows(c.split.v, eps) end
      if c.new then neurons(c.new, eps) end
      if c.layer then neurons(c.layer, eps) end
    end
  end)
end
M.project = project

-- The released code's penalty: λ(‖v‖² + 10⁻²‖new neurons' weights‖²).
-- Squares as t * t, not t:pow(2): powf per element in forward and again
-- in backward was a third of the official preset's step 1; the gradient
-- is the same bits (g·2t against 2(g·t): doubling is exact), only the
-- loss's printed value may differ in its last bit.
local function sq(t) return (t * t):sum() end

local function penalty(og, lambda)
  local total
  for _, c in ipairs(og.units) do
    local terms = {}
    if c.split then terms[#terms + 1] = sq(c.split.v) end
    for _, kind in ipairs { "new", "layer" } do
      local n = c[kind]
      if n then terms[#terms + 1] = (sq(n.u) + sq(n.o)) * 1e-2 end
    end
    for _, t in ipairs(terms) do total = total and total + t or t end
  end
  return total * lambda
end

local function step1_passes(og, nb, batches, lf, steps)
  local params = og:perturbations()
  local opt = nb.optimizer == "rmsprop"
      and ff.optim.RMSprop(params, { lr = nb.lr or 1e-3, alpha = 0.9, momentum = 0.1 })
      or ff.optim.Adam(params, { lr = nb.lr or 1e-3 })
  for pass = 1, steps do
    local b = 0
    each_batch(batches, function(x, y)
      b = b + 1
      opt:zero_grad()
      -- dist: deterministic mode, the batch's gradient part by part in part order
      local function part_loss(xp, yp)
        local lp = lf(og(xp), yp)
        if nb.penalty and nb.penalty > 0 then lp = lp + penalty(og, nb.penalty) end
        return lp
      end
      local loss = not dist.deterministic() and part_loss(x, y)
      local l = loss and loss:item() or dist.part_backward(params, x, y, part_loss)
      if l ~= l or l == math.huge or l == -math.huge then
        error(string.format("grow.propose: step 1 (pass %d, batch %d): the over-grown network's loss is %s "
          .. "(lower lr or eps); the network is unchanged", pass, b, tostring(l)), 0)
      end
      if loss then
        loss:backward()
        dist.mean_grads(params, x:size(1)) -- dist: the gradient over every rank's rows
      end
      opt:step()
      if nb.project ~= false then project(og) end
    end, string.format("grow step 1 (%d/%d)", pass, steps), nb.quiet)
  end
end

-- Step 1 reads only the perturbations' gradients: the gates stop requiring
-- one while it runs, so backward skips their sums (split_act's gain, the
-- new neurons' products); every other gradient is the same bits.
-- (M.step1_gate_grads: the gates keep theirs, for measuring.)
local function step1(og, nb, batches, lf)
  local steps = nb.steps or 1
  if steps <= 0 then return end
  local gates = M.step1_gate_grads and {} or og:gates()
  for _, gt in ipairs(gates) do gt:requires_grad(false) end
  local ok, err = pcall(step1_passes, og, nb, batches, lf, steps)
  for _, gt in ipairs(gates) do gt:requires_grad(true) end
  if not ok then error(err, 0) end
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
  if (nb.rule or M.DEFAULT_RULE) == "midpoint" then
    alphas = {}
    local g = nb.points or M.DEFAULT_POINTS
    for k = 1, g do alphas[k] = (2 * k - 1) / (2 * g) end
  end
  local gates = og:gates()
  local sums = {}
  for i, gt in ipairs(gates) do sums[i] = ff.zeros(gt:size()); gt.grad = nil end
  local count = 0
  -- only the gates' gradients are read: the perturbations stop requiring
  -- one, so backward skips their products (a third of step 2's GEMMs; the
  -- gates' gradients are the same bits)
  local held = og:perturbations()
  for _, t in ipairs(held) do t:requires_grad(false) end
  -- (several points: the perturbations' own products are computed once per batch)
  if og.memo then og.memo.fixed = #alphas > 1 end
  local ok, err = pcall(function()
  for _, a in ipairs(alphas) do
    og.alpha = a
    each_batch(batches, function(x, y)
      if dist.deterministic() then -- dist: part by part, in part order
        dist.part_backward(gates, x, y, function(xp, yp) return lf(og(xp), yp) end)
      else
        lf(og(x), y):backward()
      end
      ff.no_grad(function()
        for i, gt in ipairs(gates) do sums[i]:add_(gt.grad); gt.grad = nil end
      end)
      count = count + 1
    end, "grow step 2 (alpha " .. a .. ")", nb.quiet)
  end
  end)
  for _, t in ipairs(held) do t:requires_grad(true) end
  og.alpha = 1
  if og.memo then og.memo.fixed = false end
  if not ok then error(err, 0) end
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
  -- dist: sums over every rank's rows (deterministic mode: already global)
  if not (dist.deterministic() and nb.rule ~= "exact") then dist.allreduce_list(sums, "mean") end
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

-- build(ctx): the over-grown network of ctx.settings (one table per unit:
-- split, new, layers, eps, init), step 1, step 2.
function M.build(ctx)
  local nb = ctx.nb
  -- every batch checked once here, not on each of the passes below
  local batches = batches_mod.checked(ctx.batches)
  local og = overgrown.build(ctx.net, ctx.units, { per_unit = ctx.settings, generator = nb.generator })
  dist.broadcast_list(og:perturbations()) -- dist: rank 0's random initialisation
  -- for this propose only (the perturbations move after it); a loader
  -- hands out new tensors every pass, so only a list of batches gains
  og.memo = not ctx.batches.iter and overgrown.new_memo() or nil
  local loss_before
  local ok, err = pcall(function()
    step1(og, nb, batches, ctx.lf)
    local sc = step2(og, nb, batches, ctx.lf)
    -- the loss before growth while the memo holds the first unit's products
    loss_before = batches_mod.mean_loss(function(x) return og:forward_bare(x) end, batches, ctx.lf)
    return sc
  end)
  local memo_bytes = og.memo and og.memo.bytes or 0
  og.memo = nil
  if not ok then error(err, 0) end
  local scores = err
  for k, entry in ipairs(scores) do
    for kind, sc in pairs(entry) do
      if not batches_mod.finite(sc) then
        error(string.format("grow.propose: step 2 gave non-finite %s scores on unit %s (lower lr or eps); "
          .. "the network is unchanged", kind, og.units[k].unit.name), 0)
      end
    end
  end
  return { og = og, scores = scores, loss_before = loss_before, memo_bytes = memo_bytes }
end

return M
