// `gt bench train`: one training step of the Fashion-MNIST MLP (784-256-256-10,
// ReLU, cross-entropy, Adam) through gt against the same model in LibTorch C++
// eager in this process. Both run on the same synthetic batches (a fixed set
// drawn once, cycled), so no dataset is needed and the data upload per step is
// the same as in the real training loop. A third side runs gt with
// GT_AUTO_COMPILE=1 on its own local cluster, measured once the worker has
// compiled the step and decided its trial (docs/jit.md).

#include "common/env.h"
#include "tools/bench.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include <torch/torch.h>

#include <gt/gt.h>

namespace gt::tools {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

constexpr int kBatches = 8;  // distinct batches cycled through

struct HostBatch {
  std::vector<float> images;
  std::vector<int64_t> labels;
};

std::vector<HostBatch> make_batches(int64_t batch) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(0);
  std::vector<HostBatch> out;
  for (int b = 0; b < kBatches; ++b) {
    const at::Tensor x = at::randn({batch, 784}, gen, at::kFloat);
    const at::Tensor y = at::randint(0, 10, {batch}, gen, at::kLong);
    out.push_back({std::vector<float>(x.data_ptr<float>(), x.data_ptr<float>() + x.numel()),
                   std::vector<int64_t>(y.data_ptr<int64_t>(), y.data_ptr<int64_t>() + batch)});
  }
  return out;
}

struct TorchMlpImpl : torch::nn::Module {
  TorchMlpImpl()
      : fc1(register_module("fc1", torch::nn::Linear(784, 256))),
        fc2(register_module("fc2", torch::nn::Linear(256, 256))),
        fc3(register_module("fc3", torch::nn::Linear(256, 10))) {}
  torch::Tensor forward(const torch::Tensor& x) {
    return fc3(torch::relu(fc2(torch::relu(fc1(x)))));
  }
  torch::nn::Linear fc1, fc2, fc3;
};

struct GtMlpImpl : gt::nn::Module {
  GtMlpImpl() : Module("Mlp"), fc1(784, 256), fc2(256, 256), fc3(256, 10) {
    register_module("fc1", fc1);
    register_module("fc2", fc2);
    register_module("fc3", fc3);
  }
  gt::Tensor forward(const gt::Tensor& x) const { return fc3(fc2(fc1(x).relu()).relu()); }
  gt::nn::Linear fc1, fc2, fc3;
};

// Milliseconds per step over `steps` steps after `warmup` steps; the data of
// each step is uploaded from host vectors as a training loop does. The loss is
// fetched once at the end (the loop pipelines, as the real example does).
double torch_step_ms(const std::vector<HostBatch>& data, int64_t batch, int warmup, int steps) {
  torch::manual_seed(0);
  auto model = std::make_shared<TorchMlpImpl>();
  torch::optim::Adam opt(model->parameters(), torch::optim::AdamOptions(1e-3));
  auto run = [&](int n, int offset) {
    torch::Tensor loss_sum = torch::zeros({});
    for (int i = 0; i < n; ++i) {
      const HostBatch& b = data[(offset + i) % kBatches];
      const auto x = torch::from_blob(const_cast<float*>(b.images.data()), {batch, 784}).clone();
      const auto y =
          torch::from_blob(const_cast<int64_t*>(b.labels.data()), {batch}, torch::kInt64).clone();
      opt.zero_grad();
      auto loss = torch::nn::functional::cross_entropy(model->forward(x), y);
      loss.backward();
      opt.step();
      loss_sum += loss.detach();
    }
    return loss_sum.item<double>();
  };
  run(warmup, 0);
  const auto t0 = Clock::now();
  run(steps, warmup);
  return 1e3 * seconds_since(t0) / steps;
}

// With `jit`, the warm-up goes on until the worker's JIT has run the
// compiled step through its trial (kept or dropped), at most 60 s.
double gt_step_ms(const std::vector<HostBatch>& data, int64_t batch, int warmup, int steps,
                  bool jit = false, bool* kept = nullptr, double* compiled_share = nullptr,
                  double* elided_share = nullptr) {
  gt::manual_seed(0);
  GtMlpImpl model;
  gt::optim::Adam opt(model.parameters(), gt::optim::AdamOptions(1e-3));
  auto run = [&](int n, int offset) {
    gt::Tensor loss_sum = gt::zeros({});
    for (int i = 0; i < n; ++i) {
      const HostBatch& b = data[(offset + i) % kBatches];
      const gt::Tensor x = gt::tensor(b.images, {batch, 784});
      const gt::Tensor y = gt::tensor(b.labels, {batch});
      opt.zero_grad();
      gt::Tensor loss = gt::nn::functional::cross_entropy(model.forward(x), y);
      loss.backward();
      opt.step();
      loss_sum = loss_sum + loss.detach();
    }
    return loss_sum.item<double>();
  };
  run(warmup, 0);
  if (jit) {
    const auto start = Clock::now();
    gt::debug::JitStats s = gt::debug::stats().jit();
    // Five compiled and five eager trial units decide; runs counts the
    // compiled ones.
    while (s.failures == 0 && s.dropped == 0 && s.runs < 6 && seconds_since(start) < 60) {
      run(10, warmup);
      s = gt::debug::stats().jit();
    }
    if (kept) *kept = s.dropped == 0 && s.failures == 0 && s.runs >= 6;
  }
  const gt::debug::JitStats before = jit ? gt::debug::stats().jit() : gt::debug::JitStats{};
  const auto t0 = Clock::now();
  run(steps, warmup);
  const double ms = 1e3 * seconds_since(t0) / steps;
  if (jit && compiled_share && elided_share) {
    const gt::debug::JitStats after = gt::debug::stats().jit();
    *compiled_share = static_cast<double>(after.runs - before.runs) / steps;
    *elided_share = static_cast<double>(after.elided_runs - before.elided_runs) / steps;
  }
  return ms;
}

}  // namespace

TrainBenchResult bench_train_step(int64_t batch, int steps, int repeats) {
  const auto data = make_batches(batch);
  const int warmup = std::max(10, steps / 10);
  TrainBenchResult r{1e300, 1e300, 1e300, true, 0, 0};
  // Interleaved, best of N: all sides see the same machine state. Each gt
  // side gets its own local cluster (the JIT is a worker setting).
  for (int i = 0; i < repeats; ++i) {
    r.libtorch_ms = std::min(r.libtorch_ms, torch_step_ms(data, batch, warmup, steps));
    gt::shutdown();
    {
      ScopedEnv off("GT_AUTO_COMPILE", nullptr), all("GT_COMPILE", nullptr);
      r.gt_ms = std::min(r.gt_ms, gt_step_ms(data, batch, warmup, steps));
      gt::shutdown();
    }
    {
      ScopedEnv on("GT_AUTO_COMPILE", "1");
      bool kept = false;
      double share = 0, elided = 0;
      const double ms = gt_step_ms(data, batch, warmup, steps, true, &kept, &share, &elided);
      if (ms < r.jit_ms) {
        r.jit_compiled_share = share;
        r.jit_elided_share = elided;
      }
      r.jit_ms = std::min(r.jit_ms, ms);
      r.jit_kept = r.jit_kept && kept;
      gt::shutdown();
    }
  }
  return r;
}

}  // namespace gt::tools
