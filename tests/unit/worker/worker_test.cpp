// The worker's IO thread against a fake dispatcher (a ROUTER socket in the
// test): handshake, batches, replies, heartbeats, re-registration, shutdown.

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include <gt/error.h>

#include "common/env.h"
#include "common/logging.h"
#include "common/transport.h"
#include "tests/unit/worker/worker_test_support.h"
#include "worker/worker.h"

namespace gt::worker::test {
namespace {

using namespace std::chrono_literals;

// Short liveness timers for this binary; env() reads them once, at the first
// worker's start, so every test here sets the same values first.
void fast_timers() {
  setenv("GT_HEARTBEAT_INTERVAL_MS", "50", 1);
  setenv("GT_HEARTBEAT_TIMEOUT_MS", "400", 1);
  setenv("GT_CONNECT_TIMEOUT_MS", "1200", 1);
  setenv("GT_LOG_LEVEL", "error", 1);  // run_worker_main configures logging
  REQUIRE(env().heartbeat_timeout_ms == 400);
  make_logger("worker")->set_level(spdlog::level::err);  // lifecycle lines off
}

struct FakeDispatcher {
  zmq::context_t ctx;
  zmq::socket_t router{ctx, zmq::socket_type::router};
  std::string endpoint;

  FakeDispatcher() {
    configure_socket(router);
    router.bind("tcp://127.0.0.1:*");
    endpoint = router.get(zmq::sockopt::last_endpoint);
  }

  struct Received {
    zmq::message_t identity;
    Frames frames;  // header + data frames
    const wire::Message* msg() { return wire::decode(frames[0]); }
  };

  /// Next message whose body is not a Heartbeat (answered when `answer`).
  std::optional<Received> next(std::chrono::milliseconds timeout = 2000ms,
                               bool answer_heartbeats = true) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      zmq::pollitem_t item{router.handle(), 0, ZMQ_POLLIN, 0};
      zmq::poll(&item, 1, 20ms);
      auto frames = recv_frames(router, true);
      if (!frames) continue;
      Received r;
      r.identity = std::move((*frames)[0]);
      for (size_t i = 1; i < frames->size(); ++i) r.frames.push_back(std::move((*frames)[i]));
      if (r.msg()->body_type() == wire::Body::Heartbeat) {
        if (answer_heartbeats) send(r.identity, wire::encode_heartbeat(0));
        continue;
      }
      return r;
    }
    return std::nullopt;
  }

  void send(const zmq::message_t& identity, zmq::message_t header, Frames data = {}) {
    Frames frames;
    frames.emplace_back(identity.data(), identity.size());
    frames.push_back(std::move(header));
    for (auto& d : data) frames.push_back(std::move(d));
    REQUIRE(send_frames(router, frames));
  }
};

WorkerOptions options(std::string dispatcher, std::string device = "cpu", int threads = 0,
                      std::string name = {}) {
  WorkerOptions o;
  o.dispatcher = std::move(dispatcher);
  o.device = std::move(device);
  o.threads = threads;
  o.name = std::move(name);
  return o;
}

template <typename Pred>
bool eventually(Pred pred, std::chrono::milliseconds timeout = 2000ms) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return pred();
}

TEST_CASE("worker validates its options", "[worker][unit]") {
  const std::string endpoint = "tcp://127.0.0.1:5555";
  CHECK_THROWS_WITH(Worker(options(endpoint, "cuda:0")),
                    "[worker] device cuda:0 requested but this gt worker's LibTorch has no "
                    "CUDA support");
  CHECK_THROWS_AS(Worker(options(endpoint, "gpu")), std::invalid_argument);
  CHECK_THROWS_AS(Worker(options(endpoint, "cuda:x")), std::invalid_argument);
  CHECK_THROWS_AS(Worker(options("localhost:5555")), std::invalid_argument);
  CHECK_THROWS_AS(Worker(options(endpoint, "cpu", -1)), std::invalid_argument);
  CHECK_NOTHROW(check_device("cpu"));
  Worker w(options(endpoint));
  CHECK(w.index() == -1);
  CHECK_FALSE(w.registered());
  CHECK(w.options().name == "worker-" + std::to_string(getpid()));
}

TEST_CASE("worker registers, runs batches and answers fetches", "[worker][unit]") {
  fast_timers();
  FakeDispatcher d;
  Worker w(options(d.endpoint, "cpu", 1, "test-worker"));
  w.start();

  auto hello = d.next();
  REQUIRE(hello);
  const auto* h = hello->msg()->body_as_Hello();
  REQUIRE(h != nullptr);
  CHECK(h->version() == wire::kProtocolVersion);
  CHECK(h->role() == wire::Role::Worker);
  CHECK(h->device()->str() == "cpu");
  CHECK(h->capacity_bytes() > 0);
  CHECK(h->pid() == getpid());
  CHECK(h->name()->str() == "test-worker");

  d.send(hello->identity, wire::encode_welcome(0, 2, 1));
  REQUIRE(eventually([&] { return w.index() == 2; }));
  CHECK(w.registered());

  // A batch with a data frame, then a fetch, a bad op, a sync.
  const at::Tensor src = at::arange(8, at::kFloat);
  Instr put = op(OpCode::FromData, {1}, {}, {8});
  put.payload = 0;
  Frames data;
  data.push_back(bytes_of(src));
  const std::vector<Instr> instrs{put, op(OpCode::MulScalar, {2}, {1}, {}, {2.0}), fetch(2, 41),
                                  op(OpCode::Neg, {3}, {99}), sync_instr(42)};
  d.send(hello->identity, wire::encode_batch(5, 1, instrs), std::move(data));

  auto fetched = d.next();
  REQUIRE(fetched);
  CHECK(fetched->msg()->session() == 5);
  const auto* fr = fetched->msg()->body_as_FetchReply();
  REQUIRE(fr != nullptr);
  CHECK(fr->request() == 41);
  REQUIRE(fetched->frames.size() == 2);
  const at::Tensor want = src * 2;
  REQUIRE(fetched->frames[1].size() == 32);
  CHECK(std::memcmp(fetched->frames[1].data(), want.data_ptr(), 32) == 0);

  auto synced = d.next();
  REQUIRE(synced);
  const auto* sr = synced->msg()->body_as_SyncReply();
  REQUIRE(sr != nullptr);
  CHECK(sr->request() == 42);
  REQUIRE(sr->errors()->size() == 1);
  CHECK_THAT(sr->errors()->Get(0)->message()->str(), Catch::StartsWith("[worker 2] neg failed"));

  SECTION("a malformed message gets an error reply and the worker keeps serving") {
    d.send(hello->identity, zmq::message_t(std::string("garbage")));
    auto err = d.next();
    REQUIRE(err);
    REQUIRE(err->msg()->body_as_ErrorReply() != nullptr);
    CHECK(err->msg()->body_as_ErrorReply()->error()->code() ==
          static_cast<uint16_t>(Status::Malformed));
    d.send(hello->identity, wire::encode_batch(5, 2, std::vector<Instr>{fetch(1, 43)}));
    auto again = d.next();
    REQUIRE(again);
    CHECK(again->msg()->body_as_FetchReply() != nullptr);
  }
  SECTION("bye drops the session") {
    d.send(hello->identity, wire::encode_bye(5));
    d.send(hello->identity, wire::encode_batch(5, 2, std::vector<Instr>{fetch(1, 44)}));
    auto err = d.next();
    REQUIRE(err);
    REQUIRE(err->msg()->body_as_ErrorReply() != nullptr);
    CHECK(err->msg()->body_as_ErrorReply()->error()->code() ==
          static_cast<uint16_t>(Status::UnknownTensor));
  }

  const auto t0 = std::chrono::steady_clock::now();
  w.stop();
  w.stop();  // idempotent
  CHECK_NOTHROW(w.wait());
  CHECK(std::chrono::steady_clock::now() - t0 < 1s);
  CHECK_FALSE(w.registered());
}

// Sends a StatsRequest for `session` and returns the worker's one entry.
wire::WorkerStatsInfo ask_stats(FakeDispatcher& d, const zmq::message_t& identity,
                                uint64_t session, uint64_t request) {
  d.send(identity, wire::encode_stats_request(session, request));
  auto reply = d.next();
  REQUIRE(reply);
  CHECK(reply->msg()->session() == session);
  const auto* r = reply->msg()->body_as_StatsReply();
  REQUIRE(r != nullptr);
  CHECK(r->request() == request);
  REQUIRE(r->workers() != nullptr);
  REQUIRE(r->workers()->size() == 1);
  return wire::to_worker_stats(r->workers()->Get(0));
}

TEST_CASE("worker answers a stats request after the batches before it", "[worker][unit]") {
  fast_timers();
  unsetenv("GT_COMPILE");
  unsetenv("GT_AUTO_COMPILE");
  FakeDispatcher d;
  Worker w(options(d.endpoint, "cpu", 1));
  w.start();
  auto hello = d.next();
  REQUIRE(hello);
  d.send(hello->identity, wire::encode_welcome(0, 3, 1));
  REQUIRE(eventually([&] { return w.index() == 3; }));

  // Nothing ran yet: no sessions, no tensors.
  auto s0 = ask_stats(d, hello->identity, 5, 1);
  CHECK(s0.worker == 3);
  CHECK(s0.device == "cpu");
  CHECK(s0.sessions == 0);
  CHECK(s0.session_tensors == 0);
  CHECK(s0.tensors == 0);
  CHECK(s0.instructions == 0);

  // Session 5 makes 4 tensors and frees one; session 6 makes 2. The request
  // follows the batches without waiting for them: the answer counts them all.
  const std::vector<Instr> five{op(OpCode::Ones, {1}, {}, {2}), op(OpCode::Ones, {2}, {}, {2}),
                                op(OpCode::Add, {3}, {1, 2}), op(OpCode::Neg, {4}, {3}),
                                free_instr({1})};
  const std::vector<Instr> six{op(OpCode::Zeros, {1}, {}, {3}), op(OpCode::Neg, {2}, {1})};
  d.send(hello->identity, wire::encode_batch(5, 1, five));
  d.send(hello->identity, wire::encode_batch(6, 1, six));
  auto s1 = ask_stats(d, hello->identity, 5, 2);
  CHECK(s1.worker == 3);
  CHECK(s1.sessions == 2);
  CHECK(s1.session_tensors == 3);
  CHECK(s1.tensors == 5);
  CHECK(s1.instructions == 7);  // every instruction of both batches, the Free included
  CHECK_FALSE(s1.jit_enabled);
  CHECK(s1.jit_detected == 0);
  CHECK(s1.jit_compiled == 0);
  CHECK(s1.jit_runs == 0);

  // Asked for session 6: its own tensors; after its Bye they are gone.
  auto s2 = ask_stats(d, hello->identity, 6, 3);
  CHECK(s2.session_tensors == 2);
  CHECK(s2.tensors == 5);
  CHECK(s2.instructions == s1.instructions);  // a stats request is no instruction
  d.send(hello->identity, wire::encode_bye(6));
  auto s3 = ask_stats(d, hello->identity, 6, 4);
  CHECK(s3.sessions == 1);
  CHECK(s3.session_tensors == 0);
  CHECK(s3.tensors == 3);

  w.stop();
  CHECK_NOTHROW(w.wait());
}

TEST_CASE("worker stats report the JIT as enabled under GT_AUTO_COMPILE", "[worker][unit]") {
  fast_timers();
  char tmpl[] = "/tmp/gt-worker-stats-XXXXXX";
  REQUIRE(mkdtemp(tmpl) != nullptr);
  setenv("GT_AUTO_COMPILE", "1", 1);
  setenv("GT_COMPILE_CACHE_DIR", tmpl, 1);
  FakeDispatcher d;
  Worker w(options(d.endpoint, "cpu", 1));
  w.start();
  auto hello = d.next();
  REQUIRE(hello);
  d.send(hello->identity, wire::encode_welcome(0, 0, 1));
  d.send(hello->identity,
         wire::encode_batch(1, 1, std::vector<Instr>{op(OpCode::Ones, {1}, {}, {2})}));
  auto s = ask_stats(d, hello->identity, 1, 1);
  // The executor thread read the environment before it answered.
  unsetenv("GT_AUTO_COMPILE");
  unsetenv("GT_COMPILE_CACHE_DIR");
  CHECK(s.jit_enabled);
  CHECK(s.session_tensors == 1);
  CHECK(s.jit_compiled == 0);  // one op repeats nothing
  w.stop();
  CHECK_NOTHROW(w.wait());
  std::error_code ec;
  std::filesystem::remove_all(tmpl, ec);
}

TEST_CASE("worker sends heartbeats and registers again after dispatcher silence",
          "[worker][unit]") {
  fast_timers();
  FakeDispatcher d;
  Worker w(options(d.endpoint));
  w.start();
  auto hello = d.next();
  REQUIRE(hello);
  d.send(hello->identity, wire::encode_welcome(0, 0, 1));
  const std::vector<Instr> instrs{op(OpCode::Ones, {1}, {}, {2})};
  d.send(hello->identity, wire::encode_batch(9, 1, instrs));

  // Heartbeats arrive every 50 ms; stay silent and a new Hello follows.
  int heartbeats = 0;
  std::optional<FakeDispatcher::Received> second;
  const auto deadline = std::chrono::steady_clock::now() + 2s;
  while (!second && std::chrono::steady_clock::now() < deadline) {
    zmq::pollitem_t item{d.router.handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, 20ms);
    auto frames = recv_frames(d.router, true);
    if (!frames) continue;
    const auto* msg = wire::decode((*frames)[1]);
    if (msg->body_type() == wire::Body::Heartbeat) {
      ++heartbeats;
    } else if (msg->body_type() == wire::Body::Hello) {
      second.emplace();
      second->identity = std::move((*frames)[0]);
      second->frames.push_back(std::move((*frames)[1]));
    }
  }
  CHECK(heartbeats >= 3);
  REQUIRE(second);
  CHECK_FALSE(w.registered());
  d.send(second->identity, wire::encode_welcome(0, 4, 1));
  REQUIRE(eventually([&] { return w.index() == 4; }));

  // The old session's tensors are gone.
  d.send(second->identity, wire::encode_batch(9, 2, std::vector<Instr>{fetch(1, 7)}));
  auto err = d.next();
  REQUIRE(err);
  REQUIRE(err->msg()->body_as_ErrorReply() != nullptr);
  CHECK(err->msg()->body_as_ErrorReply()->error()->code() ==
        static_cast<uint16_t>(Status::UnknownTensor));
  w.stop();
  CHECK_NOTHROW(w.wait());
}

TEST_CASE("worker stops with an error on a version mismatch", "[worker][unit]") {
  fast_timers();
  FakeDispatcher d;
  Worker w(options(d.endpoint));
  w.start();
  auto hello = d.next();
  REQUIRE(hello);
  d.send(hello->identity,
         wire::encode_error_reply(
             0, 0, wire::failure(Status::VersionMismatch, "dispatcher speaks 2, worker speaks 1")));
  CHECK_THROWS_AS(w.wait(), ProtocolError);
}

TEST_CASE("worker gives up when the dispatcher never answers", "[worker][unit]") {
  fast_timers();
  FakeDispatcher d;
  Worker w(options(d.endpoint));
  int hellos = 0;
  std::thread dispatcher([&] {
    while (auto r = d.next(1500ms, false)) hellos += r->msg()->body_type() == wire::Body::Hello;
  });
  const auto t0 = std::chrono::steady_clock::now();
  CHECK_THROWS_AS(w.run(), TransportError);
  CHECK(std::chrono::steady_clock::now() - t0 < 3s);
  dispatcher.join();
  CHECK(hellos >= 2);  // it retried before giving up
}

TEST_CASE("worker destructor stops and joins a running worker", "[worker][unit]") {
  fast_timers();
  FakeDispatcher d;
  {
    Worker w(options(d.endpoint));
    w.stop();  // before start: start then returns promptly
    w.start();
  }
  {
    Worker w(options(d.endpoint));
    w.start();
    REQUIRE(d.next());
  }
  SUCCEED();
}

TEST_CASE("worker main stops cleanly on SIGTERM", "[worker][unit]") {
  fast_timers();
  FakeDispatcher d;
  struct sigaction before {};
  sigaction(SIGTERM, nullptr, &before);
  int code = -1;
  std::thread main_thread([&] { code = run_worker_main(options(d.endpoint)); });
  auto hello = d.next();  // the handlers are installed before the worker starts
  REQUIRE(hello);
  d.send(hello->identity, wire::encode_welcome(0, 0, 1));
  REQUIRE(kill(getpid(), SIGTERM) == 0);
  main_thread.join();
  CHECK(code == 0);

  // The previous handler is back and the flag is cleared: a new worker runs.
  struct sigaction after {};
  sigaction(SIGTERM, nullptr, &after);
  CHECK(after.sa_handler == before.sa_handler);
  Worker w(options(d.endpoint));
  w.start();
  auto again = d.next();
  REQUIRE(again);
  d.send(again->identity, wire::encode_welcome(0, 1, 1));
  CHECK(eventually([&] { return w.index() == 1; }));
}

TEST_CASE("worker main returns 1 on invalid options", "[worker][unit]") {
  CHECK(run_worker_main(options("tcp://127.0.0.1:1", "tpu")) == 1);
}

// Manual: 100,000 small adds (64 floats) through the sockets and threads of a
// worker, in batches of 1024 as the client sends them.
TEST_CASE("worker throughput of pipelined small adds", "[worker][.][bench]") {
  fast_timers();
  FakeDispatcher d;
  Worker w(options(d.endpoint));
  w.start();
  auto hello = d.next();
  REQUIRE(hello);
  d.send(hello->identity, wire::encode_welcome(0, 0, 1));
  const std::vector<Instr> setup{op(OpCode::Randn, {1}, {}, {64})};
  d.send(hello->identity, wire::encode_batch(3, 0, setup));

  constexpr int kOps = 100000, kBatch = 1024;
  std::vector<zmq::message_t> batches;
  TensorId next = 10;
  for (int done = 0; done < kOps;) {
    std::vector<Instr> instrs;
    for (int i = 0; i < kBatch && done < kOps; ++i, ++done) {
      instrs.push_back(op(OpCode::Add, {next}, {1, 1}));
      instrs.push_back(free_instr({next}));
      ++next;
    }
    batches.push_back(wire::encode_batch(3, batches.size() + 1, instrs));
  }
  const auto start = std::chrono::steady_clock::now();
  for (auto& b : batches) d.send(hello->identity, std::move(b));
  d.send(hello->identity, wire::encode_batch(3, 0, std::vector<Instr>{sync_instr(1)}));
  auto reply = d.next(20000ms);
  while (reply && reply->msg()->body_as_SyncReply() == nullptr) reply = d.next(20000ms);  // heartbeats
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  REQUIRE(reply);
  CHECK(reply->msg()->body_as_SyncReply()->errors()->size() == 0);
  WARN("worker: " << kOps / s << " adds/s through the sockets (" << s * 1e6 / kOps
                  << " us per add+free)");
}

}  // namespace
}  // namespace gt::worker::test
