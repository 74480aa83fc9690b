#pragma once
// `gt viz`: timeline pictures of instruction logs (docs/tools.md).
//
// The work is split in two: load_viz_timeline() reads the logs into a
// VizTimeline (lanes and items on one time axis, see Note [viz time
// alignment] in viz.cpp), and one writer per format turns it into bytes:
// render_viz_cairo (png, svg, pdf; viz_cairo.cpp), render_viz_html
// (viz_html.cpp) and render_viz_chrome (viz_chrome.cpp). run_viz ties them
// together. The model types are here so the unit tests can check them.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <CLI/CLI.hpp>

#include "common/instruction_log.h"

namespace gt::tools {

struct VizOptions {
  std::vector<std::string> inputs;  // .jsonl or .log files (instruction logs, gt trace files)
  std::string output;               // timeline.png|.svg|.pdf|.html|.json
  std::string format;               // png, svg, pdf, html, chrome; empty: from the extension
  std::string title;                // empty: generated (ops, workers, duration)
  int width = 1600;                 // pixels (png) / points (svg, pdf)
  double from_s = 0;                // window start, seconds from the timeline's start
  double to_s = 0;                  // window end; 0: the end of the timeline
};

void add_viz_options(CLI::App& app, VizOptions& options);
/// Runs `gt viz`; returns the exit code (errors are printed to stderr).
int run_viz(const VizOptions& options);

/// How an item is drawn. The first nine follow gt::OpKind's order; the
/// values index kVizStyles. Boxes come first, then markers, then ticks.
enum class VizStyle : uint8_t {
  // boxes: EXEC Op by the op's kind
  Creation,
  Control,
  Elementwise,
  Linalg,
  Reduction,
  Shape,
  Inplace,
  Softmax,
  Index,
  UnknownOp,  // an op name the op table does not know
  Compiled,   // EXEC Compiled: one box for a compiled unit
  Collective, // EXEC Collective: all_reduce, all_gather... with other workers
  Free,
  Fetch,
  Sync,
  Wait,  // client WAIT
  // markers (instants, drawn above the boxes)
  CompileStarting,
  CompileDone,
  CompileFailed,
  CompileKept,
  CompileDropped,
  CompileLimited,
  Hotpath,
  Error,
  // ticks (instants, thin lines)
  Send,
  Recv,
  Other,  // OPEN, CLOSE, JOIN, LOST and events this tool does not know
  Count_,
};

inline constexpr int kVizStyleCount = static_cast<int>(VizStyle::Count_);

enum class VizShape : uint8_t {
  Box,
  TriangleOpen,
  Triangle,
  Cross,
  Circle,
  CircleOpen,
  Square,
  Diamond,
  Tick
};

/// Drawing attributes of one style: legend label, colour (0xRRGGBB), shape.
struct VizStyleInfo {
  std::string_view label;
  uint32_t rgb;
  VizShape shape;
};

/// Indexed by VizStyle.
extern const VizStyleInfo kVizStyles[kVizStyleCount];
/// Colour of a lane's background (idle time) and of every other lane's.
inline constexpr uint32_t kVizLaneRgb = 0xeef0f4;
inline constexpr uint32_t kVizLaneAltRgb = 0xe4e7ee;

inline bool viz_is_box(VizStyle s) {
  return s <= VizStyle::Wait;
}
inline bool viz_is_tick(VizStyle s) {
  return s >= VizStyle::Send;
}

/// One thing on the timeline. Times are seconds from the timeline's start.
struct VizItem {
  double start_s = 0;
  double end_s = 0;  // == start_s for markers and ticks
  uint32_t lane = 0;
  VizStyle style = VizStyle::Other;
  uint32_t ops = 0;    // EXEC Compiled: instructions in the unit
  uint32_t event = 0;  // index into VizTimeline::events
};

/// Everything the writers draw: lanes top to bottom, items sorted by lane
/// then start, and the source events for tooltips and args.
struct VizTimeline {
  std::vector<std::string> lanes;
  std::vector<double> lane_busy;  // per lane: share of the duration inside boxes; -1: no boxes
  std::vector<VizItem> items;
  std::vector<LogEvent> events;
  double duration_s = 0;            // last item end (items start at >= 0)
  double start_unix_s = 0;          // wall-clock time of t = 0; 0 when no CLOCK was seen
  uint64_t instructions = 0;        // EXEC Op events plus the ops of compiled units
  int workers = 0;                  // WORKER lanes
  std::vector<std::string> inputs;  // file names as given
  std::string title;                // the picture's title (generated or --title)
  std::string subtitle;             // the input names
};

/// Reads instruction logs (JSON lines or text, detected per line) into a
/// timeline aligned on wall-clock time. Throws gt::Error for a missing or
/// unreadable file, a file with no events, or a file that is not a log;
/// malformed lines are skipped, and a note per file goes to `warnings`.
VizTimeline load_viz_timeline(const std::vector<std::string>& inputs,
                              std::vector<std::string>& warnings);

/// Keeps the part of `t` between `from_s` and `to_s` (seconds from its
/// start; boxes crossing the edges are clipped) and makes it start at 0;
/// recomputes busy shares, the instruction count and the title. Throws
/// gt::Error for an empty or out-of-range window.
void crop_viz_timeline(VizTimeline& t, double from_s, double to_s);

/// Picture formats rendered with cairo.
enum class VizImage { Png, Svg, Pdf };
/// The bytes of a PNG, SVG or PDF file of `width` pixels (points). Throws
/// gt::Error when cairo fails.
std::string render_viz_cairo(const VizTimeline& t, VizImage format, int width);
/// One self-contained HTML file with an interactive canvas.
std::string render_viz_html(const VizTimeline& t, int width);
/// Chrome trace-event JSON (chrome://tracing, Perfetto).
std::string render_viz_chrome(const VizTimeline& t);

/// Appends `s` as a JSON string literal (quotes included) that is also safe
/// inside an HTML <script>: '<', '>', '&', U+2028 and U+2029 are written as
/// \u escapes, and bytes that are not valid UTF-8 become U+FFFD.
void append_json_string(std::string& out, std::string_view s);

}  // namespace gt::tools
