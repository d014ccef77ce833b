-- firefly.grow.batches: the scoring data of a growth step.
--
-- Every method reads its batches through each_batch, so every batch is
-- checked once at the door: a NaN or an infinity in a scoring batch would
-- otherwise flow through step 1 into the perturbations, through step 2 into
-- the scores, and through apply into the network's weights, with no error
-- anywhere. The check is one sum per batch (cheaper than the forward pass
-- that follows).
local ff = require "firefly"
local dist = require "firefly.dist"

local B = {}

local function finite(t)
  local s = t:sum():item() -- accumulated in double: non-finite only from a NaN or an inf entry
  return s == s and s ~= math.huge and s ~= -math.huge
end
B.finite = finite

local function check(who, i, x, y)
  if not ff.is_tensor(x) then
    error(string.format("%s: scoring batch %d: expected {x, y} tensors, got %s", who, i, type(x)), 0)
  end
  if not finite(x) then
    error(string.format("%s: scoring batch %d (%s) has a non-finite input: refusing it before anything changes",
      who, i, table.concat(x:size(), "x")), 0)
  end
  if ff.is_tensor(y) and not finite(y) then
    error(string.format("%s: scoring batch %d has a non-finite target", who, i), 0)
  end
end

-- each_batch(batches, fn [, label, quiet, who]): fn(x, y) for every batch of
-- a DataLoader (anything with :iter()) or a list of {x, y}. With a label, a
-- progress line on a terminal (growth over a whole training set takes a
-- while).
function B.each_batch(batches, fn, label, quiet, who)
  who = who or "grow.propose"
  local bar = label and ff.logging.progress { total = #batches, label = label, quiet = quiet, unit = "batch" }
  local done = 0
  local trusted = batches.checked and not B.check_every_pass
  local function one(x, y)
    if not trusted then check(who, done + 1, x, y) end
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
  if done == 0 then error(who .. ": the scoring batches are empty", 0) end
end

-- A list of batches checked once, with each_batch's checks and messages,
-- for a method that reads it many times (Firefly: step 1's passes, step 2's
-- points, the loss before growth): each_batch skips the checks of the list
-- returned, a new one holding the same batches. A loader hands out new
-- tensors every pass and is returned as it is. (B.check_every_pass: the
-- checks on every pass again, for measuring.)
function B.checked(batches, who)
  if batches.iter or batches.checked then return batches end
  local list = { checked = true }
  for i, b in ipairs(batches) do
    check(who or "grow.propose", i, b[1], b[2])
    list[i] = b
  end
  return list
end

-- The first batch's input (a whole loader would be read to its end).
function B.first(batches)
  if batches.iter then
    for x, y in batches:iter() do return x, y end
  else
    local b = batches[1]
    if b then return b[1], b[2] end
  end
  error("grow.propose: the scoring batches are empty", 0)
end

local function cross_entropy(out, y) return ff.cross_entropy(out, y) end

-- The step's loss: cross-entropy, or the neighbourhood's `loss`, whose
-- failures and non-scalar results are errors that say so.
function B.loss_of(nb)
  local f = nb.loss
  if not f then return cross_entropy end
  return function(out, y)
    local ok, l = pcall(f, out, y)
    if not ok then error("grow.propose: the neighbourhood's loss failed: " .. tostring(l), 0) end
    if not ff.is_tensor(l) or l:numel() ~= 1 then
      error("grow.propose: the neighbourhood's loss must return a one-element tensor, got "
        .. (ff.is_tensor(l) and "a tensor of " .. l:numel() .. " elements" or type(l)), 0)
    end
    return l
  end
end

-- The loss over the batches, weighted by batch size, in evaluation of net
-- as it is (the caller sets eval mode).
function B.mean_loss(net, batches, lf, who)
  if dist.deterministic() and not batches.iter then -- dist: part by part
    B.each_batch(batches, function() end, nil, nil, who) -- the same checks
    return ff.no_grad(function() return dist.part_mean_loss(batches, function(x, y) return lf(net(x), y):item() end) end)
  end
  local total, n = 0, 0
  ff.no_grad(function()
    B.each_batch(batches, function(x, y)
      total = total + lf(net(x), y):item() * x:size(1)
      n = n + x:size(1)
    end, nil, nil, who)
  end)
  total, n = dist.sum_numbers(total, n) -- dist: over every rank's rows
  return total / math.max(n, 1)
end

-- dist: t, a sum over this rank's rows of the scoring batches, becomes the
-- sum over every rank's rows (one allreduce, in place when t is
-- contiguous), so every rank decides on the same numbers. One rank: t.
function B.over_ranks(t)
  if not dist.parallel() then return t end
  t = t:contiguous()
  dist.allreduce(t, "sum")
  return t
end

-- The batches' checks, for a proposal's inputs: a list or a loader.
function B.check_arg(who, batches)
  if type(batches) ~= "table" and type(batches) ~= "userdata" then
    error(string.format("%s: argument #3 (batches) must be a DataLoader or a list of {x, y}, got %s", who,
      type(batches)), 0)
  end
  if type(batches) == "table" and not batches.iter then
    if #batches == 0 then error(who .. ": argument #3 (batches) is empty", 0) end
    for i, b in ipairs(batches) do
      if type(b) ~= "table" or not ff.is_tensor(b[1]) then
        error(string.format("%s: argument #3 (batches): batch %d must be {x, y} with tensors", who, i), 0)
      end
    end
  end
end

return B
