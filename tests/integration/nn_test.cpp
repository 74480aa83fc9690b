// gt::nn through real dispatcher and worker processes: module bookkeeping,
// layers and losses compared with LibTorch given the same weights, and
// parameter files.

// LibTorch (through glog) defines CHECK too: include it before Catch so that
// Catch's CHECK wins.
#include "tests/integration/torch_compare.h"

#include <catch2/catch.hpp>

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tests/support/cluster.h"

using Catch::Contains;
using gt::test::fetch_double;
using gt::test::to_gt;
namespace F = gt::nn::functional;

namespace {

// Whether a gt tensor holds (nearly) the values of a LibTorch one, shape included.
bool close(const gt::Tensor& got, const at::Tensor& want, double tol = 1e-5) {
  if (!got.defined() || !want.defined()) return false;
  if (got.shape() != std::vector<int64_t>(want.sizes().begin(), want.sizes().end())) {
    return false;
  }
  return at::allclose(fetch_double(got), want.detach().to(at::kDouble), tol, tol);
}

// A module parameter's values as a local float32 LibTorch leaf that requires grad.
at::Tensor torch_param(const gt::Tensor& p) {
  return fetch_double(p).to(at::kFloat).requires_grad_(true);
}

// Names of a module's parameters, in order.
std::vector<std::string> names_of(const gt::nn::Module& m) {
  std::vector<std::string> out;
  for (const auto& [name, _] : m.named_parameters()) out.push_back(name);
  return out;
}

// Every parameter's values, in order.
std::vector<std::vector<double>> values_of(const gt::nn::Module& m) {
  std::vector<std::vector<double>> out;
  for (const gt::Tensor& p : m.parameters()) out.push_back(p.to_vector<double>());
  return out;
}

// A file path private to this process.
std::string temp_path(const std::string& stem) {
  return (std::filesystem::temp_directory_path() /
          (stem + "_" + std::to_string(::getpid()) + ".gtparam"))
      .string();
}

struct BlockImpl : gt::nn::Module {
  BlockImpl() : Module("Block"), fc(2, 3) {
    scale = register_parameter("scale", gt::ones({3}));
    register_module("fc", fc);
  }
  gt::Tensor forward(const gt::Tensor& x) const { return fc(x) * scale; }
  gt::Tensor scale;
  gt::nn::Linear fc;
};
GT_MODULE(Block);

struct NetImpl : gt::nn::Module {
  NetImpl() : Module("Net") {
    first = register_parameter("first", gt::zeros({1}));
    block = register_module("block", Block());
    norm = register_module("norm", std::make_shared<gt::nn::LayerNormImpl>(gt::Shape{3}));
    layers = register_module(
        "layers", gt::nn::Sequential(gt::nn::Linear(3, 4), gt::nn::ReLU(), gt::nn::Linear(4, 1)));
    last = register_parameter("last", gt::zeros({2}, gt::kFloat64), /*requires_grad=*/false);
  }
  gt::Tensor forward(const gt::Tensor& x) const { return layers(norm->forward(block(x))); }
  gt::Tensor first, last;
  Block block = nullptr;
  std::shared_ptr<gt::nn::LayerNormImpl> norm;
  gt::nn::Sequential layers = nullptr;
};
GT_MODULE(Net);

constexpr gt::nn::Reduction kReductions[] = {gt::nn::Reduction::None, gt::nn::Reduction::Mean,
                                             gt::nn::Reduction::Sum};

int64_t torch_reduction(gt::nn::Reduction r) {
  switch (r) {
    case gt::nn::Reduction::None:
      return at::Reduction::None;
    case gt::nn::Reduction::Mean:
      return at::Reduction::Mean;
    case gt::nn::Reduction::Sum:
      return at::Reduction::Sum;
  }
  return at::Reduction::Mean;
}

// Backward through a loss of any reduction: unreduced losses get weights `g`.
void backward_loss(const gt::Tensor& loss, const at::Tensor& g) {
  if (loss.dim() == 0) {
    loss.backward();
  } else {
    loss.backward(to_gt(g));
  }
}
void backward_loss(const at::Tensor& loss, const at::Tensor& g) {
  if (loss.dim() == 0) {
    loss.backward();
  } else {
    loss.backward(g);
  }
}

}  // namespace

TEST_CASE("module parameters have dotted names in registration order and names are checked",
          "[nn][integration]") {
  gt::test::connect_shared_cluster();
  Net net;
  CHECK(names_of(*net) ==
        std::vector<std::string>{"first", "last", "block.scale", "block.fc.weight", "block.fc.bias",
                                 "norm.weight", "norm.bias", "layers.0.weight", "layers.0.bias",
                                 "layers.2.weight", "layers.2.bias"});
  // parameters() are the modules' own handles, in the same order.
  const auto named = net->named_parameters();
  const auto params = net->parameters();
  REQUIRE(params.size() == named.size());
  for (size_t i = 0; i < params.size(); ++i) CHECK(params[i].id() == named[i].second.id());
  CHECK(params[3].id() == net->block->fc->weight.id());
  CHECK(params[5].id() == net->norm->weight.id());
  const auto own = net->named_parameters(/*recurse=*/false);
  REQUIRE(own.size() == 2);
  CHECK(own[0].first == "first");
  CHECK(own[1].first == "last");
  CHECK(net->parameters(false).size() == 2);
  CHECK(net->first.requires_grad());
  CHECK(net->first.is_leaf());
  CHECK_FALSE(net->last.requires_grad());

  std::vector<std::string> children;
  for (const auto& [name, child] : net->named_children()) children.push_back(name);
  CHECK(children == std::vector<std::string>{"block", "norm", "layers"});
  REQUIRE(net->children().size() == 3);
  CHECK(net->children()[1].get() == net->norm.get());
  CHECK(net->children()[0]->name() == "Block");

  // Holders share their module; train/eval reach every descendant.
  gt::nn::Linear a(2, 2);
  gt::nn::Linear b = a;
  CHECK(b->weight.id() == a->weight.id());
  net->eval();
  CHECK_FALSE(net->layers->children()[1]->is_training());
  net->train();
  CHECK(net->block->fc->is_training());
  CHECK(net(gt::ones({5, 2})).shape() == gt::Shape{5, 1});

  // Bad names are refused.
  gt::nn::Module m("Custom");
  m.register_parameter("w", gt::zeros({2}));
  m.register_module("fc", gt::nn::Linear(2, 2));
  CHECK_THROWS_AS(m.register_parameter("", gt::zeros({2})), std::invalid_argument);
  CHECK_THROWS_WITH(m.register_parameter("", gt::zeros({2})), Contains("must not be empty"));
  CHECK_THROWS_AS(m.register_parameter("a.b", gt::zeros({2})), std::invalid_argument);
  CHECK_THROWS_WITH(m.register_parameter("a.b", gt::zeros({2})),
                    Contains("'a.b'") && Contains("'.'") && Contains("Custom"));
  CHECK_THROWS_WITH(m.register_parameter("w", gt::zeros({2})),
                    Contains("'w'") && Contains("already registered"));
  CHECK_THROWS_WITH(m.register_parameter("fc", gt::zeros({2})), Contains("already registered"));
  CHECK_THROWS_AS(m.register_module("", gt::nn::ReLU()), std::invalid_argument);
  CHECK_THROWS_AS(m.register_module("x.y", gt::nn::ReLU()), std::invalid_argument);
  CHECK_THROWS_AS(m.register_module("w", gt::nn::ReLU()), std::invalid_argument);
  CHECK_THROWS_WITH(m.register_module("fc", std::make_shared<gt::nn::ReLUImpl>()),
                    Contains("already registered"));
  CHECK_THROWS_AS(m.register_module("empty", gt::nn::Linear(nullptr)), std::invalid_argument);
  CHECK_THROWS_AS(m.register_parameter("u", gt::Tensor()), std::invalid_argument);
  // The requires_grad argument wins over the tensor's flag, as in LibTorch.
  gt::Tensor frozen = gt::zeros({2}).requires_grad_();
  m.register_parameter("frozen", frozen, /*requires_grad=*/false);
  CHECK_FALSE(frozen.requires_grad());
  // Failed registrations leave nothing behind.
  CHECK(names_of(m) == std::vector<std::string>{"w", "frozen", "fc.weight", "fc.bias"});
  CHECK(m.children().size() == 1);
}

TEST_CASE("linear initialises like PyTorch and reproducibly", "[nn][integration]") {
  gt::test::connect_shared_cluster();
  gt::manual_seed(11);
  gt::nn::Linear fc(16, 64);
  REQUIRE(fc->weight.shape() == gt::Shape{64, 16});
  REQUIRE(fc->bias.shape() == gt::Shape{64});
  CHECK(fc->weight.dtype() == gt::kFloat32);
  CHECK(fc->weight.requires_grad());
  CHECK(fc->weight.is_leaf());
  CHECK(fc->bias.requires_grad());
  CHECK(fc->in_features() == 16);
  CHECK(fc->out_features() == 64);
  // U(-1/sqrt(16), 1/sqrt(16)) = U(-0.25, 0.25) for weight and bias alike.
  const at::Tensor w = fetch_double(fc->weight), b = fetch_double(fc->bias);
  CHECK(w.abs().max().item<double>() <= 0.25);
  CHECK(w.max().item<double>() > 0.24);
  CHECK(w.min().item<double>() < -0.24);
  CHECK(std::abs(w.mean().item<double>()) < 0.02);
  CHECK(std::abs(w.abs().mean().item<double>() - 0.125) < 0.015);
  CHECK(b.abs().max().item<double>() <= 0.25);
  CHECK(b.abs().max().item<double>() > 0.2);  // not 1/sqrt(out) = 0.125
  CHECK(b.min().item<double>() < 0);

  gt::manual_seed(11);
  gt::nn::Linear same(16, 64);
  CHECK(at::equal(fetch_double(same->weight), w));
  CHECK(at::equal(fetch_double(same->bias), b));
  gt::manual_seed(12);
  gt::nn::Linear other(16, 64);
  CHECK_FALSE(at::equal(fetch_double(other->weight), w));

  CHECK_THROWS_AS(gt::nn::Linear(0, 3), std::invalid_argument);
}

TEST_CASE("linear forward and gradients match LibTorch with and without bias",
          "[nn][integration]") {
  gt::test::connect_shared_cluster();
  at::manual_seed(13);
  const at::Tensor x0 = at::randn({2, 4, 5}), g0 = at::randn({2, 4, 3});
  for (bool with_bias : {true, false}) {
    INFO("bias: " << with_bias);
    gt::nn::Linear fc(5, 3, with_bias);
    CHECK(fc->parameters().size() == (with_bias ? 2u : 1u));
    CHECK(fc->bias.defined() == with_bias);
    at::Tensor w = torch_param(fc->weight);
    at::Tensor b = with_bias ? torch_param(fc->bias) : at::Tensor();
    gt::Tensor x = to_gt(x0).requires_grad_();
    at::Tensor tx = x0.clone().requires_grad_(true);
    gt::Tensor y = fc(x);
    at::Tensor ty = at::linear(tx, w, b);
    CHECK(close(y, ty, 1e-5));
    (y * to_gt(g0)).sum().backward();
    (ty * g0).sum().backward();
    CHECK(close(fc->weight.grad(), w.grad(), 1e-4));
    CHECK(close(x.grad(), tx.grad(), 1e-4));
    if (with_bias) CHECK(close(fc->bias.grad(), b.grad(), 1e-4));
    const at::Tensor v0 = x0[1][2];  // one 1-D sample
    CHECK(close(fc(to_gt(v0)), at::linear(v0, w, b), 1e-5));
  }
  gt::nn::Linear fc(5, 3);
  CHECK_THROWS_AS(fc(gt::ones({2, 4})), std::invalid_argument);
  CHECK_THROWS_WITH(fc(gt::ones({2, 4})), Contains("5 features") && Contains("(2, 4)"));
}

TEST_CASE("sequential and activation modules match LibTorch", "[nn][integration]") {
  gt::test::connect_shared_cluster();
  at::manual_seed(14);
  gt::nn::Sequential seq(
      gt::nn::Linear(4, 8), gt::nn::ReLU(), [](const gt::Tensor& x) { return x * 2.0; },
      gt::nn::Linear(8, 3), gt::nn::Tanh());
  CHECK(seq->size() == 5);
  // Children are named by position; a plain callable has no module or parameters.
  std::vector<std::string> children;
  for (const auto& [name, _] : seq->named_children()) children.push_back(name);
  CHECK(children == std::vector<std::string>{"0", "1", "3", "4"});
  CHECK(names_of(*seq) == std::vector<std::string>{"0.weight", "0.bias", "3.weight", "3.bias"});

  const at::Tensor x0 = at::randn({6, 4});
  const auto p = seq->parameters();
  const at::Tensor w1 = torch_param(p[0]), b1 = torch_param(p[1]), w2 = torch_param(p[2]),
                   b2 = torch_param(p[3]);
  const at::Tensor want = at::linear(at::linear(x0, w1, b1).relu() * 2.0, w2, b2).tanh();
  CHECK(close(seq(to_gt(x0)), want, 1e-5));

  const at::Tensor z0 = at::randn({3, 5}) * 3;
  const gt::Tensor z = to_gt(z0);
  CHECK(close(gt::nn::ReLU()(z), z0.relu()));
  CHECK(close(gt::nn::GELU()(z), at::gelu(z0), 1e-5));
  CHECK(close(gt::nn::Sigmoid()(z), z0.sigmoid()));
  CHECK(close(gt::nn::Tanh()(z), z0.tanh()));
  CHECK(close(F::gelu(z), at::gelu(z0), 1e-5));
  CHECK(close(F::softmax(z, 1), z0.softmax(1)));
  CHECK(close(F::log_softmax(z, 0), z0.log_softmax(0)));
  CHECK(gt::nn::ReLU()->parameters().empty());
}

TEST_CASE("dropout zeroes about p of the elements in training only", "[nn][integration]") {
  gt::test::connect_shared_cluster();
  gt::manual_seed(15);
  gt::nn::Dropout drop(0.3);
  CHECK(drop->p() == 0.3);
  gt::Tensor x = gt::ones({200, 100}).requires_grad_();
  gt::Tensor y = drop(x);
  const std::vector<float> v = y.to_vector<float>();
  int64_t zeros = 0;
  bool scaled = true;
  for (float e : v) {
    if (e == 0.f) {
      ++zeros;
    } else {
      scaled &= std::abs(e - 1.f / 0.7f) < 1e-6;
    }
  }
  CHECK(scaled);
  CHECK(std::abs(static_cast<double>(zeros) / v.size() - 0.3) < 0.02);
  // The gradient goes through the same mask and scale.
  y.sum().backward();
  CHECK(x.grad().to_vector<float>() == v);

  drop->eval();
  CHECK_FALSE(drop->is_training());
  CHECK(drop(x).to_vector<float>() == std::vector<float>(v.size(), 1.f));
  drop->train();
  CHECK(gt::nn::Dropout(0.0)(x).to_vector<float>() == std::vector<float>(v.size(), 1.f));
  CHECK(gt::nn::Dropout(1.0)(x).to_vector<float>() == std::vector<float>(v.size(), 0.f));

  CHECK_THROWS_AS(gt::nn::Dropout(-0.1), std::invalid_argument);
  CHECK_THROWS_AS(gt::nn::Dropout(1.5), std::invalid_argument);
  CHECK_THROWS_WITH(gt::nn::Dropout(1.5), Contains("between 0 and 1") && Contains("1.5"));
}

TEST_CASE("layer norm forward and gradients match at::layer_norm", "[nn][integration]") {
  gt::test::connect_shared_cluster();
  at::manual_seed(16);
  gt::nn::LayerNorm ln(gt::Shape{3, 4});
  CHECK(ln->weight.to_vector<float>() == std::vector<float>(12, 1.f));
  CHECK(ln->bias.to_vector<float>() == std::vector<float>(12, 0.f));
  const at::Tensor w0 = at::randn({3, 4}), b0 = at::randn({3, 4});
  {
    gt::NoGradGuard no_grad;
    ln->weight.copy_(to_gt(w0));
    ln->bias.copy_(to_gt(b0));
  }
  const at::Tensor x0 = at::randn({2, 3, 4}) * 3 + 1, g0 = at::randn({2, 3, 4});
  gt::Tensor x = to_gt(x0).requires_grad_();
  gt::Tensor y = ln(x);
  (y * to_gt(g0)).sum().backward();
  at::Tensor tx = x0.clone().requires_grad_(true), tw = w0.clone().requires_grad_(true),
             tb = b0.clone().requires_grad_(true);
  at::Tensor ty = at::layer_norm(tx, {3, 4}, tw, tb, 1e-5);
  (ty * g0).sum().backward();
  CHECK(close(y, ty, 1e-4));
  CHECK(close(x.grad(), tx.grad(), 1e-4));
  CHECK(close(ln->weight.grad(), tw.grad(), 1e-4));
  CHECK(close(ln->bias.grad(), tb.grad(), 1e-4));

  gt::nn::LayerNorm plain(gt::Shape{4}, 1e-3, /*elementwise_affine=*/false);
  CHECK(plain->parameters().empty());
  CHECK(close(plain(to_gt(x0)), at::layer_norm(x0, {4}, {}, {}, 1e-3), 1e-4));

  CHECK_THROWS_AS(ln(gt::ones({2, 4, 3})), std::invalid_argument);
  CHECK_THROWS_WITH(ln(gt::ones({2, 4, 3})), Contains("(3, 4)") && Contains("(2, 4, 3)"));
}

TEST_CASE("embedding forward and gradient match at::embedding", "[nn][integration]") {
  gt::test::connect_shared_cluster();
  at::manual_seed(17);
  gt::manual_seed(17);
  CHECK(gt::nn::Embedding(100, 8)->weight.shape() == gt::Shape{100, 8});
  const at::Tensor big = fetch_double(gt::nn::Embedding(100, 8)->weight);  // N(0, 1)
  CHECK(std::abs(big.mean().item<double>()) < 0.1);
  CHECK(std::abs(big.std().item<double>() - 1.0) < 0.1);
  gt::nn::Embedding emb(10, 4);
  REQUIRE(emb->weight.shape() == gt::Shape{10, 4});
  const at::Tensor w = fetch_double(emb->weight);
  const at::Tensor idx = at::tensor({1, 2, 1, 9, 0, 1}, at::kLong).reshape({2, 3});
  const at::Tensor g0 = at::randn({2, 3, 4});
  at::Tensor tw = w.to(at::kFloat).requires_grad_(true);
  at::Tensor want = at::embedding(tw, idx);
  (want * g0).sum().backward();

  gt::Tensor y = emb(to_gt(idx));
  CHECK(close(y, want));
  (y * to_gt(g0)).sum().backward();
  CHECK(close(emb->weight.grad(), tw.grad(), 1e-5));  // row 1 sums three uses
  emb->zero_grad();
  gt::Tensor y32 = emb(to_gt(idx.to(at::kInt)));
  CHECK(close(y32, want));
  (y32 * to_gt(g0)).sum().backward();
  CHECK(close(emb->weight.grad(), tw.grad(), 1e-5));
  CHECK(close(emb(to_gt(at::scalar_tensor(9, at::kLong))), w[9]));  // 0-dim index

  CHECK_THROWS_AS(emb(gt::ones({3})), std::invalid_argument);
  CHECK_THROWS_WITH(emb(gt::ones({3})), Contains("int64 or int32") && Contains("float32"));
}

TEST_CASE("losses match LibTorch for every reduction", "[nn][integration]") {
  gt::test::connect_shared_cluster();
  at::manual_seed(19);
  // mse_loss: values, gradients and the shape check.
  const at::Tensor in0 = at::randn({3, 4}), t0 = at::randn({3, 4}), g0 = at::randn({3, 4});
  for (gt::nn::Reduction r : kReductions) {
    INFO("reduction " << static_cast<int>(r));
    gt::Tensor in = to_gt(in0).requires_grad_();
    at::Tensor tin = in0.clone().requires_grad_(true);
    gt::Tensor loss = F::mse_loss(in, to_gt(t0), r);
    at::Tensor want = at::mse_loss(tin, t0, torch_reduction(r));
    CHECK(close(loss, want, 1e-5));
    backward_loss(loss, g0);
    backward_loss(want, g0);
    CHECK(close(in.grad(), tin.grad(), 1e-5));
  }
  CHECK_THROWS_AS(F::mse_loss(gt::ones({3, 4}), gt::ones({4, 3})), std::invalid_argument);
  CHECK_THROWS_WITH(F::mse_loss(gt::ones({3, 4}), gt::ones({4})),
                    Contains("input (3, 4)") && Contains("target (4)"));

  // cross_entropy and nll_loss on class indices.
  struct Shapes {
    std::vector<int64_t> logits, target;
  };
  // (N, C), 1-D logits with a 0-dim target, and (N, C, d).
  for (const Shapes& s : {Shapes{{5, 4}, {5}}, Shapes{{4}, {}}, Shapes{{2, 4, 3}, {2, 3}}}) {
    const at::Tensor logits0 = at::randn(s.logits) * 2;
    const at::Tensor target0 = at::randint(0, 4, s.target, at::kLong);
    const at::Tensor g0 = at::randn(s.target);
    const int64_t class_dim = s.logits.size() == 1 ? 0 : 1;
    for (gt::nn::Reduction r : kReductions) {
      INFO("logits " << at::IntArrayRef(s.logits) << ", reduction " << static_cast<int>(r));
      gt::Tensor logits = to_gt(logits0).requires_grad_();
      at::Tensor tlogits = logits0.clone().requires_grad_(true);
      gt::Tensor ce = F::cross_entropy(logits, to_gt(target0), r);
      at::Tensor want_ce = at::cross_entropy_loss(tlogits, target0, {}, torch_reduction(r));
      CHECK(close(ce, want_ce, 1e-5));
      backward_loss(ce, g0);
      backward_loss(want_ce, g0);
      CHECK(close(logits.grad(), tlogits.grad(), 1e-5));

      gt::Tensor lp = to_gt(logits0.log_softmax(class_dim)).requires_grad_();
      at::Tensor tlp = logits0.log_softmax(class_dim).requires_grad_(true);
      gt::Tensor nll = F::nll_loss(lp, to_gt(target0), r);
      at::Tensor want_nll = at::nll_loss_nd(tlp, target0, {}, torch_reduction(r));
      CHECK(close(nll, want_nll, 1e-5));
      backward_loss(nll, g0);
      backward_loss(want_nll, g0);
      CHECK(close(lp.grad(), tlp.grad(), 1e-6));
    }
  }
}

TEST_CASE("cross_entropy is stable for large logits and rejects bad targets", "[nn][integration]") {
  gt::test::connect_shared_cluster();
  const at::Tensor logits0 =
      at::tensor({1000.f, 0.f, -1000.f, 0.f, 1000.f, 1001.f}).reshape({2, 3});
  const at::Tensor target0 = at::tensor({0, 2}, at::kLong);
  gt::Tensor logits = to_gt(logits0).requires_grad_();
  at::Tensor tlogits = logits0.clone().requires_grad_(true);
  gt::Tensor loss = F::cross_entropy(logits, to_gt(target0), gt::nn::Reduction::Sum);
  at::Tensor want = at::cross_entropy_loss(tlogits, target0, {}, at::Reduction::Sum);
  const double value = loss.item<double>();
  CHECK(std::isfinite(value));
  CHECK(std::abs(value - std::log1p(std::exp(-1.0))) < 1e-4);
  CHECK(close(loss, want, 1e-5));
  loss.backward();
  want.backward();
  CHECK(close(logits.grad(), tlogits.grad(), 1e-5));
  gt::Tensor big = gt::tensor({1000.f, -1000.f});
  CHECK(F::cross_entropy(big, gt::tensor(std::vector<int64_t>{1}, {})).item<double>() ==
        Approx(2000.0));

  const gt::Tensor x = gt::zeros({5, 4});
  CHECK_THROWS_AS(F::cross_entropy(x, gt::zeros({5})), std::invalid_argument);
  CHECK_THROWS_WITH(F::cross_entropy(x, gt::zeros({5})),
                    Contains("target (5) float32") && Contains("logits (5, 4) float32"));
  CHECK_THROWS_WITH(F::cross_entropy(x, gt::zeros({5}, gt::kInt32)),
                    Contains("target (5) int32") && Contains("logits (5, 4)"));
  CHECK_THROWS_WITH(F::nll_loss(x, gt::zeros({5}, gt::kInt32)),
                    Contains("target (5) int32") && Contains("input (5, 4)"));
  CHECK_THROWS_AS(F::cross_entropy(x, gt::zeros({4}, gt::kInt64)), std::invalid_argument);
  CHECK_THROWS_WITH(
      F::cross_entropy(x, gt::zeros({4}, gt::kInt64)),
      Contains("target shape (4)") && Contains("(5, 4)") && Contains("expected target shape (5)"));
  CHECK_THROWS_AS(F::cross_entropy(gt::zeros({}), gt::zeros({}, gt::kInt64)),
                  std::invalid_argument);
}

TEST_CASE("save and load round-trip parameters in place", "[nn][integration]") {
  gt::test::connect_shared_cluster();
  const std::string path = temp_path("nn_roundtrip");
  gt::manual_seed(20);
  Net saved;
  {
    gt::NoGradGuard no_grad;
    saved->last.copy_(gt::tensor({0.25, -1.5}));  // float64, requires_grad false
  }

  // Other dtypes and a parameter whose worker tensor is a transposed view.
  struct MixedImpl : gt::nn::Module {
    MixedImpl() {
      register_parameter("half", gt::randn({3}).to(gt::kFloat16));
      register_parameter("bf16", gt::randn({2, 2}).to(gt::kBFloat16));
      register_parameter("steps", gt::arange(4), /*requires_grad=*/false);
      register_parameter("flags", gt::randn({3}) > 0.0, /*requires_grad=*/false);
      register_parameter("wt", gt::randn({3, 2}).t(), /*requires_grad=*/false);
    }
  };
  MixedImpl mixed_saved, mixed_loaded;
  gt::save(mixed_saved, path);
  {
    gt::NoGradGuard no_grad;
    for (gt::Tensor p : mixed_loaded.parameters()) p.zero_();
  }
  gt::load(mixed_loaded, path);
  CHECK(values_of(mixed_loaded) == values_of(mixed_saved));
  CHECK(mixed_loaded.parameters()[0].dtype() == gt::kFloat16);
  CHECK(mixed_loaded.parameters()[4].shape() == gt::Shape{2, 3});

  gt::save(saved, path);
  gt::manual_seed(21);
  Net loaded;
  const auto before = values_of(*loaded);
  REQUIRE(values_of(*saved) != before);
  const auto ids = loaded->parameters();
  gt::optim::SGD opt(loaded->parameters(), gt::optim::SGDOptions(0.1));
  gt::load(loaded, path);
  CHECK(values_of(*loaded) == values_of(*saved));
  CHECK(loaded->last.to_vector<double>() == std::vector<double>{0.25, -1.5});
  // In place: the same handles (and the optimizer's) see the loaded values.
  for (size_t i = 0; i < ids.size(); ++i) CHECK(loaded->parameters()[i].id() == ids[i].id());
  for (size_t i = 0; i < ids.size(); ++i) {
    CHECK(opt.parameters()[i].to_vector<double>() == values_of(*saved)[i]);
  }
  CHECK(loaded->first.requires_grad());
  CHECK(loaded->first.is_leaf());
  const gt::Tensor x = gt::randn({3, 2});
  CHECK(loaded(x).to_vector<float>() == saved(x).to_vector<float>());
  std::filesystem::remove(path);
}

TEST_CASE("load errors throw gt::Error and leave the module unchanged", "[nn][integration]") {
  gt::test::connect_shared_cluster();
  const std::string path = temp_path("nn_errors");
  gt::nn::Sequential small(gt::nn::Linear(4, 8), gt::nn::Linear(8, 2));
  gt::save(small, path);
  std::ifstream in(path, std::ios::binary);
  const std::string bytes(std::istreambuf_iterator<char>(in), {});
  in.close();

  gt::nn::Sequential target(gt::nn::Linear(4, 8), gt::nn::Linear(8, 3));
  const auto before = values_of(*target);
  // The first layer matches the file but the second does not: nothing is copied.
  CHECK_THROWS_AS(gt::load(target, path), gt::Error);
  CHECK_THROWS_WITH(gt::load(target, path),
                    Contains("1.weight") && Contains("(2, 8)") && Contains("(3, 8)"));
  CHECK(values_of(*target) == before);

  gt::nn::Sequential wider(gt::nn::Linear(4, 8), gt::nn::Linear(8, 2), gt::nn::Linear(2, 2));
  CHECK_THROWS_WITH(gt::load(wider, path), Contains("2.weight") && Contains("missing"));
  gt::nn::Sequential shorter(gt::nn::Linear(4, 8));
  const auto shorter_before = values_of(*shorter);
  CHECK_THROWS_WITH(gt::load(shorter, path), Contains("1.weight") && Contains("does not have"));
  CHECK(values_of(*shorter) == shorter_before);
  gt::nn::Linear renamed(4, 8);  // "weight", not "0.weight"
  const auto renamed_before = values_of(*renamed);
  CHECK_THROWS_AS(gt::load(renamed, path), gt::Error);
  CHECK(values_of(*renamed) == renamed_before);

  const std::string truncated_path = temp_path("nn_truncated");
  std::ofstream(truncated_path, std::ios::binary) << bytes.substr(0, bytes.size() - 5);
  gt::nn::Sequential same(gt::nn::Linear(4, 8), gt::nn::Linear(8, 2));
  const auto same_before = values_of(*same);
  CHECK_THROWS_AS(gt::load(same, truncated_path), gt::Error);
  CHECK_THROWS_WITH(gt::load(same, truncated_path), Contains("file ends inside"));
  std::ofstream(truncated_path, std::ios::binary) << "GTPARAMX" << bytes.substr(8);
  CHECK_THROWS_WITH(gt::load(same, truncated_path), Contains("not a gt parameter file"));
  CHECK(values_of(*same) == same_before);
  gt::load(same, path);  // the intact file still loads
  CHECK(values_of(*same) == values_of(*small));

  CHECK_THROWS_AS(gt::load(same, path + ".missing"), gt::Error);
  CHECK_THROWS_WITH(gt::load(same, path + ".missing"), Contains("cannot open"));
  CHECK_THROWS_AS(gt::save(same, "/nonexistent-dir/x.gtparam"), gt::Error);
  std::filesystem::remove(path);
  std::filesystem::remove(truncated_path);
}
