-- firefly.continual.baselines: the methods Firefly is compared with, in
-- the same harness (same data, same training loop, one head per task):
--   finetune  one shared trunk trained on every task in turn (forgets);
--   separate  one trunk and head per task (no forgetting, T times the size);
--   ewc       the shared trunk with the EWC penalty of the earlier tasks.
-- The trunk is the backbone (backbone.lua: Linear+ReLU layers of widths
-- `hidden`, or a VGG-style conv net `cfg` with batch norm, shared like
-- every other trunk parameter); a head is a Linear from the trunk's
-- features to the task's classes. Old heads are not trained again (only
-- the current task's loss is minimised, which does not reach them).
local ff = require "firefly"
local nn = ff.nn
local U = require "firefly.continual.util"
local E = require "firefly.continual.ewc"
local backbone = require "firefly.continual.backbone"

local B = {}

local DEFAULTS = { epochs = 3, lr = 1e-3, batch_size = 64, lambda = 100, fisher_samples = 200, seed = 1,
  quiet = true }
for k, v in pairs(backbone.defaults()) do DEFAULTS[k] = v end
local CHECKS = { epochs = U.int(0), lr = U.num(0, true), batch_size = U.int(1), lambda = U.num(0),
  fisher_samples = U.int(1), seed = U.int(0), quiet = U.bool }
for k, v in pairs(backbone.checks(U)) do CHECKS[k] = v end

local Learner = {}
Learner.__index = Learner

local function new(kind, opts)
  local fname = "continual." .. ({ finetune = "FineTune", separate = "Separate", ewc = "EWC" })[kind]
  local defaults = {}
  for k, v in pairs(DEFAULTS) do defaults[k] = v end
  if kind ~= "ewc" then defaults.lambda, defaults.fisher_samples = nil, nil end
  local o = backbone.resolve(U.options(fname, opts, defaults, CHECKS))
  local d = backbone.describe(fname, o)
  local self = setmetatable({ name = kind, o = o, d = d, gen = ff.Generator(o.seed), trunks = {}, heads = {},
    anchors = {} }, Learner)
  if kind ~= "separate" then self.shared = backbone.trunk(d, self.gen) end
  return self
end

function B.FineTune(opts) return new("finetune", opts) end
function B.Separate(opts) return new("separate", opts) end
function B.EWC(opts) return new("ewc", opts) end

function Learner:trunk(t) return self.shared or self.trunks[t] end

-- Task t's output; `train` runs batch norm on batch statistics (and
-- moves its running ones: shared ones drift, which is part of forgetting).
function Learner:forward(t, x, train)
  local body = self:trunk(t)
  body:train(train == true)
  return self.heads[t](body(backbone.input(self.d, x)))
end

function Learner:learn(task, t)
  local o = self.o
  if self.name == "separate" then self.trunks[t] = backbone.trunk(self.d, self.gen) end
  self.heads[t] = nn.Linear(backbone.feature_dim(self.d), task.n_classes, { generator = self.gen })
  local body = self:trunk(t)
  local params = {}
  for _, p in ipairs(body:parameters()) do params[#params + 1] = p end
  for _, p in ipairs(self.heads[t]:parameters()) do params[#params + 1] = p end
  local shared = body:parameters()
  local penalty
  if self.name == "ewc" and #self.anchors > 0 then
    penalty = function() return E.penalty(shared, self.anchors, o.lambda) end
  end
  local loss = U.fit { forward = function(x) return self:forward(t, x, true) end, params = params, lr = o.lr,
    data = task.train, epochs = o.epochs, batch_size = o.batch_size, generator = self.gen,
    penalty = penalty, label = self.name .. " task " .. t, quiet = o.quiet }
  if self.d.bn then
    -- the trunk's batch norms (shared ones included: their statistics
    -- move to this task's, which is part of the baselines' forgetting)
    local bns = {}
    for _, m in ipairs(body:named_modules()) do
      if m[2].running_mean then bns[#bns + 1] = m[2] end
    end
    local saved = {}
    for i, m in ipairs(bns) do saved[i] = m.momentum end
    U.recalibrate(function(x, mom)
      for _, m in ipairs(bns) do m.momentum = mom end
      self:forward(t, x, true)
    end, task.train, o.batch_size)
    for i, m in ipairs(bns) do m.momentum = saved[i] end
  end
  if self.name == "ewc" then
    local fisher = E.fisher(function(x, y) return ff.cross_entropy(self:forward(t, x), y) end, shared,
      task.train, { samples = o.fisher_samples, generator = self.gen })
    local star = {}
    for i, p in ipairs(shared) do star[i] = p:detach():clone() end
    self.anchors[#self.anchors + 1] = { fisher = fisher, star = star }
  end
  return { task = t, train_loss = loss }
end

function Learner:num_params()
  local n = 0
  if self.shared then n = n + self.shared:num_params() end
  for _, tr in pairs(self.trunks) do n = n + tr:num_params() end
  for _, h in pairs(self.heads) do n = n + h:num_params() end
  return n
end

return B
