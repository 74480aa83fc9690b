#pragma once
// CPU backend, code generation: C++ source for the fused groups of a graph
// (worker/jit/graph.h), built by worker/jit/compiler_cpu.h. The whole backend
// is this file pair; a CUDA backend is one more (codegen_cuda) beside it.
//
// Note [cpu kernel abi]
// Each group becomes
//   extern "C" int gt_fused_<hash>(const void* const* inputs,
//                                  const int64_t* const* input_strides,
//                                  void* const* outputs, const int64_t* shape,
//                                  int64_t rank, int64_t begin, int64_t end);
// computing the elements [begin, end) of the row-major linear index over the
// group's shape (so a caller splits the work across threads by ranges).
// `inputs` follow FusedGroup::inputs, then one `const double*` per entry of
// FusedGroup::scalars (run-time numbers, Note [dynamic scalars] in chain.h);
// `outputs` follow FusedGroup::outputs; outputs
// are contiguous buffers of the group's shape in their value's dtype. Shapes
// are baked into the code (guards live in the caller); `shape`/`rank` are
// checked against them and a mismatch returns 1 without touching memory.
// `input_strides == nullptr` selects the fast path: every input is contiguous
// with its own static shape, which broadcasts into the group's shape; dims are
// collapsed at generation time and the inner loop is a `#pragma omp simd` loop
// with constant strides (0 or 1). Otherwise input_strides[k] holds input k's
// element strides over the group's dims (rank entries, 0 on broadcast dims) and
// a scalar strided loop runs. Returns 0 on success.
//
// Numerics follow LibTorch's CPU kernels: each op computes in its output dtype
// (float32 math in float), inputs are converted to it first, scalar operands
// are converted to it as LibTorch converts a wrapped number (printed exactly,
// as hex floats); sigmoid is 1/(1+exp(-x)), gelu x*0.5*(1+erf(x/sqrt 2)),
// rsqrt 1/sqrt(x), relu propagates NaN, pow_scalar takes LibTorch's special
// cases (0, 1, 2, 3, 0.5, -0.5, -1, -2). exp/log/tanh/erf/pow use glibc's
// vector math (libmvec) on x86_64, which is within a few ulp of LibTorch's Sleef.

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "worker/jit/graph.h"

namespace gt::worker::jit {

/// The signature of a generated group kernel (Note [cpu kernel abi]).
using CpuKernelFn = int (*)(const void* const* inputs, const int64_t* const* input_strides,
                            void* const* outputs, const int64_t* shape, int64_t rank,
                            int64_t begin, int64_t end);

/// One group's kernel.
struct CpuKernelSource {
  std::string symbol;  // gt_fused_<hash of the code>
  std::string code;    // the function definition; needs cpu_prelude() before it
};

/// Declarations every generated unit starts with (types, math functions and
/// their vector variants). Includes no standard header, to keep compiles short.
std::string_view cpu_prelude();

/// Source of the kernel for `group`, one of graph.steps' groups.
/// Throws std::invalid_argument for an op the backend cannot fuse.
CpuKernelSource generate_cpu_kernel(const Graph& graph, const FusedGroup& group);

/// A compilable unit: the prelude followed by the kernels.
std::string cpu_unit_source(std::span<const CpuKernelSource> kernels);

/// `x` as an exact C++ double expression (hex float; inf and nan as builtins).
std::string cpu_double_literal(double x);

}  // namespace gt::worker::jit
