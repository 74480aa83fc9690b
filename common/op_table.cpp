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
      // Bounded as checked_numel bounds shapes, so the product cannot
      // overflow (found by tests/fuzz: (2^40, 2^40) wrapped around).
      GT_CHECK(out[i] == 0 || known <= kMaxNumel / out[i], "shape ", shape_str(out),
               " has more than 2^48 elements");
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
  // Not (end - start + step - 1) / step: that overflows for a step near
  // INT64_MAX (found by tests/fuzz).
  out[dim] = end == start ? 0 : (end - start - 1) / step + 1;
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

// add_/sub_ with an optional alpha (ints[0] or floats[0]; none = 1): self op= alpha * other.
Metas infer_inplace_alpha(const OpCall& c) {
  GT_CHECK(c.ints.size() + c.floats.size() <= 1, "expected at most one alpha, got ",
           c.ints.size() + c.floats.size());
  GT_CHECK(c.floats.empty() || is_floating(in(c, 0).dtype),
           "for integral input tensors, alpha must not be a floating point number: self ",
           shape_str(in(c, 0).shape), " ", to_string(in(c, 0).dtype));
  return infer_inplace_binary(c);
}

Metas infer_inplace_sub(const OpCall& c) {
  infer_sub(c);
  return infer_inplace_alpha(c);
}

// addcmul_/addcdiv_: inputs self, t1, t2 (t1 and t2 broadcast to self); one
// number operand. Floating tensors only (LibTorch refuses integer addcdiv).
Metas infer_addc(const OpCall& c) {
  check_one_scalar(c);
  const auto& self = in(c, 0);
  for (size_t i = 0; i < 3; ++i) {
    GT_CHECK(is_floating(in(c, i).dtype), "expected floating tensors, got ",
             to_string(in(c, i).dtype), " for input ", i, " of shape ", shape_str(in(c, i).shape));
  }
  const Shape operands = broadcast_shapes(in(c, 1).shape, in(c, 2).shape);
  const DType t = result_type(in(c, 1).dtype, in(c, 1).shape.size(), in(c, 2).dtype,
                              in(c, 2).shape.size());
  check_inplace(self, broadcast_shapes(self.shape, operands), t);
  return {};
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

// inputs: self, src; src broadcasts to self's shape and is cast to its dtype
// (any dtype to any dtype, as copy_ does).
Metas infer_copy(const OpCall& c) {
  const auto& self = in(c, 0);
  const auto& src = in(c, 1);
  bool ok = src.shape.size() <= self.shape.size();
  for (size_t i = 1; ok && i <= src.shape.size(); ++i) {
    const int64_t s = src.shape[src.shape.size() - i];
    ok = s == 1 || s == self.shape[self.shape.size() - i];
  }
  GT_CHECK(ok, "source shape ", shape_str(src.shape), " cannot be broadcast to the tensor's shape ",
           shape_str(self.shape));
  return {};
}

// ---- protocol version 2: elementwise ----------------------------------------------

Metas infer_same(const OpCall& c) { return {in(c, 0)}; }

Metas infer_abs(const OpCall& c) {
  GT_CHECK(in(c, 0).dtype != DType::Bool, "abs of a bool tensor is not supported");
  return {in(c, 0)};
}

// gelu: floating tensors only (LibTorch has no integral or bool kernel).
Metas infer_floating_same(const OpCall& c) {
  const auto& a = in(c, 0);
  GT_CHECK(is_floating(a.dtype), "expected a floating dtype, got ", to_string(a.dtype),
           " (shape ", shape_str(a.shape), "); convert with .to(gt::kFloat32) first");
  return {a};
}

Metas infer_pow(const OpCall& c) {
  auto out = infer_binary(c);
  GT_CHECK(out[0].dtype != DType::Bool, "pow of bool tensors is not supported: base ",
           shape_str(in(c, 0).shape), " bool, exponent ", shape_str(in(c, 1).shape), " bool");
  return out;
}

// tensor ** number: an integral (or bool) tensor with a negative integral
// exponent is an error in LibTorch, whatever the values.
Metas infer_pow_scalar(const OpCall& c) {
  check_one_scalar(c);
  const auto& a = in(c, 0);
  GT_CHECK(is_floating(a.dtype) || !c.floats.empty() || c.ints[0] >= 0,
           "integers to negative integer powers are not allowed: ", to_string(a.dtype),
           " tensor of shape ", shape_str(a.shape), " to the power ", c.ints.empty() ? 0 : c.ints[0]);
  return {{a.shape, result_type_scalar(a.dtype, scalar_is_floating(c))}};
}

Metas infer_compare(const OpCall& c) {
  return {{broadcast_shapes(in(c, 0).shape, in(c, 1).shape), DType::Bool}};
}

Metas infer_compare_scalar(const OpCall& c) {
  check_one_scalar(c);
  return {{in(c, 0).shape, DType::Bool}};
}

// inputs: condition (bool), self, other; all three broadcast.
Metas infer_where(const OpCall& c) {
  const auto& cond = in(c, 0);
  const auto& a = in(c, 1);
  const auto& b = in(c, 2);
  GT_CHECK(cond.dtype == DType::Bool, "expected the condition to be a bool tensor, got ",
           to_string(cond.dtype), " (shape ", shape_str(cond.shape), ")");
  Shape shape;
  try {
    shape = broadcast_shapes(broadcast_shapes(cond.shape, a.shape), b.shape);
  } catch (const std::invalid_argument&) {
    GT_CHECK(false, "shapes cannot be broadcast: condition ", shape_str(cond.shape), ", self ",
             shape_str(a.shape), ", other ", shape_str(b.shape));
  }
  return {{std::move(shape), result_type(a.dtype, a.shape.size(), b.dtype, b.shape.size())}};
}

Metas infer_to(const OpCall& c) { return {{in(c, 0).shape, c.dtype}}; }

// inputs: grad, self (same shape; floating).
Metas infer_gelu_backward(const OpCall& c) {
  const auto& g = in(c, 0);
  const auto& x = in(c, 1);
  GT_CHECK(is_floating(g.dtype) && is_floating(x.dtype),
           "expected floating dtypes, got grad ", to_string(g.dtype), ", self ",
           to_string(x.dtype));
  GT_CHECK(g.shape == x.shape, "grad and self must have the same shape: grad ",
           shape_str(g.shape), ", self ", shape_str(x.shape));
  return {{x.shape, promote_types(g.dtype, x.dtype)}};
}

// ---- softmax ------------------------------------------------------------------------

Metas infer_softmax(const OpCall& c) {
  auto out = infer_floating_same(c);
  wrap_dim(c.ints[0], out[0].shape.size());
  return out;
}

// ---- protocol version 2: reductions ---------------------------------------------------

// amax/amin: ints = [keepdim, dims...]; no dims = every dim. A reduced dim must
// not be empty (there is no identity for max).
Metas infer_extremum(const OpCall& c) {
  const auto& a = in(c, 0);
  if (c.ints.size() == 1) {
    GT_CHECK(numel(a.shape) > 0, "expected a non-empty tensor when reducing every dim, got shape ",
             shape_str(a.shape), "; name the dims to reduce");
  }
  for (size_t i = 1; i < c.ints.size() && !a.shape.empty(); ++i) {
    const int64_t d = wrap_dim(c.ints[i], a.shape.size());
    GT_CHECK(a.shape[d] != 0, "expected reduction dim ", d, " to have non-zero size, got shape ",
             shape_str(a.shape));
  }
  return {{reduced_shape(c), a.dtype}};
}

// ints = [keepdim] (flattened: 0-dim result, or all ones with keepdim) or
// [keepdim, dim].
Metas infer_argmax(const OpCall& c) {
  const auto& a = in(c, 0);
  GT_CHECK(a.dtype != DType::Bool, "argmax of a bool tensor is not supported");
  const bool keepdim = c.ints[0] != 0;
  const int64_t rank = a.shape.size();
  if (c.ints.size() == 1) {
    GT_CHECK(numel(a.shape) > 0, "expected a non-empty tensor when no dim is given, got shape ",
             shape_str(a.shape));
    return {{keepdim ? Shape(rank, 1) : Shape{}, DType::Int64}};
  }
  const int64_t d = wrap_dim(c.ints[1], rank);
  Shape out = a.shape;
  if (rank > 0) {
    GT_CHECK(a.shape[d] != 0, "expected reduction dim ", d, " to have non-zero size, got shape ",
             shape_str(a.shape));
    if (keepdim) {
      out[d] = 1;
    } else {
      out.erase(out.begin() + d);
    }
  }
  return {{std::move(out), DType::Int64}};
}

// ---- protocol version 2: joining and shape ---------------------------------------------

// ints = [dim]. LibTorch's rules: every tensor has rank >= 1; 1-D empty
// tensors (shape (0)) are skipped by the shape checks (legacy); the others
// agree on every dim but `dim`; the dtype promotes over all inputs.
Metas infer_cat(const OpCall& c) {
  DType t = in(c, 0).dtype;
  const TensorMeta* ref = nullptr;
  auto legacy_empty = [](const TensorMeta& m) { return m.shape.size() == 1 && m.shape[0] == 0; };
  for (size_t i = 0; i < c.inputs.size(); ++i) {
    const auto& x = c.inputs[i];
    t = promote_types(t, x.dtype);
    GT_CHECK(!x.shape.empty(), "zero-dimensional tensor (at position ", i,
             ") cannot be concatenated");
    if (!ref && !legacy_empty(x)) ref = &x;
  }
  if (!ref) {
    wrap_dim(c.ints[0], 1);
    return {{Shape{0}, t}};
  }
  const size_t rank = ref->shape.size();
  const int64_t d = wrap_dim(c.ints[0], rank);
  Shape out = ref->shape;
  out[d] = 0;
  for (size_t i = 0; i < c.inputs.size(); ++i) {
    const auto& x = c.inputs[i];
    if (legacy_empty(x)) continue;
    GT_CHECK(x.shape.size() == rank, "tensors must have the same number of dimensions: got ",
             shape_str(ref->shape), " and ", shape_str(x.shape), " (tensor ", i, ")");
    for (size_t k = 0; k < rank; ++k) {
      GT_CHECK(static_cast<int64_t>(k) == d || x.shape[k] == ref->shape[k],
               "sizes of tensors must match except in dimension ", d, ": expected size ",
               ref->shape[k], " but got size ", x.shape[k], " for tensor number ", i,
               " in the list (shapes ", shape_str(ref->shape), " and ", shape_str(x.shape), ")");
    }
    out[d] += x.shape[d];
  }
  return {{std::move(out), t}};
}

// ints = [dim]: every tensor has the same shape; dim ranges over rank + 1.
Metas infer_stack(const OpCall& c) {
  const auto& first = in(c, 0);
  DType t = first.dtype;
  for (size_t i = 1; i < c.inputs.size(); ++i) {
    const auto& x = c.inputs[i];
    GT_CHECK(x.shape == first.shape, "expected each tensor to be equal size, but got ",
             shape_str(first.shape), " at entry 0 and ", shape_str(x.shape), " at entry ", i);
    t = promote_types(t, x.dtype);
  }
  const int64_t d = wrap_dim(c.ints[0], first.shape.size() + 1);
  Shape out = first.shape;
  out.insert(out.begin() + d, static_cast<int64_t>(c.inputs.size()));
  return {{std::move(out), t}};
}

Metas infer_unsqueeze(const OpCall& c) {
  const auto& a = in(c, 0);
  const int64_t d = wrap_dim(c.ints[0], a.shape.size() + 1);
  Shape out = a.shape;
  out.insert(out.begin() + d, 1);
  return {{std::move(out), a.dtype}};
}

// ints = [] (drop every size-1 dim) or [dim] (drop it if its size is 1).
Metas infer_squeeze(const OpCall& c) {
  const auto& a = in(c, 0);
  Shape out;
  if (c.ints.empty()) {
    for (int64_t s : a.shape) {
      if (s != 1) out.push_back(s);
    }
  } else {
    const int64_t d = wrap_dim(c.ints[0], a.shape.size());
    out = a.shape;
    if (!out.empty() && out[d] == 1) out.erase(out.begin() + d);
  }
  return {{std::move(out), a.dtype}};
}

Metas infer_permute(const OpCall& c) {
  const auto& a = in(c, 0);
  const size_t rank = a.shape.size();
  GT_CHECK(c.ints.size() == rank, "the permutation ", shape_str(c.ints), " has ", c.ints.size(),
           " dims but the tensor of shape ", shape_str(a.shape), " has ", rank);
  Shape out(rank);
  std::vector<bool> seen(rank);
  for (size_t i = 0; i < rank; ++i) {
    const int64_t d = wrap_dim(c.ints[i], rank);
    GT_CHECK(!seen[d], "dim ", d, " appears more than once in the permutation ",
             shape_str(c.ints));
    seen[d] = true;
    out[i] = a.shape[d];
  }
  return {{std::move(out), a.dtype}};
}

// ints = target shape: -1 keeps an existing dim, new dims may only be added in
// front, and only size-1 dims change size.
Metas infer_expand(const OpCall& c) {
  const auto& a = in(c, 0);
  const size_t n = c.ints.size(), rank = a.shape.size();
  GT_CHECK(n >= rank, "the target shape ", shape_str(c.ints), " has fewer dims than the tensor's ",
           shape_str(a.shape));
  const size_t lead = n - rank;
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    const int64_t want = c.ints[i];
    if (i < lead) {
      GT_CHECK(want >= 0, "the expanded size ", want,
               " isn't allowed in a leading, non-existing dimension ", i, " (target ",
               shape_str(c.ints), ", tensor ", shape_str(a.shape), ")");
      out[i] = want;
      continue;
    }
    const int64_t have = a.shape[i - lead];
    if (want == -1) {
      out[i] = have;
      continue;
    }
    GT_CHECK(want >= 0 && (have == 1 || want == have), "the expanded size ", want,
             " must match the existing size ", have, " at non-singleton dimension ", i,
             " (target ", shape_str(c.ints), ", tensor ", shape_str(a.shape), ")");
    out[i] = want;
  }
  // A view, but its size reaches every numel() downstream (the dispatcher's
  // layouts, the worker's capacity check): bounded like any shape.
  checked_numel(out);
  return {{std::move(out), a.dtype}};
}

// ---- protocol version 2: indexing --------------------------------------------------------

// Rank and sizes as LibTorch's index checks see them: a 0-dim tensor counts as
// one element in one dim.
int64_t nonempty_rank(const Shape& s) { return std::max<int64_t>(s.size(), 1); }
int64_t nonempty_size(const Shape& s, int64_t d) { return s.empty() ? 1 : s[d]; }

void check_index_dtype(const TensorMeta& index, bool int32_ok) {
  GT_CHECK(index.dtype == DType::Int64 || (int32_ok && index.dtype == DType::Int32),
           "expected dtype ", int32_ok ? "int32 or int64" : "int64", " for index, got ",
           to_string(index.dtype), " (shape ", shape_str(index.shape), ")");
}

void check_vector_index(const TensorMeta& index) {
  GT_CHECK(index.shape.size() <= 1, "index must be a vector (0-D or 1-D), got shape ",
           shape_str(index.shape));
}

// gather and scatter_add: index has self's rank and is no larger than self
// outside `dim` (and, for scatter_add, no larger than src anywhere). An empty
// index skips the checks, as in LibTorch.
void check_scatter_gather_shapes(const TensorMeta& self, const TensorMeta& index, int64_t dim,
                                 const TensorMeta* src) {
  if (numel(index.shape) == 0) return;
  const int64_t rank = nonempty_rank(self.shape);
  GT_CHECK(nonempty_rank(index.shape) == rank,
           "index must have the same number of dimensions as self: self ", shape_str(self.shape),
           ", index ", shape_str(index.shape));
  if (src) {
    GT_CHECK(nonempty_rank(src->shape) == rank,
             "index must have the same number of dimensions as src: src ", shape_str(src->shape),
             ", index ", shape_str(index.shape));
  }
  for (int64_t k = 0; k < rank; ++k) {
    const int64_t n = nonempty_size(index.shape, k);
    GT_CHECK(k == dim || n <= nonempty_size(self.shape, k), "index ", shape_str(index.shape),
             " must be no larger than self ", shape_str(self.shape), " apart from dimension ",
             dim);
    GT_CHECK(!src || n <= nonempty_size(src->shape, k), "index ", shape_str(index.shape),
             " must be no larger than src ", shape_str(src->shape));
  }
}

// inputs: self, index (int64); ints = [dim]; the result has index's shape.
Metas infer_gather(const OpCall& c) {
  const auto& self = in(c, 0);
  const auto& index = in(c, 1);
  check_index_dtype(index, false);
  const int64_t d = wrap_dim(c.ints[0], self.shape.size());
  check_scatter_gather_shapes(self, index, d, nullptr);
  return {{index.shape, self.dtype}};
}

// inputs: self, index (int32/int64, 0-D or 1-D); ints = [dim].
Metas infer_index_select(const OpCall& c) {
  const auto& self = in(c, 0);
  const auto& index = in(c, 1);
  check_index_dtype(index, true);
  check_vector_index(index);
  const int64_t d = wrap_dim(c.ints[0], self.shape.size());
  if (self.shape.empty()) {
    // The result of a 0-D self is 0-D, so it picks one value. LibTorch 1.13's
    // CPU kernel writes one per index into that one-element result: a heap
    // overflow in the worker (found by tests/fuzz/executor_fuzz.cpp); later
    // LibTorch versions refuse it as this does.
    GT_CHECK(numel(index.shape) == 1, "index to a 0-D self must have exactly one value, got ",
             numel(index.shape), " (index shape ", shape_str(index.shape), ")");
    return {{Shape{}, self.dtype}};
  }
  Shape out = self.shape;
  out[d] = numel(index.shape);
  return {{std::move(out), self.dtype}};
}

// inputs: self, index (int64), src (self's dtype); ints = [dim].
Metas infer_scatter_add(const OpCall& c) {
  const auto& self = in(c, 0);
  const auto& index = in(c, 1);
  const auto& src = in(c, 2);
  check_index_dtype(index, false);
  GT_CHECK(src.dtype == self.dtype, "expected src to have self's dtype: self ",
           to_string(self.dtype), ", src ", to_string(src.dtype));
  const int64_t d = wrap_dim(c.ints[0], self.shape.size());
  check_scatter_gather_shapes(self, index, d, &src);
  return {self};
}

// inputs: self, index (int32/int64, 0-D or 1-D), source (self's dtype);
// ints = [dim]. source matches self apart from `dim`, where it has one slice
// per index (gt does not broadcast the slices, which LibTorch's CPU kernel
// happens to accept).
Metas infer_index_add(const OpCall& c) {
  const auto& self = in(c, 0);
  const auto& index = in(c, 1);
  const auto& src = in(c, 2);
  check_index_dtype(index, true);
  check_vector_index(index);
  GT_CHECK(src.dtype == self.dtype, "expected source to have self's dtype: self ",
           to_string(self.dtype), ", source ", to_string(src.dtype));
  const int64_t d = wrap_dim(c.ints[0], self.shape.size());
  GT_CHECK(d == 0 || d < static_cast<int64_t>(src.shape.size()), "dim ", d,
           " is out of range for source of shape ", shape_str(src.shape));
  const int64_t n = numel(index.shape);
  const int64_t slices = src.shape.empty() ? 1 : src.shape[d];
  GT_CHECK(n == slices, "the number of indices (", n, ") must equal source.size(", d, ") (",
           slices, "): index ", shape_str(index.shape), ", source ", shape_str(src.shape));
  if (n > 0) {
    const int64_t rank = nonempty_rank(self.shape);
    bool ok = nonempty_rank(src.shape) == rank;
    for (int64_t k = 0; ok && k < rank; ++k) {
      ok = k == d || nonempty_size(src.shape, k) == nonempty_size(self.shape, k);
    }
    GT_CHECK(ok, "source must match self apart from dimension ", d, ": self ",
             shape_str(self.shape), ", source ", shape_str(src.shape));
  }
  return {self};
}

// inputs: base, src; ints = [dim, start, end, step] as for slice. src has the
// slice's shape (any dtype: it is cast to base's).
Metas infer_slice_scatter(const OpCall& c) {
  const auto slice = infer_slice(c);
  const auto& src = in(c, 1);
  GT_CHECK(src.shape == slice[0].shape, "expected src to have the shape of the slice: src ",
           shape_str(src.shape), ", slice ", shape_str(slice[0].shape), " of ",
           shape_str(in(c, 0).shape));
  return {in(c, 0)};
}


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
    {OpCode::AddInplace, "add_", 2, 0, 0, 1, 0, 1, OpKind::Inplace, false, "alpha (optional, default 1): ints[0] (integral) or floats[0]", infer_inplace_alpha},
    {OpCode::AddScalarInplace, "add_scalar_", 1, 0, 0, 1, 0, 1, OpKind::Inplace, false, kScalarAttr, infer_inplace_scalar},
    {OpCode::SubInplace, "sub_", 2, 0, 0, 1, 0, 1, OpKind::Inplace, false, "alpha (optional, default 1): ints[0] (integral) or floats[0]", infer_inplace_sub},
    {OpCode::SubScalarInplace, "sub_scalar_", 1, 0, 0, 1, 0, 1, OpKind::Inplace, false, kScalarAttr, infer_inplace_sub_scalar},
    {OpCode::MulInplace, "mul_", 2, 0, 0, 0, 0, 0, OpKind::Inplace, false, "", infer_inplace_binary},
    {OpCode::MulScalarInplace, "mul_scalar_", 1, 0, 0, 1, 0, 1, OpKind::Inplace, false, kScalarAttr, infer_inplace_scalar},
    {OpCode::ZeroInplace, "zero_", 1, 0, 0, 0, 0, 0, OpKind::Inplace, false, "", infer_zero},
    // protocol version 2
    {OpCode::Rsqrt, "rsqrt", 1, 1, 0, 0, 0, 0, OpKind::Elementwise, true, "", infer_float_unary},
    {OpCode::Abs, "abs", 1, 1, 0, 0, 0, 0, OpKind::Elementwise, true, "", infer_abs},
    {OpCode::Sign, "sign", 1, 1, 0, 0, 0, 0, OpKind::Elementwise, true, "", infer_same},
    {OpCode::Pow, "pow", 2, 1, 0, 0, 0, 0, OpKind::Elementwise, true, "inputs: base, exponent", infer_pow},
    {OpCode::PowScalar, "pow_scalar", 1, 1, 0, 1, 0, 1, OpKind::Elementwise, true, "exponent: ints[0] (integral) or floats[0]", infer_pow_scalar},
    {OpCode::RPowScalar, "rpow_scalar", 1, 1, 0, 1, 0, 1, OpKind::Elementwise, true, "base: ints[0] (integral) or floats[0]", infer_scalar},
    {OpCode::Gelu, "gelu", 1, 1, 0, 0, 0, 0, OpKind::Elementwise, true, "", infer_floating_same},
    {OpCode::Softmax, "softmax", 1, 1, 1, 1, 0, 0, OpKind::Softmax, false, "dim", infer_softmax},
    {OpCode::LogSoftmax, "log_softmax", 1, 1, 1, 1, 0, 0, OpKind::Softmax, false, "dim", infer_softmax},
    {OpCode::Amax, "amax", 1, 1, 1, kAny, 0, 0, OpKind::Reduction, false, "keepdim, dims... (none = all)", infer_extremum},
    {OpCode::Amin, "amin", 1, 1, 1, kAny, 0, 0, OpKind::Reduction, false, "keepdim, dims... (none = all)", infer_extremum},
    {OpCode::Argmax, "argmax", 1, 1, 1, 2, 0, 0, OpKind::Reduction, false, "keepdim[, dim] (no dim = over the flattened tensor)", infer_argmax},
    {OpCode::Lt, "lt", 2, 1, 0, 0, 0, 0, OpKind::Elementwise, true, "", infer_compare},
    {OpCode::Le, "le", 2, 1, 0, 0, 0, 0, OpKind::Elementwise, true, "", infer_compare},
    {OpCode::Gt, "gt", 2, 1, 0, 0, 0, 0, OpKind::Elementwise, true, "", infer_compare},
    {OpCode::Ge, "ge", 2, 1, 0, 0, 0, 0, OpKind::Elementwise, true, "", infer_compare},
    {OpCode::Eq, "eq", 2, 1, 0, 0, 0, 0, OpKind::Elementwise, true, "", infer_compare},
    {OpCode::Ne, "ne", 2, 1, 0, 0, 0, 0, OpKind::Elementwise, true, "", infer_compare},
    {OpCode::LtScalar, "lt_scalar", 1, 1, 0, 1, 0, 1, OpKind::Elementwise, true, kScalarAttr, infer_compare_scalar},
    {OpCode::LeScalar, "le_scalar", 1, 1, 0, 1, 0, 1, OpKind::Elementwise, true, kScalarAttr, infer_compare_scalar},
    {OpCode::GtScalar, "gt_scalar", 1, 1, 0, 1, 0, 1, OpKind::Elementwise, true, kScalarAttr, infer_compare_scalar},
    {OpCode::GeScalar, "ge_scalar", 1, 1, 0, 1, 0, 1, OpKind::Elementwise, true, kScalarAttr, infer_compare_scalar},
    {OpCode::EqScalar, "eq_scalar", 1, 1, 0, 1, 0, 1, OpKind::Elementwise, true, kScalarAttr, infer_compare_scalar},
    {OpCode::NeScalar, "ne_scalar", 1, 1, 0, 1, 0, 1, OpKind::Elementwise, true, kScalarAttr, infer_compare_scalar},
    {OpCode::Where, "where", 3, 1, 0, 0, 0, 0, OpKind::Elementwise, true, "inputs: condition (bool), self, other", infer_where},
    {OpCode::Cat, "cat", kAny, 1, 1, 1, 0, 0, OpKind::Shape, false, "dim; inputs: 1 to kMaxInputs (1024) tensors", infer_cat},
    {OpCode::Stack, "stack", kAny, 1, 1, 1, 0, 0, OpKind::Shape, false, "dim; inputs: 1 to kMaxInputs (1024) tensors", infer_stack},
    {OpCode::Unsqueeze, "unsqueeze", 1, 1, 1, 1, 0, 0, OpKind::Shape, false, "dim", infer_unsqueeze},
    {OpCode::Squeeze, "squeeze", 1, 1, 0, 1, 0, 0, OpKind::Shape, false, "[dim] (none = every size-1 dim)", infer_squeeze},
    {OpCode::Permute, "permute", 1, 1, 0, kAny, 0, 0, OpKind::Shape, false, "dims... (a permutation of the tensor's dims)", infer_permute},
    {OpCode::Expand, "expand", 1, 1, 0, kAny, 0, 0, OpKind::Shape, false, "shape... (-1 keeps a dim; new dims only in front)", infer_expand},
    {OpCode::To, "to", 1, 1, 0, 0, 0, 0, OpKind::Elementwise, true, "the instruction's dtype field is the target dtype", infer_to},
    {OpCode::CopyInplace, "copy_", 2, 0, 0, 0, 0, 0, OpKind::Inplace, false, "inputs: self, src (broadcast to self, cast to its dtype)", infer_copy},
    {OpCode::Alias, "alias", 1, 1, 0, 0, 0, 0, OpKind::Shape, false, "", infer_same},
    {OpCode::Gather, "gather", 2, 1, 1, 1, 0, 0, OpKind::Index, false, "dim; inputs: self, index (int64)", infer_gather},
    {OpCode::IndexSelect, "index_select", 2, 1, 1, 1, 0, 0, OpKind::Index, false, "dim; inputs: self, index (int32/int64, 0-D or 1-D)", infer_index_select},
    {OpCode::GeluBackward, "gelu_backward", 2, 1, 0, 0, 0, 0, OpKind::Elementwise, true, "inputs: grad, self (approximate = none)", infer_gelu_backward},
    {OpCode::SliceScatter, "slice_scatter", 2, 1, 4, 4, 0, 0, OpKind::Index, false, "dim, start, end, step; inputs: base, src", infer_slice_scatter},
    {OpCode::ScatterAdd, "scatter_add", 3, 1, 1, 1, 0, 0, OpKind::Index, false, "dim; inputs: self, index (int64), src", infer_scatter_add},
    {OpCode::IndexAdd, "index_add", 3, 1, 1, 1, 0, 0, OpKind::Index, false, "dim; inputs: self, index (int32/int64, 0-D or 1-D), source", infer_index_add},
    {OpCode::AddcmulInplace, "addcmul_", 3, 0, 0, 1, 0, 1, OpKind::Inplace, false, "value: ints[0] (integral) or floats[0]; inputs: self, t1, t2", infer_addc},
    {OpCode::AddcdivInplace, "addcdiv_", 3, 0, 0, 1, 0, 1, OpKind::Inplace, false, "value: ints[0] (integral) or floats[0]; inputs: self, t1, t2", infer_addc},
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
  GT_CHECK(op.arity < 0 ? n_in >= 1 && n_in <= kMaxInputs : n_in == op.arity, op.name,
           ": expected ", op.arity < 0 ? "1 to " + std::to_string(kMaxInputs) : std::to_string(op.arity),
           " tensor inputs, got ", n_in);
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
