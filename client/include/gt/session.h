#pragma once
// The process-wide gt session: the connection to a dispatcher.

#include <cstdint>
#include <string>

#include <gt/export.h>

namespace gt {

// One session per process, created by the first gt call from the environment:
// with GT_DISPATCHER set it connects there, otherwise it starts a private local
// cluster (a dispatcher and GT_WORKERS workers as child processes) that is torn
// down at shutdown. All functions are thread-safe. Connection failures throw
// gt::TransportError; a handshake the dispatcher refuses throws
// gt::ProtocolError or gt::RemoteError.

/// Starts the session from the environment now (optional; idempotent).
GT_API void init();

/// Connects to the dispatcher at `endpoint` ("tcp://host:port", "ipc://path");
/// throws gt::Error if a session to another endpoint is already open.
GT_API void connect(const std::string& endpoint);

/// Waits until every instruction issued so far has run; rethrows the first
/// failure since the previous sync as gt::RemoteError (naming worker, op, shapes).
GT_API void synchronize();

/// Ends the session (sends Bye, stops a local cluster); idempotent, never
/// throws, also runs at process exit. Tensors of the session become unusable.
GT_API void shutdown() noexcept;

/// Seeds the random generators of every worker (randn, rand), in stream order.
GT_API void manual_seed(uint64_t seed);

}  // namespace gt
