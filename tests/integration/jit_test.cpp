// The hot-path JIT through real processes: a worker started with
// GT_AUTO_COMPILE=1 or GT_COMPILE=1 detects the loop a program runs, compiles
// it in the background (GT_DEBUG_COMPILE=1 lines land in the worker's log),
// keeps computing the same results as LibTorch, and a second process finds the
// compiled chain in the on-disk cache.

// LibTorch (through glog) defines CHECK too: include it before Catch so that
// Catch's CHECK wins.
#include "tests/integration/torch_compare.h"

#include <catch2/catch.hpp>

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <thread>
#include <map>
#include <string>

#include "tests/support/cluster.h"
#include "tests/support/temp_dir.h"

using gt::test::fetch_double;
using gt::test::to_gt;

namespace {

using namespace std::chrono_literals;

using gt::test::TempDir;

std::map<std::string, std::string> jit_env(const std::string& cache, const char* mode) {
  return {{mode, "1"}, {"GT_DEBUG_COMPILE", "1"}, {"GT_COMPILE_CACHE_DIR", cache}};
}

// An elementwise loop with fresh ids every iteration, and the same in LibTorch.
gt::Tensor run_loop(int iterations, const at::Tensor& x0, const at::Tensor& b) {
  gt::Tensor x = to_gt(x0);
  const gt::Tensor gb = to_gt(b);
  for (int i = 0; i < iterations; ++i) x = ((x * 0.5 + gb).relu() - 0.25).sigmoid() * 2.0;
  return x;
}
at::Tensor torch_loop(int iterations, at::Tensor x, const at::Tensor& b) {
  for (int i = 0; i < iterations; ++i) x = ((x * 0.5 + b).relu() - 0.25).sigmoid() * 2.0;
  return x;
}

// Waits until the worker has compiled `n` chains; matching starts once both
// variants of a unit are ready.
bool wait_compiled(uint64_t n, std::chrono::seconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (gt::debug::stats().jit().compiled < n) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(20ms);
  }
  return true;
}

}  // namespace

TEST_CASE("a hot loop is compiled in the background and a second process hits the cache",
          "[jit][integration]") {
  TempDir cache;
  at::manual_seed(3);
  const at::Tensor x0 = at::randn({64, 33}), b = at::randn({33});
  const at::Tensor want = torch_loop(40, x0, b);
  {
    gt::test::TestCluster cluster(1, jit_env(cache.path, "GT_AUTO_COMPILE"));
    gt::connect(cluster.endpoint());
    const gt::Tensor got = run_loop(40, x0, b);
    CHECK(at::allclose(fetch_double(got), want.to(at::kDouble), 1e-5, 1e-6));
    REQUIRE(wait_compiled(2, 60s));  // the loop's two variants (docs/jit.md, stage 3)
    const std::string log = cluster.worker_log(0);
    CHECK_THAT(log, Catch::Contains("hot path detected") && Catch::Contains("fused groups"));
    CHECK_THAT(log, !Catch::Contains("(cache hit)") && !Catch::Contains("failed"));
    // Now the compiled chain replaces eager execution of the loop body; the
    // results stay LibTorch's, intermediates included (every id still exists).
    gt::Tensor x = got;
    gt::Tensor mid;
    const gt::Tensor gb = to_gt(b);
    for (int i = 0; i < 40; ++i) {
      mid = x * 0.5 + gb;
      x = (mid.relu() - 0.25).sigmoid() * 2.0;
    }
    at::Tensor tx = want, tmid;
    for (int i = 0; i < 40; ++i) {
      tmid = tx * 0.5 + b;
      tx = (tmid.relu() - 0.25).sigmoid() * 2.0;
    }
    CHECK(at::allclose(fetch_double(x), tx.to(at::kDouble), 1e-5, 1e-6));
    CHECK(at::allclose(fetch_double(mid), tmid.to(at::kDouble), 1e-5, 1e-6));
    CHECK_THAT(cluster.worker_log(0), Catch::Contains("first compiled run"));
    CHECK(gt::debug::stats().jit().runs >= 1);
    gt::shutdown();
  }
  CHECK_FALSE(std::filesystem::is_empty(cache.path));
  {
    gt::test::TestCluster cluster(1, jit_env(cache.path, "GT_AUTO_COMPILE"));
    gt::connect(cluster.endpoint());
    const gt::Tensor got = run_loop(40, x0, b);
    CHECK(at::allclose(fetch_double(got), want.to(at::kDouble), 1e-5, 1e-6));
    REQUIRE(cluster.wait_worker_log(0, "compile done", 60s));
    CHECK_THAT(cluster.worker_log(0), Catch::Contains("(cache hit)"));
    gt::shutdown();
  }
}

TEST_CASE("GT_COMPILE compiles a chain at its first repetition and GT_COMPILE_VERIFY checks it",
          "[jit][integration]") {
  TempDir cache;
  at::manual_seed(4);
  const at::Tensor x0 = at::randn({16}), b = at::randn({16});
  auto env = jit_env(cache.path, "GT_COMPILE");
  env["GT_COMPILE_VERIFY"] = "1";
  gt::test::TestCluster cluster(1, env);
  gt::connect(cluster.endpoint());
  const gt::Tensor got = run_loop(4, x0, b);
  CHECK(at::allclose(fetch_double(got), torch_loop(4, x0, b).to(at::kDouble), 1e-5, 1e-6));
  REQUIRE(wait_compiled(2, 60s));  // the loop's two variants (docs/jit.md, stage 3)
  CHECK_THAT(cluster.worker_log(0), Catch::Contains("repetitions"));
  // Later iterations run compiled; the first compiled unit is verified against eager.
  const gt::Tensor more = run_loop(20, x0, b);
  CHECK(at::allclose(fetch_double(more), torch_loop(20, x0, b).to(at::kDouble), 1e-5, 1e-6));
  REQUIRE(cluster.wait_worker_log(0, "verify: chain", 10s));
  CHECK_THAT(cluster.worker_log(0), Catch::Contains("within tolerance") &&
                                        !Catch::Contains("MISMATCH"));
  gt::shutdown();
}

TEST_CASE("a broken compiler leaves the chain eager with one warning and right results",
          "[jit][integration]") {
  TempDir cache;
  at::manual_seed(5);
  const at::Tensor x0 = at::randn({8, 8}), b = at::randn({8});
  auto env = jit_env(cache.path, "GT_AUTO_COMPILE");
  env["CXX"] = "/nonexistent/c++";
  gt::test::TestCluster cluster(1, env);
  gt::connect(cluster.endpoint());
  const gt::Tensor got = run_loop(40, x0, b);
  CHECK(at::allclose(fetch_double(got), torch_loop(40, x0, b).to(at::kDouble), 1e-5, 1e-6));
  REQUIRE(cluster.wait_worker_log(0, "stays eager", 60s));
  const std::string log = cluster.worker_log(0);
  CHECK_THAT(log, Catch::Contains("/nonexistent/c++"));
  // The chain is remembered as failed: later iterations do not retry it.
  (void)run_loop(40, x0, b).sum().item<double>();
  const std::string again = cluster.worker_log(0);
  size_t warnings = 0;
  for (size_t at = again.find("JIT: compiling chain"); at != std::string::npos;
       at = again.find("JIT: compiling chain", at + 1)) {
    ++warnings;
  }
  CHECK(warnings == 1);
  gt::shutdown();
}

namespace {

// Trains a small MLP with Adam on fixed data and returns its parameters.
// Adam's bias corrections change every step (Note [dynamic scalars] in
// worker/jit/chain.h), so the loop body repeats only with its numbers left out.
std::vector<at::Tensor> train_adam(int steps, const std::function<void()>& midway = {}) {
  gt::manual_seed(21);
  gt::nn::Sequential net(gt::nn::Linear(8, 16), gt::nn::ReLU(), gt::nn::Linear(16, 3));
  gt::optim::Adam opt(net->parameters(), gt::optim::AdamOptions(0.01));
  at::manual_seed(22);
  const gt::Tensor x = to_gt(at::randn({32, 8}));
  const gt::Tensor y = to_gt(at::randint(0, 3, {32}, at::kLong));
  for (int step = 0; step < steps; ++step) {
    if (step == steps / 2 && midway) midway();
    opt.zero_grad();
    gt::Tensor loss = gt::nn::functional::cross_entropy(net->forward(x), y);
    loss.backward();
    opt.step();
  }
  std::vector<at::Tensor> out;
  for (const gt::Tensor& p : net->parameters()) out.push_back(fetch_double(p));
  return out;
}

}  // namespace

TEST_CASE("an Adam training step is compiled despite its changing numbers and trains the same",
          "[jit][integration]") {
  TempDir cache;
  std::vector<at::Tensor> eager;
  {
    gt::test::TestCluster cluster(1);
    gt::connect(cluster.endpoint());
    eager = train_adam(60);
    gt::shutdown();
  }
  gt::test::TestCluster cluster(1, jit_env(cache.path, "GT_AUTO_COMPILE"));
  gt::connect(cluster.endpoint());
  // Halfway, wait for the background compile so the second half can run it.
  const std::vector<at::Tensor> compiled = train_adam(60, [] { (void)wait_compiled(2, 60s); });
  const gt::debug::JitStats jit = gt::debug::stats().jit();
  INFO(cluster.worker_log(0));
  CHECK(jit.detected >= 1);
  CHECK(jit.compiled >= 1);
  CHECK(jit.failures == 0);
  // Compiled units ran (or, timed slower than eager, were dropped after the trial).
  CHECK(jit.runs + jit.dropped >= 1);
  REQUIRE(compiled.size() == eager.size());
  for (size_t i = 0; i < eager.size(); ++i) {
    INFO("parameter " << i << ", max abs diff " << (compiled[i] - eager[i]).abs().max().item<double>());
    CHECK(at::allclose(compiled[i], eager[i], 1e-4, 1e-5));
  }
  gt::shutdown();
}
