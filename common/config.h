#pragma once
// The YAML signal config parser (docs/config.md). The types are the public
// ones of <gt/config.h>; this header declares the implementation that
// gt_common's users (dispatcher, tools, tests) call.
//
// Note [config entry points]: gt_client links gt_common privately and hides
// its symbols (--exclude-libs), so the public gt::parse_config & co. are
// defined in client/config.cpp, forwarding to the functions below. A target
// that links gt_common but not gt_client (dispatcher, tools) must call the
// gt::detail:: names: the gt:: ones declared by <gt/config.h> would not link.

#include <optional>
#include <string>
#include <string_view>

#include <gt/config.h>

namespace gt::detail {

/// See gt::parse_config.
Config parse_config(std::string_view yaml, std::string source_name = "<config>");

/// See gt::load_config.
Config load_config(const std::string& path);

/// See gt::config_from_env.
std::optional<Config> config_from_env();

/// See gt::validate_config.
void validate_config(const Config& config, int workers);

/// "file: key (line L, column C)", the place prefix of every config message;
/// the parts that are unknown are left out.
std::string describe(const ConfigLocation& at);

}  // namespace gt::detail
