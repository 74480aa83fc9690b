#include "tests/unit/worker/worker_test_support.h"

namespace gt::worker::test {
namespace {

TEST_CASE("kernels dtype conversions round-trip", "[worker][unit]") {
  for (int i = 0; i < kNumDTypes; ++i) {
    const auto t = static_cast<DType>(i);
    CHECK(to_dtype(to_scalar_type(t)) == t);
    CHECK(c10::elementSize(to_scalar_type(t)) == static_cast<size_t>(element_size(t)));
  }
  CHECK_FALSE(to_dtype(at::kComplexFloat).has_value());
  CHECK_FALSE(to_dtype(at::kByte).has_value());
}

TEST_CASE("kernels cover every op code", "[worker][unit]") {
  for (const OpInfo& op : all_ops()) {
    INFO(op.name);
    CHECK(kernel(op.code) != nullptr);
  }
}

TEST_CASE("kernels supports answers from the op table and LibTorch", "[worker][unit]") {
  const at::Device cpu = at::kCPU;
  CHECK(supports(OpCode::Add, DType::Float32, cpu));
  CHECK(supports(OpCode::Add, DType::Int64, cpu));
  CHECK(supports(OpCode::Matmul, DType::Float32, cpu));
  CHECK(supports(OpCode::Sum, DType::Bool, cpu));
  CHECK(supports(OpCode::FromData, DType::BFloat16, cpu));
  CHECK(supports(OpCode::ManualSeed, DType::Float32, cpu));
  CHECK(supports(OpCode::ZeroInplace, DType::Int32, cpu));
  CHECK_FALSE(supports(OpCode::Randn, DType::Int32, cpu));  // op table: floating only
  CHECK_FALSE(supports(OpCode::Matmul, DType::Bool, cpu));  // op table
  CHECK_FALSE(supports(OpCode::Mean, DType::Int64, cpu));   // op table
  CHECK_FALSE(supports(static_cast<OpCode>(kNumOps), DType::Float32, cpu));
  // Cached answers stay the same.
  CHECK(supports(OpCode::Add, DType::Float32, cpu));
}

TEST_CASE("kernels scalar operands follow the number's kind", "[worker][unit]") {
  const at::Tensor x = at::arange(4, at::kInt);
  const TensorMeta int_out{{4}, DType::Int32};
  const TensorMeta float_out{{4}, DType::Float32};
  const std::vector<at::Tensor> inputs{x};
  const std::vector<int64_t> two{2};
  const std::vector<double> half{0.5};
  KernelArgs a;
  a.inputs = inputs;
  a.ints = two;
  a.out = &int_out;
  check_same(kernel(OpCode::MulScalar)(a), x * 2);
  a.ints = {};
  a.floats = half;
  a.out = &float_out;
  check_same(kernel(OpCode::MulScalar)(a), x.to(at::kFloat) * 0.5);
  check_same(kernel(OpCode::RSubScalar)(a), 0.5 - x.to(at::kFloat));
}

TEST_CASE("kernels from_data takes the frame without copying when aligned", "[worker][unit]") {
  const at::Tensor src = at::arange(64, at::kFloat);
  zmq::message_t frame = bytes_of(src);
  const void* bytes = frame.data();
  const TensorMeta out{{64}, DType::Float32};
  const std::vector<int64_t> shape{64};
  KernelArgs a;
  a.ints = shape;
  a.out = &out;
  a.payload = &frame;
  const at::Tensor t = kernel(OpCode::FromData)(a);
  check_same(t, src);
  if (reinterpret_cast<uintptr_t>(bytes) % 8 == 0) CHECK(t.data_ptr() == bytes);
  CHECK(frame.size() == 0);  // ownership moved into the tensor
}

}  // namespace
}  // namespace gt::worker::test
