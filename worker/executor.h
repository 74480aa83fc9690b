#pragma once
// The executor: runs instruction batches of every client session on one
// device, strictly in stream order, with the rules of docs/protocol.md
// ("Instructions"). It owns the sessions' tensors and knows nothing about
// sockets: the worker's IO thread hands it whole messages and it hands back
// reply messages through a ReplySink, so tests drive it in-process.

#include <cstdint>
#include <array>
#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include <ATen/ATen.h>
#include <spdlog/spdlog.h>

#include "common/instruction_log.h"
#include "common/op_table.h"
#include "common/transport.h"
#include "common/wire.h"
#include "worker/collectives/communicators.h"
#include "worker/jit/compile_service.h"
#include "worker/jit/matcher.h"
#include "worker/jit/recorder.h"

namespace gt::worker {

namespace detail {
class SendTracker;
}

/// Receives each reply message (header frame plus data frames) the executor
/// produces, in order. Called on the executor's thread.
using ReplySink = std::function<void(Frames&&)>;

struct ExecutorOptions {
  int worker = 0;                // index named in failure messages
  at::Device device = at::kCPU;  // where tensors live
  /// Outputs larger than this fail with execution_failed before allocating
  /// (0 = no limit).
  uint64_t capacity_bytes = 0;
  std::shared_ptr<spdlog::logger> logger;  // default: make_logger("worker")
  /// The hot-path JIT (Note [JIT stages] in worker/jit/compile_service.h):
  /// when set, every session records its stream and promoted chains are
  /// compiled there. Null: no recording (it costs ~0.2 us per op).
  std::shared_ptr<jit::CompileService> jit;
  /// The communicators Collective instructions run on (Note [collective
  /// instructions] in worker/executor_collectives.cpp). Null: every
  /// Collective fails with execution_failed ("no collectives backend").
  std::shared_ptr<collectives::CommunicatorProvider> collectives;
  /// Note [session memory]: the most bytes one session's tensors may hold on
  /// this worker (GT_SESSION_MEMORY_LIMIT); 0 = no limit.
  uint64_t session_memory_limit = 0;
};

/// Executes gt instruction batches with LibTorch.
///
/// Pinned: copy and move are deleted. Not thread-safe: one thread drives it
/// (the worker's executor thread). Never throws on input: every malformed or
/// failing instruction becomes a failure recorded for the session's next Sync
/// (and logged once at warn), or an ErrorReply for Fetch. Reply data frames
/// may still reference tensor memory after handle() returns (zero-copy); that
/// memory stays valid until ZeroMQ releases the frame, even if the executor is
/// destroyed first. A Collective instruction blocks the calling thread until
/// the group's other workers take part, or its communicator times out.
class Executor {
 public:
  explicit Executor(ExecutorOptions options = {});
  ~Executor();
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;
  Executor(Executor&&) = delete;
  Executor& operator=(Executor&&) = delete;

  /// Verifies and runs one message: frames[0] is the header, the rest are its
  /// data frames. Batch runs its instructions, Bye drops the session; any
  /// other body is logged and ignored. A header that fails verification gets
  /// an ErrorReply{malformed} through the sink.
  void handle_message(Frames& frames, const ReplySink& sink);

  /// Runs an already verified message (the IO thread verified it).
  /// `data` are the frames after the header; FromData may move out of them.
  /// With `header` (the frame `message` lives in), a Batch whose last
  /// instructions start a compiled unit may keep the frame (moves out of it)
  /// so the unit can complete in the next batch (Note [compiled execution]);
  /// `message` must not be used afterwards.
  void handle_verified(const wire::Message& message, std::span<zmq::message_t> data,
                       const ReplySink& sink, zmq::message_t* header = nullptr);

  /// Runs the instructions of a batch for `session` (created on first use);
  /// `header` as for handle_verified.
  void run_batch(uint64_t session, const wire::Batch& batch, std::span<zmq::message_t> data,
                 const ReplySink& sink, zmq::message_t* header = nullptr);

  /// Runs the instructions a session holds for a partly matched compiled
  /// unit eagerly now (a stats request is a sync point: its counts must
  /// include everything issued before it). Unknown sessions are ignored.
  void flush_held(uint64_t session, const ReplySink& sink);

  /// Drops a session and all of its tensors (Bye). Unknown sessions are ignored.
  void drop_session(uint64_t session);
  /// Drops every session and every communicator (re-registration with the
  /// dispatcher: a new worker index makes new groups).
  void drop_all_sessions();

  /// Index used in failure messages (set when the dispatcher welcomes us).
  void set_worker_index(int worker) {
    options_.worker = worker;
    if (options_.jit) options_.jit->set_worker(worker);
  }
  int worker_index() const { return options_.worker; }
  const at::Device& device() const { return options_.device; }

  /// The worker's instruction log and what to do with it (Note [worker
  /// events] in worker/worker.cpp): `events` records an event per
  /// instruction; `timing` (implied by events) measures each instruction for
  /// the STATS utilisation. A null log turns both off.
  void set_instruction_log(std::shared_ptr<InstructionLog> log, bool events, bool timing);

  /// Time spent executing, per utilisation category (util_category()), since
  /// timing was turned on; in nanoseconds.
  // The OpKinds, Compiled, Fetch, Free, Sync, Collective.
  static constexpr int kUtilCategories = 14;
  static std::string_view util_category(int i);
  const std::array<int64_t, kUtilCategories>& busy_ns() const { return busy_ns_; }
  /// Bytes of memory held by live tensors of every session (each storage once).
  uint64_t tensor_bytes() const;
  /// Bytes held by one session's live tensors (each storage once); 0 for an
  /// unknown session.
  uint64_t session_bytes(uint64_t session) const;

  // ---- introspection, for tests and stats --------------------------------
  size_t session_count() const { return sessions_.size(); }
  /// Live ids (poisoned ones included) of a session; 0 for an unknown session.
  size_t tensor_count(uint64_t session) const;
  /// Live ids (poisoned ones included) of every session.
  size_t tensor_count() const;
  /// The tensor behind an id; nullopt when unknown or poisoned.
  std::optional<at::Tensor> tensor(uint64_t session, wire::TensorId id) const;
  /// The failure that poisoned an id; nullptr when live and healthy or unknown.
  std::shared_ptr<const wire::FailureInfo> poison(uint64_t session, wire::TensorId id) const;
  /// Instructions executed so far (all sessions).
  uint64_t instructions_executed() const { return instructions_executed_; }

 private:
  struct Promoted;
  struct Slot {
    at::Tensor tensor;                                // undefined when poisoned
    std::shared_ptr<const wire::FailureInfo> poison;  // set when poisoned
  };
  struct Session {
    std::unordered_map<wire::TensorId, Slot> tensors;
    std::vector<wire::FailureInfo> pending;  // for the next Sync, oldest first
    uint64_t dropped_failures = 0;           // past the pending cap
    std::optional<at::Generator> generator;  // created on first random op
    // Note [session memory]: at least the bytes its tensors hold; exact after
    // each recount, then grown by every allocation (frees are not subtracted).
    uint64_t bytes_bound = 0;
    std::unique_ptr<jit::SequenceRecorder> recorder;  // with options_.jit only
    // Note [compiled execution]: the units this session promoted, the one a
    // partly matched unit belongs to, and that unit's instructions (ops and
    // deferred frees, stream order; from this batch or retained ones).
    std::vector<jit::Detection> detections;  // this batch's, promoted at its end
    std::vector<std::unique_ptr<Promoted>> promoted;
    size_t pending_promotions = 0;  // promoted units still compiling
    Promoted* active = nullptr;
    std::vector<const wire::Instruction*> held;
    uint32_t held_start = 0;  // batch position of the unit's first held instruction
    // Header frames of earlier batches that held instructions point into (a
    // unit that spans batches); released once `held` is empty.
    std::deque<zmq::message_t> retained;
    // Note [compile scopes]: where the open compile unit began (a recorder
    // position) and the units already submitted (by their signatures).
    std::optional<uint64_t> unit_begin;
    std::vector<uint64_t> unit_keys;
  };
  /// One promoted unit of a session and its compiled variants
  /// (Note [dead values]).
  struct Promoted {
    jit::Promotion digests;
    std::shared_ptr<const jit::CompiledChain> escaping, elided;  // once ready
    // Once neither variant is compiling (and one compiled): both have the
    // same ops, so either's chain serves.
    std::unique_ptr<jit::ChainMatcher> matcher;
    bool failed = false;  // no variant compiled, a run failed, or dropped after its trial
    // The first matched units alternate compiled and eager runs and are timed;
    // a unit that is not faster is dropped (Note [compiled execution]).
    int trial_units = 0;
    bool verified = false;  // GT_COMPILE_VERIFY ran for this unit
    int64_t trial_compiled_ns = INT64_MAX, trial_eager_ns = INT64_MAX;  // fastest unit of each
  };

  struct Context;  // per-batch state (payload frames consumed, sink)

  /// Runs one instruction eagerly; with timing on, measures it and logs it.
  void run_instruction(uint64_t session_id, Session& s, const wire::Instruction& in, Context& ctx);
  void execute_instruction(uint64_t session_id, Session& s, const wire::Instruction& in,
                           Context& ctx);
  /// The EXEC/FREE/FETCH/SYNC event of an instruction that took `ns`.
  void log_instruction(uint64_t session_id, const Session& s, const wire::Instruction& in,
                       std::chrono::steady_clock::time_point end, int64_t ns,
                       size_t pending_before);
  void run_op(uint64_t session_id, Session& s, const wire::Instruction& in, Context& ctx);
  /// Note [session memory]: whether `s` may allocate `bytes` more; when not,
  /// the reason for the failure message.
  std::optional<std::string> over_session_limit(Session& s, uint64_t bytes);
  /// Note [compiled execution]: offers an instruction to the session's ready
  /// compiled units; true when it was consumed (buffered, or run as part of a
  /// compiled unit), false when the caller runs it eagerly.
  bool offer_compiled(uint64_t session_id, Session& s, const wire::Instruction& in, Context& ctx);
  /// Picks up the compiled variants of promoted units that became ready.
  void refresh_promoted(Session& s);
  /// Counts one timed unit of a trial; decides after JitOptions::trial_units
  /// of each kind.
  void end_trial_unit(Session& s, Promoted& p);
  /// Promoted units a session keeps (the detector remembers more; beyond this
  /// the session's stream is not a loop worth matching).
  static constexpr size_t kMaxPromoted = 64;
  /// Runs the buffered instructions of a partly matched unit eagerly, in order.
  void flush_pending(uint64_t session_id, Session& s, Context& ctx);
  /// flush_pending for the ends of a batch or a stats request: anything it
  /// throws outside the op rules is logged, never propagated.
  void flush_pending_logged(uint64_t session_id, Session& s, Context& ctx);
  /// Runs a fully matched unit with a compiled variant, then its deferred
  /// frees; false when it ran eagerly instead.
  bool run_compiled(uint64_t session_id, Session& s, Promoted& p, Context& ctx);
  /// Ends a held unit whose ops ran compiled (or failed): runs its deferred frees.
  void run_held_frees(uint64_t session_id, Session& s, Context& ctx);
  /// Note [dead values]: true when every value `chain` does not materialise
  /// is freed later in the current batch and named by nothing in between.
  bool dead_after_unit(const jit::Chain& chain, const jit::ChainMatcher& m,
                       std::span<const wire::Instruction* const> held, uint32_t unit_start,
                       Context& ctx);
  /// Keeps the batch's header frame so that the held instructions of a partly
  /// matched unit stay valid until the next batch completes or flushes it.
  void retain_held(Session& s, const wire::Batch& batch, zmq::message_t& header);
  static constexpr size_t kMaxRetained = 4;  // batches one unit may span
  /// Note [compile scopes]: a UnitBegin/UnitEnd marker from the dispatcher.
  void on_unit_marker(Session& s, const wire::Instruction& in);
  /// Submits the units the session's detector reported during the batch.
  void promote_detections(uint64_t session_id, Session& s);
  static constexpr size_t kMaxPendingDetections = 16;
  /// Feeds an executed op to the session's recorder; keeps what it detects.
  void record_op(uint64_t session_id, Session& s, const wire::Instruction& in, size_t inputs,
                 std::span<const TensorMeta> outputs);
  void run_fetch(uint64_t session_id, Session& s, const wire::Instruction& in, Context& ctx);
  void run_sync(uint64_t session_id, Session& s, const wire::Instruction& in, Context& ctx);
  /// Runs a Collective instruction (Note [collective instructions]); blocks
  /// until the group's other ranks take part or the communicator times out.
  void run_collective(Session& s, const wire::Instruction& in);

  /// Records an original failure of an Op instruction: builds the message,
  /// logs it, queues it for Sync and poisons the instruction's targets.
  void fail(Session& s, const wire::Instruction& in, const OpInfo* op, Status code,
            std::string_view what);
  void record(Session& s, wire::FailureInfo f);
  /// Poisons the instruction's outputs that are not live (and, for in-place
  /// ops, its live inputs[0]) with `f`.
  void poison_targets(Session& s, const wire::Instruction& in, const OpInfo* op,
                      const std::shared_ptr<const wire::FailureInfo>& f);
  /// The same, with `in_place` saying whether inputs[0] is written.
  void poison_targets(Session& s, const wire::Instruction& in, bool in_place,
                      const std::shared_ptr<const wire::FailureInfo>& f);
  /// An original failure of a Collective: "[worker N] NAME over workers
  /// GROUP failed: WHAT (inputs: ...)" (`group` empty while unparsed),
  /// logged, queued for Sync; returns it for poisoning.
  std::shared_ptr<const wire::FailureInfo> collective_failure(Session& s,
                                                              const wire::Instruction& in,
                                                              std::string_view name,
                                                              std::string_view group, Status code,
                                                              std::string_view what);
  std::string describe_inputs(const Session& s, const wire::Instruction& in) const;
  /// Note [fetch buffers]: call before writing into `t`'s storage in place.
  void before_write(const at::Tensor& t);
  at::Generator& generator(Session& s);

  ExecutorOptions options_;
  std::shared_ptr<spdlog::logger> log_;
  std::unordered_map<uint64_t, Session> sessions_;
  // Scratch reused by every instruction so the hot path does not allocate.
  std::vector<at::Tensor> inputs_;
  std::vector<TensorMeta> metas_;
  std::shared_ptr<detail::SendTracker> sends_;  // fetch frames still in flight
  uint64_t instructions_executed_ = 0;
  std::shared_ptr<InstructionLog> ilog_;  // Note [worker events]
  bool log_events_ = false;
  bool timing_ = false;
  std::array<int64_t, kUtilCategories> busy_ns_{};
};

}  // namespace gt::worker
