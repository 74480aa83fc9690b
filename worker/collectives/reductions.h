#pragma once
// The elementwise reductions behind all_reduce and reduce_scatter on CPU:
// one plain loop per (dtype, reduce op), handed to Gloo's algorithms and to
// the ring reduce-scatter as raw function pointers.

#include <cstddef>

#include <ATen/ATen.h>

#include "worker/collectives/collectives.h"

namespace gt::worker::collectives {

/// out[i] = a[i] (op) b[i] for i < n, on elements of the dtype it was made
/// for; `out` may alias `a`. Integers wrap on overflow; Max and Min let NaN
/// win; float16 and bfloat16 compute in float and round each step.
using ReduceFn = void (*)(void* out, const void* a, const void* b, size_t n);

/// The reduction of `op` on `dtype` (Avg reduces as Sum: the caller divides);
/// nullptr for dtypes without one (bool and types gt does not have).
ReduceFn reduce_fn(at::ScalarType dtype, ReduceOp op);

}  // namespace gt::worker::collectives
