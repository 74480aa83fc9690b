#include "worker/jit/recorder.h"

#include <algorithm>
#include <bit>
#include <stdexcept>
#include <string>
#include <unordered_map>

// Note [op signatures]
// Each executed op gets a 64-bit signature: op code, dtype attribute, ints,
// floats (bit patterns; not for ops whose floats are run-time numbers, Note
// [dynamic scalars] in chain.h), input count, output count, every input's shape and
// dtype, and for every input where its value was last named: "operand k of
// the op d positions back" (d < window; an in-place op's target, the previous
// step's result and a parameter read once per step all keep the same d from
// one iteration to the next), or "external" when no op in the window named it.
// Naming inputs by their last touch rather than by their producer keeps the
// signature of a loop body constant when it reads values created once before
// the loop (the previous iteration touched them at the same distance), while
// still pinning down the dataflow inside the window: operand k of a given
// earlier op is one value. The first iteration of a loop differs from the
// next ones (it reads the loop's initial values), so a loop usually reports
// after threshold + 1 iterations.
//
// Frees, fetches and syncs do not enter the sequence: the client batches
// frees by size and time, and a fetch of the loss every hundred steps must not
// break a steady state. They are recorded as facts about values: each output
// of an op in the window keeps whether it was freed, fetched, and the last
// time it was read. The id table maps a live id to its last touch and its
// producer; an entry leaves when its id is freed, and an entry whose last
// touch has left the window counts as absent and is dropped by a sweep every
// window / 2 ops, so the table holds at most the ids named by 1.5 windows of
// ops. (Dropping entries as their slot is overwritten would cost three more
// lookups per op.)
//
// Note [unit phase]
// The detector reports a unit ending at the latest op; any rotation of it is
// the same loop. The recorder cuts the loop where the fewest values cross:
// for each rotation, the number of values produced before the cut and read
// by an op at or after it (measured on the instance two periods back, whose
// readers have all run). A fetch sits before the cut that follows it, so a
// value fetched at the end of a step does not cross. Ties go, in order, to a
// cut that follows a Fetch or Sync (the client waited there: the natural end
// of a step), then to the rotation closest after the loop's first op in the
// stream (the repeating stretch extended backwards over ops equal up to input
// naming, i.e. where the user's loop body begins). A training step thus starts
// at its first forward op, and matmul -> add -> relu starts at the matmul.

namespace gt::worker::jit {
namespace {

constexpr uint64_t kNone = UINT64_MAX;
constexpr uint64_t kSeed = 0x243F6A8885A308D3ULL;
constexpr uint64_t kExternal = 0xA5A5A5A5A5A5A5A5ULL;
constexpr size_t kMaxEscapeInstances = 8;  // instances of a unit consulted for escapes

// Cheap running mix (one multiply per word); the detector receives the
// finalised value.
inline uint64_t mix(uint64_t h, uint64_t v) {
  return (std::rotl(h, 23) ^ v) * 0x9E3779B97F4A7C15ULL;
}


inline uint64_t mix_meta(uint64_t h, const TensorMeta& m) {
  h = mix(h, static_cast<uint64_t>(m.dtype) | (static_cast<uint64_t>(m.shape.size()) << 8));
  for (int64_t d : m.shape) h = mix(h, static_cast<uint64_t>(d));
  return h;
}

DetectorOptions detector_options(const RecorderOptions& o) {
  DetectorOptions d;
  d.threshold = o.threshold;
  d.window = o.window;
  return d;
}

}  // namespace

SequenceRecorder::SequenceRecorder(RecorderOptions options)
    : options_(options), detector_(detector_options(options)) {
  slots_.resize(detector_.window());
  mask_ = slots_.size() - 1;
}

std::optional<Detection> SequenceRecorder::on_op(const wire::Instruction& in,
                                                 std::span<const TensorMeta> input_metas,
                                                 std::span<const TensorMeta> output_metas) {
  OpRecord r;
  r.op = static_cast<OpCode>(in.op());
  r.ints = wire::view(in.ints());
  r.floats = wire::view(in.floats());
  r.dtype = static_cast<DType>(in.dtype());
  r.inputs = wire::view(in.inputs());
  r.outputs = wire::view(in.outputs());
  r.input_metas = input_metas;
  r.output_metas = output_metas;
  return record(r);
}

std::optional<Detection> SequenceRecorder::record(const OpRecord& r) {
  if (r.input_metas.size() != r.inputs.size() || r.output_metas.size() != r.outputs.size()) {
    throw std::invalid_argument("[jit.recorder.record] metas do not match ids: expected " +
                                std::to_string(r.inputs.size()) + " input and " +
                                std::to_string(r.outputs.size()) + " output metas, got " +
                                std::to_string(r.input_metas.size()) + " and " +
                                std::to_string(r.output_metas.size()));
  }
  const uint64_t pos = next_;
  const uint64_t window = mask_ + 1;
  if (pos > 0 && (pos & (window / 2 - 1)) == 0) sweep_ids();

  // Pack the op into its slot (the buffer keeps its capacity: no allocation
  // once the window has been filled by ops of this size).
  const auto n_in = static_cast<uint32_t>(r.inputs.size());
  const auto n_out = static_cast<uint32_t>(r.outputs.size());
  size_t in_words = 0, out_words = 0;
  for (const TensorMeta& m : r.input_metas) in_words += 1 + m.shape.size();
  for (const TensorMeta& m : r.output_metas) out_words += 1 + m.shape.size();
  Slot& s = slot(pos);
  s.pos = pos;
  s.op = r.op;
  s.dtype = r.dtype;
  s.barrier_before = barrier_pending_;
  barrier_pending_ = false;
  s.n_in = n_in;
  s.n_out = n_out;
  s.n_ints = static_cast<uint32_t>(r.ints.size());
  s.n_floats = static_cast<uint32_t>(r.floats.size());
  s.in_metas_end = static_cast<uint32_t>(r.ints.size() + r.floats.size() + in_words);
  s.metas_end = static_cast<uint32_t>(s.in_metas_end + out_words);
  s.words.resize(s.metas_end + n_in + n_out);
  uint64_t* w = s.words.data();
  for (int64_t v : r.ints) *w++ = static_cast<uint64_t>(v);
  for (double v : r.floats) *w++ = std::bit_cast<uint64_t>(v);
  auto put_meta = [&w](const TensorMeta& m) {
    *w++ = static_cast<uint64_t>(m.dtype) | (static_cast<uint64_t>(m.shape.size()) << 8);
    for (int64_t d : m.shape) *w++ = static_cast<uint64_t>(d);
  };
  for (const TensorMeta& m : r.input_metas) put_meta(m);
  for (const TensorMeta& m : r.output_metas) put_meta(m);
  for (wire::TensorId id : r.inputs) *w++ = id;
  for (wire::TensorId id : r.outputs) *w++ = id;
  s.outs.assign(n_out, Output{});

  // Note [op signatures]: everything but the naming of inputs first (the
  // weak signature, used to find where a loop begins), then the naming.
  uint64_t h =
      mix(kSeed, static_cast<uint64_t>(r.op) | (static_cast<uint64_t>(r.dtype) << 16) |
                     (static_cast<uint64_t>(n_in) << 24) | (static_cast<uint64_t>(n_out) << 48));
  h = mix(h, static_cast<uint64_t>(s.n_ints) | (static_cast<uint64_t>(s.n_floats) << 32));
  const uint32_t skip_begin = s.n_ints;
  const uint32_t skip_end = dynamic_floats(r.op) ? s.n_ints + s.n_floats : s.n_ints;
  for (uint32_t k = 0; k < s.in_metas_end; ++k) {
    if (k < skip_begin || k >= skip_end) h = mix(h, s.words[k]);
  }
  s.weak = h;

  // An id last named at or before pos - window counts as absent (the sweep
  // drops it later).
  const uint64_t named_since = pos >= window ? pos - window + 1 : 0;
  for (uint32_t k = 0; k < n_in; ++k) {
    const wire::TensorId id = r.inputs[k];
    IdEntry* e = find_id(id);
    if (e && e->touch >= named_since) {
      h = mix(h, ((pos - e->touch) << 32) | e->touch_operand);
      if (Output* o = produced(*e)) o->last_read = 2 * pos + 1;
      e->touch = pos;
      e->touch_operand = k;
    } else {
      h = mix(h, kExternal);
      (e ? *e : insert_id(id)) = IdEntry{id, pos, kNone, k, 0};
    }
  }
  for (uint32_t m = 0; m < n_out; ++m) {
    const wire::TensorId id = r.outputs[m];
    IdEntry* e = find_id(id);  // an id reused without a Free: the new value wins
    (e ? *e : insert_id(id)) = IdEntry{id, pos, pos, n_in + m, m};
  }
  ++next_;

  const std::optional<Detection> raw = detector_.push(fmix64(h));
  if (!raw) return std::nullopt;
  return rephase(*raw);
}

void SequenceRecorder::on_free(std::span<const wire::TensorId> ids) {
  for (wire::TensorId id : ids) {
    IdEntry* e = find_id(id);
    if (!e) continue;
    if (Output* o = produced(*e)) o->freed = true;
    erase_id(e);
  }
}

void SequenceRecorder::on_barrier(std::span<const wire::TensorId> reads) {
  barrier_pending_ = true;
  for (wire::TensorId id : reads) {
    IdEntry* e = find_id(id);
    if (!e) continue;
    if (Output* o = produced(*e)) {
      o->fetched = true;
      o->last_read = std::max(o->last_read, 2 * next_);
    }
  }
}

void SequenceRecorder::reset() {
  detector_.reset();
  std::fill(ids_.begin(), ids_.end(), IdEntry{});
  ids_size_ = 0;
  barrier_pending_ = false;
  // Slots keep their old positions: they lie before oldest() and are never
  // read, and no id entry refers to them any more.
}

SequenceRecorder::Output* SequenceRecorder::produced(const IdEntry& e) {
  if (e.producer == kNone) return nullptr;
  Slot& s = slot(e.producer);
  // The producer's slot may have been reused for a newer op.
  return s.pos == e.producer ? &s.outs[e.output] : nullptr;
}

void SequenceRecorder::sweep_ids() {
  // Rebuild without the entries last named before the window; the spare
  // buffer keeps its capacity, so a sweep does not allocate.
  if (ids_size_ == 0) return;
  const uint64_t window = slots_.size();
  const uint64_t named_since = next_ >= window ? next_ - window + 1 : 0;
  ids_spare_.assign(ids_.size(), IdEntry{});
  ids_spare_.swap(ids_);
  ids_size_ = 0;
  const size_t m = ids_.size() - 1;
  for (const IdEntry& e : ids_spare_) {
    if (e.touch == kNone || e.touch < named_since) continue;
    size_t i = home(e.id);
    while (ids_[i].touch != kNone) i = (i + 1) & m;
    ids_[i] = e;
    ++ids_size_;
  }
}

Detection SequenceRecorder::rephase(const Detection& raw) const {
  // Note [unit phase]
  const uint64_t p = raw.period;
  const uint64_t last = raw.end() - 1;  // the op just recorded
  const uint64_t lo = std::max(raw.region_begin, oldest());

  // Values of the instance two periods back crossing each cut; a value live
  // over (x, q] crosses the cuts before ops x+1 .. q.
  std::vector<int64_t> diff(p + 1, 0);
  int64_t all = 0;  // crossings shared by every rotation
  const uint64_t first = last + 1 - 2 * p;
  for (uint64_t x = first; x < first + p; ++x) {
    for (const Output& o : slot(x).outs) {
      if (o.last_read == 0) continue;
      const uint64_t q = (o.last_read - 1) / 2;
      if (q <= x) continue;
      const uint64_t len = q - x;
      all += static_cast<int64_t>(len / p);
      const uint64_t rem = len % p;
      if (rem == 0) continue;
      const uint64_t a = (x + 1) % p;
      diff[a] += 1;
      if (a + rem <= p) {
        diff[a + rem] -= 1;
      } else {
        diff[p] -= 1;
        diff[0] += 1;
        diff[a + rem - p] -= 1;
      }
    }
  }

  std::vector<bool> barrier(p, false);
  for (uint64_t x = lo; x <= last; ++x) {
    if (slot(x).barrier_before) barrier[x % p] = true;
  }

  // Where the loop begins: extend the stretch backwards over ops equal to the
  // op one period later up to input naming.
  uint64_t loop_start = lo;
  const uint64_t floor = oldest();
  while (loop_start > floor && loop_start - 1 + p <= last &&
         slot(loop_start - 1).weak == slot(loop_start - 1 + p).weak) {
    --loop_start;
  }

  uint64_t best = 0;
  int64_t best_cost = 0, run = 0;
  bool best_barrier = false;
  uint64_t best_offset = 0;
  for (uint64_t r = 0; r < p; ++r) {
    run += diff[r];
    const int64_t cost = all + run;
    const bool b = barrier[r];
    const uint64_t offset = (r + p - loop_start % p) % p;
    const bool better =
        r == 0 || cost < best_cost ||
        (cost == best_cost && (b > best_barrier || (b == best_barrier && offset < best_offset)));
    if (better) {
      best = r;
      best_cost = cost;
      best_barrier = b;
      best_offset = offset;
    }
  }

  Detection d = raw;
  const uint64_t end_aligned = last + 1 - p;
  d.start = end_aligned - (end_aligned % p + p - best) % p;
  return d;
}

Chain SequenceRecorder::chain(const Detection& d) const {
  const uint64_t p = d.period;
  if (p == 0 || d.start < oldest() || d.end() > next_) {
    throw std::out_of_range("[jit.recorder.chain] the unit [" + std::to_string(d.start) + ", " +
                            std::to_string(d.end()) + ") is not in the window [" +
                            std::to_string(oldest()) + ", " + std::to_string(next_) + ")");
  }
  Chain c;
  c.ops.resize(p);
  // >= 0: external number; < 0: -(k + 1) for the k-th produced value.
  std::unordered_map<wire::TensorId, int32_t> local;
  local.reserve(4 * p);
  int32_t produced_count = 0;
  for (uint64_t o = 0; o < p; ++o) {
    const Slot& s = slot(d.start + o);
    const uint64_t* w = s.words.data();
    ChainOp& op = c.ops[o];
    op.op = s.op;
    op.dtype = s.dtype;
    for (uint32_t k = 0; k < s.n_ints; ++k) op.ints.push_back(static_cast<int64_t>(*w++));
    for (uint32_t k = 0; k < s.n_floats; ++k) op.floats.push_back(std::bit_cast<double>(*w++));
    auto get_meta = [&w] {
      TensorMeta m;
      m.dtype = static_cast<DType>(*w & 0xFF);
      const uint64_t rank = *w++ >> 8;
      for (uint64_t k = 0; k < rank; ++k) m.shape.push_back(static_cast<int64_t>(*w++));
      return m;
    };
    for (uint32_t k = 0; k < s.n_in; ++k) op.input_metas.push_back(get_meta());
    for (uint32_t k = 0; k < s.n_out; ++k) op.output_metas.push_back(get_meta());
    const uint64_t* ids = s.words.data() + s.metas_end;
    op.inputs.resize(s.n_in);
    for (uint32_t k = 0; k < s.n_in; ++k) {
      auto [it, fresh] = local.try_emplace(ids[k], c.externals);
      if (fresh) {
        c.external_metas.push_back(op.input_metas[k]);
        ++c.externals;
      }
      op.inputs[k] = it->second;
    }
    for (uint32_t m = 0; m < s.n_out; ++m) local[ids[s.n_in + m]] = -(++produced_count);
  }
  for (ChainOp& op : c.ops) {
    for (int32_t& v : op.inputs) {
      if (v < 0) v = c.externals + (-v - 1);
    }
  }

  // Escapes (Note [chain values]): read after its unit or fetched in any
  // instance consulted, or freed in none. Instances before d.start whose
  // signatures match are consulted too: their later readers and frees have
  // had time to arrive.
  std::vector<char> read(produced_count, 0), freed(produced_count, 0);
  for (uint64_t k = 0; k < kMaxEscapeInstances && k * p <= d.start; ++k) {
    const uint64_t s0 = d.start - k * p;
    if (s0 < oldest() || (k > 0 && s0 < d.region_begin)) break;
    bool same = true;
    for (uint64_t o = 0; k > 0 && o < p && same; ++o) {
      same = signature(s0 + o) == signature(d.start + o);
    }
    if (!same) break;
    size_t v = 0;
    for (uint64_t o = 0; o < p; ++o) {
      for (const Output& out : slot(s0 + o).outs) {
        if (out.fetched || out.last_read >= 2 * (s0 + p)) read[v] = 1;
        if (out.freed) freed[v] = 1;
        ++v;
      }
    }
  }
  c.escapes.resize(produced_count);
  for (int32_t v = 0; v < produced_count; ++v) c.escapes[v] = read[v] || !freed[v];
  return c;
}

size_t SequenceRecorder::memory_bytes() const {
  size_t bytes = sizeof(*this) - sizeof(detector_) + detector_.memory_bytes() +
                 slots_.capacity() * sizeof(Slot) +
                 (ids_.capacity() + ids_spare_.capacity()) * sizeof(IdEntry);
  for (const Slot& s : slots_) {
    bytes += s.words.capacity() * sizeof(uint64_t) + s.outs.capacity() * sizeof(Output);
  }
  return bytes;
}

// ---- id table ---------------------------------------------------------------

size_t SequenceRecorder::home(wire::TensorId id) const {
  return static_cast<size_t>(fmix64(id)) & (ids_.size() - 1);
}

SequenceRecorder::IdEntry* SequenceRecorder::find_id(wire::TensorId id) {
  if (ids_.empty()) return nullptr;
  const size_t m = ids_.size() - 1;
  for (size_t i = home(id);; i = (i + 1) & m) {
    IdEntry& e = ids_[i];
    if (e.touch == kNone) return nullptr;
    if (e.id == id) return &e;
  }
}

SequenceRecorder::IdEntry& SequenceRecorder::insert_id(wire::TensorId id) {
  if ((ids_size_ + 1) * 2 > ids_.size()) {
    std::vector<IdEntry> old(std::max<size_t>(64, 2 * ids_.size()));
    old.swap(ids_);
    const size_t m = ids_.size() - 1;
    for (const IdEntry& e : old) {
      if (e.touch == kNone) continue;
      size_t i = home(e.id);
      while (ids_[i].touch != kNone) i = (i + 1) & m;
      ids_[i] = e;
    }
  }
  const size_t m = ids_.size() - 1;
  size_t i = home(id);
  while (ids_[i].touch != kNone) i = (i + 1) & m;
  ++ids_size_;
  ids_[i].id = id;
  ids_[i].touch = 0;  // occupied; the caller fills the entry
  return ids_[i];
}

void SequenceRecorder::erase_id(IdEntry* e) {
  // Backward-shift deletion keeps probe sequences intact without tombstones.
  const size_t m = ids_.size() - 1;
  size_t i = static_cast<size_t>(e - ids_.data());
  size_t j = i;
  for (;;) {
    ids_[i] = IdEntry{};
    for (;;) {
      j = (j + 1) & m;
      if (ids_[j].touch == kNone) {
        --ids_size_;
        return;
      }
      const size_t k = home(ids_[j].id);
      // Entry j may stay when its home lies cyclically in (i, j].
      const bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
      if (!stays) break;
    }
    ids_[i] = ids_[j];
    i = j;
  }
}

}  // namespace gt::worker::jit
