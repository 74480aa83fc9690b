// gt::debug::stats against the fake dispatcher: the public types, the
// conversion from the wire and the convenience totals.

#include <catch2/catch.hpp>

#include <gt/gt.h>

#include "fake_dispatcher.h"

TEST_CASE("debug stats copies every worker's counters and sums them", "[debug][unit]") {
  gt::test::FakeSession connected;
  gt::wire::WorkerStatsInfo a, b;
  a.worker = 0;
  a.device = "cpu";
  a.sessions = 1;
  a.session_tensors = 4;
  a.tensors = 6;
  a.instructions = 100;
  a.jit_enabled = true;
  a.jit_detected = 1;
  a.jit_compiled = 1;
  a.jit_cache_hits = 1;
  a.jit_failures = 2;
  a.jit_duplicates = 3;
  a.jit_runs = 40;
  a.jit_dropped = 5;
  a.jit_fallbacks = 6;
  a.jit_limited = 7;
  a.jit_elided_runs = 3;
  b.worker = 1;
  b.device = "cuda:1";
  b.session_tensors = 2;
  b.instructions = 20;
  b.jit_runs = 2;
  connected.fake.set_stats({a, b});

  auto x = gt::zeros({2, 2});  // issued, still in the open batch
  const gt::debug::Stats stats = gt::debug::stats();
  REQUIRE(stats.workers.size() == 2);
  const gt::debug::WorkerStats& w = stats.workers[0];
  CHECK(w.worker == 0);
  CHECK(w.device == "cpu");
  CHECK(w.sessions == 1);
  CHECK(w.session_tensors == 4);
  CHECK(w.tensors == 6);
  CHECK(w.instructions == 100);
  CHECK(w.jit.enabled);
  CHECK(w.jit.detected == 1);
  CHECK(w.jit.compiled == 1);
  CHECK(w.jit.cache_hits == 1);
  CHECK(w.jit.failures == 2);
  CHECK(w.jit.duplicates == 3);
  CHECK(w.jit.runs == 40);
  CHECK(w.jit.dropped == 5);
  CHECK(w.jit.fallbacks == 6);
  CHECK(w.jit.limited == 7);
  CHECK(w.jit.elided_runs == 3);
  CHECK(stats.workers[1].device == "cuda:1");
  CHECK_FALSE(stats.workers[1].jit.enabled);

  CHECK(stats.session_tensors() == 6);
  CHECK(stats.instructions() == 120);
  const gt::debug::JitStats total = stats.jit();
  CHECK(total.enabled);
  CHECK(total.runs == 42);
  CHECK(total.limited == 7);
  CHECK(total.elided_runs == 3);
  CHECK(gt::debug::Stats{}.jit().enabled == false);

  // The zeros left before the request: stats() is a sync point.
  auto batches = connected.fake.batches();
  REQUIRE(batches.size() == 1);
  CHECK(batches[0][0].op == gt::OpCode::Zeros);
  CHECK(connected.fake.stats_requests() == std::vector<size_t>{1});
}
