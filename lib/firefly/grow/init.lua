-- firefly.grow: growing networks by Firefly neural architecture descent.
--
-- This is being built in steps (see spec/grow.md). Available now: finding
-- the growable units of a network, materialising splits and new neurons
-- with the optimiser remap they need, and the reference over-grown network
-- of MLP units with its gates.
local units = require "firefly.grow.units"
local edit = require "firefly.grow.edit"
local overgrown = require "firefly.grow.overgrown"
local propose = require "firefly.grow.propose"
local run = require "firefly.grow.run"
local recipe = require "firefly.grow.recipe"

local grow = {}

grow.units = units.units
grow.width = units.width
grow.split = edit.split
grow.add = edit.add
grow.overgrown = overgrown.build
grow.propose = propose.propose
grow.run = run.run
grow.recipe = recipe

return grow
