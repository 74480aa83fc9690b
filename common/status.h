#pragma once
// Status codes carried in error replies; listed in docs/errors.md. Append only.

#include <cstdint>
#include <string_view>

namespace gt {

enum class Status : uint16_t {
  Ok = 0,
  Malformed = 1,        // message failed verification or framing
  VersionMismatch = 2,  // HELLO with another protocol version
  UnknownOp = 3,        // op code outside the op table
  UnknownTensor = 4,    // id not live in this session
  InvalidArgument = 5,  // shapes, dtypes or attributes rejected by the op table
  ExecutionFailed = 6,  // the kernel threw (out of memory, unsupported dtype...)
  WorkerLost = 7,       // the worker holding the data stopped responding
  NoWorkers = 8,        // no worker registered in time
  Timeout = 9,          // a reply did not arrive in time
  SessionClosed = 10,   // message for a session that no longer exists
  Internal = 11,        // a bug in gt
  WrongRole = 12,       // message not allowed for the sender's role
  PayloadMismatch = 13, // data frame missing or of the wrong size
};

inline constexpr uint16_t kNumStatus = 14;

constexpr std::string_view to_string(Status s) {
  switch (s) {
    case Status::Ok: return "ok";
    case Status::Malformed: return "malformed";
    case Status::VersionMismatch: return "version_mismatch";
    case Status::UnknownOp: return "unknown_op";
    case Status::UnknownTensor: return "unknown_tensor";
    case Status::InvalidArgument: return "invalid_argument";
    case Status::ExecutionFailed: return "execution_failed";
    case Status::WorkerLost: return "worker_lost";
    case Status::NoWorkers: return "no_workers";
    case Status::Timeout: return "timeout";
    case Status::SessionClosed: return "session_closed";
    case Status::Internal: return "internal";
    case Status::WrongRole: return "wrong_role";
    case Status::PayloadMismatch: return "payload_mismatch";
  }
  return "unknown_status";
}

}  // namespace gt
