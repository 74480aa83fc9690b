// Coverage feedback for libFuzzer from a GCC build (Note [gcc fuzz build] in
// cmake/gt_helpers.cmake): linked into every fuzzer of a GT_FUZZ build made
// with GCC, and compiled without instrumentation itself.
//
// GCC's -fsanitize-coverage=trace-pc calls __sanitizer_cov_trace_pc() at the
// start of every basic block. clang's libFuzzer still defines that function,
// but only to print "no longer supported" and exit, so the fuzzers link with
// -Wl,--wrap=__sanitizer_cov_trace_pc and the instrumented code calls
// __wrap___sanitizer_cov_trace_pc below instead. It counts edges the way AFL
// does: a block is its return address, hashed; an edge is that hash xor the
// previous block's (shifted, so A->B and B->A differ), folded into a table of
// 8-bit counters that libFuzzer reads like clang's inline counters. Distinct
// edges that collide in the table count as one; that costs little: a corpus
// of 9,000 executor inputs gives libFuzzer 55,325 features with 2^18 counters
// and 55,462 (0.25% more) with 2^20, which it also scans after every run.
//
// -fsanitize-coverage=trace-cmp calls the __sanitizer_cov_trace_cmp* hooks,
// which libFuzzer defines (they feed its table of compared values). GCC also
// calls hooks for float and double compares, which libFuzzer lacks: they are
// defined here and do nothing.

#include <cstddef>
#include <cstdint>

extern "C" void __sanitizer_cov_8bit_counters_init(uint8_t* begin, uint8_t* end);

namespace {

constexpr unsigned kCounterBits = 18;
alignas(64) uint8_t g_counters[size_t{1} << kCounterBits];

// The previous block of this thread; each thread's path is its own.
thread_local uintptr_t t_previous = 0;

struct RegisterCounters {
  RegisterCounters() {
    __sanitizer_cov_8bit_counters_init(g_counters, g_counters + sizeof g_counters);
  }
} g_register_counters;

}  // namespace

extern "C" __attribute__((no_sanitize("address", "undefined"))) void
__wrap___sanitizer_cov_trace_pc() {
  // A multiplicative hash spreads code addresses (close together, aligned)
  // over the table; the top kCounterBits bits are the best mixed.
  const uintptr_t block =
      reinterpret_cast<uintptr_t>(__builtin_return_address(0)) * 0x9E3779B97F4A7C15ull;
  const uintptr_t edge = (block ^ t_previous) >> (64 - kCounterBits);
  // Racy between threads, as clang's inline counters are: a lost increment
  // only blurs a hit count.
  ++g_counters[edge];
  t_previous = block >> 1;
}

extern "C" void __sanitizer_cov_trace_cmpf(float, float) {}
extern "C" void __sanitizer_cov_trace_cmpd(double, double) {}
