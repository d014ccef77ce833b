-- test_data: file readers (IDX, CIFAR, CSV), the Fashion-MNIST loader, data
-- set operations, the DataLoader (seeding, coverage, augmentation) and the
-- synthetic data sets.
package.path = "tests/lua/?.lua;" .. package.path
local testlib = require "testlib"
local lu = testlib.lu
local ff = require "firefly"
local data = ff.data

-- ---------------------------------------------------------------------------
-- Helpers: temporary files, IDX and CIFAR writers

local tmpdirs = {}
local function tmpdir()
  local d = os.tmpname()
  os.remove(d)
  assert(os.execute("mkdir -p '" .. d .. "'"))
  tmpdirs[#tmpdirs + 1] = d
  return d
end
local TMP = tmpdir()

local function write(path, bytes)
  local f = assert(io.open(path, "wb"))
  f:write(bytes)
  f:close()
  return path
end

local read = testlib.read_file

local function gzip(path)
  assert(os.execute("gzip -c '" .. path .. "' > '" .. path .. ".gz'"))
  return path .. ".gz"
end

local PACK = { [0x08] = "B", [0x09] = "b", [0x0B] = ">i2", [0x0C] = ">i4", [0x0D] = ">f", [0x0E] = ">d" }

-- IDX bytes of a shape and flat values.
local function idx_bytes(shape, values, typ)
  typ = typ or 0x08
  local parts = { string.char(0, 0, typ, #shape) }
  for _, d in ipairs(shape) do parts[#parts + 1] = string.pack(">I4", d) end
  for _, v in ipairs(values) do parts[#parts + 1] = string.pack(PACK[typ], v) end
  return table.concat(parts)
end

local counter = 0
local function tmpfile(name)
  counter = counter + 1
  return TMP .. "/" .. counter .. "_" .. (name or "f")
end

local function range(n, f)
  local t = {}
  for i = 1, n do t[i] = f and f(i) or i end
  return t
end

-- A CIFAR record: labels (1 or 2 bytes, raw 0-based) and a pixel function.
local function cifar_bytes(records, variant)
  local parts = {}
  for _, r in ipairs(records) do
    if variant == 100 then parts[#parts + 1] = string.char(r.coarse, r.fine)
    else parts[#parts + 1] = string.char(r.label) end
    local px = {}
    for j = 0, 3071 do px[j + 1] = string.char((j * 7 + r.seed) % 256) end
    parts[#parts + 1] = table.concat(px)
  end
  return table.concat(parts)
end

local function flat(t)
  return t:contiguous():view(t:numel()):totable()
end

-- ---------------------------------------------------------------------------
TestIdx = {}

function TestIdx:test_ubyte_roundtrip_raw_and_gzip()
  local values = range(24, function(i) return (i * 37) % 256 end)
  local p = write(tmpfile("a.idx"), idx_bytes({ 2, 3, 4 }, values))
  for _, path in ipairs { p, gzip(p) } do
    local t = ff.read_idx(path)
    lu.assertEquals(t:size(), { 2, 3, 4 })
    lu.assertEquals(flat(t), values)
  end
end

function TestIdx:test_every_type()
  local cases = {
    { 0x08, { 0, 1, 255, 128 } },
    { 0x09, { -128, -1, 0, 127 } },
    { 0x0B, { -32768, -2, 300, 32767 } },
    { 0x0C, { -16777216, -5, 70000, 16777216 } },
    { 0x0D, { -1.5, 0.25, 3e10, 1e-20 } },
    { 0x0E, { -2.5, 0.125, 1e30, 7 } },
  }
  for _, c in ipairs(cases) do
    local p = write(tmpfile("t.idx"), idx_bytes({ 4 }, c[2], c[1]))
    local got = ff.read_idx(p):totable()
    for i, v in ipairs(c[2]) do
      -- float32 rounding of the expected value
      lu.assertEquals(got[i], string.unpack("f", string.pack("f", v)), "type " .. c[1])
    end
  end
end

function TestIdx:test_rank_1_and_8_and_zero_size()
  local p = write(tmpfile(), idx_bytes({ 3 }, { 7, 8, 9 }))
  lu.assertEquals(ff.read_idx(p):totable(), { 7, 8, 9 })
  p = write(tmpfile(), idx_bytes({ 1, 1, 1, 1, 1, 1, 1, 2 }, { 5, 6 }))
  lu.assertEquals(ff.read_idx(p):size(), { 1, 1, 1, 1, 1, 1, 1, 2 })
  p = write(tmpfile(), idx_bytes({ 0, 28 }, {}))
  lu.assertEquals(ff.read_idx(p):size(), { 0, 28 })
end

local function idx_error(bytes, name)
  local p = write(tmpfile(name or "bad"), bytes)
  return testlib.error_of(ff.read_idx, p), p
end

function TestIdx:test_open_errors()
  lu.assertStrContains(testlib.error_of(ff.read_idx, TMP .. "/nope.idx"),
    "idx: " .. TMP .. "/nope.idx: cannot open: No such file or directory")
  lu.assertStrContains(testlib.error_of(ff.read_idx, TMP), "is a directory")
  lu.assertStrContains(testlib.error_of(ff.read_idx, {}), "string expected")
end

function TestIdx:test_header_errors()
  local err, p = idx_error("")
  lu.assertStrContains(err, "idx: " .. p .. ": too short for an IDX header (0 bytes")
  err = idx_error("\0\0")
  lu.assertStrContains(err, "too short for an IDX header (2 bytes")
  err = idx_error("\1\0\8\1" .. string.pack(">I4", 1) .. "x")
  lu.assertStrContains(err, "not an IDX file: it starts with bytes 0x01 0x00, expected 0x00 0x00")
  err = idx_error("\0\0\7\1" .. string.pack(">I4", 1) .. "x")
  lu.assertStrContains(err, "unknown data type 0x07")
  err = idx_error("\0\0\8\0")
  lu.assertStrContains(err, "the header gives 0 dims, expected 1..8")
  err = idx_error("\0\0\8\9" .. string.rep("\0\0\0\1", 9) .. "x")
  lu.assertStrContains(err, "the header gives 9 dims, expected 1..8")
  err = idx_error("\0\0\8\3" .. string.pack(">I4", 2) .. "\0\0")
  lu.assertStrContains(err, "truncated header: 3 dims need 16 header bytes, the file has 10")
end

function TestIdx:test_truncated_and_trailing_data()
  local full = idx_bytes({ 2, 3, 4 }, range(24))
  local err, p = idx_error(full:sub(1, 16 + 10))
  lu.assertStrContains(err, "idx: " .. p ..
    ": truncated: header says 2x3x4 (24 bytes) but the data has 10 bytes")
  err = idx_error(full .. "xyz")
  lu.assertStrContains(err, "trailing data: header says 2x3x4 (24 bytes) but the data has 27 bytes (3 too many)")
  -- the same through gzip
  local raw = write(tmpfile("trunc"), full:sub(1, 20))
  err = testlib.error_of(ff.read_idx, gzip(raw))
  lu.assertStrContains(err, "truncated: header says 2x3x4 (24 bytes) but the data has 4 bytes")
  raw = write(tmpfile("trail"), full .. "\0")
  err = testlib.error_of(ff.read_idx, gzip(raw))
  lu.assertStrContains(err, "trailing data")
  -- multi-byte elements: a partial last element is still truncation
  err = idx_error(idx_bytes({ 3 }, { 1, 2, 3 }, 0x0C):sub(1, -2))
  lu.assertStrContains(err, "truncated: header says 3 (12 bytes) but the data has 11 bytes")
end

function TestIdx:test_oversized_dims_refused_without_allocating()
  local before = ff.memory()
  local err = idx_error("\0\0\8\3" .. string.pack(">I4>I4>I4", 65536, 65536, 16) .. "abc")
  lu.assertStrContains(err, "truncated: header says 65536x65536x16 (68719476736 bytes) but the data has 3 bytes")
  local raw = write(tmpfile("big"), "\0\0\14\2" .. string.pack(">I4>I4", 4000000000, 1000) .. "abc")
  lu.assertStrContains(testlib.error_of(ff.read_idx, gzip(raw)),
    "truncated: header says 4000000000x1000 (32000000000000 bytes) but the data has 3 bytes")
  err = idx_error("\0\0\8\8" .. string.rep("\255\255\255\255", 8))
  lu.assertStrContains(err, "overflow")
  err = idx_error("\0\0\14\3" .. string.pack(">I4>I4>I4", 4294967295, 4294967295, 4))
  lu.assertStrContains(err, "overflow")
  lu.assertEquals(ff.memory(), before)
end

function TestIdx:test_corrupt_gzip()
  local values = range(4000, function(i) return (i * i) % 251 end)
  local raw = write(tmpfile("z"), idx_bytes({ 4000 }, values))
  local gz = read(gzip(raw))
  -- flip bytes in the middle of the deflate stream
  local bad = gz:sub(1, 40) .. string.char((gz:byte(41) + 77) % 256, (gz:byte(42) + 3) % 256) .. gz:sub(43)
  local err = testlib.error_of(ff.read_idx, write(tmpfile("bad.gz"), bad))
  lu.assertStrContains(err, "idx: ")
  lu.assertTrue(err:find("corrupt gzip") ~= nil or err:find("truncated") ~= nil or
    err:find("trailing") ~= nil, err)
  -- a gzip file cut short
  err = testlib.error_of(ff.read_idx, write(tmpfile("cut.gz"), gz:sub(1, #gz // 2)))
  lu.assertStrContains(err, "the .gz file is cut short")
  -- a damaged checksum at the end
  local crc = gz:sub(1, -9) .. string.char((gz:byte(-8) + 1) % 256) .. gz:sub(-7)
  err = testlib.error_of(ff.read_idx, write(tmpfile("crc.gz"), crc))
  lu.assertStrContains(err, "corrupt gzip")
end

-- Random damage never crashes: every read succeeds or raises an idx error.
function TestIdx:test_fuzz_no_crash()
  local raw = idx_bytes({ 3, 5, 7 }, range(105, function(i) return i % 256 end))
  local rawp = write(tmpfile("fz"), raw)
  local gz = read(gzip(rawp))
  local g = ff.Generator(7)
  local path = tmpfile("fuzz")
  local ok_count = 0
  for it = 1, 400 do
    local base = it % 2 == 0 and raw or gz
    local bytes
    local kind = g:random(4)
    if kind == 1 then -- truncate
      bytes = base:sub(1, g:random(#base) - 1)
    elseif kind == 2 then -- flip some bytes
      local b = { base:byte(1, -1) }
      for _ = 1, g:random(4) do
        local i = g:random(#b)
        b[i] = g:random(256) - 1
      end
      bytes = string.char(table.unpack(b))
    elseif kind == 3 then -- append garbage
      bytes = base .. string.rep(string.char(g:random(256) - 1), g:random(9))
    else -- damage the header only
      local b = { base:byte(1, -1) }
      b[g:random(math.min(16, #b))] = g:random(256) - 1
      bytes = string.char(table.unpack(b))
    end
    write(path, bytes)
    local ok, res = pcall(ff.read_idx, path)
    if ok then
      ok_count = ok_count + 1
      lu.assertTrue(ff.is_tensor(res))
    else
      lu.assertStrContains(tostring(res), "idx: " .. path .. ": ")
    end
  end
  lu.assertTrue(ok_count < 400)
end

-- ---------------------------------------------------------------------------
TestCifar = {}

local C10 = { { label = 3, seed = 1 }, { label = 0, seed = 2 }, { label = 9, seed = 3 } }
local C100 = { { coarse = 19, fine = 99, seed = 4 }, { coarse = 0, fine = 5, seed = 5 } }

local function check_pixels(images, records)
  lu.assertEquals(images:size(), { #records, 3, 32, 32 })
  for i, r in ipairs(records) do
    local px = flat(images[i])
    for _, j in ipairs { 0, 1, 1023, 1024, 2048, 3071 } do
      lu.assertEquals(px[j + 1], (j * 7 + r.seed) % 256)
    end
  end
end

function TestCifar:test_cifar10_roundtrip_raw_and_gzip()
  local p = write(tmpfile("c10.bin"), cifar_bytes(C10, 10))
  for _, path in ipairs { p, gzip(p) } do
    local im, lab, extra = ff.read_cifar(path, 10)
    check_pixels(im, C10)
    lu.assertEquals(lab:totable(), { 4, 1, 10 }) -- 1-based
    lu.assertNil(extra)
  end
end

function TestCifar:test_cifar100_with_coarse()
  local p = write(tmpfile("c100.bin"), cifar_bytes(C100, 100))
  local im, fine, coarse = ff.read_cifar(p, 100)
  check_pixels(im, C100)
  lu.assertEquals(fine:totable(), { 100, 6 })
  lu.assertEquals(coarse:totable(), { 20, 1 })
end

function TestCifar:test_errors()
  local p10 = write(tmpfile("c10.bin"), cifar_bytes(C10, 10))
  local err = testlib.error_of(ff.read_cifar, p10, 100)
  lu.assertStrContains(err, "cifar: " .. p10 .. ": size 9219 bytes is not a whole number of CIFAR-100 records (3074 bytes")
  lu.assertStrContains(err, "variant 10?")
  err = testlib.error_of(ff.read_cifar, write(tmpfile("c.bin"), cifar_bytes(C10, 10) .. "x"), 10)
  lu.assertStrContains(err, "not a whole number of CIFAR-10 records (3073 bytes: 1 label byte + 3072 pixel bytes); 3 records and 1 bytes left over")
  lu.assertStrContains(testlib.error_of(ff.read_cifar, write(tmpfile("e.bin"), ""), 10), "empty file")
  err = testlib.error_of(ff.read_cifar, write(tmpfile("l.bin"), cifar_bytes({ { label = 12, seed = 0 } }, 10)), 10)
  lu.assertStrContains(err, "record 1 has a label 12, expected 0..9")
  err = testlib.error_of(ff.read_cifar, write(tmpfile("l.bin"),
    cifar_bytes({ { coarse = 1, fine = 2, seed = 0 }, { coarse = 25, fine = 2, seed = 0 } }, 100)), 100)
  lu.assertStrContains(err, "record 2 has coarse label 25, expected 0..19")
  lu.assertStrContains(testlib.error_of(ff.read_cifar, p10, 7), "variant must be 10 or 100, got 7")
  lu.assertStrContains(testlib.error_of(ff.read_cifar, TMP .. "/none.bin", 10), "cannot open")
  -- a corrupt gzip
  local gz = read(gzip(p10))
  err = testlib.error_of(ff.read_cifar, write(tmpfile("c.bin.gz"), gz:sub(1, #gz - 30)), 10)
  lu.assertStrContains(err, "cifar: ")
end

function TestCifar:test_cifar10_dataset_from_directory()
  local dir = tmpdir() .. "/cifar-10-batches-bin"
  os.execute("mkdir -p '" .. dir .. "'")
  for i = 1, 5 do
    write(dir .. "/data_batch_" .. i .. ".bin",
      cifar_bytes({ { label = i, seed = i }, { label = 0, seed = 10 + i } }, 10))
  end
  write(dir .. "/test_batch.bin", cifar_bytes(C10, 10))
  local base = dir:match("(.*)/[^/]+$")
  local train = data.cifar10 { path = base, normalize = false }
  lu.assertEquals(train.x:size(), { 10, 3, 32, 32 })
  lu.assertEquals(train.y:totable(), { 2, 1, 3, 1, 4, 1, 5, 1, 6, 1 })
  lu.assertAlmostEquals(train.x[{ 3, 1, 1, 2 }], (7 + 2) / 255, 1e-6)
  lu.assertEquals(train.classes[1], "airplane")
  local test = data.cifar10 { path = dir, split = "test" }
  lu.assertEquals(test:size(), 3)
  -- normalised per channel
  local raw = data.cifar10 { path = dir, split = "test", normalize = false }
  lu.assertAlmostEquals(test.x[{ 1, 2, 1, 1 }], (raw.x[{ 1, 2, 1, 1 }] - 0.4822) / 0.2435, 1e-5)
  lu.assertEquals(test.class_ids[10], 9)
  -- gzipped batches are read too (then concatenated)
  local gzdir = tmpdir()
  for i = 1, 5 do
    local p = write(gzdir .. "/data_batch_" .. i .. ".bin", cifar_bytes({ { label = i, seed = i } }, 10))
    gzip(p)
    os.remove(p)
  end
  local gz = data.cifar10 { path = gzdir, normalize = false }
  lu.assertEquals(gz.y:totable(), { 2, 3, 4, 5, 6 })
  lu.assertAlmostEquals(gz.x[{ 5, 3, 32, 32 }], (3071 * 7 + 5) % 256 / 255, 1e-6)
end

function TestCifar:test_cifar100_dataset_and_missing()
  local dir = tmpdir()
  write(dir .. "/train.bin", cifar_bytes(C100, 100))
  write(dir .. "/test.bin", cifar_bytes(C100, 100))
  local fine = data.cifar100 { path = dir }
  lu.assertEquals(fine.y:totable(), { 100, 6 })
  lu.assertEquals(fine.classes[100], "worm")
  lu.assertEquals(#fine.classes, 100)
  local coarse = data.cifar100 { path = dir, split = "test", label = "coarse" }
  lu.assertEquals(coarse.y:totable(), { 20, 1 })
  lu.assertEquals(#coarse.classes, 20)
  lu.assertEquals(coarse.classes[20], "vehicles_2")
  local err = testlib.error_of(data.cifar10, { path = dir })
  lu.assertStrContains(err, "cifar10: cannot find data_batch_1.bin")
  lu.assertStrContains(err, dir .. "/data_batch_1.bin")
  lu.assertStrContains(testlib.error_of(data.cifar100, { path = dir, label = "medium" }),
    "label must be \"fine\" or \"coarse\"")
  lu.assertStrContains(testlib.error_of(data.cifar100, { path = dir, split = "val" }),
    "split must be \"train\" or \"test\"")
end

-- ---------------------------------------------------------------------------
-- Fashion-MNIST (the real files of the Debian package)

local fashion_cache
local function fashion_train()
  if not fashion_cache then
    local t0 = ff.clock()
    fashion_cache = data.fashion_mnist { split = "train", normalize = false }
    print(string.format("\n  Fashion-MNIST train loaded in %.3f s", ff.clock() - t0))
  end
  return fashion_cache
end

TestFashion = {}

function TestFashion:test_train_shapes_labels_and_pixels()
  local ds = fashion_train()
  lu.assertEquals(ds.x:size(), { 60000, 1, 28, 28 })
  lu.assertEquals(ds.y:size(), { 60000 })
  lu.assertEquals(ds:size(), 60000)
  lu.assertEquals(ds.y:min():item(), 1)
  lu.assertEquals(ds.y:max():item(), 10)
  lu.assertEquals(ds.y[1], 10)
  lu.assertEquals(ds.classes[ds.y[1]], "Ankle boot")
  lu.assertEquals(ds.class_ids[ds.y[1]], 9)
  lu.assertAlmostEquals(ds.x:mean():item(), 0.2860, 1e-3)
  lu.assertAlmostEquals(math.sqrt(ds.x:var(nil, false):item()), 0.3530, 1e-3)
  lu.assertEquals(ds.x:min():item(), 0)
  lu.assertEquals(ds.x:max():item(), 1)
  -- 6000 of each class
  local counts = {}
  for _, v in ipairs(ds.y:totable()) do counts[v] = (counts[v] or 0) + 1 end
  for c = 1, 10 do lu.assertEquals(counts[c], 6000) end
end

function TestFashion:test_test_split_normalised()
  local t0 = ff.clock()
  local ds = data.fashion_mnist { split = "test" }
  print(string.format("\n  Fashion-MNIST test loaded and normalised in %.3f s", ff.clock() - t0))
  lu.assertEquals(ds.x:size(), { 10000, 1, 28, 28 })
  lu.assertEquals(ds.y:size(), { 10000 })
  lu.assertEquals(ds.y[1], 10)
  -- standardised with the training set's statistics: near 0 and 1
  lu.assertAlmostEquals(ds.x:mean():item(), (0.2868 - 0.2860) / 0.3530, 0.01)
  lu.assertEquals(ds.mean, 0.2860)
  lu.assertEquals(ds.std, 0.3530)
  lu.assertAlmostEquals(ds.x:min():item(), -0.2860 / 0.3530, 1e-5)
end

function TestFashion:test_missing_files_and_bad_options()
  local dir = tmpdir()
  local err = testlib.error_of(data.fashion_mnist, { path = dir })
  lu.assertStrContains(err, "fashion_mnist: cannot find train-images-idx3-ubyte")
  lu.assertStrContains(err, dir .. "/train-images-idx3-ubyte")
  lu.assertStrContains(err, "make deps")
  lu.assertStrContains(err, "dataset-fashion-mnist")
  lu.assertStrContains(testlib.error_of(data.fashion_mnist, { split = "valid" }),
    "split must be \"train\" or \"test\"")
  lu.assertStrContains(testlib.error_of(data.fashion_mnist, { splt = "test" }),
    "unknown option 'splt'")
end

-- A tiny IDX data set in the MNIST layout.
local function fake_mnist(dir, n, labels)
  os.execute("mkdir -p '" .. dir .. "'")
  local px = range(n * 4 * 4, function(i) return i % 256 end)
  write(dir .. "/train-images-idx3-ubyte", idx_bytes({ n, 4, 4 }, px))
  write(dir .. "/train-labels-idx1-ubyte", idx_bytes({ n }, labels))
  gzip(dir .. "/train-images-idx3-ubyte")
  os.remove(dir .. "/train-images-idx3-ubyte")
  write(dir .. "/t10k-images-idx3-ubyte", idx_bytes({ 1, 4, 4 }, range(16)))
  write(dir .. "/t10k-labels-idx1-ubyte", idx_bytes({ 1 }, { 0 }))
end

function TestFashion:test_path_and_firefly_data()
  local base = tmpdir()
  fake_mnist(base .. "/fashion-mnist", 3, { 9, 0, 4 })
  local ds = data.fashion_mnist { path = base, normalize = false }
  lu.assertEquals(ds.x:size(), { 3, 1, 4, 4 })
  lu.assertEquals(ds.y:totable(), { 10, 1, 5 })
  lu.assertAlmostEquals(ds.x[{ 1, 1, 1, 2 }], 2 / 255, 1e-7)
  -- FIREFLY_DATA naming a directory with a fashion-mnist/ subdirectory, or
  -- holding the files directly (a child process: the environment is fixed)
  local direct = tmpdir()
  fake_mnist(direct, 2, { 1, 2 })
  for _, case in ipairs { { base, 3 }, { direct, 2 } } do
    local cmd = string.format("FIREFLY_DATA='%s' ./firefly -e 'print(require(\"firefly\").data.fashion_mnist{}:size())'",
      case[1])
    local p = io.popen(cmd)
    local out = p:read("a")
    p:close()
    lu.assertEquals(out, case[2] .. "\n")
  end
  local labels_bad = tmpdir()
  fake_mnist(labels_bad, 2, { 1, 12 })
  lu.assertStrContains(testlib.error_of(data.fashion_mnist, { path = labels_bad }),
    "label 12 out of range 0..9")
end

function TestFashion:test_mnist_and_generic_idx()
  local dir = tmpdir()
  fake_mnist(dir, 4, { 3, 1, 4, 1 })
  local ds = data.mnist { path = dir }
  lu.assertEquals(ds:size(), 4)
  lu.assertEquals(ds.y:totable(), { 4, 2, 5, 2 })
  lu.assertAlmostEquals(ds.x[{ 1, 1, 1, 1 }], (1 / 255 - 0.1307) / 0.3081, 1e-5)
  lu.assertStrContains(testlib.error_of(data.mnist, { path = tmpdir() }), "mnist: cannot find")
  local g = data.idx(dir .. "/train-images-idx3-ubyte.gz", dir .. "/train-labels-idx1-ubyte")
  lu.assertEquals(g.x:size(), { 4, 4, 4 })
  lu.assertEquals(g.x[{ 1, 1, 2 }], 2)
  lu.assertEquals(g.class_ids, { 0, 1, 2, 3, 4 })
  lu.assertEquals(g:classes_subset({ 1 }).y:totable(), { 1, 1 })
  local nolab = data.idx(dir .. "/t10k-images-idx3-ubyte")
  lu.assertNil(nolab.y)
  local wrong = write(dir .. "/wrong-labels", idx_bytes({ 3 }, { 1, 2, 3 }))
  lu.assertStrContains(testlib.error_of(data.idx, dir .. "/train-images-idx3-ubyte.gz", wrong),
    "has 4 images but " .. wrong .. " has 3 labels")
end

-- ---------------------------------------------------------------------------
TestDataset = {}

-- x[i] = {i, -i}, y[i] = class i % 3 + 1
local function toy(n)
  local x = ff.tensor(range(n, function(i) return { i, -i } end))
  local y = ff.tensor(range(n, function(i) return i % 3 + 1 end))
  return data.Dataset(x, y, { class_ids = { 0, 1, 2 }, classes = { "a", "b", "c" }, name = "toy" })
end

function TestDataset:test_subset()
  local ds = toy(10)
  local s = ds:subset({ 3, 1, 3 })
  lu.assertEquals(s.x:totable(), { { 3, -3 }, { 1, -1 }, { 3, -3 } })
  lu.assertEquals(s.y:totable(), { 1, 2, 1 })
  lu.assertEquals(s.classes, ds.classes)
  lu.assertEquals(ds:subset(ff.tensor { 10 }).x:totable(), { { 10, -10 } })
  lu.assertStrContains(testlib.error_of(ds.subset, ds, { 11 }), "out of range")
  lu.assertStrContains(testlib.error_of(ds.subset, ds, "x"), "subset: indices must be")
  lu.assertEquals(tostring(ds), "Dataset toy: 10 samples, x 10x2, y 10, 3 classes")
end

function TestDataset:test_classes_subset_relabels_in_given_order()
  local ds = toy(9) -- y: 2 3 1 2 3 1 2 3 1 ; ids: 1 2 0 1 2 0 1 2 0
  local s = ds:classes_subset { 2, 0 }
  -- keeps id 2 (y 3) and id 0 (y 1), in data order, relabelled 1 and 2
  lu.assertEquals(s.x:select(2, 1):totable(), { 2, 3, 5, 6, 8, 9 })
  lu.assertEquals(s.y:totable(), { 1, 2, 1, 2, 1, 2 })
  lu.assertEquals(s.classes, { "c", "a" })
  lu.assertEquals(s.class_ids, { 2, 0 })
  -- ids stay the data set's: a second subset uses them too
  lu.assertEquals(s:classes_subset({ 0 }).y:totable(), { 1, 1, 1 })
  lu.assertStrContains(testlib.error_of(ds.classes_subset, ds, { 5 }),
    "classes_subset: 5 is not a class id of this data set (ids: 0, 1, 2)")
  lu.assertStrContains(testlib.error_of(ds.classes_subset, ds, { 1, 1 }), "listed twice")
  lu.assertStrContains(testlib.error_of(ds.classes_subset, ds, {}), "non-empty list")
  local reg = data.Dataset(ff.zeros(3, 2), ff.zeros(3, 1))
  lu.assertStrContains(testlib.error_of(reg.classes_subset, reg, { 0 }), "has no classes")
end

function TestDataset:test_fashion_classes_subset()
  local ds = fashion_train()
  local s = ds:classes_subset { 0, 1 }
  lu.assertEquals(s:size(), 12000)
  lu.assertEquals(s.classes, { "T-shirt/top", "Trouser" })
  lu.assertEquals(s.y:min():item(), 1)
  lu.assertEquals(s.y:max():item(), 2)
  local r = ds:classes_subset { 9, 8 }
  lu.assertEquals(r.y[1], 1) -- the first sample is an ankle boot (id 9)
  lu.assertEquals(r.classes[1], "Ankle boot")
end

function TestDataset:test_split()
  local ds = toy(10)
  local a, b = ds:split(0.7, ff.Generator(5))
  lu.assertEquals(a:size(), 7)
  lu.assertEquals(b:size(), 3)
  local seen = {}
  for _, v in ipairs(a.x:select(2, 1):totable()) do seen[v] = true end
  for _, v in ipairs(b.x:select(2, 1):totable()) do
    lu.assertNil(seen[v])
    seen[v] = true
  end
  for i = 1, 10 do lu.assertTrue(seen[i]) end
  local a2 = ds:split(0.7, ff.Generator(5))
  lu.assertTrue(a2.x:equal(a.x))
  local a3 = ds:split(0.7, ff.Generator(6))
  lu.assertFalse(a3.x:equal(a.x))
  lu.assertEquals(select(2, ds:split(1, ff.Generator(1))):size(), 0)
  lu.assertEquals(ds:split(0.29, ff.Generator(1)):size(), 3)
  lu.assertStrContains(testlib.error_of(ds.split, ds, 1.5), "fraction = 1.5 must be in [0, 1]")
  -- without a generator: the default stream, which advances
  ff.manual_seed(3)
  local d1 = ds:split(0.5)
  local d2 = ds:split(0.5)
  ff.manual_seed(3)
  lu.assertTrue(ds:split(0.5).x:equal(d1.x))
  lu.assertFalse(d1.x:equal(d2.x))
end

function TestDataset:test_normalize()
  local ds = data.Dataset(ff.tensor { { 1, 10 }, { 3, 30 } })
  ds:normalize(1, 2)
  lu.assertEquals(ds.x:totable(), { { 0, 4.5 }, { 1, 14.5 } })
  ds = data.Dataset(ff.tensor { { 1, 10 }, { 3, 30 } })
  ds:normalize({ 2, 20 }, { 1, 10 })
  lu.assertEquals(ds.x:totable(), { { -1, -1 }, { 1, 1 } })
  ds = data.Dataset(ff.tensor { { 1, 2 }, { 3, 4 } }):normalize()
  lu.assertAlmostEquals(ds.x:mean():item(), 0, 1e-6)
  lu.assertAlmostEquals(ds.x:var(nil, false):item(), 1, 1e-5)
  lu.assertEquals(ds.mean, 2.5)
  local img = data.Dataset(ff.ones(2, 3, 2, 2)):normalize({ 1, 0, 0.5 }, { 1, 1, 0.5 })
  lu.assertEquals(img.x:sum(1):sum(2):sum(2):totable(), { 0, 8, 8 })
  lu.assertStrContains(testlib.error_of(img.normalize, img, { 1, 2 }, 1),
    "normalize: mean has 2 values but x (2x3x2x2) has 3 channels")
end

function TestDataset:test_constructor_errors()
  lu.assertStrContains(testlib.error_of(data.Dataset, {}), "x must be a tensor")
  lu.assertStrContains(testlib.error_of(data.Dataset, ff.zeros(3, 2), ff.zeros(4)),
    "x has 3 samples (shape 3x2) but y has shape 4")
end

-- ---------------------------------------------------------------------------
TestLoader = {}

-- x[i] = i (as N x 1), y = i as well: batches reveal which samples they hold
local function ids_dataset(n)
  return data.Dataset(ff.arange(1, n + 1):view(n, 1), ff.arange(1, n + 1))
end

local function epoch_ids(loader)
  local all, sizes = {}, {}
  for x, y in loader:iter() do
    lu.assertTrue(x:view(x:size(1)):equal(y))
    sizes[#sizes + 1] = x:size(1)
    for _, v in ipairs(y:totable()) do all[#all + 1] = v end
  end
  return all, sizes
end

function TestLoader:test_batch_counts_and_drop_last()
  local ds = ids_dataset(10)
  local l = data.DataLoader(ds, { batch_size = 4, shuffle = false })
  lu.assertEquals(#l, 3)
  local ids, sizes = epoch_ids(l)
  lu.assertEquals(ids, range(10))
  lu.assertEquals(sizes, { 4, 4, 2 })
  l = data.DataLoader(ds, { batch_size = 4, drop_last = true, generator = ff.Generator(1) })
  lu.assertEquals(#l, 2)
  ids, sizes = epoch_ids(l)
  lu.assertEquals(sizes, { 4, 4 })
  lu.assertEquals(#ids, 8)
  lu.assertEquals(#data.DataLoader(ds, { batch_size = 10 }), 1)
  lu.assertEquals(#data.DataLoader(ds, { batch_size = 11, drop_last = true }), 0)
  lu.assertEquals(#data.DataLoader(ids_dataset(0), {}), 0)
  lu.assertEquals(#data.DataLoader(ds), 1) -- batch 128
end

function TestLoader:test_every_sample_once_per_epoch()
  local l = data.DataLoader(ids_dataset(103), { batch_size = 8, generator = ff.Generator(2) })
  local first
  for epoch = 1, 3 do
    local ids = epoch_ids(l)
    lu.assertEquals(#ids, 103)
    local sorted = { table.unpack(ids) }
    table.sort(sorted)
    lu.assertEquals(sorted, range(103))
    lu.assertNotEquals(ids, range(103))
    if epoch == 1 then first = ids else lu.assertNotEquals(ids, first) end
  end
  lu.assertEquals(l.epoch, 3)
end

function TestLoader:test_seeded_reproducibility()
  local ds = ids_dataset(50)
  local a = epoch_ids(data.DataLoader(ds, { batch_size = 7, generator = ff.Generator(11) }))
  local b = epoch_ids(data.DataLoader(ds, { batch_size = 7, generator = ff.Generator(11) }))
  local c = epoch_ids(data.DataLoader(ds, { batch_size = 7, generator = ff.Generator(12) }))
  lu.assertEquals(a, b)
  lu.assertNotEquals(a, c)
  -- the documented algorithm: Fisher-Yates from the end with g:random(i)
  local g, p = ff.Generator(11), range(50)
  for i = 50, 2, -1 do
    local j = g:random(i)
    p[i], p[j] = p[j], p[i]
  end
  lu.assertEquals(a, p)
  lu.assertEquals(data.randperm(50, ff.Generator(11)):totable(), p)
  -- `for x, y in loader() do` is the same iteration
  local l = data.DataLoader(ds, { batch_size = 7, generator = ff.Generator(11) })
  local ids = {}
  for _, y in l() do for _, v in ipairs(y:totable()) do ids[#ids + 1] = v end end
  lu.assertEquals(ids, a)
end

-- A reference of ff.random_crop_flip written from its documented rule.
local function reference_augment(x, pad, flip, g)
  local n, c, h, w = table.unpack(x:size())
  local src = x:totable()
  local out = {}
  for s = 1, n do
    local dy, dx = 0, 0
    if pad > 0 then
      dy = g:random(2 * pad + 1) - 1 - pad
      dx = g:random(2 * pad + 1) - 1 - pad
    end
    local f = flip and g:random(2) == 2
    out[s] = {}
    for ch = 1, c do
      out[s][ch] = {}
      for i = 1, h do
        local row = {}
        for j = 1, w do
          local jj = f and (w + 1 - j) or j
          local si, sj = i + dy, jj + dx
          row[j] = (si >= 1 and si <= h and sj >= 1 and sj <= w) and src[s][ch][si][sj] or 0
        end
        out[s][ch][i] = row
      end
    end
  end
  return ff.tensor(out)
end

function TestLoader:test_augment_matches_reference()
  local x = ff.randn(20, 2, 5, 6, ff.Generator(1))
  for _, case in ipairs { { 0, true }, { 2, false }, { 2, true }, { 7, true }, { 0, false } } do
    local got = ff.random_crop_flip(x, case[1], case[2], ff.Generator(9))
    local want = reference_augment(x, case[1], case[2], ff.Generator(9))
    lu.assertTrue(got:equal(want), "pad " .. case[1] .. " flip " .. tostring(case[2]))
  end
  -- rank 3 (N x H x W) and non-contiguous input
  local x3 = ff.randn(4, 6, 5, ff.Generator(2)):transpose(2, 3)
  local got = ff.random_crop_flip(x3, 1, true, ff.Generator(3))
  local want = reference_augment(x3:contiguous():view(4, 1, 5, 6), 1, true, ff.Generator(3))
  lu.assertTrue(got:view(4, 1, 5, 6):equal(want))
  lu.assertStrContains(testlib.error_of(ff.random_crop_flip, ff.zeros(3, 4), 1, true),
    "random_crop_flip: expected images N x C x H x W (rank >= 3), got shape 3x4")
  lu.assertStrContains(testlib.error_of(ff.random_crop_flip, x, -1), "padding -1 out of range")
end

function TestLoader:test_augmentation_in_loader()
  local n = 64
  local x = ff.rand(n, 1, 8, 8, ff.Generator(4)) + 0.5 -- no zeros in the data
  local ds = data.Dataset(x, ff.arange(1, n + 1))
  local l = data.DataLoader(ds, { batch_size = 16, generator = ff.Generator(5), augment = { crop = 2, flip = true } })
  local flipped, shifted, total = 0, 0, 0
  for bx, by in l:iter() do
    lu.assertEquals(bx:size(), { by:size(1), 1, 8, 8 })
    for i = 1, by:size(1) do
      local orig = x[by[i]]
      local got = bx[i]
      total = total + 1
      if not got:equal(orig) then
        if got:eq(0):sum():item() > 0 then shifted = shifted + 1 end
        if got:equal(orig:index_select(3, range(8, function(j) return 9 - j end))) then
          flipped = flipped + 1
        end
      end
    end
  end
  lu.assertEquals(total, n)
  lu.assertTrue(shifted > n / 2, "crop shifts most samples: " .. shifted)
  lu.assertTrue(flipped > 0, "some samples only flipped")
  -- flip only: about half the samples are mirrored, the rest untouched
  local lf = data.DataLoader(ds, { batch_size = 16, generator = ff.Generator(6), augment = { flip = true } })
  local mirrored, same = 0, 0
  for bx, by in lf() do
    for i = 1, by:size(1) do
      local orig = x[by[i]]
      if bx[i]:equal(orig) then same = same + 1
      elseif bx[i]:equal(orig:index_select(3, range(8, function(j) return 9 - j end))) then
        mirrored = mirrored + 1
      end
    end
  end
  lu.assertEquals(mirrored + same, n)
  lu.assertTrue(mirrored > 16 and mirrored < 48, "mirrored " .. mirrored)
  -- the loader's stream: permutation, then per batch the augmentation draws
  local g = ff.Generator(5)
  local perm = data.randperm(n, g)
  local first = reference_augment(x:index_select(1, perm:narrow(1, 1, 16)), 2, true, g)
  local l2 = data.DataLoader(ds, { batch_size = 16, generator = ff.Generator(5), augment = { crop = 2, flip = true } })
  lu.assertTrue(l2:iter()():equal(first))
  lu.assertStrContains(testlib.error_of(data.DataLoader, ids_dataset(4), { augment = { crop = 1 } }),
    "augment needs images N x C x H x W, got x of shape 4x1")
  lu.assertStrContains(testlib.error_of(data.DataLoader, ds, { augment = { crop = 1, rotate = 3 } }),
    "unknown option 'rotate'")
end

function TestLoader:test_options_and_no_labels()
  local ds = data.Dataset(ff.arange(6):view(6, 1))
  local l = data.DataLoader(ds, { batch_size = 4, shuffle = false })
  local n = 0
  for x, y in l() do
    n = n + 1
    lu.assertNil(y)
    lu.assertTrue(ff.is_tensor(x))
  end
  lu.assertEquals(n, 2)
  lu.assertStrContains(testlib.error_of(data.DataLoader, ds, { batchsize = 4 }), "unknown option 'batchsize'")
  lu.assertStrContains(testlib.error_of(data.DataLoader, ds, { batch_size = 0 }), "batch_size = 0 out of range")
  lu.assertStrContains(testlib.error_of(data.DataLoader, ds, { generator = 5 }), "generator must be an ff.Generator")
  lu.assertStrContains(testlib.error_of(data.DataLoader, 5), "expected a data set")
  lu.assertEquals(tostring(l), "DataLoader(6 samples, batch 4, 2 batches)")
end

function TestLoader:test_fashion_epoch_timing()
  local ds = fashion_train()
  for _, aug in ipairs { false, true } do
    local l = data.DataLoader(ds, { batch_size = 128, generator = ff.Generator(0),
      augment = aug and { crop = 4, flip = true } or nil })
    local t0, nb = ff.clock(), 0
    for x, y in l:iter() do
      nb = nb + 1
      if nb == 1 then lu.assertEquals(x:size(), { 128, 1, 28, 28 }) end
    end
    lu.assertEquals(nb, 469)
    print(string.format("\n  Fashion-MNIST epoch, batch 128%s: %.3f s", aug and ", crop 4 + flip" or "",
      ff.clock() - t0))
  end
  local batch = ds.x:narrow(1, 1, 128)
  local g = ff.Generator(1)
  local t0 = ff.clock()
  for _ = 1, 50 do ff.random_crop_flip(batch, 4, true, g) end
  local per = (ff.clock() - t0) / 50
  -- printed, not asserted: speed belongs to the benchmarks (a loaded
  -- machine would fail a timed assertion)
  print(string.format("  augmentation of one 128x1x28x28 batch: %.3f ms", per * 1e3))
end

-- ---------------------------------------------------------------------------
TestCsv = {}

function TestCsv:test_header_label_and_classes()
  local p = write(tmpfile("a.csv"), "a, b ,label\n1,2,7\n\n3.5,-4e1,3\r\n5,6,7\n")
  local ds = data.csv(p, { header = true, label = 3 })
  lu.assertEquals(ds.x:totable(), { { 1, 2 }, { 3.5, -40 }, { 5, 6 } })
  lu.assertEquals(ds.y:totable(), { 7, 3, 7 })
  lu.assertEquals(ds.columns, { "a", "b" })
  lu.assertEquals(ds.label_name, "label")
  lu.assertNil(ds.class_ids)
  local c = data.csv(p, { header = true, label = -1, classes = true })
  lu.assertEquals(c.y:totable(), { 2, 1, 2 })
  lu.assertEquals(c.class_ids, { 3, 7 })
  lu.assertEquals(c:classes_subset({ 7 }):size(), 2)
  local first = data.csv(p, { header = true, label = 1 })
  lu.assertEquals(first.x:totable(), { { 2, 7 }, { -40, 3 }, { 6, 7 } })
  local nolabel = data.csv(write(tmpfile(), "1;2\n3;4"), { sep = ";" })
  lu.assertEquals(nolabel.x:totable(), { { 1, 2 }, { 3, 4 } })
  lu.assertNil(nolabel.y)
end

function TestCsv:test_errors()
  local p = write(tmpfile("b.csv"), "1,2\n3,x\n")
  lu.assertStrContains(testlib.error_of(data.csv, p), "csv: " .. p .. ":2: column 2: \"x\" is not a number")
  p = write(tmpfile("c.csv"), "1,2\n3,\n")
  lu.assertStrContains(testlib.error_of(data.csv, p), ":2: column 2: an empty field is not a number")
  p = write(tmpfile("d.csv"), "1,2\n\n3,4,5\n")
  lu.assertStrContains(testlib.error_of(data.csv, p), ":3: 3 columns, expected 2")
  p = write(tmpfile("h.csv"), "x,y\n1,2\n")
  lu.assertStrContains(testlib.error_of(data.csv, p), ":1: column 1: \"x\" is not a number (a header line? pass header = true)")
  lu.assertStrContains(testlib.error_of(data.csv, write(tmpfile(), "\n\n")), "no data rows")
  lu.assertStrContains(testlib.error_of(data.csv, write(tmpfile(), "1,2\n"), { label = 3 }), "label = 3 out of range")
  lu.assertStrContains(testlib.error_of(data.csv, write(tmpfile(), "1\n"), { label = 1 }), "no feature columns")
  lu.assertStrContains(testlib.error_of(data.csv, write(tmpfile(), "1,2.5\n"), { label = 2, classes = true }),
    "label 2.5 is not an integer class id")
  lu.assertStrContains(testlib.error_of(data.csv, TMP .. "/none.csv"), "csv: cannot open")
  lu.assertStrContains(testlib.error_of(data.csv, p, { headr = true }), "unknown option 'headr'")
end

-- ---------------------------------------------------------------------------
TestSynthetic = {}

function TestSynthetic:test_teacher_shapes_and_determinism()
  local ds = data.teacher { n = 50, d_in = 4, width = 6, d_out = 2, seed = 3 }
  lu.assertEquals(ds.x:size(), { 50, 4 })
  lu.assertEquals(ds.y:size(), { 50, 2 })
  lu.assertEquals(ds.teacher.W1:size(), { 6, 4 })
  lu.assertEquals(ds.teacher.b1:size(), { 6 })
  lu.assertEquals(ds.teacher.W2:size(), { 2, 6 })
  lu.assertEquals(ds.teacher.b2:size(), { 2 })
  local again = data.teacher { n = 50, d_in = 4, width = 6, d_out = 2, seed = 3 }
  lu.assertTrue(again.x:equal(ds.x) and again.y:equal(ds.y))
  local other = data.teacher { n = 50, d_in = 4, width = 6, d_out = 2, seed = 4 }
  lu.assertFalse(other.y:equal(ds.y))
  -- y is the documented network: linear, rbf, linear
  local t = ds.teacher
  local h = (ds.x:matmul(t.W1:t()) + t.b1)
  local want = (-(h * h) / 2):exp():matmul(t.W2:t()) + t.b2
  lu.assertTrue(ds.y:allclose(want, 1e-4, 1e-5))
  lu.assertTrue(t.forward(ds.x):allclose(ds.y))
  -- a test set from the same teacher
  local test = data.teacher { n = 20, teacher = t, seed = 9 }
  lu.assertEquals(test.x:size(), { 20, 4 })
  lu.assertTrue(t.forward(test.x):allclose(test.y))
  lu.assertStrContains(testlib.error_of(data.teacher, { teacher = t, width = 3 }), "width = 3 differs")
end

function TestSynthetic:test_teacher_options()
  for _, act in ipairs { "relu", "tanh", "sigmoid", "rbf", "gelu", "silu", "softplus", "elu", "leaky_relu", "linear" } do
    local ds = data.teacher { n = 8, act = act }
    lu.assertEquals(ds.y:size(), { 8, 1 })
  end
  local u = data.teacher { n = 500, dist = "uniform" }
  lu.assertTrue(u.x:min():item() >= -1 and u.x:max():item() < 1)
  local clean = data.teacher { n = 100, seed = 1 }
  local noisy = data.teacher { n = 100, seed = 1, noise = 0.5 }
  lu.assertTrue(clean.x:equal(noisy.x))
  local diff = (noisy.y - clean.y)
  lu.assertAlmostEquals(math.sqrt(diff:var():item()), 0.5, 0.15)
  lu.assertStrContains(testlib.error_of(data.teacher, { act = "cosine" }), "unknown activation cosine")
  lu.assertStrContains(testlib.error_of(data.teacher, { dist = "laplace" }), "dist must be")
  lu.assertStrContains(testlib.error_of(data.teacher, { n = -1 }), "n = -1 out of range")
end

function TestSynthetic:test_moons_and_spirals()
  local m = data.two_moons { n = 101, noise = 0.05, seed = 1 }
  lu.assertEquals(m.x:size(), { 101, 2 })
  lu.assertEquals(m.y:size(), { 101 })
  lu.assertEquals(m.y:eq(1):sum():item(), 50)
  lu.assertEquals(m.y:eq(2):sum():item(), 51)
  lu.assertTrue(m.x:equal(data.two_moons { n = 101, noise = 0.05, seed = 1 }.x))
  lu.assertFalse(m.x:equal(data.two_moons { n = 101, noise = 0.05, seed = 2 }.x))
  local clean = data.two_moons { n = 4, noise = 0 }
  lu.assertTrue(clean.x:allclose(ff.tensor { { 1, 0 }, { -1, 0 }, { 0, 0.5 }, { 2, 0.5 } }, 1e-5, 1e-6))
  local s = data.spirals { n = 301, classes = 3, seed = 2 }
  lu.assertEquals(s.x:size(), { 301, 2 })
  lu.assertEquals(s.y:max():item(), 3)
  lu.assertEquals(s.y:eq(1):sum():item(), 101)
  lu.assertEquals(s.y:eq(3):sum():item(), 100)
  lu.assertEquals(s.class_ids, { 1, 2, 3 })
  lu.assertEquals(s:classes_subset({ 3, 1 }):size(), 201)
  lu.assertTrue(s.x:equal(data.spirals { n = 301, classes = 3, seed = 2 }.x))
end

local rc = testlib.run()
for _, d in ipairs(tmpdirs) do
  if d:match("^/tmp/") then os.execute("rm -rf '" .. d .. "'") end
end
os.exit(rc)
