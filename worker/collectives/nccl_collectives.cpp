#include "worker/collectives/nccl_collectives.h"

#include <algorithm>
#include <cstring>
#include <exception>
#include <limits>
#include <stdexcept>
#include <type_traits>
#include <utility>

#include <gt/error.h>

#include "common/check.h"
#include "common/shape.h"
#include "worker/collectives/agreement.h"
#include "worker/collectives/nccl_library.h"
#include "worker/kernels.h"

namespace gt::worker::collectives {
namespace {

using gt::detail::cat;
using Clock = std::chrono::steady_clock;

/// "(communicator 'gt/comm/0,1', rank 0 of 2, cuda:0)"
std::string who(const NcclOptions& o) {
  return cat("(communicator '", o.name, "', rank ", o.rank, " of ", o.size, ", cuda:", o.device,
             ")");
}

void check_options(const NcclOptions& o) {
  GT_CHECK(o.size >= 1, "[collectives.nccl_connect] size ", o.size,
           " invalid: expected at least 1 rank ", who(o));
  GT_CHECK(o.rank >= 0 && o.rank < o.size, "[collectives.nccl_connect] rank ", o.rank,
           " out of range: expected a rank in [0, ", o.size, ") ", who(o));
  GT_CHECK(!o.name.empty(),
           "[collectives.nccl_connect] empty communicator name: expected a name shared by every "
           "rank ",
           who(o));
  GT_CHECK(o.device >= 0, "[collectives.nccl_connect] device ", o.device,
           " invalid: expected a CUDA device index >= 0 ", who(o));
  GT_CHECK(o.timeout.count() > 0, "[collectives.nccl_connect] timeout ", o.timeout.count(),
           " ms: expected a positive timeout ", who(o));
}

// The id key's value: a marker byte, then the id or rank 0's failure.
constexpr char kIdMarker = 'I';
constexpr char kFailureMarker = 'F';

std::vector<char> marked(char marker, const char* data, size_t size) {
  std::vector<char> value(1 + size);
  value[0] = marker;
  std::memcpy(value.data() + 1, data, size);
  return value;
}

}  // namespace

NcclUniqueId nccl_rendezvous(Store& store, const NcclOptions& o, const std::string& local_failure,
                             const std::function<NcclUniqueId()>& make_id) {
  // Every rank joins first, carrying its own failure if it has one (no
  // library, no device): its peers then fail at once naming it, rather than
  // wait for the timeout inside NCCL's bootstrap. Rank 0 makes the id only
  // once everyone is ready, so a group that fails leaves no NCCL bootstrap
  // root behind.
  const std::string prefix = o.name + "/";
  std::vector<std::string> joins;
  for (int r = 0; r < o.size; ++r) joins.push_back(cat(prefix, "join/", r));
  store.set(joins[static_cast<size_t>(o.rank)],
            std::vector<char>(local_failure.begin(), local_failure.end()));
  if (!local_failure.empty()) throw Error(local_failure);

  const std::vector<std::string> missing = store.wait(joins, o.timeout);
  if (!missing.empty()) {
    std::vector<int> ranks;
    for (const std::string& key : missing) {
      ranks.push_back(static_cast<int>(std::find(joins.begin(), joins.end(), key) - joins.begin()));
    }
    throw TimeoutError(cat("[collectives.nccl_connect] rank", ranks.size() > 1 ? "s " : " ",
                           agreement::ranks_str(ranks), " did not join within ", o.timeout.count(),
                           " ms ", who(o),
                           "; expected every rank to create the communicator with the same name "
                           "and size"));
  }
  for (int r = 0; r < o.size; ++r) {
    if (r == o.rank) continue;
    const auto value = store.get(joins[static_cast<size_t>(r)], o.timeout);
    if (value && !value->empty()) {
      throw Error(cat("[collectives.nccl_connect] rank ", r, " could not create its communicator ",
                      who(o), ": ", std::string(value->begin(), value->end())));
    }
  }

  const std::string id_key = prefix + "nccl_id";
  if (o.rank == 0) {
    NcclUniqueId id;
    try {
      id = make_id();
    } catch (const std::exception& e) {
      const std::string what = e.what();
      store.set(id_key, marked(kFailureMarker, what.data(), what.size()));
      throw;
    }
    store.set(id_key, marked(kIdMarker, id.data(), id.size()));
    return id;
  }
  const auto value = store.get(id_key, o.timeout);
  if (!value) {
    throw TimeoutError(
        cat("[collectives.nccl_connect] rank 0 did not publish NCCL's unique id "
            "within ",
            o.timeout.count(), " ms ", who(o), " (died after joining?)"));
  }
  if (value->size() == 1 + sizeof(NcclUniqueId) && value->front() == kIdMarker) {
    NcclUniqueId id;
    std::copy(value->begin() + 1, value->end(), id.begin());
    return id;
  }
  if (!value->empty() && value->front() == kFailureMarker) {
    throw Error(cat("[collectives.nccl_connect] rank 0 could not make NCCL's unique id ", who(o),
                    ": ", std::string(value->begin() + 1, value->end())));
  }
  throw ProtocolError(cat("[collectives.nccl_connect] '", id_key, "' holds ", value->size(),
                          " bytes that are not an NCCL id ", who(o),
                          ": a different gt build, or a name used twice?"));
}

#if GT_NCCL_BACKEND

namespace {

using agreement::Header;
using agreement::Local;
using agreement::Rejection;

// Note [NCCL streams]
// NCCL runs on stream 0, the legacy default stream of the communicator's
// device. LibTorch's default stream is that same stream (its default
// CUDAStream is the null stream), and the executor runs everything on it
// today, so NCCL's kernels start after the kernels that produced the inputs
// and finish before the ones that read the results, with no events. Every
// collective then waits for the stream to drain (Note [NCCL timeouts]), so
// it is complete when the call returns, like a Gloo collective: the
// executor may reuse or free its tensors at once. The header buffers are
// copied with LibTorch on its current stream, the same stream 0. When
// sessions get streams of their own (the GPU issue), the executor will pass
// the session's stream, and these calls and the waits take it instead.
constexpr cudaStream_t kStream = nullptr;

// Note [NCCL timeouts]
// NCCL's kernels wait for their peers without limit, and with a blocking
// communicator some host calls (creation, the first connection between two
// ranks) can too. So communicators are nonblocking (ncclConfig_t::blocking
// = 0): every call returns at once, possibly with ncclInProgress, and
// wait() polls ncclCommGetAsyncError until the work is enqueued, then
// cudaStreamQuery until the stream has drained. Both polls end at the
// communicator's timeout: the communicator is then aborted with
// ncclCommAbort (which also ends its kernels) and the call throws
// gt::TimeoutError. An asynchronous NCCL error (a peer's connection closed:
// ncclRemoteError, ncclSystemError) ends it the same way with
// gt::TransportError. After either, the communicator refuses every further
// call (failure_), like a Gloo one. A rank that fails leaves its peers'
// kernels waiting: they time out in turn, or fail sooner when NCCL's
// network transport sees the connection close.

/// Elements of NCCL's header all-gather per rank (Note [agreement header]).
constexpr size_t kHeaderBytes = sizeof(Header);

/// The send/recv header: NCCL has no tags, so the tag travels with it
/// (Note [NCCL send and recv]).
struct PairHeader {
  Header header;
  uint64_t tag = 0;
};
static_assert(std::is_trivially_copyable_v<PairHeader>);

// Note [NCCL send and recv]
// NCCL matches a pair's sends and recvs in the order they are called, with
// no tags. gt's tags are still checked: the pair swaps headers (header and
// tag, one ncclSend and one ncclRecv in a group) before the data, so calls
// whose tags, kinds, dtypes or shapes differ fail on both sides with
// gt::Error and nothing in flight, where Gloo would match by tag. So send
// and recv on one pair must come in the same order on both ranks (which
// Gloo's rendezvous sends need too).

class NcclCollectives final : public Collectives {
 public:
  NcclCollectives(const NcclApi& api, ncclComm_t comm, NcclOptions options)
      : api_(api),
        comm_(comm),
        options_(std::move(options)),
        placement_{at::Device(at::kCUDA, static_cast<at::DeviceIndex>(options_.device)),
                   cat("CUDA tensor on cuda:", options_.device),
                   "(the NCCL backend moves the memory of its communicator's device)",
                   Rejection::WrongDevice} {}

  ~NcclCollectives() override {
    // Abort, never ncclCommDestroy: NCCL documents destroy as an intra-node
    // collective that waits for the node's other ranks, so dropping one
    // communicator (a broken group, a worker that registers again) would
    // hang while its peers keep theirs. Every collective completed before
    // its call returned, so there is nothing to flush.
    CurrentDevice current(api_, options_.device);
    abort_comm();
  }

  NcclCollectives(const NcclCollectives&) = delete;
  NcclCollectives& operator=(const NcclCollectives&) = delete;

  int rank() const override { return options_.rank; }
  int size() const override { return options_.size; }

  bool supports(Collective c, at::ScalarType dtype, ReduceOp op) const override {
    if (!to_dtype(dtype) || !nccl_data_type(dtype)) return false;
    if (c != Collective::AllReduce && c != Collective::ReduceScatter) return true;
    if (static_cast<int>(op) >= kNumReduceOps) return false;
    if (dtype == at::kBool) return false;
    return op != ReduceOp::Avg || at::isFloatingType(dtype);
  }

  void all_reduce(at::Tensor& t, ReduceOp op) override {
    guarded(Collective::AllReduce, &t, [&] {
      agree(Collective::AllReduce, &t, prepare(Collective::AllReduce, &t, op, 0));
      if (t.numel() == 0) return;
      // Size 1 goes through NCCL too: one GPU then tests the whole path.
      at::Tensor buf = t.is_contiguous() ? t : t.contiguous();
      const at::Tensor nan = nan_mask(buf, op);
      launch(Collective::AllReduce, &t, [&](const Call& call) {
        call("ncclAllReduce", api_.all_reduce(buf.data_ptr(), buf.data_ptr(), count(buf),
                                              data_type(buf), reduce_op(op), comm_, kStream));
        if (nan.defined()) {
          call("ncclAllReduce", api_.all_reduce(nan.data_ptr(), nan.data_ptr(), count(nan),
                                                ncclUint8, ncclMax, comm_, kStream));
        }
      });
      wait(Collective::AllReduce, &t, "waiting for the other ranks");
      if (nan.defined()) {
        buf.masked_fill_(nan.to(at::kBool), std::numeric_limits<double>::quiet_NaN());
      }
      if (!buf.is_same(t)) t.copy_(buf);
    });
  }

  at::Tensor all_gather(const at::Tensor& t, int64_t dim) override {
    return guarded(Collective::AllGather, &t, [&] {
      const Local local = prepare(Collective::AllGather, &t, ReduceOp::Sum, dim);
      const std::vector<Header> all = agree(Collective::AllGather, &t, local);
      const int64_t d = local.header.arg;
      // Gathered along a leading dim, each rank's rows are one contiguous
      // block of the output, in rank order; the dim moves back at the end.
      const at::Tensor src = t.movedim(d, 0).contiguous();
      std::vector<size_t> counts;
      int64_t total = 0;
      const auto row = static_cast<size_t>(agreement::row_numel(src, 0));
      for (const Header& h : all) {
        counts.push_back(static_cast<size_t>(h.sizes[d]) * row);
        total += h.sizes[d];
      }
      std::vector<int64_t> out_shape = src.sizes().vec();
      out_shape[0] = total;
      at::Tensor out = at::empty(out_shape, src.options());
      if (out.numel() > 0) {
        const bool even =
            std::all_of(counts.begin(), counts.end(), [&](size_t c) { return c == counts[0]; });
        auto* base = static_cast<char*>(out.data_ptr());
        const auto elem = static_cast<size_t>(out.element_size());
        launch(Collective::AllGather, &t, [&](const Call& call) {
          if (even) {
            call("ncclAllGather",
                 api_.all_gather(src.data_ptr(), base, counts[0], data_type(src), comm_, kStream));
            return;
          }
          // NCCL's all-gather takes one count for every rank: uneven
          // blocks go as one broadcast per rank, grouped into one launch,
          // each straight into its place (no padding, no second copy).
          size_t offset = 0;
          for (int r = 0; r < size(); ++r) {
            const size_t n = counts[static_cast<size_t>(r)];
            if (n > 0) {
              void* dst = base + offset * elem;
              const void* from = r == rank() ? src.data_ptr() : dst;
              call("ncclBroadcast",
                   api_.broadcast(from, dst, n, data_type(src), r, comm_, kStream));
            }
            offset += n;
          }
        });
        wait(Collective::AllGather, &t, "waiting for the other ranks");
      }
      return d == 0 ? out : out.movedim(0, d).contiguous();
    });
  }

  at::Tensor reduce_scatter(const at::Tensor& t, int64_t dim, ReduceOp op) override {
    return guarded(Collective::ReduceScatter, &t, [&] {
      const Local local = prepare(Collective::ReduceScatter, &t, op, dim);
      agree(Collective::ReduceScatter, &t, local);
      const int64_t d = local.header.arg;
      const std::vector<int64_t> rows = split_sizes(t.size(d), size());
      const int64_t most = rows[0];  // split_sizes gives the first ranks the extra row
      const at::Tensor src = t.movedim(d, 0).contiguous();
      std::vector<int64_t> shape = src.sizes().vec();
      std::vector<int64_t> rest(shape.begin() + 1, shape.end());

      // NCCL's reduce-scatter gives every rank the same count. With uneven
      // parts, each part is padded to `most` rows: the first `extra` parts
      // have them all, the others get one zero row that is reduced and then
      // dropped.
      at::Tensor send = src;
      const int64_t extra = t.size(d) % size();
      if (extra != 0) {
        std::vector<int64_t> blocks = {size(), most};
        blocks.insert(blocks.end(), rest.begin(), rest.end());
        send = at::empty(blocks, src.options());
        auto full = [&](int64_t n, int64_t rows_each) {
          std::vector<int64_t> v = {n, rows_each};
          v.insert(v.end(), rest.begin(), rest.end());
          return v;
        };
        send.narrow(0, 0, extra).copy_(src.narrow(0, 0, extra * most).view(full(extra, most)));
        send.narrow(0, extra, size() - extra)
            .narrow(1, 0, most - 1)
            .copy_(src.narrow(0, extra * most, (size() - extra) * (most - 1))
                       .view(full(size() - extra, most - 1)));
        send.narrow(0, extra, size() - extra).narrow(1, most - 1, 1).zero_();
      }
      shape[0] = most;
      at::Tensor recv = at::empty(shape, src.options());
      const at::Tensor nan = nan_mask(send, op);
      const at::Tensor nan_recv = nan.defined() ? at::empty(shape, nan.options()) : at::Tensor();
      const auto n = static_cast<size_t>(recv.numel());
      if (n > 0) {
        launch(Collective::ReduceScatter, &t, [&](const Call& call) {
          call("ncclReduceScatter",
               api_.reduce_scatter(send.data_ptr(), recv.data_ptr(), n, data_type(src),
                                   reduce_op(op), comm_, kStream));
          if (nan.defined()) {
            call("ncclReduceScatter", api_.reduce_scatter(nan.data_ptr(), nan_recv.data_ptr(), n,
                                                          ncclUint8, ncclMax, comm_, kStream));
          }
        });
        wait(Collective::ReduceScatter, &t, "waiting for the other ranks");
        if (nan.defined()) {
          recv.masked_fill_(nan_recv.to(at::kBool), std::numeric_limits<double>::quiet_NaN());
        }
      }
      const int64_t mine = rows[static_cast<size_t>(rank())];
      at::Tensor part = mine == most ? recv : recv.narrow(0, 0, mine).clone();
      return d == 0 ? part : part.movedim(0, d).contiguous();
    });
  }

  void broadcast(at::Tensor& t, int root) override {
    guarded(Collective::Broadcast, &t, [&] {
      agree(Collective::Broadcast, &t, prepare(Collective::Broadcast, &t, ReduceOp::Sum, root));
      if (t.numel() == 0) return;
      at::Tensor buf = t.is_contiguous() ? t : t.contiguous();
      launch(Collective::Broadcast, &t, [&](const Call& call) {
        call("ncclBroadcast", api_.broadcast(buf.data_ptr(), buf.data_ptr(), count(buf),
                                             data_type(buf), root, comm_, kStream));
      });
      wait(Collective::Broadcast, &t, cat("waiting for root ", root, " and the other ranks"));
      if (!buf.is_same(t)) t.copy_(buf);
    });
  }

  void send(const at::Tensor& t, int peer, uint64_t tag) override {
    agreement::check_peer(Collective::Send, rank(), size(), peer, tag, where(&t));
    guarded(Collective::Send, &t, [&] {
      exchange_pair(Collective::Send, t, peer, tag);
      if (t.numel() == 0) return;
      const at::Tensor buf = t.contiguous();
      launch(Collective::Send, &t, [&](const Call& call) {
        call("ncclSend",
             api_.send(buf.data_ptr(), count(buf), data_type(buf), peer, comm_, kStream));
      });
      wait(Collective::Send, &t, cat("waiting for rank ", peer, " to receive (tag ", tag, ")"));
    });
  }

  void recv(at::Tensor& t, int peer, uint64_t tag) override {
    agreement::check_peer(Collective::Recv, rank(), size(), peer, tag, where(&t));
    guarded(Collective::Recv, &t, [&] {
      exchange_pair(Collective::Recv, t, peer, tag);
      if (t.numel() == 0) return;
      at::Tensor buf = t.is_contiguous() ? t : at::empty(t.sizes(), t.options());
      launch(Collective::Recv, &t, [&](const Call& call) {
        call("ncclRecv",
             api_.recv(buf.data_ptr(), count(buf), data_type(buf), peer, comm_, kStream));
      });
      wait(Collective::Recv, &t, cat("waiting for rank ", peer, " to send (tag ", tag, ")"));
      if (!buf.is_same(t)) t.copy_(buf);
    });
  }

  void barrier() override {
    // The header all-gather completes only once every rank has sent its
    // header, which is all a barrier needs.
    guarded(Collective::Barrier, nullptr, [&] {
      agree(Collective::Barrier, nullptr, prepare(Collective::Barrier, nullptr, ReduceOp::Sum, 0));
    });
  }

 private:
  /// Records a failed NCCL call inside launch(): its name and result.
  using Call = std::function<void(const char*, ncclResult_t)>;

  /// "(communicator 'dp', rank 0 of 2, cuda:0, tensor float32 (4, 3))"
  std::string where(const at::Tensor* t) const {
    return cat("(communicator '", options_.name, "', rank ", rank(), " of ", size(),
               ", cuda:", options_.device,
               t ? cat(", tensor ", agreement::describe(*t)) : std::string(), ")");
  }

  static size_t count(const at::Tensor& t) { return static_cast<size_t>(t.numel()); }

  static ncclDataType_t data_type(const at::Tensor& t) {
    const auto type = nccl_data_type(t.scalar_type());
    GT_ASSERT(type.has_value(), "[collectives.nccl] no NCCL type for ", t.scalar_type());
    return static_cast<ncclDataType_t>(*type);
  }

  static ncclRedOp_t reduce_op(ReduceOp op) {
    const auto nccl = nccl_reduce_op(op);
    GT_ASSERT(nccl.has_value(), "[collectives.nccl] no NCCL reduce op for ", to_string(op));
    return static_cast<ncclRedOp_t>(*nccl);
  }

  /// Note [NaN in max and min]: NCCL reduces floats with fmax/fmin, which
  /// return the number when one side is NaN; gt's max and min let NaN win,
  /// as torch.maximum does. So a floating max or min also reduces a mask of
  /// the NaNs (uint8, max: any rank's NaN) in the same launch, and the
  /// result gets NaN where the mask is set. Undefined when not needed.
  static at::Tensor nan_mask(const at::Tensor& t, ReduceOp op) {
    if ((op != ReduceOp::Max && op != ReduceOp::Min) || !at::isFloatingType(t.scalar_type())) {
      return {};
    }
    return t.isnan().to(at::kByte);
  }

  /// Runs `body`, turning failures into gt errors (Note [NCCL timeouts]).
  /// Agreement errors and bad arguments leave the communicator usable;
  /// everything else has ended it (fail()) or ends it here.
  template <typename Body>
  std::invoke_result_t<Body&> guarded(Collective c, const at::Tensor* t, Body&& body) {
    if (!failure_.empty()) {
      throw TransportError(cat("[collectives.", to_string(c),
                               "] communicator unusable after an earlier failure; create a new "
                               "one ",
                               where(t), ": the failure was: ", failure_));
    }
    CurrentDevice current(api_, options_.device);
    if (current.error() != cudaSuccess) {
      fail<Error>(
          c, t,
          cat("cudaSetDevice(", options_.device, ") failed: ", cuda_error(api_, current.error())));
    }
    try {
      return body();
    } catch (const std::invalid_argument&) {
      throw;
    } catch (const Error&) {
      throw;  // worded already; fail() ended the communicator where it had to
    } catch (const std::exception& e) {
      // c10::Error (out of memory, a CUDA error LibTorch saw): this rank
      // stops mid-collective while its peers go on, so the communicator is
      // out of step from here.
      const std::string what = e.what();
      fail<Error>(c, t, cat("failed: ", what.substr(0, what.find('\n'))));
    }
  }

  /// Ends the communicator: records `what` (worded as "[collectives.<c>]
  /// what (communicator ...)") as its failure, aborts it, and throws E.
  template <typename E>
  [[noreturn]] void fail(Collective c, const at::Tensor* t, const std::string& what) {
    end<E>(cat("[collectives.", to_string(c), "] ", what, " ", where(t)));
  }

  /// fail() with a message worded already.
  template <typename E>
  [[noreturn]] void end(std::string message) {
    failure_ = std::move(message);
    abort_comm();
    throw E(failure_);
  }

  void abort_comm() {
    if (comm_ == nullptr) return;
    (void)api_.comm_abort(comm_);
    comm_ = nullptr;
  }

  /// Issues the NCCL calls of `body` as one group, so that they start as
  /// one launch and no call waits for another's peers.
  template <typename Body>
  void launch(Collective c, const at::Tensor* t, Body&& body) {
    std::string failed;  // the first call that failed
    const Call call = [&](const char* name, ncclResult_t r) {
      if (r != ncclSuccess && r != ncclInProgress && failed.empty()) {
        failed = cat(name, " failed: ", nccl_error(api_, r, comm_));
      }
    };
    call("ncclGroupStart", api_.group_start());
    body(call);
    call("ncclGroupEnd", api_.group_end());
    if (!failed.empty()) fail<Error>(c, t, failed);
  }

  /// Waits until what launch() issued has been enqueued and has completed
  /// on the stream, up to the timeout (Note [NCCL timeouts]).
  void wait(Collective c, const at::Tensor* t, const std::string& waiting) {
    const auto start = Clock::now();
    for (;;) {
      ncclResult_t state = ncclSuccess;
      const ncclResult_t r = api_.comm_get_async_error(comm_, &state);
      if (r != ncclSuccess) state = r;
      if (state != ncclSuccess && state != ncclInProgress) {
        const std::string what =
            cat("NCCL failed while ", waiting, ": ", nccl_error(api_, state, comm_));
        if (is_transport_failure(state)) fail<TransportError>(c, t, what);
        fail<Error>(c, t, what);
      }
      if (state == ncclSuccess) {  // enqueued: now the stream
        const cudaError_t q = api_.cuda_stream_query(kStream);
        if (q == cudaSuccess) return;
        if (q != cudaErrorNotReady) {
          fail<Error>(c, t, cat("CUDA failed while ", waiting, ": ", cuda_error(api_, q)));
        }
      }
      const auto waited = Clock::now() - start;
      if (waited >= options_.timeout) {
        fail<TimeoutError>(c, t,
                           cat("timed out after ", options_.timeout.count(), " ms ", waiting,
                               " (a rank that never called this collective, or one that "
                               "died); the communicator was aborted"));
      }
      poll_pause(waited);
    }
  }

  Local prepare(Collective c, const at::Tensor* t, ReduceOp op, int64_t arg) const {
    return agreement::prepare(*this, placement_, c, t, op, arg, where(t));
  }

  /// All-gathers every rank's header on the device and checks that they
  /// agree (Note [agreement header]); returns them in rank order.
  std::vector<Header> agree(Collective c, const at::Tensor* t, const Local& local) {
    const size_t all_bytes = kHeaderBytes * static_cast<size_t>(size());
    if (!headers_device_.defined()) {
      headers_host_ = at::empty({static_cast<int64_t>(all_bytes)},
                                at::TensorOptions().dtype(at::kByte).pinned_memory(true));
      headers_device_ = at::empty({static_cast<int64_t>(all_bytes)},
                                  at::TensorOptions().dtype(at::kByte).device(placement_.device));
    }
    const auto offset = static_cast<int64_t>(kHeaderBytes) * rank();
    const auto bytes = static_cast<int64_t>(kHeaderBytes);
    std::memcpy(headers_host_.data_ptr<uint8_t>() + offset, &local.header, kHeaderBytes);
    at::Tensor mine = headers_device_.narrow(0, offset, bytes);
    mine.copy_(headers_host_.narrow(0, offset, bytes), /*non_blocking=*/true);
    launch(c, t, [&](const Call& call) {  // in place: sendbuff is this rank's slot
      call("ncclAllGather", api_.all_gather(mine.data_ptr(), headers_device_.data_ptr(),
                                            kHeaderBytes, ncclUint8, comm_, kStream));
    });
    wait(c, t, "waiting for the other ranks to call it");
    headers_host_.copy_(headers_device_);  // the stream is idle: no wait
    std::vector<Header> all(static_cast<size_t>(size()));
    std::memcpy(all.data(), headers_host_.data_ptr<uint8_t>(), all_bytes);
    try {
      agreement::check(c, all, local, where(t));
    } catch (const ProtocolError& e) {
      end<ProtocolError>(e.what());  // a peer of another build: nothing it sends is safe
    }
    return all;
  }

  /// Swaps headers (and tags) with `peer` and checks that the two calls
  /// match (Note [NCCL send and recv]).
  void exchange_pair(Collective c, const at::Tensor& t, int peer, uint64_t tag) {
    const Local local = prepare(c, &t, ReduceOp::Sum, 0);
    constexpr auto kBytes = static_cast<int64_t>(sizeof(PairHeader));
    if (!pair_device_.defined()) {
      pair_host_ =
          at::empty({2 * kBytes}, at::TensorOptions().dtype(at::kByte).pinned_memory(true));
      pair_device_ =
          at::empty({2 * kBytes}, at::TensorOptions().dtype(at::kByte).device(placement_.device));
    }
    const PairHeader mine{local.header, tag};
    std::memcpy(pair_host_.data_ptr<uint8_t>(), &mine, sizeof mine);
    at::Tensor out = pair_device_.narrow(0, 0, kBytes);
    at::Tensor in = pair_device_.narrow(0, kBytes, kBytes);
    out.copy_(pair_host_.narrow(0, 0, kBytes), /*non_blocking=*/true);
    launch(c, &t, [&](const Call& call) {
      call("ncclSend",
           api_.send(out.data_ptr(), sizeof(PairHeader), ncclUint8, peer, comm_, kStream));
      call("ncclRecv",
           api_.recv(in.data_ptr(), sizeof(PairHeader), ncclUint8, peer, comm_, kStream));
    });
    wait(c, &t,
         cat("waiting for rank ", peer, " to call ", c == Collective::Send ? "recv" : "send",
             " (tag ", tag, ")"));
    pair_host_.copy_(pair_device_);
    PairHeader theirs;
    std::memcpy(&theirs, pair_host_.data_ptr<uint8_t>() + kBytes, sizeof theirs);

    const auto expected = c == Collective::Send ? Collective::Recv : Collective::Send;
    if (theirs.header.magic == agreement::kHeaderMagic &&
        theirs.header.collective == static_cast<uint8_t>(expected) && theirs.tag != tag) {
      throw Error(cat("[collectives.", to_string(c), "] tags differ: this rank called ",
                      to_string(c), " with tag ", tag, ", rank ", peer, " called ",
                      to_string(expected), " with tag ", theirs.tag,
                      "; NCCL matches a pair's sends and recvs in call order, so expected the "
                      "same tags in the same order on both ranks ",
                      where(&t)));
    }
    try {
      agreement::check_pair(c, rank(), peer, tag, local, theirs.header, where(&t));
    } catch (const ProtocolError& e) {
      end<ProtocolError>(e.what());
    }
  }

  const NcclApi& api_;
  ncclComm_t comm_;  // null once aborted
  const NcclOptions options_;
  const agreement::Placement placement_;
  // Every rank's header, on the host (pinned) and on the device; a pair's
  // two headers likewise. Made on first use, on the communicator's device.
  at::Tensor headers_host_, headers_device_;
  at::Tensor pair_host_, pair_device_;
  std::string failure_;  // the first failure that ended the communicator; empty while usable
};

/// Creates the communicator once every rank has the id, polling until NCCL
/// is done, up to the timeout (Note [NCCL timeouts]).
ncclComm_t init_comm(const NcclApi& api, const NcclOptions& o, const NcclUniqueId& id) {
  CurrentDevice current(api, o.device);  // NCCL creates the communicator on the current device
  if (current.error() != cudaSuccess) {
    throw Error(cat("[collectives.nccl_connect] cudaSetDevice(", o.device,
                    ") failed: ", cuda_error(api, current.error()), " ", who(o)));
  }
  ncclUniqueId nccl_id;
  static_assert(sizeof nccl_id.internal == sizeof(NcclUniqueId));
  std::memcpy(nccl_id.internal, id.data(), id.size());
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclComm_t comm = nullptr;
  auto failed = [&](ncclResult_t r, const std::string& what) {
    const std::string message =
        cat("[collectives.nccl_connect] ", what, ": ", nccl_error(api, r, comm), " ", who(o));
    if (comm != nullptr) (void)api.comm_abort(comm);
    if (is_transport_failure(r)) throw TransportError(message);
    throw Error(message);
  };
  const ncclResult_t r = api.comm_init_rank_config(&comm, o.size, nccl_id, o.rank, &config);
  if (r != ncclSuccess && r != ncclInProgress) failed(r, "ncclCommInitRankConfig failed");
  const auto start = Clock::now();
  for (;;) {
    ncclResult_t state = ncclSuccess;
    const ncclResult_t q = api.comm_get_async_error(comm, &state);
    if (q != ncclSuccess) state = q;
    if (state == ncclSuccess) return comm;
    if (state != ncclInProgress) failed(state, "NCCL failed to create the communicator");
    const auto waited = Clock::now() - start;
    if (waited >= o.timeout) {
      (void)api.comm_abort(comm);
      throw TimeoutError(
          cat("[collectives.nccl_connect] NCCL did not finish creating the "
              "communicator within ",
              o.timeout.count(), " ms ", who(o),
              " (a rank that died after joining, or ranks that cannot reach each "
              "other: NCCL_SOCKET_IFNAME picks the interface NCCL's bootstrap "
              "uses)"));
    }
    poll_pause(waited);
  }
}

}  // namespace

bool nccl_built() {
  return true;
}

std::string load_nccl() {
  return nccl_api().description;
}

std::string load_nccl_from(const std::vector<std::string>& nccl_names,
                           const std::vector<std::string>& cudart_names) {
  return load_nccl_api(nccl_names, cudart_names)->description;
}

int nccl_device_count() {
  try {
    const NcclApi& api = nccl_api();
    int n = 0;
    return api.cuda_get_device_count(&n) == cudaSuccess ? n : 0;
  } catch (const Error&) {
    return 0;
  }
}

std::optional<int> nccl_data_type(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat:
      return ncclFloat32;
    case at::kDouble:
      return ncclFloat64;
    case at::kHalf:
      return ncclFloat16;
    case at::kBFloat16:
      return ncclBfloat16;
    case at::kInt:
      return ncclInt32;
    case at::kLong:
      return ncclInt64;
    case at::kBool:  // one byte, 0 or 1: moved as uint8, never reduced
      return ncclUint8;
    default:
      return std::nullopt;
  }
}

std::optional<int> nccl_reduce_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum:
      return ncclSum;
    case ReduceOp::Avg:
      return ncclAvg;
    case ReduceOp::Max:
      return ncclMax;
    case ReduceOp::Min:
      return ncclMin;
    case ReduceOp::Product:
      return ncclProd;
  }
  return std::nullopt;
}

NcclUniqueId nccl_unique_id() {
  const NcclApi& api = nccl_api();
  ncclUniqueId id;
  const ncclResult_t r = api.get_unique_id(&id);
  if (r != ncclSuccess) {
    throw Error(cat("[collectives.nccl] ncclGetUniqueId failed: ", nccl_error(api, r, nullptr)));
  }
  NcclUniqueId out;
  std::memcpy(out.data(), id.internal, out.size());
  return out;
}

std::unique_ptr<Collectives> make_nccl_collectives(Store& store, const NcclOptions& options) {
  check_options(options);
  // This rank's own readiness travels with its join (nccl_rendezvous).
  const NcclApi* api = nullptr;
  std::string local_failure;
  try {
    try {
      api = &nccl_api();
    } catch (const Error& e) {
      throw Error(cat(e.what(), " ", who(options)));
    }
    int devices = 0;
    if (const cudaError_t e = api->cuda_get_device_count(&devices); e != cudaSuccess) {
      throw Error(cat("[collectives.nccl_connect] CUDA is unusable: cudaGetDeviceCount failed: ",
                      cuda_error(*api, e), " ", who(options)));
    }
    if (options.device >= devices) {
      throw Error(cat("[collectives.nccl_connect] device cuda:", options.device, " requested but ",
                      devices, " CUDA device(s) are visible ", who(options)));
    }
    CurrentDevice current(*api, options.device);
    if (current.error() != cudaSuccess) {
      throw Error(cat("[collectives.nccl_connect] cudaSetDevice(", options.device,
                      ") failed: ", cuda_error(*api, current.error()), " ", who(options)));
    }
  } catch (const Error& e) {
    local_failure = e.what();
  }
  const NcclUniqueId id =
      nccl_rendezvous(store, options, local_failure, [] { return nccl_unique_id(); });
  return std::make_unique<NcclCollectives>(*api, init_comm(*api, options, id), options);
}

#else  // no NCCL headers, or headers older than 2.14

namespace {

std::string unavailable() {
#if GT_HAVE_NCCL
  return cat("[collectives.nccl] this gt worker was built with the nccl.h of NCCL ", NCCL_MAJOR,
             ".", NCCL_MINOR, ".", NCCL_PATCH,
             ": expected 2.14 or newer to run collectives on CUDA devices (point "
             "GT_NCCL_INCLUDE_DIR at a newer one and rebuild)");
#else
  return "[collectives.nccl] this gt worker was built without NCCL headers, so it cannot run "
         "collectives on CUDA devices: expected nccl.h (CUDA's include directory; set "
         "GT_NCCL_INCLUDE_DIR or CUDA_HOME when configuring gt) and rebuild";
#endif
}

}  // namespace

bool nccl_built() {
  return false;
}

std::string load_nccl() {
  throw Error(unavailable());
}

std::string load_nccl_from(const std::vector<std::string>&, const std::vector<std::string>&) {
  throw Error(unavailable());
}

int nccl_device_count() {
  return 0;
}

std::optional<int> nccl_data_type(at::ScalarType) {
  return std::nullopt;
}

std::optional<int> nccl_reduce_op(ReduceOp) {
  return std::nullopt;
}

NcclUniqueId nccl_unique_id() {
  throw Error(unavailable());
}

std::unique_ptr<Collectives> make_nccl_collectives(Store& store, const NcclOptions& options) {
  check_options(options);
  // Joining with the failure lets the peers fail at once, naming this rank.
  nccl_rendezvous(store, options, cat(unavailable(), " ", who(options)), {});
  throw Error(unavailable());  // not reached: the rendezvous throws the failure
}

#endif  // GT_NCCL_BACKEND

}  // namespace gt::worker::collectives
