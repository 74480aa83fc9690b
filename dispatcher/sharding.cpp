#include "dispatcher/sharding.h"

#include <algorithm>
#include <cstring>
#include <numeric>

#include "common/check.h"
#include "common/dtype_rules.h"
#include "common/shape.h"
#include "common/zero_copy.h"

namespace gt::dispatcher {

// Codes of worker/collectives/collectives.h (docs/protocol.md, "Collectives").
namespace collective {
constexpr uint16_t kAllReduce = 1, kAllGather = 2, kBroadcast = 4, kSend = 5, kRecv = 6;
constexpr int64_t kSum = 0, kMax = 2, kMin = 3;
}  // namespace collective

std::string Layout::describe() const {
  std::string w = "[";
  for (size_t i = 0; i < workers.size(); ++i) w += (i ? ", " : "") + std::to_string(workers[i]);
  w += "]";
  if (workers.empty()) return "on the home worker";
  return sharded() ? "split along axis " + std::to_string(axis) + " over workers " + w
                   : "replicated on workers " + w;
}

std::vector<char> slice_rows(std::span<const char> data, std::span<const int64_t> shape, int axis,
                             int64_t begin, int64_t rows, int64_t element_size) {
  const int64_t outer = numel(shape.first(static_cast<size_t>(axis)));
  const int64_t inner = numel(shape.subspan(static_cast<size_t>(axis) + 1)) * element_size;
  const int64_t extent = shape[static_cast<size_t>(axis)];
  std::vector<char> out(static_cast<size_t>(outer * rows * inner));
  // Empty shards copy nothing: memcpy must not see their null pointers.
  if (out.empty()) return out;
  for (int64_t o = 0; o < outer; ++o) {
    std::memcpy(out.data() + o * rows * inner, data.data() + (o * extent + begin) * inner,
                static_cast<size_t>(rows * inner));
  }
  return out;
}

std::vector<char> concat_rows(std::span<const std::span<const char>> parts,
                              std::span<const Shape> shapes, int axis, int64_t element_size) {
  if (parts.empty()) return {};
  const Shape& first = shapes[0];
  const int64_t outer = numel(std::span(first).first(static_cast<size_t>(axis)));
  const int64_t inner = numel(std::span(first).subspan(static_cast<size_t>(axis) + 1)) * element_size;
  size_t total = 0;
  for (const auto& p : parts) total += p.size();
  std::vector<char> out(total);
  // Nothing to join. Without this a tensor such as (2^40, 0) split along
  // axis 1 would loop 2^40 times over empty chunks (the fuzzer's timeout);
  // otherwise `outer` is at most `total` bytes.
  if (total == 0) return out;
  char* dst = out.data();
  for (int64_t o = 0; o < outer; ++o) {
    for (size_t k = 0; k < parts.size(); ++k) {
      const int64_t chunk = shapes[k][static_cast<size_t>(axis)] * inner;
      if (chunk == 0) continue;  // an empty shard: its data may be null
      std::memcpy(dst, parts[k].data() + o * chunk, static_cast<size_t>(chunk));
      dst += chunk;
    }
  }
  return out;
}

// Note [payload sharing]
// A client's upload reaches the workers without copies in the dispatcher:
// each worker's frame points into the received one (a whole copy, or the
// contiguous range of a shard split along its first non-unit dim), and the
// received frame lives until ZeroMQ has sent the last of them. Only shards
// split along an inner axis are gathered into new buffers.
zmq::message_t share_bytes(const Payload& source, size_t offset, size_t size) {
  auto* keep = new Payload(source);
  return zero_copy_frame(static_cast<char*>(source->data()) + offset, size, keep);
}

zmq::message_t own_bytes(std::vector<char> bytes) {
  auto* keep = new std::vector<char>(std::move(bytes));
  return zero_copy_frame(keep->data(), keep->size(), keep);
}

namespace {

[[noreturn]] void refuse(Status code, std::string message) {
  throw RewriteError{code, std::move(message)};
}

bool contains(const std::vector<int>& v, int x) {
  return std::binary_search(v.begin(), v.end(), x);
}

std::vector<int> intersect(const std::vector<int>& a, const std::vector<int>& b) {
  std::vector<int> out;
  std::set_intersection(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(out));
  return out;
}

Layout replicated(std::vector<int> workers) { return Layout{std::move(workers), -1}; }
Layout split(std::vector<int> workers, int axis) { return Layout{std::move(workers), axis}; }

// The shape of shard k of a tensor laid out as `l`.
Shape shard_shape(const TensorMeta& m, const Layout& l, size_t k) {
  if (!l.sharded()) return m.shape;
  Shape s = m.shape;
  s[static_cast<size_t>(l.axis)] =
      split_sizes(m.shape[static_cast<size_t>(l.axis)], static_cast<int>(l.workers.size()))[k];
  return s;
}

int64_t shard_offset(const TensorMeta& m, const Layout& l, size_t k) {
  const auto sizes =
      split_sizes(m.shape[static_cast<size_t>(l.axis)], static_cast<int>(l.workers.size()));
  return std::accumulate(sizes.begin(), sizes.begin() + static_cast<ptrdiff_t>(k), int64_t{0});
}

size_t rank_of(const std::vector<int>& group, int worker) {
  return static_cast<size_t>(std::lower_bound(group.begin(), group.end(), worker) - group.begin());
}

bool any_shard_empty(const TensorMeta& m, const Layout& l) {
  if (!l.sharded()) return false;
  for (int64_t s : split_sizes(m.shape[static_cast<size_t>(l.axis)], static_cast<int>(l.workers.size()))) {
    if (s == 0) return true;
  }
  return false;
}

bool is_random(OpCode c) { return c == OpCode::Randn || c == OpCode::Rand; }

}  // namespace

// What one op becomes (Note [sharding rules] in docs/sharding.md): the
// layout each input must have, where the op runs and how its output is laid
// out, and what follows it.
struct ShardedSession::OpPlan {
  std::vector<Layout> inputs;
  Layout run;  // the workers that run the op; the layout of its output
  enum class Post { None, Sum, Max, Min, Mean } post = Post::None;
  double mean_scale = 1;
  OpCode code{};
  bool local_shape = false;       // ints are the output shape: per worker, [run.axis] = local size
  bool random_broadcast = false;  // replicated random values: drawn on one worker, broadcast
};

ShardedSession::ShardedSession(int home, std::shared_ptr<const Config> config)
    : home_(home), config_(std::move(config)) {
  tensors_.reserve(1024);
}

const Placed* ShardedSession::find(TensorId id) const {
  auto it = tensors_.find(id);
  return it == tensors_.end() ? nullptr : &it->second;
}

void ShardedSession::adopt(TensorId id, std::optional<TensorMeta> meta) {
  tensors_[id] = Placed{std::move(meta), {}};
}

Layout ShardedSession::resolve(const Layout& l) const {
  return l.workers.empty() ? replicated({home_}) : l;
}

const SignalConfig* ShardedSession::entry_of(const Frame& f) const {
  const SignalConfig* e = config_ ? config_->find(f.name) : nullptr;
  if (e && f.backward) e = e->backward ? config_->find(*e->backward) : nullptr;
  return e;
}

const SignalConfig* ShardedSession::current_entry() const {
  // The innermost scope with a shard entry decides.
  for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it) {
    const SignalConfig* e = entry_of(*it);
    if (e && e->shard) return e;
  }
  return nullptr;
}

const std::string* ShardedSession::compile_scope() const {
  for (const Frame& f : scopes_) {
    const SignalConfig* e = entry_of(f);
    if (e && e->compile) return &f.name;
  }
  return nullptr;
}

// Note [compile scopes]
// A scope whose entry has `compile: true` is one JIT compile unit on every
// worker it runs ops on: the first instruction a worker gets inside it is
// preceded by Scope{UnitBegin}, and leaving the scope sends Scope{UnitEnd}
// to each worker that got a begin. The worker compiles the ops between the
// markers at their first run, without waiting for its hot-path detector
// (worker/executor.cpp). Nested compile scopes form one unit: the outermost.
// The client leaves scopes lazily (at its next op outside them), so a unit
// ends there, or at a fetch or sync, whichever comes first: a unit cannot
// run compiled across a read of its values (the worker runs such a unit
// eagerly), and a program that fetches right after the scope (a loss) must
// not wait for its next step for the unit to end.
void ShardedSession::end_unit(Outputs& out) {
  for (int w : unit_workers_) {
    wire::Instr end;
    end.kind = wire::InstrKind::Scope;
    end.ints = {static_cast<int64_t>(wire::ScopeAction::UnitEnd)};
    end.name = *unit_;
    out[w].instrs.push_back(std::move(end));
  }
  unit_workers_.clear();
  unit_.reset();
}

Layout ShardedSession::entry_layout(const SignalConfig& e, const ClusterView& cluster,
                                    const TensorMeta* out) const {
  const ShardSpec& spec = *e.shard;
  std::vector<int> workers = spec.workers.empty() ? cluster.workers : spec.workers;
  std::sort(workers.begin(), workers.end());
  for (int w : workers) {
    if (!contains(cluster.workers, w)) {
      refuse(Status::InvalidArgument,
             "[dispatcher] signal '" + e.name + "' places tensors on worker " + std::to_string(w) +
                 ", which is not alive (alive workers: " +
                 replicated(cluster.workers).describe().substr(14) + ")");
    }
  }
  if (spec.replicated || !spec.axis) return replicated(std::move(workers));
  if (!out) return split(std::move(workers), static_cast<int>(*spec.axis));
  const int64_t rank = static_cast<int64_t>(out->shape.size());
  const int64_t axis = *spec.axis < 0 ? *spec.axis + rank : *spec.axis;
  // A tensor without that axis (a loss, a bias under axis 1) is replicated.
  if (axis < 0 || axis >= rank) return replicated(std::move(workers));
  return split(std::move(workers), static_cast<int>(axis));
}

void ShardedSession::use(int worker) {
  auto pos = std::lower_bound(used_.begin(), used_.end(), worker);
  if (pos == used_.end() || *pos != worker) used_.insert(pos, worker);
}

void ShardedSession::emit(int worker, wire::Instr instr, Outputs& out) {
  use(worker);
  if (unit_ && !std::binary_search(unit_workers_.begin(), unit_workers_.end(), worker)) {
    wire::Instr begin;
    begin.kind = wire::InstrKind::Scope;
    begin.ints = {static_cast<int64_t>(wire::ScopeAction::UnitBegin)};
    begin.name = *unit_;
    out[worker].instrs.push_back(std::move(begin));
    unit_workers_.insert(std::lower_bound(unit_workers_.begin(), unit_workers_.end(), worker), worker);
  }
  out[worker].instrs.push_back(std::move(instr));
}

TensorId ShardedSession::temp(int worker) {
  const TensorId id = next_temp_++;
  temps_.emplace_back(worker, id);
  return id;
}

void ShardedSession::free_temps(Outputs& out) {
  std::map<int, std::vector<TensorId>> by_worker;
  for (auto [w, id] : temps_) by_worker[w].push_back(id);
  temps_.clear();
  emit_frees(by_worker, out);
}

void ShardedSession::emit_frees(std::map<int, std::vector<TensorId>>& by_worker, Outputs& out) {
  for (auto& [w, ids] : by_worker) {
    wire::Instr f;
    f.kind = wire::InstrKind::Free;
    f.inputs = std::move(ids);
    emit(w, std::move(f), out);
  }
}

void ShardedSession::emit_collective(const std::vector<int>& group, int worker, uint16_t code,
                                     int64_t a, int64_t b, std::span<const int64_t> shape,
                                     DType dtype, std::vector<TensorId> inputs,
                                     std::vector<TensorId> outputs, Outputs& out) {
  wire::Instr c;
  c.kind = wire::InstrKind::Collective;
  c.op = static_cast<OpCode>(code);
  c.ints.reserve(group.size() + 3 + shape.size());
  c.ints.push_back(static_cast<int64_t>(group.size()));
  c.ints.insert(c.ints.end(), group.begin(), group.end());
  c.ints.push_back(a);
  c.ints.push_back(b);
  c.ints.insert(c.ints.end(), shape.begin(), shape.end());
  c.dtype = dtype;
  c.inputs = std::move(inputs);
  c.outputs = std::move(outputs);
  emit(worker, std::move(c), out);
}

// Note [deferred sums]
// A sum over a split dim (a reduction, or a matmul whose contraction dim is
// split) leaves a partial sum on each worker; an all_reduce completes it.
// Data-parallel backward makes one such value per parameter gradient, and
// each all_reduce costs its round trips and the wait for the slowest rank
// however small it is (1.4-3.9 ms each on a loaded 2-core machine: 24 ms of
// a 50 ms step with 8 of them). So:
//
// - The all_reduce is deferred until the value is first named by an op (as
//   input or output), a fetch or a sync. Then every deferred sum of the
//   session is completed at once: one bucketed all_reduce per group and
//   dtype (Note [all_reduce buckets] in worker/executor_collectives.cpp),
//   then each mean's scaling. A sum freed unread is never reduced.
// - Ops that are linear in one deferred input run on the partial values and
//   give a deferred result, since f(a) + f(b) = f(a + b): views (alias,
//   transpose, permute, squeeze, unsqueeze, view, and a reshape of a value
//   known to be contiguous) name the same memory and join its family; a
//   scaling (mul/div by a number, neg) makes a new partial sum and marks its
//   input consumed. Autograd's gradients pass through such ops (a transpose
//   for a Linear weight, a copy into .grad), so without this each gradient
//   was completed by its own all_reduce right after its matmul.
// - A consumed sum is left out of the buckets, as its consumer usually
//   replaces it (the client frees it at the end of the batch); a sum named
//   again later is completed then, in a bucket of its own if need be.
//
// A family is reduced through one of its live names: views cover all of the
// memory, so the others see the result, and a mean's scale is applied once.
// A reshape of a value not known to be contiguous may copy, so it completes
// the sum instead of joining the family. Deferral changes no result:
// workers see the same instructions, later and fewer.

ShardedSession::DeferredSum* ShardedSession::family_of(TensorId id) {
  for (DeferredSum& d : deferred_) {
    for (const DeferredSum::Name& n : d.names) {
      if (n.id == id) return &d;
    }
  }
  return nullptr;
}

const ShardedSession::DeferredSum* ShardedSession::family_of(TensorId id) const {
  return const_cast<ShardedSession*>(this)->family_of(id);
}

void ShardedSession::flush_sums(Outputs& out, std::span<const TensorId> needed) {
  if (deferred_.empty()) return;
  std::vector<DeferredSum> now, later;
  for (DeferredSum& d : deferred_) {
    const bool named = std::any_of(d.names.begin(), d.names.end(), [&](const DeferredSum::Name& n) {
      return std::find(needed.begin(), needed.end(), n.id) != needed.end();
    });
    (d.consumed && !named ? later : now).push_back(std::move(d));
  }
  deferred_ = std::move(later);
  std::vector<bool> done(now.size(), false);
  for (size_t i = 0; i < now.size(); ++i) {
    if (done[i]) continue;
    std::vector<TensorId> ids;
    std::vector<int64_t> counts;
    for (size_t j = i; j < now.size(); ++j) {
      if (done[j] || now[j].workers != now[i].workers || now[j].dtype != now[i].dtype) continue;
      ids.push_back(now[j].names.front().id);
      counts.push_back(now[j].numel);
      done[j] = true;
    }
    // One input keeps the plain form (its shape), which reads better in logs.
    Shape shape;
    if (ids.size() == 1) shape = tensors_.at(ids[0]).meta->shape;
    for (int w : now[i].workers) {
      emit_collective(now[i].workers, w, collective::kAllReduce, collective::kSum, 0,
                      ids.size() == 1 ? std::span<const int64_t>(shape) : std::span<const int64_t>(counts),
                      now[i].dtype, ids, {}, out);
    }
  }
  for (const DeferredSum& d : now) {
    if (d.scale == 1.0) continue;
    for (int w : d.workers) {
      wire::Instr scale;
      scale.op = OpCode::MulScalarInplace;
      scale.inputs = {d.names.front().id};
      scale.floats = {d.scale};
      emit(w, std::move(scale), out);
    }
  }
}

bool ShardedSession::propagate_sum(const OpInfo& op, const wire::Instruction& in,
                                   const TensorMeta& out_meta, Outputs& out) {
  const auto inputs = wire::view(in.inputs());
  const auto outputs = wire::view(in.outputs());
  if (inputs.size() != 1 || outputs.size() != 1 || tensors_.contains(outputs[0])) return false;
  DeferredSum* d = family_of(inputs[0]);
  if (!d || out_meta.dtype != d->dtype) return false;
  const bool contiguous = std::find_if(d->names.begin(), d->names.end(), [&](const auto& n) {
                            return n.id == inputs[0];
                          })->contiguous;
  bool view = true;
  switch (op.code) {
    case OpCode::Alias:
    case OpCode::Squeeze:
    case OpCode::Unsqueeze:
    case OpCode::View:
      break;
    case OpCode::Reshape:
      if (!contiguous) return false;
      break;
    case OpCode::Transpose:
    case OpCode::Permute:
      break;
    case OpCode::MulScalar:
    case OpCode::DivScalar:
    case OpCode::Neg:
      view = false;
      break;
    default:
      return false;
  }
  const bool out_contiguous =
      contiguous && op.code != OpCode::Transpose && op.code != OpCode::Permute;
  for (int w : d->workers) emit(w, wire::to_instr(&in), out);
  tensors_[outputs[0]] = Placed{out_meta, tensors_.at(inputs[0]).layout};
  if (view) {
    d->names.push_back({outputs[0], out_contiguous});
  } else {
    d->consumed = true;
    DeferredSum scaled{{{outputs[0], out_contiguous}}, d->workers, d->dtype, d->numel, d->scale};
    deferred_.push_back(std::move(scaled));  // may move *d: not used after this
  }
  return true;
}

// Note [layout conversion]
// Every conversion is built from three moves: a slice (a replicated copy to
// the shard a worker needs: local, no data moves), an all_gather (shards to
// a copy on each of their workers) and a broadcast or send/recv (a copy to
// workers that have none). Converted values are temporaries, freed right
// after the instruction that needed them; the logical tensor keeps its
// layout.
ShardedSession::Names ShardedSession::gather(TensorId id, const Placed& from, Outputs& out) {
  const Layout l = resolve(from.layout);
  Names names;
  for (size_t k = 0; k < l.workers.size(); ++k) {
    const int w = l.workers[k];
    const TensorId t = temp(w);
    const Shape s = shard_shape(*from.meta, l, k);
    emit_collective(l.workers, w, collective::kAllGather, l.axis, 0, s, from.meta->dtype, {id}, {t},
                    out);
    names[w] = t;
  }
  return names;
}

ShardedSession::Names ShardedSession::convert(TensorId id, const Placed& from, const Layout& to,
                                              Outputs& out) {
  const Layout have = resolve(from.layout);
  Names names;
  if (have == to) {
    for (int w : to.workers) names[w] = id;
    return names;
  }
  const TensorMeta& m = *from.meta;
  // A replicated copy on `holders` (named per worker) to start from.
  Names copies;
  std::vector<int> holders;
  if (have.sharded()) {
    copies = gather(id, from, out);
    holders = have.workers;
  } else {
    for (int w : have.workers) copies[w] = id;
    holders = have.workers;
  }
  if (!to.sharded()) {
    std::vector<int> missing;
    for (int w : to.workers) {
      if (contains(holders, w)) names[w] = copies[w];
      else missing.push_back(w);
    }
    if (missing.empty()) return names;
    // One broadcast from the first holder to every worker lacking a copy.
    // Note [widening]: a whole tensor's new copies are kept under its own id
    // and its layout grows to cover them, so a tensor used on more workers
    // (parameters created on one worker and used by a split batch, a dataset
    // indexed by split indices) moves once, not at every use. In-place ops
    // then update every copy, as they run where the tensor is.
    const bool widen = !have.sharded();
    const int root = holders.front();
    std::vector<int> group = missing;
    group.insert(std::lower_bound(group.begin(), group.end(), root), root);
    const auto root_rank = static_cast<int64_t>(rank_of(group, root));
    for (int w : group) {
      if (w == root) {
        emit_collective(group, w, collective::kBroadcast, root_rank, 0, m.shape, m.dtype,
                        {copies[root]}, {}, out);
      } else {
        const TensorId t = widen ? id : temp(w);
        emit_collective(group, w, collective::kBroadcast, root_rank, 0, m.shape, m.dtype, {}, {t},
                        out);
        names[w] = t;
      }
    }
    if (widen) {
      std::vector<int> all = have.workers;
      all.insert(all.end(), missing.begin(), missing.end());
      std::sort(all.begin(), all.end());
      tensors_[id].layout = replicated(std::move(all));
    }
    return names;
  }
  // To shards: each worker slices its rows of a copy; a worker without a
  // copy gets its rows sent by the first holder.
  for (size_t k = 0; k < to.workers.size(); ++k) {
    const int w = to.workers[k];
    const int64_t begin = shard_offset(m, to, k);
    const Shape s = shard_shape(m, to, k);
    const int src = contains(holders, w) ? w : holders.front();
    wire::Instr slice;
    slice.op = OpCode::Slice;
    slice.inputs = {copies[src]};
    const TensorId sliced = temp(src);
    slice.outputs = {sliced};
    slice.ints = {to.axis, begin, begin + s[static_cast<size_t>(to.axis)], 1};
    slice.dtype = m.dtype;
    emit(src, std::move(slice), out);
    if (src == w) {
      names[w] = sliced;
      continue;
    }
    std::vector<int> pair = {std::min(src, w), std::max(src, w)};
    const auto tag = static_cast<int64_t>((*cluster_->next_tag)++);
    emit_collective(pair, src, collective::kSend, static_cast<int64_t>(rank_of(pair, w)), tag, s,
                    m.dtype, {sliced}, {}, out);
    const TensorId t = temp(w);
    emit_collective(pair, w, collective::kRecv, static_cast<int64_t>(rank_of(pair, src)), tag, s,
                    m.dtype, {}, {t}, out);
    names[w] = t;
  }
  return names;
}

// Note [sharding rules]
// Given the layouts of an op's inputs, the rules pick where it runs and how
// its result is laid out, preferring plans that move no data:
// - elementwise ops (broadcasting included) run per shard when an input is
//   split along a dim the output keeps; the other inputs are sliced to match
//   or, where they broadcast along that dim, must be whole on each worker;
// - matmul: rows of the left (or batch dims) split -> per shard; columns of
//   the right split -> per shard; the contraction dim split on either side
//   -> per shard partial products summed by an all_reduce;
// - reductions over a split dim reduce per shard and all_reduce (mean: sum,
//   all_reduce, scale); over other dims they stay split;
// - shape ops that keep the split dim (transpose, permute, unsqueeze,
//   reshapes that keep the dims up to it, slices of other dims...) and
//   softmax/argmax/gather/index ops along other dims run per shard;
// - anything else gathers its inputs to whole copies and runs replicated.
// Ops whose inputs are all whole (replicated) run where the current scope's
// entry says, else where the inputs already are.
void ShardedSession::plan_op(const OpInfo& op, const wire::Instruction& in,
                             std::span<const Placed* const> ins, const TensorMeta& out_meta,
                             const ClusterView& cluster, OpPlan& plan) const {
  const size_t n = ins.size();
  plan.code = op.code;
  plan.inputs.assign(n, Layout{});
  std::vector<Layout> have(n);
  for (size_t i = 0; i < n; ++i) have[i] = resolve(ins[i]->layout);
  const SignalConfig* entry = current_entry();
  const auto ints = wire::view(in.ints());
  const int out_rank = static_cast<int>(out_meta.shape.size());

  auto first_split = [&]() -> int {
    for (size_t i = 0; i < n; ++i) {
      if (have[i].sharded()) return static_cast<int>(i);
    }
    return -1;
  };
  // Where ops with whole inputs run: the entry's workers, else the workers
  // every input is on, else the first input's.
  auto whole_set = [&]() -> std::vector<int> {
    if (entry) return entry_layout(*entry, cluster, nullptr).workers;
    if (n == 0) return {home_};
    std::vector<int> common = have[0].workers;
    for (size_t i = 1; i < n; ++i) common = intersect(common, have[i].workers);
    return common.empty() ? have[0].workers : common;
  };
  auto run_whole = [&](std::vector<int> workers) {
    plan.run = replicated(std::move(workers));
    for (size_t i = 0; i < n; ++i) plan.inputs[i] = plan.run;
  };
  auto fallback = [&]() {
    const int s = first_split();
    run_whole(entry || s < 0 ? whole_set() : have[static_cast<size_t>(s)].workers);
  };
  // Elementwise placement of input i relative to an output split along
  // `out_axis` over `workers`: split along its aligned dim where it has the
  // output's extent, whole where it broadcasts.
  auto align = [&](size_t i, const std::vector<int>& workers, int out_axis, int rank) -> Layout {
    const TensorMeta& m = *ins[i]->meta;
    const int d = out_axis - (rank - static_cast<int>(m.shape.size()));
    if (d >= 0 && m.shape[static_cast<size_t>(d)] == out_meta.shape[static_cast<size_t>(out_axis)]) {
      return split(workers, d);
    }
    return replicated(workers);
  };
  auto run_split_elementwise = [&](const std::vector<int>& workers, int out_axis) {
    plan.run = split(workers, out_axis);
    for (size_t i = 0; i < n; ++i) plan.inputs[i] = align(i, workers, out_axis, out_rank);
  };
  // Per shard, every input keeping its layout.
  auto run_per_shard = [&](size_t lead, int out_axis) {
    plan.run = split(have[lead].workers, out_axis);
    for (size_t i = 0; i < n; ++i) plan.inputs[i] = have[i];
  };

  switch (op.kind) {
    case OpKind::Creation: {
      Layout l = replicated({home_});
      if (entry) {
        l = entry_layout(*entry, cluster, &out_meta);
      } else if (cluster.auto_shard && cluster.workers.size() > 1 && out_rank > 0 &&
                 out_meta.shape[0] >= static_cast<int64_t>(cluster.workers.size()) &&
                 numel(out_meta.shape) * element_size(out_meta.dtype) >= cluster.auto_shard_min_bytes) {
        l = split(cluster.workers, 0);  // GT_AUTO_SHARD: large tensors split by rows
      }
      plan.run = l;
      plan.local_shape = l.sharded() && op.code != OpCode::Arange;
      plan.random_broadcast = is_random(op.code) && !l.sharded() && l.workers.size() > 1;
      return;
    }
    case OpKind::Control:
      run_whole(cluster.workers);
      return;
    case OpKind::Elementwise: {
      for (size_t i = 0; i < n; ++i) {
        if (!have[i].sharded()) continue;
        const int d = have[i].axis + (out_rank - static_cast<int>(ins[i]->meta->shape.size()));
        if (ins[i]->meta->shape[static_cast<size_t>(have[i].axis)] ==
            out_meta.shape[static_cast<size_t>(d)]) {
          run_split_elementwise(have[i].workers, d);
          return;
        }
      }
      if (first_split() < 0 && entry) {
        const Layout l = entry_layout(*entry, cluster, &out_meta);
        if (l.sharded()) run_split_elementwise(l.workers, l.axis);
        else run_whole(l.workers);
        return;
      }
      fallback();
      return;
    }
    case OpKind::Inplace: {
      // Note [widening]: a whole tensor updated from whole tensors held on
      // more workers (optimizer state from replicated gradients) is copied
      // to them once and updated on all, so its readers find it there.
      if (!have[0].sharded()) {
        const std::vector<int>* wider = nullptr;
        for (size_t i = 1; i < n; ++i) {
          const auto& w = have[i].workers;
          if (!have[i].sharded() && w.size() > have[0].workers.size() &&
              std::includes(w.begin(), w.end(), have[0].workers.begin(), have[0].workers.end()) &&
              (!wider || w.size() > wider->size())) {
            wider = &w;
          }
        }
        if (wider) {
          run_whole(*wider);
          return;
        }
      }
      // The mutated tensor keeps its layout; the others follow it.
      plan.run = have[0];
      plan.inputs[0] = have[0];
      for (size_t i = 1; i < n; ++i) {
        plan.inputs[i] = have[0].sharded()
                             ? align(i, have[0].workers, have[0].axis,
                                     static_cast<int>(ins[0]->meta->shape.size()))
                             : have[0];
      }
      return;
    }
    case OpKind::Linalg: {  // matmul
      const TensorMeta& a = *ins[0]->meta;
      const TensorMeta& b = *ins[1]->meta;
      const int ra = static_cast<int>(a.shape.size()), rb = static_cast<int>(b.shape.size());
      if (ra < 2 || rb < 2) {
        fallback();
        return;
      }
      const Layout& la = have[0];
      const Layout& lb = have[1];
      // Contraction dim split on either side: partial products, summed.
      if ((la.sharded() && la.axis == ra - 1) || (lb.sharded() && lb.axis == rb - 2)) {
        const std::vector<int>& w = (la.sharded() && la.axis == ra - 1) ? la.workers : lb.workers;
        plan.inputs[0] = split(w, ra - 1);
        plan.inputs[1] = split(w, rb - 2);
        plan.run = replicated(w);
        plan.post = OpPlan::Post::Sum;
        return;
      }
      auto rows = [&](const std::vector<int>& w, int axis_a) {  // left split on rows/batch
        const int oa = axis_a + (out_rank - ra);
        plan.run = split(w, oa);
        plan.inputs[0] = split(w, axis_a);
        plan.inputs[1] = oa < out_rank - 2 ? align(1, w, oa, out_rank) : replicated(w);
        if (plan.inputs[1].sharded() && plan.inputs[1].axis >= rb - 2) plan.inputs[1] = replicated(w);
      };
      auto columns = [&](const std::vector<int>& w) {  // right split on columns
        plan.run = split(w, out_rank - 1);
        plan.inputs[0] = replicated(w);
        plan.inputs[1] = split(w, rb - 1);
      };
      if (la.sharded()) {
        rows(la.workers, la.axis);
      } else if (lb.sharded() && lb.axis == rb - 1) {
        columns(lb.workers);
      } else if (lb.sharded()) {  // right split on a batch dim
        const int ob = lb.axis + (out_rank - rb);
        plan.run = split(lb.workers, ob);
        plan.inputs[1] = lb;
        plan.inputs[0] = align(0, lb.workers, ob, out_rank);
        if (plan.inputs[0].sharded() && plan.inputs[0].axis >= ra - 2) {
          plan.inputs[0] = replicated(lb.workers);
        }
      } else if (entry) {
        const Layout l = entry_layout(*entry, cluster, &out_meta);
        if (l.sharded() && l.axis == out_rank - 1) columns(l.workers);
        else if (l.sharded() && l.axis - (out_rank - ra) >= 0) rows(l.workers, l.axis - (out_rank - ra));
        else run_whole(l.workers);
      } else {
        fallback();
      }
      return;
    }
    case OpKind::Reduction: {
      const int s = first_split();
      if (s < 0) {
        fallback();
        return;
      }
      const Layout& l = have[0];
      const TensorMeta& m = *ins[0]->meta;
      const int rank = static_cast<int>(m.shape.size());
      const bool keepdim = !ints.empty() && ints[0] != 0;
      if (op.code == OpCode::Argmax) {
        if (ints.size() < 2 || wrap_dim(ints[1], rank) == l.axis) {
          fallback();
          return;
        }
        const int dim = static_cast<int>(wrap_dim(ints[1], rank));
        run_per_shard(0, keepdim || dim > l.axis ? l.axis : l.axis - 1);
        return;
      }
      std::vector<int> dims;
      for (size_t i = 1; i < ints.size(); ++i) dims.push_back(static_cast<int>(wrap_dim(ints[i], rank)));
      const bool over_split = dims.empty() || std::find(dims.begin(), dims.end(), l.axis) != dims.end();
      if (!over_split) {
        int axis = l.axis;
        if (!keepdim) axis -= static_cast<int>(std::count_if(dims.begin(), dims.end(), [&](int d) { return d < l.axis; }));
        run_per_shard(0, axis);
        return;
      }
      if ((op.code == OpCode::Amax || op.code == OpCode::Amin) && any_shard_empty(m, l)) {
        fallback();  // an empty shard has no maximum
        return;
      }
      plan.inputs[0] = l;
      plan.run = replicated(l.workers);
      switch (op.code) {
        case OpCode::Sum: plan.post = OpPlan::Post::Sum; break;
        case OpCode::Amax: plan.post = OpPlan::Post::Max; break;
        case OpCode::Amin: plan.post = OpPlan::Post::Min; break;
        default: {  // Mean: per-shard sums, all_reduce, divide by the count
          plan.post = OpPlan::Post::Mean;
          plan.code = OpCode::Sum;
          int64_t count = 1;
          if (dims.empty()) count = numel(m.shape);
          for (int d : dims) count *= m.shape[static_cast<size_t>(d)];
          plan.mean_scale = count > 0 ? 1.0 / static_cast<double>(count) : 0.0;
        }
      }
      return;
    }
    case OpKind::Softmax: {
      const int s = first_split();
      if (s < 0 || wrap_dim(ints[0], static_cast<int64_t>(ins[0]->meta->shape.size())) == have[0].axis) {
        fallback();
        return;
      }
      run_per_shard(0, have[0].axis);
      return;
    }
    case OpKind::Shape: {
      const int s = first_split();
      if (s < 0) {
        fallback();
        return;
      }
      const Layout& l = have[static_cast<size_t>(s)];
      const TensorMeta& m = *ins[static_cast<size_t>(s)]->meta;
      const int rank = static_cast<int>(m.shape.size());
      switch (op.code) {
        case OpCode::Alias:
          run_per_shard(0, l.axis);
          return;
        case OpCode::Transpose: {
          const int d0 = static_cast<int>(wrap_dim(ints[0], rank)), d1 = static_cast<int>(wrap_dim(ints[1], rank));
          run_per_shard(0, l.axis == d0 ? d1 : l.axis == d1 ? d0 : l.axis);
          return;
        }
        case OpCode::Permute: {
          for (size_t i = 0; i < ints.size(); ++i) {
            if (wrap_dim(ints[i], rank) == l.axis) {
              run_per_shard(0, static_cast<int>(i));
              return;
            }
          }
          break;
        }
        case OpCode::Unsqueeze: {
          const int d = static_cast<int>(wrap_dim(ints[0], rank + 1));
          run_per_shard(0, d <= l.axis ? l.axis + 1 : l.axis);
          return;
        }
        case OpCode::Squeeze: {
          const auto sizes = split_sizes(m.shape[static_cast<size_t>(l.axis)], static_cast<int>(l.workers.size()));
          if (!ints.empty()) {
            const int d = static_cast<int>(wrap_dim(ints[0], rank));
            if (d == l.axis) break;
            run_per_shard(0, m.shape[static_cast<size_t>(d)] == 1 && d < l.axis ? l.axis - 1 : l.axis);
            return;
          }
          if (std::find(sizes.begin(), sizes.end(), 1) != sizes.end()) break;  // a shard would lose the dim
          int axis = l.axis;
          for (int d = 0; d < l.axis; ++d) axis -= m.shape[static_cast<size_t>(d)] == 1;
          run_per_shard(0, axis);
          return;
        }
        case OpCode::Reshape:
        case OpCode::View: {
          // Per shard when the dims up to the split one are unchanged.
          if (l.axis < out_rank &&
              std::equal(m.shape.begin(), m.shape.begin() + l.axis + 1, out_meta.shape.begin())) {
            run_per_shard(0, l.axis);
            plan.local_shape = true;
            plan.code = OpCode::Reshape;  // a shard of a view may not be viewable
            return;
          }
          break;
        }
        case OpCode::Expand: {
          const int oa = l.axis + (out_rank - rank);
          if (m.shape[static_cast<size_t>(l.axis)] == out_meta.shape[static_cast<size_t>(oa)]) {
            run_per_shard(0, oa);
            plan.local_shape = true;
            return;
          }
          break;
        }
        case OpCode::Slice: {
          if (wrap_dim(ints[0], rank) == l.axis) break;
          run_per_shard(0, l.axis);
          return;
        }
        case OpCode::Cat:
        case OpCode::Stack: {
          bool same = true;
          for (size_t i = 0; i < n; ++i) same = same && have[i] == l;
          const int d = static_cast<int>(wrap_dim(ints[0], op.code == OpCode::Cat ? rank : rank + 1));
          if (!same || (op.code == OpCode::Cat && d == l.axis)) break;
          run_per_shard(0, op.code == OpCode::Stack && d <= l.axis ? l.axis + 1 : l.axis);
          return;
        }
        default:
          break;
      }
      fallback();
      return;
    }
    case OpKind::Index: {
      Layout l = have[0];
      const TensorMeta& m = *ins[0]->meta;
      const int rank = static_cast<int>(m.shape.size());
      if (op.code == OpCode::IndexSelect && rank > 0 && !l.sharded() && have[1].sharded()) {
        // Rows picked by a split index (a data-parallel batch drawn from a
        // resident dataset): each worker picks its part from a whole copy.
        // (Not from a 0-D source: its result has no dim to split; found by
        // tests/fuzz/sharding_fuzz.cpp.)
        const int d = static_cast<int>(wrap_dim(ints[0], rank));
        plan.run = split(have[1].workers, d);
        plan.inputs[0] = replicated(have[1].workers);
        plan.inputs[1] = have[1];
        return;
      }
      if (!l.sharded() && op.code != OpCode::IndexSelect && rank > 0) {
        // A whole target with a split index or source (autograd's scatter
        // into zeros for a split batch's gather): the target is split like
        // them, which costs nothing where it is replicated (a local slice).
        const int64_t dim = wrap_dim(ints[0], rank);
        for (size_t i = 1; i < n && !l.sharded(); ++i) {
          const Layout& li = have[i];
          const TensorMeta& mi = *ins[i]->meta;
          if (li.sharded() && li.axis != dim && static_cast<int>(mi.shape.size()) == rank &&
              mi.shape[static_cast<size_t>(li.axis)] == m.shape[static_cast<size_t>(li.axis)]) {
            l = Layout{li.workers, li.axis};
          }
        }
      }
      if (!l.sharded() || wrap_dim(ints[0], rank) == l.axis) {
        fallback();
        return;
      }
      // Per shard: the other tensor inputs split alike along the same dim
      // when they have its extent there; index_select's index stays whole.
      plan.run = l;
      plan.inputs[0] = l;
      for (size_t i = 1; i < n; ++i) {
        const TensorMeta& mi = *ins[i]->meta;
        const bool whole_index = op.code == OpCode::IndexSelect || (op.code == OpCode::IndexAdd && i == 1);
        if (whole_index) {
          plan.inputs[i] = replicated(l.workers);
        } else if (static_cast<int>(mi.shape.size()) == rank &&
                   mi.shape[static_cast<size_t>(l.axis)] == m.shape[static_cast<size_t>(l.axis)]) {
          plan.inputs[i] = l;
        } else {
          fallback();
          return;
        }
      }
      return;
    }
  }
  fallback();
}

void ShardedSession::rewrite(const wire::Instruction& in, std::span<const Payload> payloads,
                             const ClusterView& cluster, Outputs& out) {
  cluster_ = &cluster;
  switch (in.kind()) {
    case wire::InstrKind::Scope: {
      const auto ints = wire::view(in.ints());
      const int64_t action = ints.empty() ? -1 : ints[0];
      if (action == static_cast<int64_t>(wire::ScopeAction::Exit)) {
        if (scopes_.empty()) {
          refuse(Status::InvalidArgument, "[dispatcher] a scope exit without a scope to leave");
        }
        scopes_.pop_back();
        if (unit_ && !compile_scope()) end_unit(out);
        return;
      }
      const size_t len = in.name() ? in.name()->size() : 0;
      if ((action != 0 && action != 1) || len == 0 || len > wire::kMaxSignalName || scopes_.size() >= 1024) {
        refuse(Status::InvalidArgument,
               "[dispatcher] bad scope instruction: expected ints[0] in {0 enter, 1 enter "
               "backward, 2 exit}, a signal name of 1 to 256 bytes and at most 1024 nested "
               "scopes, got action " + std::to_string(action) + ", a name of " +
                   std::to_string(len) + " bytes, depth " + std::to_string(scopes_.size()));
      }
      scopes_.push_back(Frame{in.name()->str(), action == 1});
      if (!unit_) {
        if (const std::string* unit = compile_scope()) unit_ = *unit;
      }
      return;
    }
    case wire::InstrKind::Free: {
      std::map<int, std::vector<TensorId>> by_worker;
      for (TensorId id : wire::view(in.inputs())) {
        auto it = tensors_.find(id);
        if (it == tensors_.end()) continue;
        // A sum nobody read is never reduced (Note [deferred sums]).
        if (DeferredSum* d = family_of(id)) {
          std::erase_if(d->names, [&](const DeferredSum::Name& n) { return n.id == id; });
          std::erase_if(deferred_, [](const DeferredSum& f) { return f.names.empty(); });
        }
        for (int w : resolve(it->second.layout).workers) by_worker[w].push_back(id);
        tensors_.erase(it);
      }
      emit_frees(by_worker, out);
      return;
    }
    case wire::InstrKind::Op:
      break;
    default:
      refuse(Status::InvalidArgument,
             "[dispatcher] instruction kind " + std::to_string(static_cast<int>(in.kind())) +
                 " is not for clients: expected op, free, fetch, sync, scope or configure");
  }

  const OpInfo* op = find_op(in.op());
  const auto outputs = wire::view(in.outputs());
  const auto input_ids = wire::view(in.inputs());
  // Note [deferred sums]: a linear op runs on the partial values below;
  // anything else completes them first.
  bool reads_deferred = false;
  if (!deferred_.empty()) {
    const auto named = [&](TensorId id) { return deferred(id); };
    reads_deferred = std::any_of(input_ids.begin(), input_ids.end(), named) ||
                     std::any_of(outputs.begin(), outputs.end(), named);
  }
  const auto complete_named = [&] {
    std::vector<TensorId> ids(input_ids.begin(), input_ids.end());
    ids.insert(ids.end(), outputs.begin(), outputs.end());
    flush_sums(out, ids);
    reads_deferred = false;
  };
  for (TensorId id : outputs) {
    if (id >= kTempIdBase) {
      refuse(Status::InvalidArgument, "[dispatcher] tensor id " + std::to_string(id) +
                                          " is reserved for the dispatcher: expected ids below 2^62");
    }
  }
  // Inputs and the output's meta; anything unknown runs unchanged where the
  // first input lives (or at home), so the worker reports it in full.
  std::vector<const Placed*> ins;
  std::vector<TensorMeta> metas;
  // An op given other than its number of output ids is unknown too: the
  // plans below name outputs[0] of every op with a result (found by
  // tests/fuzz/sharding_fuzz.cpp: randn without an output id read past the
  // span).
  bool known = op != nullptr && valid_dtype_code(in.dtype()) &&
               outputs.size() == static_cast<size_t>(op->outputs);
  for (TensorId id : input_ids) {
    const Placed* p = find(id);
    if (!p || !p->meta) {
      known = false;
      if (!p) break;
    }
    ins.push_back(p);
    if (p->meta) metas.push_back(*p->meta);
  }
  std::optional<TensorMeta> out_meta;
  if (known) {
    try {
      auto res = infer(*op, OpCall{metas, wire::view(in.ints()), wire::view(in.floats()),
                                   static_cast<DType>(in.dtype())});
      if (res.size() == 1) out_meta = std::move(res[0]);
      else if (!res.empty()) known = false;
    } catch (const std::invalid_argument&) {
      known = false;
    }
  }
  if (reads_deferred && known && out_meta && propagate_sum(*op, in, *out_meta, out)) return;
  if (reads_deferred) complete_named();
  if (!known || (op->outputs == 1 && !out_meta)) {
    Layout where = ins.empty() || !ins[0] ? replicated({home_}) : resolve(ins[0]->layout);
    for (int w : where.workers) {
      wire::Instr copy = wire::to_instr(&in);
      if (copy.payload >= 0) copy.payload = -1;  // the worker reports the missing payload
      emit(w, std::move(copy), out);
    }
    for (TensorId id : outputs) tensors_[id] = Placed{std::nullopt, where};
    return;
  }

  OpPlan plan;
  // Ops without a result (in place, control) are planned by their first input.
  const TensorMeta none;
  plan_op(*op, in, ins, out_meta ? *out_meta : (metas.empty() ? none : metas[0]), cluster, plan);

  // Inputs in the layouts the plan needs.
  std::vector<Names> names(ins.size());
  for (size_t i = 0; i < ins.size(); ++i) names[i] = convert(input_ids[i], *ins[i], plan.inputs[i], out);

  // A payload index means something only on a FromData, which gets its own
  // per worker below; on any other op it would name a frame the worker's
  // batch does not have (found by tests/fuzz/sharding_fuzz.cpp: a randn with
  // payload 0).
  wire::Instr base = wire::to_instr(&in);
  base.payload = -1;
  const Layout& run = plan.run;
  // FromData: the client's frame, shared or split per worker (Note [payload
  // sharing]).
  const zmq::message_t* payload = nullptr;
  std::shared_ptr<zmq::message_t> shared;
  if (op->code == OpCode::FromData) {
    const int64_t expected = numel(out_meta->shape) * element_size(out_meta->dtype);
    const auto index = static_cast<size_t>(std::max(in.payload(), 0));
    if (in.payload() < 0 || index >= payloads.size() || !payloads[index] ||
        static_cast<int64_t>(payloads[index]->size()) != expected) {
      refuse(Status::PayloadMismatch,
             "[dispatcher] tensor: the data frame for shape " + shape_str(out_meta->shape) + " " +
                 std::string(to_string(out_meta->dtype)) + " must be " + std::to_string(expected) +
                 " bytes (payload index " + std::to_string(in.payload()) + ")");
    }
    shared = payloads[index];
    payload = shared.get();
  }
  const std::vector<int> runners =
      plan.random_broadcast ? std::vector<int>{run.workers.front()} : run.workers;
  for (size_t k = 0; k < runners.size(); ++k) {
    const int w = runners[k];
    wire::Instr instr = base;
    instr.op = plan.code;
    for (size_t i = 0; i < ins.size(); ++i) instr.inputs[i] = names[i].at(w);
    const Shape local = out_meta ? shard_shape(*out_meta, run, k) : Shape{};
    if (plan.local_shape) instr.ints.assign(local.begin(), local.end());
    if (op->code == OpCode::Arange && run.sharded()) {
      const double start = base.floats[0], step = base.floats[2];
      const auto begin = static_cast<double>(shard_offset(*out_meta, run, k));
      const auto rows = static_cast<double>(local[0]);
      // Half a step short of the shard's end, so rounding cannot add a value.
      const double first = start + begin * step;
      instr.floats = {first, rows > 0 ? start + (begin + rows - 0.5) * step : first, step};
    }
    if (op->code == OpCode::FromData) {
      WorkerOutput& o = out[w];
      instr.payload = static_cast<int32_t>(o.data.size());
      const int64_t row_bytes = run.sharded() ? numel(std::span(local).subspan(static_cast<size_t>(run.axis) + 1)) *
                                                    element_size(out_meta->dtype)
                                              : 0;
      if (!run.sharded()) {
        o.data.push_back(share_bytes(shared, 0, payload->size()));
      } else if (run.axis == 0 || numel(std::span(local).first(static_cast<size_t>(run.axis))) == 1) {
        // The shard is one contiguous range of the upload.
        const int64_t begin = shard_offset(*out_meta, run, k);
        o.data.push_back(share_bytes(shared, static_cast<size_t>(begin * row_bytes),
                                     static_cast<size_t>(local[static_cast<size_t>(run.axis)] * row_bytes)));
      } else {
        o.data.push_back(own_bytes(slice_rows(
            std::span<const char>(static_cast<const char*>(payload->data()), payload->size()),
            out_meta->shape, run.axis, shard_offset(*out_meta, run, k),
            local[static_cast<size_t>(run.axis)], element_size(out_meta->dtype))));
      }
    }
    emit(w, std::move(instr), out);
  }
  if (plan.random_broadcast) {
    const int root = run.workers.front();
    for (int w : run.workers) {
      emit_collective(run.workers, w, collective::kBroadcast, 0, 0, out_meta->shape, out_meta->dtype,
                      w == root ? std::vector<TensorId>{outputs[0]} : std::vector<TensorId>{},
                      w == root ? std::vector<TensorId>{} : std::vector<TensorId>{outputs[0]}, out);
    }
  }
  if (plan.post == OpPlan::Post::Sum || plan.post == OpPlan::Post::Mean) {
    deferred_.push_back(DeferredSum{{{outputs[0], true}}, run.workers, out_meta->dtype,
                                    numel(out_meta->shape),
                                    plan.post == OpPlan::Post::Mean ? plan.mean_scale : 1.0});
  } else if (plan.post != OpPlan::Post::None) {
    const int64_t reduce = plan.post == OpPlan::Post::Max ? collective::kMax : collective::kMin;
    for (int w : run.workers) {
      emit_collective(run.workers, w, collective::kAllReduce, reduce, 0, out_meta->shape,
                      out_meta->dtype, {outputs[0]}, {}, out);
    }
  }
  free_temps(out);
  // The in-place ops' target keeps its layout; outputs take the plan's.
  for (TensorId id : outputs) tensors_[id] = Placed{out_meta, run};
  if (op->kind == OpKind::Inplace && out_meta && !input_ids.empty()) {
    tensors_[input_ids[0]].meta = out_meta;
  }
}

FetchPlan ShardedSession::plan_fetch(TensorId id) const {
  const Placed* p = find(id);
  if (!p) {
    refuse(Status::UnknownTensor, "[dispatcher] fetch of tensor " + std::to_string(id) +
                                      ", which this session does not hold");
  }
  const Layout l = resolve(p->layout);
  FetchPlan plan;
  if (!l.sharded() || !p->meta) {
    // A copy on the home worker if it has one (no extra hop), else the first.
    plan.parts.push_back({contains(l.workers, home_) ? home_ : l.workers.front(), {}});
    return plan;
  }
  plan.axis = l.axis;
  plan.meta = *p->meta;
  for (size_t k = 0; k < l.workers.size(); ++k) {
    plan.parts.push_back({l.workers[k], shard_shape(*p->meta, l, k)});
  }
  return plan;
}

}  // namespace gt::dispatcher
