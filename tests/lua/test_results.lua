-- test_results: examples/results.lua judges every claim by one rule (a
-- difference counts only when it exceeds the spread over seeds). Made-up
-- logs of a growing-wider run where Firefly clearly beats one baseline, ties
-- another within the noise, and clearly beats training from scratch; the
-- page must say reproduced, not shown and reproduced, and a single seed
-- must never give more than "not shown".
package.path = "tests/lua/?.lua;" .. package.path
local testlib = require "testlib"
local lu = testlib.lu
local ff = require "firefly"
local cjson = require "cjson"

TestResults = {}

local function write(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

-- Logs of grow_wider for the given seeds in DIR/grow_wider/: three phases
-- at 1000, 2000 and 4000 parameters for every method.
local function fake_wider(dir, seeds)
  ff.io.mkdir(dir)
  ff.io.mkdir(dir .. "/grow_wider")
  local base = { firefly = 0.80, random = 0.70, nash = 0.80 }
  local grow = { firefly = 1.0, random = 0.1, nash = 3.0 }
  local rows, runs, scratch = {}, {}, {}
  for _, seed in ipairs(seeds) do
    for _, m in ipairs { "firefly", "random", "nash" } do
      -- nash's seeds spread ±0.02 around Firefly's: a tie within the noise
      local jitter = m == "nash" and (seed - 2) * 0.02 or seed * 0.001
      local acc
      for phase, params in ipairs { 1000, 2000, 4000 } do
        acc = base[m] + 0.05 * (phase - 1) + jitter
        rows[#rows + 1] = cjson.encode { method = m, seed = seed, phase = phase, params = params, test_acc = acc,
          grow_seconds_total = grow[m] * phase, widths = "4-8" }
      end
      runs[#runs + 1] = { method = m, seed = seed, test_acc = acc, params = 4000, widths = m .. "-w",
        grow_seconds = grow[m] * 3 + seed * 0.01, seconds = 10 }
    end
    scratch[#scratch + 1] = cjson.encode { seed = seed, widths = "firefly-w", params = 4000, epochs = 3,
      test_acc = 0.5 + seed * 0.001, seconds = 5 }
  end
  write(dir .. "/grow_wider/summary.json", cjson.encode { experiment = "grow_wider", data = "fashion",
    scale = "default", seeds = seeds, phases = 3, epochs = 1, cfg = { 4, "M", 8, "M" }, train = 100, val = 10,
    test = 10, nash_children = 2, eta = 0.35, lr = 2e-3, batch_size = 128, seconds = 60, runs = runs })
  write(dir .. "/grow_wider/results.jsonl", table.concat(rows, "\n") .. "\n")
  write(dir .. "/grow_wider/scratch.jsonl", table.concat(scratch, "\n") .. "\n")
end

local function page_of(seeds)
  local dir = os.tmpname()
  os.remove(dir)
  ff.io.mkdir(dir)
  fake_wider(dir .. "/out", seeds)
  local page = dir .. "/RESULTS.md"
  local p = io.popen(string.format("./firefly examples/results.lua --out %s/out --page %s --images %s/results 2>&1",
    dir, page, dir))
  local out = p:read("a")
  lu.assertTrue(p:close(), "results.lua failed: " .. out)
  local f = assert(io.open(page, "rb"))
  local s = f:read("a")
  f:close()
  os.execute("rm -rf '" .. dir .. "'")
  -- the wider section only
  return s:match("## Growing wider.-\n## ") or s
end

function TestResults:test_three_seeds_reproduce_a_clear_win_and_not_a_tie()
  local s = page_of { 1, 2, 3 }
  lu.assertStrContains(s, "3 seeds")
  lu.assertStrContains(s, "- Firefly − random at 4000 params: 0.9020 − 0.8020 = +0.1000 ± 0.0020: **reproduced**.")
  lu.assertStrMatches(s, ".*%- Firefly − nash at 4000 params: [^\n]*: not shown%..*")
  -- one baseline tied: the claim "more accurate than every baseline" is not shown
  lu.assertStrContains(s, "- The claim (more accurate than every baseline): not shown.")
  -- NASH grows 3x slower on every seed (sd tiny): reproduced
  lu.assertStrMatches(s, ".*%- nash: [^\n]*Firefly's time on the same seed: %*%*reproduced%*%*%..*")
  -- growth against scratch at Firefly's final size: a 0.4 lead, reproduced
  lu.assertStrMatches(s, ".*| firefly | 4000 | [^\n]*| %*%*reproduced%*%* |.*")
end

function TestResults:test_one_seed_is_never_more_than_not_shown()
  local s = page_of { 1 }
  lu.assertStrContains(s, "- Firefly − random at 4000 params: 0.9010 − 0.8010 = +0.1000 ± 0.0000: not shown (one seed).")
  lu.assertNotStrContains(s, "**reproduced**")
  lu.assertNotStrContains(s, "**contradicted**")
end

-- The page regenerates from the logs it keeps beside itself: a second run
-- with no out/ at all writes the same sections (here growing wider and
-- deeper, whose logs it copies to --images DIR/deeper/).
function TestResults:test_the_page_regenerates_from_its_kept_logs()
  local dir = os.tmpname()
  os.remove(dir)
  ff.io.mkdir(dir)
  ff.io.mkdir(dir .. "/out")
  ff.io.mkdir(dir .. "/out/grow_deeper")
  local runs = {}
  for seed = 1, 3 do
    runs[#runs + 1] = { variant = "wider", seed = seed, test_acc = 0.80 + seed * 0.001, params = 1000, widths = "20-20",
      units = 2 }
    runs[#runs + 1] = { variant = "wider+deeper", seed = seed, test_acc = 0.85 + seed * 0.001, params = 1000,
      widths = "16-16-16", units = 3 }
  end
  write(dir .. "/out/grow_deeper/summary.json", cjson.encode { settings = { phases = 3, epochs = 1, params = 500,
    seeds = 3 }, runs = runs, seconds = 36 })
  local function page(out)
    local p = io.popen(string.format("./firefly examples/results.lua --out %s --page %s/R.md --images %s/results 2>&1",
      out, dir, dir))
    local msg = p:read("a")
    lu.assertTrue(p:close(), "results.lua failed: " .. msg)
    local f = assert(io.open(dir .. "/R.md", "rb"))
    local s = f:read("a")
    f:close()
    return s:match("## Growing wider and deeper.-\n## ")
  end
  local a = page(dir .. "/out")
  local b = page(dir .. "/nothing")
  local kept = io.open(dir .. "/results/deeper/summary.json", "rb")
  os.execute("rm -rf '" .. dir .. "'")
  lu.assertNotNil(kept, "the log kept beside the page")
  kept:close()
  lu.assertStrContains(a, "| wider+deeper | 3 | 0.8530 | 1000 | 16-16-16 | 3 |")
  lu.assertEquals(b, a)
end

-- The from-scratch runs the recipes share (examples/scratch_runs.lua): one
-- run per distinct final widths of a seed, none for widths the logs hold
-- already at the same epochs, a new one where only the epochs differ.
function TestResults:test_scratch_runs_train_each_new_width_once()
  local S = dofile("examples/scratch_runs.lua")
  lu.assertEquals(S.widths_of("9-8-11"), { 9, 8, 11 })
  local runs = { { seed = 1, widths = "4-8" }, { seed = 1, widths = "5-9" }, { seed = 1, widths = "4-8" },
    { seed = 2, widths = "6-6" }, { seed = 1, widths = "7-7" } }
  lu.assertEquals(S.finals(runs, 1), { "4-8", "5-9", "7-7" })
  local rows = { { seed = 1, widths = "5-9", epochs = 3 }, { seed = 2, widths = "4-8", epochs = 3 },
    { seed = 1, widths = "7-7", epochs = 5 } }
  local trained, after = {}, 0
  S.run_seed(1, S.finals(runs, 1), rows, 3, function(w, seed)
    trained[#trained + 1] = w .. "/" .. seed
    return { seed = seed, widths = w, epochs = 3 }
  end, function() after = after + 1 end)
  lu.assertEquals(trained, { "4-8/1", "7-7/1" })
  lu.assertEquals(after, 2)
  lu.assertEquals(#rows, 5)
  -- a second pass finds them all logged
  S.run_seed(1, S.finals(runs, 1), rows, 3, function() error("trained again") end, function() end)
  local ok, err = pcall(S.read_logs, "/nonexistent-dir", "grow_x")
  lu.assertFalse(ok)
  lu.assertStrContains(err, "grow_x: --scratch-only needs the growth runs' /nonexistent-dir/summary.json")
end

os.exit(testlib.run())
