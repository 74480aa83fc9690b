#pragma once
// A private cluster (one dispatcher, N workers) started as child processes.

#include <optional>
#include <string>
#include <vector>

#include <sys/types.h>

#include <gt/export.h>

namespace gt::client {

/// Where to look for the `gt` executable, in order.
struct GT_API ExecutableSearch {
  std::optional<std::string> env_executable;  // GT_EXECUTABLE: used as is, or an error
  std::optional<std::string> library_dir;     // directory of libgt_client.so: ../bin/gt
  std::string build_bindir;                   // GT_BUILD_BINDIR: <build>/bin
  std::string install_bindir;                 // GT_INSTALL_BINDIR: <prefix>/bin
  std::optional<std::string> path;            // $PATH

  /// The places the running process would search.
  static ExecutableSearch from_process();
};

/// The candidate paths of `gt`, in search order (GT_EXECUTABLE excluded).
GT_API std::vector<std::string> executable_candidates(const ExecutableSearch& search);
/// The first candidate that is an executable file. Throws gt::Error when
/// GT_EXECUTABLE names no executable file, or when no candidate exists
/// (listing every place tried and suggesting GT_EXECUTABLE).
GT_API std::string find_executable(const ExecutableSearch& search);

struct GT_API LocalClusterOptions {
  std::string executable;  // path of `gt`
  int workers = 1;
  int threads_per_worker = 1;
  std::string device = "cpu";
  /// The dispatcher's endpoint; empty: ipc://<private dir>/dispatcher. A tcp
  /// port of 0 takes any free port: the constructor waits (up to
  /// `start_timeout_ms`) for the dispatcher to report the port it bound.
  std::string listen;
  int start_timeout_ms = 30000;
  /// Added to the children's environment ("NAME=value"), after the
  /// program's own (so they win).
  std::vector<std::string> env;
};

/// Child processes `gt dispatcher --listen ipc://<dir>/dispatcher` (or
/// options.listen) and
/// `gt worker --connect <that> --device D --threads T`, in a fresh mkdtemp
/// directory (so programs never collide). Children get PR_SET_PDEATHSIG
/// SIGTERM, which follows the *thread* that forked: construct it on a thread
/// that lives as long as the cluster (the session's IO thread). Children log
/// at warn unless GT_LOG_LEVEL is set. Pinned; stop() (idempotent, also the
/// destructor) sends SIGTERM, waits up to `grace` for them, SIGKILLs the rest
/// and removes the directory. Not thread-safe: one owner thread.
class GT_API LocalCluster {
 public:
  /// Creates the directory and starts the processes; throws gt::Error when
  /// that fails (the directory is removed again).
  explicit LocalCluster(LocalClusterOptions options);
  ~LocalCluster();
  LocalCluster(const LocalCluster&) = delete;
  LocalCluster& operator=(const LocalCluster&) = delete;

  /// The dispatcher's endpoint ("ipc://<dir>/dispatcher", or the one bound
  /// for options.listen).
  const std::string& endpoint() const { return endpoint_; }
  /// The private directory.
  const std::string& directory() const { return directory_; }
  /// Pids of the children still running (dispatcher first).
  std::vector<pid_t> pids() const;
  /// Describes the first child that has exited ("gt dispatcher (pid 12)
  /// exited with status 1"), or nullopt while all run. Reaps it.
  std::optional<std::string> dead_child();
  /// Like dead_child() but only for the dispatcher.
  std::optional<std::string> dead_dispatcher();
  /// Terminates the children and removes the directory; never throws.
  void stop(int grace_ms = 2000) noexcept;

 private:
  struct Child {
    std::string role;  // "dispatcher", "worker 0", ...
    std::string command;
    pid_t pid = -1;
    bool exited = false;
    int status = 0;
  };
  void spawn(Child& child, const std::vector<std::string>& argv,
             const std::vector<std::string>& envp);
  std::optional<std::string> check(Child& child) noexcept;

  LocalClusterOptions options_;
  std::string directory_;
  std::string endpoint_;
  std::vector<Child> children_;
  bool stopped_ = false;
};

}  // namespace gt::client
