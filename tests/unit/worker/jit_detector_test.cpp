// The hot-path recorder and detector (worker/jit/recorder.h, detector.h):
// synthetic op streams fed through a fake client that allocates fresh ids,
// infers metas with the op table and batches its frees like the real one.

#include <chrono>
#include <cstdio>
#include <optional>
#include <random>
#include <unordered_map>
#include <vector>

#include <catch2/catch.hpp>

#include "common/op_table.h"
#include "common/wire.h"
#include "worker/jit/chain.h"
#include "worker/jit/detector.h"
#include "worker/jit/recorder.h"

namespace gt::worker::jit::test {
namespace {

using wire::TensorId;

/// One call into the recorder, kept to replay a stream (the cost test).
struct Event {
  enum Kind { Op, Free, Barrier } kind = Op;
  OpCode op = OpCode::Add;
  std::vector<int64_t> ints;
  std::vector<double> floats;
  DType dtype = DType::Float32;
  std::vector<TensorId> ins, outs;
  std::vector<TensorMeta> in_metas, out_metas;
};

/// A client in miniature: fresh ids for every result, metas from the op
/// table, frees queued and flushed in batches of `free_batch` ids (so their
/// stream positions drift from one iteration to the next), every detection
/// kept with the position it fired at.
class FakeClient {
 public:
  explicit FakeClient(RecorderOptions options = {}, size_t free_batch = 7)
      : rec(options), free_batch_(free_batch) {}

  SequenceRecorder rec;
  std::vector<Detection> detections;
  std::vector<Chain> chains;          // each detection's chain, extracted when it fired
  std::vector<uint64_t> fired_at;     // rec.position() right after the op that fired
  std::vector<Event>* log = nullptr;  // when set, every call is appended

  TensorId op(OpCode code, std::vector<TensorId> ins, std::vector<int64_t> ints = {},
              std::vector<double> floats = {}, DType dtype = DType::Float32) {
    std::vector<TensorMeta> in_metas;
    for (TensorId id : ins) in_metas.push_back(metas_.at(id));
    const OpInfo& info = op_info(code);
    std::vector<TensorMeta> out_metas = infer(info, OpCall{in_metas, ints, floats, dtype});
    std::vector<TensorId> outs;
    for (const TensorMeta& m : out_metas) {
      outs.push_back(next_id_);
      metas_[next_id_++] = m;
    }
    OpRecord r{code, ints, floats, dtype, ins, outs, in_metas, out_metas};
    if (log)
      log->push_back(Event{Event::Op, code, ints, floats, dtype, ins, outs, in_metas, out_metas});
    if (auto d = rec.record(r)) {
      detections.push_back(*d);
      chains.push_back(rec.chain(*d));
      fired_at.push_back(rec.position());
    }
    return outs.empty() ? 0 : outs[0];
  }
  TensorId input(Shape shape) { return op(OpCode::FromData, {}, shape); }
  void free(TensorId id) {
    pending_.push_back(id);
    if (pending_.size() >= free_batch_) flush();
  }
  void flush() {
    if (log) log->push_back(event(Event::Free, pending_));
    rec.on_free(pending_);
    for (TensorId id : pending_) metas_.erase(id);
    pending_.clear();
  }
  void fetch(TensorId id) {
    if (log) log->push_back(event(Event::Barrier, {id}));
    rec.on_barrier(std::span(&id, 1));
  }
  void sync() {
    if (log) log->push_back(event(Event::Barrier, {}));
    rec.on_barrier();
  }
  const TensorMeta& meta(TensorId id) const { return metas_.at(id); }

 private:
  static Event event(Event::Kind kind, std::vector<TensorId> ids) {
    Event e;
    e.kind = kind;
    e.ins = std::move(ids);
    return e;
  }

  size_t free_batch_;
  TensorId next_id_ = 100;
  std::unordered_map<TensorId, TensorMeta> metas_;
  std::vector<TensorId> pending_;
};

TensorMeta f32(Shape s) {
  return TensorMeta{std::move(s), DType::Float32};
}

/// Field-by-field equality (Chain itself has no operator==).
bool same(const Chain& a, const Chain& b) {
  return a.externals == b.externals && a.external_metas == b.external_metas && a.ops == b.ops &&
         a.escapes == b.escapes;
}

/// Number of produced values of a chain that escape.
int escaping(const Chain& c) {
  int n = 0;
  for (bool e : c.escapes) n += e ? 1 : 0;
  return n;
}

// ---- period 1 and heterogeneous loops ---------------------------------------

TEST_CASE("detector fires on a period-1 loop x = x + y", "[jit][unit]") {
  FakeClient c;
  TensorId x = c.input({4, 4});
  const TensorId y = c.input({4, 4});
  int fired_iteration = -1;
  for (int it = 1; it <= 40; ++it) {
    const TensorId next = c.op(OpCode::Add, {x, y});
    c.free(x);
    x = next;
    if (!c.detections.empty() && fired_iteration < 0) fired_iteration = it;
  }
  REQUIRE(c.detections.size() == 1);
  const Detection& d = c.detections[0];
  CHECK(d.period == 1);
  CHECK(d.repetitions == 10);
  // The first iteration reads the initial x; the next ten are identical.
  CHECK(fired_iteration == 11);

  const Chain chain = c.rec.chain(d);
  INFO(chain.describe());
  REQUIRE(chain.ops.size() == 1);
  CHECK(chain.ops[0].op == OpCode::Add);
  CHECK(chain.externals == 2);
  CHECK(chain.ops[0].inputs == std::vector<int32_t>{0, 1});
  REQUIRE(chain.produced() == 1);
  CHECK(chain.escapes[0]);  // the next iteration reads it
}

TEST_CASE("detector fires on a matmul -> add -> relu loop and starts it at the matmul",
          "[jit][unit]") {
  FakeClient c;
  const TensorId w = c.op(OpCode::Randn, {}, {16, 16});
  const TensorId b = c.op(OpCode::Randn, {}, {16});
  TensorId h = c.op(OpCode::Randn, {}, {8, 16});
  for (int it = 1; it <= 30; ++it) {
    const TensorId t1 = c.op(OpCode::Matmul, {h, w});
    const TensorId t2 = c.op(OpCode::Add, {t1, b});
    const TensorId next = c.op(OpCode::Relu, {t2});
    c.free(t1);
    c.free(t2);
    c.free(h);
    h = next;
  }
  REQUIRE(c.detections.size() == 1);
  const Detection& d = c.detections[0];
  CHECK(d.period == 3);
  CHECK(d.repetitions == 10);
  CHECK(c.fired_at[0] <= 3 + 11 * 3);
  CHECK(d.end() <= c.fired_at[0]);

  const Chain chain = c.rec.chain(d);
  INFO(chain.describe());
  REQUIRE(chain.ops.size() == 3);
  CHECK(chain.ops[0].op == OpCode::Matmul);
  CHECK(chain.ops[1].op == OpCode::Add);
  CHECK(chain.ops[2].op == OpCode::Relu);
  // Externals in order of first use: h, w, b; produced values after them.
  CHECK(chain.externals == 3);
  CHECK(chain.external_metas == std::vector<TensorMeta>{f32({8, 16}), f32({16, 16}), f32({16})});
  CHECK(chain.ops[0].inputs == std::vector<int32_t>{0, 1});
  CHECK(chain.ops[1].inputs == std::vector<int32_t>{3, 2});
  CHECK(chain.ops[2].inputs == std::vector<int32_t>{4});
  CHECK(chain.ops[2].output_metas == std::vector<TensorMeta>{f32({8, 16})});
  // The client freed the intermediates; the result feeds the next iteration.
  CHECK(chain.escapes == std::vector<bool>{false, false, true});
}

TEST_CASE("detector fires when every iteration uploads fresh data", "[jit][unit]") {
  FakeClient c;
  const TensorId w = c.op(OpCode::Randn, {}, {32, 8});
  for (int it = 1; it <= 20; ++it) {
    const TensorId x = c.input({4, 32});
    const TensorId y = c.op(OpCode::Matmul, {x, w});
    const TensorId z = c.op(OpCode::Tanh, {y});
    const TensorId s = c.op(OpCode::Sum, {z}, {0});
    c.fetch(s);
    for (TensorId id : {x, y, z, s}) c.free(id);
  }
  REQUIRE(c.detections.size() == 1);
  const Detection& d = c.detections[0];
  CHECK(d.period == 4);
  const Chain chain = c.rec.chain(d);
  INFO(chain.describe());
  CHECK(chain.ops[0].op == OpCode::FromData);  // right after the fetch, where the loop begins
  CHECK(chain.externals == 1);                 // w
  CHECK(chain.escapes == std::vector<bool>{false, false, false, true});  // the fetched sum
}

TEST_CASE("detector with threshold 2 fires at the first repetition", "[jit][unit]") {
  FakeClient c(RecorderOptions{.threshold = 2});
  TensorId x = c.input({3});
  for (int it = 1; it <= 6; ++it) {
    const TensorId a = c.op(OpCode::Exp, {x});
    const TensorId b = c.op(OpCode::Neg, {a});
    c.free(a);
    c.free(x);
    x = b;
  }
  REQUIRE(c.detections.size() == 1);
  CHECK(c.detections[0].period == 2);
  CHECK(c.detections[0].repetitions == 2);
  CHECK(c.fired_at[0] <= 1 + 3 * 2);  // by the end of the third iteration
}

// ---- whole units ---------------------------------------------------------------

/// A 5-layer MLP training step (forward, MSE loss fetched, backward, Adam),
/// 121 ops, every intermediate freed late in batches.
struct Mlp {
  struct Param {
    TensorId p, m, v;
  };
  std::vector<int64_t> dims{32, 16, 16, 16, 16, 10};
  std::vector<Param> w, b;
  int64_t batch = 8;

  explicit Mlp(FakeClient& c) {
    for (size_t l = 0; l + 1 < dims.size(); ++l) {
      w.push_back(make(c, {dims[l], dims[l + 1]}));
      b.push_back(make(c, {dims[l + 1]}));
    }
  }
  static Param make(FakeClient& c, Shape s) {
    return {c.op(OpCode::Randn, {}, s), c.op(OpCode::Zeros, {}, s), c.op(OpCode::Zeros, {}, s)};
  }
  static void adam(FakeClient& c, const Param& q, TensorId g) {
    c.op(OpCode::MulScalarInplace, {q.m}, {}, {0.9});
    c.op(OpCode::AddInplace, {q.m, g}, {}, {0.1});
    c.op(OpCode::MulScalarInplace, {q.v}, {}, {0.999});
    c.op(OpCode::AddcmulInplace, {q.v, g, g}, {}, {0.001});
    const TensorId denom = c.op(OpCode::Sqrt, {q.v});
    const TensorId denom2 = c.op(OpCode::AddScalar, {denom}, {}, {1e-8});
    c.op(OpCode::AddcdivInplace, {q.p, q.m, denom2}, {}, {-0.001});
    c.free(denom);
    c.free(denom2);
  }
  /// One training step; returns the loss id (fetched, freed next step).
  TensorId step(FakeClient& c) {
    const size_t layers = w.size();
    const TensorId x = c.input({batch, dims.front()});
    const TensorId y = c.input({batch, dims.back()});
    std::vector<TensorId> acts{x};
    std::vector<TensorId> trash{x, y};
    for (size_t l = 0; l < layers; ++l) {
      const TensorId z = c.op(OpCode::Matmul, {acts.back(), w[l].p});
      const TensorId zb = c.op(OpCode::Add, {z, b[l].p});
      trash.push_back(z);
      if (l + 1 < layers) {
        acts.push_back(c.op(OpCode::Relu, {zb}));
        trash.push_back(zb);
        trash.push_back(acts.back());
      } else {
        acts.push_back(zb);  // logits
        trash.push_back(zb);
      }
    }
    const TensorId d = c.op(OpCode::Sub, {acts.back(), y});
    const TensorId sq = c.op(OpCode::Mul, {d, d});
    const TensorId loss = c.op(OpCode::Mean, {sq}, {0});
    c.fetch(loss);
    trash.push_back(d);
    trash.push_back(sq);

    TensorId g = c.op(OpCode::MulScalar, {d}, {}, {2.0 / 80.0});
    trash.push_back(g);
    std::vector<TensorId> gw(layers), gb(layers);
    for (size_t l = layers; l-- > 0;) {
      gb[l] = c.op(OpCode::Sum, {g}, {0, 0});
      const TensorId at = c.op(OpCode::Transpose, {acts[l]}, {0, 1});
      gw[l] = c.op(OpCode::Matmul, {at, g});
      trash.push_back(at);
      if (l > 0) {
        const TensorId wt = c.op(OpCode::Transpose, {w[l].p}, {0, 1});
        const TensorId ga = c.op(OpCode::Matmul, {g, wt});
        const TensorId mask = c.op(OpCode::Sign, {acts[l]});
        g = c.op(OpCode::Mul, {ga, mask});
        for (TensorId id : {wt, ga, mask, g}) trash.push_back(id);
      }
    }
    for (TensorId id : trash) c.free(id);
    for (size_t l = 0; l < layers; ++l) {
      adam(c, w[l], gw[l]);
      adam(c, b[l], gb[l]);
    }
    for (size_t l = 0; l < layers; ++l) {  // zero_grad
      c.free(gw[l]);
      c.free(gb[l]);
    }
    return loss;
  }
};

TEST_CASE("detector finds a whole MLP training step and starts it at its first op", "[jit][unit]") {
  FakeClient c;
  Mlp mlp(c);
  const uint64_t setup = c.rec.position();
  TensorId loss = 0;
  std::vector<uint64_t> step_begin;
  int fired_step = -1;
  for (int step = 1; step <= 14; ++step) {
    step_begin.push_back(c.rec.position());
    const TensorId next = mlp.step(c);
    if (loss) c.free(loss);
    loss = next;
    if (!c.detections.empty() && fired_step < 0) fired_step = step;
  }
  const uint64_t unit = step_begin[1] - step_begin[0];
  CHECK(unit == 121);
  REQUIRE(c.detections.size() == 1);
  const Detection& d = c.detections[0];
  CHECK(d.period == unit);  // the whole step, not one Adam update
  CHECK(d.repetitions >= 10);
  CHECK(fired_step == 11);
  CHECK((d.start - setup) % unit == 0);  // phase: the step's first op

  const Chain chain = c.rec.chain(d);
  INFO(chain.describe());
  REQUIRE(chain.ops.size() == unit);
  CHECK(chain.ops[0].op == OpCode::FromData);
  CHECK(chain.ops[0].ints == std::vector<int64_t>{8, 32});
  CHECK(chain.ops.back().op == OpCode::AddcdivInplace);
  CHECK(chain.ops.back().output_metas.empty());
  // Parameters and Adam moments, in order of first use: W0, b0, W1, ...
  CHECK(chain.externals == 30);
  CHECK(chain.external_metas[0] == f32({32, 16}));
  CHECK(chain.external_metas[1] == f32({16}));
  // Only the fetched loss escapes: everything else is freed and not read later.
  CHECK(escaping(chain) == 1);
  int loss_value = -1;
  for (size_t o = 0, v = chain.externals; o < chain.ops.size(); ++o) {
    if (chain.ops[o].op == OpCode::Mean) loss_value = static_cast<int>(v);
    v += chain.ops[o].output_metas.size();
  }
  REQUIRE(loss_value >= chain.externals);
  CHECK(chain.escapes[loss_value - chain.externals]);
}

TEST_CASE("detector reports the whole unit when an update repeats inside it", "[jit][unit]") {
  // Six parameters of one shape get the same update, op for op and signature
  // for signature: period 3 inside a 22-op unit.
  FakeClient c;
  const TensorId w = c.op(OpCode::Randn, {}, {8, 4});
  struct P {
    TensorId p, m, v;
  };
  std::vector<P> params;
  for (int k = 0; k < 6; ++k) {
    params.push_back(
        {c.op(OpCode::Randn, {}, {4}), c.op(OpCode::Zeros, {}, {4}), c.op(OpCode::Ones, {}, {4})});
  }
  const uint64_t setup = c.rec.position();
  for (int it = 1; it <= 20; ++it) {
    const TensorId x = c.input({2, 8});
    const TensorId y = c.op(OpCode::Matmul, {x, w});
    const TensorId s = c.op(OpCode::Sum, {y}, {0});
    c.op(OpCode::Exp, {s});
    for (const P& q : params) {
      c.op(OpCode::MulScalarInplace, {q.m}, {}, {0.9});
      const TensorId t = c.op(OpCode::Sqrt, {q.v});
      c.op(OpCode::AddInplace, {q.p, t});
      c.free(t);
    }
    for (TensorId id : {x, y, s}) c.free(id);
  }
  REQUIRE(c.detections.size() == 1);
  CHECK(c.detections[0].period == 22);
  CHECK((c.detections[0].start - setup) % 22 == 0);
}

TEST_CASE("detector reports a sub-pattern that alone repeats threshold times, then the unit",
          "[jit][unit]") {
  // Documented behaviour: twelve identical updates in a row are a steady
  // state of their own (the detector cannot know more is coming); the whole
  // unit is a different steady state and is reported when it has repeated.
  FakeClient c;
  std::vector<TensorId> ps;
  for (int k = 0; k < 12; ++k) {
    ps.push_back(c.op(OpCode::Randn, {}, {4}));
    c.op(OpCode::Zeros, {}, {k + 1});  // keeps the setup itself from repeating
  }
  for (int it = 1; it <= 14; ++it) {
    const TensorId x = c.input({4});
    const TensorId e = c.op(OpCode::Exp, {x});
    for (TensorId p : ps) c.op(OpCode::MulScalarInplace, {p}, {}, {0.5});
    c.free(x);
    c.free(e);
  }
  REQUIRE(c.detections.size() == 2);
  CHECK(c.detections[0].period == 1);
  CHECK(c.detections[1].period == 14);
}

TEST_CASE("detector finds a long period of 600 ops", "[jit][unit]") {
  FakeClient c;
  TensorId x = c.input({4, 6});
  const OpCode unary[] = {OpCode::Exp, OpCode::Neg, OpCode::Tanh, OpCode::Sigmoid, OpCode::Abs};
  std::vector<TensorId> fired_ids;
  for (int it = 1; it <= 12; ++it) {
    for (int j = 0; j < 600; ++j) {
      TensorId next;
      if (j % 50 == 49) {
        next = c.op(OpCode::PowScalar, {x}, {}, {1.0 + j});
      } else {
        next = c.op(unary[(j * 7 + j / 5) % 5], {x});
      }
      c.free(x);
      x = next;
    }
  }
  REQUIRE(c.detections.size() == 1);
  CHECK(c.detections[0].period == 600);
  CHECK(c.detections[0].repetitions >= 10);
  const Chain chain = c.rec.chain(c.detections[0]);
  CHECK(chain.ops.size() == 600);
  CHECK(chain.externals == 1);
  CHECK(escaping(chain) == 1);  // only the value the next unit reads
}

TEST_CASE("detector counts repetitions beyond its window", "[jit][unit]") {
  // threshold * period (10 * 1000) is far more than the window (2048): the
  // run is counted as it goes, only one period and the unit need the window.
  FakeClient c(RecorderOptions{.window = 2048});
  TensorId x = c.input({3});
  int fired_iteration = -1;
  for (int it = 1; it <= 12 && fired_iteration < 0; ++it) {
    for (int j = 0; j < 1000; ++j) {
      const TensorId next = c.op(OpCode::PowScalar, {x}, {}, {static_cast<double>(j)});
      c.free(x);
      x = next;
    }
    if (!c.detections.empty()) fired_iteration = it;
  }
  REQUIRE(c.detections.size() == 1);
  CHECK(fired_iteration == 11);
  CHECK(c.detections[0].period == 1000);
  CHECK(c.detections[0].repetitions == 10);
  CHECK(c.chains[0].ops.size() == 1000);
}

TEST_CASE("detector ignores units longer than half the window", "[jit][unit]") {
  FakeClient c(RecorderOptions{.threshold = 3, .window = 256});
  TensorId x = c.input({5});
  for (int it = 1; it <= 8; ++it) {
    for (int j = 0; j < 150; ++j) {
      const TensorId next = c.op(OpCode::PowScalar, {x}, {}, {static_cast<double>(j)});
      c.free(x);
      x = next;
    }
  }
  CHECK(c.detections.empty());

  FakeClient ok(RecorderOptions{.threshold = 3, .window = 256});
  x = ok.input({5});
  for (int it = 1; it <= 8; ++it) {
    for (int j = 0; j < 128; ++j) {
      const TensorId next = ok.op(OpCode::PowScalar, {x}, {}, {static_cast<double>(j)});
      ok.free(x);
      x = next;
    }
  }
  REQUIRE(ok.detections.size() == 1);
  CHECK(ok.detections[0].period == 128);
  CHECK(ok.chains[0].ops.size() == 128);  // extracted when it fired; gone from the window now
  CHECK_THROWS_AS(ok.rec.chain(ok.detections[0]), std::out_of_range);
}

// ---- streams that must not fire -------------------------------------------------

/// Random ops on random recent values with random shapes: no unit repeats.
void random_stream(FakeClient& c, std::mt19937_64& rng, int ops, bool frees) {
  std::vector<TensorId> live;
  const Shape shapes[] = {{4, 4}, {4}, {2, 4}, {8, 4}};
  const OpCode unary[] = {OpCode::Exp, OpCode::Neg, OpCode::Tanh, OpCode::Relu, OpCode::Abs};
  const OpCode binary[] = {OpCode::Add, OpCode::Mul, OpCode::Sub};
  for (int i = 0; i < ops; ++i) {
    const int kind = static_cast<int>(rng() % 6);
    TensorId out;
    if (live.size() < 4 || kind == 0) {
      out = c.input(shapes[rng() % 4]);
    } else {
      const TensorId a = live[live.size() - 1 - rng() % std::min<size_t>(live.size(), 16)];
      if (kind <= 2) {
        out = c.op(unary[rng() % 5], {a});
      } else if (kind <= 4) {
        const TensorId b = live[live.size() - 1 - rng() % std::min<size_t>(live.size(), 16)];
        if (c.meta(a).shape.size() != c.meta(b).shape.size() ||
            c.meta(a).shape.back() != c.meta(b).shape.back()) {
          continue;
        }
        Shape sa = c.meta(a).shape, sb = c.meta(b).shape;
        if (sa.size() == 2 && sb.size() == 2 && sa[0] != sb[0]) continue;
        out = c.op(binary[rng() % 3], {a, b});
      } else {
        out = c.op(OpCode::PowScalar, {a}, {}, {static_cast<double>(rng() % 1000)});
      }
    }
    live.push_back(out);
    if (live.size() > 64) {
      if (frees) c.free(live.front());
      live.erase(live.begin());
    }
  }
}

TEST_CASE("detector never fires on a non-repeating stream, and memory stays bounded",
          "[jit][unit]") {
  const bool frees = GENERATE(true, false);
  INFO("client frees: " << frees);
  FakeClient c(RecorderOptions{.window = 1024});
  std::mt19937_64 rng(42);
  random_stream(c, rng, 20'000, frees);
  const size_t bytes = c.rec.memory_bytes();
  const size_t ids = c.rec.tracked_ids();
  random_stream(c, rng, 100'000, frees);
  CHECK(c.detections.empty());
  CHECK(c.rec.position() > 90'000);
  // Fixed after the first window: the slots reuse their buffers and the id
  // table holds at most the operands of the window's ops.
  CHECK(c.rec.memory_bytes() <= bytes + bytes / 10);
  // At most the ids named by 1.5 windows of ops (up to three each).
  CHECK(c.rec.tracked_ids() <= 3 * 1536);
  CHECK(c.rec.tracked_ids() <= 2 * ids + 64);
}

TEST_CASE("detector does not fire on units repeated fewer than threshold times", "[jit][unit]") {
  FakeClient c;
  TensorId x = c.input({6});
  for (int phase = 0; phase < 30; ++phase) {
    // A different 3-op loop each phase (the exponent changes), nine iterations.
    for (int it = 0; it < 9; ++it) {
      const TensorId a = c.op(OpCode::PowScalar, {x}, {}, {1.0 + phase});
      const TensorId b = c.op(OpCode::Tanh, {a});
      const TensorId e = c.op(OpCode::Exp, {b});
      for (TensorId id : {x, a, b}) c.free(id);
      x = e;
    }
  }
  CHECK(c.detections.empty());
}

// ---- steady states that change -------------------------------------------------

TEST_CASE("detector finds the new steady state after a shape change, once each", "[jit][unit]") {
  FakeClient c;
  const TensorId w = c.op(OpCode::Randn, {}, {16, 16});
  auto loop = [&](int64_t batch, int iterations) {
    for (int it = 0; it < iterations; ++it) {
      const TensorId x = c.input({batch, 16});
      const TensorId y = c.op(OpCode::Matmul, {x, w});
      const TensorId z = c.op(OpCode::Relu, {y});
      const TensorId s = c.op(OpCode::Sum, {z}, {0});
      c.fetch(s);
      for (TensorId id : {x, y, z, s}) c.free(id);
    }
  };
  loop(8, 15);
  REQUIRE(c.detections.size() == 1);
  loop(4, 15);
  REQUIRE(c.detections.size() == 2);
  const Detection a = c.detections[0];  // copies: the vector grows below
  const Detection b = c.detections[1];
  CHECK(a.period == 4);
  CHECK(b.period == 4);
  CHECK(a.key != b.key);
  const Chain cb = c.rec.chain(b);
  CHECK(cb.ops[0].ints == std::vector<int64_t>{4, 16});

  loop(8, 15);  // back to the first shape: already reported
  CHECK(c.detections.size() == 2);
  c.rec.reset();
  loop(8, 15);  // reset forgets what was reported
  REQUIRE(c.detections.size() == 3);
  CHECK(c.detections[2].key == a.key);
}

// ---- chains ---------------------------------------------------------------------

TEST_CASE("chain numbers externals by first use and handles in-place ops", "[jit][unit]") {
  FakeClient c;
  const TensorId p = c.op(OpCode::Randn, {}, {3});
  const TensorId q = c.op(OpCode::Randn, {}, {3});
  const TensorId r = c.op(OpCode::Randn, {}, {2, 3});
  for (int it = 0; it < 12; ++it) {
    const TensorId a = c.op(OpCode::Add, {q, p});       // q first: external 0
    const TensorId b = c.op(OpCode::Mul, {r, a});       // r: external 2
    c.op(OpCode::AddInplace, {p, a}, {}, {0.5});        // writes p (external 1)
    const TensorId s = c.op(OpCode::Sum, {b}, {0, 1});  // kept by the client
    c.free(a);
    c.free(b);
    (void)s;
  }
  REQUIRE(c.detections.size() == 1);
  const Detection d = c.detections[0];
  const Chain chain = c.rec.chain(d);
  INFO(chain.describe());
  REQUIRE(chain.ops.size() == 4);
  CHECK(chain.ops[0].op == OpCode::Add);
  CHECK(chain.externals == 3);
  CHECK(chain.external_metas == std::vector<TensorMeta>{f32({3}), f32({3}), f32({2, 3})});
  CHECK(chain.ops[0].inputs == std::vector<int32_t>{0, 1});
  CHECK(chain.ops[1].inputs == std::vector<int32_t>{2, 3});
  CHECK(chain.ops[2].inputs == std::vector<int32_t>{1, 3});
  CHECK(chain.ops[2].output_metas.empty());
  CHECK(chain.ops[2].floats == std::vector<double>{0.5});
  CHECK(chain.ops[3].inputs == std::vector<int32_t>{4});
  CHECK(chain.ops[3].ints == std::vector<int64_t>{0, 1});
  REQUIRE(chain.produced() == 3);
  // a and b are freed; the sums are never freed, so they escape.
  CHECK(chain.escapes == std::vector<bool>{false, false, true});
  const std::string text = chain.describe();
  CHECK_THAT(text, Catch::Contains("add_(%1, %3)"));
  CHECK_THAT(text, Catch::Contains("%5* = sum(%4)"));
}

TEST_CASE("chain escapes follow the client's frees, even when they arrive late", "[jit][unit]") {
  // free_batch: 1 frees at once; 40 frees several iterations late.
  const size_t free_batch = GENERATE(1, 40);
  const bool keep = GENERATE(false, true);
  INFO("free batch " << free_batch << ", client keeps the intermediate: " << keep);
  FakeClient c(RecorderOptions{}, free_batch);
  TensorId x = c.input({5});
  std::vector<TensorId> kept;
  for (int it = 0; it < 24; ++it) {
    const TensorId t = c.op(OpCode::Exp, {x});
    const TensorId u = c.op(OpCode::Neg, {t});
    const TensorId next = c.op(OpCode::AddScalar, {u}, {}, {1.0});
    if (keep) {
      kept.push_back(t);
    } else {
      c.free(t);
    }
    c.free(u);
    c.free(x);
    x = next;
  }
  REQUIRE(c.detections.size() == 1);
  const Chain chain = c.rec.chain(c.detections[0]);
  INFO(chain.describe());
  REQUIRE(chain.ops.size() == 3);
  CHECK(chain.ops[0].op == OpCode::Exp);
  CHECK(chain.escapes == std::vector<bool>{keep, false, true});
}

TEST_CASE("chain fetched values escape even when freed inside the unit", "[jit][unit]") {
  FakeClient c(RecorderOptions{}, 1);
  TensorId x = c.input({5});
  for (int it = 0; it < 15; ++it) {
    const TensorId t = c.op(OpCode::Exp, {x});
    const TensorId u = c.op(OpCode::Sigmoid, {t});
    c.fetch(u);
    const TensorId next = c.op(OpCode::Neg, {u});
    for (TensorId id : {t, u, x}) c.free(id);
    x = next;
  }
  REQUIRE(c.detections.size() == 1);
  const Chain chain = c.rec.chain(c.detections[0]);
  INFO(chain.describe());
  REQUIRE(chain.ops.size() == 3);
  // Every cut has one live value; the fetch puts the cut before neg.
  CHECK(chain.ops[0].op == OpCode::Neg);
  // neg's result feeds exp in the unit and is freed: it dies; exp's dies too;
  // sigmoid's is fetched (and read by the next unit).
  CHECK(chain.escapes == std::vector<bool>{false, false, true});

  // A value only fetched (then freed, read by no op) must still be
  // materialised.
  FakeClient only(RecorderOptions{}, 1);
  x = only.input({5});
  for (int it = 0; it < 15; ++it) {
    const TensorId t = only.op(OpCode::Exp, {x});
    only.fetch(t);
    const TensorId next = only.op(OpCode::Neg, {x});
    only.free(t);
    only.free(x);
    x = next;
  }
  REQUIRE(only.detections.size() == 1);
  const Chain c2 = only.rec.chain(only.detections[0]);
  INFO(c2.describe());
  REQUIRE(c2.ops.size() == 2);
  CHECK(c2.ops[0].op == OpCode::Neg);  // after the fetch
  CHECK(c2.escapes == std::vector<bool>{true, true});
}

TEST_CASE("chain digest is stable across iterations and differs with shapes", "[jit][unit]") {
  auto run = [](int64_t n, int iterations) {
    FakeClient c;
    const TensorId w = c.op(OpCode::Randn, {}, {n, n});
    TensorId h = c.op(OpCode::Randn, {}, {2, n});
    std::vector<Chain> chains;
    for (int it = 0; it < iterations; ++it) {
      const TensorId t1 = c.op(OpCode::Matmul, {h, w});
      const TensorId t2 = c.op(OpCode::Tanh, {t1});
      c.free(t1);
      c.free(h);
      h = t2;
      if (!c.detections.empty()) {
        // Every later unit in the same phase is the same chain.
        Detection d = c.detections[0];
        while (d.end() + d.period <= c.rec.position()) d.start += d.period;
        chains.push_back(c.rec.chain(d));
      }
    }
    return chains;
  };
  const std::vector<Chain> a = run(8, 20);
  REQUIRE(a.size() >= 5);
  for (const Chain& ch : a) {
    CHECK(same(ch, a[0]));
    CHECK(ch.digest() == a[0].digest());
  }
  const std::vector<Chain> again = run(8, 14);  // another recorder, same program
  REQUIRE(!again.empty());
  CHECK(again[0].digest() == a[0].digest());
  const std::vector<Chain> b = run(6, 14);
  REQUIRE(!b.empty());
  CHECK(b[0].digest() != a[0].digest());

  Chain changed = a[0];
  changed.escapes[0] = !changed.escapes[0];
  CHECK(changed.digest() != a[0].digest());
  changed = a[0];
  changed.ops[1].op = OpCode::Sigmoid;
  CHECK(changed.digest() != a[0].digest());
}

TEST_CASE("chain of a unit outside the window throws", "[jit][unit]") {
  FakeClient c(RecorderOptions{.threshold = 2, .window = 64});
  TensorId x = c.input({2});
  for (int it = 0; it < 200; ++it) {
    const TensorId next = c.op(OpCode::Exp, {x});
    c.free(x);
    x = next;
  }
  REQUIRE(c.detections.size() == 1);
  CHECK_THROWS_AS(c.rec.chain(c.detections[0]), std::out_of_range);
  Detection future = c.detections[0];
  future.start = c.rec.position();
  CHECK_THROWS_WITH(c.rec.chain(future), Catch::Contains("not in the window"));
}

// ---- phase ------------------------------------------------------------------------

TEST_CASE("detector phase prefers the op after a sync when cuts tie", "[jit][unit]") {
  // exp -> neg -> tanh on a loop-carried value: every cut has one live value.
  const bool with_sync = GENERATE(false, true);
  INFO("sync after neg: " << with_sync);
  FakeClient c;
  TensorId x = c.input({3});
  for (int it = 0; it < 20; ++it) {
    const TensorId a = c.op(OpCode::Exp, {x});
    const TensorId b = c.op(OpCode::Neg, {a});
    if (with_sync) c.sync();
    const TensorId next = c.op(OpCode::Tanh, {b});
    for (TensorId id : {x, a, b}) c.free(id);
    x = next;
  }
  REQUIRE(c.detections.size() == 1);
  const Chain chain = c.rec.chain(c.detections[0]);
  CHECK(chain.ops[0].op == (with_sync ? OpCode::Tanh : OpCode::Exp));
}

TEST_CASE("detector phase cuts where the fewest values are live", "[jit][unit]") {
  // The loop as issued starts at the matmul, where one value (the prepared
  // input) crosses; the cut before the upload crosses none. No barrier.
  FakeClient c;
  const TensorId w = c.op(OpCode::Randn, {}, {4, 4});
  TensorId pending = 0;
  TensorId pending2 = c.op(OpCode::Randn, {}, {4, 4});
  for (int it = 0; it < 20; ++it) {
    const TensorId a = c.op(OpCode::Matmul, {pending2, w});
    const TensorId s = c.op(OpCode::Sum, {a}, {0});
    for (TensorId id : {pending2, a, s}) c.free(id);
    if (pending) c.free(pending);
    pending = c.input({4, 4});
    pending2 = c.op(OpCode::Exp, {pending});
  }
  REQUIRE(c.detections.size() == 1);
  const Chain chain = c.rec.chain(c.detections[0]);
  INFO(chain.describe());
  CHECK(chain.ops[0].op == OpCode::FromData);
  CHECK(chain.externals == 1);
  CHECK(chain.escapes == std::vector<bool>{false, false, false, false});
}

// ---- the executor-facing entry -------------------------------------------------

TEST_CASE("recorder on_op reads wire instructions like record()", "[jit][unit]") {
  std::vector<wire::Instr> instrs;
  auto add = [&](OpCode code, std::vector<TensorId> outs, std::vector<TensorId> ins,
                 std::vector<int64_t> ints = {}, std::vector<double> floats = {}) {
    wire::Instr in;
    in.op = code;
    in.outputs = std::move(outs);
    in.inputs = std::move(ins);
    in.ints = std::move(ints);
    in.floats = std::move(floats);
    instrs.push_back(std::move(in));
  };
  TensorId next = 10;
  add(OpCode::Randn, {1}, {}, {4, 4});
  add(OpCode::Randn, {2}, {}, {4, 4});
  TensorId x = 1;
  for (int it = 0; it < 15; ++it) {
    const TensorId a = next++, b = next++;
    add(OpCode::Mul, {a}, {x, 2});
    add(OpCode::AddScalar, {b}, {a}, {}, {0.5});
    x = b;
  }
  zmq::message_t frame = wire::encode_batch(1, 1, instrs);
  const wire::Message* msg = wire::decode(frame);
  const auto* batch = msg->body_as_Batch();
  REQUIRE(batch);

  SequenceRecorder via_wire;
  SequenceRecorder via_record;
  std::vector<Detection> a, b;
  const TensorMeta m = f32({4, 4});
  for (size_t i = 0; i < batch->instructions()->size(); ++i) {
    const wire::Instruction& in = *batch->instructions()->Get(i);
    const std::vector<TensorMeta> in_metas(wire::view(in.inputs()).size(), m);
    const std::vector<TensorMeta> out_metas(wire::view(in.outputs()).size(), m);
    if (auto d = via_wire.on_op(in, in_metas, out_metas)) a.push_back(*d);
    const wire::Instr& plain = instrs[i];
    OpRecord r{plain.op,     plain.ints,    plain.floats, plain.dtype,
               plain.inputs, plain.outputs, in_metas,     out_metas};
    if (auto d = via_record.record(r)) b.push_back(*d);
    CHECK(via_wire.signature(i) == via_record.signature(i));
  }
  REQUIRE(a.size() == 1);
  REQUIRE(b.size() == 1);
  CHECK(a[0].period == 2);
  CHECK(a[0].key == b[0].key);
  CHECK(same(via_wire.chain(a[0]), via_record.chain(b[0])));

  OpRecord bad{OpCode::Exp, {}, {}, DType::Float32, std::span(&x, 1), {}, {}, {}};
  CHECK_THROWS_AS(via_record.record(bad), std::invalid_argument);
}

// ---- the detector alone -----------------------------------------------------------

TEST_CASE("hot path detector finds units in which no signature is unique", "[jit][unit]") {
  HotPathDetector det;
  const uint64_t unit[] = {1, 1, 2, 2};
  std::optional<Detection> d;
  uint64_t at = 0;
  for (int i = 0; i < 200 && !d; ++i) {
    d = det.push(unit[i % 4]);
    at = det.position();
  }
  REQUIRE(d);
  CHECK(d->period == 4);
  CHECK(at == 40);  // exactly ten units
  CHECK(d->repetitions == 10);
}

TEST_CASE("hot path detector keys do not depend on the phase", "[jit][unit]") {
  const uint64_t unit[] = {11, 12, 13, 14, 15, 16, 17};
  auto detect = [&](int offset, uint64_t noise) {
    HotPathDetector det(DetectorOptions{.threshold = 4});
    for (uint64_t k = 0; k < 5; ++k) (void)det.push(noise + k);
    for (int i = 0; i < 100; ++i) {
      if (auto d = det.push(unit[(i + offset) % 7])) return *d;
    }
    FAIL("no detection");
    return Detection{};
  };
  const Detection a = detect(0, 1000), b = detect(3, 2000);
  CHECK(a.period == 7);
  CHECK(b.period == 7);
  CHECK(a.key == b.key);
  CHECK(a.at_unit_start(a.start + 7 * 3));
  CHECK_FALSE(a.at_unit_start(a.start + 2));
}

TEST_CASE("hot path detector reports a steady state once until reset", "[jit][unit]") {
  HotPathDetector det(DetectorOptions{.threshold = 3});
  int reports = 0;
  auto feed = [&](std::initializer_list<uint64_t> unit, int reps) {
    for (int r = 0; r < reps; ++r) {
      for (uint64_t s : unit) reports += det.push(s) ? 1 : 0;
    }
  };
  feed({1, 2, 3}, 10);
  CHECK(reports == 1);
  feed({9}, 1);
  feed({2, 3, 1}, 10);  // the same loop in another phase
  CHECK(reports == 1);
  feed({4, 5}, 10);
  CHECK(reports == 2);
  det.reset();
  feed({1, 2, 3}, 10);
  CHECK(reports == 3);
}

TEST_CASE("hot path detector validates its options", "[jit][unit]") {
  CHECK_THROWS_WITH(HotPathDetector(DetectorOptions{.threshold = 1}),
                    Catch::Contains("threshold must be in [2"));
  CHECK_THROWS_AS(HotPathDetector(DetectorOptions{.window = 4}), std::invalid_argument);
  CHECK_THROWS_AS(SequenceRecorder(RecorderOptions{.threshold = 0}), std::invalid_argument);
  HotPathDetector det(DetectorOptions{.window = 1000});
  CHECK(det.window() == 1024);
  CHECK(det.max_period() == 512);
}

// ---- cost ----------------------------------------------------------------------------

TEST_CASE("recorder cost per op (prints, no assertions)", "[.][bench]") {
  auto replay = [](const std::vector<Event>& events, const char* what) {
    SequenceRecorder rec;
    size_t ops = 0, fired = 0;
    // Timed from the third window on: the first fills the slots' buffers.
    const size_t warm = 2 * rec.window();
    auto t0 = std::chrono::steady_clock::now();
    for (const Event& e : events) {
      switch (e.kind) {
        case Event::Op:
          if (++ops == warm) t0 = std::chrono::steady_clock::now();
          fired += rec.record(OpRecord{e.op, e.ints, e.floats, e.dtype, e.ins, e.outs, e.in_metas,
                                       e.out_metas})
                       ? 1
                       : 0;
          break;
        case Event::Free:
          rec.on_free(e.ins);
          break;
        case Event::Barrier:
          rec.on_barrier(e.ins);
          break;
      }
    }
    const double ns =
        std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count();
    std::printf(
        "%s: %.1f ns per op (frees and fetches included) over %zu ops, %zu detections, "
        "%zu KiB held\n",
        what, ns / static_cast<double>(ops - warm), ops - warm, fired, rec.memory_bytes() / 1024);
  };
  {
    FakeClient c;
    std::vector<Event> events;
    c.log = &events;
    Mlp mlp(c);
    TensorId loss = 0;
    for (int i = 0; i < 500; ++i) {
      const TensorId next = mlp.step(c);
      if (loss) c.free(loss);
      loss = next;
    }
    replay(events, "MLP training steps (121 ops each)");
  }
  {
    FakeClient c;
    std::vector<Event> events;
    c.log = &events;
    std::mt19937_64 rng(7);
    random_stream(c, rng, 60'000, true);
    replay(events, "random non-repeating stream");
  }
  {
    FakeClient c;
    std::vector<Event> events;
    c.log = &events;
    TensorId x = c.input({64, 64});
    const TensorId y = c.input({64, 64});
    for (int i = 0; i < 60'000; ++i) {
      const TensorId next = c.op(OpCode::Add, {x, y});
      c.free(x);
      x = next;
    }
    replay(events, "x = x + y");
  }
}

}  // namespace
}  // namespace gt::worker::jit::test

namespace gt::worker::jit::test {

TEST_CASE("without_uploads turns uploads into externals and renumbers the rest",
          "[jit][unit]") {
  // values: 0 = external w; 1 = upload x; 2 = x * w; 3 = exp(2) (escapes)
  Chain c;
  c.externals = 1;
  c.external_metas = {{{4}, DType::Float32}};
  c.ops.push_back(ChainOp{OpCode::FromData, {4}, {}, DType::Float32, {}, {}, {{{4}, DType::Float32}}});
  c.ops.push_back(ChainOp{OpCode::Mul, {}, {}, DType::Float32, {1, 0},
                          {{{4}, DType::Float32}, {{4}, DType::Float32}}, {{{4}, DType::Float32}}});
  c.ops.push_back(ChainOp{OpCode::Exp, {}, {}, DType::Float32, {2}, {{{4}, DType::Float32}},
                          {{{4}, DType::Float32}}});
  c.escapes = {false, false, true};
  const Chain out = without_uploads(c);
  REQUIRE(out.externals == 2);
  CHECK(out.external_metas.size() == 2);
  REQUIRE(out.ops.size() == 2);
  CHECK(out.ops[0].op == OpCode::Mul);
  CHECK(out.ops[0].inputs == std::vector<int32_t>{1, 0});  // the upload is external 1
  CHECK(out.ops[1].inputs == std::vector<int32_t>{2});     // mul's result is value 2
  CHECK(out.escapes == std::vector<bool>{false, true});
  CHECK(out.digest() != c.digest());
  Chain plain = out;
  CHECK(without_uploads(plain) == plain);
}

}  // namespace gt::worker::jit::test
