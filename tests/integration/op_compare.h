#pragma once
// Shared by the op tests that compare gt with a local LibTorch
// (grad_ops_test.cpp, op_values_test.cpp): the tolerances and the comparison
// of a gt result with LibTorch's, and the sample data both start from.
//
// LibTorch (through glog) defines CHECK too: include this before Catch so that
// Catch's CHECK wins.

#include <cstdint>
#include <functional>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include <gt/gt.h>

#include "tests/integration/torch_compare.h"

namespace gt::test {

// An op case's inputs as gt and as LibTorch tensors, and the op on each.
using G = std::vector<gt::Tensor>;
using T = std::vector<at::Tensor>;
using GtFn = std::function<gt::Tensor(const G&)>;
using TorchFn = std::function<at::Tensor(const T&)>;

// slice() to the end of the dim.
inline constexpr int64_t kEnd = std::numeric_limits<int64_t>::max();

// ---- comparing with LibTorch ---------------------------------------------------------

// Values: exact for integral and bool results.
inline double value_tolerance(at::ScalarType t) {
  switch (t) {
    case at::kDouble: return 1e-10;
    case at::kFloat: return 1e-5;
    case at::kHalf: return 1e-2;
    case at::kBFloat16: return 5e-2;
    default: return 0;
  }
}

// Gradients go through a few more ops than the values (and gt's backward
// formulas are compositions where LibTorch has fused kernels).
inline double grad_tolerance(gt::DType t) {
  switch (t) {
    case gt::kFloat64: return 1e-9;
    case gt::kFloat32: return 1e-4;
    case gt::kFloat16: return 2e-2;
    case gt::kBFloat16: return 1e-1;
    default: return 0;
  }
}

// Empty when `got` has `want`'s shape, dtype and values (within `tol`, which
// is relative and absolute; 0 = exact); otherwise what differs.
inline std::string mismatch(const gt::Tensor& got, const at::Tensor& want, double tol) {
  std::ostringstream msg;
  const std::vector<int64_t> want_shape(want.sizes().begin(), want.sizes().end());
  if (got.shape() != want_shape) {
    msg << "shape " << at::IntArrayRef(got.shape()) << ", LibTorch " << want.sizes();
    return msg.str();
  }
  if (to_torch(got.dtype()) != want.scalar_type()) {
    msg << "dtype " << got.dtype() << ", LibTorch " << want.scalar_type();
    return msg.str();
  }
  const at::Tensor g = fetch_double(got);
  const at::Tensor w = want.detach().to(at::kDouble);
  const bool same = tol == 0 ? at::equal(g, w) : at::allclose(g, w, tol, tol, /*equal_nan=*/true);
  if (!same) msg << "values differ (tolerance " << tol << ")\ngt:\n" << g << "\nLibTorch:\n" << w;
  return msg.str();
}

// ---- sample data ---------------------------------------------------------------------

enum class Fill {
  Normal,    // floats N(0, 1); integers in [-5, 5]
  Positive,  // floats in [0.5, 1.5); integers in [1, 5]
  Steps,     // multiples of 0.5 in [-2, 2] (integers in [-2, 2]): zeros and ties
  Distinct,  // no ties: a permutation of half-integers (integers)
};

// Values of `dtype` (bool: random true/false whatever the fill), exactly
// representable so that gt and LibTorch start from the same numbers.
inline at::Tensor sample(const std::vector<int64_t>& shape, gt::DType dtype,
                         Fill fill = Fill::Normal) {
  const int64_t n = c10::multiply_integers(shape);
  at::Tensor v;
  if (dtype == gt::kBool) {
    v = at::randint(0, 2, shape, at::kLong);
  } else if (gt::is_integral(dtype)) {
    switch (fill) {
      case Fill::Normal: v = at::randint(-5, 6, shape, at::kLong); break;
      case Fill::Positive: v = at::randint(1, 6, shape, at::kLong); break;
      case Fill::Steps: v = at::randint(-2, 3, shape, at::kLong); break;
      case Fill::Distinct: v = (at::randperm(n, at::kLong) - n / 2).reshape(shape); break;
    }
  } else {
    switch (fill) {
      case Fill::Normal: v = at::randn(shape, at::kDouble); break;
      case Fill::Positive: v = at::rand(shape, at::kDouble) + 0.5; break;
      case Fill::Steps: v = at::randint(-4, 5, shape, at::kDouble) * 0.5; break;
      case Fill::Distinct:
        v = ((at::randperm(n, at::kLong) - n / 2).to(at::kDouble) * 0.5).reshape(shape);
        break;
    }
  }
  return v.to(to_torch(dtype));
}

inline at::Tensor index(std::vector<int64_t> values, const std::vector<int64_t>& shape,
                        at::ScalarType type = at::kLong) {
  return at::tensor(values, at::kLong).reshape(shape).to(type);
}

}  // namespace gt::test
