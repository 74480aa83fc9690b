#include "tests/support/cluster.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <gt/session.h>

#include "common/env.h"

namespace gt::test {
namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

std::string gt_executable() { return GT_TEST_EXECUTABLE; }

void connect_shared_cluster() {
  // Destroyed at exit after the session's shutdown (registered later, so run
  // earlier), which says Bye while the dispatcher is still there.
  static std::unique_ptr<TestCluster> cluster;
  if (!cluster) {
    cluster = std::make_unique<TestCluster>(1);
    gt::connect(cluster->endpoint());
  }
}

TestCluster::TestCluster(int workers, std::map<std::string, std::string> env)
    : env_(std::move(env)) {
  char tmpl[] = "/tmp/gt-test-XXXXXX";
  if (!mkdtemp(tmpl)) throw std::runtime_error("[test.cluster] mkdtemp failed");
  dir_ = tmpl;
  const std::string endpoint_file = dir_ + "/endpoint";
  dispatcher_ = spawn({gt_executable(), "dispatcher", "--listen", "tcp://127.0.0.1:0",
                       "--endpoint-file", endpoint_file},
                      dir_ + "/dispatcher.log");
  // The dispatcher renames the file into place once bound.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!std::filesystem::exists(endpoint_file)) {
    int status = 0;
    if (waitpid(dispatcher_, &status, WNOHANG) == dispatcher_) {
      throw std::runtime_error("[test.cluster] dispatcher exited during start-up: " +
                               dispatcher_log());
    }
    if (std::chrono::steady_clock::now() > deadline) {
      throw std::runtime_error("[test.cluster] dispatcher did not report its endpoint");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  endpoint_ = read_file(endpoint_file);
  for (int i = 0; i < workers; ++i) add_worker();
}

int wait_exit(pid_t pid, std::chrono::seconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  int status = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    if (waitpid(pid, &status, WNOHANG) == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  kill(pid, SIGKILL);
  waitpid(pid, &status, 0);
  return -2;
}

void TestCluster::terminate(std::chrono::milliseconds grace) {
  std::vector<pid_t*> all;
  for (pid_t& p : workers_) all.push_back(&p);
  all.push_back(&dispatcher_);
  for (pid_t* p : all) {
    if (*p > 0) kill(*p, SIGTERM);
  }
  const auto deadline = std::chrono::steady_clock::now() + grace;
  for (pid_t* p : all) {
    if (*p <= 0) continue;
    while (waitpid(*p, nullptr, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        kill(*p, SIGKILL);
        waitpid(*p, nullptr, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    *p = -1;  // reaped: never signalled again (the pid may be reused)
  }
}

TestCluster::~TestCluster() {
  for (pid_t p : workers_) {
    if (p > 0) kill(p, SIGKILL);
  }
  if (dispatcher_ > 0) kill(dispatcher_, SIGKILL);
  for (pid_t p : workers_) {
    if (p > 0) waitpid(p, nullptr, 0);
  }
  if (dispatcher_ > 0) waitpid(dispatcher_, nullptr, 0);
  keep_sanitizer_reports();
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

// docs/sanitizers.md: in a sanitized build, a child's report may be only in
// its log (UBSan ignores log_path), and a child killed at the end of a case
// has no exit status anyone checks. So before the logs go, each one holding
// a report is copied to GT_SANITIZER_REPORTS, which the sanitize step of
// tools/setup.sh checks after the tests.
void TestCluster::keep_sanitizer_reports() const {
  const char* to = std::getenv("GT_SANITIZER_REPORTS");
  if (to == nullptr || *to == '\0') return;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir_, ec)) {
    const std::string log = read_file(entry.path().string());
    if (log.find("runtime error:") == std::string::npos &&
        log.find("Sanitizer") == std::string::npos) {
      continue;
    }
    const std::string name = "cluster-" + std::to_string(::getpid()) + "-" +
                             std::filesystem::path(dir_).filename().string() + "-" +
                             entry.path().filename().string();
    std::filesystem::copy_file(entry.path(), std::filesystem::path(to) / name,
                               std::filesystem::copy_options::overwrite_existing, ec);
  }
}

int TestCluster::add_worker() {
  const int i = workers_.size();
  workers_.push_back(spawn({gt_executable(), "worker", "--connect", endpoint_, "--device", "cpu",
                            "--threads", "1"},
                           dir_ + "/worker" + std::to_string(i) + ".log"));
  return i;
}

void TestCluster::kill_worker(int i, int signal) {
  kill(workers_.at(i), signal);
  if (signal == SIGKILL) waitpid(workers_[i], nullptr, 0);
}

std::string TestCluster::dispatcher_log() const { return read_file(dir_ + "/dispatcher.log"); }

std::string TestCluster::worker_log(int i) const {
  return read_file(dir_ + "/worker" + std::to_string(i) + ".log");
}

bool TestCluster::wait_worker_log(int i, const std::string& text,
                                  std::chrono::milliseconds timeout) const {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (worker_log(i).find(text) != std::string::npos) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

pid_t TestCluster::spawn(const std::vector<std::string>& args, const std::string& log_file) {
  std::vector<std::string> env_strings;
  for (const auto& [k, v] : env_) env_strings.push_back(k + "=" + v);
  // As a local cluster starts its workers (Note [worker thread pools]).
  for (const auto& [name, value] : kWorkerEnvDefaults) {
    const std::string n(name);
    if (!env_.count(n) && !std::getenv(n.c_str())) env_strings.push_back(n + "=" + std::string(value));
  }
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) throw std::runtime_error("[test.cluster] fork failed");
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
    for (const auto& e : env_strings) putenv(const_cast<char*>(e.c_str()));
    FILE* log = std::fopen(log_file.c_str(), "w");
    if (log) {
      dup2(fileno(log), STDOUT_FILENO);
      dup2(fileno(log), STDERR_FILENO);
    }
    execv(argv[0], argv.data());
    _exit(127);
  }
  return pid;
}

}  // namespace gt::test
