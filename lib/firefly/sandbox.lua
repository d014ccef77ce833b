-- firefly.sandbox: running shared recipes as untrusted code.
--
-- A recipe is a file somebody else may have written, so `firefly grow`
-- gives it the safety of a configuration file, not of a shell script:
--   * environment(): the globals a recipe sees: ff (a read-only view),
--     math, string, table, utf8, coroutine, os.time/os.clock, the basic
--     functions; no io, os, debug, load, require, package, no finalizers.
--   * confine{read =, write =}: while a recipe runs, every file the
--     library opens goes through check_read/check_write (open, lines,
--     remove, rename, mkdir below and the C readers and writers through
--     init.lua and io.lua); a path outside the allowed directories is an
--     error naming it and the option that allows it.
--   * limits{seconds =, memory =}: a count hook stops a recipe past its
--     wall time or engine memory; the interpreter's allocator stops it past
--     its Lua memory (firefly.interp).
-- The library's own code keeps the full standard library: only what the
-- recipe reaches (its globals and the ff view) is restricted.
local S = {}

-- The primitives, captured before any recipe runs: the checks below never
-- go through a table a recipe could have reached.
local io_open, io_lines, os_remove, os_rename, os_execute = io.open, io.lines, os.remove, os.rename, os.execute
local io_popen, os_getenv = io.popen, os.getenv
local sfind, ssub, sformat, sgmatch, sbyte = string.find, string.sub, string.format, string.gmatch, string.byte
local tconcat, tsort = table.concat, table.sort
local type, pairs, next, error, select, tostring = type, pairs, next, error, select, tostring
local rawget, getmetatable, setmetatable, pcall, xpcall = rawget, getmetatable, setmetatable, pcall, xpcall

---------------------------------------------------------------- paths

local cwd_cache
local function cwd()
  if not cwd_cache then
    local p = io_popen("pwd")
    cwd_cache = p and p:read("l")
    if p then p:close() end
    if not cwd_cache or ssub(cwd_cache, 1, 1) ~= "/" then cwd_cache = os_getenv("PWD") or "/" end
  end
  return cwd_cache
end

-- An absolute path with "." and ".." resolved in the text (a recipe cannot
-- make symbolic links, so the text is what decides). A NUL byte is an
-- error: C would open the path up to it, not the one checked here.
function S.normalize(path)
  if sfind(path, "\0", 1, true) then
    error(sformat("sandbox: path %q holds a NUL byte", path), 0)
  end
  if ssub(path, 1, 1) ~= "/" then path = cwd() .. "/" .. path end
  local parts = {}
  for p in sgmatch(path, "[^/]+") do
    if p == ".." then parts[#parts] = nil
    elseif p ~= "." then parts[#parts + 1] = p end
  end
  return "/" .. tconcat(parts, "/")
end

local function under(p, root)
  return root == "/" or p == root or ssub(p, 1, #root + 1) == root .. "/"
end

---------------------------------------------------------------- confinement

local state -- nil when nothing is confined; else {read = {...}, write = {...}}

-- The confinement of each sandboxed recipe, by chunk name, kept after its
-- run: a function of the recipe that the library calls later (a class
-- hook it registered, say) is still confined when it opens a file,
-- whoever runs it. Recipe functions are found on the call stack by their
-- source (a recipe cannot make functions of another chunk: it has no load).
local by_chunk = {}

local function recipe_state()
  for level = 3, 1000 do
    local info = debug.getinfo(level, "S")
    if not info then return nil end
    local st = by_chunk[info.source]
    if st then return st end
  end
  return nil
end

-- bind(chunkname): the recipe loaded under chunkname is confined as now.
function S.bind(chunkname)
  if state then by_chunk[chunkname] = state end
end

-- confine{read = {paths}, write = {paths}}: from now on the library reads
-- only under read or write paths and writes only under write paths.
function S.confine(opts)
  local st = { read = {}, write = {} }
  for _, kind in ipairs { "read", "write" } do
    for _, p in ipairs(opts[kind] or {}) do
      if type(p) == "string" and p ~= "" then st[kind][#st[kind] + 1] = S.normalize(p) end
    end
    tsort(st[kind])
  end
  state = st
end

function S.release() state = nil end

-- allow(path, fn, ...): runs fn with path (one of the library's own
-- temporary files) readable and writable, and only that path.
function S.allow(path, fn, ...)
  if not state then return fn(...) end
  local st = state
  local p = S.normalize(path)
  st.read[#st.read + 1], st.write[#st.write + 1] = p, p
  local function drop(list)
    for i = #list, 1, -1 do if list[i] == p then table.remove(list, i); return end end
  end
  local r = table.pack(pcall(fn, ...))
  drop(st.read)
  drop(st.write)
  if not r[1] then error(r[2], 0) end
  return table.unpack(r, 2, r.n)
end
function S.confined() return state ~= nil end

local function list(roots)
  if #roots == 0 then return "nothing" end
  return tconcat(roots, ", ")
end

-- check_read(path, who): raises unless the confinement allows reading path.
function S.check_read(path, who)
  if type(path) == "number" then path = tostring(path) end -- as io.open and os.rename take it
  if type(path) ~= "string" then return end
  local state = state or recipe_state()
  if not state then return end
  local p = S.normalize(path)
  for _, kind in ipairs { "read", "write" } do
    for _, r in ipairs(state[kind]) do if under(p, r) then return end end
  end
  local roots = {}
  for _, r in ipairs(state.read) do roots[#roots + 1] = r end
  for _, r in ipairs(state.write) do roots[#roots + 1] = r end
  error(sformat("%s: a sandboxed recipe may not read '%s' (it reads only the data locations, the --out " ..
    "directory and paths given on the command line: %s); pass --allow-read %s (or --trust) to allow it",
    who or "sandbox", path, list(roots), path), 0)
end

-- check_write(path, who): raises unless the confinement allows writing path.
function S.check_write(path, who)
  if type(path) == "number" then path = tostring(path) end -- as io.open and os.rename take it
  if type(path) ~= "string" then return end
  local state = state or recipe_state()
  if not state then return end
  local p = S.normalize(path)
  for _, r in ipairs(state.write) do if under(p, r) then return end end
  error(sformat("%s: a sandboxed recipe may not write '%s' (it writes only under --out: %s); " ..
    "pass --allow-write DIR (or --trust) to allow it", who or "sandbox", path, list(state.write)), 0)
end

-- The library's file-opening points: io.open, io.lines, os.remove,
-- os.rename and mkdir -p, checked first.
function S.open(path, mode, who)
  mode = mode or "r"
  if sfind(mode, "[wa+]") then S.check_write(path, who) else S.check_read(path, who) end
  return io_open(path, mode)
end

function S.lines(path, who, ...)
  S.check_read(path, who)
  return io_lines(path, ...)
end

function S.remove(path, who)
  S.check_write(path, who)
  return os_remove(path)
end

function S.rename(from, to, who)
  S.check_write(from, who)
  S.check_write(to, who)
  return os_rename(from, to)
end

-- Runs a shell command that writes under dir (mkdir -p, gnuplot).
function S.execute(cmd, dir, who)
  S.check_write(dir, who)
  return os_execute(cmd)
end

-- A function fn(path, ...) with the path checked first (the C readers
-- and writers).
function S.guard(fn, kind, who)
  local check = kind == "write" and S.check_write or S.check_read
  return function(path, ...)
    check(path, who)
    -- through pcall, so the engine's message keeps no position of ours
    local r = table.pack(pcall(fn, path, ...))
    if not r[1] then error(r[2], 0) end
    return table.unpack(r, 2, r.n)
  end
end

---------------------------------------------------------------- limits

local limit -- {deadline =, seconds =, memory =, lua =, stopped =}
local limit_hook
local HOOK_COUNT = 10000 -- VM instructions between two looks (count hooks)
local WATCH_SECONDS = 0.05 -- wall time between two looks (the interpreter's timer)

-- The interpreter's allocator limit (interp/main.c); nil under stock lua.
local interp_mod
local function interp()
  if interp_mod == nil then
    local ok, m = pcall(require, "firefly.interp")
    interp_mod = ok and type(m) == "table" and m or false
  end
  return interp_mod or nil
end
S.interp = interp

-- limits{seconds =, memory = bytes, tensors = true}: stop the running code
-- after that much wall time, or when its Lua memory (the interpreter's
-- allocator) or, with tensors, its engine memory passes `memory`. A hook
-- cannot be avoided from Lua (the recipe's coroutines get one too:
-- hook_thread).
function S.limits(opts)
  local ff = require "firefly"
  limit = { seconds = opts.seconds, memory = opts.memory, tensors = opts.tensors }
  if opts.seconds then limit.deadline = ff.clock() + opts.seconds end
  if opts.memory then
    local m = interp()
    if m then m.memory_limit(m.memory_used() + opts.memory); limit.lua = true end
  end
  local clock, memory = ff.clock, ff.memory
  limit_hook = function()
    if not limit then return end
    if limit.stopped then error(limit.stopped, 0) end
    if limit.deadline and clock() > limit.deadline then
      limit.stopped = sformat("stopped: the recipe ran past --max-seconds %g", limit.seconds)
      error(limit.stopped, 0)
    end
    if limit.tensors and limit.memory and memory() > limit.memory then
      limit.stopped = sformat("stopped: the recipe's tensors went past --max-memory %g MB", limit.memory / 2 ^ 20)
      error(limit.stopped, 0)
    end
  end
  -- the interpreter looks from a timer (no cost between looks); stock Lua
  -- gets a count hook (its code runs about 2x slower)
  local m = interp()
  if m and m.watch then m.watch(limit_hook, WATCH_SECONDS) else debug.sethook(limit_hook, "", HOOK_COUNT) end
end

-- The timer looks at the main thread only: the recipe's coroutines get a
-- count hook (a library coroutine never runs recipe code).
function S.hook_thread(co)
  if limit and limit_hook then debug.sethook(co, limit_hook, "", HOOK_COUNT) end
  return co
end

-- Why the limits stopped the code (nil if they did not). Also true when
-- the allocator refused memory: the caller sees "not enough memory".
function S.stopped()
  if not limit then return nil end
  if limit.stopped then return limit.stopped end
  if limit.lua then
    local m = interp()
    if m and m.memory_hit() then
      return sformat("stopped: the recipe went past --max-memory %g MB of Lua memory", limit.memory / 2 ^ 20)
    end
  end
  return nil
end

-- Lifts the limits (after the run, or to report that they stopped it).
function S.unlimit()
  local why = S.stopped()
  local m = interp()
  if m and m.watch then m.watch() end
  debug.sethook()
  if limit and limit.lua then interp().memory_limit(0) end
  limit = nil
  return why
end

---------------------------------------------------------------- the ff view

-- What a recipe must never reach, by identity, whatever path leads to it.
local RAW_FILE_FUNCTIONS = { "io_write_atomic", "io_read_header", "io_read_tensor", "read_idx", "read_cifar" }

local function denied_values()
  local tables, fns = {}, {}
  local function all(t)
    if type(t) ~= "table" then return end
    tables[t] = true
    for _, v in pairs(t) do if type(v) == "function" then fns[v] = true end end
  end
  for _, t in ipairs { io, os, debug, package, package.searchers, S } do all(t) end
  tables[_G], tables[package.loaded], tables[package.preload] = true, true, true
  -- Functions the sandbox gives in its own versions, or not at all
  -- (string.dump makes bytecode).
  for _, f in ipairs { require, load, loadfile, dofile, collectgarbage, getmetatable, setmetatable, string.dump } do
    fns[f] = true
  end
  -- The library's privileged parts: the engine table and its raw file
  -- readers and writers (ff has checked ones), the recipe runner (it would
  -- run another recipe with --trust) and the interpreter's memory limit.
  local core = package.loaded["firefly.core"]
  if core then
    tables[core] = true
    for _, name in ipairs(RAW_FILE_FUNCTIONS) do if core[name] then fns[core[name]] = true end end
  end
  for _, name in ipairs { "firefly.grow.recipe", "firefly.grow.command", "firefly.interp" } do
    all(package.loaded[name])
  end
  return tables, fns
end
S.RAW_FILE_FUNCTIONS = RAW_FILE_FUNCTIONS

local function refuse(what)
  error(sformat("sandbox: %s is not available to recipes (run with --trust to allow it)", what), 3)
end

-- A read-only view of a table: reads go through (tables as views,
-- functions as they are), writes and the real metatable are refused.
-- Each sandbox has its own views, so nothing one recipe does to them is
-- seen by the next.
local function make_viewer()
  local deny_t, deny_f = denied_values()
  local real_of, name_of = setmetatable({}, { __mode = "k" }), setmetatable({}, { __mode = "k" })
  local memo = setmetatable({}, { __mode = "k" })
  local view
  local function wrap(v, name)
    local tv = type(v)
    if tv == "table" then
      if deny_t[v] then refuse(name) end
      return view(v, name)
    elseif tv == "function" and deny_f[v] then
      refuse(name)
    end
    return v
  end
  local mt = {
    __index = function(p, k) return wrap(real_of[p][k], name_of[p] .. "." .. tostring(k)) end,
    __newindex = function(p, k)
      error(sformat("sandbox: %s is read-only in a recipe (cannot set '%s')", name_of[p], tostring(k)), 2)
    end,
    __pairs = function(p)
      local r, name = real_of[p], name_of[p]
      return function(_, k)
        local nk, nv = next(r, k)
        if nk == nil then return nil end
        return nk, wrap(nv, name .. "." .. tostring(nk))
      end, p, nil
    end,
    __len = function(p) return #real_of[p] end,
    __call = function(p, ...) return real_of[p](...) end,
    __tostring = function(p) return tostring(real_of[p]) end,
    __metatable = "sandbox: locked",
  }
  function view(t, name)
    local p = memo[t]
    if p then return p end
    p = setmetatable({}, mt)
    real_of[p], name_of[p] = t, name
    memo[t] = p
    return p
  end
  return view, real_of, deny_t
end

-- unwrap(v): v with every view replaced by the table it shows (deeply, in
-- copies of the recipe's own tables), for the library to read recipe
-- values as plain tables.
local function unwrapper(real_of)
  local function unwrap(v, seen)
    if type(v) ~= "table" then return v end
    if real_of[v] then return real_of[v] end
    seen = seen or {}
    if seen[v] then return seen[v] end
    if getmetatable(v) ~= nil then return v end -- an object (a network, a data set): as it is
    local copy = {}
    seen[v] = copy
    for k, x in pairs(v) do copy[k] = unwrap(x, seen) end
    return copy
  end
  return unwrap
end

---------------------------------------------------------------- environment

local function stub_table(real, name, allowed)
  local t = {}
  for _, k in ipairs(allowed) do t[k] = real[k] end
  return setmetatable(t, {
    __index = function(_, k)
      error(sformat("sandbox: %s.%s is not available to recipes (only %s; run with --trust to allow it)", name,
        tostring(k), name .. "." .. tconcat(allowed, ", " .. name .. ".")), 2)
    end,
    __newindex = function(_, k) error(sformat("sandbox: %s is read-only in a recipe", name), 2) end,
    __metatable = "sandbox: locked",
  })
end

local function copy(t, except)
  local c = {}
  for k, v in pairs(t) do if not (except and except[k]) then c[k] = v end end
  return c
end

local NOT_AVAILABLE = { io = true, debug = true, load = true, loadfile = true, dofile = true, require = true,
  package = true, loadstring = true, module = true }

-- new(): a sandbox: {env = the recipe's globals, ff = the view of ff,
-- unwrap = function}. Functions the recipe defines keep this environment
-- when they run later (data, net, optim, schedules).
function S.new()
  local ff = require "firefly"
  local view, real_of = make_viewer()
  local self = { unwrap = unwrapper(real_of) }
  self.ff = view(ff, "ff")
  local own_mt = setmetatable({}, { __mode = "k" }) -- metatables the recipe set
  local env = {}
  for _, k in ipairs { "assert", "error", "ipairs", "next", "pairs", "print", "rawequal", "rawget", "rawlen",
    "rawset", "select", "tonumber", "tostring", "type", "_VERSION" } do
    env[k] = _G[k]
  end
  -- a limit that stopped the run is not caught by the recipe's pcall
  local function rethrow(ok, ...)
    local why = S.stopped()
    if why then error(why, 0) end
    return ok, ...
  end
  env.pcall = function(f, ...) return rethrow(pcall(f, ...)) end
  env.xpcall = function(f, h, ...) return rethrow(xpcall(f, h, ...)) end
  env.getmetatable = function(v)
    local m = getmetatable(v)
    if type(m) ~= "table" or own_mt[m] then return m end
    return view(m, "the metatable of a " .. type(v))
  end
  env.setmetatable = function(t, m)
    if type(m) == "table" and rawget(m, "__gc") ~= nil then
      error("sandbox: __gc finalizers are not available to recipes (they would run after the recipe)", 2)
    end
    local r = setmetatable(t, m)
    if type(m) == "table" then own_mt[m] = true end
    return r
  end
  env.collectgarbage = function(opt)
    if opt == "count" then return collectgarbage("count") end
    error("sandbox: collectgarbage is available to recipes only as collectgarbage(\"count\")", 2)
  end
  env.math = copy(math)
  env.string = copy(string, { dump = true })
  env.table = copy(table)
  env.utf8 = copy(utf8)
  -- coroutines: with the limits' hook, and a stop is not caught by resume
  local co_create, co_resume = coroutine.create, coroutine.resume
  env.coroutine = copy(coroutine)
  env.coroutine.create = function(f) return S.hook_thread(co_create(f)) end
  env.coroutine.resume = function(co, ...) return rethrow(co_resume(co, ...)) end
  env.coroutine.wrap = function(f)
    local co = S.hook_thread(co_create(f))
    local function results(ok, ...)
      if not ok then error((...), 0) end
      return ...
    end
    return function(...) return results(rethrow(co_resume(co, ...))) end
  end
  env.os = stub_table(os, "os", { "time", "clock" })
  env.ff = self.ff
  env._G = env
  setmetatable(env, {
    __index = function(_, k)
      if NOT_AVAILABLE[k] then
        error(sformat("sandbox: '%s' is not available to recipes (run with --trust to allow it)", tostring(k)), 2)
      end
      return nil
    end,
    __metatable = "sandbox: locked",
  })
  self.env = env
  return self
end

return S
