#pragma once
// Pure helpers for tensor data on the client: element decoding (float16 and
// bfloat16 by bit manipulation) and LibTorch-style printing.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <gt/dtype.h>
#include <gt/export.h>

namespace gt::client {

/// IEEE half (binary16) bits to float; exact, subnormals, inf and NaN included.
GT_API float half_to_float(uint16_t bits);
/// Float to IEEE half bits, rounding to nearest even (overflow gives inf).
GT_API uint16_t float_to_half(float value);
/// bfloat16 bits to float (exact).
GT_API float bfloat16_to_float(uint16_t bits);
/// Float to bfloat16 bits, rounding to nearest even.
GT_API uint16_t float_to_bfloat16(float value);

/// Converts `count` little-endian elements of `dtype` at `data` to T (float,
/// double, int32_t, int64_t, uint8_t, bool) with C++ conversion rules.
template <typename T>
GT_API std::vector<T> convert_elements(const void* data, int64_t count, DType dtype);

/// LibTorch's name of the dtype's type in printed footers ("Float32Type").
GT_API std::string type_name(DType dtype);

/// Formats values the way LibTorch prints a tensor: a column for 1-D, rows of
/// right-aligned values (4 decimals for non-integral floats, a common scale or
/// scientific notation when magnitudes differ), "(i,.,.) = " blocks for rank > 2,
/// then a footer "[ Float32Type{2,3} ]" (no trailing newline).
GT_API std::string format_tensor(std::span<const double> values,
                                 const std::vector<int64_t>& shape, DType dtype);

}  // namespace gt::client
