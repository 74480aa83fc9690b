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
  // Size arithmetic at the edges (found by tests/fuzz): no overflow.
  CHECK(run(OpCode::Slice, {f32({10})}, {0, 1, 10, INT64_MAX})[0].shape == Shape{1});
  CHECK_THROWS_WITH(run(OpCode::Reshape, {f32({4})}, {int64_t{1} << 40, int64_t{1} << 40}),
                    Catch::Contains("more than 2^48 elements"));
}

TEST_CASE("creation ops validate shapes and dtypes", "[op_table][unit]") {
  CHECK(run(OpCode::Zeros, {}, {2, 3}, {}, kInt64)[0] == TensorMeta{{2, 3}, kInt64});
  CHECK_THROWS_WITH(run(OpCode::Zeros, {}, {2, -3}), Catch::Contains("negative"));
  CHECK_THROWS_WITH(run(OpCode::Randn, {}, {2}, {}, kInt64), Catch::Contains("floating"));
  // An empty tensor is bounded by its nonzero dims (found by tests/fuzz, executor:
  // LibTorch's strides of (0, 2^60, 16) overflowed and crashed the worker).
  CHECK(run(OpCode::Zeros, {}, {0, int64_t{1} << 40, 256})[0].shape ==
        Shape{0, int64_t{1} << 40, 256});
  CHECK_THROWS_WITH(run(OpCode::Zeros, {}, {0, int64_t{1} << 60, 16}),
                    Catch::Contains("is empty but its nonzero dims multiply past 2^48"));
  CHECK_THROWS_WITH(run(OpCode::Zeros, {}, {int64_t{1} << 40, int64_t{1} << 40, 0}),
                    Catch::Contains("is empty but its nonzero dims multiply past 2^48"));
  CHECK_THROWS_WITH(run(OpCode::Reshape, {f32({0})}, {0, int64_t{1} << 62, 4}),
                    Catch::Contains("nonzero dims multiply past 2^48"));
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

// ---- protocol version 2 ops -------------------------------------------------------------

namespace {
TensorMeta i64(Shape s) { return {std::move(s), kInt64}; }
TensorMeta of(Shape s, DType t) { return {std::move(s), t}; }
}  // namespace

TEST_CASE("unary math ops follow torch's dtype rules", "[op_table][unit]") {
  CHECK(run(OpCode::Rsqrt, {of({3}, kInt64)})[0].dtype == kFloat32);
  CHECK(run(OpCode::Rsqrt, {of({3}, kBool)})[0].dtype == kFloat32);
  CHECK(run(OpCode::Rsqrt, {of({3}, kFloat64)})[0].dtype == kFloat64);
  CHECK(run(OpCode::Abs, {of({3}, kInt32)})[0] == of({3}, kInt32));
  CHECK_THROWS_WITH(run(OpCode::Abs, {of({3}, kBool)}), Catch::Contains("abs") &&
                                                            Catch::Contains("bool"));
  CHECK(run(OpCode::Sign, {of({3}, kBool)})[0].dtype == kBool);
  CHECK(run(OpCode::Sign, {of({2}, kBFloat16)})[0].dtype == kBFloat16);
  CHECK(run(OpCode::Gelu, {of({3}, kBFloat16)})[0].dtype == kBFloat16);
  CHECK_THROWS_WITH(run(OpCode::Gelu, {of({2, 3}, kInt64)}),
                    Catch::Contains("gelu: expected a floating dtype, got int64") &&
                        Catch::Contains("(2, 3)"));
}

TEST_CASE("pow promotes like torch and rejects negative integer powers", "[op_table][unit]") {
  CHECK(run(OpCode::PowScalar, {of({3}, kInt32)}, {2})[0].dtype == kInt32);
  CHECK(run(OpCode::PowScalar, {of({3}, kInt32)}, {}, {2.5})[0].dtype == kFloat32);
  CHECK(run(OpCode::PowScalar, {of({3}, kBool)}, {2})[0].dtype == kInt64);
  CHECK(run(OpCode::PowScalar, {f32({3})}, {-1})[0].dtype == kFloat32);
  CHECK_THROWS_WITH(run(OpCode::PowScalar, {of({3}, kInt64)}, {-1}),
                    Catch::Contains("negative integer powers") && Catch::Contains("(3)"));
  CHECK_THROWS(run(OpCode::PowScalar, {of({3}, kBool)}, {-2}));
  CHECK(run(OpCode::Pow, {of({2, 3}, kInt32), of({3}, kInt64)})[0] == of({2, 3}, kInt64));
  CHECK(run(OpCode::Pow, {of({3}, kBool), of({3}, kInt32)})[0].dtype == kInt32);
  CHECK(run(OpCode::Pow, {f32({3}), of({}, kFloat64)})[0].dtype == kFloat32);
  CHECK_THROWS_WITH(run(OpCode::Pow, {of({3}, kBool), of({3}, kBool)}), Catch::Contains("bool"));
  CHECK(run(OpCode::RPowScalar, {of({3}, kInt32)}, {2})[0].dtype == kInt32);
  CHECK(run(OpCode::RPowScalar, {of({3}, kBool)}, {2})[0].dtype == kInt64);
  CHECK(run(OpCode::RPowScalar, {of({3}, kInt32)}, {}, {2.5})[0].dtype == kFloat32);
  CHECK(run(OpCode::RPowScalar, {of({3}, kFloat16)}, {2})[0].dtype == kFloat16);
}

TEST_CASE("softmax needs a floating dtype and a valid dim", "[op_table][unit]") {
  CHECK(run(OpCode::Softmax, {f32({2, 3})}, {-1})[0] == f32({2, 3}));
  CHECK(run(OpCode::LogSoftmax, {of({}, kFloat64)}, {0})[0] == of({}, kFloat64));
  CHECK_THROWS_WITH(run(OpCode::Softmax, {f32({2, 3})}, {2}), Catch::Contains("out of range"));
  CHECK_THROWS_WITH(run(OpCode::LogSoftmax, {of({2}, kInt32)}, {0}),
                    Catch::Contains("floating"));
  CHECK_THROWS(run(OpCode::Softmax, {f32({2})}, {}));
}

TEST_CASE("amax, amin and argmax shapes, dtypes and empty inputs", "[op_table][unit]") {
  CHECK(run(OpCode::Amax, {of({2, 3}, kInt32)}, {0})[0] == of({}, kInt32));
  CHECK(run(OpCode::Amin, {of({2, 3, 4}, kBool)}, {1, -1, 0})[0] == of({1, 3, 1}, kBool));
  CHECK(run(OpCode::Amax, {f32({2, 3})}, {1})[0].shape == Shape{1, 1});
  CHECK(run(OpCode::Amax, {f32({0, 3})}, {0, 1})[0].shape == Shape{0});
  CHECK_THROWS_WITH(run(OpCode::Amax, {f32({0, 3})}, {0}),
                    Catch::Contains("non-empty") && Catch::Contains("(0, 3)"));
  CHECK_THROWS_WITH(run(OpCode::Amin, {f32({0, 3})}, {0, 0}),
                    Catch::Contains("reduction dim 0 to have non-zero size"));
  CHECK_THROWS_WITH(run(OpCode::Amax, {f32({2, 3})}, {0, 1, 1}),
                    Catch::Contains("more than once"));
  CHECK(run(OpCode::Argmax, {f32({2, 3})}, {0})[0] == i64({}));
  CHECK(run(OpCode::Argmax, {f32({2, 3})}, {1})[0] == i64({1, 1}));
  CHECK(run(OpCode::Argmax, {of({2, 3}, kInt32)}, {0, -1})[0] == i64({2}));
  CHECK(run(OpCode::Argmax, {f32({2, 3})}, {1, 0})[0] == i64({1, 3}));
  CHECK(run(OpCode::Argmax, {f32({})}, {0, 0})[0] == i64({}));
  CHECK(run(OpCode::Argmax, {f32({0, 3})}, {0, 1})[0] == i64({0}));
  CHECK_THROWS_WITH(run(OpCode::Argmax, {f32({0, 3})}, {0, 0}), Catch::Contains("non-zero size"));
  CHECK_THROWS_WITH(run(OpCode::Argmax, {f32({0})}, {0}), Catch::Contains("non-empty"));
  CHECK_THROWS_WITH(run(OpCode::Argmax, {of({3}, kBool)}, {0}), Catch::Contains("bool"));
  CHECK_THROWS_WITH(run(OpCode::Argmax, {f32({2, 3})}, {0, 2}), Catch::Contains("out of range"));
}

TEST_CASE("comparisons give bool and broadcast", "[op_table][unit]") {
  for (OpCode code : {OpCode::Lt, OpCode::Le, OpCode::Gt, OpCode::Ge, OpCode::Eq, OpCode::Ne}) {
    CHECK(run(code, {of({4, 1}, kInt32), f32({3})})[0] == of({4, 3}, kBool));
  }
  for (OpCode code : {OpCode::LtScalar, OpCode::LeScalar, OpCode::GtScalar, OpCode::GeScalar,
                      OpCode::EqScalar, OpCode::NeScalar}) {
    CHECK(run(code, {of({2}, kBool)}, {}, {0.5})[0] == of({2}, kBool));
  }
  CHECK_THROWS_WITH(run(OpCode::Lt, {f32({2, 3}), f32({4})}),
                    Catch::Contains("lt") && Catch::Contains("(2, 3)") && Catch::Contains("(4)"));
  CHECK_THROWS_WITH(run(OpCode::EqScalar, {f32({2})}), Catch::Contains("exactly one number"));
}

TEST_CASE("where needs a bool condition, broadcasts three ways and promotes", "[op_table][unit]") {
  const TensorMeta cond{{3, 1}, kBool};
  CHECK(run(OpCode::Where, {cond, f32({4}), of({}, kFloat64)})[0] == f32({3, 4}));
  CHECK(run(OpCode::Where, {cond, of({1}, kInt32), of({}, kFloat64)})[0] == of({3, 1}, kFloat64));
  CHECK(run(OpCode::Where, {cond, of({1}, kFloat16), of({1}, kBFloat16)})[0].dtype == kFloat32);
  CHECK_THROWS_WITH(run(OpCode::Where, {of({3}, kInt32), f32({3}), f32({3})}),
                    Catch::Contains("condition to be a bool tensor, got int32"));
  CHECK_THROWS_WITH(run(OpCode::Where, {cond, f32({2}), f32({4})}),
                    Catch::Contains("condition (3, 1), self (2), other (4)"));
  CHECK_THROWS_WITH(run(OpCode::Where, {cond, f32({3})}), Catch::Contains("expected 3 tensor inputs"));
}

TEST_CASE("cat and stack follow torch's shape and promotion rules", "[op_table][unit]") {
  CHECK(run(OpCode::Cat, {f32({2, 3}), f32({4, 3}), of({1, 3}, kFloat64)}, {0})[0] ==
        of({7, 3}, kFloat64));
  CHECK(run(OpCode::Cat, {f32({2, 3}), f32({2, 1})}, {-1})[0] == f32({2, 4}));
  CHECK(run(OpCode::Cat, {of({2}, kInt32), of({2}, kBool)}, {0})[0] == of({4}, kInt32));
  // 1-D empty tensors are skipped by the shape checks but join the promotion
  CHECK(run(OpCode::Cat, {of({0}, kFloat64), f32({2, 3})}, {1})[0] == of({2, 3}, kFloat64));
  CHECK(run(OpCode::Cat, {f32({0}), f32({0})}, {0})[0] == f32({0}));
  CHECK_THROWS_WITH(run(OpCode::Cat, {f32({2, 3}), f32({2, 4})}, {0}),
                    Catch::Contains("except in dimension 0") && Catch::Contains("(2, 4)"));
  CHECK_THROWS_WITH(run(OpCode::Cat, {f32({2, 3}), f32({3})}, {0}),
                    Catch::Contains("same number of dimensions"));
  CHECK_THROWS_WITH(run(OpCode::Cat, {f32({}), f32({})}, {0}), Catch::Contains("zero-dimensional"));
  CHECK_THROWS_WITH(run(OpCode::Cat, {}, {0}), Catch::Contains("1 to 1024 tensor inputs, got 0"));
  CHECK_THROWS_WITH(run(OpCode::Cat, std::vector<TensorMeta>(kMaxInputs + 1, f32({1})), {0}),
                    Catch::Contains("got 1025"));
  CHECK(run(OpCode::Stack, {f32({2, 3}), of({2, 3}, kFloat64)}, {0})[0] == of({2, 2, 3}, kFloat64));
  CHECK(run(OpCode::Stack, {f32({2, 3}), f32({2, 3}), f32({2, 3})}, {-1})[0] == f32({2, 3, 3}));
  CHECK(run(OpCode::Stack, {of({}, kInt64), f32({})}, {0})[0] == f32({2}));
  CHECK_THROWS_WITH(run(OpCode::Stack, {f32({2, 3}), f32({3, 2})}, {0}),
                    Catch::Contains("(2, 3) at entry 0 and (3, 2) at entry 1"));
  CHECK_THROWS_WITH(run(OpCode::Stack, {f32({2, 3})}, {3}), Catch::Contains("out of range"));
}

TEST_CASE("unsqueeze, squeeze, permute and expand shapes", "[op_table][unit]") {
  CHECK(run(OpCode::Unsqueeze, {f32({2, 3})}, {-1})[0].shape == Shape{2, 3, 1});
  CHECK(run(OpCode::Unsqueeze, {f32({})}, {0})[0].shape == Shape{1});
  CHECK_THROWS_WITH(run(OpCode::Unsqueeze, {f32({2, 3})}, {3}), Catch::Contains("out of range"));
  CHECK(run(OpCode::Squeeze, {f32({1, 2, 1})})[0].shape == Shape{2});
  CHECK(run(OpCode::Squeeze, {f32({1, 2, 1})}, {-1})[0].shape == Shape{1, 2});
  CHECK(run(OpCode::Squeeze, {f32({1, 2, 1})}, {1})[0].shape == Shape{1, 2, 1});
  CHECK(run(OpCode::Squeeze, {f32({})}, {0})[0].shape == Shape{});
  CHECK(run(OpCode::Permute, {f32({2, 3, 4})}, {-1, 0, 1})[0].shape == Shape{4, 2, 3});
  CHECK(run(OpCode::Permute, {f32({})}, {})[0].shape == Shape{});
  CHECK_THROWS_WITH(run(OpCode::Permute, {f32({2, 3})}, {0}),
                    Catch::Contains("has 1 dims but the tensor of shape (2, 3) has 2"));
  CHECK_THROWS_WITH(run(OpCode::Permute, {f32({2, 3})}, {1, -1}),
                    Catch::Contains("more than once"));
  CHECK(run(OpCode::Expand, {f32({3, 1})}, {2, -1, 4})[0].shape == Shape{2, 3, 4});
  CHECK(run(OpCode::Expand, {f32({})}, {5})[0].shape == Shape{5});
  CHECK(run(OpCode::Expand, {f32({1})}, {0})[0].shape == Shape{0});
  CHECK_THROWS_WITH(run(OpCode::Expand, {f32({2, 3})}, {2, 4}),
                    Catch::Contains("expanded size 4 must match the existing size 3") &&
                        Catch::Contains("(2, 4)") && Catch::Contains("(2, 3)"));
  CHECK_THROWS_WITH(run(OpCode::Expand, {f32({3, 1})}, {-1, 3, 4}),
                    Catch::Contains("leading, non-existing dimension 0"));
  CHECK_THROWS_WITH(run(OpCode::Expand, {f32({2, 3})}, {3}), Catch::Contains("fewer dims"));
  CHECK_THROWS(run(OpCode::Expand, {f32({1})}, {-2}));
  CHECK_THROWS_WITH(run(OpCode::Expand, {f32({1})}, {int64_t{1} << 40, int64_t{1} << 40}),
                    Catch::Contains("more than 2^48 elements"));
}

TEST_CASE("to, copy_ and alias keep shapes; to takes the instruction dtype", "[op_table][unit]") {
  CHECK(run(OpCode::To, {f32({2, 3})}, {}, {}, kBFloat16)[0] == of({2, 3}, kBFloat16));
  CHECK(run(OpCode::To, {of({2}, kBool)}, {}, {}, kFloat64)[0] == of({2}, kFloat64));
  CHECK(run(OpCode::Alias, {of({2}, kInt32)})[0] == of({2}, kInt32));
  CHECK(run(OpCode::CopyInplace, {of({2, 3}, kBool), f32({3})}).empty());
  CHECK(run(OpCode::CopyInplace, {f32({2, 3}), f32({})}).empty());
  CHECK_THROWS_WITH(run(OpCode::CopyInplace, {f32({3}), f32({2, 3})}),
                    Catch::Contains("source shape (2, 3) cannot be broadcast to the tensor's "
                                    "shape (3)"));
  CHECK_THROWS(run(OpCode::CopyInplace, {f32({2, 3}), f32({2})}));
}

TEST_CASE("gather and index_select check index dtype and shapes", "[op_table][unit]") {
  CHECK(run(OpCode::Gather, {f32({2, 3}), i64({2, 5})}, {1})[0] == f32({2, 5}));
  CHECK(run(OpCode::Gather, {of({2, 3}, kInt32), i64({1, 2})}, {-2})[0] == of({1, 2}, kInt32));
  CHECK(run(OpCode::Gather, {f32({}), i64({})}, {0})[0] == f32({}));
  CHECK(run(OpCode::Gather, {f32({2, 3}), i64({0})}, {1})[0] == f32({0}));  // empty: no checks
  CHECK_THROWS_WITH(run(OpCode::Gather, {f32({2, 3}), of({2, 2}, kInt32)}, {1}),
                    Catch::Contains("expected dtype int64 for index, got int32"));
  CHECK_THROWS_WITH(run(OpCode::Gather, {f32({2, 3}), i64({3, 2})}, {1}),
                    Catch::Contains("index (3, 2) must be no larger than self (2, 3)"));
  CHECK_THROWS_WITH(run(OpCode::Gather, {f32({2, 3}), i64({2})}, {1}),
                    Catch::Contains("same number of dimensions"));
  CHECK_THROWS_WITH(run(OpCode::Gather, {f32({2, 3}), i64({2, 2})}, {2}),
                    Catch::Contains("out of range"));
  CHECK(run(OpCode::IndexSelect, {f32({2, 3}), i64({4})}, {1})[0] == f32({2, 4}));
  CHECK(run(OpCode::IndexSelect, {f32({2, 3}), of({}, kInt32)}, {-1})[0] == f32({2, 1}));
  CHECK(run(OpCode::IndexSelect, {f32({}), i64({1})}, {0})[0] == f32({}));
  CHECK_THROWS_WITH(run(OpCode::IndexSelect, {f32({2, 3}), f32({2})}, {1}),
                    Catch::Contains("expected dtype int32 or int64 for index, got float32"));
  CHECK_THROWS_WITH(run(OpCode::IndexSelect, {f32({2, 3}), i64({2, 2})}, {1}),
                    Catch::Contains("index must be a vector") && Catch::Contains("(2, 2)"));
  // A 0-D self picks one value (LibTorch 1.13 overflowed its result here).
  CHECK_THROWS_WITH(run(OpCode::IndexSelect, {f32({}), i64({4})}, {0}),
                    Catch::Contains("exactly one value, got 4"));
}

TEST_CASE("backward helper ops: gelu_backward, slice_scatter, scatter_add, index_add",
          "[op_table][unit]") {
  CHECK(run(OpCode::GeluBackward, {f32({2, 3}), f32({2, 3})})[0] == f32({2, 3}));
  CHECK(run(OpCode::GeluBackward, {f32({2}), of({2}, kFloat64)})[0].dtype == kFloat64);
  CHECK_THROWS_WITH(run(OpCode::GeluBackward, {f32({3}), f32({2, 3})}),
                    Catch::Contains("same shape: grad (3), self (2, 3)"));
  CHECK_THROWS_WITH(run(OpCode::GeluBackward, {of({3}, kInt32), of({3}, kInt32)}),
                    Catch::Contains("floating"));

  CHECK(run(OpCode::SliceScatter, {f32({2, 10}), of({2, 3}, kInt32)}, {1, 1, 8, 3})[0] ==
        f32({2, 10}));
  CHECK(run(OpCode::SliceScatter, {f32({10}), f32({7})}, {0, -8, -1, 1})[0] == f32({10}));
  CHECK_THROWS_WITH(run(OpCode::SliceScatter, {f32({2, 3}), f32({2, 3})}, {1, 0, 2, 1}),
                    Catch::Contains("src (2, 3), slice (2, 2) of (2, 3)"));
  CHECK_THROWS_WITH(run(OpCode::SliceScatter, {f32({}), f32({})}, {0, 0, 1, 1}),
                    Catch::Contains("0-dim"));

  CHECK(run(OpCode::ScatterAdd, {f32({2, 3}), i64({2, 2}), f32({2, 4})}, {1})[0] == f32({2, 3}));
  CHECK(run(OpCode::ScatterAdd, {of({2, 3}, kBool), i64({0}), of({1}, kBool)}, {1})[0] ==
        of({2, 3}, kBool));
  CHECK_THROWS_WITH(run(OpCode::ScatterAdd, {f32({2, 3}), i64({2, 2}), of({2, 2}, kFloat64)}, {1}),
                    Catch::Contains("src to have self's dtype"));
  CHECK_THROWS_WITH(run(OpCode::ScatterAdd, {f32({2, 3}), of({2, 2}, kInt32), f32({2, 2})}, {1}),
                    Catch::Contains("int64 for index"));
  CHECK_THROWS_WITH(run(OpCode::ScatterAdd, {f32({2, 3}), i64({2, 2}), f32({2, 1})}, {1}),
                    Catch::Contains("no larger than src (2, 1)"));
  CHECK_THROWS_WITH(run(OpCode::ScatterAdd, {f32({2, 3}), i64({3, 2}), f32({3, 2})}, {1}),
                    Catch::Contains("no larger than self (2, 3)"));

  CHECK(run(OpCode::IndexAdd, {f32({2, 3}), i64({4}), f32({2, 4})}, {1})[0] == f32({2, 3}));
  CHECK(run(OpCode::IndexAdd, {f32({3}), i64({}), f32({})}, {0})[0] == f32({3}));
  CHECK(run(OpCode::IndexAdd, {f32({2, 3}), of({2}, kInt32), f32({2, 2})}, {-1})[0] == f32({2, 3}));
  CHECK_THROWS_WITH(run(OpCode::IndexAdd, {f32({2, 3}), i64({3}), f32({2, 2})}, {1}),
                    Catch::Contains("number of indices (3) must equal source.size(1) (2)"));
  CHECK_THROWS_WITH(run(OpCode::IndexAdd, {f32({2, 3}), i64({2}), f32({3, 2})}, {1}),
                    Catch::Contains("source must match self apart from dimension 1"));
  CHECK_THROWS_WITH(run(OpCode::IndexAdd, {f32({2, 3}), i64({2}), of({2, 2}, kFloat64)}, {1}),
                    Catch::Contains("source to have self's dtype"));
  CHECK_THROWS_WITH(run(OpCode::IndexAdd, {f32({2, 3}), i64({1, 2}), f32({2, 2})}, {1}),
                    Catch::Contains("vector"));
}

TEST_CASE("add_ and sub_ take an optional alpha of the tensor's kind", "[op_table][unit]") {
  CHECK(run(OpCode::AddInplace, {f32({2, 3}), f32({3})}).empty());
  CHECK(run(OpCode::AddInplace, {f32({2, 3}), f32({3})}, {}, {0.5}).empty());
  CHECK(run(OpCode::SubInplace, {of({3}, kInt64), of({3}, kInt64)}, {2}).empty());
  CHECK_THROWS_WITH(run(OpCode::AddInplace, {of({3}, kInt64), of({3}, kInt64)}, {}, {0.5}),
                    Catch::Contains("alpha must not be a floating point number") &&
                        Catch::Contains("int64"));
  CHECK_THROWS(run(OpCode::AddInplace, {f32({3}), f32({3})}, {1}, {0.5}));
  CHECK_THROWS_WITH(run(OpCode::AddInplace, {f32({3}), f32({2, 3})}, {}, {0.5}),
                    Catch::Contains("in-place result shape (2, 3)"));
}

TEST_CASE("addcmul_ and addcdiv_ broadcast into self and need floating tensors",
          "[op_table][unit]") {
  for (OpCode code : {OpCode::AddcmulInplace, OpCode::AddcdivInplace}) {
    CHECK(run(code, {f32({2, 3}), f32({3}), f32({2, 1})}, {}, {0.5}).empty());
    CHECK(run(code, {of({2}, kFloat64), f32({2}), f32({})}, {2}).empty());
    CHECK_THROWS_WITH(run(code, {f32({3}), f32({2, 3}), f32({3})}, {}, {1.0}),
                      Catch::Contains("in-place result shape (2, 3)"));
    CHECK_THROWS_WITH(run(code, {f32({3}), i64({3}), f32({3})}, {}, {1.0}),
                      Catch::Contains("expected floating tensors, got int64 for input 1"));
    CHECK_THROWS_WITH(run(code, {f32({3}), f32({3}), f32({3})}),
                      Catch::Contains("exactly one number"));
    CHECK_THROWS(run(code, {f32({3}), f32({3})}, {}, {1.0}));  // arity
  }
}
