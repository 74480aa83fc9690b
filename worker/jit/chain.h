#pragma once
// The hot-path JIT's shared vocabulary: a chain is one repeating unit of a
// session's instruction stream, described without tensor ids, so that the
// same loop body issued again with fresh ids is the same chain.
//
// Note [chain values]
// Values are numbered by the chain itself: every input a unit reads from
// outside (parameters, the previous step's results, data uploaded before the
// unit) is an external value 0..externals-1, in order of first use; every
// output an op of the unit produces is value `externals + k` for the k-th
// output of the unit. An op's inputs name values by that number. A value
// produced in the unit either escapes (read after the unit, or never freed in
// the iterations observed) or dies inside (freed and never read after its last
// consumer in the unit); only escaping values must be materialised by compiled
// code. Free instructions themselves are not part of a chain: the client
// batches frees by size and time, so their positions in the stream vary from
// one iteration to the next.

#include <cstdint>
#include <string>
#include <vector>

#include "common/op_table.h"

namespace gt::worker::jit {

// Note [dynamic scalars]
// Some number operands change every iteration of a loop that is otherwise the
// same: Adam's bias corrections (lr / (1 - beta1^t), sqrt(1 - beta2^t)), a
// learning-rate schedule. The floats of the ops dynamic_floats() names are
// therefore left out of op signatures and chain digests: they are run-time
// arguments of a compiled chain. The matcher collects them from the matched
// instructions in op order (all floats of each such op), and compiled code
// reads them from there (RunOptions::scalars); ChainOp::floats keeps the
// values of the recorded instance. Floats that select an algorithm stay
// part of the chain (pow's exponent picks sqrt or a multiply; arange's
// bounds give the output's shape).

/// True when the op's float attributes are run-time numbers
/// (Note [dynamic scalars]).
bool dynamic_floats(OpCode op);

/// One op of a chain.
struct ChainOp {
  OpCode op;
  std::vector<int64_t> ints;
  std::vector<double> floats;
  DType dtype = DType::Float32;  // the instruction's dtype attribute
  std::vector<int32_t> inputs;   // chain value numbers (Note [chain values])
  std::vector<TensorMeta> input_metas;
  std::vector<TensorMeta> output_metas;  // empty for in-place ops (they mutate inputs[0])
  bool operator==(const ChainOp&) const = default;
};

/// One repeating unit of a stream.
struct Chain {
  int32_t externals = 0;                 // values 0..externals-1 come from outside
  std::vector<TensorMeta> external_metas;
  std::vector<ChainOp> ops;              // in stream order
  std::vector<bool> escapes;             // per produced value (index value - externals)

  /// Number of values the ops produce.
  int32_t produced() const { return static_cast<int32_t>(escapes.size()); }
  /// A stable 64-bit digest of everything above (the cache and guards use it).
  uint64_t digest() const;
  /// A digest of the chain's program alone: op codes, dtype attributes and how
  /// values flow, without shapes, integer or float attributes and escapes. The
  /// variants of one loop body (other shapes, other constants) share it, which
  /// is what GT_RECOMPILE_LIMIT counts.
  uint64_t structure_digest() const;
  /// True when some produced value dies inside the unit.
  bool has_dead_values() const;
  /// One line per op, for GT_DEBUG_COMPILE and test failure messages.
  std::string describe() const;
  bool operator==(const Chain&) const = default;
};

/// MurmurHash3's 64-bit finaliser: the mixing step of the JIT's signatures and
/// digests (fixed arithmetic, so values are stable across processes).
inline uint64_t fmix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xFF51AFD7ED558CCDULL;
  x ^= x >> 33;
  x *= 0xC4CEB9FE1A85EC53ULL;
  x ^= x >> 33;
  return x;
}

/// The chain without its uploads (FromData ops carry a payload frame, so they
/// run eagerly ahead of a compiled unit): each upload's value becomes an
/// external, appended after the chain's own externals, and the produced values
/// are renumbered. A chain without uploads comes back unchanged.
Chain without_uploads(const Chain& chain);

}  // namespace gt::worker::jit
