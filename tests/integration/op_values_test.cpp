// The values of the ops added for training, run through real dispatcher and
// worker processes, against LibTorch computed locally on the same data in every
// dtype the op accepts: unary ops, pow, softmax, reductions, comparisons,
// joining, shape ops, dtype conversion, indexing, and detach. Their gradients
// are checked in grad_ops_test.cpp.

// LibTorch (through glog) defines CHECK too: include these before Catch so
// that Catch's CHECK wins.
#include "tests/integration/op_compare.h"
#include "tests/integration/torch_compare.h"

#include <catch2/catch.hpp>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "tests/support/cluster.h"

using gt::test::Fill;
using gt::test::G;
using gt::test::GtFn;
using gt::test::index;
using gt::test::kEnd;
using gt::test::mismatch;
using gt::test::sample;
using gt::test::T;
using gt::test::to_gt;
using gt::test::to_torch;
using gt::test::TorchFn;
using gt::test::value_tolerance;

namespace {

const std::vector<gt::DType> kAllDTypes = {gt::kFloat32, gt::kFloat64, gt::kFloat16,
                                           gt::kBFloat16, gt::kInt32,   gt::kInt64,
                                           gt::kBool};

std::string name_of(gt::DType t) { return std::string(gt::to_string(t)); }
// " float32" (built by appending: GCC 12 warns falsely on " " + std::string).
std::string suffix(gt::DType t) {
  std::string s = " ";
  s += gt::to_string(t);
  return s;
}

// ---- value cases ---------------------------------------------------------------------

struct OpCase {
  std::string name;
  T inputs;
  GtFn run_gt;
  TorchFn run_torch;
};

class OpCases {
 public:
  // A case whose code reads the same for gt and LibTorch (a generic lambda).
  template <typename F>
  void same(std::string name, T inputs, F f) {
    cases_.push_back({std::move(name), std::move(inputs), [f](const G& x) { return f(x); },
                      [f](const T& x) { return f(x); }});
  }
  void add(std::string name, T inputs, GtFn run_gt, TorchFn run_torch) {
    cases_.push_back({std::move(name), std::move(inputs), std::move(run_gt), std::move(run_torch)});
  }
  const std::vector<OpCase>& cases() const { return cases_; }

 private:
  std::vector<OpCase> cases_;
};

void check_case(const OpCase& c) {
  G g;
  for (const at::Tensor& t : c.inputs) g.push_back(to_gt(t));
  const at::Tensor want = c.run_torch(c.inputs);
  const gt::Tensor got = c.run_gt(g);
  CHECK(mismatch(got, want, value_tolerance(want.scalar_type())) == "");
}

void check_cases(const OpCases& cases) {
  gt::test::connect_shared_cluster();
  for (const OpCase& c : cases.cases()) {
    INFO("case: " << c.name);
    CHECK_NOTHROW(check_case(c));
  }
}

}  // namespace

// ---- values --------------------------------------------------------------------------

TEST_CASE("rsqrt/abs/sign/gelu match LibTorch in every dtype", "[ops][grad_ops][integration]") {
  at::manual_seed(1);
  OpCases c;
  for (gt::DType t : kAllDTypes) {
    const std::string d = suffix(t);
    // float16 lacks CPU kernels for rsqrt and gelu in LibTorch.
    if (t != gt::kFloat16) {
      c.same("rsqrt" + d, {sample({2, 3}, t, Fill::Positive)},
             [](const auto& x) { return x[0].rsqrt(); });
    }
    if (t != gt::kBool) {
      c.same("abs" + d, {sample({2, 4}, t, Fill::Steps)}, [](const auto& x) { return x[0].abs(); });
    }
    c.same("sign" + d, {sample({2, 4}, t, Fill::Steps)}, [](const auto& x) { return x[0].sign(); });
    if (gt::is_floating(t) && t != gt::kFloat16) {
      c.add("gelu" + d, {sample({2, 4}, t) * 2}, [](const G& x) { return x[0].gelu(); },
            [](const T& x) { return at::gelu(x[0]); });
    }
  }
  check_cases(c);

  // Where the worker's LibTorch has no kernel, the failure surfaces at the
  // next sync point, and the session goes on.
  const gt::Tensor half = gt::tensor({1.f, 4.f}).to(gt::kFloat16);
  CHECK_THROWS_AS(half.rsqrt().to_vector<float>(), gt::RemoteError);
  CHECK(half.abs().to_vector<float>() == std::vector<float>{1.f, 4.f});
}

TEST_CASE("pow matches LibTorch for number and tensor exponents and number bases",
          "[ops][grad_ops][integration]") {
  at::manual_seed(2);
  OpCases c;
  for (gt::DType t : kAllDTypes) {
    const std::string d = suffix(t);
    c.same("pow 2" + d, {sample({2, 3}, t, Fill::Steps)},
           [](const auto& x) { return x[0].pow(2); });
    c.same("pow 3" + d, {sample({2, 3}, t, Fill::Steps)},
           [](const auto& x) { return x[0].pow(3); });
    c.same("pow 0.5" + d, {sample({2, 3}, t, Fill::Positive)},
           [](const auto& x) { return x[0].pow(0.5); });
    c.add("2 ** tensor" + d, {sample({2, 3}, t, Fill::Positive)},
          [](const G& x) { return gt::pow(2, x[0]); }, [](const T& x) { return at::pow(2, x[0]); });
    c.add("1.5 ** tensor" + d, {sample({2, 3}, t, Fill::Steps)},
          [](const G& x) { return gt::pow(1.5, x[0]); },
          [](const T& x) { return at::pow(1.5, x[0]); });
    if (t != gt::kBool) {
      const Fill base = gt::is_floating(t) ? Fill::Positive : Fill::Steps;
      c.same("tensor ** tensor broadcast" + d,
             {sample({2, 3}, t, base), sample({3}, t, Fill::Positive)},
             [](const auto& x) { return x[0].pow(x[1]); });
    }
    if (gt::is_floating(t)) {
      c.same("pow -1" + d, {sample({2, 3}, t, Fill::Positive)},
             [](const auto& x) { return x[0].pow(-1); });
      c.same("pow -1.5" + d, {sample({2, 3}, t, Fill::Positive)},
             [](const auto& x) { return x[0].pow(-1.5); });
    }
  }
  const auto pow = [](const auto& x) { return x[0].pow(x[1]); };
  c.same("int32 ** float32 promotes",
         {sample({2, 3}, gt::kInt32, Fill::Steps), sample({3}, gt::kFloat32, Fill::Positive)}, pow);
  c.same("float64 ** int64 promotes",
         {sample({3}, gt::kFloat64, Fill::Positive), sample({2, 3}, gt::kInt64, Fill::Positive)},
         pow);
  c.same("bfloat16 ** float16 promotes",
         {sample({3}, gt::kBFloat16, Fill::Positive), sample({3}, gt::kFloat16, Fill::Positive)},
         pow);
  c.same("float32 ** 0-dim float64 keeps float32",
         {sample({3}, gt::kFloat32, Fill::Positive), sample({}, gt::kFloat64, Fill::Positive)},
         pow);
  check_cases(c);

  gt::test::connect_shared_cluster();
  CHECK_THROWS_AS(gt::tensor({1, 2, 3}).pow(-1), std::invalid_argument);
}

TEST_CASE("softmax and log_softmax match LibTorch along every dim",
          "[ops][grad_ops][integration]") {
  at::manual_seed(3);
  OpCases c;
  for (gt::DType t : {gt::kFloat32, gt::kFloat64, gt::kBFloat16}) {
    const std::string d = suffix(t);
    for (int64_t dim : {0, 1, -1}) {
      const std::string n = " dim " + std::to_string(dim) + d;
      c.same("softmax" + n, {sample({2, 3, 4}, t) * 3},
             [dim](const auto& x) { return x[0].softmax(dim); });
      c.same("log_softmax" + n, {sample({2, 3, 4}, t) * 3},
             [dim](const auto& x) { return x[0].log_softmax(dim); });
    }
  }
  check_cases(c);
}

TEST_CASE("max/min/argmax match LibTorch's amax/amin/argmax", "[ops][grad_ops][integration]") {
  at::manual_seed(4);
  OpCases c;
  for (gt::DType t : kAllDTypes) {
    const std::string d = suffix(t);
    const at::Tensor x = sample({2, 3, 4}, t, Fill::Steps);  // ties on purpose
    c.add("max all" + d, {x}, [](const G& x) { return x[0].max(); },
          [](const T& x) { return x[0].amax(); });
    c.add("min all" + d, {x}, [](const G& x) { return x[0].min(); },
          [](const T& x) { return x[0].amin(); });
    c.add("max dim" + d, {x}, [](const G& x) { return x[0].max({1}); },
          [](const T& x) { return x[0].amax({1}); });
    c.add("max dims keepdim" + d, {x}, [](const G& x) { return x[0].max({0, 2}, true); },
          [](const T& x) { return x[0].amax({0, 2}, true); });
    c.add("min negative dim keepdim" + d, {x}, [](const G& x) { return x[0].min({-1}, true); },
          [](const T& x) { return x[0].amin({-1}, true); });
    c.add("min dims" + d, {x}, [](const G& x) { return x[0].min({2, 0}); },
          [](const T& x) { return x[0].amin({2, 0}); });
    if (t == gt::kBool) continue;  // no argmax of bool tensors
    c.add("argmax all" + d, {x}, [](const G& x) { return x[0].argmax(); },
          [](const T& x) { return x[0].argmax(); });
    c.add("argmax dim" + d, {x}, [](const G& x) { return x[0].argmax(1); },
          [](const T& x) { return x[0].argmax(1); });
    c.add("argmax negative dim keepdim" + d, {x}, [](const G& x) { return x[0].argmax(-1, true); },
          [](const T& x) { return x[0].argmax(-1, true); });
  }
  check_cases(c);
}

TEST_CASE("comparisons match LibTorch with bool results", "[ops][grad_ops][integration]") {
  at::manual_seed(5);
  OpCases c;
  const auto add_all = [&c](const std::string& what, const T& in) {
    c.same(what + " <", in, [](const auto& x) { return x[0] < x[1]; });
    c.same(what + " <=", in, [](const auto& x) { return x[0] <= x[1]; });
    c.same(what + " >", in, [](const auto& x) { return x[0] > x[1]; });
    c.same(what + " >=", in, [](const auto& x) { return x[0] >= x[1]; });
    c.same(what + " ==", in, [](const auto& x) { return x[0] == x[1]; });
    c.same(what + " !=", in, [](const auto& x) { return x[0] != x[1]; });
  };
  for (gt::DType t : kAllDTypes) {
    const std::string d = name_of(t);
    add_all("tensor-tensor " + d, {sample({2, 3}, t, Fill::Steps), sample({3}, t, Fill::Steps)});
    const T in = {sample({2, 4}, t, Fill::Steps)};
    c.same("tensor < 1 " + d, in, [](const auto& x) { return x[0] < 1; });
    c.same("tensor <= 0.5 " + d, in, [](const auto& x) { return x[0] <= 0.5; });
    c.same("tensor > -1 " + d, in, [](const auto& x) { return x[0] > -1; });
    c.same("tensor >= 0 " + d, in, [](const auto& x) { return x[0] >= 0; });
    c.same("tensor == 1 " + d, in, [](const auto& x) { return x[0] == 1; });
    c.same("tensor != 0.5 " + d, in, [](const auto& x) { return x[0] != 0.5; });
    c.same("1 < tensor " + d, in, [](const auto& x) { return 1 < x[0]; });
    c.same("0.5 <= tensor " + d, in, [](const auto& x) { return 0.5 <= x[0]; });
    c.same("0 > tensor " + d, in, [](const auto& x) { return 0 > x[0]; });
    c.same("-1 >= tensor " + d, in, [](const auto& x) { return -1 >= x[0]; });
    c.same("0 == tensor " + d, in, [](const auto& x) { return 0 == x[0]; });
    c.same("1 != tensor " + d, in, [](const auto& x) { return 1 != x[0]; });
  }
  add_all("int32-float32",
          {sample({2, 3}, gt::kInt32, Fill::Steps), sample({3}, gt::kFloat32, Fill::Steps)});
  add_all("bool-int64", {sample({2, 1}, gt::kBool), sample({3}, gt::kInt64, Fill::Steps)});
  add_all("bfloat16-float16",
          {sample({4}, gt::kBFloat16, Fill::Steps), sample({4}, gt::kFloat16, Fill::Steps)});
  check_cases(c);
}

TEST_CASE("where/cat/stack match LibTorch with type promotion", "[ops][grad_ops][integration]") {
  at::manual_seed(6);
  OpCases c;
  const auto where = [&c](const std::string& name, const T& in) {
    c.add(name, in, [](const G& x) { return gt::where(x[0], x[1], x[2]); },
          [](const T& x) { return at::where(x[0], x[1], x[2]); });
  };
  const auto cat = [&c](const std::string& name, const T& in, int64_t dim) {
    c.add(name, in, [dim](const G& x) { return gt::cat(x, dim); },
          [dim](const T& x) { return at::cat(x, dim); });
  };
  const auto stack = [&c](const std::string& name, const T& in, int64_t dim) {
    c.add(name, in, [dim](const G& x) { return gt::stack(x, dim); },
          [dim](const T& x) { return at::stack(x, dim); });
  };
  for (gt::DType t : kAllDTypes) {
    const std::string d = suffix(t);
    where("where broadcast" + d, {sample({2, 3}, gt::kBool), sample({3}, t), sample({2, 1}, t)});
    cat("cat dim 0" + d, {sample({2, 3}, t), sample({1, 3}, t), sample({3, 3}, t)}, 0);
    cat("cat dim -1" + d, {sample({2, 1}, t), sample({2, 3}, t)}, -1);
    stack("stack dim 0" + d, {sample({2, 3}, t), sample({2, 3}, t)}, 0);
    stack("stack dim -1" + d, {sample({2, 3}, t), sample({2, 3}, t), sample({2, 3}, t)}, -1);
  }
  where("where int32 and float64", {sample({2, 3}, gt::kBool), sample({2, 3}, gt::kInt32),
                                    sample({3}, gt::kFloat64)});
  where("where bool and int64", {sample({3}, gt::kBool), sample({3}, gt::kBool),
                                 sample({3}, gt::kInt64)});
  where("where float32 and a 0-dim float64",
        {sample({2, 3}, gt::kBool), sample({2, 3}, gt::kFloat32), sample({}, gt::kFloat64)});
  where("where bfloat16 and float16", {sample({2, 2}, gt::kBool), sample({2, 2}, gt::kBFloat16),
                                       sample({2, 2}, gt::kFloat16)});
  cat("cat int32, float32 and bool",
      {sample({1, 2}, gt::kInt32), sample({2, 2}, gt::kFloat32), sample({1, 2}, gt::kBool)}, 0);
  cat("cat int64 and bool", {sample({2}, gt::kInt64), sample({3}, gt::kBool)}, 0);
  cat("cat bfloat16 and float16", {sample({2, 1}, gt::kBFloat16), sample({2, 2}, gt::kFloat16)}, 1);
  stack("stack int32 and float64", {sample({3}, gt::kInt32), sample({3}, gt::kFloat64)}, 1);
  check_cases(c);
}

TEST_CASE("shape ops match LibTorch in every dtype", "[ops][grad_ops][integration]") {
  at::manual_seed(7);
  OpCases c;
  for (gt::DType t : kAllDTypes) {
    const std::string d = suffix(t);
    c.same("unsqueeze 0" + d, {sample({2, 3}, t)}, [](const auto& x) { return x[0].unsqueeze(0); });
    c.same("unsqueeze -1" + d, {sample({2, 3}, t)},
           [](const auto& x) { return x[0].unsqueeze(-1); });
    c.same("squeeze all" + d, {sample({2, 1, 3, 1}, t)},
           [](const auto& x) { return x[0].squeeze(); });
    c.same("squeeze dim" + d, {sample({2, 1, 3, 1}, t)},
           [](const auto& x) { return x[0].squeeze(-1); });
    c.same("squeeze a dim that is not 1" + d, {sample({2, 1, 3}, t)},
           [](const auto& x) { return x[0].squeeze(0); });
    c.same("permute" + d, {sample({2, 3, 4}, t)},
           [](const auto& x) { return x[0].permute({2, 0, 1}); });
    c.same("t of a matrix" + d, {sample({2, 3}, t)}, [](const auto& x) { return x[0].t(); });
    c.same("t of a vector" + d, {sample({3}, t)}, [](const auto& x) { return x[0].t(); });
    c.same("flatten" + d, {sample({2, 3, 2}, t)}, [](const auto& x) { return x[0].flatten(); });
    c.same("flatten from dim 1" + d, {sample({2, 3, 2}, t)},
           [](const auto& x) { return x[0].flatten(1); });
    c.same("flatten dims 0 to 1" + d, {sample({2, 3, 2}, t)},
           [](const auto& x) { return x[0].flatten(0, 1); });
    c.same("flatten of a 0-dim tensor" + d, {sample({}, t)},
           [](const auto& x) { return x[0].flatten(); });
    c.same("expand with -1 and new dims" + d, {sample({3, 1}, t)},
           [](const auto& x) { return x[0].expand({2, -1, 4}); });
    c.same("expand a vector" + d, {sample({4}, t)},
           [](const auto& x) { return x[0].expand({3, 4}); });
    c.same("slice negative start" + d, {sample({5, 2}, t)},
           [](const auto& x) { return x[0].slice(0, -3, kEnd, 1); });
    c.same("slice negative bounds and step" + d, {sample({2, 7}, t)},
           [](const auto& x) { return x[0].slice(1, -6, -1, 2); });
    c.same("slice step 3 past the end" + d, {sample({7, 2}, t)},
           [](const auto& x) { return x[0].slice(0, 1, 100, 3); });
    c.same("slice clamps a start before the beginning" + d, {sample({2, 5}, t)},
           [](const auto& x) { return x[0].slice(1, -100, 2, 1); });
    c.same("slice to an empty result" + d, {sample({4, 2}, t)},
           [](const auto& x) { return x[0].slice(0, 3, 1, 1); });
    c.same("permute then flatten" + d, {sample({2, 3, 2}, t)},
           [](const auto& x) { return x[0].permute({1, 2, 0}).flatten(); });
    c.same("transposed slice then unsqueeze" + d, {sample({4, 3}, t)},
           [](const auto& x) { return x[0].t().slice(1, 1, kEnd, 2).unsqueeze(1); });
  }
  check_cases(c);
}

TEST_CASE("to and copy_ convert between every pair of dtypes like LibTorch",
          "[ops][grad_ops][integration]") {
  const at::Tensor values =
      at::tensor({-2.5, -1.0, 0.0, 0.5, 1.0, 3.75, 100.25, 7.0}, at::kDouble).reshape({2, 4});
  OpCases c;
  for (gt::DType from : kAllDTypes) {
    for (gt::DType to : kAllDTypes) {
      c.add("to " + name_of(from) + " -> " + name_of(to), {values.to(to_torch(from))},
            [to](const G& x) { return x[0].to(to); },
            [to](const T& x) { return x[0].to(to_torch(to)); });
    }
  }
  const at::Tensor row = at::tensor({-2.5, 0.0, 3.75}, at::kDouble);
  for (gt::DType to : kAllDTypes) {
    for (gt::DType from : kAllDTypes) {
      c.add("copy_ broadcast " + name_of(from) + " into " + name_of(to), {row.to(to_torch(from))},
            [to](const G& x) {
              gt::Tensor y = gt::ones({2, 3}, to);
              y.copy_(x[0]);
              return y;
            },
            [to](const T& x) {
              at::Tensor y = at::ones({2, 3}, to_torch(to));
              y.copy_(x[0]);
              return y;
            });
    }
  }
  check_cases(c);

  const gt::Tensor x = gt::tensor({1.f, 2.f});
  CHECK(x.to(gt::kFloat32).id() == x.id());
}

TEST_CASE("detach shares the data and drops the history", "[ops][grad_ops][integration]") {
  gt::test::connect_shared_cluster();
  const at::Tensor v = at::randn({2, 3}, at::kDouble);
  gt::Tensor x = to_gt(v);
  x.requires_grad_();
  const gt::Tensor y = x * 2.0;
  gt::Tensor d = y.detach();
  CHECK_FALSE(d.requires_grad());
  CHECK(d.is_leaf());
  CHECK(d.dtype() == gt::kFloat64);
  CHECK(mismatch(d, v * 2.0, 1e-12) == "");
  {
    gt::NoGradGuard no_grad;
    d.add_(1.0);  // shows in y too
  }
  CHECK(mismatch(y.detach(), v * 2.0 + 1.0, 1e-12) == "");
  // an op on the detached tensor has no history, so only the direct path counts
  (y * d).sum().backward();
  CHECK(mismatch(x.grad(), (v * 2.0 + 1.0) * 2.0, 1e-12) == "");
}

TEST_CASE("indexing ops match LibTorch in every dtype", "[ops][grad_ops][integration]") {
  at::manual_seed(8);
  OpCases c;
  for (gt::DType t : kAllDTypes) {
    const std::string d = suffix(t);
    c.same("gather dim 1" + d, {sample({3, 4}, t), index({0, 3, 3, 1, 2, 0}, {3, 2})},
           [](const auto& x) { return x[0].gather(1, x[1]); });
    c.same("gather dim 0" + d, {sample({3, 4}, t), index({2, 0, 1, 2, 1, 1, 0, 2}, {2, 4})},
           [](const auto& x) { return x[0].gather(0, x[1]); });
    c.same("gather dim -1 with a smaller index" + d,
           {sample({3, 4}, t), index({1, 1, 0, 2}, {2, 2})},
           [](const auto& x) { return x[0].gather(-1, x[1]); });
    c.same("index_select dim 0" + d, {sample({4, 3}, t), index({2, 0, 2}, {3})},
           [](const auto& x) { return x[0].index_select(0, x[1]); });
    c.same("index_select dim 1 int32" + d, {sample({2, 4}, t), index({3, 1}, {2}, at::kInt)},
           [](const auto& x) { return x[0].index_select(1, x[1]); });
    c.same("index_select 0-dim index" + d, {sample({3, 2}, t), index({1}, {})},
           [](const auto& x) { return x[0].index_select(0, x[1]); });
    c.same("scatter_add dim 0" + d,
           {sample({3, 4}, t), index({0, 2, 0, 1, 0, 0, 2, 1}, {2, 4}), sample({2, 4}, t)},
           [](const auto& x) { return x[0].scatter_add(0, x[1], x[2]); });
    c.same("scatter_add dim 1 with a larger src" + d,
           {sample({2, 3}, t), index({2, 2, 0, 1}, {2, 2}), sample({2, 3}, t)},
           [](const auto& x) { return x[0].scatter_add(1, x[1], x[2]); });
    c.same("index_add dim 0" + d, {sample({4, 3}, t), index({1, 3, 1}, {3}), sample({3, 3}, t)},
           [](const auto& x) { return x[0].index_add(0, x[1], x[2]); });
    c.same("index_add dim 1 int32" + d,
           {sample({3, 4}, t), index({0, 2}, {2}, at::kInt), sample({3, 2}, t)},
           [](const auto& x) { return x[0].index_add(1, x[1], x[2]); });
    c.same("slice_scatter step" + d, {sample({5, 3}, t), sample({2, 3}, t)},
           [](const auto& x) { return x[0].slice_scatter(x[1], 0, 1, kEnd, 3); });
    c.same("slice_scatter negative start" + d, {sample({2, 4}, t), sample({2, 2}, t)},
           [](const auto& x) { return x[0].slice_scatter(x[1], 1, -2, kEnd, 1); });
    c.same("slice_scatter negative bounds" + d, {sample({5, 2}, t), sample({2, 2}, t)},
           [](const auto& x) { return x[0].slice_scatter(x[1], 0, -3, -1, 1); });
  }
  check_cases(c);
}
