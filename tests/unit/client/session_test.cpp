#include <chrono>
#include <thread>

#include <unistd.h>

#include <catch2/catch.hpp>

#include <gt/error.h>

#include "client/internal/session.h"
#include "common/status.h"
#include "fake_dispatcher.h"

using namespace gt::client;
using namespace std::chrono_literals;
using gt::test::FakeDispatcher;
using gt::wire::Instr;
using gt::wire::InstrKind;

namespace {

SessionOptions options_for(const FakeDispatcher& fake) {
  SessionOptions o;
  o.endpoint = fake.endpoint();
  o.name = "session-test";
  o.heartbeat_interval = 50ms;
  o.heartbeat_timeout = 2000ms;
  o.connect_timeout = 2000ms;
  o.batch_max_instructions = 1024;
  o.batch_max_delay = 10s;  // only sync points and the size bound flush
  return o;
}

Instr zeros(uint64_t id) {
  Instr in;
  in.op = gt::OpCode::Zeros;
  in.outputs = {id};
  in.ints = {2, 3};
  return in;
}

gt::wire::FailureInfo worker_failure(std::string message) {
  return gt::wire::failure(gt::Status::ExecutionFailed, std::move(message), 0, "zeros", 1);
}

}  // namespace

TEST_CASE("session handshake sends Hello and reads the Welcome", "[session][unit]") {
  FakeDispatcher fake;
  auto s = Session::start(options_for(fake));
  CHECK(s->session_id() == FakeDispatcher::kSession);
  CHECK(s->workers() == 1);
  CHECK(s->endpoint() == fake.endpoint());
  auto hello = fake.hello();
  REQUIRE(hello.has_value());
  CHECK(hello->role == gt::wire::Role::Client);
  CHECK(hello->name == "session-test");
  CHECK(hello->pid == ::getpid());
  CHECK(hello->min_workers == 1);
  CHECK(hello->version == gt::wire::kProtocolVersion);
  CHECK(s->new_id() == 1);  // ids start at 1
  CHECK(s->new_id() == 2);
}

TEST_CASE("session sends Bye at close", "[session][unit]") {
  FakeDispatcher fake;
  auto s = Session::start(options_for(fake));
  s->close();
  s->close();  // idempotent
  CHECK(s->closed());
  CHECK(fake.wait_for([&] { return fake.got_bye_locked(); }, 2s));
  CHECK_THROWS_AS(s->issue(zeros(1)), gt::Error);
  s->release(1);  // a no-op after close, never throws
}

TEST_CASE("session start rethrows the dispatcher's refusal", "[session][unit]") {
  FakeDispatcher fake;
  fake.refuse_hello(gt::wire::failure(gt::Status::VersionMismatch,
                                      "[dispatcher] protocol version 7 != 1"));
  CHECK_THROWS_AS(Session::start(options_for(fake)), gt::ProtocolError);
  FakeDispatcher fake2;
  fake2.refuse_hello(gt::wire::failure(gt::Status::NoWorkers, "[dispatcher] no workers"));
  CHECK_THROWS_WITH(Session::start(options_for(fake2)), Catch::Contains("no workers"));
}

TEST_CASE("session start times out naming the endpoint", "[session][unit]") {
  FakeDispatcher fake;
  fake.ignore_hello();
  auto o = options_for(fake);
  o.connect_timeout = 150ms;
  const auto t0 = std::chrono::steady_clock::now();
  try {
    Session::start(o);
    FAIL("no Welcome expected");
  } catch (const gt::TransportError& e) {
    CHECK_THAT(std::string(e.what()),
               Catch::Contains(fake.endpoint()) && Catch::Contains("no Welcome"));
  }
  CHECK(std::chrono::steady_clock::now() - t0 < 2s);
}

TEST_CASE("session rejects a malformed endpoint", "[session][unit]") {
  SessionOptions o;
  o.endpoint = "localhost:5555";
  CHECK_THROWS_AS(Session::start(o), std::invalid_argument);
}

TEST_CASE("session flushes the open batch at a sync point", "[session][unit]") {
  FakeDispatcher fake;
  auto s = Session::start(options_for(fake));
  s->issue(zeros(s->new_id()));
  s->issue(zeros(s->new_id()));
  s->issue(zeros(s->new_id()));
  s->synchronize();
  auto batches = fake.batches();
  REQUIRE(batches.size() == 1);
  REQUIRE(batches[0].size() == 4);
  CHECK(batches[0][0].outputs == std::vector<uint64_t>{1});
  CHECK(batches[0][2].outputs == std::vector<uint64_t>{3});
  CHECK(batches[0][3].kind == InstrKind::Sync);
  CHECK(batches[0][3].request != 0);
  CHECK(s->stats().instructions_sent == 4);
}

TEST_CASE("session seals batches at the size bound", "[session][unit]") {
  FakeDispatcher fake;
  auto o = options_for(fake);
  o.batch_max_instructions = 4;
  auto s = Session::start(o);
  for (int i = 0; i < 10; ++i) s->issue(zeros(s->new_id()));
  s->synchronize();
  auto batches = fake.batches();
  REQUIRE(batches.size() == 3);
  CHECK(batches[0].size() == 4);
  CHECK(batches[1].size() == 4);
  CHECK(batches[2].size() == 3);  // two ops and the Sync
}

TEST_CASE("session flushes a batch after the batch delay", "[session][unit]") {
  FakeDispatcher fake;
  auto o = options_for(fake);
  o.batch_max_delay = 1ms;
  auto s = Session::start(o);
  s->issue(zeros(s->new_id()));
  CHECK(fake.wait_for([&] { return fake.instruction_count_locked() == 1; }, 2s));
}

TEST_CASE("session sends released ids as one Free before the sync", "[session][unit]") {
  FakeDispatcher fake;
  auto s = Session::start(options_for(fake));
  const auto a = s->new_id(), b = s->new_id();
  s->issue(zeros(a));
  s->issue(zeros(b));
  s->release(a);
  s->release(b);
  s->synchronize();
  auto batches = fake.batches();
  REQUIRE(batches.size() == 1);
  REQUIRE(batches[0].size() == 4);
  CHECK(batches[0][2].kind == InstrKind::Sync);
  CHECK(batches[0][3].kind == InstrKind::Free);
  CHECK(batches[0][3].inputs == std::vector<uint64_t>{a, b});
}

TEST_CASE("session releases alone reach the dispatcher", "[session][unit]") {
  FakeDispatcher fake;
  auto o = options_for(fake);
  o.batch_max_delay = 1ms;
  auto s = Session::start(o);
  s->release(77);
  CHECK(fake.wait_for([&] { return fake.instruction_count_locked() == 1; }, 2s));
  auto in = fake.instructions();
  REQUIRE(in.size() == 1);
  CHECK(in[0].kind == InstrKind::Free);
  CHECK(in[0].inputs == std::vector<uint64_t>{77});
}

TEST_CASE("session rethrows the first sync error as RemoteError", "[session][unit]") {
  FakeDispatcher fake;
  auto s = Session::start(options_for(fake));
  fake.fail_next_sync({worker_failure("[worker 0] zeros failed: out of memory (inputs: )"),
                       worker_failure("[worker 0] add failed: second")});
  s->issue(zeros(s->new_id()));
  try {
    s->synchronize();
    FAIL("synchronize should throw");
  } catch (const gt::RemoteError& e) {
    CHECK_THAT(std::string(e.what()), Catch::StartsWith("[worker 0] zeros failed: out of memory") &&
                                          Catch::Contains("1 more failure"));
    CHECK(e.worker() == 0);
    CHECK(e.op() == "zeros");
    CHECK(e.code() == static_cast<int>(gt::Status::ExecutionFailed));
  }
  CHECK_NOTHROW(s->synchronize());  // errors are reported once
}

TEST_CASE("session rethrows an asynchronous error at the next sync", "[session][unit]") {
  FakeDispatcher fake;
  auto s = Session::start(options_for(fake));
  fake.send_async_error(gt::wire::failure(gt::Status::UnknownTensor,
                                          "[dispatcher] batch names unknown tensor 9"));
  // Heartbeats make the round trip; wait until the error has surely arrived.
  const auto before = s->stats().messages_received;
  for (int i = 0; i < 400 && s->stats().messages_received < before + 2; ++i) {
    std::this_thread::sleep_for(5ms);
  }
  CHECK_THROWS_WITH(s->synchronize(), Catch::Contains("unknown tensor 9"));
  CHECK_NOTHROW(s->synchronize());
}

TEST_CASE("session fetch returns data or rethrows the ErrorReply", "[session][unit]") {
  FakeDispatcher fake;
  auto s = Session::start(options_for(fake));
  const auto id = s->new_id();
  s->issue(zeros(id));
  FetchResult r = s->fetch(id);
  CHECK(r.dtype == gt::kFloat32);
  CHECK(r.shape == std::vector<int64_t>{2, 3});
  CHECK(r.data.size() == 24);

  const auto bad = s->new_id();
  s->issue(zeros(bad));
  const auto f = worker_failure("[worker 0] zeros failed: boom (inputs: )");
  fake.poison(bad, f);
  fake.fail_next_sync({f});
  CHECK_THROWS_AS(s->fetch(bad), gt::RemoteError);
  // The failure the fetch already reported is not reported again at the sync.
  CHECK_NOTHROW(s->synchronize());
}

TEST_CASE("session fails a sync quickly when the worker is lost", "[session][unit]") {
  FakeDispatcher fake;
  auto s = Session::start(options_for(fake));
  fake.error_next_sync(gt::wire::failure(gt::Status::WorkerLost,
                                         "[dispatcher] worker 0 lost: no heartbeat for 3000 ms",
                                         0));
  try {
    s->synchronize();
    FAIL("synchronize should throw");
  } catch (const gt::RemoteError& e) {
    CHECK(e.code() == static_cast<int>(gt::Status::WorkerLost));
    CHECK_THAT(std::string(e.what()), Catch::Contains("worker 0 lost"));
  }
}

TEST_CASE("session heartbeats while idle", "[session][unit]") {
  FakeDispatcher fake;
  auto o = options_for(fake);
  o.heartbeat_interval = 20ms;
  auto s = Session::start(o);
  CHECK(fake.wait_for([&] { return fake.heartbeats_locked() >= 3; }, 2s));
  // The client counts a heartbeat after sending it: the fake may see the third
  // one before the counter moves.
  CHECK(fake.wait_for([&] { return s->stats().heartbeats_sent >= 3; }, 2s));
}

TEST_CASE("session keeps a busy stream of ops alive with heartbeats", "[session][unit]") {
  // The dispatcher answers batches with nothing: a client that only streams
  // ops must still ask for heartbeats, or it would call the dispatcher silent.
  FakeDispatcher fake;
  auto o = options_for(fake);
  o.heartbeat_interval = 20ms;
  o.heartbeat_timeout = 150ms;
  o.batch_max_delay = 1ms;
  auto s = Session::start(o);
  const auto end = std::chrono::steady_clock::now() + 500ms;
  while (std::chrono::steady_clock::now() < end) {
    s->issue(zeros(s->new_id()));
    std::this_thread::sleep_for(2ms);
  }
  CHECK_NOTHROW(s->synchronize());
  CHECK(s->stats().heartbeats_sent >= 3);
}

TEST_CASE("session fails waiters when the dispatcher goes silent", "[session][unit]") {
  FakeDispatcher fake;
  auto o = options_for(fake);
  o.heartbeat_interval = 20ms;
  o.heartbeat_timeout = 200ms;
  auto s = Session::start(o);
  fake.set_silent(true);
  const auto t0 = std::chrono::steady_clock::now();
  try {
    s->synchronize();
    FAIL("synchronize should throw");
  } catch (const gt::TransportError& e) {
    CHECK_THAT(std::string(e.what()), Catch::Contains("dispatcher at " + fake.endpoint() +
                                                      " not responding for"));
  }
  CHECK(std::chrono::steady_clock::now() - t0 < 2s);
  // The session stays broken: later calls fail at once.
  CHECK_THROWS_AS(s->issue(zeros(s->new_id())), gt::TransportError);
  CHECK_THROWS_AS(s->fetch(1), gt::TransportError);
}

TEST_CASE("session close fails a waiting call", "[session][unit]") {
  FakeDispatcher fake;
  auto s = Session::start(options_for(fake));
  fake.set_silent(true);
  std::thread closer([&] {
    fake.wait_for([&] { return fake.batch_count_locked() >= 1; }, 2s);
    s->close();
  });
  CHECK_THROWS_AS(s->synchronize(), gt::Error);
  closer.join();
}

TEST_CASE("session is usable from several threads", "[session][unit]") {
  FakeDispatcher fake;
  auto o = options_for(fake);
  o.batch_max_instructions = 16;
  auto s = Session::start(o);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 250; ++i) {
        const auto id = s->new_id();
        s->issue(zeros(id));
        s->release(id);
      }
      s->synchronize();
    });
  }
  for (auto& t : threads) t.join();
  s->synchronize();
  size_t ops = 0, freed = 0;
  for (const auto& in : fake.instructions()) {
    if (in.kind == InstrKind::Op) ++ops;
    if (in.kind == InstrKind::Free) freed += in.inputs.size();
  }
  CHECK(ops == 1000);
  CHECK(freed == 1000);
}

TEST_CASE("session stats request follows the open batch and returns every entry",
          "[session][unit]") {
  FakeDispatcher fake;
  gt::wire::WorkerStatsInfo a, b;
  a.worker = 0;
  a.device = "cpu";
  a.session_tensors = 3;
  a.instructions = 9;
  b.worker = 1;
  b.device = "cuda:0";
  b.jit_enabled = true;
  b.jit_compiled = 2;
  fake.set_stats({a, b});
  auto s = Session::start(options_for(fake));
  s->issue(zeros(s->new_id()));
  s->issue(zeros(s->new_id()));
  s->release(1);
  const auto stats = s->worker_stats();
  REQUIRE(stats.size() == 2);
  CHECK(stats[0] == a);
  CHECK(stats[1] == b);
  // One batch (two ops and the Free) went out before the request.
  auto batches = fake.batches();
  REQUIRE(batches.size() == 1);
  REQUIRE(batches[0].size() == 3);
  CHECK(batches[0][2].kind == InstrKind::Free);
  CHECK(fake.stats_requests() == std::vector<size_t>{1});
  // With nothing open, the request goes alone.
  CHECK(s->worker_stats().size() == 2);
  CHECK(fake.stats_requests() == std::vector<size_t>{1, 1});
}

TEST_CASE("session stats fail with TransportError when the dispatcher goes silent",
          "[session][unit]") {
  FakeDispatcher fake;
  auto o = options_for(fake);
  o.heartbeat_interval = 20ms;
  o.heartbeat_timeout = 200ms;
  auto s = Session::start(o);
  fake.set_silent(true);
  CHECK_THROWS_AS(s->worker_stats(), gt::TransportError);
  CHECK_THROWS_AS(s->worker_stats(), gt::TransportError);
}
