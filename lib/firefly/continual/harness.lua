-- firefly.continual.harness: runs learners over a task stream with one
-- protocol: learn task t, then test every task j <= t with its own head
-- (the task id is known at test time) into the accuracy matrix R, and log
-- one row per task (ff.logging.Logger: continual.csv / continual.jsonl).
local ff = require "firefly"
local U = require "firefly.continual.util"
local metrics = require "firefly.continual.metrics"
local backbone = require "firefly.continual.backbone"

local H = {}

local LEARNERS = {
  firefly = function(o) return require("firefly.continual.firefly").new(o) end,
  ["firefly+unlock"] = function(o)
    local c = {}
    for k, v in pairs(o or {}) do c[k] = v end
    c.unlock = true
    return require("firefly.continual.firefly").new(c)
  end,
  cpg = function(o) return require("firefly.continual.cpg").new(o) end,
  finetune = function(o) return require("firefly.continual.baselines").FineTune(o) end,
  separate = function(o) return require("firefly.continual.baselines").Separate(o) end,
  ewc = function(o) return require("firefly.continual.baselines").EWC(o) end,
}
H.METHODS = { "firefly", "firefly+unlock", "cpg", "finetune", "separate", "ewc" }

-- H.learner(name, opts): a learner by name (opts as its constructor takes).
function H.learner(name, opts)
  local make = LEARNERS[name]
  if not make then
    error("continual.learner: method must be one of " .. table.concat(H.METHODS, ", ") .. ", got "
      .. tostring(name), 2)
  end
  return make(opts)
end

-- Parameters of one network of the baseline's size (the trunk and one
-- head per task seen): the unit of relative size. The trunk is an MLP of
-- widths `hidden` from `input_dim` inputs, or a described backbone
-- (backbone.describe) given as the first argument.
function H.reference_params(input_dim, hidden, tasks, T)
  local d = type(input_dim) == "table" and input_dim
      or backbone.describe("continual.reference_params", { input_dim = input_dim, hidden = hidden })
  local n, feat = backbone.trunk_params(d), backbone.feature_dim(d)
  for j = 1, T do n = n + (feat + 1) * tasks[j].n_classes end
  return n
end

-- H.run(learner, stream, {logger, quiet, probe, reference_hidden,
-- reference}) ->
-- result {method, R, rows, summaries, average_accuracy, forgetting,
-- params, relative_size, seconds, probes}. With probe = n, probes[t]
-- holds task t's outputs on its first n test inputs right after task t
-- was learned (to check later that they did not change).
function H.run(learner, stream, opts)
  local o = U.options("continual.run", opts, { logger = false, quiet = true, probe = false,
    reference_hidden = false, reference = false }, { probe = U.int(1), quiet = U.bool,
    reference_hidden = U.widths,
    reference = function(v) if type(v) ~= "table" or not v.stages then return "must be a backbone description" end end })
  if type(learner) ~= "table" or type(learner.learn) ~= "function" then
    error("continual.run: argument #1 must be a learner (continual.learner(name, opts))", 2)
  end
  if type(stream) ~= "table" or type(stream.tasks) ~= "table" or #stream.tasks == 0 then
    error("continual.run: argument #2 must be a task stream (continual.bench.*)", 2)
  end
  local tasks = stream.tasks
  local ref = o.reference or o.reference_hidden
      and backbone.describe("continual.run", { input_dim = stream.input_dim, hidden = o.reference_hidden })
      or learner.d
  local R, rows, summaries, probes = {}, {}, {}, {}
  local t0 = ff.clock()
  for t, task in ipairs(tasks) do
    summaries[t] = learner:learn(task, t)
    R[t] = {}
    for j = 1, t do
      R[t][j] = U.evaluate(function(x) return learner:forward(j, x) end, tasks[j].test).accuracy
    end
    if o.probe then
      local n = math.min(o.probe, task.test:size())
      probes[t] = ff.no_grad(function() return learner:forward(t, task.test.x:narrow(1, 1, n)) end)
    end
    local params = learner:num_params()
    local dense = learner.dense_params and learner:dense_params() or params
    local accs = {}
    for j = 1, t do accs[j] = string.format("%.4f", R[t][j]) end
    local row = { method = learner.name, task = t, average_accuracy = metrics.average_accuracy(R, t),
      forgetting = metrics.forgetting(R, t), params = params, dense_params = dense,
      relative_size = params / H.reference_params(ref, nil, tasks, t),
      accuracies = table.concat(accs, " "), grown = summaries[t].grown, unlocked = summaries[t].unlocked,
      mask_usage = summaries[t].mask_usage }
    rows[t] = row
    if o.logger then o.logger:write(row) end
    if not o.quiet then
      io.write(string.format("  %-9s task %2d/%d  avg acc %.4f  forgetting %.4f  params %d%s\n", learner.name,
        t, #tasks, row.average_accuracy, row.forgetting, params,
        summaries[t].grown and string.format("  grown %d", summaries[t].grown) or ""))
      io.flush()
    end
  end
  local last = rows[#rows]
  return { method = learner.name, R = R, rows = rows, summaries = summaries, probes = probes,
    average_accuracy = last.average_accuracy, forgetting = last.forgetting, params = last.params,
    relative_size = last.relative_size, dense_params = last.dense_params, seconds = ff.clock() - t0,
    learner = learner }
end

-- H.compare{stream, methods, options, method_options, out, quiet, plot}:
-- every method on the same stream; logs to out/continual.{csv,jsonl} and
-- plots out/average_accuracy and out/size (when out is given).
function H.compare(opts)
  local o = U.options("continual.compare", opts, { stream = false, methods = H.METHODS, options = {},
    method_options = {}, out = false, quiet = true, plot = true }, { quiet = U.bool, plot = U.bool,
    out = function(v) if type(v) ~= "string" then return "must be a directory name" end end })
  if not o.stream then error("continual.compare: option 'stream' is required", 2) end
  local logger = o.out and ff.logging.Logger { dir = o.out, name = "continual",
    columns = { "method", "task", "average_accuracy", "forgetting", "params", "dense_params", "relative_size",
      "grown", "unlocked", "mask_usage", "accuracies" } }
  -- the unit of size: one network of the backbone the common options
  -- describe (a method may start from another one)
  local common = { input_dim = o.stream.input_dim, input_shape = o.options.cfg and o.stream.input_shape or nil }
  for k, v in pairs(o.options) do common[k] = v end
  local reference = backbone.describe("continual.compare", backbone.resolve(backbone.fill(common)))
  local results = {}
  for i, name in ipairs(o.methods) do
    -- progress bars follow `quiet` (they draw only on a terminal anyway)
    local lo = { input_dim = o.stream.input_dim, quiet = o.quiet }
    -- conv backbones read the stream's images
    if o.options.cfg then lo.input_shape = o.stream.input_shape end
    for k, v in pairs(o.options) do lo[k] = v end
    for k, v in pairs(o.method_options[name] or {}) do lo[k] = v end
    results[i] = H.run(H.learner(name, lo), o.stream, { logger = logger or nil, quiet = o.quiet,
      reference = reference })
  end
  if logger then logger:close() end
  if o.out and o.plot then H.plot(results, o.out) end
  return results
end

-- Average accuracy and size (relative to one baseline network) against the
-- number of tasks learned, one line per method.
function H.plot(results, dir)
  local acc, size = {}, {}
  for i, r in ipairs(results) do
    local x, ya, ys = {}, {}, {}
    for t, row in ipairs(r.rows) do x[t], ya[t], ys[t] = t, row.average_accuracy, row.relative_size end
    acc[i] = { name = r.method, x = x, y = ya }
    size[i] = { name = r.method, x = x, y = ys }
  end
  return {
    accuracy = ff.plot.lines { path = dir .. "/average_accuracy", title = "Average accuracy over tasks seen",
      xlabel = "tasks learned", ylabel = "average test accuracy", series = acc, key = "bottom left" },
    size = ff.plot.lines { path = dir .. "/size", title = "Model size", xlabel = "tasks learned",
      ylabel = "parameters / one baseline network", series = size },
  }
end

-- The comparison table as text.
function H.format_table(results)
  local lines = { string.format("%-15s %9s %11s %10s %10s %9s %8s", "method", "avg acc", "forgetting", "params",
    "dense", "rel size", "seconds") }
  for _, r in ipairs(results) do
    lines[#lines + 1] = string.format("%-15s %9.4f %11.4f %10d %10d %9.2f %8.1f", r.method, r.average_accuracy,
      r.forgetting, r.params, r.dense_params or r.params, r.relative_size, r.seconds)
  end
  return table.concat(lines, "\n")
end

return H
