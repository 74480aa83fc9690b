#pragma once
// A gt worker process: registers with the dispatcher and executes the
// instruction streams it forwards, with LibTorch, on one device. This header
// does not include LibTorch; the `gt worker` command (tools/) calls
// run_worker_main.

#include <memory>
#include <string>

namespace gt::worker {

struct WorkerOptions {
  std::string dispatcher;      // endpoint of the dispatcher: tcp://HOST:PORT, ipc://PATH
  std::string device = "cpu";  // "cpu" or "cuda:N"
  int threads = 0;             // LibTorch intra-op threads; 0 = LibTorch's default
  std::string name;            // free text for the dispatcher's logs; default "worker-PID"
};

/// Validates a device string; throws std::invalid_argument for anything but
/// "cpu" or "cuda:N", and for "cuda:N" when this LibTorch has no CUDA or no
/// such device.
void check_device(const std::string& device);

/// One worker: an IO thread owns the DEALER socket to the dispatcher (Hello,
/// Welcome, heartbeats, re-registration after heartbeat_timeout of silence);
/// an executor thread runs the received batches in order (worker/executor.h),
/// answers a StatsRequest after the batches received before it, and hands
/// replies back to the IO thread over an inproc PUSH/PULL pair. Collective
/// instructions run on Gloo communicators that meet through the dispatcher's
/// rendezvous store; the store's requests take the same pipe and its replies
/// come back through a mailbox (Note [store mailbox] in worker.cpp).
///
/// Pinned (copy and move deleted). The constructor validates the options and
/// throws std::invalid_argument (gt::ConfigError for bad GT_CURVE_* key
/// files, docs/security.md); it starts nothing. run() starts both threads
/// and blocks until stop(), a SIGTERM/SIGINT seen by run_worker_main's
/// handlers, or a fatal error (a version mismatch, a dispatcher that refuses
/// the worker's CURVE key, or no reply from the dispatcher for
/// GT_CONNECT_TIMEOUT_MS), which it rethrows as gt::Error.
/// stop() is thread-safe and idempotent, and may be called before run().
///
/// Shutdown order: stop() sets a flag that the IO thread sees within 50 ms;
/// the IO thread stops reading the dispatcher, tells the executor thread to
/// stop (flag + condition variable, and closes the store mailbox) and joins
/// it; the executor thread finishes the batch in progress (a reply send stuck
/// on a full pipe gives up, a wait for the rendezvous store ends at once, a
/// collective's transfer within GT_COLLECTIVE_TIMEOUT_MS), drops the queued
/// batches, closes its communicators and its PUSH socket; then the IO thread
/// closes the PULL and DEALER sockets and exits.
/// run() joins the IO thread; the destructor calls stop() and joins whatever
/// is still running (never detaches).
class Worker {
 public:
  explicit Worker(WorkerOptions options);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;
  Worker(Worker&&) = delete;
  Worker& operator=(Worker&&) = delete;

  /// Registers and executes until stopped; rethrows a fatal error.
  void run();
  /// Starts the threads and returns at once (run() = start() + wait()).
  void start();
  /// Blocks until the threads have stopped; rethrows a fatal error once.
  void wait();
  /// Asks the threads to stop; returns at once. Idempotent.
  void stop();
  /// Index the dispatcher gave this worker; -1 while not registered.
  int index() const;
  /// Whether the dispatcher has welcomed this worker (and not lost it since).
  bool registered() const;
  const WorkerOptions& options() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// Entry point for `gt worker`: configures process logging (GT_LOG_LEVEL,
/// SPDLOG_LEVEL), installs SIGTERM/SIGINT handlers that stop the worker (the
/// previous handlers are restored on return), runs it, logs a fatal error, and
/// returns the exit code (0 after a clean stop, 1 on invalid options or a fatal
/// error).
int run_worker_main(const WorkerOptions& options);

}  // namespace gt::worker
