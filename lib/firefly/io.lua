-- firefly.io: checkpoints as safetensors files (ff.io, ff.save, ff.load).
--
-- A checkpoint is a safetensors file (8-byte length, JSON header, raw
-- little-endian F32 data), so other tools can open it. Every tensor is a
-- header entry; everything else (the tree of tables, numbers, strings,
-- generators and objects that holds the tensors) is one JSON document in
-- the header's __metadata__ under "firefly", next to "format": "firefly-1".
--
-- Loading never runs code from the file: the tree is JSON, and objects are
-- rebuilt only through classes registered with io.register_class.
-- Recipes are code; checkpoints are data.
--
-- The byte layer (atomic write, size-checked reads) is C: engine/core/io_file.c.
local core = require "firefly.core"
local sandbox = require "firefly.sandbox" -- file access of a sandboxed recipe
local cjson = require("cjson").new() -- our own instance: settings stay local
local options = require "firefly.options"

cjson.decode_invalid_numbers(false)  -- strict JSON: no NaN, Infinity, hex
cjson.decode_max_depth(1000)

local M = {}

M.FORMAT = "firefly-1"
local MAX_JSON_DEPTH = 990  -- what we write stays readable by cjson (1000)

local tensor_mt = getmetatable(core.zeros(0))
local generator_mt = getmetatable(core.Generator())

local function is_tensor(x) return getmetatable(x) == tensor_mt end

---------------------------------------------------------------- JSON output

-- Deterministic JSON: object keys sorted, arrays marked with a metatable
-- (an empty Lua table would otherwise be ambiguous). Checkpoints write
-- integers only (floats travel as strings, exactly); finite floats are
-- written as the shortest decimal that reads back the same (export).
local ARRAY = {}
local function arr(t) return setmetatable(t or {}, ARRAY) end

local escapes = { ['"'] = '\\"', ['\\'] = '\\\\', ['\b'] = '\\b', ['\f'] = '\\f',
  ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t' }

local function json_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    return escapes[c] or string.format("\\u%04x", c:byte())
  end) .. '"'
end

local function json_encode(v, out)
  local tv = type(v)
  if tv == "string" then
    out[#out + 1] = json_string(v)
  elseif tv == "boolean" then
    out[#out + 1] = tostring(v)
  elseif math.type(v) == "integer" then
    out[#out + 1] = string.format("%d", v)
  elseif math.type(v) == "float" and v == v and v ~= math.huge and v ~= -math.huge then
    out[#out + 1] = M.float_str(v)
  elseif tv == "table" and getmetatable(v) == ARRAY then
    out[#out + 1] = "["
    for i, x in ipairs(v) do
      if i > 1 then out[#out + 1] = "," end
      json_encode(x, out)
    end
    out[#out + 1] = "]"
  elseif tv == "table" then
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    table.sort(keys)
    out[#out + 1] = "{"
    for i, k in ipairs(keys) do
      if i > 1 then out[#out + 1] = "," end
      out[#out + 1] = json_string(k)
      out[#out + 1] = ":"
      json_encode(v[k], out)
    end
    out[#out + 1] = "}"
  else
    error("io: internal error: cannot write " .. tv .. " as JSON")
  end
  return out
end

local function to_json(v) return table.concat(json_encode(v, {})) end

-- For firefly.export: the same deterministic JSON (io.json_array marks a
-- list).
M.json_encode, M.json_array = to_json, arr

---------------------------------------------------------------- scalars

local function hex(s)
  return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

local function unhex(h)
  if type(h) ~= "string" or #h % 2 == 1 or h:find("[^%x]") then return nil end
  return (h:gsub("%x%x", function(p) return string.char(tonumber(p, 16)) end))
end

-- The shortest decimal that reads back as exactly x, always with a '.' or
-- an exponent (so it reads back as a float, and -0.0 keeps its sign).
local function float_str(x)
  if x ~= x then return "nan" end
  if x == math.huge then return "inf" end
  if x == -math.huge then return "-inf" end
  local s
  for p = 15, 17 do
    s = string.format("%." .. p .. "g", x)
    if tonumber(s) == x then break end
  end
  if not s:find("[%.eE]") then s = s .. ".0" end
  return s
end
M.float_str = float_str

local function float_of(s)
  if s == "nan" then return 0 / 0 end
  if s == "inf" then return math.huge end
  if s == "-inf" then return -math.huge end
  if type(s) ~= "string" or not s:match("^%-?%d+%.?%d*[eE]?[-+]?%d*$") then return nil end
  local v = tonumber(s)
  if math.type(v) == "integer" then v = v + 0.0 end
  return v
end

local function int_of(s)
  if type(s) ~= "string" or not s:match("^%-?%d+$") then return nil end
  local v = tonumber(s)
  return math.type(v) == "integer" and v or nil
end

-- A JSON number that is a non-negative integer (cjson gives floats).
local function count_of(v, max)
  if type(v) ~= "number" or v ~= v or v < 0 or v > (max or 2 ^ 53) or v % 1 ~= 0 then
    return nil
  end
  return math.tointeger(v)
end

-- A plain list (keys 1..n only), as JSON arrays and plot series need.
local function is_array(t)
  if type(t) ~= "table" then return false end
  local n = 0
  for k in pairs(t) do
    if math.type(k) ~= "integer" or k < 1 then return false end
    n = n + 1
  end
  return n == #t
end

local function shape_str(shape)
  return #shape == 0 and "scalar" or table.concat(shape, "x")
end

---------------------------------------------------------------- classes

local classes = {}   -- name -> {mt=, serialize=, deserialize=}
local class_of = {}  -- metatable -> name

-- Modules that register classes under a name prefix. When a checkpoint
-- names a class nobody registered yet, load requires the module for its
-- prefix (a Firefly library module, never anything named by the file).
M.is_array = is_array

-- Size of a file in bytes (nil if it cannot be opened).
function M.file_size(path)
  local f = sandbox.open(path, "rb", "file_size")
  if not f then return nil end
  local n = f:seek("end")
  f:close()
  return n
end

M.class_modules = { nn = "firefly.nn", optim = "firefly.optim" }

function M.register_class(name, mt, hooks)
  if type(name) ~= "string" or name == "" then
    error("register_class: argument #1 must be a non-empty class name, got " .. type(name), 2)
  end
  if type(mt) ~= "table" then
    error("register_class: argument #2 must be the class's metatable, got " .. type(mt), 2)
  end
  if hooks ~= nil and type(hooks) ~= "table" then
    error("register_class: argument #3 must be a table {serialize=, deserialize=}", 2)
  end
  hooks = hooks or {}
  options.check("register_class", hooks, { "serialize", "deserialize" }, "option", 2)
  for k, v in pairs(hooks) do
    if type(v) ~= "function" then error("register_class: " .. k .. " must be a function", 2) end
  end
  if (hooks.serialize == nil) ~= (hooks.deserialize == nil) then
    error("register_class: give both serialize and deserialize, or neither", 2)
  end
  -- Re-registering (a reloaded module) replaces the old entry either way.
  local old = classes[name]
  if old then class_of[old.mt] = nil end
  local old_name = class_of[mt]
  if old_name then classes[old_name] = nil end
  classes[name] = { mt = mt, serialize = hooks.serialize, deserialize = hooks.deserialize }
  class_of[mt] = name
  return mt
end

-- The metatable registered under name (nil if none), and the name of a
-- registered metatable.
function M.registered_class(name)
  return classes[name] and classes[name].mt
end

function M.class_name(mt) return class_of[mt] end

---------------------------------------------------------------- saving

-- Paths name a position in the object for error messages and tensor names:
-- model.layers[3].act in messages, model.layers.3.act as a tensor name.
local function key_str(k)
  local tk = type(k)
  if tk == "string" then
    if k:match("^[%a_][%w_]*$") then return "." .. k end
    return "[" .. string.format("%q", k):gsub("\\\n", "\\n") .. "]"
  elseif math.type(k) == "integer" then
    return "[" .. k .. "]"
  elseif tk == "number" then
    return "[" .. float_str(k) .. "]"
  elseif tk == "boolean" then
    return "[" .. tostring(k) .. "]"
  end
  return "[<" .. (is_tensor(k) and "tensor" or tk) .. " key>]"
end

local function path_str(path, n)
  local parts = {}
  for i = 1, n or #path do parts[i] = key_str(path[i]) end
  local s = table.concat(parts):gsub("^%.", "")
  -- Deep paths keep their end, where the problem is.
  if #s > 240 then s = "..." .. s:sub(-200) end
  return s
end

local function where(st)
  local p = path_str(st.path)
  return p == "" and "the value to save" or "value at " .. p
end

local function fail(st, msg) error(st.fn .. ": " .. where(st) .. " " .. msg, 0) end

-- Keys sort by kind (numbers, strings, booleans, others), then value;
-- others keep the order in which next() found them.
local kind_rank = { number = 1, string = 2, boolean = 3 }
local function sorted_keys(t)
  local keys, seen = {}, {}
  for k in next, t do
    keys[#keys + 1] = k
    seen[k] = #keys
  end
  table.sort(keys, function(a, b)
    local ra, rb = kind_rank[type(a)] or 4, kind_rank[type(b)] or 4
    if ra ~= rb then return ra < rb end
    if ra == 3 then return (not a) and b end
    if ra < 3 then return a < b end
    return seen[a] < seen[b]
  end)
  return keys
end

local encode

local function tensor_name(st)
  local parts = {}
  for i, k in ipairs(st.path) do
    local tk = type(k)
    if tk == "string" or tk == "number" or tk == "boolean" then
      parts[i] = tk == "number" and key_str(k):sub(2, -2) or tostring(k)
    else
      parts[i] = "?"
    end
  end
  local base = table.concat(parts, ".")
  if base == "" then base = "tensor" end
  -- Names are JSON keys read by other tools: printable UTF-8 only.
  if not utf8.len(base) or base:find("%c") then base = "tensor" end
  local name, n = base, 1
  while st.names[name] or name == "__metadata__" do
    n = n + 1
    name = base .. "#" .. n
  end
  st.names[name] = true
  return name
end

local function encode_tensor(st, t)
  local ok, shape = pcall(t.size, t)
  if not ok then fail(st, "is a closed tensor; cannot be saved") end
  local name = st.tensor_names[t]
  if not name then
    name = tensor_name(st)
    st.tensor_names[t] = name
    st.tensors[#st.tensors + 1] = t
    st.tensor_order[#st.tensor_order + 1] = name
  end
  local node = { tensor = name, shape = arr(shape) }
  if t:requires_grad() then node.requires_grad = true end
  return node
end

-- Entries of a table as [[key, value], ...] in a fixed order.
local function encode_entries(st, t)
  local list = arr()
  local path = st.path
  for _, k in ipairs(sorted_keys(t)) do
    path[#path + 1] = k
    local kn = encode(st, k)
    local vn = encode(st, rawget(t, k))
    path[#path] = nil
    list[#list + 1] = arr { kn, vn }
  end
  return list
end

-- Tables, objects and generators may be reached more than once: the first
-- time they are written in full, later times as {"ref": id}. Reaching one
-- again while it is still being written is a cycle.
local function encode_shared(st, v, build)
  local done = st.done[v]
  if done then
    if not done.id then
      st.next_id = st.next_id + 1
      done.id = st.next_id
    end
    return { ref = done.id }
  end
  local open = st.open[v]
  if open then
    -- The enclosing table is still open, so its path is a prefix of ours.
    local p = path_str(st.path, open)
    fail(st, "refers back to " .. (p == "" and "the value being saved" or p) ..
      " (an enclosing table): cycles cannot be saved")
  end
  st.open[v] = #st.path
  st.depth = st.depth + 3
  if st.depth > MAX_JSON_DEPTH then
    fail(st, "is nested too deeply (more than " .. (MAX_JSON_DEPTH // 3) .. " levels) to be saved")
  end
  local node = build()
  st.depth = st.depth - 3
  st.open[v] = nil
  st.done[v] = node
  return node
end

function encode(st, v)
  local tv = type(v)
  if tv == "boolean" then return v end
  if tv == "string" then
    if utf8.len(v) then return v end
    return { bytes = hex(v) }  -- JSON text must be UTF-8
  end
  if tv == "number" then
    if math.type(v) == "integer" then return { int = string.format("%d", v) } end
    return { float = float_str(v) }
  end
  if tv == "userdata" then
    local mt = getmetatable(v)
    if mt == tensor_mt then return encode_tensor(st, v) end
    if mt == generator_mt then
      return encode_shared(st, v, function() return { generator = hex(v:get_state()) } end)
    end
    local name = type(mt) == "table" and rawget(mt, "__name")
    fail(st, "is a userdata" .. (type(name) == "string" and " (" .. name .. ")" or "") ..
      "; only tensors and generators can be saved")
  end
  if tv == "table" then
    local mt = getmetatable(v)
    if mt == nil then
      return encode_shared(st, v, function() return { table = encode_entries(st, v) } end)
    end
    local name = class_of[mt]
    if not name then
      local cname = type(mt) == "table" and rawget(mt, "__name")
      fail(st, "has a metatable that is not a registered class" ..
        (type(cname) == "string" and " ('" .. cname .. "')" or "") ..
        "; register it with ff.io.register_class(name, metatable)")
    end
    local cls = classes[name]
    return encode_shared(st, v, function()
      if not cls.serialize then return { class = name, fields = encode_entries(st, v) } end
      local ok, state = pcall(cls.serialize, v)
      if not ok then fail(st, "(class " .. name .. "): serialize failed: " .. tostring(state)) end
      if state == v then
        fail(st, "(class " .. name .. "): serialize returned the object itself; return a plain table")
      end
      st.depth = st.depth + 1
      local node = { class = name, state = encode(st, state) }
      st.depth = st.depth - 1
      return node
    end)
  end
  if tv == "nil" then fail(st, "is nil; nothing to save") end
  if tv == "thread" then fail(st, "is a coroutine; cannot be saved") end
  fail(st, "is a " .. tv .. "; cannot be saved")
end

-- Header JSON: __metadata__ first, then the tensors in data order.
local function build_header(names, tensors, metadata)
  local parts, pos = {}, 0
  if metadata and next(metadata) then
    parts[1] = json_string("__metadata__") .. ":" .. to_json(metadata)
  end
  for i, t in ipairs(tensors) do
    local nbytes = 4 * t:numel()
    parts[#parts + 1] = json_string(names[i]) .. ":" .. to_json {
      dtype = "F32", shape = arr(t:size()), data_offsets = arr { pos, pos + nbytes } }
    pos = pos + nbytes
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

local function check_path(fn, path)
  if type(path) ~= "string" or path == "" then
    error(fn .. ": argument #1 must be a file path (a non-empty string), got " ..
      (path == "" and "an empty string" or type(path)), 3)
  end
end

-- Errors of the C layer already start with "save:" or "load:".
local function c_call(fn, f, ...)
  local r = table.pack(pcall(f, ...))
  if not r[1] then
    local msg = tostring(r[2])
    if not msg:match("^%a+: ") then msg = fn .. ": " .. msg end
    error(msg, 0)
  end
  return table.unpack(r, 2, r.n)
end

function M.save(path, obj)
  check_path("save", path)
  local st = { fn = "save", path = {}, tensors = {}, tensor_order = {}, tensor_names = {},
    names = {}, done = {}, open = {}, next_id = 0, depth = 0 }
  -- The whole object is checked and encoded before the first byte is
  -- written: an unsavable value leaves the old file as it was.
  local tree = to_json(encode(st, obj))
  local header = build_header(st.tensor_order, st.tensors,
    { format = M.FORMAT, firefly = tree })
  sandbox.check_write(path, "save")
  c_call("save", core.io_write_atomic, path, header, st.tensors)
end

-- io.save_tensors(path, {name = tensor, ...} [, metadata]): a plain
-- safetensors file for other tools; metadata maps strings to strings.
function M.save_tensors(path, tensors, metadata)
  check_path("save_tensors", path)
  if type(tensors) ~= "table" or getmetatable(tensors) ~= nil then
    error("save_tensors: argument #2 must be a table {name = tensor, ...}", 2)
  end
  local names = {}
  for k, v in pairs(tensors) do
    if type(k) ~= "string" or k == "" or k == "__metadata__" or not utf8.len(k) then
      error("save_tensors: bad tensor name " .. key_str(k):sub(2, -2) ..
        " (names are non-empty UTF-8 strings other than __metadata__)", 2)
    end
    if not is_tensor(v) then
      error("save_tensors: value at " .. k .. " is a " .. type(v) .. ", expected a tensor", 2)
    end
    if not pcall(v.size, v) then error("save_tensors: value at " .. k .. " is a closed tensor", 2) end
    names[#names + 1] = k
  end
  table.sort(names)
  if metadata ~= nil then
    if type(metadata) ~= "table" then error("save_tensors: metadata must be a table of strings", 2) end
    for k, v in pairs(metadata) do
      if type(k) ~= "string" or type(v) ~= "string" or not utf8.len(k) or not utf8.len(v) then
        error("save_tensors: metadata must map UTF-8 strings to UTF-8 strings (entry " ..
          tostring(k) .. ")", 2)
      end
    end
  end
  local list = {}
  for i, k in ipairs(names) do list[i] = tensors[k] end
  sandbox.check_write(path, "save_tensors")
  c_call("save_tensors", core.io_write_atomic, path, build_header(names, list, metadata), list)
end

---------------------------------------------------------------- loading

local function clean_json_error(e)
  return tostring(e)
end

-- Read and check the header: every entry F32 with a sane shape, the
-- offsets tiling the data section exactly (no overlap, no gap, nothing
-- out of range), as the safetensors format requires.
local function read_header(path)
  sandbox.check_read(path, "load")
  local json, data_start, file_size = c_call("load", core.io_read_header, path)
  local function bad(msg) error("load: '" .. path .. "' " .. msg, 0) end
  if not json:match("^%s*{") then bad("is corrupt: the header is not a JSON object") end
  local ok, h = pcall(cjson.decode, json)
  if not ok then bad("is corrupt: the header is not valid JSON (" .. clean_json_error(h) .. ")") end
  if type(h) ~= "table" then bad("is corrupt: the header is not a JSON object") end
  local data_size = file_size - data_start
  local entries, list, metadata = {}, {}, nil
  for name, info in pairs(h) do
    if type(name) ~= "string" then bad("is corrupt: the header is not a JSON object") end
    if name == "__metadata__" then
      if type(info) ~= "table" or (next(info) ~= nil and is_array(info)) then
        bad("is corrupt: __metadata__ is not an object")
      end
      for k, v in pairs(info) do
        if type(v) ~= "string" then bad("is corrupt: __metadata__ entry '" .. tostring(k) .. "' is not a string") end
      end
      metadata = info
    else
      local function badt(msg) bad("is corrupt: tensor '" .. name .. "' " .. msg) end
      if type(info) ~= "table" then badt("is not described by an object") end
      if type(info.dtype) ~= "string" then badt("has no dtype") end
      if info.dtype ~= "F32" then
        error(string.format("load: tensor '%s' in '%s': dtype %s is not supported; only F32",
          name, path, info.dtype), 0)
      end
      local shape = info.shape
      if not is_array(shape) then badt("has no shape list") end
      if #shape > 8 then badt("has " .. #shape .. " dims; at most 8 are supported") end
      local s, numel = {}, 1
      for i, d in ipairs(shape) do
        s[i] = count_of(d)
        if not s[i] then badt("has a bad size in its shape (" .. tostring(d) .. ")") end
        numel = numel * s[i] -- a float product: huge values fail the size check below
      end
      local off = info.data_offsets
      if not is_array(off) or #off ~= 2 then badt("has no data_offsets [begin, end]") end
      local b, e = count_of(off[1]), count_of(off[2])
      if not b or not e or b > e then
        badt("has bad data_offsets [" .. tostring(off[1]) .. ", " .. tostring(off[2]) .. "]")
      end
      if e > data_size then
        badt(string.format("has data_offsets [%d, %d] beyond the data section (%d bytes): " ..
          "the file is truncated or the header is wrong", b, e, data_size))
      end
      if numel * 4 ~= e - b then
        badt(string.format("has shape %s (%.0f bytes of F32) but data_offsets [%d, %d] hold %d bytes",
          shape_str(s), numel * 4, b, e, e - b))
      end
      entries[name] = { name = name, shape = s, b = b, e = e }
      list[#list + 1] = entries[name]
    end
  end
  table.sort(list, function(x, y)
    if x.b ~= y.b then return x.b < y.b end
    if x.e ~= y.e then return x.e < y.e end
    return x.name < y.name
  end)
  local pos, prev = 0, nil
  for _, en in ipairs(list) do
    if en.b < pos then
      bad(string.format("is corrupt: tensors '%s' and '%s' overlap (data_offsets [%d, %d] and [%d, %d])",
        prev.name, en.name, prev.b, prev.e, en.b, en.e))
    elseif en.b > pos then
      bad(string.format("is corrupt: bytes %d to %d of the data section belong to no tensor", pos, en.b))
    end
    pos, prev = en.e, en
  end
  if pos ~= data_size then
    bad(string.format("is corrupt: the data section has %d bytes but the tensors cover %d",
      data_size, pos))
  end
  return { path = path, data_start = data_start, entries = entries, list = list,
    metadata = metadata or {} }
end

local function read_tensor(hdr, en)
  sandbox.check_read(hdr.path, "load")
  return c_call("load", core.io_read_tensor, hdr.path, hdr.data_start, en.b, en.e, en.shape)
end

local function check_no_options(fn, opts)
  if opts == nil then return end
  if type(opts) ~= "table" then error(fn .. ": options must be a table", 3) end
  options.check(fn, opts, {}, "option", 3)
end

-- io.load_tensors(path) -> {name = tensor, ...}, metadata: every tensor of
-- any F32 safetensors file, whoever wrote it.
function M.load_tensors(path, opts)
  check_path("load_tensors", path)
  check_no_options("load_tensors", opts)
  local hdr = read_header(path)
  local out = {}
  for _, en in ipairs(hdr.list) do out[en.name] = read_tensor(hdr, en) end
  return out, hdr.metadata
end

-- Decoding the object tree. Every node is checked: the file may be crafted.
local decode

local function dpath(ds)
  local p = path_str(ds.path)
  return p == "" and "the root" or p
end

local function dbad(ds, msg)
  error("load: '" .. ds.hdr.path .. "' is corrupt: " .. msg .. " (at " .. dpath(ds) .. ")", 0)
end

local function find_class(ds, name)
  if type(name) ~= "string" then dbad(ds, "a class name is not a string") end
  if not classes[name] then
    local prefix = name:match("^([%w_]+)%.")
    local mod = prefix and M.class_modules[prefix]
    if mod then pcall(require, mod) end
  end
  local cls = classes[name]
  if not cls then
    error(string.format("load: '%s' holds an object of class '%s' (at %s), which is not " ..
      "registered; require the module that defines it (it registers the class with " ..
      "ff.io.register_class) before loading", ds.hdr.path, name, dpath(ds)), 0)
  end
  return cls
end

local function decode_entries(ds, list, into)
  if not is_array(list) then dbad(ds, "a table's entries are not a list") end
  local path = ds.path
  for i = 1, #list do
    local e = list[i]
    if not is_array(e) or #e ~= 2 then dbad(ds, "a table entry is not a [key, value] pair") end
    path[#path + 1] = "<key>"
    local k = decode(ds, e[1])
    path[#path] = k
    if k ~= k then dbad(ds, "a table key is NaN") end
    if rawget(into, k) ~= nil then dbad(ds, "a table has a duplicate key") end
    rawset(into, k, decode(ds, e[2]))
    path[#path] = nil
  end
  return into
end

local function decode_tensor(ds, n)
  local name = n.tensor
  if type(name) ~= "string" then dbad(ds, "a tensor name is not a string") end
  local en = ds.hdr.entries[name]
  if not en then dbad(ds, "the metadata refers to tensor '" .. name .. "', which is not in the file") end
  if not is_array(n.shape) then dbad(ds, "tensor '" .. name .. "' has no shape in the metadata") end
  local same = #n.shape == #en.shape
  for i = 1, #n.shape do if n.shape[i] ~= en.shape[i] then same = false end end
  if not same then
    local s = {}
    for i = 1, #n.shape do s[i] = tostring(math.tointeger(n.shape[i]) or n.shape[i]) end
    dbad(ds, string.format("tensor '%s' has shape %s in the header but %s in the metadata",
      name, shape_str(en.shape), shape_str(s)))
  end
  if n.requires_grad ~= nil and type(n.requires_grad) ~= "boolean" then
    dbad(ds, "tensor '" .. name .. "' has a requires_grad that is not a boolean")
  end
  local t = ds.loaded[name]
  if not t then
    t = read_tensor(ds.hdr, en)
    ds.loaded[name] = t
  end
  if n.requires_grad then t:requires_grad(true) end
  return t
end

-- Shared values: defined once with an id, referred to later by {"ref": id}.
local function define(ds, n, v)
  if n.id ~= nil then
    local id = count_of(n.id)
    if not id then dbad(ds, "an object id is not a non-negative integer") end
    if ds.ids[id] ~= nil then dbad(ds, "object id " .. id .. " is defined twice") end
    ds.ids[id] = v
  end
  return v
end

local function object_like(ds)
  ds.depth = ds.depth + 1
  if ds.depth > MAX_JSON_DEPTH then dbad(ds, "the object tree is nested too deeply") end
end

function decode(ds, n)
  local tn = type(n)
  if tn == "boolean" or tn == "string" then return n end
  if tn ~= "table" then dbad(ds, "unexpected " .. (tn == "userdata" and "null" or tn) .. " in the object tree") end
  if n.int ~= nil then
    local v = int_of(n.int)
    if not v then dbad(ds, "bad integer " .. tostring(n.int)) end
    return v
  elseif n.float ~= nil then
    local v = float_of(n.float)
    if not v then dbad(ds, "bad float " .. tostring(n.float)) end
    return v
  elseif n.bytes ~= nil then
    local v = unhex(n.bytes)
    if not v then dbad(ds, "bad hex string") end
    return v
  elseif n.tensor ~= nil then
    return decode_tensor(ds, n)
  elseif n.ref ~= nil then
    local id = count_of(n.ref)
    local v = id and ds.ids[id]
    if v == nil then dbad(ds, "reference to an unknown object id " .. tostring(n.ref)) end
    return v
  elseif n.generator ~= nil then
    local s = unhex(n.generator)
    if not s or #s ~= 32 then dbad(ds, "a generator state is not 64 hex digits") end
    local g = core.Generator()
    if not pcall(g.set_state, g, s) then dbad(ds, "invalid generator state") end
    return define(ds, n, g)
  elseif n.table ~= nil then
    object_like(ds)
    local t = decode_entries(ds, n.table, {})
    ds.depth = ds.depth - 1
    return define(ds, n, t)
  elseif n.class ~= nil then
    local cls = find_class(ds, n.class)
    object_like(ds)
    local obj
    if n.fields ~= nil then
      obj = setmetatable(decode_entries(ds, n.fields, {}), cls.mt)
    elseif n.state ~= nil then
      if not cls.deserialize then
        dbad(ds, "class '" .. n.class .. "' was saved by its serialize function but has no deserialize now")
      end
      local state = decode(ds, n.state)
      local ok, r = pcall(cls.deserialize, state)
      if not ok then
        error(string.format("load: deserialize of class '%s' failed (at %s): %s", n.class,
          dpath(ds), tostring(r)), 0)
      end
      obj = r
    else
      dbad(ds, "object of class '" .. n.class .. "' has neither fields nor state")
    end
    ds.depth = ds.depth - 1
    return define(ds, n, obj)
  end
  dbad(ds, "unknown node in the object tree")
end

function M.load(path, opts)
  check_path("load", path)
  check_no_options("load", opts)
  local hdr = read_header(path)
  local md = hdr.metadata
  if md.firefly == nil then
    -- Not written by io.save: a plain name -> tensor file of another tool.
    local out = {}
    for _, en in ipairs(hdr.list) do out[en.name] = read_tensor(hdr, en) end
    return out
  end
  local fmt = md.format
  if fmt ~= M.FORMAT then
    error(string.format("load: '%s' has format %s; this version of Firefly reads %s", path,
      fmt and ("'" .. fmt .. "'") or "(none)", M.FORMAT), 0)
  end
  local ok, tree = pcall(cjson.decode, md.firefly)
  if not ok then
    error("load: '" .. path .. "' is corrupt: its firefly metadata is not valid JSON (" ..
      clean_json_error(tree) .. ")", 0)
  end
  local ds = { hdr = hdr, path = {}, loaded = {}, ids = {}, depth = 0 }
  return decode(ds, tree)
end

---------------------------------------------------------------- files

-- Small file helpers shared by the Lua library (logging, plot), so that
-- shell quoting, directory creation and atomic replacement are written once.

-- io.shell_quote(s): s as one word for /bin/sh, whatever characters it
-- holds (spaces, quotes, $, newlines): single quotes, each ' as '\''.
function M.shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- io.mkdir(dir): creates dir and its missing parents (mkdir -p). Returns
-- true, or nil and a message.
function M.mkdir(dir)
  if dir == "" or dir == "." or dir == "/" then return true end
  if sandbox.execute("mkdir -p -- " .. M.shell_quote(dir) .. " 2>/dev/null", dir, "mkdir") then return true end
  return nil, "cannot create directory '" .. dir .. "'"
end

local pid
-- io.temp_path(path): the name the next version of path is written under
-- before the rename: path.tmp.<pid>, as the C layer names it (beside the
-- target, so the rename stays in one file system; the pid keeps two
-- processes writing the same file apart).
function M.temp_path(path)
  if not pid then
    -- Lua has no getpid; the shell popen starts is our child.
    local p = io.popen("echo $PPID") -- sandbox: internal (no path)
    pid = p and p:read("l")
    if p then p:close() end
    if not pid or not pid:match("^%d+$") then pid = string.format("r%x", math.random(0, 0x7fffffff)) end
  end
  return path .. ".tmp." .. pid
end

-- io.write_atomic(path, data): replaces path with data through a temporary
-- file and a rename, so a reader or a killed run sees the old file or the
-- new one, never a part. Unlike checkpoints it is not synced: it survives a
-- killed process, not a power cut. Returns true, or nil and a message.
function M.write_atomic(path, data)
  local tmp = M.temp_path(path)
  local f, err = sandbox.open(tmp, "wb", "write_atomic")
  if not f then return nil, "cannot create '" .. tmp .. "': " .. tostring(err) end
  local ok, werr = f:write(data)
  local cok, cerr = f:close()
  if not ok or not cok then
    sandbox.remove(tmp, "write_atomic")
    return nil, "cannot write '" .. tmp .. "': " .. tostring(werr or cerr)
  end
  local rok, rerr = sandbox.rename(tmp, path, "write_atomic")
  if not rok then
    sandbox.remove(tmp, "write_atomic")
    return nil, "cannot rename '" .. tmp .. "' to '" .. path .. "': " .. tostring(rerr)
  end
  return true
end

return M
