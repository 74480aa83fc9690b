#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <variant>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cairo/cairo.h>

#include <gt/error.h>

#include "common/instruction_log.h"
#include "tools/viz.h"
#include "tests/support/temp_dir.h"

using namespace gt;
using namespace gt::tools;
using Catch::Matchers::Contains;

namespace {

namespace fs = std::filesystem;

using gt::test::TempDir;

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_all(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  REQUIRE(out.good());
}

LogEvent ev(double elapsed, uint64_t seq, std::string event, std::string component,
            std::string kind, std::string op, std::string details) {
  LogEvent e;
  e.elapsed_s = elapsed;
  e.seq = seq;
  e.event = std::move(event);
  e.component = std::move(component);
  e.kind = std::move(kind);
  e.op = std::move(op);
  e.details = std::move(details);
  return e;
}

std::string clock_details(double unix_s, int pid) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "unix_s=%.6f pid=%d", unix_s, pid);
  return buf;
}

// Writes events as JSON lines (or text lines) and returns the path.
std::string write_log(const std::string& path, const std::vector<LogEvent>& events, bool text,
                      const std::string& extra_line = "") {
  std::string out;
  for (const auto& e : events) out += (text ? format_text(e) : format_json(e)) + "\n";
  out += extra_line;
  write_all(path, out);
  return path;
}

// Note [viz test fixture]
// Wall-clock layout (unix seconds; each component's elapsed_s counts from its
// own start, CLOCK gives unix_s = offset + elapsed_s):
//   CLIENT pid 111      offset 1000.0   SEND at 1000.010 (the earliest item: t = 0)
//   CLIENT pid 222      offset 1000.05  SEND at 1000.060
//   DISPATCHER          offset  999.5   RECV/SEND at 1000.011 / 1000.012
//   WORKER 0 (text)     offset  999.0   matmul 1000.015-1000.030, add 1000.030-1000.035,
//                                       fetch 1000.048-1000.050, compiled 1000.050-1000.060,
//                                       free, COMPILE/HOTPATH markers, one malformed line
//   WORKER 1 (2 runs)   run 1 offset 995.2: mul 1000.225-1000.230 (the last item)
//                       run 2 offset 1000.08: sum 1000.099-1000.100
//   trace file          WORKER 10 and WORKER 2 interleaved, own CLOCKs, a STATS event
struct Fixture {
  TempDir dir;
  std::vector<std::string> inputs;

  Fixture() {
    inputs.push_back(
        write_log(dir / "run.client.jsonl",
                  {ev(0.0, 0, "CLOCK", "CLIENT", "Start", "", clock_details(1000.0, 111)),
                   ev(0.010, 1, "SEND", "CLIENT", "Batch", "", "session=1 n=4 bytes=900 seq=0"),
                   ev(0.050, 2, "RECV", "CLIENT", "FetchReply", "", "session=1 req=7 bytes=64"),
                   ev(0.050, 3, "WAIT", "CLIENT", "Fetch", "", "session=1 req=7 dur_us=30000.000")},
                  false));
    inputs.push_back(
        write_log(dir / "other.client.jsonl",
                  {ev(0.0, 0, "CLOCK", "CLIENT", "Start", "", clock_details(1000.05, 222)),
                   ev(0.010, 1, "SEND", "CLIENT", "Batch", "", "session=2 n=1 bytes=90 seq=0")},
                  false));
    inputs.push_back(write_log(
        dir / "run.dispatcher.jsonl",
        {ev(0.0, 0, "CLOCK", "DISPATCHER", "Start", "", clock_details(999.5, 100)),
         ev(0.511, 1, "RECV", "DISPATCHER", "Batch", "", "session=1 n=4 bytes=900"),
         ev(0.512, 2, "SEND", "DISPATCHER", "Batch", "", "session=1 worker=0 n=4 bytes=900"),
         ev(0.513, 3, "OPEN", "DISPATCHER", "Session", "", "session=2 worker=0 name=x pid=222")},
        false));
    const std::string w0 = "WORKER 0";
    inputs.push_back(write_log(
        dir / "run.worker-0.log",
        {ev(0.0, 0, "CLOCK", w0, "Start", "", clock_details(999.0, 200)),
         ev(1.012, 1, "RECV", w0, "Batch", "", "session=1 n=4 bytes=900"),
         ev(1.013, 2, "HOTPATH", w0, "Detected", "",
            "session=1 sequence=abc123def456 ops=118 repetitions=4"),
         ev(1.014, 3, "COMPILE", w0, "Starting", "",
            "sequence=abc123def456 ops=118 variant=elided"),
         ev(1.030, 4, "EXEC", w0, "Op", "matmul",
            "session=1 in=1,2 out=3 shape=[64,64] dur_us=15000.000"),
         ev(1.035, 5, "EXEC", w0, "Op", "add",
            "session=1 in=3,4 out=5 shape=[64,64] dur_us=5000.000"),
         ev(1.040, 6, "COMPILE", w0, "Done", "",
            "sequence=abc123def456 groups=6 fused=110 ms=4.5 cache=miss"),
         ev(1.050, 7, "FETCH", w0, "Fetch", "", "session=1 req=7 out=5 bytes=4 dur_us=2000.000"),
         ev(1.060, 8, "EXEC", w0, "Compiled", "",
            "session=1 sequence=abc123def456 ops=118 variant=elided dur_us=10000.000"),
         ev(1.061, 9, "FREE", w0, "Free", "", "session=1 n=3 dur_us=500.000"),
         ev(1.070, 10, "COMPILE", w0, "Kept", "", "sequence=abc123def456 speedup=2.31"),
         ev(1.071, 11, "ERROR", w0, "Op", "matmul",
            "session=1 out=9 what=matmul: \"bad\" </script><b>x</b> & more")},
        true, "this line is not an instruction-log line\n"));
    const std::string w1 = "WORKER 1";
    inputs.push_back(write_log(
        dir / "run.worker-1.jsonl",
        {ev(5.0, 0, "CLOCK", w1, "Start", "", clock_details(1000.2, 301)),
         ev(5.030, 1, "EXEC", w1, "Op", "mul", "session=1 in=1,2 out=3 shape=[8] dur_us=5000.000"),
         // a second run appended to the same file
         ev(0.0, 0, "CLOCK", w1, "Start", "", clock_details(1000.08, 302)),
         ev(0.020, 1, "EXEC", w1, "Op", "sum", "session=1 in=3 out=4 shape=[] dur_us=1000.000"),
         ev(0.021, 2, "EXEC", w1, "Op", "not_an_op", "session=1 dur_us=100.000")},
        false));
    const std::string w2 = "WORKER 2", w10 = "WORKER 10";
    inputs.push_back(write_log(
        dir / "trace_20250101-120000.jsonl",
        {ev(7.0, 0, "CLOCK", w10, "Start", "", clock_details(1000.07, 410)),
         ev(3.0, 0, "CLOCK", w2, "Start", "", clock_details(1000.07, 402)),
         ev(7.001, 1, "EXEC", w10, "Op", "relu", "session=1 out=3 shape=[8] dur_us=500.000"),
         ev(3.002, 1, "EXEC", w2, "Op", "softmax", "session=1 out=3 shape=[8] dur_us=500.000"),
         ev(3.003, 2, "STATS", w2, "Worker", "", "device=cpu busy=0.5")},
        false));
  }
};

constexpr double kEps = 1e-6;

const VizItem* find_item(const VizTimeline& t, const std::string& event, const std::string& op,
                         const std::string& component = "") {
  for (const auto& item : t.items) {
    const auto& e = t.events[item.event];
    if (e.event == event && e.op == op && (component.empty() || e.component == component)) {
      return &item;
    }
  }
  return nullptr;
}

// Runs f with stderr sent to a file; returns what was written.
template <typename F>
std::string capture_stderr(F&& f) {
  std::fflush(stderr);
  char path[] = "/tmp/gt-viz-stderr-XXXXXX";
  const int fd = ::mkstemp(path);
  REQUIRE(fd >= 0);
  const int saved = ::dup(2);
  ::dup2(fd, 2);
  f();
  std::fflush(stderr);
  ::dup2(saved, 2);
  ::close(saved);
  ::close(fd);
  std::string text = read_all(path);
  ::unlink(path);
  return text;
}

// ---- a strict JSON reader, for the Chrome trace output -----------------------

struct Json;
using JsonArray = std::vector<Json>;
using JsonObject = std::map<std::string, Json>;
struct Json {
  std::variant<std::nullptr_t, bool, double, std::string, std::shared_ptr<JsonArray>,
               std::shared_ptr<JsonObject>>
      v;
  bool is_object() const { return v.index() == 5; }
  bool is_array() const { return v.index() == 4; }
  bool is_string() const { return v.index() == 3; }
  bool is_number() const { return v.index() == 2; }
  const JsonObject& object() const { return *std::get<5>(v); }
  const JsonArray& array() const { return *std::get<4>(v); }
  const std::string& str() const { return std::get<3>(v); }
  double num() const { return std::get<2>(v); }
  bool has(const std::string& k) const { return is_object() && object().count(k) > 0; }
  const Json& at(const std::string& k) const { return object().at(k); }
};

// RFC 8259: no trailing commas, no duplicate keys (we never write them), no
// raw control characters, numbers in JSON's grammar, valid escapes.
class JsonParser {
 public:
  explicit JsonParser(std::string s) : s_(std::move(s)) {}
  std::optional<Json> parse() {
    try {
      Json j = value();
      ws();
      if (i_ != s_.size()) return std::nullopt;
      return j;
    } catch (const std::runtime_error& e) {
      error = e.what();
      return std::nullopt;
    }
  }
  std::string error;

 private:
  [[noreturn]] void fail(const std::string& what) {
    throw std::runtime_error(what + " at byte " + std::to_string(i_));
  }
  void ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\n' || s_[i_] == '\r' || s_[i_] == '\t'))
      ++i_;
  }
  char peek() {
    if (i_ >= s_.size()) fail("unexpected end");
    return s_[i_];
  }
  void expect(char c) {
    if (peek() != c) fail(std::string("expected '") + c + "'");
    ++i_;
  }
  Json value() {
    ws();
    const char c = peek();
    if (c == '{') return object();
    if (c == '[') return array();
    if (c == '"') return Json{string()};
    if (s_.compare(i_, 4, "true") == 0) {
      i_ += 4;
      return Json{true};
    }
    if (s_.compare(i_, 5, "false") == 0) {
      i_ += 5;
      return Json{false};
    }
    if (s_.compare(i_, 4, "null") == 0) {
      i_ += 4;
      return Json{nullptr};
    }
    return Json{number()};
  }
  Json object() {
    expect('{');
    auto obj = std::make_shared<JsonObject>();
    ws();
    if (peek() == '}') {
      ++i_;
      return Json{obj};
    }
    while (true) {
      ws();
      std::string key = string();
      ws();
      expect(':');
      Json v = value();
      if (!obj->emplace(key, std::move(v)).second) fail("duplicate key " + key);
      ws();
      if (peek() == ',') {
        ++i_;
        continue;
      }
      expect('}');
      return Json{obj};
    }
  }
  Json array() {
    expect('[');
    auto arr = std::make_shared<JsonArray>();
    ws();
    if (peek() == ']') {
      ++i_;
      return Json{arr};
    }
    while (true) {
      arr->push_back(value());
      ws();
      if (peek() == ',') {
        ++i_;
        continue;
      }
      expect(']');
      return Json{arr};
    }
  }
  std::string string() {
    expect('"');
    std::string out;
    while (true) {
      const auto c = static_cast<unsigned char>(peek());
      ++i_;
      if (c == '"') return out;
      if (c < 0x20) fail("raw control character in a string");
      if (c != '\\') {
        out += static_cast<char>(c);
        continue;
      }
      const char e = peek();
      ++i_;
      switch (e) {
        case '"':
          out += '"';
          break;
        case '\\':
          out += '\\';
          break;
        case '/':
          out += '/';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'u': {
          if (i_ + 4 > s_.size()) fail("short \\u escape");
          unsigned cp = 0;
          for (int k = 0; k < 4; ++k) {
            const char h = s_[i_++];
            cp <<= 4;
            if (h >= '0' && h <= '9')
              cp |= h - '0';
            else if (h >= 'a' && h <= 'f')
              cp |= h - 'a' + 10;
            else if (h >= 'A' && h <= 'F')
              cp |= h - 'A' + 10;
            else
              fail("bad hex digit");
          }
          if (cp >= 0xd800 && cp <= 0xdfff) fail("lone surrogate (we never write pairs)");
          if (cp < 0x80) {
            out += static_cast<char>(cp);
          } else if (cp < 0x800) {
            out += static_cast<char>(0xc0 | (cp >> 6));
            out += static_cast<char>(0x80 | (cp & 0x3f));
          } else {
            out += static_cast<char>(0xe0 | (cp >> 12));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
            out += static_cast<char>(0x80 | (cp & 0x3f));
          }
          break;
        }
        default:
          fail("bad escape");
      }
    }
  }
  double number() {
    const size_t start = i_;
    if (i_ < s_.size() && s_[i_] == '-') ++i_;
    auto digits = [&] {
      const size_t d = i_;
      while (i_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[i_]))) ++i_;
      return i_ - d;
    };
    if (i_ < s_.size() && s_[i_] == '0') {
      ++i_;
    } else if (digits() == 0) {
      fail("bad number");
    }
    if (i_ < s_.size() && s_[i_] == '.') {
      ++i_;
      if (digits() == 0) fail("bad fraction");
    }
    if (i_ < s_.size() && (s_[i_] == 'e' || s_[i_] == 'E')) {
      ++i_;
      if (i_ < s_.size() && (s_[i_] == '+' || s_[i_] == '-')) ++i_;
      if (digits() == 0) fail("bad exponent");
    }
    return std::strtod(s_.substr(start, i_ - start).c_str(), nullptr);
  }

  const std::string s_;
  size_t i_ = 0;
};

// ---- pixels ---------------------------------------------------------------

// Pixels of a PNG by colour (0xRRGGBB), read back with cairo.
struct Png {
  int width = 0, height = 0;
  std::map<uint32_t, size_t> colors;
  size_t near(uint32_t rgb, int tolerance = 2) const {
    size_t n = 0;
    for (const auto& [c, count] : colors) {
      const int dr = static_cast<int>((c >> 16) & 0xff) - static_cast<int>((rgb >> 16) & 0xff);
      const int dg = static_cast<int>((c >> 8) & 0xff) - static_cast<int>((rgb >> 8) & 0xff);
      const int db = static_cast<int>(c & 0xff) - static_cast<int>(rgb & 0xff);
      if (std::abs(dr) <= tolerance && std::abs(dg) <= tolerance && std::abs(db) <= tolerance)
        n += count;
    }
    return n;
  }
};

std::optional<Png> read_png(const std::string& path) {
  cairo_surface_t* s = cairo_image_surface_create_from_png(path.c_str());
  if (cairo_surface_status(s) != CAIRO_STATUS_SUCCESS) {
    cairo_surface_destroy(s);
    return std::nullopt;
  }
  cairo_surface_flush(s);
  Png png;
  png.width = cairo_image_surface_get_width(s);
  png.height = cairo_image_surface_get_height(s);
  const int stride = cairo_image_surface_get_stride(s);
  const unsigned char* data = cairo_image_surface_get_data(s);
  for (int y = 0; y < png.height; ++y) {
    const auto* row = reinterpret_cast<const uint32_t*>(data + static_cast<size_t>(y) * stride);
    for (int x = 0; x < png.width; ++x) ++png.colors[row[x] & 0xffffff];
  }
  cairo_surface_destroy(s);
  return png;
}

uint32_t style_rgb(VizStyle s) {
  return kVizStyles[static_cast<int>(s)].rgb;
}

std::optional<std::string> find_on_path(const std::string& name) {
  const char* path = std::getenv("PATH");
  if (path == nullptr) return std::nullopt;
  std::stringstream ss(path);
  for (std::string dir; std::getline(ss, dir, ':');) {
    if (dir.empty()) continue;
    const std::string candidate = dir + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return std::nullopt;
}

int run(const std::vector<std::string>& inputs, const std::string& output,
        const std::string& format = "", int width = 1000, const std::string& title = "") {
  VizOptions o;
  o.inputs = inputs;
  o.output = output;
  o.format = format;
  o.width = width;
  o.title = title;
  return run_viz(o);
}

}  // namespace

TEST_CASE("viz timeline aligns components on wall-clock time and orders lanes", "[viz][unit]") {
  Fixture f;
  std::vector<std::string> warnings;
  const VizTimeline t = load_viz_timeline(f.inputs, warnings);

  CHECK(t.lanes == std::vector<std::string>{"CLIENT pid 111", "CLIENT pid 222", "DISPATCHER",
                                            "WORKER 0", "WORKER 1", "WORKER 2", "WORKER 10"});
  CHECK(t.workers == 4);
  // t = 0 is the client's SEND at 1000.010; the last end is worker 1's mul.
  CHECK(t.start_unix_s == Approx(1000.010).epsilon(0).margin(kEps));
  CHECK(t.duration_s == Approx(0.220).margin(kEps));

  const VizItem* matmul = find_item(t, "EXEC", "matmul");
  REQUIRE(matmul != nullptr);
  CHECK(matmul->style == VizStyle::Linalg);
  CHECK(t.lanes[matmul->lane] == "WORKER 0");
  CHECK(matmul->start_s == Approx(0.005).margin(kEps));
  CHECK(matmul->end_s == Approx(0.020).margin(kEps));
  CHECK(find_item(t, "EXEC", "add")->style == VizStyle::Elementwise);
  CHECK(find_item(t, "EXEC", "not_an_op")->style == VizStyle::UnknownOp);
  CHECK(find_item(t, "RECV", "", "DISPATCHER")->start_s == Approx(0.001).margin(kEps));
  CHECK(find_item(t, "RECV", "", "CLIENT")->start_s == Approx(0.040).margin(kEps));

  // Both runs of worker 1, each aligned by its own CLOCK.
  const VizItem* mul = find_item(t, "EXEC", "mul");
  const VizItem* sum = find_item(t, "EXEC", "sum");
  REQUIRE(mul != nullptr);
  REQUIRE(sum != nullptr);
  CHECK(mul->lane == sum->lane);
  CHECK(mul->start_s == Approx(0.215).margin(kEps));
  CHECK(sum->start_s == Approx(0.089).margin(kEps));
  // Interleaved components of one trace file keep separate offsets.
  CHECK(find_item(t, "EXEC", "relu")->start_s == Approx(0.0605).margin(kEps));
  CHECK(find_item(t, "EXEC", "softmax")->start_s == Approx(0.0615).margin(kEps));

  // One box for the compiled unit, counted as its ops.
  size_t compiled = 0;
  for (const auto& item : t.items) {
    if (item.style == VizStyle::Compiled) {
      ++compiled;
      CHECK(item.ops == 118);
      CHECK(item.start_s == Approx(0.040).margin(kEps));
      CHECK(item.end_s == Approx(0.050).margin(kEps));
    }
    CHECK(item.start_s >= -kEps);
    CHECK(item.end_s >= item.start_s);
    CHECK(item.end_s <= t.duration_s + kEps);
    CHECK(t.events[item.event].event != "CLOCK");
    CHECK(t.events[item.event].event != "STATS");
  }
  CHECK(compiled == 1);
  CHECK(t.instructions == 118 + 7);  // matmul add mul sum not_an_op relu softmax

  // Items are sorted by lane, then start.
  for (size_t i = 1; i < t.items.size(); ++i) {
    const auto& a = t.items[i - 1];
    const auto& b = t.items[i];
    CHECK((a.lane < b.lane || (a.lane == b.lane && a.start_s <= b.start_s)));
  }
  // Markers land on their worker's lane.
  for (const auto& item : t.items) {
    const auto& e = t.events[item.event];
    if (e.event == "COMPILE" || e.event == "HOTPATH") CHECK(t.lanes[item.lane] == "WORKER 0");
  }
  // Busy shares: worker 0 is busy 15+5+2+10+0.5 ms of 220 ms.
  CHECK(t.lane_busy[3] == Approx(32.5 / 220).margin(1e-4));
  CHECK(t.lane_busy[2] == -1.0);  // the dispatcher has no boxes

  REQUIRE(warnings.size() == 1);
  CHECK_THAT(warnings[0],
             Contains("run.worker-0.log") && Contains("1 malformed line") && Contains("line 13"));
  CHECK_THAT(t.title, Contains("125 instructions") && Contains("4 workers") && Contains("0.22 s"));
  CHECK_THAT(t.subtitle, Contains("run.client.jsonl") && Contains("trace_20250101-120000.jsonl"));
}

TEST_CASE("viz crops the timeline to a window", "[viz][unit]") {
  Fixture f;
  std::vector<std::string> warnings;
  VizTimeline t = load_viz_timeline(f.inputs, warnings);
  // matmul runs 0.005-0.020: a window from 0.010 clips it; mul (0.215-0.220) is left out.
  crop_viz_timeline(t, 0.010, 0.050);
  CHECK(t.duration_s == Approx(0.040).margin(kEps));
  const VizItem* matmul = find_item(t, "EXEC", "matmul");
  REQUIRE(matmul != nullptr);
  CHECK(matmul->start_s == Approx(0.0).margin(kEps));
  CHECK(matmul->end_s == Approx(0.010).margin(kEps));
  CHECK(find_item(t, "EXEC", "mul") == nullptr);
  CHECK(find_item(t, "EXEC", "Compiled") == nullptr);
  CHECK_THAT(t.title, Catch::Contains("(from 0.01 s)"));
  for (const auto& item : t.items) {
    CHECK(item.start_s >= 0);
    CHECK(item.end_s <= t.duration_s + kEps);
  }
  VizTimeline u = load_viz_timeline(f.inputs, warnings);
  CHECK_THROWS_WITH(crop_viz_timeline(u, 0.05, 0.01), Catch::Contains("is empty"));
  CHECK_THROWS_WITH(crop_viz_timeline(u, 100, 200), Catch::Contains("past the end"));
}

TEST_CASE("viz places logs without CLOCK and prefers the JSON twin of a text log", "[viz][unit]") {
  TempDir dir;
  const std::vector<LogEvent> worker = {
      ev(0.0, 0, "CLOCK", "WORKER 0", "Start", "", clock_details(2000.0, 9)),
      ev(0.5, 1, "EXEC", "WORKER 0", "Op", "exp", "session=1 dur_us=100000.000")};
  const std::string json = write_log(dir / "a.worker-0.jsonl", worker, false);
  const std::string text = write_log(dir / "a.worker-0.log", worker, true);
  const std::string old = write_log(
      dir / "old.client.log", {ev(0.25, 0, "SEND", "CLIENT", "Batch", "", "session=1 n=1")}, true);
  std::vector<std::string> warnings;
  const VizTimeline t = load_viz_timeline({text, json, old}, warnings);
  CHECK(t.inputs == std::vector<std::string>{json, old});
  CHECK(t.lanes == std::vector<std::string>{"CLIENT", "WORKER 0"});
  // The client has no CLOCK: it is taken to start with the earliest aligned
  // component (the worker's CLOCK at elapsed 0 is unix 2000.0), so its SEND is
  // at 2000.25, before the worker's exp box (2000.4 to 2000.5).
  CHECK(find_item(t, "SEND", "")->start_s == Approx(0.0).margin(kEps));
  CHECK(find_item(t, "EXEC", "exp")->start_s == Approx(0.15).margin(kEps));
  REQUIRE(warnings.size() == 2);
  CHECK_THAT(warnings[0], Contains("skipped a.worker-0.log"));
  CHECK_THAT(warnings[1], Contains("old.client.log") && Contains("no CLOCK"));
}

TEST_CASE("viz writes a PNG with lanes and op-kind colours", "[viz][unit]") {
  Fixture f;
  const std::string out = f.dir / "t.png";
  std::string err;
  int rc = -1;
  err = capture_stderr([&] { rc = run(f.inputs, out, "", 1000); });
  REQUIRE(rc == 0);
  CHECK_THAT(err, Contains("1 malformed line") && Contains("first at line 13"));
  const std::string bytes = read_all(out);
  REQUIRE(bytes.size() > 8);
  CHECK(bytes.compare(0, 8, "\x89PNG\r\n\x1a\n") == 0);
  const auto png = read_png(out);
  REQUIRE(png);
  CHECK(png->width == 1000);
  CHECK(png->height > 7 * 40);
  CHECK(png->height < 1000);
  CHECK(png->near(kVizLaneRgb, 0) > 1000);                 // idle time
  CHECK(png->near(kVizLaneAltRgb, 0) > 1000);              // every other lane
  CHECK(png->near(style_rgb(VizStyle::Linalg), 0) > 200);  // matmul: 15 ms of 220 ms, 21 px high
  CHECK(png->near(style_rgb(VizStyle::Elementwise), 0) > 50);
  CHECK(png->near(style_rgb(VizStyle::Compiled), 0) > 20);
  CHECK(png->near(style_rgb(VizStyle::Wait), 0) > 100);
  CHECK(png->near(style_rgb(VizStyle::Error), 8) > 3);

  // --width and --format override; the extension does not matter then.
  const std::string wide = f.dir / "wide.img";
  REQUIRE(run(f.inputs, wide, "png", 2200) == 0);
  const auto png2 = read_png(wide);
  REQUIRE(png2);
  CHECK(png2->width == 2200);
}

TEST_CASE("viz writes SVG and PDF", "[viz][unit]") {
  Fixture f;
  REQUIRE(run(f.inputs, f.dir / "t.svg") == 0);
  const std::string svg = read_all(f.dir / "t.svg");
  CHECK(svg.rfind("<?xml", 0) == 0);
  CHECK_THAT(svg, Contains("<svg"));
  REQUIRE(run(f.inputs, f.dir / "t.pdf", "", 1000, "my <title> & \"more\"") == 0);
  const std::string pdf = read_all(f.dir / "t.pdf");
  CHECK(pdf.rfind("%PDF", 0) == 0);
  CHECK(pdf.size() > 1000);
}

TEST_CASE("viz writes a self-contained HTML page with escaped data", "[viz][unit]") {
  Fixture f;
  REQUIRE(run(f.inputs, f.dir / "t.html", "", 1000, "a </script> title") == 0);
  const std::string html = read_all(f.dir / "t.html");
  CHECK(html.rfind("<!DOCTYPE html>", 0) == 0);
  CHECK_THAT(html, Contains("<canvas"));
  CHECK_THAT(html, Contains("\"lanes\":[\"CLIENT pid 111\",\"CLIENT pid 222\",\"DISPATCHER\","
                            "\"WORKER 0\",\"WORKER 1\",\"WORKER 2\",\"WORKER 10\"]"));
  CHECK_THAT(html, Contains("\"ops\":[") && Contains("\"matmul\""));
  CHECK_THAT(html, Contains("session=1 in=1,2 out=3 shape=[64,64] dur_us=15000.000"));
  // Log text cannot close the script or inject markup.
  CHECK_THAT(html, Contains("\\\"bad\\\" \\u003c/script\\u003e\\u003cb\\u003ex"));
  CHECK_THAT(html, Contains("<title>a &lt;/script&gt; title</title>"));
  size_t scripts = 0;
  for (size_t p = html.find("</script>"); p != std::string::npos;
       p = html.find("</script>", p + 1)) {
    ++scripts;
  }
  CHECK(scripts == 2);  // the data, the viewer
  CHECK(html.find("<b>x") == std::string::npos);
  // No network.
  CHECK(html.find("http://") == std::string::npos);
  CHECK(html.find("https://") == std::string::npos);
  CHECK(html.find("src=") == std::string::npos);
}

TEST_CASE("viz writes Chrome trace-event JSON", "[viz][unit]") {
  Fixture f;
  REQUIRE(run(f.inputs, f.dir / "t.json") == 0);
  const std::string text = read_all(f.dir / "t.json");
  JsonParser parser(text);
  const auto doc = parser.parse();
  INFO(parser.error);
  REQUIRE(doc);
  REQUIRE(doc->is_object());
  REQUIRE(doc->has("traceEvents"));
  CHECK(doc->at("displayTimeUnit").str() == "ms");
  const auto& events = doc->at("traceEvents").array();

  std::map<double, std::string> thread_names;
  size_t compiled = 0, instants = 0, complete = 0;
  const Json* matmul = nullptr;
  for (const auto& e : events) {
    REQUIRE(e.is_object());
    for (const char* key : {"name", "ph", "ts", "pid", "tid"}) {
      INFO(key);
      CHECK(e.has(key));
    }
    CHECK(e.at("name").is_string());
    CHECK(e.at("ts").is_number());
    CHECK(e.at("pid").is_number());
    CHECK(e.at("tid").is_number());
    const std::string ph = e.at("ph").str();
    CHECK((ph == "X" || ph == "i" || ph == "M"));
    if (ph == "M") {
      if (e.at("name").str() == "thread_name") {
        thread_names[e.at("tid").num()] = e.at("args").at("name").str();
      }
      continue;
    }
    CHECK(e.at("ts").num() >= -1e-3);
    CHECK(e.at("args").is_object());
    CHECK(e.has("cat"));
    if (ph == "X") {
      ++complete;
      REQUIRE(e.has("dur"));
      CHECK(e.at("dur").num() >= 0);
      if (e.at("name").str() == "compiled (118 ops)") {
        ++compiled;
        CHECK(e.at("cat").str() == "compiled");
        CHECK(e.at("dur").num() == Approx(10000).margin(0.01));
        CHECK(e.at("ts").num() == Approx(40000).margin(0.01));
        CHECK(e.at("args").at("sequence").str() == "abc123def456");
      }
      if (e.at("name").str() == "matmul") matmul = &e;
    } else {
      ++instants;
      CHECK(e.at("s").str() == "t");
    }
  }
  CHECK(thread_names == std::map<double, std::string>{{1, "CLIENT pid 111"},
                                                      {2, "CLIENT pid 222"},
                                                      {3, "DISPATCHER"},
                                                      {4, "WORKER 0"},
                                                      {5, "WORKER 1"},
                                                      {6, "WORKER 2"},
                                                      {7, "WORKER 10"}});
  CHECK(compiled == 1);
  CHECK(complete == 11);  // 7 ops, compiled, fetch, free, wait
  CHECK(instants >= 10);
  REQUIRE(matmul != nullptr);
  CHECK(matmul->at("cat").str() == "Linalg");
  CHECK(matmul->at("tid").num() == 4);
  CHECK(matmul->at("ts").num() == Approx(5000).margin(0.01));
  CHECK(matmul->at("dur").num() == Approx(15000).margin(0.01));
  CHECK(matmul->at("args").at("shape").str() == "[64,64]");
  // The error's free text survives, quotes and markup included.
  CHECK_THAT(text, Contains("\"what\":\"matmul: \\\"bad\\\" \\u003c/script\\u003e"));
}

TEST_CASE("viz JSON strings escape quotes, control bytes, markup and bad UTF-8", "[viz][unit]") {
  auto j = [](std::string_view s) {
    std::string out;
    append_json_string(out, s);
    return out;
  };
  CHECK(j("plain") == "\"plain\"");
  CHECK(j("a\"b\\c") == "\"a\\\"b\\\\c\"");
  CHECK(j("\n\t\r\x01\x7f") == "\"\\n\\t\\r\\u0001\\u007f\"");
  CHECK(j("</script>&") == "\"\\u003c/script\\u003e\\u0026\"");
  CHECK(j("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80") ==
        "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"");
  CHECK(j("\xe2\x80\xa8") == "\"\\u2028\"");
  CHECK(j("x\xffy") == "\"x\\ufffdy\"");
  CHECK(j("\xc0\xaf") == "\"\\ufffd\\ufffd\"");             // overlong
  CHECK(j("\xed\xa0\x80") == "\"\\ufffd\\ufffd\\ufffd\"");  // a surrogate
  CHECK(j("\xe2\x82") == "\"\\ufffd\\ufffd\"");             // truncated
  JsonParser p(j(std::string("\0\x1f mixed \xff <\"'>", 15)));
  CHECK(p.parse().has_value());
}

TEST_CASE("viz skips lines with implausible times and durations", "[viz][unit]") {
  TempDir dir;
  const std::string w = "WORKER 0";
  const std::string log = write_log(dir / "odd.worker-0.jsonl",
                                    {ev(0, 0, "CLOCK", w, "Start", "", clock_details(100.0, 1)),
                                     ev(1e300, 1, "EXEC", w, "Op", "add", "dur_us=5"),
                                     ev(0.5, 2, "EXEC", w, "Op", "add", "dur_us=1e308"),
                                     ev(0.5, 3, "EXEC", w, "Op", "add", "dur_us=-4"),
                                     ev(0.5, 4, "EXEC", w, "Op", "add", "dur_us=nan"),
                                     ev(0.6, 5, "CLOCK", w, "Start", "", "unix_s=1e300 pid=1"),
                                     ev(0.7, 6, "EXEC", w, "Compiled", "", "ops=-3 dur_us=100"),
                                     ev(0.8, 7, "EXEC", w, "Op", "relu", "shape=[2] dur_us=100")},
                                    false);
  std::string err;
  int rc = -1;
  err = capture_stderr([&] { rc = run({log}, dir / "odd.json"); });
  REQUIRE(rc == 0);
  CHECK_THAT(err, Contains("5 malformed lines") && Contains("first at line 2"));
  JsonParser parser(read_all(dir / "odd.json"));
  const auto doc = parser.parse();
  INFO(parser.error);
  REQUIRE(doc);
  std::vector<std::string> warnings;
  const VizTimeline t = load_viz_timeline({log}, warnings);
  REQUIRE(t.items.size() == 2);
  CHECK(t.items[0].ops == 0);
  CHECK(t.duration_s == Approx(0.1001).margin(kEps));  // 0.6999 to 0.8
}

TEST_CASE("viz warns when the logs come from runs far apart", "[viz][unit]") {
  TempDir dir;
  const std::string a =
      write_log(dir / "a.worker-0.jsonl",
                {ev(0, 0, "CLOCK", "WORKER 0", "Start", "", clock_details(1000.0, 1)),
                 ev(0.5, 1, "EXEC", "WORKER 0", "Op", "add", "dur_us=100")},
                false);
  const std::string b =
      write_log(dir / "b.worker-1.jsonl",
                {ev(0, 0, "CLOCK", "WORKER 1", "Start", "", clock_details(5000.0, 2)),
                 ev(0.5, 1, "EXEC", "WORKER 1", "Op", "add", "dur_us=100")},
                false);
  std::vector<std::string> warnings;
  const VizTimeline t = load_viz_timeline({a, b}, warnings);
  CHECK(t.duration_s == Approx(4000.0001).margin(kEps));
  REQUIRE(warnings.size() == 1);
  CHECK_THAT(warnings[0], Contains("different runs"));
}

TEST_CASE("viz reports bad inputs and outputs with exit code 1", "[viz][unit]") {
  Fixture f;
  std::string err;
  int rc = 0;

  err = capture_stderr([&] { rc = run({f.dir / "missing.jsonl"}, f.dir / "t.png"); });
  CHECK(rc == 1);
  CHECK_THAT(err, Contains("missing.jsonl") && Contains("no such file") && Contains(".jsonl"));

  write_all(f.dir / "empty.log", "");
  err = capture_stderr([&] { rc = run({f.dir / "empty.log"}, f.dir / "t.png"); });
  CHECK(rc == 1);
  CHECK_THAT(err, Contains("empty.log") && Contains("no instruction-log events"));

  write_all(f.dir / "garbage.jsonl", "{\"not\": \"an event\"}\nhello\n\x01\x02\xff\n");
  err = capture_stderr([&] { rc = run({f.dir / "garbage.jsonl"}, f.dir / "t.png"); });
  CHECK(rc == 1);
  CHECK_THAT(err, Contains("garbage.jsonl") && Contains("3 malformed"));

  write_log(f.dir / "clock-only.jsonl",
            {ev(0, 0, "CLOCK", "CLIENT", "Start", "", clock_details(1.0, 1))}, false);
  err = capture_stderr([&] { rc = run({f.dir / "clock-only.jsonl"}, f.dir / "t.png"); });
  CHECK(rc == 1);
  CHECK_THAT(err, Contains("no events to draw"));

  err = capture_stderr([&] { rc = run(f.inputs, f.dir / "t.png", "gif"); });
  CHECK(rc == 1);
  CHECK_THAT(err, Contains("gif") && Contains("png, svg, pdf, html or chrome"));

  err = capture_stderr([&] { rc = run(f.inputs, f.dir / "t.bmp"); });
  CHECK(rc == 1);
  CHECK_THAT(err, Contains(".bmp") && Contains("--format"));

  err = capture_stderr([&] { rc = run({f.inputs[0], f.dir / "old.json"}, f.dir / "u.png"); });
  CHECK(rc == 1);  // an earlier Chrome trace caught by a glob
  CHECK_THAT(err, Contains("old.json") && Contains("looks like gt viz output"));

  err = capture_stderr([&] { rc = run(f.inputs, f.dir / "no-such-dir/t.png"); });
  CHECK(rc == 1);
  CHECK_THAT(err, Contains("no-such-dir/t.png") && Contains("cannot write"));

  err = capture_stderr([&] { rc = run(f.inputs, f.dir / "t.png", "", 50); });
  CHECK(rc == 1);
  CHECK_THAT(err, Contains("--width"));

  err = capture_stderr([&] { rc = run({}, f.dir / "t.png"); });
  CHECK(rc == 1);

  err = capture_stderr([&] { rc = run({f.inputs[0]}, f.inputs[0], "png"); });
  CHECK(rc == 1);
  CHECK_THAT(err, Contains("also an input"));

  std::vector<std::string> warnings;
  CHECK_THROWS_AS(load_viz_timeline({f.dir / "missing.jsonl"}, warnings), gt::Error);
}

TEST_CASE("viz renders 200k events quickly into small files", "[viz][unit]") {
  TempDir dir;
  // One worker running 200k short ops back to back, with gaps every 50 ops.
  std::string json;
  json.reserve(200000 * 150);
  const char* ops[] = {"add", "matmul", "relu", "sum", "reshape", "exp", "mul_", "softmax"};
  LogEvent e = ev(0, 0, "CLOCK", "WORKER 0", "Start", "", clock_details(3000.0, 5));
  json += format_json(e) + "\n";
  double t = 0;
  for (int i = 1; i <= 200000; ++i) {
    const double dur = 5 + (i % 8) * 3;
    t += dur * 1e-6 + (i % 50 == 0 ? 400e-6 : 1e-6);
    char details[128];
    std::snprintf(details, sizeof details, "session=1 in=%d out=%d shape=[64] dur_us=%.3f", i - 1,
                  i, dur);
    json += format_json(ev(t, i, "EXEC", "WORKER 0", "Op", ops[i % 8], details)) + "\n";
  }
  write_all(dir / "big.worker-0.jsonl", json);

  for (const char* ext : {"png", "svg", "html"}) {
    const auto t0 = std::chrono::steady_clock::now();
    REQUIRE(run({dir / "big.worker-0.jsonl"}, dir / (std::string("big.") + ext)) == 0);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    INFO(ext << " took " << s << " s");
    CHECK(s < 10.0);  // about 0.5 s in a release build
  }
  // Thin boxes are merged: the SVG holds about a rect per pixel column, not per event.
  CHECK(fs::file_size(dir / "big.svg") < 2'000'000);
  const auto png = read_png(dir / "big.png");
  REQUIRE(png);
  CHECK(png->near(kVizLaneRgb, 0) > 100);
}

TEST_CASE("viz HTML renders in headless chromium", "[viz][chromium]") {
  const auto chromium = find_on_path("chromium");
  if (!chromium) {
    WARN("chromium is not on PATH: skipping the browser check (CI installs it)");
    return;
  }
  Fixture f;
  const std::string html = f.dir / "t.html";
  REQUIRE(run(f.inputs, html) == 0);

  // A screenshot shows the lanes and the boxes drawn by the page's script.
  const std::string shot = f.dir / "shot.png";
  const std::string cmd = "cd '" + f.dir.path.string() + "' && timeout 60 '" + *chromium +
                          "' --headless --no-sandbox --disable-gpu --hide-scrollbars "
                          "--user-data-dir='" +
                          (f.dir / "profile") + "' --window-size=1400,700 --screenshot='" + shot +
                          "' 'file://" + html + "' >/dev/null 2>&1";
  REQUIRE(std::system(cmd.c_str()) == 0);
  const auto png = read_png(shot);
  REQUIRE(png);
  CHECK(png->width == 1400);
  CHECK(png->near(kVizLaneRgb) > 5000);
  CHECK(png->near(kVizLaneAltRgb) > 5000);
  CHECK(png->near(style_rgb(VizStyle::Linalg)) > 200);
  CHECK(png->near(style_rgb(VizStyle::Elementwise)) > 50);
  CHECK(png->near(style_rgb(VizStyle::Compiled)) > 20);

  // The page's self-test hovers the widest box and zooms in.
  const std::string dom = f.dir / "dom.html";
  const std::string cmd2 = "cd '" + f.dir.path.string() + "' && timeout 60 '" + *chromium +
                           "' --headless --no-sandbox --disable-gpu --user-data-dir='" +
                           (f.dir / "profile") + "' --window-size=1400,700 --dump-dom 'file://" +
                           html + "#selftest' > '" + dom + "' 2>/dev/null";
  REQUIRE(std::system(cmd2.c_str()) == 0);
  const std::string text = read_all(dom);
  const auto begin = text.rfind("<pre id=\"selftest\">");
  REQUIRE(begin != std::string::npos);
  const auto end = text.find("</pre>", begin);
  REQUIRE(end != std::string::npos);
  std::string result = text.substr(begin + 19, end - begin - 19);
  // --dump-dom writes the text node HTML-escaped.
  for (const auto& [from, to] : std::vector<std::pair<std::string, std::string>>{
           {"&lt;", "<"}, {"&gt;", ">"}, {"&quot;", "\""}, {"&amp;", "&"}}) {
    for (size_t p = result.find(from); p != std::string::npos; p = result.find(from, p)) {
      result.replace(p, from.size(), to);
      p += to.size();
    }
  }
  JsonParser parser(result);
  const auto j = parser.parse();
  INFO(result);
  REQUIRE(j);
  CHECK(j->at("lanes").num() == 7);
  // The widest box is the client's 30 ms wait.
  CHECK_THAT(j->at("tip").str(), Contains("CLIENT pid 111") && Contains("WAIT Fetch") &&
                                     Contains("30.000 ms") && Contains("req=7"));
  CHECK(j->at("zoom").num() > 1.2);
}

TEST_CASE("viz draws collectives between workers as boxes of their own", "[viz][unit]") {
  TempDir dir;
  const std::string w = "WORKER 1";
  const std::vector<std::string> inputs{write_log(
      dir / "run.worker-1.jsonl",
      {ev(0.0, 0, "CLOCK", w, "Start", "", clock_details(1000.0, 300)),
       ev(0.010, 1, "EXEC", w, "Collective", "all_reduce",
          "session=1 in=5 shape=[256,10] bytes=10240 dur_us=2000.000")},
      false)};
  std::vector<std::string> warnings;
  const VizTimeline t = load_viz_timeline(inputs, warnings);
  const VizItem* c = find_item(t, "EXEC", "all_reduce");
  REQUIRE(c != nullptr);
  CHECK(c->style == VizStyle::Collective);
  CHECK(c->end_s - c->start_s == Approx(0.002).margin(1e-9));
}
