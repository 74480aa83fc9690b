#pragma once
// Backward rules, one per op code (client/autograd_rules.cpp). The table is
// indexed by OpCode like the op table in common/, and a static_assert keeps
// it complete: every op is either differentiable with a rule or marked
// non-differentiable with the reason.

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include <gt/export.h>
#include <gt/scalar.h>
#include <gt/tensor.h>

#include "client/internal/autograd.h"
#include "common/op_table.h"

namespace gt::client {

/// Bit i: keep forward input i for backward (for in-place ops, bit 0 is the
/// value of `self` before the op). kSaveOutput: keep the op's output.
using SaveMask = uint32_t;
inline constexpr SaveMask kSaveOutput = 1u << 31;
inline constexpr SaveMask kSaveNothing = 0;

/// What a backward rule sees: the output's gradient, the recorded op and its
/// saved tensors. The rule fills grads (one per forward input; undefined
/// where the input needs none). Gradients may come back in the output's
/// dtype; the engine casts them to each input's dtype.
class BackwardContext {
 public:
  BackwardContext(GradFn& fn, Tensor grad) : fn_(fn), grad_(std::move(grad)) {
    grads.resize(fn.inputs.size());
  }

  /// Gradient of the op's output.
  const Tensor& grad() const { return grad_; }
  /// Whether forward input i needs a gradient.
  bool needs(size_t i) const { return fn_.next[i].valid(); }
  /// Meta of forward input i / of the output.
  const TensorMeta& input(size_t i) const { return fn_.inputs[i]; }
  const TensorMeta& output() const { return fn_.output; }
  /// The op's attributes.
  std::span<const int64_t> ints() const { return fn_.ints; }
  std::span<const double> floats() const { return fn_.floats; }
  /// The op's number operand (ints[0] or floats[0]).
  Scalar scalar() const;
  /// A saved tensor; throws gt::Error when it was modified in place after it
  /// was saved or freed by an earlier backward.
  Tensor saved_input(size_t i) const;
  Tensor saved_output() const;

  std::vector<Tensor> grads;

 private:
  Tensor unpack(const SavedTensor& s, const char* what) const;
  GradFn& fn_;
  Tensor grad_;
};

/// needs: bit i set when forward input i needs a gradient (inputs past 30
/// are not represented; no variadic op saves its inputs).
using SaveFn = SaveMask (*)(uint32_t needs);
using BackwardFn = void (*)(BackwardContext& ctx);

struct BackwardRule {
  OpCode op;
  bool differentiable;
  /// Non-differentiable ops: why (documentation; their outputs never require grad).
  std::string_view not_differentiable_because;
  SaveFn save;          // nullptr: saves nothing
  BackwardFn backward;  // set exactly when differentiable
};

/// The rule of an op code.
GT_API const BackwardRule& backward_rule(OpCode op);

/// The gradient `grad` of a broadcast result summed back to `shape` (the
/// shape of the operand before broadcasting).
GT_API Tensor sum_to(const Tensor& grad, const Shape& shape);

}  // namespace gt::client
