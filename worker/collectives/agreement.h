#pragma once
// The agreement header that every backend exchanges before a collective moves
// data (Note [agreement header] in agreement.cpp): what each rank is about to
// do, checked the same way on every rank so that all reach the same verdict.
// Shared by the Gloo and NCCL backends; how the headers travel is theirs.

#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <ATen/ATen.h>

#include "common/shape.h"
#include "worker/collectives/collectives.h"

namespace gt::worker::collectives::agreement {

/// Why a rank refused its own arguments. Values travel between ranks: append
/// only.
enum class Rejection : uint8_t {
  None = 0,
  Undefined = 1,
  NotCpu = 2,
  TooManyDims = 3,
  Dtype = 4,
  ReduceOp = 5,
  Dim = 6,
  Root = 7,
  Overlap = 8,
  WrongDevice = 9,  // NCCL: not on the communicator's CUDA device
};

/// "an undefined tensor", "a dim out of range", ... (as a peer reports it).
std::string_view to_string(Rejection r);

/// "GTC" and the layout version in the low byte.
inline constexpr uint32_t kHeaderMagic = 0x47544301;

/// What one rank is about to do. Raw bytes between ranks of the same build:
/// fixed-width fields, no pointers.
struct Header {
  uint32_t magic = kHeaderMagic;
  uint8_t collective = 0;  // Collective
  int8_t dtype = -1;       // at::ScalarType; -1 without a tensor
  uint8_t reduce_op = 0;   // ReduceOp
  uint8_t rejection = 0;   // Rejection
  int32_t arg = 0;         // broadcast: root; all_gather, reduce_scatter: wrapped dim
  int32_t ndim = 0;
  int64_t sizes[kMaxRank] = {};
};
static_assert(std::is_trivially_copyable_v<Header>);
static_assert(sizeof(Header) == 16 + 8 * kMaxRank);

/// This rank's header, and the std::invalid_argument text when it refuses.
struct Local {
  Header header;
  std::string refusal;
};

/// Where a backend's tensors must be, as prepare() checks and words it.
struct Placement {
  at::Device device = at::kCPU;  // compared with the tensor's device
  std::string noun;              // "CPU tensor", "CUDA tensor on cuda:1"
  std::string reason;            // after a refusal: "(the Gloo backend moves host memory)"
  Rejection rejection = Rejection::NotCpu;
};

/// Checks this rank's arguments without communicating; `arg` is the root or
/// the dim. `comm` answers supports() and size(); `where` ends every refusal.
Local prepare(const Collectives& comm, const Placement& placement, Collective c,
              const at::Tensor* t, ReduceOp op, int64_t arg, const std::string& where);

/// Checks every rank's header (rank order, this rank's included) for
/// collective `c`. Throws gt::ProtocolError for a header that is not gt's
/// (the caller must end its communicator), gt::Error naming both sides when
/// ranks disagree, and std::invalid_argument with this rank's own refusal.
void check(Collective c, const std::vector<Header>& all, const Local& local,
           const std::string& where);

/// The pairwise form for send/recv: `theirs` is `peer`'s header for the
/// opposite call. Throws like check(). The tags are the callers' (both sides
/// passed `tag`, or the backend compared them already).
void check_pair(Collective c, int rank, int peer, uint64_t tag, const Local& mine,
                const Header& theirs, const std::string& where);

/// Checks send/recv arguments before anything communicates (without a valid
/// peer there is no one to tell): `peer` is another rank of a communicator
/// of `size` in which this rank is `rank`, and `tag` is at most kMaxTag.
/// Throws std::invalid_argument ending with `where`.
void check_peer(Collective c, int rank, int size, int peer, uint64_t tag, const std::string& where);

/// "float32", or LibTorch's name for dtypes gt does not have.
std::string dtype_name(at::ScalarType t);

/// "float32 (4, 3)", or "undefined tensor".
std::string describe(const at::Tensor& t);

/// The dtype and shape a header carries.
std::string describe(const Header& h);

/// "0, 2, 5".
std::string ranks_str(const std::vector<int>& ranks);

/// Elements in one index of dim `d` of `t`: the product of the other sizes
/// (not numel / size(d), which is 0/0 for a rank holding no rows).
int64_t row_numel(const at::Tensor& t, int64_t d);

}  // namespace gt::worker::collectives::agreement
