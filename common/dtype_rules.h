#pragma once
// Type promotion, mirroring PyTorch: categories bool < integral < floating;
// dimensioned tensors outrank zero-dim tensors, which outrank plain numbers.

#include <optional>
#include <string_view>

#include <gt/dtype.h>

namespace gt {

/// Category of a dtype: 0 bool, 1 integral, 2 floating.
int dtype_category(DType t);

/// Smallest dtype that holds both (float16 with bfloat16 gives float32).
DType promote_types(DType a, DType b);

/// Result dtype of a binary op on two tensors of the given ranks.
DType result_type(DType a, int64_t rank_a, DType b, int64_t rank_b);

/// Result dtype of tensor (op) number; a floating number lifts bool and
/// integral tensors to float32, an integral number lifts bool to int64.
DType result_type_scalar(DType t, bool scalar_is_floating);

/// Whether an in-place op may write a `from` result into a `to` tensor.
bool can_cast(DType from, DType to);

/// Parses "float32", "int64", ...; nullopt for anything else.
std::optional<DType> parse_dtype(std::string_view name);

/// Whether a raw byte read off the wire names a dtype.
constexpr bool valid_dtype_code(uint8_t code) { return code < kNumDTypes; }

}  // namespace gt
