#include <catch2/catch.hpp>

#include <cstring>

#include <gt/error.h>

#include "common/wire.h"

using namespace gt;

TEST_CASE("batch round-trips through the wire format", "[wire][unit]") {
  std::vector<wire::Instr> in(2);
  in[0].op = OpCode::Sum;
  in[0].inputs = {7};
  in[0].outputs = {8};
  in[0].ints = {1, 0, -1};
  in[1].kind = wire::InstrKind::Fetch;
  in[1].inputs = {8};
  in[1].request = 42;
  in[1].floats = {2.5};
  in[1].dtype = kBFloat16;
  auto frame = wire::encode_batch(9, 3, in);
  const auto* msg = wire::decode(frame);
  REQUIRE(msg->body_type() == wire::Body::Batch);
  CHECK(msg->session() == 9);
  const auto* b = msg->body_as_Batch();
  CHECK(b->seq() == 3);
  REQUIRE(b->instructions()->size() == 2);
  auto a = wire::to_instr(b->instructions()->Get(0));
  CHECK(a.op == OpCode::Sum);
  CHECK(a.inputs == std::vector<uint64_t>{7});
  CHECK(a.outputs == std::vector<uint64_t>{8});
  CHECK(a.ints == std::vector<int64_t>{1, 0, -1});
  auto f = wire::to_instr(b->instructions()->Get(1));
  CHECK(f.kind == wire::InstrKind::Fetch);
  CHECK(f.request == 42);
  CHECK(f.floats == std::vector<double>{2.5});
  CHECK(f.dtype == kBFloat16);
}

TEST_CASE("hello, welcome, replies round-trip", "[wire][unit]") {
  auto h = wire::encode_hello(wire::Role::Worker, "cpu", 1024, 77, "w", 2);
  const auto* hm = wire::decode(h)->body_as_Hello();
  REQUIRE(hm);
  CHECK(hm->version() == wire::kProtocolVersion);
  CHECK(hm->role() == wire::Role::Worker);
  CHECK(hm->device()->str() == "cpu");
  CHECK(hm->min_workers() == 2);

  std::vector<wire::FailureInfo> errs{wire::failure(Status::ExecutionFailed, "boom", 3, "matmul", 5)};
  auto s = wire::encode_sync_reply(4, 11, errs);
  const auto* sr = wire::decode(s)->body_as_SyncReply();
  REQUIRE(sr);
  auto back = wire::to_failure_info(sr->errors()->Get(0));
  CHECK(back.code == Status::ExecutionFailed);
  CHECK(back.message == "boom");
  CHECK(back.worker == 3);
  CHECK(back.op == "matmul");
  CHECK(back.tensor == 5);
  CHECK_THROWS_AS(wire::throw_failure(back), RemoteError);
}

TEST_CASE("verifier rejects corrupt, truncated and foreign input", "[wire][unit]") {
  std::vector<wire::Instr> in(50);
  for (auto& i : in) i.inputs = {1, 2, 3};
  auto good = wire::encode_batch(1, 1, in);
  const std::string bytes(static_cast<const char*>(good.data()), good.size());

  // truncated at every length: never accepted, never crashes
  for (size_t len = 0; len < bytes.size(); len += 7) {
    zmq::message_t t(bytes.data(), len);
    CHECK_THROWS_AS(wire::decode(t), ProtocolError);
  }
  // garbage
  zmq::message_t junk("hello world, definitely not flatbuffers", 39);
  CHECK_THROWS_AS(wire::decode(junk), ProtocolError);
  // random corruption: either rejected or decodes to a verified message
  uint32_t x = 12345;
  for (int trial = 0; trial < 2000; ++trial) {
    std::string c = bytes;
    for (int k = 0; k < 4; ++k) {
      x = x * 1664525u + 1013904223u;
      c[x % c.size()] = static_cast<char>(x >> 24);
    }
    zmq::message_t m(c.data(), c.size());
    try {
      const auto* msg = wire::decode(m);
      CHECK(msg != nullptr);
    } catch (const ProtocolError&) {
    }
  }
}

namespace {

wire::WorkerStatsInfo sample_stats(int worker) {
  wire::WorkerStatsInfo w;
  w.worker = worker;
  w.device = "cuda:" + std::to_string(worker);
  w.sessions = 2;
  w.session_tensors = 17;
  w.tensors = 40;
  w.instructions = 123456789012ull;
  w.jit_enabled = true;
  w.jit_detected = 1;
  w.jit_compiled = 2;
  w.jit_cache_hits = 3;
  w.jit_failures = 4;
  w.jit_duplicates = 5;
  w.jit_runs = 6;
  w.jit_dropped = 7;
  w.jit_fallbacks = 8;
  w.jit_limited = 9;
  w.jit_elided_runs = 10;
  return w;
}

}  // namespace

TEST_CASE("stats request and reply round-trip through the wire format", "[wire][unit]") {
  auto req = wire::encode_stats_request(5, 77);
  const auto* rm = wire::decode(req);
  REQUIRE(rm->body_type() == wire::Body::StatsRequest);
  CHECK(rm->session() == 5);
  CHECK(rm->body_as_StatsRequest()->request() == 77);
  CHECK(wire::body_name(rm->body_type()) == "StatsRequest");

  const std::vector<wire::WorkerStatsInfo> workers{sample_stats(0), sample_stats(1)};
  auto rep = wire::encode_stats_reply(5, 77, workers);
  const auto* m = wire::decode(rep);
  REQUIRE(m->body_type() == wire::Body::StatsReply);
  CHECK(wire::body_name(m->body_type()) == "StatsReply");
  const auto* r = m->body_as_StatsReply();
  CHECK(r->request() == 77);
  REQUIRE(r->workers()->size() == 2);
  CHECK(wire::to_worker_stats(r->workers()->Get(0)) == workers[0]);
  CHECK(wire::to_worker_stats(r->workers()->Get(1)) == workers[1]);

  // An empty reply (no worker answered) and a missing entry decode to defaults.
  auto empty = wire::encode_stats_reply(5, 78, {});
  const auto* e = wire::decode(empty)->body_as_StatsReply();
  REQUIRE(e != nullptr);
  CHECK((e->workers() == nullptr || e->workers()->size() == 0));
  CHECK(wire::to_worker_stats(nullptr) == wire::WorkerStatsInfo{});
}

TEST_CASE("verifier rejects corrupt and oversized stats replies", "[wire][unit]") {
  const std::vector<wire::WorkerStatsInfo> workers{sample_stats(0), sample_stats(1),
                                                   sample_stats(2)};
  auto good = wire::encode_stats_reply(1, 2, workers);
  const std::string bytes(static_cast<const char*>(good.data()), good.size());
  for (size_t len = 0; len < bytes.size(); len += 5) {
    zmq::message_t t(bytes.data(), len);
    CHECK_THROWS_AS(wire::decode(t), ProtocolError);
  }
  // The root offset pointing past the end of the frame.
  std::string bad = bytes;
  const uint32_t past_end = static_cast<uint32_t>(bad.size()) + 64;
  std::memcpy(bad.data(), &past_end, sizeof past_end);
  zmq::message_t m(bad.data(), bad.size());
  CHECK_THROWS_WITH(wire::decode(m), Catch::Contains("failed verification"));
  // Random corruption: rejected, or a verified message whose entries read safely.
  uint32_t x = 777;
  for (int trial = 0; trial < 2000; ++trial) {
    std::string c = bytes;
    for (int k = 0; k < 3; ++k) {
      x = x * 1664525u + 1013904223u;
      c[x % c.size()] = static_cast<char>(x >> 24);
    }
    zmq::message_t cm(c.data(), c.size());
    try {
      const auto* msg = wire::decode(cm);
      if (const auto* r = msg->body_as_StatsReply(); r && r->workers()) {
        for (const auto* w : *r->workers()) (void)wire::to_worker_stats(w);
      }
    } catch (const ProtocolError&) {
    }
  }
  // More entries than any cluster has workers.
  std::vector<wire::WorkerStatsInfo> many(wire::kMaxStatsWorkers + 1);
  auto big = wire::encode_stats_reply(1, 2, many);
  CHECK_THROWS_WITH(wire::decode(big), Catch::Contains("worker entries exceeds the limit"));
}
