// Hostile and broken input from a raw ZeroMQ socket: every bad message gets an
// error reply, nothing crashes, and other clients keep being served.

// LibTorch (through glog) defines CHECK too: include it before Catch so that
// Catch's CHECK wins.
#include "tests/integration/torch_compare.h"

#include <catch2/catch.hpp>

#include <unistd.h>

#include <cstring>

#include "common/transport.h"
#include "common/wire.h"
#include "tests/support/cluster.h"
#include "tests/support/raw_peer.h"

using namespace gt;
using gt::test::RawPeer;
using gt::test::expect_error;
using gt::test::fetch_instr;
using gt::test::op;

TEST_CASE("garbage, truncated and out-of-order messages get error replies",
          "[protocol][integration]") {
  gt::test::TestCluster cluster(1);
  RawPeer raw(cluster.endpoint());

  raw.send_raw("this is not a gt message");
  auto f = raw.recv();
  CHECK(expect_error(f).code == Status::Malformed);

  // a batch before Hello
  raw.send(wire::encode_batch(1, 1, {}));
  f = raw.recv();
  auto e = expect_error(f);
  CHECK(e.code == Status::WrongRole);
  CHECK_THAT(e.message, Catch::Contains("Hello"));

  // a truncated header
  auto good = wire::encode_hello(wire::Role::Client, "", 0, 1, "raw", 1);
  raw.send_raw(std::string(static_cast<const char*>(good.data()), good.size() / 2));
  f = raw.recv();
  CHECK(expect_error(f).code == Status::Malformed);

  // the wrong protocol version names both versions
  raw.send(wire::encode_hello(wire::Role::Client, "", 0, 1, "raw", 1, 999));
  f = raw.recv();
  e = expect_error(f);
  CHECK(e.code == Status::VersionMismatch);
  CHECK_THAT(e.message, Catch::Contains("999") &&
                            Catch::Contains(std::to_string(wire::kProtocolVersion)));

  // after all that, a real client is served normally
  gt::connect(cluster.endpoint());
  CHECK(gt::arange(4).sum().item<int64_t>() == 6);
  gt::shutdown();
}

TEST_CASE("unknown op codes, unknown ids and bad payloads are reported at sync",
          "[protocol][integration]") {
  gt::test::TestCluster cluster(1);
  RawPeer raw(cluster.endpoint());
  const uint64_t session = raw.hello_client();

  std::vector<wire::Instr> batch;
  auto unknown = op(OpCode::Add, {1}, {});
  unknown.op = static_cast<OpCode>(999);
  batch.push_back(unknown);
  batch.push_back(op(OpCode::Add, {2}, {77, 78}));         // ids never created
  batch.push_back(op(OpCode::Relu, {3}, {2}));             // poisoned input: no new report
  auto data = op(OpCode::FromData, {4}, {}, {4});          // 4 floats expected...
  data.payload = 0;
  batch.push_back(data);
  auto missing = op(OpCode::FromData, {5}, {}, {1});       // payload frame index past the end
  missing.payload = 7;
  batch.push_back(missing);
  batch.push_back(op(OpCode::Zeros, {6}, {}, {2, 3}));     // valid
  raw.send(wire::encode_batch(session, 1, batch), {std::string(3, 'x')});  // ...3 bytes sent
  auto errors = raw.sync(session, 100);
  REQUIRE(errors.size() == 4);
  CHECK(errors[0].code == Status::UnknownOp);
  CHECK_THAT(errors[0].message, Catch::Contains("999"));
  CHECK(errors[1].code == Status::UnknownTensor);
  CHECK_THAT(errors[1].message, Catch::Contains("77"));
  CHECK(errors[2].code == Status::PayloadMismatch);
  CHECK(errors[3].code == Status::PayloadMismatch);

  // the valid tensor is there; fetching a poisoned one answers the original failure
  raw.send(wire::encode_batch(session, 2, std::vector{fetch_instr(6, 101)}));
  auto f = raw.recv();
  const auto* r = wire::decode(f[0])->body_as_FetchReply();
  REQUIRE(r != nullptr);
  CHECK(r->request() == 101);
  REQUIRE(f.size() == 2);
  CHECK(f[1].size() == 6 * sizeof(float));

  raw.send(wire::encode_batch(session, 3, std::vector{fetch_instr(3, 102)}));
  f = raw.recv();
  CHECK(expect_error(f).code == Status::UnknownTensor);

  // a second, well-behaved client on the same worker is unaffected
  gt::connect(cluster.endpoint());
  CHECK(gt::ones({2, 2}).sum().item<float>() == 4.f);
  gt::shutdown();
}

TEST_CASE("a client that disconnects has its tensors freed on the worker",
          "[protocol][integration]") {
  gt::test::TestCluster cluster(1, {{"GT_HEARTBEAT_TIMEOUT_MS", "500"}});
  {
    RawPeer raw(cluster.endpoint());
    const uint64_t session = raw.hello_client();
    std::vector<wire::Instr> batch{op(OpCode::Zeros, {1}, {}, {1000}),
                                   op(OpCode::Ones, {2}, {}, {1000}),
                                   op(OpCode::Add, {3}, {1, 2})};
    raw.send(wire::encode_batch(session, 1, batch));
    CHECK(raw.sync(session, 1).empty());
    raw.send(wire::encode_bye(session));
    CHECK(cluster.wait_worker_log(0, "session closed session=" + std::to_string(session) +
                                         " freed=3",
                                  std::chrono::seconds(5)));
  }
  {
    // A client that vanishes without Bye (crash) is noticed by its silence.
    RawPeer raw(cluster.endpoint());
    const uint64_t session = raw.hello_client();
    std::vector<wire::Instr> batch{op(OpCode::Zeros, {1}, {}, {10}),
                                   op(OpCode::Ones, {2}, {}, {10})};
    raw.send(wire::encode_batch(session, 1, batch));
    CHECK(raw.sync(session, 1).empty());
    // no Bye, no heartbeats: the dispatcher closes the session after 2 x 500 ms
    CHECK(cluster.wait_worker_log(0, "session closed session=" + std::to_string(session) +
                                         " freed=2",
                                  std::chrono::seconds(5)));
  }
}

namespace {

// Fetches tensor `id` of the raw peer's session as floats.
std::vector<float> fetch_floats(RawPeer& raw, uint64_t session, uint64_t id, uint64_t request) {
  raw.send(wire::encode_batch(session, request, std::vector{fetch_instr(id, request)}));
  auto f = raw.recv();
  const auto* r = wire::decode(f[0])->body_as_FetchReply();
  REQUIRE(r != nullptr);
  REQUIRE(r->request() == request);
  REQUIRE(f.size() == 2);
  std::vector<float> out(f[1].size() / sizeof(float));
  std::memcpy(out.data(), f[1].data(), out.size() * sizeof(float));
  return out;
}

std::string float_bytes(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
}

}  // namespace

TEST_CASE("replayed and oversized messages get errors and touch no other session",
          "[protocol][integration]") {
  gt::test::TestCluster cluster(1);
  RawPeer victim(cluster.endpoint());
  const uint64_t a = victim.hello_client();
  auto upload = op(OpCode::FromData, {1}, {}, {4});
  upload.payload = 0;
  const std::vector<float> values{1, 2, 3, 4};
  auto victim_batch = [&] { return wire::encode_batch(a, 1, std::span(&upload, 1)); };
  victim.send(victim_batch(), {float_bytes(values)});
  REQUIRE(victim.sync(a, 1).empty());

  // Another connection replays the victim's batch byte for byte (its header
  // names the victim's session) and then zeroes "tensor 1" of that session:
  // the dispatcher runs both in the replayer's own session.
  RawPeer attacker(cluster.endpoint());
  const uint64_t b = attacker.hello_client();
  REQUIRE(b != a);
  attacker.send(victim_batch(), {float_bytes(values)});
  auto zero = op(OpCode::ZeroInplace, {}, {1});
  attacker.send(wire::encode_batch(a, 2, std::span(&zero, 1)));
  CHECK(attacker.sync(b, 3).empty());
  CHECK(fetch_floats(attacker, b, 1, 4) == std::vector<float>{0, 0, 0, 0});
  CHECK(fetch_floats(victim, a, 1, 2) == values);

  // The victim's own replay names the id that is already live and changes nothing.
  victim.send(victim_batch(), {float_bytes({9, 9, 9, 9})});
  auto errors = victim.sync(a, 3);
  REQUIRE(errors.size() == 1);
  CHECK_THAT(errors[0].message, Catch::Contains("output id 1 is already live"));
  CHECK(fetch_floats(victim, a, 1, 4) == values);

  // Oversized: a result beyond the worker's memory, a shape beyond any
  // tensor, a data frame far larger than its tensor, a 4 MiB header of
  // garbage. Each is refused with a message that names the sizes.
  std::vector<wire::Instr> huge{op(OpCode::Zeros, {2}, {}, {int64_t{1} << 40}),
                                op(OpCode::Zeros, {3}, {}, {int64_t{1} << 30, int64_t{1} << 30}),
                                upload};
  huge[2].outputs = {4};
  victim.send(wire::encode_batch(a, 5, huge), {std::string(size_t{64} << 20, 'x')});
  errors = victim.sync(a, 6);
  REQUIRE(errors.size() == 3);
  CHECK(errors[0].code == Status::ExecutionFailed);
  CHECK_THAT(errors[0].message, Catch::Contains("out of memory") && Catch::Contains("capacity"));
  CHECK_THAT(errors[1].message, Catch::Contains("1073741824"));
  CHECK(errors[2].code == Status::PayloadMismatch);
  victim.send_raw(std::string(size_t{4} << 20, '\xff'));
  auto reply = victim.try_recv(std::chrono::seconds(10));
  REQUIRE(reply.has_value());
  CHECK(expect_error(*reply).code == Status::Malformed);

  // Nothing was lost: the victim's tensor, the attacker's, and a new client.
  CHECK(fetch_floats(victim, a, 1, 7) == values);
  CHECK(fetch_floats(attacker, b, 1, 5) == std::vector<float>{0, 0, 0, 0});
  gt::connect(cluster.endpoint());
  CHECK(gt::arange(4).sum().item<int64_t>() == 6);
  gt::shutdown();
}
