#include <ATen/CPUGeneratorImpl.h>

#include <chrono>
#include <functional>
#include <random>

#include <gt/error.h>

#include "tests/unit/worker/worker_test_support.h"
#include "worker/collectives/communicators.h"
#include "worker/collectives/store.h"

namespace gt::worker::test {
namespace {

using Fn = std::function<at::Tensor(const std::vector<at::Tensor>&)>;

struct OpCase {
  std::string name;
  OpCode code;
  std::vector<at::Tensor> inputs;
  std::vector<int64_t> ints;
  std::vector<double> floats;
  DType dtype = DType::Float32;
  Fn expect;  // for in-place ops: the expected value of inputs[0] afterwards
};

at::Tensor fl(std::vector<int64_t> shape, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::randn(shape, gen);
}
at::Tensor pos(std::vector<int64_t> shape, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::rand(shape, gen) + 0.5;
}
at::Tensor in(std::vector<int64_t> shape, uint64_t seed, at::ScalarType t = at::kInt) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::randint(-5, 6, shape, gen, at::TensorOptions().dtype(t));
}
at::Tensor nonzero_int(std::vector<int64_t> shape, uint64_t seed) {
  auto t = in(shape, seed);
  return at::where(t == 0, at::ones_like(t), t);
}

// clang-format off
std::vector<OpCase> op_cases() {
  using T = const std::vector<at::Tensor>&;
  return {
      // creation
      {"zeros", OpCode::Zeros, {}, {2, 3}, {}, DType::Float32, [](T) { return at::zeros({2, 3}); }},
      {"ones int64", OpCode::Ones, {}, {4}, {}, DType::Int64,
       [](T) { return at::ones({4}, at::kLong); }},
      {"ones bool", OpCode::Ones, {}, {2, 2}, {}, DType::Bool,
       [](T) { return at::ones({2, 2}, at::kBool); }},
      {"full", OpCode::Full, {}, {2, 2}, {3.5}, DType::Float64,
       [](T) { return at::full({2, 2}, 3.5, at::kDouble); }},
      {"full scalar shape", OpCode::Full, {}, {}, {-1.0}, DType::Float32,
       [](T) { return at::full({}, -1.0, at::kFloat); }},
      {"arange int64", OpCode::Arange, {}, {}, {0, 5, 1}, DType::Int64,
       [](T) { return at::arange(5, at::kLong); }},
      {"arange float", OpCode::Arange, {}, {}, {0, 1, 0.25}, DType::Float32,
       [](T) { return at::arange(0, 1, 0.25, at::kFloat); }},
      {"arange descending", OpCode::Arange, {}, {}, {5, 0, -2}, DType::Int32,
       [](T) { return at::arange(5, 0, -2, at::kInt); }},
      {"arange fractional int", OpCode::Arange, {}, {}, {0.5, 3.6, 1}, DType::Int64,
       [](T) { return at::arange(0.5, 3.6, 1.0, at::kDouble).to(at::kLong); }},
      // elementwise with tensors
      {"add", OpCode::Add, {fl({2, 3}, 1), fl({3}, 2)}, {}, {}, DType::Float32,
       [](T x) { return at::add(x[0], x[1]); }},
      {"add int32 int64", OpCode::Add, {in({2, 3}, 1), in({3}, 2, at::kLong)}, {}, {},
       DType::Float32, [](T x) { return at::add(x[0], x[1]); }},
      {"add float with 0-dim double", OpCode::Add, {fl({3}, 1), fl({}, 2).to(at::kDouble)}, {},
       {}, DType::Float32, [](T x) { return at::add(x[0], x[1]); }},
      {"sub", OpCode::Sub, {fl({2, 3}, 3), fl({2, 1}, 4)}, {}, {}, DType::Float32,
       [](T x) { return at::sub(x[0], x[1]); }},
      {"mul", OpCode::Mul, {fl({4}, 5), fl({4}, 6)}, {}, {}, DType::Float32,
       [](T x) { return at::mul(x[0], x[1]); }},
      {"mul bool", OpCode::Mul, {in({4}, 5) > 0, in({4}, 6) > 0}, {}, {}, DType::Float32,
       [](T x) { return at::mul(x[0], x[1]); }},
      {"div", OpCode::Div, {fl({4}, 7), pos({4}, 8)}, {}, {}, DType::Float32,
       [](T x) { return at::div(x[0], x[1]); }},
      {"div int true division", OpCode::Div, {in({4}, 7), nonzero_int({4}, 8)}, {}, {},
       DType::Float32, [](T x) { return at::div(x[0].to(at::kFloat), x[1].to(at::kFloat)); }},
      // elementwise with a number
      {"add_scalar float", OpCode::AddScalar, {fl({2, 2}, 9)}, {}, {2.5}, DType::Float32,
       [](T x) { return x[0] + 2.5; }},
      {"add_scalar int stays int", OpCode::AddScalar, {in({2, 2}, 9)}, {3}, {}, DType::Float32,
       [](T x) { return x[0] + 3; }},
      {"add_scalar int with 1.5 is float32", OpCode::AddScalar, {in({2, 2}, 9)}, {}, {1.5},
       DType::Float32, [](T x) { return x[0].to(at::kFloat) + 1.5; }},
      {"add_scalar bool with int is int64", OpCode::AddScalar, {in({3}, 9) > 0}, {2}, {},
       DType::Float32, [](T x) { return x[0].to(at::kLong) + 2; }},
      {"sub_scalar", OpCode::SubScalar, {fl({3}, 10)}, {}, {0.5}, DType::Float32,
       [](T x) { return x[0] - 0.5; }},
      {"rsub_scalar", OpCode::RSubScalar, {fl({3}, 11)}, {}, {0.5}, DType::Float32,
       [](T x) { return 0.5 - x[0]; }},
      {"rsub_scalar int", OpCode::RSubScalar, {in({3}, 11)}, {10}, {}, DType::Float32,
       [](T x) { return 10 - x[0]; }},
      {"mul_scalar", OpCode::MulScalar, {fl({3}, 12)}, {}, {-2.0}, DType::Float32,
       [](T x) { return x[0] * -2.0; }},
      {"mul_scalar int64", OpCode::MulScalar, {in({3}, 12, at::kLong)}, {7}, {}, DType::Float32,
       [](T x) { return x[0] * 7; }},
      {"div_scalar", OpCode::DivScalar, {fl({3}, 13)}, {}, {4.0}, DType::Float32,
       [](T x) { return x[0] / 4.0; }},
      {"div_scalar int true division", OpCode::DivScalar, {in({5}, 13)}, {2}, {},
       DType::Float32, [](T x) { return x[0].to(at::kFloat) / 2.0; }},
      {"rdiv_scalar", OpCode::RDivScalar, {pos({3}, 14)}, {}, {3.0}, DType::Float32,
       [](T x) { return at::div(at::full({3}, 3.0), x[0]); }},
      {"rdiv_scalar int", OpCode::RDivScalar, {nonzero_int({3}, 14)}, {3}, {}, DType::Float32,
       [](T x) { return at::div(at::full({3}, 3.0), x[0].to(at::kFloat)); }},
      {"rdiv_scalar float64", OpCode::RDivScalar, {pos({3}, 15).to(at::kDouble)}, {}, {3.0},
       DType::Float32, [](T x) { return at::div(at::full({3}, 3.0, at::kDouble), x[0]); }},
      // unary
      {"neg", OpCode::Neg, {fl({2, 3}, 15)}, {}, {}, DType::Float32, [](T x) { return -x[0]; }},
      {"neg int", OpCode::Neg, {in({4}, 15)}, {}, {}, DType::Float32, [](T x) { return -x[0]; }},
      {"exp", OpCode::Exp, {fl({2, 3}, 16)}, {}, {}, DType::Float32,
       [](T x) { return at::exp(x[0]); }},
      {"exp int is float32", OpCode::Exp, {in({4}, 16)}, {}, {}, DType::Float32,
       [](T x) { return at::exp(x[0].to(at::kFloat)); }},
      {"log", OpCode::Log, {pos({5}, 17)}, {}, {}, DType::Float32,
       [](T x) { return at::log(x[0]); }},
      {"sqrt", OpCode::Sqrt, {pos({5}, 18)}, {}, {}, DType::Float32,
       [](T x) { return at::sqrt(x[0]); }},
      {"sqrt float64", OpCode::Sqrt, {pos({5}, 18).to(at::kDouble)}, {}, {}, DType::Float32,
       [](T x) { return at::sqrt(x[0]); }},
      {"relu", OpCode::Relu, {fl({6}, 19)}, {}, {}, DType::Float32,
       [](T x) { return at::relu(x[0]); }},
      {"relu int", OpCode::Relu, {in({6}, 19)}, {}, {}, DType::Float32,
       [](T x) { return at::relu(x[0]); }},
      {"sigmoid", OpCode::Sigmoid, {fl({6}, 20)}, {}, {}, DType::Float32,
       [](T x) { return at::sigmoid(x[0]); }},
      {"tanh", OpCode::Tanh, {fl({6}, 21)}, {}, {}, DType::Float32,
       [](T x) { return at::tanh(x[0]); }},
      {"tanh bool is float32", OpCode::Tanh, {in({6}, 21) > 0}, {}, {}, DType::Float32,
       [](T x) { return at::tanh(x[0].to(at::kFloat)); }},
      // linear algebra
      {"matmul", OpCode::Matmul, {fl({2, 3}, 22), fl({3, 4}, 23)}, {}, {}, DType::Float32,
       [](T x) { return at::matmul(x[0], x[1]); }},
      {"matmul batched with vector", OpCode::Matmul, {fl({2, 2, 3}, 24), fl({3}, 25)}, {}, {},
       DType::Float32, [](T x) { return at::matmul(x[0], x[1]); }},
      {"matmul vector vector", OpCode::Matmul, {fl({3}, 26), fl({3}, 27)}, {}, {},
       DType::Float32, [](T x) { return at::matmul(x[0], x[1]); }},
      {"matmul int64", OpCode::Matmul, {in({2, 3}, 22, at::kLong), in({3, 2}, 23, at::kLong)},
       {}, {}, DType::Float32, [](T x) { return at::matmul(x[0], x[1]); }},
      // reductions
      {"sum all", OpCode::Sum, {fl({2, 3}, 28)}, {0}, {}, DType::Float32,
       [](T x) { return at::sum(x[0]); }},
      {"sum dim keepdim", OpCode::Sum, {fl({2, 3}, 29)}, {1, 1}, {}, DType::Float32,
       [](T x) { return at::sum(x[0], at::IntArrayRef{1}, true); }},
      {"sum all keepdim", OpCode::Sum, {fl({2, 3}, 30)}, {1}, {}, DType::Float32,
       [](T x) { return at::sum(x[0], at::IntArrayRef{0, 1}, true); }},
      {"sum negative dims", OpCode::Sum, {fl({2, 3, 4}, 31)}, {0, -1, 0}, {}, DType::Float32,
       [](T x) { return at::sum(x[0], at::IntArrayRef{0, 2}); }},
      {"sum int is int64", OpCode::Sum, {in({2, 3}, 32)}, {0, 0}, {}, DType::Float32,
       [](T x) { return at::sum(x[0].to(at::kLong), at::IntArrayRef{0}); }},
      {"sum bool is int64", OpCode::Sum, {in({5}, 32) > 0}, {0}, {}, DType::Float32,
       [](T x) { return at::sum(x[0].to(at::kLong)); }},
      {"sum of a scalar", OpCode::Sum, {fl({}, 33)}, {1}, {}, DType::Float32,
       [](T x) { return x[0].clone(); }},
      {"mean all", OpCode::Mean, {fl({2, 3}, 34)}, {0}, {}, DType::Float32,
       [](T x) { return at::mean(x[0]); }},
      {"mean dim", OpCode::Mean, {fl({2, 3}, 35)}, {0, -1}, {}, DType::Float32,
       [](T x) { return at::mean(x[0], at::IntArrayRef{-1}); }},
      // shape
      {"reshape", OpCode::Reshape, {fl({2, 3}, 36)}, {3, -1}, {}, DType::Float32,
       [](T x) { return x[0].reshape({3, 2}); }},
      {"view", OpCode::View, {fl({2, 3}, 37)}, {6}, {}, DType::Float32,
       [](T x) { return x[0].reshape({6}); }},
      {"transpose", OpCode::Transpose, {fl({2, 3, 4}, 38)}, {0, -1}, {}, DType::Float32,
       [](T x) { return x[0].transpose(0, 2); }},
      {"slice", OpCode::Slice, {fl({4, 5}, 39)}, {1, 0, 5, 2}, {}, DType::Float32,
       [](T x) { return x[0].slice(1, 0, 5, 2); }},
      {"slice clamps like Python", OpCode::Slice, {fl({4, 5}, 40)}, {0, -3, 100, 1}, {},
       DType::Float32, [](T x) { return x[0].slice(0, 1, 4); }},
      {"slice empty", OpCode::Slice, {fl({4}, 41)}, {0, 3, 1, 1}, {}, DType::Float32,
       [](T x) { return x[0].slice(0, 3, 3); }},
      // in-place
      {"add_", OpCode::AddInplace, {fl({2, 3}, 42), fl({3}, 43)}, {}, {}, DType::Float32,
       [](T x) { return x[0] + x[1]; }},
      {"add_ float with int", OpCode::AddInplace, {fl({3}, 42), in({3}, 43)}, {}, {},
       DType::Float32, [](T x) { return x[0] + x[1]; }},
      {"add_scalar_", OpCode::AddScalarInplace, {fl({3}, 44)}, {}, {1.25}, DType::Float32,
       [](T x) { return x[0] + 1.25; }},
      {"add_scalar_ int", OpCode::AddScalarInplace, {in({3}, 44)}, {2}, {}, DType::Float32,
       [](T x) { return x[0] + 2; }},
      {"sub_", OpCode::SubInplace, {fl({3}, 45), fl({3}, 46)}, {}, {}, DType::Float32,
       [](T x) { return x[0] - x[1]; }},
      {"add_ with alpha", OpCode::AddInplace, {fl({2, 3}, 42), fl({3}, 43)}, {}, {-0.25},
       DType::Float32, [](T x) { return x[0].add(x[1], -0.25); }},
      {"sub_ with integral alpha", OpCode::SubInplace, {in({3}, 45), in({3}, 46)}, {3}, {},
       DType::Int32, [](T x) { return x[0].sub(x[1], 3); }},
      {"sub_scalar_", OpCode::SubScalarInplace, {fl({3}, 47)}, {}, {0.5}, DType::Float32,
       [](T x) { return x[0] - 0.5; }},
      {"mul_", OpCode::MulInplace, {fl({2, 2}, 48), fl({2, 2}, 49)}, {}, {}, DType::Float32,
       [](T x) { return x[0] * x[1]; }},
      {"mul_scalar_", OpCode::MulScalarInplace, {fl({3}, 50)}, {}, {3.0}, DType::Float32,
       [](T x) { return x[0] * 3.0; }},
      {"mul_scalar_ int", OpCode::MulScalarInplace, {in({3}, 50)}, {3}, {}, DType::Float32,
       [](T x) { return x[0] * 3; }},
      {"zero_", OpCode::ZeroInplace, {fl({3}, 51)}, {}, {}, DType::Float32,
       [](T x) { return at::zeros_like(x[0]); }},
      // protocol version 2: elementwise
      {"rsqrt", OpCode::Rsqrt, {pos({5}, 60)}, {}, {}, DType::Float32,
       [](T x) { return at::rsqrt(x[0]); }},
      {"rsqrt int is float32", OpCode::Rsqrt, {nonzero_int({5}, 60).abs()}, {}, {},
       DType::Float32, [](T x) { return at::rsqrt(x[0].to(at::kFloat)); }},
      {"abs int", OpCode::Abs, {in({5}, 61)}, {}, {}, DType::Float32,
       [](T x) { return at::abs(x[0]); }},
      {"sign", OpCode::Sign, {fl({5}, 62)}, {}, {}, DType::Float32,
       [](T x) { return at::sign(x[0]); }},
      {"sign bool", OpCode::Sign, {in({5}, 62) > 0}, {}, {}, DType::Float32,
       [](T x) { return x[0].clone(); }},
      {"pow tensors int", OpCode::Pow, {in({2, 3}, 63), in({3}, 64).abs()}, {}, {},
       DType::Float32, [](T x) { return at::pow(x[0], x[1]); }},
      {"pow_scalar int stays int", OpCode::PowScalar, {in({4}, 65)}, {3}, {}, DType::Float32,
       [](T x) { return at::pow(x[0], 3); }},
      {"pow_scalar bool is int64", OpCode::PowScalar, {in({4}, 65) > 0}, {2}, {},
       DType::Float32, [](T x) { return x[0].to(at::kLong); }},
      {"pow_scalar float", OpCode::PowScalar, {pos({4}, 66)}, {}, {0.5}, DType::Float32,
       [](T x) { return at::sqrt(x[0]); }},
      {"rpow_scalar", OpCode::RPowScalar, {fl({4}, 67)}, {}, {2.0}, DType::Float32,
       [](T x) { return at::exp2(x[0]); }},
      {"rpow_scalar int", OpCode::RPowScalar, {in({4}, 67).abs()}, {2}, {}, DType::Float32,
       [](T x) { return at::pow(2, x[0]); }},
      {"gelu", OpCode::Gelu, {fl({6}, 68)}, {}, {}, DType::Float32,
       [](T x) { return at::gelu(x[0]); }},
      {"gelu_backward", OpCode::GeluBackward, {fl({6}, 69), fl({6}, 70)}, {}, {}, DType::Float32,
       [](T x) { return at::gelu_backward(x[0], x[1]); }},
      {"softmax", OpCode::Softmax, {fl({3, 4}, 71)}, {-1}, {}, DType::Float32,
       [](T x) { return at::softmax(x[0], 1); }},
      {"log_softmax", OpCode::LogSoftmax, {fl({3, 4}, 72)}, {0}, {}, DType::Float32,
       [](T x) { return at::log_softmax(x[0], 0); }},
      // reductions
      {"amax dims", OpCode::Amax, {fl({2, 3, 4}, 73)}, {0, 0, -1}, {}, DType::Float32,
       [](T x) { return at::amax(x[0], {0, 2}); }},
      {"amax all keepdim", OpCode::Amax, {in({2, 3}, 74)}, {1}, {}, DType::Float32,
       [](T x) { return at::amax(x[0], {0, 1}, true); }},
      {"amin", OpCode::Amin, {fl({2, 3}, 75)}, {0}, {}, DType::Float32,
       [](T x) { return at::amin(x[0], {0, 1}); }},
      {"argmax flat", OpCode::Argmax, {fl({3, 4}, 76)}, {0}, {}, DType::Float32,
       [](T x) { return at::argmax(x[0]); }},
      {"argmax dim keepdim", OpCode::Argmax, {fl({3, 4}, 77)}, {1, -1}, {}, DType::Float32,
       [](T x) { return at::argmax(x[0], 1, true); }},
      // comparisons
      {"lt", OpCode::Lt, {fl({2, 3}, 78), fl({3}, 79)}, {}, {}, DType::Float32,
       [](T x) { return x[0] < x[1]; }},
      {"le int float", OpCode::Le, {in({4}, 80), fl({4}, 81)}, {}, {}, DType::Float32,
       [](T x) { return x[0] <= x[1]; }},
      {"gt", OpCode::Gt, {fl({4}, 82), fl({4}, 83)}, {}, {}, DType::Float32,
       [](T x) { return x[0] > x[1]; }},
      {"ge", OpCode::Ge, {in({4}, 84), in({1}, 85)}, {}, {}, DType::Float32,
       [](T x) { return x[0] >= x[1]; }},
      {"eq", OpCode::Eq, {in({6}, 86), in({6}, 87)}, {}, {}, DType::Float32,
       [](T x) { return x[0] == x[1]; }},
      {"ne", OpCode::Ne, {in({6}, 88) > 0, in({6}, 89) > 0}, {}, {}, DType::Float32,
       [](T x) { return x[0] != x[1]; }},
      {"lt_scalar int with 0.5", OpCode::LtScalar, {in({6}, 90)}, {}, {0.5}, DType::Float32,
       [](T x) { return x[0] < 0.5; }},
      {"le_scalar", OpCode::LeScalar, {in({6}, 91)}, {0}, {}, DType::Float32,
       [](T x) { return x[0] <= 0; }},
      {"gt_scalar", OpCode::GtScalar, {fl({6}, 92)}, {}, {0.1}, DType::Float32,
       [](T x) { return x[0] > 0.1; }},
      {"ge_scalar", OpCode::GeScalar, {fl({6}, 93)}, {0}, {}, DType::Float32,
       [](T x) { return x[0] >= 0; }},
      {"eq_scalar", OpCode::EqScalar, {in({6}, 94)}, {1}, {}, DType::Float32,
       [](T x) { return x[0] == 1; }},
      {"ne_scalar bool", OpCode::NeScalar, {in({6}, 95) > 0}, {1}, {}, DType::Float32,
       [](T x) { return x[0] != 1; }},
      {"where broadcast promotes", OpCode::Where,
       {in({3, 1}, 96) > 0, in({4}, 97), fl({}, 98).to(at::kDouble)}, {}, {}, DType::Float32,
       [](T x) { return at::where(x[0], x[1], x[2]); }},
      // joining and shape
      {"cat three", OpCode::Cat, {fl({2, 3}, 99), fl({1, 3}, 100), fl({4, 3}, 101)}, {0}, {},
       DType::Float32, [](T x) { return at::cat({x[0], x[1], x[2]}, 0); }},
      {"cat promotes", OpCode::Cat, {in({2, 2}, 102), fl({2, 1}, 103)}, {-1}, {},
       DType::Float32, [](T x) { return at::cat({x[0], x[1]}, -1); }},
      {"stack", OpCode::Stack, {fl({2, 3}, 104), fl({2, 3}, 105)}, {1}, {}, DType::Float32,
       [](T x) { return at::stack({x[0], x[1]}, 1); }},
      {"unsqueeze", OpCode::Unsqueeze, {fl({2, 3}, 106)}, {-1}, {}, DType::Float32,
       [](T x) { return x[0].unsqueeze(2); }},
      {"squeeze all", OpCode::Squeeze, {fl({1, 3, 1}, 107)}, {}, {}, DType::Float32,
       [](T x) { return x[0].squeeze(); }},
      {"squeeze dim", OpCode::Squeeze, {fl({1, 3, 1}, 108)}, {-1}, {}, DType::Float32,
       [](T x) { return x[0].squeeze(2); }},
      {"permute", OpCode::Permute, {fl({2, 3, 4}, 109)}, {2, 0, 1}, {}, DType::Float32,
       [](T x) { return x[0].permute({2, 0, 1}); }},
      {"expand", OpCode::Expand, {fl({3, 1}, 110)}, {2, -1, 4}, {}, DType::Float32,
       [](T x) { return x[0].expand({2, 3, 4}); }},
      {"to float64", OpCode::To, {fl({4}, 111)}, {}, {}, DType::Float64,
       [](T x) { return x[0].to(at::kDouble); }},
      {"to bool", OpCode::To, {fl({4}, 112)}, {}, {}, DType::Bool,
       [](T x) { return x[0].to(at::kBool); }},
      {"to int32 from bfloat16", OpCode::To, {fl({4}, 113).mul(4).to(at::kBFloat16)}, {}, {},
       DType::Int32, [](T x) { return x[0].to(at::kInt); }},
      {"copy_ broadcasts and casts", OpCode::CopyInplace, {fl({2, 3}, 114), in({3}, 115)}, {}, {},
       DType::Float32, [](T x) { return x[1].to(at::kFloat).expand({2, 3}); }},
      {"addcmul_ broadcasts", OpCode::AddcmulInplace, {fl({2, 3}, 117), fl({3}, 118), fl({2, 1}, 119)},
       {}, {0.5}, DType::Float32, [](T x) { return x[0].addcmul(x[1], x[2], 0.5); }},
      {"addcdiv_", OpCode::AddcdivInplace,
       {fl({4}, 120).to(at::kDouble), fl({4}, 121).to(at::kDouble), fl({4}, 122).abs().add(0.5).to(at::kDouble)},
       {}, {-2.0}, DType::Float64, [](T x) { return x[0].addcdiv(x[1], x[2], -2.0); }},
      {"alias", OpCode::Alias, {fl({2, 2}, 116)}, {}, {}, DType::Float32,
       [](T x) { return x[0]; }},
      // indexing
      {"gather", OpCode::Gather,
       {fl({3, 4}, 117), at::randint(0, 4, {3, 5}, at::TensorOptions().dtype(at::kLong))}, {1},
       {}, DType::Float32, [](T x) { return at::gather(x[0], 1, x[1]); }},
      {"index_select", OpCode::IndexSelect,
       {fl({3, 4}, 118), at::tensor({2, 0, 2}, at::kLong)}, {-2}, {}, DType::Float32,
       [](T x) { return at::index_select(x[0], 0, x[1]); }},
      {"index_select int32 index", OpCode::IndexSelect,
       {fl({3, 4}, 119), at::tensor({3, 1}, at::kInt)}, {1}, {}, DType::Float32,
       [](T x) { return at::index_select(x[0], 1, x[1]); }},
      {"slice_scatter", OpCode::SliceScatter, {fl({4, 10}, 120), fl({4, 3}, 121)},
       {1, 1, 8, 3}, {}, DType::Float32,
       [](T x) { return at::slice_scatter(x[0], x[1], 1, 1, 8, 3); }},
      {"scatter_add", OpCode::ScatterAdd,
       {fl({3, 4}, 122), at::tensor({0, 1, 0, 2, 2, 2}, at::kLong).reshape({2, 3}),
        fl({2, 3}, 123)},
       {0}, {}, DType::Float32, [](T x) { return at::scatter_add(x[0], 0, x[1], x[2]); }},
      {"index_add", OpCode::IndexAdd,
       {fl({3, 4}, 124), at::tensor({3, 3, 0}, at::kLong), fl({3, 3}, 125)}, {1}, {},
       DType::Float32, [](T x) { return at::index_add(x[0], 1, x[1], x[2]); }},
  };
}
// clang-format on

TEST_CASE("executor runs every op like LibTorch", "[worker][unit]") {
  std::vector<bool> covered(kNumOps);
  for (const OpCase& c : op_cases()) {
    DYNAMIC_SECTION(c.name) {
      Harness h;
      std::vector<TensorId> ids;
      for (const auto& t : c.inputs) ids.push_back(h.put(t));
      const bool inplace = op_info(c.code).kind == OpKind::Inplace;
      const TensorId out = 1;
      h.run1(op(c.code, inplace ? std::vector<TensorId>{} : std::vector<TensorId>{out}, ids, c.ints,
                c.floats, c.dtype));
      INFO(c.name);
      REQUIRE(h.sync().empty());
      check_same(h.get(inplace ? ids[0] : out), c.expect(c.inputs));
    }
    covered[static_cast<int>(c.code)] = true;
  }
  // Random ops, FromData and ManualSeed have their own tests below.
  for (OpCode skip : {OpCode::Randn, OpCode::Rand, OpCode::FromData, OpCode::ManualSeed}) {
    covered[static_cast<int>(skip)] = true;
  }
  for (int i = 0; i < kNumOps; ++i) {
    INFO("op " << op_info(static_cast<OpCode>(i)).name << " has no row in op_cases()");
    CHECK(covered[i]);
  }
}

TEST_CASE("executor randn with manual_seed equals at::randn with a same-seeded generator",
          "[worker][unit]") {
  Harness h;
  const uint64_t seed = 1234567;
  h.run({op(OpCode::ManualSeed, {}, {}, {static_cast<int64_t>(seed)}),
         op(OpCode::Randn, {1}, {}, {4, 5}), op(OpCode::Randn, {2}, {}, {3}),
         op(OpCode::Rand, {3}, {}, {2, 2}, {}, DType::Float64)});
  REQUIRE(h.sync().empty());
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const at::Tensor a = at::randn({4, 5}, gen);
  const at::Tensor b = at::randn({3}, gen);
  const at::Tensor c = at::rand({2, 2}, gen, at::TensorOptions().dtype(at::kDouble));
  CHECK(at::equal(h.get(1), a));
  CHECK(at::equal(h.get(2), b));
  CHECK(at::equal(h.get(3), c));

  SECTION("re-seeding restarts the sequence, and a seed with the top bit set works") {
    h.run({op(OpCode::ManualSeed, {}, {}, {static_cast<int64_t>(seed)}),
           op(OpCode::Randn, {4}, {}, {4, 5}), op(OpCode::ManualSeed, {}, {}, {-1}),
           op(OpCode::Randn, {5}, {}, {8})});
    CHECK(at::equal(h.get(4), a));
    auto g2 = at::make_generator<at::CPUGeneratorImpl>(~uint64_t{0});
    CHECK(at::equal(h.get(5), at::randn({8}, g2)));
  }
  SECTION("sessions have their own generators") {
    h.session = 8;
    h.run({op(OpCode::ManualSeed, {}, {}, {static_cast<int64_t>(seed)}),
           op(OpCode::Randn, {1}, {}, {4, 5})});
    CHECK(at::equal(h.get(1), a));
  }
}

TEST_CASE("executor random ops reject non-floating dtypes", "[worker][unit]") {
  Harness h;
  h.run1(op(OpCode::Randn, {1}, {}, {2}, {}, DType::Int32));
  auto failures = h.sync();
  REQUIRE(failures.size() == 1);
  CHECK(failures[0].code == Status::InvalidArgument);
}

TEST_CASE("executor FromData copies the frame and checks its size", "[worker][unit]") {
  Harness h;
  SECTION("exact bytes, every dtype") {
    for (auto t : {at::kFloat, at::kDouble, at::kHalf, at::kBFloat16, at::kInt, at::kLong}) {
      const at::Tensor src = at::arange(12, at::TensorOptions().dtype(t)).reshape({3, 4});
      check_same(h.get(h.put(src)), src);
    }
    const at::Tensor b = at::arange(6).reshape({2, 3}) > 2;
    check_same(h.get(h.put(b)), b);
    const at::Tensor empty = at::zeros({0, 3});
    check_same(h.get(h.put(empty)), empty);
    const at::Tensor scalar = at::full({}, 2.5);
    check_same(h.get(h.put(scalar)), scalar);
    CHECK(h.sync().empty());
  }
  SECTION("a small (inline) frame and an unaligned frame") {
    // 3 floats fit in ZeroMQ's inline message; 1000 floats from offset 1.
    check_same(h.get(h.put(at::ones({3}))), at::ones({3}));
    std::vector<char> raw(4001);
    const at::Tensor src = at::arange(1000, at::kFloat);
    std::memcpy(raw.data() + 1, src.data_ptr(), 4000);
    Frames data;
    data.emplace_back(raw.data() + 1, 4000);
    Instr in = op(OpCode::FromData, {1}, {}, {1000});
    in.payload = 0;
    h.run1(in, std::move(data));
    check_same(h.get(1), src);
  }
  SECTION("wrong size") {
    Frames data;
    data.push_back(zmq::message_t(10));
    Instr in = op(OpCode::FromData, {1}, {}, {2, 2});
    in.payload = 0;
    h.run1(in, std::move(data));
    auto failures = h.sync();
    REQUIRE(failures.size() == 1);
    CHECK(failures[0].code == Status::PayloadMismatch);
    CHECK_THAT(failures[0].message, Catch::Contains("has 10 bytes, expected 16"));
    CHECK(h.ex.poison(h.session, 1) != nullptr);
  }
  SECTION("frame index out of range, negative, or used twice") {
    Frames data;
    data.push_back(bytes_of(at::ones({2})));
    Instr a = op(OpCode::FromData, {1}, {}, {2});
    a.payload = 0;
    Instr b = op(OpCode::FromData, {2}, {}, {2});
    b.payload = 0;
    Instr c = op(OpCode::FromData, {3}, {}, {2});
    c.payload = 1;
    Instr d = op(OpCode::FromData, {4}, {}, {2});
    d.payload = -5;
    h.run({a, b, c, d}, std::move(data));
    check_same(h.get(1), at::ones({2}));
    auto failures = h.sync();
    REQUIRE(failures.size() == 3);
    for (const auto& f : failures) CHECK(f.code == Status::PayloadMismatch);
    CHECK_THAT(failures[0].message, Catch::Contains("already used"));
    CHECK_THAT(failures[1].message, Catch::Contains("is missing"));
  }
  SECTION("invalid dtype byte") {
    Frames data;
    data.push_back(zmq::message_t(8));
    Instr in = op(OpCode::FromData, {1}, {}, {2});
    in.dtype = static_cast<DType>(42);
    in.payload = 0;
    h.run1(in, std::move(data));
    auto failures = h.sync();
    REQUIRE(failures.size() == 1);
    CHECK(failures[0].code == Status::InvalidArgument);
    CHECK_THAT(failures[0].message, Catch::Contains("dtype code 42"));
  }
}

TEST_CASE("executor failure messages name the worker, op, inputs and tensor", "[worker][unit]") {
  Harness h(ExecutorOptions{3, at::kCPU, 0, quiet_logger(), nullptr, nullptr});
  const TensorId a = h.put(at::ones({2, 3}));
  const TensorId b = h.put(at::ones({3}, at::kLong));
  const TensorId c = h.put(at::ones({4}));
  h.run({op(OpCode::Add, {1}, {a, c})});
  auto failures = h.sync();
  REQUIRE(failures.size() == 1);
  const auto& f = failures[0];
  CHECK(f.code == Status::InvalidArgument);
  CHECK(f.worker == 3);
  CHECK(f.op == "add");
  CHECK(f.tensor == 1);
  CHECK(f.message ==
        "[worker 3] add failed: shapes cannot be broadcast: lhs (2, 3), rhs (4) "
        "(inputs: (2, 3) float32, (4) float32)");
  (void)b;
}

TEST_CASE("executor poisons outputs and propagates the failure silently", "[worker][unit]") {
  Harness h;
  const TensorId a = h.put(at::ones({2, 3}));
  const TensorId b = h.put(at::ones({4}));
  h.run({op(OpCode::Add, {1}, {a, b}),        // fails
         op(OpCode::Relu, {2}, {1}),          // poisoned input
         op(OpCode::Mul, {3}, {2, a}),        // poisoned transitively
         op(OpCode::AddInplace, {}, {a, 3}),  // in-place with a poisoned operand
         op(OpCode::Exp, {4}, {b}),           // unaffected
         fetch(3, 55), fetch(4, 56)});
  const auto original = h.ex.poison(h.session, 1);
  REQUIRE(original != nullptr);
  CHECK(h.ex.poison(h.session, 2) == original);
  CHECK(h.ex.poison(h.session, 3) == original);
  CHECK(h.ex.poison(h.session, a) == original);
  CHECK(h.ex.poison(h.session, 4) == nullptr);
  check_same(h.get(4), at::exp(at::ones({4})));

  REQUIRE(h.replies.size() == 2);
  const auto* err = h.reply(0)->body_as_ErrorReply();
  REQUIRE(err != nullptr);
  CHECK(err->request() == 55);
  CHECK(wire::to_failure_info(err->error()).message == original->message);
  CHECK(h.reply(1)->body_as_FetchReply() != nullptr);

  auto failures = h.sync();
  REQUIRE(failures.size() == 1);  // reported once, by the instruction that failed
  CHECK(failures[0].message == original->message);
  CHECK(h.sync().empty());  // and only at the first sync

  SECTION("freeing a poisoned id forgets it") {
    h.run1(free_instr({1, 2, 3}));
    CHECK(h.ex.poison(h.session, 1) == nullptr);
    h.run1(op(OpCode::Neg, {5}, {1}));
    failures = h.sync();
    REQUIRE(failures.size() == 1);
    CHECK(failures[0].code == Status::UnknownTensor);
  }
}

TEST_CASE("executor reports unknown op codes and unknown ids", "[worker][unit]") {
  Harness h;
  const TensorId a = h.put(at::ones({2}));
  Instr bad = op(OpCode::Add, {1}, {a, a});
  bad.op = static_cast<OpCode>(4242);
  h.run({bad, op(OpCode::Neg, {2}, {777}), op(OpCode::Neg, {3}, {1})});
  auto failures = h.sync();
  REQUIRE(failures.size() == 2);
  CHECK(failures[0].code == Status::UnknownOp);
  CHECK(failures[0].op == "op#4242");
  CHECK_THAT(failures[0].message, Catch::Contains("op code 4242"));
  CHECK(failures[1].code == Status::UnknownTensor);
  CHECK_THAT(failures[1].message, Catch::Contains("tensor 777"));
  CHECK(failures[1].tensor == 2);
  CHECK(h.ex.poison(h.session, 3) == h.ex.poison(h.session, 1));
}

TEST_CASE("executor rejects bad arity, attributes and live output ids", "[worker][unit]") {
  Harness h;
  const TensorId a = h.put(at::ones({2, 2}));
  h.run({op(OpCode::Add, {1}, {a}),                         // arity
         op(OpCode::Transpose, {2}, {a}, {0}),              // too few ints
         op(OpCode::Reshape, {3}, {a}, {5}),                // bad shape
         op(OpCode::Neg, {a}, {a}),                         // output id live
         op(OpCode::Neg, {}, {a}),                          // missing output id
         op(OpCode::Sum, {4}, {a}, {0, 7}),                 // dim out of range
         op(OpCode::Zeros, {5}, {}, {-2}),                  // negative dim
         op(OpCode::Zeros, {6}, {}, {1 << 30, 1 << 30}),    // past 2^48 elements
         // Empty, but its strides would overflow (found by tests/fuzz).
         op(OpCode::Rand, {7}, {}, {0, 1, 0, 0, int64_t{1} << 56, 4, 79, 3})});
  auto failures = h.sync();
  REQUIRE(failures.size() == 9);
  for (const auto& f : failures) CHECK(f.code == Status::InvalidArgument);
  CHECK_THAT(failures[3].message, Catch::Contains("already live"));
  // The live tensor named as an output was not touched.
  check_same(h.get(a), at::ones({2, 2}));
}

TEST_CASE("executor in-place ops mutate and poison on failure", "[worker][unit]") {
  Harness h;
  const TensorId a = h.put(at::ones({3}, at::kInt));
  h.run({op(OpCode::Reshape, {1}, {a}, {3}),  // aliases a
         op(OpCode::AddScalarInplace, {}, {a}, {4}),
         op(OpCode::AddScalarInplace, {}, {a}, {}, {0.5})});  // int += 0.5 rejected
  check_same(h.get(1), at::full({3}, 5, at::kInt));
  auto failures = h.sync();
  REQUIRE(failures.size() == 1);
  CHECK(failures[0].tensor == a);
  CHECK(failures[0].op == "add_scalar_");
  CHECK(h.ex.poison(h.session, a) != nullptr);
}

TEST_CASE("executor fetch replies with the tensor's bytes", "[worker][unit]") {
  Harness h;
  const at::Tensor src = at::arange(6, at::kFloat).reshape({2, 3});
  const TensorId a = h.put(src);
  h.run({op(OpCode::Transpose, {1}, {a}, {0, 1}), fetch(1, 11), fetch(a, 12), fetch(424242, 13),
         op(OpCode::Arange, {2}, {}, {}, {0, 0, 1}, DType::Int64), fetch(2, 14)});
  REQUIRE(h.replies.size() == 4);

  auto check_fetch = [&](size_t i, uint64_t request, TensorId id, const at::Tensor& want) {
    const auto* r = h.reply(i)->body_as_FetchReply();
    REQUIRE(r != nullptr);
    CHECK(h.reply(i)->session() == h.session);
    CHECK(r->request() == request);
    CHECK(r->tensor() == id);
    CHECK(r->dtype() == static_cast<uint8_t>(*to_dtype(want.scalar_type())));
    const auto shape = wire::view(r->shape());
    CHECK(std::vector<int64_t>(shape.begin(), shape.end()) == want.sizes().vec());
    REQUIRE(h.replies[i].size() == 2);
    const at::Tensor c = want.contiguous();
    REQUIRE(h.replies[i][1].size() == static_cast<size_t>(c.numel() * c.element_size()));
    CHECK(std::memcmp(h.replies[i][1].data(), c.data_ptr(), h.replies[i][1].size()) == 0);
  };
  check_fetch(0, 11, 1, src.t());  // non-contiguous: sent contiguous
  check_fetch(1, 12, a, src);
  const auto* err = h.reply(2)->body_as_ErrorReply();
  REQUIRE(err != nullptr);
  CHECK(err->request() == 13);
  CHECK(err->error()->code() == static_cast<uint16_t>(Status::UnknownTensor));
  check_fetch(3, 14, 2, at::zeros({0}, at::kLong));
  CHECK(h.sync().empty());  // a failed fetch is answered, not queued for sync
}

TEST_CASE("executor fetch data stays unchanged by later in-place ops", "[worker][unit]") {
  Harness h;
  const TensorId a = h.put(at::ones({256}));
  h.run({op(OpCode::Reshape, {1}, {a}, {16, 16}), fetch(a, 1), op(OpCode::ZeroInplace, {}, {1}),
         fetch(a, 2), op(OpCode::AddScalarInplace, {}, {a}, {}, {2.0})});
  REQUIRE(h.replies.size() == 2);
  const auto* first = static_cast<const float*>(h.replies[0][1].data());
  const auto* second = static_cast<const float*>(h.replies[1][1].data());
  for (int i = 0; i < 256; ++i) {
    REQUIRE(first[i] == 1.0f);
    REQUIRE(second[i] == 0.0f);
  }
  // The views still share their storage after the copy-on-write.
  check_same(h.get(a), at::full({256}, 2.0));
  check_same(h.get(1), at::full({16, 16}, 2.0));
  h.replies.clear();  // frames released: nothing in flight any more
  h.run1(op(OpCode::AddScalarInplace, {}, {a}, {}, {1.0}));
  check_same(h.get(1), at::full({16, 16}, 3.0));
}

TEST_CASE("executor fetch frames outlive the executor", "[worker][unit]") {
  std::vector<Frames> replies;
  {
    Harness h;
    const TensorId a = h.put(at::full({64}, 7.0));
    h.run1(fetch(a, 1));
    replies = std::move(h.replies);
  }
  REQUIRE(replies.size() == 1);
  CHECK(static_cast<const float*>(replies[0][1].data())[63] == 7.0f);
}

TEST_CASE("executor sync returns failures once, free and bye release", "[worker][unit]") {
  Harness h;
  const TensorId a = h.put(at::ones({2}));
  h.run({op(OpCode::Neg, {1}, {99}), op(OpCode::Neg, {2}, {98})});
  CHECK(h.sync().size() == 2);
  CHECK(h.sync().empty());

  h.run1(free_instr({a, 1, 12345}));         // unknown ids are ignored
  CHECK(h.ex.tensor_count(h.session) == 1);  // id 2 stays poisoned
  h.run1(op(OpCode::Neg, {3}, {a}));
  auto failures = h.sync();
  REQUIRE(failures.size() == 1);
  CHECK(failures[0].code == Status::UnknownTensor);

  Frames bye;
  bye.push_back(wire::encode_bye(h.session));
  h.ex.handle_message(bye, h.sink);
  CHECK(h.ex.session_count() == 0);
  CHECK(h.ex.tensor_count(h.session) == 0);
}

TEST_CASE("executor caps pending failures of a session that never syncs", "[worker][unit]") {
  Harness h;
  std::vector<Instr> instrs;
  for (TensorId i = 0; i < 1500; ++i) instrs.push_back(op(OpCode::Neg, {10 + i}, {5}));
  h.run(instrs);
  auto failures = h.sync();
  REQUIRE(failures.size() == 1025);
  CHECK_THAT(failures.back().message, Catch::Contains("476 more failures"));
}

TEST_CASE("executor capacity bounds outputs before allocating", "[worker][unit]") {
  Harness h(ExecutorOptions{0, at::kCPU, 1 << 20, quiet_logger(), nullptr, nullptr});
  h.run({op(OpCode::Zeros, {1}, {}, {1 << 20}), op(OpCode::Zeros, {2}, {}, {16})});
  auto failures = h.sync();
  REQUIRE(failures.size() == 1);
  CHECK(failures[0].code == Status::ExecutionFailed);
  CHECK_THAT(failures[0].message, Catch::Contains("out of memory"));
  CHECK(h.get(2).numel() == 16);
}

TEST_CASE("executor kernel errors become execution_failed", "[worker][unit]") {
  Harness h;
  h.run1(op(OpCode::Full, {1}, {}, {2}, {1e300}, DType::Int32));  // overflows int32
  auto failures = h.sync();
  REQUIRE(failures.size() == 1);
  CHECK(failures[0].code == Status::ExecutionFailed);
  CHECK_THAT(failures[0].message, Catch::StartsWith("[worker 0] full failed: "));
  CHECK_THAT(failures[0].message, !Catch::Contains("frame #"));  // no backtrace
}

TEST_CASE("executor answers malformed messages and never throws", "[worker][unit]") {
  Harness h;
  SECTION("garbage header") {
    Frames frames;
    frames.emplace_back(std::string("definitely not a flatbuffer"));
    REQUIRE_NOTHROW(h.ex.handle_message(frames, h.sink));
    REQUIRE(h.replies.size() == 1);
    const auto* err = h.reply(0)->body_as_ErrorReply();
    REQUIRE(err != nullptr);
    CHECK(err->error()->code() == static_cast<uint16_t>(Status::Malformed));
  }
  SECTION("truncated batch") {
    const std::vector<Instr> one{op(OpCode::Neg, {1}, {2})};
    zmq::message_t full = wire::encode_batch(1, 1, one);
    for (size_t n : {size_t{0}, size_t{7}, size_t{12}, full.size() / 2, full.size() - 1}) {
      Frames frames;
      frames.emplace_back(full.data(), n);
      REQUIRE_NOTHROW(h.ex.handle_message(frames, h.sink));
    }
    CHECK(h.ex.session_count() == 0);
  }
  SECTION("unknown instruction kind") {
    Instr in = op(OpCode::Neg, {1}, {2});
    in.kind = static_cast<InstrKind>(9);
    h.run1(in);
    auto failures = h.sync();
    REQUIRE(failures.size() == 1);
    CHECK(failures[0].code == Status::Malformed);
  }
  SECTION("random instructions") {
    // Without communicators every Collective fails at once; with them, the
    // one-worker group [0] really runs (Gloo with one rank) and any other
    // group is refused at once, so nothing waits for a peer.
    auto one_rank_only = std::make_shared<collectives::CommunicatorProvider>(
        [gloo = collectives::gloo_communicator_factory(
             std::make_shared<collectives::InMemoryStore>(), "127.0.0.1", std::chrono::seconds(5))](
            const std::vector<int>& group, int rank) -> std::unique_ptr<collectives::Collectives> {
          if (group.size() > 1) throw TransportError("fuzz: no peers to connect to");
          return gloo(group, rank);
        });
    for (auto provider : {std::shared_ptr<collectives::CommunicatorProvider>(), one_rank_only}) {
      Harness fuzz(ExecutorOptions{0, at::kCPU, 1 << 22, quiet_logger(), nullptr, provider});
      std::mt19937_64 rng(42);
      auto pick = [&](int64_t lo, int64_t hi) {
        return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
      };
      for (int round = 0; round < 40; ++round) {
        std::vector<Instr> instrs;
        Frames data;
        for (int i = 0; i < 50; ++i) {
          Instr in;
          in.kind = static_cast<InstrKind>(pick(0, 9) < 8 ? 0 : pick(0, 7));
          in.op = static_cast<OpCode>(pick(0, kNumOps + 2));
          for (int k = pick(0, 2); k > 0; --k) in.outputs.push_back(pick(0, 40));
          for (int k = pick(0, 3); k > 0; --k) in.inputs.push_back(pick(0, 40));
          for (int k = pick(0, 5); k > 0; --k) {
            in.ints.push_back(pick(0, 9) == 0 ? pick(INT64_MIN / 2, INT64_MAX / 2) : pick(-3, 6));
          }
          for (int k = pick(0, 3); k > 0; --k) {
            const double choices[] = {0.0, 1.0, -2.5, 1e300, std::nan(""), INFINITY, 3.0};
            in.floats.push_back(choices[pick(0, 6)]);
          }
          in.dtype = static_cast<DType>(pick(0, kNumDTypes));
          in.payload = static_cast<int32_t>(pick(-1, 2));
          in.request = pick(0, 5);
          if (pick(0, 9) == 0) in.name = "scope";
          if (in.kind == InstrKind::Collective && pick(0, 1) == 0) {
            // Mostly well formed, after the table of docs/protocol.md: a
            // known code, the group [0] or [0, 1], a small a and b, the
            // shape and dtype of the round's live float tensor, and the
            // inputs and outputs the collective takes.
            const auto code = static_cast<int>(pick(1, 8));
            in.op = static_cast<OpCode>(code);
            in.ints = pick(0, 3) != 0 ? std::vector<int64_t>{1, 0} : std::vector<int64_t>{2, 0, 1};
            const int64_t a = pick(-1, 2);
            in.ints.push_back(a);
            in.ints.push_back(pick(0, 3) == 0 ? pick(-1, 5) : 0);
            in.ints.push_back(2);
            in.ints.push_back(pick(0, 5) == 0 ? pick(-1, 4) : 3);
            in.dtype = pick(0, 5) == 0 ? static_cast<DType>(pick(0, kNumDTypes)) : DType::Float32;
            const bool takes_input = code == 1 || code == 2 || code == 3 || code == 5 ||
                                     (code == 4 && a == 0);
            const bool gives_output = code == 2 || code == 3 || code == 6 || (code == 4 && a != 0);
            in.inputs.clear();
            in.outputs.clear();
            if (takes_input) {
              in.inputs.push_back(pick(0, 2) != 0 ? static_cast<TensorId>(100 + round)
                                                  : static_cast<TensorId>(pick(0, 40)));
            }
            if (gives_output) in.outputs.push_back(pick(41, 400));
          }
          instrs.push_back(std::move(in));
          if (pick(0, 3) == 0) data.push_back(zmq::message_t(pick(0, 64)));
        }
        // Seed the namespace with a few live tensors of assorted dtypes.
        fuzz.run({op(OpCode::Ones, {static_cast<TensorId>(100 + round)}, {}, {2, 3}),
                  op(OpCode::Arange, {static_cast<TensorId>(200 + round)}, {}, {}, {0, 6, 1},
                     DType::Int32)});
        fuzz.run(instrs, std::move(data));
      }
      CHECK(fuzz.ex.instructions_executed() > 2000);
    }
    CHECK(one_rank_only->communicator_count() == 1);  // some reached Gloo
    CHECK(one_rank_only->broken({0, 1}).has_value());  // and some a refused group
  }
}

// Manual: measures the executor's cost per small add (no sockets).
TEST_CASE("executor throughput of small adds", "[worker][.][bench]") {
  Harness h;
  const TensorId a = h.put(at::randn({64}));
  constexpr int kBatch = 1000, kBatches = 100;
  TensorId next = 1;
  std::vector<Instr> batch;
  const auto start = std::chrono::steady_clock::now();
  for (int b = 0; b < kBatches; ++b) {
    batch.clear();
    for (int i = 0; i < kBatch; ++i) {
      batch.push_back(op(OpCode::Add, {next}, {a, a}));
      batch.push_back(free_instr({next}));
      ++next;
    }
    h.run(batch);
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  WARN("executor: " << (kBatch * kBatches) / s << " adds/s, " << s * 1e6 / (kBatch * kBatches)
                    << " us per add+free (encoding included)");
}

}  // namespace
}  // namespace gt::worker::test
