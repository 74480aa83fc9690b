#pragma once
// The NCCL backend of worker/collectives/collectives.h: the tensors of one
// CUDA device, moved by NCCL. NCCL and the CUDA runtime are loaded at run
// time (Note [loading NCCL] in nccl_library.cpp): nothing here includes
// their headers, and a worker without them starts and runs on the CPU; only
// creating an NCCL communicator needs them.

#include <array>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "worker/collectives/collectives.h"
#include "worker/collectives/store.h"

namespace gt::worker::collectives {

struct NcclOptions {
  int rank = 0;  // this worker's rank in [0, size)
  int size = 1;  // ranks in the communicator
  /// Communicator name: prefixes every store key. Every rank passes the
  /// same name; a name is used for one communicator instance only.
  std::string name = "gt";
  /// The CUDA device (cuda:N) whose tensors this rank's collectives take.
  int device = 0;
  /// Longest wait for the other ranks: to join, to create the communicator,
  /// and for each collective to complete on the device.
  std::chrono::milliseconds timeout{30000};
};

/// Joins the communicator `options.name` through `store` and creates it
/// with NCCL on cuda:`options.device` (rank 0 publishes NCCL's unique id
/// under "<name>/nccl_id"). The store is used only during this call.
///
/// Throws std::invalid_argument for bad options (rank outside [0, size),
/// size < 1, empty name, negative device, timeout <= 0); gt::Error when this
/// build has no NCCL headers, when libnccl or libcudart cannot be loaded
/// (naming every library tried), when the device cannot be used (naming the
/// CUDA error), or when another rank reported such a failure;
/// gt::TimeoutError naming the ranks that did not join, or when NCCL did not
/// finish creating the communicator within the timeout; gt::TransportError
/// when NCCL's bootstrap between the ranks failed.
std::unique_ptr<Collectives> make_nccl_collectives(Store& store, const NcclOptions& options);

/// Whether this gt build has NCCL's headers (GT_HAVE_NCCL). Without them
/// make_nccl_collectives always throws gt::Error saying so.
bool nccl_built();

/// Loads libnccl and the CUDA runtime, once per process, and returns what
/// was loaded ("NCCL 2.28.9 (libnccl.so.2), CUDA runtime libcudart.so.13").
/// Throws gt::Error naming every library tried and why each failed; a
/// failure is remembered and thrown again on every later call.
std::string load_nccl();

/// CUDA devices the loaded CUDA runtime sees; 0 when CUDA is unusable (no
/// driver, no device) or NCCL cannot be loaded.
int nccl_device_count();

// ---- parts of the backend that tests reach without a GPU ------------------

/// load_nccl() from the given candidate names, tried in order (names already
/// loaded in this process first), without caching: tests pass names that do
/// not exist. Throws like load_nccl().
std::string load_nccl_from(const std::vector<std::string>& nccl_names,
                           const std::vector<std::string>& cudart_names);

/// The ncclDataType_t that moves `dtype` (bool as uint8), as its integer
/// value; nullopt for dtypes this backend does not take or without NCCL
/// headers.
std::optional<int> nccl_data_type(at::ScalarType dtype);

/// The ncclRedOp_t of `op` (Avg: ncclAvg), as its integer value; nullopt
/// without NCCL headers.
std::optional<int> nccl_reduce_op(ReduceOp op);

/// NCCL's opaque 128-byte communicator id.
using NcclUniqueId = std::array<char, 128>;

/// A fresh id from ncclGetUniqueId (through load_nccl()). It needs no GPU:
/// rank 0 makes it before creating its communicator. Throws gt::Error when
/// NCCL cannot be loaded or fails.
NcclUniqueId nccl_unique_id();

/// The rendezvous of make_nccl_collectives: publishes this rank's join
/// under "<name>/join/<rank>" (carrying `local_failure`, empty when this
/// rank is ready), waits for every rank's, then rank 0 publishes
/// `make_id()` under "<name>/nccl_id" and every rank returns it. Throws
/// gt::Error with `local_failure` on this rank, gt::Error naming a rank that
/// reported a failure, gt::TimeoutError naming the ranks that did not join
/// (or rank 0 when the id did not come), and what make_id throws.
NcclUniqueId nccl_rendezvous(Store& store, const NcclOptions& options,
                             const std::string& local_failure,
                             const std::function<NcclUniqueId()>& make_id);

}  // namespace gt::worker::collectives
