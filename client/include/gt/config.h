#pragma once
// The YAML signal config (docs/config.md): which workers hold the tensors of
// each gt::signal::Context scope, how they are split, which entry their
// gradients follow, and whether the scope is one compile unit.
//
//   # my_config.yaml
//   forward:
//     shard: {axis: 0, workers: [0, 1]}
//     backward: grads
//     compile: true
//   grads:
//     shard: {replicated: true}
//
//   gt::Config c = gt::load_config("my_config.yaml");
//   gt::validate_config(c, 2);  // worker indices against the cluster size
//   gt::set_config(c);          // this program's session uses it
//
// The types are plain values (copies are independent) and thread-compatible.
// Every function reports a bad file or value with gt::ConfigError, whose
// file() and key() name the source and the key path ("forward.shard.axis").
// Scopes are opened with gt::signal::Context (<gt/signal.h>).

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <gt/export.h>

namespace gt {

/// Where a value was written: kept in the parsed structures so that checks
/// made later (worker indices against the cluster size, axes against a
/// tensor's rank) name the same place as the parser's errors.
struct ConfigLocation {
  std::string file;  // the source name: the path, or parse_config's name
  std::string key;   // key path, e.g. "forward.shard.workers[2]"
  int line = 0;      // 1-based; 0 when unknown
  int column = 0;    // 1-based; 0 when unknown
};

/// How the tensors of a signal are laid out over the workers.
struct ShardSpec {
  /// Split along this axis (negative: from the end); nullopt when replicated.
  std::optional<int64_t> axis;
  /// The workers holding the shards or copies, in shard order; empty means
  /// all workers of the cluster.
  std::vector<int> workers;
  /// A full copy on each listed worker instead of a split.
  bool replicated = false;

  ConfigLocation location;                       // the `shard` mapping
  std::vector<ConfigLocation> worker_locations;  // one per `workers` entry

  bool all_workers() const { return workers.empty(); }
};

/// One signal's entry.
struct SignalConfig {
  std::string name;
  /// The layout of tensors created or computed in the scope; nullopt leaves
  /// placement to the dispatcher's defaults.
  std::optional<ShardSpec> shard;
  /// The entry the gradients of ops issued in the scope follow (a signal of
  /// the same config); nullopt: gradients get no entry of their own.
  std::optional<std::string> backward;
  /// The ops of the scope form one JIT compile unit.
  bool compile = false;

  ConfigLocation location;           // the entry (its key path is the name)
  ConfigLocation backward_location;  // the `backward` value, when given
};

/// A whole config: signal name -> entry.
struct Config {
  std::string source;  // the file (or parse_config's name) it came from
  std::map<std::string, SignalConfig, std::less<>> signals;
  /// The YAML source as parsed (filled by parse_config, load_config and
  /// config_from_env); what set_config sends. Empty for a config built in
  /// code: set_config then writes `signals` as YAML. After changing
  /// `signals` of a parsed config, clear `text` so that the change is sent.
  std::string text;

  /// The entry of a signal, or nullptr when the config has none.
  const SignalConfig* find(std::string_view name) const {
    auto it = signals.find(name);
    return it == signals.end() ? nullptr : &it->second;
  }
};

/// Parses YAML text; `source_name` stands for the file in error messages.
/// Throws gt::ConfigError naming the source, key path, line and column.
GT_API Config parse_config(std::string_view yaml, std::string source_name = "<config>");

/// Reads and parses a YAML file. Throws gt::ConfigError when it cannot be read
/// or is invalid.
GT_API Config load_config(const std::string& path);

/// The config named by GT_CONFIG (a path, relative to the working directory),
/// read now; std::nullopt when GT_CONFIG is unset or empty.
GT_API std::optional<Config> config_from_env();

/// Checks what only the cluster size decides: every worker index is below
/// `workers` (>= 1, else std::invalid_argument). Throws gt::ConfigError naming
/// the offending `workers` entry.
GT_API void validate_config(const Config& config, int workers);

/// Makes `config` the signal config of this program's session (starting the
/// session if needed), replacing the dispatcher's GT_CONFIG for it from here
/// on in the instruction stream; it lasts until the session ends or the next
/// set_config. A sync point: first every instruction issued before runs (and
/// their failures throw, as from gt::synchronize(), before the config is
/// sent), then the dispatcher takes the config. Throws gt::ConfigError for a
/// config that does not parse, names a worker the local cluster lacks (a
/// remote dispatcher checks worker indices itself) or that the dispatcher
/// refuses (its message); std::invalid_argument for a YAML text over 1 MiB;
/// gt::TransportError on a lost connection. Thread-safe, but ops that other
/// threads issue meanwhile may run under either config.
GT_API void set_config(const Config& config);

}  // namespace gt
