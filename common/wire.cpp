#include "common/wire.h"

#include <cstdlib>
#include <cstring>
#include <memory>

#include <gt/error.h>

#include "common/check.h"
#include "common/zero_copy.h"

namespace gt::wire {
namespace {

// Hands the builder's buffer to ZeroMQ without copying.
zmq::message_t finish(flatbuffers::FlatBufferBuilder& fbb,
                      flatbuffers::Offset<Message> root) {
  fbb.Finish(root, MessageIdentifier());
  auto* buf = new flatbuffers::DetachedBuffer(fbb.Release());
  return zero_copy_frame(buf->data(), buf->size(), buf);
}

template <typename T>
zmq::message_t wrap(flatbuffers::FlatBufferBuilder& fbb, uint64_t session,
                    flatbuffers::Offset<T> body) {
  return finish(fbb, CreateMessage(fbb, session, BodyTraits<T>::enum_value, body.Union()));
}

// Note [vector alignment]
// The FlatBuffers verifier (2.0) checks that a vector's length prefix is
// 4-byte aligned, not that its elements are aligned for their type, so a
// crafted header can place a [long], [ulong] or [double] vector at an
// address that is 4 mod 8 (found by tests/fuzz/wire_fuzz.cpp). Every reader
// takes these vectors as spans of 8-byte values (wire::view): undefined
// behaviour on such data, and a vectorised loop that assumes the alignment
// may fault. Builders always align them, so decode refuses the rest. The
// frame itself is 8-byte aligned by then, so addresses can be checked.
template <typename T>
bool aligned(const flatbuffers::Vector<T>* v) {
  return !v || reinterpret_cast<uintptr_t>(v->data()) % alignof(T) == 0;
}

flatbuffers::Offset<Failure> write_failure(flatbuffers::FlatBufferBuilder& fbb,
                                           const FailureInfo& f) {
  return CreateFailure(fbb, static_cast<uint16_t>(f.code), fbb.CreateString(f.message),
                       f.worker, fbb.CreateString(f.op), f.tensor);
}

}  // namespace

const Message* decode(zmq::message_t& frame) {
  if (frame.size() < 8 || frame.size() > kMaxHeaderBytes) {
    throw ProtocolError("[wire.decode] header frame of " + std::to_string(frame.size()) +
                        " bytes: expected a gt message of 8 bytes to 1 GiB");
  }
  if (reinterpret_cast<uintptr_t>(frame.data()) % alignof(uint64_t) != 0) {
    // A message built on our own buffer keeps that buffer's alignment,
    // whatever its size (ZeroMQ stores small copied messages inline).
    const size_t size = frame.size();
    void* aligned = std::aligned_alloc(alignof(uint64_t), (size + 7) / 8 * 8);
    if (!aligned) throw ProtocolError("[wire.decode] out of memory copying a header frame");
    std::memcpy(aligned, frame.data(), size);
    frame = zmq::message_t(
        aligned, size,
        [](void* p, void*) {
          tsan::acquire(p);  // Note [zero-copy frames and TSan]
          std::free(p);
        },
        nullptr);
  }
  const auto* data = static_cast<const uint8_t*>(frame.data());
  if (!MessageBufferHasIdentifier(data)) {
    throw ProtocolError("[wire.decode] header frame lacks the GT01 identifier: not a gt message");
  }
  flatbuffers::Verifier::Options opts;
  opts.max_depth = 16;
  opts.max_tables = 4 * kMaxInstructionsPerBatch;
  flatbuffers::Verifier verifier(data, frame.size(), opts);
  if (!VerifyMessageBuffer(verifier)) {
    throw ProtocolError("[wire.decode] header frame failed verification (" +
                        std::to_string(frame.size()) + " bytes): truncated or corrupt");
  }
  const Message* msg = GetMessage(data);
  if (msg->body_type() == Body::NONE || msg->body() == nullptr) {
    throw ProtocolError("[wire.decode] message has no body");
  }
  if (msg->body_type() > Body::MAX) {
    throw ProtocolError("[wire.decode] unknown body type " +
                        std::to_string(static_cast<int>(msg->body_type())));
  }
  if (const auto* b = msg->body_as_Batch();
      b && b->instructions() && b->instructions()->size() > kMaxInstructionsPerBatch) {
    throw ProtocolError("[wire.decode] batch of " +
                        std::to_string(b->instructions()->size()) +
                        " instructions exceeds the limit of " +
                        std::to_string(kMaxInstructionsPerBatch));
  }
  if (const auto* b = msg->body_as_Batch(); b && b->instructions()) {
    for (flatbuffers::uoffset_t i = 0; i < b->instructions()->size(); ++i) {
      const Instruction* in = b->instructions()->Get(i);
      if (in && !(aligned(in->outputs()) && aligned(in->inputs()) && aligned(in->ints()) &&
                  aligned(in->floats()))) {
        throw ProtocolError("[wire.decode] instruction " + std::to_string(i) +
                            " has a vector of 8-byte values at a misaligned offset: expected "
                            "8-byte alignment, as FlatBuffers builders write them");
      }
    }
  }
  if (const auto* r = msg->body_as_FetchReply(); r && !aligned(r->shape())) {
    throw ProtocolError("[wire.decode] fetch reply's shape is at a misaligned offset: expected "
                        "8-byte alignment, as FlatBuffers builders write it");
  }
  if (const auto* g = msg->body_as_StoreGet();
      g && g->keys() && g->keys()->size() > kMaxStoreKeysPerGet) {
    throw ProtocolError("[wire.decode] store get of " + std::to_string(g->keys()->size()) +
                        " keys exceeds the limit of " + std::to_string(kMaxStoreKeysPerGet));
  }
  if (const auto* r = msg->body_as_StatsReply();
      r && r->workers() && r->workers()->size() > kMaxStatsWorkers) {
    throw ProtocolError("[wire.decode] stats reply with " +
                        std::to_string(r->workers()->size()) +
                        " worker entries exceeds the limit of " +
                        std::to_string(kMaxStatsWorkers));
  }
  return msg;
}

std::string_view body_name(Body b) {
  const char* name = EnumNameBody(b);
  return name && *name ? name : "Unknown";
}

uint64_t reply_request(const Message& m) {
  switch (m.body_type()) {
    case Body::FetchReply: return m.body_as_FetchReply()->request();
    case Body::SyncReply: return m.body_as_SyncReply()->request();
    case Body::ErrorReply: return m.body_as_ErrorReply()->request();
    case Body::StatsReply: return m.body_as_StatsReply()->request();
    case Body::StoreReply: return m.body_as_StoreReply()->request();
    default: return 0;
  }
}

zmq::message_t encode_hello(Role role, std::string_view device, uint64_t capacity_bytes,
                            int64_t pid, std::string_view name, uint32_t min_workers,
                            uint32_t version) {
  flatbuffers::FlatBufferBuilder fbb(256);
  auto dev = fbb.CreateString(device.data(), device.size());
  auto nm = fbb.CreateString(name.data(), name.size());
  return wrap(fbb, 0, CreateHello(fbb, version, role, dev, capacity_bytes, pid, nm, min_workers));
}

zmq::message_t encode_welcome(uint64_t session, int worker, uint32_t workers,
                              std::string_view events) {
  flatbuffers::FlatBufferBuilder fbb(128);
  auto ev = fbb.CreateString(events.data(), events.size());
  return wrap(fbb, session, CreateWelcome(fbb, kProtocolVersion, session, worker, workers, ev));
}

zmq::message_t encode_trace_control(bool events, bool stats) {
  flatbuffers::FlatBufferBuilder fbb(64);
  return wrap(fbb, 0, CreateTraceControl(fbb, events, stats));
}

zmq::message_t encode_store_set(std::string_view key, std::span<const char> value) {
  flatbuffers::FlatBufferBuilder fbb(64 + key.size() + value.size());
  auto k = fbb.CreateString(key.data(), key.size());
  auto v = fbb.CreateVector(reinterpret_cast<const uint8_t*>(value.data()), value.size());
  return wrap(fbb, 0, CreateStoreSet(fbb, k, v));
}

zmq::message_t encode_store_get(uint64_t request, std::span<const std::string> keys,
                                uint32_t timeout_ms) {
  flatbuffers::FlatBufferBuilder fbb(64);
  std::vector<flatbuffers::Offset<flatbuffers::String>> ks;
  ks.reserve(keys.size());
  for (const auto& k : keys) ks.push_back(fbb.CreateString(k));
  auto kv = fbb.CreateVector(ks);
  return wrap(fbb, 0, CreateStoreGet(fbb, request, kv, timeout_ms));
}

zmq::message_t encode_store_reply(uint64_t request, std::span<const std::string> keys,
                                  std::span<const std::string> values,
                                  std::span<const std::string> missing) {
  flatbuffers::FlatBufferBuilder fbb(128);
  std::vector<flatbuffers::Offset<StoreEntry>> entries;
  if (missing.empty()) {
    for (size_t i = 0; i < keys.size() && i < values.size(); ++i) {
      auto k = fbb.CreateString(keys[i]);
      auto v = fbb.CreateVector(reinterpret_cast<const uint8_t*>(values[i].data()),
                                values[i].size());
      entries.push_back(CreateStoreEntry(fbb, k, v));
    }
  }
  std::vector<flatbuffers::Offset<flatbuffers::String>> miss;
  for (const auto& m : missing) miss.push_back(fbb.CreateString(m));
  auto ev = fbb.CreateVector(entries);
  auto mv = fbb.CreateVector(miss);
  return wrap(fbb, 0, CreateStoreReply(fbb, request, ev, mv));
}

zmq::message_t encode_trace_events(std::string_view events, std::string_view stats) {
  flatbuffers::FlatBufferBuilder fbb(64 + events.size() + stats.size());
  auto ev = fbb.CreateString(events.data(), events.size());
  auto st = fbb.CreateString(stats.data(), stats.size());
  return wrap(fbb, 0, CreateTraceEvents(fbb, ev, st));
}

zmq::message_t encode_batch(uint64_t session, uint64_t seq, std::span<const Instr> instrs) {
  flatbuffers::FlatBufferBuilder fbb(64 + 96 * instrs.size());
  std::vector<flatbuffers::Offset<Instruction>> offsets;
  offsets.reserve(instrs.size());
  for (const Instr& in : instrs) {
    auto outs = in.outputs.empty() ? 0 : fbb.CreateVector(in.outputs);
    auto ins = in.inputs.empty() ? 0 : fbb.CreateVector(in.inputs);
    auto ints = in.ints.empty() ? 0 : fbb.CreateVector(in.ints);
    auto floats = in.floats.empty() ? 0 : fbb.CreateVector(in.floats);
    auto name = in.name.empty() ? 0 : fbb.CreateString(in.name);
    InstructionBuilder b(fbb);
    b.add_kind(in.kind);
    b.add_op(static_cast<uint16_t>(in.op));
    if (!in.outputs.empty()) b.add_outputs(outs);
    if (!in.inputs.empty()) b.add_inputs(ins);
    if (!in.ints.empty()) b.add_ints(ints);
    if (!in.floats.empty()) b.add_floats(floats);
    b.add_dtype(static_cast<uint8_t>(in.dtype));
    b.add_payload(in.payload);
    b.add_request(in.request);
    if (!in.name.empty()) b.add_name(name);
    offsets.push_back(b.Finish());
  }
  auto vec = fbb.CreateVector(offsets);
  return wrap(fbb, session, CreateBatch(fbb, seq, vec));
}

zmq::message_t encode_fetch_reply(uint64_t session, uint64_t request, TensorId tensor,
                                  DType dtype, std::span<const int64_t> shape) {
  flatbuffers::FlatBufferBuilder fbb(128);
  auto s = fbb.CreateVector(shape.data(), shape.size());
  return wrap(fbb, session,
              CreateFetchReply(fbb, request, tensor, static_cast<uint8_t>(dtype), s));
}

zmq::message_t encode_sync_reply(uint64_t session, uint64_t request,
                                 std::span<const FailureInfo> errors) {
  flatbuffers::FlatBufferBuilder fbb(128);
  std::vector<flatbuffers::Offset<Failure>> fs;
  for (const auto& f : errors) fs.push_back(write_failure(fbb, f));
  auto v = fbb.CreateVector(fs);
  return wrap(fbb, session, CreateSyncReply(fbb, request, v));
}

zmq::message_t encode_error_reply(uint64_t session, uint64_t request, const FailureInfo& f) {
  flatbuffers::FlatBufferBuilder fbb(256);
  auto fo = write_failure(fbb, f);
  return wrap(fbb, session, CreateErrorReply(fbb, request, fo));
}

zmq::message_t encode_heartbeat(uint64_t session) {
  flatbuffers::FlatBufferBuilder fbb(64);
  return wrap(fbb, session, CreateHeartbeat(fbb));
}

zmq::message_t encode_bye(uint64_t session) {
  flatbuffers::FlatBufferBuilder fbb(64);
  return wrap(fbb, session, CreateBye(fbb));
}

zmq::message_t encode_stats_request(uint64_t session, uint64_t request) {
  flatbuffers::FlatBufferBuilder fbb(64);
  return wrap(fbb, session, CreateStatsRequest(fbb, request));
}

zmq::message_t encode_stats_reply(uint64_t session, uint64_t request,
                                  std::span<const WorkerStatsInfo> workers) {
  flatbuffers::FlatBufferBuilder fbb(64 + 160 * workers.size());
  std::vector<flatbuffers::Offset<WorkerStats>> entries;
  entries.reserve(workers.size());
  for (const WorkerStatsInfo& w : workers) {
    entries.push_back(CreateWorkerStats(
        fbb, w.worker, fbb.CreateString(w.device), w.sessions, w.session_tensors, w.tensors,
        w.instructions, w.jit_enabled, w.jit_detected, w.jit_compiled, w.jit_cache_hits,
        w.jit_failures, w.jit_duplicates, w.jit_runs, w.jit_dropped, w.jit_fallbacks,
        w.jit_limited, w.jit_elided_runs, w.session_bytes, w.tensor_bytes));
  }
  auto v = fbb.CreateVector(entries);
  return wrap(fbb, session, CreateStatsReply(fbb, request, v));
}

WorkerStatsInfo to_worker_stats(const WorkerStats* w) {
  WorkerStatsInfo out;
  if (!w) return out;
  out.worker = w->worker();
  out.device = w->device() ? w->device()->str() : "";
  out.sessions = w->sessions();
  out.session_tensors = w->session_tensors();
  out.tensors = w->tensors();
  out.instructions = w->instructions();
  out.jit_enabled = w->jit_enabled();
  out.jit_detected = w->jit_detected();
  out.jit_compiled = w->jit_compiled();
  out.jit_cache_hits = w->jit_cache_hits();
  out.jit_failures = w->jit_failures();
  out.jit_duplicates = w->jit_duplicates();
  out.jit_runs = w->jit_runs();
  out.jit_dropped = w->jit_dropped();
  out.jit_fallbacks = w->jit_fallbacks();
  out.jit_limited = w->jit_limited();
  out.jit_elided_runs = w->jit_elided_runs();
  out.session_bytes = w->session_bytes();
  out.tensor_bytes = w->tensor_bytes();
  return out;
}

FailureInfo to_failure_info(const Failure* f) {
  FailureInfo out;
  if (!f) return failure(Status::Malformed, "[wire] error reply without a failure");
  out.code = f->code() < kNumStatus ? static_cast<Status>(f->code()) : Status::Internal;
  out.message = f->message() ? f->message()->str() : "";
  out.worker = f->worker();
  out.op = f->op() ? f->op()->str() : "";
  out.tensor = f->tensor();
  return out;
}

Instr to_instr(const Instruction* in) {
  Instr out;
  out.kind = in->kind();
  out.op = static_cast<OpCode>(in->op());
  auto o = view(in->outputs());
  out.outputs.assign(o.begin(), o.end());
  auto i = view(in->inputs());
  out.inputs.assign(i.begin(), i.end());
  auto n = view(in->ints());
  out.ints.assign(n.begin(), n.end());
  auto f = view(in->floats());
  out.floats.assign(f.begin(), f.end());
  out.dtype = static_cast<DType>(in->dtype());
  out.payload = in->payload();
  out.request = in->request();
  if (in->name()) out.name = in->name()->str();
  return out;
}

FailureInfo failure(Status code, std::string message, int worker, std::string op,
                    TensorId tensor) {
  return FailureInfo{code, std::move(message), worker, std::move(op), tensor};
}

void throw_failure(const FailureInfo& f) {
  switch (f.code) {
    case Status::Malformed:
    case Status::VersionMismatch:
    case Status::WrongRole:
      throw ProtocolError(f.message);
    case Status::Timeout:
      throw TimeoutError(f.message);
    default:
      throw RemoteError(f.message, f.worker, f.op, static_cast<int>(f.code));
  }
}

}  // namespace gt::wire
