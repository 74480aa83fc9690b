// Collective instructions in the executor (docs/protocol.md, "Collectives").
// Split from executor.cpp; the rules for failures and poison are the same.

#include <algorithm>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <gt/error.h>

#include "common/check.h"
#include "common/dtype_rules.h"
#include "common/shape.h"
#include "worker/executor.h"
#include "worker/internal/tensor_meta.h"
#include "worker/kernels.h"

namespace gt::worker {

// Note [collective instructions]
// The dispatcher sends every worker of a group the same collectives in the
// same order (docs/protocol.md, "Collectives"); each worker runs its own
// with the group's communicator (Note [communicator cache] in
// worker/collectives/communicators.cpp), blocking the executor thread until
// its peers take part. Three kinds of problems are told apart:
//
// - The instruction itself is wrong (unknown collective, a group without
//   this worker, a bad reduce op, dim, root, peer, shape or dtype, wrong
//   arity), or this worker cannot take part at all (no collectives backend,
//   a CUDA device, a result over the capacity): it fails at once without
//   communicating. The peers got the same instruction and fail alike.
// - This rank's tensors are wrong (an input unknown, poisoned, or not of the
//   instruction's shape and dtype; an output id already live): the rank
//   still takes part, with zeros of the instruction's shape in place of the
//   input, so that its peers neither hang nor break the communicator by
//   timing out. Its outputs (and all_reduce's in-place tensor) are then
//   poisoned: silently with a poisoned input's failure, else with a new
//   failure. The peers' results are unspecified, as the spec says.
// - The collective fails (the backend throws): std::invalid_argument is
//   invalid_argument, anything else execution_failed, and the targets are
//   poisoned. After a gt::TimeoutError or gt::TransportError the group is
//   marked broken, so its later collectives fail at once with that failure.
//
// For the JIT a collective is a barrier like a fetch (its inputs are read,
// its outputs come from elsewhere): a partly matched compiled unit is run
// eagerly first (offer_compiled) and the recorder cuts its sequence there.

// Note [all_reduce buckets]
// The dispatcher defers the all_reduce that completes a partial sum until
// the value is used, and then reduces every deferred value of the session in
// one all_reduce (Note [deferred sums] in dispatcher/sharding.cpp): a
// data-parallel step's gradients cost one collective instead of one each,
// and on a loaded machine each collective costs milliseconds of waiting for
// the slowest rank, whatever its size. Such an instruction names k > 1
// inputs and lists their element counts where the shape would be; the
// worker copies them into one flat buffer, reduces it in place, and copies
// the results back. A rank with a bad input takes part with zeros for it,
// and poisons every input of the bucket, as one failure of the whole
// all_reduce would.

namespace {

using collectives::Collective;
using collectives::ReduceOp;
using wire::FailureInfo;
using wire::TensorId;

/// Groups larger than this are refused as malformed (gt clusters are far
/// smaller; it bounds what an instruction can make the worker allocate).
constexpr int64_t kMaxGroupWorkers = 4096;
/// The most tensors one bucketed all_reduce names (Note [all_reduce buckets]).
constexpr size_t kMaxBucket = 4096;

/// A Collective instruction with its ints taken apart and checked against
/// the table of docs/protocol.md. Filled in as parsing goes, so a failure
/// can name what was already known (the collective, the group).
struct ParsedCollective {
  Collective kind = Collective::Barrier;
  std::string name;        // "all_reduce"; "collective#N" for an unknown code
  std::vector<int> group;  // once parsed
  int rank = -1;           // this worker's position in group
  int64_t a = 0, b = 0;
  TensorMeta meta;                 // shape and dtype this rank contributes or receives
  size_t inputs = 0, outputs = 0;  // the arity this rank expects
  bool in_place = false;           // all_reduce writes its inputs
  /// A bucketed all_reduce (Note [all_reduce buckets]): each input's element
  /// count; `meta` is then the flat concatenation's. Empty otherwise.
  std::vector<int64_t> bucket;
};

struct Rejection {
  Status code;
  std::string what;
};

std::string_view reduce_op_names() {
  return "0 sum, 1 avg, 2 max, 3 min, 4 product";
}

std::optional<Rejection> check_reduce_op(int64_t v, std::string_view which) {
  if (v >= 0 && v < collectives::kNumReduceOps) return std::nullopt;
  return Rejection{Status::InvalidArgument,
                   gt::detail::cat("reduce op ", v, " (", which, "): expected ", reduce_op_names())};
}

std::string plural(size_t n, std::string_view word) {
  return gt::detail::cat(n, " ", word, n == 1 ? "" : "s");
}

/// Checks everything the instruction says before anything communicates;
/// nullopt when it is well formed for worker `self`.
std::optional<Rejection> parse_collective(const wire::Instruction& in, int self,
                                          ParsedCollective& p) {
  using gt::detail::cat;
  const uint16_t code = in.op();
  if (code < static_cast<uint16_t>(Collective::AllReduce) ||
      code > static_cast<uint16_t>(Collective::Barrier)) {
    p.name = cat("collective#", code);
    return Rejection{Status::InvalidArgument,
                     cat("collective code ", code,
                         " is unknown: expected 1 (all_reduce), 2 (all_gather), 3 "
                         "(reduce_scatter), 4 (broadcast), 5 (send), 6 (recv) or 7 (barrier)")};
  }
  p.kind = static_cast<Collective>(code);
  p.name = std::string(collectives::to_string(p.kind));
  p.in_place = p.kind == Collective::AllReduce;  // poisoned on any failure, as in-place ops are

  const auto ints = wire::view(in.ints());
  if (ints.empty()) {
    return Rejection{Status::Malformed, "no ints: expected [n, w_0 .. w_{n-1}, a, b, shape...]"};
  }
  const int64_t n = ints[0];
  if (n < 1 || n > kMaxGroupWorkers) {
    return Rejection{Status::Malformed,
                     cat("a group of ", n, " workers (ints[0]): expected 1 to ", kMaxGroupWorkers)};
  }
  if (ints.size() < static_cast<size_t>(n) + 3) {
    return Rejection{Status::Malformed,
                     cat(ints.size(), " ints for a group of ", n, " workers: expected at least ",
                         n + 3, " ([n, w_0 .. w_{n-1}, a, b, shape...])")};
  }
  const auto workers = ints.subspan(1, static_cast<size_t>(n));
  for (int64_t w : workers) {
    if (w < 0 || w > INT32_MAX) {
      return Rejection{Status::InvalidArgument,
                       cat("worker index ", w, " in the group: expected 0 to ", INT32_MAX)};
    }
  }
  p.group.assign(workers.begin(), workers.end());
  for (size_t i = 1; i < p.group.size(); ++i) {
    if (p.group[i] <= p.group[i - 1]) {
      const std::string g = collectives::group_str(p.group);
      p.group.clear();  // not a group: the message names it once, here
      return Rejection{Status::InvalidArgument, cat("the workers ", g,
                                                    " are not strictly ascending: expected each "
                                                    "worker once, in increasing order")};
    }
  }
  const auto self_at = std::find(p.group.begin(), p.group.end(), self);
  if (self_at == p.group.end()) {
    return Rejection{Status::InvalidArgument, cat("this worker (", self,
                                                  ") is not in the group: expected only the "
                                                  "group's workers to receive its collectives")};
  }
  p.rank = static_cast<int>(self_at - p.group.begin());
  p.a = ints[static_cast<size_t>(n) + 1];
  p.b = ints[static_cast<size_t>(n) + 2];

  const auto shape = ints.subspan(static_cast<size_t>(n) + 3);
  const size_t got_in = wire::view(in.inputs()).size();
  if (p.kind == Collective::AllReduce && got_in > 1) {
    if (!valid_dtype_code(in.dtype())) {
      return Rejection{Status::InvalidArgument, cat("dtype code ", static_cast<int>(in.dtype()),
                                                    " is not a gt dtype (0..", kNumDTypes - 1, ")")};
    }
    if (got_in > kMaxBucket || shape.size() != got_in) {
      return Rejection{Status::InvalidArgument,
                       cat("an all_reduce of ", got_in, " inputs with ", shape.size(),
                           " element counts: expected one count per input and at most ",
                           kMaxBucket, " inputs")};
    }
    int64_t total = 0;
    for (int64_t count : shape) {
      if (count < 0) {
        return Rejection{Status::InvalidArgument,
                         cat("element count ", count, " in the bucket: expected >= 0")};
      }
      // Each count, and the running total, is bounded before the sum can
      // overflow (a count near INT64_MAX would wrap it).
      try {
        (void)checked_numel(std::span<const int64_t>(&count, 1));
        total += count;
        (void)checked_numel(std::span<const int64_t>(&total, 1));
      } catch (const std::invalid_argument& e) {
        return Rejection{Status::InvalidArgument, cat("the bucket's element counts: ", e.what())};
      }
    }
    p.bucket.assign(shape.begin(), shape.end());
    p.meta = TensorMeta{Shape{total}, static_cast<DType>(in.dtype())};
    if (auto r = check_reduce_op(p.a, "a")) return r;
    if (p.b != 0) {
      return Rejection{Status::InvalidArgument, cat("b = ", p.b, " is unused by all_reduce: expected 0")};
    }
    if (!wire::view(in.outputs()).empty()) {
      return Rejection{Status::InvalidArgument,
                       cat("all_reduce takes no outputs, got ", wire::view(in.outputs()).size())};
    }
    p.inputs = got_in;
    return std::nullopt;
  }
  if (static_cast<int64_t>(shape.size()) > kMaxRank) {
    return Rejection{Status::InvalidArgument,
                     cat("a shape of ", shape.size(), " dims: expected at most ", kMaxRank)};
  }
  try {
    (void)checked_numel(shape);
  } catch (const std::invalid_argument& e) {
    return Rejection{Status::InvalidArgument, cat("shape ", shape_str(shape), ": ", e.what())};
  }
  if (!valid_dtype_code(in.dtype())) {
    return Rejection{Status::InvalidArgument, cat("dtype code ", static_cast<int>(in.dtype()),
                                                  " is not a gt dtype (0..", kNumDTypes - 1, ")")};
  }
  p.meta = TensorMeta{Shape(shape.begin(), shape.end()), static_cast<DType>(in.dtype())};

  const int64_t size = n;
  const int64_t dims = static_cast<int64_t>(shape.size());
  const auto reduce_op = check_reduce_op;
  auto dim = [&](int64_t v) -> std::optional<Rejection> {
    if (v >= -dims && v < dims) return std::nullopt;
    return Rejection{
        Status::InvalidArgument,
        cat("dim ", v, " (a) is out of range for the shape ", shape_str(shape), ": expected ",
            dims == 0 ? std::string("a tensor with at least one dim")
                      : cat("a dim in [", -dims, ", ", dims, ")"))};
  };
  auto rank_of = [&](int64_t v, std::string_view what) -> std::optional<Rejection> {
    if (v >= 0 && v < size) return std::nullopt;
    return Rejection{Status::InvalidArgument,
                     cat(what, " rank ", v, " (a) is outside the group ",
                         collectives::group_str(p.group), ": expected a rank in [0, ", size, ")")};
  };
  auto unused = [&](int64_t v, std::string_view field) -> std::optional<Rejection> {
    if (v == 0) return std::nullopt;
    return Rejection{Status::InvalidArgument,
                     cat(field, " = ", v, " is unused by ", p.name, ": expected 0")};
  };
  std::optional<Rejection> r;
  switch (p.kind) {
    case Collective::AllReduce:
      if ((r = reduce_op(p.a, "a")) || (r = unused(p.b, "b"))) return r;
      p.inputs = 1;
      break;
    case Collective::AllGather:
      if ((r = dim(p.a)) || (r = unused(p.b, "b"))) return r;
      p.inputs = p.outputs = 1;
      break;
    case Collective::ReduceScatter:
      if ((r = dim(p.a)) || (r = reduce_op(p.b, "b"))) return r;
      p.inputs = p.outputs = 1;
      break;
    case Collective::Broadcast:
      if ((r = rank_of(p.a, "root")) || (r = unused(p.b, "b"))) return r;
      (p.a == p.rank ? p.inputs : p.outputs) = 1;
      break;
    case Collective::Send:
    case Collective::Recv:
      if ((r = rank_of(p.a, "peer"))) return r;
      if (p.a == p.rank) {
        return Rejection{Status::InvalidArgument, cat("peer rank ", p.a,
                                                      " (a) is this worker's own rank: expected "
                                                      "another rank of the group")};
      }
      if (p.b < 0 || static_cast<uint64_t>(p.b) > collectives::kMaxTag) {
        return Rejection{Status::InvalidArgument, cat("tag ", p.b, " (b): expected 0 to 2^56 - 1")};
      }
      (p.kind == Collective::Send ? p.inputs : p.outputs) = 1;
      break;
    case Collective::Barrier:
      if ((r = unused(p.a, "a")) || (r = unused(p.b, "b"))) return r;
      break;
  }
  const size_t got_out = wire::view(in.outputs()).size();
  if (got_in != p.inputs || got_out != p.outputs) {
    std::string role;
    if (p.kind == Collective::Broadcast) {
      role = p.a == p.rank ? " on the root" : cat(" on rank ", p.rank, " (the root is ", p.a, ")");
    }
    return Rejection{Status::InvalidArgument,
                     cat(p.name, role, " takes ", plural(p.inputs, "input"), " and ",
                         plural(p.outputs, "output"), ", got ", plural(got_in, "input"), " and ",
                         plural(got_out, "output"))};
  }
  return std::nullopt;
}

}  // namespace

std::shared_ptr<const FailureInfo> Executor::collective_failure(Session& s,
                                                                const wire::Instruction& in,
                                                                std::string_view name,
                                                                std::string_view group, Status code,
                                                                std::string_view what) {
  const auto ids_out = wire::view(in.outputs());
  const auto ids_in = wire::view(in.inputs());
  const TensorId tensor = !ids_out.empty() ? ids_out[0] : (!ids_in.empty() ? ids_in[0] : 0);
  std::string message = gt::detail::cat("[worker ", options_.worker, "] ", name);
  if (!group.empty()) message += gt::detail::cat(" over workers ", group);
  message += gt::detail::cat(" failed: ", what);
  if (!ids_in.empty()) message += gt::detail::cat(" (inputs: ", describe_inputs(s, in), ")");
  auto f = std::make_shared<const FailureInfo>(
      FailureInfo{code, std::move(message), options_.worker, std::string(name), tensor});
  record(s, *f);
  return f;
}

void Executor::run_collective(Session& s, const wire::Instruction& in) {
  using gt::detail::cat;
  ParsedCollective p;
  const std::optional<Rejection> bad = parse_collective(in, options_.worker, p);
  const std::string group = collectives::group_str(p.group);
  const std::string_view group_named = p.group.empty() ? std::string_view() : group;
  // Fails without communicating (the first kind of Note [collective
  // instructions]).
  auto refuse = [&](Status code, std::string_view what) {
    poison_targets(s, in, p.in_place, collective_failure(s, in, p.name, group_named, code, what));
  };
  if (bad) {
    refuse(bad->code, bad->what);
    return;
  }
  if (!options_.collectives) {
    refuse(Status::ExecutionFailed,
           "this worker has no collectives backend (its executor was made without "
           "communicators)");
    return;
  }
  const uint64_t bytes = detail::saturating_bytes(p.meta);
  if (options_.capacity_bytes > 0 && bytes > options_.capacity_bytes) {
    refuse(Status::ExecutionFailed,
           cat("out of memory: the tensor ", detail::describe(p.meta), " needs ", bytes,
               " bytes, more than the worker's capacity of ", options_.capacity_bytes, " bytes"));
    return;
  }

  // This rank's own tensors (the second kind): it takes part regardless.
  const auto ids_in = wire::view(in.inputs());
  const auto ids_out = wire::view(in.outputs());
  at::Tensor input;                              // the live input, when usable
  std::shared_ptr<const FailureInfo> inherited;  // a poisoned input's failure
  std::optional<Rejection> own;                  // this rank's own problem
  std::vector<at::Tensor> parts;                 // a bucket's live inputs
  if (!p.bucket.empty()) {
    // Note [all_reduce buckets]: the inputs travel as one flat buffer; a bad
    // input contributes zeros and poisons the whole bucket on this rank.
    input = at::empty({p.meta.shape[0]},
                      at::TensorOptions().dtype(to_scalar_type(p.meta.dtype)).device(options_.device));
    parts.resize(ids_in.size());
    int64_t offset = 0;
    for (size_t i = 0; i < ids_in.size(); ++i) {
      const int64_t count = p.bucket[i];
      auto it = s.tensors.find(ids_in[i]);
      if (it == s.tensors.end()) {
        if (!own) {
          own = Rejection{Status::UnknownTensor,
                          cat("tensor ", ids_in[i], " (input ", i, ") is not live in this session; "
                              "this worker took part with zeros in its place")};
        }
      } else if (it->second.poison) {
        if (!inherited) inherited = it->second.poison;
      } else if (it->second.tensor.numel() != count ||
                 it->second.tensor.scalar_type() != input.scalar_type()) {
        if (!own) {
          own = Rejection{Status::InvalidArgument,
                          cat("input ", ids_in[i], " is ",
                              detail::describe(detail::meta_of(it->second.tensor)), ": expected ",
                              count, " elements of ", to_string(p.meta.dtype),
                              " as the instruction says; this worker took part with zeros in its place")};
        }
      } else {
        parts[i] = it->second.tensor;
      }
      at::Tensor segment = input.narrow(0, offset, count);
      if (parts[i].defined()) segment.view(parts[i].sizes()).copy_(parts[i]);
      else segment.zero_();
      offset += count;
    }
  } else if (p.inputs == 1) {
    auto it = s.tensors.find(ids_in[0]);
    if (it == s.tensors.end()) {
      own = Rejection{Status::UnknownTensor,
                      cat("tensor ", ids_in[0], " (input 0) is not live in this session")};
    } else if (it->second.poison) {
      inherited = it->second.poison;
    } else if (!detail::matches(it->second.tensor, p.meta)) {
      own = Rejection{
          Status::InvalidArgument,
          cat("input ", ids_in[0], " is ", detail::describe(detail::meta_of(it->second.tensor)),
              ": expected ", detail::describe(p.meta), " as the instruction says")};
    } else {
      input = it->second.tensor;
    }
  }
  if (p.outputs == 1 && !own && s.tensors.contains(ids_out[0])) {
    own = Rejection{Status::InvalidArgument,
                    cat("output id ", ids_out[0], " is already live in this session")};
  }
  const bool stand_in = p.inputs == 1 && !input.defined();

  at::Tensor result;
  std::optional<Rejection> failed;  // the collective's own failure (the third kind)
  try {
    const at::ScalarType dtype = to_scalar_type(p.meta.dtype);
    const at::IntArrayRef shape(p.meta.shape);
    const auto options = at::TensorOptions().dtype(dtype).device(options_.device);
    if (stand_in) input = at::zeros(shape, options);
    collectives::Collectives& comm = options_.collectives->get(p.group, p.rank);
    switch (p.kind) {
      case Collective::AllReduce:
        if (!stand_in) before_write(input);  // Note [fetch buffers]
        comm.all_reduce(input, static_cast<ReduceOp>(p.a));
        break;
      case Collective::AllGather:
        result = comm.all_gather(input, p.a);
        break;
      case Collective::ReduceScatter:
        result = comm.reduce_scatter(input, p.a, static_cast<ReduceOp>(p.b));
        break;
      case Collective::Broadcast:
        if (p.a == p.rank) {
          comm.broadcast(input, static_cast<int>(p.a));
        } else {
          result = at::empty(shape, options);
          comm.broadcast(result, static_cast<int>(p.a));
        }
        break;
      case Collective::Send:
        comm.send(input, static_cast<int>(p.a), static_cast<uint64_t>(p.b));
        break;
      case Collective::Recv:
        result = at::empty(shape, options);
        comm.recv(result, static_cast<int>(p.a), static_cast<uint64_t>(p.b));
        break;
      case Collective::Barrier:
        comm.barrier();
        break;
    }
  } catch (const std::invalid_argument& e) {
    failed = Rejection{Status::InvalidArgument, e.what()};
  } catch (const TimeoutError& e) {
    options_.collectives->mark_broken(p.group, e.what(), /*timed_out=*/true);
    failed = Rejection{Status::ExecutionFailed, e.what()};
  } catch (const TransportError& e) {
    options_.collectives->mark_broken(p.group, e.what(), /*timed_out=*/false);
    failed = Rejection{Status::ExecutionFailed, e.what()};
  } catch (const c10::Error& e) {
    failed = Rejection{Status::ExecutionFailed, e.what_without_backtrace()};
  } catch (const std::exception& e) {
    // gt::Error: the ranks disagreed (the communicator stays usable), or the
    // backend failed midway (it then refuses later calls itself).
    failed = Rejection{Status::ExecutionFailed, e.what()};
  } catch (...) {
    failed = Rejection{Status::ExecutionFailed, "the backend threw a non-standard exception"};
  }

  // What poisons the targets: the first failure in stream order. A failure
  // of the collective itself is always reported, since it says something of
  // the communicator (a rank with a problem of its own reports both).
  std::shared_ptr<const FailureInfo> poison = inherited;
  if (own) {
    const std::string what = stand_in
                                 ? cat(own->what, "; this worker took part with zeros of ",
                                       detail::describe(p.meta), " so that its peers do not hang")
                                 : own->what;
    auto f = collective_failure(s, in, p.name, group, own->code, what);
    if (!poison) poison = std::move(f);
  }
  if (failed) {
    auto f = collective_failure(s, in, p.name, group, failed->code, failed->what);
    if (!poison) poison = std::move(f);
  }
  if (poison) {
    poison_targets(s, in, p.in_place, poison);
    for (size_t i = 1; i < parts.size(); ++i) {  // a bucket fails as a whole
      if (auto it = s.tensors.find(ids_in[i]); it != s.tensors.end()) {
        it->second.tensor.reset();
        it->second.poison = poison;
      }
    }
    return;
  }
  int64_t offset = 0;
  for (at::Tensor& part : parts) {  // a bucket's results back into its inputs
    before_write(part);  // Note [fetch buffers]
    part.copy_(input.narrow(0, offset, part.numel()).view(part.sizes()));
    offset += part.numel();
  }
  if (!result.defined()) return;
  // Note [session memory]: this rank took part whatever its session holds,
  // so its peers finish; a result over the limit is then dropped here and
  // its id fails for this session alone.
  if (options_.session_memory_limit > 0) {
    if (auto why = over_session_limit(s, result.storage().nbytes())) {
      poison_targets(s, in, p.in_place,
                     collective_failure(s, in, p.name, group, Status::ExecutionFailed, *why));
      return;
    }
  }
  s.tensors.emplace(ids_out[0], Slot{std::move(result), nullptr});
}

}  // namespace gt::worker
