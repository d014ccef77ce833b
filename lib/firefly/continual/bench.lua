-- firefly.continual.bench: streams of tasks for task-incremental continual
-- learning. A stream is {name, input_dim, tasks = {task, ...}, note}; a
-- task is {name, classes (names), n_classes, train, valid, test}, three
-- data sets whose x is flattened to N x input_dim (the learners are MLPs)
-- and whose labels are 1..n_classes within the task (each task has its own
-- head, and the task id is known at test time).
--
-- The validation set is carved from the task's training data with a
-- seeded split, never from the test set: growth decisions read it.
local ff = require "firefly"
local U = require "firefly.continual.util"

local B = {}

local function flat(ds, name)
  local n = ds:size()
  return ff.data.Dataset(ds.x:reshape(n, -1), ds.y, { classes = ds.classes, class_ids = ds.class_ids,
    name = name })
end

-- A random subset of n samples (all of them when n is nil or too large).
local function subset(ds, n, gen)
  if not n or n >= ds:size() then return ds end
  return ds:subset(ff.data.randperm(ds:size(), gen):narrow(1, 1, n))
end

-- One task from its training and test samples: subsets, then the
-- validation split out of the training part.
local function make_task(name, train, test, o, gen)
  train = subset(train, o.train_per_task, gen)
  test = subset(test, o.test_per_task, gen)
  local tr, va = train:split(1 - o.valid_fraction, gen)
  return {
    name = name, classes = train.classes, n_classes = #train.classes,
    train = flat(tr, name .. " train"), valid = flat(va, name .. " valid"), test = flat(test, name .. " test"),
  }
end

local COMMON = { tasks = false, train_per_task = false, test_per_task = false, valid_fraction = 0.1,
  seed = 1, path = false }
local function common_checks()
  return { tasks = U.int(1), train_per_task = U.int(2), test_per_task = U.int(1), seed = U.int(0),
    valid_fraction = function(v)
      if type(v) ~= "number" or v <= 0 or v >= 1 then return "must be a number in (0, 1)" end
    end,
    path = function(v) if type(v) ~= "string" then return "must be a directory name" end end }
end

local function defaults(extra)
  local d = {}
  for k, v in pairs(COMMON) do d[k] = v end
  for k, v in pairs(extra or {}) do d[k] = v end
  return d
end

local function note(o, stream)
  local parts = {}
  if o.train_per_task then parts[#parts + 1] = o.train_per_task .. " training samples per task" end
  if o.test_per_task then parts[#parts + 1] = o.test_per_task .. " test samples per task" end
  stream.note = #parts > 0 and ("subsets: " .. table.concat(parts, ", ")) or "full data"
  return stream
end

-- bench.split_fashion{tasks = 5, classes_per_task = 2, train_per_task,
-- test_per_task, valid_fraction = 0.1, seed = 1, path}: Fashion-MNIST's
-- classes {0, 1}, {2, 3}, ... one pair per task.
function B.split_fashion(opts)
  local o = U.options("continual.bench.split_fashion", opts, defaults { classes_per_task = 2 },
    (function() local c = common_checks(); c.classes_per_task = U.int(1); return c end)())
  local k = o.classes_per_task
  local max_tasks = 10 // k
  local T = o.tasks or max_tasks
  if T > max_tasks then
    error(string.format("continual.bench.split_fashion: option 'tasks' must be at most %d with %d classes per task, got %d",
      max_tasks, k, T), 2)
  end
  local train = ff.data.fashion_mnist { split = "train", path = o.path or nil }
  local test = ff.data.fashion_mnist { split = "test", path = o.path or nil }
  local gen = ff.Generator(o.seed)
  local stream = { name = "split-fashion", input_dim = 784, input_shape = { 1, 28, 28 }, tasks = {} }
  for t = 1, T do
    local ids = {}
    for i = 1, k do ids[i] = (t - 1) * k + i - 1 end
    stream.tasks[t] = make_task(string.format("task %d {%s}", t, table.concat(ids, ",")),
      train:classes_subset(ids), test:classes_subset(ids), o, gen)
  end
  return note(o, stream)
end

-- bench.pairs_fashion{tasks = 10, ...}: a longer stream of two-class
-- tasks, each a different pair of Fashion-MNIST classes: the 45 pairs in
-- an order drawn from the seed, the first `tasks` of them (at most 45).
-- Tasks share classes (T-shirt against trouser, then T-shirt against
-- shirt, ...), so features of old tasks can serve new ones, and images
-- keep their layout (a conv backbone sees real images, unlike permutations).
function B.pairs_fashion(opts)
  local o = U.options("continual.bench.pairs_fashion", opts, defaults(), common_checks())
  local T = o.tasks or 10
  if T > 45 then
    error(string.format("continual.bench.pairs_fashion: option 'tasks' must be at most 45 (class pairs), got %d", T), 2)
  end
  local train = ff.data.fashion_mnist { split = "train", path = o.path or nil }
  local test = ff.data.fashion_mnist { split = "test", path = o.path or nil }
  local gen = ff.Generator(o.seed)
  local pairs = {}
  for a = 0, 9 do for b = a + 1, 9 do pairs[#pairs + 1] = { a, b } end end
  local order = ff.data.randperm(#pairs, gen):totable()
  local stream = { name = "pairs-fashion", input_dim = 784, input_shape = { 1, 28, 28 }, tasks = {} }
  for t = 1, T do
    local ids = pairs[math.tointeger(order[t])]
    stream.tasks[t] = make_task(string.format("task %d {%d,%d}", t, ids[1], ids[2]),
      train:classes_subset(ids), test:classes_subset(ids), o, gen)
  end
  return note(o, stream)
end

-- bench.permuted_fashion{tasks = 5, ...}: all ten classes in every task,
-- the pixels of task t shuffled by a fixed permutation drawn from the
-- seed (task 1 keeps the original order, so it is plain Fashion-MNIST).
function B.permuted_fashion(opts)
  local o = U.options("continual.bench.permuted_fashion", opts, defaults(), common_checks())
  local T = o.tasks or 5
  local train = ff.data.fashion_mnist { split = "train", path = o.path or nil }
  local test = ff.data.fashion_mnist { split = "test", path = o.path or nil }
  local gen = ff.Generator(o.seed)
  local stream = { name = "permuted-fashion", input_dim = 784, input_shape = { 1, 28, 28 }, tasks = {} }
  for t = 1, T do
    local perm = t == 1 and ff.arange(1, 785) or ff.data.randperm(784, gen)
    local function permuted(ds)
      local n = ds:size()
      return ff.data.Dataset(ds.x:reshape(n, 784):index_select(2, perm), ds.y,
        { classes = ds.classes, class_ids = ds.class_ids, name = ds.name })
    end
    stream.tasks[t] = make_task("task " .. t .. " (permutation " .. t .. ")",
      permuted(subset(train, o.train_per_task, gen)), permuted(subset(test, o.test_per_task, gen)), o, gen)
    stream.tasks[t].permutation = perm
  end
  return note(o, stream)
end

-- bench.cifar100{path, tasks = 20, classes_per_task = 5, ...}: CIFAR-100's
-- fine classes 0-4, 5-9, ... (the paper's and CPG's setting), from the
-- binary files the user supplies. Returns nil and a message when they
-- are absent, so callers can skip cleanly.
function B.cifar100(opts)
  local o = U.options("continual.bench.cifar100", opts, defaults { classes_per_task = 5 },
    (function() local c = common_checks(); c.classes_per_task = U.int(1); return c end)())
  local k = o.classes_per_task
  local T = o.tasks or 100 // k
  if T * k > 100 then
    error(string.format("continual.bench.cifar100: option 'tasks' must be at most %d with %d classes per task, got %d",
      100 // k, k, T), 2)
  end
  local ok, train = pcall(ff.data.cifar100, { split = "train", path = o.path or nil })
  local test
  if ok then ok, test = pcall(ff.data.cifar100, { split = "test", path = o.path or nil }) end
  if not ok then
    local why = tostring(ok and test or train):gsub("^[^:]*:%d+: ", "")
    return nil, "continual.bench.cifar100: the CIFAR-100 files are not available (get cifar-100-binary.tar.gz from "
        .. "https://www.cs.toronto.edu/~kriz/cifar.html and pass --path DIR): " .. why
  end
  local gen = ff.Generator(o.seed)
  local stream = { name = "cifar100", input_dim = 3072, input_shape = { 3, 32, 32 }, tasks = {} }
  for t = 1, T do
    local ids = {}
    for i = 1, k do ids[i] = (t - 1) * k + i - 1 end
    stream.tasks[t] = make_task(string.format("task %d (classes %d-%d)", t, ids[1], ids[k]),
      train:classes_subset(ids), test:classes_subset(ids), o, gen)
  end
  return note(o, stream)
end

-- bench.synthetic{tasks = 3, classes = 2, dim = 8, n = 96, seed = 1,
-- shape}: small Gaussian-cluster tasks, each with its own class means, for
-- tests and examples that must run in seconds. With shape = {C, H, W} the
-- rows are C·H·W "images" (dim is then C·H·W) for conv backbones.
function B.synthetic(opts)
  local o = U.options("continual.bench.synthetic", opts,
    { tasks = 3, classes = 2, dim = 8, n = 96, seed = 1, spread = 1.0, shape = false },
    { tasks = U.int(1), classes = U.int(2), dim = U.int(1), n = U.int(4), seed = U.int(0), spread = U.num(0, true),
      shape = function(v)
        if type(v) ~= "table" or #v ~= 3 then return "must be {C, H, W}" end
      end })
  if o.shape then o.dim = o.shape[1] * o.shape[2] * o.shape[3] end
  local gen = ff.Generator(o.seed)
  local stream = { name = "synthetic", input_dim = o.dim, input_shape = o.shape or nil, tasks = {},
    note = "synthetic clusters" }
  local function draw(means, n)
    local y = ff.randint(1, o.classes, n, gen)
    local x = means:index_select(1, y) + ff.randn(n, o.dim, gen) * o.spread
    return ff.data.Dataset(x, y, { classes = {}, name = "synthetic" })
  end
  for t = 1, o.tasks do
    local means = ff.randn(o.classes, o.dim, gen) * 1.5
    local names = {}
    for c = 1, o.classes do names[c] = "c" .. c end
    local train, valid, test = draw(means, o.n), draw(means, o.n // 4), draw(means, o.n // 2)
    stream.tasks[t] = { name = "task " .. t, classes = names, n_classes = o.classes,
      train = train, valid = valid, test = test }
  end
  return stream
end

-- bench.load(name, opts): "split" (the default), "pairs", "permuted",
-- "cifar100", "synthetic".
function B.load(name, opts)
  local f = ({ split = B.split_fashion, pairs = B.pairs_fashion, permuted = B.permuted_fashion,
    cifar100 = B.cifar100, synthetic = B.synthetic })[name or "split"]
  if not f then
    error("continual.bench.load: benchmark must be one of split, pairs, permuted, cifar100, synthetic, got "
      .. tostring(name), 2)
  end
  return f(opts)
end

return B
