#pragma once
// Worker-to-worker collectives: the backend-neutral interface. A Collectives
// object is one communicator, a fixed group of `size` workers in which this
// worker is `rank`. Bulk data moves directly between the workers; the
// dispatcher only serves the rendezvous (worker/collectives/store.h).
// Backends: Gloo over TCP for CPU tensors (gloo_collectives.h), NCCL for
// the tensors of one CUDA device (nccl_collectives.h).

#include <cstdint>
#include <string_view>
#include <vector>

#include <ATen/ATen.h>

namespace gt::worker::collectives {

/// How all_reduce and reduce_scatter combine the ranks' values. Values reach
/// logs: append only.
enum class ReduceOp : uint8_t {
  Sum = 0,
  Avg = 1,  // Sum divided by size; floating dtypes only
  Max = 2,  // NaN wins, as in torch.maximum
  Min = 3,  // NaN wins, as in torch.minimum
  Product = 4,
};
inline constexpr int kNumReduceOps = 5;

/// "sum", "avg", "max", "min", "product".
std::string_view to_string(ReduceOp op);

/// The operations of a communicator. Values reach logs and the agreement
/// header (Note [agreement header] in agreement.cpp): append only.
enum class Collective : uint8_t {
  AllReduce = 1,
  AllGather = 2,
  ReduceScatter = 3,
  Broadcast = 4,
  Send = 5,
  Recv = 6,
  Barrier = 7,
};

/// "all_reduce", "all_gather", ...
std::string_view to_string(Collective c);

/// The largest tag send and recv take (tags are below 2^56).
inline constexpr uint64_t kMaxTag = (uint64_t{1} << 56) - 1;

/// One communicator. Every rank calls the same collectives in the same order
/// (send/recv excepted: those are matched per pair and tag).
/// Backends: make_gloo_collectives (gloo_collectives.h), make_nccl_collectives
/// (nccl_collectives.h).
///
/// Tensors: on the backend's device (Gloo: CPU; NCCL: the communicator's
/// CUDA device), any layout (non-contiguous ones are copied to a contiguous
/// buffer and written back for in-place calls). Data movement (all_gather,
/// broadcast, send/recv) takes gt's dtypes (float32/64, float16, bfloat16,
/// int32/64, bool); reductions take them without bool, and Avg takes floating
/// dtypes only; supports() answers without communicating.
///
/// Errors: arguments that are wrong on this rank throw std::invalid_argument;
/// ranks that disagree (dtype, shape, root, dim, op, or one rank calling a
/// different collective) make every rank throw gt::Error naming both sides,
/// before any data moves (each collective starts with a small header
/// exchange), and the communicator stays usable.
/// A peer that does not answer within the timeout gives gt::TimeoutError, a
/// broken connection gt::TransportError; after either the communicator is
/// unusable (later calls throw TransportError naming the first failure) and
/// must be recreated. Messages name the collective, the communicator, this
/// rank and size, and the tensor's dtype and shape.
///
/// Not thread-safe: one thread drives a communicator (the worker's executor
/// thread). Pinned behind a unique_ptr.
class Collectives {
 public:
  virtual ~Collectives() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;

  /// Whether `c` accepts tensors of `dtype` (with `op` for the reductions).
  virtual bool supports(Collective c, at::ScalarType dtype, ReduceOp op = ReduceOp::Sum) const = 0;

  /// Reduces `t` over all ranks in place; every rank ends with the result.
  virtual void all_reduce(at::Tensor& t, ReduceOp op) = 0;

  /// Concatenation of every rank's `t` along `dim`, in rank order. Sizes along
  /// `dim` may differ between ranks (zero included); the other dims and the
  /// dtype must agree. Negative `dim` counts from the end.
  virtual at::Tensor all_gather(const at::Tensor& t, int64_t dim) = 0;

  /// Reduces `t` (same shape on every rank) over all ranks and returns this
  /// rank's part along `dim`, split by gt::split_sizes(t.size(dim), size()) (common/shape.h).
  virtual at::Tensor reduce_scatter(const at::Tensor& t, int64_t dim, ReduceOp op) = 0;

  /// Copies `root`'s `t` into `t` on every rank; shapes and dtypes must agree.
  virtual void broadcast(at::Tensor& t, int root) = 0;

  /// Sends `t` to `peer`, matched by the recv on `peer` with the same tag
  /// (below 2^56). A rendezvous: blocks until `peer` has posted that recv and
  /// the data is written, so pair the calls up (in a ring, even ranks send
  /// first and odd ranks receive first). NCCL matches a pair's calls in
  /// order and fails both sides when their tags differ.
  virtual void send(const at::Tensor& t, int peer, uint64_t tag) = 0;

  /// Receives into `t` (same dtype and shape as the sender's) from `peer`.
  virtual void recv(at::Tensor& t, int peer, uint64_t tag) = 0;

  /// Returns once every rank has called barrier.
  virtual void barrier() = 0;
};

}  // namespace gt::worker::collectives
