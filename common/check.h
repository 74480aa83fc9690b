#pragma once
// GT_CHECK throws for user or state errors; GT_ASSERT is for gt's own bugs.
// Messages read "[component.function] what failed: expected X, got Y".

#include <sstream>
#include <stdexcept>
#include <string>

#include <gt/error.h>

namespace gt::detail {

template <typename... Parts>
std::string cat(const Parts&... parts) {
  std::ostringstream out;
  (out << ... << parts);
  return out.str();
}

[[noreturn]] void assert_failed(const char* file, int line, const char* cond,
                                const std::string& message);

}  // namespace gt::detail

/// Throws std::invalid_argument built from the parts when cond is false.
#define GT_CHECK(cond, ...)                                          \
  do {                                                               \
    if (!(cond)) {                                                   \
      throw std::invalid_argument(::gt::detail::cat(__VA_ARGS__));   \
    }                                                                \
  } while (0)

/// Internal invariant: logs critical with file and line, aborts in debug
/// builds and throws gt::Error in release builds.
#define GT_ASSERT(cond, ...)                                             \
  do {                                                                   \
    if (!(cond)) {                                                       \
      ::gt::detail::assert_failed(__FILE__, __LINE__, #cond,             \
                                  ::gt::detail::cat("" __VA_ARGS__));    \
    }                                                                    \
  } while (0)
