// Fuzz target: the YAML signal config parser (docs/fuzzing.md). Any text
// goes through gt::detail::parse_config, as a Configure instruction's text
// does in the dispatcher. It must never crash and may fail only with
// gt::ConfigError, as documented; a config it accepts keeps its text and
// validates against clusters of 1 to 4 workers with ConfigError (or
// std::invalid_argument for the cluster size) as the only failures.

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <gt/error.h>

#include "common/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  gt::Config config;
  try {
    config = gt::detail::parse_config(text, "<fuzz>");
  } catch (const gt::ConfigError&) {
    return 0;
  }
  if (config.text != text) {
    std::fprintf(stderr, "config_fuzz: a parsed config lost its text\n");
    std::abort();
  }
  for (int workers = 1; workers <= 4; ++workers) {
    try {
      gt::detail::validate_config(config, workers);
    } catch (const gt::ConfigError&) {
    }
  }
  return 0;
}
