// `gt bench jit`: an 8-op elementwise loop on one tensor through gt, eager
// against GT_AUTO_COMPILE=1 (each on its own local cluster, one after the
// other in this run). The JIT side first runs long enough for detection, the
// background compile and the compiled-vs-eager trial (docs/jit.md).

#include <chrono>
#include <cstdlib>
#include <optional>
#include <string>

#include <gt/gt.h>

#include "common/env.h"
#include "tools/bench.h"

namespace gt::tools {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

gt::Tensor body(const gt::Tensor& x, const gt::Tensor& b) {
  return ((x * 0.5 + b).relu() - 0.25).sigmoid() * 2.0 - b * 0.1;
}

// Milliseconds per iteration after `warm_s` seconds of warm-up. Syncs (not
// fetches: a fetch would add an op to the loop's unit) bound the queue.
double loop_ms(int64_t elems, int iters, double warm_s) {
  gt::manual_seed(0);
  gt::Tensor x = gt::randn({elems});
  const gt::Tensor b = gt::randn({elems});
  const auto warm = Clock::now();
  do {
    for (int i = 0; i < 10; ++i) x = body(x, b);
    gt::synchronize();
  } while (seconds_since(warm) < warm_s);
  const auto t0 = Clock::now();
  for (int i = 0; i < iters; ++i) x = body(x, b);
  gt::synchronize();
  return 1e3 * seconds_since(t0) / iters;
}

}  // namespace

JitBenchResult bench_jit_loop(int64_t elems, int iters) {
  JitBenchResult r{};
  gt::shutdown();  // each side gets a fresh local cluster
  {
    ScopedEnv off("GT_AUTO_COMPILE", nullptr), all("GT_COMPILE", nullptr);
    r.eager_ms = loop_ms(elems, iters, 0.5);
    gt::shutdown();
  }
  {
    ScopedEnv on("GT_AUTO_COMPILE", "1");
    r.jit_ms = loop_ms(elems, iters, 2.0);
    gt::shutdown();
  }
  return r;
}

}  // namespace gt::tools
