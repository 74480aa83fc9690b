#pragma once
// `gt bench`: the runtime-core benchmarks. Every figure is printed next to its
// reference measured in the same run, as a ratio (machines are shared and noisy).

#include <string>

namespace CLI {
class App;
}

namespace gt::tools {

struct BenchOptions {
  std::string which = "all";  // throughput | latency | all
  int ops = 100000;           // throughput: ops issued before the one fetch
  int elems = 64;             // throughput: elements per tensor
  int iters = 2000;           // latency: round trips measured
  int repeats = 3;            // best of N for throughput
};

void add_bench_options(CLI::App& app, BenchOptions& options);

/// Runs the selected benchmarks; prints human lines and one `RESULT {json}` line.
int run_bench(const BenchOptions& options);

}  // namespace gt::tools
