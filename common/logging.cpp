#include "common/logging.h"

#include <spdlog/cfg/env.h>
#include <spdlog/sinks/stdout_color_sinks.h>

#include "common/env.h"

namespace gt {
namespace {
constexpr const char* kPattern = "[%Y-%m-%d %H:%M:%S.%e] [%^%l%$] [%n] [pid %P] [tid %t] %v";
}

void configure_process_logging() {
  spdlog::set_pattern(kPattern);
  spdlog::set_level(spdlog::level::info);
  if (auto lvl = env_string("GT_LOG_LEVEL")) spdlog::set_level(spdlog::level::from_str(*lvl));
  spdlog::cfg::load_env_levels();  // SPDLOG_LEVEL overrides, per logger too
}

std::shared_ptr<spdlog::logger> make_logger(const std::string& name, bool register_globally) {
  if (register_globally) {
    if (auto existing = spdlog::get(name)) return existing;
    auto logger = spdlog::stderr_color_mt(name);
    logger->set_pattern(kPattern);
    return logger;
  }
  auto sink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
  auto logger = std::make_shared<spdlog::logger>(name, sink);
  logger->set_pattern(kPattern);
  logger->set_level(spdlog::level::warn);
  if (auto lvl = env_string("GT_LOG_LEVEL")) logger->set_level(spdlog::level::from_str(*lvl));
  return logger;
}

}  // namespace gt
