#pragma once
// The compiler's graph IR: a chain (worker/jit/chain.h) partitioned into the
// steps a compiled unit runs in order. Backend-neutral: a backend turns each
// FusedGroup into one generated kernel (worker/jit/codegen_cpu.h for the CPU;
// a CUDA backend is one more file beside it) and runs LibrarySteps through the
// kernel table (worker/kernels.h).
//
// Note [fusion groups]
// A FusedGroup is a maximal run of consecutive chain ops that the backend can
// fuse (`fusible`): elementwise ops on float32/float64 whose output shape is
// the broadcast of their inputs. Every op of a group produces the group's
// shape (an op of another shape starts a new group), so one loop over that
// shape computes the whole run; inputs broadcast into it. Runs are never
// reordered, so in-place ops, views and library calls keep their eager
// semantics exactly. A group's inputs are the values it reads that it does not
// produce; its outputs are the values it produces that an op after the group
// reads or that escape the chain (Chain::escapes). Every other value of the
// group (an intermediate the chain frees) lives in registers and is never
// materialised. A run shorter than FusionOptions::min_group_ops stays as
// library steps: one generated loop for one op only adds a compile.

#include <cstdint>
#include <string>
#include <vector>

#include "worker/jit/chain.h"

namespace gt::worker::jit {

/// Whether the fusing backends can fuse this op: an elementwise op among
/// add/sub/mul/div (and their scalar forms, rsub and rdiv included), neg, exp,
/// log, sqrt, rsqrt, relu, sigmoid, tanh, abs, sign, pow, pow_scalar,
/// rpow_scalar, gelu, gelu_backward and float32<->float64 `to`, with float32 or
/// float64 inputs and output. Comparisons, where and integer math are not.
bool fusible(const ChainOp& op);

/// A run of fused ops (Note [fusion groups]).
// Note [fused in-place updates]
// Elementwise in-place ops (add_, sub_, mul_ and their scalar forms, addcmul_,
// addcdiv_: optimizer updates) fuse like the others: inside the kernel the
// target's new value is a new local, read by the group's later ops, and the
// final value is stored into the target's own memory once per element (the
// kernel reads every input of an element before storing it, so the update
// reads the old value as eager does). Fusible when every operand has the
// target's dtype and broadcasts to its shape. At run time a target that is
// not contiguous, or whose memory is shared with another input of the group
// (a view), makes that group run op by op instead, as eager would.

struct FusedGroup {
  std::vector<int32_t> ops;      // indices into Chain::ops, in stream order
  std::vector<int32_t> inputs;   // chain values read but not produced here, first-use order
  std::vector<int32_t> outputs;  // chain values produced here and needed after, value order
  std::vector<int32_t> scalars;  // run-time number slots its ops read (Graph::scalar_base)
  // Values the group's in-place ops update that it did not produce (Note
  // [fused in-place updates]): their final values are stored into their own
  // memory, after `outputs` in the kernel's output list.
  std::vector<int32_t> updates;
  Shape shape;                   // the shape every op of the group produces
};

enum class StepKind : uint8_t { Library, Fused };

/// One step of a compiled unit: a library call or a fused group.
struct Step {
  StepKind kind = StepKind::Library;
  int32_t op = -1;   // Library: the index of the chain op
  FusedGroup group;  // Fused
};

/// What the graph knows about one chain value.
struct ValueInfo {
  TensorMeta meta;
  int32_t producer = -1;  // index of the producing chain op; -1 for externals
  bool escapes = false;   // produced values only
};

struct FusionOptions {
  bool fuse = true;           // false: every op is a library step
  size_t min_group_ops = 2;   // shorter runs stay library steps
};

/// The partitioned chain. A plain value: copyable, immutable after build_graph.
struct Graph {
  Chain chain;
  std::vector<ValueInfo> values;             // externals first (Note [chain values])
  std::vector<int32_t> op_output;            // per chain op: its output value, -1 for none
  // Per chain op: the slot of its first run-time number (Note [dynamic
  // scalars] in chain.h; its floats take consecutive slots), -1 for none.
  std::vector<int32_t> scalar_base;
  std::vector<double> default_scalars;       // the recorded instance's numbers, per slot
  std::vector<Step> steps;                   // in execution order
  std::vector<std::vector<int32_t>> dead_after;  // per step: produced values last used there

  /// Number of fused groups.
  size_t fused_groups() const;
  /// Chain ops that run inside fused groups.
  size_t fused_ops() const;
  /// One line per step ("fused [exp, mul] in (0, 3) out (5) shape (4, 8)").
  std::string describe() const;
};

/// Checks the chain (value numbering, metas, no payload ops) and partitions it.
/// Throws std::invalid_argument naming the first problem.
Graph build_graph(const Chain& chain, const FusionOptions& options = {});

}  // namespace gt::worker::jit
