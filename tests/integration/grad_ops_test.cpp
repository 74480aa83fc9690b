// The gradients of the ops added for training, run through real dispatcher
// and worker processes: every op with a backward rule against LibTorch's
// autograd (in float32 and float64, and loosely in bfloat16 and float16) and
// against finite differences. A coverage test ties the gradient table to the
// backward-rule table, so an op given a rule without a row here fails by name.
// Their values are compared in op_values_test.cpp.

// LibTorch (through glog) defines CHECK too: include these before Catch so
// that Catch's CHECK wins.
#include "tests/integration/op_compare.h"
#include "tests/integration/torch_compare.h"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "client/internal/autograd.h"
#include "client/internal/autograd_rules.h"
#include "common/op_table.h"
#include "tests/support/cluster.h"
#include "tests/support/gradcheck.h"

using gt::test::Fill;
using gt::test::G;
using gt::test::grad_tolerance;
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

using Dims = std::vector<int64_t>;

// ---- gradient cases ------------------------------------------------------------------

enum class Family { Elementwise, MatmulReduction, Shape, Index, Inplace };

struct GradCase {
  gt::OpCode op;  // the op that produces the output (checked against its grad_fn)
  Family family;
  std::string name;
  T inputs;  // float64 data (converted to the dtype under test), int indices, bool masks
  std::vector<bool> leaf;  // which inputs require grad; empty: the floating ones
  GtFn run_gt;
  TorchFn run_torch;
  std::vector<gt::DType> low_precision;  // also compared with LibTorch in these dtypes
  bool keep_dtypes = false;  // compared once with the inputs' own dtypes (mixed dtypes)
  bool finite_differences = true;  // false where they cannot agree (see no_finite_differences)
  gt::test::GradcheckOptions gradcheck;

  bool is_leaf(size_t i) const {
    return leaf.empty() ? at::isFloatingType(inputs[i].scalar_type()) : bool(leaf[i]);
  }
  GradCase& low(std::vector<gt::DType> dtypes) {
    low_precision = std::move(dtypes);
    return *this;
  }
  GradCase& leaves(std::vector<bool> which) {
    leaf = std::move(which);
    return *this;
  }
  GradCase& mixed() {
    keep_dtypes = true;
    return *this;
  }
  // At ties of max/min the function has a kink; through detach() the
  // perturbed input also moves the "constant" operand; bfloat16 outputs are
  // too coarse for central differences.
  GradCase& no_finite_differences() {
    finite_differences = false;
    return *this;
  }
  GradCase& options(gt::test::GradcheckOptions o) {
    gradcheck = o;
    return *this;
  }
};

class GradCases {
 public:
  template <typename F>
  GradCase& same(gt::OpCode op, Family family, std::string name, T inputs, F f) {
    return add(op, family, std::move(name), std::move(inputs), [f](const G& x) { return f(x); },
               [f](const T& x) { return f(x); });
  }
  GradCase& add(gt::OpCode op, Family family, std::string name, T inputs, GtFn run_gt,
                TorchFn run_torch) {
    GradCase c;
    c.op = op;
    c.family = family;
    c.name = std::move(name);
    c.inputs = std::move(inputs);
    c.run_gt = std::move(run_gt);
    c.run_torch = std::move(run_torch);
    rows_.push_back(std::move(c));
    return rows_.back();
  }
  std::vector<GradCase> take() { return std::move(rows_); }

 private:
  std::vector<GradCase> rows_;
};

at::Tensor rn(const std::vector<int64_t>& shape) { return sample(shape, gt::kFloat64); }
at::Tensor pos(const std::vector<int64_t>& shape) {
  return sample(shape, gt::kFloat64, Fill::Positive);
}
// Away from 0 (the kinks of relu, abs and sign).
at::Tensor nonzero(const std::vector<int64_t>& shape) {
  const at::Tensor x = at::randn(shape, at::kDouble);
  return x + at::where(x >= 0, 0.25, -0.25);
}
// No ties (the kinks of max and min), spaced far more than gradcheck's step.
at::Tensor distinct(const std::vector<int64_t>& shape) {
  return sample(shape, gt::kFloat64, Fill::Distinct) + 0.1;
}

// The weights of the loss sum(out * w): alternating signs and magnitudes in
// [0.5, 1), exact in every floating dtype.
std::vector<double> weights(int64_t n) {
  std::vector<double> w(n);
  for (int64_t i = 0; i < n; ++i) w[i] = (i % 2 == 0 ? 1 : -1) * (0.5 + 0.0625 * (i % 8));
  return w;
}

// Every op with a backward rule, exercised through the public API. Each row's
// output must come from `op`; the coverage test requires a row (and a
// finite-difference check) for every differentiable op code.
std::vector<GradCase> grad_cases() {
  at::manual_seed(20240611);
  using gt::OpCode;
  constexpr Family kElem = Family::Elementwise, kMatRed = Family::MatmulReduction,
                   kShape = Family::Shape, kIndex = Family::Index, kInplace = Family::Inplace;
  GradCases g;

  // ---- elementwise ----
  g.same(OpCode::Add, kElem, "add broadcasts both operands", {rn({2, 1, 3}), rn({4, 1})},
         [](const auto& x) { return x[0] + x[1]; })
      .low({gt::kBFloat16, gt::kFloat16});
  g.same(OpCode::Add, kElem, "add with a constant operand", {rn({2, 3}), rn({3})},
         [](const auto& x) { return x[0] + x[1]; })
      .leaves({true, false});
  g.same(OpCode::Sub, kElem, "sub broadcasts both operands", {rn({3, 1}), rn({1, 4})},
         [](const auto& x) { return x[0] - x[1]; })
      .low({gt::kFloat16});
  g.same(OpCode::Mul, kElem, "mul broadcasts", {rn({2, 3, 4}), rn({3, 1})},
         [](const auto& x) { return x[0] * x[1]; })
      .low({gt::kBFloat16, gt::kFloat16});
  g.same(OpCode::Mul, kElem, "mul by a detached copy", {rn({2, 3})},
         [](const auto& x) { return x[0] * x[0].detach(); })
      .no_finite_differences();
  g.same(OpCode::Mul, kElem, "mul of a tensor by itself accumulates", {rn({2, 3})},
         [](const auto& x) { return x[0] * x[0]; });
  g.same(OpCode::Add, kElem, "add of float32 and float64 casts each gradient back",
         {rn({2, 3}).to(at::kFloat), rn({3})}, [](const auto& x) { return x[0] + x[1]; })
      .mixed();
  g.same(OpCode::Add, kElem, "add of a 0-dim float64 keeps float32", {rn({2, 3}).to(at::kFloat),
         rn({})}, [](const auto& x) { return x[0] + x[1]; })
      .mixed();
  g.same(OpCode::Mul, kElem, "mul by a 0-dim tensor", {rn({2, 3}), rn({})},
         [](const auto& x) { return x[0] * x[1]; });
  g.same(OpCode::Mul, kElem, "mul of bfloat16 and float32", {rn({3}).to(at::kBFloat16),
         rn({2, 3}).to(at::kFloat)}, [](const auto& x) { return x[0] * x[1]; })
      .mixed();
  g.same(OpCode::Div, kElem, "div broadcasts", {rn({2, 3}), pos({3})},
         [](const auto& x) { return x[0] / x[1]; })
      .low({gt::kBFloat16});
  g.same(OpCode::AddScalar, kElem, "tensor + number", {rn({2, 3})},
         [](const auto& x) { return x[0] + 2.5; });
  g.same(OpCode::AddScalar, kElem, "number + tensor", {rn({3})},
         [](const auto& x) { return 2 + x[0]; });
  g.same(OpCode::SubScalar, kElem, "tensor - number", {rn({2, 3})},
         [](const auto& x) { return x[0] - 1.5; });
  g.add(OpCode::RSubScalar, kElem, "number - tensor", {rn({2, 3})},
        [](const G& x) { return 1.5 - x[0]; }, [](const T& x) { return at::rsub(x[0], 1.5); });
  g.same(OpCode::MulScalar, kElem, "tensor * number", {rn({2, 3})},
         [](const auto& x) { return x[0] * -0.75; });
  g.same(OpCode::MulScalar, kElem, "number * tensor", {rn({4})},
         [](const auto& x) { return 3 * x[0]; });
  g.same(OpCode::DivScalar, kElem, "tensor / number", {rn({2, 3})},
         [](const auto& x) { return x[0] / 4.0; });
  g.add(OpCode::RDivScalar, kElem, "number / tensor", {pos({2, 3})},
        [](const G& x) { return 2.0 / x[0]; },
        [](const T& x) { return x[0].reciprocal() * 2.0; });
  g.same(OpCode::Neg, kElem, "neg", {rn({2, 3})}, [](const auto& x) { return -x[0]; })
      .low({gt::kFloat16});
  g.same(OpCode::Exp, kElem, "exp", {rn({2, 3})}, [](const auto& x) { return x[0].exp(); });
  g.same(OpCode::Log, kElem, "log", {pos({2, 3})}, [](const auto& x) { return x[0].log(); });
  g.same(OpCode::Sqrt, kElem, "sqrt", {pos({2, 3})}, [](const auto& x) { return x[0].sqrt(); });
  g.same(OpCode::Relu, kElem, "relu", {nonzero({2, 4})}, [](const auto& x) { return x[0].relu(); });
  g.same(OpCode::Sigmoid, kElem, "sigmoid", {rn({2, 3})},
         [](const auto& x) { return x[0].sigmoid(); });
  g.same(OpCode::Tanh, kElem, "tanh", {rn({2, 3})}, [](const auto& x) { return x[0].tanh(); })
      .low({gt::kBFloat16});
  g.same(OpCode::Rsqrt, kElem, "rsqrt", {pos({2, 3})}, [](const auto& x) { return x[0].rsqrt(); });
  g.same(OpCode::Abs, kElem, "abs", {nonzero({2, 4})}, [](const auto& x) { return x[0].abs(); })
      .low({gt::kFloat16});
  g.same(OpCode::Abs, kElem, "abs has gradient 0 at 0",
         {at::tensor({-1.0, 0.0, 2.0}, at::kDouble)},
         [](const auto& x) { return x[0].abs(); })
      .no_finite_differences();
  g.same(OpCode::Relu, kElem, "relu has gradient 0 at 0",
         {at::tensor({-1.0, 0.0, 2.0}, at::kDouble)},
         [](const auto& x) { return x[0].relu(); })
      .no_finite_differences();
  g.same(OpCode::Sign, kElem, "sign", {nonzero({2, 3})}, [](const auto& x) { return x[0].sign(); });
  g.same(OpCode::Pow, kElem, "pow of tensors broadcasts base and exponent",
         {pos({2, 3}), rn({3})}, [](const auto& x) { return x[0].pow(x[1]); })
      .low({gt::kBFloat16});
  g.same(OpCode::Pow, kElem, "pow with a base broadcast against the exponent",
         {pos({3}), rn({2, 3})}, [](const auto& x) { return x[0].pow(x[1]); });
  g.same(OpCode::Pow, kElem, "pow of float32 and float64", {pos({2, 3}).to(at::kFloat), rn({3})},
         [](const auto& x) { return x[0].pow(x[1]); })
      .mixed();
  g.same(OpCode::Pow, kElem, "pow at a zero base",
         {at::tensor({0.0, 0.0, 0.0, 1.5}, at::kDouble),
          at::tensor({0.0, 2.0, 3.0, 1.5}, at::kDouble)},
         [](const auto& x) { return x[0].pow(x[1]); })
      .no_finite_differences();
  g.same(OpCode::Pow, kElem, "pow with a constant integral exponent tensor",
         {rn({2, 3}), index({0, 1, 3}, {3})}, [](const auto& x) { return x[0].pow(x[1]); });
  g.same(OpCode::PowScalar, kElem, "pow to an integral number", {rn({2, 3})},
         [](const auto& x) { return x[0].pow(3); });
  g.same(OpCode::PowScalar, kElem, "pow to a fractional number", {pos({2, 3})},
         [](const auto& x) { return x[0].pow(2.5); });
  g.same(OpCode::PowScalar, kElem, "pow to a negative number", {pos({2, 3})},
         [](const auto& x) { return x[0].pow(-1.5); });
  g.same(OpCode::PowScalar, kElem, "pow to zero", {rn({3})},
         [](const auto& x) { return x[0].pow(0); });
  g.add(OpCode::RPowScalar, kElem, "number ** tensor", {rn({2, 3})},
        [](const G& x) { return gt::pow(2.0, x[0]); },
        [](const T& x) { return at::pow(2.0, x[0]); });
  g.add(OpCode::RPowScalar, kElem, "zero ** tensor", {pos({4})},
        [](const G& x) { return gt::pow(0.0, x[0]); },
        [](const T& x) { return at::pow(0.0, x[0]); });
  g.add(OpCode::RPowScalar, kElem, "integral number ** tensor", {rn({4})},
        [](const G& x) { return gt::pow(3, x[0]); }, [](const T& x) { return at::pow(3, x[0]); });
  g.add(OpCode::Gelu, kElem, "gelu", {rn({2, 4})}, [](const G& x) { return x[0].gelu(); },
        [](const T& x) { return at::gelu(x[0]); })
      .low({gt::kBFloat16});
  g.add(OpCode::Where, kElem, "where broadcasts both branches",
        {sample({2, 3}, gt::kBool), rn({3}), rn({2, 1})},
        [](const G& x) { return gt::where(x[0], x[1], x[2]); },
        [](const T& x) { return at::where(x[0], x[1], x[2]); })
      .low({gt::kBFloat16, gt::kFloat16});
  g.add(OpCode::Where, kElem, "where with a constant branch",
        {sample({2, 1}, gt::kBool), rn({2, 3}), rn({2, 3})},
        [](const G& x) { return gt::where(x[0], x[1], x[2]); },
        [](const T& x) { return at::where(x[0], x[1], x[2]); })
      .leaves({false, false, true});
  g.add(OpCode::Where, kElem, "where with float64 and float32 branches",
        {sample({2, 3}, gt::kBool), rn({2, 3}), rn({2, 3}).to(at::kFloat)},
        [](const G& x) { return gt::where(x[0], x[1], x[2]); },
        [](const T& x) { return at::where(x[0], x[1], x[2]); })
      .mixed();

  // ---- matmul ----
  const auto matmul = [](const auto& x) { return x[0].matmul(x[1]); };
  g.same(OpCode::Matmul, kMatRed, "matmul vector . vector", {rn({3}), rn({3})}, matmul);
  g.same(OpCode::Matmul, kMatRed, "matmul vector @ matrix", {rn({3}), rn({3, 4})}, matmul);
  g.same(OpCode::Matmul, kMatRed, "matmul matrix @ vector", {rn({2, 3}), rn({3})}, matmul);
  g.same(OpCode::Matmul, kMatRed, "matmul matrix @ matrix", {rn({2, 3}), rn({3, 4})}, matmul)
      .low({gt::kBFloat16});
  g.same(OpCode::Matmul, kMatRed, "matmul broadcasts batch dims",
         {rn({2, 1, 4, 3}), rn({3, 3, 2})}, matmul);
  g.same(OpCode::Matmul, kMatRed, "matmul matrix @ batch", {rn({4, 3}), rn({2, 3, 2})}, matmul);
  g.same(OpCode::Matmul, kMatRed, "matmul batch @ vector", {rn({2, 3, 4}), rn({4})}, matmul);
  g.same(OpCode::Matmul, kMatRed, "matmul vector @ batch", {rn({3}), rn({2, 3, 4})}, matmul);
  g.same(OpCode::Matmul, kMatRed, "matmul of a transposed operand", {rn({3, 2}), rn({3, 4})},
         [](const auto& x) { return x[0].t().matmul(x[1]); });
  g.same(OpCode::Matmul, kMatRed, "matmul of a matrix with its transpose", {rn({2, 3})},
         [](const auto& x) { return x[0].matmul(x[0].t()); });

  // ---- reductions and softmax ----
  g.same(OpCode::Sum, kMatRed, "sum of all elements", {rn({2, 3})},
         [](const auto& x) { return x[0].sum(); })
      .low({gt::kBFloat16, gt::kFloat16});
  g.same(OpCode::Sum, kMatRed, "sum over dims with keepdim", {rn({2, 3, 4})},
         [](const auto& x) { return x[0].sum(Dims{0, 2}, true); });
  g.same(OpCode::Sum, kMatRed, "sum over a negative dim", {rn({2, 3, 4})},
         [](const auto& x) { return x[0].sum(Dims{-1}); });
  g.same(OpCode::Sum, kMatRed, "sum over every dim with keepdim", {rn({2, 3})},
         [](const auto& x) { return x[0].sum(Dims{}, true); });
  g.same(OpCode::Sum, kMatRed, "sum of a 0-dim tensor", {rn({})},
         [](const auto& x) { return x[0].sum(); });
  g.same(OpCode::Mean, kMatRed, "mean of all elements", {rn({2, 3})},
         [](const auto& x) { return x[0].mean(); });
  g.same(OpCode::Mean, kMatRed, "mean of a 0-dim tensor", {rn({})},
         [](const auto& x) { return x[0].mean(); });
  g.same(OpCode::Mean, kMatRed, "mean over a dim", {rn({2, 3, 4})},
         [](const auto& x) { return x[0].mean(Dims{1}); });
  g.same(OpCode::Mean, kMatRed, "mean over dims with keepdim", {rn({2, 3, 4})},
         [](const auto& x) { return x[0].mean(Dims{0, -1}, true); })
      .low({gt::kBFloat16, gt::kFloat16});
  g.add(OpCode::Amax, kMatRed, "max of all elements", {distinct({2, 3})},
        [](const G& x) { return x[0].max(); }, [](const T& x) { return x[0].amax(); })
      .low({gt::kBFloat16, gt::kFloat16});
  g.add(OpCode::Amax, kMatRed, "max over a dim", {distinct({3, 4})},
        [](const G& x) { return x[0].max({1}); }, [](const T& x) { return x[0].amax({1}); });
  g.add(OpCode::Amax, kMatRed, "max over every dim with keepdim", {distinct({2, 3})},
        [](const G& x) { return x[0].max(Dims{}, true); },
        [](const T& x) { return x[0].amax(Dims{}, true); });
  g.add(OpCode::Amax, kMatRed, "max of a 0-dim tensor", {rn({})},
        [](const G& x) { return x[0].max(); }, [](const T& x) { return x[0].amax(); });
  g.add(OpCode::Amax, kMatRed, "max over dims with keepdim", {distinct({2, 3, 2})},
        [](const G& x) { return x[0].max({0, 2}, true); },
        [](const T& x) { return x[0].amax({0, 2}, true); });
  g.add(OpCode::Amax, kMatRed, "max shares the gradient among ties",
        {at::tensor({1.0, 3.0, 3.0, 2.0, 2.0, 0.5}, at::kDouble).reshape({2, 3})},
        [](const G& x) { return x[0].max({1}); }, [](const T& x) { return x[0].amax({1}); })
      .no_finite_differences();
  g.add(OpCode::Amax, kMatRed, "max of all elements with ties",
        {at::tensor({1.0, 3.0, 3.0, 2.0, 3.0, 0.5}, at::kDouble).reshape({2, 3})},
        [](const G& x) { return x[0].max(); }, [](const T& x) { return x[0].amax(); })
      .no_finite_differences();
  g.add(OpCode::Amin, kMatRed, "min of all elements", {distinct({2, 3})},
        [](const G& x) { return x[0].min(); }, [](const T& x) { return x[0].amin(); });
  g.add(OpCode::Amin, kMatRed, "min over a negative dim with keepdim", {distinct({3, 4})},
        [](const G& x) { return x[0].min({-1}, true); },
        [](const T& x) { return x[0].amin({-1}, true); })
      .low({gt::kFloat16});
  g.add(OpCode::Amin, kMatRed, "min shares the gradient among ties",
        {at::tensor({1.0, 0.5, 0.5, -2.0, 2.0, -2.0}, at::kDouble).reshape({3, 2})},
        [](const G& x) { return x[0].min({0}); }, [](const T& x) { return x[0].amin({0}); })
      .no_finite_differences();
  g.same(OpCode::Softmax, kMatRed, "softmax over the last dim", {rn({2, 4})},
         [](const auto& x) { return x[0].softmax(-1); })
      .low({gt::kBFloat16});
  g.same(OpCode::Softmax, kMatRed, "softmax over the first dim", {rn({3, 2, 2})},
         [](const auto& x) { return x[0].softmax(0); });
  g.same(OpCode::Softmax, kMatRed, "softmax of a vector", {rn({4})},
         [](const auto& x) { return x[0].softmax(0); });
  g.same(OpCode::LogSoftmax, kMatRed, "log_softmax over the last dim", {rn({2, 4})},
         [](const auto& x) { return x[0].log_softmax(1); })
      .low({gt::kBFloat16});
  g.same(OpCode::LogSoftmax, kMatRed, "log_softmax over a middle dim", {rn({2, 3, 2})},
         [](const auto& x) { return x[0].log_softmax(1); });

  // ---- shapes, views, conversion and joining ----
  g.same(OpCode::Reshape, kShape, "reshape with -1", {rn({2, 6})},
         [](const auto& x) { return x[0].reshape({3, -1}); });
  g.same(OpCode::Reshape, kShape, "flatten is a reshape", {rn({2, 3, 2})},
         [](const auto& x) { return x[0].flatten(1); });
  g.same(OpCode::View, kShape, "view", {rn({2, 6})},
         [](const auto& x) { return x[0].view({4, 3}); });
  g.same(OpCode::Transpose, kShape, "transpose", {rn({2, 3, 4})},
         [](const auto& x) { return x[0].transpose(0, 2); });
  g.same(OpCode::Transpose, kShape, "transpose with negative dims", {rn({2, 3, 4})},
         [](const auto& x) { return x[0].transpose(-1, -3); });
  g.same(OpCode::Transpose, kShape, "t() of a matrix", {rn({2, 3})},
         [](const auto& x) { return x[0].t(); });
  g.same(OpCode::Transpose, kShape, "t() of a vector", {rn({3})},
         [](const auto& x) { return x[0].t(); });
  g.same(OpCode::Slice, kShape, "slice with a negative start", {rn({2, 5})},
         [](const auto& x) { return x[0].slice(1, -3, kEnd, 1); });
  g.same(OpCode::Slice, kShape, "slice with a step", {rn({5, 2})},
         [](const auto& x) { return x[0].slice(0, 1, kEnd, 2); });
  g.same(OpCode::Slice, kShape, "slice with negative bounds and a step", {rn({2, 7})},
         [](const auto& x) { return x[0].slice(1, -6, -1, 2); })
      .low({gt::kFloat16});
  g.same(OpCode::Slice, kShape, "slice of a negative dim", {rn({2, 3, 4})},
         [](const auto& x) { return x[0].slice(-2, 1, kEnd, 1); });
  g.same(OpCode::Unsqueeze, kShape, "unsqueeze at the end", {rn({2, 3})},
         [](const auto& x) { return x[0].unsqueeze(-1); });
  g.same(OpCode::Unsqueeze, kShape, "unsqueeze in front", {rn({3})},
         [](const auto& x) { return x[0].unsqueeze(0); });
  g.same(OpCode::Squeeze, kShape, "squeeze every size-1 dim", {rn({2, 1, 3, 1})},
         [](const auto& x) { return x[0].squeeze(); });
  g.same(OpCode::Squeeze, kShape, "squeeze one dim", {rn({2, 1, 3})},
         [](const auto& x) { return x[0].squeeze(1); });
  g.same(OpCode::Permute, kShape, "permute", {rn({2, 3, 4})},
         [](const auto& x) { return x[0].permute({2, 0, 1}); });
  g.same(OpCode::Permute, kShape, "permute with negative dims", {rn({2, 3, 4})},
         [](const auto& x) { return x[0].permute({-2, -1, 0}); });
  g.same(OpCode::Expand, kShape, "expand adds and grows dims", {rn({3, 1})},
         [](const auto& x) { return x[0].expand({2, -1, 4}); })
      .low({gt::kFloat16});
  g.same(OpCode::Expand, kShape, "expand grows a middle dim", {rn({2, 1, 3})},
         [](const auto& x) { return x[0].expand({2, 4, 3}); });
  g.same(OpCode::Expand, kShape, "expand of a 0-dim tensor", {rn({})},
         [](const auto& x) { return x[0].expand({2, 3}); });
  g.add(OpCode::To, kShape, "to another floating dtype", {rn({2, 3})},
        [](const G& x) {
          return x[0].to(x[0].dtype() == gt::kFloat64 ? gt::kFloat32 : gt::kFloat64);
        },
        [](const T& x) {
          return x[0].to(x[0].scalar_type() == at::kDouble ? at::kFloat : at::kDouble);
        })
      // The output is float32 for the float64 check: a larger step keeps the
      // rounding of the output out of the central differences.
      .options({1e-3, 1e-3, 1e-3});
  g.add(OpCode::To, kShape, "to bfloat16", {rn({2, 3}).to(at::kFloat)},
        [](const G& x) { return x[0].to(gt::kBFloat16); },
        [](const T& x) { return x[0].to(at::kBFloat16); })
      .mixed()
      .no_finite_differences();  // bfloat16 rounding swamps central differences
  g.add(OpCode::Cat, kShape, "cat along the first dim", {rn({1, 3}), rn({2, 3}), rn({3, 3})},
        [](const G& x) { return gt::cat(x, 0); }, [](const T& x) { return at::cat(x, 0); })
      .low({gt::kBFloat16, gt::kFloat16});
  g.add(OpCode::Cat, kShape, "cat along the last dim with a constant input",
        {rn({2, 1}), rn({2, 3}), rn({2, 2})}, [](const G& x) { return gt::cat(x, -1); },
        [](const T& x) { return at::cat(x, -1); })
      .leaves({true, false, true});
  g.add(OpCode::Cat, kShape, "cat skips a legacy empty vector",
        {rn({2, 3}), at::empty({0}, at::kDouble), rn({1, 3})},
        [](const G& x) { return gt::cat(x, 0); }, [](const T& x) { return at::cat(x, 0); });
  g.add(OpCode::Cat, kShape, "cat of float32 and float64", {rn({2}).to(at::kFloat), rn({3})},
        [](const G& x) { return gt::cat(x, 0); }, [](const T& x) { return at::cat(x, 0); })
      .mixed();
  g.add(OpCode::Stack, kShape, "stack along a new middle dim", {rn({2, 3}), rn({2, 3})},
        [](const G& x) { return gt::stack(x, 1); }, [](const T& x) { return at::stack(x, 1); })
      .low({gt::kBFloat16});
  g.add(OpCode::Stack, kShape, "stack along a new last dim", {rn({3}), rn({3}), rn({3})},
        [](const G& x) { return gt::stack(x, -1); },
        [](const T& x) { return at::stack(x, -1); });

  // ---- indexing ----
  g.same(OpCode::Gather, kIndex, "gather along the last dim with repeats",
         {rn({3, 4}), index({0, 0, 3, 1, 2, 1}, {3, 2})},
         [](const auto& x) { return x[0].gather(1, x[1]); })
      .low({gt::kBFloat16, gt::kFloat16});
  g.same(OpCode::Gather, kIndex, "gather along a negative dim",
         {rn({2, 3}), index({2, 0, 1, 1}, {2, 2})},
         [](const auto& x) { return x[0].gather(-1, x[1]); });
  g.same(OpCode::Gather, kIndex, "gather along the first dim with a smaller index",
         {rn({3, 4}), index({2, 0, 2, 1, 0, 0}, {2, 3})},
         [](const auto& x) { return x[0].gather(0, x[1]); });
  g.same(OpCode::IndexSelect, kIndex, "index_select with repeats",
         {rn({4, 3}), index({2, 0, 2}, {3})},
         [](const auto& x) { return x[0].index_select(0, x[1]); })
      .low({gt::kBFloat16});
  g.same(OpCode::IndexSelect, kIndex, "index_select with a 0-dim index",
         {rn({3, 2}), index({2}, {})},
         [](const auto& x) { return x[0].index_select(0, x[1]); });
  g.same(OpCode::IndexSelect, kIndex, "index_select with an int32 index",
         {rn({2, 4}), index({3, 1, 1}, {3}, at::kInt)},
         [](const auto& x) { return x[0].index_select(-1, x[1]); });
  g.same(OpCode::SliceScatter, kIndex, "slice_scatter with a step", {rn({5, 3}), rn({2, 3})},
         [](const auto& x) { return x[0].slice_scatter(x[1], 0, 1, kEnd, 3); })
      .low({gt::kBFloat16});
  g.same(OpCode::SliceScatter, kIndex, "slice_scatter with a negative start",
         {rn({2, 4}), rn({2, 2})},
         [](const auto& x) { return x[0].slice_scatter(x[1], 1, -2, kEnd, 1); });
  g.same(OpCode::SliceScatter, kIndex, "slice_scatter into a constant base",
         {rn({4, 2}), rn({2, 2})},
         [](const auto& x) { return x[0].slice_scatter(x[1], 0, -3, -1, 1); })
      .leaves({false, true});
  g.same(OpCode::ScatterAdd, kIndex, "scatter_add with repeated targets",
         {rn({3, 4}), index({0, 2, 0, 1, 0, 0, 2, 1}, {2, 4}), rn({2, 4})},
         [](const auto& x) { return x[0].scatter_add(0, x[1], x[2]); })
      .low({gt::kBFloat16});
  g.same(OpCode::ScatterAdd, kIndex, "scatter_add along a negative dim",
         {rn({2, 3}), index({2, 2, 0, 1}, {2, 2}), rn({2, 2})},
         [](const auto& x) { return x[0].scatter_add(-1, x[1], x[2]); });
  g.same(OpCode::IndexAdd, kIndex, "index_add with repeated targets",
         {rn({4, 3}), index({1, 3, 1}, {3}), rn({3, 3})},
         [](const auto& x) { return x[0].index_add(0, x[1], x[2]); })
      .low({gt::kBFloat16});
  g.same(OpCode::IndexAdd, kIndex, "index_add with an int32 index along a negative dim",
         {rn({3, 4}), index({0, 2}, {2}, at::kInt), rn({3, 2})},
         [](const auto& x) { return x[0].index_add(-1, x[1], x[2]); });

  // ---- in-place ops on non-leaf tensors ----
  g.same(OpCode::AddInplace, kInplace, "add_ of a broadcast tensor", {rn({2, 3}), rn({3})},
         [](const auto& x) { auto y = x[0] * 1.0; y.add_(x[1]); return y; })
      .low({gt::kBFloat16});
  g.same(OpCode::AddInplace, kInplace, "add_ into a tensor without history",
         {rn({2, 3}), rn({2, 3})},
         [](const auto& x) { auto y = x[0] * 1.0; y.add_(x[1]); return y; })
      .leaves({false, true});
  g.same(OpCode::AddScalarInplace, kInplace, "add_ of a number", {rn({2, 3})},
         [](const auto& x) { auto y = x[0] * 2.0; y.add_(1.5); return y; });
  g.same(OpCode::SubInplace, kInplace, "sub_ of a broadcast tensor", {rn({2, 3}), rn({2, 1})},
         [](const auto& x) { auto y = x[0] * 1.0; y.sub_(x[1]); return y; });
  g.same(OpCode::AddInplace, kInplace, "add_ with alpha", {rn({2, 3}), rn({2, 1})},
         [](const auto& x) { auto y = x[0] * 1.0; y.add_(x[1], -0.75); return y; })
      .low({gt::kBFloat16});
  g.same(OpCode::SubInplace, kInplace, "sub_ with alpha", {rn({2, 3}), rn({3})},
         [](const auto& x) { auto y = x[0] * 1.0; y.sub_(x[1], 2.5); return y; });
  g.same(OpCode::AddcmulInplace, kInplace, "addcmul_ of broadcast tensors",
         {rn({2, 3}), rn({3}), rn({2, 1})},
         [](const auto& x) { auto y = x[0] * 1.0; y.addcmul_(x[1], x[2], -0.5); return y; })
      .low({gt::kBFloat16});
  g.same(OpCode::AddcmulInplace, kInplace, "addcmul_ of one tensor with itself",
         {rn({2, 3}), rn({2, 3})},
         [](const auto& x) { auto y = x[0] * 1.0; y.addcmul_(x[1], x[1], 0.25); return y; });
  g.same(OpCode::AddcdivInplace, kInplace, "addcdiv_ of broadcast tensors",
         {rn({2, 3}), rn({2, 3}), pos({3})},
         [](const auto& x) { auto y = x[0] * 1.0; y.addcdiv_(x[1], x[2], 1.5); return y; })
      .low({gt::kBFloat16});  // LibTorch 1.13 has no float16 addcdiv on CPU
  g.same(OpCode::AddcdivInplace, kInplace, "addcdiv_ into a tensor without history",
         {rn({2, 3}), rn({3}), pos({2, 3})},
         [](const auto& x) { auto y = x[0].detach() * 1.0; y.addcdiv_(x[1], x[2], -2.0); return y; })
      .leaves({false, true, true});
  g.same(OpCode::SubScalarInplace, kInplace, "sub_ of a number", {rn({2, 3})},
         [](const auto& x) { auto y = x[0] * 2.0; y.sub_(0.5); return y; });
  g.same(OpCode::MulInplace, kInplace, "mul_ by a broadcast tensor", {rn({2, 3}), rn({3})},
         [](const auto& x) { auto y = x[0] * 1.0; y.mul_(x[1]); return y; })
      .low({gt::kFloat16});
  g.same(OpCode::MulInplace, kInplace, "mul_ by an integral tensor",
         {rn({2, 3}), index({1, -2, 3}, {3})},
         [](const auto& x) { auto y = x[0] * 1.0; y.mul_(x[1]); return y; });
  g.same(OpCode::MulScalarInplace, kInplace, "a chain of in-place ops",
         {rn({2, 3}), rn({3}), rn({2, 3})},
         [](const auto& x) {
           auto y = x[0] * 1.0;
           y.mul_(x[1]);
           y.add_(x[2]);
           y.mul_(-3.0);
           return y;
         });
  g.same(OpCode::ZeroInplace, kInplace, "zero_", {rn({2, 3})},
         [](const auto& x) { auto y = x[0] * 2.0; y.zero_(); return y; });
  g.same(OpCode::CopyInplace, kInplace, "copy_ of a broadcast tensor", {rn({2, 3}), rn({3})},
         [](const auto& x) { auto y = x[0] * 2.0; y.copy_(x[1]); return y; })
      .low({gt::kBFloat16});
  g.same(OpCode::CopyInplace, kInplace, "copy_ of an integral tensor",
         {rn({2, 3}), index({4, -1, 2}, {3})},
         [](const auto& x) { auto y = x[0] * 2.0; y.copy_(x[1]); return y; });
  g.same(OpCode::CopyInplace, kInplace, "copy_ of a constant", {rn({2, 3}), rn({2, 3})},
         [](const auto& x) { auto y = x[0] * 2.0; y.copy_(x[1]); return y; })
      .leaves({true, false});
  g.same(OpCode::CopyInplace, kInplace, "copy_ into a tensor without history", {rn({2, 3})},
         [](const auto& x) { auto y = x[0].detach() * 0.0; y.copy_(x[0].exp()); return y; });
  g.add(OpCode::CopyInplace, kInplace, "copy_ converts the dtype", {rn({2, 3}), rn({2, 3})},
        [](const G& x) {
          auto y = x[0] * 1.0;
          y.copy_(x[1].to(x[1].dtype() == gt::kFloat64 ? gt::kFloat32 : gt::kFloat64));
          return y;
        },
        [](const T& x) {
          auto y = x[0] * 1.0;
          y.copy_(x[1].to(x[1].scalar_type() == at::kDouble ? at::kFloat : at::kDouble));
          return y;
        })
      .options({1e-3, 1e-3, 1e-3});
  return g.take();
}

// Uploads a row's inputs: floating ones converted to `dtype` (unless nullopt)
// and made leaves that require grad where the row says so, the others as
// they are.
void make_inputs(const GradCase& c, std::optional<gt::DType> dtype, T* torch_in, G* gt_in) {
  for (size_t i = 0; i < c.inputs.size(); ++i) {
    const at::Tensor& x = c.inputs[i];
    const bool convert = dtype && at::isFloatingType(x.scalar_type());
    at::Tensor t = convert ? x.to(to_torch(*dtype)) : x;
    gt::Tensor g = to_gt(t);
    if (c.is_leaf(i)) {
      t = t.detach().clone().requires_grad_(true);
      g.requires_grad_();
    }
    if (torch_in) torch_in->push_back(t);
    gt_in->push_back(g);
  }
}

// Values and input gradients of sum(out * w) with gt's autograd and
// LibTorch's, with the floating inputs in `dtype` (nullopt: as the row has them).
void check_gradients(const GradCase& c, std::optional<gt::DType> dtype) {
  T t_in;
  G g_in;
  make_inputs(c, dtype, &t_in, &g_in);
  const at::Tensor t_out = c.run_torch(t_in);
  const gt::Tensor g_out = c.run_gt(g_in);
  const auto fn = gt::client::grad_fn_of(g_out);
  CHECK(fn != nullptr);
  if (fn) CHECK(gt::op_info(fn->op).name == gt::op_info(c.op).name);
  double out_tol = value_tolerance(t_out.scalar_type());
  for (const at::Tensor& x : t_in) out_tol = std::max(out_tol, value_tolerance(x.scalar_type()));
  CHECK(mismatch(g_out, t_out, out_tol) == "");

  const std::vector<double> w = weights(g_out.numel());
  (t_out * at::tensor(w, at::kDouble).reshape(t_out.sizes()).to(t_out.scalar_type()))
      .sum()
      .backward();
  (g_out * gt::tensor(w, g_out.shape()).to(g_out.dtype())).sum().backward();
  for (size_t i = 0; i < c.inputs.size(); ++i) {
    if (!c.is_leaf(i)) continue;
    INFO("gradient of input " << i);
    const at::Tensor want = t_in[i].grad();
    const gt::Tensor got = g_in[i].grad();
    CHECK(got.defined() == want.defined());
    const gt::DType input_dtype = g_in[i].dtype();
    if (got.defined() && want.defined()) {
      CHECK(mismatch(got, want, grad_tolerance(input_dtype)) == "");
    }
  }
}

void check_family_gradients(Family family) {
  gt::test::connect_shared_cluster();
  for (const GradCase& c : grad_cases()) {
    if (c.family != family) continue;
    if (c.keep_dtypes) {
      INFO("case: " << c.name);
      CHECK_NOTHROW(check_gradients(c, std::nullopt));
      continue;
    }
    for (gt::DType dtype : {gt::kFloat32, gt::kFloat64}) {
      INFO("case: " << c.name << " in " << dtype);
      CHECK_NOTHROW(check_gradients(c, dtype));
    }
  }
}

void check_finite_differences(const GradCase& c) {
  G in;
  make_inputs(c, gt::kFloat64, nullptr, &in);
  CHECK(gt::test::gradcheck(c.run_gt, in, c.gradcheck) == "");
}

void check_family_finite_differences(Family family) {
  gt::test::connect_shared_cluster();
  for (const GradCase& c : grad_cases()) {
    if (c.family != family || !c.finite_differences) continue;
    INFO("case: " << c.name);
    CHECK_NOTHROW(check_finite_differences(c));
  }
}

}  // namespace

// ---- gradients against LibTorch's autograd ---------------------------------------------

TEST_CASE("elementwise gradients match LibTorch autograd", "[grad][grad_ops][integration]") {
  check_family_gradients(Family::Elementwise);
}

TEST_CASE("matmul/reduction/softmax gradients match LibTorch autograd",
          "[grad][grad_ops][integration]") {
  check_family_gradients(Family::MatmulReduction);
}

TEST_CASE("shape/conversion/joining gradients match LibTorch autograd",
          "[grad][grad_ops][integration]") {
  check_family_gradients(Family::Shape);
}

TEST_CASE("indexing gradients match LibTorch autograd", "[grad][grad_ops][integration]") {
  check_family_gradients(Family::Index);
}

TEST_CASE("in-place gradients on non-leaf tensors match LibTorch autograd",
          "[grad][grad_ops][integration]") {
  check_family_gradients(Family::Inplace);
}

TEST_CASE("bfloat16 and float16 gradients match LibTorch autograd loosely",
          "[grad][grad_ops][integration]") {
  gt::test::connect_shared_cluster();
  int checked = 0;
  for (const GradCase& c : grad_cases()) {
    for (gt::DType dtype : c.low_precision) {
      INFO("case: " << c.name << " in " << dtype);
      CHECK_NOTHROW(check_gradients(c, dtype));
      ++checked;
    }
  }
  CHECK(checked >= 30);
}

TEST_CASE("integral and bool results of differentiable inputs do not require grad",
          "[grad][grad_ops][integration]") {
  gt::test::connect_shared_cluster();
  gt::Tensor x = gt::tensor({-1.5, 0.5, 2.0});
  x.requires_grad_();
  CHECK_FALSE(x.to(gt::kInt64).requires_grad());
  CHECK_FALSE(x.argmax().requires_grad());
  CHECK_FALSE((x < 0).requires_grad());
  CHECK_FALSE((x.sign() == 1).requires_grad());
  for (gt::DType t : {gt::kInt32, gt::kInt64, gt::kBool}) {
    INFO("copy_ into " << t);
    const at::Tensor converted = at::tensor({-1.5, 0.5, 2.0}, at::kDouble).to(to_torch(t));
    gt::Tensor y = gt::zeros({3}, t);
    y.copy_(x);  // as in LibTorch: converted values, no history
    CHECK_FALSE(y.requires_grad());
    CHECK(gt::client::grad_fn_of(y) == nullptr);
    CHECK(mismatch(y, converted, 0) == "");
    // so the converted copy is a constant for the gradient
    (y.to(gt::kFloat64) * x).sum().backward();
    CHECK(mismatch(x.grad(), converted.to(at::kDouble), 0) == "");
    gt::client::set_grad(x, gt::Tensor());  // clears x.grad() for the next dtype
  }
}

// ---- gradients against finite differences ----------------------------------------------

TEST_CASE("elementwise gradients match finite differences",
          "[grad][gradcheck][grad_ops][integration]") {
  check_family_finite_differences(Family::Elementwise);
}

TEST_CASE("matmul/reduction/softmax gradients match finite differences",
          "[grad][gradcheck][grad_ops][integration]") {
  check_family_finite_differences(Family::MatmulReduction);
}

TEST_CASE("shape/conversion/joining gradients match finite differences",
          "[grad][gradcheck][grad_ops][integration]") {
  check_family_finite_differences(Family::Shape);
}

TEST_CASE("indexing gradients match finite differences",
          "[grad][gradcheck][grad_ops][integration]") {
  check_family_finite_differences(Family::Index);
}

TEST_CASE("in-place gradients match finite differences",
          "[grad][gradcheck][grad_ops][integration]") {
  check_family_finite_differences(Family::Inplace);
}

// ---- coverage --------------------------------------------------------------------------

TEST_CASE("every differentiable op has a gradient row and a finite-difference row",
          "[grad][grad_ops][integration]") {
  std::set<gt::OpCode> compared, differenced;
  for (const GradCase& c : grad_cases()) {
    INFO("case: " << c.name);
    CHECK(gt::client::backward_rule(c.op).differentiable);
    compared.insert(c.op);
    if (c.finite_differences) differenced.insert(c.op);
  }
  int differentiable = 0;
  for (const gt::OpInfo& op : gt::all_ops()) {
    if (!gt::client::backward_rule(op.code).differentiable) continue;
    ++differentiable;
    if (!compared.count(op.code)) {
      FAIL_CHECK("op " << op.name << " has a backward rule but no row in grad_cases() "
                 "(tests/integration/grad_ops_test.cpp) comparing it with LibTorch autograd");
    }
    if (!differenced.count(op.code)) {
      FAIL_CHECK("op " << op.name << " has a backward rule but no finite-difference row in "
                 "grad_cases() (tests/integration/grad_ops_test.cpp)");
    }
  }
  CHECK(differentiable >= 56);
}
