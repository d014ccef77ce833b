-- firefly.nn.containers: Sequential and Residual, and the tree printer.
local module = require "firefly.nn.module"
local class, Module, call_child = module.class, module.Module, module.call_child

local C = {}

-- 50240 -> "50,240"
local function thousands(n)
  local s = tostring(math.tointeger(n) or n)
  repeat
    local k
    s, k = s:gsub("^(-?%d+)(%d%d%d)", "%1,%2")
  until k == 0
  return s
end
C.thousands = thousands

local function own_params(m)
  local n = 0
  for _, name in ipairs(m._params) do
    if m[name] then n = n + m[name]:numel() end
  end
  return n
end

-- A container prints as a tree: one line per child with its own parameter
-- count in a right-aligned column, nested containers indented, the total
-- on the header line. Rows are {text, count or nil}.
local function tree_rows(m, indent, rows)
  rows[#rows + 1] = { string.format("%s (%d modules, %s params)", getmetatable(m).__name,
    #m._children, thousands(m:num_params())) }
  for _, c in ipairs(m._children) do
    local label, child = indent .. "  (" .. c[1] .. ") ", c[2]
    if #child._children > 0 then
      local first = #rows + 1
      tree_rows(child, indent .. "  ", rows)
      rows[first][1] = label .. rows[first][1]
    else
      local n = own_params(child)
      rows[#rows + 1] = { label .. child:tostring(), n > 0 and thousands(n) or nil }
    end
  end
end

local function container_tostring(m)
  local rows = {}
  tree_rows(m, "", rows)
  local text_w, num_w = 0, 0
  for i = 2, #rows do
    if rows[i][2] then
      text_w = math.max(text_w, #rows[i][1])
      num_w = math.max(num_w, #rows[i][2])
    end
  end
  local out = {}
  for i, r in ipairs(rows) do
    if r[2] then
      out[i] = r[1] .. string.rep(" ", text_w - #r[1] + 2 + num_w - #r[2]) .. r[2]
    else
      out[i] = r[1]
    end
  end
  return table.concat(out, "\n")
end

---------------------------------------------------------------- Sequential

local Sequential = class("Sequential", Module)
C.Sequential = Sequential

-- nn.Sequential{m1, m2, ...}; children are named "1", "2", ... unless added
-- with a name (seq:add(m, "fc1")).
function C.Sequential_new(list)
  local self = Module.init(setmetatable({}, Sequential))
  for i, m in ipairs(list or {}) do
    if type(m) ~= "table" or not m._children then
      error("Sequential: entry " .. i .. " is not a module", 2)
    end
    self:add(m)
  end
  return self
end

function Sequential:add(m, name)
  if type(m) ~= "table" or not m._children then error("Sequential:add: not a module", 2) end
  return self:add_child(name or tostring(#self._children + 1), m) and self
end

-- Insert m at position pos (1-based), renumbering positional names.
function Sequential:insert(pos, m)
  table.insert(self._children, pos, { "?", m })
  self:renumber()
  return self
end

function Sequential:remove(pos)
  local c = table.remove(self._children, pos)
  self:renumber()
  return c and c[2]
end

-- Positional names follow positions again after an insert or removal.
function Sequential:renumber()
  for i, c in ipairs(self._children) do
    if c[1] == "?" or tonumber(c[1]) then c[1] = tostring(i) end
  end
end

-- The position of child module m, or nil.
function Sequential:index_of(m)
  for i, c in ipairs(self._children) do if c[2] == m then return i end end
  return nil
end

function Sequential:get(i) return self._children[i] and self._children[i][2] end

-- {name, module} pairs of the children in order (a new list).
function Sequential:named_children()
  local out = {}
  for i, c in ipairs(self._children) do out[i] = { c[1], c[2] } end
  return out
end
Sequential.container = "sequential"
Sequential.__len = function(self) return #self._children end

-- A batch norm followed by a plain ReLU runs as one fused op (the batch
-- norm's forward(x, true), which says whether it fused): the same bits with
-- fewer passes over the activations, while both stay separate modules, so
-- the growth code still finds them as a unit's parts (it runs children one
-- by one, not through this forward). Not when either has its own forward
-- patched on the instance (the patch must see its module's input), nor
-- for a ReLU module whose activation was changed on the instance (the
-- growth code and its tests set m.act).
local function fuses_relu(m, nxt)
  return nxt ~= nil and getmetatable(m).__name:match("^BatchNorm[12]d$") ~= nil
    and rawget(m, "forward") == nil and getmetatable(nxt).__name == "ReLU"
    and nxt.act == "relu" and nxt.param == nil and rawget(nxt, "forward") == nil
end

function Sequential:forward(x)
  local ch, i = self._children, 1
  while i <= #ch do
    local m, nxt = ch[i][2], ch[i + 1] and ch[i + 1][2]
    if fuses_relu(m, nxt) then
      local fused
      x, fused = call_child("Sequential", i, m, x, true)
      i = i + (fused == true and 2 or 1)
    else
      x = call_child("Sequential", i, m, x)
      i = i + 1
    end
  end
  return x
end

Sequential.tostring = container_tostring

---------------------------------------------------------------- Residual

-- x + f(x): the form new layers take when Firefly grows deeper.
local Residual = class("Residual", Module)
C.Residual = Residual

function C.Residual_new(f)
  if type(f) ~= "table" or not f._children then error("Residual: expected a module", 2) end
  local self = Module.init(setmetatable({}, Residual))
  self:add_child("f", f)
  return self
end

Residual.container = "residual"

-- f of x + f(x).
function Residual:body() return self._children[1][2] end

function Residual:forward(x)
  local y = call_child("Residual", "f", self._children[1][2], x)
  return x + y
end

Residual.tostring = container_tostring

return C
