#include "worker/jit/matcher.h"

#include <algorithm>
#include <bit>

namespace gt::worker::jit {

ChainMatcher::ChainMatcher(const Chain& chain)
    : chain_(&chain),
      external_ids_(static_cast<size_t>(chain.externals), 0),
      produced_ids_(static_cast<size_t>(chain.produced()), 0) {}

void ChainMatcher::reset() {
  matched_ = 0;
  produced_ = 0;
  std::fill(external_ids_.begin(), external_ids_.end(), 0);
  std::fill(produced_ids_.begin(), produced_ids_.end(), 0);
  scalars_.clear();
}

// Ids are session-unique and never 0 (the client starts at 1), so 0 marks an
// unbound value. The unit is short (hundreds of values): linear scans are
// cheaper than a hash set rebuilt per unit.
bool ChainMatcher::bound(wire::TensorId id) const {
  return std::find(external_ids_.begin(), external_ids_.end(), id) != external_ids_.end() ||
         std::find(produced_ids_.begin(), produced_ids_.begin() + produced_, id) !=
             produced_ids_.begin() + produced_;
}

ChainMatcher::Step ChainMatcher::offer(const OfferedOp& in, const LiveMeta& live_meta) {
  auto diverged = [&] {
    reset();
    return Step::Diverged;
  };
  if (matched_ == chain_->ops.size()) reset();  // the last unit completed: a new one starts
  const ChainOp& c = chain_->ops[matched_];
  const bool dynamic = dynamic_floats(c.op);
  if (in.op != c.op || in.dtype != c.dtype || in.inputs.size() != c.inputs.size() ||
      in.outputs.size() != c.output_metas.size() || in.floats.size() != c.floats.size() ||
      !std::equal(in.ints.begin(), in.ints.end(), c.ints.begin(), c.ints.end()) ||
      (!dynamic && !std::equal(in.floats.begin(), in.floats.end(), c.floats.begin(),
                               [](double a, double b) {
                                 return std::bit_cast<uint64_t>(a) == std::bit_cast<uint64_t>(b);
                               }))) {
    return diverged();
  }
  for (size_t i = 0; i < in.inputs.size(); ++i) {
    const wire::TensorId id = in.inputs[i];
    const int32_t v = c.inputs[i];
    if (id == 0) return diverged();
    if (v < chain_->externals) {
      wire::TensorId& slot = external_ids_[static_cast<size_t>(v)];
      if (slot != 0) {
        if (slot != id) return diverged();
        continue;
      }
      if (bound(id)) return diverged();  // another external, or a value of this unit
      const std::optional<TensorMeta> meta = live_meta(id);
      if (!meta || *meta != chain_->external_metas[static_cast<size_t>(v)]) return diverged();
      slot = id;
    } else {
      const int32_t p = v - chain_->externals;
      if (p >= produced_ || produced_ids_[static_cast<size_t>(p)] != id) return diverged();
    }
  }
  for (const wire::TensorId id : in.outputs) {
    if (id == 0 || bound(id) || produced_ >= chain_->produced()) return diverged();
    produced_ids_[static_cast<size_t>(produced_++)] = id;
  }
  if (dynamic) scalars_.insert(scalars_.end(), in.floats.begin(), in.floats.end());
  if (++matched_ < chain_->ops.size()) return Step::Continue;
  return Step::Complete;
}

}  // namespace gt::worker::jit
