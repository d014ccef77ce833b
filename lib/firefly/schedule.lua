-- firefly.schedule: the growth budgets under their earlier name; the module
-- is firefly.grow.budget (ff.grow.budget).
return require "firefly.grow.budget"
