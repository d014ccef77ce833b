-- firefly.export: a network for other frameworks (ff.io.export and the
-- `firefly export` command). See README.md beside this file.
--
--   ff.io.export(net, "out/torch", { format = "torch" })
--   ff.io.export(net, "out/onnx", { format = "onnx", input_shape = { 1, 28, 28 } })
local options = require "firefly.options"
local fio = require "firefly.io"
local describe = require "firefly.export.describe"

local E = {}

E.writers = { torch = "firefly.export.torch", onnx = "firefly.export.onnx" }
local KNOWN = { format = true, input_shape = true }

local function is_module(x)
  return type(x) == "table" and type(x._children) == "table" and type(x.named_parameters) == "function"
end

local function check_shape(shape)
  if type(shape) ~= "table" or #shape == 0 then
    error("io.export: input_shape must be a non-empty list of sizes (one example, no batch dim), e.g. {1, 28, 28}", 0)
  end
  for i, d in ipairs(shape) do
    if not (math.type(d) == "integer" and d >= 1) and not (type(d) == "string" and d ~= "") then
      error(string.format("io.export: input_shape[%d] must be a positive integer or a name, got %s",
        i, tostring(d)), 0)
    end
  end
  return shape
end

-- export(net, dir, opts) -> list of the files written.
function E.export(net, dir, opts)
  if not is_module(net) then
    error("io.export: argument #1 must be a network (an nn module), got " .. type(net), 0)
  end
  if type(dir) ~= "string" or dir == "" then
    error("io.export: argument #2 must be a directory path (a non-empty string), got " ..
      (dir == "" and "an empty string" or type(dir)), 0)
  end
  if opts ~= nil and type(opts) ~= "table" then
    error("io.export: argument #3 must be an options table {format = \"torch\" | \"onnx\"}", 0)
  end
  opts = opts or {}
  options.check("io.export", opts, KNOWN)
  local format = opts.format or "torch"
  local writer = E.writers[format]
  if not writer then
    error("io.export: unknown format '" .. tostring(format) .. "' (torch or onnx)", 0)
  end
  local root = describe.describe(net)
  local shape = opts.input_shape and check_shape(opts.input_shape) or describe.input_shape(root)
  if not shape and format == "onnx" then
    error("io.export: cannot tell the input's shape from the first layer; give input_shape (one example, e.g. {1, 28, 28})", 0)
  end
  local ok, err = fio.mkdir(dir)
  if not ok then error("io.export: " .. err, 0) end
  return require(writer).write(root, dir, shape)
end

-- A network out of a file: a checkpoint of a module (ff.save(path, net)),
-- or of a table holding one under `net` (grow.run's checkpoints).
function E.load_net(path)
  local obj = fio.load(path)
  if is_module(obj) then return obj end
  if type(obj) == "table" and is_module(obj.net) then return obj.net end
  error("export: " .. path .. " holds no network (expected a saved module, or a table with one under 'net', as grow checkpoints have)", 0)
end

local usage = [[
usage: firefly export CHECKPOINT --to torch|onnx DIR [--input-shape 1,28,28]
Writes the network of CHECKPOINT (a saved module, or a grow checkpoint)
for another framework:
  torch  DIR/model.safetensors (torch state_dict names) and
         DIR/architecture.json; rebuild with tools/firefly_torch.py
  onnx   DIR/model.onnx (opset 13)
  --input-shape   one example's shape (default: read off the first layer)]]
-- (firefly --help prints it too)
E.usage = usage

-- The `firefly export` command: args as strings.
function E.main(...)
  local args = { ... }
  local ckpt, format, dir, shape
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "--to" then
      format, dir = args[i + 1], args[i + 2]
      if not format or not dir then error("export: --to needs a format and a directory\n" .. usage, 0) end
      i = i + 2
    elseif a == "--input-shape" then
      local s = args[i + 1]
      if not s then error("export: --input-shape needs sizes, e.g. 1,28,28", 0) end
      shape = {}
      for part in s:gmatch("[^,]+") do shape[#shape + 1] = math.tointeger(tonumber(part)) or part end
      i = i + 1
    elseif a == "--help" or a == "-h" then
      print(usage)
      return
    elseif not ckpt and a:sub(1, 1) ~= "-" then
      ckpt = a
    else
      error("export: unexpected argument '" .. a .. "'\n" .. usage, 0)
    end
    i = i + 1
  end
  if not ckpt then error("export: no checkpoint given\n" .. usage, 0) end
  if not format then error("export: no --to FORMAT DIR given\n" .. usage, 0) end
  local net = E.load_net(ckpt)
  net:eval()
  local files = E.export(net, dir, { format = format, input_shape = shape })
  print("export: wrote " .. table.concat(files, ", "))
end

return E
