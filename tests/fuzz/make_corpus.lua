-- make_corpus.lua: writes the seed corpus of the fuzz targets (tiny valid
-- inputs, so that the fuzzer starts from files that get past the magic and
-- the header checks). Run from the repository root:
--   lua5.4 tests/fuzz/make_corpus.lua
-- The files are checked in; inputs found by fuzzing (corpus/<target>/found-*,
-- crash-*) are kept beside them and replayed by tests/fuzz/run.sh.
local dir = "tests/fuzz/corpus/"

local function write(target, name, bytes)
  os.execute("mkdir -p " .. dir .. target)
  local f = assert(io.open(dir .. target .. "/" .. name, "wb"))
  f:write(bytes)
  f:close()
end

---------------------------------------------------------------- safetensors
local function st(header, data)
  header = header .. string.rep(" ", (8 - #header % 8) % 8)
  return string.pack("<I8", #header) .. header .. (data or "")
end
local function f32(...) return string.pack("<" .. string.rep("f", select("#", ...)), ...) end

write("fuzz_io_file", "seed-two-tensors", st(
  '{"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},' ..
  '"b":{"dtype":"F32","shape":[3],"data_offsets":[16,28]}}', f32(1, 2, 3, 4, 5, 6, 7)))
write("fuzz_io_file", "seed-metadata", st(
  '{"__metadata__":{"format":"firefly-1","firefly":"{\\"tensor\\":\\"w\\",\\"shape\\":[1]}"},' ..
  '"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', f32(0.5)))
write("fuzz_io_file", "seed-empty", st("{}"))
write("fuzz_io_file", "seed-scalar-and-empty", st(
  '{"s":{"dtype":"F32","shape":[],"data_offsets":[0,4]},' ..
  '"z":{"dtype":"F32","shape":[0,3],"data_offsets":[4,4]}}', f32(-1)))

---------------------------------------------------------------- IDX
-- flag byte (bit 0: the harness gzips the rest), then the file
local function idx(type, dims, payload)
  local h = string.char(0, 0, type, #dims)
  for _, d in ipairs(dims) do h = h .. string.pack(">I4", d) end
  return h .. payload
end
write("fuzz_idx", "seed-ubyte", "\0" .. idx(0x08, { 2, 3 }, "\1\2\3\4\5\255"))
write("fuzz_idx", "seed-ubyte-gz", "\1" .. idx(0x08, { 1, 2, 2 }, "\0\1\2\3"))
write("fuzz_idx", "seed-sbyte", "\0" .. idx(0x09, { 3 }, "\255\0\127"))
write("fuzz_idx", "seed-int16", "\0" .. idx(0x0B, { 2 }, string.pack(">i2i2", -5, 300)))
write("fuzz_idx", "seed-int32", "\0" .. idx(0x0C, { 2 }, string.pack(">i4i4", -7, 1 << 25)))
write("fuzz_idx", "seed-float32", "\0" .. idx(0x0D, { 2, 1 }, string.pack(">ff", 1.5, -2)))
write("fuzz_idx", "seed-float64-gz", "\1" .. idx(0x0E, { 2 }, string.pack(">dd", 0.25, 1e300)))

---------------------------------------------------------------- CIFAR
-- flag byte: bit 0 gzip, bit 1 CIFAR-100, bit 2 coarse labels wanted
local pixels = {}
for i = 0, 3071 do pixels[#pixels + 1] = string.char((i * 7) % 256) end
pixels = table.concat(pixels)
write("fuzz_cifar", "seed-cifar10", "\0" .. "\3" .. pixels)
write("fuzz_cifar", "seed-cifar10-gz-two", "\1" .. "\0" .. pixels .. "\9" .. pixels)
write("fuzz_cifar", "seed-cifar100-coarse", "\6" .. "\19\99" .. pixels)
write("fuzz_cifar", "seed-cifar100-gz", "\3" .. "\4\42" .. pixels)

---------------------------------------------------------------- ops
-- Byte programs for fuzz_ops.c (slot, command, arguments...): a few that
-- create tensors, run ops and backward; the fuzzer finds the rest.
write("fuzz_ops", "seed-create-sum-backward",
  "\0\0\2\3\4\0\1\1" .. "\1\8\9\0\0\0\0\0\0\0\0\0\0" .. "\0\12\1\0\1")
write("fuzz_ops", "seed-matmul",
  "\0\0\2\2\3\0\1\1" .. "\1\1\2\3\2\0\1\0" .. "\2\6\0\1\0\0\8")
