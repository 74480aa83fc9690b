#include "common/env.h"

#include <cstdlib>

#include "common/check.h"

namespace gt {

std::optional<std::string> env_string(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return std::nullopt;
  return std::string(v);
}

int64_t env_int(const char* name, int64_t fallback, int64_t min, int64_t max) {
  auto v = env_string(name);
  if (!v) return fallback;
  char* end = nullptr;
  errno = 0;
  const long long x = std::strtoll(v->c_str(), &end, 10);
  GT_CHECK(errno == 0 && end && *end == '\0' && x >= min && x <= max, "[env] ", name, "='",
           *v, "': expected an integer in [", min, ", ", max, "]");
  return x;
}

bool env_flag(const char* name) {
  auto v = env_string(name);
  if (!v) return false;
  if (*v == "1" || *v == "true" || *v == "yes" || *v == "on") return true;
  if (*v == "0" || *v == "false" || *v == "no" || *v == "off") return false;
  GT_CHECK(false, "[env] ", name, "='", *v, "': expected 1/0, true/false, yes/no or on/off");
  return false;
}

Env read_env() {
  Env e;
  e.dispatcher = env_string("GT_DISPATCHER");
  e.workers = env_int("GT_WORKERS", 1, 1, 256);
  e.executable = env_string("GT_EXECUTABLE");
  e.heartbeat_interval_ms = env_int("GT_HEARTBEAT_INTERVAL_MS", 250, 10, 60000);
  e.heartbeat_timeout_ms = env_int("GT_HEARTBEAT_TIMEOUT_MS", 3000, 50, 3600000);
  e.connect_timeout_ms = env_int("GT_CONNECT_TIMEOUT_MS", 30000, 100, 3600000);
  e.batch_max_instructions = env_int("GT_BATCH_SIZE", 1024, 1, 1 << 20);
  e.batch_max_delay_us = env_int("GT_BATCH_DELAY_US", 500, 0, 10000000);
  e.log_level = env_string("GT_LOG_LEVEL");
  e.auto_shard = env_flag("GT_AUTO_SHARD");
  e.auto_shard_min_bytes = env_int("GT_AUTO_SHARD_MIN_BYTES", 1 << 20, 0, int64_t{1} << 50);
  e.collective_timeout_ms = env_int("GT_COLLECTIVE_TIMEOUT_MS", 60000, 100, 86400000);
  e.session_memory_limit = env_int("GT_SESSION_MEMORY_LIMIT", 0, 0, INT64_MAX);
  e.collective_host = env_string("GT_COLLECTIVE_HOST");
  e.curve_secret_key = env_string("GT_CURVE_SECRET_KEY");
  e.curve_authorized_keys = env_string("GT_CURVE_AUTHORIZED_KEYS");
  e.curve_server_key = env_string("GT_CURVE_SERVER_KEY");
  e.curve_client_key = env_string("GT_CURVE_CLIENT_KEY");
  e.allow_plaintext = env_flag("GT_ALLOW_PLAINTEXT");
  return e;
}

const Env& env() {
  static const Env e = read_env();
  return e;
}

void add_worker_env_defaults(std::vector<std::string>& envp) {
  for (const auto& [name, value] : kWorkerEnvDefaults) {
    const std::string prefix = std::string(name) + "=";
    bool set = false;
    for (const std::string& e : envp) set |= e.compare(0, prefix.size(), prefix) == 0;
    if (!set) envp.push_back(prefix + std::string(value));
  }
}

ScopedEnv::ScopedEnv(std::string name, const char* value) : name_(std::move(name)) {
  if (const char* v = std::getenv(name_.c_str())) old_ = v;
  if (value) {
    ::setenv(name_.c_str(), value, 1);
  } else {
    ::unsetenv(name_.c_str());
  }
}

ScopedEnv::ScopedEnv(std::string name, const std::optional<std::string>& value)
    : ScopedEnv(std::move(name), value ? value->c_str() : nullptr) {}

ScopedEnv::~ScopedEnv() {
  if (old_) {
    ::setenv(name_.c_str(), old_->c_str(), 1);
  } else {
    ::unsetenv(name_.c_str());
  }
}

}  // namespace gt
