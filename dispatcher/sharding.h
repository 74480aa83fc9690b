#pragma once
// Sharding: where each tensor of a session lives, and the rewriting of a
// client's instruction stream into per-worker streams with collectives
// (docs/sharding.md). No sockets here: the dispatcher hands each client
// instruction to a ShardedSession and sends what it appends to each worker's
// output, so the rules are tested without processes.

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include <gt/config.h>

#include "common/op_table.h"
#include "common/status.h"
#include "common/transport.h"
#include "common/wire.h"

namespace gt::dispatcher {

using wire::TensorId;

/// Where a logical tensor lives: a full copy on each of `workers`
/// (replicated), or split along `axis` with shard k on workers[k], sized by
/// split_sizes (common/shape.h). Worker lists are ascending, so shard order
/// is rank order in the group's communicator. An empty list stands for the session's home
/// worker (tensors of sessions that never shard carry no list at all).
struct Layout {
  std::vector<int> workers;
  int axis = -1;  // -1: replicated
  bool sharded() const { return axis >= 0; }
  bool operator==(const Layout&) const = default;
  /// "replicated on [0, 1]", "split along axis 0 over [0, 1]".
  std::string describe() const;
};

/// Copies the rows [begin, begin + rows) along `axis` of a contiguous
/// row-major tensor of `shape` with elements of `element_size` bytes.
std::vector<char> slice_rows(std::span<const char> data, std::span<const int64_t> shape,
                             int axis, int64_t begin, int64_t rows, int64_t element_size);
/// Concatenates contiguous parts along `axis`; `shapes[k]` is part k's shape.
std::vector<char> concat_rows(std::span<const std::span<const char>> parts,
                              std::span<const Shape> shapes, int axis, int64_t element_size);

/// A data frame of a client batch, shared by the frames sent to workers.
using Payload = std::shared_ptr<zmq::message_t>;
/// A frame of `size` bytes at `offset` in `source`, without a copy (it keeps
/// `source` alive until ZeroMQ releases it).
zmq::message_t share_bytes(const Payload& source, size_t offset, size_t size);
/// A frame that owns `bytes`.
zmq::message_t own_bytes(std::vector<char> bytes);

/// A tensor of the session: its shape and dtype when the op table could infer
/// them (an instruction the workers will reject has none), and its layout.
struct Placed {
  std::optional<TensorMeta> meta;
  Layout layout;
};

/// What a rewritten client batch sends to one worker.
struct WorkerOutput {
  std::vector<wire::Instr> instrs;
  Frames data;  // FromData payloads, named by Instr::payload
};
using Outputs = std::map<int, WorkerOutput>;

/// An instruction the dispatcher refuses: reported to the client at its
/// next sync (ops) or as the request's error (fetches).
struct RewriteError {
  Status code;
  std::string message;
};

/// How to answer a client's fetch: from one worker (the reply passes
/// through), or by gathering shards along an axis (the dispatcher fetches
/// each shard and joins them).
struct FetchPlan {
  struct Part {
    int worker;
    Shape shape;
  };
  std::vector<Part> parts;  // one: pass through
  int axis = -1;
  TensorMeta meta;  // the whole tensor's (gathers)
};

/// What the dispatcher knows of its cluster when it rewrites.
struct ClusterView {
  std::vector<int> workers;  // alive workers, ascending
  bool auto_shard = false;   // GT_AUTO_SHARD
  int64_t auto_shard_min_bytes = 1 << 20;
  /// Send/recv tags, unique across sessions (communicators are shared).
  uint64_t* next_tag = nullptr;
};

/// Ids the dispatcher gives its temporaries (resharded copies); client ids
/// stay below (a client that names one is refused).
inline constexpr TensorId kTempIdBase = TensorId{1} << 62;

/// The sharding state of one client session: tensor table, scope stack and
/// config. One thread (the dispatcher's run()) drives it.
class ShardedSession {
 public:
  ShardedSession(int home, std::shared_ptr<const Config> config);

  /// Rewrites one client instruction (Op, Free or Scope; Fetch, Sync and
  /// Configure are the dispatcher's) into per-worker instructions appended to
  /// `out`. `payloads` are the client batch's data frames (FromData names
  /// them by index). Throws RewriteError for an instruction it refuses.
  void rewrite(const wire::Instruction& in, std::span<const Payload> payloads,
               const ClusterView& cluster, Outputs& out);

  /// The workers holding `id` and how to assemble it. Throws RewriteError
  /// for an unknown id.
  FetchPlan plan_fetch(TensorId id) const;

  /// Replaces the config (Configure); nullptr: none.
  void set_config(std::shared_ptr<const Config> config) { config_ = std::move(config); }
  const Config* config() const { return config_.get(); }

  /// Every worker that has been sent anything for this session.
  const std::vector<int>& used_workers() const { return used_; }
  int home() const { return home_; }
  size_t tensor_count() const { return tensors_.size(); }
  /// The tensor table entry; nullptr when unknown.
  const Placed* find(TensorId id) const;
  /// Registers a tensor created outside rewrite() (the fast path's tensors
  /// when a session starts sharding): it lives on the home worker.
  void adopt(TensorId id, std::optional<TensorMeta> meta);

  /// The config entry that places what the current scope creates, or nullptr.
  const SignalConfig* current_entry() const;
  /// A fetch or sync: completes the deferred sums (Note [deferred sums]) and
  /// ends the open compile unit (Note [compile scopes]).
  /// `fetched`: the id a fetch reads, completed even when it would wait.
  void barrier(Outputs& out, std::optional<TensorId> fetched = std::nullopt) {
    if (fetched) flush_sums(out, std::span<const TensorId>(&*fetched, 1));
    else flush_sums(out, {});
    if (unit_) end_unit(out);
  }
  /// Partial sums whose all_reduce is deferred (Note [deferred sums]).
  size_t deferred_sums() const { return deferred_.size(); }
  /// Whether `id` names a deferred partial sum.
  bool deferred(TensorId id) const { return family_of(id) != nullptr; }
  /// The signal of the outermost scope that is a compile unit, or nullptr.
  const std::string* compile_scope() const;

 private:
  struct Frame {
    std::string name;
    bool backward = false;
  };
  struct OpPlan;
  using Names = std::map<int, TensorId>;  // worker -> the id it knows a value by

  Layout resolve(const Layout& l) const;
  Layout entry_layout(const SignalConfig& e, const ClusterView& cluster, const TensorMeta* out) const;
  void plan_op(const OpInfo& op, const wire::Instruction& in, std::span<const Placed* const> ins,
               const TensorMeta& out_meta, const ClusterView& cluster, OpPlan& plan) const;
  /// Emits what makes `id` (laid out as `from`) available as `to`; returns
  /// the name of the value on each worker of `to`.
  Names convert(TensorId id, const Placed& from, const Layout& to, Outputs& out);
  Names gather(TensorId id, const Placed& from, Outputs& out);
  TensorId temp(int worker);
  void emit(int worker, wire::Instr instr, Outputs& out);
  void emit_collective(const std::vector<int>& group, int worker, uint16_t code, int64_t a,
                       int64_t b, std::span<const int64_t> shape, DType dtype,
                       std::vector<TensorId> inputs, std::vector<TensorId> outputs, Outputs& out);
  void free_temps(Outputs& out);
  /// One Free per worker of the ids listed for it (moved out).
  void emit_frees(std::map<int, std::vector<TensorId>>& by_worker, Outputs& out);
  /// A frame's entry: its signal's, or for a backward frame the signal's
  /// `backward` entry; nullptr when the config has none.
  const SignalConfig* entry_of(const Frame& f) const;
  void use(int worker);
  /// Note [compile scopes]: ends the open unit on the workers it reached.
  void end_unit(Outputs& out);
  /// Note [deferred sums]: emits the deferred all_reduces of the partial
  /// sums that were not consumed, and of those `needed` names, bucketed per
  /// group and dtype, then the means' scaling.
  void flush_sums(Outputs& out, std::span<const TensorId> needed);
  struct DeferredSum;
  DeferredSum* family_of(TensorId id);
  const DeferredSum* family_of(TensorId id) const;
  /// Runs a linear op on a deferred partial sum without completing it;
  /// false when `op` is not one that can.
  bool propagate_sum(const OpInfo& op, const wire::Instruction& in, const TensorMeta& out_meta,
                     Outputs& out);

  int home_;
  std::shared_ptr<const Config> config_;
  std::unordered_map<TensorId, Placed> tensors_;
  std::vector<Frame> scopes_;
  std::vector<int> used_;
  std::vector<std::pair<int, TensorId>> temps_;  // to free after the current instruction
  TensorId next_temp_ = kTempIdBase;
  const ClusterView* cluster_ = nullptr;  // during rewrite()
  // Note [deferred sums]: partial sums on their workers, not yet reduced.
  // One partial sum's memory on each worker, and the live ids that name all
  // of it (the op's output and views of it).
  struct DeferredSum {
    struct Name {
      TensorId id;
      bool contiguous;  // known to be; a reshape of it is then a view
    };
    std::vector<Name> names;
    std::vector<int> workers;
    DType dtype;
    int64_t numel;
    double scale;           // a mean's 1/count, applied after the sum; 1 for a sum
    bool consumed = false;  // a linear op made a new partial sum of it
  };
  std::vector<DeferredSum> deferred_;
  // Note [compile scopes]: the open compile unit and the workers told so.
  std::optional<std::string> unit_;
  std::vector<int> unit_workers_;
};

}  // namespace gt::dispatcher
