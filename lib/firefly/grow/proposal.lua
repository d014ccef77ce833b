-- firefly.grow.proposal: one growth step, scriptable from the REPL:
--
--   local p = ff.grow.propose(net, nb, batches)  -- candidates and scores
--   print(p)                                     -- per unit, with settings
--   p:select(8)                                  -- keep the best 8 (select.lua)
--   local net, maps, report = p:apply(opt)       -- materialise (apply.lua)
--
-- propose checks its arguments and the neighbourhood (neighbourhood.lua),
-- resolves the neighbourhood per unit, freezes the network and hands the
-- rest to the method (methods/: Firefly's steps 1 and 2, or a baseline's
-- own way of proposing), which returns the candidates and their scores.
local ff = require "firefly"
local units_mod = require "firefly.grow.units"
local batches_mod = require "firefly.grow.batches"
local neighbourhood = require "firefly.grow.neighbourhood"
local methods = require "firefly.grow.methods"
local firefly = require "firefly.grow.methods.firefly"
local select_mod = require "firefly.grow.select"
local apply_mod = require "firefly.grow.apply"

local P = {}
P.__index = P
P.METHODS = methods.NAMES

local function check_args(net, nb, batches)
  if type(net) ~= "table" or type(net.parameters) ~= "function" then
    error("grow.propose: argument #1 must be a network (an nn module), got " .. type(net), 0)
  end
  if type(nb) ~= "table" and type(nb) ~= "function" then
    error("grow.propose: argument #2 (the neighbourhood) must be a table of options or a function(unit), got "
      .. type(nb), 0)
  end
  batches_mod.check_arg("grow.propose", batches)
end

-- grow.propose(net, nb, batches) -> proposal
--
-- A method's build(ctx) gets {net, nb, batches, lf, units, settings (one
-- table per unit: split, new, layers, eps, init, cap), propose (this
-- function: NASH proposes for its children)} with the network in
-- evaluation mode and its weights frozen, and returns the over-grown
-- network `og` holding its candidates (split rows v, new neurons' u, b, o,
-- e, candidate layers) and their `scores`, shaped as Firefly's (and
-- `loss_before`, the network's mean loss on the batches, when it measured it,
-- and `memo_bytes`, what it kept per batch on the way);
-- optionally `order(self, list, budget)` (the candidates in the order
-- selection considers them, and only those it may keep), `predict(self,
-- c)` (the loss change it predicts for candidate c; else ε̂·s),
-- `fixed_steps` (apply each candidate's own step ε̃, as the official
-- selection does), `after_split(self, cand, map)` (a hook after each
-- unit's split edit), `insert_deeper(self, cand)` (for candidates of kind
-- "deeper", one per unit in cand.deeper = {kernel, positions, e}: put an
-- identity layer at the unit's width in place, return its remap entries)
-- and `materialise(self, opt)` (apply it its own way; returns what apply
-- does).
function P.propose(net, nb, batches)
  nb = nb or {}
  check_args(net, nb, batches)
  local method = methods.get(type(nb) == "table" and nb.method or "firefly")
  neighbourhood.check(nb, method)
  local t0 = ff.clock()
  local opts = type(nb) == "table" and nb or {}
  local lf = batches_mod.loss_of(opts)
  local us = units_mod.units(net, opts.where, "grow.propose")
  if #us == 0 then error("grow.propose: the network has no growable units", 0) end
  local settings = neighbourhood.resolve(nb, us, method)
  neighbourhood.check_memory(us, settings, batches)
  local was_training = net.training
  net:eval()
  -- freeze the network's weights: step 1 moves only the perturbations
  -- (each parameter gets its own flag back: some are frozen on purpose)
  local frozen = {}
  for _, p in ipairs(net:parameters()) do frozen[#frozen + 1] = { p, p:requires_grad() }; p:requires_grad(false) end
  local ok, err = pcall(function()
    local self = method.build { net = net, nb = opts, batches = batches, lf = lf, units = us, settings = settings,
      propose = P.propose }
    self.net, self.nb, self.batches, self.lf, self.method = net, opts, batches, lf, method.name
    self.units, self.settings = us, settings
    self.max_new_layers = neighbourhood.max_new_layers(opts)
    -- (a method may have measured it on the way: Firefly's, through its memo)
    self.loss_before = self.loss_before or batches_mod.mean_loss(net, batches, lf)
    self.widths_before, self.neurons_before = units_mod.widths(us), units_mod.neuron_count(us)
    setmetatable(self, P)
    self.positions = select_mod.record_positions(self) -- in evaluation mode, like the rest of the step
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
      and string.format("Firefly proposal: %d units, rule %s, %.2f s", #self.scores, self.nb.rule or firefly.DEFAULT_RULE,
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
  lines[#lines + 1] = "neighbourhood:"
  lines[#lines + 1] = self:neighbourhood()
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


P.select = select_mod.select
P.apply = apply_mod.apply

-- The neighbourhood the proposal searched: each unit and its settings.
function P:neighbourhood()
  return neighbourhood.describe(self.units, self.settings)
end

return P
