#include "worker/jit/graph.h"

#include <algorithm>
#include <sstream>

#include "common/check.h"

namespace gt::worker::jit {
namespace {

bool float_type(DType t) { return t == DType::Float32 || t == DType::Float64; }

// Whether `in` broadcasts to exactly `out` (right-aligned, each dim equal or 1).
bool broadcasts_to(const Shape& in, const Shape& out) {
  if (in.size() > out.size()) return false;
  for (size_t i = 1; i <= in.size(); ++i) {
    const int64_t a = in[in.size() - i], b = out[out.size() - i];
    if (a != b && a != 1) return false;
  }
  return true;
}

// Elementwise in-place ops (Note [fused in-place updates] in graph.h): every
// in-place op but zero_ and copy_ (a dtype-converting copy; neither appears
// in the update chains that gain from fusion).
bool inplace_fusible_code(OpCode op) {
  return op_info(op).kind == OpKind::Inplace && op != OpCode::ZeroInplace &&
         op != OpCode::CopyInplace;
}

bool fusible_code(OpCode op) {
  switch (op) {
    case OpCode::Add:
    case OpCode::Sub:
    case OpCode::Mul:
    case OpCode::Div:
    case OpCode::AddScalar:
    case OpCode::SubScalar:
    case OpCode::RSubScalar:
    case OpCode::MulScalar:
    case OpCode::DivScalar:
    case OpCode::RDivScalar:
    case OpCode::Neg:
    case OpCode::Exp:
    case OpCode::Log:
    case OpCode::Sqrt:
    case OpCode::Rsqrt:
    case OpCode::Relu:
    case OpCode::Sigmoid:
    case OpCode::Tanh:
    case OpCode::Abs:
    case OpCode::Sign:
    case OpCode::Pow:
    case OpCode::PowScalar:
    case OpCode::RPowScalar:
    case OpCode::Gelu:
    case OpCode::GeluBackward:
    case OpCode::To:
      return true;
    default:
      return inplace_fusible_code(op);
  }
}

bool scalar_operand(OpCode op) {
  switch (op) {
    case OpCode::AddScalar:
    case OpCode::SubScalar:
    case OpCode::RSubScalar:
    case OpCode::MulScalar:
    case OpCode::DivScalar:
    case OpCode::RDivScalar:
    case OpCode::PowScalar:
    case OpCode::RPowScalar:
      return true;
    default:
      return false;
  }
}

std::string op_name(OpCode op) {
  const OpInfo* info = find_op(static_cast<uint16_t>(op));
  return info ? std::string(info->name) : "op" + std::to_string(static_cast<int>(op));
}

std::string values_str(const std::vector<int32_t>& v) {
  std::ostringstream out;
  out << "(";
  for (size_t i = 0; i < v.size(); ++i) out << (i ? ", " : "") << v[i];
  out << ")";
  return out.str();
}

}  // namespace

bool fusible(const ChainOp& op) {
  if (inplace_fusible_code(op.op)) {
    // Note [fused in-place updates]: the target's dtype throughout, operands
    // broadcast to the target.
    const OpInfo& info = op_info(op.op);
    if (static_cast<int>(op.inputs.size()) != info.arity ||
        op.input_metas.size() != op.inputs.size() || !op.output_metas.empty()) {
      return false;
    }
    const TensorMeta& self = op.input_metas[0];
    if (!float_type(self.dtype)) return false;
    for (const TensorMeta& in : op.input_metas) {
      if (in.dtype != self.dtype || !broadcasts_to(in.shape, self.shape)) return false;
    }
    return op.ints.size() + op.floats.size() <= 1;
  }
  if (!fusible_code(op.op) || op.output_metas.size() != 1) return false;
  const OpInfo& info = op_info(op.op);
  if (static_cast<int>(op.inputs.size()) != info.arity ||
      op.input_metas.size() != op.inputs.size()) {
    return false;
  }
  const TensorMeta& out = op.output_metas[0];
  if (!float_type(out.dtype)) return false;
  for (const TensorMeta& in : op.input_metas) {
    if (!float_type(in.dtype) || !broadcasts_to(in.shape, out.shape)) return false;
  }
  if (scalar_operand(op.op) && op.ints.size() + op.floats.size() != 1) return false;
  if (!scalar_operand(op.op) && !(op.ints.empty() && op.floats.empty())) return false;
  // `to` with the same dtype returns its input (an alias, as Tensor::to does);
  // fusing it would turn the alias into a copy.
  if (op.op == OpCode::To && op.input_metas[0].dtype == out.dtype) return false;
  return true;
}

size_t Graph::fused_groups() const {
  return std::count_if(steps.begin(), steps.end(),
                       [](const Step& s) { return s.kind == StepKind::Fused; });
}

size_t Graph::fused_ops() const {
  size_t n = 0;
  for (const Step& s : steps) {
    if (s.kind == StepKind::Fused) n += s.group.ops.size();
  }
  return n;
}

std::string Graph::describe() const {
  std::ostringstream out;
  for (size_t i = 0; i < steps.size(); ++i) {
    const Step& s = steps[i];
    out << "step " << i << ": ";
    if (s.kind == StepKind::Library) {
      const ChainOp& op = chain.ops[s.op];
      out << "library " << op_name(op.op) << " in " << values_str(op.inputs);
      if (op_output[s.op] >= 0) out << " out (" << op_output[s.op] << ")";
    } else {
      out << "fused [";
      for (size_t k = 0; k < s.group.ops.size(); ++k) {
        out << (k ? ", " : "") << op_name(chain.ops[s.group.ops[k]].op);
      }
      out << "] in " << values_str(s.group.inputs) << " out " << values_str(s.group.outputs)
          << " shape " << shape_str(s.group.shape);
    }
    out << "\n";
  }
  return out.str();
}

Graph build_graph(const Chain& chain, const FusionOptions& options) {
  GT_CHECK(chain.externals >= 0 && chain.external_metas.size() == static_cast<size_t>(chain.externals),
           "[jit.build_graph] expected ", chain.externals, " external metas, got ",
           chain.external_metas.size());
  Graph g;
  g.chain = chain;
  g.values.reserve(chain.externals + chain.escapes.size());
  g.scalar_base.assign(chain.ops.size(), -1);
  for (size_t i = 0; i < chain.ops.size(); ++i) {
    const ChainOp& op = chain.ops[i];
    if (!dynamic_floats(op.op) || op.floats.empty()) continue;
    g.scalar_base[i] = static_cast<int32_t>(g.default_scalars.size());
    g.default_scalars.insert(g.default_scalars.end(), op.floats.begin(), op.floats.end());
  }
  for (const TensorMeta& m : chain.external_metas) g.values.push_back({m, -1, false});

  // Number the produced values and check every op against them.
  for (size_t i = 0; i < chain.ops.size(); ++i) {
    const ChainOp& op = chain.ops[i];
    const OpInfo* info = find_op(static_cast<uint16_t>(op.op));
    GT_CHECK(info, "[jit.build_graph] op ", i, " has unknown op code ", static_cast<int>(op.op));
    GT_CHECK(op.op != OpCode::FromData, "[jit.build_graph] op ", i,
             " (tensor) reads a data frame; chains cannot contain uploads");
    GT_CHECK(op.input_metas.size() == op.inputs.size(), "[jit.build_graph] op ", i, " (",
             info->name, ") has ", op.inputs.size(), " inputs but ", op.input_metas.size(),
             " input metas");
    GT_CHECK(op.output_metas.size() == static_cast<size_t>(info->outputs), "[jit.build_graph] op ",
             i, " (", info->name, ") expected ", info->outputs, " output metas, got ",
             op.output_metas.size());
    for (size_t k = 0; k < op.inputs.size(); ++k) {
      const int32_t v = op.inputs[k];
      GT_CHECK(v >= 0 && static_cast<size_t>(v) < g.values.size(), "[jit.build_graph] op ", i,
               " (", info->name, ") reads value ", v, " before it exists (", g.values.size(),
               " values so far)");
      GT_CHECK(g.values[v].meta == op.input_metas[k], "[jit.build_graph] op ", i, " (",
               info->name, ") input ", k, " is value ", v, " of shape ",
               shape_str(g.values[v].meta.shape), " ", to_string(g.values[v].meta.dtype),
               " but the op records ", shape_str(op.input_metas[k].shape), " ",
               to_string(op.input_metas[k].dtype));
    }
    int32_t out = -1;
    for (const TensorMeta& m : op.output_metas) {
      out = static_cast<int32_t>(g.values.size());
      const size_t k = g.values.size() - chain.externals;
      GT_CHECK(k < chain.escapes.size(), "[jit.build_graph] the ops produce more values than the ",
               chain.escapes.size(), " in Chain::escapes");
      g.values.push_back({m, static_cast<int32_t>(i), static_cast<bool>(chain.escapes[k])});
    }
    g.op_output.push_back(out);
  }
  GT_CHECK(g.values.size() - chain.externals == chain.escapes.size(), "[jit.build_graph] the ops produce ",
           g.values.size() - chain.externals, " values but Chain::escapes has ",
           chain.escapes.size());

  // Partition into maximal runs of fusible ops of one shape (an in-place
  // op's shape is its target's).
  auto op_shape = [&chain](size_t i) -> const Shape& {
    const ChainOp& op = chain.ops[i];
    return op.output_metas.empty() ? op.input_metas[0].shape : op.output_metas[0].shape;
  };
  std::vector<std::vector<int32_t>> runs;  // each: op indices; singletons for library ops
  std::vector<bool> run_fused;
  for (size_t i = 0; i < chain.ops.size(); ++i) {
    const ChainOp& op = chain.ops[i];
    const bool f = options.fuse && fusible(op);
    if (f && !runs.empty() && run_fused.back() && op_shape(runs.back().front()) == op_shape(i)) {
      runs.back().push_back(static_cast<int32_t>(i));
      continue;
    }
    runs.push_back({static_cast<int32_t>(i)});
    run_fused.push_back(f);
  }

  // Last step reading each value (for outputs and releases).
  std::vector<int32_t> op_step(chain.ops.size());
  for (size_t r = 0; r < runs.size(); ++r) {
    const bool fused = run_fused[r] && runs[r].size() >= std::max<size_t>(options.min_group_ops, 1);
    if (fused) {
      Step s;
      s.kind = StepKind::Fused;
      s.group.ops = runs[r];
      s.group.shape = op_shape(runs[r].front());
      for (int32_t i : runs[r]) op_step[i] = static_cast<int32_t>(g.steps.size());
      g.steps.push_back(std::move(s));
    } else {
      for (int32_t i : runs[r]) {
        Step s;
        s.kind = StepKind::Library;
        s.op = i;
        op_step[i] = static_cast<int32_t>(g.steps.size());
        g.steps.push_back(std::move(s));
      }
    }
  }
  std::vector<int32_t> last_read(g.values.size(), -1);
  for (size_t i = 0; i < chain.ops.size(); ++i) {
    for (int32_t v : chain.ops[i].inputs) last_read[v] = std::max(last_read[v], op_step[i]);
  }

  // Group inputs and outputs.
  for (size_t si = 0; si < g.steps.size(); ++si) {
    Step& s = g.steps[si];
    if (s.kind != StepKind::Fused) continue;
    FusedGroup& grp = s.group;
    std::vector<bool> inside(g.values.size(), false);
    for (int32_t i : grp.ops) {
      for (int32_t v : chain.ops[i].inputs) {
        if (!inside[v] && std::find(grp.inputs.begin(), grp.inputs.end(), v) == grp.inputs.end()) {
          grp.inputs.push_back(v);
        }
      }
      if (g.op_output[i] >= 0) inside[g.op_output[i]] = true;
      if (chain.ops[i].output_metas.empty()) {
        const int32_t u = chain.ops[i].inputs[0];
        if (!inside[u] && std::find(grp.updates.begin(), grp.updates.end(), u) == grp.updates.end()) {
          grp.updates.push_back(u);
        }
      }
      for (size_t k = 0; k < chain.ops[i].floats.size() && g.scalar_base[i] >= 0; ++k) {
        grp.scalars.push_back(g.scalar_base[i] + static_cast<int32_t>(k));
      }
    }
    for (int32_t i : grp.ops) {
      const int32_t v = g.op_output[i];
      if (v >= 0 && (g.values[v].escapes || last_read[v] > static_cast<int32_t>(si))) {
        grp.outputs.push_back(v);
      }
    }
  }

  // Releases: materialised produced values that do not escape die after their
  // last reader (or their producer, when nothing reads them).
  g.dead_after.resize(g.steps.size());
  for (size_t si = 0; si < g.steps.size(); ++si) {
    const Step& s = g.steps[si];
    std::vector<int32_t> made;
    if (s.kind == StepKind::Library) {
      if (g.op_output[s.op] >= 0) made.push_back(g.op_output[s.op]);
    } else {
      made = s.group.outputs;
    }
    for (int32_t v : made) {
      if (g.values[v].escapes) continue;
      g.dead_after[std::max<int32_t>(last_read[v], static_cast<int32_t>(si))].push_back(v);
    }
  }
  return g;
}

}  // namespace gt::worker::jit
