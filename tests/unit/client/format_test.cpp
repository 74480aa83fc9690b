#include <bit>
#include <cmath>
#include <cstring>
#include <limits>

#include <catch2/catch.hpp>

#include "client/internal/format.h"

using namespace gt::client;

TEST_CASE("float16 decoding handles normals, subnormals, inf and nan", "[format][unit]") {
  CHECK(half_to_float(0x3c00) == 1.0f);
  CHECK(half_to_float(0xc000) == -2.0f);
  CHECK(half_to_float(0x3555) == Approx(0.33325195f));
  CHECK(half_to_float(0x7bff) == 65504.0f);
  CHECK(half_to_float(0x0400) == std::ldexp(1.0f, -14));
  CHECK(half_to_float(0x0001) == std::ldexp(1.0f, -24));
  CHECK(half_to_float(0x03ff) == std::ldexp(1023.0f, -24));
  CHECK(half_to_float(0x0000) == 0.0f);
  CHECK(std::signbit(half_to_float(0x8000)));
  CHECK(half_to_float(0x7c00) == std::numeric_limits<float>::infinity());
  CHECK(half_to_float(0xfc00) == -std::numeric_limits<float>::infinity());
  CHECK(std::isnan(half_to_float(0x7e00)));
}

TEST_CASE("float16 encoding round-trips every half value", "[format][unit]") {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = half_to_float(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      CHECK(std::isnan(half_to_float(float_to_half(f))));
      continue;
    }
    INFO("half bits " << h);
    REQUIRE(float_to_half(f) == h);
  }
  CHECK(float_to_half(1e6f) == 0x7c00);              // overflow: inf
  CHECK(float_to_half(1e-10f) == 0x0000);            // underflow: zero
  CHECK(float_to_half(1.0f + std::ldexp(1.0f, -11)) == 0x3c00);  // tie: even
  CHECK(float_to_half(1.0f + 3 * std::ldexp(1.0f, -11)) == 0x3c02);
}

TEST_CASE("bfloat16 decoding and rounding", "[format][unit]") {
  CHECK(bfloat16_to_float(0x3f80) == 1.0f);
  CHECK(bfloat16_to_float(0xc0a0) == -5.0f);
  CHECK(bfloat16_to_float(0x7f80) == std::numeric_limits<float>::infinity());
  CHECK(std::isnan(bfloat16_to_float(0x7fc0)));
  for (uint32_t b = 0; b < 0x10000; ++b) {
    const float f = bfloat16_to_float(static_cast<uint16_t>(b));
    if (std::isnan(f)) continue;
    REQUIRE(float_to_bfloat16(f) == b);
  }
  CHECK(float_to_bfloat16(1.00390625f) == 0x3f80);  // tie: even
  CHECK(float_to_bfloat16(1.01171875f) == 0x3f82);  // tie: even, upwards
  CHECK(std::isnan(bfloat16_to_float(float_to_bfloat16(std::nanf("")))));
}

TEST_CASE("convert_elements converts from every dtype", "[format][unit]") {
  const uint16_t halves[] = {0x3c00, 0xc000, 0x3800};  // 1, -2, 0.5
  CHECK(convert_elements<float>(halves, 3, gt::kFloat16) == std::vector<float>{1, -2, 0.5f});
  CHECK(convert_elements<int64_t>(halves, 3, gt::kFloat16) == std::vector<int64_t>{1, -2, 0});
  CHECK(convert_elements<bool>(halves, 3, gt::kFloat16) == std::vector<bool>{true, true, true});
  const uint16_t bf[] = {0x3f80, 0x0000};
  CHECK(convert_elements<double>(bf, 2, gt::kBFloat16) == std::vector<double>{1.0, 0.0});
  CHECK(convert_elements<bool>(bf, 2, gt::kBFloat16) == std::vector<bool>{true, false});
  const int64_t big[] = {int64_t{1} << 40, -3};
  CHECK(convert_elements<int64_t>(big, 2, gt::kInt64) == std::vector<int64_t>{1LL << 40, -3});
  CHECK(convert_elements<double>(big, 2, gt::kInt64) == std::vector<double>{1099511627776.0, -3});
  const uint8_t flags[] = {0, 1, 1};
  CHECK(convert_elements<int32_t>(flags, 3, gt::kBool) == std::vector<int32_t>{0, 1, 1});
  CHECK(convert_elements<float>(flags, 3, gt::kBool) == std::vector<float>{0, 1, 1});
  const double d[] = {2.75, -1.5};
  CHECK(convert_elements<float>(d, 2, gt::kFloat64) == std::vector<float>{2.75f, -1.5f});
  CHECK(convert_elements<uint8_t>(d, 1, gt::kFloat64) == std::vector<uint8_t>{2});
  const int32_t i[] = {7, 0};
  CHECK(convert_elements<bool>(i, 2, gt::kInt32) == std::vector<bool>{true, false});
  // Unaligned source data (frames carry no alignment promise).
  alignas(8) unsigned char raw[9] = {};
  const float one = 1.0f;
  std::memcpy(raw + 1, &one, 4);
  CHECK(convert_elements<float>(raw + 1, 1, gt::kFloat32) == std::vector<float>{1.0f});
  CHECK(convert_elements<float>(nullptr, 0, gt::kFloat32).empty());
}

TEST_CASE("format_tensor prints a matrix like LibTorch", "[format][unit]") {
  const std::vector<double> v{1.5, -2.25, 3, 0.125, 4, -1};
  CHECK(format_tensor(v, {2, 3}, gt::kFloat32) ==
        " 1.5000 -2.2500  3.0000\n"
        " 0.1250  4.0000 -1.0000\n"
        "[ Float32Type{2,3} ]");
}

TEST_CASE("format_tensor prints 1-D tensors as a column", "[format][unit]") {
  CHECK(format_tensor(std::vector<double>{0, 1, 2}, {3}, gt::kInt64) ==
        " 0\n 1\n 2\n[ Int64Type{3} ]");
  CHECK(format_tensor(std::vector<double>{-10, 250}, {2}, gt::kInt32) ==
        " -10\n 250\n[ Int32Type{2} ]");
  CHECK(format_tensor(std::vector<double>{1, 0}, {2}, gt::kBool) ==
        " 1\n 0\n[ BoolType{2} ]");
}

TEST_CASE("format_tensor prints scalars and empty tensors", "[format][unit]") {
  CHECK(format_tensor(std::vector<double>{3.5}, {}, gt::kFloat32) == "3.5\n[ Float32Type{} ]");
  CHECK(format_tensor(std::vector<double>{1234567}, {}, gt::kInt64) ==
        "1234567\n[ Int64Type{} ]");
  CHECK(format_tensor(std::vector<double>{}, {0}, gt::kFloat32) == "[ Float32Type{0} ]");
  CHECK(format_tensor(std::vector<double>{}, {2, 0, 3}, gt::kFloat64) ==
        "[ Float64Type{2,0,3} ]");
}

TEST_CASE("format_tensor prints rank > 2 as (i,.,.) blocks", "[format][unit]") {
  CHECK(format_tensor(std::vector<double>{1, 2, 3, 4}, {2, 1, 2}, gt::kInt64) ==
        "(1,.,.) = \n"
        "  1  2\n"
        "\n"
        "(2,.,.) = \n"
        "  3  4\n"
        "[ Int64Type{2,1,2} ]");
  std::vector<double> v(8);
  for (int i = 0; i < 8; ++i) v[i] = i;
  const std::string s = format_tensor(v, {2, 2, 1, 2}, gt::kFloat16);
  CHECK_THAT(s, Catch::Contains("(1,1,.,.) = ") && Catch::Contains("(1,2,.,.) = ") &&
                    Catch::Contains("(2,2,.,.) = ") &&
                    Catch::EndsWith("[ Float16Type{2,2,1,2} ]"));
}

TEST_CASE("format_tensor scales large and spreads wide values", "[format][unit]") {
  CHECK(format_tensor(std::vector<double>{1000000.5, 2000000}, {2}, gt::kFloat64) ==
        "1e+06 *\n 1.0000\n 2.0000\n[ Float64Type{2} ]");
  CHECK(format_tensor(std::vector<double>{1e-5, 1e5 + 0.5}, {2}, gt::kFloat32) ==
        " 1.0000e-05\n 1.0000e+05\n[ Float32Type{2} ]");
  CHECK_THAT(format_tensor(std::vector<double>(30, 0.5), {1, 30}, gt::kBFloat16),
             Catch::Contains("Columns 1 to 10") && Catch::Contains("Columns 21 to 30"));
  CHECK(format_tensor(std::vector<double>{std::nan(""), 1.5}, {2}, gt::kFloat32) ==
        "    nan\n 1.5000\n[ Float32Type{2} ]");
}
