#include "client/internal/format.h"

#include <bit>
#include <cmath>
#include <cstring>
#include <iomanip>
#include <sstream>

namespace gt::client {

// ---- 16-bit floats ----------------------------------------------------------------

float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;  // signed zero
    } else {  // subnormal: normalise into a float's wider exponent range
      int e = -1;
      do {
        ++e;
        mant <<= 1;
      } while ((mant & 0x400u) == 0);
      bits = sign | (static_cast<uint32_t>(127 - 15 - e) << 23) | ((mant & 0x3ffu) << 13);
    }
  } else if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);  // inf, NaN (payload kept)
  } else {
    bits = sign | ((exp + (127 - 15)) << 23) | (mant << 13);
  }
  return std::bit_cast<float>(bits);
}

uint16_t float_to_half(float value) {
  const uint32_t f = std::bit_cast<uint32_t>(value);
  const uint16_t sign = static_cast<uint16_t>((f >> 16) & 0x8000u);
  const uint32_t abs = f & 0x7fffffffu;
  if (abs >= 0x7f800000u) {  // inf or NaN
    return sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0u);
  }
  if (abs >= 0x477ff000u) return sign | 0x7c00u;  // rounds past 65504: inf
  if (abs < 0x38800000u) {  // below the smallest normal half: subnormal or zero
    if (abs < 0x33000000u) return sign;  // below half the smallest subnormal
    const uint32_t exp = abs >> 23;
    const uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - exp;  // value / 2^-24 = mant * 2^(exp - 126)
    uint32_t half = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1);
    const uint32_t halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (half & 1u))) ++half;
    return sign | static_cast<uint16_t>(half);
  }
  uint32_t h = ((abs >> 13) - ((127 - 15) << 10));
  const uint32_t rem = abs & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
  return sign | static_cast<uint16_t>(h);
}

float bfloat16_to_float(uint16_t bits) {
  return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16);
}

uint16_t float_to_bfloat16(float value) {
  uint32_t f = std::bit_cast<uint32_t>(value);
  if ((f & 0x7fffffffu) > 0x7f800000u) {
    return static_cast<uint16_t>((f >> 16) | 0x40u);  // NaN stays a (quiet) NaN
  }
  f += 0x7fffu + ((f >> 16) & 1u);
  return static_cast<uint16_t>(f >> 16);
}

// ---- element conversion --------------------------------------------------------------

namespace {

template <typename S, typename T>
void convert_from(const void* data, int64_t n, T* out) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (int64_t i = 0; i < n; ++i) {
    S v;
    std::memcpy(&v, p + i * sizeof(S), sizeof(S));  // frames need not be aligned
    out[i] = static_cast<T>(v);
  }
}

template <typename T, float (*decode)(uint16_t)>
void convert_16(const void* data, int64_t n, T* out) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (int64_t i = 0; i < n; ++i) {
    uint16_t v;
    std::memcpy(&v, p + i * 2, 2);
    out[i] = static_cast<T>(decode(v));
  }
}

}  // namespace

template <typename T>
std::vector<T> convert_elements(const void* data, int64_t count, DType dtype) {
  // std::vector<bool> has no data(): convert through bytes.
  using Slot = std::conditional_t<std::is_same_v<T, bool>, uint8_t, T>;
  std::vector<Slot> tmp(static_cast<size_t>(count));
  Slot* out = tmp.data();
  auto as = [&](auto tag) {
    using S = decltype(tag);
    if constexpr (std::is_same_v<T, bool>) {
      const auto* p = static_cast<const unsigned char*>(data);
      for (int64_t i = 0; i < count; ++i) {
        S v;
        std::memcpy(&v, p + i * sizeof(S), sizeof(S));
        out[i] = static_cast<bool>(v);
      }
    } else {
      convert_from<S>(data, count, out);
    }
  };
  switch (dtype) {
    case DType::Float32: as(float{}); break;
    case DType::Float64: as(double{}); break;
    case DType::Int32: as(int32_t{}); break;
    case DType::Int64: as(int64_t{}); break;
    case DType::Bool: {
      const auto* p = static_cast<const unsigned char*>(data);
      for (int64_t i = 0; i < count; ++i) out[i] = static_cast<Slot>(p[i] != 0);
      break;
    }
    case DType::Float16:
      if constexpr (std::is_same_v<T, bool>) {
        for (int64_t i = 0; i < count; ++i) {
          uint16_t v;
          std::memcpy(&v, static_cast<const unsigned char*>(data) + i * 2, 2);
          out[i] = static_cast<bool>(half_to_float(v));
        }
      } else {
        convert_16<Slot, half_to_float>(data, count, out);
      }
      break;
    case DType::BFloat16:
      if constexpr (std::is_same_v<T, bool>) {
        for (int64_t i = 0; i < count; ++i) {
          uint16_t v;
          std::memcpy(&v, static_cast<const unsigned char*>(data) + i * 2, 2);
          out[i] = static_cast<bool>(bfloat16_to_float(v));
        }
      } else {
        convert_16<Slot, bfloat16_to_float>(data, count, out);
      }
      break;
  }
  if constexpr (std::is_same_v<T, bool>) {
    return std::vector<bool>(tmp.begin(), tmp.end());
  } else {
    return tmp;
  }
}

template GT_API std::vector<float> convert_elements<float>(const void*, int64_t, DType);
template GT_API std::vector<double> convert_elements<double>(const void*, int64_t, DType);
template GT_API std::vector<int32_t> convert_elements<int32_t>(const void*, int64_t, DType);
template GT_API std::vector<int64_t> convert_elements<int64_t>(const void*, int64_t, DType);
template GT_API std::vector<uint8_t> convert_elements<uint8_t>(const void*, int64_t, DType);
template GT_API std::vector<bool> convert_elements<bool>(const void*, int64_t, DType);

// ---- printing (after ATen/core/Formatting.cpp) ---------------------------------------

std::string type_name(DType dtype) {
  switch (dtype) {
    case DType::Float32: return "Float32Type";
    case DType::Float64: return "Float64Type";
    case DType::Float16: return "Float16Type";
    case DType::BFloat16: return "BFloat16Type";
    case DType::Int32: return "Int32Type";
    case DType::Int64: return "Int64Type";
    case DType::Bool: return "BoolType";
  }
  return "UnknownType";
}

namespace {

constexpr int64_t kLineSize = 80;

// How LibTorch picks the number format of a block: all-integral values print
// as integers; otherwise fixed with 4 decimals, with a common scale factor when
// the magnitudes are large or small, or scientific when they span > 4 decades.
struct Format {
  double scale = 1;
  int64_t width = 11;
  enum class Kind { Default, Fixed, Scientific } kind = Kind::Default;
};

Format pick_format(std::span<const double> v) {
  Format f;
  if (v.empty()) {
    f.width = 0;
    return f;
  }
  bool int_mode = true;
  for (double z : v) {
    if (std::isfinite(z) && z != std::ceil(z)) {
      int_mode = false;
      break;
    }
  }
  size_t offset = 0;
  while (offset < v.size() && !std::isfinite(v[offset])) ++offset;
  double exp_min = 1, exp_max = 1;
  if (offset != v.size()) {
    exp_min = exp_max = std::fabs(v[offset]);
    for (size_t i = offset; i < v.size(); ++i) {
      const double z = std::fabs(v[i]);
      if (std::isfinite(z)) {
        exp_min = std::min(exp_min, z);
        exp_max = std::max(exp_max, z);
      }
    }
    exp_min = exp_min != 0 ? std::floor(std::log10(exp_min)) + 1 : 1;
    exp_max = exp_max != 0 ? std::floor(std::log10(exp_max)) + 1 : 1;
  }
  if (int_mode) {
    if (exp_max > 9) {
      f.width = 11;
      f.kind = Format::Kind::Scientific;
    } else {
      f.width = static_cast<int64_t>(exp_max) + 1;
      f.kind = Format::Kind::Default;
    }
  } else if (exp_max - exp_min > 4) {
    f.width = 11;
    if (std::fabs(exp_max) > 99 || std::fabs(exp_min) > 99) f.width += 1;
    f.kind = Format::Kind::Scientific;
  } else if (exp_max > 5 || exp_max < 0) {
    f.width = 7;
    f.scale = std::pow(10, exp_max - 1);
    f.kind = Format::Kind::Fixed;
  } else {
    f.width = exp_max == 0 ? 7 : static_cast<int64_t>(exp_max) + 6;
    f.kind = Format::Kind::Fixed;
  }
  return f;
}

void apply(std::ostream& out, const Format& f) {
  switch (f.kind) {
    case Format::Kind::Default:  // integral values of at most 9 digits: exact
      out.unsetf(std::ios_base::floatfield);
      out << std::setprecision(10);
      break;
    case Format::Kind::Fixed:
      out << std::fixed << std::setprecision(4);
      break;
    case Format::Kind::Scientific:
      out << std::scientific << std::setprecision(4);
      break;
  }
}

void print_scale(std::ostream& out, double scale) {
  out.unsetf(std::ios_base::floatfield);
  out << std::setprecision(6) << scale << " *\n";
}

void indent(std::ostream& out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out << ' ';
}

// A rows x cols block of values, in LibTorch's layout (columns wrapped to the
// line size with "Columns a to b" headers).
void print_matrix(std::ostream& out, std::span<const double> v, int64_t rows, int64_t cols,
                  int64_t ind) {
  const Format f = pick_format(v);
  apply(out, f);
  indent(out, ind);
  const int64_t per_line = std::max<int64_t>(1, (kLineSize - ind) / (f.width + 1));
  int64_t first = 0;
  while (first < cols) {
    const int64_t last = std::min(first + per_line, cols) - 1;
    if (per_line < cols) {
      if (first != 0) out << '\n';
      out << "Columns " << first + 1 << " to " << last + 1;
      indent(out, ind);
    }
    if (f.scale != 1) {
      print_scale(out, f.scale);
      apply(out, f);
      indent(out, ind);
    }
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = first; c <= last; ++c) {
        out << std::setw(static_cast<int>(f.width)) << v[r * cols + c] / f.scale;
        if (c == last) {
          out << '\n';
          if (r != rows - 1) {
            indent(out, ind);
            if (f.scale != 1) out << ' ';
          }
        } else {
          out << ' ';
        }
      }
    }
    first = last + 1;
  }
}

}  // namespace

std::string format_tensor(std::span<const double> values, const std::vector<int64_t>& shape,
                          DType dtype) {
  std::ostringstream out;
  const int64_t rank = static_cast<int64_t>(shape.size());
  auto footer = [&] {
    out << "[ " << type_name(dtype) << "{";
    for (int64_t i = 0; i < rank; ++i) out << (i ? "," : "") << shape[i];
    out << "} ]";
  };
  if (rank == 0) {
    if (!values.empty()) {
      const double z = values[0];
      const bool integral = std::isfinite(z) && z == std::floor(z) && std::fabs(z) < 1e15;
      out.unsetf(std::ios_base::floatfield);
      out << std::setprecision(integral ? 16 : 6) << z << '\n';
    }
    footer();
    return out.str();
  }
  if (values.empty()) {
    footer();
    return out.str();
  }
  if (rank == 1) {
    const Format f = pick_format(values);
    if (f.scale != 1) print_scale(out, f.scale);
    apply(out, f);
    for (double z : values) out << std::setw(static_cast<int>(f.width)) << z / f.scale << '\n';
  } else if (rank == 2) {
    print_matrix(out, values, shape[0], shape[1], 0);
  } else {
    // One "(i,j,.,.) = " block per matrix, in row-major order of the leading dims.
    const int64_t rows = shape[rank - 2], cols = shape[rank - 1];
    const int64_t block = rows * cols;
    const int64_t blocks = static_cast<int64_t>(values.size()) / std::max<int64_t>(block, 1);
    std::vector<int64_t> counter(rank - 2, 0);
    for (int64_t b = 0; b < blocks; ++b) {
      if (b) out << '\n';
      out << "(";
      for (int64_t c : counter) out << c + 1 << ",";
      out << ".,.) = \n";
      print_matrix(out, values.subspan(b * block, block), rows, cols, 1);
      for (int64_t d = rank - 3; d >= 0; --d) {
        if (++counter[d] < shape[d]) break;
        counter[d] = 0;
      }
    }
  }
  footer();
  return out.str();
}

}  // namespace gt::client
