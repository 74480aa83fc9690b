#pragma once
// The autograd tape: backward nodes, saved tensors, the hooks the op front end
// calls when it issues an op, and the backward engine.
//
// Note [autograd record]
// Every TensorNode carries its own record (tensor_node.h): requires_grad, the
// GradFn that produced it (null for leaves), the accumulated gradient of a
// leaf and a version counter shared by all tensors that alias the same worker
// storage. Issuing an op with grad mode on and an input that requires grad
// creates one GradFn holding the op's attributes, the metas of its inputs, one
// Edge per input (to the input's GradFn, or to the input itself when it is a
// leaf) and only the tensors its backward rule asks to save. backward() walks
// the GradFns reachable from the root with an explicit stack, counts the
// dependencies of each, then runs them in a dependency-respecting order
// (newest first among the ready ones), issuing the gradient computations as
// ordinary gt ops under no-grad: they are queued, batched, sharded and compiled
// like the forward pass and never wait for the cluster.
//
// Note [saved outputs]
// A rule that needs the op's output (exp, tanh, softmax, ...) cannot keep the
// output's node: the node owns the GradFn, which would then own the node, and
// the tensor would never be freed. Instead the output's id moves to a plain
// "data holder" node without autograd history; the output node and the GradFn
// both point at the holder, and the id is released when the last of them dies.
//
// Note [backward scopes]
// A GradFn keeps the signal scope stack its forward op was issued in. The
// backward engine issues everything that computes a GradFn's gradients (its
// rule, the casts and sums into its inputs' gradients, the accumulation into
// leaves, and for the root the seed gradient) with its thread's stack set to
// that stack's backward counterpart, so the stream shows an EnterBackward
// frame per scope, named after the forward signal, and the dispatcher places
// gradients by each signal's `backward` entry. A GradFn recorded outside any
// scope gets its gradients outside any scope, whatever scope backward() is
// called in. The backward chains are built once per pass (BackwardScopes in
// scope.h).
//
// Note [version counters]
// A saved tensor remembers its version when saved. Each in-place op bumps the
// counter shared by every tensor aliasing the same worker storage (views made
// by view/reshape/transpose/slice/expand/permute/squeeze/unsqueeze share their
// base's counter; detach() shares it too). Unpacking a saved tensor whose
// version moved throws, naming the op, instead of computing a wrong gradient.
// Counters are created lazily (on the first save, view or alias), so plain
// tensors pay nothing.

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <gt/export.h>
#include <gt/tensor.h>

#include "client/internal/scope.h"
#include "common/op_table.h"

namespace gt::client {

class TensorNode;
struct GradFn;

/// In-place modifications of one worker storage (Note [version counters]).
struct VersionCounter {
  std::atomic<uint32_t> version{0};
  /// A differentiable view of this storage exists (or this storage is one):
  /// in-place ops that would need autograd's view handling are refused.
  std::atomic<bool> viewed{false};
};

/// Where the gradient of one forward input goes: the input's GradFn, or the
/// input itself when it is a leaf that requires grad. Neither: no gradient.
struct Edge {
  std::shared_ptr<GradFn> fn;
  std::shared_ptr<TensorNode> leaf;
  bool valid() const { return fn || leaf; }
};

/// A tensor kept for backward, with its version at save time.
struct SavedTensor {
  std::shared_ptr<TensorNode> node;
  std::shared_ptr<VersionCounter> counter;
  uint32_t version = 0;
};

/// One recorded op (PyTorch's Node). Single output, as every gt op has.
/// Immutable after recording, except `saved`, which backward releases.
struct GT_API GradFn {
  OpCode op;
  uint64_t sequence_nr = 0;  // creation order; backward runs newer nodes first
  std::vector<int64_t> ints;
  std::vector<double> floats;
  std::vector<TensorMeta> inputs;  // metas of the forward inputs
  TensorMeta output;
  std::vector<Edge> next;  // one per forward input
  // Saved tensors by input position (undefined where not saved) and the output.
  std::vector<SavedTensor> saved_inputs;
  SavedTensor saved_output;
  bool released = false;  // saved tensors freed by a backward without retain_graph
  // The signal scopes the forward op was issued in (Note [backward scopes]).
  ScopeRef scope;

  /// "MulBackward", "MatmulBackward", ... (for messages and tests).
  std::string name() const;
};

/// Whether gradients are recorded on this thread (NoGradGuard turns it off).
GT_API bool grad_mode_enabled();

// ---- hooks of the op front end (tensor.cpp: apply, apply_n, apply_inplace) ----

/// Called for every out-of-place op after its output node is built and before
/// the instruction is issued: tracks aliasing (version counters) and, when grad
/// mode is on and an input requires grad, records a GradFn on `output`.
void record_op(OpCode code, std::span<const Tensor* const> inputs, const Tensor& output,
               std::span<const int64_t> ints, std::span<const double> floats);

/// Called for every in-place op after its checks and before its instruction is
/// issued: refuses in-place ops that would corrupt autograd (a leaf that
/// requires grad, an aliased tensor in the graph), rebases `self`'s history
/// onto a GradFn of the in-place op (inputs: self before the op, then
/// `others`) when gradients flow, and bumps the version counter. May issue a
/// copy of `self` that the backward needs.
void record_inplace(OpCode code, const Tensor& self, std::span<const Tensor* const> others,
                    std::span<const int64_t> ints, std::span<const double> floats);

/// Creation ops: only floating tensors can require grad.
void check_requires_grad_dtype(DType dtype, std::string_view op);

// ---- engine and leaf gradients (also used by gt::nn and gt::optim) ----

/// Runs backward from `root` with `gradient` (ones for a one-element root
/// when undefined). See Tensor::backward.
GT_API void run_backward(const Tensor& root, const Tensor& gradient, bool retain_graph);

/// Replaces a leaf's gradient (undefined clears it).
GT_API void set_grad(const Tensor& leaf, const Tensor& grad);

/// The GradFn of a tensor (null for leaves and tensors without history).
GT_API std::shared_ptr<GradFn> grad_fn_of(const Tensor& t);

/// The version counter value of a tensor's storage (0 if never modified in place).
GT_API uint32_t version_of(const Tensor& t);

}  // namespace gt::client
