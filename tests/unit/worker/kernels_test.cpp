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

TEST_CASE("kernels supports covers the protocol version 2 ops", "[worker][unit]") {
  const at::Device cpu = at::kCPU;
  CHECK(supports(OpCode::Gather, DType::Float32, cpu));
  CHECK(supports(OpCode::IndexSelect, DType::Int32, cpu));
  CHECK(supports(OpCode::ScatterAdd, DType::Float64, cpu));
  CHECK(supports(OpCode::IndexAdd, DType::Int64, cpu));
  CHECK(supports(OpCode::SliceScatter, DType::Float32, cpu));
  CHECK(supports(OpCode::Where, DType::Bool, cpu));
  CHECK(supports(OpCode::Cat, DType::Int32, cpu));
  CHECK(supports(OpCode::Stack, DType::Float32, cpu));
  CHECK(supports(OpCode::To, DType::BFloat16, cpu));
  CHECK(supports(OpCode::CopyInplace, DType::Bool, cpu));
  CHECK(supports(OpCode::Expand, DType::Float32, cpu));
  CHECK(supports(OpCode::Permute, DType::Int64, cpu));
  CHECK(supports(OpCode::LtScalar, DType::Int32, cpu));
  CHECK(supports(OpCode::Softmax, DType::Float32, cpu));
  CHECK(supports(OpCode::Argmax, DType::Float32, cpu));
  CHECK(supports(OpCode::Amax, DType::Bool, cpu));
  CHECK(supports(OpCode::GeluBackward, DType::Float64, cpu));
  CHECK_FALSE(supports(OpCode::Gelu, DType::Int64, cpu));    // op table: floating only
  CHECK_FALSE(supports(OpCode::Argmax, DType::Bool, cpu));   // op table
  CHECK_FALSE(supports(OpCode::Abs, DType::Bool, cpu));      // op table
}

// Index values are data: only the kernel can check them. LibTorch's CPU
// kernels throw (c10::Error) on an index outside [0, size); that must stay an
// exception (the executor turns it into a failure), never a crash.
TEST_CASE("kernels reject out-of-range indices with an exception", "[worker][unit]") {
  const at::Tensor x = at::randn({2, 3});
  const auto idx = [](std::vector<int64_t> v, std::vector<int64_t> shape) {
    return at::tensor(v, at::kLong).reshape(shape);
  };
  const std::vector<int64_t> dim1{1}, dim0{0};
  KernelArgs a;
  const TensorMeta out{{2, 3}, DType::Float32};
  a.out = &out;
  a.ints = dim1;
  for (int64_t bad : {3, -1, 100}) {
    INFO("index " << bad);
    std::vector<at::Tensor> gather_in{x, idx({0, bad, 1, 0}, {2, 2})};
    a.inputs = gather_in;
    CHECK_THROWS_AS(kernel(OpCode::Gather)(a), c10::Error);
    std::vector<at::Tensor> select_in{x, idx({bad}, {1})};
    a.inputs = select_in;
    CHECK_THROWS_AS(kernel(OpCode::IndexSelect)(a), c10::Error);
    std::vector<at::Tensor> scatter_in{x, idx({bad, 0}, {1, 2}), at::ones({1, 2})};
    a.inputs = scatter_in;
    CHECK_THROWS_AS(kernel(OpCode::ScatterAdd)(a), c10::Error);
    std::vector<at::Tensor> add_in{x, idx({0, bad}, {2}), at::ones({2, 2})};
    a.inputs = add_in;
    CHECK_THROWS_AS(kernel(OpCode::IndexAdd)(a), c10::Error);
  }
  a.ints = dim0;
  std::vector<at::Tensor> rows_in{x, idx({2}, {1})};  // dim 0 has size 2
  a.inputs = rows_in;
  CHECK_THROWS_AS(kernel(OpCode::IndexSelect)(a), c10::Error);
}

TEST_CASE("executor reports an out-of-range index as a failure and keeps going",
          "[worker][unit]") {
  Harness h;
  const TensorId x = h.put(at::randn({2, 3}));
  const TensorId bad = h.put(at::tensor({0, 5}, at::kLong).reshape({1, 2}));
  const TensorId neg = h.put(at::tensor({-1}, at::kLong));
  const TensorId src = h.put(at::ones({1, 2}));
  const TensorId row = h.put(at::ones({1, 3}));
  h.run({op(OpCode::Gather, {1}, {x, bad}, {1}), op(OpCode::IndexSelect, {2}, {x, neg}, {0}),
         op(OpCode::ScatterAdd, {3}, {x, bad, src}, {1}),
         op(OpCode::IndexAdd, {4}, {x, neg, row}, {0}), op(OpCode::Alias, {5}, {x})});
  const auto failures = h.sync();
  REQUIRE(failures.size() == 4);
  for (const auto& f : failures) {
    INFO(f.message);
    CHECK(f.code == Status::ExecutionFailed);
    CHECK_THAT(f.message, Catch::Contains("out of") || Catch::Contains("bounds"));
  }
  CHECK_THAT(failures[0].message, Catch::Contains("gather failed") &&
                                      Catch::Contains("(2, 3) float32, (1, 2) int64"));
  for (TensorId id : {1, 2, 3, 4}) CHECK(h.ex.poison(h.session, id) != nullptr);
  CHECK(h.get(5).data_ptr() == h.get(x).data_ptr());  // alias shares the data
}

TEST_CASE("executor bounds the inputs of variadic ops", "[worker][unit]") {
  Harness h;
  const TensorId x = h.put(at::ones({1}));
  h.run1(op(OpCode::Cat, {1}, std::vector<TensorId>(kMaxInputs, x), {0}));
  REQUIRE(h.sync().empty());
  CHECK(h.get(1).numel() == kMaxInputs);
  h.run1(op(OpCode::Cat, {2}, std::vector<TensorId>(kMaxInputs + 1, x), {0}));
  const auto failures = h.sync();
  REQUIRE(failures.size() == 1);
  CHECK(failures[0].code == Status::InvalidArgument);
  CHECK_THAT(failures[0].message, Catch::Contains("1025 input ids exceed the limit of 1024") &&
                                      Catch::Contains("(1017 more)"));
}

}  // namespace
}  // namespace gt::worker::test
