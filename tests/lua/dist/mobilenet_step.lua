-- One training step of a thin MobileNetV1 with synchronised batch norm
-- (started by test_dist.lua, on one process or under mpirun): the global
-- batch of 32 rows splits unevenly (17 rows on rank 0, 15 on rank 1), each
-- rank's mean loss is weighted by its share and the gradients summed, as
-- train.fit does. arg[1] = a file the main rank writes, as %.9g (exact for
-- float32): "loss v", then per parameter "grad NAME v...", per buffer
-- "buffer NAME v...". One process takes the ordinary batch norm (the
-- reference); two ranks the synchronised one, which must agree with it.
-- Each rank also checks that the synchronised forward runs under no_grad
-- in training mode and gives what the forward with autograd gave.
local ff = require "firefly"
local d = ff.dist
local out = arg[1]

local B = 32
local function build()
  local net = ff.nn.mobilenet_v1 { channels = { 4, 6, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8 }, in_channels = 3,
    classes = 10, stem_stride = 1, generator = ff.Generator(3) }
  net:apply(function(m)
    if tostring(getmetatable(m).__name):match("^BatchNorm") then m.sync = true end
  end)
  net:train()
  return net
end
local net = build()
local g = ff.Generator(7)
local X = ff.randn({ B, 3, 16, 16 }, { generator = g })
local Y = ff.randint(1, 10, { B }, { generator = g })
local first = d.size() == 1 and B or (d.rank() == 0 and 17 or 15)
local off = d.rank() == 0 and 0 or 17
local x, y = X:narrow(1, off + 1, first), Y:narrow(1, off + 1, first)

-- the forward under no_grad first, on a copy (it updates running statistics)
local quiet = ff.no_grad(function() return build():forward(x) end)

local out_x = net:forward(x)
assert(quiet:equal(out_x:detach()), "the forward under no_grad differs from the one with autograd")
local loss = ff.cross_entropy(out_x, y)
net:zero_grad()
loss:backward()
local params = {}
for i, e in ipairs(net:named_parameters()) do params[i] = e.param end
local lt = ff.tensor({ loss:item() })
d.sum_grads(params, first / B, { lt })

if d.is_main() then
  local f = assert(io.open(out, "w"))
  f:write(string.format("loss %.9g\n", lt:item()))
  local function put(kind, name, t)
    f:write(kind, " ", name)
    for _, v in ipairs(t:reshape(-1):totable()) do f:write(string.format(" %.9g", v)) end
    f:write("\n")
  end
  for _, e in ipairs(net:named_parameters()) do put("grad", e.name, e.param.grad) end
  for _, e in ipairs(net:named_buffers()) do put("buffer", e.name, e.param) end
  f:close()
end
print(string.format("rank %d: step ok", d.rank()))
