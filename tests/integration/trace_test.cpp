// The instruction log and the event stream through real processes (issue 5):
// every component writes its log, the lines parse back, sequence numbers
// increase per component, the JIT's events appear; `gt trace` records a live
// cluster for the requested time and stops by itself.

#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gt/gt.h>

#include "common/env.h"
#include "common/instruction_log.h"
#include "tests/support/cluster.h"
#include "tools/monitor.h"
#include "tests/support/temp_dir.h"

namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

using gt::test::TempDir;

std::vector<std::string> read_lines(const fs::path& p) {
  std::ifstream in(p);
  std::vector<std::string> out;
  std::string line;
  while (std::getline(in, line)) out.push_back(line);
  return out;
}

// Every event of every .jsonl file in `dir`, by file name; each line must parse.
std::map<std::string, std::vector<gt::LogEvent>> read_json_logs(const fs::path& dir) {
  std::map<std::string, std::vector<gt::LogEvent>> out;
  for (const auto& f : fs::directory_iterator(dir)) {
    if (f.path().extension() != ".jsonl") continue;
    auto& events = out[f.path().filename().string()];
    for (const std::string& line : read_lines(f.path())) {
      auto e = gt::parse_json(line);
      INFO(f.path() << ": " << line);
      REQUIRE(e);
      events.push_back(*e);
    }
  }
  return out;
}

// A small training-like loop the JIT detects (elementwise ops repeated).
void hot_loop(int iterations) {
  gt::Tensor x = gt::ones({64, 32});
  const gt::Tensor b = gt::full({32}, 0.5);
  for (int i = 0; i < iterations; ++i) x = ((x * 0.5 + b).relu() - 0.25).sigmoid();
  (void)x.to_vector<float>();
}


}  // namespace

TEST_CASE("GT_INSTRUCTION_LOG: every component writes lines that parse back",
          "[trace][integration]") {
  gt::shutdown();  // this case's own session, with the log on
  TempDir dir;
  TempDir cache;
  const std::string base = (dir.path / "run").string();
  {
    gt::test::TestCluster cluster(
        1, {{"GT_INSTRUCTION_LOG", base},
            {"GT_AUTO_COMPILE", "1"},
            {"GT_HOTPATH_THRESHOLD", "3"},
            {"GT_COMPILE_CACHE_DIR", cache.path.string()}});
    gt::ScopedEnv log("GT_INSTRUCTION_LOG", base.c_str());
    gt::connect(cluster.endpoint());
    hot_loop(10);
    // Both variants compiled (docs/jit.md): the next loop runs compiled units.
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    while (gt::debug::stats().jit().compiled < 2 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(20ms);
    }
    hot_loop(20);
    const auto jit = gt::debug::stats().jit();
    INFO("jit: detected " << jit.detected << " compiled " << jit.compiled << " runs " << jit.runs
                          << " fallbacks " << jit.fallbacks << " dropped " << jit.dropped);
    CHECK(jit.runs > 0);
    // LibTorch has no CPU matmul for float16: only the worker rejects it.
    const gt::Tensor h = gt::full({2, 2}, 1.0, gt::kFloat16);
    const gt::Tensor bad = h.matmul(h);
    CHECK_THROWS(gt::synchronize());
    gt::shutdown();
    cluster.terminate();  // SIGTERM: the processes write what they queued as they exit
  }

  const auto logs = read_json_logs(dir.path);
  std::set<std::string> components;
  std::map<std::string, std::multiset<std::string>> events;  // component -> "EVENT Kind"
  for (const auto& [file, list] : logs) {
    INFO(file);
    REQUIRE_FALSE(list.empty());
    CHECK(list.front().event == "CLOCK");  // each log starts with its clock
    uint64_t seq = 0;
    double t = 0;
    for (size_t i = 0; i < list.size(); ++i) {
      const gt::LogEvent& e = list[i];
      CHECK(e.component == list.front().component);
      if (i > 0) {
        CHECK(e.seq == seq + 1);  // monotonic, none missing
        CHECK(e.elapsed_s >= t);
      }
      seq = e.seq;
      t = e.elapsed_s;
      components.insert(e.component);
      events[e.component].insert(e.event + " " + e.kind);
    }
    // The text form has the same events, in the same order.
    fs::path text = dir.path / file;
    text.replace_extension(".log");
    const auto lines = read_lines(text);
    REQUIRE(lines.size() == list.size());
    for (size_t i = 0; i < lines.size(); ++i) {
      auto e = gt::parse_text(lines[i]);
      REQUIRE(e);
      CHECK(e->seq == list[i].seq);
      CHECK(e->event == list[i].event);
      CHECK(e->details == list[i].details);
    }
  }
  CHECK(components == std::set<std::string>{"CLIENT", "DISPATCHER", "WORKER 0"});
  CHECK(events["CLIENT"].count("SEND Batch") > 0);
  CHECK(events["CLIENT"].count("WAIT Fetch") > 0);
  CHECK(events["DISPATCHER"].count("RECV Batch") > 0);
  CHECK(events["DISPATCHER"].count("SEND Batch") > 0);
  CHECK(events["DISPATCHER"].count("JOIN Worker") == 1);
  CHECK(events["DISPATCHER"].count("OPEN Session") >= 1);
  CHECK(events["WORKER 0"].count("RECV Batch") > 0);
  CHECK(events["WORKER 0"].count("EXEC Op") > 20);
  CHECK(events["WORKER 0"].count("FETCH Fetch") > 0);
  CHECK(events["WORKER 0"].count("HOTPATH Detected") > 0);
  CHECK(events["WORKER 0"].count("COMPILE Starting") > 0);
  CHECK(events["WORKER 0"].count("COMPILE Done") > 0);
  CHECK(events["WORKER 0"].count("EXEC Compiled") > 0);
  CHECK(events["WORKER 0"].count("ERROR Op") == 1);
  // An EXEC line names the op and carries the ids, the shape and the duration.
  bool found = false;
  for (const auto& [file, list] : logs) {
    for (const gt::LogEvent& e : list) {
      if (e.event != "EXEC" || e.op != "sigmoid") continue;
      found = true;
      CHECK(gt::detail_value(e.details, "shape") == "[64,32]");
      CHECK(gt::detail_value(e.details, "dur_us"));
      CHECK(gt::detail_value(e.details, "in"));
      CHECK(gt::detail_value(e.details, "out"));
    }
  }
  CHECK(found);
}

TEST_CASE("gt trace records a live cluster for the requested time and stops by itself",
          "[trace][integration]") {
  gt::shutdown();
  TempDir dir;
  gt::test::TestCluster cluster(2);
  gt::connect(cluster.endpoint());
  std::atomic<bool> stop{false};
  std::string load_error;  // what the load thread threw, checked after join
  std::thread load([&] {
    try {
      while (!stop.load()) {
        gt::Tensor x = gt::ones({16, 16});
        for (int i = 0; i < 50; ++i) x = (x * 1.01 + 0.5).relu();
        (void)x.to_vector<float>();
      }
    } catch (const std::exception& e) {
      load_error = e.what();
    }
  });
  const auto t0 = std::chrono::steady_clock::now();
  const pid_t pid = ::fork();
  if (pid == 0) {
    const std::string gt = gt::test::gt_executable();
    const std::string out = (dir.path / "stdout").string();
    std::freopen(out.c_str(), "w", stdout);
    std::freopen((dir.path / "stderr").c_str(), "w", stderr);
    ::execl(gt.c_str(), gt.c_str(), "trace", "-s", "1.5", "--dir", dir.path.c_str(),
            "--endpoint", cluster.endpoint().c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  const int code = gt::test::wait_exit(pid, 30s);
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  stop.store(true);
  load.join();
  CHECK(load_error.empty());
  INFO(read_lines(dir.path / "stderr").size());
  for (const auto& l : read_lines(dir.path / "stderr")) UNSCOPED_INFO(l);
  REQUIRE(code == 0);
  CHECK(took >= 1.5);
  CHECK(took < 15);  // stopped by itself, well before the test's limit

  std::vector<fs::path> traces;
  for (const auto& f : fs::directory_iterator(dir.path)) {
    if (f.path().filename().string().rfind("trace_", 0) == 0) traces.push_back(f.path());
  }
  REQUIRE(traces.size() == 2);  // trace_<timestamp>.log and .jsonl
  fs::path json = traces[0].extension() == ".jsonl" ? traces[0] : traces[1];
  fs::path text = traces[0].extension() == ".log" ? traces[0] : traces[1];
  const auto jlines = read_lines(json);
  const auto tlines = read_lines(text);
  REQUIRE(jlines.size() == tlines.size());
  std::map<std::string, std::multiset<std::string>> events;
  for (size_t i = 0; i < jlines.size(); ++i) {
    auto e = gt::parse_json(jlines[i]);
    REQUIRE(e);
    auto t = gt::parse_text(tlines[i]);
    REQUIRE(t);
    CHECK(t->seq == e->seq);
    events[e->component].insert(e->event);
  }
  // The dispatcher and the worker the session runs on both streamed.
  CHECK(events["DISPATCHER"].count("CLOCK") >= 1);
  CHECK(events["DISPATCHER"].count("RECV") > 0);
  CHECK(events["DISPATCHER"].count("STATS") >= 2);
  int executing = 0;
  for (const char* w : {"WORKER 0", "WORKER 1"}) {
    CHECK(events[w].count("STATS") >= 2);  // both workers, four a second
    executing += events[w].count("EXEC") > 0;
  }
  CHECK(executing == 1);
  // The stream is off again once the tool has gone: no STATS are produced.
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  bool off = false;
  while (!off && std::chrono::steady_clock::now() < deadline) {
    off = cluster.dispatcher_log().find("event stream: events off stats off") != std::string::npos;
    std::this_thread::sleep_for(50ms);
  }
  CHECK(off);
  gt::shutdown();
}

TEST_CASE("gt trace names a dispatcher that does not answer", "[trace][integration]") {
  TempDir dir;
  const std::string gt = gt::test::gt_executable();
  const std::string cmd = gt + " trace -s 1 --dir " + dir.path.string() +
                          " --endpoint tcp://127.0.0.1:1 2>" + (dir.path / "err").string();
  const int status = std::system(cmd.c_str());
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 1);
  const auto err = read_lines(dir.path / "err");
  REQUIRE_FALSE(err.empty());
  CHECK_THAT(err[0], Catch::Contains("tcp://127.0.0.1:1") && Catch::Contains("did not answer"));
  const std::string bad = gt + " trace -s 1 --dir /nonexistent-dir 2>" + (dir.path / "err2").string();
  CHECK(WEXITSTATUS(std::system(bad.c_str())) == 1);
  CHECK_THAT(read_lines(dir.path / "err2")[0], Catch::Contains("/nonexistent-dir"));
}
