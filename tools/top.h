#pragma once
// `gt top`: a live terminal view of a cluster (docs/tools.md). TopModel keeps
// what the STATS events said and draws it as plain text; run_top attaches to
// the dispatcher's event stream and drives the terminal.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>

#include "common/instruction_log.h"

namespace gt::tools {

struct TopOptions {
  std::string endpoint;   // dispatcher; empty: resolve_dispatcher's rules
  int interval_ms = 250;  // screen refresh period
  int frames = 0;         // stop after this many refreshes (0: until q / Ctrl-C)
};

void add_top_options(CLI::App& app, TopOptions& options);
/// Runs `gt top`; returns the exit code (0 after q / Ctrl-C / --frames, 1 when
/// the dispatcher cannot be reached; errors are printed to stderr).
int run_top(const TopOptions& options);

/// "512 B", "1.5 KiB", "12.0 MiB", "3.2 GiB": bytes in binary units.
std::string format_bytes(uint64_t bytes);

/// The state of a cluster as its STATS events describe it (docs/instruction_log.md,
/// "Events"), and the `gt top` screen drawn from it. Times are seconds on one
/// steady clock chosen by the caller (add and render must agree). Tolerant by
/// design: events other than STATS, components other than DISPATCHER and
/// WORKER <n>, and unknown keys are ignored; a missing or malformed value is
/// shown as "-". Never throws on its input. Copyable; not thread-safe.
class TopModel {
 public:
  /// A worker whose STATS stopped for longer than this is shown as stale.
  static constexpr double kStaleAfterS = 2.0;

  explicit TopModel(std::string endpoint = {});

  /// Takes one event received at `now_s`; a newer STATS replaces what the
  /// same component said before.
  void add(const LogEvent& event, double now_s);

  /// The screen at `now_s`: at most `rows` lines of at most `cols` characters
  /// (longer lines are cut, never wrapped), joined by '\n' without a
  /// trailing one. Only printable ASCII: names from the wire are sanitised.
  std::string render(int cols, int rows, double now_s) const;

  /// Text shown at the end of the header line (the wall-clock time).
  void set_clock_text(std::string text) { clock_text_ = std::move(text); }

  /// Workers seen so far (stale ones included).
  size_t worker_count() const { return workers_.size(); }
  /// Whether a DISPATCHER STATS event has arrived.
  bool has_dispatcher() const { return dispatcher_.has_value(); }
  /// The dispatcher's worker count, when it said one.
  std::optional<int64_t> dispatcher_workers() const;

 private:
  struct Chain {
    std::string sequence;
    std::optional<int64_t> ops;
    std::optional<double> speedup;
    std::string state;
  };
  struct Worker {
    std::string device;
    std::optional<int64_t> sessions;
    std::optional<int64_t> tensors;
    std::optional<int64_t> bytes;
    std::optional<int64_t> queue;
    std::optional<int64_t> instructions;
    std::optional<double> ops_per_s;
    std::optional<double> busy;
    // Share per op kind, largest first; nullopt when `util` was absent or
    // held nothing readable.
    std::optional<std::vector<std::pair<std::string, double>>> util;
    std::vector<Chain> chains;
    double seen_s = 0;
  };
  struct Client {
    std::string session;
    std::string name;
    std::string pid;
  };
  struct Dispatcher {
    std::optional<int64_t> workers;
    std::optional<int64_t> clients;
    std::optional<int64_t> messages;
    std::optional<int64_t> instructions;
    std::vector<Client> clients_list;
    double seen_s = 0;
  };

  void add_worker(int64_t index, const std::string& details, double now_s);
  void add_dispatcher(const std::string& details, double now_s);
  bool stale(double seen_s, double now_s) const { return now_s - seen_s > kStaleAfterS; }

  std::string endpoint_;
  std::string clock_text_;
  std::map<int64_t, Worker> workers_;  // by worker index
  std::optional<Dispatcher> dispatcher_;
};

}  // namespace gt::tools
