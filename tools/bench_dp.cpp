// `gt bench dp` and `gt bench allreduce` (docs/benchmarks.md):
// - dp: the Fashion-MNIST MLP's training step (synthetic batches) on a local
//   cluster of 1 worker and, data-parallel, of 2 workers (batch split by
//   rows, parameters replicated, gradients all-reduced), each worker on one
//   LibTorch thread; sides interleaved, best of N each.
// - allreduce: an all-reduce between 2 workers issued through gt (the sum of
//   a tensor split over the workers along the summed axis) against a plain
//   Gloo all-reduce of the same size between two threads of this process.

#include "tools/bench.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

#include <ATen/ATen.h>
#include <gloo/allreduce.h>
#include <gloo/math.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/hash_store.h>
#include <gloo/transport/tcp/device.h>
#include <unistd.h>

#include <gt/gt.h>

#include "client/internal/local_cluster.h"
#include "common/env.h"

namespace gt::tools {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// The data-parallel signals of the benchmark (configs/data_parallel.yaml's).
constexpr const char* kDataParallelConfig = R"(params:
  shard: {replicated: true}
batch:
  shard: {axis: 0}
  backward: grads
grads:
  shard: {replicated: true}
split:
  shard: {axis: 0}
)";

// A config file for the local cluster's dispatcher, removed at the end.
struct ConfigFile {
  std::string path;
  ConfigFile() {
    path = (std::filesystem::temp_directory_path() /
            ("gt-bench-dp-" + std::to_string(::getpid()) + ".yaml"))
               .string();
    std::ofstream(path) << kDataParallelConfig;
  }
  ~ConfigFile() {
    std::error_code ec;
    std::filesystem::remove(path, ec);
  }
};

struct MlpImpl : gt::nn::Module {
  MlpImpl() : Module("Mlp"), fc1(784, 256), fc2(256, 256), fc3(256, 10) {
    register_module("fc1", fc1);
    register_module("fc2", fc2);
    register_module("fc3", fc3);
  }
  gt::Tensor forward(const gt::Tensor& x) const { return fc3(fc2(fc1(x).relu()).relu()); }
  gt::nn::Linear fc1, fc2, fc3;
};
GT_MODULE(Mlp);

// A local cluster of `workers` workers, each on one thread (LibTorch's and
// OpenBLAS's), with `config` as GT_CONFIG; this process's session joins it
// once every worker has registered. The session ends before the cluster.
struct BenchCluster {
  client::LocalCluster cluster;
  BenchCluster(int workers, const std::string& config, std::vector<std::string> env = {})
      : cluster([&] {
          client::LocalClusterOptions o;
          o.executable = client::find_executable(client::ExecutableSearch::from_process());
          o.workers = workers;
          o.threads_per_worker = 1;
          o.env = {"OPENBLAS_NUM_THREADS=1", "OMP_NUM_THREADS=1"};
          if (!config.empty()) o.env.push_back("GT_CONFIG=" + config);
          o.env.insert(o.env.end(), env.begin(), env.end());
          return o;
        }()) {
    gt::connect(cluster.endpoint());
    const auto deadline = Clock::now() + std::chrono::seconds(30);
    while (gt::debug::stats().workers.size() < static_cast<size_t>(workers)) {
      if (Clock::now() > deadline) throw gt::Error("[bench] the workers did not all register");
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  ~BenchCluster() { gt::shutdown(); }
};

// Milliseconds per step on a fresh cluster of `workers` workers.
double step_ms(int workers, const std::string& config, int64_t batch, int steps) {
  BenchCluster c(workers, workers > 1 ? config : "");
  const at::Tensor x = at::randn({4, batch, 784}, at::make_generator<at::CPUGeneratorImpl>(0));
  const at::Tensor y = at::randint(0, 10, {4, batch}, at::make_generator<at::CPUGeneratorImpl>(1));
  std::vector<std::vector<float>> images;
  std::vector<std::vector<int64_t>> labels;
  for (int b = 0; b < 4; ++b) {
    const at::Tensor xb = x[b].contiguous(), yb = y[b].contiguous();
    images.emplace_back(xb.data_ptr<float>(), xb.data_ptr<float>() + xb.numel());
    labels.emplace_back(yb.data_ptr<int64_t>(), yb.data_ptr<int64_t>() + yb.numel());
  }
  gt::manual_seed(0);
  Mlp model(nullptr);
  {
    gt::signal::Context s("params");
    model = Mlp();
  }
  gt::optim::Adam opt(model->parameters(), gt::optim::AdamOptions(1e-3));
  auto run = [&](int n) {
    gt::Tensor loss_sum = gt::zeros({});
    for (int i = 0; i < n; ++i) {
      gt::Tensor loss;
      {
        gt::signal::Context s("batch");
        const gt::Tensor xb = gt::tensor(images[size_t(i % 4)], {batch, 784});
        const gt::Tensor yb = gt::tensor(labels[size_t(i % 4)], {batch});
        loss = gt::nn::functional::cross_entropy(model(xb), yb);
      }
      opt.zero_grad();
      loss.backward();
      opt.step();
      loss_sum = loss_sum + loss.detach();
    }
    return loss_sum.item<double>();
  };
  run(std::max(3, steps / 10));
  const auto t0 = Clock::now();
  run(steps);
  return 1e3 * seconds_since(t0) / steps;
}

// The all-reduce through gt, timed two ways.
struct GtAllReduce {
  double op_s;      // per client op: the row sum, the all-reduce, the stream
  double worker_s;  // the all-reduce as the workers ran it (slower rank, median)
};

// Durations (microseconds) of the all_reduce EXEC events in an instruction
// log file (JSON lines).
std::vector<double> all_reduce_us(const std::string& path) {
  std::vector<double> out;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    if (line.find("\"op\":\"all_reduce\"") == std::string::npos) continue;
    const size_t at = line.find("dur_us=");
    if (at != std::string::npos) out.push_back(std::strtod(line.c_str() + at + 7, nullptr));
  }
  return out;
}

// A [2, n] float tensor split by rows over two workers, summed over the rows:
// each worker sums its row (a copy), then the workers all-reduce n floats.
// The workers' instruction logs give the collective's own duration.
GtAllReduce gt_allreduce(const std::string& config, int64_t bytes, int iters) {
  const std::string dir = (std::filesystem::temp_directory_path() /
                           ("gt-bench-allreduce-" + std::to_string(::getpid())))
                              .string();
  std::filesystem::create_directories(dir);
  GtAllReduce r{};
  {
    BenchCluster c(2, config, {"GT_INSTRUCTION_LOG=" + dir + "/run"});
    const int64_t n = bytes / 4;
    gt::Tensor x;
    {
      gt::signal::Context s("split");
      x = gt::ones({2, n});
    }
    gt::Tensor y = x.sum({0});
    y.sum({}).item<float>();  // communicators made, memory touched
    const auto t0 = Clock::now();
    // The slice (a view of all of it) reads the sum, so its all_reduce runs
    // now: a sum nobody reads is never reduced, and a view by reshape or
    // transpose would stay a partial sum (Note [deferred sums],
    // dispatcher/sharding.cpp).
    for (int i = 0; i < iters; ++i) y = x.sum({0}).slice(0, 0, n);
    const float v = y.slice(0, 0, 1).sum({}).item<float>();
    r.op_s = seconds_since(t0) / iters;
    if (v != 2.0f) throw gt::Error("[bench] the all-reduce through gt computed a wrong value");
  }  // the processes exit: their logs are complete
  const auto w0 = all_reduce_us(dir + "/run.worker-0.jsonl");
  const auto w1 = all_reduce_us(dir + "/run.worker-1.jsonl");
  std::vector<double> slower;
  for (size_t i = 1; i < std::min(w0.size(), w1.size()); ++i) slower.push_back(std::max(w0[i], w1[i]));
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  if (slower.empty()) throw gt::Error("[bench] the workers logged no all_reduce");
  std::nth_element(slower.begin(), slower.begin() + slower.size() / 2, slower.end());
  r.worker_s = slower[slower.size() / 2] / 1e6;
  return r;
}

// Seconds per plain Gloo all-reduce of `bytes` between two threads.
double gloo_allreduce_s(int64_t bytes, int iters) {
  gloo::rendezvous::HashStore store;
  std::vector<double> seconds(2);
  auto rank_main = [&](int rank) {
    gloo::transport::tcp::attr attr;
    attr.hostname = "127.0.0.1";
    auto device = gloo::transport::tcp::CreateDevice(attr);
    auto context = std::make_shared<gloo::rendezvous::Context>(rank, 2);
    context->connectFullMesh(store, device);
    std::vector<float> data(static_cast<size_t>(bytes / 4), 1.0f);
    auto once = [&] {
      gloo::AllreduceOptions opts(context);
      opts.setOutput(data.data(), data.size());
      opts.setReduceFunction(static_cast<void (*)(void*, const void*, const void*, size_t)>(
          &gloo::sum<float>));
      gloo::allreduce(opts);
    };
    once();
    const auto t0 = Clock::now();
    for (int i = 0; i < iters; ++i) once();
    seconds[size_t(rank)] = seconds_since(t0) / iters;
  };
  std::thread other(rank_main, 1);
  rank_main(0);
  other.join();
  return std::max(seconds[0], seconds[1]);
}

}  // namespace

DataParallelBenchResult bench_data_parallel(int64_t batch, int steps, int repeats) {
  const ConfigFile config;
  gt::shutdown();
  DataParallelBenchResult r{1e300, 1e300};
  for (int i = 0; i < repeats; ++i) {
    r.one_worker_ms = std::min(r.one_worker_ms, step_ms(1, config.path, batch, steps));
    r.two_workers_ms = std::min(r.two_workers_ms, step_ms(2, config.path, batch, steps));
  }
  return r;
}

AllReduceBenchResult bench_allreduce(int64_t bytes, int iters, int repeats) {
  const ConfigFile config;
  gt::shutdown();
  AllReduceBenchResult r{bytes, 1e300, 1e300, 1e300};
  for (int i = 0; i < repeats; ++i) {
    r.gloo_s = std::min(r.gloo_s, gloo_allreduce_s(bytes, iters));
    const GtAllReduce g = gt_allreduce(config.path, bytes, iters);
    r.gt_s = std::min(r.gt_s, g.op_s);
    r.worker_s = std::min(r.worker_s, g.worker_s);
  }
  return r;
}

}  // namespace gt::tools
