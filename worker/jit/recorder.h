#pragma once
// The sequence recorder: one per session, fed by the executor after each
// instruction. It signs every executed op without tensor ids, keeps the last
// `window` ops, tracks which values the client frees or reads later, and asks
// the detector whether a unit has become hot. See Note [op signatures] and
// Note [unit phase] in recorder.cpp, Note [chain values] in chain.h.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include <gt/dtype.h>

#include "common/op_table.h"
#include "common/wire.h"
#include "worker/jit/chain.h"
#include "worker/jit/detector.h"

namespace gt::worker::jit {

struct RecorderOptions {
  /// Identical repetitions before a unit is reported (GT_HOTPATH_THRESHOLD;
  /// 2 for GT_COMPILE=1). At least 2.
  int threshold = 10;
  /// Ops kept, rounded up to a power of two; units up to window / 2 ops are
  /// found, and an input last touched more than `window` ops ago is external.
  uint32_t window = 8192;
};

/// One executed op, without the wire (the lower-level entry, for tests and
/// for callers that are not the executor).
struct OpRecord {
  OpCode op = OpCode::Add;
  std::span<const int64_t> ints;
  std::span<const double> floats;
  DType dtype = DType::Float32;  // the instruction's dtype attribute
  std::span<const wire::TensorId> inputs;
  std::span<const wire::TensorId> outputs;
  std::span<const TensorMeta> input_metas;   // one per input
  std::span<const TensorMeta> output_metas;  // one per output (none for in-place ops)
};

/// Records a session's executed instructions and reports hot units.
///
/// Call on_op after every Op instruction that ran (not for failed or
/// poisoned ones), on_free for Free, on_barrier for Fetch and Sync. A call to
/// on_op that returns a Detection means a unit has just repeated `threshold`
/// times; chain(detection) describes it while the unit is still in the
/// window (call it right away; it keeps working for at least
/// window - 2 * period more ops).
///
/// Copyable value type (memory is bounded by the window and the widest op
/// seen). Not thread-safe: the executor thread owns it. Throws
/// std::invalid_argument for bad options or mismatched meta counts.
class SequenceRecorder {
 public:
  explicit SequenceRecorder(RecorderOptions options = {});

  /// Records an executed Op instruction; metas are those the executor
  /// checked (inputs) and inferred (outputs).
  [[nodiscard]] std::optional<Detection> on_op(const wire::Instruction& in,
                                               std::span<const TensorMeta> input_metas,
                                               std::span<const TensorMeta> output_metas);
  /// The same for an op given field by field.
  [[nodiscard]] std::optional<Detection> record(const OpRecord& op);
  /// Records a Free: the ids die (values produced in the window are marked
  /// freed). Frees do not enter the signature sequence.
  void on_free(std::span<const wire::TensorId> ids);
  /// Records a Fetch (its ids are read here) or a Sync (no ids): a phase
  /// boundary hint for the next unit, not part of the signature sequence.
  void on_barrier(std::span<const wire::TensorId> reads = {});

  /// The unit [d.start, d.end()) as a chain. Throws std::out_of_range when
  /// the unit is no longer (or not yet) entirely in the window.
  Chain chain(const Detection& d) const;

  /// Forgets everything, reported units included; positions keep counting.
  void reset();

  /// Ops recorded so far (the position of the next op).
  uint64_t position() const { return next_; }
  /// Oldest position still in the window.
  uint64_t oldest() const { return detector_.oldest(); }
  /// Signature of the op at `pos` (in [oldest(), position())).
  uint64_t signature(uint64_t pos) const { return detector_.signature(pos); }
  uint32_t window() const { return detector_.window(); }
  /// Ids currently tracked: live ids named within the last 1.5 windows
  /// (Note [op signatures]).
  size_t tracked_ids() const { return ids_size_; }
  /// Approximate bytes held (slots, their vectors, the id table, the detector).
  size_t memory_bytes() const;

 private:
  struct Output {  // what became of one produced value (Note [unit phase])
    uint64_t last_read =
        0;  // 2 * pos + 1: read by the op at pos; 2 * pos: fetched before op pos; 0: never
    bool fetched = false;
    bool freed = false;
  };
  struct Slot {
    uint64_t pos = UINT64_MAX;  // position held; UINT64_MAX = empty
    uint64_t weak = 0;          // signature without input naming (Note [unit phase])
    OpCode op = OpCode::Add;
    DType dtype = DType::Float32;
    bool barrier_before = false;  // a Fetch or Sync came just before this op
    uint32_t n_in = 0, n_out = 0, n_ints = 0, n_floats = 0;
    uint32_t in_metas_end = 0;  // words[.. in_metas_end): ints, floats, input metas
    uint32_t metas_end = 0;     // words[in_metas_end .. metas_end): output metas; then ids
    // The op packed in one buffer that keeps its capacity: ints, floats (bit
    // patterns), input metas, output metas (each dtype | rank << 8, then the
    // dims), input ids, output ids.
    std::vector<uint64_t> words;
    std::vector<Output> outs;
  };
  struct IdEntry {  // what the recorder knows of a live id
    wire::TensorId id = 0;
    uint64_t touch = UINT64_MAX;  // position of the last op that named it; UINT64_MAX = empty cell
    uint64_t producer = UINT64_MAX;  // position of the op that produced it; UINT64_MAX = outside
    uint32_t touch_operand = 0;      // operand index at `touch` (inputs, then outputs)
    uint32_t output = 0;             // output index at `producer`
  };

  Slot& slot(uint64_t pos) { return slots_[pos & mask_]; }
  const Slot& slot(uint64_t pos) const { return slots_[pos & mask_]; }
  Output* produced(const IdEntry& e);
  Detection rephase(const Detection& raw) const;
  void sweep_ids();

  // Open-addressing id table (linear probing, backward-shift deletion).
  IdEntry* find_id(wire::TensorId id);
  IdEntry& insert_id(wire::TensorId id);
  void erase_id(IdEntry* e);
  size_t home(wire::TensorId id) const;

  RecorderOptions options_;
  HotPathDetector detector_;
  std::vector<Slot> slots_;  // op at position p in slots_[p & mask_]
  uint64_t mask_ = 0;
  uint64_t next_ = 0;
  bool barrier_pending_ = false;
  std::vector<IdEntry> ids_;  // power-of-two cells
  size_t ids_size_ = 0;
  std::vector<IdEntry> ids_spare_;  // reused by sweep_ids()
};

}  // namespace gt::worker::jit
