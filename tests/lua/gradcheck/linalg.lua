-- Gradient checks of matmul (op_linalg.c): every shape case of ff.matmul.
local function case(sa, sb, note, ta)
  return {
    note = note,
    fn = function(ff, a, b) return (ta and a:t() or a):matmul(b) end,
    inputs = function(ff, g) return { ff.randn(sa, g), ff.randn(sb, g) } end,
  }
end

return {
  matmul = {
    case({ 3, 4 }, { 4, 5 }, "2-D"),
    case({ 4, 3 }, { 4, 5 }, "transposed a", true),
    case({ 2, 3, 4 }, { 2, 4, 5 }, "batched"),
    case({ 1, 3, 4 }, { 2, 4, 5 }, "batch of 1 broadcasts"),
    case({ 2, 3, 4 }, { 4, 5 }, "3-D x 2-D"),
    case({ 3, 4 }, { 2, 4, 5 }, "2-D x 3-D"),
    case({ 4 }, { 4, 5 }, "vector x matrix"),
    case({ 3, 4 }, { 4 }, "matrix x vector"),
    case({ 4 }, { 4 }, "dot"),
    case({ 4 }, { 2, 4, 5 }, "vector x batch"),
  },
}
