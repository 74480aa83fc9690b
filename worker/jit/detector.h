#pragma once
// The hot-path detector: finds the repeating unit of a stream of per-op
// signatures (worker/jit/recorder.h computes them) in O(1) amortised work per
// op and bounded memory. See Note [hot path detection] in detector.cpp.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

namespace gt::worker::jit {

struct DetectorOptions {
  /// Identical consecutive repetitions of a unit before it is reported
  /// (GT_HOTPATH_THRESHOLD; 2 = "at the first repetition"). At least 2.
  int threshold = 10;
  /// Signatures kept, rounded up to a power of two (16 .. 2^24). The longest
  /// unit found is window / 2 ops.
  uint32_t window = 8192;
  /// Candidate periods followed at once (1 .. 64).
  int trackers = 8;
  /// Length of the signature context that proposes periods besides the
  /// single signature (2 .. 256); finds units in which no op is unique.
  int context = 16;
};

/// A repeating unit of the op stream. Positions count recorded ops from 0.
struct Detection {
  uint32_t period = 0;        // ops per unit
  uint64_t start = 0;         // position of the first op of the last full unit
  uint32_t repetitions = 0;   // identical consecutive units seen when it fired
  uint64_t region_begin = 0;  // first position of the repeating stretch still in the window
  uint64_t key = 0;           // identity of the unit's signatures, the same for every rotation

  /// Position just after the last full unit.
  uint64_t end() const { return start + period; }
  /// True when an op at `pos` begins a unit in this detection's phase.
  bool at_unit_start(uint64_t pos) const { return period > 0 && pos % period == start % period; }
};

/// Finds the minimal period P such that the last threshold * P signatures
/// repeat with period P, and reports it once.
///
/// A reported unit is remembered by its rotation-invariant key and not
/// reported again until reset(), so a loop that pauses (an evaluation pass)
/// and resumes is reported once; a different steady state (new shapes, a new
/// loop) is reported when it has repeated `threshold` times. The reported
/// phase ends at the latest signature; SequenceRecorder re-phases it.
///
/// Copyable value type. Not thread-safe. The constructor throws
/// std::invalid_argument for options out of range.
class HotPathDetector {
 public:
  explicit HotPathDetector(DetectorOptions options = {});

  /// Appends the signature of the next op. Returns a detection when a unit
  /// not reported before has just completed its threshold-th repetition.
  [[nodiscard]] std::optional<Detection> push(uint64_t signature);

  /// Forgets the history, the candidates and the reported units. Positions
  /// keep counting from where they were.
  void reset();

  /// Signatures pushed so far (the position of the next one).
  uint64_t position() const { return next_; }
  /// Oldest position still held.
  uint64_t oldest() const;
  /// Signature at `pos`; `pos` must lie in [oldest(), position()).
  uint64_t signature(uint64_t pos) const { return ring_[pos & mask_]; }
  uint32_t window() const { return static_cast<uint32_t>(ring_.size()); }
  uint32_t max_period() const { return window() / 2; }
  int threshold() const { return options_.threshold; }
  /// Bytes held by the detector (fixed after construction, plus the scratch
  /// of a detection, at most max_period() entries).
  size_t memory_bytes() const;

 private:
  struct Tracker {
    uint32_t period = 0;    // 0 = unused
    uint64_t run = 0;       // consecutive positions with sig[j] == sig[j - period], ending now
    bool reported = false;  // this run already fired (or was suppressed)
  };
  struct Seen {  // a direct-mapped table of the last position of a signature
    uint32_t check = 0;
    uint32_t pos = 0;  // low 32 bits of position + 1 (0 = empty)
  };

  void propose(uint64_t pos, std::vector<Seen>& table, uint64_t key);
  void track(uint32_t period, uint64_t pos);
  std::optional<Detection> fire(const Tracker& t, uint64_t pos);

  DetectorOptions options_;
  std::vector<uint64_t> ring_;  // signature of position p at p & mask_
  uint64_t mask_ = 0;
  uint64_t next_ = 0;           // position of the next signature
  uint64_t begin_ = 0;          // first position after the last reset
  std::vector<Seen> seen_one_;  // by single signature
  std::vector<Seen> seen_ctx_;  // by context hash
  int table_shift_ = 0;
  uint64_t ctx_hash_ = 0;  // polynomial hash of the last `context` signatures
  uint64_t ctx_pow_ = 1;   // base^context, removes the signature leaving the context
  std::vector<Tracker> trackers_;
  std::vector<uint64_t> reported_;  // keys of reported units, oldest overwritten first
  size_t reported_next_ = 0;
  std::vector<uint32_t> scratch_;  // prefix function of a unit, at detection only
};

}  // namespace gt::worker::jit
