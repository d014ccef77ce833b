-- firefly.data: data sets and batching (`ff.data`, loaded on first use).
--
-- A data set is a table with the whole data in two tensors: `x` (N x ...)
-- and `y` (N labels, 1-based classes; N x k targets for regression; or nil).
-- Every data set shares one interface (size, subset, classes_subset, split,
-- normalize), and a DataLoader batches one with a single index_select per
-- batch on the whole tensors, so an epoch never copies the data set.
--
-- The file formats are read in C (ff.read_idx, ff.read_cifar, engine/core/
-- io_data.c); this file finds the files, scales and labels the data, and
-- makes the synthetic sets. The reference is spec/data.md.
local ff = require "firefly"
local sandbox = require "firefly.sandbox" -- file access of a sandboxed recipe
local options = require "firefly.options"

local data = {}

local floor, sqrt, pi = math.floor, math.sqrt, math.pi

-- ---------------------------------------------------------------------------
-- Argument helpers

-- Error unless every key of opts is known (catches typos such as batchsize).
local function check_options(fn, opts, known)
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    error(string.format("%s: options must be a table, got %s", fn, type(opts)), 3)
  end
  return options.check(fn, opts, known, "option", 3)
end

local function set(list)
  local s = {}
  for _, v in ipairs(list) do s[v] = true end
  return s
end

local function check_int(fn, name, v, lo, hi)
  if math.type(v) ~= "integer" and not (type(v) == "number" and v == floor(v)) then
    error(string.format("%s: %s must be an integer, got %s", fn, name, tostring(v)), 3)
  end
  if (lo and v < lo) or (hi and v > hi) then
    error(string.format("%s: %s = %d out of range %s..%s", fn, name, v, tostring(lo or "-inf"),
      tostring(hi or "inf")), 3)
  end
  return floor(v)
end

local function check_number(fn, name, v, lo)
  if type(v) ~= "number" then
    error(string.format("%s: %s must be a number, got %s", fn, name, type(v)), 3)
  end
  if lo and v < lo then
    error(string.format("%s: %s = %g must be >= %g", fn, name, v, lo), 3)
  end
  return v
end

local function shape_str(t)
  return table.concat(t:size(), "x")
end

-- Run fn(g) with a Generator: the given one, or the default stream (through
-- a copy that is written back, so the default stream advances).
local function with_generator(who, g, fn)
  if g ~= nil and (getmetatable(g) or {}).__name ~= "firefly.Generator" then
    error(string.format("%s: the generator must be an ff.Generator, got %s", who, type(g)), 3)
  end
  if g ~= nil then return fn(g) end
  local copy = ff.get_rng_state()
  local a, b = fn(copy)
  ff.set_rng_state(copy)
  return a, b
end

-- A random permutation of 1..n as a Lua table (Fisher-Yates, from the end;
-- see data.randperm).
local function permutation(n, g)
  local p = {}
  for i = 1, n do p[i] = i end
  local rnd = g.random
  for i = n, 2, -1 do
    local j = rnd(g, i)
    p[i], p[j] = p[j], p[i]
  end
  return p
end

-- data.randperm(n [, gen]): the positions 1..n in a random order, as a 1-D
-- tensor. Algorithm (fixed, so a seed reproduces everywhere): p = {1..n};
-- for i = n down to 2: j = gen:random(i); swap p[i] and p[j].
function data.randperm(n, g)
  n = check_int("randperm", "n", n, 0, 1 << 24)
  return with_generator("randperm", g, function(gen) return ff.tensor(permutation(n, gen)) end)
end

-- ---------------------------------------------------------------------------
-- Data sets

local Dataset = {}
Dataset.__index = Dataset

-- data.Dataset(x [, y [, fields]]): a data set over existing tensors. fields
-- (optional) are copied in: classes (names), class_ids, name...
function data.Dataset(x, y, fields)
  if not ff.is_tensor(x) then
    error("Dataset: x must be a tensor, got " .. type(x), 2)
  end
  if x:dim() < 1 then error("Dataset: x must have a first dim (the samples), got a scalar", 2) end
  if y ~= nil then
    if not ff.is_tensor(y) then error("Dataset: y must be a tensor or nil, got " .. type(y), 2) end
    if y:dim() < 1 or y:size(1) ~= x:size(1) then
      error(string.format("Dataset: x has %d samples (shape %s) but y has shape %s", x:size(1),
        shape_str(x), y:dim() == 0 and "scalar" or shape_str(y)), 2)
    end
  end
  local ds = setmetatable({}, Dataset)
  for k, v in pairs(fields or {}) do ds[k] = v end
  ds.x, ds.y = x, y
  return ds
end

-- Class names "id" for each class id.
local function id_names(ids)
  local names = {}
  for i, id in ipairs(ids) do names[i] = tostring(floor(id)) end
  return names
end

local function range_ids(lo, hi)
  local ids = {}
  for i = lo, hi do ids[#ids + 1] = i end
  return ids
end

function Dataset:size()
  return self.x:size(1)
end

function Dataset:__tostring()
  local parts = { string.format("%d samples, x %s", self:size(), shape_str(self.x)) }
  if self.y then parts[#parts + 1] = "y " .. shape_str(self.y) end
  if self.class_ids then parts[#parts + 1] = #self.class_ids .. " classes" end
  return string.format("Dataset%s: %s", self.name and " " .. self.name or "", table.concat(parts, ", "))
end

-- A new data set with the same fields (shallow) and new x, y.
function Dataset:_with(x, y)
  local ds = setmetatable({}, Dataset)
  for k, v in pairs(self) do ds[k] = v end
  ds.x, ds.y = x, y
  return ds
end

-- ds:subset(indices): the samples at 1-based positions (a table or a 1-D
-- tensor; repeats allowed), in that order, as a new data set (copies).
function Dataset:subset(indices)
  if type(indices) ~= "table" and not ff.is_tensor(indices) then
    error("subset: indices must be a table or a tensor of 1-based positions, got " .. type(indices), 2)
  end
  local idx = ff.is_tensor(indices) and indices or ff.tensor(indices)
  if idx:dim() ~= 1 then
    error("subset: indices must be 1-D, got shape " .. shape_str(idx), 2)
  end
  local ok, x = pcall(self.x.index_select, self.x, 1, idx)
  if not ok then error("subset: " .. tostring(x), 2) end
  return self:_with(x, self.y and self.y:index_select(1, idx))
end

-- ds:classes_subset(ids): the samples of the classes whose data-set ids are
-- listed (ids as the data set names them: 0..9 for Fashion-MNIST), relabelled
-- 1..k in the order given.
function Dataset:classes_subset(ids)
  if not self.class_ids or not self.y then
    error("classes_subset: this data set has no classes" ..
      (self.name and " (" .. self.name .. ")" or ""), 2)
  end
  if type(ids) ~= "table" or #ids == 0 then
    error("classes_subset: expected a non-empty list of class ids, e.g. {0, 1}", 2)
  end
  local index_of = {}
  for k, id in ipairs(self.class_ids) do index_of[id] = k end
  local new_label, names, seen = {}, {}, {}
  for i, id in ipairs(ids) do
    local k = index_of[id]
    if not k then
      error(string.format("classes_subset: %s is not a class id of this data set (ids: %s)",
        tostring(id), #self.class_ids > 12
          and self.class_ids[1] .. ".." .. self.class_ids[#self.class_ids]
          or table.concat(self.class_ids, ", ")), 2)
    end
    if seen[id] then error("classes_subset: class id " .. tostring(id) .. " is listed twice", 2) end
    seen[id] = true
    new_label[k] = i
    names[i] = self.classes and self.classes[k] or tostring(id)
  end
  local keep, labels = {}, {}
  for i, v in ipairs(self.y:totable()) do
    local l = new_label[v]
    if l then
      keep[#keep + 1] = i
      labels[#labels + 1] = l
    end
  end
  local ds = self:_with(self.x:index_select(1, ff.tensor(keep)), ff.tensor(labels))
  ds.class_ids = { table.unpack(ids) }
  ds.classes = names
  return ds
end

-- ds:split(fraction [, gen]) -> first, second: a seeded shuffle, then the
-- first round(fraction * N) samples and the rest.
function Dataset:split(fraction, g)
  check_number("split", "fraction", fraction, 0)
  if fraction > 1 then error(string.format("split: fraction = %g must be in [0, 1]", fraction), 2) end
  local n = self:size()
  local k = floor(fraction * n + 0.5)
  local perm = with_generator("split", g, function(gen) return permutation(n, gen) end)
  local a, b = {}, {}
  for i = 1, k do a[i] = perm[i] end
  for i = k + 1, n do b[i - k] = perm[i] end
  return self:subset(a), self:subset(b)
end

-- The per-channel (dim 2) statistic v as a tensor shaped to broadcast over x.
local function channel_stat(x, v, what)
  if type(v) == "number" or ff.is_tensor(v) then return v end
  if type(v) ~= "table" then
    error(string.format("normalize: %s must be a number, a table or a tensor, got %s", what, type(v)), 3)
  end
  if x:dim() < 2 or #v ~= x:size(2) then
    error(string.format("normalize: %s has %d values but x (%s) has %s channels (dim 2)", what, #v,
      shape_str(x), x:dim() < 2 and "no" or tostring(x:size(2))), 3)
  end
  local shape = { 1, #v }
  for _ = 3, x:dim() do shape[#shape + 1] = 1 end
  return ff.tensor(v):view(shape)
end

-- ds:normalize([mean [, std]]): x = (x - mean) / std in place. mean and std
-- are numbers, per-channel tables (dim 2) or tensors (broadcast); when nil,
-- the mean and population std of all of x. Returns ds; ds.mean, ds.std
-- keep the values used (to normalise a test set the same way).
function Dataset:normalize(mean, std)
  local x = self.x
  if mean == nil then mean = x:mean():item() end
  if std == nil then
    std = sqrt(x:var(nil, false):item())
    if std == 0 or std ~= std then std = 1 end
  end
  local m, s = channel_stat(x, mean, "mean"), channel_stat(x, std, "std")
  x:sub_(m):div_(s)
  self.mean, self.std = mean, std
  return self
end

-- ---------------------------------------------------------------------------
-- Finding files

local function exists(path)
  -- (a sandboxed recipe's path outside its data locations is an error
  -- saying how to allow it, not a file "not found")
  local f = sandbox.open(path, "rb", "data")
  if f then
    local ok = f:read(0) ~= nil or f:seek("end") ~= nil
    f:close()
    return ok
  end
  return false
end

-- The directories to search: path when given; else $FIREFLY_DATA (its
-- `sub` subdirectories, then itself) and the default directory.
local function search_dirs(path, subdirs, default)
  local bases, dirs = {}, {}
  if path then
    bases[1] = path
  else
    local env = os.getenv("FIREFLY_DATA")
    if env and env ~= "" then bases[1] = env end
  end
  for _, base in ipairs(bases) do
    base = base:gsub("/+$", "")
    if base == "" then base = "/" end
    for _, sub in ipairs(subdirs) do dirs[#dirs + 1] = base .. "/" .. sub end
    dirs[#dirs + 1] = base
  end
  if not path and default then dirs[#dirs + 1] = default end
  return dirs
end

-- The first of dir/name and dir/name.gz (or name without .gz) that exists,
-- over dirs; nil and the list of tried paths otherwise.
local function find_file(dirs, name)
  local tried = {}
  for _, dir in ipairs(dirs) do
    for _, n in ipairs { name, name .. ".gz" } do
      local p = dir .. "/" .. n
      if exists(p) then return p, dir end
      tried[#tried + 1] = p
    end
  end
  return nil, tried
end

-- The directory holding all of names (first one wins) with their paths.
local function find_set(fn, dirs, names, hint)
  local tried = {}
  for _, dir in ipairs(dirs) do
    local paths = {}
    for i, name in ipairs(names) do
      paths[i] = find_file({ dir }, name)
      if not paths[i] then break end
    end
    if #paths == #names then return paths end
    tried[#tried + 1] = dir
  end
  if #dirs == 0 then
    error(string.format("%s: no directory to read from: pass path = <directory> or set FIREFLY_DATA. %s",
      fn, hint), 3)
  end
  local missing = {}
  for _, dir in ipairs(dirs) do
    for _, name in ipairs(names) do
      if not find_file({ dir }, name) then missing[#missing + 1] = dir .. "/" .. name; break end
    end
  end
  error(string.format("%s: cannot find %s (tried %s, with or without .gz). %s", fn,
    table.concat(names, ", "), table.concat(missing, ", "), hint), 3)
end

-- ---------------------------------------------------------------------------
-- IDX data sets (MNIST layout)

-- Labels of a label tensor: non-negative integers; returns the 1-based
-- labels (in place) and the largest raw id.
local function labels_from_raw(fn, y, path)
  if y:dim() ~= 1 then
    error(string.format("%s: %s: labels must be 1-D, the file has shape %s", fn, path, shape_str(y)), 3)
  end
  local maxid = -1
  if y:numel() > 0 then
    local lo, hi = y:min():item(), y:max():item()
    if lo < 0 or hi ~= hi then
      error(string.format("%s: %s: labels must be integers >= 0, found %g", fn, path, lo), 3)
    end
    for i, v in ipairs(y:totable()) do
      if v ~= floor(v) then
        error(string.format("%s: %s: label %d is %g, not an integer", fn, path, i, v), 3)
      end
    end
    maxid = hi
  end
  y:add_(1)
  return y, floor(maxid)
end

local function read_idx_pair(fn, images, labels)
  local x = ff.read_idx(images)
  local y, maxid
  if labels then
    y, maxid = labels_from_raw(fn, ff.read_idx(labels), labels)
    if y:size(1) ~= x:size(1) then
      error(string.format("%s: %s has %d images but %s has %d labels", fn, images, x:size(1),
        labels, y:size(1)), 3)
    end
  end
  return x, y, maxid
end

-- data.idx(images_path [, labels_path]): the raw IDX data (x as stored, any
-- shape), labels 1-based (raw id + 1), class ids 0..max.
function data.idx(images, labels)
  if type(images) ~= "string" then error("idx: images_path must be a string", 2) end
  if labels ~= nil and type(labels) ~= "string" then error("idx: labels_path must be a string or nil", 2) end
  local x, y, maxid = read_idx_pair("idx", images, labels)
  local fields = { name = images:match("([^/]+)$") }
  if y then
    fields.class_ids = range_ids(0, maxid)
    fields.classes = id_names(fields.class_ids)
  end
  return data.Dataset(x, y, fields)
end

local IDX_FILES = {
  train = { "train-images-idx3-ubyte", "train-labels-idx1-ubyte" },
  test = { "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte" },
}

local function load_mnist_like(fn, opts, cfg)
  opts = check_options(fn, opts, set { "split", "path", "normalize" })
  local split = opts.split or "train"
  local files = IDX_FILES[split]
  if not files then
    error(string.format("%s: split must be \"train\" or \"test\", got %s", fn, tostring(split)), 2)
  end
  local dirs = search_dirs(opts.path, cfg.subdirs, cfg.default)
  local paths = find_set(fn, dirs, files, cfg.hint)
  local x, y = read_idx_pair(fn, paths[1], paths[2])
  if x:dim() ~= 3 then
    error(string.format("%s: %s: expected images N x H x W, the file has shape %s", fn, paths[1],
      shape_str(x)), 2)
  end
  if y:max():item() > #cfg.classes then
    error(string.format("%s: %s: label %d out of range 0..%d", fn, paths[2], y:max():item() - 1,
      #cfg.classes - 1), 2)
  end
  x = x:view(x:size(1), 1, x:size(2), x:size(3))
  x:div_(255)
  local ds = data.Dataset(x, y, {
    name = cfg.name .. " " .. split, classes = cfg.classes, class_ids = range_ids(0, #cfg.classes - 1),
    files = paths,
  })
  if opts.normalize ~= false then ds:normalize(cfg.mean, cfg.std) end
  return ds
end

data.FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

-- data.locations(): the documented data locations ($FIREFLY_DATA and the
-- Debian packages' directories); a sandboxed recipe reads data from these
-- (and from paths given on the command line).
function data.locations()
  local dirs = {}
  local env = os.getenv("FIREFLY_DATA")
  if env and env ~= "" then dirs[#dirs + 1] = env end
  dirs[#dirs + 1] = data.FASHION_MNIST_DIR
  return dirs
end

-- data.fashion_mnist{split = "train", path = nil, normalize = true}
function data.fashion_mnist(opts)
  return load_mnist_like("fashion_mnist", opts, {
    name = "fashion-mnist",
    subdirs = { "fashion-mnist" },
    default = data.FASHION_MNIST_DIR,
    hint = "`make deps` installs the Debian package dataset-fashion-mnist (into " ..
        data.FASHION_MNIST_DIR .. "); or pass path = <directory>, or set FIREFLY_DATA",
    classes = { "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
      "Sneaker", "Bag", "Ankle boot" },
    mean = 0.2860, std = 0.3530,
  })
end

-- data.mnist{split = "train", path = <dir>, normalize = true}
function data.mnist(opts)
  return load_mnist_like("mnist", opts, {
    name = "mnist",
    subdirs = { "mnist" },
    hint = "MNIST is not packaged: download the four IDX files (train-images-idx3-ubyte.gz, ...) " ..
        "and pass path = <directory>, or set FIREFLY_DATA",
    classes = id_names(range_ids(0, 9)),
    mean = 0.1307, std = 0.3081,
  })
end

-- ---------------------------------------------------------------------------
-- CIFAR

local CIFAR10_CLASSES = { "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
  "ship", "truck" }

local CIFAR100_FINE = {
  "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
  "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
  "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup",
  "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house",
  "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man",
  "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange", "orchid",
  "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy",
  "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal",
  "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar",
  "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger", "tractor",
  "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
}

local CIFAR100_COARSE = {
  "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
  "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
  "large_man-made_outdoor_things", "large_natural_outdoor_scenes",
  "large_omnivores_and_herbivores", "medium_mammals", "non-insect_invertebrates", "people",
  "reptiles", "small_mammals", "trees", "vehicles_1", "vehicles_2",
}

local file_size = require("firefly.io").file_size

-- Read several CIFAR batch files into one data set. When every file is an
-- uncompressed whole number of records, the result is allocated once and
-- filled batch by batch (peak memory: the data set plus one batch);
-- otherwise the batches are concatenated.
local function read_cifar_files(paths, variant, which)
  local rec = variant == 10 and 3073 or 3074
  local total = 0
  for _, p in ipairs(paths) do
    local s = file_size(p)
    if not s or p:match("%.gz$") or s % rec ~= 0 then total = nil; break end
    total = total + s // rec
  end
  local function read(p)
    local im, fine, coarse = ff.read_cifar(p, variant)
    return im, (which == "coarse" and coarse or fine)
  end
  if #paths == 1 then return read(paths[1]) end
  if total then
    local x, y = ff.empty(total, 3, 32, 32), ff.empty(total)
    local off = 1
    for _, p in ipairs(paths) do
      local im, lab = read(p)
      local n = im:size(1)
      if off + n - 1 > total then
        error(string.format("cifar: %s changed while being read", p), 3)
      end
      x:narrow(1, off, n):copy_(im)
      y:narrow(1, off, n):copy_(lab)
      im:close()
      off = off + n
    end
    return x, y
  end
  local xs, ys = {}, {}
  for i, p in ipairs(paths) do xs[i], ys[i] = read(p) end
  return ff.cat(xs), ff.cat(ys)
end

local function load_cifar(fn, opts, cfg)
  opts = check_options(fn, opts, cfg.options)
  local split = opts.split or "train"
  local files = cfg.files[split]
  if not files then
    error(string.format("%s: split must be \"train\" or \"test\", got %s", fn, tostring(split)), 2)
  end
  local which = opts.label or "fine"
  if which ~= "fine" and which ~= "coarse" then
    error(string.format("%s: label must be \"fine\" or \"coarse\", got %s", fn, tostring(which)), 2)
  end
  local paths = find_set(fn, search_dirs(opts.path, cfg.subdirs), files, cfg.hint)
  local x, y = read_cifar_files(paths, cfg.variant, which)
  x:div_(255)
  local classes = cfg.variant == 100 and which == "coarse" and CIFAR100_COARSE or cfg.classes
  local ds = data.Dataset(x, y, {
    name = cfg.name .. " " .. split, classes = classes, class_ids = range_ids(0, #classes - 1),
    files = paths,
  })
  if opts.normalize ~= false then ds:normalize(cfg.mean, cfg.std) end
  return ds
end

-- data.cifar10{path = <dir>, split = "train", normalize = true}
function data.cifar10(opts)
  return load_cifar("cifar10", opts, {
    name = "cifar-10", variant = 10, classes = CIFAR10_CLASSES,
    options = set { "split", "path", "normalize" },
    subdirs = { "cifar-10-batches-bin", "cifar10", "cifar-10" },
    files = {
      train = { "data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin",
        "data_batch_5.bin" },
      test = { "test_batch.bin" },
    },
    hint = "CIFAR-10 is not packaged: extract cifar-10-binary.tar.gz " ..
        "(https://www.cs.toronto.edu/~kriz/cifar.html) and pass path = <directory>, or set FIREFLY_DATA",
    mean = { 0.4914, 0.4822, 0.4465 }, std = { 0.2470, 0.2435, 0.2616 },
  })
end

-- data.cifar100{path = <dir>, split = "train", label = "fine", normalize = true}
function data.cifar100(opts)
  return load_cifar("cifar100", opts, {
    name = "cifar-100", variant = 100, classes = CIFAR100_FINE,
    options = set { "split", "path", "normalize", "label" },
    subdirs = { "cifar-100-binary", "cifar100", "cifar-100" },
    files = { train = { "train.bin" }, test = { "test.bin" } },
    hint = "CIFAR-100 is not packaged: extract cifar-100-binary.tar.gz " ..
        "(https://www.cs.toronto.edu/~kriz/cifar.html) and pass path = <directory>, or set FIREFLY_DATA",
    mean = { 0.5071, 0.4865, 0.4409 }, std = { 0.2673, 0.2564, 0.2762 },
  })
end

-- ---------------------------------------------------------------------------
-- CSV

local function split_fields(line, sep)
  local out, pos = {}, 1
  while true do
    local s, e = line:find(sep, pos, true)
    if not s then
      out[#out + 1] = line:sub(pos)
      return out
    end
    out[#out + 1] = line:sub(pos, s - 1)
    pos = e + 1
  end
end

-- data.csv(path, {header = false, label = nil, sep = ",", classes = false})
function data.csv(path, opts)
  if type(path) ~= "string" then error("csv: path must be a string, got " .. type(path), 2) end
  opts = check_options("csv", opts, set { "header", "label", "sep", "classes" })
  local sep = opts.sep or ","
  if type(sep) ~= "string" or sep == "" then error("csv: sep must be a non-empty string", 2) end
  local f, err = sandbox.open(path, "rb", "csv")
  if not f then error("csv: cannot open " .. tostring(err), 2) end
  local text = f:read("a")
  f:close()

  local rows, flat, header, ncol = 0, {}, nil, nil
  local labels, label_col = {}, opts.label
  local lineno = 0
  for line in (text .. "\n"):gmatch("(.-)\r?\n") do
    lineno = lineno + 1
    if line:match("^%s*$") then goto continue end
    do
      local fields = split_fields(line, sep)
      if ncol == nil then
        ncol = #fields
        if label_col ~= nil then
          label_col = check_int("csv", "label", label_col, -ncol, ncol)
          if label_col == 0 then error("csv: label = 0 is not a column (columns are 1-based)", 2) end
          if label_col < 0 then label_col = ncol + 1 + label_col end
        end
        if opts.header then
          header = fields
          goto continue
        end
      elseif #fields ~= ncol then
        error(string.format("csv: %s:%d: %d columns, expected %d as on the first line", path, lineno,
          #fields, ncol), 2)
      end
      for c, s in ipairs(fields) do
        local v = tonumber(s)
        if v == nil then
          local shown = s:match("^%s*(.-)%s*$")
          error(string.format("csv: %s:%d: column %d: %s is not a number%s", path, lineno, c,
            shown == "" and "an empty field" or string.format("%q", shown),
            (rows == 0 and not opts.header) and " (a header line? pass header = true)" or ""), 2)
        end
        if c == label_col then labels[#labels + 1] = v else flat[#flat + 1] = v end
      end
      rows = rows + 1
    end
    ::continue::
  end
  if rows == 0 then error(string.format("csv: %s: no data rows", path), 2) end
  local nfeat = ncol - (label_col and 1 or 0)
  if nfeat == 0 then error(string.format("csv: %s: no feature columns besides the label", path), 2) end
  local x = ff.tensor(flat):view(rows, nfeat)
  local fields = { name = path:match("([^/]+)$") }
  if header then
    fields.columns = {}
    for c, name in ipairs(header) do
      name = name:match("^%s*(.-)%s*$")
      if c == label_col then fields.label_name = name else fields.columns[#fields.columns + 1] = name end
    end
  end
  local y
  if label_col then
    if opts.classes then
      -- The distinct ids, sorted, become classes 1..K.
      local distinct, ids = {}, {}
      for i, v in ipairs(labels) do
        if v ~= floor(v) then
          error(string.format("csv: %s: row %d: label %g is not an integer class id", path, i, v), 2)
        end
        if not distinct[v] then distinct[v] = true; ids[#ids + 1] = v end
      end
      table.sort(ids)
      local k = {}
      for i, id in ipairs(ids) do
        ids[i] = math.tointeger(id) or id
        k[id] = i
      end
      for i, v in ipairs(labels) do labels[i] = k[v] end
      fields.class_ids, fields.classes = ids, id_names(ids)
    end
    y = ff.tensor(labels)
  end
  return data.Dataset(x, y, fields)
end

-- ---------------------------------------------------------------------------
-- Synthetic data sets

local ACTIVATIONS = set { "relu", "tanh", "sigmoid", "rbf", "gelu", "silu", "softplus", "elu",
  "leaky_relu", "linear" }

local function activation(fn, name)
  if not ACTIVATIONS[name] then
    local names = {}
    for k in pairs(ACTIVATIONS) do names[#names + 1] = k end
    table.sort(names)
    error(string.format("%s: unknown activation %s (known: %s)", fn, tostring(name),
      table.concat(names, ", ")), 3)
  end
  if name == "linear" then return function(h) return h end end
  return function(h) return h[name](h) end
end

-- data.teacher{n = 1000, d_in = 10, width = 20, d_out = 1, act = "rbf",
--   noise = 0, seed = 0, dist = "normal", teacher = nil}
function data.teacher(opts)
  opts = check_options("teacher", opts,
    set { "n", "d_in", "width", "d_out", "act", "noise", "seed", "dist", "teacher" })
  local n = check_int("teacher", "n", opts.n or 1000, 0)
  local noise = check_number("teacher", "noise", opts.noise or 0, 0)
  local dist = opts.dist or "normal"
  if dist ~= "normal" and dist ~= "uniform" then
    error("teacher: dist must be \"normal\" or \"uniform\", got " .. tostring(dist), 2)
  end
  local g = ff.Generator(check_int("teacher", "seed", opts.seed or 0))
  local T = opts.teacher
  local d_in, width, d_out, act
  if T then
    if type(T) ~= "table" or not (ff.is_tensor(T.W1) and ff.is_tensor(T.W2)) then
      error("teacher: option teacher must be the teacher of another data set (ds.teacher)", 2)
    end
    width, d_in = T.W1:size(1), T.W1:size(2)
    d_out = T.W2:size(1)
    act = T.act
    for _, k in ipairs { "d_in", "width", "d_out", "act" } do
      if opts[k] ~= nil and opts[k] ~= ({ d_in = d_in, width = width, d_out = d_out, act = act })[k] then
        error(string.format("teacher: %s = %s differs from the given teacher's (%s)", k,
          tostring(opts[k]), tostring(({ d_in = d_in, width = width, d_out = d_out, act = act })[k])), 2)
      end
    end
  else
    d_in = check_int("teacher", "d_in", opts.d_in or 10, 1)
    width = check_int("teacher", "width", opts.width or 20, 1)
    d_out = check_int("teacher", "d_out", opts.d_out or 1, 1)
    act = opts.act or "rbf"
    activation("teacher", act)
    local s1, s2 = 1 / sqrt(d_in), 1 / sqrt(width)
    T = {
      W1 = ff.randn(width, d_in, g) * s1, b1 = ff.randn(width, g) * s1,
      W2 = ff.randn(d_out, width, g) * s2, b2 = ff.randn(d_out, g) * s2,
      act = act,
    }
    local f = activation("teacher", act)
    local W1, b1, W2, b2 = T.W1, T.b1, T.W2, T.b2
    -- The teacher as a function: N x d_in -> N x d_out.
    T.forward = function(x) return ff.linear(f(ff.linear(x, W1, b1)), W2, b2) end
  end
  local x
  if dist == "normal" then x = ff.randn(n, d_in, g) else x = ff.rand(n, d_in, g) * 2 - 1 end
  local y = T.forward(x)
  if noise > 0 then y = y + ff.randn(n, d_out, g) * noise end
  return data.Dataset(x, y, { name = "teacher", teacher = T })
end

-- data.two_moons{n = 200, noise = 0.1, seed = 0}
function data.two_moons(opts)
  opts = check_options("two_moons", opts, set { "n", "noise", "seed" })
  local n = check_int("two_moons", "n", opts.n or 200, 0)
  local noise = check_number("two_moons", "noise", opts.noise or 0.1, 0)
  local g = ff.Generator(check_int("two_moons", "seed", opts.seed or 0))
  local n_out = n // 2
  local n_in = n - n_out
  local pts, labels = {}, {}
  local function step(m, i) return m > 1 and pi * i / (m - 1) or 0 end
  for i = 0, n_out - 1 do
    local t = step(n_out, i)
    pts[#pts + 1] = math.cos(t); pts[#pts + 1] = math.sin(t)
    labels[#labels + 1] = 1
  end
  for i = 0, n_in - 1 do
    local t = step(n_in, i)
    pts[#pts + 1] = 1 - math.cos(t); pts[#pts + 1] = 0.5 - math.sin(t)
    labels[#labels + 1] = 2
  end
  local x = ff.tensor(pts):view(n, 2)
  if noise > 0 then x = x + ff.randn(n, 2, g) * noise end
  return data.Dataset(x, ff.tensor(labels),
    { name = "two_moons", classes = { "upper", "lower" }, class_ids = { 1, 2 } })
end

-- data.spirals{n = 300, classes = 2, noise = 0.05, turns = 1.5, seed = 0}
function data.spirals(opts)
  opts = check_options("spirals", opts, set { "n", "classes", "noise", "turns", "seed" })
  local n = check_int("spirals", "n", opts.n or 300, 0)
  local k = check_int("spirals", "classes", opts.classes or 2, 1)
  local noise = check_number("spirals", "noise", opts.noise or 0.05, 0)
  local turns = check_number("spirals", "turns", opts.turns or 1.5)
  local g = ff.Generator(check_int("spirals", "seed", opts.seed or 0))
  local pts, labels = {}, {}
  for c = 1, k do
    local m = n // k + (c <= n % k and 1 or 0)
    for i = 0, m - 1 do
      local r = (i + 1) / m
      local a = 2 * pi * (turns * r + (c - 1) / k)
      pts[#pts + 1] = r * math.cos(a); pts[#pts + 1] = r * math.sin(a)
      labels[#labels + 1] = c
    end
  end
  local x = ff.tensor(pts):view(n, 2)
  if noise > 0 then x = x + ff.randn(n, 2, g) * noise end
  local ids = range_ids(1, k)
  return data.Dataset(x, ff.tensor(labels), { name = "spirals", classes = id_names(ids), class_ids = ids })
end

-- ---------------------------------------------------------------------------
-- Augmentation and batching

local function check_augment(fn, aug, x)
  check_options(fn .. ": augment", aug, set { "crop", "flip" })
  local crop = check_int(fn, "augment.crop", aug.crop or 0, 0, 65536)
  if x:dim() < 3 then
    error(string.format("%s: augment needs images N x C x H x W, got x of shape %s", fn, shape_str(x)), 3)
  end
  return crop, aug.flip and true or false
end

-- data.augment(x, {crop = 4, flip = true} [, gen]): a new batch, each sample
-- randomly shifted (zero padding) and flipped (see ff.random_crop_flip).
function data.augment(x, aug, g)
  if not ff.is_tensor(x) then error("augment: x must be a tensor", 2) end
  local crop, flip = check_augment("augment", aug or {}, x)
  return ff.random_crop_flip(x, crop, flip, g)
end

local Loader = {}
Loader.__index = Loader

-- data.DataLoader(ds, {batch_size = 128, shuffle = true, drop_last = false,
--   generator = nil, augment = nil})
function data.DataLoader(ds, opts)
  if type(ds) ~= "table" or not ff.is_tensor(ds.x) then
    error("DataLoader: expected a data set (a table with a tensor x), got " .. type(ds), 2)
  end
  opts = check_options("DataLoader", opts,
    set { "batch_size", "shuffle", "drop_last", "generator", "augment" })
  local self = setmetatable({}, Loader)
  self.dataset = ds
  self.n = ds.x:size(1)
  if self.n >= (1 << 24) then
    error("DataLoader: more than 2^24 samples cannot be indexed exactly by float index tensors", 2)
  end
  self.batch_size = check_int("DataLoader", "batch_size", opts.batch_size or 128, 1)
  self.shuffle = opts.shuffle ~= false
  self.drop_last = opts.drop_last and true or false
  self.generator = opts.generator
  if self.generator ~= nil and (getmetatable(self.generator) or {}).__name ~= "firefly.Generator" then
    error("DataLoader: generator must be an ff.Generator, got " .. type(self.generator), 2)
  end
  if opts.augment then
    if type(opts.augment) ~= "table" then error("DataLoader: augment must be a table {crop =, flip =}", 2) end
    self.crop, self.flip = check_augment("DataLoader", opts.augment, ds.x)
    self.augment = self.crop > 0 or self.flip
  end
  if ds.y ~= nil and (not ff.is_tensor(ds.y) or ds.y:dim() < 1 or ds.y:size(1) ~= self.n) then
    error("DataLoader: ds.y must be nil or a tensor with as many rows as ds.x", 2)
  end
  self.nbatches = self.drop_last and self.n // self.batch_size
      or (self.n + self.batch_size - 1) // self.batch_size
  self.epoch = 0
  return self
end

function Loader:__len()
  return self.nbatches
end

function Loader:__tostring()
  return string.format("DataLoader(%d samples, batch %d, %d batches%s%s)", self.n, self.batch_size,
    self.nbatches, self.shuffle and ", shuffled" or "",
    self.augment and string.format(", augment crop %d%s", self.crop, self.flip and " flip" or "") or "")
end

-- loader:iter() (or loader()): an iterator over one epoch, yielding x, y
-- batches (y nil when the data set has none). Each call starts an epoch:
-- with shuffle, a new permutation is drawn first (data.randperm's algorithm
-- on the loader's generator); augmentation draws come after, batch by batch.
-- The row order of a new epoch (each call starts one): a fresh
-- permutation with shuffle, else 1..n.
local function epoch_order(self)
  self.epoch = self.epoch + 1
  if self.shuffle then return data.randperm(self.n, self.generator) end
  self._arange = self._arange or ff.arange(1, self.n + 1)
  return self._arange
end

function Loader:iter()
  -- one process's epoch is rank 0 of 1: the batch arithmetic lives in
  -- iter_shard alone
  local shard = self:iter_shard(0, 1)
  return function()
    local len, _, x, y = shard()
    if len == nil then return nil end
    return x, y
  end
end

Loader.__call = Loader.iter

-- The rows of part `part` (0-based) of `parts` equal parts of a batch of
-- len rows: [floor(len*part/parts), floor(len*(part+1)/parts)), as a
-- 0-based offset and a count. Rank r of N takes part r of N; in
-- deterministic training, part k of K (N dividing K) lies inside rank
-- k*N//K's part, so both splits agree.
function data.shard_rows(len, part, parts)
  local lo, hi = len * part // parts, len * (part + 1) // parts
  return lo, hi - lo
end

-- loader:iter_shard(rank, size): an epoch of the same global batches, in
-- the same order, as loader:iter() with the same generator state, but
-- yielding only this rank's rows of each: the global batch length, the
-- 0-based offset of the rank's first row, x and y (the length comes first
-- so the loop goes on when x is nil: a rank's part of a last batch with
-- fewer rows than ranks is empty).
-- With augmentation the whole batch is drawn, so the draws match one
-- process's; without, only the rank's rows are gathered.
function Loader:iter_shard(rank, size)
  if math.type(rank) ~= "integer" or math.type(size) ~= "integer" or size < 1 or rank < 0 or rank >= size then
    error(string.format("DataLoader:iter_shard: rank %s of size %s: expected 0 <= rank < size",
      tostring(rank), tostring(size)), 2)
  end
  local ds, n, bs = self.dataset, self.n, self.batch_size
  local X, Y = ds.x, ds.y
  local order = epoch_order(self)
  local nb, b = self.nbatches, 0
  local augment, crop, flip, g = self.augment, self.crop, self.flip, self.generator
  return function()
    if b >= nb then return nil end
    local start = b * bs + 1
    local len = math.min(bs, n - start + 1)
    b = b + 1
    local off, cnt = data.shard_rows(len, rank, size)
    local x, y
    if augment then
      local idx = order:narrow(1, start, len)
      x = ff.random_crop_flip(X:index_select(1, idx), crop, flip, g)
      if cnt == 0 then return len, off end
      x = x:narrow(1, off + 1, cnt)
      y = Y and Y:index_select(1, idx:narrow(1, off + 1, cnt))
    else
      if cnt == 0 then return len, off end
      local idx = order:narrow(1, start + off, cnt)
      x = X:index_select(1, idx)
      y = Y and Y:index_select(1, idx)
    end
    return len, off, x, y
  end
end

return data
