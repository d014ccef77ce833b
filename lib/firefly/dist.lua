-- firefly.dist (`ff.dist`): data-parallel collectives over MPI.
--
-- Started by `mpirun -np N firefly script.lua`, every process is a rank
-- (0 .. N-1) from the moment firefly loads; a plain `firefly` is one rank
-- and every call here is then a no-op or a copy, so the same script runs
-- both ways. The collectives are in C (engine/core/dist.c, over Open MPI,
-- loaded only when used); this file adds what training and growth need on
-- top: gradient sums, buffer averages, a consistency check and the
-- messages. The reference is spec/dist.md.
local core = require "firefly.core"
local options = require "firefly.options"

local C = core.dist
-- the deterministic mode's number of parts (nil: off; dist.set_deterministic)
local deterministic = nil
-- Where each local batch of dist.local_batches came from: its global
-- length and offset (weak keys: the batches' own lifetime).
local origin = setmetatable({}, { __mode = "k" })
local tensor_mt = getmetatable(core.zeros(0))
local dist = {}

-- dist.init([{timeout = seconds}]): start MPI (implicit under mpirun; a
-- plain process that calls it becomes a world of one rank).
function dist.init(opts)
  options.check("dist.init", opts or {}, { timeout = true })
  if opts and opts.timeout ~= nil then
    if type(opts.timeout) ~= "number" then error("dist.init: timeout must be a number of seconds", 2) end
    C.set_timeout(opts.timeout)
  end
  C.init()
end

dist.active = C.active       -- MPI initialised (and not yet finalised)
dist.launched = C.launched   -- started by mpirun
dist.rank = C.rank           -- 0-based
dist.size = C.size
dist.barrier = C.barrier
dist.allreduce = C.allreduce         -- (t [, "sum"|"mean"|"max"|"min"]) in place
dist.allreduce_list = C.allreduce_list
dist.allreduce_numbers = C.allreduce_numbers
dist.broadcast = C.broadcast         -- (t, root) in place
dist.allgather = C.allgather         -- (t) -> size x shape(t)
dist.set_timeout = C.set_timeout
dist.timeout = C.timeout
dist.stats = C.stats

-- true on rank 0 (the rank that prints and writes files).
function dist.is_main() return C.rank() == 0 end

-- Several ranks (so collectives do something).
function dist.parallel() return C.size() > 1 end

-- dist.sum_grads(params [, weight [, extra]]): every parameter's gradient
-- becomes the sum over ranks of weight x its local gradient, in one
-- bucketed allreduce; the tensors of the list `extra` (a loss, counts) are
-- summed the same way in the same buffer. A gradient missing on some ranks
-- counts as zeros there; one missing on every rank stays missing (as in
-- one process, the optimiser then skips the parameter).
function dist.sum_grads(params, weight, extra)
  if C.size() == 1 and (weight == nil or weight == 1) then return end
  local core_zeros = core.zeros
  local list, had = {}, {}
  for i, p in ipairs(params) do
    local g = p.grad
    had[i] = g ~= nil and 1 or 0
    if g == nil then
      g = core_zeros(p:size())
      p.grad = g
      g = p.grad
    elseif not g:is_contiguous() then
      p.grad = g:contiguous()
      g = p.grad
    end
    list[i] = g
  end
  local flags = core.tensor(#had > 0 and had or { 0 })
  list[#list + 1] = flags
  for _, t in ipairs(extra or {}) do list[#list + 1] = t end
  -- the flags ride in the same buffer (scaled by weight too: only their
  -- sign matters, and the weights are positive)
  C.allreduce_list(list, "sum", weight or 1)
  local any = flags:totable()
  for i, p in ipairs(params) do
    if had[i] == 0 and not (any[i] > 0) then p.grad = nil end
  end
end

-- Overlap of the gradient allreduce with the backward (dist.grad_reducer):
-- off by default, since it did not pay on two ranks sharing a machine
-- (spec/dist.md, "Speed: measured"); dist.set_overlap(true) turns it on.
local overlap = false
function dist.set_overlap(on)
  if type(on) ~= "boolean" then error("dist.set_overlap: expected true or false, got " .. tostring(on), 2) end
  overlap = on
end
function dist.overlap() return overlap end

-- dist.grad_reducer(params [, {overlap =, bucket_values = 65536}]) -> r:
-- the data-parallel step's gradient sum, with r:begin(weight) before the
-- backward and r:finish([extra]) after it, which together do what
-- dist.sum_grads(params, weight, extra) does: every gradient becomes the
-- sum over ranks of weight x its local gradient (missing ones as there).
-- The buffer lives as long as r (r:close() frees it); its buckets of about
-- bucket_values floats follow the backward's order and, with overlap, are
-- posted while the backward runs. Overlap on or off gives the same bits.
function dist.grad_reducer(params, opts)
  opts = opts or {}
  options.check("dist.grad_reducer", opts, { overlap = true, bucket_values = true })
  local bucket = opts.bucket_values or 65536
  if math.type(bucket) ~= "integer" or bucket < 1 then
    error("dist.grad_reducer: bucket_values must be an integer >= 1, got " .. tostring(bucket), 2)
  end
  local ov = opts.overlap
  if ov == nil then ov = overlap end
  local r = C.reducer(params, bucket, ov)
  local core_zeros, core_tensor = core.zeros, core.tensor
  local self = {}
  function self.begin(_, weight) r:begin(weight or 1) end
  function self.finish(_, extra)
    local had = {}
    for i, p in ipairs(params) do
      local g = p.grad
      had[i] = g ~= nil and 1 or 0
      if g == nil then
        p.grad = core_zeros(p:size())
      elseif not g:is_contiguous() then
        p.grad = g:contiguous()
      end
    end
    local flags = core_tensor(#had > 0 and had or { 0 })
    local list = { flags }
    for _, t in ipairs(extra or {}) do list[#list + 1] = t end
    r:finish(list)
    local any = flags:totable()
    for i, p in ipairs(params) do
      if had[i] == 0 and not (any[i] > 0) then p.grad = nil end
    end
  end
  function self.layout() return r:layout() end
  function self.close() r:close() end
  return self
end

-- dist.mean_grads(params, n): the gradients become the mean over every
-- rank's rows, given that each holds the gradient of its mean loss over
-- its n rows: sum of n x gradient over ranks, divided by the sum of n (one
-- allreduce, the count riding along).
function dist.mean_grads(params, n)
  if C.size() == 1 then return end
  local count = core.tensor({ 1 })
  dist.sum_grads(params, n, { count })
  local total = count:item()
  for _, p in ipairs(params) do
    if p.grad then p.grad = p.grad / total end
  end
end

-- dist.sum_numbers(a, b, ...) -> a, b, ... summed over ranks (in double).
function dist.sum_numbers(...)
  if C.size() == 1 then return ... end
  return table.unpack(C.allreduce_numbers({ ... }))
end

-- dist.max_number(v) -> the largest v over ranks.
function dist.max_number(v)
  if C.size() == 1 or v == nil then return v end
  return C.allreduce_numbers({ v }, "max")[1]
end

-- dist.broadcast_list(tensors [, root]): root's values (0) into every
-- tensor (random initialisations, so every rank starts from one draw).
function dist.broadcast_list(list, root)
  if C.size() == 1 then return end
  for _, t in ipairs(list) do
    if not t:is_contiguous() then error("dist.broadcast_list: every tensor must be contiguous", 2) end
    C.broadcast(t, root or 0)
  end
end

-- dist.sync_rng([root]): the default generator's state from root (0), so
-- whatever any rank draws next is the same draw (ranks' streams drift
-- apart when they draw per local row, as dropout does).
function dist.sync_rng(root)
  if C.size() == 1 then return end
  local g = core.get_rng_state()
  local st = g:get_state()
  local bytes = { st:byte(1, -1) }
  local t = core.tensor(bytes)
  C.broadcast(t, root or 0)
  local back = {}
  for i, v in ipairs(t:totable()) do back[i] = string.char(math.floor(v)) end
  g:set_state(table.concat(back))
  core.set_rng_state(g)
end

-- dist.local_batches(loader, n): this rank's rows of the loader's first n
-- global batches (all of them for "all"), as a list of {x, y}: the scoring
-- data of a growth step. One rank: the batches themselves.
function dist.local_batches(loader, n)
  local list = {}
  if C.size() == 1 and not deterministic then
    for x, y in loader:iter() do
      list[#list + 1] = { x, y }
      if n ~= "all" and #list >= n then break end
    end
    return list
  end
  for len, off, x, y in loader:iter_shard(C.rank(), C.size()) do
    if x == nil then error("dist.local_batches: a scoring batch has fewer rows than ranks", 2) end
    origin[x] = { len = len, off = off }
    list[#list + 1] = { x, y }
    if n ~= "all" and #list >= n then break end
  end
  return list
end

-- ---- deterministic mode: K fixed parts per global batch ----------------
--
-- dist.set_deterministic(K | true | false) sets the run-wide default that
-- train.fit and the growth step read (true means 4 parts; false/nil off).
-- Each global batch is cut into K fixed parts (data.shard_rows), each
-- part's gradient computed alone, and the parts' gradients summed in part
-- order after one allgather: the same floats in the same order on 1, 2 or
-- 4 ranks (the ranks must divide K).
function dist.set_deterministic(k)
  if k == true then k = 4 end
  if k == false then k = nil end
  if k ~= nil and (math.type(k) ~= "integer" or k < 1) then
    error("dist.set_deterministic: expected true, false or a number of parts >= 1, got " .. tostring(k), 2)
  end
  if k and k % C.size() ~= 0 then
    error(string.format("dist.set_deterministic: %d parts cannot be split over %d ranks (the number of ranks must divide it)",
      k, C.size()), 2)
  end
  deterministic = k
end
function dist.deterministic() return deterministic end


-- dist.part_backward(params, x, y, loss_fn) -> the global batch's mean
-- loss: in deterministic mode, for x, y from dist.local_batches, every
-- parameter's .grad becomes the gradient of the global batch's mean loss
-- summed part by part in part order (loss_fn(xp, yp) -> the mean loss of
-- a part, a scalar tensor). Identical bits on every rank and on 1 rank.
function dist.part_backward(params, x, y, loss_fn)
  local K = deterministic
  local o = origin[x] or { len = x:size(1), off = 0 }
  local len, off = o.len, o.off
  local R, N = C.rank(), C.size()
  local per = K // N
  local ff = require "firefly"
  local P = 0
  for _, p in ipairs(params) do P = P + p:numel() end
  local rows = {}
  for k = R * per, (R + 1) * per - 1 do
    local lo, cnt = ff.data.shard_rows(len, k, K)
    local flat
    if cnt > 0 then
      for _, p in ipairs(params) do p.grad = nil end
      local loss = loss_fn(x:narrow(1, lo - off + 1, cnt), y and y:narrow(1, lo - off + 1, cnt))
      loss:backward()
      local parts = {}
      for i, p in ipairs(params) do parts[i] = p.grad and p.grad:reshape(-1) or ff.zeros(p:numel()) end
      parts[#parts + 1] = ff.tensor({ loss:item() })
      flat = ff.cat(parts):mul(cnt / len)
    else
      flat = ff.zeros(P + 1)
    end
    rows[#rows + 1] = flat
  end
  local sum = ff.no_grad(function() return C.allgather(ff.stack(rows)):reshape(K, -1):sum(1) end)
  local at = 1
  for _, p in ipairs(params) do
    local n = p:numel()
    p.grad = sum:narrow(1, at, n):reshape(p:size())
    at = at + n
  end
  return sum:narrow(1, at, 1):item()
end

-- dist.part_mean_loss(batches, fn) -> the mean of fn(x, y) (a part's mean
-- loss, a number) over every row of the global batches, part by part, the
-- parts' sums added in part order (deterministic mode).
function dist.part_mean_loss(batches, fn)
  local K = deterministic
  local R, N = C.rank(), C.size()
  local per = K // N
  local ff = require "firefly"
  local sums = {}
  for i = 1, 2 * K do sums[i] = 0 end
  for _, b in ipairs(batches) do
    local x, y = b[1], b[2]
    local o = origin[x] or { len = x:size(1), off = 0 }
    for k = R * per, (R + 1) * per - 1 do
      local lo, cnt = ff.data.shard_rows(o.len, k, K)
      if cnt > 0 then
        local v = fn(x:narrow(1, lo - o.off + 1, cnt), y and y:narrow(1, lo - o.off + 1, cnt))
        sums[2 * k + 1] = sums[2 * k + 1] + v * cnt
        sums[2 * k + 2] = sums[2 * k + 2] + cnt
      end
    end
  end
  sums = C.allreduce_numbers(sums) -- one rank's value plus zeros: exact
  local total, n = 0, 0
  for k = 0, K - 1 do total, n = total + sums[2 * k + 1], n + sums[2 * k + 2] end
  return total / math.max(n, 1)
end

-- dist.average_buffers(module): running statistics (batch norm) averaged
-- over ranks, so every rank evaluates and saves the same network.
function dist.average_buffers(module)
  if C.size() == 1 then return end
  local list = {}
  for _, e in ipairs(module:named_buffers()) do list[#list + 1] = e.param end
  if #list > 0 then C.allreduce_list(list, "mean") end
end

-- dist.broadcast_module(module [, root]): parameters and buffers from root
-- (0) to every rank: the start of data-parallel training.
function dist.broadcast_module(module, root)
  if C.size() == 1 then return end
  for _, e in ipairs(module:named_parameters()) do C.broadcast(e.param, root or 0) end
  for _, e in ipairs(module:named_buffers()) do C.broadcast(e.param, root or 0) end
end

-- Every tensor the decisions depend on: parameters, buffers and the
-- optimiser's state buffers, as { name =, tensor = } in a fixed order.
local function state_tensors(module, opt)
  local out = {}
  for _, e in ipairs(module:named_parameters()) do out[#out + 1] = { name = e.name, tensor = e.param } end
  for _, e in ipairs(module:named_buffers()) do out[#out + 1] = { name = e.name, tensor = e.param } end
  if opt then
    for i, e in ipairs(opt:named_params()) do
      local st = opt:state_of(e.param)
      if st then
        local keys = {}
        for k, v in pairs(st) do if getmetatable(v) == tensor_mt then keys[#keys + 1] = k end end
        table.sort(keys)
        for _, k in ipairs(keys) do
          out[#out + 1] = { name = string.format("optimiser state '%s' of %s", k, e.name or ("parameter " .. i)),
            tensor = st[k] }
        end
      end
    end
  end
  return out
end

-- dist.check_consistent(module [, opt [, where]]): error unless every rank
-- holds bit-identical parameters, buffers and optimiser state; the message
-- names the first tensor that differs and a rank that differs from rank 0.
-- One allgather of one 64-bit checksum per tensor.
function dist.check_consistent(module, opt, where)
  if C.size() == 1 then return true end
  local entries = state_tensors(module, opt)
  local list = {}
  for i, e in ipairs(entries) do list[i] = e.tensor end
  local i, r = C.mismatch(list, "dist.check_consistent")
  if i then
    error(string.format("dist.check_consistent: ranks diverged%s: %s differs between rank 0 and rank %d",
      where and (" " .. where) or "", entries[i].name, r), 2)
  end
  return true
end

return dist
