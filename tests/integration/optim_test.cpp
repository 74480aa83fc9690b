// gt::optim against torch::optim (same parameters, same gradients), training
// a small MLP against LibTorch eager, and gt::data's DataLoader through a real
// cluster.

// LibTorch (through glog) defines CHECK too: include it before Catch so that
// Catch's CHECK wins.
#include "tests/integration/torch_compare.h"

#include <torch/torch.h>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "tests/support/cluster.h"

using gt::test::to_gt;

namespace {

// A gt float32 tensor fetched as a local float32 tensor (exact).
at::Tensor fetch_float(const gt::Tensor& t) {
  std::vector<float> v = t.to_vector<float>();
  return at::tensor(v, at::kFloat).reshape(t.shape());
}

// Float32 results of the same update rule agree to rounding.
bool close(const at::Tensor& got, const at::Tensor& want) {
  return at::allclose(got, want, /*rtol=*/1e-6, /*atol=*/1e-7);
}

// Gives a gt leaf the gradient g exactly: d/dp sum(p * g) = 1 * g.
void set_gt_grad(const gt::Tensor& p, const at::Tensor& g) {
  (p * to_gt(g)).sum().backward();
}

// The same parameters in gt (leaves that require grad) and in LibTorch.
struct Params {
  std::vector<gt::Tensor> gt;
  std::vector<at::Tensor> torch;
};

Params make_params(const std::vector<std::vector<int64_t>>& shapes) {
  Params p;
  for (const auto& s : shapes) {
    const at::Tensor init = at::randn(s, at::kFloat);
    gt::Tensor g = to_gt(init);
    g.requires_grad_();
    p.gt.push_back(g);
    p.torch.push_back(init.clone().requires_grad_());
  }
  return p;
}

using GtMaker = std::function<std::unique_ptr<gt::optim::Optimizer>(std::vector<gt::Tensor>)>;
using TorchMaker = std::function<std::unique_ptr<torch::optim::Optimizer>(std::vector<at::Tensor>)>;

// `steps` steps with random gradients; has_grad(step, i) says whether
// parameter i gets a gradient at that step (LibTorch skips it otherwise, and
// so must gt). Compares every parameter after every step.
void compare_steps(
    const std::string& name, const GtMaker& make_gt, const TorchMaker& make_torch, int steps = 5,
    const std::function<bool(int, size_t)>& has_grad = [](int, size_t) { return true; }) {
  INFO("optimizer: " << name);
  at::manual_seed(11);
  Params p = make_params({{3, 4}, {5}, {2, 1, 3}});
  auto gt_opt = make_gt(p.gt);
  auto torch_opt = make_torch(p.torch);
  for (int step = 0; step < steps; ++step) {
    INFO("step " << step);
    gt_opt->zero_grad();
    for (size_t i = 0; i < p.gt.size(); ++i) {
      if (!has_grad(step, i)) {
        p.torch[i].mutable_grad() = at::Tensor();
        continue;
      }
      const at::Tensor g = at::randn(p.torch[i].sizes(), at::kFloat);
      set_gt_grad(p.gt[i], g);
      p.torch[i].mutable_grad() = g.clone();
    }
    gt_opt->step();
    torch_opt->step();
    for (size_t i = 0; i < p.gt.size(); ++i) {
      INFO("parameter " << i);
      const at::Tensor got = fetch_float(p.gt[i]);
      const at::Tensor want = p.torch[i].detach();
      INFO("max abs diff " << (got - want).abs().max().item<float>());
      CHECK(close(got, want));
    }
  }
}

struct SgdCase {
  std::string name;
  gt::optim::SGDOptions gt;
  torch::optim::SGDOptions torch;
};

std::vector<SgdCase> sgd_cases() {
  using G = gt::optim::SGDOptions;
  using T = torch::optim::SGDOptions;
  return {
      {"plain", G(0.1), T(0.1)},
      {"momentum", G(0.1).momentum(0.9), T(0.1).momentum(0.9)},
      {"momentum and dampening", G(0.05).momentum(0.8).dampening(0.3),
       T(0.05).momentum(0.8).dampening(0.3)},
      {"weight decay", G(0.1).weight_decay(0.2), T(0.1).weight_decay(0.2)},
      {"nesterov with weight decay", G(0.1).momentum(0.9).nesterov(true).weight_decay(0.05),
       T(0.1).momentum(0.9).nesterov(true).weight_decay(0.05)},
  };
}

GtMaker gt_sgd(gt::optim::SGDOptions o) {
  return [o](std::vector<gt::Tensor> ps) {
    return std::make_unique<gt::optim::SGD>(std::move(ps), o);
  };
}
TorchMaker torch_sgd(torch::optim::SGDOptions o) {
  return [o](std::vector<at::Tensor> ps) {
    return std::make_unique<torch::optim::SGD>(std::move(ps), o);
  };
}
GtMaker gt_adam(gt::optim::AdamOptions o) {
  return [o](std::vector<gt::Tensor> ps) {
    return std::make_unique<gt::optim::Adam>(std::move(ps), o);
  };
}
TorchMaker torch_adam(torch::optim::AdamOptions o) {
  return [o](std::vector<at::Tensor> ps) {
    return std::make_unique<torch::optim::Adam>(std::move(ps), o);
  };
}
GtMaker gt_adamw(gt::optim::AdamWOptions o) {
  return [o](std::vector<gt::Tensor> ps) {
    return std::make_unique<gt::optim::AdamW>(std::move(ps), o);
  };
}
TorchMaker torch_adamw(torch::optim::AdamWOptions o) {
  return [o](std::vector<at::Tensor> ps) {
    return std::make_unique<torch::optim::AdamW>(std::move(ps), o);
  };
}

}  // namespace

// ---- update rules ----------------------------------------------------------------------------

TEST_CASE("SGD updates match torch::optim::SGD for every option", "[optim][integration]") {
  gt::test::connect_shared_cluster();
  for (const SgdCase& c : sgd_cases()) {
    compare_steps("SGD " + c.name, gt_sgd(c.gt), torch_sgd(c.torch));
  }
}

TEST_CASE("Adam and AdamW updates match torch::optim", "[optim][integration]") {
  gt::test::connect_shared_cluster();
  // Learning rates well above the default, so that a wrong rule shows far
  // beyond rounding.
  compare_steps("Adam default", gt_adam(gt::optim::AdamOptions(0.05)),
                torch_adam(torch::optim::AdamOptions(0.05)));
  compare_steps("Adam betas, eps and weight decay",
                gt_adam(gt::optim::AdamOptions(0.03).betas({0.8, 0.9}).eps(1e-3).weight_decay(0.1)),
                torch_adam(torch::optim::AdamOptions(0.03)
                               .betas(std::make_tuple(0.8, 0.9))
                               .eps(1e-3)
                               .weight_decay(0.1)));
  // A small beta2 lets the second moment fall below its running maximum.
  compare_steps(
      "Adam amsgrad", gt_adam(gt::optim::AdamOptions(0.05).betas({0.9, 0.5}).amsgrad(true)),
      torch_adam(torch::optim::AdamOptions(0.05).betas(std::make_tuple(0.9, 0.5)).amsgrad(true)),
      8);
  compare_steps("AdamW default", gt_adamw(gt::optim::AdamWOptions(0.05)),
                torch_adamw(torch::optim::AdamWOptions(0.05)));
  compare_steps("AdamW weight decay and amsgrad",
                gt_adamw(gt::optim::AdamWOptions(0.05).weight_decay(0.3).amsgrad(true)),
                torch_adamw(torch::optim::AdamWOptions(0.05).weight_decay(0.3).amsgrad(true)));
}

TEST_CASE("optimizer step skips parameters without a gradient", "[optim][integration]") {
  gt::test::connect_shared_cluster();
  // Parameter 1 never has a gradient; parameter 2 misses steps 1 and 2, so
  // its momentum buffer and Adam step count must stay untouched meanwhile.
  const auto has_grad = [](int step, size_t i) {
    return i == 0 || (i == 2 && step != 1 && step != 2);
  };
  compare_steps("SGD momentum", gt_sgd(gt::optim::SGDOptions(0.1).momentum(0.9)),
                torch_sgd(torch::optim::SGDOptions(0.1).momentum(0.9)), 5, has_grad);
  compare_steps("Adam", gt_adam(gt::optim::AdamOptions(0.05).weight_decay(0.1)),
                torch_adam(torch::optim::AdamOptions(0.05).weight_decay(0.1)), 5, has_grad);
  compare_steps("AdamW", gt_adamw(gt::optim::AdamWOptions(0.05)),
                torch_adamw(torch::optim::AdamWOptions(0.05)), 5, has_grad);

  // Without any gradient a step changes nothing.
  at::manual_seed(3);
  Params p = make_params({{4}});
  gt::optim::Adam idle(p.gt, gt::optim::AdamOptions(0.1));
  idle.step();
  CHECK(at::equal(fetch_float(p.gt[0]), p.torch[0].detach()));
}

TEST_CASE("optimizer zero_grad clears gradients and the next backward starts afresh",
          "[optim][integration]") {
  gt::test::connect_shared_cluster();
  gt::Tensor w = gt::tensor(std::vector<float>{1, 2, 3}, {3}).requires_grad_();
  gt::Tensor b = gt::tensor(std::vector<float>{0.5f}, {1}).requires_grad_();
  gt::optim::SGD opt({w, b}, gt::optim::SGDOptions(0.1));
  (w * 2.0 + b).sum().backward();
  (w * 2.0 + b).sum().backward();  // accumulates: grad w = 4, grad b = 6
  REQUIRE(w.grad().defined());
  CHECK(w.grad().to_vector<float>() == std::vector<float>{4, 4, 4});
  CHECK(b.grad().to_vector<float>() == std::vector<float>{6});
  opt.zero_grad();
  CHECK_FALSE(w.grad().defined());
  CHECK_FALSE(b.grad().defined());
  (w * 3.0).sum().backward();
  CHECK(w.grad().to_vector<float>() == std::vector<float>{3, 3, 3});
  CHECK_FALSE(b.grad().defined());
  opt.step();  // only w moves: w -= 0.1 * 3
  CHECK(at::allclose(fetch_float(w), at::tensor({0.7f, 1.7f, 2.7f}), 1e-6, 1e-7));
  CHECK(b.to_vector<float>() == std::vector<float>{0.5f});
}

TEST_CASE("optimizer steps never wait for the cluster", "[optim][integration]") {
  gt::test::connect_shared_cluster();
  at::manual_seed(5);
  Params p = make_params({{64, 32}, {32}});
  // A parameter whose gradient comes from an op that fails on the worker (no
  // float16 matmul on CPU). The failure surfaces only at a sync point, so a
  // step that fetched anything (item(), to_vector()) or synchronized would
  // throw it; a step that only issues ops does not.
  const gt::Tensor h = gt::ones({2, 2}, gt::kFloat16);
  const gt::Tensor failed_grad = h.matmul(h).to(gt::kFloat32);
  gt::Tensor poisoned = gt::ones({2, 2});
  poisoned.requires_grad_();
  std::vector<gt::Tensor> gt_params{poisoned, p.gt[0], p.gt[1]};
  gt::optim::Adam gt_adam_opt(gt_params, gt::optim::AdamOptions(0.01).amsgrad(true));
  gt::optim::SGD gt_sgd_opt(gt_params, gt::optim::SGDOptions(0.01).momentum(0.5).nesterov(true));
  torch::optim::Adam torch_adam_opt(p.torch, torch::optim::AdamOptions(0.01).amsgrad(true));
  torch::optim::SGD torch_sgd_opt(p.torch,
                                  torch::optim::SGDOptions(0.01).momentum(0.5).nesterov(true));
  for (int step = 0; step < 10; ++step) {
    gt_adam_opt.zero_grad();
    torch_adam_opt.zero_grad();
    (poisoned * failed_grad).sum().backward();
    for (size_t i = 0; i < p.gt.size(); ++i) {
      const at::Tensor g = at::randn(p.torch[i].sizes(), at::kFloat);
      set_gt_grad(p.gt[i], g);
      p.torch[i].mutable_grad() = g.clone();
    }
    CHECK_NOTHROW(gt_adam_opt.step());
    CHECK_NOTHROW(gt_sgd_opt.step());
    torch_adam_opt.step();
    torch_sgd_opt.step();
  }
  CHECK_THROWS_AS(gt::synchronize(), gt::RemoteError);
  CHECK_THROWS_AS(poisoned.to_vector<float>(), gt::RemoteError);
  // The other parameters are right after this single sync.
  for (size_t i = 0; i < p.gt.size(); ++i) {
    INFO("parameter " << i);
    CHECK(close(fetch_float(p.gt[i]), p.torch[i].detach()));
  }
}

TEST_CASE("optimizer options out of range throw invalid_argument", "[optim][integration]") {
  using Catch::Contains;
  using gt::optim::AdamOptions;
  using gt::optim::AdamWOptions;
  using gt::optim::SGDOptions;
  gt::test::connect_shared_cluster();
  const std::vector<gt::Tensor> ps{gt::zeros({2}).requires_grad_()};

  CHECK_THROWS_AS(gt::optim::SGD(ps, SGDOptions(-0.1)), std::invalid_argument);
  CHECK_THROWS_WITH(gt::optim::SGD(ps, SGDOptions(-0.1)),
                    Contains("[optim.SGD]") && Contains("learning rate") && Contains("-0.1"));
  CHECK_THROWS_WITH(gt::optim::SGD(ps, SGDOptions(0.1).momentum(-0.5)),
                    Contains("momentum") && Contains("-0.5"));
  CHECK_THROWS_AS(gt::optim::SGD(ps, SGDOptions(0.1).weight_decay(-1)), std::invalid_argument);
  CHECK_THROWS_WITH(gt::optim::SGD(ps, SGDOptions(0.1).weight_decay(-1)), Contains("weight_decay"));
  CHECK_THROWS_AS(gt::optim::SGD(ps, SGDOptions(0.1).nesterov(true)), std::invalid_argument);
  CHECK_THROWS_WITH(gt::optim::SGD(ps, SGDOptions(0.1).nesterov(true)), Contains("Nesterov"));
  CHECK_THROWS_WITH(gt::optim::SGD(ps, SGDOptions(0.1).momentum(0.9).dampening(0.1).nesterov(true)),
                    Contains("Nesterov") && Contains("dampening"));
  CHECK_NOTHROW(gt::optim::SGD(ps, SGDOptions(0).momentum(0.9).nesterov(true)));

  CHECK_THROWS_AS(gt::optim::Adam(ps, AdamOptions(-1e-3)), std::invalid_argument);
  CHECK_THROWS_WITH(gt::optim::Adam(ps, AdamOptions(-1e-3)),
                    Contains("[optim.Adam]") && Contains("learning rate"));
  CHECK_THROWS_WITH(gt::optim::Adam(ps, AdamOptions().betas({1.0, 0.999})),
                    Contains("beta") && Contains("index 0") && Contains("1"));
  CHECK_THROWS_WITH(gt::optim::Adam(ps, AdamOptions().betas({-0.1, 0.999})),
                    Contains("beta") && Contains("index 0"));
  CHECK_THROWS_WITH(gt::optim::Adam(ps, AdamOptions().betas({0.9, 1.5})),
                    Contains("beta") && Contains("index 1") && Contains("1.5"));
  CHECK_THROWS_AS(gt::optim::Adam(ps, AdamOptions().eps(-1e-8)), std::invalid_argument);
  CHECK_THROWS_WITH(gt::optim::Adam(ps, AdamOptions().eps(-1e-8)), Contains("epsilon"));
  CHECK_THROWS_WITH(gt::optim::Adam(ps, AdamOptions().weight_decay(-0.1)),
                    Contains("weight_decay"));
  CHECK_THROWS_AS(gt::optim::AdamW(ps, AdamWOptions().betas({0.9, 1.0})), std::invalid_argument);
  CHECK_THROWS_WITH(gt::optim::AdamW(ps, AdamWOptions(-1)), Contains("[optim.AdamW]"));
  // AdamW's setters keep the type, so a chain still builds an AdamW.
  static_assert(std::is_same_v<decltype(AdamWOptions().lr(1).amsgrad(true)), AdamWOptions&>);
  CHECK(AdamWOptions().weight_decay() == 1e-2);
  CHECK(AdamOptions().weight_decay() == 0);

  // Parameters: undefined or not floating.
  CHECK_THROWS_AS(gt::optim::SGD({gt::Tensor()}, SGDOptions(0.1)), std::invalid_argument);
  CHECK_THROWS_WITH(gt::optim::Adam({ps[0], gt::Tensor()}),
                    Contains("parameter 1") && Contains("undefined"));
  const gt::Tensor ints = gt::zeros({2}, gt::kInt64);
  CHECK_THROWS_AS(gt::optim::SGD({ints}, SGDOptions(0.1)), std::invalid_argument);
  CHECK_THROWS_WITH(gt::optim::AdamW({ints}), Contains("floating") && Contains("int64"));
}

// ---- training ----------------------------------------------------------------------------------

namespace {

constexpr int kTrainSteps = 50;

struct Problem {
  at::Tensor x;  // [64, 8] float32
  at::Tensor y;  // [64] int64 in 0..2
};

// Three classes from a random linear teacher with a margin of noise.
Problem make_problem() {
  at::manual_seed(2024);
  Problem p;
  p.x = at::randn({64, 8}, at::kFloat);
  const at::Tensor teacher = at::randn({8, 3}, at::kFloat);
  p.y = (p.x.matmul(teacher) + 0.1 * at::randn({64, 3}, at::kFloat)).argmax(1);
  return p;
}

// The gt model and the LibTorch model with gt's initial weights.
struct Models {
  gt::nn::Sequential gt{nullptr};
  torch::nn::Sequential torch{nullptr};
};

Models make_models() {
  Models m;
  gt::manual_seed(77);
  m.gt = gt::nn::Sequential(gt::nn::Linear(8, 16), gt::nn::ReLU(), gt::nn::Linear(16, 16),
                            gt::nn::ReLU(), gt::nn::Linear(16, 3));
  m.torch =
      torch::nn::Sequential(torch::nn::Linear(8, 16), torch::nn::ReLU(), torch::nn::Linear(16, 16),
                            torch::nn::ReLU(), torch::nn::Linear(16, 3));
  const auto gt_params = m.gt->named_parameters();
  const auto torch_params = m.torch->named_parameters();
  REQUIRE(gt_params.size() == torch_params.size());
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < gt_params.size(); ++i) {
    REQUIRE(gt_params[i].first == torch_params[i].key());
    torch_params[i].value().copy_(fetch_float(gt_params[i].second));
  }
  return m;
}

// Full-batch training; returns the loss before each step.
std::vector<float> train_gt(gt::nn::Sequential& model, gt::optim::Optimizer& opt,
                            const Problem& p) {
  const gt::Tensor x = to_gt(p.x), y = to_gt(p.y);
  std::vector<gt::Tensor> losses;
  for (int step = 0; step < kTrainSteps; ++step) {
    opt.zero_grad();
    gt::Tensor loss = gt::nn::functional::cross_entropy(model(x), y);
    loss.backward();
    opt.step();
    losses.push_back(loss.detach());
  }
  // One sync for the whole curve: the loop never waited for the cluster.
  return gt::stack(losses).to_vector<float>();
}

std::vector<float> train_torch(torch::nn::Sequential& model, torch::optim::Optimizer& opt,
                               const Problem& p) {
  std::vector<float> losses;
  for (int step = 0; step < kTrainSteps; ++step) {
    opt.zero_grad();
    at::Tensor loss = torch::nn::functional::cross_entropy(model->forward(p.x), p.y);
    loss.backward();
    opt.step();
    losses.push_back(loss.item<float>());
  }
  return losses;
}

void check_curves(const std::vector<float>& got, const std::vector<float>& want) {
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    INFO("step " << i << ": gt " << got[i] << ", LibTorch " << want[i]);
    CHECK(std::abs(got[i] - want[i]) <= 1e-4 * std::abs(want[i]) + 1e-6);
  }
  // Learning happened: the loss fell to well under half of where it started.
  CHECK(got.back() < 0.4 * got.front());
}

}  // namespace

TEST_CASE("MLP trained with SGD momentum follows LibTorch's loss curve", "[train][integration]") {
  gt::test::connect_shared_cluster();
  const Problem p = make_problem();
  Models m = make_models();
  gt::optim::SGD gt_opt(m.gt->parameters(), gt::optim::SGDOptions(0.1).momentum(0.9));
  torch::optim::SGD torch_opt(m.torch->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  const std::vector<float> want = train_torch(m.torch, torch_opt, p);
  const std::vector<float> got = train_gt(m.gt, gt_opt, p);
  check_curves(got, want);
  // The trained weights agree too (the optimizer updated the module's own tensors).
  const auto gt_params = m.gt->parameters();
  const auto torch_params = m.torch->parameters();
  for (size_t i = 0; i < gt_params.size(); ++i) {
    CHECK(at::allclose(fetch_float(gt_params[i]), torch_params[i].detach(), 1e-4, 1e-5));
  }
}

TEST_CASE("MLP trained with Adam follows LibTorch's loss curve", "[train][integration]") {
  gt::test::connect_shared_cluster();
  const Problem p = make_problem();
  Models m = make_models();
  gt::optim::Adam gt_opt(m.gt->parameters(), gt::optim::AdamOptions(0.01));
  torch::optim::Adam torch_opt(m.torch->parameters(), torch::optim::AdamOptions(0.01));
  const std::vector<float> want = train_torch(m.torch, torch_opt, p);
  const std::vector<float> got = train_gt(m.gt, gt_opt, p);
  check_curves(got, want);
}

// ---- data
// ----------------------------------------------------------------------------------------

namespace {

// n images of 2x3 pixels whose values encode (sample, pixel), labels i % 10.
gt::data::Dataset make_dataset(int64_t n) {
  gt::data::Dataset ds;
  ds.size = n;
  ds.rows = 2;
  ds.cols = 3;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t k = 0; k < 6; ++k) ds.images.push_back(float(i) + 0.125f * float(k) - 1.5f);
    ds.labels.push_back(i % 10);
  }
  return ds;
}

// Checks one epoch of `loader` against `order` from the host data.
void check_epoch(gt::data::DataLoader& loader, const gt::data::Dataset& ds,
                 const std::vector<int64_t>& order, int64_t batch_size, bool drop_last) {
  const int64_t full = int64_t(order.size()) / batch_size;
  const int64_t expected_batches =
      drop_last || int64_t(order.size()) % batch_size == 0 ? full : full + 1;
  int64_t index = 0;
  for (const gt::data::Batch& batch : loader) {
    INFO("batch " << index);
    const int64_t start = index * batch_size;
    const int64_t b = std::min<int64_t>(batch_size, int64_t(order.size()) - start);
    REQUIRE(b > 0);
    CHECK(batch.images.shape() == gt::Shape{b, 6});
    CHECK(batch.images.dtype() == gt::kFloat32);
    CHECK(batch.labels.shape() == gt::Shape{b});
    CHECK(batch.labels.dtype() == gt::kInt64);
    std::vector<float> want_images;
    std::vector<int64_t> want_labels;
    for (int64_t k = start; k < start + b; ++k) {
      const int64_t i = order[size_t(k)];
      want_images.insert(want_images.end(), ds.images.begin() + i * 6,
                         ds.images.begin() + (i + 1) * 6);
      want_labels.push_back(ds.labels[size_t(i)]);
    }
    CHECK(batch.images.to_vector<float>() == want_images);
    CHECK(batch.labels.to_vector<int64_t>() == want_labels);
    ++index;
  }
  CHECK(index == expected_batches);
  CHECK(loader.size() == expected_batches);
}

}  // namespace

TEST_CASE("DataLoader batches match the host data in epoch order", "[data][integration]") {
  gt::test::connect_shared_cluster();
  const gt::data::Dataset ds = make_dataset(10);

  SECTION("shuffled, with a last partial batch, over two epochs") {
    gt::data::DataLoader loader(ds, gt::data::DataLoaderOptions(4).shuffle(true).seed(7));
    std::mt19937_64 rng(7);
    const std::vector<int64_t> first = gt::data::epoch_order(10, true, rng);
    const std::vector<int64_t> second = gt::data::epoch_order(10, true, rng);
    REQUIRE(first != second);
    check_epoch(loader, ds, first, 4, false);  // batches of 4, 4, 2
    check_epoch(loader, ds, second, 4, false);
    CHECK(loader.epochs() == 2);
  }
  SECTION("shuffled with drop_last leaves out the partial batch") {
    gt::data::DataLoader loader(
        ds, gt::data::DataLoaderOptions(4).shuffle(true).seed(3).drop_last(true));
    std::mt19937_64 rng(3);
    check_epoch(loader, ds, gt::data::epoch_order(10, true, rng), 4, true);  // 4, 4
  }
  SECTION("in order without shuffle; batch size dividing the size") {
    gt::data::DataLoader loader(ds, gt::data::DataLoaderOptions(5));
    std::vector<int64_t> order(10);
    for (int64_t i = 0; i < 10; ++i) order[size_t(i)] = i;
    check_epoch(loader, ds, order, 5, false);
    gt::data::DataLoader dropping(ds, gt::data::DataLoaderOptions(5).drop_last(true));
    check_epoch(dropping, ds, order, 5, true);
  }
  SECTION("resident: the dataset is uploaded once, batches are gathered on the workers") {
    gt::data::DataLoader loader(ds, gt::data::DataLoaderOptions(4).shuffle(true).seed(7).resident(true));
    std::mt19937_64 rng(7);
    const std::vector<int64_t> first = gt::data::epoch_order(10, true, rng);
    const std::vector<int64_t> second = gt::data::epoch_order(10, true, rng);
    check_epoch(loader, ds, first, 4, false);
    check_epoch(loader, ds, second, 4, false);
    gt::data::DataLoader dropping(ds, gt::data::DataLoaderOptions(3).drop_last(true).resident(true));
    std::vector<int64_t> order(10);
    for (int64_t i = 0; i < 10; ++i) order[size_t(i)] = i;
    check_epoch(dropping, ds, order, 3, true);
  }
}

TEST_CASE("load_fashion_mnist from a missing directory names the path and the package",
          "[data][integration]") {
  using Catch::Contains;
  CHECK_THROWS_AS(gt::data::load_fashion_mnist(true, "/nonexistent"), gt::Error);
  CHECK_THROWS_WITH(gt::data::load_fashion_mnist(true, "/nonexistent"),
                    Contains("/nonexistent/train-images-idx3-ubyte") &&
                        Contains("dataset-fashion-mnist") && Contains("GT_DATA_DIR"));
  CHECK_THROWS_WITH(
      gt::data::load_fashion_mnist(false, "/nonexistent"),
      Contains("/nonexistent/t10k-images-idx3-ubyte") && Contains("dataset-fashion-mnist"));
}
