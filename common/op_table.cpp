#include "common/op_table.h"

#include <algorithm>
#include <cmath>

#include "common/check.h"
#include "common/dtype_rules.h"

namespace gt {
namespace {

using Metas = std::vector<TensorMeta>;

const TensorMeta& in(const OpCall& c, size_t i) { return c.inputs[i]; }

bool scalar_is_floating(const OpCall& c) { return !c.floats.empty(); }

void check_one_scalar(const OpCall& c) {
  GT_CHECK(c.ints.size() + c.floats.size() == 1,
           "expected exactly one number operand, got ", c.ints.size() + c.floats.size());
}

// ---- creation -------------------------------------------------------------

Metas infer_filled(const OpCall& c) {
  checked_numel(c.ints);
  return {{Shape(c.ints.begin(), c.ints.end()), c.dtype}};
}

Metas infer_random(const OpCall& c) {
  GT_CHECK(is_floating(c.dtype), "expected a floating dtype, got ", to_string(c.dtype));
  return infer_filled(c);
}

Metas infer_full(const OpCall& c) { return infer_filled(c); }

Metas infer_arange(const OpCall& c) {
  const double start = c.floats[0], end = c.floats[1], step = c.floats[2];
  GT_CHECK(std::isfinite(start) && std::isfinite(end) && std::isfinite(step),
           "expected finite start, end and step, got ", start, ", ", end, ", ", step);
  GT_CHECK(step != 0, "step must be nonzero");
  GT_CHECK((step > 0 && end >= start) || (step < 0 && end <= start),
           "upper bound and lower bound inconsistent with step sign: start ", start,
           ", end ", end, ", step ", step);
  GT_CHECK(c.dtype != DType::Bool, "arange does not produce bool tensors");
  const double n = std::ceil((end - start) / step);
  GT_CHECK(n < static_cast<double>(kMaxNumel), "arange of ", n, " elements is too large");
  return {{Shape{static_cast<int64_t>(n)}, c.dtype}};
}

Metas infer_control(const OpCall&) { return {}; }

// ---- elementwise ------------------------------------------------------------

Metas infer_binary(const OpCall& c) {
  const auto& a = in(c, 0);
  const auto& b = in(c, 1);
  Shape shape = broadcast_shapes(a.shape, b.shape);
  const DType t = result_type(a.dtype, a.shape.size(), b.dtype, b.shape.size());
  return {{std::move(shape), t}};
}

Metas infer_sub(const OpCall& c) {
  GT_CHECK(in(c, 0).dtype != DType::Bool && in(c, 1).dtype != DType::Bool,
           "subtraction with a bool tensor is not supported; use logical ops instead");
  return infer_binary(c);
}

Metas infer_div(const OpCall& c) {
  auto out = infer_binary(c);
  if (!is_floating(out[0].dtype)) out[0].dtype = DType::Float32;  // true division
  return out;
}

Metas infer_scalar(const OpCall& c) {
  check_one_scalar(c);
  return {{in(c, 0).shape, result_type_scalar(in(c, 0).dtype, scalar_is_floating(c))}};
}

Metas infer_sub_scalar(const OpCall& c) {
  GT_CHECK(in(c, 0).dtype != DType::Bool,
           "subtraction with a bool tensor is not supported");
  return infer_scalar(c);
}

Metas infer_div_scalar(const OpCall& c) {
  auto out = infer_scalar(c);
  if (!is_floating(out[0].dtype)) out[0].dtype = DType::Float32;
  return out;
}

Metas infer_neg(const OpCall& c) {
  GT_CHECK(in(c, 0).dtype != DType::Bool, "negation of a bool tensor is not supported");
  return {in(c, 0)};
}

Metas infer_float_unary(const OpCall& c) {
  const auto& a = in(c, 0);
  return {{a.shape, is_floating(a.dtype) ? a.dtype : DType::Float32}};
}

Metas infer_relu(const OpCall& c) {
  GT_CHECK(in(c, 0).dtype != DType::Bool, "relu of a bool tensor is not supported");
  return {in(c, 0)};
}

// ---- linear algebra -----------------------------------------------------------

Metas infer_matmul(const OpCall& c) {
  const auto& a = in(c, 0);
  const auto& b = in(c, 1);
  GT_CHECK(a.dtype == b.dtype, "expected both operands to have the same dtype, got lhs ",
           to_string(a.dtype), ", rhs ", to_string(b.dtype));
  GT_CHECK(a.dtype != DType::Bool, "matmul of bool tensors is not supported");
  GT_CHECK(!a.shape.empty() && !b.shape.empty(),
           "both operands need at least one dimension, got lhs ", shape_str(a.shape),
           ", rhs ", shape_str(b.shape));
  // Lift 1-D operands to matrices as torch.matmul does, then drop the added dim.
  Shape sa = a.shape, sb = b.shape;
  const bool a_vec = sa.size() == 1, b_vec = sb.size() == 1;
  if (a_vec) sa.insert(sa.begin(), 1);
  if (b_vec) sb.push_back(1);
  const int64_t k_a = sa.back(), k_b = sb[sb.size() - 2];
  GT_CHECK(k_a == k_b, "inner dims differ: lhs ", shape_str(a.shape), ", rhs ",
           shape_str(b.shape));
  Shape batch = broadcast_shapes(std::span(sa).first(sa.size() - 2),
                                 std::span(sb).first(sb.size() - 2));
  if (!a_vec) batch.push_back(sa[sa.size() - 2]);
  if (!b_vec) batch.push_back(sb.back());
  return {{std::move(batch), a.dtype}};
}

// ---- reductions -------------------------------------------------------------------

// ints = [keepdim, dims...]; no dims = reduce everything.
Shape reduced_shape(const OpCall& c) {
  const Shape& s = in(c, 0).shape;
  const int64_t rank = s.size();
  const bool keepdim = c.ints[0] != 0;
  std::vector<bool> reduce(std::max<int64_t>(rank, 1), c.ints.size() == 1);
  for (size_t i = 1; i < c.ints.size(); ++i) {
    const int64_t d = wrap_dim(c.ints[i], rank);
    GT_CHECK(!reduce[d] || c.ints.size() == 1, "dim ", c.ints[i],
             " appears more than once in the reduction dims");
    reduce[d] = true;
  }
  Shape out;
  for (int64_t d = 0; d < rank; ++d) {
    if (!reduce[d]) out.push_back(s[d]);
    else if (keepdim) out.push_back(1);
  }
  return out;
}

Metas infer_sum(const OpCall& c) {
  const DType t = in(c, 0).dtype;
  return {{reduced_shape(c), is_floating(t) ? t : DType::Int64}};
}

Metas infer_mean(const OpCall& c) {
  const DType t = in(c, 0).dtype;
  GT_CHECK(is_floating(t), "mean needs a floating dtype, got ", to_string(t),
           "; convert with .to(gt::kFloat32) first");
  return {{reduced_shape(c), t}};
}

// ---- shape --------------------------------------------------------------------------

Metas infer_reshape(const OpCall& c) {
  const auto& a = in(c, 0);
  const int64_t total = numel(a.shape);
  GT_CHECK(static_cast<int64_t>(c.ints.size()) <= kMaxRank, "rank ", c.ints.size(),
           " exceeds the maximum of ", kMaxRank);
  Shape out(c.ints.begin(), c.ints.end());
  int64_t known = 1, infer_at = -1;
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i] == -1) {
      GT_CHECK(infer_at < 0, "only one dimension can be -1 in shape ", shape_str(out));
      infer_at = i;
    } else {
      GT_CHECK(out[i] >= 0, "invalid dimension ", out[i], " in shape ", shape_str(out));
      known *= out[i];
    }
  }
  if (infer_at >= 0) {
    GT_CHECK(known != 0 && total % known == 0, "shape ", shape_str(out),
             " is invalid for input of size ", total, " with shape ", shape_str(a.shape));
    out[infer_at] = total / known;
  } else {
    GT_CHECK(known == total, "shape ", shape_str(out), " is invalid for input of size ",
             total, " with shape ", shape_str(a.shape));
  }
  return {{std::move(out), a.dtype}};
}

Metas infer_transpose(const OpCall& c) {
  const auto& a = in(c, 0);
  const int64_t rank = a.shape.size();
  const int64_t d0 = wrap_dim(c.ints[0], rank), d1 = wrap_dim(c.ints[1], rank);
  Shape out = a.shape;
  if (rank > 0) std::swap(out[d0], out[d1]);
  return {{std::move(out), a.dtype}};
}

// ints = [dim, start, end, step] with Python's slicing rules (negative and
// out-of-range bounds clamp; step must be positive).
Metas infer_slice(const OpCall& c) {
  const auto& a = in(c, 0);
  GT_CHECK(!a.shape.empty(), "cannot slice a 0-dim tensor");
  const int64_t dim = wrap_dim(c.ints[0], a.shape.size());
  const int64_t step = c.ints[3];
  GT_CHECK(step > 0, "slice step must be positive, got ", step);
  const int64_t size = a.shape[dim];
  int64_t start = c.ints[1], end = c.ints[2];
  if (start < 0) start += size;
  if (end < 0) end += size;
  start = std::clamp<int64_t>(start, 0, size);
  end = std::clamp<int64_t>(end, start, size);
  Shape out = a.shape;
  out[dim] = (end - start + step - 1) / step;
  return {{std::move(out), a.dtype}};
}

// ---- in-place -----------------------------------------------------------------------

void check_inplace(const TensorMeta& self, const Shape& shape, DType t) {
  GT_CHECK(shape == self.shape, "in-place result shape ", shape_str(shape),
           " differs from the tensor's shape ", shape_str(self.shape));
  GT_CHECK(can_cast(t, self.dtype), "result dtype ", to_string(t),
           " can't be cast to the in-place tensor's dtype ", to_string(self.dtype));
}

Metas infer_inplace_binary(const OpCall& c) {
  auto out = infer_binary(c);
  check_inplace(in(c, 0), out[0].shape, out[0].dtype);
  return {};
}

Metas infer_inplace_sub(const OpCall& c) {
  infer_sub(c);
  return infer_inplace_binary(c);
}

Metas infer_inplace_scalar(const OpCall& c) {
  auto out = infer_scalar(c);
  check_inplace(in(c, 0), out[0].shape, out[0].dtype);
  return {};
}

Metas infer_inplace_sub_scalar(const OpCall& c) {
  infer_sub_scalar(c);
  return infer_inplace_scalar(c);
}

Metas infer_zero(const OpCall&) { return {}; }

constexpr int kAny = -1;
constexpr const char* kShapeAttr = "shape...";
constexpr const char* kScalarAttr = "one number: ints[0] (integral) or floats[0]";

// Rows indexed by code. Columns: code, name, arity, outputs, ints min/max,
// floats min/max, kind, elementwise, attribute layout, shape rule.
constexpr OpInfo kOps[] = {
    {OpCode::Randn, "randn", 0, 1, 0, kAny, 0, 0, OpKind::Creation, false, kShapeAttr, infer_random},
    {OpCode::Rand, "rand", 0, 1, 0, kAny, 0, 0, OpKind::Creation, false, kShapeAttr, infer_random},
    {OpCode::Zeros, "zeros", 0, 1, 0, kAny, 0, 0, OpKind::Creation, false, kShapeAttr, infer_filled},
    {OpCode::Ones, "ones", 0, 1, 0, kAny, 0, 0, OpKind::Creation, false, kShapeAttr, infer_filled},
    {OpCode::Full, "full", 0, 1, 0, kAny, 1, 1, OpKind::Creation, false, "shape...; floats: value", infer_full},
    {OpCode::Arange, "arange", 0, 1, 0, 0, 3, 3, OpKind::Creation, false, "floats: start, end, step", infer_arange},
    {OpCode::FromData, "tensor", 0, 1, 0, kAny, 0, 0, OpKind::Creation, false, "shape...; data in payload frame", infer_filled},
    {OpCode::ManualSeed, "manual_seed", 0, 0, 1, 1, 0, 0, OpKind::Control, false, "seed", infer_control},
    {OpCode::Add, "add", 2, 1, 0, 0, 0, 0, OpKind::Elementwise, true, "", infer_binary},
    {OpCode::Sub, "sub", 2, 1, 0, 0, 0, 0, OpKind::Elementwise, true, "", infer_sub},
    {OpCode::Mul, "mul", 2, 1, 0, 0, 0, 0, OpKind::Elementwise, true, "", infer_binary},
    {OpCode::Div, "div", 2, 1, 0, 0, 0, 0, OpKind::Elementwise, true, "", infer_div},
    {OpCode::AddScalar, "add_scalar", 1, 1, 0, 1, 0, 1, OpKind::Elementwise, true, kScalarAttr, infer_scalar},
    {OpCode::SubScalar, "sub_scalar", 1, 1, 0, 1, 0, 1, OpKind::Elementwise, true, kScalarAttr, infer_sub_scalar},
    {OpCode::RSubScalar, "rsub_scalar", 1, 1, 0, 1, 0, 1, OpKind::Elementwise, true, kScalarAttr, infer_sub_scalar},
    {OpCode::MulScalar, "mul_scalar", 1, 1, 0, 1, 0, 1, OpKind::Elementwise, true, kScalarAttr, infer_scalar},
    {OpCode::DivScalar, "div_scalar", 1, 1, 0, 1, 0, 1, OpKind::Elementwise, true, kScalarAttr, infer_div_scalar},
    {OpCode::RDivScalar, "rdiv_scalar", 1, 1, 0, 1, 0, 1, OpKind::Elementwise, true, kScalarAttr, infer_div_scalar},
    {OpCode::Neg, "neg", 1, 1, 0, 0, 0, 0, OpKind::Elementwise, true, "", infer_neg},
    {OpCode::Exp, "exp", 1, 1, 0, 0, 0, 0, OpKind::Elementwise, true, "", infer_float_unary},
    {OpCode::Log, "log", 1, 1, 0, 0, 0, 0, OpKind::Elementwise, true, "", infer_float_unary},
    {OpCode::Sqrt, "sqrt", 1, 1, 0, 0, 0, 0, OpKind::Elementwise, true, "", infer_float_unary},
    {OpCode::Relu, "relu", 1, 1, 0, 0, 0, 0, OpKind::Elementwise, true, "", infer_relu},
    {OpCode::Sigmoid, "sigmoid", 1, 1, 0, 0, 0, 0, OpKind::Elementwise, true, "", infer_float_unary},
    {OpCode::Tanh, "tanh", 1, 1, 0, 0, 0, 0, OpKind::Elementwise, true, "", infer_float_unary},
    {OpCode::Matmul, "matmul", 2, 1, 0, 0, 0, 0, OpKind::Linalg, false, "", infer_matmul},
    {OpCode::Sum, "sum", 1, 1, 1, kAny, 0, 0, OpKind::Reduction, false, "keepdim, dims... (none = all)", infer_sum},
    {OpCode::Mean, "mean", 1, 1, 1, kAny, 0, 0, OpKind::Reduction, false, "keepdim, dims... (none = all)", infer_mean},
    {OpCode::Reshape, "reshape", 1, 1, 0, kAny, 0, 0, OpKind::Shape, false, "shape... (one -1 allowed)", infer_reshape},
    {OpCode::View, "view", 1, 1, 0, kAny, 0, 0, OpKind::Shape, false, "shape... (one -1 allowed)", infer_reshape},
    {OpCode::Transpose, "transpose", 1, 1, 2, 2, 0, 0, OpKind::Shape, false, "dim0, dim1", infer_transpose},
    {OpCode::Slice, "slice", 1, 1, 4, 4, 0, 0, OpKind::Shape, false, "dim, start, end, step", infer_slice},
    {OpCode::AddInplace, "add_", 2, 0, 0, 0, 0, 0, OpKind::Inplace, false, "", infer_inplace_binary},
    {OpCode::AddScalarInplace, "add_scalar_", 1, 0, 0, 1, 0, 1, OpKind::Inplace, false, kScalarAttr, infer_inplace_scalar},
    {OpCode::SubInplace, "sub_", 2, 0, 0, 0, 0, 0, OpKind::Inplace, false, "", infer_inplace_sub},
    {OpCode::SubScalarInplace, "sub_scalar_", 1, 0, 0, 1, 0, 1, OpKind::Inplace, false, kScalarAttr, infer_inplace_sub_scalar},
    {OpCode::MulInplace, "mul_", 2, 0, 0, 0, 0, 0, OpKind::Inplace, false, "", infer_inplace_binary},
    {OpCode::MulScalarInplace, "mul_scalar_", 1, 0, 0, 1, 0, 1, OpKind::Inplace, false, kScalarAttr, infer_inplace_scalar},
    {OpCode::ZeroInplace, "zero_", 1, 0, 0, 0, 0, 0, OpKind::Inplace, false, "", infer_zero},
};

static_assert(std::size(kOps) == kNumOps, "one op table row per OpCode");

constexpr bool rows_in_code_order() {
  for (size_t i = 0; i < std::size(kOps); ++i) {
    if (static_cast<size_t>(kOps[i].code) != i) return false;
  }
  return true;
}
static_assert(rows_in_code_order(), "op table rows must be in OpCode order");

}  // namespace

const OpInfo* find_op(uint16_t code) {
  return code < kNumOps ? &kOps[code] : nullptr;
}

const OpInfo& op_info(OpCode code) { return kOps[static_cast<uint16_t>(code)]; }

std::span<const OpInfo> all_ops() { return kOps; }

std::vector<TensorMeta> infer(const OpInfo& op, const OpCall& call) {
  const int n_in = call.inputs.size();
  GT_CHECK(op.arity < 0 ? n_in >= 1 : n_in == op.arity, op.name, ": expected ",
           op.arity < 0 ? "one or more" : std::to_string(op.arity), " tensor inputs, got ",
           n_in);
  const int max_ints = op.max_ints == kAny ? kMaxRank + 2 : op.max_ints;
  const int n_ints = call.ints.size(), n_floats = call.floats.size();
  GT_CHECK(n_ints >= op.min_ints && n_ints <= max_ints, op.name, ": expected ",
           op.min_ints, "..", max_ints, " integer attributes (", op.attr_doc, "), got ",
           n_ints);
  GT_CHECK(n_floats >= op.min_floats && n_floats <= op.max_floats, op.name,
           ": expected ", op.min_floats, "..", op.max_floats, " float attributes (",
           op.attr_doc, "), got ", n_floats);
  for (const auto& t : call.inputs) {
    GT_CHECK(static_cast<int64_t>(t.shape.size()) <= kMaxRank, op.name, ": input rank ",
             t.shape.size(), " exceeds ", kMaxRank);
  }
  try {
    auto out = op.infer(call);
    for (const auto& t : out) checked_numel(t.shape);  // e.g. huge matmul/broadcast results
    return out;
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(std::string(op.name) + ": " + e.what());
  }
}

}  // namespace gt
