#include <type_traits>

#include <catch2/catch.hpp>

#include <gt/gt.h>

using gt::Scalar;
using gt::TensorOptions;

static_assert(std::is_trivially_copyable_v<Scalar>);
static_assert(std::is_convertible_v<int, Scalar>);
static_assert(std::is_convertible_v<double, Scalar>);
static_assert(std::is_convertible_v<bool, Scalar>);
static_assert(!std::is_convertible_v<gt::DType, Scalar>);
static_assert(std::is_convertible_v<gt::DType, TensorOptions>);
static_assert(std::is_nothrow_move_constructible_v<gt::Tensor>);

TEST_CASE("scalar remembers integral vs floating", "[scalar][unit]") {
  CHECK(Scalar(1).is_integral());
  CHECK(Scalar(int64_t{1} << 40).to_int() == (int64_t{1} << 40));
  CHECK(Scalar(uint8_t{200}).to_int() == 200);
  CHECK(Scalar(2.5).is_floating());
  CHECK(Scalar(2.5f).to_double() == 2.5);
  CHECK(Scalar(2.5).to_int() == 2);
  CHECK(Scalar(7).to_double() == 7.0);
  CHECK(Scalar().is_integral());
  CHECK(Scalar().to_int() == 0);
}

TEST_CASE("scalar from bool is integral", "[scalar][unit]") {
  const Scalar t = true;
  CHECK(t.is_integral());
  CHECK(t.to_int() == 1);
  CHECK(Scalar(false).to_int() == 0);
}

TEST_CASE("tensor options default to float32 without requires_grad", "[options][unit]") {
  const TensorOptions o;
  CHECK_FALSE(o.has_dtype());
  CHECK(o.dtype() == gt::kFloat32);
  CHECK(o.dtype_or(gt::kInt64) == gt::kInt64);
  CHECK_FALSE(o.requires_grad());
}

TEST_CASE("tensor options chain and convert from a dtype", "[options][unit]") {
  const TensorOptions from_dtype = gt::kInt64;
  CHECK(from_dtype.has_dtype());
  CHECK(from_dtype.dtype() == gt::kInt64);
  const auto o = TensorOptions().dtype(gt::kFloat64).requires_grad(true);
  CHECK(o.dtype() == gt::kFloat64);
  CHECK(o.requires_grad());
  CHECK(gt::dtype(gt::kBool).dtype() == gt::kBool);
  CHECK(gt::requires_grad().requires_grad());
  CHECK_FALSE(gt::requires_grad().has_dtype());
  // Setters return copies.
  const TensorOptions base;
  (void)base.dtype(gt::kInt32);
  CHECK_FALSE(base.has_dtype());
}
