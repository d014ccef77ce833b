-- test_export: ff.io.export and `firefly export` from the Lua side: the
-- files written, torch names and layouts, the JSON description, and every
-- refusal (unknown modules, options, formats, shapes). That PyTorch and
-- ONNX compute our function is tests/python/test_export.py.
package.path = "tests/lua/?.lua;" .. package.path
local testlib = require "testlib"
local lu = testlib.lu
local ff = require "firefly"
local nn = ff.nn
local fio = ff.io
local cjson = require "cjson"

local tmp = os.tmpname()
os.remove(tmp)
local root = tmp .. "_export"
assert(fio.mkdir(root))
local function path(name) return root .. "/" .. name end

local function read_json(p) return cjson.decode(testlib.read_file(p)) end

local function sh(s) return fio.shell_quote(s) end

-- Runs the interpreter; returns ok, stdout .. stderr.
local function firefly(args)
  local out = path("cmd.out")
  local ok = os.execute("./firefly " .. args .. " >" .. sh(out) .. " 2>&1") == true
  return ok, testlib.read_file(out)
end

TestExport = {}

function TestExport:test_torch_names_layouts_and_json()
  ff.manual_seed(1)
  local net = nn.Sequential { nn.Linear(4, 3), nn.BatchNorm1d(3), nn.ReLU(),
    nn.Residual(nn.Sequential { nn.Linear(3, 2), nn.Tanh(), nn.Linear(2, 3) }) }
  net:add(nn.Linear(3, 2), "head")
  local files = fio.export(net, path("t1"), { format = "torch" })
  lu.assertEquals(files, { path("t1/architecture.json"), path("t1/model.safetensors") })
  local w = fio.load_tensors(path("t1/model.safetensors"))
  -- positional children count from 0 as in torch; names keep their name
  lu.assertTrue(ff.equal(w["0.weight"], net:get(1).weight))
  lu.assertTrue(ff.equal(w["1.running_var"], net:get(2).running_var))
  lu.assertTrue(ff.equal(w["3.f.2.bias"], net:get(4):children()[1]:get(3).bias))
  lu.assertTrue(ff.equal(w["head.weight"], net:get(5).weight))
  local n = 0
  for _ in pairs(w) do n = n + 1 end
  lu.assertEquals(n, 2 + 4 + 4 + 2)
  local arch = read_json(path("t1/architecture.json"))
  lu.assertEquals(arch.format, "firefly-torch-1")
  lu.assertEquals(arch.input_shape, { 4 })
  local m = arch.model
  lu.assertEquals(m.type, "Sequential")
  lu.assertEquals(m.children[1].type, "Linear")
  lu.assertEquals(m.children[1].in_features, 4)
  lu.assertEquals(m.children[2].eps, 1e-5)
  lu.assertEquals(m.children[2].momentum, 0.1)
  lu.assertEquals(m.children[4].type, "Residual")
  lu.assertEquals(m.children[4].children[1].name, "f")
  lu.assertEquals(m.children[4].children[1].children[3].path, "3.f.2")
  lu.assertEquals(m.children[5].name, "head")
end

function TestExport:test_grown_sizes_come_from_the_tensors()
  local net = nn.mlp { 3, 4, 2 }
  net:get(1).weight = ff.randn(6, 3):requires_grad(true) -- as growth does
  net:get(1).bias = ff.randn(6):requires_grad(true)
  net:get(3).weight = ff.randn(2, 6):requires_grad(true)
  fio.export(net, path("t2"), { format = "torch" })
  local m = read_json(path("t2/architecture.json")).model
  lu.assertEquals(m.children[1].out_features, 6)
  lu.assertEquals(m.children[3].in_features, 6)
end

function TestExport:test_onnx_file()
  local net = nn.vgg { cfg = { 2, "M" }, in_channels = 1, classes = 3, input_size = 4 }
  local files = fio.export(net, path("o1"), { format = "onnx", input_shape = { 1, 4, 4 } })
  lu.assertEquals(files, { path("o1/model.onnx") })
  local bytes = testlib.read_file(path("o1/model.onnx"))
  -- field 1 (ir_version) = 7, then the producer name somewhere
  lu.assertEquals(bytes:sub(1, 2), "\8\7")
  lu.assertNotNil(bytes:find("firefly", 1, true))
  lu.assertNotNil(bytes:find("BatchNormalization", 1, true))
  -- the weights are in there, raw
  local w = net:get(1).weight:contiguous()
  local raw = {}
  for i = 1, w:numel() do raw[i] = string.pack("<f", w:view(-1)[i]) end
  lu.assertNotNil(bytes:find(table.concat(raw), 1, true))
end

function TestExport:test_input_shape_read_off_the_first_layer()
  fio.export(nn.Sequential { nn.Residual(nn.Linear(5, 5)) }, path("t3"), {})
  lu.assertEquals(read_json(path("t3/architecture.json")).input_shape, { 5 })
  fio.export(nn.vgg { cfg = { 2 }, in_channels = 3, classes = 2 }, path("o3"), { format = "onnx" })
  lu.assertNotNil(io.open(path("o3/model.onnx")))
end

function TestExport:test_refuses_unknown_modules()
  local Mine = nn.class("MyLayer", nn.Module)
  local m = nn.Module.init(setmetatable({}, Mine))
  local net = nn.Sequential { nn.Linear(2, 2), nn.Residual(nn.Sequential { m }) }
  local err = testlib.error_of(fio.export, net, path("bad"), { format = "torch" })
  lu.assertStrContains(err, "io.export")
  lu.assertStrContains(err, "module 1.f.0 is a MyLayer, which export does not know (known: ")
  lu.assertStrContains(err, "Conv2d")
  lu.assertNil(io.open(path("bad/architecture.json")))
end

function TestExport:test_bad_arguments()
  local net = nn.mlp { 2, 2 }
  lu.assertStrContains(testlib.error_of(fio.export, {}, path("x")),
    "io.export: argument #1 must be a network")
  lu.assertStrContains(testlib.error_of(fio.export, net, ""), "argument #2 must be a directory")
  lu.assertStrContains(testlib.error_of(fio.export, net, path("x"), { fromat = "onnx" }),
    "io.export: unknown option 'fromat' (did you mean 'format'?)")
  lu.assertStrContains(testlib.error_of(fio.export, net, path("x"), { format = "keras" }),
    "io.export: unknown format 'keras' (torch or onnx)")
  lu.assertStrContains(testlib.error_of(fio.export, net, path("x"), { input_shape = { 0 } }),
    "input_shape[1] must be a positive integer or a name")
  lu.assertStrContains(testlib.error_of(fio.export, nn.Sequential { nn.ReLU() }, path("x"),
    { format = "onnx" }), "cannot tell the input's shape")
end

function TestExport:test_onnx_refusals()
  local bn = nn.Sequential { nn.Linear(2, 2), nn.BatchNorm1d(2, { track_running_stats = false }) }
  lu.assertStrContains(testlib.error_of(fio.export, bn, path("x"), { format = "onnx" }),
    "module 1 (BatchNorm1d) cannot be written as ONNX: it normalises by batch statistics")
  local gap = nn.Sequential { nn.Linear(2, 2), nn.GlobalAvgPool() }
  lu.assertStrContains(testlib.error_of(fio.export, gap, path("x"), { format = "onnx" }),
    "module 1 (GlobalAvgPool) cannot be written as ONNX: it needs N x C x H x W input")
end

function TestExport:test_onnx_encode_checks_its_table()
  local enc = require("firefly.core").onnx_encode
  lu.assertStrContains(testlib.error_of(enc, {}), "onnx_encode: model.ir_version must be an integer")
  local m = { ir_version = 7, opset = 13, graph = { name = "g", nodes = { { op = 1 } },
    initializers = {}, inputs = {}, outputs = {} } }
  lu.assertStrContains(testlib.error_of(enc, m), "graph.nodes[1].op must be a string")
  m.graph.nodes = {}
  m.graph.initializers = { { name = "c", floats = { 1, 2 }, dims = { 3 } } }
  lu.assertStrContains(testlib.error_of(enc, m), "graph.initializers[1] has 2 values for dims holding 3")
  m.graph.initializers = { { name = "c", floats = { 1, 2, 3 }, dims = { 3 } } }
  lu.assertTrue(#enc(m) > 10)
  m.graph.initializers = { { name = "t", tensor = ff.randn(3, 2):t() } }
  lu.assertStrContains(testlib.error_of(enc, m), "is not contiguous")
end

function TestExport:test_command()
  ff.manual_seed(2)
  local net = nn.mlp { 3, 5, 2 }
  ff.save(path("ck.safetensors"), { format = "firefly-grow-1", phase = 1, net = net })
  local ok, out = firefly("export " .. sh(path("ck.safetensors")) .. " --to torch " .. sh(path("c1")))
  lu.assertTrue(ok, out)
  lu.assertStrContains(out, "export: wrote " .. path("c1/architecture.json"))
  local w = fio.load_tensors(path("c1/model.safetensors"))
  lu.assertTrue(ff.equal(w["2.weight"], net:get(3).weight))
  -- a checkpoint of the module itself
  ff.save(path("net.safetensors"), net)
  ok, out = firefly("export " .. sh(path("net.safetensors")) .. " --to onnx " .. sh(path("c2")))
  lu.assertTrue(ok, out)
  lu.assertNotNil(io.open(path("c2/model.onnx")))
  ok, out = firefly("export " .. sh(path("net.safetensors")) .. " --to onnx " .. sh(path("c3")) ..
    " --input-shape 3")
  lu.assertTrue(ok, out)
  -- failures say why and exit non-zero
  ok, out = firefly("export " .. sh(path("net.safetensors")))
  lu.assertFalse(ok)
  lu.assertStrContains(out, "export: no --to FORMAT DIR given")
  ok, out = firefly("export")
  lu.assertFalse(ok)
  lu.assertStrContains(out, "export: no checkpoint given")
  fio.save(path("notnet.safetensors"), { a = 1 })
  ok, out = firefly("export " .. sh(path("notnet.safetensors")) .. " --to torch " .. sh(path("c4")))
  lu.assertFalse(ok)
  lu.assertStrContains(out, "holds no network")
  ok, out = firefly("export --help")
  lu.assertTrue(ok)
  lu.assertStrContains(out, "usage: firefly export CHECKPOINT --to torch|onnx DIR")
end

local rc = testlib.run()
os.execute("rm -rf " .. sh(root))
os.exit(rc)
