-- firefly.help: help(x) prints the reference entry (spec/*.md) of a
-- function, a module or an object; help() lists the modules. The global
-- `help` of the interpreter is this module (it is callable).
--
-- The reference is the documentation: rather than a second copy in
-- docstrings, help finds the part of spec/ that names the function: a
-- heading, then a table row, a list item or a paragraph, in the module's
-- own file first. A function value is named by walking ff and its lazily
-- loaded submodules (the first, shortest name wins: ff.exp, not
-- ff.Tensor.exp).
local H = {}

---------------------------------------------------------------- spec/

-- spec/ beside a source tree (lib/firefly/help.lua -> spec), or where
-- `make install` puts it (share/lua/5.4/firefly -> share/firefly/spec),
-- or $FIREFLY_SPEC.
local function find_spec_dir()
  local candidates = {}
  local env = os.getenv("FIREFLY_SPEC")
  if env and env ~= "" then candidates[1] = env end
  local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
  candidates[#candidates + 1] = here .. "/../../spec"
  candidates[#candidates + 1] = here .. "/../../../firefly/spec"
  for _, dir in ipairs(candidates) do
    local f = io.open(dir .. "/tensor.md") -- sandbox: internal (the reference's own files)
    if f then f:close(); return dir end
  end
  return nil, "help: the reference (spec/*.md) is not installed; looked in "
    .. table.concat(candidates, ", ") .. " (set FIREFLY_SPEC to its directory)"
end

-- The files, read once: { {name = "grow", path =, lines = {...},
-- sections = { {level =, title =, first =, last =} ... } } ... }.
local spec_cache
local function load_spec()
  if spec_cache then return spec_cache end
  local dir, err = find_spec_dir()
  if not dir then return nil, err end
  local names = {}
  local ls = io.popen('ls "' .. dir .. '"') -- sandbox: internal
  for f in ls:lines() do
    if f:match("%.md$") then names[#names + 1] = f:match("^(.*)%.md$") end
  end
  ls:close()
  table.sort(names)
  local files = {}
  for _, name in ipairs(names) do
    local file = { name = name, path = "spec/" .. name .. ".md", lines = {}, sections = {} }
    local fence = false
    for line in io.lines(dir .. "/" .. name .. ".md") do -- sandbox: internal
      local n = #file.lines + 1
      file.lines[n] = line
      if line:match("^```") then fence = not fence end
      local hashes, title = line:match("^(#+)%s+(.*)$")
      if hashes and not fence then -- a "# comment" inside code is no heading
        local prev = file.sections[#file.sections]
        if prev then prev.last = n - 1 end
        file.sections[#file.sections + 1] = { level = #hashes, title = title, first = n }
      end
    end
    if #file.sections > 0 then file.sections[#file.sections].last = #file.lines end
    files[#files + 1] = file
  end
  spec_cache = files
  return files
end

---------------------------------------------------------------- names

-- The backticked code spans of a line.
local function spans(line)
  local out = {}
  for s in line:gmatch("`([^`]+)`") do out[#out + 1] = s end
  -- a span that goes on to the next line: `ff.train.fit{model, data,
  local _, ticks = line:gsub("`", "")
  if ticks % 2 == 1 then out[#out + 1] = line:match("`([^`]*)$") end
  return out
end

local function escape(s) return (s:gsub("%p", "%%%0")) end

-- Does a code span name `name` (as a whole dotted word: "grow.propose"
-- matches "ff.grow.propose(net)" but not "grow.proposed")? With
-- `method`, "t:matmul" counts too.
local function names_it(span, name, method)
  local e = escape(name)
  if span:find("%f[%w_.]" .. e .. "%f[^%w_]") or span:find("%.%f[%w_]" .. e .. "%f[^%w_]") then
    return true
  end
  local m = method and escape(name:match("([%w_]+)$"))
  return m and span:find("[%w_%)]:" .. m .. "%f[^%w_]") ~= nil or false
end

local function any_span(line, name, method)
  for _, s in ipairs(spans(line)) do
    if names_it(s, name, method) then return true end
  end
  return false
end

---------------------------------------------------------------- values -> names

local function ff_module() return require "firefly" end

-- Every submodule, loaded (help is the one place that wants them all).
local function submodule_names()
  local mt = getmetatable(ff_module())
  local list = {}
  for k in pairs(mt and mt.__submodules or {}) do list[#list + 1] = k end
  table.sort(list)
  return list
end

local name_cache
-- value (function or table) -> "ff.grow.propose"
local function names()
  if name_cache then return name_cache end
  local ff = ff_module()
  for _, m in ipairs(submodule_names()) do pcall(function() return ff[m] end) end
  local map, queue = {}, { { ff, "ff", 0 } }
  map[ff] = "ff"
  local i = 1
  while queue[i] do
    local t, prefix, depth = queue[i][1], queue[i][2], queue[i][3]
    i = i + 1
    local keys = {}
    for k in next, t do
      if type(k) == "string" and k:match("^[%a_][%w_]*$") and not k:match("^_") then keys[#keys + 1] = k end
    end
    table.sort(keys)
    for _, k in ipairs(keys) do
      local v = rawget(t, k)
      local tv = type(v)
      if (tv == "function" or tv == "table") and map[v] == nil then
        map[v] = prefix .. "." .. k
        if tv == "table" and depth < 3 then queue[#queue + 1] = { v, prefix .. "." .. k, depth + 1 } end
      end
    end
  end
  name_cache = map
  return map
end

-- The dotted name of a value, without "ff.": a function or module by the
-- walk, an object (a network, an optimiser, a tensor) by its class.
function H.name_of(x)
  local ff = ff_module()
  if ff.is_tensor(x) then return "Tensor" end
  local n = names()[x]
  if n then return n == "ff" and "ff" or n:sub(4) end
  local mt = getmetatable(x)
  local class = type(mt) == "table" and rawget(mt, "__name")
  if type(class) == "string" then
    -- the constructor of that name: nn.Linear for a Linear
    local best
    for v, full in pairs(names()) do
      if full:match("%.([%w_]+)$") == class and (type(v) == "function" or type(v) == "table")
          and (not best or #full < #best or (#full == #best and full < best)) then
        best = full
      end
    end
    if best then return best:sub(4) end
  end
  return nil
end

---------------------------------------------------------------- finding the entry

-- Lines first..last of a file, as text.
local function slice(file, first, last)
  local out = {}
  for i = first, last do out[#out + 1] = file.lines[i] end
  return (table.concat(out, "\n"):gsub("%s+$", ""))
end

local function section_at(file, n)
  local found
  for _, s in ipairs(file.sections) do
    if s.first <= n then found = s else break end
  end
  return found
end

-- The block holding line n: a table (its header and row n), a list item
-- (with its continuation lines) or a paragraph.
local function block_at(file, n)
  local L = file.lines
  if L[n]:match("^%s*|") then
    local top = n
    while top > 1 and L[top - 1]:match("^%s*|") do top = top - 1 end
    local head = slice(file, top, math.min(top + 1, n))
    return n <= top + 1 and head or head .. "\n" .. L[n]
  end
  if L[n]:match("^%s*[-*] ") or L[n]:match("^%s*%d+%. ") then
    local last = n
    while L[last + 1] and L[last + 1]:match("^%s%s+%S") do last = last + 1 end
    return slice(file, n, last)
  end
  local first, last = n, n
  while first > 1 and L[first - 1]:match("%S") and not L[first - 1]:match("^#")
    and not L[first - 1]:match("^```") do first = first - 1 end
  while L[last + 1] and L[last + 1]:match("%S") and not L[last + 1]:match("^```") do last = last + 1 end
  return slice(file, first, last)
end

-- A section's own text (up to its first subsection).
local function section_text(file, s)
  return slice(file, s.first, s.last)
end

-- The file of module `m` ("grow" -> grow.md), or nil.
local function module_file(files, m)
  for _, f in ipairs(files) do
    if f.name == m then return f end
  end
end

local function contents(file)
  local out = {}
  for i, s in ipairs(file.sections) do
    if i > 1 and s.level <= 3 then out[#out + 1] = string.rep("  ", s.level - 2) .. "  " .. s.title end
  end
  return table.concat(out, "\n")
end

local function members(name)
  local ff = ff_module()
  local t = ff
  for part in name:gmatch("[^.]+") do
    if type(t) ~= "table" then return nil end
    t = t[part]
  end
  if type(t) ~= "table" then return nil end
  local keys = {}
  for k in pairs(t) do
    if type(k) == "string" and not k:match("^_") then keys[#keys + 1] = k end
  end
  table.sort(keys)
  return #keys > 0 and table.concat(keys, ", ") or nil
end

-- The entry of a dotted name (without "ff."): text and where it is from.
function H.find(name)
  local files, err = load_spec()
  if not files then return nil, err end
  name = name:gsub("^ff%.", "")
  local head = name:match("^([%w_]+)")
  -- the module's own file: grow.md, tensor.md for a Tensor, else the file
  -- with a heading that names it (ff.train is in nn.md)
  local own = module_file(files, head) or module_file(files, head:lower())
  if not own then
    for _, f in ipairs(files) do
      for _, s in ipairs(f.sections) do
        if not own and any_span(f.lines[s.first], "ff." .. head) then own = f end
      end
    end
  end
  local last = name:match("([%w_]+)$")
  -- a name of ff itself ("matmul", "train") is looked for as ff.matmul
  -- or t:matmul, never bare ("train" is also a split's name)
  local toplevel = not name:find(".", 1, true)
  local dotted = toplevel and "ff." .. name or name
  -- a whole module with its own file: its introduction and its contents
  if own and name == head and own.name == head:lower() then
    local intro = own.sections[1]
    local text = section_text(own, intro) .. "\n\nSections:\n" .. contents(own)
    local m = members(name)
    if m then text = text .. "\n\nIn ff." .. name .. ": " .. m end
    return text, own.path
  end
  local order = {}
  if own then order[1] = own end
  for _, f in ipairs(files) do if f ~= own then order[#order + 1] = f end end
  -- 1. a heading naming it; 2. in the module's own file, a heading naming
  -- its last part; 3. a table row, list item or paragraph naming it
  for _, f in ipairs(order) do
    for _, s in ipairs(f.sections) do
      if any_span(f.lines[s.first], dotted, toplevel) then
        return section_text(f, s), f.path
      end
    end
  end
  if own and last ~= name then
    for _, s in ipairs(own.sections) do
      if any_span(own.lines[s.first], last, true) then return section_text(own, s), own.path end
    end
  end
  for _, f in ipairs(order) do
    local fence = false
    for n, line in ipairs(f.lines) do
      if line:match("^```") then fence = not fence
      elseif not fence and any_span(line, dotted, toplevel) then
        local s = section_at(f, n)
        local where = s and f.lines[s.first] .. "\n\n" or ""
        return where .. block_at(f, n), f.path
      end
    end
  end
  return nil, "help: no entry for '" .. name .. "' in spec/ (help() lists the modules)"
end

-- help() text: the modules, one line each.
local function overview()
  local files = load_spec()
  local lines = { "Firefly: the modules (help(ff.nn), help(\"grow.propose\"), help(some_function);",
    "Tab completes names; the reference is spec/*.md)", "" }
  local ff = ff_module()
  local mods = submodule_names()
  local width = 0
  for _, m in ipairs(mods) do width = math.max(width, #m + 3) end
  for _, f in ipairs(files or {}) do width = math.max(width, #f.path) end
  for _, m in ipairs(mods) do
    local title = ""
    if files then
      local f = module_file(files, m)
      if f then title = f.sections[1] and f.sections[1].title or ""
      else
        local text = H.find(m)
        title = text and text:match("^#+%s+([^\n]*)") or ""
      end
    end
    lines[#lines + 1] = string.format("  %-" .. width .. "s %s", "ff." .. m, (title:gsub("`", "")))
  end
  lines[#lines + 1] = ""
  local tops = {}
  if files then
    for _, f in ipairs(files) do
      if not ff[f.name] or type(ff[f.name]) ~= "table" then
        tops[#tops + 1] = string.format("  %-" .. width .. "s %s", f.path, (f.sections[1].title:gsub("`", "")))
      end
    end
  end
  if #tops > 0 then
    lines[#lines + 1] = "Also in spec/ (tensors, ops and autograd are functions of ff itself: ff.randn, t:backward()):"
    for _, l in ipairs(tops) do lines[#lines + 1] = l end
  end
  return table.concat(lines, "\n")
end

-- The text help(x) prints, or nil and why there is none.
function H.text(...)
  if select("#", ...) == 0 then return overview() end
  local x = ...
  local name
  if type(x) == "string" then
    name = x
  else
    name = H.name_of(x)
    if not name then
      return nil, "help: this " .. type(x) .. " is not a firefly function, module or object"
        .. " (help() lists the modules)"
    end
  end
  if name == "ff" then return overview() end
  local text, where = H.find(name)
  if not text then return nil, where end
  return "ff." .. name:gsub("^ff%.", "") .. "  (" .. where .. ")\n\n" .. text
end

setmetatable(H, {
  -- help(x): print the entry; nothing is returned, so the REPL prints only it
  __call = function(_, ...)
    local text, err = H.text(...)
    print(text or err)
  end,
})

return H
