-- The shipped recipe examples/recipes/fashion_mlp.lua, reduced (768
-- training and 256 test examples, 2 phases of its 2 epochs), in the mode it
-- ships with (started by test_dist.lua, on one process or under mpirun):
-- arg[1] = a directory for the log and checkpoint. The main rank prints
-- whether the recipe is deterministic, each phase's line and each
-- selection's candidates (unit, kind, index, in selection order).
local ff = require "firefly"
local d = ff.dist

local decisions = dofile("tests/lua/dist/decisions.lua")

local recipe = dofile("examples/recipes/fashion_mlp.lua")
local data = recipe.data
recipe.data = function(f)
  local train, test = data(f)
  local function first(ds, n)
    local idx = {}
    for i = 1, n do idx[i] = i end
    return ds:subset(idx)
  end
  return first(train, 768), first(test, 256)
end
recipe.phases, recipe.score_batches = 2, 2
local rows = require("firefly.grow.recipe").run(recipe, { out = arg[1], quiet = true })
if d.is_main() then
  print("deterministic " .. tostring(recipe.deterministic))
  for _, r in ipairs(rows) do
    print(string.format("phase %d widths %s grown %s params %d train_loss %.9g test_acc %.9g", r.phase, r.widths,
      tostring(r.grown), r.params, r.train_loss, r.test_acc))
  end
  for i, keys in ipairs(decisions) do print(string.format("decision %d %s", i, keys)) end
end
