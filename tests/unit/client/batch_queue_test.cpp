#include <catch2/catch.hpp>

#include <gt/error.h>

#include "client/internal/batch_queue.h"

using gt::client::Batch;
using gt::client::BatchQueue;
using gt::wire::Instr;
using gt::wire::InstrKind;

namespace {
Instr op(uint64_t out) {
  Instr in;
  in.op = gt::OpCode::Zeros;
  in.outputs = {out};
  return in;
}
}  // namespace

TEST_CASE("batch queue wakes the IO thread once per batch", "[batch][unit]") {
  BatchQueue q(8);
  CHECK(q.push(op(1)));        // the open batch starts: wake for its timer
  CHECK_FALSE(q.push(op(2)));  // already open
  CHECK_FALSE(q.push_free(7));
  CHECK(q.open_size() == 2);
  Batch b;
  CHECK_FALSE(q.pop(b));  // nothing sealed yet
}

TEST_CASE("batch queue seals at the size bound", "[batch][unit]") {
  BatchQueue q(3);
  CHECK(q.push(op(1)));
  CHECK_FALSE(q.push(op(2)));
  CHECK(q.push(op(3)));  // sealed: wake
  CHECK(q.open_size() == 0);
  CHECK(q.push(op(4)));  // a new batch opens
  Batch b;
  REQUIRE(q.pop(b));
  REQUIRE(b.instrs.size() == 3);
  CHECK(b.instrs[0].outputs[0] == 1);
  CHECK(b.instrs[2].outputs[0] == 3);
  CHECK_FALSE(q.pop(b));
}

TEST_CASE("batch queue appends frees as one Free at the end", "[batch][unit]") {
  BatchQueue q(100);
  q.push(op(1));
  q.push_free(5);
  q.push(op(2));
  q.push_free(6);
  q.seal();
  Batch b;
  REQUIRE(q.pop(b));
  REQUIRE(b.instrs.size() == 3);
  CHECK(b.instrs[2].kind == InstrKind::Free);
  CHECK(b.instrs[2].inputs == std::vector<uint64_t>{5, 6});
  // Frees alone make a batch too.
  CHECK(q.push_free(9));
  q.seal();
  REQUIRE(q.pop(b));
  REQUIRE(b.instrs.size() == 1);
  CHECK(b.instrs[0].kind == InstrKind::Free);
  // Sealing an empty queue makes nothing.
  q.seal();
  CHECK_FALSE(q.pop(b));
}

TEST_CASE("batch queue seals an old batch when due", "[batch][unit]") {
  using namespace std::chrono_literals;
  BatchQueue q(100);
  const auto t0 = BatchQueue::Clock::now();
  CHECK_FALSE(q.seal_if_due(t0, 1ms).has_value());  // nothing open
  q.push(op(1));
  auto due = q.seal_if_due(BatchQueue::Clock::now(), 10s);
  REQUIRE(due.has_value());
  CHECK(*due > t0);
  Batch b;
  CHECK_FALSE(q.pop(b));
  CHECK_FALSE(q.seal_if_due(BatchQueue::Clock::now() + 11s, 10s).has_value());
  CHECK(q.pop(b));
}

TEST_CASE("batch queue numbers payload frames per batch", "[batch][unit]") {
  BatchQueue q(2);
  Instr a = op(1);
  a.op = gt::OpCode::FromData;
  Instr c = op(2);
  c.op = gt::OpCode::FromData;
  q.push(std::move(a), zmq::message_t(4));
  q.push(std::move(c), zmq::message_t(8));  // seals
  Instr d = op(3);
  d.op = gt::OpCode::FromData;
  q.push(std::move(d), zmq::message_t(2));
  q.seal();
  Batch b;
  REQUIRE(q.pop(b));
  REQUIRE(b.payloads.size() == 2);
  CHECK(b.instrs[0].payload == 0);
  CHECK(b.instrs[1].payload == 1);
  CHECK(b.payloads[1].size() == 8);
  REQUIRE(q.pop(b));
  CHECK(b.instrs[0].payload == 0);  // indices restart in each batch
  CHECK(b.payloads.size() == 1);
}

TEST_CASE("batch queue refuses instructions after close", "[batch][unit]") {
  BatchQueue q(10);
  q.push(op(1));
  q.close();
  CHECK(q.closed());
  CHECK_THROWS_AS(q.push(op(2)), gt::Error);
  CHECK_FALSE(q.push_free(3));
  Batch b;
  CHECK_FALSE(q.pop(b));
}
