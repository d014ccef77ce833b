-- firefly.grow.apply: materialising a selection, all or nothing.
--
--   local net, maps, report = proposal:apply(opt [, {check = true, tolerance = 1e-4}])
--
-- The selected candidates become real neurons and layers, unit by unit in
-- network order, and the optimiser's state follows every edit (opt:remap).
-- Apply is a transaction (snapshot.lua): if anything fails on the way (an
-- edit, a non-finite new weight, a non-finite loss of the grown network on
-- the scoring batches, the preservation check), the network, the
-- optimiser, the random streams and the proposal are left as they were
-- and the error says what happened.
--
-- report.preserved measures function preservation, the property every
-- growth operator promises: the selection is first materialised with every
-- step set to zero (new neurons and layers write nothing, split children
-- equal their parent), the largest output difference from the old network
-- on one scoring batch is noted, and that trial is rolled back. It is 0 for
-- new neurons and layers and rounding for splits; anything larger is a bug
-- in an operator, which {check = true} turns into an error.
local ff = require "firefly"
local edit = require "firefly.grow.edit"
local units_mod = require "firefly.grow.units"
local batches_mod = require "firefly.grow.batches"
local snapshot = require "firefly.grow.snapshot"
local options = require "firefly.options"
local dist = require "firefly.dist"

local A = {}

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

-- The step a selected candidate is materialised with, along its raw
-- perturbation v: ε̂ along dir·v (see proposal:candidates), times the
-- trial's scale (0 in the preservation trial).
local function signed_step(c, scale)
  return c.eps_hat * c.dir * scale
end

-- Non-finite values in what is about to enter the network stop apply
-- before the edit (the transaction rolls back what came before).
local function check_finite(what, unit, t)
  if not batches_mod.finite(t) then
    error(string.format("grow.apply: the %s of unit %s are not finite", what, unit.name), 0)
  end
  return t
end

-- Insert the selected neurons of a candidate layer as a Residual block at
-- its place: x + W2 act(W1 x + b1) (conv units: conv 3x3, an identity
-- batch norm when the unit has one, act, conv 3x3), W2's neuron blocks
-- scaled by the steps. The block reads the unit's neurons as they are after
-- this step's edits: split children half each, new neurons nothing; it
-- writes the same to both children and nothing to new neurons. Returns
-- remap entries for the new parameters (no old state).
local function insert_layer(cand, sel, maps, scale)
  local nn = require("firefly.nn")
  local unit, L = cand.unit, cand.layer
  local width = unit.producer.weight:size(1)
  local idx, steps = {}, {}
  for j, c in ipairs(sel) do idx[j] = c.index; steps[j] = signed_step(c, scale) end
  local k = #idx
  local rows = maps[unit.producer] and maps[unit.producer][1]
  local w1 = L.u:detach():index_select(1, ff.tensor(idx))
  local b1 = L.b:detach():index_select(1, ff.tensor(idx))
  local w2 = L.o:detach():index_select(2, ff.tensor(idx))
  w2 = w2 * ff.tensor(steps):view(L.conv and { 1, k, 1, 1 } or { 1, k })
  if rows then
    local src, sc = columns_of(rows.src)
    w1 = edit.gather(w1, 2, src, sc)
    w2 = edit.gather(w2, 1, src)
  end
  check_finite("new layer's weights", unit, w1); check_finite("new layer's weights", unit, w2)
  check_finite("new layer's biases", unit, b1)
  -- zero-initialised: every weight is written below, and no draw from the
  -- default stream is spent on values that would be overwritten
  local layers
  local zeros = { init = "zeros" }
  if L.conv then
    local first = nn.Conv2d(width, k, 3, { padding = 1, init = "zeros" })
    local second = nn.Conv2d(k, width, 3, { padding = 1, init = "zeros" })
    layers = { first, second }
    local act = nn.activation(L.act.act, L.act.param)
    local seq = L.bn and { first, nn.BatchNorm2d(k), act, second } or { first, act, second }
    L.block = nn.Residual(nn.Sequential(seq))
  else
    local first, second = nn.Linear(width, k, zeros), nn.Linear(k, width, zeros)
    layers = { first, second }
    L.block = nn.Residual(nn.Sequential { first, nn.activation(L.act.act, L.act.param), second })
  end
  ff.no_grad(function()
    layers[1].weight:copy_(w1); layers[1].bias:copy_(b1)
    layers[2].weight:copy_(w2); layers[2].bias:zero_()
  end)
  -- its place: before between[at], or before the consumer
  local anchor = unit.between[L.at] or unit.consumer
  unit.parent:insert(unit.parent:index_of(anchor), L.block)
  local entries = {}
  for _, p in ipairs(L.block:parameters()) do entries[#entries + 1] = { new = p } end
  return entries
end

local function split_unit(self, cand, sel, track_maps, scale)
  local unit = cand.unit
  local idx, rows = {}, {}
  for j, c in ipairs(sel) do
    idx[j] = c.index
    local v = cand.split.v[c.index]:detach()
    -- the trained v itself (official), or its direction times ε̂ (paper)
    rows[j] = c.trained and v * scale or v / math.max(v:norm():item(), 1e-12) * signed_step(c, scale)
  end
  local delta = check_finite("split directions", unit, updated(track_maps, unit.producer, 2, ff.stack(rows)))
  local map = edit.split(unit, idx, delta)
  if self.after_split then self:after_split(cand, map) end
  return map
end

local function add_unit(self, cand, sel, track_maps, scale)
  local unit, n = cand.unit, cand.new
  local idx, e_hat = {}, {}
  for j, c in ipairs(sel) do idx[j] = c.index; e_hat[j] = signed_step(c, scale) end
  local kk = #idx
  local u = updated(track_maps, unit.producer, 2, n.u:detach():index_select(1, ff.tensor(idx)))
  local b = n.b:detach():index_select(1, ff.tensor(idx))
  -- outgoing weights of the selected neurons, times their steps, in the
  -- consumer's layout (k blocks of `spatial` columns, or k input channels),
  -- with rows the consumer gained this step
  local o = n.o:detach()
  local out_rows = o:size(1)
  o = o:view(out_rows, n.e:size(1), -1):index_select(2, ff.tensor(idx)) * ff.tensor(e_hat):view(1, kk, 1)
  local oshape = n.o:size()
  oshape[2] = oshape[2] // n.e:size(1) * kk
  o = updated(track_maps, unit.consumer, 1, o:reshape(oshape))
  -- the official quirk: new neurons of the last conv unit (the one whose
  -- consumer is a Linear) start with zero outgoing weights
  if self.nb.last_conv_zero_out and unit.conv and not units_mod.is_conv(unit.consumer) then
    o = o * 0
  end
  check_finite("new neurons' incoming weights", unit, u); check_finite("new neurons' biases", unit, b)
  check_finite("new neurons' outgoing weights", unit, o)
  return edit.add(unit, u, b, o)
end

-- Materialise the selection with every step times `scale`. With an
-- optimiser, its state follows every edit (opt:remap after each one: a
-- layer can be edited twice, as one unit's consumer and the next one's
-- producer). Returns the remap maps in the order they apply.
local function materialise(self, opt, scale)
  self.step_scale = scale
  -- each weight layer once: one unit's consumer is often the next one's
  -- producer, and tracking it twice would compose its map with itself
  -- (split children's columns read a quarter instead of a half)
  local maps, track_maps, modules, seen = {}, {}, {}, {}
  for _, cand in ipairs(self.og.units) do
    for _, m in ipairs { cand.unit.producer, cand.unit.consumer } do
      if not seen[m] then seen[m] = true; modules[#modules + 1] = m end
    end
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
  for k, cand in ipairs(self.og.units) do
    local sel = by_unit[k]
    if sel then
      if #sel.split > 0 then done(split_unit(self, cand, sel.split, track_maps, scale)) end
      if #sel.new > 0 then done(add_unit(self, cand, sel.new, track_maps, scale)) end
      if #sel.layer > 0 then done(insert_layer(cand, sel.layer, track_maps, scale)) end
      -- an identity layer at the unit's width after its edits (Net2Net)
      if #sel.deeper > 0 then done(self:insert_deeper(cand)) end
    end
  end
  self.step_scale = nil
  return maps
end

local function max_abs_diff(a, b)
  if a:numel() == 0 then return 0 end
  return (a - b):abs():max():item()
end

-- The network's output on x in evaluation mode, its mode kept.
local function output(net, x)
  local was_training = net.training
  net:eval()
  local y = ff.no_grad(function() return net(x) end)
  net:train(was_training)
  return y
end

local function report_of(self, r)
  return setmetatable(r, { __tostring = function(t)
    return string.format("grew %d candidates: widths %s -> %s, neurons %d -> %d, params %d -> %d\n"
      .. "  dL predicted %.4g, measured %.4g (loss %.4f -> %.4f on the scoring batches); preserved %s; %.2f s",
      t.selected, t.widths_before, t.widths_after, t.neurons_before, t.neurons_after, t.params_before,
      t.params_after, t.predicted, t.measured, t.loss_before, t.loss_after,
      t.preserved and string.format("%.2g", t.preserved) or "n/a", t.seconds)
  end })
end

local APPLY_OPTIONS = { check = true, tolerance = true }

-- The grown network's loss on the scoring batches, and every parameter
-- finite: a step that passed every earlier check can still overflow.
local function loss_after(self)
  local was_training = self.net.training
  self.net:eval()
  local ok, l = pcall(batches_mod.mean_loss, self.net, self.batches, self.lf, "grow.apply")
  self.net:train(was_training)
  if not ok then error(l, 0) end
  if l ~= l or l == math.huge or l == -math.huge then
    error(string.format("grow.apply: the grown network's loss on the scoring batches is %s", tostring(l)), 0)
  end
  for _, e in ipairs(self.net:named_parameters()) do
    if not batches_mod.finite(e.param) then
      error("grow.apply: parameter " .. e.name .. " of the grown network is not finite", 0)
    end
  end
  return l
end

-- proposal:apply([opt [, {check =, tolerance =}]]) -> net, maps, report
function A.apply(self, opt, opts)
  if not self.selected then error("grow.apply: select() first", 2) end
  if self.applied then error("grow.apply: this proposal was applied already; propose again", 2) end
  if opt ~= nil and (type(opt) ~= "table" or not opt.remap) then
    error("grow.apply: argument #1 must be an optimiser (or nil), got " .. type(opt), 2)
  end
  opts = options.check("grow.apply", opts or {}, APPLY_OPTIONS)
  if opts.check ~= nil and type(opts.check) ~= "boolean" then error("grow.apply: check must be true or false", 2) end
  local tol = opts.tolerance or 1e-4
  if type(tol) ~= "number" or not (tol >= 0) then
    error("grow.apply: tolerance must be a number >= 0, got " .. tostring(tol), 2)
  end
  local t0 = ff.clock()
  local snap = snapshot.take(self.net, opt, { self.nb.generator })
  local function fail(err)
    snapshot.restore(snap)
    self.step_scale = nil
    error(tostring(err) .. " (the network and the optimiser are as they were before apply)", 0)
  end
  -- a method that materialises its own way (NASH) runs inside the same
  -- transaction; its report says what it preserved
  if self.materialise then
    local ok, net, maps, report = pcall(self.materialise, self, opt)
    if not ok then fail(net) end
    local ok2, err = pcall(loss_after, self)
    if not ok2 then fail(err) end
    self.applied = true
    return net, maps, report_of(self, report)
  end
  local params_before = self.net:num_params()
  -- the preservation trial: every step zero, on one scoring batch
  local x = batches_mod.first(self.batches)
  local y0 = output(self.net, x)
  local ok, err = pcall(materialise, self, nil, 0)
  local preserved
  if ok then
    ok, err = pcall(function() preserved = max_abs_diff(output(self.net, x), y0) end)
  end
  snapshot.restore(snap)
  if not ok then fail(err) end
  preserved = dist.max_number(preserved) -- dist: one verdict on every rank
  if opts.check and not (preserved <= tol) then
    fail(string.format("grow.apply: the growth operators changed the function: with every step zero the output "
      .. "moved by %.3g (tolerance %.3g)", preserved, tol))
  end
  local maps
  ok, err = pcall(function() maps = materialise(self, opt, 1) end)
  if not ok then fail(err) end
  local l
  ok, err = pcall(function() l = loss_after(self) end)
  if not ok then fail(err) end
  self.applied = true
  local us = units_mod.units(self.net)
  local report = report_of(self, {
    predicted = self.predicted, measured = l - self.loss_before,
    loss_before = self.loss_before, loss_after = l, preserved = preserved,
    params_before = params_before, params_after = self.net:num_params(),
    neurons_before = self.neurons_before, neurons_after = units_mod.neuron_count(us),
    widths_before = self.widths_before, widths_after = units_mod.widths(us),
    selected = #self.selected, cost = self.cost, flops = self.flops,
    seconds = self.seconds + (ff.clock() - t0), propose_seconds = self.seconds,
    apply_seconds = ff.clock() - t0,
  })
  return self.net, maps, report
end

return A
