-- Gradient checks of softmax, log_softmax and the losses (op_loss.c).
-- Labels are 1-based class indices; as inputs they are listed in no_grad.

local function logits_labels(ff, g)
  return { ff.randn(5, 3, g) * 1.5, ff.tensor { 1, 3, 2, 3, 1 } }
end

local function softmax_cases(name)
  local call = function(a, dim) return a[name](a, dim) end
  return {
    { fn = function(ff, a) return call(a, 2) end, note = "rows of (3,4)",
      inputs = function(ff, g) return { ff.randn(3, 4, g) } end },
    { fn = function(ff, a) return call(a, 1) end, note = "columns of (3,4)",
      inputs = function(ff, g) return { ff.randn(3, 4, g) } end },
    { fn = function(ff, a) return call(a, 2) end, note = "dim 2 of (2,3,4)",
      inputs = function(ff, g) return { ff.randn(2, 3, 4, g) } end },
    { fn = function(ff, a) return call(a, 3) end, note = "dim 3 of (2,3,4)",
      inputs = function(ff, g) return { ff.randn(2, 3, 4, g) } end },
    { fn = function(ff, a) return call(a:t(), -1) end, note = "non-contiguous, dim -1",
      inputs = function(ff, g) return { ff.randn(4, 3, g) } end },
    { fn = function(ff, a) return call(a * 5, 2) end, note = "peaked",
      inputs = function(ff, g) return { ff.randn(3, 4, g) } end },
  }
end

return {
  softmax = softmax_cases("softmax"),
  log_softmax = softmax_cases("log_softmax"),
  cross_entropy = {
    { fn = function(ff, x, y) return ff.cross_entropy(x, y) end, note = "mean (default)",
      inputs = logits_labels, no_grad = { 2 } },
    { fn = function(ff, x, y) return ff.cross_entropy(x, y, { reduction = "sum" }) end,
      note = "sum", inputs = logits_labels, no_grad = { 2 } },
    { fn = function(ff, x, y) return ff.cross_entropy(x, y, { reduction = "none" }) end,
      note = "none", inputs = logits_labels, no_grad = { 2 } },
    { fn = function(ff, x, y) return ff.cross_entropy(x, y, { label_smoothing = 0.1 }) end,
      note = "label smoothing 0.1, mean", inputs = logits_labels, no_grad = { 2 } },
    { fn = function(ff, x, y)
        return ff.cross_entropy(x, y, { reduction = "sum", label_smoothing = 0.3 })
      end, note = "label smoothing 0.3, sum", inputs = logits_labels, no_grad = { 2 } },
    { fn = function(ff, x, y)
        return ff.cross_entropy(x, y, { reduction = "none", label_smoothing = 0.2 })
      end, note = "label smoothing 0.2, none", inputs = logits_labels, no_grad = { 2 } },
    { fn = function(ff, x) return ff.cross_entropy(x:t(), { 2, 1, 3, 3, 2 }) end,
      note = "non-contiguous logits, a table of labels",
      inputs = function(ff, g) return { ff.randn(3, 5, g) } end },
  },
  nll_loss = {
    { fn = function(ff, x, y) return ff.nll_loss(x:log_softmax(2), y) end,
      note = "after log_softmax, mean", inputs = logits_labels, no_grad = { 2 } },
    { fn = function(ff, x, y) return ff.nll_loss(x, y, { reduction = "sum" }) end,
      note = "sum", inputs = logits_labels, no_grad = { 2 } },
    { fn = function(ff, x, y) return ff.nll_loss(x, y, { reduction = "none" }) end,
      note = "none", inputs = logits_labels, no_grad = { 2 } },
    { fn = function(ff, x) return ff.nll_loss(x:t(), { 3, 3, 1, 2, 1 }) end,
      note = "non-contiguous, a table of labels",
      inputs = function(ff, g) return { ff.randn(3, 5, g) } end },
  },
  mse_loss = {
    { fn = function(ff, a, b) return ff.mse_loss(a, b) end, note = "mean",
      inputs = function(ff, g) return { ff.randn(3, 4, g), ff.randn(3, 4, g) } end },
    { fn = function(ff, a, b) return ff.mse_loss(a, b, { reduction = "sum" }) end,
      note = "sum, target (4) broadcast",
      inputs = function(ff, g) return { ff.randn(3, 4, g), ff.randn(4, g) } end },
    { fn = function(ff, a, b) return ff.mse_loss(a:t(), b, { reduction = "none" }) end,
      note = "none, non-contiguous, (3,1) broadcast",
      inputs = function(ff, g) return { ff.randn(4, 3, g), ff.randn(3, 1, g) } end },
  },
  bce_with_logits = {
    { fn = function(ff, x, y) return ff.bce_with_logits(x, y) end, note = "mean",
      inputs = function(ff, g) return { ff.randn(3, 4, g) * 2, ff.rand(3, 4, g) } end },
    { fn = function(ff, x, y) return ff.bce_with_logits(x, y, { reduction = "sum" }) end,
      note = "sum", inputs = function(ff, g) return { ff.randn(6, g) * 2, ff.rand(6, g) } end },
    { fn = function(ff, x, y) return ff.bce_with_logits(x:t(), y, { reduction = "none" }) end,
      note = "none, non-contiguous",
      inputs = function(ff, g) return { ff.randn(4, 3, g) * 2, ff.rand(3, 4, g) } end },
  },
}
