// Backward rules, one row per op code, in OpCode order (a static_assert keeps
// the table complete). Each differentiable row names what its forward must
// save (only what the backward needs) and how to turn the output's gradient
// into the inputs' gradients with ordinary gt ops; the formulas follow
// PyTorch's derivatives.yaml so that results match LibTorch's autograd.
// Rules run under no-grad (higher-order gradients are not recorded).

#include "client/internal/autograd_rules.h"

#include <cmath>
#include <limits>

#include <gt/error.h>

#include "client/internal/ops.h"
#include "common/check.h"
#include "common/shape.h"

namespace gt::client {

// ---- context ------------------------------------------------------------------------

Scalar BackwardContext::scalar() const {
  if (!fn_.floats.empty()) return Scalar(fn_.floats[0]);
  return Scalar(fn_.ints.empty() ? int64_t{0} : fn_.ints[0]);
}

Tensor BackwardContext::unpack(const SavedTensor& s, const char* what) const {
  if (!s.node) {
    throw Error(detail::cat(
        "[client.backward] trying to backward through the graph a second time: the saved ",
        what, " of ", fn_.name(), " was freed by an earlier backward; call "
        "backward(gradient, /*retain_graph=*/true) if you need to backward twice"));
  }
  const uint32_t now = s.counter->version.load(std::memory_order_acquire);
  if (now != s.version) {
    throw Error(detail::cat(
        "[client.backward] one of the tensors needed for gradient computation has been "
        "modified by an in-place operation: the ", what, " of ", fn_.name(), " (shape ",
        shape_str(s.node->meta().shape), ") is at version ", now, "; expected version ",
        s.version, ". Use the out-of-place op, or modify it after backward()"));
  }
  return Tensor(s.node);
}

Tensor BackwardContext::saved_input(size_t i) const {
  return unpack(fn_.saved_inputs.at(i), i == 0 ? "input 0" : "input 1+");
}

Tensor BackwardContext::saved_output() const { return unpack(fn_.saved_output, "output"); }

// ---- helpers --------------------------------------------------------------------------

// `t` in `shape`, without an instruction when it has it already. A gradient
// passes through fewer ops, which matters most when it is a partial sum the
// dispatcher has yet to complete (Note [deferred sums] in
// dispatcher/sharding.cpp).
static Tensor reshaped(const Tensor& t, const Shape& shape) {
  return t.shape() == shape ? t : t.reshape(shape);
}

Tensor sum_to(const Tensor& grad, const Shape& shape) {
  const Shape& g = grad.shape();
  if (g == shape) return grad;
  GT_ASSERT(g.size() >= shape.size(), "[client.sum_to] cannot sum ", shape_str(g), " to ",
            shape_str(shape));
  const size_t lead = g.size() - shape.size();
  std::vector<int64_t> dims;
  for (size_t d = 0; d < g.size(); ++d) {
    if (d < lead || (shape[d - lead] == 1 && g[d] != 1)) dims.push_back(static_cast<int64_t>(d));
  }
  Tensor r = dims.empty() ? grad : grad.sum(dims, /*keepdim=*/true);
  return reshaped(r, shape);
}

namespace {

using Ctx = BackwardContext;

Tensor zeros_like(const TensorMeta& m) { return gt::zeros(m.shape, m.dtype); }
Tensor scalar_zero(DType dtype) { return gt::zeros({}, dtype); }

// The gradient of a reduction's output (reduced dims dropped unless keepdim),
// reshaped so that it broadcasts against the input: ints = [keepdim, dims...].
Tensor restore_reduced_dims(const Tensor& g, const Shape& input, std::span<const int64_t> ints) {
  const bool keepdim = ints[0] != 0;
  const int64_t rank = static_cast<int64_t>(input.size());
  if (keepdim || rank == 0) return g;
  std::vector<bool> reduced(rank, ints.size() == 1);
  for (size_t i = 1; i < ints.size(); ++i) reduced[wrap_dim(ints[i], rank)] = true;
  Shape kept;
  for (int64_t d = 0; d < rank; ++d) kept.push_back(reduced[d] ? 1 : input[d]);
  return reshaped(g, kept);
}

int64_t reduced_count(const Shape& input, const Shape& output) {
  const int64_t out = numel(output);
  return out == 0 ? 0 : numel(input) / out;
}

// Inputs whose gradient needs the *other* operand (mul, matmul).
SaveMask save_other(uint32_t needs) {
  SaveMask m = 0;
  if (needs & 1u) m |= 2u;
  if (needs & 2u) m |= 1u;
  return m;
}
SaveMask save_input0(uint32_t) { return 1u; }
SaveMask save_input1(uint32_t) { return 2u; }
SaveMask save_output(uint32_t) { return kSaveOutput; }
SaveMask save_input0_output(uint32_t) { return 1u | kSaveOutput; }
SaveMask save_div(uint32_t needs) { return (needs & 2u) ? 3u : 2u; }

// ---- elementwise, tensor with tensor ----

// a + alpha * b and a - alpha * b: alpha is the optional number operand of
// add_/sub_ (none = 1, and the out-of-place ops have none).
Scalar alpha_of(const Ctx& c) {
  return c.ints().empty() && c.floats().empty() ? Scalar(int64_t{1}) : c.scalar();
}

// g * alpha * sign, without a multiplication where it is the identity.
Tensor scaled(const Tensor& g, Scalar alpha, int sign) {
  if (alpha.is_integral() && alpha.to_int() == 1) return sign > 0 ? g : -g;
  return g * (alpha.is_integral() ? Scalar(sign * alpha.to_int()) : Scalar(sign * alpha.to_double()));
}

void add_backward(Ctx& c) {
  if (c.needs(0)) c.grads[0] = sum_to(c.grad(), c.input(0).shape);
  if (c.needs(1)) c.grads[1] = sum_to(scaled(c.grad(), alpha_of(c), 1), c.input(1).shape);
}

void sub_backward(Ctx& c) {
  if (c.needs(0)) c.grads[0] = sum_to(c.grad(), c.input(0).shape);
  if (c.needs(1)) c.grads[1] = sum_to(scaled(c.grad(), alpha_of(c), -1), c.input(1).shape);
}

void mul_backward(Ctx& c) {
  if (c.needs(0)) c.grads[0] = sum_to(c.grad() * c.saved_input(1), c.input(0).shape);
  if (c.needs(1)) c.grads[1] = sum_to(c.grad() * c.saved_input(0), c.input(1).shape);
}

void div_backward(Ctx& c) {
  const Tensor y = c.saved_input(1);
  if (c.needs(0)) c.grads[0] = sum_to(c.grad() / y, c.input(0).shape);
  if (c.needs(1)) {
    c.grads[1] = sum_to(-c.grad() * c.saved_input(0) / (y * y), c.input(1).shape);
  }
}

// ---- elementwise, tensor with a number ----

void identity_backward(Ctx& c) { c.grads[0] = c.grad(); }
void neg_backward(Ctx& c) { c.grads[0] = -c.grad(); }
void mul_scalar_backward(Ctx& c) { c.grads[0] = c.grad() * c.scalar(); }
void div_scalar_backward(Ctx& c) { c.grads[0] = c.grad() / c.scalar(); }

// s / x: -s / x^2.
void rdiv_scalar_backward(Ctx& c) {
  const Tensor x = c.saved_input(0);
  c.grads[0] = -(c.grad() * c.scalar()) / (x * x);
}

// ---- elementwise unary ----

void exp_backward(Ctx& c) { c.grads[0] = c.grad() * c.saved_output(); }
void log_backward(Ctx& c) { c.grads[0] = c.grad() / c.saved_input(0); }
void sqrt_backward(Ctx& c) { c.grads[0] = c.grad() / (c.saved_output() * 2); }
void rsqrt_backward(Ctx& c) {
  const Tensor y = c.saved_output();
  c.grads[0] = c.grad() * (y * y * y) * -0.5;
}
// Gradient 0 where the output is 0 (x <= 0), as LibTorch's threshold_backward.
void relu_backward(Ctx& c) { c.grads[0] = c.grad() * (c.saved_output() > 0); }
void sigmoid_backward(Ctx& c) {
  const Tensor y = c.saved_output();
  c.grads[0] = c.grad() * (1 - y) * y;
}
void tanh_backward(Ctx& c) {
  const Tensor y = c.saved_output();
  c.grads[0] = c.grad() * (1 - y * y);
}
void abs_backward(Ctx& c) { c.grads[0] = c.grad() * c.saved_input(0).sign(); }
void sign_backward(Ctx& c) { c.grads[0] = zeros_like(c.input(0)); }
void gelu_backward_rule(Ctx& c) { c.grads[0] = gelu_backward(c.grad(), c.saved_input(0)); }

// x ** y: d/dx = y * x^(y-1) (0 where y == 0); d/dy = x^y * log(x) (0 where
// x == 0 and y >= 0), as LibTorch's pow_backward_self / pow_backward_exponent.
void pow_backward(Ctx& c) {
  const Tensor x = c.saved_input(0);
  const Tensor y = c.saved_input(1);
  const Tensor& g = c.grad();
  const Tensor zero = scalar_zero(c.output().dtype);
  if (c.needs(0)) {
    c.grads[0] = sum_to(gt::where(y == 0, zero, g * (y * x.pow(y - 1))), c.input(0).shape);
  }
  if (c.needs(1)) {
    const Tensor masked = gt::where((x == 0) * (y >= 0) > 0, zero, g * (c.saved_output() * x.log()));
    c.grads[1] = sum_to(masked, c.input(1).shape);
  }
}

SaveMask save_pow(uint32_t needs) { return (needs & 2u) ? (3u | kSaveOutput) : 3u; }

void pow_scalar_backward(Ctx& c) {
  const Scalar s = c.scalar();
  if (s.to_double() == 0.0) {
    c.grads[0] = zeros_like(c.input(0));
    return;
  }
  const Scalar s_minus_1 = s.is_floating() ? Scalar(s.to_double() - 1.0) : Scalar(s.to_int() - 1);
  c.grads[0] = c.grad() * (c.saved_input(0).pow(s_minus_1) * s);
}

// base ** x: base^x * log(base); 0 where base == 0 and x >= 0.
void rpow_scalar_backward(Ctx& c) {
  const double base = c.scalar().to_double();
  const Tensor g = c.grad() * (c.saved_output() * std::log(base));
  if (base != 0.0) {
    c.grads[0] = g;
  } else {
    c.grads[0] = gt::where(c.saved_input(0) >= 0, scalar_zero(c.output().dtype), g);
  }
}

// ---- linear algebra ----

// torch.matmul's rules: 1-D operands are lifted to matrices (a vector on the
// left becomes a row, on the right a column) and batch dims broadcast.
void matmul_backward(Ctx& c) {
  const Shape& sa = c.input(0).shape;
  const Shape& sb = c.input(1).shape;
  const Tensor& g = c.grad();
  if (sa.size() == 1 && sb.size() == 1) {  // dot product: g is 0-dim
    if (c.needs(0)) c.grads[0] = c.saved_input(1) * g;
    if (c.needs(1)) c.grads[1] = c.saved_input(0) * g;
    return;
  }
  // Put g back into matrix form: (..., n, m) with n = 1 or m = 1 for vectors.
  Shape gm = g.shape();
  if (sa.size() == 1) gm.insert(gm.end() - (sb.size() == 1 ? 0 : 1), 1);
  if (sb.size() == 1) gm.push_back(1);
  const Tensor g2 = reshaped(g, gm);
  if (c.needs(0)) {
    Tensor b = c.saved_input(1);
    if (sb.size() == 1) b = b.reshape({sb[0], 1});
    const Tensor ga = g2.matmul(b.transpose(-1, -2));
    const Shape a_mat = sa.size() == 1 ? Shape{1, sa[0]} : sa;
    c.grads[0] = reshaped(sum_to(ga, a_mat), sa);
  }
  if (c.needs(1)) {
    Tensor a = c.saved_input(0);
    if (sa.size() == 1) a = a.reshape({1, sa[0]});
    const Tensor gb = a.transpose(-1, -2).matmul(g2);
    const Shape b_mat = sb.size() == 1 ? Shape{sb[0], 1} : sb;
    c.grads[1] = reshaped(sum_to(gb, b_mat), sb);
  }
}

// ---- reductions ----

void sum_backward(Ctx& c) {
  const Shape& in = c.input(0).shape;
  c.grads[0] = restore_reduced_dims(c.grad(), in, c.ints()).expand(in);
}

void mean_backward(Ctx& c) {
  const Shape& in = c.input(0).shape;
  const int64_t n = reduced_count(in, c.output().shape);
  c.grads[0] = (restore_reduced_dims(c.grad(), in, c.ints()) / n).expand(in);
}

// amax/amin: the gradient is shared evenly by the elements equal to the
// extremum (LibTorch's scale_grad_by_count).
void extremum_backward(Ctx& c) {
  const Shape& in = c.input(0).shape;
  const Tensor out = restore_reduced_dims(c.saved_output(), in, c.ints());
  const Tensor g = restore_reduced_dims(c.grad(), in, c.ints());
  const Tensor mask = (c.saved_input(0) == out).to(c.output().dtype);
  std::vector<int64_t> dims;
  const std::span<const int64_t> ints = c.ints();
  for (size_t i = 1; i < ints.size(); ++i) dims.push_back(ints[i]);
  c.grads[0] = (g / mask.sum(dims, /*keepdim=*/true)) * mask;
}

// ---- softmax family ----

void softmax_backward(Ctx& c) {
  const Tensor y = c.saved_output();
  const Tensor& g = c.grad();
  c.grads[0] = y * (g - (g * y).sum({c.ints()[0]}, /*keepdim=*/true));
}

void log_softmax_backward(Ctx& c) {
  const Tensor& g = c.grad();
  c.grads[0] = g - c.saved_output().exp() * g.sum({c.ints()[0]}, /*keepdim=*/true);
}

// ---- shapes and views ----

void reshape_backward(Ctx& c) { c.grads[0] = reshaped(c.grad(), c.input(0).shape); }

void transpose_backward(Ctx& c) {
  if (c.input(0).shape.empty()) {
    c.grads[0] = c.grad();
    return;
  }
  c.grads[0] = c.grad().transpose(c.ints()[0], c.ints()[1]);
}

void slice_backward(Ctx& c) {
  const auto a = c.ints();
  c.grads[0] = zeros_like(c.input(0)).slice_scatter(c.grad(), a[0], a[1], a[2], a[3]);
}

void permute_backward(Ctx& c) {
  const int64_t rank = static_cast<int64_t>(c.input(0).shape.size());
  std::vector<int64_t> inverse(rank);
  for (int64_t i = 0; i < rank; ++i) inverse[wrap_dim(c.ints()[i], rank)] = i;
  c.grads[0] = c.grad().permute(inverse);
}

void expand_backward(Ctx& c) { c.grads[0] = sum_to(c.grad(), c.input(0).shape); }

void to_backward(Ctx& c) { c.grads[0] = c.grad().to(c.input(0).dtype); }

// ---- joining and selection ----

void cat_backward(Ctx& c) {
  const Shape& out = c.output().shape;
  const int64_t dim = wrap_dim(c.ints()[0], static_cast<int64_t>(out.size()));
  int64_t offset = 0;
  for (size_t i = 0; i < c.grads.size(); ++i) {
    const Shape& in = c.input(i).shape;
    // LibTorch skips legacy empty 1-D inputs of shape (0) when the others
    // have more dims: they take no part of the output.
    if (in.size() != out.size()) {
      if (c.needs(i)) c.grads[i] = zeros_like(c.input(i));
      continue;
    }
    if (c.needs(i)) c.grads[i] = c.grad().slice(dim, offset, offset + in[dim]);
    offset += in[dim];
  }
}

void stack_backward(Ctx& c) {
  const int64_t rank = static_cast<int64_t>(c.output().shape.size());
  const int64_t dim = wrap_dim(c.ints()[0], rank);
  for (size_t i = 0; i < c.grads.size(); ++i) {
    if (!c.needs(i)) continue;
    const int64_t k = static_cast<int64_t>(i);
    c.grads[i] = c.grad().slice(dim, k, k + 1).reshape(c.input(i).shape);
  }
}

void where_backward(Ctx& c) {
  const Tensor cond = c.saved_input(0);
  const Tensor zero = scalar_zero(c.output().dtype);
  if (c.needs(1)) c.grads[1] = sum_to(gt::where(cond, c.grad(), zero), c.input(1).shape);
  if (c.needs(2)) c.grads[2] = sum_to(gt::where(cond, zero, c.grad()), c.input(2).shape);
}

// ---- indexing ----

void gather_backward(Ctx& c) {
  c.grads[0] = zeros_like(c.input(0)).scatter_add(c.ints()[0], c.saved_input(1), c.grad());
}

void index_select_backward(Ctx& c) {
  const TensorMeta& in = c.input(0);
  if (in.shape.empty()) {  // a 0-dim tensor selects itself
    c.grads[0] = c.grad().reshape({});
    return;
  }
  c.grads[0] = zeros_like(in).index_add(c.ints()[0], c.saved_input(1), c.grad());
}

void slice_scatter_backward(Ctx& c) {
  const auto a = c.ints();
  if (c.needs(0)) {
    c.grads[0] = c.grad().slice_scatter(zeros_like(c.input(1)), a[0], a[1], a[2], a[3]);
  }
  if (c.needs(1)) c.grads[1] = c.grad().slice(a[0], a[1], a[2], a[3]);
}

void scatter_add_backward(Ctx& c) {
  if (c.needs(0)) c.grads[0] = c.grad();
  if (c.needs(2)) {
    const TensorMeta& index = c.input(1);
    const TensorMeta& src = c.input(2);
    if (index.shape != src.shape) {
      throw Error(detail::cat("[client.backward] scatter_add's gradient for src is only "
                              "implemented when src has index's shape (as in LibTorch): src ",
                              shape_str(src.shape), ", index ", shape_str(index.shape)));
    }
    c.grads[2] = c.grad().gather(c.ints()[0], c.saved_input(1));
  }
}

void index_add_backward(Ctx& c) {
  if (c.needs(0)) c.grads[0] = c.grad();
  if (c.needs(2)) {
    const Shape& src = c.input(2).shape;
    Tensor g = c.input(0).shape.empty() ? c.grad() : c.grad().index_select(c.ints()[0], c.saved_input(1));
    c.grads[2] = reshaped(g, src);
  }
}

// ---- in-place (inputs: self before the op, other) ----

// addcmul_: self + v * t1 * t2.
SaveMask save_addcmul(uint32_t needs) {
  SaveMask m = 0;
  if (needs & 2u) m |= 4u;  // d/dt1 needs t2
  if (needs & 4u) m |= 2u;  // d/dt2 needs t1
  return m;
}

void addcmul_backward(Ctx& c) {
  const Tensor gv = c.grad() * c.scalar();
  if (c.needs(0)) c.grads[0] = c.grad();
  if (c.needs(1)) c.grads[1] = sum_to(gv * c.saved_input(2), c.input(1).shape);
  if (c.needs(2)) c.grads[2] = sum_to(gv * c.saved_input(1), c.input(2).shape);
}

// addcdiv_: self + v * t1 / t2.
SaveMask save_addcdiv(uint32_t needs) {
  SaveMask m = 0;
  if (needs & 2u) m |= 4u;       // d/dt1 = v / t2
  if (needs & 4u) m |= 2u | 4u;  // d/dt2 = -v * t1 / t2^2
  return m;
}

void addcdiv_backward(Ctx& c) {
  const Tensor gv = c.grad() * c.scalar();
  if (c.needs(0)) c.grads[0] = c.grad();
  if (c.needs(1)) c.grads[1] = sum_to(gv / c.saved_input(2), c.input(1).shape);
  if (c.needs(2)) {
    const Tensor t2 = c.saved_input(2);
    c.grads[2] = sum_to(-gv * c.saved_input(1) / (t2 * t2), c.input(2).shape);
  }
}

void mul_inplace_backward(Ctx& c) {
  if (c.needs(0)) c.grads[0] = c.grad() * c.saved_input(1);
  if (c.needs(1)) c.grads[1] = sum_to(c.grad() * c.saved_input(0), c.input(1).shape);
}

void zero_inplace_backward(Ctx& c) { c.grads[0] = zeros_like(c.input(0)); }

void copy_inplace_backward(Ctx& c) {
  if (c.needs(0)) c.grads[0] = zeros_like(c.input(0));
  if (c.needs(1)) c.grads[1] = sum_to(c.grad(), c.input(1).shape);
}

// ---- the table ----

constexpr BackwardRule none(OpCode op, std::string_view why) {
  return {op, false, why, nullptr, nullptr};
}
constexpr BackwardRule rule(OpCode op, SaveFn save, BackwardFn backward) {
  return {op, true, {}, save, backward};
}

constexpr std::string_view kCreation = "creates a tensor from attributes";
constexpr std::string_view kComparison = "comparison (bool result)";

constexpr BackwardRule kRules[] = {
    none(OpCode::Randn, kCreation),
    none(OpCode::Rand, kCreation),
    none(OpCode::Zeros, kCreation),
    none(OpCode::Ones, kCreation),
    none(OpCode::Full, kCreation),
    none(OpCode::Arange, kCreation),
    none(OpCode::FromData, kCreation),
    none(OpCode::ManualSeed, "control instruction (no tensor result)"),
    rule(OpCode::Add, nullptr, add_backward),
    rule(OpCode::Sub, nullptr, sub_backward),
    rule(OpCode::Mul, save_other, mul_backward),
    rule(OpCode::Div, save_div, div_backward),
    rule(OpCode::AddScalar, nullptr, identity_backward),
    rule(OpCode::SubScalar, nullptr, identity_backward),
    rule(OpCode::RSubScalar, nullptr, neg_backward),
    rule(OpCode::MulScalar, nullptr, mul_scalar_backward),
    rule(OpCode::DivScalar, nullptr, div_scalar_backward),
    rule(OpCode::RDivScalar, save_input0, rdiv_scalar_backward),
    rule(OpCode::Neg, nullptr, neg_backward),
    rule(OpCode::Exp, save_output, exp_backward),
    rule(OpCode::Log, save_input0, log_backward),
    rule(OpCode::Sqrt, save_output, sqrt_backward),
    rule(OpCode::Relu, save_output, relu_backward),
    rule(OpCode::Sigmoid, save_output, sigmoid_backward),
    rule(OpCode::Tanh, save_output, tanh_backward),
    rule(OpCode::Matmul, save_other, matmul_backward),
    rule(OpCode::Sum, nullptr, sum_backward),
    rule(OpCode::Mean, nullptr, mean_backward),
    rule(OpCode::Reshape, nullptr, reshape_backward),
    rule(OpCode::View, nullptr, reshape_backward),
    rule(OpCode::Transpose, nullptr, transpose_backward),
    rule(OpCode::Slice, nullptr, slice_backward),
    rule(OpCode::AddInplace, nullptr, add_backward),
    rule(OpCode::AddScalarInplace, nullptr, identity_backward),
    rule(OpCode::SubInplace, nullptr, sub_backward),
    rule(OpCode::SubScalarInplace, nullptr, identity_backward),
    rule(OpCode::MulInplace, save_other, mul_inplace_backward),
    rule(OpCode::MulScalarInplace, nullptr, mul_scalar_backward),
    rule(OpCode::ZeroInplace, nullptr, zero_inplace_backward),
    rule(OpCode::Rsqrt, save_output, rsqrt_backward),
    rule(OpCode::Abs, save_input0, abs_backward),
    rule(OpCode::Sign, nullptr, sign_backward),
    rule(OpCode::Pow, save_pow, pow_backward),
    rule(OpCode::PowScalar, save_input0, pow_scalar_backward),
    rule(OpCode::RPowScalar, save_input0_output, rpow_scalar_backward),
    rule(OpCode::Gelu, save_input0, gelu_backward_rule),
    rule(OpCode::Softmax, save_output, softmax_backward),
    rule(OpCode::LogSoftmax, save_output, log_softmax_backward),
    rule(OpCode::Amax, save_input0_output, extremum_backward),
    rule(OpCode::Amin, save_input0_output, extremum_backward),
    none(OpCode::Argmax, "integer indices"),
    none(OpCode::Lt, kComparison),
    none(OpCode::Le, kComparison),
    none(OpCode::Gt, kComparison),
    none(OpCode::Ge, kComparison),
    none(OpCode::Eq, kComparison),
    none(OpCode::Ne, kComparison),
    none(OpCode::LtScalar, kComparison),
    none(OpCode::LeScalar, kComparison),
    none(OpCode::GtScalar, kComparison),
    none(OpCode::GeScalar, kComparison),
    none(OpCode::EqScalar, kComparison),
    none(OpCode::NeScalar, kComparison),
    rule(OpCode::Where, save_input0, where_backward),
    rule(OpCode::Cat, nullptr, cat_backward),
    rule(OpCode::Stack, nullptr, stack_backward),
    rule(OpCode::Unsqueeze, nullptr, reshape_backward),
    rule(OpCode::Squeeze, nullptr, reshape_backward),
    rule(OpCode::Permute, nullptr, permute_backward),
    rule(OpCode::Expand, nullptr, expand_backward),
    rule(OpCode::To, nullptr, to_backward),
    rule(OpCode::CopyInplace, nullptr, copy_inplace_backward),
    none(OpCode::Alias, "used by detach(), which cuts the history"),
    rule(OpCode::Gather, save_input1, gather_backward),
    rule(OpCode::IndexSelect, save_input1, index_select_backward),
    none(OpCode::GeluBackward, "backward helper (higher-order gradients are not recorded)"),
    rule(OpCode::SliceScatter, nullptr, slice_scatter_backward),
    rule(OpCode::ScatterAdd, save_input1, scatter_add_backward),
    rule(OpCode::IndexAdd, save_input1, index_add_backward),
    rule(OpCode::AddcmulInplace, save_addcmul, addcmul_backward),
    rule(OpCode::AddcdivInplace, save_addcdiv, addcdiv_backward),
};

static_assert(std::size(kRules) == kNumOps, "one backward rule row per OpCode");

constexpr bool rules_complete() {
  for (size_t i = 0; i < std::size(kRules); ++i) {
    const BackwardRule& r = kRules[i];
    if (static_cast<size_t>(r.op) != i) return false;  // rows in OpCode order
    if (r.differentiable != (r.backward != nullptr)) return false;
    if (!r.differentiable && r.not_differentiable_because.empty()) return false;
  }
  return true;
}
static_assert(rules_complete(),
              "backward rules must be in OpCode order; differentiable rows need a backward "
              "function, the others a reason");

}  // namespace

const BackwardRule& backward_rule(OpCode op) { return kRules[static_cast<size_t>(op)]; }

}  // namespace gt::client
