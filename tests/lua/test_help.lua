-- test_help: help(x) finds the reference entry (spec/*.md) of functions,
-- modules and objects, names function values by walking ff, lists the
-- modules, and finds spec/ after `make install` too.
-- Run from the repository root: ./firefly tests/lua/test_help.lua
package.path = "tests/lua/?.lua;" .. package.path
local testlib = require "testlib"
local lu = testlib.lu
local ff = require "firefly"
local help = require "firefly.help"

TestHelp = {}

function TestHelp:test_the_global_is_the_module()
  lu.assertIs(_G.help, help) -- preloaded by the interpreter
  lu.assertIs(ff.help, help)
end

function TestHelp:test_function_values_are_named_by_walking_ff()
  lu.assertEquals(help.name_of(ff.grow.propose), "grow.propose")
  lu.assertEquals(help.name_of(ff.nn.Linear), "nn.Linear")
  lu.assertEquals(help.name_of(ff.optim), "optim")
  lu.assertEquals(help.name_of(ff.matmul), "matmul") -- not Tensor.matmul
  lu.assertEquals(help.name_of(ff.train.fit), "train.fit")
  -- objects by their class
  lu.assertEquals(help.name_of(ff.nn.Linear(2, 3)), "nn.Linear")
  lu.assertEquals(help.name_of(ff.zeros(2)), "Tensor")
  lu.assertNil(help.name_of(print))
  lu.assertNil(help.name_of({}))
end

-- The entry of `x` starts with its name and file, and holds `expected`.
local function entry(x, file, expected)
  local text, err = help.text(x)
  lu.assertNotNil(text, err)
  local name = type(x) == "string" and x:gsub("^ff%.", "") or help.name_of(x)
  lu.assertEquals(text:match("^[^\n]*"), "ff." .. name .. "  (spec/" .. file .. ")")
  lu.assertStrContains(text, expected)
  return text
end

function TestHelp:test_functions_find_their_heading_row_or_paragraph()
  entry(ff.grow.propose, "grow.md", "## One growth step: `propose`, `select`, `apply`")
  entry("grow.propose", "grow.md", "## One growth step")
  entry("ff.grow.run", "grow.md", "## The whole loop: `grow.run`")
  entry(ff.matmul, "tensor.md", "### `ff.matmul(a, b)`, `a:matmul(b)`")
  entry(ff.optim.SGD, "optim.md", "## `ff.optim.SGD(params, opts)`")
  entry(ff.data.DataLoader, "data.md", "### `data.DataLoader(ds,")
  entry(ff.save, "io.md", "### `ff.save(path, obj)`")
  -- a table row, with the table's header
  local t = entry(ff.nn.Linear, "nn.md", "| constructor | forward |\n|---|---|\n| `nn.Linear(in, out")
  lu.assertNotStrContains(t, "nn.Conv2d") -- only its row
  -- a paragraph whose code span goes on to the next line
  entry(ff.train.fit, "nn.md", "`ff.train.fit{model, data, optim")
  -- a list item
  entry(ff.logging.progress, "nn.md", "- `ff.logging.progress{total, label")
end

function TestHelp:test_modules_show_their_introduction_and_contents()
  local t = entry(ff.optim, "optim.md", "# Optimisers")
  lu.assertStrContains(t, "Sections:\n")
  lu.assertStrContains(t, "  `ff.optim.SGD(params, opts)`")
  lu.assertStrContains(t, "In ff.optim: Adam, AdamW, RMSprop, SGD")
  lu.assertNotStrContains(t, "## Parameters") -- the contents, not the text
  entry(ff.grow, "grow.md", "# Growing networks: `ff.grow`")
  -- a module documented in another module's file: its section
  entry(ff.train, "nn.md", "## Training: `ff.train`")
  entry(ff.zeros(1), "tensor.md", "# Tensors")
end

function TestHelp:test_help_lists_the_modules()
  local text = help.text()
  for _, m in ipairs { "nn", "optim", "data", "train", "grow", "io", "plot", "logging", "continual" } do
    lu.assertStrContains(text, "\n  ff." .. m .. " ")
  end
  lu.assertStrContains(text, "spec/tensor.md")
  lu.assertEquals(help.text(ff), text)
end

function TestHelp:test_unknown_names_and_values_say_so()
  local text, err = help.text("grow.no_such_thing")
  lu.assertNil(text)
  lu.assertStrContains(err, "help: no entry for 'grow.no_such_thing'")
  text, err = help.text(print)
  lu.assertNil(text)
  lu.assertStrContains(err, "is not a firefly function, module or object")
end

function TestHelp:test_calling_prints_and_returns_nothing()
  local out = io.popen("env -u LUA_INIT -u LUA_INIT_5_4 ./firefly -e 'print(select(\"#\", help(\"grow.run\")))'"):read("a")
  lu.assertStrContains(out, "ff.grow.run  (spec/grow.md)\n\n## The whole loop")
  lu.assertStrContains(out, "\n0\n")
end

-- After `make install PREFIX=dir`, the installed firefly finds the
-- installed spec/ (share/firefly/spec), from any directory.
function TestHelp:test_installed_firefly_finds_the_installed_spec()
  local dir = os.tmpname()
  os.remove(dir)
  local ok = os.execute("make --no-print-directory -s install PREFIX=" .. dir .. " >/dev/null 2>&1")
  lu.assertTrue(ok, "make install failed")
  local f = io.open(dir .. "/share/firefly/spec/grow.md")
  lu.assertNotNil(f, "spec/ was not installed")
  if f then f:close() end
  -- run from / : nothing of the source tree is in reach
  local out = io.popen("cd / && env -u LUA_INIT -u LUA_INIT_5_4 -u FIREFLY_SPEC " .. dir
    .. "/bin/firefly -e 'help(ff.grow.propose)' 2>&1"):read("a")
  os.execute("rm -rf " .. dir)
  lu.assertStrContains(out, "ff.grow.propose  (spec/grow.md)\n\n## One growth step")
end

function TestHelp:test_FIREFLY_SPEC_points_elsewhere()
  local out = io.popen("env -u LUA_INIT -u LUA_INIT_5_4 FIREFLY_SPEC=/nonexistent ./firefly -e 'help(ff.nn)' 2>&1"):read("a")
  -- a missing directory is skipped for the next candidate
  lu.assertStrContains(out, "ff.nn  (spec/nn.md)")
end

os.exit(testlib.run())
