#pragma once
// The client's instruction queue between user threads and the IO thread.

#include <chrono>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <vector>

#include <zmq.hpp>

#include <gt/export.h>

#include "client/internal/scope.h"
#include "common/wire.h"

namespace gt::client {

/// One sealed batch: instructions in issue order plus the data frames their
/// FromData instructions name by index (Instr.payload). With stats_request
/// set it is no batch but a StatsRequest{stats_request} to send in its place
/// in the stream (instrs and payloads are empty).
struct Batch {
  std::vector<wire::Instr> instrs;
  std::vector<zmq::message_t> payloads;
  uint64_t stats_request = 0;
};

/// Collects instructions from any number of user threads into an open batch
/// and seals it when it reaches max_instructions, when a sync point calls
/// seal(), or when the IO thread finds it older than the batch delay. Released
/// ids are collected apart and appended as one Free instruction at the end of
/// the next sealed batch: every instruction that names an id was queued before
/// the id's last handle died, so the Free always follows them.
///
/// Thread-safe (one mutex, held only for the append). push() and push_free()
/// return true when the IO thread must be woken: the batch was sealed, or the
/// open batch just became non-empty (so the IO thread starts its delay timer).
/// After close(), push() throws gt::Error and push_free() does nothing.
///
/// Signal scopes (Note [lazy signal scopes] in scope.h): the queue keeps the
/// stream's scope stack. push() with a scope first appends the Scope
/// instructions that bring the stream to that stack (ops); push() without
/// one, push_and_seal() and the Free leave the stream's stack as it is.
class GT_API BatchQueue {
 public:
  using Clock = std::chrono::steady_clock;

  explicit BatchQueue(size_t max_instructions);
  BatchQueue(const BatchQueue&) = delete;
  BatchQueue& operator=(const BatchQueue&) = delete;

  /// Appends a scope-neutral instruction; returns whether to wake the IO thread.
  bool push(wire::Instr&& instr);
  /// Appends an instruction issued in `scope` (the issuing thread's stack),
  /// preceded by the Scope instructions that take the stream there.
  bool push(wire::Instr&& instr, const ScopeRef& scope);
  /// Appends an instruction issued in `scope` with its data frame, setting
  /// instr.payload to the frame's index in its batch; returns whether to wake
  /// the IO thread.
  bool push(wire::Instr&& instr, zmq::message_t&& payload, const ScopeRef& scope);
  /// Appends an instruction and seals the batch at once (sync points: one
  /// wake-up instead of two). The IO thread must be woken afterwards.
  void push_and_seal(wire::Instr&& instr);
  /// Seals the open batch (and pending frees), then queues a StatsRequest
  /// tagged `request` behind it, so it leaves after everything issued before.
  /// The IO thread must be woken afterwards.
  void push_stats_request(uint64_t request);
  /// Queues an id for the next Free; returns whether to wake the IO thread.
  bool push_free(wire::TensorId id) noexcept;
  /// Seals the open batch (and pending frees) if there is anything.
  void seal();
  /// Seals the open batch once it is `max_delay` old. Returns the time at
  /// which it will be due when it is not yet, nullopt when nothing is open.
  std::optional<Clock::time_point> seal_if_due(Clock::time_point now,
                                               Clock::duration max_delay);
  /// Moves the oldest sealed batch into `out`; false when none is sealed.
  bool pop(Batch& out);
  /// Refuses further instructions and drops everything queued.
  void close() noexcept;
  bool closed() const;
  /// Instructions in the open batch (for tests).
  size_t open_size() const;

 private:
  // All require mutex_.
  void check_open_locked() const;
  void seal_locked();
  void mark_open_locked(bool& wake);
  // Appends to the open batch, sealing it when it reaches the size bound.
  void append_locked(wire::Instr&& instr, bool& wake);
  // Appends the Scope instructions from the stream's stack to `scope`.
  void enter_scope_locked(const ScopeRef& scope, bool& wake);

  const size_t max_instructions_;
  mutable std::mutex mutex_;
  Batch open_;                                      // guarded by mutex_
  std::vector<wire::TensorId> frees_;               // guarded by mutex_
  std::optional<Clock::time_point> open_since_;     // guarded by mutex_
  std::deque<Batch> sealed_;                        // guarded by mutex_
  bool closed_ = false;                             // guarded by mutex_
  // The stack the stream is in: the last one an op was pushed with. Held,
  // not just compared, so a dead frame's address is never mistaken for it.
  ScopeRef stream_scope_;                           // guarded by mutex_
  std::vector<wire::Instr> scope_steps_;            // guarded by mutex_; reused
};

}  // namespace gt::client
