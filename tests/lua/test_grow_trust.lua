-- test_grow_trust: a growth step never makes a network worse by mistake.
-- The sign of a trained step survives apply (the flip invariance and the
-- measured-vs-predicted sign over many seeds), bad inputs are refused
-- before anything changes, and apply is all or nothing.
package.path = "tests/lua/?.lua;" .. package.path
local testlib = require "testlib"
local lu = testlib.lu
local ff = require "firefly"
local nn = ff.nn
local overgrown = require "firefly.grow.overgrown"

-- A student MLP trained a little on a teacher's regression data.
local function teacher_task(seed, width)
  ff.manual_seed(seed)
  local g = ff.Generator(seed)
  local d = 4
  local teacher = nn.mlp { d, 12, 2, act = "tanh", generator = g }
  local x = ff.randn(256, d, g)
  local y = ff.no_grad(teacher, x)
  local net = nn.mlp { d, width or 3, width or 3, 2, act = "tanh", generator = g }
  local opt = ff.optim.Adam(net:named_parameters(), { lr = 1e-2 })
  for _ = 1, 30 do
    opt:zero_grad()
    ff.mse_loss(net(x), y):backward()
    opt:step()
  end
  return net, opt, { { x:narrow(1, 1, 128), y:narrow(1, 1, 128) }, { x:narrow(1, 129, 128), y:narrow(1, 129, 128) } }
end

local function mse(out, y) return ff.mse_loss(out, y) end

-- Every parameter, buffer and optimiser state tensor, copied.
local function state_of(net, opt)
  local s = {}
  for _, list in ipairs { net:named_parameters(), net:named_buffers() } do
    for _, e in ipairs(list) do s[#s + 1] = { e.name, e.param:clone() } end
  end
  if opt then
    for _, e in ipairs(opt:named_params()) do
      -- in sorted key order: pairs' order is not fixed (Lua 5.4 seeds string
      -- hashes per state), and a restored state table may be a new table
      local st, keys = opt:state_of(e.param) or {}, {}
      for k, v in pairs(st) do if ff.is_tensor(v) then keys[#keys + 1] = k end end
      table.sort(keys)
      for _, k in ipairs(keys) do
        s[#s + 1] = { "opt." .. tostring(e.name) .. "." .. k, st[k]:clone() }
      end
      s[#s + 1] = { "opt.param." .. tostring(e.name), e.param:clone() }
    end
  end
  return s, tostring(net)
end

local function assert_same_state(net, opt, before, printed)
  local now, now_printed = state_of(net, opt)
  lu.assertEquals(now_printed, printed)
  lu.assertEquals(#now, #before)
  for i, e in ipairs(before) do
    lu.assertEquals(now[i][1], e[1])
    lu.assertTrue(now[i][2]:equal(e[2]), "changed: " .. e[1])
  end
end

TestSign = {}

-- (e, o) -> (-e, -o) leaves the over-grown function, step 1's trajectory
-- (Adam and the projection are odd in the perturbations) and every score
-- unchanged; the grown network must be the same too.
function TestSign:test_flipping_a_candidate_changes_nothing()
  local function grown(flip)
    local net, opt, batches = teacher_task(3)
    local build = overgrown.build
    overgrown.build = function(...)
      local og = build(...)
      if flip then
        ff.no_grad(function()
          for _, c in ipairs(og.units) do
            for _, kind in ipairs { "new", "layer" } do
              local n = c[kind]
              if n then
                local k = n.e:size(1)
                for j = 1, k, 2 do -- every other candidate
                  n.e[j] = -n.e[j]
                  local o = n.o:view(n.o:size(1), k, -1)
                  o:narrow(2, j, 1):mul_(-1)
                end
              end
            end
          end
        end)
      end
      return og
    end
    local ok, p = pcall(ff.grow.propose, net, { new = 4, layers = { candidates = 2 }, eps = 1e-2, lr = 1e-2,
      steps = 2, loss = mse, generator = ff.Generator(7), quiet = true }, batches)
    overgrown.build = build
    assert(ok, p)
    p:select(6)
    local negative = 0
    for _, c in ipairs(p.selected) do if c.dir < 0 then negative = negative + 1 end end
    local scores = {}
    for _, c in ipairs(p:candidates()) do scores[#scores + 1] = c.score end
    local _, _, r = p:apply(opt)
    return net, scores, r, negative
  end
  local a, sa, ra, na = grown(false)
  local b, sb, rb, nb = grown(true)
  lu.assertTrue(na + nb > 0, "some selected candidate has a negative trained step")
  for i = 1, #sa do lu.assertAlmostEquals(sb[i], sa[i], 1e-6 * math.max(1, math.abs(sa[i]))) end
  local pa, pb = a:named_parameters(), b:named_parameters()
  lu.assertEquals(#pb, #pa)
  for i = 1, #pa do
    lu.assertTrue(pb[i].param:allclose(pa[i].param, 1e-6, 1e-7), "grown weights differ: " .. pa[i].name)
  end
  lu.assertAlmostEquals(rb.measured, ra.measured, 1e-7)
  lu.assertTrue(ra.predicted < 0 and ra.measured < 0)
end

-- Over many seeds with a small step, every growth step changes the loss in
-- the direction it predicts, by about the amount it predicts.
function TestSign:test_measured_follows_predicted_over_seeds()
  local n, good, lines = 0, 0, {}
  for seed = 1, 24 do
    local net, opt, batches = teacher_task(100 + seed)
    local p = ff.grow.propose(net, ff.grow.neighbourhood("paper", { new = 4, eps = 1e-3, lr = 1e-2, steps = 2,
      loss = mse, generator = ff.Generator(seed), quiet = true }), batches)
    p:select(2)
    local _, _, r = p:apply(opt)
    n = n + 1
    local ratio = r.measured / r.predicted
    lines[#lines + 1] = string.format("seed %d: predicted %.3g measured %.3g", seed, r.predicted, r.measured)
    lu.assertTrue(r.predicted < 0, lines[#lines])
    lu.assertTrue(r.measured < 0, "the loss rose: " .. lines[#lines])
    if ratio >= 0.5 and ratio <= 1.5 then good = good + 1 end
  end
  lu.assertTrue(good >= 0.9 * n, string.format("%d of %d within [0.5, 1.5]:\n%s", good, n, table.concat(lines, "\n")))
end

TestGuards = {}

-- Each bad neighbourhood value is an error naming it, and the network and
-- optimiser are byte-equal afterwards.
function TestGuards:test_bad_values_refused_before_anything_changes()
  local net, opt, batches = teacher_task(5)
  local before, printed = state_of(net, opt)
  local cases = {
    { { eps = 0 }, "eps" }, { { eps = -1 }, "eps" }, { { eps = 0 / 0 }, "eps" },
    { { new = -1 }, "new" }, { { new = 2.5 }, "new" }, { { new = 1e9 }, "GiB" },
    { { layers = { candidates = -2 } }, "layers.candidates" }, { { layers = { candiates = 2 } }, "did you mean 'candidates'" },
    { { split = { "3" } }, "split" }, { { steps = -1 }, "steps" }, { { lr = 0 }, "lr" },
    { { points = 0 }, "points" }, { { generator = 5 }, "generator" }, { { where = "1" }, "where" },
    { { penalty = -1 }, "penalty" }, { { nwe = 2 }, "did you mean 'new'" },
  }
  for _, case in ipairs(cases) do
    local nb = case[1]
    nb.loss, nb.quiet = mse, true
    local err = testlib.error_of(ff.grow.propose, net, nb, batches)
    lu.assertStrContains(err, case[2])
    lu.assertStrContains(err, "grow.propose")
  end
  lu.assertStrContains(testlib.error_of(ff.grow.propose, "net", {}, batches), "argument #1")
  lu.assertStrContains(testlib.error_of(ff.grow.propose, net, 5, batches), "argument #2")
  lu.assertStrContains(testlib.error_of(ff.grow.propose, net, {}, {}), "empty")
  assert_same_state(net, opt, before, printed)
end

function TestGuards:test_batches_checked_once()
  -- a method reading a list many times checks it once (batches.checked):
  -- the same refusal up front, then no check per pass
  local batches_mod = require "firefly.grow.batches"
  local _, _, batches = teacher_task(6)
  local bad = batches[2][1]:clone()
  bad[1][1] = 0 / 0
  local err = testlib.error_of(batches_mod.checked, { batches[1], { bad, batches[2][2] } })
  lu.assertStrContains(err, "grow.propose: scoring batch 2")
  local list = batches_mod.checked(batches)
  lu.assertTrue(list.checked)
  lu.assertEquals(#list, #batches)
  lu.assertIs(batches_mod.checked(list), list)
  -- (a batch changed after the check is not seen again: propose's own list
  -- lives only inside one propose)
  local kept = list[2][1][1][1]
  list[2][1][1][1] = 0 / 0
  local seen = 0
  batches_mod.each_batch(list, function() seen = seen + 1 end)
  lu.assertEquals(seen, #batches)
  lu.assertStrContains(testlib.error_of(batches_mod.each_batch, batches, function() end), "scoring batch 2")
  list[2][1][1][1] = kept
end

function TestGuards:test_non_finite_batch_refused()
  local net, opt, batches = teacher_task(6)
  local before, printed = state_of(net, opt)
  local bad = batches[2][1]:clone()
  bad[3][2] = 0 / 0
  local nan_batches = { batches[1], { bad, batches[2][2] } }
  local err = testlib.error_of(ff.grow.propose, net, { new = 2, loss = mse, quiet = true }, nan_batches)
  lu.assertStrContains(err, "scoring batch 2")
  lu.assertStrContains(err, "non-finite")
  local inf_y = batches[1][2]:clone()
  inf_y[1][1] = math.huge
  err = testlib.error_of(ff.grow.propose, net, { new = 2, loss = mse, quiet = true }, { { batches[1][1], inf_y } })
  lu.assertStrContains(err, "non-finite target")
  assert_same_state(net, opt, before, printed)
  -- a step so large that the grown network overflows is an error too (in
  -- propose or in apply), never non-finite weights
  local ok, p = pcall(ff.grow.propose, net, { new = 2, eps = 1e30, lr = 1e30, loss = mse, quiet = true }, batches)
  if ok then
    p:select(4)
    err = testlib.error_of(p.apply, p, opt)
    lu.assertStrContains(err, "grow.apply")
  else
    lu.assertStrContains(tostring(p), "grow.propose")
  end
  assert_same_state(net, opt, before, printed)
end

TestApply = {}

-- A failure half-way through apply (the second unit's candidates are not
-- finite) leaves network and optimiser byte-equal, and the proposal can
-- still be applied once fixed.
function TestApply:test_failure_half_way_rolls_back()
  local net, opt, batches = teacher_task(8)
  -- a step of the optimiser first, so that it has state to carry
  opt:zero_grad(); mse(net(batches[1][1]), batches[1][2]):backward(); opt:step()
  local p = ff.grow.propose(net, { new = 3, layers = { candidates = 1 }, loss = mse, generator = ff.Generator(2),
    quiet = true }, batches)
  p:select(12)
  -- the last unit that grows new neurons, after another unit's edits
  local last, first = 0, math.huge
  for _, c in ipairs(p.selected) do
    first = math.min(first, c.unit)
    if c.kind == "new" then last = math.max(last, c.unit) end
  end
  lu.assertTrue(last > first, "a later unit grows new neurons")
  local before, printed = state_of(net, opt)
  local rng = ff.get_rng_state():get_state()
  local o = p.og.units[last].new.o
  local saved = o:clone()
  ff.no_grad(function() o:fill_(0 / 0) end)
  local err = testlib.error_of(p.apply, p, opt)
  lu.assertStrContains(err, "not finite")
  lu.assertStrContains(err, "as they were before apply")
  assert_same_state(net, opt, before, printed)
  lu.assertEquals(ff.get_rng_state():get_state(), rng)
  ff.no_grad(function() o:copy_(saved) end)
  local _, maps, r = p:apply(opt)
  lu.assertTrue(#maps > 0 and r.params_after > r.params_before)
  lu.assertTrue(r.preserved <= 1e-6, "preserved " .. r.preserved)
end

-- report.preserved and apply{check = true}: an operator that changes the
-- function at zero step is caught, and nothing is left changed.
function TestApply:test_preservation_check()
  local net, opt, batches = teacher_task(9)
  local function proposal()
    local p = ff.grow.propose(net, { new = 2, loss = mse, generator = ff.Generator(4), quiet = true }, batches)
    return p:select(4)
  end
  local edit = require "firefly.grow.edit"
  local add = edit.add
  edit.add = function(unit, ...)
    ff.no_grad(function() unit.producer.bias:add_(1e-2) end) -- a broken operator
    return add(unit, ...)
  end
  local before, printed = state_of(net, opt)
  local p = proposal()
  local ok, err = pcall(p.apply, p, opt, { check = true })
  edit.add = add
  lu.assertFalse(ok)
  lu.assertStrContains(tostring(err), "changed the function")
  assert_same_state(net, opt, before, printed)
  lu.assertStrContains(testlib.error_of(p.apply, p, opt, { chek = true }), "did you mean 'check'")
  local _, _, r = p:apply(opt, { check = true })
  lu.assertTrue(r.preserved <= 1e-6)
  lu.assertStrContains(tostring(r), "preserved")
end

os.exit(testlib.run())
