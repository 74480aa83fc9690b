#pragma once
// `gt trace`: records a running dispatcher's event stream into files (docs/tools.md).

#include <string>

#include <CLI/CLI.hpp>

namespace gt::tools {

struct TraceOptions {
  double seconds = 10;    // how long to record
  std::string dir = ".";  // where trace_<timestamp>.log/.jsonl go
  std::string endpoint;   // dispatcher; empty: resolve_dispatcher's rules
};

void add_trace_options(CLI::App& app, TraceOptions& options);
/// Runs `gt trace`; returns the exit code.
int run_trace(const TraceOptions& options);

}  // namespace gt::tools
