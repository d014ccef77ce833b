-- firefly.optim.schedule: learning-rate schedules. A scheduler owns a count
-- of step() calls (t, from 0) and sets opt.lr to a closed-form function of t
-- and the lr the optimiser had when the scheduler was made (base_lr). The
-- unit of t is the caller's: train.fit steps once per epoch; a loop may step
-- once per batch instead (then give step_size, milestones, total in batches).
-- Values are torch's StepLR, MultiStepLR and CosineAnnealingLR (closed form).
local options = require "firefly.options"

local M = {}

local Scheduler = {}
Scheduler.__index = Scheduler

local function whole(v, min)
  return type(v) == "number" and v == math.floor(v) and v >= min and v < math.huge
end

local function positive(v)
  return type(v) == "number" and v > 0 and v < math.huge
end

-- Each kind: name, options { name = {default, check(v, all) -> ok, expect} },
-- and lr(self, t).
local kinds = {}

kinds.step = {
  options = {
    step_size = { nil, function(v) return whole(v, 1) end, "a whole number >= 1" },
    gamma = { 0.1, positive, "a number > 0" },
  },
  lr = function(self, t)
    return self.base_lr * self.gamma ^ (t // self.step_size)
  end,
}

kinds.multistep = {
  options = {
    milestones = { nil, function(v)
      if type(v) ~= "table" then return false end
      for _, m in ipairs(v) do if not whole(m, 1) then return false end end
      return true
    end, "a list of whole numbers >= 1" },
    gamma = { 0.1, positive, "a number > 0" },
  },
  -- torch counts a milestone listed twice twice, so do we
  lr = function(self, t)
    local passed = 0
    for _, m in ipairs(self.milestones) do if m <= t then passed = passed + 1 end end
    return self.base_lr * self.gamma ^ passed
  end,
}

kinds.cosine = {
  options = {
    total = { nil, function(v) return whole(v, 1) end, "a whole number >= 1" },
    warmup = { 0, function(v, all) return whole(v, 0) and (type(all.total) ~= "number" or v < all.total) end,
      "a whole number >= 0 and below total" },
    min_lr = { 0, function(v) return type(v) == "number" and v >= 0 and v < math.huge end, "a number >= 0" },
  },
  -- linear from 0 over the warm-up, then half a cosine from base_lr down to
  -- min_lr at t = total; min_lr from then on (torch's cosine would rise again)
  lr = function(self, t)
    local w, total = self.warmup, self.total
    if t < w then return self.base_lr * t / w end
    if t >= total then return self.min_lr end
    local progress = (t - w) / (total - w)
    return self.min_lr + (self.base_lr - self.min_lr) * (1 + math.cos(math.pi * progress)) / 2
  end,
}

kinds.constant = {
  options = {},
  lr = function(self) return self.base_lr end,
}

-- Checks the option values held in `values`; who names the caller in errors.
local function check_options(kind, who, values, level)
  for name, o in pairs(kind.options) do
    local v = values[name]
    if v == nil then error(string.format("%s: option '%s' is required", who, name), level + 1) end
    if not o[2](v, values) then
      error(string.format("%s: option '%s' must be %s (got %s)", who, name, o[3],
        type(v) == "table" and "a table" or tostring(v)), level + 1)
    end
  end
end

local function new(name, opt, opts)
  local kind, who = kinds[name], "schedule." .. name
  if type(opt) ~= "table" or type(opt.lr) ~= "number" then
    error(who .. ": argument #1 must be an optimiser (a table with a numeric lr)", 3)
  end
  opts = opts or {}
  if type(opts) ~= "table" then error(who .. ": options must be a table", 3) end
  options.check(who, opts, kind.options, "option", 3)
  local self = setmetatable({ kind = name, opt = opt, base_lr = opt.lr, last_epoch = 0 }, Scheduler)
  for k, o in pairs(kind.options) do
    local v = opts[k]
    if v == nil then v = o[1] end
    if type(v) == "table" then v = { table.unpack(v) } end
    self[k] = v
  end
  check_options(kind, who, self, 3)
  if self.milestones then table.sort(self.milestones) end
  opt.lr = self:get_lr()
  return self
end

-- The lr for the current count (the one step() last set).
function Scheduler:get_lr()
  return kinds[self.kind].lr(self, self.last_epoch)
end

-- Advances the count by one and sets opt.lr; returns the new lr.
function Scheduler:step()
  self.last_epoch = self.last_epoch + 1
  local lr = self:get_lr()
  self.opt.lr = lr
  return lr
end

-- A plain table of numbers and strings (milestones as a list).
function Scheduler:state_dict()
  local sd = { schedule = self.kind, base_lr = self.base_lr, last_epoch = self.last_epoch }
  for k in pairs(kinds[self.kind].options) do
    local v = self[k]
    sd[k] = type(v) == "table" and { table.unpack(v) } or v
  end
  return sd
end

-- Restores base_lr, the count and the options, then sets opt.lr to match.
function Scheduler:load_state_dict(sd)
  local who = "schedule." .. self.kind .. ".load_state_dict"
  if type(sd) ~= "table" then error(who .. ": expected a table from state_dict()", 2) end
  if sd.schedule ~= self.kind then
    error(string.format("%s: the state_dict is for schedule.%s", who, tostring(sd.schedule)), 2)
  end
  if type(sd.base_lr) ~= "number" or sd.base_lr < 0 then error(who .. ": base_lr must be a number >= 0", 2) end
  if not whole(sd.last_epoch, 0) then error(who .. ": last_epoch must be a whole number >= 0", 2) end
  local kind = kinds[self.kind]
  check_options(kind, who, sd, 2)
  self.base_lr, self.last_epoch = sd.base_lr, math.tointeger(sd.last_epoch)
  for k in pairs(kind.options) do
    local v = sd[k]
    self[k] = type(v) == "table" and { table.unpack(v) } or v
  end
  if self.milestones then table.sort(self.milestones) end
  self.opt.lr = self:get_lr()
end

function Scheduler:__tostring()
  return string.format("schedule.%s(base_lr=%g, t=%d, lr=%g)", self.kind, self.base_lr, self.last_epoch, self:get_lr())
end

-- schedule.step(opt, {step_size =, gamma = 0.1}), schedule.multistep(opt,
-- {milestones =, gamma = 0.1}), schedule.cosine(opt, {total =, warmup = 0,
-- min_lr = 0}), schedule.constant(opt)
for name in pairs(kinds) do
  M[name] = function(opt, opts) return new(name, opt, opts) end
end

return M
