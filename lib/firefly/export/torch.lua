-- firefly.export.torch: a network for PyTorch, as two files in a directory:
--   model.safetensors  the weights and buffers under torch's state_dict keys
--                      ("0.weight", "3.f.0.bias", "1.running_mean"), in
--                      torch's layouts (which are ours: Linear out x in,
--                      Conv2d out x in/groups x kh x kw)
--   architecture.json  the module tree (firefly-torch-1, spec/io.md)
-- tools/firefly_torch.py (standard library + torch) rebuilds the torch.nn
-- modules from the JSON and loads the weights. Both files are written
-- atomically; the weights first, so a reader that finds the JSON finds
-- weights at least as new.
local fio = require "firefly.io"
local ff = require "firefly"

local T = {}

T.FORMAT = "firefly-torch-1"
T.ARCH_FILE, T.WEIGHTS_FILE = "architecture.json", "model.safetensors"

local arr = fio.json_array

-- A node as JSON: lists marked as arrays, tensors as their names.
local function node_json(node)
  local out = { type = node.type, name = node.name, path = node.path }
  for k, v in pairs(node.config) do
    out[k] = type(v) == "table" and arr { table.unpack(v) } or v
  end
  local tensors = arr()
  for _, t in ipairs(node.tensors) do
    tensors[#tensors + 1] = { key = t.key, name = t.name, shape = arr(t.tensor:size()),
      kind = t.buffer and "buffer" or "parameter" }
  end
  out.tensors = tensors
  if node.type == "Sequential" or node.type == "Residual" then
    local children = arr()
    for i, c in ipairs(node.children) do children[i] = node_json(c) end
    out.children = children
  end
  return out
end

local function collect(node, into)
  for _, t in ipairs(node.tensors) do into[t.name] = t.tensor end
  for _, c in ipairs(node.children) do collect(c, into) end
  return into
end

-- write(root, dir, input_shape): input_shape is per example (strings for
-- sizes the network does not fix), or nil.
function T.write(root, dir, input_shape)
  local shape = input_shape and arr { table.unpack(input_shape) } or nil
  local doc = {
    format = T.FORMAT, firefly_version = ff.version or "?", weights = T.WEIGHTS_FILE,
    input_shape = shape, model = node_json(root),
  }
  fio.save_tensors(dir .. "/" .. T.WEIGHTS_FILE, collect(root, {}), { format = T.FORMAT })
  local ok, err = fio.write_atomic(dir .. "/" .. T.ARCH_FILE, fio.json_encode(doc) .. "\n")
  if not ok then error("io.export: " .. err, 0) end
  return { dir .. "/" .. T.ARCH_FILE, dir .. "/" .. T.WEIGHTS_FILE }
end

return T
