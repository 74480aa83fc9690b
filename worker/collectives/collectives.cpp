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

}  // namespace gt::worker::collectives
