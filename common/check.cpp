#include "common/check.h"

#include <cstdlib>

#include <spdlog/spdlog.h>

namespace gt::detail {

void assert_failed(const char* file, int line, const char* cond, const std::string& message) {
  const std::string text = cat("[internal] assertion '", cond, "' failed at ", file, ":", line,
                               message.empty() ? "" : ": ", message);
  spdlog::critical("{}", text);
#ifndef NDEBUG
  std::abort();
#else
  throw gt::Error(text);
#endif
}

}  // namespace gt::detail
