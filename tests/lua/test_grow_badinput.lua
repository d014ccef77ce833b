-- test_grow_badinput: the bad-input sweep of the growth layer. Hundreds of
-- random neighbourhoods and budgets (valid and invalid keys and values,
-- per-unit tables, patterns, functions) through propose, select and apply:
-- every outcome is either a result or a clear error from grow (never an
-- internal Lua error such as "attempt to index a nil value"), the process
-- stays alive, and after an error the network and optimiser are
-- byte-equal to what they were.
package.path = "tests/lua/?.lua;" .. package.path
local testlib = require "testlib"
local lu = testlib.lu
local ff = require "firefly"
local nn = ff.nn

local function setup()
  ff.manual_seed(31)
  local g = ff.Generator(31)
  local net = nn.mlp { 2, 3, 3, 2, act = "tanh", generator = g }
  local opt = ff.optim.Adam(net:named_parameters(), { lr = 1e-2 })
  local x = ff.randn(32, 2, g)
  local y = ff.randint(1, 2, 32, g)
  opt:zero_grad(); ff.cross_entropy(net(x), y):backward(); opt:step()
  return net, opt, { { x, y } }
end

local function bytes(net, opt)
  local parts = { tostring(net) }
  for _, e in ipairs(net:named_parameters()) do
    parts[#parts + 1] = e.name .. table.concat(e.param:view(-1):totable(), ",")
  end
  for _, e in ipairs(opt:named_params()) do
    -- sorted: pairs' order is not fixed, and a restored state may be a new table
    local st, keys = opt:state_of(e.param) or {}, {}
    for k in pairs(st) do keys[#keys + 1] = tostring(k) end
    table.sort(keys)
    for _, k in ipairs(keys) do
      local v = st[k]
      parts[#parts + 1] = k .. (ff.is_tensor(v) and table.concat(v:view(-1):totable(), ",") or tostring(v))
    end
  end
  return table.concat(parts, ";")
end

local VALUES = { 0, 1, 2, 3, -1, 2.5, 1e-3, 1e9, 0 / 0, math.huge, -math.huge, "2", "many", true, false,
  { 1, 2 }, { candidates = 2 }, { candidates = -1 }, { candiates = 2 }, { max_new_layers = 1, candidates = 1 },
  function() return { new = 1 } end, function() error("boom") end, function() return 7 end }
local KEYS = { "split", "new", "eps", "where", "steps", "lr", "rule", "points", "loss", "generator", "optimizer",
  "project", "penalty", "selection", "layers", "init", "last_conv_zero_out", "quiet", "method", "cap",
  "default", "1", "3", "*", "?", "x*", "7", "nwe", "eps ", 5, "neighborhood" }
local CHOICES = { rule = { "endpoint", "midpoint", "exact", "simpson" }, optimizer = { "adam", "rmsprop", "sgd" },
  selection = { "paper", "official", "best" }, init = { "paper", "official", "zeros" },
  method = { "firefly", "random", "net2net", "nash", "gradmax", "split_fast", "nope" } }

local function pick(g, list) return list[ff.randint(1, #list, { 1 }, g):item()] end

-- A random neighbourhood, mostly near a valid one so that later stages run.
local function random_nb(g)
  local nb = { steps = 1, quiet = true, generator = ff.Generator(1), new = 2 }
  local n = ff.randint(0, 3, { 1 }, g):item()
  for _ = 1, n do
    local k = pick(g, KEYS)
    local v
    if CHOICES[k] and ff.rand(1, g):item() < 0.7 then v = pick(g, CHOICES[k])
    elseif k == "1" or k == "3" or k == "*" or k == "?" or k == "x*" or k == "7" or k == "default" then
      v = ff.rand(1, g):item() < 0.7 and { new = pick(g, VALUES), split = pick(g, { true, false, 1 }) } or pick(g, VALUES)
    else v = pick(g, VALUES) end
    -- keep every run short: no huge pass or point counts
    if (k == "steps" or k == "points") and type(v) == "number" and v > 3 then v = 2 end
    if k == "method" and v == "nash" then v = "random" end
    nb[k] = v
  end
  if ff.rand(1, g):item() < 0.05 then return function(u) return { new = u.position } end end
  return nb
end

local BUDGETS = { 3, 0, -1, 0 / 0, math.huge, 2.5, "3", true, { neurons = 2 }, { nerons = 2 }, { params = 20 },
  { flops = -3 }, { per_unit = 1 }, { per_unit = { ["1"] = 1 } }, { pool = "unit", neurons = 2 }, { pool = "x" },
  { ratio = 0.5 }, { ratio = 0 }, { ratio = 0.3, inclusive = true, extra = 1 },
  function() return 2 end, function() return "x" end, function() error("no") end }

-- An error is clean when it comes from grow (or a check it calls), says
-- what it is about, and is not an internal Lua error.
local function assert_clean(err, where)
  err = tostring(err)
  lu.assertFalse(err:find("attempt to", 1, true) ~= nil, where .. ": internal error: " .. err)
  lu.assertFalse(err:find("stack traceback", 1, true) ~= nil, where .. ": " .. err)
  lu.assertTrue(err:find("grow", 1, true) ~= nil or err:find("budget", 1, true) ~= nil, where .. ": " .. err)
end

TestGrowBadInput = {}

function TestGrowBadInput:test_random_neighbourhoods_and_budgets()
  local g = ff.Generator(2024)
  local counts = { propose_err = 0, select_err = 0, apply_err = 0, applied = 0 }
  for i = 1, 300 do
    local net, opt, batches = setup()
    local before = bytes(net, opt)
    local nb = random_nb(g)
    local ok, p = pcall(ff.grow.propose, net, nb, batches)
    local where = "case " .. i
    if not ok then
      counts.propose_err = counts.propose_err + 1
      assert_clean(p, where .. " propose")
      lu.assertEquals(bytes(net, opt), before, where .. ": propose changed the network")
    else
      local b = pick(g, BUDGETS)
      local ok2, err = pcall(p.select, p, b)
      if not ok2 then
        counts.select_err = counts.select_err + 1
        assert_clean(err, where .. " select")
        lu.assertEquals(bytes(net, opt), before)
      else
        local ok3, _, _, r = pcall(p.apply, p, opt)
        if ok3 then
          counts.applied = counts.applied + 1
          lu.assertTrue(r.preserved == nil or r.preserved <= 1e-5, where .. ": preserved " .. tostring(r.preserved))
        else
          counts.apply_err = counts.apply_err + 1
          assert_clean(_, where .. " apply")
          lu.assertEquals(bytes(net, opt), before, where .. ": a failed apply changed the network")
        end
      end
    end
  end
  -- the sweep reached every stage
  lu.assertTrue(counts.propose_err > 30 and counts.select_err > 10 and counts.applied > 30,
    string.format("propose errors %d, select errors %d, apply errors %d, applied %d", counts.propose_err,
      counts.select_err, counts.apply_err, counts.applied))
end

os.exit(testlib.run())
