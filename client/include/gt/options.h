#pragma once
// gt::TensorOptions: dtype and requires_grad of a new tensor.

#include <optional>

#include <gt/dtype.h>

namespace gt {

/// Options for creation functions (gt::zeros(shape, opts), ...), built the
/// LibTorch way: `gt::TensorOptions().dtype(gt::kInt64).requires_grad(true)`,
/// or implicitly from a dtype: `gt::zeros({2}, gt::kInt64)`. A value type:
/// setters return a modified copy; thread-safe to share; never throws. A
/// creation function uses its own default dtype (float32 for most, int64 for
/// an all-integral arange) when none is set.
class TensorOptions {
 public:
  /// No dtype set, requires_grad false.
  TensorOptions() = default;
  /// Options with this dtype (implicit on purpose).
  TensorOptions(DType dtype) : dtype_(dtype) {}  // NOLINT(google-explicit-constructor)

  /// Copy with the dtype set.
  TensorOptions dtype(DType dtype) const {
    TensorOptions o = *this;
    o.dtype_ = dtype;
    return o;
  }
  /// Copy with requires_grad set (recorded for autograd).
  TensorOptions requires_grad(bool requires_grad) const {
    TensorOptions o = *this;
    o.requires_grad_ = requires_grad;
    return o;
  }

  /// The dtype, float32 when none was set.
  DType dtype() const { return dtype_.value_or(DType::Float32); }
  /// Whether a dtype was set explicitly.
  bool has_dtype() const { return dtype_.has_value(); }
  /// The dtype, or `fallback` when none was set.
  DType dtype_or(DType fallback) const { return dtype_.value_or(fallback); }
  /// Whether the new tensor requires a gradient.
  bool requires_grad() const { return requires_grad_; }

 private:
  std::optional<DType> dtype_;
  bool requires_grad_ = false;
};

/// Options with only a dtype: `gt::ones({3}, gt::dtype(gt::kFloat64))`.
inline TensorOptions dtype(DType dtype) { return TensorOptions(dtype); }
/// Options with only requires_grad.
inline TensorOptions requires_grad(bool requires_grad = true) {
  return TensorOptions().requires_grad(requires_grad);
}

}  // namespace gt
