// The public config functions of <gt/config.h>; they forward to gt_common,
// whose symbols libgt_client does not export (Note [config entry points] in
// common/config.h). set_config sends a config to the session's dispatcher.

#include <gt/config.h>

#include <climits>

#include <gt/error.h>

#include "client/internal/api.h"
#include "common/check.h"
#include "common/config.h"
#include "common/status.h"
#include "common/wire.h"

namespace gt {
namespace {

// Writes a config built in code as YAML that parses back to the same values.
// Names are quoted: as plain scalars, identifiers such as `null` or `yes`
// would be read as a null or a bool. validate_config has checked that every
// name is an identifier, so none needs escaping.
std::string to_yaml(const Config& config) {
  if (config.signals.empty()) return "{}\n";
  std::string out;
  for (const auto& [name, entry] : config.signals) {
    out += "\"" + name + "\": {";
    const char* separator = "";
    if (entry.shard) {
      const ShardSpec& shard = *entry.shard;
      out += "shard: {";
      out += shard.axis ? "axis: " + std::to_string(*shard.axis) : "replicated: true";
      if (!shard.workers.empty()) {
        out += ", workers: [";
        for (size_t i = 0; i < shard.workers.size(); ++i) {
          out += (i == 0 ? "" : ", ") + std::to_string(shard.workers[i]);
        }
        out += "]";
      }
      out += "}";
      separator = ", ";
    }
    if (entry.backward) {
      out += separator;
      out += "backward: \"" + *entry.backward + "\"";
      separator = ", ";
    }
    if (entry.compile) {
      out += separator;
      out += "compile: true";
    }
    out += "}\n";
  }
  return out;
}

}  // namespace

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

void set_config(const Config& config) {
  const bool built_in_code = config.text.empty();
  // Worker indices are checked once the cluster is known; until then only
  // what the parser checks (INT_MAX bounds nothing an int can hold).
  if (built_in_code) detail::validate_config(config, INT_MAX);
  std::string text = built_in_code ? to_yaml(config) : config.text;
  GT_CHECK(text.size() <= wire::kMaxConfigText, "[client.set_config] ",
           config.source.empty() ? "the config" : config.source, " is ", text.size(),
           " bytes of YAML: expected at most ", wire::kMaxConfigText, " (1 MiB)");
  // The dispatcher parses the text again; parsing it here first makes a bad
  // text throw naming its own file rather than the dispatcher's
  // "<session config>", and before anything is sent.
  const std::string source = config.source.empty() ? "<config>" : config.source;
  const Config parsed = detail::parse_config(text, source);

  const std::shared_ptr<client::Session> session = client::current_session();
  // A local cluster has all of its workers at the Welcome; a remote
  // dispatcher's Welcome counts only those registered by then (more may
  // join), so it checks worker indices itself against the cluster it has.
  if (!session->options().endpoint) {
    detail::validate_config(built_in_code ? config : parsed,
                            static_cast<int>(session->workers()));
  }
  // Failures of earlier instructions throw here, as themselves; after this
  // sync, what the next one reports is the config's refusal.
  session->synchronize();
  wire::Instr configure;
  configure.kind = wire::InstrKind::Configure;
  configure.name = std::move(text);
  session->issue(std::move(configure));
  try {
    session->synchronize();
  } catch (const RemoteError& e) {
    // The dispatcher answers a refused Configure at the next Sync with
    // invalid_argument carrying the ConfigError's message (docs/protocol.md).
    if (e.code() != static_cast<int>(Status::InvalidArgument)) throw;
    throw ConfigError(e.what(), source, "");
  }
}

}  // namespace gt
