#pragma once
// TestCluster: real `gt dispatcher` and `gt worker` processes on loopback for
// integration tests. The dispatcher binds tcp://127.0.0.1:0 and reports its
// port through --endpoint-file, which the cluster waits for (no sleeps). Child
// logs go to files in a private directory, so tests can read what a process
// logged. Children are killed when the cluster is destroyed.

#include <sys/types.h>

#include <chrono>
#include <map>
#include <string>
#include <vector>

namespace gt::test {

/// Path of the built `gt` executable.
std::string gt_executable();

/// Waits up to `limit` for child `pid` to exit: its exit code, -1 when a
/// signal ended it, -2 when it was still running (it is then killed).
int wait_exit(pid_t pid, std::chrono::seconds limit);

/// Starts one single-worker TestCluster for the whole test process (on the
/// first call) and connects the process's gt session to it. Test files that
/// share a cluster call this at the start of each case, so cases from several
/// files can also run in one process.
void connect_shared_cluster();

class TestCluster {
 public:
  /// Starts a dispatcher and `workers` workers. `env` is added to the
  /// children's environment (e.g. GT_HEARTBEAT_TIMEOUT_MS).
  explicit TestCluster(int workers, std::map<std::string, std::string> env = {});
  ~TestCluster();
  TestCluster(const TestCluster&) = delete;
  TestCluster& operator=(const TestCluster&) = delete;

  const std::string& endpoint() const { return endpoint_; }
  /// Starts one more worker; returns its position in worker_pids().
  int add_worker();
  /// Sends `signal` to worker i (SIGKILL simulates a crash).
  void kill_worker(int i, int signal);
  /// Stops every process with SIGTERM, as an operator would, and waits for
  /// them to exit (SIGKILL after `grace`); the destructor then has nothing
  /// left to kill. For tests that read what processes write as they exit.
  void terminate(std::chrono::milliseconds grace = std::chrono::seconds(10));
  pid_t dispatcher_pid() const { return dispatcher_; }
  const std::vector<pid_t>& worker_pids() const { return workers_; }
  /// Whole log of the dispatcher / of worker i so far.
  std::string dispatcher_log() const;
  std::string worker_log(int i) const;
  /// Waits until `text` appears in worker i's log; false on timeout.
  bool wait_worker_log(int i, const std::string& text, std::chrono::milliseconds timeout) const;

 private:
  pid_t spawn(const std::vector<std::string>& args, const std::string& log_file);
  void keep_sanitizer_reports() const;
  std::string dir_;
  std::string endpoint_;
  std::map<std::string, std::string> env_;
  pid_t dispatcher_ = -1;
  std::vector<pid_t> workers_;
};

}  // namespace gt::test
