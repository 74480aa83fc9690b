#include "tools/bench.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <vector>

#include <ATen/ATen.h>
#include <CLI/CLI.hpp>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include <gt/gt.h>

#include "common/env.h"

namespace gt::tools {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5))];
}

// Raw ZeroMQ two-hop ping-pong with gt's socket types and transport: client
// DEALER -> relay ROUTER -> echo DEALER and back, three processes, ipc.
// Runs before gt starts any thread, because it forks.
std::vector<double> raw_pingpong_us(int iters) {
  char tmpl[] = "/tmp/gt-bench-XXXXXX";
  const std::string dir = mkdtemp(tmpl);
  const std::string relay_ep = "ipc://" + dir + "/relay";

  const pid_t relay = fork();
  if (relay == 0) {
    // Children end with _exit (no parent state to unwind), so their sockets
    // are closed first, in a scope: that flushes the last queued message.
    {
      zmq::context_t ctx(1);
      zmq::socket_t router(ctx, zmq::socket_type::router);
      router.bind(relay_ep);
      // The echo process announces itself with "hello"; pings that arrive
      // before it are held until then. Then relay both ways.
      std::string echo_id;
      std::vector<std::vector<zmq::message_t>> held;
      auto forward_ping = [&](std::vector<zmq::message_t>& m) {
        router.send(zmq::buffer(echo_id), zmq::send_flags::sndmore);
        router.send(m[0], zmq::send_flags::sndmore);  // client id
        router.send(m[1], zmq::send_flags::none);
      };
      for (int handled = 0; handled < 2 * (iters + 1);) {
        std::vector<zmq::message_t> m;
        (void)zmq::recv_multipart(router, std::back_inserter(m));
        if (echo_id.empty() && m.size() == 2 && m[1].to_string() == "hello") {
          echo_id = m[0].to_string();
          for (auto& h : held) forward_ping(h);
          handled += held.size();
          held.clear();
        } else if (!echo_id.empty() && m[0].to_string() == echo_id && m.size() == 3) {
          router.send(m[1], zmq::send_flags::sndmore);  // back to the client
          router.send(m[2], zmq::send_flags::none);
          ++handled;
        } else if (echo_id.empty()) {
          held.push_back(std::move(m));
        } else {
          forward_ping(m);
          ++handled;
        }
      }
    }
    _exit(0);
  }
  const pid_t echo = fork();
  if (echo == 0) {
    {
      zmq::context_t ctx(1);
      zmq::socket_t dealer(ctx, zmq::socket_type::dealer);
      dealer.connect(relay_ep);
      dealer.send(zmq::str_buffer("hello"), zmq::send_flags::none);
      for (int i = 0; i < iters + 1; ++i) {
        zmq::message_t client, payload;
        (void)dealer.recv(client);
        (void)dealer.recv(payload);
        dealer.send(client, zmq::send_flags::sndmore);
        dealer.send(payload, zmq::send_flags::none);
      }
    }
    _exit(0);
  }
  std::vector<double> samples;
  {
    zmq::context_t ctx(1);
    zmq::socket_t dealer(ctx, zmq::socket_type::dealer);
    dealer.connect(relay_ep);
    char buf[64] = {};
    for (int i = 0; i < iters + 1; ++i) {
      const auto t0 = Clock::now();
      dealer.send(zmq::buffer(buf, sizeof buf), zmq::send_flags::none);
      zmq::message_t reply;
      (void)dealer.recv(reply);
      if (i > 0) samples.push_back(seconds_since(t0) * 1e6);  // first one connects
    }
  }
  waitpid(relay, nullptr, 0);
  waitpid(echo, nullptr, 0);
  std::filesystem::remove_all(dir);
  return samples;
}

double torch_ops_per_s(int ops, int elems) {
  at::Tensor x = at::zeros({elems});
  at::Tensor y = at::ones({elems});
  const auto t0 = Clock::now();
  for (int i = 0; i < ops; ++i) x = x + y;
  (void)x.sum().item<float>();
  return ops / seconds_since(t0);
}

double gt_ops_per_s(int ops, int elems) {
  gt::Tensor x = gt::zeros({elems});
  gt::Tensor y = gt::ones({elems});
  gt::synchronize();
  const auto t0 = Clock::now();
  for (int i = 0; i < ops; ++i) x = x + y;
  const auto v = x.to_vector<float>();
  const double rate = ops / seconds_since(t0);
  if (v.empty() || v[0] != static_cast<float>(ops)) {
    throw gt::Error("[bench] throughput loop computed " + std::to_string(v.empty() ? -1 : v[0]) +
                    ", expected " + std::to_string(ops));
  }
  return rate;
}

}  // namespace

LogBenchResult bench_instruction_log(int ops, int elems, int repeats) {
  // Each side in a fresh session and local cluster: the client and the
  // cluster's processes read GT_INSTRUCTION_LOG when they start. Sides
  // alternate so both see the same machine load.
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("gt-bench-log-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  LogBenchResult r{0, 0, 0, 0};
  for (int i = 0; i < repeats; ++i) {
    gt::shutdown();
    {
      ScopedEnv off("GT_INSTRUCTION_LOG", nullptr);
      r.off_ops_per_s = std::max(r.off_ops_per_s, gt_ops_per_s(ops, elems));
      gt::shutdown();
    }
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    {
      ScopedEnv on("GT_INSTRUCTION_LOG", (dir / "bench").c_str());
      r.on_ops_per_s = std::max(r.on_ops_per_s, gt_ops_per_s(ops, elems));
      gt::shutdown();  // the processes write what they queued as they exit
    }
  }
  for (const auto& f : std::filesystem::directory_iterator(dir)) {
    r.bytes += static_cast<double>(f.file_size());
    if (f.path().extension() != ".jsonl") continue;
    std::ifstream in(f.path());
    std::string line;
    while (std::getline(in, line)) ++r.events;
  }
  std::filesystem::remove_all(dir);
  return r;
}

namespace {

std::vector<double> gt_sync_us(int iters) {
  gt::Tensor x = gt::ones({1});
  std::vector<double> samples;
  for (int i = 0; i < iters + 10; ++i) {
    const auto t0 = Clock::now();
    const float v = (x + 1.0).item<float>();
    if (i >= 10) samples.push_back(seconds_since(t0) * 1e6);
    if (v != 2.0f) throw gt::Error("[bench] latency loop computed a wrong value");
  }
  return samples;
}

}  // namespace

void add_bench_options(CLI::App& app, BenchOptions& o) {
  app.add_option("which", o.which,
                 "throughput, latency, train, jit, log, dp, allreduce, clients, or all (all but "
                 "clients)")
      ->capture_default_str()
      ->check(CLI::IsMember(
          {"throughput", "latency", "train", "jit", "log", "dp", "allreduce", "clients", "all"}));
  app.add_option("--ops", o.ops, "Ops issued before the fetch (throughput)")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000000));
  app.add_option("--elems", o.elems, "Elements per tensor (throughput; jit, where the default is 1M)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 26));
  app.add_option("--iters", o.iters, "Round trips measured (latency)")
      ->capture_default_str()
      ->check(CLI::Range(10, 10000000));
  app.add_option("--repeats", o.repeats, "Best of N runs (throughput, train)")
      ->capture_default_str()
      ->check(CLI::Range(1, 100));
  app.add_option("--steps", o.steps, "Training steps measured per run (train)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000000));
  app.add_option("--batch", o.batch, "Samples per training step (train; dp, where the default is 1024)")
      ->capture_default_str()
      ->check(CLI::Range(1, 65536));
  app.add_option("--bytes", o.bytes, "Bytes per all-reduce (allreduce)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{8}, int64_t{1} << 32));
  app.add_option("--clients", o.clients, "Concurrent client processes (clients)")
      ->capture_default_str()
      ->check(CLI::Range(1, 256));
  app.add_option("--seconds", o.seconds, "Measured seconds per phase (clients)")
      ->capture_default_str()
      ->check(CLI::Range(0.5, 600.0));
  app.add_option("--period-ms", o.period_ms,
                 "Each client's step period in the latency phases (clients)")
      ->capture_default_str()
      ->check(CLI::Range(1.0, 10000.0));
  // The client processes of `gt bench clients` (not for people: no group).
  app.add_option("--client-kind", o.client_kind)->group("")->check(CLI::Range(0, 2));
  app.add_option("--client-start-ms", o.client_start_ms)->group("");
  app.add_option("--client-phase-ms", o.client_phase_ms)->group("");
  app.add_option("--client-seconds", o.client_seconds)->group("");
  app.add_option("--client-period-ms", o.client_period_ms)->group("");
  app.add_option("--client-out", o.client_out)->group("");
}

int run_bench(const BenchOptions& o) {
  if (!o.client_out.empty()) return run_bench_client(o);
  try {
    const bool thr = o.which == "all" || o.which == "throughput";
    const bool lat = o.which == "all" || o.which == "latency";
    // (log is measured last: it restarts the session)
    const bool train = o.which == "all" || o.which == "train";
    const bool jit = o.which == "all" || o.which == "jit";
    const bool log = o.which == "all" || o.which == "log";
    const bool dp = o.which == "all" || o.which == "dp";
    const bool allreduce = o.which == "all" || o.which == "allreduce";
    const bool clients = o.which == "clients";  // minutes of many processes: on request only
    std::vector<double> raw;
    if (lat) raw = raw_pingpong_us(o.iters);  // forks: before any gt thread

    std::string json = "{";
    if (thr) {
      double gt_best = 0, torch_best = 0;
      for (int r = 0; r < o.repeats; ++r) {
        torch_best = std::max(torch_best, torch_ops_per_s(o.ops, o.elems));
        gt_best = std::max(gt_best, gt_ops_per_s(o.ops, o.elems));
      }
      std::printf(
          "throughput: %d adds of %d floats then one fetch: gt %.0f ops/s, LibTorch in-process "
          "%.0f ops/s, gt/LibTorch %.2f (target: gt >= 200000 ops/s)\n",
          o.ops, o.elems, gt_best, torch_best, gt_best / torch_best);
      json += "\"gt_ops_per_s\":" + std::to_string(gt_best) +
              ",\"libtorch_ops_per_s\":" + std::to_string(torch_best) +
              ",\"throughput_ratio\":" + std::to_string(gt_best / torch_best);
    }
    if (lat) {
      const auto g = gt_sync_us(o.iters);
      const double g50 = percentile(g, 0.5), r50 = percentile(raw, 0.5);
      std::printf(
          "latency: op + scalar fetch p50 %.1f us (p99 %.1f), raw ZeroMQ two-hop ping-pong p50 "
          "%.1f us (p99 %.1f), gt/raw %.2f (target <= 3)\n",
          g50, percentile(g, 0.99), r50, percentile(raw, 0.99), g50 / r50);
      if (json.size() > 1) json += ",";
      json += "\"gt_sync_p50_us\":" + std::to_string(g50) +
              ",\"raw_pingpong_p50_us\":" + std::to_string(r50) +
              ",\"latency_ratio\":" + std::to_string(g50 / r50);
    }
    if (train) {
      const TrainBenchResult t = bench_train_step(o.batch, o.steps, o.repeats);
      std::printf(
          "train: MLP 784-256-256-10 step (batch %d, Adam, cross-entropy): gt %.3f ms, "
          "LibTorch in-process %.3f ms, gt/LibTorch %.2f (target <= 1.5)\n",
          o.batch, t.gt_ms, t.libtorch_ms, t.gt_ms / t.libtorch_ms);
      std::printf(
          "train: the same step with GT_AUTO_COMPILE=1: %.3f ms (compiled step %s, ran %.0f%% "
          "of the steps, %.0f%% without dead values), gt+JIT/LibTorch %.2f (target < 1.0), "
          "gt+JIT/gt %.2f\n",
          t.jit_ms, t.jit_kept ? "kept" : "dropped by its trial", 100 * t.jit_compiled_share,
          100 * t.jit_elided_share, t.jit_ms / t.libtorch_ms, t.jit_ms / t.gt_ms);
      if (json.size() > 1) json += ",";
      json += "\"gt_step_ms\":" + std::to_string(t.gt_ms) +
              ",\"libtorch_step_ms\":" + std::to_string(t.libtorch_ms) +
              ",\"train_step_ratio\":" + std::to_string(t.gt_ms / t.libtorch_ms) +
              ",\"jit_step_ms\":" + std::to_string(t.jit_ms) +
              ",\"jit_step_kept\":" + (t.jit_kept ? "true" : "false") +
              ",\"jit_train_step_ratio\":" + std::to_string(t.jit_ms / t.libtorch_ms);
    }
    if (jit) {
      // Uses --elems when given on the command line for this bench, else 1M.
      const int64_t elems = o.which == "jit" && o.elems != 64 ? o.elems : int64_t{1} << 20;
      const JitBenchResult j = bench_jit_loop(elems, 100);
      std::printf(
          "jit: 8-op elementwise loop on %lld floats: eager %.3f ms/iter, GT_AUTO_COMPILE=1 "
          "%.3f ms/iter, speedup %.2fx (target >= 4)\n",
          static_cast<long long>(elems), j.eager_ms, j.jit_ms, j.eager_ms / j.jit_ms);
      if (json.size() > 1) json += ",";
      json += "\"jit_eager_ms\":" + std::to_string(j.eager_ms) +
              ",\"jit_ms\":" + std::to_string(j.jit_ms) +
              ",\"jit_speedup\":" + std::to_string(j.eager_ms / j.jit_ms);
    }
    if (dp) {
      const int64_t batch = o.which == "dp" && o.batch != 128 ? o.batch : 1024;
      const int steps = o.which == "dp" && o.steps != 200 ? o.steps : 30;
      const DataParallelBenchResult d = bench_data_parallel(batch, steps, o.repeats);
      std::printf(
          "dp: MLP 784-256-256-10 step (batch %lld, Adam), 1 worker %.2f ms, 2 workers "
          "data-parallel %.2f ms, speedup %.2fx (target >= 1.5)\n",
          static_cast<long long>(batch), d.one_worker_ms, d.two_workers_ms,
          d.one_worker_ms / d.two_workers_ms);
      if (json.size() > 1) json += ",";
      json += "\"dp_one_worker_ms\":" + std::to_string(d.one_worker_ms) +
              ",\"dp_two_workers_ms\":" + std::to_string(d.two_workers_ms) +
              ",\"dp_speedup\":" + std::to_string(d.one_worker_ms / d.two_workers_ms);
    }
    if (allreduce) {
      const int iters = static_cast<int>(std::clamp<int64_t>((int64_t{1} << 30) / o.bytes, 10, 2000));
      const AllReduceBenchResult a = bench_allreduce(o.bytes, iters, o.repeats);
      const double gt_gbs = a.bytes / a.gt_s / 1e9, gloo_gbs = a.bytes / a.gloo_s / 1e9;
      const double worker_gbs = a.bytes / a.worker_s / 1e9;
      std::printf(
          "allreduce: %.1f MB between 2 workers: the all_reduce instruction in the workers %.3f "
          "ms (%.2f GB/s), plain Gloo between 2 threads %.3f ms (%.2f GB/s), gt/Gloo bandwidth "
          "%.2f (target >= 0.8); per client op (row sum + all-reduce + stream) %.3f ms (%.2f "
          "GB/s, %.2f of Gloo)\n",
          a.bytes / 1e6, a.worker_s * 1e3, worker_gbs, a.gloo_s * 1e3, gloo_gbs,
          worker_gbs / gloo_gbs, a.gt_s * 1e3, gt_gbs, gt_gbs / gloo_gbs);
      if (json.size() > 1) json += ",";
      json += "\"allreduce_bytes\":" + std::to_string(a.bytes) +
              ",\"allreduce_worker_gbs\":" + std::to_string(worker_gbs) +
              ",\"allreduce_op_gbs\":" + std::to_string(gt_gbs) +
              ",\"allreduce_gloo_gbs\":" + std::to_string(gloo_gbs) +
              ",\"allreduce_ratio\":" + std::to_string(worker_gbs / gloo_gbs);
    }
    if (clients) {
      const ClientsBenchResult c = bench_clients(o.clients, o.period_ms, o.seconds);
      for (int k = 0; k < 3; ++k) {
        std::printf("clients: %s alone, a step every %.0f ms: p50 %.0f us, p99 %.0f us\n",
                    clients_kind_name(k).c_str(), c.period_ms, c.solo_p50_us[k], c.solo_p99_us[k]);
      }
      std::printf(
          "clients: %d clients (step/stream/upload mixed) on 1 worker, a step every %.0f ms "
          "each: p99 step latency vs alone: worst %.2fx, median %.2fx (target <= 3); %zu steps\n",
          c.clients, c.period_ms, c.worst_p99_ratio, c.median_p99_ratio, c.steps);
      for (int k = 0; k < 3 && k < c.clients; ++k) {
        std::printf("clients: %s together: p50 %.0f us, p99 %.0f us over its clients' steps; "
                    "its worst client's p99 %.2fx alone\n",
                    clients_kind_name(k).c_str(), c.together_p50_us[k], c.together_p99_us[k],
                    c.worst_ratio_of[k]);
      }
      std::printf(
          "clients: flat out, alone: step %.0f, stream %.0f, upload %.0f steps/s; together: "
          "%.2f of one client's work alone (target >= 0.8); %.0f instructions/s vs %.0f for the "
          "busiest client alone (%.2f)\n",
          c.solo_steps_per_s[0], c.solo_steps_per_s[1], c.solo_steps_per_s[2], c.work_ratio,
          c.total_ips, c.solo_peak_ips, c.total_ips / c.solo_peak_ips);
      if (json.size() > 1) json += ",";
      json += "\"clients\":" + std::to_string(c.clients) +
              ",\"clients_total_ips\":" + std::to_string(c.total_ips) +
              ",\"clients_solo_peak_ips\":" + std::to_string(c.solo_peak_ips) +
              ",\"clients_ips_ratio\":" + std::to_string(c.total_ips / c.solo_peak_ips) +
              ",\"clients_work_ratio\":" + std::to_string(c.work_ratio) +
              ",\"clients_worst_p99_ratio\":" + std::to_string(c.worst_p99_ratio) +
              ",\"clients_median_p99_ratio\":" + std::to_string(c.median_p99_ratio);
    }
    if (log) {
      const LogBenchResult l = bench_instruction_log(o.ops, o.elems, o.repeats);
      std::printf(
          "log: the throughput loop with GT_INSTRUCTION_LOG set: %.0f ops/s, without: %.0f "
          "ops/s, on/off %.2f (target >= 0.8); %.0f events, %.1f MB written\n",
          l.on_ops_per_s, l.off_ops_per_s, l.on_ops_per_s / l.off_ops_per_s, l.events,
          l.bytes / 1e6);
      if (json.size() > 1) json += ",";
      json += "\"log_on_ops_per_s\":" + std::to_string(l.on_ops_per_s) +
              ",\"log_off_ops_per_s\":" + std::to_string(l.off_ops_per_s) +
              ",\"log_ratio\":" + std::to_string(l.on_ops_per_s / l.off_ops_per_s);
    }
    std::printf("RESULT %s}\n", json.c_str());
    gt::shutdown();
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gt bench: %s\n", e.what());
    return 1;
  }
}

}  // namespace gt::tools
