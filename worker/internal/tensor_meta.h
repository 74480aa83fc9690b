#pragma once
// What the executor's translation units (executor.cpp,
// executor_collectives.cpp) need to compare tensors with the metas the wire
// names, and to word them in failure messages.

#include <algorithm>
#include <cstdint>
#include <span>
#include <string>

#include <ATen/ATen.h>

#include "common/check.h"
#include "common/dtype_rules.h"
#include "common/op_table.h"
#include "common/shape.h"
#include "worker/kernels.h"

namespace gt::worker::detail {

inline TensorMeta meta_of(const at::Tensor& t) {
  const auto sizes = t.sizes();
  return {Shape(sizes.begin(), sizes.end()), to_dtype(t.scalar_type()).value_or(DType::Float32)};
}

/// Whether `t` is defined and has the shape and dtype of `m`.
inline bool matches(const at::Tensor& t, const TensorMeta& m) {
  if (!t.defined() || to_dtype(t.scalar_type()) != m.dtype) return false;
  const auto sizes = t.sizes();
  return std::equal(sizes.begin(), sizes.end(), m.shape.begin(), m.shape.end());
}

/// "(2, 3) float32".
inline std::string describe(const TensorMeta& m) {
  return gt::detail::cat(shape_str(m.shape), " ", to_string(m.dtype));
}

inline std::string describe(const at::Tensor& t) {
  if (!t.defined()) return "no tensor";
  const auto sizes = t.sizes();
  return gt::detail::cat(shape_str(std::span<const int64_t>(sizes.data(), sizes.size())), " ",
                         c10::toString(t.scalar_type()));
}

/// Bytes of a tensor of this meta, saturating instead of overflowing (a
/// matmul of two large operands can name more elements than int64 holds).
inline uint64_t saturating_bytes(const TensorMeta& m) {
  uint64_t n = static_cast<uint64_t>(element_size(m.dtype));
  for (int64_t d : m.shape) {
    if (d <= 0) return 0;
    if (n > UINT64_MAX / static_cast<uint64_t>(d)) return UINT64_MAX;
    n *= static_cast<uint64_t>(d);
  }
  return n;
}

}  // namespace gt::worker::detail
