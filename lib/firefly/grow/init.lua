-- firefly.grow: growing networks by Firefly neural architecture descent.
--
-- The public face of grow/: README.md there says where each part of the
-- method lives and how a step flows through the files. See spec/grow.md.
local units = require "firefly.grow.units"
local edit = require "firefly.grow.edit"
local overgrown = require "firefly.grow.overgrown"
local proposal = require "firefly.grow.proposal"
local presets = require "firefly.grow.presets"
local run = require "firefly.grow.run"
local recipe = require "firefly.grow.recipe"

local grow = {}

grow.units = units.units
grow.width = units.width
grow.split = edit.split
grow.add = edit.add
grow.overgrown = overgrown.build
grow.propose = proposal.propose
grow.budget = require "firefly.grow.budget"
grow.methods = require "firefly.grow.methods"
grow.run = run.run
grow.recipe = recipe

grow.presets = presets.presets
grow.run_presets = presets.run_presets
grow.neighbourhood = presets.neighbourhood

return grow
