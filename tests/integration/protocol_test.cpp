// Hostile and broken input from a raw ZeroMQ socket: every bad message gets an
// error reply, nothing crashes, and other clients keep being served.

// LibTorch (through glog) defines CHECK too: include it before Catch so that
// Catch's CHECK wins.
#include "tests/integration/torch_compare.h"

#include <catch2/catch.hpp>

#include <unistd.h>

#include "common/transport.h"
#include "common/wire.h"
#include "tests/support/cluster.h"
#include "tests/support/raw_peer.h"

using namespace gt;
using gt::test::RawPeer;
using gt::test::expect_error;
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
  wire::Instr fetch;
  fetch.kind = wire::InstrKind::Fetch;
  fetch.inputs = {6};
  fetch.request = 101;
  raw.send(wire::encode_batch(session, 2, std::span(&fetch, 1)));
  auto f = raw.recv();
  const auto* r = wire::decode(f[0])->body_as_FetchReply();
  REQUIRE(r != nullptr);
  CHECK(r->request() == 101);
  REQUIRE(f.size() == 2);
  CHECK(f[1].size() == 6 * sizeof(float));

  fetch.inputs = {3};
  fetch.request = 102;
  raw.send(wire::encode_batch(session, 3, std::span(&fetch, 1)));
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
