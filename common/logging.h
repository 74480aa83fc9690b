#pragma once
// Named spdlog loggers ("client", "dispatcher", "worker", "transport").
// Components keep the shared_ptr; there is no spdlog::get on hot paths.

#include <memory>
#include <string>

#include <spdlog/spdlog.h>

namespace gt {

/// For executables only: sets the global pattern and levels (GT_LOG_LEVEL,
/// then SPDLOG_LEVEL) and registers the process' loggers.
void configure_process_logging();

/// A logger writing to stderr with gt's pattern. In executables it is
/// registered globally; gt_client calls it with register_globally = false so
/// it never touches a user program's spdlog state. Default level: info for
/// executables, warn for the client.
std::shared_ptr<spdlog::logger> make_logger(const std::string& name,
                                            bool register_globally = true);

}  // namespace gt
