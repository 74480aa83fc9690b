// Every op of the runtime core, run through real dispatcher and worker
// processes and compared against LibTorch computed locally on the same data.

// LibTorch (through glog) defines CHECK too: include it before Catch so that
// Catch's CHECK wins.
#include "tests/integration/torch_compare.h"

#include <catch2/catch.hpp>

#include <functional>
#include <memory>

#include "tests/support/cluster.h"

using gt::test::fetch_double;
using gt::test::to_gt;

namespace {

struct OpCase {
  std::string name;
  std::vector<at::Tensor> inputs;
  std::function<gt::Tensor(std::vector<gt::Tensor>&)> run_gt;
  std::function<at::Tensor(std::vector<at::Tensor>&)> run_torch;
  double tol = 1e-5;
};

at::Tensor randf(std::vector<int64_t> shape) { return at::randn(shape, at::kFloat); }
at::Tensor posf(std::vector<int64_t> shape) { return at::rand(shape, at::kFloat) + 0.1; }
at::Tensor randi(std::vector<int64_t> shape) { return at::randint(-5, 6, shape, at::kLong); }

std::vector<OpCase> op_cases() {
  at::manual_seed(1234);
  using G = std::vector<gt::Tensor>;
  using T = std::vector<at::Tensor>;
  std::vector<OpCase> c;
  // elementwise binary with broadcasting
  c.push_back({"add broadcast", {randf({4, 1, 3}), randf({2, 3})},
               [](G& x) { return x[0] + x[1]; }, [](T& x) { return x[0] + x[1]; }});
  c.push_back({"sub", {randf({3, 5}), randf({3, 5})}, [](G& x) { return x[0] - x[1]; },
               [](T& x) { return x[0] - x[1]; }});
  c.push_back({"mul broadcast", {randf({2, 3, 4}), randf({4})}, [](G& x) { return x[0] * x[1]; },
               [](T& x) { return x[0] * x[1]; }});
  c.push_back({"div", {randf({6}), posf({6})}, [](G& x) { return x[0] / x[1]; },
               [](T& x) { return x[0] / x[1]; }});
  c.push_back({"int div is true division", {randi({5}), randi({5}).abs() + 1},
               [](G& x) { return x[0] / x[1]; }, [](T& x) { return x[0] / x[1]; }});
  c.push_back({"int64 + float64 promotes", {randi({4}), randf({4}).to(at::kDouble)},
               [](G& x) { return x[0] + x[1]; }, [](T& x) { return x[0] + x[1]; }});
  // scalars on either side
  c.push_back({"tensor + scalar", {randf({3, 2})}, [](G& x) { return x[0] + 2.5; },
               [](T& x) { return x[0] + 2.5; }});
  c.push_back({"scalar - tensor", {randf({3, 2})}, [](G& x) { return 1.5 - x[0]; },
               [](T& x) { return 1.5 - x[0]; }});
  c.push_back({"tensor - scalar", {randf({3})}, [](G& x) { return x[0] - 4.0; },
               [](T& x) { return x[0] - 4.0; }});
  c.push_back({"scalar * tensor", {randf({5})}, [](G& x) { return 3.0 * x[0]; },
               [](T& x) { return 3.0 * x[0]; }});
  c.push_back({"tensor / scalar", {randf({5})}, [](G& x) { return x[0] / 4.0; },
               [](T& x) { return x[0] / 4.0; }});
  c.push_back({"scalar / tensor", {posf({5})}, [](G& x) { return 2.0 / x[0]; },
               [](T& x) { return 2.0 / x[0]; }});
  c.push_back({"int tensor + int scalar stays int", {randi({4})},
               [](G& x) { return x[0] + 3; }, [](T& x) { return x[0] + 3; }});
  c.push_back({"int tensor * float scalar", {randi({4})}, [](G& x) { return x[0] * 0.5; },
               [](T& x) { return x[0] * 0.5; }});
  c.push_back({"unary minus", {randf({2, 2})}, [](G& x) { return -x[0]; },
               [](T& x) { return -x[0]; }});
  // unary math
  c.push_back({"exp", {randf({7})}, [](G& x) { return x[0].exp(); },
               [](T& x) { return x[0].exp(); }});
  c.push_back({"log", {posf({7})}, [](G& x) { return x[0].log(); },
               [](T& x) { return x[0].log(); }});
  c.push_back({"sqrt", {posf({7})}, [](G& x) { return x[0].sqrt(); },
               [](T& x) { return x[0].sqrt(); }});
  c.push_back({"relu", {randf({3, 3})}, [](G& x) { return x[0].relu(); },
               [](T& x) { return x[0].relu(); }});
  c.push_back({"sigmoid", {randf({8})}, [](G& x) { return x[0].sigmoid(); },
               [](T& x) { return x[0].sigmoid(); }});
  c.push_back({"tanh", {randf({8})}, [](G& x) { return x[0].tanh(); },
               [](T& x) { return x[0].tanh(); }});
  c.push_back({"exp of int64 gives float32", {randi({4})}, [](G& x) { return x[0].exp(); },
               [](T& x) { return x[0].exp(); }, 1e-4});
  c.push_back({"float64 math", {randf({4}).to(at::kDouble)},
               [](G& x) { return (x[0] * 2.0).tanh(); }, [](T& x) { return (x[0] * 2.0).tanh(); },
               1e-12});
  // matmul
  c.push_back({"matmul 2-D", {randf({5, 7}), randf({7, 3})},
               [](G& x) { return x[0].matmul(x[1]); }, [](T& x) { return x[0].matmul(x[1]); },
               1e-4});
  c.push_back({"matmul batched broadcast", {randf({2, 1, 4, 3}), randf({5, 3, 2})},
               [](G& x) { return gt::matmul(x[0], x[1]); },
               [](T& x) { return at::matmul(x[0], x[1]); }, 1e-4});
  c.push_back({"matmul vector", {randf({3}), randf({3, 4})},
               [](G& x) { return x[0].matmul(x[1]); }, [](T& x) { return x[0].matmul(x[1]); },
               1e-4});
  // reductions
  c.push_back({"sum all", {randf({3, 4})}, [](G& x) { return x[0].sum(); },
               [](T& x) { return x[0].sum(); }, 1e-4});
  c.push_back({"sum dims keepdim", {randf({3, 4, 5})},
               [](G& x) { return x[0].sum({0, -1}, true); },
               [](T& x) { return x[0].sum(at::IntArrayRef{0, -1}, true); }, 1e-4});
  c.push_back({"sum int64", {randi({3, 4})}, [](G& x) { return x[0].sum({1}); },
               [](T& x) { return x[0].sum(at::IntArrayRef{1}); }});
  c.push_back({"mean all", {randf({3, 4})}, [](G& x) { return x[0].mean(); },
               [](T& x) { return x[0].mean(); }, 1e-5});
  c.push_back({"mean dim", {randf({3, 4})}, [](G& x) { return x[0].mean({1}); },
               [](T& x) { return x[0].mean(at::IntArrayRef{1}); }, 1e-5});
  // shapes and views
  c.push_back({"reshape with -1", {randf({2, 6})}, [](G& x) { return x[0].reshape({3, -1}); },
               [](T& x) { return x[0].reshape({3, -1}); }});
  c.push_back({"view", {randf({2, 6})}, [](G& x) { return x[0].view({4, 3}); },
               [](T& x) { return x[0].view({4, 3}); }});
  c.push_back({"transpose then reshape", {randf({2, 3, 4})},
               [](G& x) { return x[0].transpose(0, 2).reshape({-1}); },
               [](T& x) { return x[0].transpose(0, 2).reshape({-1}); }});
  c.push_back({"slice with step", {randf({10, 3})}, [](G& x) { return x[0].slice(0, 1, 9, 3); },
               [](T& x) { return x[0].slice(0, 1, 9, 3); }});
  c.push_back({"slice negative start", {randf({4, 10})},
               [](G& x) { return x[0].slice(1, -4); },
               [](T& x) { return x[0].slice(1, -4); }});
  // in-place
  c.push_back({"add_ tensor", {randf({3, 4}), randf({4})},
               [](G& x) { auto y = x[0] * 1.0; y.add_(x[1]); return y; },
               [](T& x) { auto y = x[0] * 1.0; y.add_(x[1]); return y; }});
  c.push_back({"sub_ and mul_ scalars", {randf({6})},
               [](G& x) { auto y = x[0] * 1.0; y.sub_(1.5); y.mul_(2.0); return y; },
               [](T& x) { auto y = x[0] * 1.0; y.sub_(1.5); y.mul_(2.0); return y; }});
  c.push_back({"mul_ tensor", {randf({2, 3}), randf({2, 3})},
               [](G& x) { auto y = x[0] + 0.0; y.mul_(x[1]); return y; },
               [](T& x) { auto y = x[0] + 0.0; y.mul_(x[1]); return y; }});
  c.push_back({"sub_ tensor", {randf({2, 3}), randf({1, 3})},
               [](G& x) { auto y = x[0] + 0.0; y.sub_(x[1]); return y; },
               [](T& x) { auto y = x[0] + 0.0; y.sub_(x[1]); return y; }});
  c.push_back({"add_ on a view writes through", {randf({4, 4})},
               [](G& x) { auto y = x[0] + 0.0; auto v = y.view({16}); v.add_(1.0); return y; },
               [](T& x) { auto y = x[0] + 0.0; auto v = y.view({16}); v.add_(1.0); return y; }});
  c.push_back({"zero_", {randf({3})}, [](G& x) { auto y = x[0] + 0.0; y.zero_(); return y; },
               [](T& x) { auto y = x[0] + 0.0; y.zero_(); return y; }});
  return c;
}

}  // namespace

TEST_CASE("every op matches LibTorch computed locally", "[ops][integration]") {
  gt::test::connect_shared_cluster();
  for (auto& c : op_cases()) {
    INFO("case: " << c.name);
    std::vector<gt::Tensor> g;
    for (const auto& t : c.inputs) g.push_back(to_gt(t));
    auto torch_inputs = c.inputs;
    const at::Tensor want = c.run_torch(torch_inputs);
    const gt::Tensor got = c.run_gt(g);
    REQUIRE(got.shape() == std::vector<int64_t>(want.sizes().begin(), want.sizes().end()));
    CHECK(gt::test::to_torch(got.dtype()) == want.scalar_type());
    const at::Tensor got_local = fetch_double(got);
    CHECK(at::allclose(got_local, want.to(at::kDouble), c.tol, c.tol));
  }
}

TEST_CASE("creation ops match LibTorch", "[ops][integration]") {
  gt::test::connect_shared_cluster();
  CHECK(gt::zeros({2, 3}).to_vector<float>() == std::vector<float>(6, 0.f));
  CHECK(gt::ones({4}, gt::kInt64).to_vector<int64_t>() == std::vector<int64_t>(4, 1));
  CHECK(gt::ones({4}, gt::kInt64).dtype() == gt::kInt64);
  CHECK(gt::full({2, 2}, 7.5).to_vector<double>() == std::vector<double>(4, 7.5));
  auto a = gt::arange(5);
  CHECK(a.dtype() == gt::kInt64);
  CHECK(a.to_vector<int64_t>() == std::vector<int64_t>{0, 1, 2, 3, 4});
  auto b = gt::arange(0.5, 2.0, 0.5);
  CHECK(b.dtype() == gt::kFloat32);
  CHECK(b.to_vector<float>() == std::vector<float>{0.5f, 1.0f, 1.5f});
  auto t = gt::tensor(std::vector<int32_t>{1, 2, 3, 4, 5, 6}, {2, 3});
  CHECK(t.dtype() == gt::kInt32);
  CHECK(t.sum().item<int64_t>() == 21);
  CHECK(gt::tensor(std::vector<bool>{true, false}, {2}).to_vector<bool>() ==
        std::vector<bool>{true, false});
}

TEST_CASE("randn and rand with manual_seed match LibTorch's generator", "[ops][integration]") {
  gt::test::connect_shared_cluster();
  gt::manual_seed(42);
  auto x = gt::randn({3, 4});
  auto u = gt::rand({5}, gt::kFloat64);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(42);
  const at::Tensor want_x = at::randn({3, 4}, gen, at::kFloat);
  const at::Tensor want_u = at::rand({5}, gen, at::kDouble);
  CHECK(at::equal(fetch_double(x), want_x.to(at::kDouble)));
  CHECK(at::equal(fetch_double(u), want_u));
  // the same seed replays the same stream
  gt::manual_seed(42);
  CHECK(at::equal(fetch_double(gt::randn({3, 4})), want_x.to(at::kDouble)));
}

TEST_CASE("a training-style loop pipelines and stays correct", "[ops][integration]") {
  gt::test::connect_shared_cluster();
  at::manual_seed(7);
  const at::Tensor w0 = at::randn({8, 4}), xs = at::randn({16, 8});
  gt::Tensor w = to_gt(w0), x = to_gt(xs);
  at::Tensor tw = w0.clone();
  for (int i = 0; i < 200; ++i) {
    gt::Tensor h = x.matmul(w).relu();
    gt::Tensor g = x.transpose(0, 1).matmul(h) * 1e-3;
    w.sub_(g);
    at::Tensor th = xs.matmul(tw).relu();
    tw.sub_(xs.transpose(0, 1).matmul(th) * 1e-3);
  }
  CHECK(at::allclose(fetch_double(w), tw.to(at::kDouble), 1e-4, 1e-4));
}

TEST_CASE("printing looks like LibTorch's", "[ops][integration]") {
  gt::test::connect_shared_cluster();
  std::ostringstream out;
  out << gt::tensor(std::vector<float>{1, 2, 3, 4, 5, 6}, {2, 3});
  const std::string s = out.str();
  CHECK_THAT(s, Catch::Contains("1") && Catch::Contains("6") && Catch::Contains("{2,3}"));
}
