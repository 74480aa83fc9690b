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
  q.push(std::move(a), zmq::message_t(4), nullptr);
  q.push(std::move(c), zmq::message_t(8), nullptr);  // seals
  Instr d = op(3);
  d.op = gt::OpCode::FromData;
  q.push(std::move(d), zmq::message_t(2), nullptr);
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

namespace {

using gt::client::ScopeFrame;
using gt::client::ScopeRef;

ScopeRef frame(std::string name, ScopeRef parent = nullptr, bool backward = false) {
  const size_t depth = parent ? parent->depth + 1 : 1;
  return std::make_shared<const ScopeFrame>(
      ScopeFrame{std::move(name), backward, std::move(parent), depth});
}

// "enter a", "backward a", "exit" or the op's output id, one per instruction.
std::vector<std::string> describe(const std::vector<Instr>& instrs) {
  std::vector<std::string> out;
  for (const auto& in : instrs) {
    if (in.kind == InstrKind::Scope) {
      const auto action = static_cast<gt::wire::ScopeAction>(in.ints.at(0));
      out.push_back(action == gt::wire::ScopeAction::Exit ? "exit"
                    : action == gt::wire::ScopeAction::Enter ? "enter " + in.name
                                                             : "backward " + in.name);
    } else if (in.kind == InstrKind::Op) {
      out.push_back(std::to_string(in.outputs.at(0)));
    } else {
      out.push_back(in.kind == InstrKind::Free ? "free" : "other");
    }
  }
  return out;
}

}  // namespace

TEST_CASE("batch queue brings the stream into each op's scope first", "[batch][signal][unit]") {
  BatchQueue q(100);
  const ScopeRef a = frame("a");
  const ScopeRef ab = frame("b", a);
  const ScopeRef ac = frame("c", a);
  const ScopeRef other_a = frame("a");  // same name, another scope
  q.push(op(1), ab);
  q.push(op(2), ab);  // already there: no Scope instruction
  q.push(op(3), a);
  q.push(op(4), ac);
  q.push(op(5), ab);
  q.push_free(9);
  q.push(op(6), other_a);
  q.push(op(7), nullptr);
  q.push(op(8), nullptr);
  q.seal();
  Batch b;
  REQUIRE(q.pop(b));
  CHECK(describe(b.instrs) ==
        std::vector<std::string>{"enter a", "enter b", "1", "2", "exit", "3", "enter c", "4",
                                 "exit", "enter b", "5", "exit", "exit", "enter a", "6", "exit",
                                 "7", "8", "free"});
  for (const auto& in : b.instrs) {
    if (in.kind == InstrKind::Scope) CHECK(in.outputs.empty());  // scopes have no ids
  }
}

TEST_CASE("batch queue leaves the stream's scope alone for neutral instructions",
          "[batch][signal][unit]") {
  BatchQueue q(100);
  const ScopeRef s = frame("s");
  q.push(op(1), s);
  Instr sync;
  sync.kind = InstrKind::Sync;
  q.push(std::move(sync));  // scope-neutral: no exit before it
  q.push(op(2), s);         // still in s
  Instr fetch;
  fetch.kind = InstrKind::Fetch;
  fetch.inputs = {2};
  q.push_and_seal(std::move(fetch));
  Batch b;
  REQUIRE(q.pop(b));
  CHECK(describe(b.instrs) == std::vector<std::string>{"enter s", "1", "other", "2", "other"});
}

TEST_CASE("batch queue marks backward frames and spreads steps over batches",
          "[batch][signal][unit]") {
  BatchQueue q(2);
  const ScopeRef fwd = frame("fwd");
  const ScopeRef grads = frame("inner", frame("fwd", nullptr, true), true);
  Instr data = op(1);
  data.op = gt::OpCode::FromData;
  CHECK(q.push(std::move(data), zmq::message_t(4), grads));  // two steps seal a batch
  q.push(op(2), fwd);
  q.seal();
  std::vector<Instr> stream;
  Batch b;
  std::vector<size_t> sizes;
  while (q.pop(b)) {
    sizes.push_back(b.instrs.size());
    for (auto& in : b.instrs) {
      if (in.kind == InstrKind::Op && in.op == gt::OpCode::FromData) {
        REQUIRE(in.payload == 0);  // counted in its own batch, after the steps
        CHECK(b.payloads.size() == 1);
      }
      stream.push_back(std::move(in));
    }
  }
  CHECK(sizes == std::vector<size_t>{2, 2, 2, 1});
  CHECK(describe(stream) == std::vector<std::string>{"backward fwd", "backward inner", "1",
                                                     "exit", "exit", "enter fwd", "2"});
}
