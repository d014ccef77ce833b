-- method = "nash": the hill climb of NASH (Elsken, Metzen, Hutter 2017,
-- "Simple and efficient architecture search for convolutional neural
-- networks"), with random growth as its network morphisms, as the Firefly
-- paper compares against it. One growth phase: `children` copies of the
-- network, each grown at random within the phase's budget (the random
-- method, each with its own seed), each trained briefly (`child_epochs`
-- with a cosine learning rate from `child_lr` to 0 over its steps, SGD
-- with momentum 0.9, as SGDR), and the best on the *validation* data
-- `val` kept: its growth is replayed on the network itself (so the
-- network object, its names and the optimiser's remap stay those of
-- every other method), then its trained weights are copied in and the
-- optimiser's state is forgotten (it belonged to weights that are gone).
--
-- The proposal itself is the random method's on the network (it prints
-- and selects like any other); the children are grown and trained in
-- apply, where the phase's time goes.
local ff = require "firefly"
local sandbox = require "firefly.sandbox"
local random = require "firefly.grow.methods.random"
local batches_mod = require "firefly.grow.batches"

local M = {
  name = "nash",
  options = { step = true, children = true, child_epochs = true, child_lr = true, child_optim = true,
    train = true, val = true },
}

local function check_count(nb, key, default)
  local v = nb[key] or default
  if type(v) ~= "number" or v < 1 or v ~= math.floor(v) then
    error(string.format("grow.propose: nash: %s must be a positive integer, got %s", key, tostring(v)), 0)
  end
  return v
end

local function as_loader(data, what, g)
  if type(data) ~= "table" then
    error("grow.propose: nash needs " .. what .. " (a DataLoader or a dataset)" .. (what == "val"
      and ": children are ranked on validation data, never on the test set" or ""), 0)
  end
  local ds = data.iter and data.dataset or data
  local batch = data.iter and data.batch_size or 128
  if not (ds and ds.x) then error("grow.propose: nash: " .. what .. " must be a DataLoader or a dataset", 0) end
  return ff.data.DataLoader(ds, { batch_size = batch, shuffle = g ~= nil, generator = g })
end

-- A deep copy of a network (architecture, weights, buffers) through the
-- checkpoint format.
local function clone(net)
  local path = os.tmpname()
  -- the temporary file is the library's own: a sandboxed recipe may use it
  local ok, copy = pcall(sandbox.allow, path, function()
    ff.save(path, net)
    return ff.load(path)
  end)
  os.remove(path) -- sandbox: internal (os.tmpname)
  if not ok then error(copy, 0) end
  return copy
end

-- The random neighbourhood child i grows in: the phase's own options
-- (per-unit settings included), less NASH's own and the run's, with its
-- own seed.
local NOT_FOR_CHILDREN = { method = true, generator = true, quiet = true, batches = true, eta = true,
  reset_optim = true }
local function child_nb(nb, seed)
  local out = { method = "random", generator = ff.Generator(seed), quiet = true }
  for k, v in pairs(nb) do
    if not NOT_FOR_CHILDREN[k] and (not M.options[k] or k == "step") then out[k] = v end
  end
  return out
end

local function train_child(child, nb, seed, loader)
  local opt = nb.child_optim and nb.child_optim(child)
    or ff.optim.SGD(child:named_parameters(), { lr = nb.child_lr or 0.05, momentum = 0.9 })
  local epochs = check_count(nb, "child_epochs", 2)
  local data = as_loader(loader, "train", ff.Generator(seed))
  local sched = ff.optim.schedule.cosine(opt, { total = epochs * #data })
  ff.train.fit { model = child, data = data, optim = opt, epochs = epochs, quiet = true, loss = nb.loss,
    on_step = function() sched:step() end }
end

-- Better on validation: higher accuracy, then lower loss.
local function better(a, b)
  if not b then return true end
  if a.accuracy and b.accuracy and a.accuracy ~= b.accuracy then return a.accuracy > b.accuracy end
  return a.loss < b.loss
end

local function materialise(self, opt)
  local t0 = ff.clock()
  local nb = self.nb
  local n = check_count(nb, "children", 8)
  local g = nb.generator
  local best, children = nil, {}
  local bar = ff.logging.progress { total = n, label = "nash children", quiet = nb.quiet, unit = "child" }
  for i = 1, n do
    local seed = math.tointeger(ff.randint(0, 2 ^ 24 - 1, { 1 }, g):item())
    local child = clone(self.net)
    local p = self.propose(child, child_nb(nb, seed), self.batches)
    p:select(self.budget)
    p:apply()
    train_child(child, nb, seed, nb.train or self.batches)
    local r = ff.train.evaluate(child, as_loader(nb.val, "val"), { loss = nb.loss })
    children[i] = { seed = seed, val_loss = r.loss, val_acc = r.accuracy }
    if better(r, best) then best = { seed = seed, accuracy = r.accuracy, loss = r.loss, net = child, index = i } end
    bar:update(i)
  end
  bar:finish()
  -- the winner's growth, replayed on the network (same seed, same edits)
  local p = self.propose(self.net, child_nb(nb, best.seed), self.batches)
  p:select(self.budget)
  local net, maps, report = p:apply(opt)
  local source = {}
  for _, e in ipairs(best.net:named_parameters()) do source[e.name] = e.param end
  for _, e in ipairs(best.net:named_buffers()) do source[e.name] = e.param or e.buffer end
  ff.no_grad(function()
    for _, list in ipairs { net:named_parameters(), net:named_buffers() } do
      for _, e in ipairs(list) do
        local dst = e.param or e.buffer
        dst:copy_(source[e.name])
      end
    end
  end)
  if opt then opt:reset_state() end
  local was_training = net.training
  net:eval()
  report.loss_after = batches_mod.mean_loss(net, self.batches, self.lf)
  net:train(was_training)
  report.measured = report.loss_after - self.loss_before
  report.loss_before = self.loss_before
  report.predicted = 0
  report.children, report.best_child = children, best.index
  report.seconds = self.seconds + (ff.clock() - t0)
  report.apply_seconds = ff.clock() - t0
  return net, maps, report
end

function M.build(ctx)
  local nb = ctx.nb
  if nb.val == nil then as_loader(nil, "val") end
  check_count(nb, "children", 8)
  check_count(nb, "child_epochs", 2)
  local self = random.build(ctx)
  self.materialise = materialise
  self.propose = ctx.propose -- for the children (no require of the proposal: it requires the methods)
  return self
end

return M
