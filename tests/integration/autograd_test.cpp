// Autograd semantics through real dispatcher and worker processes: gradient
// accumulation, leaves, grad mode, graph retention, in-place checks and
// gradients of composite expressions compared with LibTorch's autograd.

// LibTorch (through glog) defines CHECK too: include it before Catch so that
// Catch's CHECK wins.
#include "tests/integration/torch_compare.h"

#include <catch2/catch.hpp>

#include <memory>

#include "tests/support/cluster.h"

using Catch::Contains;
using gt::test::fetch_double;
using gt::test::to_gt;

namespace {

// A gt leaf that requires grad, holding t's values.
gt::Tensor gt_leaf(const at::Tensor& t) {
  return to_gt(t).requires_grad_();
}
// A LibTorch leaf that requires grad, holding t's values.
at::Tensor torch_leaf(const at::Tensor& t) {
  return t.detach().clone().requires_grad_(true);
}

// Whether a gt tensor holds (nearly) the values of a LibTorch one, shape included.
bool close(const gt::Tensor& got, const at::Tensor& want, double tol = 1e-5) {
  if (!got.defined() || !want.defined()) return false;
  if (got.shape() != std::vector<int64_t>(want.sizes().begin(), want.sizes().end())) {
    return false;
  }
  return at::allclose(fetch_double(got), want.detach().to(at::kDouble), tol, tol);
}

// A module owning a given tensor as its parameter (to reach Module::zero_grad).
struct Holder : gt::nn::Module {
  explicit Holder(const gt::Tensor& p) { register_parameter("p", p); }
};

}  // namespace

TEST_CASE("autograd gradients accumulate until zero_grad clears them", "[autograd][integration]") {
  gt::test::connect_shared_cluster();
  at::manual_seed(1);
  const at::Tensor x0 = at::randn({2, 3});
  gt::Tensor x = gt_leaf(x0);
  (x * x).sum().backward();
  REQUIRE(x.grad().defined());
  CHECK(close(x.grad(), 2 * x0));
  // A second, different graph adds into the same .grad, as in PyTorch.
  (x * 3.0).sum().backward();
  CHECK(close(x.grad(), 2 * x0 + 3));
  (x.exp()).sum().backward();
  CHECK(close(x.grad(), 2 * x0 + 3 + x0.exp()));

  // Module::zero_grad makes the gradients undefined; the next backward starts afresh.
  auto holder = std::make_shared<Holder>(x);
  holder->zero_grad();
  CHECK_FALSE(x.grad().defined());
  (x * x).sum().backward();
  CHECK(close(x.grad(), 2 * x0));

  // The same through a layer: every parameter's grad is cleared.
  gt::nn::Linear fc(3, 2);
  fc(to_gt(x0)).sum().backward();
  REQUIRE(fc->weight.grad().defined());
  REQUIRE(fc->bias.grad().defined());
  const at::Tensor first = fetch_double(fc->weight.grad());
  fc->zero_grad();
  for (const gt::Tensor& p : fc->parameters()) CHECK_FALSE(p.grad().defined());
  fc(to_gt(x0)).sum().backward();
  CHECK(at::allclose(fetch_double(fc->weight.grad()), first));
}

TEST_CASE("autograd gives grad only to leaves that require grad", "[autograd][integration]") {
  gt::test::connect_shared_cluster();
  at::manual_seed(2);
  const at::Tensor x0 = at::randn({4}), c0 = at::randn({4});
  gt::Tensor x = gt_leaf(x0);
  gt::Tensor c = to_gt(c0);  // a leaf without requires_grad
  gt::Tensor unused = gt_leaf(c0);
  CHECK(x.is_leaf());
  CHECK(x.requires_grad());
  CHECK(c.is_leaf());
  CHECK_FALSE(c.requires_grad());
  gt::Tensor y = x * c;
  gt::Tensor z = y.sum();
  CHECK_FALSE(y.is_leaf());
  CHECK(y.requires_grad());
  CHECK_FALSE(x.grad().defined());  // undefined until the first backward
  z.backward();
  CHECK(close(x.grad(), c0));
  CHECK_FALSE(c.grad().defined());
  CHECK_FALSE(y.grad().defined());
  CHECK_FALSE(z.grad().defined());
  CHECK_FALSE(unused.grad().defined());
  // Two leaves fed by one gradient get tensors of their own.
  gt::Tensor p = gt_leaf(x0), q = gt_leaf(c0);
  (p + q).sum().backward();
  p.grad().mul_(0.0);
  CHECK(q.grad().to_vector<float>() == std::vector<float>(4, 1.f));
  // A leaf as the root takes the gradient as it is.
  gt::Tensor r = gt_leaf(x0);
  r.backward(to_gt(c0));
  CHECK(close(r.grad(), c0));
  // Nothing that requires grad: backward has nothing to do and says so.
  CHECK_THROWS_AS((c * 2.0).sum().backward(), std::invalid_argument);
  CHECK_THROWS_WITH((c * 2.0).sum().backward(), Contains("does not require grad"));
}

TEST_CASE("autograd NoGradGuard stops recording and nests", "[autograd][integration]") {
  gt::test::connect_shared_cluster();
  gt::Tensor x = gt_leaf(at::tensor({1.0f, 2.0f, 3.0f}));
  REQUIRE(gt::is_grad_enabled());
  {
    gt::NoGradGuard no_grad;
    CHECK_FALSE(gt::is_grad_enabled());
    gt::Tensor y = x * 2.0;
    CHECK_FALSE(y.requires_grad());
    CHECK(y.is_leaf());
    {
      gt::NoGradGuard inner;
      CHECK_FALSE(gt::is_grad_enabled());
    }
    CHECK_FALSE(gt::is_grad_enabled());  // the inner guard restored "off"
    {
      gt::AutoGradMode on(true);
      CHECK(gt::is_grad_enabled());
      CHECK((x * 2.0).requires_grad());
    }
    CHECK_FALSE(gt::is_grad_enabled());
    // In-place updates of a leaf that requires grad are allowed here (optimizers).
    x.sub_(1.0);
    CHECK_THROWS_AS(y.sum().backward(), std::invalid_argument);
  }
  CHECK(gt::is_grad_enabled());
  CHECK(x.to_vector<float>() == std::vector<float>{0.f, 1.f, 2.f});
  gt::Tensor w = x * x;
  CHECK(w.requires_grad());
  w.sum().backward();
  CHECK(x.grad().to_vector<float>() == std::vector<float>{0.f, 2.f, 4.f});
}

TEST_CASE("autograd sums gradients of shared subexpressions", "[autograd][integration]") {
  gt::test::connect_shared_cluster();
  at::manual_seed(3);
  const at::Tensor x0 = at::randn({5});
  // A tensor used twice by one op.
  gt::Tensor x = gt_leaf(x0);
  (x * x).sum().backward();
  CHECK(close(x.grad(), 2 * x0));

  // A diamond: a feeds two branches that meet again, and x is used three times.
  gt::Tensor g = gt_leaf(x0);
  gt::Tensor a = g * 2.0;
  gt::Tensor d = a.exp() + a * a;
  (d * g).sum().backward();
  at::Tensor t = torch_leaf(x0);
  at::Tensor ta = t * 2.0;
  ((ta.exp() + ta * ta) * t).sum().backward();
  CHECK(close(g.grad(), t.grad(), 1e-4));
}

TEST_CASE("autograd reduces broadcast gradients to the input shapes", "[autograd][integration]") {
  gt::test::connect_shared_cluster();
  at::manual_seed(4);
  const at::Tensor a0 = at::randn({3, 1}), b0 = at::randn({4}), s0 = at::randn({}),
                   c0 = at::randn({2, 3, 4});
  gt::Tensor a = gt_leaf(a0), b = gt_leaf(b0), s = gt_leaf(s0);
  gt::Tensor y = (a + b) * to_gt(c0) * s + a * b;  // (2, 3, 4)
  (y * y).sum().backward();
  at::Tensor ta = torch_leaf(a0), tb = torch_leaf(b0), ts = torch_leaf(s0);
  at::Tensor ty = (ta + tb) * c0 * ts + ta * tb;
  (ty * ty).sum().backward();
  CHECK(a.grad().shape() == gt::Shape{3, 1});
  CHECK(b.grad().shape() == gt::Shape{4});
  CHECK(s.grad().shape() == gt::Shape{});
  CHECK(close(a.grad(), ta.grad(), 1e-4));
  CHECK(close(b.grad(), tb.grad(), 1e-4));
  CHECK(close(s.grad(), ts.grad(), 1e-4));
}

TEST_CASE("autograd backward of a non-scalar needs a gradient", "[autograd][integration]") {
  gt::test::connect_shared_cluster();
  at::manual_seed(5);
  const at::Tensor x0 = at::randn({2, 3}), g0 = at::randn({2, 3});
  gt::Tensor x = gt_leaf(x0);
  gt::Tensor y = x.exp();
  CHECK_THROWS_AS(y.backward(), std::invalid_argument);
  CHECK_THROWS_WITH(y.backward(),
                    Contains("implicitly created only for scalar outputs") && Contains("(2, 3)"));
  CHECK_THROWS_WITH(y.backward(gt::ones({3, 2}), true), Contains("gradient has shape (3, 2)"));
  CHECK_FALSE(x.grad().defined());  // the failed calls changed nothing
  y.backward(to_gt(g0));
  CHECK(close(x.grad(), g0 * x0.exp()));
  // The gradient argument stays the caller's: changing it later changes no .grad.
  gt::Tensor u = gt_leaf(x0);
  gt::Tensor gu = to_gt(g0);
  (u + 1.0).backward(gu);
  gu.zero_();
  CHECK(close(u.grad(), g0));
  // One element in any shape needs no gradient argument.
  gt::Tensor z = gt_leaf(at::tensor({2.0f}).reshape({1, 1}));
  (z * z).backward();
  CHECK(z.grad().to_vector<float>() == std::vector<float>{4.f});
}

TEST_CASE("autograd retain_graph allows another backward", "[autograd][integration]") {
  gt::test::connect_shared_cluster();
  at::manual_seed(6);
  const at::Tensor x0 = at::randn({3});
  gt::Tensor x = gt_leaf(x0);
  gt::Tensor y = x.exp().sum();
  y.backward(gt::Tensor(), /*retain_graph=*/true);
  CHECK(close(x.grad(), x0.exp()));
  y.backward();  // frees the graph
  CHECK(close(x.grad(), 2 * x0.exp()));
  CHECK_THROWS_AS(y.backward(), gt::Error);
  CHECK_THROWS_WITH(y.backward(),
                    Contains("second time") && Contains("ExpBackward") && Contains("retain_graph"));
  CHECK(close(x.grad(), 2 * x0.exp()));  // unchanged by the failed backward
}

TEST_CASE("autograd detach cuts history and requires_grad_ checks its tensor",
          "[autograd][integration]") {
  gt::test::connect_shared_cluster();
  at::manual_seed(7);
  const at::Tensor x0 = at::randn({4});
  gt::Tensor x = gt_leaf(x0);
  gt::Tensor d = (x * 2.0).detach();
  CHECK(d.is_leaf());
  CHECK_FALSE(d.requires_grad());
  (x * d).sum().backward();
  CHECK(close(x.grad(), 2 * x0));  // d counts as a constant: not 4 * x0

  // detach() shares the data: in-place ops on it show in the original.
  gt::Tensor y = x.detach();
  y.add_(1.0);
  CHECK(close(x, x0 + 1));

  CHECK_THROWS_AS(gt::arange(5).requires_grad_(), std::invalid_argument);
  CHECK_THROWS_WITH(gt::arange(5).requires_grad_(), Contains("floating") && Contains("int64"));
  CHECK_THROWS_AS(gt::ones({2}, gt::kInt32).requires_grad_(), std::invalid_argument);
  CHECK_THROWS_WITH((x * 2.0).requires_grad_(false), Contains("leaf"));
}

TEST_CASE("autograd checks in-place ops against the graph", "[autograd][integration]") {
  gt::test::connect_shared_cluster();
  at::manual_seed(8);
  const at::Tensor x0 = at::randn({4});
  gt::Tensor x = gt_leaf(x0);
  CHECK_THROWS_AS(x.add_(1.0), std::invalid_argument);
  CHECK_THROWS_WITH(x.mul_(x), Contains("leaf") && Contains("in-place"));
  CHECK(close(x, x0));  // the refused ops did not run

  // Modifying a tensor that backward saved is caught through its version.
  gt::Tensor a = x * 2.0;
  gt::Tensor b = a * a;  // saves a
  a.add_(1.0);
  CHECK_THROWS_AS(b.sum().backward(), gt::Error);
  CHECK_THROWS_WITH(b.sum().backward(),
                    Contains("modified by an in-place operation") && Contains("MulBackward"));
  gt::Tensor f = (x * 2.0).exp();  // saves its output, f itself
  f.mul_(2.0);
  CHECK_THROWS_WITH(f.sum().backward(),
                    Contains("modified by an in-place operation") && Contains("ExpBackward"));
  gt::Tensor k = x * 2.0;
  gt::Tensor m = k * k;
  k.detach().add_(1.0);  // detach() shares the version counter too
  CHECK_THROWS_WITH(m.sum().backward(), Contains("MulBackward"));
  CHECK_FALSE(x.grad().defined());

  // A tensor without history that takes a value needing grad in place gets history.
  gt::Tensor acc = gt::full({4}, 3.0);
  acc.mul_(x);
  acc.add_(x * x);
  CHECK_FALSE(acc.is_leaf());
  CHECK(acc.requires_grad());
  acc.sum().backward();
  CHECK(close(x.grad(), 3 + 2 * x0));

  // In-place ops on non-leaves that are not saved are recorded and differentiate.
  gt::Tensor g = gt_leaf(x0);
  gt::Tensor h = g * 2.0;
  h.mul_(g);
  h.add_(g);
  (h * h).sum().backward();
  at::Tensor tg = torch_leaf(x0);
  at::Tensor th = tg * 2.0;
  th.mul_(tg);
  th.add_(tg);
  (th * th).sum().backward();
  CHECK(close(g.grad(), tg.grad(), 1e-4));
}

TEST_CASE("autograd differentiates views, cat and stack like LibTorch", "[autograd][integration]") {
  gt::test::connect_shared_cluster();
  at::manual_seed(9);
  const at::Tensor x0 = at::randn({2, 3, 4}), w0 = at::randn({3}), c0 = at::randn({3, 10});
  gt::Tensor x = gt_leaf(x0), w = gt_leaf(w0);
  {
    gt::Tensor s = x.permute({1, 0, 2}).slice(2, 1, 4, 2);  // (3, 2, 2)
    gt::Tensor e = w.reshape({3, 1, 1}).expand({3, 2, 2});  // (3, 2, 2)
    gt::Tensor st = gt::stack({s * e, s.exp()}, 1);         // (3, 2, 2, 2)
    gt::Tensor ct = gt::cat({st.reshape({3, 8}), w.unsqueeze(1).expand({3, 2})}, 1);
    gt::Tensor out = (ct * to_gt(c0)).transpose(0, 1).flatten();  // (30)
    (out.slice(0, 3, 27) * out.slice(0, 0, 24)).sum().backward();
  }
  at::Tensor tx = torch_leaf(x0), tw = torch_leaf(w0);
  {
    at::Tensor s = tx.permute({1, 0, 2}).slice(2, 1, 4, 2);
    at::Tensor e = tw.reshape({3, 1, 1}).expand({3, 2, 2});
    at::Tensor st = at::stack({s * e, s.exp()}, 1);
    at::Tensor ct = at::cat({st.reshape({3, 8}), tw.unsqueeze(1).expand({3, 2})}, 1);
    at::Tensor out = (ct * c0).transpose(0, 1).flatten();
    (out.slice(0, 3, 27) * out.slice(0, 0, 24)).sum().backward();
  }
  CHECK(close(x.grad(), tx.grad(), 1e-4));
  CHECK(close(w.grad(), tw.grad(), 1e-4));
}

TEST_CASE("autograd gives each leaf a gradient of its own dtype", "[autograd][integration]") {
  gt::test::connect_shared_cluster();
  at::manual_seed(10);
  const at::Tensor x0 = at::randn({3}), y0 = at::randn({3}, at::kDouble);
  gt::Tensor x = gt_leaf(x0), y = gt_leaf(y0);
  gt::Tensor z = (x * y).exp().sum();
  REQUIRE(z.dtype() == gt::kFloat64);
  z.backward();
  at::Tensor tx = torch_leaf(x0), ty = torch_leaf(y0);
  (tx * ty).exp().sum().backward();
  CHECK(x.grad().dtype() == gt::kFloat32);
  CHECK(y.grad().dtype() == gt::kFloat64);
  CHECK(close(x.grad(), tx.grad(), 1e-5));
  CHECK(close(y.grad(), ty.grad(), 1e-10));
  // Through an explicit cast as well.
  gt::Tensor u = gt_leaf(x0);
  (u.to(gt::kFloat64) * to_gt(y0)).sum().backward();
  CHECK(u.grad().dtype() == gt::kFloat32);
  CHECK(close(u.grad(), y0, 1e-6));
}
