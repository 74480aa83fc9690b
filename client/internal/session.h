#pragma once
// The client session: one connection to a dispatcher, owned by an IO thread.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <spdlog/logger.h>
#include <zmq.hpp>

#include <gt/export.h>

#include "client/internal/batch_queue.h"
#include "common/instruction_log.h"
#include "common/security.h"
#include "common/wire.h"

namespace gt::client {

class LocalCluster;

/// Everything a session needs; from_env() reads the GT_* variables. Tests
/// build one by hand to avoid depending on the environment.
struct GT_API SessionOptions {
  /// Dispatcher endpoint; nullopt starts a private local cluster.
  std::optional<std::string> endpoint;
  /// Workers of the local cluster (Hello.min_workers asks for all of them).
  int workers = 1;
  /// The `gt` executable for a local cluster; found by find_executable() when unset.
  std::optional<std::string> executable;
  /// Program name sent in the Hello (for the dispatcher's logs).
  std::string name = "gt-client";
  std::chrono::milliseconds heartbeat_interval{250};
  std::chrono::milliseconds heartbeat_timeout{3000};
  std::chrono::milliseconds connect_timeout{30000};
  size_t batch_max_instructions = 1024;
  std::chrono::microseconds batch_max_delay{500};
  /// CURVE keys for `endpoint` (docs/security.md); nullopt: plaintext. A
  /// private local cluster always runs plain (Note [local cluster endpoint]).
  std::optional<CurveClientKeys> curve;

  /// GT_DISPATCHER, GT_WORKERS, GT_HEARTBEAT_*, GT_CONNECT_TIMEOUT_MS,
  /// GT_BATCH_SIZE, GT_BATCH_DELAY_US, GT_CURVE_SERVER_KEY and
  /// GT_CURVE_CLIENT_KEY (the key files are read: gt::ConfigError when they
  /// are bad) and the program's name.
  static SessionOptions from_env();
};

/// The data of a fetched tensor, as the worker sent it.
struct FetchResult {
  DType dtype = DType::Float32;
  std::vector<int64_t> shape;
  zmq::message_t data;  // numel * element_size bytes, little-endian
};

/// Counters for benchmarks and tests (IO thread updates, anyone reads).
struct SessionStats {
  uint64_t batches_sent = 0;
  uint64_t instructions_sent = 0;
  uint64_t heartbeats_sent = 0;
  uint64_t messages_received = 0;
};

// Note [tensor release batching]
// A TensorNode's destructor calls Session::release(id), which appends the id to
// BatchQueue's free list under its mutex and wakes the IO thread at most once
// per batch. No network, no waiting, no throwing: a destructor may run on any
// thread, at any time, including after shutdown (then it does nothing). The
// ids leave as one Free instruction at the end of the next sealed batch.

/// One connection to a dispatcher, owned by a dedicated IO thread.
///
/// Threads: user threads call issue/release/flush/fetch/synchronize; they
/// touch only the BatchQueue (mutex) and the waiter table (wait_mutex_), and
/// wake the IO thread through an eventfd. The IO thread owns the ZeroMQ
/// context's DEALER socket and the local cluster for their whole lives: it
/// forks the cluster's processes (so PR_SET_PDEATHSIG, which follows the
/// forking thread, lasts as long as the session), performs the Hello/Welcome
/// handshake, encodes and sends sealed batches, answers silence with
/// heartbeats, and routes replies to waiters.
///
/// Errors: start() throws what the handshake hit (gt::TransportError on a
/// timeout or a dead local cluster, the dispatcher's ErrorReply otherwise).
/// After start, a silent dispatcher (heartbeat_timeout without any message)
/// or a dead local dispatcher breaks the session: every waiter and every
/// later call throws gt::TransportError. Worker failures arrive as SyncReply
/// errors or ErrorReplies and are thrown by synchronize()/fetch() as
/// gt::RemoteError.
///
/// Shutdown order (close(), idempotent, also run by the destructor): refuse
/// new instructions, wake and join the IO thread, which sends Bye, closes the
/// socket and stops the local cluster (SIGTERM, wait up to 2 s, SIGKILL,
/// remove its directory); then fail any remaining waiter. Pinned.
class GT_API Session : public std::enable_shared_from_this<Session> {
 public:
  /// Connects (starting a local cluster when options.endpoint is empty) and
  /// waits for the dispatcher's Welcome.
  static std::shared_ptr<Session> start(SessionOptions options);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  /// A fresh tensor id (1, 2, ...; never reused).
  wire::TensorId new_id() { return next_id_.fetch_add(1, std::memory_order_relaxed); }
  /// Queues an instruction; never waits for the network. An Op is issued in
  /// the calling thread's signal scopes (Note [lazy signal scopes] in
  /// scope.h); other kinds leave the stream's scopes alone. Throws gt::Error
  /// after close() and gt::TransportError once the connection is lost.
  void issue(wire::Instr&& instr);
  /// Queues an Op with its data frame (sent zero-copy), in the calling
  /// thread's signal scopes.
  void issue(wire::Instr&& instr, zmq::message_t&& payload);
  /// Queues `id` for the next Free (Note [tensor release batching]).
  void release(wire::TensorId id) noexcept;
  /// Seals the open batch and hands it to the IO thread now.
  void flush();
  /// Fetches a tensor's data (sync point). Throws gt::RemoteError when the
  /// tensor's producing op failed, gt::TransportError on a lost connection.
  FetchResult fetch(wire::TensorId id);
  /// Waits until the cluster ran everything issued before; throws the first
  /// failure since the previous sync (and any asynchronous error) as
  /// gt::RemoteError.
  void synchronize();
  /// Asks every worker for its counters (gt::debug::stats); a sync point like
  /// synchronize(), but op failures stay queued for the next synchronize().
  /// Throws gt::TransportError on a lost connection.
  std::vector<wire::WorkerStatsInfo> worker_stats();
  /// Ends the session; see the class comment. Never throws.
  void close() noexcept;

  bool closed() const { return closed_.load(std::memory_order_acquire); }
  /// The dispatcher's endpoint (the local cluster's for a private cluster).
  const std::string& endpoint() const { return endpoint_; }
  /// Session id given by the dispatcher's Welcome.
  uint64_t session_id() const { return session_id_; }
  /// Workers registered when the Welcome was sent.
  uint32_t workers() const { return workers_; }
  const SessionOptions& options() const { return options_; }
  SessionStats stats() const;

 private:
  explicit Session(SessionOptions options);

  struct Waiter {
    bool done = false;
    std::exception_ptr error;                  // transport failure or bad reply
    std::optional<wire::FailureInfo> failure;  // ErrorReply for this request
    std::vector<wire::FailureInfo> sync_errors;
    FetchResult fetched;
    std::vector<wire::WorkerStatsInfo> worker_stats;
  };
  class WaiterGuard;

  void wake() noexcept;
  void check_usable() const;
  uint64_t register_waiter(Waiter& w);
  /// Waits for `w`; logs a WAIT event of that `kind` (Fetch, Sync, Stats).
  void wait(Waiter& w, std::string_view kind, uint64_t request);
  [[noreturn]] void throw_remote(std::vector<wire::FailureInfo> errors);

  // IO thread.
  void io_main();
  void handshake();
  void serve();
  bool try_send(std::vector<zmq::message_t>& frames);
  void send_sealed();
  using Clock = std::chrono::steady_clock;
  Clock::time_point heartbeat_due() const;
  void send_heartbeat();
  void handle(std::vector<zmq::message_t>& frames);
  void fail_all(std::exception_ptr error) noexcept;

  const SessionOptions options_;
  std::shared_ptr<spdlog::logger> log_;
  // GT_INSTRUCTION_LOG (docs/instruction_log.md): null when off. Written by
  // the IO thread (SEND, RECV) and by threads waiting for replies (WAIT).
  std::unique_ptr<InstructionLog> ilog_;
  zmq::context_t context_;
  int wake_fd_ = -1;
  BatchQueue queue_;
  std::atomic<wire::TensorId> next_id_{1};
  std::atomic<uint64_t> next_request_{1};
  std::atomic<bool> stop_{false};
  std::atomic<bool> closed_{false};
  std::atomic<bool> broken_{false};  // set with fatal_ (for a lock-free check)
  std::mutex close_mutex_;           // serialises close()
  std::thread io_thread_;

  // Written by the IO thread before the Welcome is announced, then read-only.
  std::string endpoint_;
  uint64_t session_id_ = 0;
  uint32_t workers_ = 0;

  // IO thread only.
  std::unique_ptr<zmq::socket_t> socket_;
  std::unique_ptr<LocalCluster> cluster_;
  uint64_t batch_seq_ = 0;
  std::optional<std::vector<zmq::message_t>> unsent_;  // a batch the full socket refused
  std::chrono::steady_clock::time_point last_send_, last_recv_, last_heartbeat_;

  // Counters (IO thread writes).
  std::atomic<uint64_t> batches_sent_{0}, instructions_sent_{0}, heartbeats_sent_{0},
      messages_received_{0};

  // Guarded by wait_mutex_.
  mutable std::mutex wait_mutex_;
  std::condition_variable wait_cv_;
  enum class State { Starting, Running, Failed, Stopped } state_ = State::Starting;
  std::exception_ptr fatal_;          // startup failure or lost connection
  std::unordered_map<uint64_t, Waiter*> waiters_;
  std::vector<wire::FailureInfo> async_errors_;  // ErrorReply{request 0}
  std::unordered_set<std::string> thrown_by_fetch_;  // reported once, not again at sync
};

}  // namespace gt::client
