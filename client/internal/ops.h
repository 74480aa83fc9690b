#pragma once
// Shared helpers of the op front end (tensor.cpp, ops.cpp): check, infer, issue.

#include <span>
#include <string_view>
#include <vector>

#include <gt/export.h>
#include <gt/tensor.h>

#include "client/internal/tensor_node.h"
#include "common/op_table.h"

namespace gt::client {

/// The node of a defined tensor; throws std::invalid_argument naming `op` otherwise.
const TensorNode& node_of(const Tensor& t, std::string_view op);

/// Runs the op table's rule; rethrows its std::invalid_argument as
/// "[client.<op>] <what>".
std::vector<TensorMeta> infer_or_throw(const OpInfo& info, const OpCall& call);

/// Checks and issues an op on one or two tensors with a single result.
Tensor apply(OpCode code, const Tensor& a, const Tensor* b, std::vector<int64_t> ints = {},
             std::vector<double> floats = {});

/// Checks and issues an op on any number of tensors (cat, where, scatter_add)
/// with a single result; `dtype` is the instruction's dtype attribute (`to`).
Tensor apply_n(OpCode code, std::span<const Tensor* const> inputs, std::vector<int64_t> ints = {},
               std::vector<double> floats = {}, DType dtype = DType::Float32);

/// Checks and issues an in-place op on `self` with the other operands `others`
/// (none for zero_, one for add_, two for addcmul_).
void apply_inplace(OpCode code, const Tensor& self, std::span<const Tensor* const> others,
                   std::vector<int64_t> ints = {}, std::vector<double> floats = {});
/// The same with at most one other operand (nullptr: none).
void apply_inplace(OpCode code, const Tensor& self, const Tensor* other,
                   std::vector<int64_t> ints = {}, std::vector<double> floats = {});

/// The attribute lists carrying a number operand (ints[0] or floats[0]).
void scalar_attrs(Scalar s, std::vector<int64_t>& ints, std::vector<double>& floats);

/// Checks and issues an op on a tensor and a number operand.
Tensor apply_scalar(OpCode code, const Tensor& a, Scalar s);

// ---- ops the autograd's backward rules use (not part of the public API) ----

/// Gradient of gelu (exact erf form) at `x` given the output gradient `grad`
/// (at::gelu_backward with approximate "none"); same shapes, floating dtypes.
GT_API Tensor gelu_backward(const Tensor& grad, const Tensor& x);

}  // namespace gt::client
