-- firefly.grow.select: which candidates a growth step keeps, under the
-- budget η_t (budget.lua), for every method alike.
--
-- The cost model charges each candidate exactly what apply will add
-- (parameters, or multiply-adds per example); the paper's selection keeps
-- the largest |s_i| with ε̂_i = −ε·sign(s_i) (ε per unit), the released
-- code's the most negative gate gradients with their trained steps;
-- complexity-aware ranking (params or flops budgets) ranks by |s| per unit
-- of cost. Either way the prediction is Σ ε̂_i s_i.
local ff = require "firefly"
local units_mod = require "firefly.grow.units"
local budget_mod = require "firefly.grow.budget"
local batches_mod = require "firefly.grow.batches"

local S = {}

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
        -- per-neuron parameters: a batch norm's γ and β (2), a depthwise
        -- conv's kernel and bias (kh·kw + 1); FLOPs: the kernel at every
        -- output position of the depthwise conv, nothing for batch norm
        local per = m.weight:numel() // m.weight:size(1)
        bns[#bns + 1] = { k, per + (m.bias and 1 or 0),
          m.per_neuron == "depthwise" and per * (self.positions[m] or 1) or 0 }
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
  for _, b in ipairs(self.cost_bns) do cost = cost + n[b[1]] * (flops and b[3] or b[2]) end
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
function S.record_positions(self)
  -- the first batch only (a whole loader would be read to its end)
  local x = batches_mod.first(self.batches)
  local og = self.og
  og.record = {}
  ff.no_grad(function() og:forward(x:narrow(1, 1, 1)) end)
  local positions = og.record
  og.record = nil
  return positions
end

---------------------------------------------------------------- selection

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
function S.select(self, eta)
  local budget = budget_mod.resolve(eta, self.phase, self.net, "grow.select")
  local official = self.nb.selection == "official"
  self.cost_layers, self.cost_bns = weight_layers(self)
  local fixed = official or self.fixed_steps
  local list = self.order and self:order(self:candidates(), budget) or ranked(self, self:candidates(), budget, official)
  local nunits = #self.og.units
  local max_layers = self.max_new_layers or math.huge
  local per_pool = budget.pool == "unit"
  -- a unit's cap: the budget's per_unit and the neighbourhood's cap
  local function cap_of(k)
    local cap = budget.per_unit
    if type(cap) == "table" then cap = cap[self.og.units[k].unit.name] end
    return math.min(cap or math.huge, self.settings[k].cap or math.huge)
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
      local eps = self.settings[k].eps
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

return S
