-- test_grow_project: step 1's projection in one engine call
-- (engine/core/grow_project.c) gives the same bits as its composition of
-- tensor ops (methods/firefly.lua, M.composed_projection), on the shapes
-- growth makes (MLP and conv units, a Linear after Flatten, one neuron, a
-- candidate layer), with rows and neurons both inside and outside the
-- constraints; a whole propose gives the same scores and steps either way;
-- bad arguments are errors that name the function, argument and shapes.
package.path = "tests/lua/?.lua;" .. package.path
local testlib = require "testlib"
local lu = testlib.lu
local ff = require "firefly"
local nn = ff.nn
local core = require "firefly.core"
local firefly = require "firefly.grow.methods.firefly"

-- Both versions on copies of the same tensors; returns them after.
local function both(make, project_fn)
  local a, b = make(), make()
  firefly.composed_projection = true
  local ok, err = pcall(project_fn, a)
  firefly.composed_projection = nil
  assert(ok, err)
  project_fn(b)
  return a, b
end

-- A unit of the over-grown network with only the given candidates.
local function og_of(c) return { units = { c } } end

local function scaled(shape, g, spread)
  -- rows of very different norms: some inside the constraint, some out
  local t = ff.randn(shape, g)
  local s = { shape[1] }
  for i = 2, #shape do s[i] = 1 end
  return (t * (ff.rand(s, g) * spread)):contiguous()
end

TestGrowProject = {}

function TestGrowProject:test_rows_same_bits()
  local g = ff.Generator(1)
  for _, shape in ipairs { { 256, 784 }, { 8, 3, 3, 3 }, { 5, 1 }, { 3, 13 } } do
    for _, eps in ipairs { 1e-2, 0.5 } do
      local base = scaled(shape, g, 4 * eps)
      local a, b = both(function() return { eps = eps, split = { v = base:clone() } } end,
        function(c) firefly.project(og_of(c)) end)
      lu.assertTrue(a.split.v:equal(b.split.v), table.concat(shape, "x") .. " eps " .. eps)
      lu.assertFalse(a.split.v:equal(base), "the projection moved some rows")
      -- and it is a projection: every row's norm <= eps (to rounding)
      local norms = b.split.v:view(shape[1], -1):norm(2, 2)
      lu.assertTrue(norms:max():item() <= eps * (1 + 1e-6))
    end
  end
end

function TestGrowProject:test_neurons_same_bits()
  local g = ff.Generator(2)
  -- {k, u's shape, o's shape}: an MLP unit, a conv unit, a Linear after
  -- Flatten (9 positions per neuron), one neuron, a candidate conv layer
  local cases = {
    { 16, { 16, 784 }, { 10, 16 } },
    { 4, { 4, 3, 3, 3 }, { 6, 4, 3, 3 } },
    { 4, { 4, 5, 3, 3 }, { 10, 36 } },
    { 1, { 1, 5 }, { 7, 1 }, 3 },
    { 3, { 3, 6, 3, 3 }, { 6, 3, 3, 3 } },
  }
  for _, case in ipairs(cases) do
    local k, ushape, oshape = case[1], case[2], case[3]
    local u, o = scaled(ushape, g, case[4] or 0.3), ff.randn(oshape, g) * 0.2
    local b, e = ff.randn(k, g) * 0.5, ff.randn(k, g) * 2e-2
    local function make()
      return { eps = 1e-2, new = { u = u:clone(), o = o:clone(), b = b:clone(), e = e:clone() } }
    end
    local a, r = both(make, function(c) firefly.project(og_of(c)) end)
    local what = table.concat(ushape, "x") .. " / " .. table.concat(oshape, "x")
    for _, key in ipairs { "u", "b", "o", "e" } do
      lu.assertTrue(a.new[key]:equal(r.new[key]), what .. ": " .. key)
    end
    lu.assertFalse(r.new.u:equal(u), what .. ": some neurons were outside the constraint")
    lu.assertTrue(r.new.e:abs():max():item() <= 1e-2 * (1 + 1e-7), what)
  end
end

function TestGrowProject:test_propose_same_scores()
  -- MLP and conv networks, splits, new neurons and new layers, two passes
  ff.manual_seed(5)
  local nets = {
    { nn.mlp { 6, 8, 5, 3 }, ff.randn(16, 6, ff.Generator(6)) },
    { nn.Sequential { nn.Conv2d(2, 4, 3, { padding = 1 }), nn.ReLU(), nn.Conv2d(4, 3, 3, { padding = 1 }),
      nn.ReLU(), nn.Flatten(), nn.Linear(3 * 16, 3) }, ff.randn(6, 2, 4, 4, ff.Generator(7)) },
  }
  for n, case in ipairs(nets) do
    local net, x = case[1], case[2]
    local batches = { { x, ff.randint(1, 3, x:size(1), ff.Generator(8)) } }
    local function propose()
      return ff.grow.propose(net, { new = 3, layers = 2, steps = 2, lr = 5e-2, generator = ff.Generator(9),
        quiet = true }, batches):candidates()
    end
    firefly.composed_projection = true
    local ok, ref = pcall(propose)
    firefly.composed_projection = nil
    assert(ok, ref)
    local got = propose()
    lu.assertEquals(#got, #ref)
    lu.assertTrue(#got > 0)
    for i = 1, #ref do
      lu.assertEquals(got[i].score, ref[i].score, "net " .. n .. " candidate " .. i)
      lu.assertEquals(got[i].step, ref[i].step, "net " .. n .. " candidate " .. i)
    end
  end
end

function TestGrowProject:test_errors()
  local rows, neurons = core._grow_project_rows, core._grow_project_neurons
  local z = ff.zeros
  lu.assertErrorMsgContains("grow_project_rows: eps must be positive, got 0", rows, z(3, 2), 0)
  lu.assertErrorMsgContains("grow_project_rows: argument #1 (v, shape 2x3) must be contiguous", rows,
    z(3, 2):t(), 1)
  lu.assertErrorMsgContains("grow_project_rows: argument #1 (v) must have a row dim", rows, ff.tensor(1), 1)
  lu.assertErrorMsgContains("grow_project_rows: cannot modify in place a tensor that requires grad", rows,
    z(3, 2):requires_grad(true), 1)
  lu.assertErrorMsgContains("argument #2 (u) has shape 3x5, expected 4 rows to match argument #1 (e, 4)",
    neurons, z(4), z(3, 5), z(4), z(2, 4), 1)
  lu.assertErrorMsgContains("argument #3 (b) has shape 3, expected 4", neurons, z(4), z(4, 5), z(3), z(2, 4), 1)
  lu.assertErrorMsgContains("argument #4 (o) has shape 2x6, expected (out, k x n, ...) with k = 4", neurons,
    z(4), z(4, 5), z(4), z(2, 6), 1)
  lu.assertErrorMsgContains("argument #1 (e) has shape 2x2, expected one step per neuron", neurons,
    z(2, 2), z(4, 5), z(4), z(2, 4), 1)
  lu.assertErrorMsgContains("grow_project_neurons: eps must be positive", neurons, z(4), z(4, 5), z(4), z(2, 4), -1)
  -- an error changes nothing
  local e = ff.full({ 4 }, 5)
  pcall(neurons, e, z(4, 5), z(3), z(2, 4), 1)
  lu.assertEquals(e[1], 5)
end

os.exit(testlib.run())
