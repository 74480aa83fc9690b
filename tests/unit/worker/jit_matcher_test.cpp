// Matching instructions against a chain (worker/jit/matcher.h, Note [chain
// matching]): the ids of one iteration bind to the chain's values, and every
// kind of difference diverges.

#include <catch2/catch.hpp>

#include <map>
#include <optional>
#include <vector>

#include "worker/jit/matcher.h"

namespace gt::worker::jit::test {
namespace {

using wire::TensorId;

TensorMeta f32(Shape s) { return {std::move(s), DType::Float32}; }

// The unit of `h = relu(x * w + b)` (externals: x = 0, w = 1, b = 2; produced:
// 3 = x * w, 4 = + b, 5 = relu), with b broadcast over the rows.
Chain linear_relu() {
  Chain c;
  c.externals = 3;
  c.external_metas = {f32({4, 3}), f32({4, 3}), f32({3})};
  c.ops.push_back({OpCode::Mul, {}, {}, DType::Float32, {0, 1}, {f32({4, 3}), f32({4, 3})},
                   {f32({4, 3})}});
  c.ops.push_back({OpCode::Add, {}, {}, DType::Float32, {3, 2}, {f32({4, 3}), f32({3})},
                   {f32({4, 3})}});
  c.ops.push_back({OpCode::Relu, {}, {}, DType::Float32, {4}, {f32({4, 3})}, {f32({4, 3})}});
  c.escapes = {false, false, true};
  return c;
}

struct Stream {
  std::map<TensorId, TensorMeta> live;
  LiveMeta meta() {
    return [this](TensorId id) -> std::optional<TensorMeta> {
      auto it = live.find(id);
      if (it == live.end()) return std::nullopt;
      return it->second;
    };
  }
};

ChainMatcher::Step offer(ChainMatcher& m, Stream& s, OpCode op, std::vector<TensorId> in,
                         std::vector<TensorId> out, std::vector<double> floats = {}) {
  return m.offer(OfferedOp{op, {}, floats, DType::Float32, in, out}, s.meta());
}

}  // namespace

TEST_CASE("a matching iteration binds externals and produced values to its ids",
          "[jit][unit]") {
  const Chain c = linear_relu();
  ChainMatcher m(c);
  Stream s;
  s.live = {{10, f32({4, 3})}, {11, f32({4, 3})}, {12, f32({3})}};
  using S = ChainMatcher::Step;
  CHECK(offer(m, s, OpCode::Mul, {10, 11}, {20}) == S::Continue);
  CHECK(offer(m, s, OpCode::Add, {20, 12}, {21}) == S::Continue);
  CHECK(m.matched() == 2);
  REQUIRE(offer(m, s, OpCode::Relu, {21}, {22}) == S::Complete);
  CHECK(std::vector<TensorId>(m.external_ids().begin(), m.external_ids().end()) ==
        std::vector<TensorId>{10, 11, 12});
  CHECK(std::vector<TensorId>(m.produced_ids().begin(), m.produced_ids().end()) ==
        std::vector<TensorId>{20, 21, 22});
  // The next iteration, with fresh ids and the previous result as x, matches too.
  s.live[22] = f32({4, 3});
  CHECK(offer(m, s, OpCode::Mul, {22, 11}, {30}) == S::Continue);
  CHECK(offer(m, s, OpCode::Add, {30, 12}, {31}) == S::Continue);
  CHECK(offer(m, s, OpCode::Relu, {31}, {32}) == S::Complete);
  CHECK(m.external_ids()[0] == 22);
}

TEST_CASE("every kind of difference diverges and resets the matcher", "[jit][unit]") {
  const Chain c = linear_relu();
  ChainMatcher m(c);
  Stream s;
  s.live = {{10, f32({4, 3})}, {11, f32({4, 3})}, {12, f32({3})}, {13, f32({5, 3})},
            {14, f32({3})}};
  using S = ChainMatcher::Step;
  SECTION("another op") { CHECK(offer(m, s, OpCode::Sub, {10, 11}, {20}) == S::Diverged); }
  SECTION("another shape of an external (the guard)") {
    CHECK(offer(m, s, OpCode::Mul, {13, 11}, {20}) == S::Diverged);
  }
  SECTION("an external that is not live") {
    CHECK(offer(m, s, OpCode::Mul, {99, 11}, {20}) == S::Diverged);
  }
  SECTION("one tensor for two externals") {
    CHECK(offer(m, s, OpCode::Mul, {10, 10}, {20}) == S::Diverged);
  }
  SECTION("a produced value named by another id") {
    REQUIRE(offer(m, s, OpCode::Mul, {10, 11}, {20}) == S::Continue);
    CHECK(offer(m, s, OpCode::Add, {10, 12}, {21}) == S::Diverged);
  }
  SECTION("an external bound to another id at its second use") {
    Chain twice = linear_relu();
    twice.ops[1].inputs = {3, 0};  // x * w + x: x used twice
    twice.ops[1].input_metas = {f32({4, 3}), f32({4, 3})};
    ChainMatcher m2(twice);
    REQUIRE(offer(m2, s, OpCode::Mul, {10, 11}, {20}) == S::Continue);
    CHECK(offer(m2, s, OpCode::Add, {20, 11}, {21}) == S::Diverged);
  }
  SECTION("an output id the unit already used") {
    REQUIRE(offer(m, s, OpCode::Mul, {10, 11}, {20}) == S::Continue);
    CHECK(offer(m, s, OpCode::Add, {20, 12}, {20}) == S::Diverged);
  }
  SECTION("a different exponent (a float that selects the algorithm)") {
    Chain powered = linear_relu();
    powered.ops[2] = {OpCode::PowScalar, {}, {0.5}, DType::Float32, {4}, {f32({4, 3})}, {f32({4, 3})}};
    ChainMatcher m3(powered);
    REQUIRE(offer(m3, s, OpCode::Mul, {10, 11}, {20}) == S::Continue);
    REQUIRE(offer(m3, s, OpCode::Add, {20, 12}, {21}) == S::Continue);
    CHECK(offer(m3, s, OpCode::PowScalar, {21}, {22}, {2.0}) == S::Diverged);
  }
  SECTION("a different count of number operands") {
    Chain scaled = linear_relu();
    scaled.ops[2] = {OpCode::MulScalar, {}, {0.5}, DType::Float32, {4}, {f32({4, 3})}, {f32({4, 3})}};
    ChainMatcher m3(scaled);
    REQUIRE(offer(m3, s, OpCode::Mul, {10, 11}, {20}) == S::Continue);
    REQUIRE(offer(m3, s, OpCode::Add, {20, 12}, {21}) == S::Continue);
    CHECK(offer(m3, s, OpCode::MulScalar, {21}, {22}) == S::Diverged);
  }
  CHECK(m.matched() == 0);
  // After a divergence the next unit can still match from its first op.
  CHECK(offer(m, s, OpCode::Mul, {10, 11}, {40}) == S::Continue);
}

TEST_CASE("number operands of arithmetic ops are collected, not compared", "[jit][unit]") {
  // Note [dynamic scalars]: Adam's bias corrections change every step.
  Chain scaled = linear_relu();
  scaled.ops[2] = {OpCode::MulScalar, {}, {0.5}, DType::Float32, {4}, {f32({4, 3})}, {f32({4, 3})}};
  Stream s;
  s.live = {{10, f32({4, 3})}, {11, f32({4, 3})}, {12, f32({3})}};
  using S = ChainMatcher::Step;
  ChainMatcher m(scaled);
  for (double k : {0.25, 0.125}) {
    REQUIRE(offer(m, s, OpCode::Mul, {10, 11}, {20}) == S::Continue);
    REQUIRE(offer(m, s, OpCode::Add, {20, 12}, {21}) == S::Continue);
    REQUIRE(offer(m, s, OpCode::MulScalar, {21}, {22}, {k}) == S::Complete);
    CHECK(std::vector<double>(m.scalars().begin(), m.scalars().end()) == std::vector<double>{k});
  }
}

}  // namespace gt::worker::jit::test
