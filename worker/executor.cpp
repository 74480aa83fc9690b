#include "worker/executor.h"

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <unordered_set>
#include <utility>

#include <c10/core/CPUAllocator.h>
#include <c10/core/GeneratorImpl.h>

#include "common/check.h"
#include "common/dtype_rules.h"
#include "common/logging.h"
#include "common/zero_copy.h"
#include "worker/internal/tensor_meta.h"
#include "worker/kernels.h"

namespace gt::worker {

namespace {

// A session that never syncs must not grow without bound: failures past this
// many are counted and reported as one summary entry at the next Sync.
constexpr size_t kMaxPendingFailures = 1024;
// Original failures logged at warn per session; later ones go to debug so a
// failing loop cannot flood the log.
constexpr size_t kMaxWarnedFailures = 100;
// Tensors a new session makes room for up front.
constexpr size_t kSessionReserve = 1024;

using wire::FailureInfo;
using wire::TensorId;

using detail::describe;
using detail::matches;
using detail::meta_of;
using detail::saturating_bytes;

// gt::infer prefixes its messages with "<op>: "; the failure message names the
// op already.
std::string_view strip_op_prefix(std::string_view what, std::string_view op) {
  if (what.size() > op.size() + 2 && what.substr(0, op.size()) == op &&
      what.substr(op.size(), 2) == ": ") {
    what.remove_prefix(op.size() + 2);
  }
  return what;
}

}  // namespace

namespace detail {

// Note [fetch buffers]: a FetchReply's data frame hands ZeroMQ a pointer into
// the fetched tensor's storage (zero copy); ZeroMQ reads it on its own thread
// until the frame is sent. A later in-place op in the same stream must not
// change bytes that are still queued, so before an in-place op writes to a
// storage with frames in flight, the storage moves to a copy of its bytes (all
// views follow, since they share the StorageImpl) and the old buffer is kept
// here until the last such frame is released. Nothing is copied when no fetch
// is in flight, which is the common case: clients wait for fetched data.
class SendTracker {
 public:
  /// Executor thread: a frame now reads `storage`'s current buffer.
  void add(const c10::StorageImpl* storage) {
    std::lock_guard lock(mutex_);
    ++entries_[storage].frames;
    in_flight_.fetch_add(1, std::memory_order_release);
  }

  /// Any thread (ZeroMQ frees sent frames on its IO thread).
  void release(const c10::StorageImpl* storage) noexcept {
    std::vector<c10::DataPtr> retired;  // freed outside the lock
    {
      std::lock_guard lock(mutex_);
      auto it = entries_.find(storage);
      if (it != entries_.end() && --it->second.frames == 0) {
        retired = std::move(it->second.retired);
        entries_.erase(it);
      }
    }
    in_flight_.fetch_sub(1, std::memory_order_release);
  }

  /// Executor thread, before writing into `storage` (CPU only).
  void before_write(const c10::Storage& storage) {
    if (in_flight_.load(std::memory_order_acquire) == 0) return;
    std::lock_guard lock(mutex_);
    auto it = entries_.find(storage.unsafeGetStorageImpl());
    if (it == entries_.end()) return;
    const size_t n = storage.nbytes();
    c10::DataPtr fresh = c10::GetCPUAllocator()->allocate(n);
    if (n) std::memcpy(fresh.get(), storage.data_ptr().get(), n);
    it->second.retired.push_back(storage.set_data_ptr(std::move(fresh)));
  }

 private:
  struct Entry {
    int frames = 0;
    std::vector<c10::DataPtr> retired;  // old buffers frames still read
  };
  std::mutex mutex_;
  std::unordered_map<const c10::StorageImpl*, Entry> entries_;  // guarded by mutex_
  std::atomic<size_t> in_flight_{0};
};

}  // namespace detail

namespace {

// What a fetch data frame owns: the tensor (keeps the bytes alive) and, when the
// tensor shares storage with a stored tensor, its entry in the tracker.
struct FetchHold {
  at::Tensor tensor;
  std::shared_ptr<detail::SendTracker> tracker;  // null for a private copy
  const c10::StorageImpl* storage = nullptr;
};

void free_fetch_hold(void* data, void* hint) noexcept {
  tsan::acquire(data);  // Note [zero-copy frames and TSan]
  auto* hold = static_cast<FetchHold*>(hint);
  if (hold->tracker) hold->tracker->release(hold->storage);
  delete hold;
}

}  // namespace

namespace {

// Utilisation categories of STATS (docs/instruction_log.md, "Events"): the
// op table's kinds in enum order, then these.
constexpr int kCompiledCategory = 9;
constexpr int kFetchCategory = 10;
constexpr int kFreeCategory = 11;
constexpr int kSyncCategory = 12;
constexpr int kCollectiveCategory = 13;

// The bytes a compiled unit's results keep after it ran: those of the values
// that escape it (Note [session memory]).
uint64_t escaping_bytes(const jit::Chain& chain) {
  uint64_t bytes = 0;
  int32_t value = 0;
  for (const jit::ChainOp& op : chain.ops) {
    for (const TensorMeta& m : op.output_metas) {
      if (static_cast<size_t>(value) < chain.escapes.size() && chain.escapes[value]) {
        bytes = std::max(bytes, bytes + saturating_bytes(m));
      }
      ++value;
    }
  }
  return bytes;
}

// Whether an op's result takes new memory (Note [session memory]): views and
// in-place ops take none. A reshape that has to copy is counted at the next
// recount.
bool allocates(const OpInfo& op) {
  if (op.kind == OpKind::Inplace || op.kind == OpKind::Control) return false;
  if (op.kind != OpKind::Shape) return true;
  return op.code == OpCode::Cat || op.code == OpCode::Stack;
}

}  // namespace

struct Executor::Context {
  Context(std::span<zmq::message_t> d, const ReplySink& s, const wire::Batch* b)
      : data(d), sink(s), batch(b) {}
  std::span<zmq::message_t> data;
  std::vector<bool> consumed;  // data frames taken by FromData (sized on first use)
  const ReplySink& sink;
  const wire::Batch* batch = nullptr;
  uint32_t position = 0;  // index of the instruction being run in batch
  // Note [dead values]: ids the batch frees -> first Free position and the
  // last position of another instruction naming them (built on first need).
  struct Liveness {
    uint32_t freed_at;
    uint32_t last_named = 0;
  };
  bool liveness_built = false;
  std::unordered_map<TensorId, Liveness> liveness;
};

Executor::Executor(ExecutorOptions options)
    : options_(std::move(options)),
      log_(options_.logger ? options_.logger : make_logger("worker")),
      sends_(std::make_shared<detail::SendTracker>()) {
  inputs_.reserve(4);
  metas_.resize(4);
}

Executor::~Executor() = default;

void Executor::handle_message(Frames& frames, const ReplySink& sink) {
  if (frames.empty()) return;
  const wire::Message* msg = nullptr;
  try {
    msg = wire::decode(frames[0]);
  } catch (const std::exception& e) {
    log_->warn("[worker.handle] dropped a malformed message: {}", e.what());
    try {
      Frames reply;
      reply.push_back(wire::encode_error_reply(
          0, 0, wire::failure(Status::Malformed, e.what(), options_.worker)));
      sink(std::move(reply));
    } catch (const std::exception& e2) {
      log_->error("[worker.handle] could not send a malformed-message reply: {}", e2.what());
    }
    return;
  }
  handle_verified(*msg, std::span(frames).subspan(1), sink, &frames[0]);
}

void Executor::handle_verified(const wire::Message& message, std::span<zmq::message_t> data,
                               const ReplySink& sink, zmq::message_t* header) {
  switch (message.body_type()) {
    case wire::Body::Batch:
      run_batch(message.session(), *message.body_as_Batch(), data, sink, header);
      break;
    case wire::Body::Bye:
      drop_session(message.session());
      break;
    default:
      log_->warn(
          "[worker.handle] ignored a {} message for session={}: only Batch and Bye "
          "reach the executor",
          wire::body_name(message.body_type()), message.session());
      break;
  }
}

void Executor::run_batch(uint64_t session, const wire::Batch& batch, std::span<zmq::message_t> data,
                         const ReplySink& sink, zmq::message_t* header) {
  // No autograd on the worker: inference mode skips version counters and
  // autograd metadata on every op.
  c10::InferenceMode inference;
  auto [it, created] = sessions_.try_emplace(session);
  Session& s = it->second;
  if (created) {
    s.tensors.reserve(kSessionReserve);
    if (options_.jit) {
      jit::RecorderOptions ro;
      ro.threshold = options_.jit->options().detector_threshold();
      s.recorder = std::make_unique<jit::SequenceRecorder>(ro);
    }
    SPDLOG_LOGGER_DEBUG(log_, "session opened session={}", session);
  }
  const auto* instructions = batch.instructions();
  if (!instructions) return;
  Context ctx(data, sink, &batch);
  if (s.pending_promotions > 0) refresh_promoted(s);
  for (const wire::Instruction* in : *instructions) {
    if (!in) {
      ++ctx.position;
      continue;
    }
    try {
      if (!(s.recorder && offer_compiled(session, s, *in, ctx))) run_instruction(session, s, *in, ctx);
    } catch (const std::exception& e) {
      // Only reply sending can get here (e.g. a socket closing at shutdown);
      // instruction failures are values.
      inputs_.clear();
      log_->error("[worker.run_batch] session={} instruction failed outside the op rules: {}",
                  session, e.what());
    } catch (...) {
      inputs_.clear();
      log_->error("[worker.run_batch] session={} instruction threw a non-standard exception",
                  session);
    }
    ++instructions_executed_;
    ++ctx.position;
  }
  // A partly matched unit's instructions point into this message, which the
  // caller releases after we return: keep its header frame (the unit
  // completes in the next batch), or run them eagerly now.
  if (!s.held.empty()) {
    if (header && s.retained.size() < kMaxRetained) {
      retain_held(s, batch, *header);
    } else {
      flush_pending_logged(session, s, ctx);
    }
  }
  if (!s.detections.empty()) promote_detections(session, s);
}

// Note [compiled execution]
// Once a unit this session promoted is compiled, every Op instruction is
// offered to ChainMatchers (Note [chain matching] in worker/jit/matcher.h):
// the one of the unit being matched, or, between units, each ready unit in
// turn (a loop whose last batch is smaller has two shapes of its body, each
// a promoted unit). While a unit is partly matched its ops and any Free
// instructions are held (frees only release memory: deferring them never
// changes a result); an upload runs at once (it reads nothing, and the unit
// reads its result as an external). When the unit's last op matches, a
// compiled variant runs in place of those ops (Note [dead values]) and the
// held frees follow. Anything else flushes the held instructions to eager
// execution, in order: a divergence, a Fetch or Sync (they need the values).
// At the end of a batch a partly matched unit keeps the batch's header frame
// (held instructions point into it; retain_held) and completes in the next
// batch, up to kMaxRetained batches; the client seals a batch every 500 us,
// so long units (a training step) often span two. A compiled
// run that fails before it starts (bad externals) falls back to eager; one
// that fails midway poisons the unit's outputs like an eager failure and
// turns the JIT off for that unit (one warning).
//
// Note [dead values]
// Each promoted unit has two compiled variants. `escaping` materialises every
// value the unit produces, so every id the client may name later exists, as
// in eager execution. `elided` leaves out the values the recorder saw freed
// in every observed iteration and read by nothing after the unit; fused
// kernels then never write them, which is most of fusion's gain on large
// tensors. The elided variant runs only when this batch proves those values
// dead: each one's id is in a Free instruction of the batch (the client
// sends the frees issued while a batch was open at its end, Note [tensor
// release batching] in client/internal/session.h) and no instruction between
// the unit and that Free names it. Otherwise the escaping variant runs. Ids
// are never reused, so nothing after the Free can name the value either.
bool Executor::offer_compiled(uint64_t session_id, Session& s, const wire::Instruction& in,
                              Context& ctx) {
  if (s.promoted.empty()) return false;
  switch (in.kind()) {
    case wire::InstrKind::Free:
      if (s.held.empty()) return false;
      s.held.push_back(&in);
      return true;
    case wire::InstrKind::Fetch:
    case wire::InstrKind::Sync:
    case wire::InstrKind::Collective:  // reads and writes values like a fetch
      if (!s.held.empty()) flush_pending(session_id, s, ctx);
      return false;
    case wire::InstrKind::Op:
      break;
    default:  // Scope is a no-op and keeps a unit matching; Configure fails alone
      return false;
  }
  if (in.op() == static_cast<uint16_t>(OpCode::FromData) && !s.held.empty()) return false;
  const OpInfo* op = find_op(in.op());
  if (!op || !valid_dtype_code(in.dtype())) {
    if (!s.held.empty()) flush_pending(session_id, s, ctx);
    return false;
  }
  const jit::LiveMeta live_meta = [&s](TensorId id) -> std::optional<TensorMeta> {
    auto it = s.tensors.find(id);
    if (it == s.tensors.end() || it->second.poison) return std::nullopt;
    return meta_of(it->second.tensor);
  };
  const jit::OfferedOp offered{op->code, wire::view(in.ints()), wire::view(in.floats()),
                               static_cast<DType>(in.dtype()), wire::view(in.inputs()),
                               wire::view(in.outputs())};
  Promoted* unit = s.active;
  jit::ChainMatcher::Step step = jit::ChainMatcher::Step::Diverged;
  if (unit) {
    step = unit->matcher->offer(offered, live_meta);
    // The held unit was not this chain after all; this op may start another.
    if (step == jit::ChainMatcher::Step::Diverged) flush_pending(session_id, s, ctx);
  }
  if (step == jit::ChainMatcher::Step::Diverged) {
    unit = nullptr;
    for (const auto& p : s.promoted) {
      if (!p->matcher || p->failed) continue;
      step = p->matcher->offer(offered, live_meta);
      if (step != jit::ChainMatcher::Step::Diverged) {
        unit = p.get();
        s.active = unit;
        s.held_start = ctx.position;
        break;
      }
    }
    if (!unit) return false;
  }
  s.held.push_back(&in);
  if (step == jit::ChainMatcher::Step::Continue) return true;
  // Complete: the whole unit is held.
  const int trial = options_.jit->options().trial_units;
  if (unit->trial_units < 2 * trial && unit->trial_units % 2 == 1) {
    // A timed eager run of the unit, to compare with the compiled ones.
    const auto t0 = std::chrono::steady_clock::now();
    flush_pending(session_id, s, ctx);
    unit->trial_eager_ns =
        std::min<int64_t>(unit->trial_eager_ns, (std::chrono::steady_clock::now() - t0).count());
    end_trial_unit(s, *unit);
    return true;
  }
  const auto t0 = std::chrono::steady_clock::now();
  const bool ran = run_compiled(session_id, s, *unit, ctx);
  if (ran && unit->trial_units < 2 * trial && !unit->failed) {
    unit->trial_compiled_ns = std::min<int64_t>(unit->trial_compiled_ns,
                                               (std::chrono::steady_clock::now() - t0).count());
    end_trial_unit(s, *unit);
  }
  return true;
}

void Executor::refresh_promoted(Session& s) {
  size_t pending = 0;
  // Ready: take the compiled chain; failed (or never queued): clear the
  // digest so it is not asked again; pending: ask again next batch.
  auto poll = [&](uint64_t& digest, std::shared_ptr<const jit::CompiledChain>& out) {
    if (digest == 0 || out) return;
    switch (options_.jit->state(digest)) {
      case jit::ChainState::Ready: out = options_.jit->find(digest); break;
      case jit::ChainState::Pending: ++pending; break;
      case jit::ChainState::Failed:
      case jit::ChainState::Unknown: digest = 0; break;
    }
  };
  for (const auto& p : s.promoted) {
    if (p->failed) continue;
    poll(p->digests.elided, p->elided);
    poll(p->digests.escaping, p->escaping);
    if (!p->escaping && !p->elided && p->digests.escaping == 0 && p->digests.elided == 0) {
      p->failed = true;  // neither variant compiled
      continue;
    }
    // Both variants have the same ops: either one's chain serves the matcher.
    // Matching starts once neither is still compiling: the system compiler
    // shares the machine with the trial's timed units and would skew them.
    const bool compiling = (p->digests.escaping != 0 && !p->escaping) ||
                           (p->digests.elided != 0 && !p->elided);
    if (!p->matcher && !compiling && (p->escaping || p->elided)) {
      const jit::CompiledChain& c = p->escaping ? *p->escaping : *p->elided;
      p->matcher = std::make_unique<jit::ChainMatcher>(c.graph().chain);
    }
  }
  s.pending_promotions = pending;
}

void Executor::end_trial_unit(Session& s, Promoted& p) {
  const int trial = options_.jit->options().trial_units;
  if (++p.trial_units < 2 * trial) return;
  // The fastest unit of each kind: both kinds alternate on the same machine,
  // and the minimum leaves out the units an interrupt or another process hit.
  const double compiled_ms = 1e-6 * static_cast<double>(p.trial_compiled_ns);
  const double eager_ms = 1e-6 * static_cast<double>(p.trial_eager_ns);
  const bool faster = compiled_ms < eager_ms;
  options_.jit->report_trial(p.matcher->chain().digest(), compiled_ms, eager_ms, faster);
  if (faster) return;
  // A compiled path must never make a program slower.
  p.failed = true;
  if (s.active == &p) s.active = nullptr;
}

void Executor::flush_pending(uint64_t session_id, Session& s, Context& ctx) {
  std::vector<const wire::Instruction*> held;
  held.swap(s.held);
  if (s.active) s.active->matcher->reset();
  s.active = nullptr;
  // The unit may have been dropped meanwhile: held ops still run, in order.
  for (const wire::Instruction* in : held) run_instruction(session_id, s, *in, ctx);
  s.retained.clear();
}

void Executor::flush_pending_logged(uint64_t session_id, Session& s, Context& ctx) {
  try {
    flush_pending(session_id, s, ctx);
  } catch (const std::exception& e) {
    inputs_.clear();
    log_->error("[worker.flush] session={} flush failed outside the op rules: {}", session_id,
                e.what());
  }
}

void Executor::retain_held(Session& s, const wire::Batch& batch, zmq::message_t& header) {
  // Moving a ZeroMQ message may move its bytes (small messages live inside
  // the message object), so held pointers into this batch are re-resolved by
  // index in the moved frame. Pointers into earlier retained frames stay.
  const auto& instructions = *batch.instructions();
  std::unordered_map<const wire::Instruction*, uint32_t> index;
  index.reserve(s.held.size());
  for (const wire::Instruction* in : s.held) index.emplace(in, UINT32_MAX);
  for (uint32_t i = 0; i < instructions.size(); ++i) {
    if (auto it = index.find(instructions[i]); it != index.end()) it->second = i;
  }
  s.retained.push_back(std::move(header));
  const auto& moved = *wire::GetMessage(s.retained.back().data())->body_as_Batch()->instructions();
  for (const wire::Instruction*& in : s.held) {
    if (const uint32_t i = index.at(in); i != UINT32_MAX) in = moved[i];
  }
  // Positions of the next batch start at 0: all of its frees come after the
  // unit's start (Note [dead values]).
  s.held_start = 0;
}

bool Executor::dead_after_unit(const jit::Chain& chain, const jit::ChainMatcher& m,
                               std::span<const wire::Instruction* const> held,
                               uint32_t unit_start, Context& ctx) {
  if (!ctx.batch || !ctx.batch->instructions()) return false;
  const auto& instructions = *ctx.batch->instructions();
  if (!ctx.liveness_built) {
    ctx.liveness_built = true;
    for (uint32_t i = 0; i < instructions.size(); ++i) {
      const wire::Instruction* in = instructions[i];
      if (!in || in->kind() != wire::InstrKind::Free) continue;
      for (TensorId id : wire::view(in->inputs())) ctx.liveness.try_emplace(id, Context::Liveness{i});
    }
    if (!ctx.liveness.empty()) {
      auto name = [&ctx](TensorId id, uint32_t i) {
        if (auto it = ctx.liveness.find(id); it != ctx.liveness.end()) it->second.last_named = i;
      };
      for (uint32_t i = 0; i < instructions.size(); ++i) {
        const wire::Instruction* in = instructions[i];
        if (!in || in->kind() == wire::InstrKind::Free) continue;
        for (TensorId id : wire::view(in->inputs())) name(id, i);
        for (TensorId id : wire::view(in->outputs())) name(id, i);
      }
    }
  }
  // Frees the unit's instructions held (some may come from an earlier batch
  // when the unit spans two): the client released those ids mid-unit.
  std::vector<TensorId> held_frees;
  for (const wire::Instruction* in : held) {
    if (in->kind() != wire::InstrKind::Free) continue;
    for (TensorId id : wire::view(in->inputs())) held_frees.push_back(id);
  }
  const auto produced = m.produced_ids();
  for (size_t k = 0; k < chain.escapes.size() && k < produced.size(); ++k) {
    if (chain.escapes[k]) continue;
    if (std::find(held_frees.begin(), held_frees.end(), produced[k]) != held_frees.end()) continue;
    auto it = ctx.liveness.find(produced[k]);
    if (it == ctx.liveness.end() || it->second.freed_at < unit_start ||
        it->second.last_named > ctx.position) {
      return false;
    }
  }
  return true;
}

bool Executor::run_compiled(uint64_t session_id, Session& s, Promoted& unit, Context& ctx) {
  const jit::ChainMatcher& m = *unit.matcher;
  const jit::CompiledChain* compiled = unit.escaping.get();
  if (unit.elided && dead_after_unit(unit.elided->graph().chain, m, s.held, s.held_start, ctx)) {
    compiled = unit.elided.get();
  }
  if (!compiled) {
    // The escaping variant failed to compile and this unit's values do not
    // all die: only eager computes them.
    flush_pending(session_id, s, ctx);
    return false;
  }
  const jit::Chain& chain = compiled->graph().chain;
  std::vector<at::Tensor> externals;
  externals.reserve(m.external_ids().size());
  for (TensorId id : m.external_ids()) {
    auto it = s.tensors.find(id);
    if (it == s.tensors.end() || it->second.poison) {
      options_.jit->count_fallback();
      flush_pending(session_id, s, ctx);  // eager reports it as it always does
      return false;
    }
    externals.push_back(it->second.tensor);
  }
  // Note [session memory]: a unit whose escaping results would take the
  // session past its limit runs eagerly instead, where the op that crosses
  // it fails with the usual message.
  if (options_.session_memory_limit > 0 &&
      over_session_limit(s, escaping_bytes(chain)).has_value()) {
    options_.jit->count_fallback();
    flush_pending(session_id, s, ctx);
    return false;
  }
  jit::RunOptions ro;
  ro.device = options_.device;
  ro.scalars = m.scalars();
  for (const jit::ChainOp& op : chain.ops) {
    if (op.op == OpCode::Randn || op.op == OpCode::Rand || op.op == OpCode::ManualSeed) {
      ro.generator = &generator(s);
      break;
    }
  }
  ro.before_inplace = [this](const at::Tensor& t) {
    if (t.device().is_cpu()) sends_->before_write(t.storage());  // Note [fetch buffers]
  };
  // GT_COMPILE_VERIFY: the unit's first compiled run also runs eagerly on
  // copies of its inputs (not for random ops: the eager run would move the
  // generator).
  std::vector<at::Tensor> eager_inputs, eager_results;
  if (options_.jit->options().verify && !unit.verified && !ro.generator) {
    unit.verified = true;
    try {
      for (const at::Tensor& t : externals) eager_inputs.push_back(t.clone());
      jit::RunOptions plain;
      plain.device = options_.device;
      plain.scalars = m.scalars();
      eager_results = compiled->run_eager(eager_inputs, plain);
    } catch (const std::exception& e) {
      log_->warn("[worker {}] JIT: GT_COMPILE_VERIFY's eager run failed: {}", options_.worker,
                 e.what());
      eager_inputs.clear();
    }
  }
  std::vector<at::Tensor> results;
  const auto run_start = std::chrono::steady_clock::now();
  try {
    results = compiled->run(externals, ro);
  } catch (const std::invalid_argument& e) {
    // Checked before anything ran: eager takes over for this unit.
    SPDLOG_LOGGER_DEBUG(log_, "[worker] JIT: compiled unit refused its inputs: {}", e.what());
    options_.jit->count_fallback();
    flush_pending(session_id, s, ctx);
    return false;
  } catch (const std::exception& e) {
    const std::string what = e.what();
    log_->warn("[worker {}] JIT: a compiled chain failed while running, session={} goes back "
               "to eager for it: {}", options_.worker, session_id, what);
    auto f = std::make_shared<const FailureInfo>(wire::failure(
        Status::ExecutionFailed,
        gt::detail::cat("[worker ", options_.worker, "] compiled chain failed: ", what),
        options_.worker, "compiled chain", m.produced_ids().empty() ? 0 : m.produced_ids()[0]));
    for (TensorId id : m.produced_ids()) s.tensors.try_emplace(id, Slot{at::Tensor(), f});
    record(s, *f);
    options_.jit->count_fallback();
    unit.failed = true;
    s.active = nullptr;
    run_held_frees(session_id, s, ctx);
    return true;
  }
  if (!eager_inputs.empty()) {
    // Results and in-place updated inputs, compiled against eager.
    std::vector<at::Tensor> want = eager_results, got = results;
    want.insert(want.end(), eager_inputs.begin(), eager_inputs.end());
    got.insert(got.end(), externals.begin(), externals.end());
    double max_abs = 0;
    for (size_t i = 0; i < want.size() && i < got.size(); ++i) {
      if (!want[i].defined() || !got[i].defined() || want[i].sizes() != got[i].sizes() ||
          !at::isFloatingType(want[i].scalar_type()) || want[i].numel() == 0) {
        continue;
      }
      max_abs = std::max(max_abs, (want[i].to(at::kDouble) - got[i].to(at::kDouble))
                                      .abs().max().item<double>());
    }
    options_.jit->report_verify(chain.digest(), max_abs, jit::compare_results(want, got));
  }
  const auto produced = m.produced_ids();
  for (size_t p = 0; p < produced.size() && p < results.size(); ++p) {
    if (results[p].defined()) s.tensors.emplace(produced[p], Slot{std::move(results[p]), nullptr});
  }
  options_.jit->count_run(compiled == unit.elided.get());
  if (timing_) {
    const int64_t ns = (std::chrono::steady_clock::now() - run_start).count();
    busy_ns_[kCompiledCategory] += ns;
    if (log_events_) {
      RawEvent e;
      e.session = session_id;
      e.dur_ns = ns;
      e.n = static_cast<int64_t>(chain.ops.size());
      e.n_out = static_cast<uint16_t>(std::min<size_t>(produced.size(), UINT16_MAX));
      for (size_t i = 0; i < produced.size() && i < RawEvent::kMaxOutIds; ++i) e.out[i] = produced[i];
      // Which unit and variant: free text, one event per unit, so record() is fine.
      ilog_->record("EXEC", "Compiled", "",
                    "sequence=" + jit::sequence_name(unit.digests.escaping) +
                        " ops=" + std::to_string(chain.ops.size()) + " variant=" +
                        (compiled == unit.elided.get() ? "elided" : "escaping") + " " +
                        raw_details(e));
    }
  }
  s.active = nullptr;
  run_held_frees(session_id, s, ctx);
  return true;
}

void Executor::run_held_frees(uint64_t session_id, Session& s, Context& ctx) {
  std::vector<const wire::Instruction*> held;
  held.swap(s.held);
  for (const wire::Instruction* in : held) {
    if (in->kind() == wire::InstrKind::Free) run_instruction(session_id, s, *in, ctx);
  }
  s.retained.clear();
}


std::string_view Executor::util_category(int i) {
  static constexpr std::string_view kNames[kUtilCategories] = {
      "Creation", "Control",  "Elementwise", "Linalg", "Reduction", "Shape", "Inplace",
      "Softmax",  "Index",    "Compiled",    "Fetch",  "Free",      "Sync",
      "Collective"};
  return i >= 0 && i < kUtilCategories ? kNames[i] : std::string_view("Control");
}

void Executor::set_instruction_log(std::shared_ptr<InstructionLog> log, bool events,
                                   bool timing) {
  ilog_ = std::move(log);
  log_events_ = ilog_ && events;
  timing_ = ilog_ && (events || timing);
}

namespace {

// Adds the bytes of the storages behind `tensors` not in `seen` yet: views
// share their base's storage, which counts once.
template <class Tensors>
uint64_t storage_bytes(const Tensors& tensors, std::unordered_set<const c10::StorageImpl*>& seen) {
  uint64_t bytes = 0;
  for (const auto& [tid, slot] : tensors) {
    if (!slot.tensor.defined() || !slot.tensor.has_storage()) continue;
    const c10::StorageImpl* storage = slot.tensor.storage().unsafeGetStorageImpl();
    if (seen.insert(storage).second) bytes += storage->nbytes();
  }
  return bytes;
}

}  // namespace

uint64_t Executor::tensor_bytes() const {
  std::unordered_set<const c10::StorageImpl*> seen;
  uint64_t bytes = 0;
  for (const auto& [id, session] : sessions_) bytes += storage_bytes(session.tensors, seen);
  return bytes;
}

uint64_t Executor::session_bytes(uint64_t session) const {
  auto it = sessions_.find(session);
  if (it == sessions_.end()) return 0;
  std::unordered_set<const c10::StorageImpl*> seen;
  return storage_bytes(it->second.tensors, seen);
}

// Note [session memory]
// Many clients share a worker, so one client's tensors must not take the
// memory the others need: with GT_SESSION_MEMORY_LIMIT set, an op whose
// results would take a session past the limit fails (execution_failed,
// reported at the client's next sync like any failure) before it
// allocates, and other sessions go on. Counting each storage exactly at
// every op would cost a pass over the session's tensors, so the executor
// keeps a bound that only grows (each result's bytes are added; frees are
// not subtracted, since a freed id's storage may live on in a view) and
// recounts exactly when the bound would cross the limit. Ops that make
// views (view, reshape, transpose, slice...) and in-place ops allocate
// nothing and are not checked. A compiled unit is checked for the results
// that escape it and runs eagerly when they do not fit, so that the op that
// crosses the limit is the one that fails. A collective's result is checked
// after the collective (the rank must take part, or its peers would hang)
// and is dropped when it does not fit.
std::optional<std::string> Executor::over_session_limit(Session& s, uint64_t bytes) {
  const uint64_t limit = options_.session_memory_limit;
  const auto fits = [&] { return bytes <= limit && s.bytes_bound <= limit - bytes; };
  if (!fits()) {
    std::unordered_set<const c10::StorageImpl*> seen;
    s.bytes_bound = storage_bytes(s.tensors, seen);
    if (!fits()) {
      return gt::detail::cat("out of memory for this session: its tensors hold ", s.bytes_bound,
                             " bytes on this worker and the result needs ", bytes,
                             " more, over the limit of ", limit,
                             " bytes per session (GT_SESSION_MEMORY_LIMIT)");
    }
  }
  s.bytes_bound += bytes;
  return std::nullopt;
}

// Note [worker events] is in worker/worker.cpp; this is the per-instruction
// part. Timing costs two clock reads per instruction, so it only runs while
// someone wants events or STATS.
void Executor::run_instruction(uint64_t session_id, Session& s, const wire::Instruction& in,
                               Context& ctx) {
  // A signal scope is the dispatcher's business (docs/protocol.md,
  // "Signals"): nothing runs, so nothing is timed or logged.
  if (in.kind() == wire::InstrKind::Scope) {
    on_unit_marker(s, in);
    return;
  }
  if (!timing_) {
    execute_instruction(session_id, s, in, ctx);
    return;
  }
  const size_t pending_before = s.pending.size();
  const auto t0 = std::chrono::steady_clock::now();
  execute_instruction(session_id, s, in, ctx);
  const auto t1 = std::chrono::steady_clock::now();
  const int64_t ns = (t1 - t0).count();
  int category = static_cast<int>(OpKind::Control);  // unknown ops: rejected, not run
  switch (in.kind()) {
    case wire::InstrKind::Op:
      if (const OpInfo* op = find_op(in.op())) category = static_cast<int>(op->kind);
      break;
    case wire::InstrKind::Fetch: category = kFetchCategory; break;
    case wire::InstrKind::Free: category = kFreeCategory; break;
    case wire::InstrKind::Sync: category = kSyncCategory; break;
    case wire::InstrKind::Collective: category = kCollectiveCategory; break;
    default: break;
  }
  busy_ns_[category] += ns;
  if (log_events_) log_instruction(session_id, s, in, t1, ns, pending_before);
}

void Executor::log_instruction(uint64_t session_id, const Session& s,
                               const wire::Instruction& in,
                               std::chrono::steady_clock::time_point end, int64_t ns,
                               size_t pending_before) {
  RawEvent e;
  e.session = session_id;
  e.dur_ns = ns;
  const auto ids_in = wire::view(in.inputs());
  const auto ids_out = wire::view(in.outputs());
  // Ids, and the shape of the result: the first output, else the first input
  // (an in-place op's target, all_reduce's reduced tensor, what send sent).
  auto describe_result = [&]() -> const at::Tensor* {
    e.n_in = static_cast<uint16_t>(std::min<size_t>(ids_in.size(), UINT16_MAX));
    for (size_t i = 0; i < ids_in.size() && i < RawEvent::kMaxIds; ++i) e.in[i] = ids_in[i];
    e.n_out = static_cast<uint16_t>(std::min<size_t>(ids_out.size(), UINT16_MAX));
    for (size_t i = 0; i < ids_out.size() && i < RawEvent::kMaxOutIds; ++i) e.out[i] = ids_out[i];
    const TensorId shown = !ids_out.empty() ? ids_out[0] : (!ids_in.empty() ? ids_in[0] : 0);
    auto it = s.tensors.find(shown);
    if (it == s.tensors.end() || !it->second.tensor.defined()) return nullptr;
    const auto sizes = it->second.tensor.sizes();
    e.ndim = static_cast<int16_t>(std::min<size_t>(sizes.size(), INT16_MAX));
    for (size_t d = 0; d < sizes.size() && d < RawEvent::kMaxDims; ++d) e.shape[d] = sizes[d];
    return &it->second.tensor;
  };
  switch (in.kind()) {
    case wire::InstrKind::Op: {
      const OpInfo* op = find_op(in.op());
      e.event = "EXEC";
      e.kind = "Op";
      e.op = op ? op->name : std::string_view("unknown");
      describe_result();
      break;
    }
    case wire::InstrKind::Free:
      e.event = "FREE";
      e.kind = "Free";
      e.n = static_cast<int64_t>(ids_in.size());
      break;
    case wire::InstrKind::Fetch:
      e.event = "FETCH";
      e.kind = "Fetch";
      e.req = in.request();
      if (!ids_in.empty()) {
        e.n_out = 1;
        e.out[0] = ids_in[0];
        if (auto it = s.tensors.find(ids_in[0]);
            it != s.tensors.end() && it->second.tensor.defined()) {
          e.bytes = static_cast<int64_t>(it->second.tensor.nbytes());
        }
      }
      break;
    case wire::InstrKind::Sync:
      e.event = "SYNC";
      e.kind = "Sync";
      e.req = in.request();
      e.n = static_cast<int64_t>(pending_before);  // failures reported by this sync
      break;
    case wire::InstrKind::Collective: {
      e.event = "EXEC";
      e.kind = "Collective";
      const auto code = static_cast<collectives::Collective>(in.op());
      e.op = in.op() >= 1 && in.op() <= 7 ? collectives::to_string(code)
                                          : std::string_view("unknown");
      if (const at::Tensor* t = describe_result()) {
        e.bytes = static_cast<int64_t>(t->numel() * t->element_size());
      }
      break;
    }
    default:
      e.event = "EXEC";
      e.kind = "Unknown";
      break;
  }
  ilog_->record_raw(e, end);
}

void Executor::execute_instruction(uint64_t session_id, Session& s, const wire::Instruction& in,
                                   Context& ctx) {
  switch (in.kind()) {
    case wire::InstrKind::Op: run_op(session_id, s, in, ctx); return;
    case wire::InstrKind::Free:
      for (TensorId id : wire::view(in.inputs())) s.tensors.erase(id);
      if (s.recorder) s.recorder->on_free(wire::view(in.inputs()));
      return;
    case wire::InstrKind::Fetch:
      if (s.recorder) s.recorder->on_barrier(wire::view(in.inputs()));
      run_fetch(session_id, s, in, ctx);
      return;
    case wire::InstrKind::Sync:
      if (s.recorder) s.recorder->on_barrier();
      run_sync(session_id, s, in, ctx);
      return;
    case wire::InstrKind::Collective:
      // A recorded unit must not span a collective: its inputs are read
      // here, and its outputs come from other workers.
      if (s.recorder) s.recorder->on_barrier(wire::view(in.inputs()));
      run_collective(s, in);
      return;
    case wire::InstrKind::Scope:
      return;  // the dispatcher's (run_instruction does not even get here)
    case wire::InstrKind::Configure:
      break;
  }
  const std::string what =
      in.kind() == wire::InstrKind::Configure
          ? gt::detail::cat("[worker ", options_.worker,
                            "] a Configure instruction reached the worker: it is dispatcher-only "
                            "(the session's signal config, docs/protocol.md \"Signals\")")
          : gt::detail::cat("[worker ", options_.worker, "] instruction kind ",
                            static_cast<int>(in.kind()), " is unknown (expected 0..6)");
  FailureInfo f = wire::failure(Status::Malformed, what, options_.worker, "",
                                wire::view(in.outputs()).empty() ? 0 : in.outputs()->Get(0));
  auto shared = std::make_shared<const FailureInfo>(f);
  poison_targets(s, in, nullptr, shared);
  record(s, std::move(f));
}

void Executor::record_op(uint64_t session_id, Session& s, const wire::Instruction& in,
                         size_t inputs, std::span<const TensorMeta> outputs) {
  try {
    std::optional<jit::Detection> d =
        s.recorder->on_op(in, std::span(metas_.data(), inputs), outputs);
    // Promoted at the end of the batch (promote_detections), once the batch's
    // frees have shown which values die (Note [dead values]).
    if (d && s.detections.size() < kMaxPendingDetections) s.detections.push_back(*d);
  } catch (const std::exception& e) {
    // The JIT never fails the stream: this op already ran eagerly.
    log_->warn("[worker {}] JIT: recording failed, session={} stays eager: {}", options_.worker,
               session_id, e.what());
    s.recorder.reset();
  }
}

// Note [compile scopes] (dispatcher/sharding.cpp): the ops between a
// UnitBegin and a UnitEnd marker are a compile unit at their first run: they
// are handed to the compile service like a unit the detector found, so the
// next run of the same ops can be matched and run compiled. A unit is
// submitted once per session (by its signatures); without the JIT
// (GT_AUTO_COMPILE/GT_COMPILE) the markers are ignored.
void Executor::on_unit_marker(Session& s, const wire::Instruction& in) {
  if (!s.recorder) return;
  const auto ints = wire::view(in.ints());
  const int64_t action = ints.empty() ? -1 : ints[0];
  if (action == static_cast<int64_t>(wire::ScopeAction::UnitBegin)) {
    s.unit_begin = s.recorder->position();
    return;
  }
  if (action != static_cast<int64_t>(wire::ScopeAction::UnitEnd) || !s.unit_begin) return;
  const uint64_t begin = *s.unit_begin, end = s.recorder->position();
  s.unit_begin.reset();
  if (end - begin < 2 || end - begin > s.recorder->window() / 2 || begin < s.recorder->oldest()) {
    return;  // nothing to fuse, or more than the recorder keeps
  }
  uint64_t key = 0xcbf29ce484222325ull;
  for (uint64_t pos = begin; pos < end; ++pos) key = (key ^ s.recorder->signature(pos)) * 0x100000001b3ull;
  if (std::find(s.unit_keys.begin(), s.unit_keys.end(), key) != s.unit_keys.end() ||
      s.unit_keys.size() >= kMaxPromoted || s.detections.size() >= kMaxPendingDetections) {
    return;
  }
  s.unit_keys.push_back(key);
  jit::Detection d;
  d.period = static_cast<uint32_t>(end - begin);
  d.start = begin;
  d.repetitions = 1;
  d.region_begin = begin;
  d.key = key;
  s.detections.push_back(d);
}

void Executor::promote_detections(uint64_t session_id, Session& s) {
  std::vector<jit::Detection> detections;
  detections.swap(s.detections);
  if (!s.recorder) return;
  for (const jit::Detection& d : detections) {
    try {
      // Uploads carry payload frames: they run eagerly ahead of a compiled unit.
      jit::Chain chain = jit::without_uploads(s.recorder->chain(d));
      if (chain.ops.size() < 2) continue;  // nothing to fuse (e.g. repeated set-up ops)
      const std::optional<jit::Promotion> p =
          options_.jit->submit(session_id, std::move(chain), d.repetitions);
      if (!p || s.promoted.size() >= kMaxPromoted) continue;
      bool known = false;
      for (const auto& unit : s.promoted) known |= unit->digests.escaping == p->escaping;
      if (known) continue;  // promoted again: the same unit
      auto unit = std::make_unique<Promoted>();
      unit->digests = *p;
      s.promoted.push_back(std::move(unit));
      ++s.pending_promotions;
    } catch (const std::out_of_range& e) {
      // The unit left the recorder's window during a very long batch: the
      // detector reports the loop again if it goes on.
      SPDLOG_LOGGER_DEBUG(log_, "[worker] JIT: a detected unit left the window: {}", e.what());
    } catch (const std::exception& e) {
      log_->warn("[worker {}] JIT: promoting a chain failed, session={} stays eager: {}",
                 options_.worker, session_id, e.what());
      s.recorder.reset();
      return;
    }
  }
}

void Executor::run_op(uint64_t session_id, Session& s, const wire::Instruction& in,
                      Context& ctx) {
  struct ClearInputs {  // drop input references on every path out
    std::vector<at::Tensor>& v;
    ~ClearInputs() { v.clear(); }
  } clear_inputs{inputs_};

  const OpInfo* op = find_op(in.op());
  if (!op) {
    fail(s, in, nullptr, Status::UnknownOp,
         gt::detail::cat("op code ", in.op(), " is not in this worker's op table (0..", kNumOps - 1,
                         ")"));
    return;
  }
  const auto ids_in = wire::view(in.inputs());
  const auto ids_out = wire::view(in.outputs());

  // Bound the input list before looking anything up (variadic ops such as cat).
  if (ids_in.size() > static_cast<size_t>(kMaxInputs)) {
    fail(s, in, op, Status::InvalidArgument,
         gt::detail::cat(ids_in.size(), " input ids exceed the limit of ", kMaxInputs));
    return;
  }

  // Inputs must be live; a poisoned input passes its failure on silently.
  if (metas_.size() < ids_in.size()) metas_.resize(ids_in.size());
  std::shared_ptr<const FailureInfo> poisoned;
  for (size_t i = 0; i < ids_in.size(); ++i) {
    auto it = s.tensors.find(ids_in[i]);
    if (it == s.tensors.end()) {
      fail(s, in, op, Status::UnknownTensor,
           gt::detail::cat("tensor ", ids_in[i], " (input ", i, ") is not live in this session"));
      return;
    }
    const Slot& slot = it->second;
    if (slot.poison) {
      if (!poisoned) poisoned = slot.poison;
      continue;
    }
    inputs_.push_back(slot.tensor);
    TensorMeta& m = metas_[i];
    const auto sizes = slot.tensor.sizes();
    m.shape.assign(sizes.begin(), sizes.end());
    m.dtype = to_dtype(slot.tensor.scalar_type()).value_or(DType::Float32);
  }
  if (poisoned) {
    poison_targets(s, in, op, poisoned);
    return;
  }

  if (!valid_dtype_code(in.dtype())) {
    fail(s, in, op, Status::InvalidArgument,
         gt::detail::cat("dtype code ", static_cast<int>(in.dtype()), " is not a gt dtype (0..",
                         kNumDTypes - 1, ")"));
    return;
  }
  if (ids_out.size() != static_cast<size_t>(op->outputs)) {
    fail(s, in, op, Status::InvalidArgument,
         gt::detail::cat("expected ", op->outputs, " output ids, got ", ids_out.size()));
    return;
  }
  for (size_t i = 0; i < ids_out.size(); ++i) {
    bool repeated = false;
    for (size_t j = 0; j < i; ++j) repeated |= ids_out[j] == ids_out[i];
    if (repeated || s.tensors.contains(ids_out[i])) {
      fail(s, in, op, Status::InvalidArgument,
           gt::detail::cat("output id ", ids_out[i], " is already live in this session"));
      return;
    }
  }

  const DType dtype = static_cast<DType>(in.dtype());
  const auto ints = wire::view(in.ints());
  const auto floats = wire::view(in.floats());
  std::vector<TensorMeta> out;
  try {
    out = infer(*op, OpCall{std::span(metas_.data(), ids_in.size()), ints, floats, dtype});
  } catch (const std::invalid_argument& e) {
    fail(s, in, op, Status::InvalidArgument, strip_op_prefix(e.what(), op->name));
    return;
  } catch (const std::exception& e) {
    fail(s, in, op, Status::Internal, gt::detail::cat("shape rule threw: ", e.what()));
    return;
  }
  if (out.size() != ids_out.size()) {
    fail(s, in, op, Status::Internal,
         gt::detail::cat("shape rule gave ", out.size(), " outputs for ", ids_out.size(), " ids"));
    return;
  }
  if (options_.capacity_bytes > 0) {
    for (const TensorMeta& m : out) {
      const uint64_t bytes = saturating_bytes(m);
      if (bytes > options_.capacity_bytes) {
        fail(s, in, op, Status::ExecutionFailed,
             gt::detail::cat("out of memory: the result ", describe(m), " needs ", bytes,
                             " bytes, more than the worker's capacity of ", options_.capacity_bytes,
                             " bytes"));
        return;
      }
    }
  }

  if (options_.session_memory_limit > 0 && allocates(*op)) {
    uint64_t bytes = 0;
    for (const TensorMeta& m : out) bytes = std::max(bytes, bytes + saturating_bytes(m));
    if (auto why = over_session_limit(s, bytes)) {
      fail(s, in, op, Status::ExecutionFailed, *why);
      return;
    }
  }

  zmq::message_t* payload = nullptr;
  if (op->code == OpCode::FromData) {
    const int64_t index = in.payload();
    if (index < 0 || index >= static_cast<int64_t>(ctx.data.size())) {
      fail(s, in, op, Status::PayloadMismatch,
           gt::detail::cat("data frame ", index, " is missing: the batch carries ", ctx.data.size(),
                           " data frames"));
      return;
    }
    if (ctx.consumed.empty()) ctx.consumed.resize(ctx.data.size());
    if (ctx.consumed[index]) {
      fail(s, in, op, Status::PayloadMismatch,
           gt::detail::cat("data frame ", index,
                           " was already used by an earlier tensor of "
                           "this batch"));
      return;
    }
    const uint64_t expected = static_cast<uint64_t>(numel(out[0].shape)) * element_size(dtype);
    if (ctx.data[index].size() != expected) {
      fail(s, in, op, Status::PayloadMismatch,
           gt::detail::cat("data frame ", index, " has ", ctx.data[index].size(),
                           " bytes, expected ", expected, " for ", describe(out[0])));
      return;
    }
    ctx.consumed[index] = true;
    payload = &ctx.data[index];
  }

  at::Generator* gen = nullptr;
  if (op->code == OpCode::Randn || op->code == OpCode::Rand || op->code == OpCode::ManualSeed) {
    gen = &generator(s);
  }
  if (op->kind == OpKind::Inplace && inputs_[0].device().is_cpu()) {
    sends_->before_write(inputs_[0].storage());  // Note [fetch buffers]
  }

  const KernelArgs args{
      inputs_, ints, floats, dtype, out.empty() ? nullptr : &out[0], gen, options_.device, payload};
  at::Tensor result;
  try {
    result = kernel(op->code)(args);
  } catch (const c10::Error& e) {
    fail(s, in, op, Status::ExecutionFailed, e.what_without_backtrace());
    return;
  } catch (const std::exception& e) {
    fail(s, in, op, Status::ExecutionFailed, e.what());
    return;
  } catch (...) {
    fail(s, in, op, Status::ExecutionFailed, "the kernel threw a non-standard exception");
    return;
  }

  if (!out.empty()) {
    if (!matches(result, out[0])) {
      fail(s, in, op, Status::Internal,
           gt::detail::cat("kernel produced ", describe(result), " but the op table inferred ",
                           describe(out[0])));
      return;
    }
    s.tensors.emplace(ids_out[0], Slot{std::move(result), nullptr});
  }
  if (s.recorder) record_op(session_id, s, in, ids_in.size(), out);
}

void Executor::run_fetch(uint64_t session_id, Session& s, const wire::Instruction& in,
                         Context& ctx) {
  const uint64_t request = in.request();
  const auto ids = wire::view(in.inputs());
  auto reply_error = [&](const FailureInfo& f) {
    Frames reply;
    reply.push_back(wire::encode_error_reply(session_id, request, f));
    ctx.sink(std::move(reply));
  };
  auto error = [&](Status code, const std::string& what, TensorId id) {
    FailureInfo f =
        wire::failure(code, gt::detail::cat("[worker ", options_.worker, "] fetch failed: ", what),
                      options_.worker, "fetch", id);
    log_->warn("{} session={} req={}", f.message, session_id, request);
    reply_error(f);
  };
  if (ids.empty()) {
    error(Status::InvalidArgument, "no tensor id given", 0);
    return;
  }
  const TensorId id = ids[0];
  auto it = s.tensors.find(id);
  if (it == s.tensors.end()) {
    error(Status::UnknownTensor, gt::detail::cat("tensor ", id, " is not live in this session"),
          id);
    return;
  }
  if (it->second.poison) {
    reply_error(*it->second.poison);  // the original failure, logged when it happened
    return;
  }
  const at::Tensor& t = it->second.tensor;
  at::Tensor cpu;
  try {
    c10::InferenceMode inference;
    cpu = t.device().is_cpu() ? t.contiguous() : t.to(at::kCPU).contiguous();
  } catch (const std::exception& e) {
    error(Status::ExecutionFailed,
          gt::detail::cat("copying tensor ", id, " to the host: ", e.what()), id);
    return;
  }
  const auto sizes = cpu.sizes();
  Frames reply;
  reply.reserve(2);
  reply.push_back(wire::encode_fetch_reply(session_id, request, id,
                                           to_dtype(cpu.scalar_type()).value_or(DType::Float32),
                                           std::span<const int64_t>(sizes.data(), sizes.size())));
  const size_t nbytes = cpu.numel() * cpu.element_size();
  if (nbytes == 0) {
    reply.emplace_back();
  } else {
    void* data = cpu.data_ptr();
    const c10::StorageImpl* storage = cpu.storage().unsafeGetStorageImpl();
    // A private copy (made by contiguous() or the device copy) needs no
    // tracking; a tensor shared with a slot does (Note [fetch buffers]).
    const bool shared = storage == t.storage().unsafeGetStorageImpl();
    auto* hold = new FetchHold{std::move(cpu), shared ? sends_ : nullptr, storage};
    if (shared) sends_->add(storage);
    reply.emplace_back(data, nbytes, &free_fetch_hold, hold);
  }
  ctx.sink(std::move(reply));
}

void Executor::run_sync(uint64_t session_id, Session& s, const wire::Instruction& in,
                        Context& ctx) {
  if (s.dropped_failures > 0) {
    s.pending.push_back(wire::failure(
        Status::ExecutionFailed,
        gt::detail::cat("[worker ", options_.worker, "] ", s.dropped_failures,
                        " more failures since the previous sync were not kept (limit ",
                        kMaxPendingFailures, ")"),
        options_.worker));
  }
  Frames reply;
  reply.push_back(wire::encode_sync_reply(session_id, in.request(), s.pending));
  s.pending.clear();
  s.dropped_failures = 0;
  ctx.sink(std::move(reply));
}

void Executor::fail(Session& s, const wire::Instruction& in, const OpInfo* op, Status code,
                    std::string_view what) {
  std::string name = op ? std::string(op->name) : gt::detail::cat("op#", in.op());
  const auto ids_out = wire::view(in.outputs());
  const auto ids_in = wire::view(in.inputs());
  TensorId tensor = 0;
  if (!ids_out.empty()) {
    tensor = ids_out[0];
  } else if (op && op->kind == OpKind::Inplace && !ids_in.empty()) {
    tensor = ids_in[0];
  }
  std::string message = gt::detail::cat("[worker ", options_.worker, "] ", name, " failed: ", what);
  if (!ids_in.empty()) message += gt::detail::cat(" (inputs: ", describe_inputs(s, in), ")");
  auto f = std::make_shared<const FailureInfo>(
      FailureInfo{code, std::move(message), options_.worker, std::move(name), tensor});
  poison_targets(s, in, op, f);
  record(s, *f);
}

void Executor::record(Session& s, FailureInfo f) {
  if (log_events_) {
    ilog_->record("ERROR", f.op.empty() ? "Failure" : "Op", f.op,
                  "out=" + std::to_string(f.tensor) + " code=" + std::string(to_string(f.code)) +
                      " what=" + f.message);
  }
  const size_t seen = s.pending.size() + s.dropped_failures;
  if (seen < kMaxWarnedFailures) {
    log_->warn("{} code={} tensor={}", f.message, to_string(f.code), f.tensor);
  } else {
    SPDLOG_LOGGER_DEBUG(log_, "{} code={} tensor={}", f.message, to_string(f.code), f.tensor);
  }
  if (s.pending.size() < kMaxPendingFailures) {
    s.pending.push_back(std::move(f));
  } else {
    ++s.dropped_failures;
  }
}

void Executor::poison_targets(Session& s, const wire::Instruction& in, const OpInfo* op,
                              const std::shared_ptr<const FailureInfo>& f) {
  poison_targets(s, in, op && op->kind == OpKind::Inplace, f);
}

void Executor::poison_targets(Session& s, const wire::Instruction& in, bool in_place,
                              const std::shared_ptr<const FailureInfo>& f) {
  for (TensorId id : wire::view(in.outputs())) {
    s.tensors.try_emplace(id, Slot{at::Tensor(), f});  // never overwrites a live id
  }
  const auto ids_in = wire::view(in.inputs());
  if (in_place && !ids_in.empty()) {
    if (auto it = s.tensors.find(ids_in[0]); it != s.tensors.end()) {
      it->second.tensor.reset();
      it->second.poison = f;
    }
  }
}

void Executor::before_write(const at::Tensor& t) {
  if (t.device().is_cpu()) sends_->before_write(t.storage());
}

std::string Executor::describe_inputs(const Session& s, const wire::Instruction& in) const {
  // Variadic ops (cat) may name many inputs: describe the first few.
  constexpr size_t kMaxDescribed = 8;
  const auto ids = wire::view(in.inputs());
  std::string out;
  for (size_t i = 0; i < ids.size(); ++i) {
    const TensorId id = ids[i];
    if (i == kMaxDescribed) {
      out += gt::detail::cat(", ... (", ids.size() - i, " more)");
      break;
    }
    if (!out.empty()) out += ", ";
    auto it = s.tensors.find(id);
    if (it == s.tensors.end()) {
      out += gt::detail::cat("unknown id ", id);
    } else if (it->second.poison) {
      out += gt::detail::cat("poisoned id ", id);
    } else {
      out += describe(meta_of(it->second.tensor));
    }
  }
  return out;
}

at::Generator& Executor::generator(Session& s) {
  // Unseeded sessions draw a fresh seed, so shards on different workers differ;
  // ManualSeed makes a session reproducible.
  if (!s.generator) s.generator = make_cpu_generator(c10::detail::getNonDeterministicRandom());
  return *s.generator;
}

void Executor::flush_held(uint64_t session, const ReplySink& sink) {
  auto it = sessions_.find(session);
  if (it == sessions_.end() || it->second.held.empty()) return;
  c10::InferenceMode inference;
  Context ctx({}, sink, nullptr);
  flush_pending_logged(session, it->second, ctx);
}

void Executor::drop_session(uint64_t session) {
  auto it = sessions_.find(session);
  if (it == sessions_.end()) return;
  // Lifecycle, so info: tests and operators check that memory came back.
  log_->info("session closed session={} freed={}", session, it->second.tensors.size());
  sessions_.erase(it);
}

void Executor::drop_all_sessions() {
  sessions_.clear();
  if (options_.collectives) options_.collectives->reset();  // Note [communicator cache]
}

size_t Executor::tensor_count(uint64_t session) const {
  auto it = sessions_.find(session);
  return it == sessions_.end() ? 0 : it->second.tensors.size();
}

size_t Executor::tensor_count() const {
  size_t n = 0;
  for (const auto& [id, s] : sessions_) n += s.tensors.size();
  return n;
}

std::optional<at::Tensor> Executor::tensor(uint64_t session, TensorId id) const {
  auto it = sessions_.find(session);
  if (it == sessions_.end()) return std::nullopt;
  auto slot = it->second.tensors.find(id);
  if (slot == it->second.tensors.end() || slot->second.poison) return std::nullopt;
  return slot->second.tensor;
}

std::shared_ptr<const FailureInfo> Executor::poison(uint64_t session, TensorId id) const {
  auto it = sessions_.find(session);
  if (it == sessions_.end()) return nullptr;
  auto slot = it->second.tensors.find(id);
  return slot == it->second.tensors.end() ? nullptr : slot->second.poison;
}

}  // namespace gt::worker
