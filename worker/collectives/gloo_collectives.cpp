#include "worker/collectives/gloo_collectives.h"

#include <net/if.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <exception>
#include <functional>
#include <mutex>
#include <numeric>
#include <optional>
#include <type_traits>
#include <utility>

#include <gloo/allgatherv.h>
#include <gloo/allreduce.h>
#include <gloo/broadcast.h>
#include <gloo/common/error.h>
#include <gloo/common/logging.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/device.h>
#include <gloo/transport/unbound_buffer.h>

#include <gt/error.h>

#include "common/check.h"
#include "common/shape.h"
#include "worker/collectives/agreement.h"
#include "worker/collectives/reductions.h"
#include "worker/kernels.h"

namespace gt::worker::collectives {
namespace {

using agreement::describe;
using agreement::Header;
using agreement::Local;
using agreement::ranks_str;
using agreement::Rejection;
using agreement::row_numel;
using detail::cat;

// Every collective starts with the agreement header exchange (Note
// [agreement header] in agreement.cpp): every rank sends its header to every
// other over unbound buffers (Note [header receives ahead] keeps that cheap),
// and a pair swaps headers for send/recv.

// Note [header receives ahead]
// Gloo's TCP transport sends an unbound buffer at once only if the peer has
// already posted the matching receive; otherwise the send waits for a
// recv-ready notice to come back through both event-loop threads. A header
// sent right after the previous collective meets exactly that case, and on
// a busy machine each of those hand-offs costs a scheduler slice: measured
// here, the header then cost as much as a whole 1 MB all-reduce. So every
// communicator keeps the receives for the next collective's headers posted
// (from construction on, and again as soon as a header exchange completes),
// and the headers always take the direct path. A collective's data never
// uses these slots, and a failed collective ends the communicator, so the
// posted receives cannot catch anything else.

// Note [tags and slots]
// Gloo matches a send with a recv by (peer, slot). Collective number `seq`
// gets the header tag 2*seq and the data tag 2*seq+1 (every rank counts the
// same collectives, so the tags agree; after a failure the communicator is
// dead, so no stale message is ever matched against a later collective).
// Gloo's algorithms turn the data tag into slots under their own prefixes
// (gloo/types.h, top byte 0x01..0x08). Our own traffic uses top bytes 0x20
// and up: send/recv data and headers carry the caller's 56-bit tag, the ring
// reduce-scatter its data tag and step, the header exchange its header tag.
constexpr uint64_t kSendSlotPrefix = 0x20;
constexpr uint64_t kSendHeaderSlotPrefix = 0x21;
constexpr uint64_t kReduceScatterSlotPrefix = 0x22;
constexpr uint64_t kHeaderSlotPrefix = 0x23;
constexpr int kMaxSize = 1 << 16;  // ring steps fit the 16 low bits of a slot

constexpr uint64_t make_slot(uint64_t prefix, uint64_t low) {
  return (prefix << 56) | low;
}

/// An element of N opaque bytes: Gloo's typed setters only use sizeof(T).
template <size_t N>
struct Bytes {
  unsigned char b[N];
};

void set_allreduce_output(gloo::AllreduceOptions& opts, void* ptr, size_t elements,
                          size_t element_size) {
  switch (element_size) {
    case 1:
      opts.setOutput(static_cast<Bytes<1>*>(ptr), elements);
      return;
    case 2:
      opts.setOutput(static_cast<Bytes<2>*>(ptr), elements);
      return;
    case 4:
      opts.setOutput(static_cast<Bytes<4>*>(ptr), elements);
      return;
    case 8:
      opts.setOutput(static_cast<Bytes<8>*>(ptr), elements);
      return;
  }
  GT_ASSERT(false, "[collectives.all_reduce] unexpected element size ", element_size);
}

// ---- the rendezvous store, as Gloo wants it -------------------------------

/// Gloo's view of our Store: keys under the communicator's prefix, waits
/// bounded by the communicator's timeout. Gloo's connectFullMesh publishes
/// "<rank>" (the rank's listening addresses) and "rank_<rank>" (its host
/// name); a key that never appears means that rank died after joining.
class GlooStoreAdapter final : public gloo::rendezvous::Store {
 public:
  GlooStoreAdapter(collectives::Store& store, std::string prefix, std::chrono::milliseconds timeout)
      : store_(store), prefix_(std::move(prefix)), timeout_(timeout) {}

  void set(const std::string& key, const std::vector<char>& data) override {
    store_.set(prefix_ + key, data);
  }

  std::vector<char> get(const std::string& key) override {
    auto value = store_.get(prefix_ + key, timeout_);
    if (!value) throw_missing({key}, timeout_);
    return std::move(*value);
  }

  void wait(const std::vector<std::string>& keys) override { wait(keys, timeout_); }

  void wait(const std::vector<std::string>& keys,
            const std::chrono::milliseconds& timeout) override {
    std::vector<std::string> full;
    for (const std::string& k : keys) full.push_back(prefix_ + k);
    std::vector<std::string> missing = store_.wait(full, timeout);
    if (missing.empty()) return;
    for (std::string& k : missing) k.erase(0, prefix_.size());
    throw_missing(missing, timeout);
  }

 private:
  [[noreturn]] static void throw_missing(const std::vector<std::string>& keys,
                                         std::chrono::milliseconds timeout) {
    std::string list;
    for (const std::string& k : keys) {
      const std::string rank = k.rfind("rank_", 0) == 0 ? k.substr(5) : k;
      list += cat(list.empty() ? "" : ", ", rank);
    }
    throw TimeoutError(cat("rank(s) ", list, " joined but did not publish their addresses within ",
                           timeout.count(), " ms (died while connecting?)"));
  }

  collectives::Store& store_;
  const std::string prefix_;
  const std::chrono::milliseconds timeout_;
};

// ---- the communicator ------------------------------------------------------

class GlooCollectives final : public Collectives {
 public:
  GlooCollectives(std::shared_ptr<gloo::Context> context, GlooOptions options)
      : context_(std::move(context)),
        options_(std::move(options)),
        inbox_(static_cast<size_t>(options_.size)),
        inbox_buffer_(context_->createUnboundBuffer(inbox_.data(), inbox_.size() * sizeof(Header))),
        outbox_buffer_(context_->createUnboundBuffer(&outbox_, sizeof(Header))) {
    post_header_recvs(0);  // the first collective's (Note [header receives ahead])
  }

  ~GlooCollectives() override {
    // Close the connections before the header buffers go: a header that
    // arrived for a receive whose buffer is gone would wedge its pair, and
    // the buffers keep the transport (and so the pairs) alive until then.
    try {
      context_->closeConnections();
    } catch (const std::exception&) {
      // Closing a connection that already failed; nothing left to tell.
    }
  }

  GlooCollectives(const GlooCollectives&) = delete;
  GlooCollectives& operator=(const GlooCollectives&) = delete;

  int rank() const override { return options_.rank; }
  int size() const override { return options_.size; }

  bool supports(Collective c, at::ScalarType dtype, ReduceOp op) const override {
    if (!to_dtype(dtype)) return false;
    if (c != Collective::AllReduce && c != Collective::ReduceScatter) return true;
    if (static_cast<int>(op) >= kNumReduceOps) return false;
    if (op == ReduceOp::Avg && !at::isFloatingType(dtype)) return false;
    return reduce_fn(dtype, op) != nullptr;
  }

  void all_reduce(at::Tensor& t, ReduceOp op) override {
    guarded(Collective::AllReduce, &t, [&] {
      const uint32_t tag = next_tag();
      agree(Collective::AllReduce, &t, prepare(Collective::AllReduce, &t, op, 0), tag);
      if (t.numel() == 0 || size() == 1) return;
      at::Tensor buf = t.is_contiguous() ? t : t.contiguous();
      gloo::AllreduceOptions opts(context_);
      set_allreduce_output(opts, buf.data_ptr(), static_cast<size_t>(buf.numel()),
                           buf.element_size());
      opts.setReduceFunction(reduce_fn(buf.scalar_type(), op));
      opts.setTag(tag + 1);
      opts.setTimeout(options_.timeout);
      gloo::allreduce(opts);
      if (op == ReduceOp::Avg) buf.div_(size());
      if (!buf.is_same(t)) t.copy_(buf);
    });
  }

  at::Tensor all_gather(const at::Tensor& t, int64_t dim) override {
    return guarded(Collective::AllGather, &t, [&] {
      const uint32_t tag = next_tag();
      const Local local = prepare(Collective::AllGather, &t, ReduceOp::Sum, dim);
      const std::vector<Header> all = agree(Collective::AllGather, &t, local, tag);
      const int64_t d = local.header.arg;
      if (size() == 1) return t.contiguous().clone();

      // Flat concatenation of each rank's block is concatenation along `d`
      // only when the dims before `d` hold one element; otherwise gather
      // along a leading `d` and move it back.
      const int64_t outer = c10::multiply_integers(t.sizes().begin(), t.sizes().begin() + d);
      const at::Tensor src = outer == 1 ? t.contiguous() : t.movedim(d, 0).contiguous();
      int64_t total = 0;
      for (const Header& h : all) total += h.sizes[d];
      std::vector<int64_t> out_shape = src.sizes().vec();
      const int64_t lead = outer == 1 ? d : 0;  // where the gathered dim sits in `src`
      out_shape[static_cast<size_t>(lead)] = total;
      at::Tensor out = at::empty(out_shape, src.options());

      const size_t row_bytes = static_cast<size_t>(row_numel(src, lead) * src.element_size());
      std::vector<size_t> counts;
      for (const Header& h : all) counts.push_back(static_cast<size_t>(h.sizes[d]) * row_bytes);
      if (out.numel() > 0) {
        gloo::AllgathervOptions opts(context_);
        opts.setInput(static_cast<uint8_t*>(const_cast<void*>(src.data_ptr())),
                      counts[static_cast<size_t>(rank())]);
        opts.setOutput(static_cast<uint8_t*>(out.data_ptr()), counts);
        opts.setTag(tag + 1);
        opts.setTimeout(options_.timeout);
        gloo::allgatherv(opts);
      }
      return outer == 1 ? out : out.movedim(0, d).contiguous();
    });
  }

  at::Tensor reduce_scatter(const at::Tensor& t, int64_t dim, ReduceOp op) override {
    return guarded(Collective::ReduceScatter, &t, [&] {
      const uint32_t tag = next_tag();
      const Local local = prepare(Collective::ReduceScatter, &t, op, dim);
      agree(Collective::ReduceScatter, &t, local, tag);
      const int64_t d = local.header.arg;
      const std::vector<int64_t> rows = split_sizes(t.size(d), size());

      // A private contiguous copy with `d` leading (or in place when the dims
      // before it hold one element): rank r's part is then one contiguous
      // range, reduced in place by the ring.
      const int64_t outer = c10::multiply_integers(t.sizes().begin(), t.sizes().begin() + d);
      at::Tensor work = (outer == 1 ? t : t.movedim(d, 0)).clone(at::MemoryFormat::Contiguous);
      const int64_t lead = outer == 1 ? d : 0;
      const int64_t row_elems = row_numel(work, lead);
      if (size() > 1 && work.numel() > 0) {
        ring_reduce_scatter(work, rows, row_elems, reduce_fn(work.scalar_type(), op), tag + 1);
      }
      int64_t first = 0;
      for (int r = 0; r < rank(); ++r) first += rows[static_cast<size_t>(r)];
      at::Tensor part = work.narrow(lead, first, rows[static_cast<size_t>(rank())]);
      // clone: the part must not keep the whole work buffer alive.
      part = outer == 1 ? part.clone() : part.movedim(0, d).contiguous();
      if (op == ReduceOp::Avg) part.div_(size());
      return part;
    });
  }

  void broadcast(at::Tensor& t, int root) override {
    guarded(Collective::Broadcast, &t, [&] {
      const uint32_t tag = next_tag();
      agree(Collective::Broadcast, &t, prepare(Collective::Broadcast, &t, ReduceOp::Sum, root),
            tag);
      if (t.numel() == 0 || size() == 1) return;
      at::Tensor buf = t.is_contiguous() ? t : t.contiguous();
      gloo::BroadcastOptions opts(context_);
      opts.setOutput(static_cast<uint8_t*>(buf.data_ptr()), buf.nbytes());
      opts.setRoot(root);
      opts.setTag(tag + 1);
      opts.setTimeout(options_.timeout);
      gloo::broadcast(opts);
      if (!buf.is_same(t)) t.copy_(buf);
    });
  }

  void send(const at::Tensor& t, int peer, uint64_t tag) override {
    agreement::check_peer(Collective::Send, rank(), size(), peer, tag, where(&t));
    guarded(
        Collective::Send, &t, cat("waiting for rank ", peer, " to call recv with tag ", tag), [&] {
          exchange_pair(Collective::Send, t, peer, tag);
          if (t.numel() == 0) return;
          const at::Tensor buf = t.contiguous();
          auto ub = context_->createUnboundBuffer(const_cast<void*>(buf.data_ptr()), buf.nbytes());
          ub->send(peer, make_slot(kSendSlotPrefix, tag));
          ub->waitSend(options_.timeout);
        });
  }

  void recv(at::Tensor& t, int peer, uint64_t tag) override {
    agreement::check_peer(Collective::Recv, rank(), size(), peer, tag, where(&t));
    guarded(Collective::Recv, &t, cat("waiting for rank ", peer, " to call send with tag ", tag),
            [&] {
              exchange_pair(Collective::Recv, t, peer, tag);
              if (t.numel() == 0) return;
              at::Tensor buf = t.is_contiguous() ? t : at::empty(t.sizes(), t.options());
              auto ub = context_->createUnboundBuffer(buf.data_ptr(), buf.nbytes());
              ub->recv(peer, make_slot(kSendSlotPrefix, tag));
              ub->waitRecv(options_.timeout);
              if (!buf.is_same(t)) t.copy_(buf);
            });
  }

  void barrier() override {
    guarded(Collective::Barrier, nullptr, [&] {
      // The header exchange completes only once every rank has sent its
      // header, which is all a barrier needs.
      const uint32_t tag = next_tag();
      agree(Collective::Barrier, nullptr, prepare(Collective::Barrier, nullptr, ReduceOp::Sum, 0),
            tag);
    });
  }

 private:
  uint32_t next_tag() { return 2 * seq_++; }  // Note [tags and slots]

  /// "(communicator 'dp', rank 0 of 2, tensor float32 (4, 3))"
  std::string where(const at::Tensor* t) const {
    return cat("(communicator '", options_.name, "', rank ", rank(), " of ", size(),
               t ? cat(", tensor ", describe(*t)) : std::string(), ")");
  }

  /// Runs `body`, turning failures into gt errors. Transport failures and
  /// timeouts leave peers mid-transfer, so they end the communicator; the
  /// agreement errors (Note [agreement header]) and bad arguments do not.
  template <typename Body>
  std::invoke_result_t<Body&> guarded(Collective c, const at::Tensor* t, Body&& body) {
    return guarded(c, t, "waiting for the other ranks", std::forward<Body>(body));
  }

  template <typename Body>
  std::invoke_result_t<Body&> guarded(Collective c, const at::Tensor* t, const std::string& waiting,
                                      Body&& body) {
    if (!failure_.empty()) {
      throw TransportError(cat("[collectives.", to_string(c),
                               "] communicator unusable after an "
                               "earlier failure; create a new one ",
                               where(t), ": the failure was: ", failure_));
    }
    try {
      return body();
    } catch (const std::invalid_argument&) {
      throw;
    } catch (const TransportError&) {
      throw;  // already worded, and the communicator already marked
    } catch (const Error&) {
      throw;  // disagreement between ranks: every rank threw, nothing in flight
    } catch (const gloo::IoException& e) {
      const std::string what = e.what();
      if (what.find("Timed out") != std::string::npos) {
        failure_ = cat("[collectives.", to_string(c), "] timed out after ",
                       options_.timeout.count(), " ms ", waiting, " ", where(t), ": ", what);
        throw TimeoutError(failure_);
      }
      failure_ = cat("[collectives.", to_string(c), "] connection failed while ", waiting, " ",
                     where(t), ": ", what);
      throw TransportError(failure_);
    } catch (const std::exception& e) {
      // gloo::EnforceNotMet, gloo::Exception, c10::Error (allocation), ...:
      // this rank stops mid-collective while its peers go on, so the
      // communicator is out of step from here.
      failure_ = cat("[collectives.", to_string(c), "] failed ", where(t), ": ", e.what());
      throw Error(failure_);
    }
  }

  /// Checks this rank's arguments without communicating (Note [agreement
  /// header]); `arg` is the root or the dim.
  Local prepare(Collective c, const at::Tensor* t, ReduceOp op, int64_t arg) const {
    static const agreement::Placement kCpu{at::kCPU, "CPU tensor",
                                           "(the Gloo backend moves host memory)",
                                           Rejection::NotCpu};
    return agreement::prepare(*this, kCpu, c, t, op, arg, where(t));
  }

  /// Exchanges headers among all ranks and checks that they agree (Note
  /// [agreement header]); returns every rank's header, in rank order.
  std::vector<Header> agree(Collective c, const at::Tensor* t, const Local& local, uint32_t tag) {
    std::vector<Header> all(static_cast<size_t>(size()));
    all[static_cast<size_t>(rank())] = local.header;
    if (size() > 1) {
      exchange_headers(c, t, all, tag);
    }
    try {
      agreement::check(c, all, local, where(t));
    } catch (const ProtocolError& e) {
      failure_ = e.what();  // a peer of another build: nothing it sends can be trusted
      throw;
    }
    return all;
  }

  /// Posts the receives for the headers of the collective with header tag
  /// `tag`, one per peer, into inbox_ (Note [header receives ahead]). A
  /// connection that already failed (a peer that left once it had every
  /// header) is not this collective's failure: it is kept for the next one.
  void post_header_recvs(uint32_t tag) {
    if (size() == 1) return;
    const uint64_t slot = make_slot(kHeaderSlotPrefix, tag);
    for (int r = 0; r < size(); ++r) {
      if (r == rank()) continue;
      try {
        inbox_buffer_->recv(r, slot, static_cast<size_t>(r) * sizeof(Header), sizeof(Header));
      } catch (const std::exception& e) {
        header_recv_failure_ = {r, e.what()};
        return;
      }
    }
  }

  /// Fills `all` (this rank's entry already set) with every rank's header:
  /// sends ours straight to every peer, whose receive is already posted, and
  /// waits for theirs; then posts the receives for the next collective.
  /// Our sends are only waited for at the next exchange (they finish long
  /// before): a peer that leaves as soon as it has every header must not
  /// fail this rank's collective, which is complete once ours arrived.
  /// A timeout names the ranks whose header never came.
  void exchange_headers(Collective c, const at::Tensor* t, std::vector<Header>& all, uint32_t tag) {
    const uint64_t slot = make_slot(kHeaderSlotPrefix, tag);
    std::vector<bool> arrived(all.size(), false);
    arrived[static_cast<size_t>(rank())] = true;
    if (header_recv_failure_) {
      failure_ =
          cat("[collectives.", to_string(c), "] connection failed while waiting for rank ",
              header_recv_failure_->first, " ", where(t), ": ", header_recv_failure_->second);
      throw TransportError(failure_);
    }
    try {
      for (; pending_header_sends_ > 0; --pending_header_sends_) {
        outbox_buffer_->waitSend(options_.timeout);
      }
      outbox_ = all[static_cast<size_t>(rank())];
      for (int r = 0; r < size(); ++r) {
        if (r != rank()) {
          outbox_buffer_->send(r, slot);
          ++pending_header_sends_;
        }
      }
      for (int i = 0; i < size() - 1; ++i) {
        int from = -1;
        inbox_buffer_->waitRecv(&from, options_.timeout);
        if (from >= 0 && from < size()) arrived[static_cast<size_t>(from)] = true;
      }
    } catch (const gloo::IoException& e) {
      std::vector<int> missing;
      for (int r = 0; r < size(); ++r) {
        if (!arrived[static_cast<size_t>(r)]) missing.push_back(r);
      }
      const std::string whom =
          missing.empty() ? std::string("the other ranks")
                          : cat(missing.size() > 1 ? "ranks " : "rank ", ranks_str(missing));
      const std::string what = e.what();
      const bool timed_out = what.find("Timed out") != std::string::npos;
      failure_ =
          cat("[collectives.", to_string(c), "] ",
              timed_out ? cat("timed out after ", options_.timeout.count(), " ms waiting for ")
                        : std::string("connection failed while waiting for "),
              whom, " ", where(t), ": ", what);
      if (timed_out) throw TimeoutError(failure_);
      throw TransportError(failure_);
    }
    for (int r = 0; r < size(); ++r) {
      if (r != rank()) all[static_cast<size_t>(r)] = inbox_[static_cast<size_t>(r)];
    }
    // Every rank gets here whatever the verdict on the headers, so the
    // receives stay in step with the collectives.
    post_header_recvs(tag + 2);
  }

  /// The pairwise form of agree() for send/recv: the two sides swap headers
  /// on the header slot of `tag` and check they complement each other.
  void exchange_pair(Collective c, const at::Tensor& t, int peer, uint64_t tag) {
    const Local local = prepare(c, &t, ReduceOp::Sum, 0);
    Header mine = local.header;
    Header theirs;
    auto out = context_->createUnboundBuffer(&mine, sizeof(Header));
    auto in = context_->createUnboundBuffer(&theirs, sizeof(Header));
    in->recv(peer, make_slot(kSendHeaderSlotPrefix, tag));
    out->send(peer, make_slot(kSendHeaderSlotPrefix, tag));
    in->waitRecv(options_.timeout);
    out->waitSend(options_.timeout);

    try {
      agreement::check_pair(c, rank(), peer, tag, local, theirs, where(&t));
    } catch (const ProtocolError& e) {
      failure_ = e.what();
      throw;
    }
  }

  /// Reduce-scatter over a ring, in place on `work` (contiguous; rank r's
  /// part is rows[r] rows of `row_elems` elements, parts in rank order).
  /// Gloo has no reduce-scatter on unbound buffers, and allreduce+slice would
  /// move twice the bytes. Step s (0..size-2): send the part (r-s-1) mod n to
  /// the right neighbour, receive part (r-s-2) mod n from the left one and
  /// reduce it in; part r arrives last, carrying every rank's contribution.
  void ring_reduce_scatter(at::Tensor& work, const std::vector<int64_t>& rows, int64_t row_elems,
                           ReduceFn fn, uint32_t tag) {
    const int n = size();
    const size_t elem = static_cast<size_t>(work.element_size());
    std::vector<size_t> offset(static_cast<size_t>(n)), bytes(static_cast<size_t>(n));
    size_t at_byte = 0;
    for (int r = 0; r < n; ++r) {
      offset[size_t(r)] = at_byte;
      bytes[size_t(r)] = static_cast<size_t>(rows[size_t(r)] * row_elems) * elem;
      at_byte += bytes[size_t(r)];
    }
    auto* base = static_cast<uint8_t*>(work.data_ptr());
    std::vector<uint8_t> scratch(*std::max_element(bytes.begin(), bytes.end()));
    auto send_buf = context_->createUnboundBuffer(base, work.nbytes());
    auto recv_buf = context_->createUnboundBuffer(scratch.data(), scratch.size());
    const int right = (rank() + 1) % n;
    const int left = (rank() + n - 1) % n;
    for (int s = 0; s < n - 1; ++s) {
      const size_t send_part = static_cast<size_t>((rank() - s - 1 + 2 * n) % n);
      const size_t recv_part = static_cast<size_t>((rank() - s - 2 + 2 * n) % n);
      const uint64_t slot =
          make_slot(kReduceScatterSlotPrefix, (uint64_t{tag} << 16) | static_cast<uint64_t>(s));
      // Both sides compute the same part sizes, so empty parts are skipped
      // on both ends of a transfer.
      if (bytes[recv_part] > 0) recv_buf->recv(left, slot, 0, bytes[recv_part]);
      if (bytes[send_part] > 0) send_buf->send(right, slot, offset[send_part], bytes[send_part]);
      if (bytes[recv_part] > 0) {
        recv_buf->waitRecv(options_.timeout);
        fn(base + offset[recv_part], base + offset[recv_part], scratch.data(),
           bytes[recv_part] / elem);
      }
      if (bytes[send_part] > 0) send_buf->waitSend(options_.timeout);
    }
  }

  std::shared_ptr<gloo::Context> context_;
  const GlooOptions options_;
  // Where the peers' headers for the next collective land, and its receives;
  // this rank's last header and its sends, not yet waited for.
  std::vector<Header> inbox_;
  std::unique_ptr<gloo::transport::UnboundBuffer> inbox_buffer_;
  Header outbox_;
  std::unique_ptr<gloo::transport::UnboundBuffer> outbox_buffer_;
  int pending_header_sends_ = 0;
  // Set when posting the header receives failed: the peer and the reason.
  std::optional<std::pair<int, std::string>> header_recv_failure_;
  uint32_t seq_ = 0;     // collectives begun (Note [tags and slots])
  std::string failure_;  // the first failure that ended the communicator; empty while usable
};

// Note [SIGPIPE]
// Gloo's TCP transport writes to its sockets without MSG_NOSIGNAL, so a peer
// that goes away while we write (a worker killed mid-collective) raises
// SIGPIPE, whose default action kills this process without a word (Python
// programs never notice: the interpreter ignores SIGPIPE). With the signal
// ignored the write fails with EPIPE and Gloo reports it as an IoException,
// which becomes a TransportError. We only replace the default disposition; a
// handler the program installed itself is left alone.
void ignore_sigpipe() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction current {};
    if (::sigaction(SIGPIPE, nullptr, &current) != 0) return;
    if ((current.sa_flags & SA_SIGINFO) != 0 || current.sa_handler != SIG_DFL) return;
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    sigemptyset(&ignore.sa_mask);
    ::sigaction(SIGPIPE, &ignore, nullptr);
  });
}

}  // namespace

std::unique_ptr<Collectives> make_gloo_collectives(Store& store, const GlooOptions& options) {
  const std::string who =
      cat("(communicator '", options.name, "', rank ", options.rank, " of ", options.size, ")");
  GT_CHECK(options.size >= 1 && options.size <= kMaxSize, "[collectives.connect] size ",
           options.size, " invalid: expected 1 to ", kMaxSize, " ranks ", who);
  GT_CHECK(options.rank >= 0 && options.rank < options.size, "[collectives.connect] rank ",
           options.rank, " out of range: expected a rank in [0, ", options.size, ") ", who);
  GT_CHECK(!options.name.empty(),
           "[collectives.connect] empty communicator name: expected a "
           "name shared by every rank ",
           who);
  GT_CHECK(options.timeout.count() > 0, "[collectives.connect] timeout ", options.timeout.count(),
           " ms: expected a positive timeout ", who);

  ignore_sigpipe();  // Note [SIGPIPE]

  // Join first: a rank that never starts is then reported by rank number,
  // rather than as a Gloo connect timeout with an address in it.
  const std::string prefix = options.name + "/";
  std::vector<std::string> joins;
  for (int r = 0; r < options.size; ++r) joins.push_back(cat(prefix, "join/", r));
  store.set(joins[static_cast<size_t>(options.rank)], {});
  const std::vector<std::string> missing = store.wait(joins, options.timeout);
  if (!missing.empty()) {
    std::vector<int> ranks;
    for (const std::string& key : missing) {
      ranks.push_back(static_cast<int>(std::find(joins.begin(), joins.end(), key) - joins.begin()));
    }
    throw TimeoutError(cat("[collectives.connect] rank", ranks.size() > 1 ? "s " : " ",
                           ranks_str(ranks), " did not join within ", options.timeout.count(),
                           " ms ", who,
                           "; expected every rank to create the communicator with the same name "
                           "and size"));
  }

  std::shared_ptr<gloo::transport::Device> device;
  try {
    gloo::transport::tcp::attr attr;
    if (::if_nametoindex(options.host.c_str()) != 0) {
      attr.iface = options.host;
    } else {
      attr.hostname = options.host;
    }
    device = gloo::transport::tcp::CreateDevice(attr);
  } catch (const std::exception& e) {
    throw TransportError(cat("[collectives.connect] cannot listen on '", options.host,
                             "': expected a local address, host name or interface name ", who, ": ",
                             e.what()));
  }

  auto context = std::make_shared<gloo::rendezvous::Context>(options.rank, options.size);
  context->setTimeout(options.timeout);
  try {
    GlooStoreAdapter adapter(store, prefix + "gloo/", options.timeout);
    context->connectFullMesh(adapter, device);
  } catch (const TimeoutError& e) {
    throw TimeoutError(cat("[collectives.connect] ", e.what(), " ", who));
  } catch (const Error&) {
    throw;  // the store's own failure, already worded
  } catch (const std::exception& e) {
    throw TransportError(
        cat("[collectives.connect] connecting to the other ranks failed ", who, ": ", e.what()));
  }
  // connectFullMesh returns on a rank once its own pairs are up, possibly
  // before its peers' are; a rank that then fails or leaves at once would
  // break a peer's connect. One barrier makes construction symmetric: when
  // it returns, every rank is connected.
  auto comm = std::make_unique<GlooCollectives>(std::move(context), options);
  try {
    comm->barrier();
  } catch (const TimeoutError& e) {
    throw TimeoutError(
        cat("[collectives.connect] connected, but not every rank confirmed: ", e.what()));
  } catch (const Error& e) {
    throw TransportError(
        cat("[collectives.connect] connected, but not every rank confirmed: ", e.what()));
  }
  return comm;
}

}  // namespace gt::worker::collectives
