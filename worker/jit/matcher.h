#pragma once
// Matching a session's incoming instructions against a compiled chain: the
// first piece of the JIT's execution stage (Note [JIT stages] in
// compile_service.h).
//
// Note [chain matching]
// A chain (chain.h) names values by number, not by id. The matcher walks the
// chain's ops in order and, for each incoming Op instruction, checks that it
// is the same op (code, dtype attribute, ints, float bit patterns, input and
// output counts) and that its ids are consistent with the chain's values:
// - an external value is bound to an id at its first use; that id must be live
//   (uploads run eagerly before the unit, so their results are) with the meta
//   the chain was compiled for (the shape/dtype guard), must not be an id the
//   unit produced, and must not already stand for another external;
// - a produced value must be named by the id the unit's op gave it;
// - an op's output ids must be new to the unit.
// The floats of dynamic_floats() ops are not compared: they are collected as
// the unit's run-time numbers (Note [dynamic scalars] in chain.h).
// Any difference is a divergence: the caller runs what it buffered eagerly.
// Metas of produced values need no check: they follow from the op table given
// equal ops and equal external metas.

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <vector>

#include "common/op_table.h"
#include "common/wire.h"
#include "worker/jit/chain.h"

namespace gt::worker::jit {

/// One incoming Op instruction, as the matcher sees it.
struct OfferedOp {
  OpCode op;
  std::span<const int64_t> ints;
  std::span<const double> floats;
  DType dtype = DType::Float32;
  std::span<const wire::TensorId> inputs;
  std::span<const wire::TensorId> outputs;
};

/// The meta of a live tensor of the session; nullopt when the id is not live
/// (or poisoned).
using LiveMeta = std::function<std::optional<TensorMeta>(wire::TensorId)>;

/// Matches the instruction stream against one chain (Note [chain matching]).
/// A value type; not thread-safe. The chain must outlive the matcher.
class ChainMatcher {
 public:
  enum class Step {
    Continue,  // matched; more ops of the unit to come
    Complete,  // matched the unit's last op: the bindings are complete
    Diverged,  // not this chain: the matcher is reset
  };

  explicit ChainMatcher(const Chain& chain);

  /// Offers the next Op instruction of the stream. After Complete, the
  /// bindings stay readable until the next offer, which starts a new unit.
  Step offer(const OfferedOp& op, const LiveMeta& live_meta);
  /// Forgets a partial match.
  void reset();

  /// Ops of the unit matched so far (0 when idle).
  size_t matched() const { return matched_; }
  const Chain& chain() const { return *chain_; }
  /// After Complete: the id of each external value, in value order.
  std::span<const wire::TensorId> external_ids() const { return external_ids_; }
  /// After Complete: the id of each produced value, in value order.
  std::span<const wire::TensorId> produced_ids() const { return produced_ids_; }
  /// After Complete: the unit's run-time numbers (Graph::default_scalars order).
  std::span<const double> scalars() const { return scalars_; }

 private:
  bool bound(wire::TensorId id) const;

  const Chain* chain_;
  size_t matched_ = 0;
  int32_t produced_ = 0;                      // produced values bound so far
  std::vector<wire::TensorId> external_ids_;  // 0 = not bound yet
  std::vector<wire::TensorId> produced_ids_;
  std::vector<double> scalars_;
};

}  // namespace gt::worker::jit
