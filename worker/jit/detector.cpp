#include "worker/jit/detector.h"

#include <algorithm>
#include <bit>
#include <stdexcept>
#include <string>

#include "worker/jit/chain.h"

// Note [hot path detection]
// The detector sees one 64-bit signature per executed op (frees, fetches and
// syncs are not ops) and looks for the smallest period P such that the last
// threshold * P signatures satisfy sig[j] == sig[j - P].
//
// Candidates. A period is proposed when the current signature, or the hash of
// the last `context` signatures, was last seen P positions ago (two
// direct-mapped tables keyed by those hashes; a hit is checked against the
// ring, so a stale or colliding entry costs nothing but a compare). In a
// steady loop every op that is unique within the unit proposes the unit's
// period, and every context that is unique does, which covers units in which
// each op repeats (the same optimizer update for six parameters): a primitive
// unit of period P has unique contexts of length >= P, and in practice far
// shorter ones.
//
// Runs. Up to `trackers` candidate periods are followed at once. Each keeps
// `run`, the number of consecutive positions ending now at which
// sig[j] == sig[j - P]; a unit has repeated r times exactly when
// run >= (r - 1) * P. A newly proposed period gets its run by scanning
// backwards (stopping at the first mismatch or at (threshold - 1) * P), so a
// loop fires at the same op however late its period was proposed. A full
// tracker table replaces the candidate with the shortest run: the true period
// of a steady state has the longest run and is never the one replaced.
//
// Whole units. A repeated sub-pattern inside the unit (the same update for
// several parameters) matches only inside the unit: its run breaks at the
// unit boundary, so it fires only if it alone repeats `threshold` times in a
// row. Multiples of the period (2P, 3P) reach their thresholds later and are
// reduced to their primitive root before reporting, then suppressed as
// already reported.
//
// Reporting once. A report carries the hash of the unit's least rotation
// (`key`), the same whatever the phase; keys already reported are not
// reported again until reset(). A run that breaks and resumes (a shape
// change and back, an evaluation pass) therefore reports once, and a new
// steady state reports when it has repeated `threshold` times.
//
// Costs. push() does O(trackers) compares and two table probes, plus the
// backward scan of a newly proposed period (bounded by its run, usually a few
// positions). A detection costs O(P). Memory is fixed: the ring (8 bytes per
// position), two tables (2 x 2 x window x 8 bytes), the trackers, at most 256
// reported keys, and a scratch of at most window / 2 entries.

namespace gt::worker::jit {
namespace {

constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ULL;
constexpr uint64_t kContextBase = 0x100000001B3ULL * 2 + 1;  // odd
constexpr size_t kMaxReported = 256;


uint64_t mix(uint64_t h, uint64_t v) {
  h ^= fmix64(v + kGolden);
  return std::rotl(h, 29) * 0xBF58476D1CE4E5B9ULL;
}

void check_range(const char* what, int64_t value, int64_t lo, int64_t hi) {
  if (value < lo || value > hi) {
    throw std::invalid_argument("[jit.detector] " + std::string(what) + " must be in [" +
                                std::to_string(lo) + ", " + std::to_string(hi) + "], got " +
                                std::to_string(value));
  }
}

}  // namespace

HotPathDetector::HotPathDetector(DetectorOptions options) : options_(options) {
  check_range("threshold", options.threshold, 2, 1 << 20);
  check_range("window", options.window, 16, 1 << 24);
  check_range("trackers", options.trackers, 1, 64);
  check_range("context", options.context, 2, 256);
  const uint64_t window = std::bit_ceil(static_cast<uint64_t>(options.window));
  options_.window = static_cast<uint32_t>(window);
  ring_.assign(window, 0);
  mask_ = window - 1;
  // Two entries per position keep collisions rare for periods up to window/2.
  seen_one_.assign(2 * window, Seen{});
  seen_ctx_.assign(2 * window, Seen{});
  table_shift_ = 64 - std::countr_zero(2 * window);
  for (int i = 0; i < options.context; ++i) ctx_pow_ *= kContextBase;
  trackers_.assign(static_cast<size_t>(options.trackers), Tracker{});
  reported_.reserve(kMaxReported);
}

uint64_t HotPathDetector::oldest() const {
  const uint64_t w = ring_.size();
  return std::max(begin_, next_ > w ? next_ - w : 0);
}

void HotPathDetector::reset() {
  begin_ = next_;
  ctx_hash_ = 0;
  std::fill(trackers_.begin(), trackers_.end(), Tracker{});
  reported_.clear();
  reported_next_ = 0;
  // The tables keep stale entries: a hit is only taken when it lies at or
  // after begin_ and the ring agrees.
}

size_t HotPathDetector::memory_bytes() const {
  return sizeof(*this) + ring_.capacity() * sizeof(uint64_t) +
         (seen_one_.capacity() + seen_ctx_.capacity()) * sizeof(Seen) +
         trackers_.capacity() * sizeof(Tracker) + reported_.capacity() * sizeof(uint64_t) +
         scratch_.capacity() * sizeof(uint32_t);
}

std::optional<Detection> HotPathDetector::push(uint64_t signature) {
  const uint64_t pos = next_++;
  ring_[pos & mask_] = signature;

  for (Tracker& t : trackers_) {
    if (t.period == 0) continue;
    if (pos >= begin_ + t.period && ring_[(pos - t.period) & mask_] == signature) {
      ++t.run;
    } else {
      t.run = 0;
      t.reported = false;  // the steady state ended; a new one may fire
    }
  }

  // Context hash of the last `context` signatures (polynomial, rolling).
  const uint64_t context = static_cast<uint64_t>(options_.context);
  ctx_hash_ = ctx_hash_ * kContextBase + signature;
  if (pos >= begin_ + context) ctx_hash_ -= ring_[(pos - context) & mask_] * ctx_pow_;

  propose(pos, seen_one_, signature);
  if (pos + 1 >= begin_ + context) propose(pos, seen_ctx_, fmix64(ctx_hash_) ^ context);

  Tracker* best = nullptr;
  const uint64_t need_reps = static_cast<uint64_t>(options_.threshold - 1);
  for (Tracker& t : trackers_) {
    if (t.period == 0 || t.reported || t.run < need_reps * t.period) continue;
    if (!best || t.period < best->period) best = &t;
  }
  if (!best) return std::nullopt;
  best->reported = true;  // fired or suppressed: not looked at again in this run
  return fire(*best, pos);
}

void HotPathDetector::propose(uint64_t pos, std::vector<Seen>& table, uint64_t key) {
  Seen& e = table[(key * kGolden) >> table_shift_];
  const auto check = static_cast<uint32_t>(key ^ (key >> 32));
  if (e.check == check) {
    const uint32_t delta = static_cast<uint32_t>(pos) - e.pos;  // modulo 2^32
    if (delta >= 1 && delta <= max_period() && pos - delta >= begin_ &&
        ring_[(pos - delta) & mask_] == ring_[pos & mask_]) {
      track(delta, pos);
    }
  }
  e.check = check;
  e.pos = static_cast<uint32_t>(pos);
}

void HotPathDetector::track(uint32_t period, uint64_t pos) {
  Tracker* victim = nullptr;
  for (Tracker& t : trackers_) {
    if (t.period == period) return;  // already followed; its run counts this position
    if (!victim || t.run < victim->run || (t.period == 0 && victim->period != 0)) victim = &t;
  }
  // The run of a new candidate: how far back the stream already repeats with
  // this period, within the window (a run that started earlier is counted
  // from the window's start) and no further than firing needs.
  const uint64_t cap = static_cast<uint64_t>(options_.threshold - 1) * period;
  const uint64_t lo = oldest() + period;
  uint64_t run = 0;
  for (uint64_t j = pos; run < cap && j >= lo && ring_[j & mask_] == ring_[(j - period) & mask_];
       --j) {
    ++run;
  }
  *victim = Tracker{period, run, false};
}

std::optional<Detection> HotPathDetector::fire(const Tracker& t, uint64_t pos) {
  const uint64_t n = t.period;
  const uint64_t first = pos + 1 - n;
  auto at = [&](uint64_t k) { return ring_[(first + k) & mask_]; };

  // Primitive root of the unit (prefix function): a tracker for 2P that fires
  // describes the same loop as P.
  scratch_.assign(n, 0);
  for (uint64_t q = 1; q < n; ++q) {
    uint32_t k = scratch_[q - 1];
    while (k > 0 && at(q) != at(k)) k = scratch_[k - 1];
    if (at(q) == at(k)) ++k;
    scratch_[q] = k;
  }
  uint64_t p = n - scratch_[n - 1];
  if (n % p != 0) p = n;

  // Least rotation of the root (two-pointer minimum expression), hashed into
  // a key that does not depend on the phase.
  const uint64_t root = pos + 1 - p;
  auto rot = [&](uint64_t k) { return ring_[(root + k % p) & mask_]; };
  uint64_t i = 0, j = 1, k = 0;
  while (i < p && j < p && k < p) {
    const uint64_t a = rot(i + k), b = rot(j + k);
    if (a == b) {
      ++k;
      continue;
    }
    if (a > b)
      i += k + 1;
    else
      j += k + 1;
    if (i == j) ++j;
    k = 0;
  }
  const uint64_t least = std::min(i, j);
  uint64_t key = mix(0x6A09E667F3BCC908ULL, p);
  for (uint64_t q = 0; q < p; ++q) key = mix(key, rot(least + q));

  if (std::find(reported_.begin(), reported_.end(), key) != reported_.end()) return std::nullopt;
  if (reported_.size() < kMaxReported) {
    reported_.push_back(key);
  } else {
    reported_[reported_next_++ % kMaxReported] = key;
  }

  const uint64_t span = t.run + n;  // positions of the repeating stretch
  Detection d;
  d.period = static_cast<uint32_t>(p);
  d.start = root;
  d.repetitions = static_cast<uint32_t>(std::min<uint64_t>(span / p, UINT32_MAX));
  d.region_begin = std::max(pos + 1 - std::min(span, pos + 1), oldest());
  d.key = key;
  return d;
}

}  // namespace gt::worker::jit
