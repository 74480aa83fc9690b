// Errors seen by a user program: at the call site, at the next sync point, and
// when a worker dies.

// LibTorch (through glog) defines CHECK too: include it before Catch so that
// Catch's CHECK wins.
#include "tests/integration/torch_compare.h"

#include <catch2/catch.hpp>

#include <signal.h>

#include <chrono>

#include "tests/support/cluster.h"

namespace {
using Clock = std::chrono::steady_clock;
}

TEST_CASE("a shape mismatch throws at the call site naming both shapes", "[errors][integration]") {
  gt::test::TestCluster cluster(1);
  gt::connect(cluster.endpoint());
  auto a = gt::zeros({2, 3});
  auto b = gt::zeros({4});
  CHECK_THROWS_AS(a + b, std::invalid_argument);
  CHECK_THROWS_WITH(a + b, Catch::Contains("add") && Catch::Contains("(2, 3)") &&
                               Catch::Contains("(4)"));
  CHECK_THROWS_WITH(a.matmul(gt::zeros({4, 3})),
                    Catch::Contains("matmul") && Catch::Contains("(2, 3)") &&
                        Catch::Contains("(4, 3)"));
  CHECK_THROWS_WITH(a.sum({5}), Catch::Contains("sum") && Catch::Contains("out of range"));
  CHECK_THROWS_WITH(a.reshape({7}), Catch::Contains("reshape"));
  CHECK_THROWS_WITH(gt::tensor(std::vector<float>{1, 2, 3}, {2, 2}), Catch::Contains("3"));
  CHECK_THROWS_AS(a.item<float>(), std::invalid_argument);
  // nothing was sent: the session is healthy
  gt::synchronize();
  CHECK(a.sum().item<float>() == 0.f);
  gt::shutdown();
}

TEST_CASE("a worker-side failure is reported at the next sync and the worker keeps serving",
          "[errors][integration]") {
  gt::test::TestCluster cluster(1);
  gt::connect(cluster.endpoint());
  // LibTorch has no CPU matmul for float16: the client's shape rules accept
  // it, the worker's kernel throws.
  auto a = gt::ones({2, 2}).view({4}).reshape({2, 2});
  auto h = gt::full({2, 2}, 1.0, gt::kFloat16);
  auto bad = h.matmul(h);
  auto downstream = bad + 1.0;  // poisoned by the failure, not reported twice
  try {
    gt::synchronize();
    FAIL("synchronize() should have thrown");
  } catch (const gt::RemoteError& e) {
    CHECK(e.worker() == 0);
    CHECK(e.op() == "matmul");
    CHECK_THAT(std::string(e.what()),
               Catch::Contains("matmul") && Catch::Contains("(2, 2) float16") &&
                   Catch::Contains("worker 0"));
  }
  // the poisoned tensor reports the original failure when fetched
  CHECK_THROWS_WITH(downstream.to_vector<float>(), Catch::Contains("matmul"));
  // reported once: the next sync is clean, and the worker still computes
  gt::synchronize();
  CHECK(a.sum().item<float>() == 4.f);
  gt::shutdown();
}

TEST_CASE("a failed allocation on the worker is an error, not a crash", "[errors][integration]") {
  gt::test::TestCluster cluster(1);
  gt::connect(cluster.endpoint());
  auto huge = gt::zeros({int64_t{1} << 21, int64_t{1} << 21});  // 16 TiB
  CHECK_THROWS_AS(gt::synchronize(), gt::RemoteError);
  CHECK(gt::ones({3}).sum().item<float>() == 3.f);
  gt::shutdown();
}

TEST_CASE("a killed worker is reported within seconds, not hung on", "[errors][integration]") {
  gt::test::TestCluster cluster(1, {{"GT_HEARTBEAT_TIMEOUT_MS", "1000"}});
  gt::connect(cluster.endpoint());
  auto x = gt::ones({16});
  CHECK(x.sum().item<float>() == 16.f);
  cluster.kill_worker(0, SIGKILL);
  const auto t0 = Clock::now();
  auto y = x * 2.0;
  CHECK_THROWS_AS(y.to_vector<float>(), gt::Error);
  const double waited = std::chrono::duration<double>(Clock::now() - t0).count();
  CHECK(waited < 5.0);
  try {
    gt::synchronize();
    FAIL("synchronize() should report the lost worker");
  } catch (const gt::Error& e) {
    CHECK_THAT(std::string(e.what()), Catch::Contains("worker 0") && Catch::Contains("lost"));
  }
  gt::shutdown();
}
