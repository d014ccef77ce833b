-- Two-phase growth runs by each method (started by test_dist.lua, on one
-- process or under mpirun): arg[1] = a directory for the logs and
-- checkpoints; arg[2] = the methods, comma-separated (firefly, random,
-- nash, split_exact, split_fast, net2net, gradmax; gradmax_in: published
-- GradMax, zero incoming weights, on a tanh net through the autograd
-- operator). The main rank prints, per method, the phases' lines and
-- every selection's candidates (unit, kind, index: the decision itself, in
-- selection order; NASH selects for each child too).
local ff = require "firefly"
local d = ff.dist
local dir = arg[1]

local decisions = dofile("tests/lua/dist/decisions.lua")

local gradmax = require "firefly.grow.methods.gradmax"

local function grow(method)
  for i = #decisions, 1, -1 do decisions[i] = nil end
  local tanh = method == "gradmax_in"
  gradmax.force_operator = tanh
  local nb = { method = tanh and "gradmax" or method, new = 4, eps = 1e-2, steps = 1, lr = 1e-2 }
  if method == "gradmax" then nb.zero = "outgoing" end -- a ReLU net: GradMax's transpose
  if method == "nash" then
    -- children trained on a loader and ranked on validation data
    nb.children, nb.child_epochs = 2, 1
    nb.val = ff.data.DataLoader(ff.data.spirals { n = 128, classes = 3, seed = 3 }, { batch_size = 64 })
  end
  local recipe = {
    seed = 5, phases = 2, epochs = 1, score_batches = 2, batch_size = 64,
    data = function(f)
      return f.data.spirals { n = 256, classes = 3, seed = 1 }, f.data.spirals { n = 128, classes = 3, seed = 2 }
    end,
    net = function(f) return f.nn.mlp { 2, 6, 6, 3, act = tanh and "tanh" or "relu", generator = f.Generator(4) } end,
    optim = function(f, params) return f.optim.SGD(params, { lr = 0.05, momentum = 0.9 }) end,
    neighbourhood = nb,
    eta = { ratio = 0.5 },
  }
  local rows = require("firefly.grow.recipe").run(recipe, { out = dir .. "/" .. method, quiet = true })
  if d.is_main() then
    for i, r in ipairs(rows) do
      print(string.format("%s phase %d widths %s grown %s params %d train_loss %.9g test_acc %.9g", method, r.phase,
        r.widths, tostring(r.grown), r.params, r.train_loss, r.test_acc))
    end
    for i, keys in ipairs(decisions) do print(string.format("%s decision %d %s", method, i, keys)) end
  end
end

for method in arg[2]:gmatch("[^,]+") do grow(method) end
