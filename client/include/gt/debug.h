#pragma once
// Introspection of the cluster a program is connected to: per-worker counters
// (tensors, instructions, the hot-path JIT). For tests, benchmarks and tools;
// the numbers describe the moment each worker answered.
//
//   gt::synchronize();
//   for (const auto& w : gt::debug::stats().workers)
//     std::cout << w.worker << " " << w.device << " " << w.session_tensors << "\n";

#include <cstdint>
#include <string>
#include <vector>

#include <gt/export.h>

namespace gt::debug {

/// A worker's JIT counters (all sessions; docs/jit.md). All zero when the JIT
/// is off (enabled == false).
struct JitStats {
  bool enabled = false;     // the worker runs with GT_AUTO_COMPILE or GT_COMPILE
  uint64_t detected = 0;    // units promoted by the hot-path detectors
  uint64_t compiled = 0;    // chains compiled and loaded (cache hits included)
  uint64_t cache_hits = 0;  // of those, found in the on-disk cache
  uint64_t failures = 0;    // chains whose compile failed (they stay eager)
  uint64_t duplicates = 0;  // promoted chains already compiled or queued
  uint64_t runs = 0;        // units executed by compiled chains instead of eagerly
  uint64_t dropped = 0;     // chains dropped after timing slower than eager
  uint64_t fallbacks = 0;   // matched units run eagerly instead
  uint64_t limited = 0;     // chains left eager by GT_RECOMPILE_LIMIT
  uint64_t elided_runs = 0; // of `runs`, units that did not materialise their dead values
};

/// One worker's counters, taken after it ran every instruction this program
/// issued before the stats() call.
struct WorkerStats {
  int worker = -1;               // the dispatcher's index of the worker
  std::string device;            // "cpu", "cuda:0"
  uint64_t sessions = 0;         // client sessions with state on the worker
  uint64_t session_tensors = 0;  // live tensors of this program's session there
  uint64_t tensors = 0;          // live tensors of all sessions there
  uint64_t instructions = 0;     // instructions executed, all sessions
  uint64_t session_bytes = 0;    // memory held by this program's tensors there
  uint64_t tensor_bytes = 0;     // memory held by all sessions' tensors there
  JitStats jit;
};

/// The answer of stats(): one entry per worker that answered, ordered by
/// worker index (a worker lost while the request was out is left out).
/// A plain value: copies are independent.
struct GT_API Stats {
  std::vector<WorkerStats> workers;

  /// Live tensors of this program's session, summed over the workers.
  uint64_t session_tensors() const;
  /// Instructions executed, summed over the workers.
  uint64_t instructions() const;
  /// JIT counters summed over the workers (enabled if any worker's JIT is on).
  JitStats jit() const;
};

/// Asks every worker of the cluster for its counters and waits for the
/// answers (a sync point: the open batch is flushed first, so each worker
/// answers after running everything issued before). Starts the session from
/// the environment if none is open. Does not report op failures: those stay
/// for the next synchronize(). Throws gt::TransportError when the connection
/// to the dispatcher is lost, gt::Error after gt::shutdown() while waiting.
GT_API Stats stats();

}  // namespace gt::debug
