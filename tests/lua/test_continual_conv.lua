-- test_continual_conv: continual learning by growth on conv backbones
-- (per-task conv blocks, per-task batch norm, pooling, average-pool or
-- flatten heads) and unlocked neurons on both backbones: old tasks'
-- outputs and every stored byte of theirs unchanged after each later task,
-- with growth and unlocking in between; the view computes the task's
-- function; compact parameter counts; bad backbone options.
package.path = "tests/lua/?.lua;" .. package.path
local testlib = require "testlib"
local lu = testlib.lu
local ff = require "firefly"
local C = ff.continual

local SHAPE = { 1, 8, 8 }

local function images(seed, tasks)
  return C.bench.synthetic { tasks = tasks or 3, classes = 2, shape = SHAPE, n = 64, seed = seed or 3 }
end

local function conv_opts(extra)
  local o = { input_shape = SHAPE, cfg = { 4, "M", 6 }, epochs = 1, batch_size = 16, threshold = 0, budget = 4,
    grow_step = 2, candidates = 3, grow_epochs = 1, score_batches = 2, seed = 5 }
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

local bytes = testlib.float_bytes

-- Every tensor task t owns (blocks, biases, batch norm with its running
-- statistics, masks, head) as bytes.
local function snapshot(net, t)
  local s = {}
  for l, L in ipairs(net.layers) do
    s["R" .. l] = bytes(L.R[t])
    if L.b[t] then s["b" .. l] = bytes(L.b[t]) end
    if L.C[t] then s["C" .. l] = bytes(L.C[t]) end
    if net.masks[t] then s["mask" .. l] = bytes(net.masks[t][l]) end
    if net.bn[t] then
      for k, v in pairs(net.bn[t][l]) do s["bn" .. l .. k] = bytes(v) end
    end
  end
  s.head = bytes(net.heads[t].weight) .. bytes(net.heads[t].bias)
  return s
end

-- Learns the stream; after every task, every earlier task's outputs on
-- fixed inputs and its stored bytes are what they were right after it.
local function check_no_forgetting(learner, s)
  local probes, snaps = {}, {}
  local x = s.tasks[1].test.x:narrow(1, 1, 12)
  for t, task in ipairs(s.tasks) do
    learner:learn(task, t)
    probes[t] = ff.no_grad(function() return learner:forward(t, x) end)
    snaps[t] = snapshot(learner.net, t)
    for j = 1, t do
      local now = ff.no_grad(function() return learner:forward(j, x) end)
      lu.assertTrue(now:equal(probes[j]), string.format("task %d's outputs changed after task %d", j, t))
      for k, v in pairs(snapshot(learner.net, j)) do
        lu.assertTrue(v == snaps[j][k], string.format("task %d's %s changed after task %d", j, k, t))
      end
    end
  end
  local grown = 0
  for t = 2, #s.tasks do for _, n in ipairs(learner.net:born(t)) do grown = grown + n end end
  return grown
end

TestContinualConv = {}

function TestContinualConv:test_conv_bn_old_tasks_bit_identical_with_growth()
  local learner = C.Firefly(conv_opts())
  local grown = check_no_forgetting(learner, images(3, 4))
  lu.assertEquals(grown, 3 * 4) -- threshold 0: every later task grows its budget
  lu.assertTrue(learner.net.d.conv and learner.net.d.bn)
end

function TestContinualConv:test_flatten_head_and_masks_bit_identical()
  local learner = C.Firefly(conv_opts { head = "flatten", cfg = { 3, "M", 4, "M" }, mask_penalty = 2 })
  lu.assertEquals(learner.net.d.spatial, 4) -- 8x8 pooled twice: 2x2 positions per channel
  lu.assertTrue(check_no_forgetting(learner, images(4, 3)) > 0)
end

function TestContinualConv:test_view_computes_the_task_function()
  local s = images(5, 2)
  local learner = C.Firefly(conv_opts { mask_penalty = 2, unlock = true })
  learner:learn(s.tasks[1], 1)
  learner:learn(s.tasks[2], 2)
  local net = learner.net
  local x = s.tasks[2].test.x
  for t = 1, 2 do
    local view = net:view(t)
    view:eval()
    local a = ff.no_grad(function() return view(x:reshape(x:size(1), 1, 8, 8)) end)
    local b = ff.no_grad(function() return net:forward(t, x) end)
    lu.assertTrue(a:allclose(b, 1e-4, 1e-5), "view of task " .. t)
  end
end

function TestContinualConv:test_vgg_preset_as_backbone()
  local l = C.Firefly { input_shape = { 1, 28, 28 }, cfg = "small", width = 0.25 }
  lu.assertEquals(l.net.hidden, { 8, 8, 16, 16 })
  lu.assertEquals(#l.net.d.stages, 6)
end

function TestContinualConv:test_reference_size_is_one_trunk_and_heads()
  for _, head in ipairs { "avg", "flatten" } do
    local d = C.backbone.describe("test", { input_shape = SHAPE, cfg = { 4, "M", 6 }, bn = true, head = head })
    local trunk = C.backbone.trunk(d, ff.Generator(1))
    lu.assertEquals(C.backbone.trunk_params(d), trunk:num_params())
    local tasks = { { n_classes = 2 }, { n_classes = 3 } }
    lu.assertEquals(C.reference_params(d, nil, tasks, 2), trunk:num_params() + (6 * d.spatial + 1) * 5)
  end
  -- compare measures every method against the common backbone, also one
  -- that starts from a smaller network
  local res = C.compare { stream = images(10, 2), methods = { "firefly", "finetune" }, plot = false,
    options = { cfg = { 4, "M", 6 }, epochs = 1, batch_size = 16 },
    method_options = { firefly = { width = 0.5, budget = 0 } } }
  local d = C.backbone.describe("test", { input_shape = SHAPE, cfg = { 4, "M", 6 } })
  lu.assertEquals(res[1].learner.net.hidden, { 2, 3 })
  lu.assertAlmostEquals(res[1].relative_size, res[1].params / C.reference_params(d, nil, images(10, 2).tasks, 2), 1e-12)
  lu.assertAlmostEquals(res[2].relative_size, 1, 1e-12)
  -- the baselines on a conv backbone: fine-tuning is one network
  local r = C.run(C.learner("finetune", { input_shape = SHAPE, cfg = { 4, "M", 6 }, epochs = 1, batch_size = 16 }),
    images(9, 2))
  lu.assertAlmostEquals(r.relative_size, 1, 1e-12)
end

TestContinualUnlock = {}

local function check_unlock(learner, s)
  local grown = check_no_forgetting(learner, s)
  local unlocked = 0
  for _, row in ipairs(learner.log) do unlocked = unlocked + row.unlocked end
  lu.assertTrue(unlocked > 0, "no neuron was unlocked")
  lu.assertTrue(grown > 0)
  -- an unlocked neuron's frozen original is masked for the task that took a copy
  local masked = 0
  for t = 2, #s.tasks do
    for _, m in ipairs(learner.net.masks[t]) do masked = masked + m:eq(0):sum():item() end
  end
  lu.assertTrue(masked >= 1)
  -- the compact count leaves out the zeros where task neurons meet masked ones
  lu.assertTrue(learner.net:num_params() < learner.net:dense_params())
  return unlocked
end

function TestContinualUnlock:test_mlp_unlock_keeps_old_tasks_bit_identical()
  local s = C.bench.synthetic { tasks = 3, classes = 2, dim = 8, n = 96, seed = 3 }
  local learner = C.Firefly { input_dim = 8, hidden = { 6, 5 }, epochs = 2, batch_size = 16, threshold = 0, budget = 6,
    grow_step = 3, candidates = 2, grow_epochs = 1, seed = 5, unlock = true, mask_penalty = 0 }
  lu.assertEquals(learner.name, "firefly+unlock")
  check_unlock(learner, s)
end

function TestContinualUnlock:test_conv_unlock_keeps_old_tasks_bit_identical()
  check_unlock(C.Firefly(conv_opts { unlock = true, mask_penalty = 0, candidates = 2, budget = 6, grow_step = 3 }),
    images(6, 3))
end

function TestContinualUnlock:test_unlock_counts_against_the_budget()
  local learner = C.Firefly(conv_opts { unlock = true, budget = 3, grow_step = 2 })
  local s = images(7, 2)
  learner:learn(s.tasks[1], 1)
  local summary = learner:learn(s.tasks[2], 2)
  lu.assertEquals(summary.grown, 3)
  local b = learner.net:born(2)
  lu.assertEquals(b[1] + b[2], 3) -- copies and new neurons alike are task 2's neurons
end

TestContinualConvErrors = {}

function TestContinualConvErrors:test_bad_backbone_options()
  local e = testlib.error_of
  lu.assertStrContains(e(C.Firefly, { cfg = { 4, "M" } }), "needs option 'input_shape'")
  lu.assertStrContains(e(C.Firefly, { cfg = "vgg99", input_shape = SHAPE }), "names no nn.vgg preset")
  lu.assertStrContains(e(C.Firefly, { cfg = { 4, "X" }, input_shape = SHAPE }), "option 'cfg' holds X")
  lu.assertStrContains(e(C.Firefly, { cfg = { 4, "M", "M", "M", "M" }, input_shape = SHAPE }), "below 1x1")
  lu.assertStrContains(e(C.Firefly, { cfg = { 4 }, input_shape = SHAPE, head = "max" }), "option 'head'")
  lu.assertStrContains(e(C.Firefly, { cfg = { 4 }, input_shape = { 1, 8 } }), "option 'input_shape'")
  lu.assertStrContains(e(C.Firefly, { input_dim = 8, unlock = 1 }), "option 'unlock' must be true or false")
end

TestContinualCPG = {}

local function cpg_run(opts, s)
  local r = C.run(C.learner("cpg", opts), s, { probe = 10 })
  for t, task in ipairs(s.tasks) do
    local now = ff.no_grad(function() return r.learner:forward(t, task.test.x:narrow(1, 1, 10)) end)
    lu.assertTrue(now:equal(r.probes[t]), "cpg: task " .. t .. "'s outputs changed")
  end
  lu.assertEquals(r.forgetting, 0)
  return r
end

function TestContinualCPG:test_mlp_picks_grows_compacts_without_forgetting()
  local s = C.bench.synthetic { tasks = 3, classes = 2, dim = 8, n = 96, seed = 3 }
  -- an unreachable target: every task grows max_grow times
  local r = cpg_run({ input_dim = 8, hidden = { 6, 5 }, epochs = 1, batch_size = 16, seed = 5, target = 1,
    max_grow = 1, prune = 0.5, tolerance = 1 }, s)
  local cpg = r.learner
  for t = 1, 3 do lu.assertEquals(r.summaries[t].grown, 2 + 2) end -- ceil(0.25 * 6) + ceil(0.25 * 5)
  lu.assertEquals(cpg.cur, { 6 + 3 * 2, 5 + 3 * 2 })
  -- tolerance 1: compaction runs its whole schedule, half of each task's free weights released
  for t = 1, 3 do lu.assertEquals(r.summaries[t].pruned, 0.5) end
  lu.assertTrue(r.summaries[2].mask_usage >= 0 and r.summaries[2].mask_usage <= 1)
  -- released weights are zero and free; owned ones are counted, the rest only in the dense size
  local owned, released = 0, 0
  for l = 1, 2 do
    owned = owned + cpg.owner[l]:gt(0):sum():item()
    released = released + (cpg.owner[l]:eq(0) * cpg.W[l]:ne(0)):sum():item()
  end
  lu.assertEquals(released, 0)
  lu.assertEquals(r.params, math.tointeger(owned) + cpg:task_extras())
  lu.assertTrue(r.params < r.dense_params)
end

function TestContinualCPG:test_conv_bn_without_forgetting()
  local r = cpg_run({ input_shape = SHAPE, cfg = { 4, "M", 6 }, epochs = 1, batch_size = 16, seed = 5, target = 1,
    max_grow = 1, prune_steps = 2 }, images(8, 3))
  lu.assertEquals(r.learner.cur, { 4 + 3, 6 + 3 * 2 })
  lu.assertEquals(#r.learner.bn, 3) -- batch norm per task
end

function TestContinualCPG:test_no_growth_above_target_and_bad_options()
  local s = C.bench.synthetic { tasks = 2, classes = 2, dim = 8, n = 64, seed = 4 }
  local r = C.run(C.learner("cpg", { input_dim = 8, hidden = { 6, 5 }, epochs = 1, batch_size = 16, target = 0 }), s)
  lu.assertEquals(r.learner.cur, { 6, 5 })
  local e = testlib.error_of
  lu.assertStrContains(e(C.CPG, { input_dim = 8, prune = 1 }), "continual.CPG: option 'prune' must be a number in [0, 1)")
  lu.assertStrContains(e(C.CPG, { input_dim = 8, target = 2 }), "option 'target' must be an accuracy")
  lu.assertStrContains(e(C.CPG, { input_dim = 8, prune_step = 2 }), "unknown option 'prune_step'")
end

os.exit(testlib.run())
