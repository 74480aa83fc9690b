#include "common/config.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <climits>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <utility>
#include <vector>

#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include "common/check.h"
#include "common/env.h"

namespace gt::detail {
namespace {

constexpr std::string_view kSignalKeys[] = {"shard", "backward", "compile"};
constexpr std::string_view kShardKeys[] = {"axis", "workers", "replicated"};
constexpr std::string_view kNameRule = "an identifier ([A-Za-z_][A-Za-z0-9_.-]*)";

bool is_identifier(std::string_view s) {
  auto head = [](char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_'; };
  auto tail = [&](char c) { return head(c) || (c >= '0' && c <= '9') || c == '.' || c == '-'; };
  if (s.empty() || !head(s[0])) return false;
  for (char c : s.substr(1)) {
    if (!tail(c)) return false;
  }
  return true;
}

// Note [config scalar types]: yaml-cpp hands every scalar over as text and
// converts on request, accepting a quoted "1" as an integer and reading "010"
// as octal. gt resolves scalars itself, as YAML does: a quoted scalar (or one
// tagged !!str) is a string; a plain one is a bool when it is one of PyYAML's
// bool words (the reference project's configs were read by PyYAML), an
// integer when it is decimal digits with an optional sign, a number when it
// parses as a float, and a string otherwise. So `axis: "0"` is a wrong type
// rather than a silent conversion, and the messages can say what was found.
enum class Kind { Null, Bool, Integer, Number, String, List, Mapping };

std::optional<bool> plain_bool(const std::string& s) {
  static const std::pair<const char*, bool> kWords[] = {
      {"true", true},   {"True", true}, {"TRUE", true}, {"false", false}, {"False", false},
      {"FALSE", false}, {"yes", true},  {"Yes", true},  {"YES", true},    {"no", false},
      {"No", false},    {"NO", false},  {"on", true},   {"On", true},     {"ON", true},
      {"off", false},   {"Off", false}, {"OFF", false}};
  for (const auto& [word, value] : kWords) {
    if (s == word) return value;
  }
  return std::nullopt;
}

bool plain_integer(std::string_view s) {
  if (!s.empty() && (s[0] == '-' || s[0] == '+')) s.remove_prefix(1);
  if (s.empty()) return false;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

bool plain_number(const std::string& s) {
  static const char* kSpecial[] = {".inf",  ".Inf",  ".INF",  "-.inf", "-.Inf", "-.INF",
                                   "+.inf", "+.Inf", "+.INF", ".nan",  ".NaN",  ".NAN"};
  for (const char* w : kSpecial) {
    if (s == w) return true;
  }
  if (s.find_first_of("0123456789") == std::string::npos) return false;
  if (s.find_first_not_of("0123456789+-.eE") != std::string::npos) return false;
  char* end = nullptr;
  errno = 0;
  std::strtod(s.c_str(), &end);
  return end == s.c_str() + s.size();
}

bool quoted(const YAML::Node& n) {
  return n.Tag() == "!" || n.Tag() == "tag:yaml.org,2002:str";
}

Kind kind_of(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Sequence:
      return Kind::List;
    case YAML::NodeType::Map:
      return Kind::Mapping;
    case YAML::NodeType::Scalar:
      break;
    default:
      return Kind::Null;  // Null, and Undefined (never reached for parsed nodes)
  }
  const std::string& s = n.Scalar();
  if (quoted(n)) return Kind::String;
  if (plain_bool(s)) return Kind::Bool;
  if (plain_integer(s)) return Kind::Integer;
  if (plain_number(s)) return Kind::Number;
  return Kind::String;
}

std::string shorten(const std::string& s) {
  constexpr size_t kMax = 40;
  return s.size() <= kMax ? s : s.substr(0, kMax) + "...";
}

// What was found, for "expected X, got <found>".
std::string found(const YAML::Node& n) {
  switch (kind_of(n)) {
    case Kind::Null:
      return "nothing (null)";
    case Kind::Bool:
      return "the bool " + n.Scalar();
    case Kind::Integer:
      return "the integer " + shorten(n.Scalar());
    case Kind::Number:
      return "the number " + shorten(n.Scalar());
    case Kind::String:
      return "the string \"" + shorten(n.Scalar()) + "\"";
    case Kind::List:
      return n.size() == 0 ? "an empty list" : "a list";
    case Kind::Mapping:
      return n.size() == 0 ? "an empty mapping" : "a mapping";
  }
  return "something else";
}

size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

template <size_t N>
std::string one_of(const std::string_view (&keys)[N]) {
  std::string out;
  for (size_t i = 0; i < N; ++i) {
    out += (i == 0 ? "" : i + 1 == N ? " or " : ", ");
    out += keys[i];
  }
  return out;
}

std::string join_names(const Config& config) {
  std::string out;
  for (const auto& [name, entry] : config.signals) {
    out += (out.empty() ? "" : ", ") + name;
  }
  return out;
}

[[noreturn]] void fail(std::string_view function, const ConfigLocation& at,
                       const std::string& what) {
  throw ConfigError(cat("[config.", function, "] ", describe(at), ": ", what), at.file, at.key);
}

// Note [yaml-cpp iterators]: dereferencing a yaml-cpp map iterator yields a
// temporary pair of nodes (`it->second` points into a proxy that dies at the
// end of the expression), so a reference kept from it dangles. The loops
// below bind the pair for the whole body and copy the nodes out (a Node copy
// is a cheap handle).

// One parse: the source name and the error helpers that cite it.
class Parser {
 public:
  explicit Parser(std::string source) : source_(std::move(source)) {}

  Config parse(std::string_view yaml);

 private:
  ConfigLocation at(std::string key, const YAML::Node& n) const {
    return at(std::move(key), n.Mark());
  }
  ConfigLocation at(std::string key, const YAML::Mark& m) const {
    ConfigLocation loc{source_, std::move(key), 0, 0};
    if (!m.is_null()) {
      loc.line = m.line + 1;
      loc.column = m.column + 1;
    }
    return loc;
  }
  // Where a value is: its key's place when the value is empty (`shard:`),
  // since yaml-cpp marks an empty value at the token after it.
  ConfigLocation at_value(std::string key_path, const YAML::Node& key,
                          const YAML::Node& value) const {
    const bool use_key = value.IsNull() || value.Mark().is_null();
    return at(std::move(key_path), use_key ? key.Mark() : value.Mark());
  }
  [[noreturn]] void fail(const ConfigLocation& loc, const std::string& what) const {
    detail::fail("parse", loc, what);
  }

  // The key of a mapping entry as text; a list or mapping used as a key is an
  // error (`? [a, b]: ...`).
  std::string key_text(const std::string& parent, const YAML::Node& key,
                       std::string_view expected) const;
  // Rejects a key seen before in the same mapping: yaml-cpp keeps both.
  void check_unique(std::map<std::string, int>& seen, const std::string& key,
                    const ConfigLocation& loc) const;
  template <size_t N>
  [[noreturn]] void unknown_key(const ConfigLocation& loc, const std::string& key,
                                const std::string_view (&keys)[N]) const;

  SignalConfig parse_signal(const std::string& name, const YAML::Node& key,
                            const YAML::Node& value) const;
  ShardSpec parse_shard(const std::string& path, const YAML::Node& key,
                        const YAML::Node& value) const;
  void parse_workers(const std::string& path, const YAML::Node& key, const YAML::Node& value,
                     ShardSpec& spec) const;
  int64_t parse_integer(const std::string& path, const YAML::Node& key, const YAML::Node& value,
                        std::string_view expected) const;
  bool parse_bool(const std::string& path, const YAML::Node& key, const YAML::Node& value) const;

  std::string source_;
};

std::string Parser::key_text(const std::string& parent, const YAML::Node& key,
                             std::string_view expected) const {
  if (key.Type() == YAML::NodeType::Scalar) return key.Scalar();
  fail(at(parent, key), cat("expected ", expected, " as the key, got ", found(key)));
}

void Parser::check_unique(std::map<std::string, int>& seen, const std::string& key,
                          const ConfigLocation& loc) const {
  auto [it, fresh] = seen.emplace(key, loc.line);
  if (fresh) return;
  fail(loc,
       cat("duplicate key '", key, "' (first at line ", it->second, "): expected each key once"));
}

template <size_t N>
void Parser::unknown_key(const ConfigLocation& loc, const std::string& key,
                         const std::string_view (&keys)[N]) const {
  std::string hint;
  for (std::string_view k : keys) {
    if (edit_distance(key, k) <= 2) {
      hint = cat(" (did you mean '", k, "'?)");
      break;
    }
  }
  fail(loc, cat("unknown key '", shorten(key), "'", hint, ": expected ", one_of(keys)));
}

int64_t Parser::parse_integer(const std::string& path, const YAML::Node& key,
                              const YAML::Node& value, std::string_view expected) const {
  if (kind_of(value) != Kind::Integer) {
    fail(at_value(path, key, value), cat("expected ", expected, ", got ", found(value)));
  }
  std::string_view s = value.Scalar();
  if (s[0] == '+') s.remove_prefix(1);
  int64_t x = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), x);
  if (ec != std::errc() || end != s.data() + s.size()) {
    fail(at(path, value), cat("expected ", expected, " in the 64-bit range, got ", found(value)));
  }
  return x;
}

bool Parser::parse_bool(const std::string& path, const YAML::Node& key,
                        const YAML::Node& value) const {
  if (kind_of(value) != Kind::Bool) {
    fail(at_value(path, key, value), cat("expected true or false, got ", found(value)));
  }
  return *plain_bool(value.Scalar());
}

void Parser::parse_workers(const std::string& path, const YAML::Node& key, const YAML::Node& value,
                           ShardSpec& spec) const {
  if (kind_of(value) != Kind::List) {
    fail(at_value(path, key, value), cat("expected a list of worker indices such as [0, 1] (omit ",
                                         "workers for all workers), got ", found(value)));
  }
  if (value.size() == 0) {
    fail(at(path, value),
         "expected at least one worker index (omit workers for all "
         "workers), got an empty list");
  }
  std::map<int, size_t> first;  // worker -> its first position
  for (size_t i = 0; i < value.size(); ++i) {
    const YAML::Node item = value[i];
    const std::string item_path = cat(path, "[", i, "]");
    const int64_t w = parse_integer(item_path, item, item, "a worker index (an integer >= 0)");
    if (w < 0) {
      fail(at(item_path, item), cat("expected a worker index >= 0, got ", w));
    }
    if (w > INT_MAX) {
      fail(at(item_path, item), cat("expected a worker index below 2^31, got ", w));
    }
    auto [it, fresh] = first.emplace(static_cast<int>(w), i);
    if (!fresh) {
      fail(at(item_path, item), cat("duplicate worker ", w, " (also at workers[", it->second,
                                    "]): expected distinct worker indices"));
    }
    spec.workers.push_back(static_cast<int>(w));
    spec.worker_locations.push_back(at(item_path, item));
  }
}

ShardSpec Parser::parse_shard(const std::string& path, const YAML::Node& key,
                              const YAML::Node& value) const {
  ShardSpec spec;
  spec.location = at_value(path, key, value);
  if (kind_of(value) != Kind::Mapping) {
    fail(spec.location,
         cat("expected a mapping such as {axis: 0} or {replicated: true}, got ", found(value)));
  }
  std::map<std::string, int> seen;
  for (const auto& entry : value) {
    const YAML::Node key_node = entry.first;  // copies: Note [yaml-cpp iterators]
    const YAML::Node val = entry.second;
    const std::string k = key_text(path, key_node, "axis, workers or replicated");
    const std::string k_path = cat(path, ".", k);
    check_unique(seen, k, at(k_path, key_node));
    if (k == "axis") {
      spec.axis = parse_integer(k_path, key_node, val, "an integer axis (negative: from the end)");
    } else if (k == "workers") {
      parse_workers(k_path, key_node, val, spec);
    } else if (k == "replicated") {
      spec.replicated = parse_bool(k_path, key_node, val);
    } else {
      unknown_key(at(k_path, key_node), k, kShardKeys);
    }
  }
  if (spec.axis && spec.replicated) {
    fail(spec.location,
         "axis and replicated: true exclude each other: expected either axis "
         "(split along it) or replicated: true (a full copy on each worker)");
  }
  if (!spec.axis && !spec.replicated) {
    fail(spec.location,
         "expected axis (split along it) or replicated: true (a full copy on "
         "each worker), got neither");
  }
  return spec;
}

SignalConfig Parser::parse_signal(const std::string& name, const YAML::Node& key,
                                  const YAML::Node& value) const {
  SignalConfig s;
  s.name = name;
  s.location = at(name, key);
  if (kind_of(value) != Kind::Mapping) {
    fail(at_value(name, key, value),
         cat("expected a mapping with shard, backward and/or compile (or {} for none), got ",
             found(value)));
  }
  std::map<std::string, int> seen;
  for (const auto& entry : value) {
    const YAML::Node key_node = entry.first;  // copies: Note [yaml-cpp iterators]
    const YAML::Node val = entry.second;
    const std::string k = key_text(name, key_node, "shard, backward or compile");
    const std::string k_path = cat(name, ".", k);
    check_unique(seen, k, at(k_path, key_node));
    if (k == "shard") {
      s.shard = parse_shard(k_path, key_node, val);
    } else if (k == "backward") {
      if (kind_of(val) != Kind::String || !is_identifier(val.Scalar())) {
        fail(at_value(k_path, key_node, val), cat("expected the name of a signal of this config, ",
                                                  kNameRule, ", got ", found(val)));
      }
      s.backward = val.Scalar();
      s.backward_location = at(k_path, val);
    } else if (k == "compile") {
      s.compile = parse_bool(k_path, key_node, val);
    } else {
      unknown_key(at(k_path, key_node), k, kSignalKeys);
    }
  }
  return s;
}

// Note [yaml-cpp document loop]: yaml-cpp 0.7's YAML::LoadAll never returns
// on some malformed input (a lone ',' is enough): the parser reports a new
// empty document for a token it cannot consume, again and again, and the
// list of documents grows until memory runs out (jbeder/yaml-cpp#1040, fixed
// upstream by #1319, after Debian's 0.7). So gt never calls LoadAll: it asks
// the event parser for at most two documents, which also tells a second
// document (`---`) from such a stuck token, and then loads the first with
// YAML::Load.
class DocumentStarts final : public YAML::EventHandler {
 public:
  std::vector<YAML::Mark> starts;
  void OnDocumentStart(const YAML::Mark& mark) override { starts.push_back(mark); }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}
};

Config Parser::parse(std::string_view yaml) {
  Config config;
  config.source = source_;
  YAML::Node root;
  try {
    const std::string text(yaml);
    std::istringstream in(text);
    YAML::Parser events(in);
    DocumentStarts docs;
    if (events.HandleNextDocument(docs) && events.HandleNextDocument(docs)) {
      const YAML::Mark second = docs.starts.size() >= 2 ? docs.starts[1] : YAML::Mark::null_mark();
      const size_t pos = std::min(static_cast<size_t>(std::max(second.pos, 0)), text.size());
      const std::string rest = text.substr(pos, text.find('\n', pos) - pos);
      if (rest.rfind("---", 0) == 0) {
        fail(at("", second), "expected one YAML document, got a second one (---)");
      }
      fail(at("", second), cat("invalid YAML: unexpected '", shorten(rest),
                               "': expected a mapping from signal names to entries"));
    }
    root = YAML::Load(text);
  } catch (const YAML::DeepRecursion& e) {
    // yaml-cpp's own message for this is "bad file".
    fail(at("", e.mark), cat("invalid YAML: nesting deeper than ", e.depth(), " levels: expected ",
                             "a mapping from signal names to entries, a few levels deep"));
  } catch (const YAML::Exception& e) {
    fail(at("", e.mark), cat("invalid YAML: ", e.msg, ": expected a YAML mapping from signal ",
                             "names to entries"));
  }
  if (root.IsNull()) {
    fail(at("", YAML::Mark::null_mark()),
         "empty config: expected a mapping from signal names to entries, got nothing");
  }
  if (kind_of(root) != Kind::Mapping) {
    fail(at("", root), cat("expected a mapping from signal names to entries at the top level, "
                           "got ",
                           found(root)));
  }
  std::map<std::string, int> seen;
  for (const auto& entry : root) {
    const YAML::Node key_node = entry.first;  // copies: Note [yaml-cpp iterators]
    const YAML::Node val = entry.second;
    const std::string name = key_text("", key_node, "a signal name");
    if (!is_identifier(name)) {
      fail(at(name, key_node),
           cat("invalid signal name '", shorten(name), "': expected ", kNameRule));
    }
    auto [first, fresh] = seen.emplace(name, key_node.Mark().line + 1);
    if (!fresh) {
      fail(at(name, key_node), cat("duplicate signal '", name, "' (first at line ", first->second,
                                   "): expected each signal once"));
    }
    config.signals.emplace(name, parse_signal(name, key_node, val));
  }
  // Checked once every name is known: an entry may name one written after it.
  for (const auto& [name, s] : config.signals) {
    if (s.backward && !config.signals.count(*s.backward)) {
      fail(s.backward_location, cat("signal '", *s.backward,
                                    "' is not in this config: "
                                    "expected one of ",
                                    join_names(config)));
    }
  }
  return config;
}

std::string read_file(const std::string& path, const std::string& origin) {
  const ConfigLocation loc{path, "", 0, 0};
  const std::string what = origin.empty() ? "" : cat(" (from ", origin, ")");
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    fail("load", loc, cat("cannot read", what, ": expected a YAML file, got a directory"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    fail("load", loc,
         cat("cannot open", what, ": ", std::strerror(errno), ": expected a readable YAML file"));
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) {
    fail("load", loc, cat("cannot read", what, ": ", std::strerror(errno)));
  }
  return text.str();
}

}  // namespace

std::string describe(const ConfigLocation& at) {
  std::string out = at.file.empty() ? "<config>" : at.file;
  if (!at.key.empty()) out += cat(": ", at.key);
  if (at.line > 0) out += cat(" (line ", at.line, ", column ", at.column, ")");
  return out;
}

Config parse_config(std::string_view yaml, std::string source_name) {
  Parser parser(source_name);
  try {
    Config config = parser.parse(yaml);
    config.text = std::string(yaml);  // what gt::set_config sends
    return config;
  } catch (const YAML::Exception& e) {
    // yaml-cpp may throw while nodes are walked (not only while loading);
    // whatever it reports is still a bad config, never a crash.
    fail("parse",
         ConfigLocation{source_name, "", e.mark.is_null() ? 0 : e.mark.line + 1,
                        e.mark.is_null() ? 0 : e.mark.column + 1},
         cat("invalid YAML: ", e.msg));
  }
}

Config load_config(const std::string& path) {
  return parse_config(read_file(path, ""), path);
}

std::optional<Config> config_from_env() {
  const std::optional<std::string> path = env_string("GT_CONFIG");
  if (!path) return std::nullopt;
  return parse_config(read_file(*path, "GT_CONFIG"), *path);
}

void validate_config(const Config& config, int workers) {
  GT_CHECK(workers >= 1, "[config.validate] workers: expected a cluster size >= 1, got ", workers);
  // A Config may also be built in code, so the parser's structural checks are
  // repeated here; the stored locations name the place when it came from YAML.
  auto place = [&](const ConfigLocation& loc, const std::string& key) {
    if (!loc.key.empty() || loc.line > 0) return loc;
    return ConfigLocation{config.source, key, 0, 0};
  };
  for (const auto& [name, s] : config.signals) {
    const ConfigLocation entry = place(s.location, name);
    if (!is_identifier(name)) {
      fail("validate", entry, cat("invalid signal name '", name, "': expected ", kNameRule));
    }
    if (s.backward && !config.signals.count(*s.backward)) {
      fail("validate", place(s.backward_location, name + ".backward"),
           cat("signal '", *s.backward, "' is not in this config: expected one of ",
               join_names(config)));
    }
    if (!s.shard) continue;
    const ShardSpec& spec = *s.shard;
    const ConfigLocation shard = place(spec.location, name + ".shard");
    if (spec.axis.has_value() == spec.replicated) {
      fail("validate", shard,
           spec.replicated ? "axis and replicated: true exclude each other: expected "
                             "either axis or replicated: true"
                           : "expected axis or replicated: true, got neither");
    }
    std::map<int, size_t> first;
    for (size_t i = 0; i < spec.workers.size(); ++i) {
      const int w = spec.workers[i];
      const ConfigLocation item =
          i < spec.worker_locations.size()
              ? place(spec.worker_locations[i], cat(name, ".shard.workers[", i, "]"))
              : ConfigLocation{config.source, cat(name, ".shard.workers[", i, "]"), 0, 0};
      if (w < 0 || w >= workers) {
        fail("validate", item,
             cat("worker ", w, " is out of range: expected an index in [0, ", workers - 1,
                 "] (the cluster has ", workers, " worker", workers == 1 ? "" : "s", ")"));
      }
      auto [it, fresh] = first.emplace(w, i);
      if (!fresh) {
        fail("validate", item,
             cat("duplicate worker ", w, " (also at workers[", it->second,
                 "]): expected distinct worker indices"));
      }
    }
  }
}

}  // namespace gt::detail
