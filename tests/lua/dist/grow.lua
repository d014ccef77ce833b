-- A short growth run (started by test_dist.lua, on one process or under
-- mpirun): arg[1] = a directory for the log and checkpoint; arg[2] =
-- "resume" goes on from its checkpoint; arg[3] = "kill" kills rank 1 in
-- phase 2's training, "perturb" nudges a weight on rank 1 after phase 1's,
-- "det" runs in deterministic mode (4 parts).
-- The main rank prints one line per phase.
local ff = require "firefly"
local d = ff.dist
local dir, resume, kill, perturb = arg[1], arg[2] == "resume", arg[3] == "kill", arg[3] == "perturb"

local recipe = {
  seed = 3, phases = 3, epochs = 2, score_batches = 4, batch_size = 64,
  data = function(f)
    return f.data.spirals { n = 512, classes = 3, seed = 1 }, f.data.spirals { n = 128, classes = 3, seed = 2 }
  end,
  net = function(f) return f.nn.mlp { 2, 8, 8, 3, generator = f.Generator(4) } end,
  optim = function(f, params) return f.optim.SGD(params, { lr = 0.05, momentum = 0.9 }) end,
  neighbourhood = { new = 8, eps = 1e-2, steps = 1, lr = 1e-2 },
  eta = { ratio = 0.5 },
  deterministic = arg[3] == "det" and 4 or nil,
}
if kill or perturb then
  local fit = ff.train.fit
  ff.train.fit = function(o)
    if kill and d.rank() == 1 and o.label == "phase 2" then
      local pid = io.open("/proc/self/stat"):read("l"):match("^(%d+)")
      os.execute("kill -9 " .. pid)
    end
    local rows = fit(o)
    if perturb and d.rank() == 1 and o.label == "phase 1" then
      ff.no_grad(function() o.model:get(3).bias:add_(1e-3) end)
    end
    return rows
  end
end
local rows = require("firefly.grow.recipe").run(recipe, { out = dir, quiet = true, resume = resume })
if d.is_main() then
  for _, r in ipairs(rows) do
    print(string.format("phase %d widths %s grown %s params %d train_loss %.9g test_acc %.9g predicted %.9g measured %.9g",
      r.phase, r.widths, tostring(r.grown), r.params, r.train_loss, r.test_acc, r.predicted_dloss or 0, r.measured_dloss or 0))
  end
end
