#pragma once
// Every GT_* environment variable is read here, once, into plain values
// (docs/environment.md lists them). Bad values throw std::invalid_argument
// naming the variable and what was expected.

#include <cstdint>
#include <optional>
#include <string>

namespace gt {

struct Env {
  std::optional<std::string> dispatcher;  // GT_DISPATCHER
  int workers = 1;                        // GT_WORKERS
  std::optional<std::string> executable;  // GT_EXECUTABLE: the gt binary to start
  int64_t heartbeat_interval_ms = 250;    // GT_HEARTBEAT_INTERVAL_MS
  int64_t heartbeat_timeout_ms = 3000;    // GT_HEARTBEAT_TIMEOUT_MS
  int64_t connect_timeout_ms = 30000;     // GT_CONNECT_TIMEOUT_MS
  int64_t batch_max_instructions = 1024;  // GT_BATCH_SIZE
  int64_t batch_max_delay_us = 500;       // GT_BATCH_DELAY_US
  std::optional<std::string> log_level;   // GT_LOG_LEVEL
};

/// Reads the environment now (no caching).
Env read_env();

/// Reads the environment once per process and keeps the result.
const Env& env();

/// Helpers for one variable; exposed for tests and the CLI.
std::optional<std::string> env_string(const char* name);
int64_t env_int(const char* name, int64_t fallback, int64_t min, int64_t max);
bool env_flag(const char* name);

}  // namespace gt
