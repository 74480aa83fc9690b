// Many clients on one cluster (issue 7): fair turns on a shared worker,
// sessions that cannot touch each other, a memory limit per client, and
// faults (a killed client, a killed worker, a stopped dispatcher) that only
// the clients they concern notice.

// LibTorch (through glog) defines CHECK too: include it before Catch so that
// Catch's CHECK wins.
#include "tests/integration/torch_compare.h"

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include <gt/gt.h>

#include "common/env.h"
#include "tests/support/cluster.h"
#include "tests/support/raw_peer.h"
#include "tests/support/temp_dir.h"

using namespace gt;
using gt::test::fetch_instr;
using gt::test::free_instr;
using gt::test::op;
using gt::test::RawPeer;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

// The dispatcher's index of the worker at position i of the cluster, from
// the worker's log ("registered worker=N").
int worker_index(const gt::test::TestCluster& c, int i) {
  const std::regex re("registered worker=(\\d+)");
  std::smatch m;
  const std::string log = c.worker_log(i);
  REQUIRE(std::regex_search(log, m, re));
  return std::stoi(m[1]);
}

// Polls stats() until `done` holds for them (true) or `limit` passes.
template <class Pred>
bool wait_stats(Pred done, std::chrono::milliseconds limit) {
  const auto deadline = Clock::now() + limit;
  for (;;) {
    if (done(gt::debug::stats())) return true;
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(50ms);
  }
}

uint64_t all_bytes(const gt::debug::Stats& s) {
  uint64_t b = 0;
  for (const auto& w : s.workers) b += w.tensor_bytes;
  return b;
}

}  // namespace

TEST_CASE("a client streaming a backlog does not hold up another client's step",
          "[multiclient][integration]") {
  gt::test::TestCluster cluster(1);
  // The busy client queues about a second of 512x512 matmuls on the worker
  // (its only thread), then asks for a sync.
  RawPeer busy(cluster.endpoint());
  const uint64_t session = busy.hello_client();
  busy.send(wire::encode_batch(session, 1, std::vector{op(OpCode::Ones, {1}, {}, {512, 512})}));
  constexpr uint64_t kBatches = 200;
  for (uint64_t k = 2; k < 2 + kBatches; ++k) {
    std::vector<wire::Instr> b{op(OpCode::Matmul, {k}, {1, 1})};
    if (k > 2) b.push_back(free_instr({k - 1}));
    busy.send(wire::encode_batch(session, k, b));
  }
  wire::Instr sync;
  sync.kind = wire::InstrKind::Sync;
  sync.request = 7;
  busy.send(wire::encode_batch(session, kBatches + 2, std::span(&sync, 1)));

  // Another client's step runs between two of the busy client's batches:
  // it is answered while the backlog is still running (in arrival order it
  // would wait for all of it).
  gt::connect(cluster.endpoint());
  CHECK(gt::ones({3}).sum().item<float>() == 3.f);
  const auto early = busy.try_recv(0ms);
  CHECK_FALSE(early.has_value());

  // The backlog still completes, in order and correctly.
  busy.s.set(zmq::sockopt::rcvtimeo, 120000);
  auto reply = busy.recv();
  const auto* r = wire::decode(reply[0])->body_as_SyncReply();
  REQUIRE(r != nullptr);
  CHECK(r->request() == 7);
  CHECK((r->errors() == nullptr || r->errors()->size() == 0));
  busy.send(wire::encode_batch(session, kBatches + 3,
                               std::vector{op(OpCode::Sum, {9000}, {kBatches + 1}, {0}),
                                           fetch_instr(9000, 8)}));
  reply = busy.recv();
  const auto* f = wire::decode(reply[0])->body_as_FetchReply();
  REQUIRE(f != nullptr);
  float total = 0;
  std::memcpy(&total, reply[1].data(), sizeof total);
  CHECK(total == 512.f * 512.f * 512.f);  // ones @ ones: every element 512
  gt::shutdown();
}

TEST_CASE("a client cannot read or free another client's tensors by guessing ids",
          "[multiclient][integration]") {
  gt::test::TestCluster cluster(1);
  RawPeer owner(cluster.endpoint()), thief(cluster.endpoint());
  const uint64_t mine = owner.hello_client();
  const uint64_t other = thief.hello_client();
  REQUIRE(mine != other);
  owner.send(wire::encode_batch(mine, 1, std::vector{op(OpCode::Ones, {1}, {}, {4})}));
  CHECK(owner.sync(mine, 1).empty());

  // The thief names the owner's id, and even stamps the owner's session into
  // its header: the dispatcher answers for the thief's own session.
  thief.send(wire::encode_batch(mine, 1, std::vector{fetch_instr(1, 5)}));
  auto reply = thief.recv();
  const wire::FailureInfo e = gt::test::expect_error(reply);
  CHECK(e.code == Status::UnknownTensor);
  CHECK_THAT(e.message, Catch::Contains("tensor 1 is not live in this session"));
  thief.send(wire::encode_batch(mine, 2, std::vector{free_instr({1})}));
  CHECK(thief.sync(other, 6).empty());

  // The owner's tensor is untouched.
  owner.send(wire::encode_batch(mine, 2, std::vector{fetch_instr(1, 9)}));
  reply = owner.recv();
  REQUIRE(wire::decode(reply[0])->body_as_FetchReply() != nullptr);
  REQUIRE(reply[1].size() == 4 * sizeof(float));
  const auto* v = reply[1].data<float>();
  CHECK((v[0] == 1.f && v[3] == 1.f));
}

TEST_CASE("a session over its memory limit gets a clear error; other clients go on",
          "[multiclient][integration]") {
  gt::test::TestCluster cluster(1, {{"GT_SESSION_MEMORY_LIMIT", "4000000"}});
  RawPeer other(cluster.endpoint());
  const uint64_t other_session = other.hello_client();

  gt::connect(cluster.endpoint());
  gt::Tensor a = gt::zeros({500000});  // 2 MB
  gt::synchronize();
  const auto s = gt::debug::stats();
  REQUIRE(s.workers.size() == 1);
  CHECK(s.workers[0].session_bytes == 2000000);
  {
    gt::Tensor b = gt::zeros({600000});  // 2.4 MB more: over 4 MB
    try {
      gt::synchronize();
      FAIL("the allocation over the limit should fail");
    } catch (const gt::RemoteError& e) {
      CHECK_THAT(std::string(e.what()),
                 Catch::Contains("out of memory for this session") &&
                     Catch::Contains("2000000 bytes") && Catch::Contains("2400000 more") &&
                     Catch::Contains("4000000 bytes per session (GT_SESSION_MEMORY_LIMIT)"));
    }
  }
  // Another client on the same worker still has its own 4 MB.
  other.send(wire::encode_batch(other_session, 1, std::vector{op(OpCode::Zeros, {1}, {}, {900000})}));
  CHECK(other.sync(other_session, 1).empty());

  // Freeing makes room again (the executor recounts what is live). The
  // client sends frees at the end of a batch: the sync sends this one.
  a = gt::Tensor();
  gt::synchronize();
  gt::Tensor c = gt::ones({900000});
  CHECK(c.sum().item<float>() == 900000.f);
  gt::shutdown();
}

TEST_CASE("16 client processes with mixed workloads all get correct results",
          "[multiclient][integration]") {
  // Two workers, so sessions are spread and each worker interleaves eight
  // clients. Every client checks each of its values against a reference it
  // computes itself (mixed_client_program.cpp): training with autograd and
  // SGD, a pipelined elementwise stream, uploads and downloads, reductions.
  gt::test::TestCluster cluster(2);
  REQUIRE(cluster.wait_worker_log(0, "registered worker=", 5s));
  REQUIRE(cluster.wait_worker_log(1, "registered worker=", 5s));
  gt::connect(cluster.endpoint());
  const uint64_t baseline = all_bytes(gt::debug::stats());

  constexpr int kClients = 16;
  constexpr int kRounds = 10;
  gt::test::TempDir dir("gt-mixed-clients");
  std::vector<pid_t> pids;
  for (int i = 0; i < kClients; ++i) {
    const pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      const int fd = ::open(dir.file("client-" + std::to_string(i)).c_str(),
                            O_WRONLY | O_CREAT | O_TRUNC, 0600);
      if (fd < 0) _exit(127);
      dup2(fd, STDOUT_FILENO);
      dup2(fd, STDERR_FILENO);
      setenv("GT_DISPATCHER", cluster.endpoint().c_str(), 1);
      const std::string index = std::to_string(i), rounds = std::to_string(kRounds);
      execl(GT_MIXED_CLIENT_PROGRAM, GT_MIXED_CLIENT_PROGRAM, index.c_str(), rounds.c_str(),
            static_cast<char*>(nullptr));
      _exit(127);
    }
    pids.push_back(child);
  }
  for (int i = 0; i < kClients; ++i) {
    const int code = gt::test::wait_exit(pids[static_cast<size_t>(i)], 240s);
    std::ifstream in(dir.file("client-" + std::to_string(i)));
    std::stringstream said;
    said << in.rdbuf();
    INFO("client " << i << " exited with " << code << " and said: " << said.str());
    CHECK(code == 0);
    CHECK_THAT(said.str(), Catch::StartsWith("ok " + std::to_string(i) + " steps=" +
                                             std::to_string(4 * kRounds)));
  }
  // Each client ended its session: the workers hold what they held before.
  CHECK(wait_stats([&](const auto& s) { return all_bytes(s) == baseline; }, 10s));
  // Both workers took part.
  const auto stats = gt::debug::stats();
  REQUIRE(stats.workers.size() == 2);
  for (const auto& w : stats.workers) CHECK(w.instructions > 1000);
  gt::shutdown();
}

TEST_CASE("a killed client's tensors are freed and the workers' memory returns to baseline",
          "[multiclient][integration]") {
  gt::test::TestCluster cluster(1, {{"GT_HEARTBEAT_TIMEOUT_MS", "1000"}});
  gt::connect(cluster.endpoint());
  const uint64_t baseline = all_bytes(gt::debug::stats());

  int out[2];
  REQUIRE(pipe(out) == 0);
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    dup2(out[1], STDOUT_FILENO);
    close(out[0]);
    setenv("GT_DISPATCHER", cluster.endpoint().c_str(), 1);
    execl(GT_STREAM_CLIENT_PROGRAM, GT_STREAM_CLIENT_PROGRAM, static_cast<char*>(nullptr));
    _exit(127);
  }
  close(out[1]);
  std::string said;
  char buf[64];
  for (ssize_t n; said.find("ready") == std::string::npos && (n = read(out[0], buf, sizeof buf)) > 0;) {
    said.append(buf, static_cast<size_t>(n));
  }
  close(out[0]);
  REQUIRE(said.find("ready") != std::string::npos);
  // The streaming client holds at least its 5 x 4 MiB.
  CHECK(wait_stats([&](const auto& s) { return all_bytes(s) >= baseline + (20u << 20); }, 5s));
  std::this_thread::sleep_for(200ms);  // mid-stream
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);

  // Its session goes silent and is closed after twice the heartbeat timeout.
  // (Only this program's session is left, if its stats made one there.)
  CHECK(wait_stats(
      [&](const auto& s) { return all_bytes(s) == baseline && s.workers[0].sessions <= 1; }, 10s));
  const auto after = gt::debug::stats();
  INFO("bytes " << all_bytes(after) << " baseline " << baseline << " sessions "
                << after.workers[0].sessions);
  CHECK(all_bytes(after) == baseline);
  gt::shutdown();
}

TEST_CASE("a killed worker fails only its own clients, and a new worker can join",
          "[multiclient][integration]") {
  gt::test::TestCluster cluster(2, {{"GT_HEARTBEAT_TIMEOUT_MS", "1000"}});
  // Sessions go to the worker with the fewest, once both have registered:
  // the first to index 0, the second to index 1.
  REQUIRE(cluster.wait_worker_log(0, "registered worker=", 5s));
  REQUIRE(cluster.wait_worker_log(1, "registered worker=", 5s));
  RawPeer first(cluster.endpoint()), second(cluster.endpoint());
  const uint64_t s1 = first.hello_client();
  first.send(wire::encode_batch(s1, 1, std::vector{op(OpCode::Ones, {1}, {}, {8})}));
  CHECK(first.sync(s1, 1).empty());
  const uint64_t s2 = second.hello_client();
  second.send(wire::encode_batch(s2, 1, std::vector{op(OpCode::Ones, {1}, {}, {8})}));
  CHECK(second.sync(s2, 1).empty());
  // Kill the worker holding the second session.
  const int victim_index = 1;
  const int victim = worker_index(cluster, 0) == victim_index ? 0 : 1;
  cluster.kill_worker(victim, SIGKILL);

  const auto t0 = Clock::now();
  second.send(wire::encode_batch(s2, 2, std::vector{op(OpCode::Neg, {2}, {1}), fetch_instr(2, 2)}));
  auto reply = second.recv();
  const wire::FailureInfo lost = gt::test::expect_error(reply);
  CHECK(Clock::now() - t0 < 5s);
  CHECK(lost.code == Status::WorkerLost);
  CHECK_THAT(lost.message, Catch::Contains("worker " + std::to_string(victim_index)) &&
                               Catch::Contains("lost"));

  // The other client does not notice.
  first.send(wire::encode_batch(s1, 2, std::vector{op(OpCode::Neg, {2}, {1}), fetch_instr(2, 2)}));
  reply = first.recv();
  REQUIRE(wire::decode(reply[0])->body_as_FetchReply() != nullptr);
  CHECK(reply[1].data<float>()[0] == -1.f);

  // A restarted worker registers again and serves a new client.
  cluster.add_worker();
  gt::connect(cluster.endpoint());
  CHECK(wait_stats([](const auto& s) { return s.workers.size() == 2; }, 10s));
  CHECK((gt::arange(5) * 2).sum().item<int64_t>() == 20);
  gt::shutdown();
}

TEST_CASE("a dispatcher stopped by SIGTERM tells its clients and workers",
          "[multiclient][integration]") {
  gt::test::TestCluster cluster(1);
  // A long heartbeat timeout: only the dispatcher's Bye can end the wait early.
  ScopedEnv timeout("GT_HEARTBEAT_TIMEOUT_MS", "20000");
  gt::connect(cluster.endpoint());
  gt::Tensor x = gt::ones({4});
  CHECK(x.sum().item<float>() == 4.f);
  kill(cluster.dispatcher_pid(), SIGTERM);
  CHECK(cluster.wait_worker_log(0, "the dispatcher shut down", 5s));
  const auto t0 = Clock::now();
  try {
    // Waits until the Bye arrives (or fails at once if it already did).
    for (int i = 0; i < 100; ++i) {
      (x * 2.0).sum().item<float>();
      std::this_thread::sleep_for(50ms);
    }
    FAIL("calls after the dispatcher stopped should fail");
  } catch (const gt::TransportError& e) {
    CHECK_THAT(std::string(e.what()), Catch::Contains("shut down"));
  }
  CHECK(Clock::now() - t0 < 5s);
  CHECK(gt::test::wait_exit(cluster.dispatcher_pid(), 10s) == 0);
  gt::shutdown();
}
