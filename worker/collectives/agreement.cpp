#include "worker/collectives/agreement.h"

#include <algorithm>
#include <stdexcept>

#include <ATen/MemoryOverlap.h>

#include <gt/error.h>

#include "common/check.h"
#include "worker/kernels.h"

namespace gt::worker::collectives::agreement {

using gt::detail::cat;

// Note [agreement header]
// The transports trust their caller. Gloo aborts the process when ranks pass
// different element counts to one allreduce (the TCP transport's enforce
// "op.preamble.length <= op.nbytes" fails on its event-loop thread:
// std::terminate); NCCL hangs, or reads past a buffer, or reduces what it
// was given; and both silently reduce garbage when ranks pass float32 and
// int32 of the same byte size. So before moving any data, every collective
// exchanges a fixed-size Header among all ranks (Gloo: every rank sends it
// to every other; NCCL: one small all-gather; a pairwise exchange for
// send/recv), and every rank checks the same facts on the same headers:
// the same collective, arguments accepted on every rank, then dtype, reduce
// op, root or dim, and shapes. All ranks therefore reach the same verdict
// and throw the same error (naming the first rank that differs from rank 0)
// without any data in flight, so the communicator stays usable afterwards.
// A rank whose own arguments are invalid still takes part in the exchange,
// flagged with a Rejection code, so its peers fail at once instead of timing
// out; it throws std::invalid_argument with the details itself.
// The exchange also makes barrier() a header exchange and nothing else: it
// completes only once every rank has sent its header.
// The cost is one small-message latency per collective; the
// [collectives][bench] case measures it for Gloo.

std::string_view to_string(Rejection r) {
  switch (r) {
    case Rejection::None:
      return "nothing";
    case Rejection::Undefined:
      return "an undefined tensor";
    case Rejection::NotCpu:
      return "a tensor that is not on the CPU";
    case Rejection::TooManyDims:
      return "a tensor with too many dims";
    case Rejection::Dtype:
      return "a dtype this collective does not take";
    case Rejection::ReduceOp:
      return "a reduce op its dtype does not take";
    case Rejection::Dim:
      return "a dim out of range";
    case Rejection::Root:
      return "a root outside the communicator";
    case Rejection::Overlap:
      return "a tensor whose elements share memory";
    case Rejection::WrongDevice:
      return "a tensor that is not on its communicator's device";
  }
  return "an unknown rejection";
}

std::string dtype_name(at::ScalarType t) {
  if (auto d = to_dtype(t)) return std::string(gt::to_string(*d));
  return std::string(c10::toString(t));
}

std::string describe(const at::Tensor& t) {
  if (!t.defined()) return "undefined tensor";
  return cat(dtype_name(t.scalar_type()), " ", shape_str(t.sizes()));
}

std::string describe(const Header& h) {
  const int32_t ndim = std::clamp<int32_t>(h.ndim, 0, kMaxRank);
  return cat(dtype_name(static_cast<at::ScalarType>(h.dtype)), " ",
             shape_str(std::span<const int64_t>(h.sizes, static_cast<size_t>(ndim))));
}

std::string ranks_str(const std::vector<int>& ranks) {
  std::string out;
  for (size_t i = 0; i < ranks.size(); ++i) out += cat(i ? ", " : "", ranks[i]);
  return out;
}

int64_t row_numel(const at::Tensor& t, int64_t d) {
  int64_t n = 1;
  for (int64_t i = 0; i < t.dim(); ++i) {
    if (i != d) n *= t.size(i);
  }
  return n;
}

Local prepare(const Collectives& comm, const Placement& placement, Collective c,
              const at::Tensor* t, ReduceOp op, int64_t arg, const std::string& where) {
  Local local;
  Header& h = local.header;
  h.collective = static_cast<uint8_t>(c);
  h.reduce_op = static_cast<uint8_t>(op);
  auto reject = [&](Rejection r, std::string why) {
    if (h.rejection != 0) return;  // the first reason is the one reported
    h.rejection = static_cast<uint8_t>(r);
    local.refusal = cat("[collectives.", to_string(c), "] ", why, " ", where);
  };
  if (t != nullptr) {
    if (!t->defined()) {
      reject(Rejection::Undefined, cat("undefined tensor: expected a defined ", placement.noun));
    } else {
      h.dtype = static_cast<int8_t>(t->scalar_type());
      h.ndim = static_cast<int32_t>(t->dim());
      if (t->dim() > kMaxRank) {
        reject(Rejection::TooManyDims,
               cat("tensor has ", t->dim(), " dims: expected at most ", kMaxRank));
      } else {
        std::copy(t->sizes().begin(), t->sizes().end(), h.sizes);
      }
      if (t->device() != placement.device) {
        reject(placement.rejection, cat("tensor on ", t->device().str(), ": expected a ",
                                        placement.noun, " ", placement.reason));
      }
      if (!comm.supports(c, t->scalar_type(), ReduceOp::Sum)) {
        reject(Rejection::Dtype,
               cat("dtype ", dtype_name(t->scalar_type()), " not supported: expected ",
                   c == Collective::AllReduce || c == Collective::ReduceScatter
                       ? "float32, float64, float16, bfloat16, int32 or int64"
                       : "float32, float64, float16, bfloat16, int32, int64 or bool"));
      } else if (!comm.supports(c, t->scalar_type(), op)) {
        reject(Rejection::ReduceOp,
               cat("reduce op ", to_string(op), " not supported for ", dtype_name(t->scalar_type()),
                   ": expected a floating dtype (reduce with sum and divide instead)"));
      }
    }
  }
  if (c == Collective::Broadcast) {
    h.arg = static_cast<int32_t>(arg);
    if (arg < 0 || arg >= comm.size()) {
      reject(Rejection::Root,
             cat("root ", arg, " out of range: expected a rank in [0, ", comm.size(), ")"));
    }
  }
  if ((c == Collective::AllGather || c == Collective::ReduceScatter) && t && t->defined()) {
    const int64_t ndim = t->dim();
    if (ndim == 0) {
      reject(Rejection::Dim, cat("0-dim tensor: expected at least one dim to ",
                                 c == Collective::AllGather ? "gather along" : "scatter along"));
    } else if (arg < -ndim || arg >= ndim) {
      reject(Rejection::Dim,
             cat("dim ", arg, " out of range: expected a dim in [", -ndim, ", ", ndim, ")"));
    } else {
      h.arg = static_cast<int32_t>(arg < 0 ? arg + ndim : arg);
    }
  }
  const bool in_place =
      c == Collective::AllReduce || c == Collective::Broadcast || c == Collective::Recv;
  if (in_place && t && t->defined() && at::has_internal_overlap(*t) == at::MemOverlap::Yes) {
    reject(Rejection::Overlap,
           "tensor elements share memory (an expanded view): expected a tensor that owns "
           "each element, for the result is written into it");
  }
  return local;
}

void check(Collective c, const std::vector<Header>& all, const Local& local,
           const std::string& where) {
  const std::string op = cat("[collectives.", to_string(c), "] ");
  for (size_t r = 0; r < all.size(); ++r) {
    if (all[r].magic != kHeaderMagic) {
      throw ProtocolError(cat(op, "rank ", r, " sent a header that is not gt's (magic ",
                              all[r].magic, ", expected ", kHeaderMagic,
                              "): a different gt build? ", where));
    }
  }
  auto first_differing = [&](auto&& same) -> int {
    for (size_t r = 1; r < all.size(); ++r) {
      if (!same(all[0], all[r])) return static_cast<int>(r);
    }
    return -1;
  };
  if (int r = first_differing(
          [](const Header& a, const Header& b) { return a.collective == b.collective; });
      r >= 0) {
    throw Error(cat(op, "ranks called different collectives: rank 0 called ",
                    to_string(static_cast<Collective>(all[0].collective)), ", rank ", r, " called ",
                    to_string(static_cast<Collective>(all[size_t(r)].collective)),
                    "; expected every rank to call the same collectives in the same order ",
                    where));
  }
  if (local.header.rejection != 0) throw std::invalid_argument(local.refusal);
  for (size_t r = 0; r < all.size(); ++r) {
    if (all[r].rejection != 0) {
      throw Error(cat(op, "rank ", r, " rejected its arguments (it passed ",
                      to_string(static_cast<Rejection>(all[r].rejection)),
                      ") and threw std::invalid_argument with the details ", where));
    }
  }
  if (c == Collective::Barrier) return;

  if (int r = first_differing([](const Header& a, const Header& b) { return a.dtype == b.dtype; });
      r >= 0) {
    throw Error(cat(op, "dtypes differ across ranks: rank 0 has ", describe(all[0]), ", rank ", r,
                    " has ", describe(all[size_t(r)]), "; expected the same dtype on every rank ",
                    where));
  }
  if (c == Collective::AllReduce || c == Collective::ReduceScatter) {
    if (int r = first_differing(
            [](const Header& a, const Header& b) { return a.reduce_op == b.reduce_op; });
        r >= 0) {
      throw Error(cat(op, "reduce ops differ across ranks: rank 0 passed ",
                      to_string(static_cast<ReduceOp>(all[0].reduce_op)), ", rank ", r, " passed ",
                      to_string(static_cast<ReduceOp>(all[size_t(r)].reduce_op)), " ", where));
    }
  }
  if (c != Collective::AllReduce) {
    if (int r = first_differing([](const Header& a, const Header& b) { return a.arg == b.arg; });
        r >= 0) {
      throw Error(cat(op, c == Collective::Broadcast ? "roots" : "dims",
                      " differ across ranks: rank 0 passed ", all[0].arg, ", rank ", r, " passed ",
                      all[size_t(r)].arg, " ", where));
    }
  }
  const int64_t gathered = c == Collective::AllGather ? all[0].arg : -1;
  if (int r = first_differing([&](const Header& a, const Header& b) {
        if (a.ndim != b.ndim) return false;
        for (int32_t i = 0; i < a.ndim; ++i) {
          if (i != gathered && a.sizes[i] != b.sizes[i]) return false;
        }
        return true;
      });
      r >= 0) {
    throw Error(cat(op, "shapes differ across ranks: rank 0 has ", describe(all[0]), ", rank ", r,
                    " has ", describe(all[size_t(r)]), "; expected ",
                    gathered >= 0 ? cat("the same sizes except along dim ", gathered)
                                  : std::string("the same shape"),
                    " on every rank ", where));
  }
}

void check_pair(Collective c, int rank, int peer, uint64_t tag, const Local& mine,
                const Header& theirs, const std::string& where) {
  const std::string op = cat("[collectives.", to_string(c), "] ");
  if (theirs.magic != kHeaderMagic) {
    throw ProtocolError(cat(op, "rank ", peer, " sent a header that is not gt's (magic ",
                            theirs.magic, ", expected ", kHeaderMagic, "): a different gt build? ",
                            where));
  }
  const auto expected = c == Collective::Send ? Collective::Recv : Collective::Send;
  if (theirs.collective != static_cast<uint8_t>(expected)) {
    throw Error(cat(op, "rank ", peer, " called ",
                    to_string(static_cast<Collective>(theirs.collective)), " with tag ", tag,
                    ": expected ", to_string(expected), " ", where));
  }
  if (mine.header.rejection != 0) throw std::invalid_argument(mine.refusal);
  if (theirs.rejection != 0) {
    throw Error(cat(op, "rank ", peer, " rejected its arguments (it passed ",
                    to_string(static_cast<Rejection>(theirs.rejection)),
                    ") and threw std::invalid_argument with the details ", where));
  }
  const Header& h = mine.header;
  const bool same =
      h.dtype == theirs.dtype && h.ndim == theirs.ndim &&
      std::equal(h.sizes, h.sizes + std::clamp<int32_t>(h.ndim, 0, kMaxRank), theirs.sizes);
  if (!same) {
    const Header& sender = c == Collective::Send ? h : theirs;
    const Header& receiver = c == Collective::Send ? theirs : h;
    throw Error(cat(op, "tensors differ: the sender (rank ", c == Collective::Send ? rank : peer,
                    ") has ", describe(sender), ", the receiver (rank ",
                    c == Collective::Send ? peer : rank, ") has ", describe(receiver),
                    "; expected the same dtype and shape (tag ", tag, ") ", where));
  }
}

void check_peer(Collective c, int rank, int size, int peer, uint64_t tag, const std::string& where) {
  GT_CHECK(peer >= 0 && peer < size && peer != rank, "[collectives.", to_string(c), "] peer ", peer,
           " invalid: expected a rank in [0, ", size, ") other than this rank ", where);
  GT_CHECK(tag <= kMaxTag, "[collectives.", to_string(c), "] tag ", tag,
           " too large: expected a tag below 2^56 ", where);
}

}  // namespace gt::worker::collectives::agreement
