// The `gt` command: one executable with a subcommand per role and tool.

#include <iostream>

#include <CLI/CLI.hpp>

#include "common/wire.h"
#include "dispatcher/dispatcher.h"
#include "tools/bench.h"
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
      "bench", "Benchmarks: pipelined throughput, sync latency, training step; printed as ratios");
  gt::tools::add_bench_options(*bench, bopts);

  CLI11_PARSE(app, argc, argv);

  if (*dispatcher) return gt::dispatcher::run_dispatcher_main(dopts);
  if (*worker) return gt::worker::run_worker_main(wopts);
  if (*bench) return gt::tools::run_bench(bopts);
  return 0;
}
