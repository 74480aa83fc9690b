// gt::debug::stats: the cluster's per-worker counters (StatsRequest round
// trip, docs/protocol.md).

#include <gt/debug.h>

#include "client/internal/api.h"

namespace gt::debug {

uint64_t Stats::session_tensors() const {
  uint64_t n = 0;
  for (const auto& w : workers) n += w.session_tensors;
  return n;
}

uint64_t Stats::instructions() const {
  uint64_t n = 0;
  for (const auto& w : workers) n += w.instructions;
  return n;
}

JitStats Stats::jit() const {
  JitStats t;
  for (const auto& w : workers) {
    t.enabled = t.enabled || w.jit.enabled;
    t.detected += w.jit.detected;
    t.compiled += w.jit.compiled;
    t.cache_hits += w.jit.cache_hits;
    t.failures += w.jit.failures;
    t.duplicates += w.jit.duplicates;
    t.runs += w.jit.runs;
    t.dropped += w.jit.dropped;
    t.fallbacks += w.jit.fallbacks;
    t.limited += w.jit.limited;
    t.elided_runs += w.jit.elided_runs;
  }
  return t;
}

Stats stats() {
  Stats out;
  for (auto& w : client::current_session()->worker_stats()) {
    WorkerStats s;
    s.worker = w.worker;
    s.device = std::move(w.device);
    s.sessions = w.sessions;
    s.session_tensors = w.session_tensors;
    s.tensors = w.tensors;
    s.instructions = w.instructions;
    s.session_bytes = w.session_bytes;
    s.tensor_bytes = w.tensor_bytes;
    s.jit =
        JitStats{w.jit_enabled,    w.jit_detected, w.jit_compiled, w.jit_cache_hits, w.jit_failures,
                 w.jit_duplicates, w.jit_runs,     w.jit_dropped,  w.jit_fallbacks,  w.jit_limited,
                 w.jit_elided_runs};
    out.workers.push_back(std::move(s));
  }
  return out;
}

}  // namespace gt::debug
