// `gt viz --format chrome`: Chrome trace-event JSON, for chrome://tracing and
// Perfetto (ui.perfetto.dev).

#include <cstdio>
#include <set>
#include <string>

#include "tools/viz.h"

namespace gt::tools {
namespace {

// One process ("gt") with a thread per lane: the viewers then show the lanes
// in our order (thread_sort_index) under their names (thread_name). Boxes
// are complete events ("X"), markers and ticks thread-scoped instants ("i");
// times are microseconds from the timeline's start.
constexpr int kPid = 1;

void append_us(std::string& out, double seconds) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.3f", seconds * 1e6);
  out += buf;
}

void append_meta(std::string& out, const char* name, int tid, const std::string& key,
                 const std::string& value, bool value_is_number) {
  out += "{\"name\":\"";
  out += name;
  out += "\",\"ph\":\"M\",\"ts\":0,\"pid\":" + std::to_string(kPid) +
         ",\"tid\":" + std::to_string(tid) + ",\"args\":{\"" + key + "\":";
  if (value_is_number) {
    out += value;
  } else {
    append_json_string(out, value);
  }
  out += "}},\n";
}

std::string event_name(const VizItem& item, const LogEvent& e) {
  switch (item.style) {
    case VizStyle::Compiled:
      return "compiled (" + std::to_string(item.ops) + " ops)";
    case VizStyle::Collective:
      return e.op;
    case VizStyle::Free:
      return "free";
    case VizStyle::Fetch:
      return "fetch";
    case VizStyle::Sync:
      return "sync";
    case VizStyle::Wait:
      return "wait " + e.kind;
    default:
      break;
  }
  if (item.style <= VizStyle::UnknownOp) return e.op.empty() ? e.kind : e.op;
  std::string name = e.event + " " + e.kind;
  if (!e.op.empty()) name += "/" + e.op;
  return name;
}

const char* category(VizStyle s) {
  if (s <= VizStyle::UnknownOp) return nullptr;  // the style label (op kind)
  switch (s) {
    case VizStyle::Compiled:
      return "compiled";
    case VizStyle::Collective:
      return "collective";
    case VizStyle::Free:
    case VizStyle::Fetch:
    case VizStyle::Sync:
    case VizStyle::Wait:
      return "io";
    case VizStyle::CompileStarting:
    case VizStyle::CompileDone:
    case VizStyle::CompileFailed:
    case VizStyle::CompileKept:
    case VizStyle::CompileDropped:
    case VizStyle::CompileLimited:
      return "compile";
    case VizStyle::Hotpath:
      return "hotpath";
    case VizStyle::Error:
      return "error";
    case VizStyle::Send:
    case VizStyle::Recv:
      return "message";
    default:
      return "other";
  }
}

}  // namespace

std::string render_viz_chrome(const VizTimeline& t) {
  std::string out;
  out.reserve(200 * t.items.size() + 4096);
  out += "{\"traceEvents\":[\n";
  append_meta(out, "process_name", 0, "name", "gt: " + t.title, false);
  for (size_t l = 0; l < t.lanes.size(); ++l) {
    const int tid = static_cast<int>(l) + 1;
    append_meta(out, "thread_name", tid, "name", t.lanes[l], false);
    append_meta(out, "thread_sort_index", tid, "sort_index", std::to_string(l), true);
  }
  out.resize(out.size() - 2);  // the last metadata event's ",\n"
  for (const auto& item : t.items) {
    const LogEvent& e = t.events[item.event];
    out += ",\n";
    out += "{\"name\":";
    append_json_string(out, event_name(item, e));
    out += ",\"cat\":";
    const char* cat = category(item.style);
    append_json_string(out, cat != nullptr ? std::string_view(cat)
                                           : kVizStyles[static_cast<int>(item.style)].label);
    const bool box = viz_is_box(item.style);
    out += box ? ",\"ph\":\"X\",\"ts\":" : ",\"ph\":\"i\",\"s\":\"t\",\"ts\":";
    append_us(out, item.start_s);
    if (box) {
      out += ",\"dur\":";
      append_us(out, item.end_s - item.start_s);
    }
    out += ",\"pid\":" + std::to_string(kPid) + ",\"tid\":" + std::to_string(item.lane + 1);
    out += ",\"args\":{\"event\":";
    append_json_string(out, e.event + " " + e.kind);
    out += ",\"seq\":" + std::to_string(e.seq);
    // Details as key/values; a repeated key keeps its first value.
    std::set<std::string_view> seen = {"event", "seq"};
    for (const auto& [key, value] : split_details(e.details)) {
      if (key.empty() || !seen.insert(key).second) continue;
      out += ',';
      append_json_string(out, key);
      out += ':';
      append_json_string(out, value);
    }
    out += "}}";
  }
  out += "\n],\"displayTimeUnit\":\"ms\",\"otherData\":{\"title\":";
  append_json_string(out, t.title);
  char buf[64];
  std::snprintf(buf, sizeof buf, ",\"start_unix_s\":%.6f}}\n", t.start_unix_s);
  out += buf;
  return out;
}

}  // namespace gt::tools
