// The `gt` command: one executable with a subcommand per role and tool.

#include <chrono>
#include <cstdio>
#include <ctime>
#include <iostream>
#include <string>

#include <CLI/CLI.hpp>

#include "common/security.h"
#include "common/wire.h"
#include "dispatcher/dispatcher.h"
#include "tools/bench.h"
#include "tools/launch.h"
#include "tools/top.h"
#include "tools/trace.h"
#include "tools/viz.h"
#include "worker/jit/compiler_cpu.h"
#include "worker/worker.h"

int main(int argc, char** argv) {
  CLI::App app{"gt: a distributed tensor runtime (client -> dispatcher -> workers)"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "gt 0.1.0 (protocol " +
                                        std::to_string(gt::wire::kProtocolVersion) + ")");

  gt::dispatcher::DispatcherOptions dopts;
  auto* dispatcher = app.add_subcommand(
      "dispatcher", "Run a dispatcher: the endpoint clients and workers connect to");
  dispatcher->add_option("--listen,-l", dopts.listen,
                         "ZeroMQ endpoint to bind: tcp://HOST:PORT (port 0 = any free port), "
                         "ipc://PATH")
      ->required();
  dispatcher->add_option("--worker-wait-ms", dopts.worker_wait_ms,
                         "How long a client may wait for enough workers to register")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{3600000}));
  dispatcher->add_option("--events", dopts.events,
                         "Event stream (PUB) endpoint for gt trace and gt top: auto (any free port "
                         "on the --listen host; ipc: the listen path plus .events), off, or an "
                         "endpoint")
      ->capture_default_str();
  dispatcher->add_option("--endpoint-file", dopts.endpoint_file,
                         "Write the bound endpoint to this file once listening (for scripts "
                         "and tests that bind port 0)");

  gt::worker::WorkerOptions wopts;
  auto* worker = app.add_subcommand(
      "worker", "Run a worker: executes instructions with LibTorch on one device");
  worker->add_option("--connect,-c", wopts.dispatcher, "Dispatcher endpoint to connect to")
      ->required();
  worker->add_option("--device,-d", wopts.device, "cpu or cuda:N")->capture_default_str();
  worker->add_option("--threads", wopts.threads,
                     "LibTorch intra-op threads (0 = LibTorch's default)")
      ->capture_default_str()
      ->check(CLI::Range(0, 1024));
  worker->add_option("--name", wopts.name, "Name shown in logs");

  gt::tools::BenchOptions bopts;
  auto* bench = app.add_subcommand(
      "bench",
      "Benchmarks: pipelined throughput, sync latency, training step (eager and with the JIT), JIT "
      "loop; printed as ratios");
  gt::tools::add_bench_options(*bench, bopts);

  gt::tools::LaunchOptions lopts;
  auto* launch = app.add_subcommand(
      "launch", "Start a dispatcher and N workers on this machine, in the foreground (Ctrl-C stops)");
  gt::tools::add_launch_options(*launch, lopts);

  gt::tools::TraceOptions topts;
  auto* trace = app.add_subcommand(
      "trace", "Record a running dispatcher's event stream into trace_<timestamp>.log/.jsonl");
  gt::tools::add_trace_options(*trace, topts);

  gt::tools::VizOptions vopts;
  auto* viz = app.add_subcommand(
      "viz", "Draw instruction logs as a timeline: PNG, SVG, PDF, interactive HTML, Chrome trace");
  gt::tools::add_viz_options(*viz, vopts);

  gt::tools::TopOptions popts;
  auto* top = app.add_subcommand("top", "Live view of a cluster: workers, utilisation, JIT chains");
  gt::tools::add_top_options(*top, popts);

  std::string cache_dir;
  auto* cache = app.add_subcommand(
      "cache", "The JIT's on-disk cache of compiled code (GT_COMPILE_CACHE_DIR)");
  cache->require_subcommand(1);
  auto* cache_list = cache->add_subcommand("list", "List compiled units: key, size, age, path");
  auto* cache_clear = cache->add_subcommand("clear", "Remove every compiled unit");
  for (auto* sub : {cache_list, cache_clear}) {
    sub->add_option("--dir", cache_dir,
                    "Cache directory (default: GT_COMPILE_CACHE_DIR, else "
                    "$XDG_CACHE_HOME/gt/jit or ~/.cache/gt/jit)");
  }

  std::string keygen_out;
  bool keygen_force = false;
  auto* keygen = app.add_subcommand(
      "keygen", "Make a CURVE key pair for the dispatcher, a worker, a client or a tool "
                "(docs/security.md)");
  keygen->add_option("--out,-o", keygen_out,
                     "Write PREFIX.key (secret, mode 0600) and PREFIX.pub (public); without it "
                     "the key file's text goes to stdout");
  keygen->add_flag("--force", keygen_force, "Replace existing PREFIX.key and PREFIX.pub");

  CLI11_PARSE(app, argc, argv);

  if (*keygen) {
    try {
      const gt::CurveKeyPair keys = gt::generate_curve_key_pair();
      if (keygen_out.empty()) {
        std::fputs(gt::format_secret_key_file(keys).c_str(), stdout);
        return std::fflush(stdout) == 0 ? 0 : 1;
      }
      const auto [secret, pub] = gt::write_key_files(keygen_out, keys, keygen_force);
      std::printf("wrote %s (secret, mode 0600) and %s (public)\npublic key: %s\n", secret.c_str(),
                  pub.c_str(), keys.public_key.c_str());
      return 0;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "gt keygen: %s\n", e.what());
      return 1;
    }
  }

  if (*cache) {
    try {
      const std::filesystem::path dir =
          cache_dir.empty() ? gt::worker::jit::default_cache_dir() : std::filesystem::path(cache_dir);
      if (*cache_list) {
        const auto entries = gt::worker::jit::list_cache(dir);
        uint64_t total = 0;
        const auto now = std::filesystem::file_time_type::clock::now();
        for (const auto& e : entries) {
          const auto age = std::chrono::duration_cast<std::chrono::seconds>(now - e.mtime).count();
          std::printf("%s  %8llu bytes  %8llds old  %s\n", e.key.c_str(),
                      static_cast<unsigned long long>(e.size_bytes), static_cast<long long>(age),
                      e.path.c_str());
          total += e.size_bytes;
        }
        std::printf("%zu compiled units, %llu bytes in %s\n", entries.size(),
                    static_cast<unsigned long long>(total), dir.c_str());
      }
      if (*cache_clear) {
        const size_t n = gt::worker::jit::clear_cache(dir);
        std::printf("removed %zu compiled units from %s\n", n, dir.c_str());
      }
      return 0;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "gt cache: %s\n", e.what());
      return 1;
    }
  }

  if (*dispatcher) return gt::dispatcher::run_dispatcher_main(dopts);
  if (*worker) return gt::worker::run_worker_main(wopts);
  if (*bench) return gt::tools::run_bench(bopts);
  if (*launch) return gt::tools::run_launch(lopts);
  if (*trace) return gt::tools::run_trace(topts);
  if (*viz) return gt::tools::run_viz(vopts);
  if (*top) return gt::tools::run_top(popts);
  return 0;
}
