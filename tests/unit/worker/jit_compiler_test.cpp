// The hot-path JIT's compiler: graph partitioning, generated CPU kernels
// against LibTorch eager, and the on-disk compile cache.

#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <string>
#include <thread>
#include <vector>

// LibTorch before Catch (see worker_test_support.h).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <catch2/catch.hpp>

#include "worker/jit/compiled_chain.h"
#include "worker/jit/compiler_cpu.h"
#include "worker/jit/graph.h"
#include "worker/kernels.h"
#include "common/env.h"
#include "tests/support/temp_dir.h"

namespace gt::worker::jit::test {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr DType F32 = DType::Float32;
constexpr DType F64 = DType::Float64;

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

using gt::test::TempDir;

CpuCompilerConfig config_in(const fs::path& dir) {
  CpuCompilerConfig c;
  c.compiler = default_compiler();
  c.cache_dir = dir;
  return c;
}


/// Builds a chain the way the recorder numbers it (Note [chain values]):
/// externals first, then ops, with metas from the op table.
struct ChainBuilder {
  Chain chain;
  std::vector<TensorMeta> metas;

  int32_t external(Shape shape, DType t = F32) {
    REQUIRE(chain.ops.empty());
    metas.push_back({std::move(shape), t});
    chain.external_metas.push_back(metas.back());
    return chain.externals++;
  }

  int32_t op(OpCode code, std::vector<int32_t> inputs, std::vector<int64_t> ints = {},
             std::vector<double> floats = {}, DType dtype = F32) {
    ChainOp o;
    o.op = code;
    o.inputs = std::move(inputs);
    o.ints = std::move(ints);
    o.floats = std::move(floats);
    o.dtype = dtype;
    for (int32_t v : o.inputs) o.input_metas.push_back(metas.at(v));
    const OpCall call{o.input_metas, o.ints, o.floats, dtype};
    o.output_metas = infer(op_info(code), call);
    int32_t out = -1;
    for (const TensorMeta& m : o.output_metas) {
      out = static_cast<int32_t>(metas.size());
      metas.push_back(m);
      chain.escapes.push_back(false);
    }
    chain.ops.push_back(std::move(o));
    return out;
  }

  Chain done(const std::vector<int32_t>& escaping) {
    for (int32_t v : escaping) chain.escapes.at(v - chain.externals) = true;
    return chain;
  }
};

std::vector<at::Tensor> clones(const std::vector<at::Tensor>& ts) {
  std::vector<at::Tensor> out;
  for (const at::Tensor& t : ts) out.push_back(t.clone());
  return out;
}

at::Tensor randn(std::vector<int64_t> shape, DType t = F32) {
  return at::randn(shape, at::TensorOptions().dtype(to_scalar_type(t)));
}

/// Positive values away from zero (for log, sqrt, division).
at::Tensor positive(std::vector<int64_t> shape, DType t = F32) {
  return at::rand(shape, at::TensorOptions().dtype(to_scalar_type(t))) + 0.25;
}

/// Runs `chain` compiled and eagerly on copies of `inputs` and checks that the
/// results and the externals afterwards (in-place updates) agree.
std::unique_ptr<CompiledChain> check_chain(const Chain& chain, const std::vector<at::Tensor>& inputs,
                                           CpuCompiler& compiler, const FusionOptions& options = {},
                                           const Tolerance& tolerance = {}) {
  auto compiled = std::make_unique<CompiledChain>(chain, compiler, options);
  INFO(compiled->graph().describe());
  std::vector<at::Tensor> eager_in = clones(inputs), compiled_in = clones(inputs);
  const std::vector<at::Tensor> expected = run_eager(chain, eager_in);
  const std::vector<at::Tensor> actual = compiled->run(compiled_in);
  const auto diff = compare_results(expected, actual, tolerance);
  INFO("results: " << diff.value_or("agree"));
  CHECK_FALSE(diff.has_value());
  const auto ext_diff = compare_results(eager_in, compiled_in, tolerance);
  INFO("externals: " << ext_diff.value_or("agree"));
  CHECK_FALSE(ext_diff.has_value());
  // The eager path of the compiled chain is the same as run_eager.
  std::vector<at::Tensor> again_in = clones(inputs);
  const auto again = compiled->run_eager(again_in);
  CHECK_FALSE(compare_results(expected, again, Tolerance{0, 0, 0, 0}).has_value());
  return compiled;
}

const std::string kTrivialSource =
    "extern \"C\" int gt_test_answer(int x) { return x + 42; }\n";

using AnswerFn = int (*)(int);

// ---- graph --------------------------------------------------------------------------

TEST_CASE("jit run-time numbers replace the recorded ones in fused and library steps",
          "[jit][unit]") {
  TempDir dir;
  CpuCompiler compiler(config_in(dir.path));
  ChainBuilder b;
  const int32_t x = b.external({5, 40});
  const int32_t p = b.external({5, 40});
  const int32_t m = b.external({5, 40});
  const int32_t y = b.op(OpCode::MulScalar, {x}, {}, {0.5});
  const int32_t z = b.op(OpCode::AddScalar, {y}, {}, {1.0});
  const int32_t r = b.op(OpCode::Relu, {z});
  const int32_t q = b.op(OpCode::DivScalar, {r}, {}, {4.0});
  b.op(OpCode::AddcdivInplace, {p, m, q}, {}, {-0.1});  // Adam's parameter update
  const Chain chain = b.done({q});
  const CompiledChain compiled(chain, compiler);
  REQUIRE(compiled.graph().fused_groups() == 1);
  CHECK(compiled.graph().default_scalars == std::vector<double>{0.5, 1.0, 4.0, -0.1});
  // The digest leaves the numbers out: a chain with other numbers is the same.
  Chain other = chain;
  other.ops[0].floats = {3.0};
  CHECK(other.digest() == chain.digest());
  CHECK(build_graph(other).default_scalars == std::vector<double>{3.0, 1.0, 4.0, -0.1});

  const at::Tensor tx = randn({5, 40}), tp = randn({5, 40}), tm = randn({5, 40});
  for (const std::vector<double>& s :
       {std::vector<double>{0.5, 1.0, 4.0, -0.1}, std::vector<double>{-2.0, 0.25, 3.0, 0.01}}) {
    INFO("numbers " << s[0] << ", " << s[1] << ", " << s[2] << ", " << s[3]);
    RunOptions o;
    o.scalars = s;
    std::vector<at::Tensor> in = {tx, tp.clone(), tm};
    const auto out = compiled.run(in, o);
    const at::Tensor want_q = (tx * s[0] + s[1]).relu() / s[2];
    CHECK(at::allclose(out[3], want_q, 1e-6, 1e-6));
    CHECK(at::allclose(in[1], tp + s[3] * tm / want_q, 1e-5, 1e-5));
    std::vector<at::Tensor> eager_in = {tx, tp.clone(), tm};
    const auto eager = compiled.run_eager(eager_in, o);
    CHECK_FALSE(compare_results(eager, out).has_value());
  }
  RunOptions bad;
  const std::vector<double> three{1.0, 2.0, 3.0};
  bad.scalars = three;
  std::vector<at::Tensor> in = {tx, tp.clone(), tm};
  CHECK_THROWS_WITH(compiled.run(in, bad), Catch::Contains("expected 4 run-time numbers, got 3"));
}

TEST_CASE("jit graph fuses elementwise runs around library ops", "[jit][unit]") {
  ChainBuilder b;
  const int32_t x = b.external({4, 8});
  const int32_t w = b.external({8, 3});
  const int32_t bias = b.external({3});
  const int32_t a = b.op(OpCode::MulScalar, {x}, {}, {2.0});
  const int32_t c = b.op(OpCode::Relu, {a});
  const int32_t d = b.op(OpCode::Matmul, {c, w});
  const int32_t e = b.op(OpCode::Add, {d, bias});
  const int32_t f = b.op(OpCode::Tanh, {e});
  const int32_t g = b.op(OpCode::Sum, {f}, {0});
  const Graph graph = build_graph(b.done({g}));
  INFO(graph.describe());
  REQUIRE(graph.steps.size() == 4);
  CHECK(graph.fused_groups() == 2);
  CHECK(graph.fused_ops() == 4);
  const Step& s0 = graph.steps[0];
  REQUIRE(s0.kind == StepKind::Fused);
  CHECK(s0.group.inputs == std::vector<int32_t>{x});
  CHECK(s0.group.outputs == std::vector<int32_t>{c});  // `a` dies inside
  CHECK(s0.group.shape == Shape{4, 8});
  CHECK(graph.steps[1].kind == StepKind::Library);
  CHECK(graph.steps[1].op == 2);
  const Step& s2 = graph.steps[2];
  REQUIRE(s2.kind == StepKind::Fused);
  CHECK(s2.group.inputs == std::vector<int32_t>{d, bias});
  CHECK(s2.group.outputs == std::vector<int32_t>{f});
  CHECK(graph.steps[3].kind == StepKind::Library);
  // c dies after the matmul, d after the second group, f after the sum.
  CHECK(graph.dead_after[1] == std::vector<int32_t>{c});
  CHECK(graph.dead_after[2] == std::vector<int32_t>{d});
  CHECK(graph.dead_after[3] == std::vector<int32_t>{f});
}

TEST_CASE("jit graph splits groups at shape changes, non-fusible ops and short runs",
          "[jit][unit]") {
  ChainBuilder b;
  const int32_t x = b.external({4, 8});
  const int32_t m = b.external({4, 1});
  const int32_t i = b.external({4, 8}, DType::Int64);
  const int32_t s1 = b.op(OpCode::AddScalar, {m}, {}, {1e-5});  // (4, 1)
  const int32_t s2 = b.op(OpCode::Rsqrt, {s1});                 // (4, 1)
  const int32_t y = b.op(OpCode::Mul, {x, s2});                 // (4, 8): a new group
  const int32_t z = b.op(OpCode::Exp, {y});
  const int32_t cmp = b.op(OpCode::GtScalar, {z}, {}, {1.0});  // comparison: library
  const int32_t k = b.op(OpCode::AddScalar, {i}, {1});          // int64: library
  const int32_t same = b.op(OpCode::To, {z}, {}, {}, F32);      // alias: library
  const int32_t neg = b.op(OpCode::Neg, {same});                // a run of one: library
  const Chain chain = b.done({cmp, k, neg});
  const Graph graph = build_graph(chain);
  INFO(graph.describe());
  REQUIRE(graph.steps.size() == 6);
  CHECK(graph.steps[0].kind == StepKind::Fused);
  CHECK(graph.steps[0].group.shape == Shape{4, 1});
  CHECK(graph.steps[0].group.outputs == std::vector<int32_t>{s2});
  CHECK(graph.steps[1].kind == StepKind::Fused);
  CHECK(graph.steps[1].group.inputs == std::vector<int32_t>{x, s2});
  CHECK(graph.steps[1].group.outputs == std::vector<int32_t>{z});
  for (size_t s = 2; s < 6; ++s) CHECK(graph.steps[s].kind == StepKind::Library);

  FusionOptions singles;
  singles.min_group_ops = 1;
  CHECK(build_graph(chain, singles).fused_groups() == 3);  // neg alone fuses
  FusionOptions off;
  off.fuse = false;
  CHECK(build_graph(chain, off).fused_groups() == 0);
  CHECK(build_graph(chain, off).steps.size() == chain.ops.size());
}

TEST_CASE("jit graph rejects malformed chains", "[jit][unit]") {
  ChainBuilder b;
  const int32_t x = b.external({3});
  const int32_t y = b.op(OpCode::Exp, {x});
  Chain chain = b.done({y});

  Chain forward = chain;
  forward.ops[0].inputs = {5};
  CHECK_THROWS_WITH(build_graph(forward), Catch::Contains("reads value 5 before it exists"));

  Chain bad_meta = chain;
  bad_meta.ops[0].input_metas[0].shape = {4};
  CHECK_THROWS_AS(build_graph(bad_meta), std::invalid_argument);

  Chain bad_escapes = chain;
  bad_escapes.escapes.push_back(true);
  CHECK_THROWS_WITH(build_graph(bad_escapes), Catch::Contains("Chain::escapes"));

  ChainBuilder u;
  u.op(OpCode::FromData, {}, {3}, {}, F32);
  CHECK_THROWS_WITH(build_graph(u.done({0})), Catch::Contains("data frame"));
}

// ---- generated kernels against LibTorch ---------------------------------------------

TEST_CASE("jit every fusible op matches LibTorch", "[jit][unit]") {
  TempDir dir;
  CpuCompiler compiler(config_in(dir.path));
  for (DType t : {F32, F64}) {
    INFO(to_string(t));
    ChainBuilder b;
    const int32_t x = b.external({5, 37}, t);
    const int32_t p = b.external({5, 37}, t);  // positive
    const int32_t y = b.external({37}, t);
    std::vector<int32_t> outs = {
        b.op(OpCode::Add, {x, y}),
        b.op(OpCode::Sub, {x, y}),
        b.op(OpCode::Mul, {x, y}),
        b.op(OpCode::Div, {x, p}),
        b.op(OpCode::Neg, {x}),
        b.op(OpCode::Exp, {x}),
        b.op(OpCode::Log, {p}),
        b.op(OpCode::Sqrt, {p}),
        b.op(OpCode::Rsqrt, {p}),
        b.op(OpCode::Relu, {x}),
        b.op(OpCode::Sigmoid, {x}),
        b.op(OpCode::Tanh, {x}),
        b.op(OpCode::Abs, {x}),
        b.op(OpCode::Sign, {x}),
        b.op(OpCode::Pow, {p, x}),
        b.op(OpCode::Gelu, {x}),
        b.op(OpCode::GeluBackward, {p, x}),
    };
    outs.push_back(b.op(OpCode::To, {x}, {}, {}, t == F32 ? F64 : F32));
    // Logs of negatives and zero: NaN and -inf agree too.
    outs.push_back(b.op(OpCode::Log, {x}));
    outs.push_back(b.op(OpCode::Sqrt, {x}));
    const Chain chain = b.done(outs);
    FusionOptions singles;
    singles.min_group_ops = 1;
    std::vector<at::Tensor> in = {randn({5, 37}, t) * 3, positive({5, 37}, t), randn({37}, t)};
    in[0][0][0].fill_(0.0);
    auto compiled = check_chain(chain, in, compiler, singles);
    CHECK(compiled->graph().fused_groups() == 1);
  }
}

TEST_CASE("jit scalar operands are exact and follow LibTorch's special cases", "[jit][unit]") {
  TempDir dir;
  CpuCompiler compiler(config_in(dir.path));
  for (DType t : {F32, F64}) {
    INFO(to_string(t));
    ChainBuilder b;
    const int32_t x = b.external({3, 50}, t);
    const int32_t p = b.external({3, 50}, t);
    std::vector<int32_t> outs;
    for (double s : {0.1, 1.0 / 3.0, -2.5, 1e-8, 123456.789}) {
      outs.push_back(b.op(OpCode::AddScalar, {x}, {}, {s}));
      outs.push_back(b.op(OpCode::SubScalar, {x}, {}, {s}));
      outs.push_back(b.op(OpCode::RSubScalar, {x}, {}, {s}));
      outs.push_back(b.op(OpCode::MulScalar, {x}, {}, {s}));
      outs.push_back(b.op(OpCode::DivScalar, {x}, {}, {s}));
      outs.push_back(b.op(OpCode::RDivScalar, {p}, {}, {s}));
    }
    outs.push_back(b.op(OpCode::AddScalar, {x}, {3}));  // integral number operand
    outs.push_back(b.op(OpCode::MulScalar, {x}, {-7}));
    outs.push_back(b.op(OpCode::RDivScalar, {p}, {2}));
    // pow's special cases are arithmetic too.
    for (double e : {0.0, 1.0, 2.0, 3.0, 0.5, -0.5, -1.0, -2.0}) {
      outs.push_back(b.op(OpCode::PowScalar, {p}, {}, {e}));
    }
    outs.push_back(b.op(OpCode::PowScalar, {x}, {2}));
    outs.push_back(b.op(OpCode::PowScalar, {x}, {3}));
    outs.push_back(b.op(OpCode::RPowScalar, {x}, {}, {1.0}));
    outs.push_back(b.op(OpCode::AddScalar, {x}, {}, {INFINITY}));
    outs.push_back(b.op(OpCode::MulScalar, {x}, {}, {NAN}));
    FusionOptions singles;
    singles.min_group_ops = 1;
    const auto in = std::vector<at::Tensor>{randn({3, 50}, t), positive({3, 50}, t)};
    // Exact literals and the same operation order give bit-identical results.
    auto compiled = check_chain(b.done(outs), in, compiler, singles, Tolerance{0, 0, 0, 0});
    // Float number operands of arithmetic ops are run-time numbers (Note
    // [dynamic scalars]); integral ones stay literals.
    CHECK(compiled->source().find("*(const double*)inputs[") != std::string::npos);
    CHECK(compiled->source().find("(-7LL)") != std::string::npos);

    // General powers go through the math library: close, not always identical.
    ChainBuilder pw;
    const int32_t px = pw.external({3, 50}, t);
    const int32_t pp = pw.external({3, 50}, t);
    std::vector<int32_t> pouts;
    for (double e : {2.5, -1.5, 1.0 / 3.0}) pouts.push_back(pw.op(OpCode::PowScalar, {pp}, {}, {e}));
    for (double base : {2.0, 0.5}) pouts.push_back(pw.op(OpCode::RPowScalar, {px}, {}, {base}));
    check_chain(pw.done(pouts), in, compiler, singles);
  }
}

TEST_CASE("jit broadcasting chains match LibTorch", "[jit][unit]") {
  TempDir dir;
  CpuCompiler compiler(config_in(dir.path));
  ChainBuilder b;
  const int32_t a = b.external({8, 1, 16});
  const int32_t bb = b.external({4, 1});
  const int32_t c = b.external({});
  const int32_t d = b.external({16});
  const int32_t e = b.external({1, 4, 16});
  const int32_t m = b.op(OpCode::Mul, {a, bb});  // (8, 4, 16)
  const int32_t s = b.op(OpCode::Sub, {m, c});
  const int32_t q = b.op(OpCode::Div, {s, d});
  const int32_t r = b.op(OpCode::Add, {q, e});
  const int32_t t = b.op(OpCode::Sigmoid, {r});
  const int32_t u = b.op(OpCode::Mul, {t, c});
  std::vector<at::Tensor> in = {randn({8, 1, 16}), randn({4, 1}), randn({}), positive({16}),
                                randn({1, 4, 16})};
  auto compiled = check_chain(b.done({u}), in, compiler);
  REQUIRE(compiled->graph().fused_groups() == 1);
  CHECK(compiled->graph().steps[0].group.outputs == std::vector<int32_t>{u});

  // A group over a 0-dim shape (all scalars) and one over an empty shape.
  ChainBuilder z;
  const int32_t x0 = z.external({});
  const int32_t x1 = z.external({});
  const int32_t y0 = z.op(OpCode::Mul, {x0, x1});
  const int32_t y1 = z.op(OpCode::Exp, {y0});
  check_chain(z.done({y1}), {randn({}), randn({})}, compiler);

  ChainBuilder empty;
  const int32_t n0 = empty.external({0, 3});
  const int32_t n1 = empty.op(OpCode::Exp, {n0});
  const int32_t n2 = empty.op(OpCode::AddScalar, {n1}, {}, {1.0});
  check_chain(empty.done({n2}), {randn({0, 3})}, compiler);
}

TEST_CASE("jit mixed float32 and float64 operands promote like LibTorch", "[jit][unit]") {
  TempDir dir;
  CpuCompiler compiler(config_in(dir.path));
  ChainBuilder b;
  const int32_t x = b.external({5, 6}, F32);
  const int32_t y = b.external({6}, F64);
  const int32_t z = b.external({}, F64);
  const int32_t a = b.op(OpCode::Add, {x, y});   // float64
  const int32_t c = b.op(OpCode::Mul, {x, z});   // float32: a 0-dim tensor ranks below
  const int32_t d = b.op(OpCode::Sub, {a, c});   // float64
  const int32_t e = b.op(OpCode::To, {d}, {}, {}, F32);
  const int32_t f = b.op(OpCode::Gelu, {e});     // float32
  const int32_t g = b.op(OpCode::Div, {f, y});   // float64
  const int32_t h = b.op(OpCode::Tanh, {g});
  const Chain chain = b.done({c, h});
  REQUIRE(b.metas[a].dtype == F64);
  REQUIRE(b.metas[c].dtype == F32);
  REQUIRE(b.metas[h].dtype == F64);
  // float64 results computed from float32 values (gelu in float) carry
  // float32 rounding: compare them with float32 tolerances.
  Tolerance tol;
  tol.rtol64 = tol.rtol32;
  tol.atol64 = tol.atol32;
  auto compiled = check_chain(chain, {randn({5, 6}, F32), positive({6}, F64), randn({}, F64)},
                              compiler, {}, tol);
  CHECK(compiled->graph().fused_groups() == 1);
  CHECK(compiled->graph().fused_ops() == chain.ops.size());
}

TEST_CASE("jit intermediates that escape are materialised and the others are not",
          "[jit][unit]") {
  TempDir dir;
  CpuCompiler compiler(config_in(dir.path));
  ChainBuilder b;
  const int32_t x = b.external({64, 33});
  const int32_t a = b.op(OpCode::MulScalar, {x}, {}, {1.5});
  const int32_t c = b.op(OpCode::Exp, {a});      // escapes
  const int32_t d = b.op(OpCode::AddScalar, {c}, {}, {1.0});
  const int32_t e = b.op(OpCode::Log, {d});      // dies
  const int32_t f = b.op(OpCode::Neg, {e});      // escapes
  const Chain chain = b.done({c, f});
  auto compiled = check_chain(chain, {randn({64, 33})}, compiler);
  const Graph& g = compiled->graph();
  REQUIRE(g.fused_groups() == 1);
  CHECK(g.steps[0].group.outputs == std::vector<int32_t>{c, f});
  const auto out = compiled->run(std::vector<at::Tensor>{randn({64, 33})});
  REQUIRE(out.size() == chain.escapes.size());
  for (int32_t v = x + 1; v <= f; ++v) {
    INFO("value " << v);
    const bool escapes = v == c || v == f;
    CHECK(out[v - chain.externals].defined() == escapes);
  }
  (void)a;
  (void)e;
}

TEST_CASE("jit Adam-like in-place update chain matches LibTorch", "[jit][unit]") {
  TempDir dir;
  CpuCompiler compiler(config_in(dir.path));
  const double lr = 1e-3, b1 = 0.9, b2 = 0.999, eps = 1e-8, bc1 = 1 - 0.9, bc2 = 1 - 0.999;
  ChainBuilder b;
  const int32_t p = b.external({40, 30});
  const int32_t g = b.external({40, 30});
  const int32_t m = b.external({40, 30});
  const int32_t v = b.external({40, 30});
  b.op(OpCode::MulScalarInplace, {m}, {}, {b1});
  b.op(OpCode::AddInplace, {m, g}, {}, {1 - b1});  // m += (1 - b1) * g
  b.op(OpCode::MulScalarInplace, {v}, {}, {b2});
  b.op(OpCode::AddcmulInplace, {v, g, g}, {}, {1 - b2});
  const int32_t s = b.op(OpCode::Sqrt, {v});
  const int32_t s2 = b.op(OpCode::DivScalar, {s}, {}, {std::sqrt(bc2)});
  const int32_t denom = b.op(OpCode::AddScalar, {s2}, {}, {eps});
  b.op(OpCode::AddcdivInplace, {p, m, denom}, {}, {-lr / bc1});
  const Chain chain = b.done({});
  std::vector<at::Tensor> in = {randn({40, 30}), randn({40, 30}), randn({40, 30}) * 0.1,
                                positive({40, 30}) * 0.01};
  auto compiled = check_chain(chain, in, compiler);
  const Graph& graph = compiled->graph();
  INFO(graph.describe());
  // Note [fused in-place updates]: the whole update is one kernel that
  // stores m, v and p into their own memory.
  CHECK(graph.fused_groups() == 1);
  CHECK(graph.steps.size() == 1);
  CHECK(graph.steps[0].group.updates == std::vector<int32_t>{m, v, p});
  CHECK(graph.steps[0].group.outputs.empty());
  // Several steps in a row keep agreeing (state carried through the externals).
  std::vector<at::Tensor> eager = clones(in), comp = clones(in);
  for (int step = 0; step < 5; ++step) {
    eager[1] = randn({40, 30});
    comp[1] = eager[1].clone();
    run_eager(chain, eager);
    compiled->run(comp);
  }
  CHECK_FALSE(compare_results(eager, comp).has_value());
  // The in-place hook sees every mutated tensor before the kernel writes it.
  std::vector<const void*> mutated;
  RunOptions hook;
  hook.before_inplace = [&](const at::Tensor& self) { mutated.push_back(self.data_ptr()); };
  compiled->run(comp, hook);
  CHECK(mutated == std::vector<const void*>{comp[2].data_ptr(), comp[3].data_ptr(),
                                            comp[0].data_ptr()});
  // Without fusion the same chain runs op by op, one hook call per in-place op.
  FusionOptions none;
  none.fuse = false;
  const CompiledChain unfused(chain, compiler, none);
  mutated.clear();
  unfused.run(comp, hook);
  CHECK(mutated == std::vector<const void*>{comp[2].data_ptr(), comp[2].data_ptr(),
                                            comp[3].data_ptr(), comp[3].data_ptr(),
                                            comp[0].data_ptr()});
  (void)s;
}

TEST_CASE("jit fused in-place updates: broadcast operands, kept intermediates, views",
          "[jit][unit]") {
  TempDir dir;
  CpuCompiler compiler(config_in(dir.path));
  for (DType t : {F32, F64}) {
    INFO(to_string(t));
    ChainBuilder b;
    const int32_t p = b.external({6, 50}, t);
    const int32_t row = b.external({50}, t);
    const int32_t q = b.external({6, 50}, t);
    b.op(OpCode::AddInplace, {p, row});                 // p += row (broadcast)
    b.op(OpCode::SubInplace, {p, q}, {}, {0.5});        // p -= 0.5 * q
    const int32_t y = b.op(OpCode::MulScalar, {p}, {}, {3.0});  // reads the new p; kept
    b.op(OpCode::MulInplace, {q, p});                   // q *= p
    b.op(OpCode::SubScalarInplace, {q}, {2});           // integral number operand
    b.op(OpCode::AddcdivInplace, {p, y, q}, {}, {0.25});
    const Chain chain = b.done({y});
    FusionOptions singles;
    singles.min_group_ops = 1;
    const std::vector<at::Tensor> in = {randn({6, 50}, t), randn({50}, t), positive({6, 50}, t)};
    auto compiled = check_chain(chain, in, compiler, singles);
    REQUIRE(compiled->graph().fused_groups() == 1);
    CHECK(compiled->graph().steps[0].group.updates == std::vector<int32_t>{p, q});
    // A view of p as q: the group runs op by op, with eager's results.
    const at::Tensor base = randn({6, 50}, t);
    std::vector<at::Tensor> eager_in = {base.clone(), in[1].clone(), at::Tensor()};
    eager_in[2] = eager_in[0].view({6, 50});
    std::vector<at::Tensor> comp_in = {base.clone(), in[1].clone(), at::Tensor()};
    comp_in[2] = comp_in[0].view({6, 50});
    const auto want = run_eager(chain, eager_in);
    const auto got = compiled->run(comp_in);
    CHECK_FALSE(compare_results(want, got).has_value());
    CHECK(at::allclose(eager_in[0], comp_in[0], 1e-5, 1e-6, true));
    // A non-contiguous target: op by op as well.
    std::vector<at::Tensor> tin = {randn({50, 6}, t).t(), in[1].clone(), in[2].clone()};
    std::vector<at::Tensor> tin_eager = {tin[0].clone(), tin[1].clone(), tin[2].clone()};
    const auto want_t = run_eager(chain, tin_eager);
    const auto got_t = compiled->run(tin);
    CHECK_FALSE(compare_results(want_t, got_t).has_value());
    CHECK(at::allclose(tin_eager[0], tin[0], 1e-5, 1e-6, true));
  }
}

TEST_CASE("jit chain with a matmul between two fused groups matches LibTorch", "[jit][unit]") {
  TempDir dir;
  CpuCompiler compiler(config_in(dir.path));
  ChainBuilder b;
  const int32_t x = b.external({32, 64});
  const int32_t w = b.external({64, 16});
  const int32_t bias = b.external({16});
  const int32_t a = b.op(OpCode::MulScalar, {x}, {}, {2.0});
  const int32_t c = b.op(OpCode::AddScalar, {a}, {}, {1.0});
  const int32_t r = b.op(OpCode::Relu, {c});
  const int32_t mm = b.op(OpCode::Matmul, {r, w});
  const int32_t d = b.op(OpCode::Add, {mm, bias});
  const int32_t t = b.op(OpCode::Tanh, {d});
  const int32_t o = b.op(OpCode::MulScalar, {t}, {}, {3.0});
  const int32_t loss = b.op(OpCode::Mean, {o}, {0});
  auto compiled = check_chain(b.done({r, loss}), {randn({32, 64}), randn({64, 16}), randn({16})},
                              compiler);
  const Graph& g = compiled->graph();
  INFO(g.describe());
  REQUIRE(g.steps.size() == 4);
  CHECK(g.steps[0].kind == StepKind::Fused);
  CHECK(g.steps[1].kind == StepKind::Library);
  CHECK(g.steps[2].kind == StepKind::Fused);
  CHECK(g.steps[2].group.outputs == std::vector<int32_t>{o});
  CHECK(g.steps[3].kind == StepKind::Library);
}

TEST_CASE("jit non-contiguous inputs take the strided path", "[jit][unit]") {
  TempDir dir;
  CpuCompiler compiler(config_in(dir.path));
  ChainBuilder b;
  const int32_t x = b.external({6, 10});  // passed transposed
  const int32_t y = b.external({10, 6});
  const int32_t z = b.external({6});      // passed as a strided slice
  const int32_t yt = b.op(OpCode::Transpose, {y}, {0, 1});  // a view, library
  const int32_t a = b.op(OpCode::Add, {x, yt});
  const int32_t c = b.op(OpCode::Sigmoid, {a});
  const int32_t d = b.op(OpCode::Transpose, {c}, {0, 1});     // (10, 6)
  const int32_t e = b.op(OpCode::Mul, {d, z});
  const int32_t f = b.op(OpCode::Exp, {e});
  const Chain chain = b.done({f});
  const at::Tensor xs = randn({10, 6}).t();
  const at::Tensor zs = randn({12}).slice(0, 1, 12, 2);
  REQUIRE_FALSE(xs.is_contiguous());
  REQUIRE_FALSE(zs.is_contiguous());
  auto compiled = std::make_unique<CompiledChain>(chain, compiler);
  REQUIRE(compiled->graph().fused_groups() == 2);
  // clone() keeps the strides of a non-contiguous tensor only with
  // preserve_format on dense layouts; pass the views themselves (no in-place ops).
  const std::vector<at::Tensor> in = {xs, randn({10, 6}), zs};
  const auto expected = run_eager(chain, in);
  const auto actual = compiled->run(in);
  const auto diff = compare_results(expected, actual);
  INFO(diff.value_or("agree"));
  CHECK_FALSE(diff.has_value());
  // The contiguous copies take the fast path and agree too.
  const std::vector<at::Tensor> dense = {xs.contiguous(), in[1], zs.contiguous()};
  CHECK_FALSE(compare_results(expected, compiled->run(dense)).has_value());
}

TEST_CASE("jit kernels compute any sub-range of the linear index on both paths", "[jit][unit]") {
  TempDir dir;
  CpuCompiler compiler(config_in(dir.path));
  ChainBuilder b;
  const int32_t x = b.external({5, 7, 9});
  const int32_t r = b.external({7, 1});
  const int32_t a = b.op(OpCode::Mul, {x, r});
  const int32_t c = b.op(OpCode::Exp, {a});
  const Chain chain = b.done({c});
  const Graph graph = build_graph(chain);
  REQUIRE(graph.fused_groups() == 1);
  const FusedGroup& grp = graph.steps[0].group;
  const CpuKernelSource k = generate_cpu_kernel(graph, grp);
  const CompileResult built = compiler.compile(cpu_unit_source(std::vector<CpuKernelSource>{k}));
  const auto fn = reinterpret_cast<CpuKernelFn>(built.library->symbol(k.symbol));

  const at::Tensor xt = randn({5, 7, 9}), rt = randn({7, 1});
  const at::Tensor want = at::exp(xt * rt);
  const void* ins[] = {xt.data_ptr(), rt.data_ptr()};
  const int64_t x_strides[] = {63, 9, 1};
  const int64_t r_strides[] = {0, 1, 0};
  const int64_t* strides[] = {x_strides, r_strides};
  const int64_t shape[] = {5, 7, 9};
  for (bool fast : {true, false}) {
    for (int64_t chunk : {1, 4, 9, 10, 100, 315}) {
      INFO("fast " << fast << ", chunk " << chunk);
      at::Tensor out = at::full({5, 7, 9}, -1.0f);
      void* outs[] = {out.data_ptr()};
      for (int64_t begin = 0; begin < 315; begin += chunk) {
        REQUIRE(fn(ins, fast ? nullptr : strides, outs, shape, 3, begin,
                   std::min<int64_t>(begin + chunk, 315)) == 0);
      }
      CHECK(at::allclose(out, want, 1e-5, 1e-6));
    }
  }
  // The shape guard refuses other shapes without touching memory.
  const int64_t other[] = {5, 7, 10};
  CHECK(fn(ins, nullptr, nullptr, other, 3, 0, 350) == 1);
  CHECK(fn(ins, nullptr, nullptr, shape, 2, 0, 315) == 1);
  (void)a;
}

TEST_CASE("jit compiled chain runs split across threads", "[jit][unit]") {
  TempDir dir;
  CpuCompiler compiler(config_in(dir.path));
  ChainBuilder b;
  const int32_t x = b.external({33, 65});
  const int32_t bias = b.external({65});
  const int32_t a = b.op(OpCode::Add, {x, bias});
  const int32_t c = b.op(OpCode::Tanh, {a});
  const Chain chain = b.done({c});
  CompiledChain compiled(chain, compiler);
  const int threads = at::get_num_threads();
  at::set_num_threads(4);
  RunOptions small_grain;
  small_grain.grain_size = 7;
  const std::vector<at::Tensor> in = {randn({33, 65}), randn({65})};
  const std::vector<at::Tensor> strided = {randn({65, 33}).t(), in[1]};
  const auto got = compiled.run(in, small_grain);
  const auto got_strided = compiled.run(strided, small_grain);
  at::set_num_threads(threads);
  CHECK_FALSE(compare_results(run_eager(chain, in), got).has_value());
  CHECK_FALSE(compare_results(run_eager(chain, strided), got_strided).has_value());
  (void)a;
}

TEST_CASE("jit compiled chain rejects externals that do not match the chain", "[jit][unit]") {
  TempDir dir;
  CpuCompiler compiler(config_in(dir.path));
  ChainBuilder b;
  const int32_t x = b.external({4});
  const int32_t y = b.op(OpCode::Exp, {x});
  const int32_t z = b.op(OpCode::Neg, {y});
  CompiledChain compiled(b.done({z}), compiler);
  CHECK_THROWS_WITH(compiled.run(std::vector<at::Tensor>{randn({5})}),
                    Catch::Contains("external 0 should be (4) float32"));
  CHECK_THROWS_WITH(compiled.run(std::vector<at::Tensor>{randn({4}, F64)}),
                    Catch::Contains("external 0"));
  CHECK_THROWS_WITH(compiled.run(std::vector<at::Tensor>{}),
                    Catch::Contains("expected 1 external tensors"));
}

// ---- the compiler and its cache ---------------------------------------------------------

TEST_CASE("jit compiler second compile of a source is a cache hit", "[jit][unit]") {
  TempDir dir;
  const auto t0 = Clock::now();
  CpuCompiler first(config_in(dir.path));
  CompileResult miss = first.compile(kTrivialSource);
  const double miss_ms = ms_since(t0);
  CHECK_FALSE(miss.cache_hit);
  CHECK(first.stats().compiles == 1);
  auto answer = reinterpret_cast<AnswerFn>(miss.library->symbol("gt_test_answer"));
  CHECK(answer(0) == 42);
  CHECK(fs::exists(miss.path));
  CHECK(miss.path.parent_path() == dir.path);

  // Same compiler: the loaded object is reused.
  CompileResult again = first.compile(kTrivialSource);
  CHECK(again.cache_hit);
  CHECK(again.library == miss.library);
  CHECK(first.stats().memory_hits == 1);

  // A new compiler (a new worker process) on the same dir compiles nothing.
  const auto t1 = Clock::now();
  CpuCompiler second(config_in(dir.path));
  CompileResult hit = second.compile(kTrivialSource);
  const double hit_ms = ms_since(t1);
  CHECK(hit.cache_hit);
  CHECK(hit.key == miss.key);
  CHECK(second.stats().compiles == 0);
  CHECK(second.stats().disk_hits == 1);
  CHECK(reinterpret_cast<AnswerFn>(hit.library->symbol("gt_test_answer"))(1) == 43);
  std::printf("[jit] compile (cold, incl. compiler identity): %.1f ms; cache hit (new compiler): "
              "%.2f ms (of which load %.2f ms)\n",
              miss_ms, hit_ms, std::chrono::duration<double, std::milli>(hit.elapsed).count());

  // Another flag set is another key.
  CpuCompilerConfig o2 = config_in(dir.path);
  o2.flags.push_back("-DGT_OTHER=1");
  CpuCompiler third(o2);
  CHECK(third.cache_key(kTrivialSource) != miss.key);

  // Missing symbols are errors, not crashes.
  CHECK_THROWS_AS(hit.library->symbol("gt_no_such_symbol"), CompileError);
}

TEST_CASE("jit compiled chain second construction compiles nothing", "[jit][unit]") {
  TempDir dir;
  ChainBuilder b;
  const int32_t x = b.external({128});
  const int32_t y = b.op(OpCode::Sigmoid, {x});
  const int32_t z = b.op(OpCode::MulScalar, {y}, {}, {0.5});
  const Chain chain = b.done({z});
  CpuCompiler worker1(config_in(dir.path));
  CompiledChain c1(chain, worker1);
  CHECK_FALSE(c1.cache_hit());
  CpuCompiler worker2(config_in(dir.path));
  CompiledChain c2(chain, worker2);
  CHECK(c2.cache_hit());
  CHECK(worker2.stats().compiles == 0);
  std::printf("[jit] chain compile: %.1f ms cold, %.2f ms from the cache\n",
              std::chrono::duration<double, std::milli>(c1.compile_time()).count(),
              std::chrono::duration<double, std::milli>(c2.compile_time()).count());
  const at::Tensor in = randn({128});
  CHECK_FALSE(compare_results(c1.run(std::vector<at::Tensor>{in}),
                              c2.run(std::vector<at::Tensor>{in}), Tolerance{0, 0, 0, 0})
                  .has_value());
}

TEST_CASE("jit compiler concurrent compiles of one source both succeed", "[jit][unit]") {
  TempDir dir;
  const std::string source = kTrivialSource + "// concurrent\n";
  // Two threads on one compiler, and two compilers (two workers) on one dir.
  CpuCompiler shared(config_in(dir.path));
  CpuCompiler other(config_in(dir.path));
  std::vector<std::optional<CompileResult>> results(4);
  std::vector<std::string> errors(4);
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      try {
        results[i] = (i % 2 ? other : shared).compile(source);
      } catch (const std::exception& e) {
        errors[i] = e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < 4; ++i) {
    INFO("thread " << i << ": " << errors[i]);
    REQUIRE(results[i].has_value());
    CHECK(reinterpret_cast<AnswerFn>(results[i]->library->symbol("gt_test_answer"))(i) == 42 + i);
  }
  // One entry, no temporary directories left behind.
  CHECK(list_cache(dir.path).size() == 1);
  for (const auto& e : fs::directory_iterator(dir.path)) {
    CHECK(e.path().filename().string().rfind("tmp-", 0) != 0);
  }
}

TEST_CASE("jit compiler reports a compiler that cannot run, naming it", "[jit][unit]") {
  TempDir dir;
  CpuCompilerConfig c = config_in(dir.path);
  {
    ScopedEnv cxx("CXX", "/nonexistent/c++");
    c.compiler = default_compiler();
  }
  CHECK(c.compiler == "/nonexistent/c++");
  CpuCompiler compiler(c);
  CHECK_THROWS_AS(compiler.compile(kTrivialSource), CompileError);
  CHECK_THROWS_WITH(compiler.compile(kTrivialSource),
                    Catch::Contains("/nonexistent/c++") && Catch::Contains("No such file"));
  CHECK(compiler.stats().failures == 2);
  // A chain that needs compiling fails the same way (the caller falls back).
  ChainBuilder b;
  const int32_t x = b.external({4});
  const int32_t y = b.op(OpCode::Exp, {x});
  const int32_t z = b.op(OpCode::Neg, {y});
  CHECK_THROWS_AS(CompiledChain(b.done({z}), compiler), CompileError);
  // A compiler that fails: `false` runs but exits 1.
  CpuCompilerConfig f = config_in(dir.path);
  f.compiler = "false";
  CpuCompiler failing(f);
  CHECK_THROWS_WITH(failing.compile(kTrivialSource), Catch::Contains("'false'"));
}

TEST_CASE("jit compiler reports a compile error with the compiler's message", "[jit][unit]") {
  TempDir dir;
  CpuCompiler compiler(config_in(dir.path));
  const std::string broken = "extern \"C\" int gt_broken( { return 1; }\n";
  try {
    compiler.compile(broken);
    FAIL("expected a CompileError");
  } catch (const CompileError& e) {
    const std::string what = e.what();
    INFO(what);
    CHECK(what.find("unit.cpp") != std::string::npos);
    CHECK(what.find("error") != std::string::npos);
    CHECK(what.find("exited with status") != std::string::npos);
  }
  CHECK(list_cache(dir.path).empty());
  CHECK(compiler.stats().failures == 1);
  // Nothing was cached: the next compile of a good source works.
  CHECK_FALSE(compiler.compile(kTrivialSource).cache_hit);
}

TEST_CASE("jit compile cache lists and clears entries", "[jit][unit]") {
  TempDir dir;
  CpuCompiler compiler(config_in(dir.path));
  const CompileResult a = compiler.compile(kTrivialSource);
  const CompileResult b = compiler.compile(kTrivialSource + "// b\n");
  // Unrelated files in the dir are neither listed nor removed.
  { std::FILE* f = std::fopen((dir.path / "notes.txt").c_str(), "w"); std::fclose(f); }
  const auto entries = list_cache(dir.path);
  REQUIRE(entries.size() == 2);
  for (const CacheEntry& e : entries) {
    CHECK((e.key == a.key || e.key == b.key));
    CHECK(e.size_bytes > 0);
    CHECK(e.mtime <= fs::file_time_type::clock::now());
  }
  CHECK(clear_cache(dir.path) == 2);
  CHECK(list_cache(dir.path).empty());
  CHECK(fs::exists(dir.path / "notes.txt"));
  // Loaded objects outlive their files.
  CHECK(reinterpret_cast<AnswerFn>(a.library->symbol("gt_test_answer"))(0) == 42);
  CHECK(list_cache(dir.path / "missing").empty());
  CHECK(clear_cache(dir.path / "missing") == 0);
}

TEST_CASE("jit default cache dir and compiler follow the environment", "[jit][unit]") {
  {
    ScopedEnv a("GT_COMPILE_CACHE_DIR", "/x/gt-cache");
    CHECK(default_cache_dir() == fs::path("/x/gt-cache"));
  }
  {
    ScopedEnv a("GT_COMPILE_CACHE_DIR", std::nullopt);
    ScopedEnv b("XDG_CACHE_HOME", "/x/xdg");
    CHECK(default_cache_dir() == fs::path("/x/xdg/gt/jit"));
  }
  {
    ScopedEnv a("GT_COMPILE_CACHE_DIR", std::nullopt);
    ScopedEnv b("XDG_CACHE_HOME", std::nullopt);
    ScopedEnv c("HOME", "/x/home");
    CHECK(default_cache_dir() == fs::path("/x/home/.cache/gt/jit"));
  }
  {
    ScopedEnv a("CXX", std::nullopt);
    CHECK(default_compiler() == "c++");
  }
  const auto flags = default_cpu_flags();
  CHECK(std::find(flags.begin(), flags.end(), "-O3") != flags.end());
  CHECK(std::find(flags.begin(), flags.end(), "-ffast-math") == flags.end());
}

TEST_CASE("jit generated source of a bias-gelu chain (manual: prints it)", "[.][jit_source]") {
  ChainBuilder b;
  const int32_t x = b.external({64, 256});
  const int32_t bias = b.external({256});
  const int32_t a = b.op(OpCode::Add, {x, bias});
  const int32_t g = b.op(OpCode::Gelu, {a});
  const int32_t m = b.op(OpCode::MulScalar, {g}, {}, {0.5});
  const Graph graph = build_graph(b.done({a, m}));
  std::printf("%s\n%s", graph.describe().c_str(),
              cpu_unit_source(std::vector<CpuKernelSource>{
                                  generate_cpu_kernel(graph, graph.steps[0].group)})
                  .c_str());
}

// ---- speed (printed, not asserted) ----------------------------------------------------

TEST_CASE("jit fused elementwise chain against eager", "[jit][unit]") {
  TempDir dir;
  CpuCompiler compiler(config_in(dir.path));
  for (int64_t n : {int64_t{1} << 20, int64_t{1024}}) {
    ChainBuilder b;
    const int32_t x = b.external({n});
    const int32_t y = b.external({n});
    const int32_t a = b.op(OpCode::Mul, {x, y});
    const int32_t c = b.op(OpCode::AddScalar, {a}, {}, {1.5});
    const int32_t d = b.op(OpCode::Sigmoid, {c});
    const int32_t e = b.op(OpCode::Mul, {d, x});
    const int32_t f = b.op(OpCode::Sub, {e, y});
    const int32_t g = b.op(OpCode::Relu, {f});
    const Chain chain = b.done({g});
    CompiledChain compiled(chain, compiler);
    REQUIRE(compiled.graph().fused_groups() == 1);
    const std::vector<at::Tensor> in = {randn({n}), randn({n})};
    CHECK_FALSE(compare_results(compiled.run_eager(in), compiled.run(in)).has_value());
    const int reps = n > 100000 ? 20 : 2000;
    auto time_ms = [&](auto&& fn) {
      for (int i = 0; i < 3; ++i) fn();
      const auto t0 = Clock::now();
      for (int i = 0; i < reps; ++i) fn();
      return ms_since(t0) / reps;
    };
    const double eager_ms = time_ms([&] { compiled.run_eager(in); });
    const double fused_ms = time_ms([&] { compiled.run(in); });
    std::printf("[jit] 6-op elementwise chain on %lld float32 (%d threads): eager %.4f ms, fused "
                "%.4f ms (%.2fx); compile %.1f ms\n",
                static_cast<long long>(n), at::get_num_threads(), eager_ms, fused_ms,
                eager_ms / fused_ms,
                std::chrono::duration<double, std::milli>(compiled.compile_time()).count());
  }
}

}  // namespace
}  // namespace gt::worker::jit::test
