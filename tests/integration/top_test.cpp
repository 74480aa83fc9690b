// gt top against real processes: under a pseudo-terminal it draws a row per
// worker of a running cluster, and q or Ctrl-C end it with exit code 0 and the
// terminal restored; through a pipe it prints plain frames.

#include <catch2/catch.hpp>

#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <exception>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gt/gt.h>

#include "tests/support/cluster.h"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

bool ends_with(const std::string& text, const std::string& tail) {
  return text.size() >= tail.size() &&
         text.compare(text.size() - tail.size(), tail.size(), tail) == 0;
}

// Elementwise ops on a background thread until destroyed, so the workers have
// something to report. The session is this process's gt session; only this
// thread uses it. An error is kept for error().
class Workload {
 public:
  explicit Workload(const std::string& endpoint)
      : thread_([this, endpoint] {
          try {
            gt::connect(endpoint);
            gt::Tensor x = gt::randn({64, 64});
            while (!stop_) {
              for (int i = 0; i < 20; ++i) x = (x * 0.5 + 1.0).relu();
              gt::synchronize();
            }
          } catch (const std::exception& e) {
            error_ = e.what();
          }
          gt::shutdown();
        }) {}
  ~Workload() { stop(); }
  Workload(const Workload&) = delete;
  Workload& operator=(const Workload&) = delete;

  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  // The workload's failure, after stop(); empty when none.
  const std::string& error() const { return error_; }

 private:
  std::atomic<bool> stop_{false};
  std::string error_;  // written by the thread, read after join
  std::thread thread_;
};

// `gt top --endpoint E` on a pseudo-terminal of 160x40. Pinned; the child is
// killed when the object dies.
class TopOnTerminal {
 public:
  explicit TopOnTerminal(const std::string& endpoint) {
    // Everything the child needs is built before fork: it only execs.
    const std::vector<std::string> args = {gt::test::gt_executable(), "top", "--endpoint",
                                           endpoint};
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    winsize ws{};
    ws.ws_row = 40;
    ws.ws_col = 160;
    const pid_t parent = getpid();
    pid_ = forkpty(&master_, nullptr, nullptr, &ws);
    if (pid_ == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(1);
      execv(argv[0], argv.data());
      _exit(127);
    }
  }
  ~TopOnTerminal() {
    if (pid_ > 0 && !status_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (master_ >= 0) close(master_);
  }
  TopOnTerminal(const TopOnTerminal&) = delete;
  TopOnTerminal& operator=(const TopOnTerminal&) = delete;

  bool started() const { return pid_ > 0 && master_ >= 0; }
  const std::string& output() const { return output_; }

  // Reads the terminal until `done(output())` holds; false on timeout or
  // when the child closed it first.
  bool read_until(const std::function<bool(const std::string&)>& done,
                  std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (!done(output_)) {
      if (Clock::now() > deadline || !read_some(50ms)) return false;
    }
    return true;
  }

  void send(const std::string& bytes) {
    REQUIRE(::write(master_, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size()));
  }

  // Waits for the child to exit, reading what it writes meanwhile (a full
  // terminal would block it); its wait status, or nullopt on timeout.
  std::optional<int> wait_exit(std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    bool open = true;
    while (Clock::now() < deadline) {
      if (!status_) {
        int status = 0;
        if (waitpid(pid_, &status, WNOHANG) == pid_) status_ = status;
      }
      if (open) open = read_some(20ms);
      if (status_ && !open) return status_;
      if (!open) std::this_thread::sleep_for(10ms);
    }
    return status_;
  }

 private:
  // Reads what is there within `wait`; false once the terminal is closed
  // (Linux answers EIO on the master after the child's side closed).
  bool read_some(std::chrono::milliseconds wait) {
    pollfd p{master_, POLLIN, 0};
    const int n = poll(&p, 1, static_cast<int>(wait.count()));
    if (n <= 0) return n == 0 || errno == EINTR;
    char buf[4096];
    const ssize_t got = ::read(master_, buf, sizeof buf);
    if (got > 0) {
      output_.append(buf, static_cast<size_t>(got));
      return true;
    }
    return got < 0 && (errno == EINTR || errno == EAGAIN);
  }

  pid_t pid_ = -1;
  int master_ = -1;
  std::optional<int> status_;
  std::string output_;
};

// Runs `command` through the shell; its stdout and stderr, and the exit code.
std::pair<std::string, int> run_command(const std::string& command) {
  std::string out;
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  REQUIRE(pipe != nullptr);
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, pipe)) > 0;) out.append(buf, n);
  const int status = pclose(pipe);
  return {out, WIFEXITED(status) ? WEXITSTATUS(status) : -1};
}

// Both workers' rows, the workload's client and its elementwise ops.
bool shows_cluster(const std::string& out) {
  return contains(out, "WORKER 0") && contains(out, "WORKER 1") && contains(out, "CLIENTS: 1") &&
         contains(out, "Elementwise");
}

constexpr const char* kEnterScreen = "\x1b[?1049h";
constexpr const char* kLeaveScreen = "\x1b[?25h\x1b[?1049l";  // cursor shown, screen left

}  // namespace

TEST_CASE("top on a terminal shows every worker and quits on q", "[top][integration]") {
  gt::test::TestCluster cluster(2);
  Workload workload(cluster.endpoint());
  TopOnTerminal top(cluster.endpoint());
  REQUIRE(top.started());
  const bool shown = top.read_until(shows_cluster, 20s);
  INFO("gt top wrote: " << top.output());
  CHECK(contains(top.output(), "WORKER 0"));
  CHECK(contains(top.output(), "WORKER 1"));
  CHECK(contains(top.output(), "CLIENTS: 1"));
  CHECK(contains(top.output(), "Elementwise"));
  REQUIRE(shown);
  CHECK(contains(top.output(), kEnterScreen));

  top.send("q");
  const std::optional<int> status = top.wait_exit(5s);
  REQUIRE(status);
  CHECK(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) == 0);
  CHECK(ends_with(top.output(), kLeaveScreen));
  workload.stop();
  CHECK(workload.error().empty());
}

TEST_CASE("top on a terminal restores it on Ctrl-C", "[top][integration]") {
  gt::test::TestCluster cluster(2);
  TopOnTerminal top(cluster.endpoint());
  REQUIRE(top.started());
  const bool shown = top.read_until(
      [](const std::string& out) { return contains(out, "WORKER 0") && contains(out, "WORKER 1"); },
      20s);
  INFO("gt top wrote: " << top.output());
  REQUIRE(shown);

  top.send("\x03");
  const std::optional<int> status = top.wait_exit(5s);
  REQUIRE(status);
  CHECK(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) == 0);
  CHECK(ends_with(top.output(), kLeaveScreen));
}

TEST_CASE("top through a pipe prints plain frames and stops after --frames", "[top][integration]") {
  gt::test::TestCluster cluster(2);
  // Both workers registered first: the first frame waits for the STATS of the
  // workers the dispatcher counts, not for workers still starting.
  gt::connect(cluster.endpoint());
  const auto deadline = Clock::now() + 20s;
  while (gt::debug::stats().workers.size() < 2 && Clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  REQUIRE(gt::debug::stats().workers.size() == 2);
  const auto [out, code] = run_command(gt::test::gt_executable() + " top --endpoint " +
                                       cluster.endpoint() + " --frames 2 --interval-ms 100");
  gt::shutdown();
  INFO("gt top wrote: " << out);
  CHECK(code == 0);
  CHECK_FALSE(contains(out, "\x1b"));
  CHECK(contains(out, "\n\n" + std::string(40, '-') + "\n"));
  CHECK(contains(out, "WORKER 0"));
  CHECK(contains(out, "WORKER 1"));
  CHECK(contains(out, "CLIENTS: 1"));
}

TEST_CASE("top names the endpoint and exits 1 when no dispatcher answers", "[top][integration]") {
  // Port 1 on loopback: nothing listens there.
  const auto [out, code] =
      run_command(gt::test::gt_executable() + " top --endpoint tcp://127.0.0.1:1 --frames 1");
  INFO("gt top wrote: " << out);
  CHECK(code == 1);
  CHECK(contains(out, "tcp://127.0.0.1:1"));
  CHECK_FALSE(contains(out, "\x1b"));
}
