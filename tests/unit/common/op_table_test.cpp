#include <catch2/catch.hpp>

#include "common/dtype_rules.h"
#include "common/op_table.h"

using namespace gt;

namespace {
std::vector<TensorMeta> run(OpCode code, std::vector<TensorMeta> in, std::vector<int64_t> ints = {},
                            std::vector<double> floats = {}, DType dtype = kFloat32) {
  return infer(op_info(code), OpCall{in, ints, floats, dtype});
}
TensorMeta f32(Shape s) { return {std::move(s), kFloat32}; }
}  // namespace

TEST_CASE("op table has one row per code in order", "[op_table][unit]") {
  REQUIRE(all_ops().size() == static_cast<size_t>(kNumOps));
  for (size_t i = 0; i < all_ops().size(); ++i) {
    CHECK(static_cast<size_t>(all_ops()[i].code) == i);
    CHECK(!all_ops()[i].name.empty());
  }
  CHECK(find_op(kNumOps) == nullptr);
  CHECK(find_op(0xffff) == nullptr);
}

TEST_CASE("elementwise ops broadcast shapes", "[op_table][unit]") {
  auto out = run(OpCode::Add, {f32({4, 1, 3}), f32({2, 1})});
  CHECK(out[0].shape == Shape{4, 2, 3});
  CHECK(run(OpCode::Mul, {f32({}), f32({5})})[0].shape == Shape{5});
  CHECK_THROWS_WITH(run(OpCode::Add, {f32({2, 3}), f32({4})}),
                    Catch::Contains("add") && Catch::Contains("(2, 3)") && Catch::Contains("(4)"));
}

TEST_CASE("type promotion follows torch", "[op_table][unit]") {
  CHECK(run(OpCode::Add, {{{3}, kInt32}, {{3}, kFloat64}})[0].dtype == kFloat64);
  CHECK(run(OpCode::Add, {{{3}, kFloat16}, {{3}, kBFloat16}})[0].dtype == kFloat32);
  // zero-dim tensors rank below dimensioned ones within a category
  CHECK(run(OpCode::Add, {{{3}, kFloat32}, {{}, kFloat64}})[0].dtype == kFloat32);
  CHECK(run(OpCode::Add, {{{3}, kInt32}, {{}, kFloat64}})[0].dtype == kFloat64);
  CHECK(run(OpCode::Div, {{{3}, kInt64}, {{3}, kInt64}})[0].dtype == kFloat32);
  CHECK(run(OpCode::AddScalar, {{{3}, kInt64}}, {2})[0].dtype == kInt64);
  CHECK(run(OpCode::AddScalar, {{{3}, kInt64}}, {}, {2.5})[0].dtype == kFloat32);
  CHECK(run(OpCode::AddScalar, {{{3}, kBool}}, {1})[0].dtype == kInt64);
  CHECK(run(OpCode::Exp, {{{3}, kInt32}})[0].dtype == kFloat32);
  CHECK(run(OpCode::Sum, {{{3}, kBool}}, {0})[0].dtype == kInt64);
  CHECK_THROWS_WITH(run(OpCode::Mean, {{{3}, kInt64}}, {0}), Catch::Contains("floating"));
  CHECK_THROWS(run(OpCode::Sub, {{{3}, kBool}, {{3}, kBool}}));
  CHECK_THROWS(run(OpCode::Neg, {{{3}, kBool}}));
}

TEST_CASE("matmul shape rule covers vectors, matrices and batches", "[op_table][unit]") {
  CHECK(run(OpCode::Matmul, {f32({2, 3}), f32({3, 4})})[0].shape == Shape{2, 4});
  CHECK(run(OpCode::Matmul, {f32({3}), f32({3})})[0].shape == Shape{});
  CHECK(run(OpCode::Matmul, {f32({3}), f32({3, 4})})[0].shape == Shape{4});
  CHECK(run(OpCode::Matmul, {f32({2, 3}), f32({3})})[0].shape == Shape{2});
  CHECK(run(OpCode::Matmul, {f32({5, 1, 2, 3}), f32({4, 3, 7})})[0].shape == Shape{5, 4, 2, 7});
  CHECK_THROWS_WITH(run(OpCode::Matmul, {f32({4, 3}), f32({5, 2})}),
                    Catch::Contains("inner dims differ: lhs (4, 3), rhs (5, 2)"));
  CHECK_THROWS_WITH(run(OpCode::Matmul, {f32({4, 3}), {{3, 2}, kFloat64}}),
                    Catch::Contains("same dtype"));
}

TEST_CASE("reductions handle dims, negatives and keepdim", "[op_table][unit]") {
  CHECK(run(OpCode::Sum, {f32({2, 3, 4})}, {0})[0].shape == Shape{});
  CHECK(run(OpCode::Sum, {f32({2, 3, 4})}, {1})[0].shape == Shape{1, 1, 1});
  CHECK(run(OpCode::Sum, {f32({2, 3, 4})}, {0, -1})[0].shape == Shape{2, 3});
  CHECK(run(OpCode::Mean, {f32({2, 3, 4})}, {1, 0, 2})[0].shape == Shape{1, 3, 1});
  CHECK_THROWS_WITH(run(OpCode::Sum, {f32({2, 3})}, {0, 2}), Catch::Contains("out of range"));
  CHECK_THROWS_WITH(run(OpCode::Sum, {f32({2, 3})}, {0, 1, -1}), Catch::Contains("more than once"));
}

TEST_CASE("shape ops: reshape, transpose, slice", "[op_table][unit]") {
  CHECK(run(OpCode::Reshape, {f32({2, 6})}, {3, -1})[0].shape == Shape{3, 4});
  CHECK_THROWS_WITH(run(OpCode::Reshape, {f32({2, 6})}, {5, -1}), Catch::Contains("invalid"));
  CHECK_THROWS(run(OpCode::Reshape, {f32({2, 6})}, {-1, -1}));
  CHECK(run(OpCode::Transpose, {f32({2, 3, 4})}, {0, -1})[0].shape == Shape{4, 3, 2});
  CHECK(run(OpCode::Slice, {f32({10, 3})}, {0, 2, 8, 3})[0].shape == Shape{2, 3});
  CHECK(run(OpCode::Slice, {f32({10})}, {0, -3, INT64_MAX, 1})[0].shape == Shape{3});
  CHECK(run(OpCode::Slice, {f32({10})}, {0, 7, 2, 1})[0].shape == Shape{0});
  CHECK_THROWS_WITH(run(OpCode::Slice, {f32({10})}, {0, 0, 5, 0}), Catch::Contains("positive"));
}

TEST_CASE("creation ops validate shapes and dtypes", "[op_table][unit]") {
  CHECK(run(OpCode::Zeros, {}, {2, 3}, {}, kInt64)[0] == TensorMeta{{2, 3}, kInt64});
  CHECK_THROWS_WITH(run(OpCode::Zeros, {}, {2, -3}), Catch::Contains("negative"));
  CHECK_THROWS_WITH(run(OpCode::Randn, {}, {2}, {}, kInt64), Catch::Contains("floating"));
  CHECK_THROWS(run(OpCode::Zeros, {}, {1 << 30, 1 << 30}));
  CHECK(run(OpCode::Arange, {}, {}, {0, 10, 3}, kInt64)[0].shape == Shape{4});
  CHECK_THROWS(run(OpCode::Arange, {}, {}, {0, 10, -1}, kInt64));
}

TEST_CASE("in-place ops keep the tensor's shape and dtype", "[op_table][unit]") {
  CHECK(run(OpCode::AddInplace, {f32({2, 3}), f32({3})}).empty());
  CHECK_THROWS_WITH(run(OpCode::AddInplace, {f32({3}), f32({2, 3})}),
                    Catch::Contains("differs from the tensor's shape"));
  CHECK_THROWS_WITH(run(OpCode::AddScalarInplace, {{{3}, kInt64}}, {}, {0.5}),
                    Catch::Contains("can't be cast"));
}

TEST_CASE("attribute counts and arity are checked", "[op_table][unit]") {
  CHECK_THROWS_WITH(run(OpCode::Add, {f32({2})}), Catch::Contains("expected 2 tensor inputs, got 1"));
  CHECK_THROWS_WITH(run(OpCode::Transpose, {f32({2, 2})}, {0}),
                    Catch::Contains("integer attributes"));
  CHECK_THROWS_WITH(run(OpCode::AddScalar, {f32({2})}, {1}, {1.0}),
                    Catch::Contains("exactly one number"));
}
