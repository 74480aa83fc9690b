#pragma once
// Every GT_* environment variable is read here, once, into plain values
// (docs/environment.md lists them). Bad values throw std::invalid_argument
// naming the variable and what was expected.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

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
  // Sharding and collectives (docs/sharding.md, docs/collectives.md).
  bool auto_shard = false;                 // GT_AUTO_SHARD
  int64_t auto_shard_min_bytes = 1 << 20;  // GT_AUTO_SHARD_MIN_BYTES
  int64_t collective_timeout_ms = 60000;   // GT_COLLECTIVE_TIMEOUT_MS
  /// GT_SESSION_MEMORY_LIMIT: bytes one client session's tensors may hold on
  /// a worker (0 = no limit); Note [session memory] in worker/executor.cpp.
  int64_t session_memory_limit = 0;
  /// GT_COLLECTIVE_HOST: the address a worker's collectives listen on and
  /// give their peers; unset: 127.0.0.1 when the dispatcher is on this
  /// machine (loopback or ipc), else this machine's host name.
  std::optional<std::string> collective_host;
  // CurveZMQ (docs/security.md); the files are read by common/security.h.
  std::optional<std::string> curve_secret_key;       // GT_CURVE_SECRET_KEY: dispatcher's .key
  std::optional<std::string> curve_authorized_keys;  // GT_CURVE_AUTHORIZED_KEYS: dispatcher
  std::optional<std::string> curve_server_key;  // GT_CURVE_SERVER_KEY: .pub path or Z85 key
  std::optional<std::string> curve_client_key;  // GT_CURVE_CLIENT_KEY: this peer's .key
  /// GT_ALLOW_PLAINTEXT: the dispatcher may bind a non-loopback tcp endpoint
  /// without CURVE.
  bool allow_plaintext = false;
};

/// Reads the environment now (no caching).
Env read_env();

/// Reads the environment once per process and keeps the result.
const Env& env();

/// Note [worker thread pools]: a CPU worker usually shares its cores with the
/// client and the dispatcher (a local cluster runs all three on one machine).
/// LibTorch's OpenMP pool and OpenBLAS's threads spin after every parallel
/// region by default, taking those cores from the processes that feed the
/// worker: the Fashion-MNIST training step ran 1.6-3x slower with OpenMP
/// spinning, and OpenBLAS's sched_yield loop cost another ~10%. Both libraries
/// read these settings when they are loaded, so whoever starts a worker sets
/// them (local clusters, test clusters); a value already in the environment
/// is kept.
inline constexpr std::pair<std::string_view, std::string_view> kWorkerEnvDefaults[] = {
    {"OMP_WAIT_POLICY", "PASSIVE"},
    {"OPENBLAS_THREAD_TIMEOUT", "10"},  // spin 2^10 cycles, then sleep
};

/// Appends "NAME=VALUE" for each kWorkerEnvDefaults entry that `envp` (a list
/// of "NAME=VALUE" strings) does not set yet.
void add_worker_env_defaults(std::vector<std::string>& envp);

/// Helpers for one variable; exposed for tests and the CLI.
std::optional<std::string> env_string(const char* name);
int64_t env_int(const char* name, int64_t fallback, int64_t min, int64_t max);
bool env_flag(const char* name);

/// Sets a variable (unsets it, for nullptr or nullopt) for one scope and
/// restores its old value at the end: for tests and benchmarks, whose local
/// clusters inherit the program's environment. Not thread-safe (setenv).
class ScopedEnv {
 public:
  ScopedEnv(std::string name, const char* value);
  ScopedEnv(std::string name, const std::optional<std::string>& value);
  ~ScopedEnv();
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::string name_;
  std::optional<std::string> old_;
};

}  // namespace gt
