#include "worker/collectives/reductions.h"

#include <cstdint>
#include <type_traits>

namespace gt::worker::collectives {
namespace {

/// Arithmetic type of an element: float for the 16-bit floats (rounded once
/// per pairwise step, as LibTorch does on CPU), the type itself otherwise.
template <typename T>
using Acc =
    std::conditional_t<std::is_same_v<T, c10::Half> || std::is_same_v<T, c10::BFloat16>, float, T>;

struct SumOp {
  template <typename A>
  static A apply(A x, A y) {
    if constexpr (std::is_integral_v<A>) {
      // Wraps on overflow like LibTorch instead of being undefined.
      using U = std::make_unsigned_t<A>;
      return static_cast<A>(static_cast<U>(x) + static_cast<U>(y));
    } else {
      return x + y;
    }
  }
};
struct ProductOp {
  template <typename A>
  static A apply(A x, A y) {
    if constexpr (std::is_integral_v<A>) {
      using U = std::make_unsigned_t<A>;
      return static_cast<A>(static_cast<U>(x) * static_cast<U>(y));
    } else {
      return x * y;
    }
  }
};
struct MaxOp {
  template <typename A>
  static A apply(A x, A y) {
    if constexpr (std::is_floating_point_v<A>)
      return (x > y || x != x) ? x : y;  // NaN wins
    else
      return x > y ? x : y;
  }
};
struct MinOp {
  template <typename A>
  static A apply(A x, A y) {
    if constexpr (std::is_floating_point_v<A>)
      return (x < y || x != x) ? x : y;  // NaN wins
    else
      return x < y ? x : y;
  }
};

/// out[i] = a[i] (op) b[i]; `out` may alias `a` (Gloo's ring does that).
template <typename T, typename Op>
void reduce_loop(void* out, const void* a, const void* b, size_t n) {
  T* o = static_cast<T*>(out);
  const T* x = static_cast<const T*>(a);
  const T* y = static_cast<const T*>(b);
  for (size_t i = 0; i < n; ++i) {
    o[i] = static_cast<T>(Op::apply(static_cast<Acc<T>>(x[i]), static_cast<Acc<T>>(y[i])));
  }
}

template <typename T>
ReduceFn reduce_fn_for(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum:
    case ReduceOp::Avg:
      return &reduce_loop<T, SumOp>;  // Avg divides afterwards
    case ReduceOp::Product:
      return &reduce_loop<T, ProductOp>;
    case ReduceOp::Max:
      return &reduce_loop<T, MaxOp>;
    case ReduceOp::Min:
      return &reduce_loop<T, MinOp>;
  }
  return nullptr;
}

}  // namespace

ReduceFn reduce_fn(at::ScalarType dtype, ReduceOp op) {
  switch (dtype) {
    case at::kFloat:
      return reduce_fn_for<float>(op);
    case at::kDouble:
      return reduce_fn_for<double>(op);
    case at::kHalf:
      return reduce_fn_for<c10::Half>(op);
    case at::kBFloat16:
      return reduce_fn_for<c10::BFloat16>(op);
    case at::kInt:
      return reduce_fn_for<int32_t>(op);
    case at::kLong:
      return reduce_fn_for<int64_t>(op);
    default:
      return nullptr;
  }
}

}  // namespace gt::worker::collectives
