#include <catch2/catch.hpp>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include <gt/error.h>

#include "common/instruction_log.h"
#include "common/env.h"
#include "tests/support/temp_dir.h"

using namespace gt;

using gt::ScopedEnv;

namespace {

using gt::test::TempDir;

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}


LogEvent example_event() {
  LogEvent e;
  e.elapsed_s = 1.5;
  e.seq = 150;
  e.event = "COMPILE";
  e.component = "WORKER 0";
  e.kind = "Starting";
  e.details = "sequence=abc123def456";
  return e;
}

}  // namespace

TEST_CASE("instruction log text line matches the documented example", "[instruction_log][unit]") {
  const LogEvent e = example_event();
  CHECK(format_text(e) ==
        "  1.500s | #0150 | COMPILE    | WORKER 0 | Starting  | sequence=abc123def456");

  LogEvent exec = e;
  exec.elapsed_s = 12.25;
  exec.seq = 123456;
  exec.event = "EXEC";
  exec.component = "CLIENT";
  exec.kind = "Op";
  exec.op = "matmul";
  exec.details = "";
  CHECK(format_text(exec) == " 12.250s | #123456 | EXEC       | CLIENT   | Op/matmul");

  auto back = parse_text(format_text(e));
  REQUIRE(back);
  CHECK(*back == e);
  auto back_exec = parse_text(format_text(exec) + "\n");
  REQUIRE(back_exec);
  CHECK(*back_exec == exec);

  LogEvent bare;  // every string empty
  bare.elapsed_s = 1e300;
  CHECK(format_text(bare) == " 1e+300s | #0000 |            |          | ");
  auto back_bare = parse_text(format_text(bare));
  REQUIRE(back_bare);
  CHECK(*back_bare == bare);
}

TEST_CASE("instruction log text line escapes newlines and backslashes", "[instruction_log][unit]") {
  LogEvent e = example_event();
  e.details = "msg=line1\nline2 path=C:\\x tab=\t bell=\x07";
  const std::string line = format_text(e);
  CHECK(line.find('\n') == std::string::npos);
  CHECK(line.find("line1\\nline2") != std::string::npos);
  auto back = parse_text(line);
  REQUIRE(back);
  CHECK(*back == e);
  CHECK_FALSE(parse_text("garbage"));
  CHECK_FALSE(parse_text("  1.500s | 0150 | COMPILE | WORKER 0 | x"));
  CHECK_FALSE(parse_text("  1.500 | #0150 | COMPILE | WORKER 0 | x"));
  CHECK_FALSE(parse_text("  1.500s | #0150 | COMPILE | WORKER 0 | x | bad\\q"));
  CHECK_FALSE(parse_text("  1.500s | #0150 | COMPILE | WORKER 0 | x | bad\\x4"));
  CHECK_FALSE(parse_text(""));
}

TEST_CASE("instruction log JSON round-trips awkward strings", "[instruction_log][unit]") {
  LogEvent e;
  e.elapsed_s = 0.1 + 0.2;  // needs all 17 digits
  e.seq = 18446744073709551615ull;
  e.event = "ERROR";
  e.component = "DISPATCHER";
  e.kind = "Op \"quoted\"";
  e.op = "back\\slash/";
  e.details = std::string("nl=\n cr=\r tab=\t nul=") + '\0' + " del=\x7f" +
              " unicode=na\xc3\xafve \xc2\xb5s \xe6\xbc\xa2\xe5\xad\x97 \xf0\x9f\x98\x80";
  const std::string line = format_json(e);
  CHECK(line.find('\n') == std::string::npos);
  CHECK(line.find("\\\"quoted\\\"") != std::string::npos);
  CHECK(line.find("\\u0000") != std::string::npos);
  auto back = parse_json(line);
  REQUIRE(back);
  CHECK(*back == e);
  CHECK(parse_json(line + "\n"));
  CHECK(parse_json(line + "\r\n"));

  // The documented example's JSON form.
  CHECK(format_json(example_event()) ==
        R"({"elapsed_s":1.5,"seq":150,"event":"COMPILE","component":"WORKER 0",)"
        R"("kind":"Starting","op":"","details":"sequence=abc123def456"})");
}

TEST_CASE("instruction log JSON reads escapes, any order and unknown members",
          "[instruction_log][unit]") {
  auto e = parse_json(
      R"( { "seq" : 7 , "op":"a\/b", "event":"EXEC","component":"WORKER 1","kind":"Op",)"
      R"("details":"\u00e9\ud83d\ude00\n","elapsed_s":2e-3,"extra":[1],"x":1} )");
  CHECK_FALSE(e);  // arrays are not scalars
  e = parse_json(
      R"( { "seq" : 7 , "op":"a\/b", "event":"EXEC","component":"WORKER 1","kind":"Op",)"
      R"("details":"\u00e9\ud83d\ude00\n","elapsed_s":2e-3,"extra":null,"more":"s","n":-1.5e2} )");
  REQUIRE(e);
  CHECK(e->seq == 7);
  CHECK(e->op == "a/b");
  CHECK(e->details == "\xc3\xa9\xf0\x9f\x98\x80\n");
  CHECK(e->elapsed_s == 0.002);
}

TEST_CASE("instruction log JSON writes invalid UTF-8 as U+FFFD", "[instruction_log][unit]") {
  LogEvent e = example_event();
  e.details = "bad=\xff\xc3 end";
  auto back = parse_json(format_json(e));
  REQUIRE(back);
  CHECK(back->details == "bad=\xef\xbf\xbd\xef\xbf\xbd end");
}

TEST_CASE("instruction log rejects malformed JSON lines", "[instruction_log][unit]") {
  const std::string good = format_json(example_event());
  REQUIRE(parse_json(good));
  // Every truncation of a valid line is rejected.
  for (size_t n = 0; n < good.size(); ++n) {
    INFO("prefix of " << n << " bytes");
    CHECK_FALSE(parse_json(std::string_view(good).substr(0, n)));
  }
  const char* bad[] = {
      "",
      "garbage",
      "[]",
      "{}",
      "null",
      "{\"elapsed_s\":1.5}",
      // wrong types
      R"({"elapsed_s":"1.5","seq":1,"event":"E","component":"C","kind":"K","op":"","details":""})",
      R"({"elapsed_s":1.5,"seq":"1","event":"E","component":"C","kind":"K","op":"","details":""})",
      R"({"elapsed_s":1.5,"seq":1,"event":2,"component":"C","kind":"K","op":"","details":""})",
      R"({"elapsed_s":1.5,"seq":1,"event":"E","component":null,"kind":"K","op":"","details":""})",
      R"({"elapsed_s":1.5,"seq":1,"event":"E","component":"C","kind":true,"op":"","details":""})",
      // bad seq values
      R"({"elapsed_s":1.5,"seq":-1,"event":"E","component":"C","kind":"K","op":"","details":""})",
      R"({"elapsed_s":1.5,"seq":1.5,"event":"E","component":"C","kind":"K","op":"","details":""})",
      R"({"elapsed_s":1.5,"seq":1e3,"event":"E","component":"C","kind":"K","op":"","details":""})",
      R"({"elapsed_s":1.5,"seq":99999999999999999999,"event":"E","component":"C","kind":"K","op":"","details":""})",
      // missing member
      R"({"elapsed_s":1.5,"seq":1,"event":"E","component":"C","kind":"K","op":""})",
      // duplicate member
      R"({"elapsed_s":1.5,"seq":1,"seq":2,"event":"E","component":"C","kind":"K","op":"","details":""})",
      // bad escapes and raw control characters
      R"({"elapsed_s":1.5,"seq":1,"event":"\q","component":"C","kind":"K","op":"","details":""})",
      R"({"elapsed_s":1.5,"seq":1,"event":"\u12","component":"C","kind":"K","op":"","details":""})",
      R"({"elapsed_s":1.5,"seq":1,"event":"\udc00","component":"C","kind":"K","op":"","details":""})",
      R"({"elapsed_s":1.5,"seq":1,"event":"\ud800x","component":"C","kind":"K","op":"","details":""})",
      "{\"elapsed_s\":1.5,\"seq\":1,\"event\":\"a\nb\",\"component\":\"C\",\"kind\":\"K\","
      "\"op\":\"\",\"details\":\"\"}",
      // numbers JSON does not allow
      R"({"elapsed_s":01.5,"seq":1,"event":"E","component":"C","kind":"K","op":"","details":""})",
      R"({"elapsed_s":.5,"seq":1,"event":"E","component":"C","kind":"K","op":"","details":""})",
      R"({"elapsed_s":1.,"seq":1,"event":"E","component":"C","kind":"K","op":"","details":""})",
      R"({"elapsed_s":1e999,"seq":1,"event":"E","component":"C","kind":"K","op":"","details":""})",
      R"({"elapsed_s":nan,"seq":1,"event":"E","component":"C","kind":"K","op":"","details":""})",
      // syntax
      R"({"elapsed_s":1.5,"seq":1,"event":"E","component":"C","kind":"K","op":"","details":"",})",
      R"({"elapsed_s":1.5 "seq":1,"event":"E","component":"C","kind":"K","op":"","details":""})",
      R"({"elapsed_s":1.5,"seq":1,"event":"E","component":"C","kind":"K","op":"","details":""} x)",
      R"({"elapsed_s":1.5,"seq":1,"event":"E","component":"C","kind":"K","op":"","details":""}})",
  };
  for (const char* line : bad) {
    INFO(line);
    CHECK_FALSE(parse_json(line));
  }
  // Random bytes never crash the reader.
  uint64_t state = 12345;
  for (int k = 0; k < 2000; ++k) {
    std::string s = good;
    for (int flips = 0; flips < 3; ++flips) {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      s[(state >> 33) % s.size()] = static_cast<char>(state >> 56);
    }
    (void)parse_json(s);
    (void)parse_text(s);
  }
}

TEST_CASE("instruction log component names make file tags", "[instruction_log][unit]") {
  CHECK(instruction_log_file_tag("WORKER 0") == "worker-0");
  CHECK(instruction_log_file_tag("DISPATCHER") == "dispatcher");
  CHECK(instruction_log_file_tag("Client/x") == "client-x");
}

TEST_CASE("instruction log writes both files with monotonic sequence numbers",
          "[instruction_log][unit]") {
  TempDir dir;
  const std::string base = (dir.path / "trace").string();
  constexpr int kThreads = 4;
  constexpr int kPerThread = 5000;  // several automatic flushes
  std::string text_path, json_path;
  {
    InstructionLog log("WORKER 0", base);
    text_path = log.text_path();
    json_path = log.json_path();
    CHECK(text_path == base + ".worker-0.log");
    CHECK(json_path == base + ".worker-0.jsonl");
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&log, t] {
        for (int i = 0; i < kPerThread; ++i) {
          log.record("EXEC", "Op", "add",
                     "thread=" + std::to_string(t) + " i=" + std::to_string(i));
        }
      });
    }
    for (auto& th : threads) th.join();
    log.flush();
    log.record("FREE", "Free", "", "last=1");  // written by the destructor
  }
  const auto json = read_lines(json_path);
  const auto text = read_lines(text_path);
  REQUIRE(json.size() == kThreads * kPerThread + 2);  // the CLOCK event first
  REQUIRE(text.size() == json.size());
  CHECK(parse_json(json[0])->event == "CLOCK");
  CHECK(gt::detail_value(parse_json(json[0])->details, "unix_s"));
  std::map<int, int> last_i;
  double last_t = -1;
  for (size_t k = 0; k < json.size(); ++k) {
    auto e = parse_json(json[k]);
    REQUIRE(e);
    CHECK(e->seq == k);  // every seq once, in file order
    CHECK(e->elapsed_s >= last_t);
    last_t = e->elapsed_s;
    CHECK(e->component == "WORKER 0");
    auto t = parse_text(text[k]);
    REQUIRE(t);
    CHECK(t->seq == e->seq);
    CHECK(t->details == e->details);
    if (e->event != "EXEC") continue;
    int thread = -1, i = -1;
    REQUIRE(std::sscanf(e->details.c_str(), "thread=%d i=%d", &thread, &i) == 2);
    auto [it, fresh] = last_i.try_emplace(thread, -1);
    CHECK(i == it->second + 1);  // each thread's events in its order
    it->second = i;
  }
  CHECK(parse_json(json.back())->event == "FREE");
  CHECK(last_i.size() == kThreads);
}

TEST_CASE("instruction log appends to existing files", "[instruction_log][unit]") {
  TempDir dir;
  const std::string base = (dir.path / "run").string();
  { InstructionLog("CLIENT", base).record("SEND", "Batch", "", "n=1"); }
  { InstructionLog("CLIENT", base).record("SEND", "Batch", "", "n=2"); }
  const auto lines = read_lines(base + ".client.jsonl");
  REQUIRE(lines.size() == 4);  // each run starts with its CLOCK event
  CHECK(parse_json(lines[0])->event == "CLOCK");
  CHECK(parse_json(lines[1])->details == "n=1");
  CHECK(parse_json(lines[2])->event == "CLOCK");
  CHECK(parse_json(lines[2])->seq == 0);  // sequence numbers are per log object
  CHECK(parse_json(lines[3])->details == "n=2");
}

TEST_CASE("instruction log is off without GT_INSTRUCTION_LOG", "[instruction_log][unit]") {
  {
    ScopedEnv unset("GT_INSTRUCTION_LOG", nullptr);
    CHECK(InstructionLog::from_env("CLIENT") == nullptr);
  }
  {
    ScopedEnv empty("GT_INSTRUCTION_LOG", "");
    CHECK(InstructionLog::from_env("CLIENT") == nullptr);
  }
  TempDir dir;
  const std::string base = (dir.path / "env").string();
  ScopedEnv set("GT_INSTRUCTION_LOG", base.c_str());
  auto log = InstructionLog::from_env("DISPATCHER");
  REQUIRE(log != nullptr);
  CHECK(log->text_path() == base + ".dispatcher.log");
}

TEST_CASE("instruction log names the path it cannot open", "[instruction_log][unit]") {
  CHECK_THROWS_AS(InstructionLog("WORKER 3", "/nonexistent-dir/x"), Error);
  CHECK_THROWS_WITH(InstructionLog("WORKER 3", "/nonexistent-dir/x"),
                    Catch::Contains("/nonexistent-dir/x.worker-3.log") &&
                        Catch::Contains("No such file or directory"));
  ScopedEnv set("GT_INSTRUCTION_LOG", "/nonexistent-dir/x");
  CHECK_THROWS_AS(InstructionLog::from_env("CLIENT"), Error);
}

TEST_CASE("instruction log record cost", "[instruction_log][.][bench]") {
  TempDir dir;
  InstructionLog log("WORKER 0", (dir.path / "bench").string());
  constexpr int kRecords = 20000;  // ~5 MB of files (ctest runs this case too)
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < kRecords; ++i) {
    log.record("EXEC", "Op", "matmul", "out=1234 in=1232,1233 shape=[64,64] bytes=16384");
  }
  log.flush();
  const double ns =
      std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count() /
      kRecords;
  WARN("instruction log: " << ns << " ns per record() (both forms, writes included)");
  CHECK(ns > 0);
}

TEST_CASE("instruction log record_raw cost on the recording thread", "[instruction_log][.][bench]") {
  TempDir dir;
  InstructionLog log("WORKER 0", (dir.path / "bench").string());
  constexpr int kRecords = 200000;
  gt::RawEvent e;
  e.event = "EXEC";
  e.kind = "Op";
  e.op = "matmul";
  e.session = 3;
  e.n_in = 2;
  e.in[0] = 1232;
  e.in[1] = 1233;
  e.n_out = 1;
  e.out[0] = 1234;
  e.ndim = 2;
  e.shape[0] = e.shape[1] = 64;
  e.dur_ns = 12345;
  // Bursts at the rate of a busy worker (~400k events/s), so the writer
  // keeps up as it does in a real run; only the recording loops are timed.
  double recording_ns = 0;
  constexpr int kBurst = 10000;
  for (int b = 0; b < kRecords / kBurst; ++b) {
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < kBurst; ++i) log.record_raw(e);
    recording_ns +=
        std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count();
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  const double ns = recording_ns / kRecords;
  // The writer's side: a queue of events formatted and written by flush().
  log.flush();
  const auto q0 = std::chrono::steady_clock::now();
  for (int i = 0; i < kBurst; ++i) log.record_raw(e);
  const auto q1 = std::chrono::steady_clock::now();
  log.flush();
  const double drain_ns =
      std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - q1).count() /
      kBurst;
  const double queue_ns =
      std::chrono::duration<double, std::nano>(q1 - q0).count() / kBurst;
  WARN("instruction log: " << drain_ns << " ns per raw event to format both lines and write "
                           << "them (queued in " << queue_ns << " ns each)");
  const auto f0 = std::chrono::steady_clock::now();
  log.flush();
  const double format_ns =
      std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - f0).count() /
      kRecords;
  WARN("instruction log: " << ns << " ns per record_raw() on the caller, " << format_ns
                           << " ns per event left to format and write at flush");
  CHECK(ns > 0);
}

TEST_CASE("instruction log raw events format their details", "[instruction_log][unit]") {
  gt::RawEvent e;
  e.event = "EXEC";
  e.kind = "Op";
  e.op = "cat";
  e.session = 7;
  e.n_in = 6;
  for (int i = 0; i < 4; ++i) e.in[i] = 10 + i;
  e.n_out = 1;
  e.out[0] = 99;
  e.ndim = 0;
  e.dur_ns = 1234567;
  CHECK(gt::raw_details(e) == "session=7 in=10,11,12,13,... out=99 shape=[] dur_us=1234.567");
  gt::RawEvent b;
  b.n = 120;
  b.bytes = 4096;
  b.worker = 0;
  b.req = 5;
  b.dur_ns = 7;
  CHECK(gt::raw_details(b) == "n=120 bytes=4096 req=5 worker=0 dur_us=0.007");
  CHECK(gt::raw_details(gt::RawEvent{}).empty());
}

TEST_CASE("instruction log writes raw events that parse back", "[instruction_log][unit]") {
  TempDir dir;
  const std::string base = (dir.path / "raw").string();
  std::vector<gt::RawEvent> sent;
  std::string json_path, text_path;
  {
    InstructionLog log("WORKER 12", base);
    json_path = log.json_path();
    text_path = log.text_path();
    for (int i = 0; i < 300; ++i) {
      gt::RawEvent e;
      e.event = i % 3 == 0 ? "EXEC" : (i % 3 == 1 ? "RECV" : "FREE");
      e.kind = i % 3 == 0 ? "Op" : (i % 3 == 1 ? "Batch" : "Free");
      e.op = i % 3 == 0 ? "matmul" : "";
      e.session = static_cast<uint64_t>(i % 5);
      e.n_in = static_cast<uint16_t>(i % 7);
      for (int k = 0; k < gt::RawEvent::kMaxIds; ++k) e.in[k] = 1000000000000ull + i + k;
      e.n_out = static_cast<uint16_t>(i % 2);
      e.out[0] = static_cast<uint64_t>(i);
      e.ndim = static_cast<int16_t>(i % 9 - 1);
      for (int k = 0; k < gt::RawEvent::kMaxDims; ++k) e.shape[k] = -k + i;
      e.n = i % 4 == 0 ? -1 : i;
      e.bytes = i % 3 == 0 ? -1 : int64_t{1} << 40;
      e.req = static_cast<uint64_t>(i % 2 ? 0 : i);
      e.worker = i % 2 ? -1 : 3;
      e.dur_ns = i % 5 == 0 ? -1 : int64_t{i} * 123457;
      log.record_raw(e);
      sent.push_back(e);
    }
  }
  const auto json = read_lines(json_path);
  const auto text = read_lines(text_path);
  REQUIRE(json.size() == sent.size() + 1);  // CLOCK first
  REQUIRE(text.size() == json.size());
  double last = 0;
  for (size_t i = 0; i < sent.size(); ++i) {
    auto j = parse_json(json[i + 1]);
    auto t = parse_text(text[i + 1]);
    REQUIRE(j);
    REQUIRE(t);
    CHECK(j->event == sent[i].event);
    CHECK(j->kind == sent[i].kind);
    CHECK(j->op == sent[i].op);
    CHECK(j->component == "WORKER 12");
    CHECK(j->details == gt::raw_details(sent[i]));
    CHECK(j->seq == i + 1);
    CHECK(j->elapsed_s >= last);
    last = j->elapsed_s;
    // The text form is the same event, its time rounded to the millisecond.
    CHECK(t->event == j->event);
    CHECK(t->kind == j->kind);
    CHECK(t->op == j->op);
    CHECK(t->details == j->details);
    CHECK(t->seq == j->seq);
    CHECK(std::abs(t->elapsed_s - j->elapsed_s) <= 0.0005 + 1e-9);
  }
}

TEST_CASE("instruction log tap gets JSON chunks with stats apart", "[instruction_log][unit]") {
  InstructionLog log("WORKER 1", "");  // no files: a tap only
  CHECK_FALSE(log.has_files());
  CHECK_FALSE(log.enabled());
  std::mutex m;
  std::string events, stats;
  log.set_tap([&](InstructionLog::TapChunk&& c) {
    std::lock_guard lock(m);
    events += c.events;
    stats += c.stats;
  });
  CHECK(log.enabled());
  gt::RawEvent e;
  e.event = "EXEC";
  e.kind = "Op";
  e.op = "add";
  e.dur_ns = 1000;
  log.record_raw(e);
  log.record("STATS", "Worker", "", "device=cpu busy=0.5");
  log.flush();
  std::lock_guard lock(m);
  std::vector<gt::LogEvent> got;
  size_t pos = 0;
  while (pos < events.size()) {
    const size_t nl = events.find('\n', pos);
    REQUIRE(nl != std::string::npos);
    auto ev = parse_json(std::string_view(events).substr(pos, nl - pos));
    REQUIRE(ev);
    got.push_back(*ev);
    pos = nl + 1;
  }
  // set_tap records a CLOCK (the constructor's may come too if not yet written).
  REQUIRE(got.size() >= 2);
  CHECK(got.front().event == "CLOCK");
  CHECK(got.back().event == "EXEC");
  CHECK(got.back().details == "dur_us=1.000");
  auto st = parse_json(std::string_view(stats).substr(0, stats.size() - 1));
  REQUIRE(st);
  CHECK(st->details == "device=cpu busy=0.5");
  CHECK(st->seq > got.back().seq);
  log.set_tap({});
  CHECK_FALSE(log.enabled());
}

TEST_CASE("instruction log details split into key=value fields", "[instruction_log][unit]") {
  const auto f = gt::split_details("session=3  in=1,2 shape=[] flag what=bad input: x=1 y");
  REQUIRE(f.size() == 5);
  CHECK(f[0] == std::pair<std::string_view, std::string_view>("session", "3"));
  CHECK(f[1].second == "1,2");
  CHECK(f[2].second == "[]");
  CHECK(f[3] == std::pair<std::string_view, std::string_view>("flag", ""));
  CHECK(f[4] == std::pair<std::string_view, std::string_view>("what", "bad input: x=1 y"));
  CHECK(gt::detail_value("a=1 why=gone away b=2", "why") == "gone away b=2");
  CHECK(gt::detail_value("a=1 b=2", "b") == "2");
  CHECK_FALSE(gt::detail_value("a=1 b=2", "c"));
  CHECK(gt::split_details("").empty());
}
