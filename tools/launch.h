#pragma once
// `gt launch`: a dispatcher and N workers on this machine, in the foreground
// (docs/tools.md... see README "The gt command").

#include <string>

#include <CLI/CLI.hpp>

namespace gt::tools {

struct LaunchOptions {
  int workers = 1;
  std::string listen = "tcp://127.0.0.1:0";  // the dispatcher's endpoint; port 0: any free port
  std::string device = "cpu";                // workers' device: cpu, or cuda:N (all on N)
  int threads = 1;                           // LibTorch threads per worker (0: LibTorch's default)
  std::string endpoint_file;                 // written once every worker has registered
  std::string config;                        // GT_CONFIG for the processes, validated first
};

void add_launch_options(CLI::App& app, LaunchOptions& options);
/// Runs `gt launch`; returns the exit code.
int run_launch(const LaunchOptions& options);

}  // namespace gt::tools
