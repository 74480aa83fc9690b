#include "worker/collectives/collectives.h"

#include "common/check.h"

namespace gt::worker::collectives {

std::string_view to_string(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum:
      return "sum";
    case ReduceOp::Avg:
      return "avg";
    case ReduceOp::Max:
      return "max";
    case ReduceOp::Min:
      return "min";
    case ReduceOp::Product:
      return "product";
  }
  return "invalid";
}

std::string_view to_string(Collective c) {
  switch (c) {
    case Collective::AllReduce:
      return "all_reduce";
    case Collective::AllGather:
      return "all_gather";
    case Collective::ReduceScatter:
      return "reduce_scatter";
    case Collective::Broadcast:
      return "broadcast";
    case Collective::Send:
      return "send";
    case Collective::Recv:
      return "recv";
    case Collective::Barrier:
      return "barrier";
  }
  return "invalid";
}

std::vector<int64_t> chunk_sizes(int64_t total, int parts) {
  GT_CHECK(parts >= 1, "[collectives.chunk_sizes] ", parts, " parts: expected at least 1");
  GT_CHECK(total >= 0, "[collectives.chunk_sizes] total ", total, ": expected a size >= 0");
  std::vector<int64_t> sizes(static_cast<size_t>(parts), total / parts);
  for (int64_t i = 0; i < total % parts; ++i) ++sizes[static_cast<size_t>(i)];
  return sizes;
}

}  // namespace gt::worker::collectives
