#pragma once
// The process-wide session behind gt::init/connect/shutdown, for the library,
// tests and benchmarks.

#include <memory>

#include <gt/export.h>

#include "client/internal/session.h"

namespace gt::client {

/// The process's session, started from the environment on first use.
GT_API std::shared_ptr<Session> current_session();
/// The process's session if one is open, else nullptr; never starts one.
GT_API std::shared_ptr<Session> session_if_started() noexcept;
/// Starts a session with explicit options and makes it the process's; throws
/// gt::Error when one is already open.
GT_API std::shared_ptr<Session> connect(SessionOptions options);

}  // namespace gt::client
