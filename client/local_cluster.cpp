#include "client/internal/local_cluster.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>

#include <pthread.h>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include <dlfcn.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gt/error.h>

#include "common/check.h"
#include "common/env.h"

extern char** environ;

#ifndef GT_BUILD_BINDIR
#define GT_BUILD_BINDIR ""
#endif
#ifndef GT_INSTALL_BINDIR
#define GT_INSTALL_BINDIR ""
#endif

namespace gt::client {
namespace fs = std::filesystem;
namespace {

bool is_executable_file(const std::string& path) {
  struct stat st {};
  return !path.empty() && ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
         ::access(path.c_str(), X_OK) == 0;
}

std::string join(const std::string& dir, const std::string& name) {
  return (fs::path(dir) / name).lexically_normal().string();
}

// The ipc:// path must fit sockaddr_un (108 bytes), so a long TMPDIR is skipped.
std::string temp_base() {
  if (auto t = env_string("TMPDIR"); t && t->size() < 60 && fs::is_directory(*t)) return *t;
  return "/tmp";
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) {
    const int code = WEXITSTATUS(status);
    return code == 127 ? "exited with status 127 (could not be executed)"
                       : detail::cat("exited with status ", code);
  }
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    const char* name = ::strsignal(sig);
    return detail::cat("was killed by signal ", sig, " (", name ? name : "?", ")");
  }
  return detail::cat("stopped (wait status ", status, ")");
}

}  // namespace

// ---- finding `gt` ---------------------------------------------------------------

ExecutableSearch ExecutableSearch::from_process() {
  ExecutableSearch s;
  s.env_executable = env().executable;
  Dl_info info{};
  if (::dladdr(reinterpret_cast<void*>(&find_executable), &info) && info.dli_fname &&
      *info.dli_fname) {
    std::error_code ec;
    fs::path lib = fs::absolute(info.dli_fname, ec);
    if (!ec) s.library_dir = lib.parent_path().string();
  }
  s.build_bindir = GT_BUILD_BINDIR;
  s.install_bindir = GT_INSTALL_BINDIR;
  s.path = env_string("PATH");
  return s;
}

std::vector<std::string> executable_candidates(const ExecutableSearch& s) {
  std::vector<std::string> out;
  auto add = [&](const std::string& p) {
    if (!p.empty() && std::find(out.begin(), out.end(), p) == out.end()) out.push_back(p);
  };
  if (s.library_dir) add(join(*s.library_dir, "../bin/gt"));
  if (!s.build_bindir.empty()) add(join(s.build_bindir, "gt"));
  if (!s.install_bindir.empty()) add(join(s.install_bindir, "gt"));
  if (s.path) {
    size_t begin = 0;
    while (begin <= s.path->size()) {
      size_t end = s.path->find(':', begin);
      if (end == std::string::npos) end = s.path->size();
      const std::string dir = s.path->substr(begin, end - begin);
      add(join(dir.empty() ? "." : dir, "gt"));
      begin = end + 1;
    }
  }
  return out;
}

std::string find_executable(const ExecutableSearch& s) {
  if (s.env_executable) {
    if (is_executable_file(*s.env_executable)) return *s.env_executable;
    throw Error(detail::cat("[client.local_cluster] GT_EXECUTABLE='", *s.env_executable,
                            "' is not an executable file: point it at the gt binary"));
  }
  const auto candidates = executable_candidates(s);
  for (const auto& c : candidates) {
    if (is_executable_file(c)) return c;
  }
  std::string tried;
  for (const auto& c : candidates) tried += "\n  " + c;
  throw Error(detail::cat(
      "[client.local_cluster] cannot find the gt executable to start a local cluster; tried:",
      tried.empty() ? std::string(" (nowhere)") : tried,
      "\nset GT_EXECUTABLE to the path of gt, or GT_DISPATCHER to a running dispatcher"));
}

// ---- the cluster --------------------------------------------------------------------

LocalCluster::LocalCluster(LocalClusterOptions options) : options_(std::move(options)) {
  GT_CHECK(options_.workers >= 1, "[client.local_cluster] expected at least one worker, got ",
           options_.workers);
  std::string tmpl = temp_base() + "/gt-XXXXXX";
  if (!::mkdtemp(tmpl.data())) {
    throw Error(detail::cat("[client.local_cluster] mkdtemp(", tmpl,
                            ") failed: ", std::strerror(errno)));
  }
  directory_ = tmpl;
  // Note [local cluster endpoint]
  // The dispatcher listens on ipc://<TMPDIR or /tmp>/gt-XXXXXX/dispatcher (a
  // private 0700 directory, removed when the cluster stops). Tools find the
  // cluster a user means without being told: gt trace and gt top look for the
  // newest such socket (tools/monitor.cpp). Its event stream is the same path
  // plus ".events" (Note [event stream] in dispatcher/dispatcher.cpp). Only
  // this user can reach that directory, so a private cluster runs without
  // CURVE: its processes do not get the program's GT_CURVE_* variables
  // (which name the keys of a remote cluster, if any). A cluster on an
  // endpoint the caller chose (gt launch) gets them all (docs/security.md).
  endpoint_ = options_.listen.empty() ? "ipc://" + directory_ + "/dispatcher" : options_.listen;

  // The environment of the children: the program's, with quiet logs by default.
  std::vector<std::string> envp;
  bool has_level = false;
  for (char** e = environ; e && *e; ++e) {
    envp.emplace_back(*e);
    if (std::strncmp(*e, "GT_LOG_LEVEL=", 13) == 0) has_level = true;
  }
  if (!has_level) envp.emplace_back("GT_LOG_LEVEL=warn");
  if (options_.listen.empty()) {
    std::erase_if(envp, [](const std::string& x) { return x.rfind("GT_CURVE_", 0) == 0; });
  }
  for (const auto& e : options_.env) {
    // Replaces the program's value: getenv returns the first match.
    const std::string name = e.substr(0, e.find('=') + 1);
    std::erase_if(envp, [&](const std::string& x) { return x.rfind(name, 0) == 0; });
    envp.push_back(e);
  }
  std::vector<std::string> worker_envp = envp;
  add_worker_env_defaults(worker_envp);  // Note [worker thread pools] in common/env.h

  try {
    children_.reserve(1 + options_.workers);
    children_.push_back(Child{"dispatcher", "", -1});
    const std::string endpoint_file = directory_ + "/endpoint";
    spawn(children_.back(),
          {options_.executable, "dispatcher", "--listen", endpoint_, "--endpoint-file",
           endpoint_file},
          envp);
    if (endpoint_.rfind("tcp://", 0) == 0) {
      // The bound endpoint resolves a port of 0 (and is what workers must use).
      const auto deadline =
          std::chrono::steady_clock::now() + std::chrono::milliseconds(options_.start_timeout_ms);
      std::string bound;
      while (bound.empty()) {
        std::ifstream in(endpoint_file);
        std::getline(in, bound);
        if (!bound.empty()) break;
        if (auto dead = dead_dispatcher()) {
          throw Error(detail::cat("[client.local_cluster] the dispatcher failed to start: ",
                                  *dead));
        }
        if (std::chrono::steady_clock::now() > deadline) {
          throw Error(detail::cat("[client.local_cluster] the dispatcher did not bind ",
                                  endpoint_, " within ", options_.start_timeout_ms, " ms"));
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      endpoint_ = bound;
    }
    for (int i = 0; i < options_.workers; ++i) {
      children_.push_back(Child{detail::cat("worker ", i), "", -1});
      spawn(children_.back(),
            {options_.executable, "worker", "--connect", endpoint_, "--device",
             options_.device, "--threads", std::to_string(options_.threads_per_worker)},
            worker_envp);
    }
  } catch (...) {
    stop(0);
    throw;
  }
}

LocalCluster::~LocalCluster() { stop(); }

void LocalCluster::spawn(Child& child, const std::vector<std::string>& argv,
                         const std::vector<std::string>& envp) {
  for (const auto& a : argv) child.command += (child.command.empty() ? "" : " ") + a;
  // Everything the child needs is prepared before fork: after it, only
  // async-signal-safe calls until execve.
  std::vector<char*> av, ev;
  for (const auto& a : argv) av.push_back(const_cast<char*>(a.c_str()));
  av.push_back(nullptr);
  for (const auto& e : envp) ev.push_back(const_cast<char*>(e.c_str()));
  ev.push_back(nullptr);
  sigset_t all, none, saved;
  sigfillset(&all);
  sigemptyset(&none);
  // Signals stay blocked from fork to execve: a SIGTERM arriving in between
  // must not run a handler the child inherited from the program (a test
  // framework's, say) in a copy of the program.
  ::pthread_sigmask(SIG_SETMASK, &all, &saved);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid == 0) {
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; ++sig) ::sigaction(sig, &dfl, nullptr);
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(1);  // the parent died before prctl
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execve(av[0], av.data(), ev.data());
    ::_exit(127);
  }
  const int fork_errno = errno;
  ::pthread_sigmask(SIG_SETMASK, &saved, nullptr);
  if (pid < 0) {
    throw Error(detail::cat("[client.local_cluster] fork failed for ", child.role, ": ",
                            std::strerror(fork_errno)));
  }
  child.pid = pid;
}

std::optional<std::string> LocalCluster::check(Child& c) noexcept {
  if (c.pid <= 0) return std::nullopt;
  if (!c.exited) {
    int status = 0;
    const pid_t r = ::waitpid(c.pid, &status, WNOHANG);
    if (r == c.pid) {
      c.exited = true;
      c.status = status;
    } else if (r < 0 && errno == ECHILD && ::kill(c.pid, 0) != 0) {
      c.exited = true;  // reaped by someone else (a SIGCHLD handler of the program)
      c.status = -1;
    }
  }
  if (!c.exited) return std::nullopt;
  return detail::cat("gt ", c.role, " (pid ", c.pid, ") ",
                     c.status == -1 ? std::string("exited") : describe_status(c.status),
                     "; command: ", c.command);
}

std::optional<std::string> LocalCluster::dead_child() {
  for (auto& c : children_) {
    if (auto d = check(c)) return d;
  }
  return std::nullopt;
}

std::optional<std::string> LocalCluster::dead_dispatcher() {
  if (children_.empty()) return std::nullopt;
  return check(children_.front());
}

std::vector<pid_t> LocalCluster::pids() const {
  std::vector<pid_t> out;
  for (const auto& c : children_) {
    if (c.pid > 0 && !c.exited) out.push_back(c.pid);
  }
  return out;
}

void LocalCluster::stop(int grace_ms) noexcept {
  if (stopped_) return;
  stopped_ = true;
  for (auto& c : children_) {
    check(c);
    if (c.pid > 0 && !c.exited) ::kill(c.pid, SIGTERM);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(grace_ms);
  while (true) {
    bool running = false;
    for (auto& c : children_) {
      check(c);
      running = running || (c.pid > 0 && !c.exited);
    }
    if (!running || std::chrono::steady_clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  for (auto& c : children_) {
    if (c.pid > 0 && !c.exited) {
      ::kill(c.pid, SIGKILL);
      int status = 0;
      while (::waitpid(c.pid, &status, 0) < 0 && errno == EINTR) {
      }
      c.exited = true;
      c.status = status;
    }
  }
  if (!directory_.empty()) {
    std::error_code ec;
    fs::remove_all(directory_, ec);
  }
}

}  // namespace gt::client
