#pragma once
// Encoding and decoding of gt messages (FlatBuffers, schema in
// common/schema/gt.fbs). A ZeroMQ message is a header frame (a verified
// wire::Message) followed by zero or more raw data frames. See docs/protocol.md.

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <zmq.hpp>

#include <gt/dtype.h>

#include "common/gt_generated.h"
#include "common/op_table.h"
#include "common/status.h"

namespace gt::wire {

/// Bumped whenever a message, field, op code or status changes meaning.
inline constexpr uint32_t kProtocolVersion = 7;
static_assert(kNumOps == 81, "op table changed: bump kProtocolVersion, update docs/protocol.md");
static_assert(kNumStatus == 14, "status codes changed: bump kProtocolVersion, update docs/errors.md");

/// Bounds applied to everything read off the wire.
inline constexpr size_t kMaxInstructionsPerBatch = 1 << 20;
inline constexpr size_t kMaxHeaderBytes = size_t{1} << 30;
inline constexpr int64_t kMaxFrameBytes = int64_t{1} << 36;
inline constexpr size_t kMaxStatsWorkers = size_t{1} << 16;  // entries in one StatsReply
// The rendezvous store (docs/protocol.md): small values, few keys.
inline constexpr size_t kMaxStoreKeyBytes = 1024;
inline constexpr size_t kMaxStoreValueBytes = size_t{1} << 20;
inline constexpr size_t kMaxStoreKeysPerGet = 4096;

using TensorId = uint64_t;

/// One instruction in plain form; what the client queues and what encode_batch
/// writes.
struct Instr {
  InstrKind kind = InstrKind::Op;
  OpCode op = OpCode::Add;
  std::vector<TensorId> outputs;
  std::vector<TensorId> inputs;
  std::vector<int64_t> ints;
  std::vector<double> floats;
  DType dtype = DType::Float32;
  int32_t payload = -1;
  uint64_t request = 0;
  std::string name;  // Scope: signal name; Configure: YAML text
};

/// Scope instructions (InstrKind::Scope): ints[0].
enum class ScopeAction : int64_t {
  Enter = 0,
  EnterBackward = 1,
  Exit = 2,
  // Dispatcher -> worker only: the ops between form one compile unit
  // (a scope whose signal has `compile: true`; Note [compile scopes]).
  UnitBegin = 3,
  UnitEnd = 4,
};
/// Longest signal name or Configure text accepted off the wire.
inline constexpr size_t kMaxSignalName = 256;
inline constexpr size_t kMaxConfigText = size_t{1} << 20;

/// A failure as carried in ErrorReply and SyncReply.
struct FailureInfo {
  Status code = Status::Internal;
  std::string message;
  int worker = -1;
  std::string op;
  TensorId tensor = 0;
};

/// One worker's counters as carried in StatsReply (fields: WorkerStats in
/// common/schema/gt.fbs).
struct WorkerStatsInfo {
  int worker = -1;
  std::string device;
  uint64_t sessions = 0;
  uint64_t session_tensors = 0;
  uint64_t tensors = 0;
  uint64_t instructions = 0;
  bool jit_enabled = false;
  uint64_t jit_detected = 0;
  uint64_t jit_compiled = 0;
  uint64_t jit_cache_hits = 0;
  uint64_t jit_failures = 0;
  uint64_t jit_duplicates = 0;
  uint64_t jit_runs = 0;
  uint64_t jit_dropped = 0;
  uint64_t jit_fallbacks = 0;
  uint64_t jit_limited = 0;
  uint64_t jit_elided_runs = 0;
  uint64_t session_bytes = 0;
  uint64_t tensor_bytes = 0;

  bool operator==(const WorkerStatsInfo&) const = default;
};

/// Verifies a header frame and returns its root. Throws gt::ProtocolError
/// naming what was wrong when the bytes are not a valid gt message.
/// FlatBuffers reads fields in place, so a frame that ZeroMQ delivered at a
/// misaligned address is first replaced by an aligned copy (hence non-const);
/// the returned pointer lives as long as the frame.
const Message* decode(zmq::message_t& frame);

/// Name of a body type, for logs ("Batch", "Hello", ...).
std::string_view body_name(Body b);
/// The request id a reply answers (FetchReply, SyncReply, ErrorReply,
/// StatsReply, StoreReply); 0 for other bodies.
uint64_t reply_request(const Message& m);

zmq::message_t encode_hello(Role role, std::string_view device, uint64_t capacity_bytes,
                            int64_t pid, std::string_view name, uint32_t min_workers,
                            uint32_t version = kProtocolVersion);
zmq::message_t encode_welcome(uint64_t session, int worker, uint32_t workers,
                              std::string_view events = {});
zmq::message_t encode_batch(uint64_t session, uint64_t seq, std::span<const Instr> instrs);
zmq::message_t encode_fetch_reply(uint64_t session, uint64_t request, TensorId tensor,
                                  DType dtype, std::span<const int64_t> shape);
zmq::message_t encode_sync_reply(uint64_t session, uint64_t request,
                                 std::span<const FailureInfo> errors);
zmq::message_t encode_error_reply(uint64_t session, uint64_t request, const FailureInfo& f);
zmq::message_t encode_heartbeat(uint64_t session);
zmq::message_t encode_bye(uint64_t session);
zmq::message_t encode_stats_request(uint64_t session, uint64_t request);
zmq::message_t encode_trace_control(bool events, bool stats);
zmq::message_t encode_store_set(std::string_view key, std::span<const char> value);
zmq::message_t encode_store_get(uint64_t request, std::span<const std::string> keys,
                                uint32_t timeout_ms);
/// `values` are those of `keys` in order (ignored when `missing` is not empty).
zmq::message_t encode_store_reply(uint64_t request, std::span<const std::string> keys,
                                  std::span<const std::string> values,
                                  std::span<const std::string> missing);
zmq::message_t encode_trace_events(std::string_view events, std::string_view stats);
zmq::message_t encode_stats_reply(uint64_t session, uint64_t request,
                                  std::span<const WorkerStatsInfo> workers);

/// Plain copy of a decoded failure.
FailureInfo to_failure_info(const Failure* f);

/// Plain copy of a decoded StatsReply entry (absent fields get their defaults).
WorkerStatsInfo to_worker_stats(const WorkerStats* w);

/// Plain copy of a decoded instruction (fields the sender left out get their
/// defaults).
Instr to_instr(const Instruction* in);

/// Span over a FlatBuffers vector (empty when absent).
template <typename T>
std::span<const T> view(const flatbuffers::Vector<T>* v) {
  return v ? std::span<const T>(v->data(), v->size()) : std::span<const T>();
}

/// Converts an exception from inside a handler into a FailureInfo.
FailureInfo failure(Status code, std::string message, int worker = -1,
                    std::string op = {}, TensorId tensor = 0);

/// Rethrows a failure received from a peer as the matching gt exception.
[[noreturn]] void throw_failure(const FailureInfo& f);

}  // namespace gt::wire
