-- Gradient checks of the view, join and indexing ops (op_shape.c).
return {
  reshape = {
    { fn = function(ff, a) return a:reshape(4, 3) end,
      inputs = function(ff, g) return { ff.randn(3, 4, g) } end },
    { fn = function(ff, a) return a:t():reshape(-1) end, note = "non-contiguous input copies",
      inputs = function(ff, g) return { ff.randn(3, 4, g) } end },
  },
  squeeze = {
    { fn = function(ff, a) return a:squeeze() end,
      inputs = function(ff, g) return { ff.randn(3, 1, 4, g) } end },
  },
  unsqueeze = {
    { fn = function(ff, a) return a:unsqueeze(2) end,
      inputs = function(ff, g) return { ff.randn(3, 4, g) } end },
  },
  transpose = {
    { fn = function(ff, a) return a:transpose(1, 3) end,
      inputs = function(ff, g) return { ff.randn(2, 3, 4, g) } end },
  },
  permute = {
    { fn = function(ff, a) return a:permute(3, 1, 2) end,
      inputs = function(ff, g) return { ff.randn(2, 3, 4, g) } end },
  },
  narrow = {
    { fn = function(ff, a) return a:narrow(2, 2, 2) end,
      inputs = function(ff, g) return { ff.randn(3, 4, g) } end },
  },
  select = {
    { fn = function(ff, a) return a:select(1, 2) end,
      inputs = function(ff, g) return { ff.randn(3, 4, g) } end },
    { fn = function(ff, a) return a[{ 2, -1 }] and a[2] end, note = "t[i] indexing",
      inputs = function(ff, g) return { ff.randn(3, 4, g) } end },
  },
  expand = {
    { fn = function(ff, a) return a:expand(2, 3, 4) end,
      inputs = function(ff, g) return { ff.randn(3, 1, g) } end },
  },
  contiguous = {
    { fn = function(ff, a) return a:t():contiguous() end,
      inputs = function(ff, g) return { ff.randn(3, 4, g) } end },
    { fn = function(ff, a) return a:clone() end, note = "clone",
      inputs = function(ff, g) return { ff.randn(3, 4, g) } end },
  },
  cat = {
    { fn = function(ff, a, b) return ff.cat({ a, b, a }, 2) end,
      inputs = function(ff, g) return { ff.randn(2, 3, g), ff.randn(2, 1, g) } end },
  },
  stack = {
    { fn = function(ff, a, b) return ff.stack({ a, b }, 2) end,
      inputs = function(ff, g) return { ff.randn(2, 3, g), ff.randn(2, 3, g) } end },
  },
  index_select = {
    { fn = function(ff, a) return a:index_select(1, { 3, 1, 3 }) end, note = "repeats accumulate",
      inputs = function(ff, g) return { ff.randn(3, 4, g) } end },
    { fn = function(ff, a) return a:t():index_select(2, ff.tensor { 2, 2 }) end,
      inputs = function(ff, g) return { ff.randn(3, 4, g) } end },
  },
  gather = {
    { fn = function(ff, a) return a:gather(2, ff.tensor { { 1, 1 }, { 4, 2 }, { 3, 3 } }) end,
      inputs = function(ff, g) return { ff.randn(3, 4, g) } end },
  },
}
