// `gt bench clients` (docs/benchmarks.md, "Many clients"): N client
// processes with mixed workloads on one local cluster, against each workload
// run alone on the same cluster. Each client is this executable started again
// as `gt bench clients --client-out FILE ...`: a process of its own, as users'
// programs are, with its own gt session.

#include "tools/bench.h"

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <gt/gt.h>

#include "client/internal/local_cluster.h"

extern char** environ;

namespace gt::tools {
namespace {

using Clock = std::chrono::steady_clock;

int64_t unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// The workloads, as a user's program would run them; each step ends with a
// value back in the program (a round trip), whose latency is measured.
// - step:   a small model step: 64x64 matmul, relu, sum, item;
// - stream: 8 pipelined elementwise passes over 64K floats, then item;
// - upload: a 16 KiB upload, summed, item.
constexpr const char* kKinds[] = {"step", "stream", "upload"};
constexpr int kNumKinds = 3;

void run_step(int kind, const gt::Tensor& x, const gt::Tensor& w, const gt::Tensor& big,
              const std::vector<float>& host) {
  float v = 0;
  if (kind == 0) {
    v = x.matmul(w).relu().sum().item<float>();
  } else if (kind == 1) {
    gt::Tensor y = big;
    for (int i = 0; i < 8; ++i) y = y * 0.5 + 1.0;
    v = y.sum().item<float>();
  } else {
    v = gt::tensor(host, {static_cast<int64_t>(host.size())}).sum().item<float>();
  }
  if (!(v == v)) throw gt::Error("[bench] a client computed NaN");
}

struct ClientResult {
  int kind = 0;
  std::vector<double> latencies_us;
};

uint64_t worker_instructions() { return gt::debug::stats().instructions(); }

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())));
  return v[i];
}

// Starts one client per entry of `kinds` against `endpoint`; they start
// their measured steps together and run them for `seconds`. Returns their
// latencies, and in `rate` the instructions per second the cluster ran
// while they measured.
std::vector<ClientResult> run_clients(const std::string& exe, const std::string& endpoint,
                                      const std::vector<int>& kinds, double period_ms,
                                      double seconds, const std::string& dir, double& rate) {
  // Time for every process to start and make its session first.
  const int64_t start_ms = unix_ms() + 1500 + 100 * static_cast<int64_t>(kinds.size());
  std::vector<pid_t> pids;
  std::vector<std::string> outs;
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    if (std::string_view(*e).rfind("GT_DISPATCHER=", 0) != 0) env.emplace_back(*e);
  }
  env.push_back("GT_DISPATCHER=" + endpoint);
  std::vector<char*> envp;
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  for (size_t i = 0; i < kinds.size(); ++i) {
    outs.push_back(dir + "/client-" + std::to_string(i) + ".txt");
    // Paced clients start their periods evenly spread, as independent
    // users would be, not all in the same millisecond.
    const double phase_ms = period_ms * static_cast<double>(i) / static_cast<double>(kinds.size());
    std::vector<std::string> args{exe,
                                  "bench",
                                  "clients",
                                  "--client-kind",
                                  std::to_string(kinds[i]),
                                  "--client-start-ms",
                                  std::to_string(start_ms),
                                  "--client-phase-ms",
                                  std::to_string(phase_ms),
                                  "--client-seconds",
                                  std::to_string(seconds),
                                  "--client-period-ms",
                                  std::to_string(period_ms),
                                  "--client-out",
                                  outs.back()};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t pid = -1;
    if (posix_spawn(&pid, exe.c_str(), nullptr, nullptr, argv.data(), envp.data()) != 0) {
      for (pid_t p : pids) kill(p, SIGKILL);
      throw gt::Error("[bench] cannot start a client process " + exe);
    }
    pids.push_back(pid);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(std::max<int64_t>(0, start_ms - unix_ms())));
  const uint64_t before = worker_instructions();
  const auto t0 = Clock::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  rate = static_cast<double>(worker_instructions() - before) /
         std::chrono::duration<double>(Clock::now() - t0).count();
  bool ok = true;
  for (pid_t p : pids) {
    int status = 0;
    waitpid(p, &status, 0);
    ok = ok && WIFEXITED(status) && WEXITSTATUS(status) == 0;
  }
  if (!ok) throw gt::Error("[bench] a client process failed (see its stderr above)");
  std::vector<ClientResult> results;
  for (size_t i = 0; i < kinds.size(); ++i) {
    ClientResult r;
    r.kind = kinds[i];
    std::ifstream in(outs[i]);
    for (double us; in >> us;) r.latencies_us.push_back(us);
    if (r.latencies_us.empty()) throw gt::Error("[bench] a client measured no step");
    results.push_back(std::move(r));
  }
  return results;
}

}  // namespace

int run_bench_client(const BenchOptions& o) {
  try {
    const int kind = o.client_kind;
    gt::manual_seed(kind);
    const gt::Tensor x = gt::randn({64, 64}), w = gt::randn({64, 64});
    const gt::Tensor big = gt::ones({1 << 16});
    const std::vector<float> host(4096, 1.0f);
    run_step(kind, x, w, big, host);  // the session exists, the worker is warm
    const int64_t wait = o.client_start_ms - unix_ms();
    if (wait > 0) std::this_thread::sleep_for(std::chrono::milliseconds(wait));
    std::vector<double> latencies;
    const auto end = Clock::now() + std::chrono::duration<double>(o.client_seconds);
    const auto period = std::chrono::duration<double, std::milli>(o.client_period_ms);
    auto next = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                   std::chrono::duration<double, std::milli>(o.client_phase_ms));
    while (Clock::now() < end) {
      if (o.client_period_ms > 0) {  // paced: one step per period, late steps not made up
        std::this_thread::sleep_until(next);
        next = std::max(next + std::chrono::duration_cast<Clock::duration>(period), Clock::now());
      }
      const auto t0 = Clock::now();
      run_step(kind, x, w, big, host);
      latencies.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
    }
    std::ofstream out(o.client_out);
    for (double us : latencies) out << us << "\n";
    gt::shutdown();
    return out.good() ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gt bench client: %s\n", e.what());
    return 1;
  }
}

ClientsBenchResult bench_clients(int clients, double period_ms, double seconds) {
  const std::string exe = client::find_executable(client::ExecutableSearch::from_process());
  const std::string dir = (std::filesystem::temp_directory_path() /
                           ("gt-bench-clients-" + std::to_string(::getpid())))
                              .string();
  std::filesystem::create_directories(dir);
  client::LocalClusterOptions options;
  options.executable = exe;
  options.workers = 1;
  options.threads_per_worker = 1;
  client::LocalCluster cluster(options);
  gt::connect(cluster.endpoint());  // this program's session: stats only

  ClientsBenchResult r;
  r.clients = clients;
  r.period_ms = period_ms;
  std::vector<int> kinds;
  for (int i = 0; i < clients; ++i) kinds.push_back(i % kNumKinds);
  double rate = 0;
  // Latency: every client paced at one step per period, each workload first
  // alone, then all at once (a shared cluster that is busy, not overloaded).
  for (int k = 0; k < kNumKinds; ++k) {
    const auto solo = run_clients(exe, cluster.endpoint(), {k}, period_ms, seconds, dir, rate);
    r.solo_p50_us[k] = percentile(solo[0].latencies_us, 0.5);
    r.solo_p99_us[k] = percentile(solo[0].latencies_us, 0.99);
  }
  const auto paced = run_clients(exe, cluster.endpoint(), kinds, period_ms, seconds, dir, rate);
  std::vector<double> ratios;
  std::vector<double> pooled[kNumKinds];
  for (const ClientResult& c : paced) {
    ratios.push_back(percentile(c.latencies_us, 0.99) / r.solo_p99_us[c.kind]);
    r.worst_ratio_of[c.kind] = std::max(r.worst_ratio_of[c.kind], ratios.back());
    pooled[c.kind].insert(pooled[c.kind].end(), c.latencies_us.begin(), c.latencies_us.end());
    r.steps += c.latencies_us.size();
  }
  for (int k = 0; k < kNumKinds; ++k) {
    r.together_p50_us[k] = percentile(pooled[k], 0.5);
    r.together_p99_us[k] = percentile(pooled[k], 0.99);
  }
  r.worst_p99_ratio = *std::max_element(ratios.begin(), ratios.end());
  r.median_p99_ratio = percentile(ratios, 0.5);
  // Throughput: flat out, each workload alone, then every client. Work is
  // counted in each workload's own steps, since their instructions differ
  // in size (a stream step's 16 instructions each pass over 64K floats).
  for (int k = 0; k < kNumKinds; ++k) {
    const auto solo = run_clients(exe, cluster.endpoint(), {k}, 0, seconds, dir, rate);
    r.solo_peak_ips = std::max(r.solo_peak_ips, rate);
    r.solo_steps_per_s[k] = static_cast<double>(solo[0].latencies_us.size()) / seconds;
  }
  const auto flat = run_clients(exe, cluster.endpoint(), kinds, 0, seconds, dir, r.total_ips);
  for (const ClientResult& c : flat) {
    r.work_ratio += static_cast<double>(c.latencies_us.size()) / seconds / r.solo_steps_per_s[c.kind];
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  gt::shutdown();
  return r;
}

std::string clients_kind_name(int kind) { return kKinds[kind]; }

}  // namespace gt::tools
