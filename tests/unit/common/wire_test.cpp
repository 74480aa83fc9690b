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
