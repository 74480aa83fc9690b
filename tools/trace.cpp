#include "tools/trace.h"

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <vector>

#include <gt/error.h>

#include "common/instruction_log.h"
#include "tools/monitor.h"

namespace gt::tools {
namespace {

std::atomic<bool> g_interrupted{false};
void on_interrupt(int) { g_interrupted.store(true); }

// trace_<local time>, with a counter when that name exists (two traces in a second).
std::filesystem::path trace_base(const std::filesystem::path& dir) {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  localtime_r(&now, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &tm);
  std::filesystem::path base = dir / (std::string("trace_") + stamp);
  for (int i = 2; std::filesystem::exists(base.string() + ".log"); ++i) {
    base = dir / (std::string("trace_") + stamp + "-" + std::to_string(i));
  }
  return base;
}

}  // namespace

void add_trace_options(CLI::App& app, TraceOptions& o) {
  app.add_option("-s,--seconds", o.seconds, "How long to record, in seconds")
      ->capture_default_str()
      ->check(CLI::Range(0.001, 86400.0));
  app.add_option("--dir", o.dir, "Directory for trace_<timestamp>.log and .jsonl (must exist)")
      ->capture_default_str();
  app.add_option("--endpoint,-e", o.endpoint,
                 "Dispatcher endpoint (default: GT_DISPATCHER, else the newest local cluster)");
}

// Note [gt trace]
// Subscribes to both topics of the dispatcher's event stream (Note [event
// stream] in dispatcher/dispatcher.cpp) and writes every line it receives,
// as received, to trace_<timestamp>.jsonl, and in the aligned text form to
// trace_<timestamp>.log, until the time is up or SIGINT/SIGTERM. Subscribing
// is what turns the cluster's events on, so the first ones arrive after a
// round trip to the workers (tens of milliseconds). Lines are written in
// arrival order, which is each component's sequence order except for STATS
// (their own topic, so their own messages). At the end each component's
// sequence numbers are checked: a hole means the stream dropped events (a
// subscriber that fell behind the dispatcher's send buffer, or a worker whose
// connection was full), and is reported. Files are written as events arrive,
// so an interrupted trace keeps what it got.
int run_trace(const TraceOptions& o) {
  try {
    if (!std::filesystem::is_directory(o.dir)) {
      throw Error("--dir " + o.dir + " is not a directory (create it first)");
    }
    const std::string dispatcher = resolve_dispatcher(o.endpoint);
    const std::string events = events_endpoint(dispatcher, std::chrono::milliseconds(3000));
    EventSubscriber sub(events, {});
    const std::filesystem::path base = trace_base(o.dir);
    const std::string text_path = base.string() + ".log";
    const std::string json_path = base.string() + ".jsonl";
    std::ofstream text(text_path), json(json_path);
    if (!text || !json) throw Error("cannot create " + text_path + " or " + json_path);
    std::fprintf(stderr, "gt trace: recording %s (events at %s) for %g s into %s\n",
                 dispatcher.c_str(), events.c_str(), o.seconds, text_path.c_str());

    g_interrupted.store(false);
    auto old_int = std::signal(SIGINT, on_interrupt);
    auto old_term = std::signal(SIGTERM, on_interrupt);
    struct Restore {
      decltype(old_int) i, t;
      ~Restore() {
        std::signal(SIGINT, i);
        std::signal(SIGTERM, t);
      }
    } restore{old_int, old_term};

    // Sequence numbers seen per component: STATS arrive under their own
    // topic, so lines are not in sequence order; gaps are counted at the end.
    std::map<std::string, std::vector<uint64_t>> seqs;
    uint64_t lines = 0, malformed = 0, gaps = 0, missed = 0;
    const auto start = std::chrono::steady_clock::now();
    const auto end = start + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                 std::chrono::duration<double>(o.seconds));
    while (!g_interrupted.load()) {
      const auto now = std::chrono::steady_clock::now();
      if (now >= end) break;
      const auto wait = std::min<std::chrono::steady_clock::duration>(
          end - now, std::chrono::milliseconds(100));
      for (const std::string& line : sub.poll_lines(
               std::chrono::ceil<std::chrono::milliseconds>(wait))) {
        auto e = parse_json(line);
        if (!e) {
          ++malformed;
          continue;
        }
        json << line << '\n';
        text << format_text(*e) << '\n';
        ++lines;
        seqs[e->component].push_back(e->seq);
      }
    }
    text.flush();
    json.flush();
    if (!text || !json) throw Error("writing " + text_path + " failed (disk full?)");
    std::fprintf(stderr, "gt trace: %llu events from %zu components in %.1f s%s\n",
                 static_cast<unsigned long long>(lines), seqs.size(),
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(),
                 g_interrupted.load() ? " (interrupted)" : "");
    for (auto& [component, v] : seqs) {
      std::sort(v.begin(), v.end());
      for (size_t i = 1; i < v.size(); ++i) {
        if (v[i] > v[i - 1] + 1) {
          ++gaps;
          missed += v[i] - v[i - 1] - 1;
        }
      }
      std::fprintf(stderr, "  %-12s %zu events\n", component.c_str(), v.size());
    }
    if (gaps > 0) {
      std::fprintf(stderr,
                   "gt trace: %llu gaps in sequence numbers, %llu events missed (the stream "
                   "drops events for a subscriber that falls behind)\n",
                   static_cast<unsigned long long>(gaps), static_cast<unsigned long long>(missed));
    }
    if (malformed + sub.malformed() > 0) {
      std::fprintf(stderr, "gt trace: %llu malformed lines skipped\n",
                   static_cast<unsigned long long>(malformed + sub.malformed()));
    }
    std::printf("%s\n%s\n", text_path.c_str(), json_path.c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gt trace: %s\n", e.what());
    return 1;
  }
}

}  // namespace gt::tools
