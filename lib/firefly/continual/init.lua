-- firefly.continual: task-incremental continual learning by growth
-- (the reference is spec/continual.md).
--
--   local stream = ff.continual.bench.split_fashion{train_per_task = 2000}
--   local r = ff.continual.run(ff.continual.learner("firefly", {input_dim = 784}), stream)
--   print(ff.continual.metrics.format(r.R))
local H = require "firefly.continual.harness"

return {
  bench = require "firefly.continual.bench",
  metrics = require "firefly.continual.metrics",
  masks = require "firefly.continual.masks",
  ewc = require "firefly.continual.ewc",
  BlockNet = require "firefly.continual.blocknet",
  Firefly = require("firefly.continual.firefly").new,
  FineTune = require("firefly.continual.baselines").FineTune,
  Separate = require("firefly.continual.baselines").Separate,
  EWC = require("firefly.continual.baselines").EWC,
  CPG = require("firefly.continual.cpg").new,
  backbone = require "firefly.continual.backbone",
  learner = H.learner,
  run = H.run,
  compare = H.compare,
  plot = H.plot,
  format_table = H.format_table,
  reference_params = H.reference_params,
  METHODS = H.METHODS,
}
