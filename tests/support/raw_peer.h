#pragma once
// RawPeer: a raw ZeroMQ DEALER that speaks gt's wire protocol by hand, for
// integration tests that play a hostile, broken or very busy client.
// Include after LibTorch (tests/integration/torch_compare.h) and Catch.

#include <unistd.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "common/transport.h"
#include "common/wire.h"

namespace gt::test {

struct RawPeer {
  zmq::context_t ctx{1};
  zmq::socket_t s{ctx, zmq::socket_type::dealer};
  explicit RawPeer(const std::string& endpoint) {
    s.set(zmq::sockopt::linger, 0);
    s.set(zmq::sockopt::rcvtimeo, 10000);
    s.connect(endpoint);
  }
  void send(zmq::message_t header, std::vector<std::string> data = {}) {
    Frames f;
    f.push_back(std::move(header));
    for (auto& d : data) f.emplace_back(d.data(), d.size());
    send_frames(s, f);
  }
  void send_raw(const std::string& bytes) { s.send(zmq::buffer(bytes), zmq::send_flags::none); }
  // The next message that is not a heartbeat, if one arrives within `wait`.
  std::optional<Frames> try_recv(std::chrono::milliseconds wait) {
    const auto deadline = std::chrono::steady_clock::now() + wait;
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      zmq::pollitem_t item{s.handle(), 0, ZMQ_POLLIN, 0};
      if (zmq::poll(&item, 1, std::max(left, std::chrono::milliseconds(0))) == 0) return std::nullopt;
      auto f = recv_frames(s, /*dont_wait=*/true);
      if (f && wire::decode((*f)[0])->body_type() != wire::Body::Heartbeat) return f;
    }
  }
  // Next message, skipping heartbeats.
  Frames recv() {
    for (;;) {
      auto f = recv_frames(s, /*dont_wait=*/false);
      REQUIRE(f.has_value());
      if (wire::decode((*f)[0])->body_type() != wire::Body::Heartbeat) return std::move(*f);
    }
  }
  uint64_t hello_client() {
    send(wire::encode_hello(wire::Role::Client, "", 0, getpid(), "raw", 1));
    auto f = recv();
    const auto* w = wire::decode(f[0])->body_as_Welcome();
    REQUIRE(w != nullptr);
    return w->session();
  }
  std::vector<wire::FailureInfo> sync(uint64_t session, uint64_t request) {
    wire::Instr s;
    s.kind = wire::InstrKind::Sync;
    s.request = request;
    send(wire::encode_batch(session, 1, std::span(&s, 1)));
    auto f = recv();
    const auto* r = wire::decode(f[0])->body_as_SyncReply();
    REQUIRE(r != nullptr);
    REQUIRE(r->request() == request);
    std::vector<wire::FailureInfo> out;
    if (r->errors()) {
      for (const auto* e : *r->errors()) out.push_back(wire::to_failure_info(e));
    }
    return out;
  }
};

inline wire::FailureInfo expect_error(Frames& f) {
  const auto* e = wire::decode(f[0])->body_as_ErrorReply();
  REQUIRE(e != nullptr);
  return wire::to_failure_info(e->error());
}

inline wire::Instr op(OpCode code, std::vector<uint64_t> outs, std::vector<uint64_t> ins,
                      std::vector<int64_t> ints = {}) {
  wire::Instr i;
  i.op = code;
  i.outputs = std::move(outs);
  i.inputs = std::move(ins);
  i.ints = std::move(ints);
  return i;
}

inline wire::Instr fetch_instr(uint64_t id, uint64_t request) {
  wire::Instr f;
  f.kind = wire::InstrKind::Fetch;
  f.inputs = {id};
  f.request = request;
  return f;
}

inline wire::Instr free_instr(std::vector<uint64_t> ids) {
  wire::Instr f;
  f.kind = wire::InstrKind::Free;
  f.inputs = std::move(ids);
  return f;
}

}  // namespace gt::test
