#include "common/shape.h"

#include <algorithm>

#include "common/check.h"

namespace gt {

std::string shape_str(std::span<const int64_t> shape) {
  std::string out = "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(shape[i]);
  }
  return out + ")";
}

int64_t checked_numel(std::span<const int64_t> shape) {
  GT_CHECK(static_cast<int64_t>(shape.size()) <= kMaxRank, "rank ", shape.size(),
           " exceeds the maximum of ", kMaxRank);
  for (int64_t d : shape) GT_CHECK(d >= 0, "negative dimension in shape ", shape_str(shape));
  // Zero dims are left out of the bound, not let through past it: LibTorch
  // still multiplies the other dims into strides, and an empty (0, 2^60, 16)
  // tensor's strides overflowed into the values c10::SymInt reads as
  // pointers (a worker crash found by tests/fuzz, executor target).
  const bool empty = std::find(shape.begin(), shape.end(), 0) != shape.end();
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d == 0) continue;
    GT_CHECK(n <= kMaxNumel / d, "shape ", shape_str(shape),
             empty ? " is empty but its nonzero dims multiply past 2^48"
                   : " has more than 2^48 elements");
    n *= d;
  }
  return empty ? 0 : n;
}

int64_t numel(std::span<const int64_t> shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

Shape broadcast_shapes(std::span<const int64_t> a, std::span<const int64_t> b) {
  const size_t rank = std::max(a.size(), b.size());
  Shape out(rank);
  for (size_t i = 0; i < rank; ++i) {
    const int64_t da = i < rank - a.size() ? 1 : a[i - (rank - a.size())];
    const int64_t db = i < rank - b.size() ? 1 : b[i - (rank - b.size())];
    GT_CHECK(da == db || da == 1 || db == 1, "shapes cannot be broadcast: lhs ",
             shape_str(a), ", rhs ", shape_str(b));
    out[i] = da == 1 ? db : da;
  }
  return out;
}

std::vector<int64_t> split_sizes(int64_t total, int parts) {
  GT_CHECK(parts >= 1, "[shape.split_sizes] ", parts, " parts: expected at least 1");
  GT_CHECK(total >= 0, "[shape.split_sizes] total ", total, ": expected a size >= 0");
  std::vector<int64_t> sizes(static_cast<size_t>(parts), total / parts);
  for (int64_t i = 0; i < total % parts; ++i) ++sizes[static_cast<size_t>(i)];
  return sizes;
}

int64_t wrap_dim(int64_t dim, int64_t rank) {
  const int64_t r = std::max<int64_t>(rank, 1);  // scalars accept dim 0 and -1
  GT_CHECK(dim >= -r && dim < r, "dim ", dim, " out of range: expected a dim in [",
           -r, ", ", r - 1, "] for a tensor of rank ", rank);
  return dim < 0 ? dim + r : dim;
}

}  // namespace gt
