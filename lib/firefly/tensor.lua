-- firefly.tensor: tensor methods written in Lua (printing, comparisons with
-- tolerance, conveniences). They are added to the methods table of the C
-- type, so `t:allclose(u)` works like any built-in method.
local core = require "firefly.core"
local Tensor = core.Tensor

local EDGE = 3          -- elements shown at each end of a summarised dim
local SUMMARY = 1000    -- tensors with more elements are summarised

-- Display positions along a dim of size n: all of them, or the ends with a
-- false marking the elided middle.
local function positions(n, summarise)
  local p = {}
  if summarise and n > 2 * EDGE then
    for i = 1, EDGE do p[#p + 1] = i end
    p[#p + 1] = false
    for i = n - EDGE + 1, n do p[#p + 1] = i end
  else
    for i = 1, n do p[i] = i end
  end
  return p
end

-- One number format for the whole tensor, like torch: integers plainly,
-- otherwise fixed point, or scientific when the magnitudes call for it.
-- Scientific when four decimals would show a non-zero value as 0.0000.
local function number_format(values)
  local integral, maxabs, minabs = true, 0, math.huge
  for _, v in ipairs(values) do
    if v == v and v ~= math.huge and v ~= -math.huge then
      if v ~= math.floor(v) then integral = false end
      maxabs = math.max(maxabs, math.abs(v))
      if v ~= 0 then minabs = math.min(minabs, math.abs(v)) end
    end
  end
  local fmt
  if integral and maxabs < 1e9 then fmt = "%.0f"
  elseif maxabs >= 1e5 or minabs < 1e-4 then fmt = "%.4e"
  else fmt = "%.4f" end
  return function(v)
    if v ~= v then return "nan" end
    if v == math.huge then return "inf" end
    if v == -math.huge then return "-inf" end
    local s = string.format(fmt, v)
    if s == "-0" then s = "0" end
    return s
  end
end

local function matrix_lines(t, prefix, rows, cols, fmt, width, out)
  for _, i in ipairs(rows) do
    if not i then
      out[#out + 1] = " ..."
    else
      local cells = {}
      for _, j in ipairs(cols) do
        local idx = { table.unpack(prefix) }
        idx[#idx + 1] = i
        if j then idx[#idx + 1] = j end
        cells[#cells + 1] = j == false and "..." or string.rep(" ", width - #fmt(t[idx])) .. fmt(t[idx])
      end
      out[#out + 1] = " " .. table.concat(cells, "  ")
    end
  end
end

-- Every shown value, to choose one format and width for all of them.
local function shown_values(t, pos)
  local vals, idx = {}, {}
  local function walk(d)
    if d > #pos then vals[#vals + 1] = t[idx]; return end
    for _, i in ipairs(pos[d]) do
      if i then idx[d] = i; walk(d + 1) end
    end
    idx[d] = nil
  end
  walk(1)
  return vals
end

local tensor_mt = getmetatable(core.zeros(0))

-- An error naming the method when x is not a tensor (a method called with
-- '.' instead of ':', or on the wrong value).
local function check_tensor(x, who, arg)
  if getmetatable(x) ~= tensor_mt then
    error(string.format("%s: argument #%d must be a tensor, got %s", who, arg, type(x)), 3)
  end
end

function Tensor.__tostring_impl(t)
  check_tensor(t, "tostring", 1)
  local shape, nd = t:size(), t:dim()
  local footer = "[Tensor " .. (nd == 0 and "scalar" or table.concat(shape, "x")) .. "]"
  if nd == 0 then
    return number_format({ t:item() })(t:item()) .. "\n" .. footer
  end
  if t:numel() == 0 then return footer end
  local summarise = t:numel() > SUMMARY
  local pos = {}
  for d = 1, nd do pos[d] = positions(shape[d], summarise) end
  local vals = shown_values(t, pos)
  local fmt = number_format(vals)
  local width = 0
  for _, v in ipairs(vals) do width = math.max(width, #fmt(v)) end
  local out = {}
  if nd == 1 then
    matrix_lines(t:unsqueeze(1), {}, { 1 }, pos[1], fmt, width, out)
  else
    -- Rank > 2: one matrix per leading index, headed like torch's (1,2,.,.).
    local lead = {}
    local function walk(d)
      if d > nd - 2 then
        if nd > 2 then
          local head = {}
          for k = 1, nd - 2 do head[k] = tostring(lead[k]) end
          if #out > 0 then out[#out + 1] = "" end
          out[#out + 1] = "(" .. table.concat(head, ",") .. ",.,.) = "
        end
        matrix_lines(t, lead, pos[nd - 1], pos[nd], fmt, width, out)
        return
      end
      for _, i in ipairs(pos[d]) do
        if i then lead[d] = i; walk(d + 1)
        else out[#out + 1] = "..." end
      end
      lead[d] = nil
    end
    walk(1)
  end
  out[#out + 1] = footer
  return table.concat(out, "\n")
end

getmetatable(core.zeros(0)).__tostring = Tensor.__tostring_impl

-- |a - b| <= atol + rtol * |b| everywhere (and the same shape).
function Tensor.allclose(a, b, rtol, atol)
  check_tensor(a, "allclose", 1)
  check_tensor(b, "allclose", 2)
  rtol, atol = rtol or 1e-5, atol or 1e-8
  if table.concat(a:size(), "x") ~= table.concat(b:size(), "x") then return false end
  local diff = (a - b):abs()
  local tol = b:abs() * rtol + atol
  return diff:le(tol):sum():item() == a:numel()
end

return Tensor
