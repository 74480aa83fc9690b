// gt::debug::stats through real processes: the counters a worker reports for
// the tensors and instructions of this program, one entry per worker, and the
// hot-path JIT's counters.

#include <catch2/catch.hpp>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <thread>

#include <gt/gt.h>

#include "tests/support/cluster.h"

namespace {

using namespace std::chrono_literals;

// Polls stats() until `done` holds or `timeout` passes; returns the last answer.
template <typename Pred>
gt::debug::Stats stats_when(Pred done, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  gt::debug::Stats s = gt::debug::stats();
  while (!done(s) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
    s = gt::debug::stats();
  }
  return s;
}

}  // namespace

TEST_CASE("stats count this session's live tensors and executed instructions",
          "[stats][integration]") {
  gt::test::TestCluster cluster(1);
  gt::connect(cluster.endpoint());
  std::vector<gt::Tensor> kept;
  for (int i = 0; i < 5; ++i) kept.push_back(gt::ones({2, 3}));
  // stats() flushes the open batch: no synchronize needed.
  const gt::debug::Stats a = gt::debug::stats();
  REQUIRE(a.workers.size() == 1);
  const gt::debug::WorkerStats& w = a.workers[0];
  CHECK(w.worker == 0);
  CHECK(w.device == "cpu");
  CHECK(w.sessions == 1);
  CHECK(w.session_tensors == 5);
  CHECK(w.tensors == 5);
  CHECK(w.instructions >= 5);
  CHECK(a.session_tensors() == 5);

  // More ops: the counter grows; dropped handles are freed before the answer.
  gt::Tensor sum = kept[0];
  for (size_t i = 1; i < kept.size(); ++i) sum = sum + kept[i];
  kept.clear();
  const gt::debug::Stats b = gt::debug::stats();
  REQUIRE(b.workers.size() == 1);
  CHECK(b.workers[0].instructions > w.instructions);
  CHECK(b.workers[0].session_tensors == 1);  // only `sum` is alive
  CHECK(sum.sum().item<float>() == 30.f);

  // The JIT is off: its counters are zero.
  const gt::debug::JitStats jit = b.jit();
  CHECK_FALSE(jit.enabled);
  CHECK(jit.detected == 0);
  CHECK(jit.compiled == 0);
  CHECK(jit.runs == 0);
  CHECK(jit.fallbacks == 0);
  gt::shutdown();
}

TEST_CASE("stats have one entry per worker and show where the session's tensors live",
          "[stats][integration]") {
  gt::test::TestCluster cluster(2);
  gt::connect(cluster.endpoint());
  std::vector<gt::Tensor> kept;
  for (int i = 0; i < 3; ++i) kept.push_back(gt::zeros({4}));
  // The Welcome may come before the second worker registered.
  const gt::debug::Stats s =
      stats_when([](const gt::debug::Stats& st) { return st.workers.size() == 2; }, 20s);
  REQUIRE(s.workers.size() == 2);
  CHECK(s.workers[0].worker == 0);
  CHECK(s.workers[1].worker == 1);
  CHECK(s.workers[0].device == "cpu");
  CHECK(s.workers[1].device == "cpu");
  // Every tensor of the session lives on one worker (no sharding config).
  CHECK(s.session_tensors() == 3);
  const auto holders = std::count_if(s.workers.begin(), s.workers.end(),
                                     [](const auto& w) { return w.session_tensors > 0; });
  CHECK(holders == 1);
  gt::shutdown();
}

TEST_CASE("stats show the JIT detecting and compiling a hot loop", "[stats][jit][integration]") {
  char tmpl[] = "/tmp/gt-stats-test-XXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  const std::string cache = tmpl;
  {
    gt::test::TestCluster cluster(1, {{"GT_AUTO_COMPILE", "1"}, {"GT_COMPILE_CACHE_DIR", cache}});
    gt::connect(cluster.endpoint());
    gt::Tensor x = gt::randn({16, 8});
    const gt::Tensor b = gt::randn({8});
    for (int i = 0; i < 40; ++i) x = ((x * 0.5 + b).relu() - 0.25) * 2.0;
    gt::synchronize();
    // Compiling runs in the background (the system compiler): poll for it.
    const gt::debug::Stats s =
        stats_when([](const gt::debug::Stats& st) { return st.jit().compiled >= 1; }, 60s);
    REQUIRE(s.workers.size() == 1);
    const gt::debug::JitStats jit = s.workers[0].jit;
    CHECK(jit.enabled);
    CHECK(jit.detected >= 1);
    CHECK(jit.compiled >= 1);
    CHECK(jit.failures == 0);
    gt::shutdown();
  }
  std::error_code ec;
  std::filesystem::remove_all(cache, ec);
}
