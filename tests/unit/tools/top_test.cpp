// gt top's model and screen: synthetic STATS events in, rendered text out.

#include <catch2/catch.hpp>

#include <sstream>
#include <string>
#include <vector>

#include "common/instruction_log.h"
#include "tools/top.h"

namespace {

using gt::tools::TopModel;

gt::LogEvent stats(const std::string& component, const std::string& details) {
  gt::LogEvent e;
  e.event = "STATS";
  e.component = component;
  e.kind = component == "DISPATCHER" ? "Dispatcher" : "Worker";
  e.details = details;
  return e;
}

std::vector<std::string> lines_of(const std::string& screen) {
  std::vector<std::string> lines;
  std::istringstream in(screen);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// The first line that starts with `prefix`; empty when none does.
std::string line_starting(const std::string& screen, const std::string& prefix) {
  for (const std::string& line : lines_of(screen)) {
    if (line.rfind(prefix, 0) == 0) return line;
  }
  return {};
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

const std::string kWorker0 =
    "device=cpu sessions=2 tensors=120 bytes=1048576 queue=3 instructions=12345 "
    "ops_per_s=4000.0 busy=0.830 util=Linalg:0.300,Elementwise:0.400 "
    "chains=abc123def456:12:2.31:kept,0123456789ab:5:-:trial";
const std::string kWorker1 =
    "device=cuda:0 sessions=1 tensors=7 bytes=3221225472 queue=0 instructions=99 "
    "ops_per_s=12.5 busy=0.050 util=Reduction:0.050,Shape:0.001 chains=";
const std::string kDispatcher =
    "workers=2 clients=2 messages=1234 instructions=56789 "
    "clients_list=3:train.py:4242,4:notebook:on:host:77";

TopModel cluster_model() {
  TopModel model("tcp://127.0.0.1:5555");
  model.add(stats("WORKER 0", kWorker0), 10.0);
  model.add(stats("WORKER 1", kWorker1), 10.0);
  model.add(stats("DISPATCHER", kDispatcher), 10.0);
  return model;
}

}  // namespace

TEST_CASE("top format_bytes uses binary units", "[top][unit]") {
  CHECK(gt::tools::format_bytes(0) == "0 B");
  CHECK(gt::tools::format_bytes(1023) == "1023 B");
  CHECK(gt::tools::format_bytes(1024) == "1.0 KiB");
  CHECK(gt::tools::format_bytes(1536) == "1.5 KiB");
  CHECK(gt::tools::format_bytes(1048576) == "1.0 MiB");
  CHECK(gt::tools::format_bytes(3221225472ULL) == "3.0 GiB");
  CHECK(gt::tools::format_bytes(5ULL << 40) == "5.0 TiB");
}

TEST_CASE("top header names the endpoint, counts and total ops/s", "[top][unit]") {
  TopModel model = cluster_model();
  model.set_clock_text("12:34:56");
  const std::string screen = model.render(200, 60, 10.5);
  const std::string header = lines_of(screen).at(0);
  CHECK(contains(header, "tcp://127.0.0.1:5555"));
  CHECK(contains(header, "workers 2"));
  CHECK(contains(header, "clients 2"));
  CHECK(contains(header, "ops/s 4012"));  // 4000 + 12.5
  CHECK(contains(header, "12:34:56"));
  const std::string dispatcher = line_starting(screen, "dispatcher:");
  CHECK(contains(dispatcher, "messages 1234"));
  CHECK(contains(dispatcher, "instructions 56789"));
}

TEST_CASE("top shows one row per worker with its counters", "[top][unit]") {
  const std::string screen = cluster_model().render(200, 60, 10.5);
  const std::string titles = line_starting(screen, "WORKER  ");
  CHECK(contains(titles, "OPS/S"));
  CHECK(contains(titles, "MEMORY"));

  const std::string w0 = line_starting(screen, "WORKER 0");
  CHECK(contains(w0, "cpu"));
  CHECK(contains(w0, "4000"));
  CHECK(contains(w0, "[########  ]  83%"));
  CHECK(contains(w0, "1.0 MiB"));
  CHECK(contains(w0, "120"));
  // Largest share first.
  CHECK(contains(w0, "Elementwise 40% Linalg 30%"));

  const std::string w1 = line_starting(screen, "WORKER 1");
  CHECK(contains(w1, "cuda:0"));
  CHECK(contains(w1, "12.5"));
  CHECK(contains(w1, "3.0 GiB"));
  CHECK(contains(w1, "Reduction 5%"));
  CHECK(contains(w1, "Shape <1%"));  // a share too small to round to 1%
  // Columns line up: memory ends in the same column on both rows.
  CHECK(w0.find("MiB") + 3 == w1.find("GiB") + 3);
}

TEST_CASE("top lists compiled chains with their speedup and state", "[top][unit]") {
  const std::string screen = cluster_model().render(200, 60, 10.5);
  CHECK(contains(screen, "CHAINS (compiled hot paths): 2"));
  std::string kept, trial;
  for (const std::string& line : lines_of(screen)) {
    if (contains(line, "abc123def456")) kept = line;
    if (contains(line, "0123456789ab")) trial = line;
  }
  CHECK(kept.rfind("WORKER 0", 0) == 0);
  CHECK(contains(kept, "12"));
  CHECK(contains(kept, "2.31x"));
  CHECK(contains(kept, "kept"));
  // No speedup before the trial ends.
  CHECK(contains(trial, " -  "));
  CHECK(contains(trial, "trial"));
}

TEST_CASE("top lists the connected clients", "[top][unit]") {
  const std::string screen = cluster_model().render(200, 60, 10.5);
  CHECK(contains(screen, "CLIENTS: 2"));
  const auto lines = lines_of(screen);
  bool train = false, notebook = false;
  for (const std::string& line : lines) {
    if (contains(line, "train.py") && contains(line, "4242") && contains(line, "3")) train = true;
    // A ':' in the name stays in the name: the pid is after the last one.
    if (contains(line, "notebook:on:host") && contains(line, "77")) notebook = true;
  }
  CHECK(train);
  CHECK(notebook);
}

TEST_CASE("top marks a worker whose STATS stopped as stale", "[top][unit]") {
  TopModel model = cluster_model();
  model.add(stats("WORKER 1", kWorker1), 12.0);  // worker 1 keeps reporting
  model.add(stats("DISPATCHER", kDispatcher), 12.0);
  const std::string fresh = model.render(200, 60, 11.9);
  CHECK_FALSE(contains(fresh, "stale"));

  const std::string screen = model.render(200, 60, 13.25);
  const std::string w0 = line_starting(screen, "WORKER 0");
  CHECK(contains(w0, "stale 3.2s"));
  CHECK(contains(w0, "no STATS for 3.2s"));
  CHECK_FALSE(contains(w0, "4000"));  // its rate is not current
  CHECK(contains(w0, "1.0 MiB"));     // what it last held still shows
  CHECK_FALSE(contains(line_starting(screen, "WORKER 1"), "stale"));
  // The total counts live workers only.
  CHECK(contains(lines_of(screen).at(0), "ops/s 12.5"));

  // A fresh STATS brings it back.
  model.add(stats("WORKER 0", kWorker0), 13.3);
  CHECK_FALSE(contains(line_starting(model.render(200, 60, 13.4), "WORKER 0"), "stale"));

  // A silent dispatcher is called out too.
  CHECK(contains(model.render(200, 60, 20.0), "dispatcher: no STATS for 8.0s (stale)"));
}

TEST_CASE("top fits a narrow and short terminal: lines are cut, never wrapped", "[top][unit]") {
  const TopModel model = cluster_model();
  for (const int cols : {1, 20, 40, 79}) {
    const std::string screen = model.render(cols, 60, 10.5);
    for (const std::string& line : lines_of(screen)) CHECK(line.size() <= size_t(cols));
  }
  // Cut at 40 columns, then the trailing space goes.
  CHECK(lines_of(model.render(40, 60, 10.5)).at(0) == "gt top  tcp://127.0.0.1:5555  workers 2");
  for (const int rows : {1, 3, 5, 8, 12}) {
    const auto lines = lines_of(model.render(80, rows, 10.5));
    CHECK(lines.size() <= size_t(rows));
  }
  // Tall enough: everything shows.
  const std::string all = model.render(200, 60, 10.5);
  CHECK(contains(all, "notebook:on:host"));
  CHECK(model.render(0, 10, 10.5).empty());
  CHECK(model.render(10, 0, 10.5).empty());
}

TEST_CASE("top keeps the clients in view when there are many chains", "[top][unit]") {
  TopModel model("ep");
  std::string chains = "chains=";
  for (int i = 0; i < 50; ++i) {
    if (i > 0) chains += ',';
    chains += std::to_string(100000 + i) + ":4:1.5:kept";
  }
  model.add(stats("WORKER 0", "device=cpu " + chains), 1.0);
  model.add(stats("DISPATCHER", "workers=1 clients=1 clients_list=9:trainer:123"), 1.0);
  const std::string screen = model.render(100, 20, 1.0);
  const auto lines = lines_of(screen);
  CHECK(lines.size() <= 20);
  CHECK(contains(screen, "CHAINS (compiled hot paths): 50"));
  CHECK(contains(screen, "more"));
  CHECK(contains(screen, "trainer"));
  CHECK(contains(screen, "WORKER 0  cpu"));
}

TEST_CASE("top shows '-' for missing keys and waits for the first STATS", "[top][unit]") {
  TopModel model("ep");
  const std::string waiting = model.render(120, 30, 0.0);
  CHECK(contains(waiting, "waiting for STATS"));
  CHECK(contains(waiting, "(no worker STATS yet)"));
  CHECK(contains(waiting, "CHAINS (compiled hot paths): none"));
  CHECK(contains(waiting, "CLIENTS: none"));

  model.add(stats("WORKER 3", "device=cpu"), 1.0);
  const std::string w3 = line_starting(model.render(120, 30, 1.0), "WORKER 3");
  CHECK(w3 == "WORKER 3  cpu         -  -         -       -        -     -  -");
}

TEST_CASE("top tolerates malformed and unknown input", "[top][unit]") {
  TopModel model("ep");
  // Not STATS, not a known component, a bad worker number: ignored.
  gt::LogEvent exec = stats("WORKER 0", "device=gpu");
  exec.event = "EXEC";
  model.add(exec, 1.0);
  model.add(stats("CLIENT", "device=x"), 1.0);
  model.add(stats("WORKER x", "device=x"), 1.0);
  model.add(stats("WORKER -1", "device=x"), 1.0);
  model.add(stats("WORKER ", "device=x"), 1.0);
  model.add(stats("WORKER 99999999999999999999999", "device=x"), 1.0);
  CHECK(model.worker_count() == 0);

  model.add(stats("WORKER 0",
                  "device=cpu\x1b[2J sessions=two tensors= bytes=-5 queue=1e3 instructions=9x "
                  "ops_per_s=nan busy=inf util=Elementwise:x,:0.5,Linalg,,Shape:-1 "
                  "chains=::::,x,:7,abc:1:fast:kept bogus_key=1 noequals future=a:b:c"),
            1.0);
  model.add(stats("DISPATCHER", "workers=abc clients=-1 messages= clients_list=,:,::,5,1:a"), 1.0);
  model.add(stats("WORKER 1", ""), 1.0);
  model.add(stats("WORKER 2", "util= chains="), 1.0);
  REQUIRE(model.worker_count() == 3);

  const std::string screen = model.render(200, 60, 1.5);
  // Control characters from the wire never reach the terminal.
  for (const char c : screen) {
    if (c != '\n') CHECK((c >= 0x20 && c < 0x7f));
  }
  const std::string w0 = line_starting(screen, "WORKER 0");
  CHECK(contains(w0, "cpu?[2J"));
  CHECK(contains(w0, "  -  "));
  // util had nothing readable: "-" rather than "idle".
  CHECK(w0.substr(w0.size() - 1) == "-");
  CHECK(contains(line_starting(screen, "WORKER 2"), "idle"));
  CHECK(contains(screen, "abc"));  // the readable parts of a chain show
  CHECK(contains(screen, "CHAINS (compiled hot paths): 4"));
  CHECK(contains(screen, "CLIENTS: 4"));  // the empty entry is skipped

  // Narrow and short renders of the same garbage are safe too.
  for (int cols = 0; cols < 50; cols += 7) {
    for (int rows = 0; rows < 20; rows += 3) (void)model.render(cols, rows, 5.0);
  }
}
