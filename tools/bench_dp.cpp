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

// Milliseconds per step on a fresh local cluster of `workers` workers.
double step_ms(int workers, const std::string& config, int64_t batch, int steps) {
  ScopedEnv w("GT_WORKERS", std::to_string(workers).c_str());
  ScopedEnv c("GT_CONFIG", workers > 1 ? config.c_str() : nullptr);
  const at::Tensor x = at::randn({4, batch, 784}, at::make_generator<at::CPUGeneratorImpl>(0));
  const at::Tensor y = at::randint(0, 10, {4, batch}, at::make_generator<at::CPUGeneratorImpl>(1));
  std::vector<std::vector<float>> images;
  std::vector<std::vector<int64_t>> labels;
  for (int b = 0; b < 4; ++b) {
    const at::Tensor xb = x[b].contiguous(), yb = y[b].contiguous();
    images.emplace_back(xb.data_ptr<float>(), xb.data_ptr<float>() + xb.numel());
    labels.emplace_back(yb.data_ptr<int64_t>(), yb.data_ptr<int64_t>() + yb.numel());
  }
  gt::init();
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
  const double ms = 1e3 * seconds_since(t0) / steps;
  gt::shutdown();
  return ms;
}

// Seconds per all-reduce of `bytes` through gt: a [2, n] float tensor split
// by rows over two workers, summed over the rows (each worker sums its row,
// a copy, then the workers all-reduce n floats).
double gt_allreduce_s(const std::string& config, int64_t bytes, int iters) {
  ScopedEnv w("GT_WORKERS", "2");
  ScopedEnv c("GT_CONFIG", config.c_str());
  gt::init();
  const int64_t n = bytes / 4;
  gt::Tensor x;
  {
    gt::signal::Context s("split");
    x = gt::ones({2, n});
  }
  gt::Tensor y = x.sum({0});
  y.sum({}).item<float>();  // communicators made, memory touched
  const auto t0 = Clock::now();
  for (int i = 0; i < iters; ++i) y = x.sum({0});
  const float v = y.slice(0, 0, 1).sum({}).item<float>();
  const double s = seconds_since(t0) / iters;
  gt::shutdown();
  if (v != 2.0f) throw gt::Error("[bench] the all-reduce through gt computed a wrong value");
  return s;
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
  AllReduceBenchResult r{bytes, 1e300, 1e300};
  for (int i = 0; i < repeats; ++i) {
    r.gloo_s = std::min(r.gloo_s, gloo_allreduce_s(bytes, iters));
    r.gt_s = std::min(r.gt_s, gt_allreduce_s(config.path, bytes, iters));
  }
  return r;
}

}  // namespace gt::tools
