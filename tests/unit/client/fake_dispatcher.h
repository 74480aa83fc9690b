#pragma once
// A dispatcher stand-in for client tests: a ROUTER on tcp://127.0.0.1:*
// served by its own thread. It answers Hello with Welcome, Heartbeat with
// Heartbeat, Fetch with FetchReply (the data of FromData tensors, data set by
// the test, or zeros shaped by the op table), Sync with SyncReply and
// StatsRequest with a StatsReply of the entries set by the test, and it
// records everything. Scope instructions are recorded and otherwise ignored;
// a Configure is checked as the dispatcher does (parsed, worker indices
// against its one worker) and a refused one fails the next Sync with
// invalid_argument. Fault injection: refuse or ignore the Hello, go silent,
// poison tensors, fail syncs, send asynchronous errors.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <zmq.hpp>

#include "common/op_table.h"
#include "common/wire.h"

namespace gt::test {

class FakeDispatcher {
 public:
  struct HelloInfo {
    wire::Role role = wire::Role::Client;
    std::string name;
    int64_t pid = 0;
    uint32_t min_workers = 0;
    uint32_t version = 0;
  };
  struct FetchData {
    DType dtype = DType::Float32;
    std::vector<int64_t> shape;
    std::vector<uint8_t> bytes;
  };

  FakeDispatcher();
  ~FakeDispatcher();
  FakeDispatcher(const FakeDispatcher&) = delete;
  FakeDispatcher& operator=(const FakeDispatcher&) = delete;

  const std::string& endpoint() const { return endpoint_; }
  static constexpr uint64_t kSession = 42;

  // ---- behaviour ----
  void refuse_hello(wire::FailureInfo f);
  void ignore_hello();
  /// Stops answering anything (heartbeats included); still records.
  void set_silent(bool silent);
  /// The next SyncReply carries these errors.
  void fail_next_sync(std::vector<wire::FailureInfo> errors);
  /// The next Sync gets this ErrorReply instead of a SyncReply.
  void error_next_sync(wire::FailureInfo f);
  /// Fetches of `id` get ErrorReply{request, f}.
  void poison(wire::TensorId id, wire::FailureInfo f);
  /// Fetches of `id` answer this data.
  void set_fetch_data(wire::TensorId id, FetchData data);
  /// Sends ErrorReply{request 0, f} to the client.
  void send_async_error(wire::FailureInfo f);
  /// StatsRequests are answered with these entries.
  void set_stats(std::vector<wire::WorkerStatsInfo> workers);

  // ---- observations (copies, thread-safe) ----
  std::optional<HelloInfo> hello() const;
  std::vector<std::vector<wire::Instr>> batches() const;
  std::vector<wire::Instr> instructions() const;
  int heartbeats() const;
  bool got_bye() const;
  /// For each StatsRequest received: how many batches had arrived before it.
  std::vector<size_t> stats_requests() const;
  /// Waits until pred() (called under the fake's lock) holds; false on timeout.
  bool wait_for(const std::function<bool()>& pred, std::chrono::milliseconds timeout);
  /// For wait_for predicates (the lock is held).
  size_t batch_count_locked() const { return batches_.size(); }
  int heartbeats_locked() const { return heartbeats_; }
  bool got_bye_locked() const { return bye_; }
  size_t instruction_count_locked() const;

 private:
  void run();
  void handle(std::vector<zmq::message_t>& frames);
  void send(const zmq::message_t& identity, zmq::message_t header,
            std::optional<zmq::message_t> data = std::nullopt);
  void process(const wire::Instr& in, std::vector<zmq::message_t>& frames,
               const zmq::message_t& identity);

  zmq::context_t context_;
  zmq::socket_t router_;
  std::string endpoint_;
  std::atomic<bool> stop_{false};
  std::thread thread_;

  mutable std::mutex mutex_;
  std::condition_variable cv_;
  // All guarded by mutex_.
  std::optional<wire::FailureInfo> refuse_;
  bool ignore_hello_ = false;
  bool silent_ = false;
  std::vector<wire::FailureInfo> next_sync_errors_;
  std::optional<wire::FailureInfo> next_sync_error_;
  std::map<wire::TensorId, wire::FailureInfo> poisoned_;
  std::map<wire::TensorId, FetchData> data_;
  std::map<wire::TensorId, TensorMeta> metas_;
  std::vector<wire::FailureInfo> outbox_;
  std::optional<HelloInfo> hello_;
  std::optional<zmq::message_t> client_identity_;
  std::vector<std::vector<wire::Instr>> batches_;
  std::vector<wire::WorkerStatsInfo> stats_;
  std::vector<size_t> stats_requests_;
  int heartbeats_ = 0;
  bool bye_ = false;
};

/// The process's gt session, connected to a fresh FakeDispatcher for one test
/// case (long batch delay: batches leave at sync points); shut down on destruction.
struct FakeSession {
  FakeDispatcher fake;
  FakeSession();
  ~FakeSession();
  FakeSession(const FakeSession&) = delete;
  FakeSession& operator=(const FakeSession&) = delete;
  /// Every Op instruction the fake received, after a sync.
  std::vector<wire::Instr> ops();
};

}  // namespace gt::test
