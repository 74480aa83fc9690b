#pragma once
// `gt bench`: the runtime-core benchmarks. Every figure is printed next to its
// reference measured in the same run, as a ratio (machines are shared and noisy).

#include <string>

namespace CLI {
class App;
}

namespace gt::tools {

struct BenchOptions {
  std::string which = "all";  // throughput | latency | train | jit | log | dp | allreduce | clients | all
  int ops = 100000;           // throughput: ops issued before the one fetch
  int elems = 64;             // throughput: elements per tensor
  int iters = 2000;           // latency: round trips measured
  int repeats = 3;            // best of N for throughput and train
  int steps = 200;            // train: steps measured per repeat
  int batch = 128;            // train: samples per step (dp: 1024 unless given)
  int64_t bytes = 16 << 20;   // allreduce: bytes per all-reduce
  int clients = 16;           // clients: concurrent client processes
  double seconds = 10;        // clients: measured seconds per phase (500 paced steps per client)
  double period_ms = 20;      // clients: one step per period in the latency phases
  // Set when `gt bench clients` starts this process as one of its clients.
  int client_kind = 0;
  int64_t client_start_ms = 0;
  double client_phase_ms = 0;   // paced: first step this long after the start
  double client_seconds = 0;
  double client_period_ms = 0;  // 0: flat out
  std::string client_out;
};

/// `gt bench clients` (tools/bench_clients.cpp): each workload alone, then
/// `clients` processes with the workloads mixed, on one local worker; paced
/// (one step per `period_ms`) for latency, flat out for throughput.
struct ClientsBenchResult {
  int clients = 0;
  double period_ms = 0;  // pacing of the latency phases
  double solo_p50_us[3] = {}, solo_p99_us[3] = {};  // per workload, alone
  double solo_peak_ips = 0;     // instructions/s of the busiest workload alone
  double total_ips = 0;         // instructions/s with every client at once
  double solo_steps_per_s[3] = {};  // per workload, alone, flat out
  // Flat out together: the sum over clients of their steps/s over their
  // workload's steps/s alone; 1 = as much work as one client alone.
  double work_ratio = 0;
  // Paced together, per workload: p50 and p99 over all its clients' steps,
  // and the largest of its clients' p99 ratios.
  double together_p50_us[3] = {}, together_p99_us[3] = {}, worst_ratio_of[3] = {};
  double worst_p99_ratio = 0;   // max over clients of p99 together / p99 alone (paced)
  double median_p99_ratio = 0;  // the median of the same
  size_t steps = 0;             // steps all clients completed together (paced)
};
ClientsBenchResult bench_clients(int clients, double period_ms, double seconds);
/// "step", "stream", "upload".
std::string clients_kind_name(int kind);
/// The client side of `gt bench clients`.
int run_bench_client(const BenchOptions& options);

/// Per-step milliseconds of the MLP training step on 1 worker and,
/// data-parallel, on 2 (`gt bench dp`, tools/bench_dp.cpp).
struct DataParallelBenchResult {
  double one_worker_ms;
  double two_workers_ms;
};
DataParallelBenchResult bench_data_parallel(int64_t batch, int steps, int repeats);

/// Seconds per all-reduce of `bytes` floats' bytes between 2 workers through
/// gt and between two threads with plain Gloo (`gt bench allreduce`).
struct AllReduceBenchResult {
  int64_t bytes;
  double gt_s;      // per client op (row sum + all-reduce), end to end
  double gloo_s;    // plain Gloo
  double worker_s;  // the all_reduce instruction as the workers ran it
};
AllReduceBenchResult bench_allreduce(int64_t bytes, int iters, int repeats);

/// Per-step milliseconds of the MLP training step: gt eager, gt with
/// GT_AUTO_COMPILE=1 (after its compile and trial), LibTorch in-process.
struct TrainBenchResult {
  double gt_ms;
  double libtorch_ms;
  double jit_ms;
  bool jit_kept;  // the compiled step survived its trial against eager
  double jit_compiled_share;  // of the measured steps, the share run by the compiled unit
  double jit_elided_share;    // of those, by its variant without dead values
};

/// Milliseconds per iteration of the 8-op elementwise loop, eager and with
/// GT_AUTO_COMPILE=1.
struct JitBenchResult {
  double eager_ms;
  double jit_ms;
};

/// `gt bench jit` (tools/bench_jit.cpp): the loop on `elems` floats, `iters`
/// iterations per side; ends the current session (each side starts its own
/// local cluster).
JitBenchResult bench_jit_loop(int64_t elems, int iters);

/// `gt bench train` (tools/bench_train.cpp): best of `repeats` runs of `steps`
/// steps each, interleaved.
TrainBenchResult bench_train_step(int64_t batch, int steps, int repeats);

struct LogBenchResult {
  double off_ops_per_s;
  double on_ops_per_s;
  double events;  // lines in the last run's JSON files (all components)
  double bytes;   // bytes of both forms in the last run
};

/// The throughput loop with GT_INSTRUCTION_LOG unset and set (issue 5's 20%
/// budget), best of `repeats` each, sides alternating; restarts the session.
LogBenchResult bench_instruction_log(int ops, int elems, int repeats);

void add_bench_options(CLI::App& app, BenchOptions& options);

/// Runs the selected benchmarks; prints human lines and one `RESULT {json}` line.
int run_bench(const BenchOptions& options);

}  // namespace gt::tools
