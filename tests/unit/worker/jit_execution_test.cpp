// Compiled execution inside the executor (Note [compiled execution] and
// Note [dead values] in worker/executor.cpp): an in-process CompileService
// compiles what the session's recorder promotes, drain() waits for it, and the
// following batches run matched units compiled. Every case checks values
// against LibTorch and the JIT's counters for which path ran.
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "tests/unit/worker/worker_test_support.h"
#include "worker/collectives/communicators.h"
#include "worker/collectives/store.h"
#include "worker/jit/compile_service.h"
#include "tests/support/temp_dir.h"

namespace gt::worker::test {
namespace {

namespace fs = std::filesystem;

using gt::test::TempDir;

// GT_COMPILE=1 (promote at the first repetition) without the timed trial, so
// that every matched unit after the compile runs compiled.
struct JitHarness {
  explicit JitHarness(int recompile_limit = 8,
                      std::shared_ptr<collectives::CommunicatorProvider> communicators = nullptr,
                      uint64_t session_memory_limit = 0) {
    jit::JitOptions o;
    o.compile_all = true;
    o.trial_units = 0;
    o.recompile_limit = recompile_limit;
    o.cache_dir = cache.path;
    service = std::make_shared<jit::CompileService>(o, 0, quiet_logger());
    h = std::make_unique<Harness>(ExecutorOptions{0, at::kCPU, 0, quiet_logger(), service,
                                                  std::move(communicators),
                                                  session_memory_limit});
  }
  TempDir cache;
  std::shared_ptr<jit::CompileService> service;
  std::unique_ptr<Harness> h;
};

// One iteration of x = ((x * 0.5 + b).relu() - 0.25).sigmoid() * 2, as the
// client issues it: fresh ids, the intermediates and the old x freed.
struct Loop {
  TensorId x, b;
  std::vector<TensorId> dead;  // ids the next Free releases
  std::vector<TensorId> mids;  // x * 0.5 + b of each iteration, in order

  void iterate(Harness& h, std::vector<Instr>& out, bool free_mid = true) {
    const TensorId t1 = h.next_id++, t2 = h.next_id++, t3 = h.next_id++, t4 = h.next_id++,
                   t5 = h.next_id++, y = h.next_id++;
    out.push_back(op(OpCode::MulScalar, {t1}, {x}, {}, {0.5}));
    out.push_back(op(OpCode::Add, {t2}, {t1, b}));
    out.push_back(op(OpCode::Relu, {t3}, {t2}));
    out.push_back(op(OpCode::SubScalar, {t4}, {t3}, {}, {0.25}));
    out.push_back(op(OpCode::Sigmoid, {t5}, {t4}));
    out.push_back(op(OpCode::MulScalar, {y}, {t5}, {}, {2.0}));
    for (TensorId id : {x, t1, t3, t4, t5}) dead.push_back(id);
    if (free_mid) dead.push_back(t2);
    mids.push_back(t2);
    x = y;
  }
  /// A batch of `n` iterations ending in one Free, like the client's.
  std::vector<Instr> batch(Harness& h, int n, bool free_mid = true) {
    std::vector<Instr> out;
    for (int i = 0; i < n; ++i) iterate(h, out, free_mid);
    out.push_back(free_instr(dead));
    dead.clear();
    return out;
  }
};

at::Tensor torch_iterate(const at::Tensor& x, const at::Tensor& b, int n) {
  at::Tensor y = x;
  for (int i = 0; i < n; ++i) y = ((y * 0.5 + b).relu() - 0.25).sigmoid() * 2.0;
  return y;
}

}  // namespace

TEST_CASE("compiled units elide the intermediates the batch frees", "[worker][unit][jit]") {
  JitHarness j;
  Harness& h = *j.h;
  const at::Tensor x0 = at::randn({1000}), b = at::randn({1000});
  Loop loop{h.put(x0), h.put(b), {}, {}};
  h.run(loop.batch(h, 3));  // promoted at the first repetition
  j.service->drain();
  REQUIRE(j.service->stats().compiled == 2);  // the elided and the escaping variant
  const size_t live_before = h.ex.tensor_count(h.session);
  h.run(loop.batch(h, 10));
  const jit::JitStats st = j.service->stats();
  CHECK(st.runs == 10);
  CHECK(st.elided_runs == 10);
  CHECK(st.fallbacks == 0);
  CHECK(h.ex.tensor_count(h.session) == live_before);  // nothing leaked, nothing extra
  check_same(h.get(loop.x), torch_iterate(x0, b, 13));
  CHECK(h.sync().empty());
}

TEST_CASE("a value read or kept after its unit is materialised", "[worker][unit][jit]") {
  JitHarness j;
  Harness& h = *j.h;
  const at::Tensor x0 = at::randn({64, 8}), b = at::randn({8});
  Loop loop{h.put(x0), h.put(b), {}, {}};
  h.run(loop.batch(h, 3));
  j.service->drain();

  SECTION("fetched later in the same batch, before its Free") {
    std::vector<Instr> batch;
    loop.iterate(h, batch);
    const TensorId mid = loop.mids.back();
    batch.push_back(fetch(mid, 5));  // a Fetch flushes nothing here: the unit is complete
    batch.push_back(free_instr(loop.dead));
    loop.dead.clear();
    h.run(batch);
    CHECK(j.service->stats().runs == 1);
    CHECK(j.service->stats().elided_runs == 0);
    const auto* r = h.reply(h.replies.size() - 1)->body_as_FetchReply();
    REQUIRE(r != nullptr);
    CHECK(r->request() == 5);
  }
  SECTION("read by an op after the unit") {
    std::vector<Instr> batch;
    loop.iterate(h, batch);
    const TensorId mid = loop.mids.back(), doubled = h.next_id++;
    batch.push_back(op(OpCode::MulScalar, {doubled}, {mid}, {}, {2.0}));
    batch.push_back(free_instr(loop.dead));
    loop.dead.clear();
    h.run(batch);
    // The last op (a multiply by a number, like the unit's first) starts a
    // unit that waits for the next batch; a Sync runs it.
    CHECK(h.sync().empty());
    CHECK(j.service->stats().elided_runs == 0);
    const at::Tensor x3 = torch_iterate(x0, b, 3);
    check_same(h.get(doubled), (x3 * 0.5 + b) * 2.0);
  }
  SECTION("not freed: the client still holds it") {
    h.run(loop.batch(h, 4, /*free_mid=*/false));
    CHECK(j.service->stats().runs == 4);
    CHECK(j.service->stats().elided_runs == 0);
    const at::Tensor x6 = torch_iterate(x0, b, 6);
    check_same(h.get(loop.mids.back()), x6 * 0.5 + b);
  }
  SECTION("freed only in the next batch") {
    std::vector<Instr> batch;
    loop.iterate(h, batch);
    const TensorId mid = loop.mids.back();
    h.run(batch);  // no Free in this batch at all
    CHECK(j.service->stats().elided_runs == 0);
    check_same(h.get(mid), torch_iterate(x0, b, 3) * 0.5 + b);
    h.run1(free_instr(loop.dead));
    loop.dead.clear();
    CHECK_FALSE(h.ex.tensor(h.session, mid).has_value());
  }
  check_same(h.get(loop.x), torch_iterate(x0, b, static_cast<int>(loop.mids.size())));
  CHECK(h.sync().empty());
}

TEST_CASE("a unit cut by a fetch runs eagerly; one cut by the end of its batch completes in the next",
          "[worker][unit][jit]") {
  JitHarness j;
  Harness& h = *j.h;
  const at::Tensor x0 = at::randn({100}), b = at::randn({100});
  Loop loop{h.put(x0), h.put(b), {}, {}};
  h.run(loop.batch(h, 3));
  j.service->drain();
  std::vector<Instr> batch;
  loop.iterate(h, batch);
  // A fetch of the unit's input between its ops: the held ops flush to eager.
  batch.insert(batch.begin() + 3, fetch(loop.b, 9));
  // The next unit stops halfway at the end of the batch.
  std::vector<Instr> half;
  loop.iterate(h, half);
  batch.insert(batch.end(), half.begin(), half.begin() + 3);
  h.run(batch);
  std::vector<Instr> rest(half.begin() + 3, half.end());
  rest.push_back(free_instr(loop.dead));
  loop.dead.clear();
  h.run(rest);
  CHECK(j.service->stats().runs == 1);  // the unit that spanned the two batches
  CHECK(j.service->stats().elided_runs == 1);
  check_same(h.get(loop.x), torch_iterate(x0, b, 5));
  // A unit spanning three batches, and a Sync arriving mid-unit.
  std::vector<Instr> third;
  loop.iterate(h, third);
  h.run({third[0], third[1]});
  h.run({third[2], third[3]});
  h.run({third[4], third[5], free_instr(loop.dead)});
  loop.dead.clear();
  CHECK(j.service->stats().runs == 2);
  std::vector<Instr> cut;
  loop.iterate(h, cut);
  h.run({cut[0], cut[1], cut[2]});
  CHECK(h.sync().empty());  // runs the held half eagerly first
  h.run({cut[3], cut[4], cut[5], free_instr(loop.dead)});
  loop.dead.clear();
  CHECK(h.sync().empty());  // cut[5] may start a unit: the Sync runs it
  CHECK(j.service->stats().runs == 2);
  check_same(h.get(loop.x), torch_iterate(x0, b, 7));
  CHECK(h.sync().empty());
}

TEST_CASE("flush_held runs a held half unit eagerly (a stats request is a sync point)",
          "[worker][unit][jit]") {
  JitHarness j;
  Harness& h = *j.h;
  const at::Tensor x0 = at::randn({50}), b = at::randn({50});
  Loop loop{h.put(x0), h.put(b), {}, {}};
  h.run(loop.batch(h, 3));
  j.service->drain();
  std::vector<Instr> unit;
  loop.iterate(h, unit);
  h.run({unit[0], unit[1], unit[2]});
  const TensorId mid = loop.mids.back();
  CHECK_FALSE(h.ex.tensor(h.session, mid).has_value());  // held for the next batch
  h.ex.flush_held(h.session, h.sink);
  check_same(h.get(mid), torch_iterate(x0, b, 3) * 0.5 + b);
  h.ex.flush_held(h.session, h.sink);  // nothing held: no effect
  h.ex.flush_held(12345, h.sink);      // unknown session: ignored
  h.run({unit[3], unit[4], unit[5], free_instr(loop.dead)});
  loop.dead.clear();
  CHECK(h.sync().empty());
  CHECK(j.service->stats().runs == 0);
  check_same(h.get(loop.x), torch_iterate(x0, b, 4));
}

TEST_CASE("a collective runs a held half unit eagerly first", "[worker][unit][jit][collectives]") {
  // Communicators of the one-worker group [0]: Gloo with a single rank.
  JitHarness j(8, std::make_shared<collectives::CommunicatorProvider>(
                      collectives::gloo_communicator_factory(
                          std::make_shared<collectives::InMemoryStore>(), "127.0.0.1",
                          std::chrono::seconds(5))));
  Harness& h = *j.h;
  const at::Tensor x0 = at::randn({50}), b = at::randn({50});
  Loop loop{h.put(x0), h.put(b), {}, {}};
  h.run(loop.batch(h, 3));
  j.service->drain();
  std::vector<Instr> unit;
  loop.iterate(h, unit);
  const TensorId mid = loop.mids.back();
  // All-reducing the unit's intermediate mid-unit: the held ops must run first.
  Instr reduce;
  reduce.kind = InstrKind::Collective;
  reduce.op = static_cast<OpCode>(collectives::Collective::AllReduce);
  reduce.ints = {1, 0, 0, 0, 50};
  reduce.inputs = {mid};
  h.run({unit[0], unit[1], unit[2], reduce});
  check_same(h.get(mid), torch_iterate(x0, b, 3) * 0.5 + b);
  h.run({unit[3], unit[4], unit[5], free_instr(loop.dead)});
  loop.dead.clear();
  CHECK(h.sync().empty());
  CHECK(j.service->stats().runs == 0);
  check_same(h.get(loop.x), torch_iterate(x0, b, 4));
}

TEST_CASE("a compiled unit whose results would pass the session's memory limit runs eagerly",
          "[worker][unit][jit]") {
  // Note [session memory]: 100000 bytes per session; x, b and each value of
  // an iteration are 4000 bytes (the eager warm-up holds 20 of them).
  JitHarness j(8, nullptr, 100000);
  Harness& h = *j.h;
  const at::Tensor x0 = at::randn({1000}), b = at::randn({1000});
  Loop loop{h.put(x0), h.put(b), {}, {}};
  h.run(loop.batch(h, 3));
  j.service->drain();
  // Under the limit every unit runs compiled (the bound passes the limit
  // halfway and is recounted).
  h.run(loop.batch(h, 4));
  CHECK(j.service->stats().runs == 4);
  CHECK(j.service->stats().fallbacks == 0);
  CHECK(h.sync().empty());
  // 90000 more bytes: x, b and this leave room for no 4000-byte result.
  const TensorId big = h.put(at::zeros({22500}));
  CHECK(h.sync().empty());
  h.run(loop.batch(h, 1));
  CHECK(j.service->stats().runs == 4);
  CHECK(j.service->stats().fallbacks == 1);
  // The unit's first op, run eagerly, is the one that fails.
  const auto failures = h.sync();
  REQUIRE(failures.size() == 1);
  CHECK(failures[0].op == "mul_scalar");
  CHECK_THAT(failures[0].message,
             Catch::Contains("out of memory for this session") &&
                 Catch::Contains("over the limit of 100000 bytes per session"));
  // Freeing makes room: the loop goes on compiled from the last good x.
  h.run1(free_instr({big}));
  Loop again{h.put(torch_iterate(x0, b, 7)), loop.b, {}, {}};
  h.run(again.batch(h, 1));
  CHECK(j.service->stats().runs == 5);
  CHECK(h.sync().empty());
  check_same(h.get(again.x), torch_iterate(x0, b, 8));
}

TEST_CASE("a loop body with another shape is compiled as another variant and both run",
          "[worker][unit][jit]") {
  JitHarness j;
  Harness& h = *j.h;
  const at::Tensor xa = at::randn({256}), xb = at::randn({32, 4}), b = at::randn({4});
  Loop a{h.put(xa), h.put(at::randn({256})), {}, {}};
  const at::Tensor ba = h.get(a.b).clone();
  Loop c{h.put(xb), h.put(b), {}, {}};
  h.run(a.batch(h, 3));
  h.run(c.batch(h, 3));
  j.service->drain();
  REQUIRE(j.service->stats().compiled == 4);
  for (int round = 0; round < 3; ++round) {
    h.run(a.batch(h, 2));
    h.run(c.batch(h, 2));
  }
  CHECK(j.service->stats().runs == 12);
  check_same(h.get(a.x), torch_iterate(xa, ba, 9));
  check_same(h.get(c.x), torch_iterate(xb, b, 9));
  CHECK(h.sync().empty());
}

TEST_CASE("GT_RECOMPILE_LIMIT bounds the variants of one loop body", "[worker][unit][jit]") {
  JitHarness j(/*recompile_limit=*/2);
  Harness& h = *j.h;
  std::vector<Loop> loops;
  std::vector<at::Tensor> x0s;
  for (int64_t n : {16, 24, 40}) {
    x0s.push_back(at::randn({n}));
    loops.push_back(Loop{h.put(x0s.back()), h.put(at::ones({n})), {}, {}});
  }
  for (Loop& l : loops) h.run(l.batch(h, 3));
  j.service->drain();
  const jit::JitStats st = j.service->stats();
  CHECK(st.limited == 1);
  CHECK(st.compiled == 4);  // two variants (elided, escaping) of the first two shapes
  for (Loop& l : loops) h.run(l.batch(h, 2));
  CHECK(j.service->stats().runs == 4);  // the third shape stays eager
  for (size_t i = 0; i < loops.size(); ++i) {
    check_same(h.get(loops[i].x), torch_iterate(x0s[i], at::ones_like(x0s[i]), 5));
  }
  CHECK(h.sync().empty());
}

TEST_CASE("a loop whose numbers change every iteration is compiled once and runs with them",
          "[worker][unit][jit]") {
  // Adam's shape: the step size and a bias correction change every step
  // (Note [dynamic scalars] in worker/jit/chain.h).
  JitHarness j;
  Harness& h = *j.h;
  const at::Tensor x0 = at::rand({300}) + 0.5, p0 = at::randn({300});
  const TensorId x = h.put(x0), p = h.put(p0);
  at::Tensor want = p0.clone();
  int step = 0;
  auto batch = [&](int n) {
    std::vector<Instr> out;
    std::vector<TensorId> dead;
    for (int i = 0; i < n; ++i) {
      ++step;
      const double correction = 1.0 - std::pow(0.9, step), lr = 0.01 / correction;
      const TensorId a = h.next_id++, d = h.next_id++;
      out.push_back(op(OpCode::DivScalar, {a}, {x}, {}, {std::sqrt(correction)}));
      out.push_back(op(OpCode::AddScalar, {d}, {a}, {}, {1e-3}));
      out.push_back(op(OpCode::AddcdivInplace, {}, {p, x, d}, {}, {-lr}));
      dead.insert(dead.end(), {a, d});
      want.addcdiv_(x0, x0 / std::sqrt(correction) + 1e-3, -lr);
    }
    out.push_back(free_instr(dead));
    return out;
  };
  h.run(batch(3));
  j.service->drain();
  REQUIRE(j.service->stats().compiled >= 1);
  h.run(batch(10));
  CHECK(j.service->stats().runs == 10);
  CHECK(j.service->stats().detected == 1);  // one chain for every step's numbers
  check_same(h.get(p), want);
  CHECK(h.sync().empty());
}

TEST_CASE("GT_RECOMPILE_LIMIT is read from the environment", "[worker][unit][jit]") {
  ::setenv("GT_RECOMPILE_LIMIT", "3", 1);
  CHECK(jit::jit_options_from_env().recompile_limit == 3);
  ::setenv("GT_RECOMPILE_LIMIT", "0", 1);
  CHECK_THROWS_WITH(jit::jit_options_from_env(), Catch::Contains("GT_RECOMPILE_LIMIT"));
  ::unsetenv("GT_RECOMPILE_LIMIT");
  CHECK(jit::jit_options_from_env().recompile_limit == 8);
}

}  // namespace gt::worker::test
