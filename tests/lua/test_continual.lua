-- test_continual: task-incremental continual learning by growth on small
-- synthetic tasks: old tasks' predictions bit-identical and old weights
-- byte-equal after later tasks (with growth in between), the view equal
-- to the task's forward, binary masks and the sparsity penalty, growth
-- gated by the validation loss and bounded by the budget, EWC's penalty
-- and its gradient, the metrics, the benchmarks, seeds and bad options.
package.path = "tests/lua/?.lua;" .. package.path
local testlib = require "testlib"
local lu = testlib.lu
local ff = require "firefly"
local C = ff.continual

local function stream(seed, tasks)
  return C.bench.synthetic { tasks = tasks or 3, classes = 2, dim = 8, n = 96, seed = seed or 3 }
end

local function firefly_opts(extra)
  local o = { input_dim = 8, hidden = { 6, 5 }, epochs = 2, batch_size = 16, threshold = 0, budget = 6,
    grow_step = 3, candidates = 4, grow_epochs = 1, seed = 5 }
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

local bytes = testlib.float_bytes

-- Every tensor task t owns, as bytes, keyed by a readable name.
local function snapshot(net, t)
  local s = {}
  for l, L in ipairs(net.layers) do
    s["R" .. l] = bytes(L.R[t])
    s["b" .. l] = bytes(L.b[t])
    if L.C[t] then s["C" .. l] = bytes(L.C[t]) end
    if net.masks[t] then s["mask" .. l] = bytes(net.masks[t][l]) end
  end
  s.head = bytes(net.heads[t].weight) .. bytes(net.heads[t].bias)
  return s
end

TestContinualFirefly = {}

function TestContinualFirefly:test_old_tasks_bit_identical_and_weights_unchanged()
  local s = stream(3, 4)
  local learner = C.Firefly(firefly_opts())
  local probes, snaps = {}, {}
  local x = s.tasks[1].test.x:narrow(1, 1, 20)
  for t, task in ipairs(s.tasks) do
    learner:learn(task, t)
    probes[t] = ff.no_grad(function() return learner:forward(t, x) end)
    snaps[t] = snapshot(learner.net, t)
  end
  -- growth happened after task 1, so later tasks' matrices are wider
  local grown = 0
  for t = 2, #s.tasks do for _, n in ipairs(learner.net:born(t)) do grown = grown + n end end
  lu.assertTrue(grown > 0)
  for t = 1, #s.tasks do
    local now = ff.no_grad(function() return learner:forward(t, x) end)
    lu.assertTrue(now:equal(probes[t]), "task " .. t .. "'s predictions changed")
    for k, v in pairs(snapshot(learner.net, t)) do
      lu.assertTrue(v == snaps[t][k], "task " .. t .. "'s " .. k .. " changed")
    end
  end
end

function TestContinualFirefly:test_harness_probes_match_after_the_last_task()
  local s = stream(4, 3)
  local r = C.run(C.learner("firefly", firefly_opts()), s, { probe = 16 })
  for t, task in ipairs(s.tasks) do
    local now = ff.no_grad(function() return r.learner:forward(t, task.test.x:narrow(1, 1, 16)) end)
    lu.assertTrue(now:equal(r.probes[t]))
  end
  lu.assertEquals(r.forgetting, 0)
end

function TestContinualFirefly:test_view_computes_the_task_function()
  local s = stream(5, 2)
  local learner = C.Firefly(firefly_opts { mask_penalty = 2 })
  learner:learn(s.tasks[1], 1)
  learner:learn(s.tasks[2], 2)
  local net = learner.net
  local x = s.tasks[2].test.x
  for t = 1, 2 do
    local view = net:view(t)
    local a = ff.no_grad(function() return view(x) end)
    local b = ff.no_grad(function() return net:forward(t, x) end)
    lu.assertTrue(a:allclose(b, 1e-4, 1e-5), "view of task " .. t)
  end
  -- the view leaves out masked neurons: its widths are the kept ones plus task 2's
  local view = net:view(2)
  local kept = net.masks[2][1]:sum():item()
  lu.assertEquals(view:get(1).weight:size(1), kept + net.layers[1].n[2])
end

function TestContinualFirefly:test_masks_binary_and_penalty_reduces_usage()
  local s = stream(6, 2)
  local usage = {}
  for i, lambda in ipairs { 0, 5 } do
    local learner = C.Firefly(firefly_opts { hidden = { 12, 12 }, mask_penalty = lambda, mask_epochs = 6, mask_init = 1, mask_lr = 0.2,
      budget = 0 })
    learner:learn(s.tasks[1], 1)
    local summary = learner:learn(s.tasks[2], 2)
    for _, m in ipairs(learner.net.masks[2]) do
      lu.assertEquals(m:eq(0):sum():item() + m:eq(1):sum():item(), m:numel())
      lu.assertTrue(m:sum():item() >= 1) -- every layer keeps a neuron
    end
    usage[i] = summary.mask_usage
  end
  lu.assertTrue(usage[2] < usage[1], string.format("usage %.3f with the penalty, %.3f without", usage[2], usage[1]))
  -- binarise at 0.5: logit > 0
  local m = C.masks.binarise { ff.tensor { -1, 0.5, 0, 2 }, ff.tensor { -3, -1 } }
  lu.assertEquals(m[1]:totable(), { 0, 1, 0, 1 })
  lu.assertEquals(m[2]:totable(), { 0, 1 }) -- the largest gate survives
  local p = C.masks.penalty({ ff.tensor { 0.5, 1 }, ff.tensor { 0 } }, 3)
  lu.assertAlmostEquals(p:item(), 3 * 1.5 / 3, 1e-6)
end

function TestContinualFirefly:test_growth_gated_by_threshold_and_budget()
  local s = stream(7, 3)
  -- a threshold no loss exceeds: no neuron is ever added
  local never = C.Firefly(firefly_opts { threshold = 1e9 })
  for t, task in ipairs(s.tasks) do never:learn(task, t) end
  for t = 2, 3 do lu.assertEquals(never.net:born(t), { 0, 0 }) end
  lu.assertEquals(#never.log, 0)
  -- threshold 0: grows until the budget, never past it, in rounds of grow_step
  local always = C.Firefly(firefly_opts { threshold = 0, budget = 5, grow_step = 2 })
  for t, task in ipairs(s.tasks) do always:learn(task, t) end
  for t = 2, 3 do
    local b = always.net:born(t)
    lu.assertEquals(b[1] + b[2], 5)
  end
  for _, row in ipairs(always.log) do
    lu.assertTrue(row.valid_loss_before > 0)
    lu.assertTrue(row.added <= 2 and row.grown <= 5)
  end
  -- every round was started with the loss above the threshold
  local mid = C.Firefly(firefly_opts { threshold = 0.3, budget = 8, grow_step = 2 })
  for t, task in ipairs(s.tasks) do mid:learn(task, t) end
  for _, row in ipairs(mid.log) do lu.assertTrue(row.valid_loss_before > 0.3) end
end

function TestContinualFirefly:test_same_seed_same_run()
  local function run(seed)
    local r = C.run(C.learner("firefly", firefly_opts { seed = seed }), stream(8, 3), { probe = 8 })
    return r
  end
  local a, b, c = run(5), run(5), run(6)
  for t = 1, 3 do lu.assertTrue(a.probes[t]:equal(b.probes[t])) end
  lu.assertEquals(a.R, b.R)
  lu.assertEquals(a.params, b.params)
  local differs = false
  for t = 1, 3 do differs = differs or not a.probes[t]:equal(c.probes[t]) end
  lu.assertTrue(differs)
end

TestContinualBaselines = {}

function TestContinualBaselines:test_ewc_penalty_and_gradient()
  local g = ff.Generator(11)
  local p1, p2 = ff.randn(3, 2, g):requires_grad(true), ff.randn(4, g):requires_grad(true)
  local anchors = {}
  for k = 1, 2 do
    anchors[k] = { fisher = { ff.rand(3, 2, g), ff.rand(4, g) }, star = { ff.randn(3, 2, g), ff.randn(4, g) } }
  end
  local lambda = 7
  local value = C.ewc.penalty({ p1, p2 }, anchors, lambda):item()
  local expected = 0
  for _, a in ipairs(anchors) do
    for i, p in ipairs { p1, p2 } do
      local F, s, v = a.fisher[i]:view(-1):totable(), a.star[i]:view(-1):totable(), p:view(-1):totable()
      for j = 1, #v do expected = expected + lambda / 2 * F[j] * (v[j] - s[j]) ^ 2 end
    end
  end
  lu.assertAlmostEquals(value, expected, 1e-4 * math.abs(expected))
  lu.assertTrue(ff.gradcheck(function(a, b) return C.ewc.penalty({ a, b }, anchors, lambda) end, { p1, p2 }))
  lu.assertNil(C.ewc.penalty({ p1 }, {}, lambda))
  -- the Fisher of a model is non-negative and shaped like its parameters
  local s = stream(9, 1)
  local lin = ff.nn.Linear(8, 2, { generator = g })
  local F = C.ewc.fisher(function(x, y) return ff.cross_entropy(lin(x), y) end, lin:parameters(),
    s.tasks[1].train, { samples = 10, generator = g })
  lu.assertEquals(F[1]:size(), { 2, 8 })
  lu.assertTrue(F[1]:min():item() >= 0 and F[1]:sum():item() > 0)
end

function TestContinualBaselines:test_baselines_run_and_sizes()
  local s = stream(10, 3)
  local o = { input_dim = 8, hidden = { 6, 5 }, epochs = 2, batch_size = 16 }
  local ft = C.run(C.learner("finetune", o), s)
  local sep = C.run(C.learner("separate", o), s)
  local e = C.run(C.learner("ewc", { input_dim = 8, hidden = { 6, 5 }, epochs = 2, batch_size = 16,
    lambda = 10, fisher_samples = 16 }), s)
  lu.assertAlmostEquals(ft.relative_size, 1, 1e-12)
  lu.assertAlmostEquals(e.relative_size, 1, 1e-12)
  lu.assertTrue(sep.relative_size > 2) -- three trunks against one (plus the heads)
  lu.assertEquals(sep.forgetting, 0)
  lu.assertEquals(#ft.R, 3)
end

TestContinualMetrics = {}

function TestContinualMetrics:test_hand_made_matrix()
  local R = { { 0.9 }, { 0.8, 0.95 }, { 0.7, 0.9, 0.85 } }
  lu.assertAlmostEquals(C.metrics.average_accuracy(R), (0.7 + 0.9 + 0.85) / 3, 1e-12)
  lu.assertAlmostEquals(C.metrics.average_accuracy(R, 2), (0.8 + 0.95) / 2, 1e-12)
  -- task 1: best 0.9, now 0.7; task 2: best 0.95, now 0.9
  lu.assertAlmostEquals(C.metrics.forgetting(R), ((0.9 - 0.7) + (0.95 - 0.9)) / 2, 1e-12)
  lu.assertAlmostEquals(C.metrics.forgetting(R, 2), 0.1, 1e-12)
  lu.assertEquals(C.metrics.forgetting(R, 1), 0)
  lu.assertAlmostEquals(C.metrics.backward_transfer(R), ((0.7 - 0.9) + (0.9 - 0.95)) / 2, 1e-12)
  lu.assertStrContains(C.metrics.format(R), "after  3:  0.700  0.900  0.850")
  lu.assertStrContains(testlib.error_of(C.metrics.average_accuracy, {}), "continual.metrics.average_accuracy")
  lu.assertStrContains(testlib.error_of(C.metrics.forgetting, R, 4), "argument #2")
  lu.assertStrContains(testlib.error_of(C.metrics.forgetting, { { 0.9 }, { 0.8 } }), "R[2][2] is missing")
  lu.assertEquals(C.reference_params(8, { 6, 5 }, { { n_classes = 2 }, { n_classes = 3 } }, 2),
    8 * 6 + 6 + 6 * 5 + 5 + 6 * 2 + 6 * 3)
end

TestContinualBench = {}

function TestContinualBench:test_cifar100_skips_cleanly_without_files()
  local dir = os.tmpname()
  os.remove(dir)
  ff.io.mkdir(dir)
  local stream, why = C.bench.cifar100 { path = dir }
  lu.assertNil(stream)
  lu.assertStrContains(why, "continual.bench.cifar100")
  lu.assertStrContains(why, "CIFAR-100 files are not available")
  lu.assertStrContains(why, "--path")
  os.remove(dir)
end

function TestContinualBench:test_split_and_permuted_fashion()
  local s = C.bench.split_fashion { tasks = 2, train_per_task = 200, test_per_task = 50, seed = 2 }
  lu.assertEquals(#s.tasks, 2)
  local t2 = s.tasks[2]
  lu.assertEquals(t2.n_classes, 2)
  lu.assertEquals(t2.classes, { "Pullover", "Dress" })
  -- validation carved from the 200 training samples, the test set apart
  lu.assertEquals(t2.train:size() + t2.valid:size(), 200)
  lu.assertEquals(t2.valid:size(), 20)
  lu.assertEquals(t2.test:size(), 50)
  lu.assertEquals(t2.train.x:size(), { 180, 784 })
  lu.assertEquals(t2.test.y:max():item(), 2)
  local p = C.bench.permuted_fashion { tasks = 2, train_per_task = 100, test_per_task = 20, seed = 2 }
  lu.assertEquals(p.tasks[1].n_classes, 10)
  lu.assertEquals(p.tasks[1].permutation:totable(), ff.arange(1, 785):totable())
  lu.assertFalse(p.tasks[2].permutation:equal(p.tasks[1].permutation))
  local again = C.bench.permuted_fashion { tasks = 2, train_per_task = 100, test_per_task = 20, seed = 2 }
  lu.assertTrue(again.tasks[2].permutation:equal(p.tasks[2].permutation))
  lu.assertTrue(again.tasks[2].train.x:equal(p.tasks[2].train.x))
  -- the longer stream: distinct class pairs, images kept whole
  local q = C.bench.pairs_fashion { tasks = 10, train_per_task = 40, test_per_task = 10, seed = 2 }
  lu.assertEquals(#q.tasks, 10)
  lu.assertEquals(q.input_shape, { 1, 28, 28 })
  local seen = {}
  for _, task in ipairs(q.tasks) do
    lu.assertEquals(task.n_classes, 2)
    local key = table.concat(task.classes, "/")
    lu.assertNil(seen[key], "pair repeated: " .. key)
    seen[key] = true
  end
  lu.assertStrContains(testlib.error_of(C.bench.pairs_fashion, { tasks = 46 }), "at most 45")
end

TestContinualErrors = {}

function TestContinualErrors:test_bad_options()
  local e = testlib.error_of
  lu.assertStrContains(e(C.Firefly, { input_dim = 8, treshold = 1 }), "continual.Firefly: unknown option 'treshold'")
  lu.assertStrContains(e(C.Firefly, { hidden = { 4 } }), "option 'input_dim' is required")
  lu.assertStrContains(e(C.Firefly, { input_dim = 8, budget = -1 }), "option 'budget' must be an integer >= 0")
  lu.assertStrContains(e(C.Firefly, { input_dim = 8, hidden = {} }), "option 'hidden' must be a non-empty list")
  lu.assertStrContains(e(C.Firefly, { input_dim = 8, threshold = "high" }), "option 'threshold' must be a number")
  lu.assertStrContains(e(C.Firefly, { input_dim = 8, grow_step = 100, candidates = 4 }), "option 'grow_step'")
  lu.assertStrContains(e(C.EWC, { input_dim = 8, lambda = -1 }), "continual.EWC: option 'lambda'")
  lu.assertStrContains(e(C.FineTune, { input_dim = 8, lambda = 1 }), "continual.FineTune: unknown option 'lambda'")
  lu.assertStrContains(e(C.learner, "lwf", {}), "continual.learner: method must be one of")
  lu.assertStrContains(e(C.bench.load, "mnist"), "continual.bench.load: benchmark must be one of")
  lu.assertStrContains(e(C.bench.split_fashion, { tasks = 6 }), "option 'tasks' must be at most 5")
  lu.assertStrContains(e(C.bench.split_fashion, { valid_fraction = 1 }), "option 'valid_fraction'")
  lu.assertStrContains(e(C.run, {}, stream()), "continual.run: argument #1 must be a learner")
  lu.assertStrContains(e(C.run, C.Firefly { input_dim = 8 }, {}), "continual.run: argument #2")
  lu.assertStrContains(e(C.compare, {}), "option 'stream' is required")
  local l = C.Firefly(firefly_opts())
  l:learn(stream().tasks[1], 1)
  lu.assertStrContains(e(l.forward, l, 2, ff.zeros(1, 8)), "task must be an integer in 1..1")
end

function TestContinualErrors:test_compare_logs_and_plots()
  local dir = os.tmpname()
  os.remove(dir)
  local saved = ff.plot._gnuplot
  ff.plot._gnuplot = false -- data and scripts only: fast and quiet
  local results = C.compare { stream = stream(12, 2), methods = { "firefly", "finetune" }, out = dir,
    options = { hidden = { 6, 5 }, epochs = 1, batch_size = 16 },
    method_options = { firefly = { budget = 2, grow_step = 2, candidates = 2 } } }
  ff.plot._gnuplot = saved
  lu.assertEquals(#results, 2)
  local rows = ff.logging.read_jsonl(dir .. "/continual.jsonl")
  lu.assertEquals(#rows, 4)
  lu.assertEquals(rows[3].method, "finetune")
  lu.assertNotNil(io.open(dir .. "/average_accuracy.dat"))
  lu.assertNotNil(io.open(dir .. "/size.dat"))
  lu.assertStrContains(C.format_table(results), "rel size")
  os.execute("rm -rf " .. ff.io.shell_quote(dir))
end

os.exit(testlib.run())
