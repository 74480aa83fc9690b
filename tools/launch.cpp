#include "tools/launch.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>
#include <thread>

#include <gt/config.h>
#include <gt/error.h>

#include "client/internal/local_cluster.h"
#include "common/env.h"
#include "common/transport.h"
#include "tools/monitor.h"

namespace gt::tools {
namespace {

std::atomic<int> g_stop_signal{0};
void on_stop(int signal) { g_stop_signal.store(signal); }

// The running `gt` binary: the processes are more of the same executable.
std::string self_executable() {
  std::error_code ec;
  const auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) {
    throw Error("[launch] cannot find the running gt executable (/proc/self/exe): " +
                ec.message());
  }
  return p.string();
}

void write_endpoint_file(const std::string& path, const std::string& endpoint) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    out << endpoint << '\n';
    if (!out) throw Error("[launch] cannot write the endpoint file " + path);
  }
  std::filesystem::rename(tmp, path);
}

}  // namespace

void add_launch_options(CLI::App& app, LaunchOptions& o) {
  app.add_option("--workers,-n", o.workers, "Workers to start")
      ->capture_default_str()
      ->check(CLI::Range(1, 256));
  app.add_option("--listen,-l", o.listen,
                 "The dispatcher's endpoint (tcp://HOST:PORT, port 0 = any free port; ipc://PATH)")
      ->capture_default_str();
  app.add_option("--device,-d", o.device, "Device of every worker: cpu or cuda:N")
      ->capture_default_str();
  app.add_option("--threads", o.threads, "LibTorch threads per worker (0: LibTorch's default)")
      ->capture_default_str()
      ->check(CLI::Range(0, 1024));
  app.add_option("--endpoint-file", o.endpoint_file,
                 "Write the dispatcher's endpoint here once every worker has registered");
  app.add_option("--config", o.config,
                 "Signal config (YAML, docs/config.md): validated for --workers, then given to "
                 "every process as GT_CONFIG");
}

// Note [gt launch]
// A LocalCluster with a chosen endpoint, run in the foreground: the cluster
// a user starts by hand on one machine, without a program attached. It
// waits until every worker has registered (asking the dispatcher as a
// monitor) before it says it is ready, so scripts can start clients right
// after the endpoint file appears. It supervises: a process that exits ends
// the launch with exit code 1 (the rest are stopped), and SIGINT/SIGTERM
// stop all of them (SIGTERM, then SIGKILL after 2 s) with exit code 0.
int run_launch(const LaunchOptions& o) {
  try {
    check_endpoint(o.listen);
    static const std::regex kDevice("cpu|cuda:[0-9]+");
    if (!std::regex_match(o.device, kDevice)) {
      throw Error("[launch] --device " + o.device + " is not a device: expected cpu or cuda:N");
    }
    client::LocalClusterOptions lo;
    lo.executable = self_executable();
    lo.workers = o.workers;
    lo.threads_per_worker = o.threads;
    lo.device = o.device;
    lo.listen = o.listen;
    if (!env_string("GT_LOG_LEVEL")) lo.env.push_back("GT_LOG_LEVEL=info");
    if (!o.config.empty()) {
      const std::string path = std::filesystem::absolute(o.config).string();
      gt::validate_config(gt::load_config(path), o.workers);  // ConfigError names file and key
      lo.env.push_back("GT_CONFIG=" + path);
    }

    g_stop_signal.store(0);
    struct sigaction action {};
    action.sa_handler = on_stop;
    sigemptyset(&action.sa_mask);
    struct sigaction old_int {}, old_term{};
    sigaction(SIGINT, &action, &old_int);
    sigaction(SIGTERM, &action, &old_term);
    struct Restore {
      struct sigaction i, t;
      ~Restore() {
        sigaction(SIGINT, &i, nullptr);
        sigaction(SIGTERM, &t, nullptr);
      }
    } restore{old_int, old_term};

    client::LocalCluster cluster(lo);
    const std::string& endpoint = cluster.endpoint();
    // Ready once every worker has registered.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    for (;;) {
      if (g_stop_signal.load()) return 0;
      if (auto dead = cluster.dead_child()) throw Error("[launch] " + *dead);
      try {
        if (ask_dispatcher(endpoint, std::chrono::milliseconds(500)).workers >=
            static_cast<uint32_t>(o.workers)) {
          break;
        }
      } catch (const TransportError&) {
        // Not answering yet: the dispatcher is still starting.
      }
      if (std::chrono::steady_clock::now() > deadline) {
        throw Error("[launch] the workers did not all register with " + endpoint +
                    " within 120 s (see their logs above)");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    if (!o.endpoint_file.empty()) write_endpoint_file(o.endpoint_file, endpoint);
    std::printf("gt launch: dispatcher at %s with %d %s worker%s (pids", endpoint.c_str(),
                o.workers, o.device.c_str(), o.workers == 1 ? "" : "s");
    for (pid_t p : cluster.pids()) std::printf(" %d", static_cast<int>(p));
    std::printf(")%s%s\n  connect programs with GT_DISPATCHER=%s; Ctrl-C stops the cluster\n",
                o.config.empty() ? "" : ", config ", o.config.c_str(), endpoint.c_str());
    std::fflush(stdout);
    while (!g_stop_signal.load()) {
      if (auto dead = cluster.dead_child()) {
        std::fprintf(stderr, "gt launch: %s; stopping the cluster\n", dead->c_str());
        cluster.stop();
        return 1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    std::fprintf(stderr, "gt launch: stopping (signal %d)\n", g_stop_signal.load());
    cluster.stop();
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gt launch: %s\n", e.what());
    return 1;
  }
}

}  // namespace gt::tools
