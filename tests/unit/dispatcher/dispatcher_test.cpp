// The dispatcher in-process, driven by fake clients and workers on raw
// DEALER sockets (they can drop, delay or fail replies at will).

#include <catch2/catch.hpp>

#include <thread>

#include "common/transport.h"
#include "common/wire.h"
#include "dispatcher/dispatcher.h"

using namespace gt;

namespace {

struct Running {
  dispatcher::Dispatcher d;
  std::thread t;
  explicit Running(int64_t worker_wait_ms = 2000)
      : d(dispatcher::DispatcherOptions{"tcp://127.0.0.1:0", worker_wait_ms, ""}),
        t([this] { d.run(); }) {}
  ~Running() {
    d.stop();
    t.join();
  }
};

struct Peer {
  zmq::context_t ctx{1};
  zmq::socket_t s{ctx, zmq::socket_type::dealer};
  explicit Peer(const std::string& ep) {
    s.set(zmq::sockopt::linger, 0);
    s.set(zmq::sockopt::rcvtimeo, 3000);
    s.connect(ep);
  }
  void send(zmq::message_t header, std::vector<std::string> data = {}) {
    Frames f;
    f.push_back(std::move(header));
    for (auto& d : data) f.emplace_back(d.data(), d.size());
    send_frames(s, f);
  }
  Frames recv() {
    for (;;) {
      auto f = recv_frames(s, false);
      REQUIRE(f.has_value());
      if (wire::decode((*f)[0])->body_type() != wire::Body::Heartbeat) return std::move(*f);
    }
  }
  std::optional<Frames> try_recv(int ms) {
    s.set(zmq::sockopt::rcvtimeo, ms);
    auto f = recv_frames(s, false);
    s.set(zmq::sockopt::rcvtimeo, 3000);
    return f;
  }
};

wire::Instr fetch(uint64_t id, uint64_t request) {
  wire::Instr i;
  i.kind = wire::InstrKind::Fetch;
  i.inputs = {id};
  i.request = request;
  return i;
}

}  // namespace

TEST_CASE("dispatcher defers a client's welcome until enough workers joined",
          "[dispatcher][unit]") {
  Running r;
  Peer client(r.d.endpoint());
  client.send(wire::encode_hello(wire::Role::Client, "", 0, 1, "c", 2));
  Peer w0(r.d.endpoint());
  w0.send(wire::encode_hello(wire::Role::Worker, "cpu", 1, 10, "w0", 0));
  auto f = w0.recv();
  CHECK(wire::decode(f[0])->body_as_Welcome()->worker() == 0);
  CHECK_FALSE(client.try_recv(100).has_value());  // one worker is not enough
  Peer w1(r.d.endpoint());
  w1.send(wire::encode_hello(wire::Role::Worker, "cpu", 1, 11, "w1", 0));
  (void)w1.recv();
  f = client.recv();
  const auto* welcome = wire::decode(f[0])->body_as_Welcome();
  REQUIRE(welcome != nullptr);
  CHECK(welcome->session() != 0);
  CHECK(welcome->workers() == 2);
}

TEST_CASE("dispatcher answers no_workers when none register in time", "[dispatcher][unit]") {
  Running r(200);
  Peer client(r.d.endpoint());
  client.send(wire::encode_hello(wire::Role::Client, "", 0, 1, "c", 1));
  auto f = client.recv();
  const auto* e = wire::decode(f[0])->body_as_ErrorReply();
  REQUIRE(e != nullptr);
  CHECK(e->error()->code() == static_cast<uint16_t>(Status::NoWorkers));
  CHECK_THAT(e->error()->message()->str(), Catch::Contains("gt worker --connect"));
}

TEST_CASE("dispatcher forwards batches with the session stamped and routes replies back",
          "[dispatcher][unit]") {
  Running r;
  Peer worker(r.d.endpoint());
  worker.send(wire::encode_hello(wire::Role::Worker, "cpu", 1, 10, "w", 0));
  (void)worker.recv();
  Peer client(r.d.endpoint());
  client.send(wire::encode_hello(wire::Role::Client, "", 0, 1, "c", 1));
  auto f = client.recv();
  const uint64_t session = wire::decode(f[0])->body_as_Welcome()->session();

  wire::Instr data;
  data.op = OpCode::FromData;
  data.outputs = {1};
  data.ints = {2};
  data.payload = 0;
  std::vector<wire::Instr> batch{data, fetch(1, 7)};
  client.send(wire::encode_batch(session, 1, batch), {std::string(8, 'a')});

  // the worker gets the batch and its data frame, tagged with the session
  f = worker.recv();
  REQUIRE(f.size() == 2);
  const auto* msg = wire::decode(f[0]);
  CHECK(msg->session() == session);
  CHECK(msg->body_as_Batch()->instructions()->size() == 2);
  CHECK(f[1].to_string() == std::string(8, 'a'));

  // its fetch reply goes back to the client with the data
  const int64_t shape[] = {2};
  worker.send(wire::encode_fetch_reply(session, 7, 1, kFloat32, shape), {std::string(8, 'b')});
  f = client.recv();
  REQUIRE(f.size() == 2);
  CHECK(wire::decode(f[0])->body_as_FetchReply()->request() == 7);
  CHECK(f[1].to_string() == std::string(8, 'b'));

  // Bye ends the session on the worker
  client.send(wire::encode_bye(session));
  f = worker.recv();
  const auto* bye = wire::decode(f[0]);
  CHECK(bye->body_type() == wire::Body::Bye);
  CHECK(bye->session() == session);
  CHECK(r.d.stats().sessions_closed.load() == 1);
}

TEST_CASE("dispatcher fails pending requests when a worker goes silent", "[dispatcher][unit]") {
  setenv("GT_HEARTBEAT_TIMEOUT_MS", "300", 1);
  Running r;
  unsetenv("GT_HEARTBEAT_TIMEOUT_MS");
  Peer worker(r.d.endpoint());
  worker.send(wire::encode_hello(wire::Role::Worker, "cpu", 1, 4242, "w", 0));
  (void)worker.recv();
  Peer client(r.d.endpoint());
  client.send(wire::encode_hello(wire::Role::Client, "", 0, 1, "c", 1));
  auto f = client.recv();
  const uint64_t session = wire::decode(f[0])->body_as_Welcome()->session();
  std::vector<wire::Instr> batch{fetch(1, 9)};
  client.send(wire::encode_batch(session, 1, batch));
  // the worker never answers and sends no heartbeat
  f = client.recv();
  const auto* e = wire::decode(f[0])->body_as_ErrorReply();
  REQUIRE(e != nullptr);
  CHECK(e->request() == 9);
  CHECK(e->error()->code() == static_cast<uint16_t>(Status::WorkerLost));
  CHECK_THAT(e->error()->message()->str(),
             Catch::Contains("worker 0") && Catch::Contains("4242") && Catch::Contains("lost"));
  // later requests fail at once
  batch = {fetch(1, 10)};
  client.send(wire::encode_batch(session, 2, batch));
  f = client.recv();
  CHECK(wire::decode(f[0])->body_as_ErrorReply()->request() == 10);
}

TEST_CASE("dispatcher rejects malformed and unexpected messages and keeps serving",
          "[dispatcher][unit]") {
  Running r;
  Peer bad(r.d.endpoint());
  bad.s.send(zmq::str_buffer("garbage"), zmq::send_flags::none);
  auto f = bad.recv();
  CHECK(wire::decode(f[0])->body_as_ErrorReply()->error()->code() ==
        static_cast<uint16_t>(Status::Malformed));
  bad.send(wire::encode_heartbeat(0));
  f = bad.recv();
  CHECK(wire::decode(f[0])->body_as_ErrorReply()->error()->code() ==
        static_cast<uint16_t>(Status::WrongRole));
  // a worker may not send client messages... and a client may not send replies
  Peer worker(r.d.endpoint());
  worker.send(wire::encode_hello(wire::Role::Worker, "cpu", 1, 1, "w", 0));
  (void)worker.recv();
  Peer client(r.d.endpoint());
  client.send(wire::encode_hello(wire::Role::Client, "", 0, 1, "c", 1));
  f = client.recv();
  const uint64_t session = wire::decode(f[0])->body_as_Welcome()->session();
  client.send(wire::encode_sync_reply(session, 1, {}));
  f = client.recv();
  CHECK(wire::decode(f[0])->body_as_ErrorReply()->error()->code() ==
        static_cast<uint16_t>(Status::WrongRole));
  CHECK(r.d.stats().malformed.load() == 1);
}

namespace {

// A worker's answer to a StatsRequest: echoes the session and request.
void answer_stats(Peer& worker, Frames& request, uint64_t tensors, int claimed_index) {
  const auto* msg = wire::decode(request[0]);
  REQUIRE(msg->body_type() == wire::Body::StatsRequest);
  wire::WorkerStatsInfo w;
  w.worker = claimed_index;
  w.device = "cpu";
  w.session_tensors = tensors;
  w.instructions = 10 * tensors;
  worker.send(wire::encode_stats_reply(msg->session(), msg->body_as_StatsRequest()->request(),
                                       std::span(&w, 1)));
}

}  // namespace

TEST_CASE("dispatcher gathers one stats entry per worker, in stream order",
          "[dispatcher][unit]") {
  Running r;
  Peer w0(r.d.endpoint()), w1(r.d.endpoint());
  w0.send(wire::encode_hello(wire::Role::Worker, "cpu", 1, 10, "w0", 0));
  (void)w0.recv();
  w1.send(wire::encode_hello(wire::Role::Worker, "cuda:0", 1, 11, "w1", 0));
  (void)w1.recv();
  Peer client(r.d.endpoint());
  client.send(wire::encode_hello(wire::Role::Client, "", 0, 1, "c", 2));
  auto f = client.recv();
  const uint64_t session = wire::decode(f[0])->body_as_Welcome()->session();

  // The session lives on worker 0: its batch reaches it before the request.
  std::vector<wire::Instr> batch{fetch(1, 5)};
  client.send(wire::encode_batch(session, 1, batch));
  client.send(wire::encode_stats_request(session, 6));
  auto b = w0.recv();
  CHECK(wire::decode(b[0])->body_type() == wire::Body::Batch);
  auto q0 = w0.recv();
  auto q1 = w1.recv();
  const auto* m1 = wire::decode(q1[0]);
  REQUIRE(m1->body_type() == wire::Body::StatsRequest);
  CHECK(m1->session() == session);
  CHECK(m1->body_as_StatsRequest()->request() == 6);

  // Answers arrive in any order; nothing goes to the client before the last.
  answer_stats(w1, q1, 0, 7);  // a wrong index claim: the dispatcher's numbering wins
  CHECK_FALSE(client.try_recv(100).has_value());
  answer_stats(w0, q0, 3, 0);
  f = client.recv();
  const auto* reply = wire::decode(f[0])->body_as_StatsReply();
  REQUIRE(reply != nullptr);
  CHECK(reply->request() == 6);
  REQUIRE(reply->workers()->size() == 2);
  const auto a = wire::to_worker_stats(reply->workers()->Get(0));
  const auto c = wire::to_worker_stats(reply->workers()->Get(1));
  CHECK(a.worker == 0);
  CHECK(a.session_tensors == 3);
  CHECK(a.instructions == 30);
  CHECK(c.worker == 1);
  CHECK(c.device == "cpu");  // what the worker reported
  CHECK(c.session_tensors == 0);

  // A request id of 0 is refused, and the dispatcher keeps serving.
  client.send(wire::encode_stats_request(session, 0));
  f = client.recv();
  const auto* e = wire::decode(f[0])->body_as_ErrorReply();
  REQUIRE(e != nullptr);
  CHECK(e->error()->code() == static_cast<uint16_t>(Status::Malformed));
  CHECK_THAT(e->error()->message()->str(), Catch::Contains("non-zero request id"));
}

TEST_CASE("dispatcher answers stats with the workers left when one is lost meanwhile",
          "[dispatcher][unit]") {
  setenv("GT_HEARTBEAT_TIMEOUT_MS", "300", 1);
  Running r;
  unsetenv("GT_HEARTBEAT_TIMEOUT_MS");
  Peer w0(r.d.endpoint()), w1(r.d.endpoint());
  w0.send(wire::encode_hello(wire::Role::Worker, "cpu", 1, 10, "w0", 0));
  (void)w0.recv();
  w1.send(wire::encode_hello(wire::Role::Worker, "cpu", 1, 11, "w1", 0));
  (void)w1.recv();
  Peer client(r.d.endpoint());
  client.send(wire::encode_hello(wire::Role::Client, "", 0, 1, "c", 2));
  auto f = client.recv();
  const uint64_t session = wire::decode(f[0])->body_as_Welcome()->session();

  client.send(wire::encode_stats_request(session, 9));
  auto q0 = w0.recv();
  (void)w1.recv();
  // Worker 1 never answers and stops beating; worker 0 answers and keeps
  // beating (as does the client) until the reply comes.
  answer_stats(w0, q0, 2, 0);
  std::optional<Frames> got;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  while (!got && std::chrono::steady_clock::now() < deadline) {
    w0.send(wire::encode_heartbeat(0));
    client.send(wire::encode_heartbeat(session));
    while (auto m = client.try_recv(50)) {
      if (wire::decode((*m)[0])->body_type() != wire::Body::Heartbeat) {
        got = std::move(m);
        break;
      }
    }
  }
  REQUIRE(got.has_value());
  const auto* reply = wire::decode((*got)[0])->body_as_StatsReply();
  REQUIRE(reply != nullptr);
  CHECK(reply->request() == 9);
  REQUIRE(reply->workers()->size() == 1);
  CHECK(reply->workers()->Get(0)->worker() == 0);
  CHECK(r.d.stats().workers_lost.load() == 1);

  // Later requests go to the alive worker only.
  client.send(wire::encode_stats_request(session, 10));
  Frames q;
  for (;;) {
    q = w0.recv();
    if (wire::decode(q[0])->body_type() == wire::Body::StatsRequest) break;
  }
  answer_stats(w0, q, 2, 0);
  f = client.recv();
  REQUIRE(wire::decode(f[0])->body_as_StatsReply() != nullptr);
  CHECK(wire::decode(f[0])->body_as_StatsReply()->workers()->size() == 1);
}

TEST_CASE("dispatcher serves the rendezvous store to workers", "[dispatcher][store][unit]") {
  Running r;
  Peer w0(r.d.endpoint()), w1(r.d.endpoint());
  w0.send(wire::encode_hello(wire::Role::Worker, "cpu", 1, 10, "w0", 0));
  (void)w0.recv();
  w1.send(wire::encode_hello(wire::Role::Worker, "cpu", 1, 11, "w1", 0));
  (void)w1.recv();

  // A get waits for keys set later, by another worker.
  const std::vector<std::string> keys = {"comm/rank0", "comm/rank1"};
  w0.send(wire::encode_store_get(7, keys, 5000));
  CHECK_FALSE(w0.try_recv(100).has_value());
  const std::string addr0 = "127.0.0.1:4000", addr1(300, '\x01');  // binary values too
  w1.send(wire::encode_store_set("comm/rank0", std::span(addr0.data(), addr0.size())));
  CHECK_FALSE(w0.try_recv(100).has_value());  // one key is not enough
  w1.send(wire::encode_store_set("comm/rank1", std::span(addr1.data(), addr1.size())));
  auto f = w0.recv();
  const auto* reply = wire::decode(f[0])->body_as_StoreReply();
  REQUIRE(reply != nullptr);
  CHECK(reply->request() == 7);
  CHECK((reply->missing() == nullptr || reply->missing()->size() == 0));
  REQUIRE(reply->entries()->size() == 2);
  CHECK(reply->entries()->Get(0)->key()->str() == "comm/rank0");
  const auto* v1 = reply->entries()->Get(1)->value();
  CHECK(std::string(reinterpret_cast<const char*>(v1->data()), v1->size()) == addr1);

  // Set keys answer at once; a later set replaces the value (same connection:
  // ordered before the get).
  const std::string again = "127.0.0.1:4001";
  w0.send(wire::encode_store_set("comm/rank0", std::span(again.data(), again.size())));
  w0.send(wire::encode_store_get(8, std::vector<std::string>{"comm/rank0"}, 0));
  f = w0.recv();
  reply = wire::decode(f[0])->body_as_StoreReply();
  REQUIRE(reply != nullptr);
  const auto* v = reply->entries()->Get(0)->value();
  CHECK(std::string(reinterpret_cast<const char*>(v->data()), v->size()) == again);

  // A timeout answers with the keys still missing.
  w1.send(wire::encode_store_get(9, std::vector<std::string>{"comm/rank0", "comm/rank2"}, 150));
  f = w1.recv();
  reply = wire::decode(f[0])->body_as_StoreReply();
  REQUIRE(reply != nullptr);
  CHECK(reply->request() == 9);
  REQUIRE(reply->missing()->size() == 1);
  CHECK(reply->missing()->Get(0)->str() == "comm/rank2");

  // Bounds: an empty key and an oversized value are refused with their sizes.
  w0.send(wire::encode_store_set("", std::span<const char>()));
  f = w0.recv();
  const auto* err = wire::decode(f[0])->body_as_ErrorReply();
  REQUIRE(err != nullptr);
  CHECK_THAT(err->error()->message()->str(), Catch::Contains("store key of 0 bytes"));
  const std::string big(wire::kMaxStoreValueBytes + 1, 'x');
  w0.send(wire::encode_store_set("big", std::span(big.data(), big.size())));
  f = w0.recv();
  err = wire::decode(f[0])->body_as_ErrorReply();
  REQUIRE(err != nullptr);
  CHECK_THAT(err->error()->message()->str(), Catch::Contains("store value of"));
}

TEST_CASE("dispatcher keeps its rendezvous store from clients", "[dispatcher][store][unit]") {
  Running r;
  Peer w(r.d.endpoint());
  w.send(wire::encode_hello(wire::Role::Worker, "cpu", 1, 10, "w0", 0));
  (void)w.recv();
  Peer client(r.d.endpoint());
  client.send(wire::encode_hello(wire::Role::Client, "", 0, 1, "c", 1));
  (void)client.recv();
  const std::string v = "x";
  client.send(wire::encode_store_set("k", std::span(v.data(), v.size())));
  auto f = client.recv();
  const auto* err = wire::decode(f[0])->body_as_ErrorReply();
  REQUIRE(err != nullptr);
  CHECK(static_cast<Status>(err->error()->code()) == Status::WrongRole);
  // Nothing was stored: a worker's get of "k" times out.
  w.send(wire::encode_store_get(1, std::vector<std::string>{"k"}, 0));
  f = w.recv();
  CHECK(wire::decode(f[0])->body_as_StoreReply()->missing()->size() == 1);
}
