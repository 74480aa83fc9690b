// The sharding rules without processes: instructions in, per-worker
// instructions out (dispatcher/sharding.h).

#include <catch2/catch.hpp>

#include <chrono>
#include <numeric>

#include "common/config.h"
#include "dispatcher/sharding.h"

using namespace gt;
using namespace gt::dispatcher;

namespace {

// Feeds plain instructions through a ShardedSession as the dispatcher does.
struct Rig {
  ShardedSession session;
  ClusterView cluster;
  uint64_t tag = 1;
  Frames frames;  // [identity, header, data...] of the last batch

  Rig(int workers, const char* yaml)
      : session(0, std::make_shared<const Config>(detail::parse_config(yaml, "test.yaml"))) {
    for (int w = 0; w < workers; ++w) cluster.workers.push_back(w);
    cluster.next_tag = &tag;
  }

  Outputs run(std::vector<wire::Instr> instrs, std::vector<std::vector<char>> data = {}) {
    frames.clear();
    frames.emplace_back();
    frames.push_back(wire::encode_batch(1, 1, instrs));
    for (auto& d : data) frames.emplace_back(d.data(), d.size());
    const wire::Message* msg = wire::decode(frames[1]);
    std::vector<Payload> payloads;
    for (size_t i = 2; i < frames.size(); ++i) {
      payloads.push_back(std::make_shared<zmq::message_t>(std::move(frames[i])));
    }
    Outputs out;
    for (const auto* in : *msg->body_as_Batch()->instructions()) {
      session.rewrite(*in, payloads, cluster, out);
    }
    return out;
  }
};

wire::Instr scope(const std::string& name, wire::ScopeAction a = wire::ScopeAction::Enter) {
  wire::Instr s;
  s.kind = wire::InstrKind::Scope;
  s.ints = {static_cast<int64_t>(a)};
  s.name = name;
  return s;
}

wire::Instr op(OpCode code, std::vector<wire::TensorId> out, std::vector<wire::TensorId> in,
               std::vector<int64_t> ints = {}) {
  wire::Instr i;
  i.op = code;
  i.outputs = std::move(out);
  i.inputs = std::move(in);
  i.ints = std::move(ints);
  return i;
}

std::vector<char> floats_bytes(int n) {
  std::vector<float> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), 0.0f);
  const auto* p = reinterpret_cast<const char*>(v.data());
  return std::vector<char>(p, p + v.size() * sizeof(float));
}

size_t count_kind(const WorkerOutput& o, wire::InstrKind k) {
  size_t n = 0;
  for (const auto& i : o.instrs) n += i.kind == k;
  return n;
}

}  // namespace

TEST_CASE("split sizes follow torch.tensor_split", "[sharding]") {
  // common/shape.h: the rule of shard layouts and of reduce_scatter.
  CHECK(split_sizes(7, 3) == std::vector<int64_t>{3, 2, 2});
  CHECK(split_sizes(6, 3) == std::vector<int64_t>{2, 2, 2});
  CHECK(split_sizes(2, 3) == std::vector<int64_t>{1, 1, 0});
  CHECK(split_sizes(8, 2) == std::vector<int64_t>{4, 4});
  CHECK(split_sizes(0, 2) == std::vector<int64_t>{0, 0});
  CHECK_THROWS_AS(split_sizes(4, 0), std::invalid_argument);
}

TEST_CASE("slice_rows and concat_rows are inverse along every axis", "[sharding]") {
  const Shape shape{3, 4, 5};
  std::vector<char> data(60 * 4);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 7 + 1);
  for (int axis = 0; axis < 3; ++axis) {
    const auto sizes = split_sizes(shape[static_cast<size_t>(axis)], 3);
    std::vector<std::vector<char>> parts;
    std::vector<Shape> shapes;
    int64_t begin = 0;
    for (int64_t rows : sizes) {
      parts.push_back(slice_rows(data, shape, axis, begin, rows, 4));
      Shape s = shape;
      s[static_cast<size_t>(axis)] = rows;
      shapes.push_back(s);
      begin += rows;
    }
    std::vector<std::span<const char>> views(parts.begin(), parts.end());
    CHECK(concat_rows(views, shapes, axis, 4) == data);
  }
}

TEST_CASE("concat_rows of empty shards returns at once, however many outer rows", "[sharding]") {
  // A (2^40, 0) tensor split along axis 1: 2^40 outer rows of nothing. The
  // join used to visit each of them (a dispatcher stalled for hours by one
  // fetch; found by the sharding fuzzer, corpus timeout-empty-rows-gather).
  const std::vector<Shape> shapes{{int64_t{1} << 40, 0}, {int64_t{1} << 40, 0}};
  const std::vector<std::span<const char>> parts(2);
  const auto t0 = std::chrono::steady_clock::now();
  CHECK(concat_rows(parts, shapes, 1, 4).empty());
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(1));
}

TEST_CASE("creation in a split scope sends each worker its rows", "[sharding]") {
  Rig rig(2, "rows: {shard: {axis: 0}}");
  wire::Instr t = op(OpCode::FromData, {1}, {}, {3, 2});
  t.payload = 0;
  const Outputs out = rig.run({scope("rows"), t}, {floats_bytes(6)});
  REQUIRE(out.size() == 2);
  CHECK(out.at(0).instrs.at(0).ints == std::vector<int64_t>{2, 2});
  CHECK(out.at(1).instrs.at(0).ints == std::vector<int64_t>{1, 2});
  CHECK(out.at(0).data.at(0).size() == 16);
  CHECK(out.at(1).data.at(0).size() == 8);
  const float* second = static_cast<const float*>(out.at(1).data.at(0).data());
  CHECK(second[0] == 4.0f);
  CHECK(rig.session.find(1)->layout == Layout{{0, 1}, 0});
  const FetchPlan f = rig.session.plan_fetch(1);
  REQUIRE(f.parts.size() == 2);
  CHECK(f.axis == 0);
  CHECK(f.parts[1].shape == Shape{1, 2});
}

TEST_CASE("a matmul split on the contraction dim ends in an all_reduce", "[sharding]") {
  Rig rig(2, "k: {shard: {axis: -1}}\nkr: {shard: {axis: 0}}");
  const Outputs out = rig.run({scope("k"), op(OpCode::Zeros, {1}, {}, {4, 6}),
                               scope("", wire::ScopeAction::Exit), scope("kr"),
                               op(OpCode::Ones, {2}, {}, {6, 3}),
                               scope("", wire::ScopeAction::Exit),
                               op(OpCode::Matmul, {3}, {1, 2})});
  for (int w : {0, 1}) {
    const auto& instrs = out.at(w).instrs;
    REQUIRE(instrs.size() == 3);  // the all_reduce waits for a use
    CHECK(instrs[2].op == OpCode::Matmul);
  }
  CHECK(rig.session.deferred_sums() == 1);
  Outputs done;
  rig.session.barrier(done);  // a fetch or sync completes it
  CHECK(rig.session.deferred_sums() == 0);
  for (int w : {0, 1}) {
    const auto& instrs = done.at(w).instrs;
    REQUIRE(instrs.size() == 1);
    CHECK(instrs[0].kind == wire::InstrKind::Collective);
    CHECK(static_cast<int>(instrs[0].op) == 1);  // all_reduce
    CHECK(instrs[0].ints == std::vector<int64_t>{2, 0, 1, 0, 0, 4, 3});
    CHECK(instrs[0].inputs == std::vector<wire::TensorId>{3});
  }
  CHECK(rig.session.find(3)->layout == Layout{{0, 1}, -1});
}

TEST_CASE("deferred sums are completed in one bucket at their first use", "[sharding]") {
  Rig rig(2, "rows: {shard: {axis: 0}}");
  // Three partial sums of a split tensor: a sum, a mean and an unread sum.
  const Outputs first = rig.run({scope("rows"), op(OpCode::Ones, {1}, {}, {4, 3}),
                                 scope("", wire::ScopeAction::Exit),
                                 op(OpCode::Sum, {2}, {1}, {0, 0}),
                                 op(OpCode::Mean, {3}, {1}, {0}),
                                 op(OpCode::Sum, {4}, {1}, {0})});
  for (int w : {0, 1}) CHECK(count_kind(first.at(w), wire::InstrKind::Collective) == 0);
  CHECK(rig.session.deferred_sums() == 3);
  wire::Instr free;
  free.kind = wire::InstrKind::Free;
  free.inputs = {4};
  // The unread sum is freed (never reduced); reading the mean completes both others.
  const Outputs second = rig.run({free, op(OpCode::Exp, {5}, {3})});
  CHECK(rig.session.deferred_sums() == 0);
  for (int w : {0, 1}) {
    const auto& instrs = second.at(w).instrs;
    REQUIRE(instrs.size() == 4);
    CHECK(instrs[0].kind == wire::InstrKind::Free);
    CHECK(instrs[1].kind == wire::InstrKind::Collective);
    CHECK(instrs[1].inputs == std::vector<wire::TensorId>{2, 3});
    // [n, workers, sum, 0, element counts]: the sum over dim 0 has 3, the mean 1.
    CHECK(instrs[1].ints == std::vector<int64_t>{2, 0, 1, 0, 0, 3, 1});
    CHECK(instrs[2].op == OpCode::MulScalarInplace);  // the mean's 1/count
    CHECK(instrs[2].inputs == std::vector<wire::TensorId>{3});
    CHECK(instrs[2].floats == std::vector<double>{1.0 / 12});
    CHECK(instrs[3].op == OpCode::Exp);
  }
}

TEST_CASE("linear ops keep a partial sum deferred; a consumed one waits", "[sharding]") {
  Rig rig(2, "rows: {shard: {axis: 0}}");
  auto scaled = [](wire::TensorId out, wire::TensorId in, double by) {
    wire::Instr i = op(OpCode::MulScalar, {out}, {in});
    i.floats = {by};
    return i;
  };
  // A weight gradient's path: matmul over the split rows (a partial sum),
  // transpose (a view of it), a copy scaled by 1 (a new partial sum); and a
  // mean viewed by reshape, of which the scale must be applied once.
  const Outputs first = rig.run({scope("rows"), op(OpCode::Ones, {1}, {}, {4, 3}),
                                 op(OpCode::Ones, {2}, {}, {4, 2}),
                                 scope("", wire::ScopeAction::Exit),
                                 op(OpCode::Transpose, {3}, {1}, {0, 1}),
                                 op(OpCode::Matmul, {4}, {3, 2}),      // (3, 2), partial
                                 op(OpCode::Transpose, {5}, {4}, {0, 1}),
                                 scaled(6, 5, 1.0),                     // consumes 4's family
                                 op(OpCode::Mean, {7}, {1}, {0}),       // scalar, partial
                                 op(OpCode::Reshape, {8}, {7}, {1}),    // a view: same family
                                 op(OpCode::Reshape, {9}, {5}, {6})});  // 5 may not be contiguous
  // The reshape of the transposed view cannot follow it (it may copy), so it
  // completes the sums: the family it names (4's, though consumed) and every
  // one not consumed (6's and the mean's), in one bucket.
  for (int w : {0, 1}) {
    const auto& instrs = first.at(w).instrs;
    std::vector<const wire::Instr*> collectives;
    for (const auto& i : instrs) {
      if (i.kind == wire::InstrKind::Collective) collectives.push_back(&i);
    }
    REQUIRE(collectives.size() == 1);
    CHECK(collectives[0]->inputs == std::vector<wire::TensorId>{4, 6, 7});
    CHECK(collectives[0]->ints == std::vector<int64_t>{2, 0, 1, 0, 0, 6, 6, 1});
    size_t scales = 0;
    for (const auto& i : instrs) scales += i.op == OpCode::MulScalarInplace;
    CHECK(scales == 1);  // the mean's, once for 7 and its view 8
    CHECK(instrs.back().op == OpCode::Reshape);
  }
  CHECK(rig.session.deferred_sums() == 0);

  // Without that reshape, a use of the scaled copy completes it alone: its
  // consumed source stays deferred until it is freed.
  const Outputs second = rig.run({op(OpCode::Matmul, {10}, {3, 2}),
                                  op(OpCode::Transpose, {11}, {10}, {0, 1}),
                                  scaled(12, 11, 2.0), op(OpCode::Exp, {13}, {12})});
  for (int w : {0, 1}) {
    const auto& instrs = second.at(w).instrs;
    REQUIRE(count_kind(second.at(w), wire::InstrKind::Collective) == 1);
    const auto& reduce = instrs.at(instrs.size() - 2);
    CHECK(reduce.inputs == std::vector<wire::TensorId>{12});
    CHECK(reduce.ints == std::vector<int64_t>{2, 0, 1, 0, 0, 2, 3});  // the plain form
  }
  CHECK(rig.session.deferred_sums() == 1);  // 10 and its view 11
  wire::Instr free;
  free.kind = wire::InstrKind::Free;
  free.inputs = {10, 11};
  rig.run({free});
  CHECK(rig.session.deferred_sums() == 0);
}

TEST_CASE("mismatched layouts are resharded with collectives and temporaries freed",
          "[sharding]") {
  Rig rig(2, "rows: {shard: {axis: 0}}\ncols: {shard: {axis: 1}}");
  const Outputs out = rig.run({scope("rows"), op(OpCode::Ones, {1}, {}, {4, 4}),
                               scope("", wire::ScopeAction::Exit), scope("cols"),
                               op(OpCode::Ones, {2}, {}, {4, 4}),
                               scope("", wire::ScopeAction::Exit), op(OpCode::Add, {3}, {1, 2})});
  for (int w : {0, 1}) {
    const auto& o = out.at(w);
    CHECK(count_kind(o, wire::InstrKind::Collective) == 1);  // all_gather of the columns
    CHECK(count_kind(o, wire::InstrKind::Free) == 1);        // the temporaries
    const auto& add = o.instrs.at(o.instrs.size() - 2);
    CHECK(add.op == OpCode::Add);
    CHECK(add.inputs[0] == 1);
    CHECK(add.inputs[1] >= kTempIdBase);
  }
  CHECK(rig.session.find(3)->layout == Layout{{0, 1}, 0});
}

TEST_CASE("backward frames follow the signal's backward entry", "[sharding]") {
  Rig rig(3, "f: {shard: {axis: 0, workers: [0, 1]}, backward: g}\ng: {shard: {replicated: true, workers: [2]}}");
  rig.run({scope("f", wire::ScopeAction::EnterBackward)});
  CHECK(rig.session.current_entry()->name == "g");
  const Outputs out = rig.run({op(OpCode::Zeros, {1}, {}, {2})});
  CHECK(out.size() == 1);
  CHECK(out.count(2) == 1);
}

TEST_CASE("a payload index on an op other than an upload is not forwarded", "[sharding]") {
  // Found by tests/fuzz/sharding_fuzz.cpp: a randn carrying payload 0 went to
  // the workers as is, naming a data frame their batches did not have.
  Rig rig(2, "rows: {shard: {axis: 0}}");
  wire::Instr r = op(OpCode::Randn, {1}, {}, {4, 2});
  r.payload = 0;
  wire::Instr t = op(OpCode::FromData, {2}, {}, {4, 2});
  t.payload = 1;
  const Outputs out = rig.run({scope("rows"), r, t}, {floats_bytes(8), floats_bytes(8)});
  REQUIRE(out.size() == 2);
  for (const auto& [w, o] : out) {
    INFO("worker " << w);
    REQUIRE(o.data.size() == 1);  // the upload's rows only
    for (const auto& i : o.instrs) {
      if (i.op == OpCode::FromData) CHECK(i.payload == 0);
      else CHECK(i.payload == -1);
    }
  }
}

TEST_CASE("the rewriter refuses what clients may not send", "[sharding]") {
  Rig rig(2, "rows: {shard: {axis: 0}}");
  wire::Instr c;
  c.kind = wire::InstrKind::Collective;
  CHECK_THROWS_AS(rig.run({c}), RewriteError);
  CHECK_THROWS_AS(rig.run({scope("", wire::ScopeAction::Exit)}), RewriteError);
  CHECK_THROWS_AS(rig.run({op(OpCode::Ones, {kTempIdBase + 1}, {}, {2})}), RewriteError);
  Rig two(1, "far: {shard: {replicated: true, workers: [1]}}");
  try {
    two.run({scope("far"), op(OpCode::Ones, {1}, {}, {2})});
    FAIL("expected a refusal");
  } catch (const RewriteError& e) {
    CHECK(e.message.find("signal 'far'") != std::string::npos);
  }
}

TEST_CASE("a compile scope is bracketed by unit markers on each worker it reaches",
          "[sharding]") {
  Rig rig(2, "step: {shard: {axis: 0}, compile: true}\nplain: {shard: {replicated: true}}");
  const Outputs out = rig.run({scope("step"), op(OpCode::Ones, {1}, {}, {4, 2}),
                               op(OpCode::Relu, {2}, {1}), scope("", wire::ScopeAction::Exit),
                               scope("plain"), op(OpCode::Ones, {3}, {}, {2})});
  for (int w : {0, 1}) {
    const auto& instrs = out.at(w).instrs;
    REQUIRE(instrs.size() == 5);
    CHECK(instrs[0].kind == wire::InstrKind::Scope);
    CHECK(instrs[0].ints == std::vector<int64_t>{3});  // unit begin
    CHECK(instrs[0].name == "step");
    CHECK(instrs[1].op == OpCode::Ones);
    CHECK(instrs[2].op == OpCode::Relu);
    CHECK(instrs[3].ints == std::vector<int64_t>{4});  // unit end, at the exit
    CHECK(instrs[4].op == OpCode::Ones);               // outside the unit
  }
  // A fetch or sync inside the scope ends the unit there.
  Outputs more = rig.run({scope("step"), op(OpCode::Ones, {4}, {}, {2, 2})});
  rig.session.barrier(more);
  CHECK(more.at(0).instrs.back().ints == std::vector<int64_t>{4});
}
