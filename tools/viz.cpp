#include "tools/viz.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <tuple>
#include <unordered_map>

#include <gt/error.h>

#include "common/op_table.h"

namespace gt::tools {

// Colours: the op kinds get saturated, distinct hues (Tableau 10); compiled
// units a dark navy drawn hatched; the bookkeeping boxes (free, fetch, sync,
// wait) muted pastels, so eager compute stands out against them and against
// the pale lane background that shows idle time.
const VizStyleInfo kVizStyles[kVizStyleCount] = {
    {"Creation", 0x9c755f, VizShape::Box},
    {"Control", 0x79706e, VizShape::Box},
    {"Elementwise", 0x4e79a7, VizShape::Box},
    {"Linalg", 0xf28e2b, VizShape::Box},
    {"Reduction", 0x59a14f, VizShape::Box},
    {"Shape", 0xb07aa1, VizShape::Box},
    {"Inplace", 0x76b7b2, VizShape::Box},
    {"Softmax", 0xedc948, VizShape::Box},
    {"Index", 0xff9da7, VizShape::Box},
    {"unknown op", 0xa0a0a0, VizShape::Box},
    {"compiled unit", 0x26335e, VizShape::Box},
    {"collective", 0xe15759, VizShape::Box},
    {"free", 0xd8cfb4, VizShape::Box},
    {"fetch", 0xb3d1dc, VizShape::Box},
    {"sync", 0xcdbfdc, VizShape::Box},
    {"client wait", 0xe3d9a0, VizShape::Box},
    {"compile starting", 0x6a3d9a, VizShape::TriangleOpen},
    {"compile done", 0x6a3d9a, VizShape::Triangle},
    {"compile failed", 0xc62828, VizShape::Cross},
    {"kept", 0x2e7d32, VizShape::Circle},
    {"dropped", 0x616161, VizShape::CircleOpen},
    {"limited", 0x616161, VizShape::Square},
    {"hot path", 0xc28a00, VizShape::Diamond},
    {"error", 0xe3001b, VizShape::Diamond},
    {"send", 0x1f77b4, VizShape::Tick},
    {"recv", 0x2ca02c, VizShape::Tick},
    {"other event", 0x8c8c8c, VizShape::Tick},
};

static_assert(static_cast<int>(VizStyle::Index) == static_cast<int>(OpKind::Index),
              "VizStyle's first values follow OpKind");

void append_json_string(std::string& out, std::string_view s) {
  static const char* kHex = "0123456789abcdef";
  auto u_escape = [&](unsigned cp) {
    out += "\\u";
    for (int shift = 12; shift >= 0; shift -= 4) out += kHex[(cp >> shift) & 0xf];
  };
  out += '"';
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      switch (c) {
        case '"':
          out += "\\\"";
          break;
        case '\\':
          out += "\\\\";
          break;
        case '\n':
          out += "\\n";
          break;
        case '\r':
          out += "\\r";
          break;
        case '\t':
          out += "\\t";
          break;
        case '<':
        case '>':
        case '&':
          u_escape(c);
          break;
        default:
          if (c < 0x20 || c == 0x7f) {
            u_escape(c);
          } else {
            out += static_cast<char>(c);
          }
      }
      ++i;
      continue;
    }
    // A multi-byte UTF-8 sequence: copied when valid (shortest form, no
    // surrogates, <= U+10FFFF), else one U+FFFD for the lead byte.
    int len = 0;
    unsigned cp = 0;
    if ((c & 0xe0) == 0xc0) {
      len = 2;
      cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      len = 3;
      cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      len = 4;
      cp = c & 0x07;
    }
    bool ok = len > 0 && i + len <= s.size();
    for (int k = 1; ok && k < len; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      ok = (cc & 0xc0) == 0x80;
      cp = (cp << 6) | (cc & 0x3f);
    }
    if (ok) {
      static const unsigned kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
      ok = cp >= kMin[len] && cp <= 0x10ffff && !(cp >= 0xd800 && cp <= 0xdfff);
    }
    if (!ok) {
      u_escape(0xfffd);
      ++i;
      continue;
    }
    if (cp == 0x2028 || cp == 0x2029) {
      u_escape(cp);
    } else {
      out.append(s.substr(i, len));
    }
    i += len;
  }
  out += '"';
}

namespace {

// Note [viz time alignment]
// Each component stamps elapsed_s from its own start, so the logs of a
// client, the dispatcher and the workers cannot be compared directly. Every
// stream starts with a CLOCK event whose details hold the wall-clock time
// (`unix_s`) at that event, which gives offset = unix_s - elapsed_s for the
// events that follow it. A file may hold several runs appended, and a gt
// trace file holds many components interleaved, so offsets are kept per
// (file, component) and replaced at each CLOCK; events before a stream's
// first CLOCK use that first CLOCK. Streams without any CLOCK (older logs)
// keep their elapsed_s; when other streams are aligned, they are taken to
// start with the earliest of those (its elapsed_s = 0). The timeline's t = 0
// is the earliest item drawn.

struct RawEvent {
  LogEvent e;
  double time_s = 0;  // aligned (wall clock) or elapsed when the stream has no CLOCK
  bool clocked = false;
  std::string lane;
};

std::string file_error_hint() {
  return "expected an instruction log: JSON lines (.jsonl) or text (.log) written by "
         "GT_INSTRUCTION_LOG or gt trace";
}

std::string read_file(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    throw Error("[viz.load] cannot open '" + path + "': no such file (" + file_error_hint() + ")");
  }
  if (std::filesystem::is_directory(path, ec)) {
    throw Error("[viz.load] '" + path + "' is a directory: " + file_error_hint());
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw Error("[viz.load] cannot open '" + path + "': " + std::strerror(errno));
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw Error("[viz.load] cannot read '" + path + "': " + std::strerror(errno));
  return std::move(ss).str();
}

std::optional<double> detail_number(std::string_view details, std::string_view key) {
  const auto v = detail_value(details, key);
  if (!v || v->empty()) return std::nullopt;
  const std::string s(*v);
  char* end = nullptr;
  const double d = std::strtod(s.c_str(), &end);
  if (end != s.c_str() + s.size() || !std::isfinite(d)) return std::nullopt;
  return d;
}

// Times a log can hold: more than 30 years of elapsed time, a CLOCK outside
// 0..3000 AD or a duration over 11 days is a damaged line, and keeping it
// would stretch the picture to nothing (or overflow the output's numbers).
bool plausible(const LogEvent& e) {
  if (std::fabs(e.elapsed_s) > 1e9) return false;
  if (detail_value(e.details, "dur_us")) {
    const auto dur_us = detail_number(e.details, "dur_us");
    if (!dur_us || *dur_us < 0 || *dur_us > 1e12) return false;
  }
  if (e.event == "CLOCK" && detail_value(e.details, "unix_s")) {
    const auto unix_s = detail_number(e.details, "unix_s");
    if (!unix_s || *unix_s < 0 || *unix_s > 3.3e10) return false;
  }
  return true;
}

// Parses one file; appends its events with their aligned times.
// Components of the file without any CLOCK go to `unclocked` ("path: NAME").
void load_file(const std::string& path, std::vector<RawEvent>& out,
               std::vector<std::string>& warnings, std::vector<std::string>& unclocked) {
  const std::string text = read_file(path);
  std::vector<RawEvent> events;
  size_t malformed = 0, first_bad = 0, lines = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    std::string_view line(text.data() + pos, eol - pos);
    pos = eol + 1;
    ++lines;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    const size_t first = line.find_first_not_of(" \t");
    if (first == std::string_view::npos) continue;  // blank
    auto e = line[first] == '{' ? parse_json(line) : parse_text(line);
    if (!e || !plausible(*e)) {
      if (malformed++ == 0) first_bad = lines;
      continue;
    }
    RawEvent r;
    r.e = std::move(*e);
    events.push_back(std::move(r));
  }
  if (events.empty()) {
    throw Error("[viz.load] '" + path + "' has no instruction-log events (" +
                std::to_string(lines) + " lines, " + std::to_string(malformed) +
                " malformed): " + file_error_hint());
  }
  if (malformed > 0) {
    warnings.push_back("'" + path + "': skipped " + std::to_string(malformed) + " malformed line" +
                       (malformed == 1 ? "" : "s") + " (first at line " +
                       std::to_string(first_bad) + ")");
  }

  // Offsets per component stream of this file (Note [viz time alignment]).
  struct Stream {
    std::optional<double> offset;
    std::optional<double> first_offset;
    std::string pid;
    std::string first_pid;
  };
  std::map<std::string, Stream> streams;
  for (const auto& r : events) {
    if (r.e.event != "CLOCK") continue;
    auto& s = streams[r.e.component];
    const auto unix_s = detail_number(r.e.details, "unix_s");
    if (unix_s && !s.first_offset) {
      s.first_offset = *unix_s - r.e.elapsed_s;
      s.first_pid = std::string(detail_value(r.e.details, "pid").value_or(""));
    }
  }
  for (auto& r : events) {
    auto& s = streams[r.e.component];
    if (r.e.event == "CLOCK") {
      if (const auto unix_s = detail_number(r.e.details, "unix_s")) {
        s.offset = *unix_s - r.e.elapsed_s;
        s.pid = std::string(detail_value(r.e.details, "pid").value_or(""));
      }
    }
    const auto offset = s.offset ? s.offset : s.first_offset;
    const std::string& pid = s.offset ? s.pid : s.first_pid;
    r.clocked = offset.has_value();
    r.time_s = r.e.elapsed_s + offset.value_or(0.0);
    r.lane = r.e.component;
    // Clients get a lane per process; the pid is resolved to a label later.
    if (r.e.component == "CLIENT") r.lane = "CLIENT\x1f" + (pid.empty() ? path : pid);
  }
  for (const auto& [component, s] : streams) {
    if (!s.first_offset) unclocked.push_back("'" + path + "': " + component);
  }
  for (auto& r : events) out.push_back(std::move(r));
}

// Top to bottom: clients, the dispatcher, workers by number, anything else.
struct LaneKey {
  int group = 3;
  double number = 0;
  std::string name;
  bool operator<(const LaneKey& o) const {
    return std::tie(group, number, name) < std::tie(o.group, o.number, o.name);
  }
};

LaneKey lane_key(const std::string& lane) {
  LaneKey k;
  k.name = lane;
  if (lane.rfind("CLIENT\x1f", 0) == 0) {
    k.group = 0;
    const auto sep = lane.find('\x1f');
    if (sep != std::string::npos) {
      const std::string pid = lane.substr(sep + 1);
      char* end = nullptr;
      const double n = std::strtod(pid.c_str(), &end);
      if (!pid.empty() && *end == '\0') k.number = n;
    }
  } else if (lane == "DISPATCHER") {
    k.group = 1;
  } else if (lane.rfind("WORKER ", 0) == 0) {
    const std::string n = lane.substr(7);
    char* end = nullptr;
    const double v = std::strtod(n.c_str(), &end);
    if (!n.empty() && *end == '\0') {
      k.group = 2;
      k.number = v;
    }
  }
  return k;
}

const std::unordered_map<std::string_view, OpKind>& op_kinds() {
  static const auto* table = [] {
    auto* m = new std::unordered_map<std::string_view, OpKind>();
    for (const auto& op : all_ops()) (*m)[op.name] = op.kind;
    return m;
  }();
  return *table;
}

// The style of an event; nullopt for events that are not drawn.
std::optional<VizStyle> classify(const LogEvent& e) {
  const std::string& ev = e.event;
  if (ev == "EXEC") {
    if (e.kind == "Compiled") return VizStyle::Compiled;
    if (e.kind == "Collective") return VizStyle::Collective;
    const auto& kinds = op_kinds();
    const auto it = kinds.find(e.op);
    return it == kinds.end() ? VizStyle::UnknownOp : static_cast<VizStyle>(it->second);
  }
  if (ev == "FREE") return VizStyle::Free;
  if (ev == "FETCH") return VizStyle::Fetch;
  if (ev == "SYNC") return VizStyle::Sync;
  if (ev == "WAIT") return VizStyle::Wait;
  if (ev == "COMPILE") {
    if (e.kind == "Starting") return VizStyle::CompileStarting;
    if (e.kind == "Done") return VizStyle::CompileDone;
    if (e.kind == "Failed") return VizStyle::CompileFailed;
    if (e.kind == "Kept") return VizStyle::CompileKept;
    if (e.kind == "Dropped") return VizStyle::CompileDropped;
    if (e.kind == "Limited") return VizStyle::CompileLimited;
    return VizStyle::Other;
  }
  if (ev == "HOTPATH") return VizStyle::Hotpath;
  if (ev == "ERROR") return VizStyle::Error;
  if (ev == "SEND") return VizStyle::Send;
  if (ev == "RECV") return VizStyle::Recv;
  if (ev == "CLOCK" || ev == "STATS") return std::nullopt;
  return VizStyle::Other;
}

std::string format_seconds(double s) {
  char buf[64];
  if (s >= 100) {
    std::snprintf(buf, sizeof buf, "%.0f", s);
  } else {
    std::snprintf(buf, sizeof buf, "%.3g", s);
  }
  return buf;
}

std::string base_name(const std::string& path) {
  return std::filesystem::path(path).filename().string();
}

// "a/x.worker-0.jsonl" and "a/x.worker-0.log" hold the same events: the
// stem without the extension, for dropping the text twin of a JSON file.
std::string log_stem(const std::string& path) {
  std::filesystem::path p(path);
  return (p.parent_path() / p.stem()).lexically_normal().string();
}

std::string lower_extension(const std::string& path) {
  std::string ext = std::filesystem::path(path).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext;
}

}  // namespace

namespace {

// Share of the timeline inside each lane's boxes: the union of the boxes
// (they may overlap: a WAIT around another, or boxes of two runs appended).
void compute_lane_busy(VizTimeline& t) {
  t.lane_busy.assign(t.lanes.size(), -1.0);
  {
    double covered = 0, run_start = 0, run_end = -1;
    uint32_t lane = 0;
    auto close_lane = [&] {
      if (run_end >= run_start) covered += run_end - run_start;
      if (t.lane_busy[lane] >= 0) {
        t.lane_busy[lane] = t.duration_s > 0 ? std::min(1.0, covered / t.duration_s) : 0.0;
      }
      covered = 0;
      run_end = -1;
    };
    for (const auto& item : t.items) {
      if (item.lane != lane) {
        close_lane();
        lane = item.lane;
      }
      if (!viz_is_box(item.style)) continue;
      t.lane_busy[lane] = 0;
      if (item.start_s > run_end) {
        if (run_end >= run_start) covered += run_end - run_start;
        run_start = item.start_s;
        run_end = item.end_s;
      } else {
        run_end = std::max(run_end, item.end_s);
      }
    }
    close_lane();
  }

}

std::string default_title(const VizTimeline& t) {
  const uint64_t n = t.instructions;
  return std::to_string(n) + (n == 1 ? " instruction, " : " instructions, ") +
         std::to_string(t.workers) + (t.workers == 1 ? " worker, " : " workers, ") +
         format_seconds(t.duration_s) + " s";
}

}  // namespace

VizTimeline load_viz_timeline(const std::vector<std::string>& inputs,
                              std::vector<std::string>& warnings) {
  if (inputs.empty()) throw Error("[viz.load] no input files: " + file_error_hint());
  // Both forms of one log are often passed together (x.* globs): read the
  // JSON one, which is exact.
  std::set<std::string> json_stems;
  for (const auto& in : inputs) {
    if (lower_extension(in) == ".jsonl") json_stems.insert(log_stem(in));
  }
  std::vector<RawEvent> raw;
  std::vector<std::string> unclocked;
  std::string twins;  // text logs skipped for their .jsonl form
  VizTimeline t;
  for (const auto& in : inputs) {
    const std::string ext = lower_extension(in);
    // Globs like `trace.*` also catch earlier pictures: name the mistake.
    static const std::set<std::string> kOutputs = {".png",  ".svg", ".pdf",
                                                   ".html", ".htm", ".json"};
    if (kOutputs.count(ext) > 0) {
      throw Error("[viz.load] '" + in + "' looks like gt viz output (" + ext +
                  "), not a log: " + file_error_hint());
    }
    if (ext == ".log" && json_stems.count(log_stem(in))) {
      twins += (twins.empty() ? "" : ", ") + base_name(in);
      continue;
    }
    load_file(in, raw, warnings, unclocked);
    t.inputs.push_back(in);
  }

  if (!twins.empty()) {
    warnings.push_back("read the .jsonl form of logs given in both forms, skipped " + twins);
  }

  // Unaligned streams are taken to start with the earliest aligned one.
  double clocked_min = INFINITY;
  for (const auto& r : raw) {
    if (r.clocked) clocked_min = std::min(clocked_min, r.time_s - r.e.elapsed_s);
  }
  const double unclocked_base = std::isfinite(clocked_min) ? clocked_min : 0.0;
  if (std::isfinite(clocked_min)) {
    for (const auto& u : unclocked) {
      warnings.push_back(u +
                         " has no CLOCK event: drawn as if it started with the earliest "
                         "component, not aligned");
    }
  }
  for (auto& r : raw) {
    if (!r.clocked) r.time_s += unclocked_base;
  }

  // Lanes: one client lane per pid, labelled with the pid only when there
  // are several.
  std::map<LaneKey, std::string> lane_order;
  for (const auto& r : raw) {
    if (classify(r.e)) lane_order.emplace(lane_key(r.lane), r.lane);
  }
  size_t clients = 0;
  for (const auto& [k, name] : lane_order) clients += k.group == 0 ? 1 : 0;
  std::unordered_map<std::string, uint32_t> lane_index;
  for (const auto& [k, name] : lane_order) {
    lane_index[name] = static_cast<uint32_t>(t.lanes.size());
    std::string label = name;
    const auto sep = name.find('\x1f');
    if (sep != std::string::npos) {
      const std::string id = name.substr(sep + 1);
      const bool is_pid = !id.empty() && id.find_first_not_of("0123456789") == std::string::npos;
      label = clients == 1 ? "CLIENT" : (is_pid ? "CLIENT pid " + id : "CLIENT " + base_name(id));
    }
    if (k.group == 2) ++t.workers;
    t.lanes.push_back(std::move(label));
  }

  double t0 = INFINITY, t1 = -INFINITY;
  double start_unix = 0;
  t.items.reserve(raw.size());
  t.events.reserve(raw.size());
  for (auto& r : raw) {
    const auto style = classify(r.e);
    if (!style) continue;
    VizItem item;
    item.style = *style;
    item.lane = lane_index.at(r.lane);
    item.end_s = r.time_s;
    item.start_s = r.time_s;
    if (viz_is_box(*style)) {
      const double dur_us = detail_number(r.e.details, "dur_us").value_or(0.0);
      if (dur_us > 0) item.start_s = r.time_s - dur_us * 1e-6;
    }
    if (*style == VizStyle::Compiled) {
      const double ops = detail_number(r.e.details, "ops").value_or(0.0);
      item.ops = ops > 0 && ops < 4e9 ? static_cast<uint32_t>(ops) : 0;
      t.instructions += item.ops;
    } else if (r.e.event == "EXEC") {
      ++t.instructions;
    }
    if (item.start_s < t0) {
      t0 = item.start_s;
      start_unix = r.clocked ? t0 : 0;
    }
    t1 = std::max(t1, item.end_s);
    item.event = static_cast<uint32_t>(t.events.size());
    t.events.push_back(std::move(r.e));
    t.items.push_back(item);
  }
  raw.clear();
  if (t.items.empty()) {
    throw Error(
        "[viz.load] the inputs hold no events to draw (only CLOCK/STATS): expected EXEC, "
        "FREE, FETCH, SYNC, COMPILE, SEND, RECV, ... events");
  }
  t.start_unix_s = start_unix;
  t.duration_s = t1 - t0;
  for (auto& item : t.items) {
    item.start_s -= t0;
    item.end_s -= t0;
  }
  std::stable_sort(t.items.begin(), t.items.end(), [](const VizItem& a, const VizItem& b) {
    return a.lane != b.lane ? a.lane < b.lane : a.start_s < b.start_s;
  });
  compute_lane_busy(t);

  // Logs of unrelated runs (files appended to over days, or a stale log in
  // a glob) leave one long idle stretch that squeezes the rest to nothing.
  {
    std::vector<std::pair<double, double>> spans;
    spans.reserve(t.items.size());
    for (const auto& item : t.items) spans.emplace_back(item.start_s, item.end_s);
    std::sort(spans.begin(), spans.end());
    double reach = 0, gap = 0, gap_at = 0;
    for (const auto& [a, b] : spans) {
      if (a - reach > gap) {
        gap = a - reach;
        gap_at = reach;
      }
      reach = std::max(reach, b);
    }
    if (gap > 0.5 * t.duration_s && gap > 10) {
      warnings.push_back("nothing happens from " + format_seconds(gap_at) + " s to " +
                         format_seconds(gap_at + gap) + " s (" + format_seconds(gap) + " s of " +
                         format_seconds(t.duration_s) +
                         " s): are these logs from different runs? Pass the files of one run");
    }
  }

  t.title = default_title(t);
  t.subtitle = "from ";
  for (size_t i = 0; i < t.inputs.size(); ++i) {
    if (i > 0) t.subtitle += ", ";
    t.subtitle += base_name(t.inputs[i]);
  }
  return t;
}

void crop_viz_timeline(VizTimeline& t, double from_s, double to_s) {
  if (!(from_s >= 0) || !(to_s > from_s)) {
    throw Error("[viz] the window --from " + format_seconds(from_s) + " --to " +
                format_seconds(to_s) + " is empty: expected 0 <= from < to (seconds from the "
                "start of the timeline)");
  }
  if (from_s >= t.duration_s) {
    throw Error("[viz] --from " + format_seconds(from_s) + " is past the end of the timeline (" +
                format_seconds(t.duration_s) + " s)");
  }
  to_s = std::min(to_s, t.duration_s);
  std::vector<VizItem> kept;
  uint64_t instructions = 0;
  for (VizItem item : t.items) {
    if (item.end_s < from_s || item.start_s > to_s) continue;
    item.start_s = std::max(item.start_s, from_s) - from_s;
    item.end_s = std::min(item.end_s, to_s) - from_s;
    if (item.style == VizStyle::Compiled) {
      instructions += item.ops;
    } else if (t.events[item.event].event == "EXEC") {
      ++instructions;
    }
    kept.push_back(item);
  }
  if (kept.empty()) {
    throw Error("[viz] nothing happens between " + format_seconds(from_s) + " s and " +
                format_seconds(to_s) + " s: expected a window with events");
  }
  t.items = std::move(kept);
  t.instructions = instructions;
  t.duration_s = to_s - from_s;
  if (t.start_unix_s > 0) t.start_unix_s += from_s;
  compute_lane_busy(t);
  t.title = default_title(t) + " (from " + format_seconds(from_s) + " s)";
}

void add_viz_options(CLI::App& app, VizOptions& o) {
  app.add_option("logs", o.inputs,
                 "Instruction logs (.jsonl or .log, from GT_INSTRUCTION_LOG) or gt trace files")
      ->required();
  app.add_option("--output,-o", o.output,
                 "File to write: timeline.png, .svg, .pdf, .html (interactive) or .json (Chrome "
                 "trace)")
      ->required();
  app.add_option("--format,-f", o.format,
                 "png, svg, pdf, html or chrome (default: from the output's extension)");
  app.add_option("--title", o.title,
                 "Title of the picture (default: instructions, workers and duration)");
  app.add_option("--width", o.width,
                 "Width in pixels (png) or points (svg, pdf); the HTML page follows the window")
      ->capture_default_str();
  app.add_option("--from", o.from_s,
                 "Draw only from this time on (seconds from the start of the timeline)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--to", o.to_s, "Draw only up to this time (seconds; default: the end)")
      ->check(CLI::PositiveNumber);
}

namespace {

std::string resolve_format(const VizOptions& o) {
  std::string f = o.format;
  std::transform(f.begin(), f.end(), f.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (f.empty()) {
    const std::string ext = lower_extension(o.output);
    if (ext == ".png") return "png";
    if (ext == ".svg") return "svg";
    if (ext == ".pdf") return "pdf";
    if (ext == ".html" || ext == ".htm") return "html";
    if (ext == ".json") return "chrome";
    throw Error("[viz] cannot tell the format of '" + o.output + "' from its extension '" + ext +
                "': expected .png, .svg, .pdf, .html or .json, or --format "
                "png|svg|pdf|html|chrome");
  }
  if (f == "json") f = "chrome";
  if (f != "png" && f != "svg" && f != "pdf" && f != "html" && f != "chrome") {
    throw Error("[viz] unknown --format '" + o.format +
                "': expected png, svg, pdf, html or chrome");
  }
  return f;
}

void write_output(const std::string& path, const std::string& bytes) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) {
    throw Error("[viz.write] cannot write '" + path + "': " + std::strerror(errno) +
                " (expected a writable path; the directory must exist)");
  }
  const size_t n = std::fwrite(bytes.data(), 1, bytes.size(), f);
  const int werr = n == bytes.size() ? 0 : errno;
  if (std::fclose(f) != 0 || werr != 0) {
    throw Error("[viz.write] cannot write '" + path +
                "': " + std::strerror(werr != 0 ? werr : errno));
  }
}

}  // namespace

int run_viz(const VizOptions& o) {
  try {
    if (o.output.empty())
      throw Error(
          "[viz] no --output given: expected a .png, .svg, .pdf, "
          ".html or .json path");
    const std::string format = resolve_format(o);
    if (o.width < 200 || o.width > 20000) {
      throw Error("[viz] --width " + std::to_string(o.width) +
                  " is out of range: expected 200 "
                  "to 20000");
    }
    std::error_code ec;
    for (const auto& in : o.inputs) {
      if (std::filesystem::equivalent(in, o.output, ec)) {
        throw Error("[viz] the output '" + o.output + "' is also an input: expected a new path");
      }
    }
    std::vector<std::string> warnings;
    VizTimeline t = load_viz_timeline(o.inputs, warnings);
    for (const auto& w : warnings) std::fprintf(stderr, "gt viz: warning: %s\n", w.c_str());
    if (o.from_s > 0 || o.to_s > 0) {
      crop_viz_timeline(t, o.from_s, o.to_s > 0 ? o.to_s : t.duration_s);
    }
    if (!o.title.empty()) {
      t.title = o.title;
    }
    std::string bytes;
    if (format == "png") {
      bytes = render_viz_cairo(t, VizImage::Png, o.width);
    } else if (format == "svg") {
      bytes = render_viz_cairo(t, VizImage::Svg, o.width);
    } else if (format == "pdf") {
      bytes = render_viz_cairo(t, VizImage::Pdf, o.width);
    } else if (format == "html") {
      bytes = render_viz_html(t, o.width);
    } else {
      bytes = render_viz_chrome(t);
    }
    write_output(o.output, bytes);
    std::printf("gt viz: wrote %s (%s, %zu bytes): %zu events on %zu lanes, %s s\n",
                o.output.c_str(), format.c_str(), bytes.size(), t.items.size(), t.lanes.size(),
                format_seconds(t.duration_s).c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gt viz: %s\n", e.what());
    return 1;
  }
}

}  // namespace gt::tools
