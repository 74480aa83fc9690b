// Sharding through real processes: a dispatcher with a YAML signal config and
// 2 or 3 CPU workers. Every sharded op and matmul layout must give what
// LibTorch gives on one device (which is what a single gt worker gives), the
// shards must really live on different workers, and gradients must follow
// the `backward` entries.

// LibTorch (through glog) defines CHECK too: include it before Catch so that
// Catch's CHECK wins.
#include <ATen/ATen.h>

#include "tests/integration/torch_compare.h"

#include <catch2/catch.hpp>

#include <chrono>
#include <fstream>
#include <map>
#include <string>
#include <thread>

#include <gt/gt.h>

#include "tests/support/cluster.h"
#include "tests/support/temp_dir.h"

namespace {

using gt::test::fetch_double;
using gt::test::to_gt;

// Every signal the cases use; `workers` omitted means all workers.
constexpr const char* kConfig = R"(
rows:   {shard: {axis: 0}}
cols:   {shard: {axis: -1}}
mid:    {shard: {axis: 1}}
whole:  {shard: {replicated: true}}
first:  {shard: {replicated: true, workers: [0]}}
second: {shard: {replicated: true, workers: [1]}}
pair:   {shard: {axis: 0, workers: [0, 1]}}
train:
  shard: {axis: 0}
  backward: grads
grads:  {shard: {replicated: true}}
unit:   {compile: true}
fwd:
  shard: {replicated: true, workers: [0]}
  backward: bwd
bwd:    {shard: {replicated: true, workers: [1]}}
)";

// Waits until `n` workers have registered (a session may open before the
// last one has, and "all workers" means those alive when an op is placed).
void wait_workers(size_t n) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (gt::debug::stats().workers.size() < n && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  REQUIRE(gt::debug::stats().workers.size() == n);
}

// A cluster of `workers` workers whose dispatcher reads kConfig.
struct ShardedCluster {
  gt::test::TempDir dir{"gt-shard"};
  std::string config_path = write(kConfig);
  gt::test::TestCluster cluster;

  explicit ShardedCluster(int workers, std::map<std::string, std::string> env = {})
      : cluster(workers, with_config(std::move(env))) {
    gt::connect(cluster.endpoint());
    wait_workers(static_cast<size_t>(workers));
  }
  ~ShardedCluster() { gt::shutdown(); }  // before the processes stop
  std::string write(const std::string& text) {
    const std::string path = dir / "signals.yaml";
    std::ofstream(path) << text;
    return path;
  }
  std::map<std::string, std::string> with_config(std::map<std::string, std::string> env) {
    env.emplace("GT_CONFIG", config_path);
    return env;
  }
};

at::Tensor randn(std::vector<int64_t> shape, uint64_t seed) {
  return at::randn(shape, at::make_generator<at::CPUGeneratorImpl>(seed), at::kDouble);
}

void check_close(const gt::Tensor& got, const at::Tensor& want, double tol = 1e-9) {
  const at::Tensor g = fetch_double(got);
  REQUIRE(g.sizes() == want.sizes());
  CHECK(at::allclose(g, want.to(at::kDouble), tol, tol));
}

// Live tensors of this session on each worker.
std::vector<uint64_t> tensors_per_worker() {
  std::vector<uint64_t> out;
  for (const auto& w : gt::debug::stats().workers) out.push_back(w.session_tensors);
  return out;
}

}  // namespace

TEST_CASE("elementwise ops on equally split operands run per shard", "[sharding][integration]") {
  const int workers = GENERATE(2, 3);
  ShardedCluster c(workers);
  const at::Tensor x = randn({7, 5}, 1), y = randn({7, 5}, 2), b = randn({5}, 3);
  gt::Tensor gx, gy, gb;
  {
    gt::signal::Context rows("rows");
    gx = to_gt(x);
    gy = to_gt(y);
  }
  {
    gt::signal::Context whole("whole");
    gb = to_gt(b);
  }
  // Every worker holds a shard of x and y (7 rows: uneven for 2 and 3).
  const auto held = tensors_per_worker();
  REQUIRE(held.size() == static_cast<size_t>(workers));
  for (uint64_t n : held) CHECK(n == 3);
  const gt::Tensor z = ((gx * gy + 1.5) / (gx.abs() + 1)).relu() - gb;
  check_close(z, ((x * y + 1.5) / (x.abs() + 1)).relu() - b);
  check_close(gx.exp().sigmoid() * 2, x.exp().sigmoid() * 2);
  check_close(gt::where(gx > gy, gx, gy), at::where(x > y, x, y));
}

TEST_CASE("matmul layouts: rows, columns and the contraction dim", "[sharding][integration]") {
  const int workers = GENERATE(2, 3);
  ShardedCluster c(workers);
  const at::Tensor x = randn({9, 6}, 4), w = randn({6, 5}, 5);
  gt::Tensor gx_rows, gx_mid, gw_whole, gw_cols, gw_rows, gx_whole;
  {
    gt::signal::Context s("rows");
    gx_rows = to_gt(x);
    gw_rows = to_gt(w);  // split along its rows: the contraction dim
  }
  {
    gt::signal::Context s("mid");
    gx_mid = to_gt(x);  // split along its columns: the contraction dim
  }
  {
    gt::signal::Context s("cols");
    gw_cols = to_gt(w);
  }
  {
    gt::signal::Context s("whole");
    gw_whole = to_gt(w);
    gx_whole = to_gt(x);
  }
  const at::Tensor want = at::matmul(x, w);
  check_close(gx_rows.matmul(gw_whole), want);  // row-parallel left
  check_close(gx_whole.matmul(gw_cols), want);  // column-parallel right
  check_close(gx_mid.matmul(gw_rows), want);    // contraction split: all_reduce
  check_close(gx_whole.matmul(gw_rows), want);  // left sliced to match
  check_close(gx_rows.matmul(gw_cols), want);   // conflicting: right gathered
  // Batched: a 3-D left split along its batch dim.
  const at::Tensor bx = randn({4, 3, 6}, 6);
  gt::Tensor gbx;
  {
    gt::signal::Context s("rows");
    gbx = to_gt(bx);
  }
  check_close(gbx.matmul(gw_whole), at::matmul(bx, w));
}

TEST_CASE("reductions over a split axis all-reduce, over other axes stay split",
          "[sharding][integration]") {
  const int workers = GENERATE(2, 3);
  ShardedCluster c(workers);
  const at::Tensor x = randn({8, 3, 2}, 7);
  gt::Tensor g;
  {
    gt::signal::Context s("rows");
    g = to_gt(x);
  }
  check_close(g.sum({0}), x.sum(at::IntArrayRef{0}));
  check_close(g.sum({}), x.sum());
  check_close(g.mean({0, 2}), x.mean(at::IntArrayRef{0, 2}));
  check_close(g.mean({}), x.mean());
  check_close(g.max({0}), std::get<0>(x.max(0)));
  check_close(g.min({}), x.min());
  check_close(g.sum({1}, true), x.sum(at::IntArrayRef{1}, true));  // stays split
  check_close(g.softmax(1), x.softmax(1));
  check_close(g.log_softmax(0), x.log_softmax(0));  // along the split axis: gathered
  check_close(g.argmax(2).to(gt::kFloat64), x.argmax(2).to(at::kDouble));
}

TEST_CASE("shape ops keep or move the split axis; mismatched layouts are resharded",
          "[sharding][integration]") {
  const int workers = GENERATE(2, 3);
  ShardedCluster c(workers);
  const at::Tensor x = randn({6, 4, 2}, 8), y = randn({6, 4, 2}, 9);
  gt::Tensor gx, gy;
  {
    gt::signal::Context s("rows");
    gx = to_gt(x);
  }
  {
    gt::signal::Context s("cols");
    gy = to_gt(y);  // split along the last axis: mismatched with gx
  }
  check_close(gx + gy, x + y);
  check_close(gx.transpose(0, 2), x.transpose(0, 2));
  check_close(gx.permute({2, 0, 1}), x.permute({2, 0, 1}));
  check_close(gx.reshape({6, 8}), x.reshape({6, 8}));
  check_close(gx.reshape({48}), x.reshape({48}));  // merges the split axis: gathered
  check_close(gx.unsqueeze(0).squeeze(0), x);
  check_close(gx.slice(1, 1, 3), x.slice(1, 1, 3));
  check_close(gx.slice(0, 1, 5, 2), x.slice(0, 1, 5, 2));  // along the split axis
  check_close(gt::cat({gx, gx}, 1), at::cat({x, x}, 1));
  check_close(gt::cat({gx, gy}, 0), at::cat({x, y}, 0));
  check_close(gt::stack({gx, gx}, 0), at::stack({x, x}, 0));
  check_close(gx.flatten(), x.flatten());
}

TEST_CASE("nested scopes: the innermost entry places, leaving restores the outer",
          "[sharding][integration]") {
  ShardedCluster c(2);
  gt::Tensor a, b, d;
  {
    gt::signal::Context outer("first");
    a = gt::ones({4, 4});
    {
      gt::signal::Context inner("second");
      b = gt::full({4, 4}, 2.0);
    }
    d = gt::zeros({4, 4});
  }
  auto held = tensors_per_worker();
  CHECK((held == std::vector<uint64_t>{2, 1}));
  // An op on tensors of different workers runs where the scope says.
  gt::Tensor sum;
  {
    gt::signal::Context s("second");
    sum = a + b;
  }
  check_close(sum, at::full({4, 4}, 3.0, at::kDouble));
  // a was copied to worker 1 and keeps that copy (Note [widening]).
  held = tensors_per_worker();
  CHECK((held == std::vector<uint64_t>{2, 3}));
  // Pipeline stages: each stage's ops on its worker, values handed over.
  gt::Tensor h;
  {
    gt::signal::Context s("first");
    h = (a * 3).relu();
  }
  {
    gt::signal::Context s("second");
    h = h.matmul(b) + 1;
  }
  check_close(h, at::full({4, 4}, 25.0, at::kDouble));
}

TEST_CASE("backward signals place gradients; values match LibTorch",
          "[sharding][integration]") {
  const int workers = GENERATE(2, 3);
  ShardedCluster c(workers);
  const at::Tensor x = randn({10, 4}, 11), w = randn({4, 3}, 12), bias = randn({3}, 13);
  gt::Tensor gx, gw, gb;
  {
    gt::signal::Context s("whole");
    gw = to_gt(w).requires_grad_();
    gb = to_gt(bias).requires_grad_();
  }
  gt::Tensor loss;
  {
    gt::signal::Context s("train");
    gx = to_gt(x);
    loss = (gx.matmul(gw) + gb).tanh().pow(2.0).mean({});
  }
  loss.backward();
  at::Tensor tw = w.clone().requires_grad_(), tb = bias.clone().requires_grad_();
  at::Tensor tl = (x.matmul(tw) + tb).tanh().pow(2).mean();
  tl.backward();
  check_close(loss, tl.detach());
  check_close(gw.grad(), tw.grad());
  check_close(gb.grad(), tb.grad());
}

TEST_CASE("a backward entry computes the gradients on its own workers", "[sharding][integration]") {
  ShardedCluster c(2);
  gt::Tensor w;
  {
    gt::signal::Context s("first");
    w = gt::ones({3, 3}).requires_grad_();
  }
  {
    gt::signal::Context s("fwd");  // forward on worker 0, gradients on worker 1
    gt::Tensor loss = (w * 2).exp().sum({});
    const auto before = tensors_per_worker();
    CHECK(before[0] >= 2);
    CHECK(before[1] == 0);
    loss.backward();
  }
  check_close(w.grad(), at::full({3, 3}, 2 * std::exp(2.0), at::kDouble), 1e-5);
  // Worker 1 computed the gradient ops: w's gradient lives there (and so,
  // copied for them, do the forward values they read).
  const auto held = tensors_per_worker();
  CHECK(held[1] >= 1);
}

TEST_CASE("fetches gather uneven shards along any axis", "[sharding][integration]") {
  ShardedCluster c(3);
  for (const char* signal : {"rows", "mid", "cols"}) {
    const at::Tensor x = randn({5, 7, 2}, 14);
    gt::Tensor g;
    {
      gt::signal::Context s(signal);
      g = to_gt(x);
    }
    check_close(g, x);
    CHECK(g.to_vector<double>().size() == 70);
  }
  // A tensor with fewer rows than workers: one shard is empty.
  gt::Tensor tiny;
  {
    gt::signal::Context s("rows");
    tiny = gt::arange(2).to(gt::kFloat64);
  }
  check_close(tiny * 2, at::arange(2, at::kDouble) * 2);
  check_close(tiny.sum({}), at::full({}, 1.0, at::kDouble));
}

TEST_CASE("data-parallel training reaches the single-worker loss", "[sharding][integration]") {
  // The same MLP, data and steps on 1 worker and on 2 (batch split,
  // parameters replicated, gradients all-reduced): the losses agree.
  auto train = [](int workers) {
    ShardedCluster c(workers);
    const at::Tensor x = randn({32, 8}, 20);
    const at::Tensor labels = at::arange(32, at::kLong).remainder(4);
    gt::manual_seed(7);
    gt::nn::Linear fc1(nullptr), fc2(nullptr);
    {
      gt::signal::Context s("whole");
      fc1 = gt::nn::Linear(8, 16);
      fc2 = gt::nn::Linear(16, 4);
    }
    std::vector<gt::Tensor> params = fc1->parameters();
    for (auto& p : fc2->parameters()) params.push_back(p);
    gt::optim::SGD opt(params, gt::optim::SGDOptions(0.1).momentum(0.9));
    std::vector<double> losses;
    for (int step = 0; step < 15; ++step) {
      gt::Tensor loss;
      {
        gt::signal::Context s("train");
        gt::Tensor gx = to_gt(x.to(at::kFloat));
        gt::Tensor gy = to_gt(labels);
        loss = gt::nn::functional::cross_entropy(fc2(fc1(gx).relu()), gy);
      }
      opt.zero_grad();
      loss.backward();
      opt.step();
      losses.push_back(loss.item<float>());
    }
    return losses;
  };
  const auto one = train(1);
  const auto two = train(2);
  REQUIRE(one.size() == two.size());
  CHECK(one.back() < one.front() * 0.8);  // it learns
  for (size_t i = 0; i < one.size(); ++i) CHECK(two[i] == Approx(one[i]).epsilon(1e-4));
}

TEST_CASE("GT_AUTO_SHARD splits large batch tensors over all workers", "[sharding][integration]") {
  gt::test::TestCluster cluster(2, {{"GT_AUTO_SHARD", "1"}, {"GT_AUTO_SHARD_MIN_BYTES", "1024"}});
  gt::connect(cluster.endpoint());
  struct Leave {
    ~Leave() { gt::shutdown(); }
  } leave;
  wait_workers(2);
  const at::Tensor x = randn({64, 16}, 30), small = randn({4}, 31);
  const gt::Tensor gx = to_gt(x);      // 8 KiB: split by rows
  const gt::Tensor gs = to_gt(small);  // 32 bytes: stays on one worker
  const auto held = tensors_per_worker();
  REQUIRE(held.size() == 2);
  CHECK(held[0] >= 1);
  CHECK(held[1] >= 1);
  CHECK(held[0] + held[1] == 3);
  check_close((gx * 2).sum({1}), (x * 2).sum(at::IntArrayRef{1}));
  check_close(gx.mean({}), x.mean());
  check_close(gx.slice(1, 0, 4) + gs, x.slice(1, 0, 4) + small);
}

TEST_CASE("bad configs and scopes give clear errors", "[sharding][integration]") {
  SECTION("a signal placing tensors on a worker the cluster lacks") {
    ShardedCluster c(1);
    gt::Tensor t;
    {
      gt::signal::Context s("second");  // worker 1 of a one-worker cluster
      t = gt::ones({2});
    }
    try {
      gt::synchronize();
      FAIL("expected an error");
    } catch (const gt::Error& e) {
      const std::string m = e.what();
      CHECK(m.find("signal 'second'") != std::string::npos);
      CHECK(m.find("worker 1") != std::string::npos);
    }
  }
  SECTION("GT_CONFIG that does not parse stops the dispatcher with the file and key") {
    gt::test::TempDir dir("gt-shard");
    const std::string path = dir / "bad.yaml";
    std::ofstream(path) << "rows:\n  shard: {axis: zero}\n";
    CHECK_THROWS_WITH(gt::test::TestCluster(1, {{"GT_CONFIG", path}}),
                      Catch::Contains("rows.shard.axis"));
  }
  SECTION("a session config is checked when it is set") {
    ShardedCluster c(2);
    const gt::Config bad = gt::parse_config("rows: {shard: {axis: 0, workers: [0, 5]}}", "mine.yaml");
    CHECK_THROWS_WITH(gt::set_config(bad), Catch::Contains("workers[1]"));
    gt::set_config(gt::parse_config("mine: {shard: {axis: 0, workers: [1]}}", "mine.yaml"));
    gt::Tensor t;
    {
      gt::signal::Context s("mine");
      t = gt::ones({3, 2});
    }
    CHECK((tensors_per_worker() == std::vector<uint64_t>{0, 1}));
    check_close(t.sum({}), at::full({}, 6.0, at::kDouble));
  }
}

TEST_CASE("a compile: true scope is a JIT unit at its first run, without detection",
          "[sharding][integration]") {
  gt::test::TempDir cache("gt-shard-cache");
  // A threshold the loop never reaches: only the scope can make the unit.
  ShardedCluster c(1, {{"GT_AUTO_COMPILE", "1"},
                       {"GT_HOTPATH_THRESHOLD", "1000"},
                       {"GT_DEBUG_COMPILE", "1"},
                       {"GT_COMPILE_CACHE_DIR", cache.path.string()}});
  const at::Tensor x = randn({64, 32}, 40);
  const gt::Tensor gx = to_gt(x);
  const at::Tensor want = ((x * 2 + 1).relu() * 3 - x).tanh();
  auto step = [&] {
    gt::Tensor y;
    {
      gt::signal::Context s("unit");
      y = ((gx * 2 + 1).relu() * 3 - gx).tanh();
    }
    check_close(y, want, 1e-6);
  };
  step();
  // Once its variants are compiled (in the background), later runs of the
  // scope match the unit and run compiled.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(90);
  gt::debug::JitStats jit = gt::debug::stats().jit();
  while (jit.runs == 0 && jit.failures == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    step();
    jit = gt::debug::stats().jit();
  }
  INFO(c.cluster.worker_log(0));
  CHECK(jit.failures == 0);
  CHECK(jit.runs >= 1);
  // Units from the scope only (the detector would need 1000 repetitions):
  // the first run, and the next whose input, now older, signs differently.
  CHECK(jit.detected >= 1);
  CHECK(jit.detected <= 2);
}
