-- firefly.grow.record: what a growth checkpoint records of its recipe, and
-- the check that --resume goes on with the same run: the recipe's text
-- hash, its path, the overrides, the seed and the resolved configuration
-- (every field but the functions). A checkpoint of another recipe, or of
-- other overrides, is never resumed: its rows would be mixed into this
-- run's log.
local Rec = {}


-- FNV-1a, 64 bits: the checkpoint records which recipe text it ran (to
-- tell two recipes apart, not to resist forgery).
function Rec.hash(text)
  local h = -3750763034362895579 -- 0xcbf29ce484222325
  for i = 1, #text do h = (h ~ text:byte(i)) * 1099511628211 end
  return string.format("%016x", h)
end

-- The configuration as data: every field but the functions.
function Rec.config(recipe, seed)
  local function plain(v, depth)
    local tv = type(v)
    if tv == "number" or tv == "string" or tv == "boolean" then return v end
    if tv == "table" and getmetatable(v) == nil and depth < 8 then
      local out = {}
      for k, x in pairs(v) do
        if type(k) == "string" or math.type(k) == "integer" then out[tostring(k)] = plain(x, depth + 1) end
      end
      return out
    end
    return "<" .. tv .. ">"
  end
  local c = plain(recipe, 0)
  c.seed = seed
  return c
end

-- "a.b" -> value text, for comparing two configurations key by key.
local function flatten(v, prefix, out)
  out = out or {}
  if type(v) == "table" then
    for k, x in pairs(v) do flatten(x, prefix and (prefix .. "." .. tostring(k)) or tostring(k), out) end
  elseif prefix then
    if type(v) == "number" and v == math.floor(v) and math.abs(v) < 2 ^ 53 then v = string.format("%d", v)
    elseif type(v) == "number" then v = string.format("%.17g", v) end
    out[prefix] = tostring(v)
  end
  return out
end

-- The first difference between a recorded configuration and this run's.
local function difference(recorded, now)
  local a, b = flatten(recorded), flatten(now)
  local keys, seen = {}, {}
  for k in pairs(a) do keys[#keys + 1], seen[k] = k, true end
  for k in pairs(b) do if not seen[k] then keys[#keys + 1] = k end end
  table.sort(keys)
  for _, k in ipairs(keys) do
    if a[k] ~= b[k] then
      return string.format("%s: the checkpoint has %s, this run %s", k, a[k] or "(unset)", b[k] or "(unset)")
    end
  end
  return nil
end

function Rec.list(t)
  local out = {}
  if type(t) == "table" then for _, v in ipairs(t) do out[#out + 1] = tostring(v) end end
  return out
end

-- Raises unless `record` (this run) may go on from a checkpoint that
-- recorded `recorded`.
function Rec.check_resume(ckpath, recorded, record)
  if type(recorded) ~= "table" then
    error(string.format("grow: --resume: %s does not record its recipe (written by an older Firefly); " ..
      "start over without --resume or with another --out", ckpath), 0)
  end
  if record.hash and recorded.hash and recorded.hash ~= record.hash then
    error(string.format("grow: --resume: %s was written by another recipe (%s, text hash %s; this is %s, hash %s); " ..
      "use another --out, or drop --resume to start over", ckpath, tostring(recorded.path), recorded.hash,
      tostring(record.path), record.hash), 0)
  end
  local diff = difference(recorded.config, record.config)
  if diff then
    local given, rec = table.concat(record.overrides, " "), table.concat(Rec.list(recorded.overrides), " ")
    error(string.format("grow: --resume: %s was run with another configuration (%s; overrides recorded: %s; " ..
      "given: %s); repeat the recorded overrides or give none to reuse them, or use another --out", ckpath, diff,
      rec ~= "" and rec or "none", given ~= "" and given or "none"), 0)
  end
end

return Rec
