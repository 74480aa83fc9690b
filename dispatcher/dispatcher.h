#pragma once
// The dispatcher: one ROUTER endpoint for clients and workers. It registers
// workers, keeps a session (tensor table, placement, pending requests) per
// client, forwards instruction batches to the session's worker and routes
// replies back. See docs/protocol.md.

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

namespace gt::dispatcher {

struct DispatcherOptions {
  std::string listen = "tcp://127.0.0.1:0";  // ZeroMQ endpoint to bind
  int64_t worker_wait_ms = 30000;  // how long a client's Hello may wait for workers
  std::string endpoint_file;  // if set, the bound endpoint is written there once serving
  /// The event stream's PUB endpoint (Note [event stream]): "auto" binds any
  /// free port on the listen endpoint's host (ipc: the listen path plus
  /// ".events"); "off" disables it; anything else is bound as given.
  std::string events = "auto";
};

/// Counters a test or `gt top` can read (updated by the run() thread).
struct DispatcherStats {
  std::atomic<uint64_t> messages_in{0};
  std::atomic<uint64_t> instructions{0};
  std::atomic<uint64_t> malformed{0};
  std::atomic<uint64_t> sessions_opened{0};
  std::atomic<uint64_t> sessions_closed{0};
  std::atomic<uint64_t> workers_joined{0};
  std::atomic<uint64_t> workers_lost{0};
};

/// Owns the ROUTER socket and all routing state. Pinned (no copy or move).
/// The constructor binds (so endpoint() is known at once); run() then serves on
/// the calling thread until stop(), which any thread may call. The socket is
/// handed from the constructing thread to run()'s thread once, which ZeroMQ
/// allows across a full memory barrier (thread start).
/// Shutdown order: stop() sets the flag, run() returns within one poll
/// interval, the destructor closes the socket and the context.
class Dispatcher {
 public:
  explicit Dispatcher(DispatcherOptions options);
  ~Dispatcher();
  Dispatcher(const Dispatcher&) = delete;
  Dispatcher& operator=(const Dispatcher&) = delete;

  /// The endpoint actually bound (a tcp port of 0 or * is resolved).
  const std::string& endpoint() const;
  /// The event stream's bound endpoint; empty when off.
  const std::string& events_endpoint() const;
  /// Serves until stop(). Never throws for anything a peer sends.
  void run();
  /// Thread-safe, idempotent.
  void stop();
  const DispatcherStats& stats() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

/// Entry point for `gt dispatcher`: binds, prints nothing but logs, serves
/// until SIGTERM/SIGINT, returns the exit code.
int run_dispatcher_main(const DispatcherOptions& options);

}  // namespace gt::dispatcher
