#include "worker/jit/compiled_chain.h"

#include <atomic>

#include <ATen/Parallel.h>

#include "common/check.h"
#include "worker/kernels.h"

namespace gt::worker::jit {
namespace {

bool matches(const at::Tensor& t, const TensorMeta& m) {
  return t.defined() && t.sizes() == at::IntArrayRef(m.shape) &&
         t.scalar_type() == to_scalar_type(m.dtype);
}

std::string describe(const at::Tensor& t) {
  if (!t.defined()) return "an undefined tensor";
  std::string dtype = "unsupported dtype";
  if (auto d = to_dtype(t.scalar_type())) dtype = std::string(to_string(*d));
  return shape_str(t.sizes().vec()) + " " + dtype + " on " + t.device().str();
}

void check_externals(const Graph& g, std::span<const at::Tensor> externals, bool need_cpu) {
  GT_CHECK(externals.size() == static_cast<size_t>(g.chain.externals), "[jit.run] expected ",
           g.chain.externals, " external tensors, got ", externals.size());
  for (size_t i = 0; i < externals.size(); ++i) {
    const TensorMeta& m = g.chain.external_metas[i];
    GT_CHECK(matches(externals[i], m), "[jit.run] external ", i, " should be ",
             shape_str(m.shape), " ", to_string(m.dtype), ", got ", describe(externals[i]));
    GT_CHECK(!need_cpu || externals[i].device().is_cpu(), "[jit.run] external ", i,
             " is on ", externals[i].device().str(), "; compiled CPU code needs CPU tensors");
  }
}

void run_library_step(const Graph& g, int32_t op_index, std::vector<at::Tensor>& env,
                      const RunOptions& options) {
  const ChainOp& op = g.chain.ops[op_index];
  const bool needs_generator =
      op.op == OpCode::Randn || op.op == OpCode::Rand || op.op == OpCode::ManualSeed;
  GT_CHECK(!needs_generator || options.generator, "[jit.run] op ", op_index, " (",
           op_info(op.op).name, ") needs RunOptions::generator");
  std::vector<at::Tensor> inputs;
  inputs.reserve(op.inputs.size());
  for (int32_t v : op.inputs) inputs.push_back(env[v]);
  if (options.before_inplace && op_info(op.op).kind == OpKind::Inplace) {
    options.before_inplace(inputs[0]);
  }
  // Run-time numbers replace the recorded floats (Note [dynamic scalars]).
  std::span<const double> floats = op.floats;
  if (g.scalar_base[op_index] >= 0 && !options.scalars.empty()) {
    floats = options.scalars.subspan(static_cast<size_t>(g.scalar_base[op_index]), op.floats.size());
  }
  const KernelArgs args{inputs,
                        op.ints,
                        floats,
                        op.dtype,
                        op.output_metas.empty() ? nullptr : &op.output_metas[0],
                        options.generator,
                        options.device,
                        nullptr};
  at::Tensor result = kernel(op.op)(args);
  const int32_t out = g.op_output[op_index];
  if (out < 0) return;
  if (!matches(result, g.values[out].meta)) {
    throw gt::Error(detail::cat("[jit.run] op ", op_index, " (", op_info(op.op).name,
                                ") produced ", describe(result), " but the chain records ",
                                shape_str(g.values[out].meta.shape), " ",
                                to_string(g.values[out].meta.dtype)));
  }
  env[out] = std::move(result);
}

// Note [cpu kernel abi]: fast path when every input is contiguous; otherwise
// each input's element strides over the group's dims, 0 where it broadcasts.
void run_fused_step(const Graph& g, size_t step, CpuKernelFn fn, std::vector<at::Tensor>& env,
                    const RunOptions& options) {
  const FusedGroup& grp = g.steps[step].group;
  const int64_t rank = static_cast<int64_t>(grp.shape.size());
  // Note [fused in-place updates]: a target the kernel cannot write in place
  // (not contiguous, or sharing memory with another input: a view) sends the
  // group op by op through the kernel table, as eager would run it.
  for (int32_t u : grp.updates) {
    const at::Tensor& target = env[u];
    bool op_by_op = !target.is_contiguous() || !target.device().is_cpu();
    for (int32_t v : grp.inputs) {
      op_by_op = op_by_op || (v != u && env[v].defined() && env[v].storage().is_alias_of(target.storage()));
    }
    if (op_by_op) {
      for (int32_t i : grp.ops) run_library_step(g, i, env, options);
      return;
    }
  }
  for (int32_t u : grp.updates) {
    if (options.before_inplace) options.before_inplace(env[u]);
  }
  std::vector<const void*> in_ptrs(grp.inputs.size() + grp.scalars.size());
  const std::span<const double> scalars =
      options.scalars.empty() ? std::span<const double>(g.default_scalars) : options.scalars;
  for (size_t j = 0; j < grp.scalars.size(); ++j) {
    in_ptrs[grp.inputs.size() + j] = &scalars[static_cast<size_t>(grp.scalars[j])];
  }
  // A full-size input that is a strided view (a transposed weight gradient:
  // autograd's t() of a matmul) is copied once to contiguous memory: the
  // vectorised fast path then beats the scalar strided loop on the whole
  // group. Broadcast inputs (small) keep the strided path.
  std::vector<at::Tensor> dense(grp.inputs.size());
  bool contiguous = true;
  for (size_t k = 0; k < grp.inputs.size(); ++k) {
    const at::Tensor& t = env[grp.inputs[k]];
    const TensorMeta& m = g.values[grp.inputs[k]].meta;
    GT_CHECK(matches(t, m) && t.device().is_cpu(), "[jit.run] fused step ", step, " input ", k,
             " (value ", grp.inputs[k], ") should be ", shape_str(m.shape), " ",
             to_string(m.dtype), " on cpu, got ", describe(t));
    if (!t.is_contiguous() && m.shape == grp.shape) dense[k] = t.contiguous();
    const at::Tensor& used = dense[k].defined() ? dense[k] : t;
    in_ptrs[k] = used.data_ptr();
    contiguous = contiguous && used.is_contiguous();
  }
  std::vector<std::vector<int64_t>> strides;
  std::vector<const int64_t*> stride_ptrs;
  if (!contiguous) {
    for (size_t k = 0; k < grp.inputs.size(); ++k) {
      const at::Tensor& t = dense[k].defined() ? dense[k] : env[grp.inputs[k]];
      std::vector<int64_t> st(rank, 0);
      const int64_t rk = t.dim();
      for (int64_t d = rank - rk; d < rank; ++d) {
        const int64_t kd = d - (rank - rk);
        st[d] = t.size(kd) == 1 ? 0 : t.stride(kd);
      }
      strides.push_back(std::move(st));
    }
    for (const auto& st : strides) stride_ptrs.push_back(st.data());
  }
  std::vector<void*> out_ptrs(grp.outputs.size() + grp.updates.size());
  for (size_t j = 0; j < grp.outputs.size(); ++j) {
    const TensorMeta& m = g.values[grp.outputs[j]].meta;
    at::Tensor t = at::empty(m.shape, at::TensorOptions().dtype(to_scalar_type(m.dtype)));
    out_ptrs[j] = t.data_ptr();
    env[grp.outputs[j]] = std::move(t);
  }
  for (size_t j = 0; j < grp.updates.size(); ++j) {
    out_ptrs[grp.outputs.size() + j] = env[grp.updates[j]].data_ptr();
  }
  const int64_t n = numel(grp.shape);
  if (n == 0) return;
  const void* const* ins = in_ptrs.data();
  const int64_t* const* sts = contiguous ? nullptr : stride_ptrs.data();
  void* const* outs = out_ptrs.data();
  const int64_t* shape = grp.shape.data();
  std::atomic<int> failed{0};
  auto body = [&](int64_t begin, int64_t end) {
    const int rc = fn(ins, sts, outs, shape, rank, begin, end);
    if (rc != 0) failed.store(rc);
  };
  if (n <= options.grain_size) {
    body(0, n);
  } else {
    at::parallel_for(0, n, options.grain_size, body);
  }
  if (failed.load() != 0) {
    throw gt::Error(detail::cat("[jit.run] the kernel of fused step ", step, " returned ",
                                failed.load(), " (shape guard) for shape ",
                                shape_str(grp.shape)));
  }
}

std::vector<at::Tensor> run_graph(const Graph& g, std::span<const CpuKernelFn> kernels,
                                  std::span<const at::Tensor> externals,
                                  const RunOptions& options) {
  check_externals(g, externals, g.fused_groups() > 0);
  GT_CHECK(options.scalars.empty() || options.scalars.size() == g.default_scalars.size(),
           "[jit.run] expected ", g.default_scalars.size(), " run-time numbers, got ",
           options.scalars.size());
  std::vector<at::Tensor> env(g.values.size());
  for (size_t i = 0; i < externals.size(); ++i) env[i] = externals[i];
  for (size_t si = 0; si < g.steps.size(); ++si) {
    const Step& s = g.steps[si];
    if (s.kind == StepKind::Library) {
      run_library_step(g, s.op, env, options);
    } else {
      run_fused_step(g, si, kernels[si], env, options);
    }
    for (int32_t v : g.dead_after[si]) env[v].reset();
  }
  std::vector<at::Tensor> out(g.values.size() - g.chain.externals);
  for (size_t k = 0; k < out.size(); ++k) {
    if (g.values[g.chain.externals + k].escapes) out[k] = std::move(env[g.chain.externals + k]);
  }
  return out;
}

FusionOptions no_fusion() {
  FusionOptions o;
  o.fuse = false;
  return o;
}

}  // namespace

std::vector<at::Tensor> run_eager(const Chain& chain, std::span<const at::Tensor> externals,
                                  const RunOptions& options) {
  const Graph g = build_graph(chain, no_fusion());
  return run_graph(g, {}, externals, options);
}

std::optional<std::string> compare_results(std::span<const at::Tensor> expected,
                                           std::span<const at::Tensor> actual,
                                           const Tolerance& tolerance) {
  if (expected.size() != actual.size()) {
    return detail::cat("expected ", expected.size(), " results, got ", actual.size());
  }
  for (size_t i = 0; i < expected.size(); ++i) {
    const at::Tensor& e = expected[i];
    const at::Tensor& a = actual[i];
    if (e.defined() != a.defined()) {
      return detail::cat("result ", i, ": expected ", describe(e), ", got ", describe(a));
    }
    if (!e.defined()) continue;
    if (e.sizes() != a.sizes() || e.scalar_type() != a.scalar_type()) {
      return detail::cat("result ", i, ": expected ", describe(e), ", got ", describe(a));
    }
    if (e.numel() == 0) continue;
    const at::Tensor ec = e.cpu(), ac = a.cpu();
    if (!at::isFloatingType(ec.scalar_type())) {
      if (!at::equal(ec, ac)) return detail::cat("result ", i, ": values differ");
      continue;
    }
    const bool wide = ec.scalar_type() == at::kDouble;
    const double rtol = wide ? tolerance.rtol64 : tolerance.rtol32;
    const double atol = wide ? tolerance.atol64 : tolerance.atol32;
    const at::Tensor close = at::isclose(ec, ac, rtol, atol, /*equal_nan=*/true);
    if (close.all().item<bool>()) continue;
    const int64_t at_index = at::logical_not(close).flatten().nonzero()[0][0].item<int64_t>();
    const at::Tensor ef = ec.flatten().to(at::kDouble), af = ac.flatten().to(at::kDouble);
    return detail::cat("result ", i, " ", describe(e), ": element ", at_index, " expected ",
                       ef[at_index].item<double>(), ", got ", af[at_index].item<double>(),
                       " (rtol ", rtol, ", atol ", atol, ")");
  }
  return std::nullopt;
}

CompiledChain::CompiledChain(const Chain& chain, CpuCompiler& compiler,
                             const FusionOptions& options)
    : graph_(build_graph(chain, options)), eager_graph_(build_graph(chain, no_fusion())) {
  const auto start = std::chrono::steady_clock::now();
  std::vector<CpuKernelSource> sources(graph_.steps.size());
  std::vector<CpuKernelSource> unit;
  for (size_t si = 0; si < graph_.steps.size(); ++si) {
    if (graph_.steps[si].kind != StepKind::Fused) continue;
    sources[si] = generate_cpu_kernel(graph_, graph_.steps[si].group);
    unit.push_back(sources[si]);
  }
  kernels_.assign(graph_.steps.size(), nullptr);
  if (!unit.empty()) {
    source_ = cpu_unit_source(unit);
    CompileResult r = compiler.compile(source_);
    cache_hit_ = r.cache_hit;
    library_ = std::move(r.library);
    for (size_t si = 0; si < graph_.steps.size(); ++si) {
      if (!sources[si].symbol.empty()) {
        kernels_[si] = reinterpret_cast<CpuKernelFn>(library_->symbol(sources[si].symbol));
      }
    }
  }
  compile_time_ = std::chrono::steady_clock::now() - start;
}

std::vector<at::Tensor> CompiledChain::run(std::span<const at::Tensor> externals,
                                           const RunOptions& options) const {
  return run_graph(graph_, kernels_, externals, options);
}

std::vector<at::Tensor> CompiledChain::run_eager(std::span<const at::Tensor> externals,
                                                 const RunOptions& options) const {
  return run_graph(eager_graph_, {}, externals, options);
}

}  // namespace gt::worker::jit
