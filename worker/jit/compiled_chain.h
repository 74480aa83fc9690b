#pragma once
// A chain compiled for the CPU: its graph (worker/jit/graph.h), the loaded
// kernels of its fused groups, and the library steps run through the kernel
// table (worker/kernels.h). Also runs any chain eagerly, op by op, for
// verification (GT_COMPILE_VERIFY) and for timing against eager.
//
// Results follow Note [chain values]: run() takes one tensor per external value
// and returns one per produced value, defined where the value escapes and
// undefined where it dies inside the chain. In-place ops mutate the external
// tensors passed in, exactly as eager execution does (clone them first to run
// the same inputs twice).

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "worker/jit/codegen_cpu.h"
#include "worker/jit/compiler_cpu.h"
#include "worker/jit/graph.h"

namespace gt::worker::jit {

/// What a run needs besides the tensors.
struct RunOptions {
  at::Generator* generator = nullptr;  // the session's generator, for randn/rand/manual_seed
  at::Device device = at::kCPU;        // where creation ops allocate
  int64_t grain_size = 32768;          // elements per parallel task of a fused kernel
  /// Called with the tensor an in-place op is about to mutate, before the op
  /// runs (the executor's Note [fetch buffers] hook); may be empty.
  std::function<void(const at::Tensor& self)> before_inplace;
  /// The unit's run-time numbers (ChainMatcher::scalars(), Note [dynamic
  /// scalars] in chain.h); empty: those of the recorded instance.
  std::span<const double> scalars;
};

/// Runs `chain` op by op through the kernel table (what the executor does
/// without the compiler). Throws std::invalid_argument for a bad chain or
/// externals that do not match their metas; kernels throw as in the executor.
std::vector<at::Tensor> run_eager(const Chain& chain, std::span<const at::Tensor> externals,
                                  const RunOptions& options = {});

/// Tolerances for comparing a compiled run with an eager one, chosen by each
/// result's dtype. A float64 result computed from float32 values (a chain that
/// promotes) carries float32 rounding: use float32 tolerances for it.
struct Tolerance {
  double rtol32 = 1e-4, atol32 = 1e-5;   // float32 (and narrower) values
  double rtol64 = 1e-9, atol64 = 1e-12;  // float64 values
};

/// The first difference between two runs' results (definedness, shape, dtype,
/// then values; NaNs compare equal), or nullopt when they agree.
std::optional<std::string> compare_results(std::span<const at::Tensor> expected,
                                           std::span<const at::Tensor> actual,
                                           const Tolerance& tolerance = {});

/// A chain with its fused groups compiled and loaded. Immutable once built:
/// run() may be called from several threads at once. Keeps the loaded object
/// alive. Pinned.
class CompiledChain {
 public:
  /// Partitions `chain`, generates one unit for its fused groups and compiles it
  /// with `compiler` (nothing is compiled when no group forms). Throws
  /// std::invalid_argument for a bad chain, CompileError when building fails.
  CompiledChain(const Chain& chain, CpuCompiler& compiler, const FusionOptions& options = {});
  CompiledChain(const CompiledChain&) = delete;
  CompiledChain& operator=(const CompiledChain&) = delete;

  /// Runs the compiled chain on CPU tensors. Throws std::invalid_argument when
  /// the externals do not match the chain's metas (or are not on the CPU while
  /// a fused group needs them): checked before anything runs, so nothing was
  /// mutated and eager execution can take over. Later failures (gt::Error from
  /// a generated kernel's guard, whatever a library kernel throws) happen
  /// after earlier steps ran, as in eager execution failing at that op.
  std::vector<at::Tensor> run(std::span<const at::Tensor> externals,
                              const RunOptions& options = {}) const;
  /// Runs the same chain op by op (no fusion), for verification and timing.
  std::vector<at::Tensor> run_eager(std::span<const at::Tensor> externals,
                                    const RunOptions& options = {}) const;

  const Graph& graph() const { return graph_; }
  /// The generated unit; empty when nothing fuses.
  const std::string& source() const { return source_; }
  /// True when the unit came from the cache (or nothing needed compiling).
  bool cache_hit() const { return cache_hit_; }
  /// Time spent generating, compiling and loading.
  std::chrono::nanoseconds compile_time() const { return compile_time_; }

 private:
  Graph graph_;
  Graph eager_graph_;
  std::string source_;
  std::shared_ptr<LoadedLibrary> library_;
  std::vector<CpuKernelFn> kernels_;  // per step; null for library steps
  bool cache_hit_ = true;
  std::chrono::nanoseconds compile_time_{0};
};

}  // namespace gt::worker::jit
