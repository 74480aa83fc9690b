#include "common/dtype_rules.h"

namespace gt {

int dtype_category(DType t) {
  if (t == DType::Bool) return 0;
  return is_floating(t) ? 2 : 1;
}

namespace {
// Rank inside a category: larger holds smaller.
int width(DType t) {
  switch (t) {
    case DType::Bool: return 0;
    case DType::Int32: return 1;
    case DType::Int64: return 2;
    case DType::Float16: return 1;
    case DType::BFloat16: return 1;
    case DType::Float32: return 2;
    case DType::Float64: return 3;
  }
  return 0;
}
}  // namespace

DType promote_types(DType a, DType b) {
  if (a == b) return a;
  const int ca = dtype_category(a), cb = dtype_category(b);
  if (ca != cb) return ca > cb ? a : b;
  if (width(a) == width(b)) return DType::Float32;  // float16 with bfloat16
  return width(a) > width(b) ? a : b;
}

DType result_type(DType a, int64_t rank_a, DType b, int64_t rank_b) {
  if ((rank_a == 0) == (rank_b == 0)) return promote_types(a, b);
  const DType dimmed = rank_a ? a : b;
  const DType zero = rank_a ? b : a;
  return dtype_category(zero) > dtype_category(dimmed) ? zero : dimmed;
}

DType result_type_scalar(DType t, bool scalar_is_floating) {
  const int scalar_category = scalar_is_floating ? 2 : 1;
  if (scalar_category <= dtype_category(t)) return t;
  return scalar_is_floating ? DType::Float32 : DType::Int64;
}

bool can_cast(DType from, DType to) {
  return dtype_category(from) <= dtype_category(to);
}

std::optional<DType> parse_dtype(std::string_view name) {
  for (int i = 0; i < kNumDTypes; ++i) {
    if (to_string(static_cast<DType>(i)) == name) return static_cast<DType>(i);
  }
  return std::nullopt;
}

}  // namespace gt
