#pragma once
// Shapes are std::vector<int64_t>; helpers for numel, broadcasting, dims.

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace gt {

using Shape = std::vector<int64_t>;

/// Largest element count gt accepts for one tensor (2^48): bounds every size
/// read off the wire before anything is allocated.
inline constexpr int64_t kMaxNumel = int64_t{1} << 48;
/// Largest rank gt accepts.
inline constexpr int64_t kMaxRank = 16;

/// "(2, 3)"; a scalar shape prints as "()".
std::string shape_str(std::span<const int64_t> shape);

/// Element count; throws std::invalid_argument on negative dims, or when the
/// product of the nonzero dims passes kMaxNumel (an empty tensor too).
int64_t checked_numel(std::span<const int64_t> shape);

/// Element count without checks (shape already validated).
int64_t numel(std::span<const int64_t> shape);

/// NumPy broadcasting of two shapes; throws std::invalid_argument naming both.
Shape broadcast_shapes(std::span<const int64_t> a, std::span<const int64_t> b);

/// Rows per part when `total` rows are split over `parts` parts: the first
/// `total % parts` parts get one row more than the rest, exactly as
/// torch.tensor_split(t, parts, dim) splits (every part exists, possibly
/// empty, and parts differ by at most one row). Sharding lays tensors out by
/// it and the collectives' reduce_scatter splits by it. Throws
/// std::invalid_argument unless parts >= 1 and total >= 0.
std::vector<int64_t> split_sizes(int64_t total, int parts);

/// Wraps a possibly negative dim into [0, rank); throws naming the valid range.
int64_t wrap_dim(int64_t dim, int64_t rank);

}  // namespace gt
