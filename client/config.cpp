// The public config functions of <gt/config.h>; they forward to gt_common,
// whose symbols libgt_client does not export (Note [config entry points] in
// common/config.h).

#include <gt/config.h>

#include "common/config.h"

namespace gt {

Config parse_config(std::string_view yaml, std::string source_name) {
  return detail::parse_config(yaml, std::move(source_name));
}

Config load_config(const std::string& path) {
  return detail::load_config(path);
}

std::optional<Config> config_from_env() {
  return detail::config_from_env();
}

void validate_config(const Config& config, int workers) {
  detail::validate_config(config, workers);
}

}  // namespace gt
