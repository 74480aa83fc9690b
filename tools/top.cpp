#include "tools/top.h"

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <climits>
#include <cmath>
#include <csignal>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <exception>
#include <string_view>

#include "tools/monitor.h"

namespace gt::tools {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// ---------------------------------------------------------------------------
// Reading STATS details. Every value comes off the wire: nothing here throws,
// and what does not parse becomes nullopt (shown as "-").

std::string printf_string(const char* format, ...) __attribute__((format(printf, 1, 2)));
std::string printf_string(const char* format, ...) {
  char buf[256];
  va_list args;
  va_start(args, format);
  const int n = std::vsnprintf(buf, sizeof buf, format, args);
  va_end(args);
  if (n < 0) return {};
  return std::string(buf, std::min<size_t>(n, sizeof buf - 1));
}

// Printable ASCII only, so a name cannot move the cursor or break the
// one-byte-per-column arithmetic of the layout.
std::string sanitize(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u > 0x7e) c = '?';
  }
  return out;
}

std::optional<int64_t> parse_int(std::string_view s) {
  int64_t v = 0;
  const char* end = s.data() + s.size();
  const auto [p, ec] = std::from_chars(s.data(), end, v);
  if (s.empty() || ec != std::errc() || p != end) return std::nullopt;
  return v;
}

std::optional<double> parse_double(std::string_view s) {
  double v = 0;
  const char* end = s.data() + s.size();
  const auto [p, ec] = std::from_chars(s.data(), end, v);
  if (s.empty() || ec != std::errc() || p != end || !std::isfinite(v)) return std::nullopt;
  return v;
}

// Pieces of `s` between `sep`s, empty ones included.
std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> parts;
  size_t pos = 0;
  while (true) {
    const size_t end = s.find(sep, pos);
    parts.push_back(
        s.substr(pos, end == std::string_view::npos ? std::string_view::npos : end - pos));
    if (end == std::string_view::npos) break;
    pos = end + 1;
  }
  return parts;
}

// ---------------------------------------------------------------------------
// Drawing.

std::string dash_or(const std::optional<int64_t>& v) {
  return v ? std::to_string(*v) : "-";
}

std::string format_rate(double per_s) {
  if (per_s >= 1e6) return printf_string("%.2fM", per_s / 1e6);
  if (per_s >= 100) return printf_string("%.0f", per_s);
  return printf_string("%.1f", per_s);
}

std::string format_share(double share) {
  if (share > 0 && share < 0.005) return "<1%";
  return printf_string("%.0f%%", share * 100);
}

std::string format_age(double s) {
  return printf_string("%.1fs", std::max(0.0, s));
}

// "[########  ]  83%": the busy share, the bar clamped to [0, 1].
std::string busy_bar(double busy) {
  constexpr int kWidth = 10;
  const int filled = static_cast<int>(std::lround(std::clamp(busy, 0.0, 1.0) * kWidth));
  return "[" + std::string(filled, '#') + std::string(kWidth - filled, ' ') + "] " +
         printf_string("%3.0f%%", busy * 100);
}

struct Column {
  const char* title;
  bool right;  // right-aligned (numbers)
};

// The title line and one line per row, columns two spaces apart, trailing
// spaces removed. The last column is not padded.
std::vector<std::string> layout(const std::vector<Column>& columns,
                                const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width(columns.size());
  for (size_t c = 0; c < columns.size(); ++c) width[c] = std::string_view(columns[c].title).size();
  for (const auto& row : rows) {
    for (size_t c = 0; c < columns.size() && c < row.size(); ++c) {
      width[c] = std::max(width[c], row[c].size());
    }
  }
  auto line = [&](auto cell) {
    std::string out;
    for (size_t c = 0; c < columns.size(); ++c) {
      const std::string text = cell(c);
      if (c > 0) out += "  ";
      const size_t pad = width[c] - std::min(width[c], text.size());
      if (columns[c].right) out.append(pad, ' ');
      out += text;
      if (!columns[c].right && c + 1 < columns.size()) out.append(pad, ' ');
    }
    while (!out.empty() && out.back() == ' ') out.pop_back();
    return out;
  };
  std::vector<std::string> lines;
  lines.push_back(line([&](size_t c) { return std::string(columns[c].title); }));
  for (const auto& row : rows) {
    lines.push_back(line([&](size_t c) { return c < row.size() ? row[c] : std::string(); }));
  }
  return lines;
}

// Appends `items` to `out` within `budget` lines: when they do not fit, the
// last line says how many were left out.
void append_clipped(std::vector<std::string>& out, const std::vector<std::string>& items,
                    int budget) {
  if (budget <= 0) return;
  if (static_cast<int>(items.size()) <= budget) {
    out.insert(out.end(), items.begin(), items.end());
    return;
  }
  out.insert(out.end(), items.begin(), items.begin() + (budget - 1));
  out.push_back("... " + std::to_string(items.size() - (budget - 1)) + " more");
}

}  // namespace

std::string format_bytes(uint64_t bytes) {
  if (bytes < 1024) return std::to_string(bytes) + " B";
  static constexpr const char* kUnits[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double v = static_cast<double>(bytes) / 1024;
  size_t unit = 0;
  while (v >= 1024 && unit + 1 < std::size(kUnits)) {
    v /= 1024;
    ++unit;
  }
  return printf_string("%.1f %s", v, kUnits[unit]);
}

TopModel::TopModel(std::string endpoint) : endpoint_(std::move(endpoint)) {}

std::optional<int64_t> TopModel::dispatcher_workers() const {
  return dispatcher_ ? dispatcher_->workers : std::nullopt;
}

void TopModel::add(const LogEvent& event, double now_s) {
  if (event.event != "STATS") return;
  if (event.component == "DISPATCHER") {
    add_dispatcher(event.details, now_s);
    return;
  }
  constexpr std::string_view kWorker = "WORKER ";
  const std::string_view component = event.component;
  if (component.substr(0, kWorker.size()) != kWorker) return;
  const auto index = parse_int(component.substr(kWorker.size()));
  if (index && *index >= 0) add_worker(*index, event.details, now_s);
}

void TopModel::add_worker(int64_t index, const std::string& details, double now_s) {
  // Each STATS is a whole snapshot: a key it lacks shows "-", not an old value.
  Worker w;
  for (const auto& [key, value] : split_details(details)) {
    if (key == "device") {
      w.device = sanitize(value);
    } else if (key == "sessions") {
      w.sessions = parse_int(value);
    } else if (key == "tensors") {
      w.tensors = parse_int(value);
    } else if (key == "bytes") {
      w.bytes = parse_int(value);
    } else if (key == "queue") {
      w.queue = parse_int(value);
    } else if (key == "instructions") {
      w.instructions = parse_int(value);
    } else if (key == "ops_per_s") {
      w.ops_per_s = parse_double(value);
    } else if (key == "busy") {
      w.busy = parse_double(value);
    } else if (key == "util") {
      // Kind:share,...; unreadable entries are skipped, and a list with
      // nothing readable counts as absent.
      std::vector<std::pair<std::string, double>> util;
      bool bad = false;
      for (const std::string_view entry : split(value, ',')) {
        if (entry.empty()) continue;
        const size_t colon = entry.rfind(':');
        const auto share =
            colon == std::string_view::npos ? std::nullopt : parse_double(entry.substr(colon + 1));
        if (!share || *share < 0 || colon == 0) {
          bad = true;
          continue;
        }
        util.emplace_back(sanitize(entry.substr(0, colon)), *share);
      }
      std::stable_sort(util.begin(), util.end(),
                       [](const auto& a, const auto& b) { return a.second > b.second; });
      if (!util.empty() || !bad) w.util = std::move(util);
    } else if (key == "chains") {
      // <sequence>:<ops>:<speedup>:<state>,...; missing parts show "-".
      for (const std::string_view entry : split(value, ',')) {
        if (entry.empty()) continue;
        const auto parts = split(entry, ':');
        Chain c;
        c.sequence = sanitize(parts[0]);
        if (parts.size() > 1) c.ops = parse_int(parts[1]);
        if (parts.size() > 2) c.speedup = parse_double(parts[2]);
        if (parts.size() > 3) c.state = sanitize(parts[3]);
        w.chains.push_back(std::move(c));
      }
    }
  }
  w.seen_s = now_s;
  workers_[index] = std::move(w);
}

void TopModel::add_dispatcher(const std::string& details, double now_s) {
  Dispatcher d;
  for (const auto& [key, value] : split_details(details)) {
    if (key == "workers") {
      d.workers = parse_int(value);
    } else if (key == "clients") {
      d.clients = parse_int(value);
    } else if (key == "messages") {
      d.messages = parse_int(value);
    } else if (key == "instructions") {
      d.instructions = parse_int(value);
    } else if (key == "clients_list") {
      // <session>:<name>:<pid>,...; the name is what lies between the first
      // and the last ':', so a ':' inside it does no harm.
      for (const std::string_view entry : split(value, ',')) {
        if (entry.empty()) continue;
        Client c;
        const size_t first = entry.find(':');
        const size_t last = entry.rfind(':');
        c.session = sanitize(entry.substr(0, first));
        if (first != std::string_view::npos && last > first) {
          c.name = sanitize(entry.substr(first + 1, last - first - 1));
          c.pid = sanitize(entry.substr(last + 1));
        } else if (first != std::string_view::npos) {
          c.name = sanitize(entry.substr(first + 1));
        }
        d.clients_list.push_back(std::move(c));
      }
    }
  }
  d.seen_s = now_s;
  dispatcher_ = std::move(d);
}

std::string TopModel::render(int cols, int rows, double now_s) const {
  if (cols <= 0 || rows <= 0) return {};
  std::vector<std::string> top;

  // Header: where, how many, how fast, when.
  std::optional<double> total_ops;
  size_t live_workers = 0;
  for (const auto& [index, w] : workers_) {
    if (stale(w.seen_s, now_s)) continue;
    ++live_workers;
    if (w.ops_per_s) total_ops = total_ops.value_or(0) + *w.ops_per_s;
  }
  std::string header = "gt top";
  if (!endpoint_.empty()) header += "  " + sanitize(endpoint_);
  const std::optional<int64_t> nworkers = dispatcher_workers();
  header += "  workers " + (nworkers           ? std::to_string(*nworkers)
                            : workers_.empty() ? std::string("-")
                                               : std::to_string(live_workers));
  header += "  clients " + dash_or(dispatcher_ ? dispatcher_->clients : std::nullopt);
  header += "  ops/s " + (total_ops ? format_rate(*total_ops) : std::string("-"));
  if (!clock_text_.empty()) header += "  " + sanitize(clock_text_);
  top.push_back(std::move(header));

  if (!dispatcher_) {
    top.push_back("waiting for STATS from the dispatcher...");
  } else {
    std::string line = "dispatcher: ";
    if (stale(dispatcher_->seen_s, now_s)) {
      line += "no STATS for " + format_age(now_s - dispatcher_->seen_s) + " (stale)  ";
    }
    line += "messages " + dash_or(dispatcher_->messages) + "  instructions " +
            dash_or(dispatcher_->instructions);
    top.push_back(std::move(line));
  }
  top.emplace_back();

  // Worker table.
  std::vector<std::vector<std::string>> worker_rows;
  for (const auto& [index, w] : workers_) {
    const bool is_stale = stale(w.seen_s, now_s);
    std::string util;
    if (is_stale) {
      util = "no STATS for " + format_age(now_s - w.seen_s);
    } else if (!w.util) {
      // Workers leave `util` out when nothing ran.
      util = w.busy && *w.busy < 0.0005 ? "idle" : "-";
    } else if (w.util->empty()) {
      util = "idle";
    } else {
      for (const auto& [kind, share] : *w.util) {
        if (!util.empty()) util += ' ';
        util += kind + ' ' + format_share(share);
      }
    }
    worker_rows.push_back({
        "WORKER " + std::to_string(index),
        w.device.empty() ? "-" : w.device,
        !is_stale && w.ops_per_s ? format_rate(*w.ops_per_s) : "-",
        is_stale ? "stale " + format_age(now_s - w.seen_s)
        : w.busy ? busy_bar(*w.busy)
                 : "-",
        dash_or(w.queue),
        w.bytes && *w.bytes >= 0 ? format_bytes(static_cast<uint64_t>(*w.bytes)) : "-",
        dash_or(w.tensors),
        dash_or(w.sessions),
        util,
    });
  }
  std::vector<std::string> worker_lines = layout({{"WORKER", false},
                                                  {"DEVICE", false},
                                                  {"OPS/S", true},
                                                  {"BUSY", false},
                                                  {"QUEUE", true},
                                                  {"MEMORY", true},
                                                  {"TENSORS", true},
                                                  {"SESS", true},
                                                  {"UTILISATION BY OP KIND", false}},
                                                 worker_rows);
  top.push_back(worker_lines.front());
  worker_lines.erase(worker_lines.begin());
  if (worker_lines.empty()) worker_lines.push_back("(no worker STATS yet)");

  // Compiled chains (hot paths), by worker.
  std::vector<std::vector<std::string>> chain_rows;
  for (const auto& [index, w] : workers_) {
    for (const Chain& c : w.chains) {
      chain_rows.push_back(
          {"WORKER " + std::to_string(index), c.sequence.empty() ? "-" : c.sequence, dash_or(c.ops),
           c.speedup ? printf_string("%.2fx", *c.speedup) : "-", c.state.empty() ? "-" : c.state});
    }
  }
  std::vector<std::string> chain_lines;
  if (!chain_rows.empty()) {
    chain_lines = layout({{"WORKER", false},
                          {"SEQUENCE", false},
                          {"OPS", true},
                          {"SPEEDUP", true},
                          {"STATE", false}},
                         chain_rows);
  }

  // Connected clients.
  std::vector<std::vector<std::string>> client_rows;
  if (dispatcher_) {
    for (const Client& c : dispatcher_->clients_list) {
      client_rows.push_back({c.session.empty() ? "-" : c.session, c.name.empty() ? "-" : c.name,
                             c.pid.empty() ? "-" : c.pid});
    }
  }
  std::vector<std::string> client_lines;
  if (!client_rows.empty()) {
    client_lines = layout({{"SESSION", true}, {"NAME", false}, {"PID", true}}, client_rows);
  }

  // Height: the header and the worker table come first, then clients (few),
  // then chains (possibly many). The blank and title lines of the later
  // sections are reserved before an earlier section takes rows; a section
  // shows its column titles only with at least one row under them.
  constexpr int kReserve = 4;
  int left = rows - static_cast<int>(top.size());
  const int worker_budget = std::clamp(left - kReserve, std::min(left, 1),
                                       std::max(static_cast<int>(worker_lines.size()), 1));
  left -= std::clamp(worker_budget, 0, static_cast<int>(worker_lines.size()));
  int client_budget = std::clamp(left - kReserve, 0, static_cast<int>(client_lines.size()));
  // A table cut to its titles and "... N more" says no more than the count.
  if (client_budget < static_cast<int>(client_lines.size()) && client_budget < 3) client_budget = 0;
  left -= client_budget;
  const int chain_budget = std::clamp(left - kReserve, 0, static_cast<int>(chain_lines.size()));

  // Column titles plus rows, within `budget` lines.
  auto append_table = [](std::vector<std::string>& out, const std::vector<std::string>& table,
                         int budget) {
    if (table.empty() || budget < std::min<int>(static_cast<int>(table.size()), 3)) return;
    out.push_back(table.front());
    append_clipped(out, std::vector<std::string>(table.begin() + 1, table.end()), budget - 1);
  };
  std::vector<std::string> lines = std::move(top);
  append_clipped(lines, worker_lines, worker_budget);
  lines.emplace_back();
  lines.push_back(chain_rows.empty()
                      ? "CHAINS (compiled hot paths): none"
                      : "CHAINS (compiled hot paths): " + std::to_string(chain_rows.size()));
  append_table(lines, chain_lines, chain_budget);
  lines.emplace_back();
  lines.push_back(client_rows.empty() ? "CLIENTS: none"
                                      : "CLIENTS: " + std::to_string(client_rows.size()));
  append_table(lines, client_lines, client_budget);

  // Fit: cut, never wrap.
  std::string out;
  const size_t n = std::min<size_t>(lines.size(), static_cast<size_t>(rows));
  for (size_t i = 0; i < n; ++i) {
    if (i > 0) out += '\n';
    std::string line = lines[i].substr(0, static_cast<size_t>(cols));
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line;
  }
  return out;
}

// ---------------------------------------------------------------------------
// The terminal.

namespace {

// Note [top terminal state]
// On a terminal, gt top switches to the alternate screen, hides the cursor
// and puts stdin in non-canonical mode without echo or signal keys (so
// Ctrl-C arrives as byte 0x03 and is read like `q`). TerminalScope undoes all
// of it in its destructor, which runs on every way out of run_screen: q,
// Ctrl-C, --frames, SIGINT/SIGTERM/SIGHUP (caught by SignalScope's handlers,
// which only set a flag the loop reads) and exceptions. The signals are
// blocked while the loop waits inside ZeroMQ and delivered right after, so
// handlers never interrupt a receive and the loop sees a signal within one
// wait slice (kWaitSlice).

constexpr milliseconds kAttachTimeout{3000};
constexpr milliseconds kWaitSlice{25};         // longest wait between key checks
constexpr milliseconds kFirstFrameWait{3000};  // plain mode: wait for the first STATS
constexpr const char* kEnterScreen = "\x1b[?1049h\x1b[?25l\x1b[2J";
constexpr const char* kLeaveScreen = "\x1b[?25h\x1b[?1049l";

volatile std::sig_atomic_t g_stop_signal = 0;  // SIGINT, SIGTERM or SIGHUP received
volatile std::sig_atomic_t g_resized = 0;      // SIGWINCH received

void on_signal(int signal) {
  if (signal == SIGWINCH) {
    g_resized = 1;
  } else {
    g_stop_signal = signal;
  }
}

constexpr int kSignals[] = {SIGINT, SIGTERM, SIGHUP, SIGWINCH};

// Installs on_signal for kSignals; restores the previous handlers. Pinned.
class SignalScope {
 public:
  SignalScope() {
    g_stop_signal = 0;
    g_resized = 0;
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;  // no SA_RESTART: a signal interrupts poll()
    for (size_t i = 0; i < std::size(kSignals); ++i) sigaction(kSignals[i], &sa, &saved_[i]);
    sigemptyset(&set_);
    for (const int s : kSignals) sigaddset(&set_, s);
  }
  ~SignalScope() {
    for (size_t i = 0; i < std::size(kSignals); ++i) sigaction(kSignals[i], &saved_[i], nullptr);
  }
  SignalScope(const SignalScope&) = delete;
  SignalScope& operator=(const SignalScope&) = delete;

  // Blocks kSignals on this thread (while waiting in ZeroMQ).
  void block() const { pthread_sigmask(SIG_BLOCK, &set_, nullptr); }
  // Unblocks them; pending ones run their handler now.
  void unblock() const { pthread_sigmask(SIG_UNBLOCK, &set_, nullptr); }

 private:
  struct sigaction saved_[std::size(kSignals)];
  sigset_t set_;
};

// Writes all of `data` to `fd`; false on an error.
bool write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// The screen and keyboard setup of Note [top terminal state]. Pinned.
class TerminalScope {
 public:
  explicit TerminalScope(bool raw_input) {
    if (raw_input && tcgetattr(STDIN_FILENO, &saved_) == 0) {
      termios raw = saved_;
      raw.c_lflag &= ~(ICANON | ECHO | ISIG | IEXTEN);
      raw.c_iflag &= ~(IXON | ICRNL);
      raw.c_cc[VMIN] = 0;
      raw.c_cc[VTIME] = 0;
      restore_input_ = tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0;
    }
    write_all(STDOUT_FILENO, kEnterScreen);
  }
  ~TerminalScope() {
    write_all(STDOUT_FILENO, kLeaveScreen);
    if (restore_input_) tcsetattr(STDIN_FILENO, TCSANOW, &saved_);
  }
  TerminalScope(const TerminalScope&) = delete;
  TerminalScope& operator=(const TerminalScope&) = delete;

 private:
  termios saved_{};
  bool restore_input_ = false;
};

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string clock_text() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  char buf[16] = "";
  if (localtime_r(&t, &tm)) std::strftime(buf, sizeof buf, "%H:%M:%S", &tm);
  return buf;
}

// Waits up to `wait` for events and adds them to the model, signals blocked
// meanwhile (Note [top terminal state]).
void receive(EventSubscriber& sub, TopModel& model, milliseconds wait, const SignalScope& signals,
             Clock::time_point t0) {
  signals.block();
  std::vector<LogEvent> events;
  try {
    events = sub.poll(std::max(wait, milliseconds(0)));
  } catch (...) {
    signals.unblock();
    throw;
  }
  signals.unblock();
  const double now_s = seconds_since(t0);
  for (const LogEvent& e : events) model.add(e, now_s);
}

// The exit code for a stop signal: 0 for Ctrl-C, 128 + n otherwise.
int signal_exit_code(int signal) {
  return signal == SIGINT ? 0 : 128 + signal;
}

// Draws frames on the terminal until q, Ctrl-C, a stop signal or --frames.
int run_screen(EventSubscriber& sub, TopModel& model, const TopOptions& options) {
  const bool keys = isatty(STDIN_FILENO);
  SignalScope signals;
  TerminalScope terminal(keys);
  const auto t0 = Clock::now();
  const milliseconds interval(options.interval_ms);
  auto next_frame = t0;
  int frames = 0;
  bool stdin_open = keys;
  while (true) {
    if (g_stop_signal) return signal_exit_code(g_stop_signal);
    const auto now = Clock::now();
    if (now >= next_frame || g_resized) {
      g_resized = 0;
      // Re-queried each frame, so a resize shows at the latest one frame later
      // (SIGWINCH makes it at once).
      winsize ws{};
      int cols = 80, rows = 24;
      if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0 && ws.ws_row > 0) {
        cols = ws.ws_col;
        rows = ws.ws_row;
      }
      model.set_clock_text(clock_text());
      const std::string text = model.render(cols, rows, seconds_since(t0));
      // Each row is addressed and cleared before it is written: no newline
      // can scroll the screen, and a full-width line is never followed by an
      // erase (which would eat its last character).
      std::string frame;
      size_t pos = 0;
      for (int r = 0; r < rows; ++r) {
        frame += "\x1b[" + std::to_string(r + 1) + ";1H\x1b[2K";
        if (pos <= text.size()) {
          const size_t end = std::min(text.find('\n', pos), text.size());
          frame.append(text, pos, end - pos);
          pos = end + 1;
        }
      }
      if (!write_all(STDOUT_FILENO, frame)) return 1;
      ++frames;
      if (options.frames > 0 && frames >= options.frames) return 0;
      if (now >= next_frame) next_frame = std::max(next_frame + interval, now);
    }
    receive(sub, model,
            std::min(kWaitSlice, std::chrono::ceil<milliseconds>(next_frame - Clock::now())),
            signals, t0);
    if (stdin_open) {
      pollfd p{STDIN_FILENO, POLLIN, 0};
      if (poll(&p, 1, 0) > 0) {
        char buf[64];
        const ssize_t n = ::read(STDIN_FILENO, buf, sizeof buf);
        if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) stdin_open = false;
        for (ssize_t i = 0; i < n; ++i) {
          if (buf[i] == 'q' || buf[i] == 'Q' || buf[i] == 0x03) return 0;
        }
      }
    }
  }
}

// Prints plain frames (no escape codes) for pipes and scripts.
int run_plain(EventSubscriber& sub, TopModel& model, const TopOptions& options) {
  SignalScope signals;
  const auto t0 = Clock::now();
  // A pipe has no width: $COLUMNS when set, else no limit.
  int cols = INT_MAX;
  if (const char* c = std::getenv("COLUMNS")) {
    if (const auto v = parse_int(c); v && *v > 0 && *v <= INT_MAX) cols = static_cast<int>(*v);
  }
  // The first frame waits for the dispatcher's STATS and those of every
  // worker it counts (up to kFirstFrameWait), so `--frames 1` shows the
  // cluster rather than an empty table.
  const auto first_deadline = t0 + kFirstFrameWait;
  while (Clock::now() < first_deadline && !g_stop_signal) {
    const auto want = model.dispatcher_workers();
    if (want && static_cast<int64_t>(model.worker_count()) >= *want) break;
    receive(sub, model, kWaitSlice, signals, t0);
  }
  const milliseconds interval(options.interval_ms);
  auto next_frame = Clock::now();
  for (int frames = 0; options.frames == 0 || frames < options.frames;) {
    if (g_stop_signal) return signal_exit_code(g_stop_signal);
    const auto now = Clock::now();
    if (now < next_frame) {
      receive(sub, model, std::min(kWaitSlice, std::chrono::ceil<milliseconds>(next_frame - now)),
              signals, t0);
      continue;
    }
    model.set_clock_text(clock_text());
    std::string text = frames > 0 ? "\n" + std::string(40, '-') + "\n" : std::string();
    text += model.render(cols, INT_MAX, seconds_since(t0));
    text += '\n';
    if (std::fwrite(text.data(), 1, text.size(), stdout) != text.size() ||
        std::fflush(stdout) != 0) {
      return 1;
    }
    ++frames;
    next_frame = std::max(next_frame + interval, now);
  }
  return 0;
}

}  // namespace

void add_top_options(CLI::App& app, TopOptions& options) {
  app.add_option("--endpoint,-e", options.endpoint,
                 "Dispatcher endpoint (default: GT_DISPATCHER, else the newest local cluster "
                 "this user auto-started)");
  app.add_option("--interval-ms", options.interval_ms, "Screen refresh period")
      ->capture_default_str()
      ->check(CLI::Range(20, 60000));
  app.add_option("--frames", options.frames,
                 "Stop after this many refreshes (0: until q or Ctrl-C)")
      ->capture_default_str()
      ->check(CLI::Range(0, INT_MAX));
}

int run_top(const TopOptions& options) {
  std::string dispatcher;
  std::string events;
  try {
    dispatcher = resolve_dispatcher(options.endpoint);
    events = events_endpoint(dispatcher, kAttachTimeout);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gt top: cannot attach to the dispatcher%s%s: %s\n",
                 dispatcher.empty() ? "" : " at ", dispatcher.c_str(), e.what());
    return 1;
  }
  try {
    EventSubscriber sub(events, {"stats"});
    TopModel model(dispatcher);
    return isatty(STDOUT_FILENO) ? run_screen(sub, model, options) : run_plain(sub, model, options);
  } catch (const std::exception& e) {
    // The terminal is already restored: TerminalScope unwound first.
    std::fprintf(stderr, "gt top: lost the event stream of the dispatcher at %s (%s): %s\n",
                 dispatcher.c_str(), events.c_str(), e.what());
    return 1;
  }
}

}  // namespace gt::tools
