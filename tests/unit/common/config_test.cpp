#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <string_view>

#include <gt/config.h>
#include <gt/error.h>

#include "common/config.h"
#include "common/env.h"
#include "tests/support/temp_dir.h"

using namespace gt;
using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;

namespace {

// The ConfigError that parsing `yaml` throws; fails the test when it parses.
ConfigError parse_error(std::string_view yaml, std::string source = "configs/x.yaml") {
  try {
    detail::parse_config(yaml, source);
  } catch (const ConfigError& e) {
    return e;
  }
  FAIL("parsed without a ConfigError:\n" << yaml);
  throw std::logic_error("unreachable");
}

ConfigError validate_error(const Config& config, int workers) {
  try {
    detail::validate_config(config, workers);
  } catch (const ConfigError& e) {
    return e;
  }
  FAIL("validated without a ConfigError for " << workers << " workers");
  throw std::logic_error("unreachable");
}

void write_file(const std::string& path, std::string_view text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

constexpr std::string_view kDataParallel = R"(# a comment
forward:
  shard: {axis: 0, workers: [0, 1], replicated: false}
  backward: forward_grad
  compile: true
forward_grad:
  shard: {replicated: true}
params:
  shard:
    replicated: true
)";

}  // namespace

TEST_CASE("config parses the full form with locations", "[config][unit]") {
  const Config c = detail::parse_config(kDataParallel, "configs/dp.yaml");
  CHECK(c.source == "configs/dp.yaml");
  REQUIRE(c.signals.size() == 3);

  const SignalConfig* f = c.find("forward");
  REQUIRE(f != nullptr);
  CHECK(f->name == "forward");
  REQUIRE(f->shard.has_value());
  CHECK(f->shard->axis == 0);
  CHECK(f->shard->workers == std::vector<int>{0, 1});
  CHECK_FALSE(f->shard->replicated);
  CHECK_FALSE(f->shard->all_workers());
  CHECK(f->backward == "forward_grad");
  CHECK(f->compile);
  CHECK(f->location.file == "configs/dp.yaml");
  CHECK(f->location.key == "forward");
  CHECK(f->location.line == 2);
  CHECK(f->location.column == 1);
  CHECK(f->shard->location.key == "forward.shard");
  CHECK(f->shard->location.line == 3);
  REQUIRE(f->shard->worker_locations.size() == 2);
  CHECK(f->shard->worker_locations[1].key == "forward.shard.workers[1]");
  CHECK(f->shard->worker_locations[1].line == 3);
  CHECK(f->shard->worker_locations[1].column == 33);
  CHECK(f->backward_location.key == "forward.backward");
  CHECK(f->backward_location.line == 4);

  const SignalConfig* g = c.find("forward_grad");
  REQUIRE(g != nullptr);
  REQUIRE(g->shard.has_value());
  CHECK_FALSE(g->shard->axis.has_value());
  CHECK(g->shard->replicated);
  CHECK(g->shard->all_workers());

  const SignalConfig* p = c.find("params");
  REQUIRE(p != nullptr);
  CHECK(p->shard->replicated);
  CHECK(p->shard->location.line == 10);  // a block mapping starts at its first key

  CHECK(c.find("missing") == nullptr);
}

TEST_CASE("config keeps the YAML text it was parsed from", "[config][unit]") {
  // gt::set_config sends the text; a config that reparses differently (a
  // default filled in, a comment dropped) would be a different message.
  const Config c = detail::parse_config(kDataParallel, "dp.yaml");
  CHECK(c.text == kDataParallel);
  const Config again = detail::parse_config(c.text, "dp.yaml");
  CHECK(again.signals.size() == c.signals.size());
  CHECK(again.find("forward")->backward == c.find("forward")->backward);
  CHECK(Config{}.text.empty());  // built in code: no text
  // A failed parse gives no Config at all, so no text to send by mistake.
  CHECK_THROWS_AS(detail::parse_config("forward: [1]\n"), ConfigError);
}

TEST_CASE("config defaults leave shard and backward unset and compile off", "[config][unit]") {
  const Config c = detail::parse_config("a: {}\nb:\n  shard: {axis: 1}\n");
  CHECK(c.source == "<config>");
  const SignalConfig& a = *c.find("a");
  CHECK_FALSE(a.shard.has_value());
  CHECK_FALSE(a.backward.has_value());
  CHECK_FALSE(a.compile);
  const ShardSpec& s = *c.find("b")->shard;
  CHECK(s.axis == 1);
  CHECK(s.workers.empty());
  CHECK(s.all_workers());
  CHECK(s.worker_locations.empty());
  CHECK_FALSE(s.replicated);
  CHECK_FALSE(c.find("b")->compile);
}

TEST_CASE("config accepts every valid form", "[config][unit]") {
  SECTION("negative axis counts from the end") {
    CHECK(detail::parse_config("s: {shard: {axis: -1}}").find("s")->shard->axis == -1);
    CHECK(detail::parse_config("s: {shard: {axis: +2}}").find("s")->shard->axis == 2);
  }
  SECTION("replicated on chosen workers, in the order written") {
    const ShardSpec s =
        *detail::parse_config("s: {shard: {replicated: true, workers: [3, 1]}}").find("s")->shard;
    CHECK(s.replicated);
    CHECK(s.workers == std::vector<int>{3, 1});
  }
  SECTION("axis with an explicit replicated: false") {
    const ShardSpec s =
        *detail::parse_config("s: {shard: {axis: 0, replicated: false}}").find("s")->shard;
    CHECK(s.axis == 0);
    CHECK_FALSE(s.replicated);
  }
  SECTION("block style, lists and comments") {
    const Config c = detail::parse_config(R"(
s:
  # the shard
  shard:
    axis: 0
    workers:
      - 0
      - 1   # second
  compile: false
)");
    CHECK(c.find("s")->shard->workers == std::vector<int>{0, 1});
    CHECK(c.find("s")->shard->worker_locations[1].line == 8);
    CHECK_FALSE(c.find("s")->compile);
  }
  SECTION("YAML bool words for compile and replicated") {
    for (const char* yes : {"true", "True", "TRUE", "yes", "on"}) {
      CHECK(detail::parse_config(std::string("s: {compile: ") + yes + "}").find("s")->compile);
    }
    for (const char* no : {"false", "False", "no", "off", "OFF"}) {
      CHECK_FALSE(detail::parse_config(std::string("s: {compile: ") + no + "}").find("s")->compile);
    }
  }
  SECTION("backward may name a later signal or the signal itself") {
    const Config c = detail::parse_config("a: {backward: b}\nb: {backward: b}\n");
    CHECK(c.find("a")->backward == "b");
    CHECK(c.find("b")->backward == "b");
  }
  SECTION("signal names with dots, dashes, underscores and quotes") {
    const Config c = detail::parse_config(
        "layer.1-attn: {}\n_x9: {}\n\"quoted_name\": {backward: layer.1-attn}\n");
    CHECK(c.signals.size() == 3);
    CHECK(c.find("layer.1-attn") != nullptr);
    CHECK(c.find("_x9") != nullptr);
    CHECK(c.find("quoted_name")->backward == "layer.1-attn");
  }
  SECTION("anchors and aliases") {
    const Config c =
        detail::parse_config("a: {shard: &split {axis: 0, workers: [0, 1]}}\nb: {shard: *split}\n");
    CHECK(c.find("b")->shard->workers == std::vector<int>{0, 1});
  }
  SECTION("an explicit document start") {
    CHECK(detail::parse_config("---\na: {}\n").signals.size() == 1);
  }
}

TEST_CASE("config errors name the file and key path and line and what was expected",
          "[config][unit]") {
  SECTION("unknown key in an entry, with a suggestion") {
    const ConfigError e = parse_error("forward:\n  sahrd: {axis: 0}\n");
    CHECK(e.file() == "configs/x.yaml");
    CHECK(e.key() == "forward.sahrd");
    CHECK_THAT(e.what(), StartsWith("[config.parse] configs/x.yaml: forward.sahrd (line 2, "
                                    "column 3): unknown key 'sahrd' (did you mean 'shard'?)"));
    CHECK_THAT(e.what(), Contains("expected shard, backward or compile"));
  }
  SECTION("unknown key in a shard") {
    const ConfigError e = parse_error("forward:\n  shard: {axis: 0, devices: [0]}\n");
    CHECK(e.key() == "forward.shard.devices");
    CHECK_THAT(e.what(), Contains("configs/x.yaml: forward.shard.devices (line 2, column 20)"));
    CHECK_THAT(e.what(), Contains("unknown key 'devices': expected axis, workers or replicated"));
  }
  SECTION("axis given as a word") {
    const ConfigError e = parse_error("forward:\n  shard: {axis: \"zero\"}\n");
    CHECK(e.key() == "forward.shard.axis");
    CHECK_THAT(e.what(), Contains("configs/x.yaml: forward.shard.axis (line 2, column 17)"));
    CHECK_THAT(e.what(), Contains("expected an integer axis"));
    CHECK_THAT(e.what(), Contains("got the string \"zero\""));
  }
  SECTION("axis quoted, as a number, as a list, out of range") {
    CHECK_THAT(parse_error("f: {shard: {axis: '0'}}").what(), Contains("got the string \"0\""));
    CHECK_THAT(parse_error("f: {shard: {axis: 1.5}}").what(), Contains("got the number 1.5"));
    CHECK_THAT(parse_error("f: {shard: {axis: [0]}}").what(), Contains("got a list"));
    CHECK_THAT(parse_error("f: {shard: {axis: 0x10}}").what(), Contains("got the string \"0x10\""));
    CHECK_THAT(parse_error("f: {shard: {axis: 99999999999999999999}}").what(),
               Contains("in the 64-bit range, got the integer 99999999999999999999"));
  }
  SECTION("workers not a list") {
    const ConfigError e = parse_error("forward:\n  shard: {axis: 0, workers: 3}\n");
    CHECK(e.key() == "forward.shard.workers");
    CHECK_THAT(e.what(), Contains("forward.shard.workers (line 2, column 29)"));
    CHECK_THAT(e.what(), Contains("expected a list of worker indices such as [0, 1]"));
    CHECK_THAT(e.what(), Contains("got the integer 3"));
  }
  SECTION("workers empty or null") {
    CHECK_THAT(parse_error("f: {shard: {axis: 0, workers: []}}").what(),
               Contains("expected at least one worker index (omit workers for all workers), got "
                        "an empty list"));
    CHECK_THAT(parse_error("f:\n  shard:\n    axis: 0\n    workers:\n").what(),
               Contains("got nothing (null)"));
  }
  SECTION("a worker that is not an integer") {
    const ConfigError e = parse_error("f: {shard: {axis: 0, workers: [0, \"1\"]}}");
    CHECK(e.key() == "f.shard.workers[1]");
    CHECK_THAT(e.what(), Contains("expected a worker index (an integer >= 0), got the string "
                                  "\"1\""));
  }
  SECTION("duplicate workers") {
    const ConfigError e = parse_error("forward:\n  shard: {axis: 0, workers: [1, 0, 1]}\n");
    CHECK(e.key() == "forward.shard.workers[2]");
    CHECK_THAT(e.what(), Contains("configs/x.yaml: forward.shard.workers[2] (line 2, column 36)"));
    CHECK_THAT(e.what(), Contains("duplicate worker 1 (also at workers[0]): expected distinct "
                                  "worker indices"));
  }
  SECTION("negative worker") {
    const ConfigError e = parse_error("forward:\n  shard: {axis: 0, workers: [0, -1]}\n");
    CHECK(e.key() == "forward.shard.workers[1]");
    CHECK_THAT(e.what(), Contains("(line 2, column 33)"));
    CHECK_THAT(e.what(), Contains("expected a worker index >= 0, got -1"));
  }
  SECTION("replicated and compile must be bools") {
    ConfigError e = parse_error("f: {shard: {replicated: 1}}");
    CHECK(e.key() == "f.shard.replicated");
    CHECK_THAT(e.what(), Contains("expected true or false, got the integer 1"));
    e = parse_error("f:\n  compile: \"true\"\n");
    CHECK(e.key() == "f.compile");
    CHECK_THAT(e.what(), Contains("f.compile (line 2, column 12)"));
    CHECK_THAT(e.what(), Contains("expected true or false, got the string \"true\""));
  }
  SECTION("axis and replicated: true together") {
    const ConfigError e = parse_error("f:\n  shard: {axis: 0, replicated: true}\n");
    CHECK(e.key() == "f.shard");
    CHECK_THAT(e.what(), Contains("f.shard (line 2, column 10)"));
    CHECK_THAT(e.what(), Contains("axis and replicated: true exclude each other"));
  }
  SECTION("a shard with neither axis nor replicated") {
    for (const char* yaml : {"f:\n  shard: {workers: [0]}\n", "f:\n  shard: {replicated: false}\n",
                             "f:\n  shard: {}\n"}) {
      const ConfigError e = parse_error(yaml);
      CHECK(e.key() == "f.shard");
      CHECK_THAT(e.what(), Contains("(line 2, column 10)"));
      CHECK_THAT(e.what(), Contains("expected axis (split along it) or replicated: true (a full "
                                    "copy on each worker), got neither"));
    }
  }
  SECTION("a shard that is not a mapping") {
    CHECK_THAT(parse_error("f:\n  shard:\n").what(),
               Contains("f.shard (line 2, column 3): expected a mapping such as {axis: 0} or "
                        "{replicated: true}, got nothing (null)"));
    CHECK_THAT(parse_error("f: {shard: 0}").what(), Contains("got the integer 0"));
  }
  SECTION("backward naming a missing signal") {
    const ConfigError e = parse_error("forward:\n  backward: forward_grad\nparams: {}\n");
    CHECK(e.key() == "forward.backward");
    CHECK_THAT(e.what(), Contains("configs/x.yaml: forward.backward (line 2, column 13)"));
    CHECK_THAT(e.what(), Contains("signal 'forward_grad' is not in this config: expected one of "
                                  "forward, params"));
  }
  SECTION("backward of the wrong type") {
    CHECK_THAT(parse_error("f: {backward: 3}").what(),
               Contains("expected the name of a signal of this config"));
    CHECK_THAT(parse_error("f: {backward: [a]}").what(), Contains("got a list"));
    CHECK_THAT(parse_error("f:\n  backward:\n").what(), Contains("got nothing (null)"));
  }
  SECTION("signal names that are not identifiers") {
    ConfigError e = parse_error("ok: {}\n1abc: {}\n");
    CHECK(e.key() == "1abc");
    CHECK_THAT(e.what(), Contains("configs/x.yaml: 1abc (line 2, column 1): invalid signal name "
                                  "'1abc': expected an identifier ([A-Za-z_][A-Za-z0-9_.-]*)"));
    CHECK_THAT(parse_error("\"a b\": {}").what(), Contains("invalid signal name 'a b'"));
    CHECK_THAT(parse_error("\"\": {}").what(), Contains("invalid signal name ''"));
    CHECK_THAT(parse_error("? [a, b]\n: {}\n").what(),
               Contains("expected a signal name as the key, got a list"));
  }
  SECTION("duplicate signals and duplicate keys") {
    ConfigError e = parse_error("a: {}\nb: {}\na: {compile: true}\n");
    CHECK(e.key() == "a");
    CHECK_THAT(e.what(), Contains("a (line 3, column 1): duplicate signal 'a' (first at line 1)"));
    e = parse_error("a:\n  compile: true\n  compile: false\n");
    CHECK(e.key() == "a.compile");
    CHECK_THAT(e.what(), Contains("(line 3, column 3): duplicate key 'compile' (first at line 2)"));
  }
  SECTION("an entry that is not a mapping") {
    ConfigError e = parse_error("forward:\nparams: {}\n");
    CHECK(e.key() == "forward");
    CHECK_THAT(e.what(), Contains("forward (line 1, column 1): expected a mapping with shard, "
                                  "backward and/or compile (or {} for none), got nothing (null)"));
    CHECK_THAT(parse_error("forward: [shard]").what(), Contains("got a list"));
  }
  SECTION("empty files") {
    for (const char* yaml : {"", "   \n\n", "# only a comment\n", "---\n", "~\n"}) {
      const ConfigError e = parse_error(yaml);
      CHECK(e.key().empty());
      CHECK_THAT(e.what(), Contains("[config.parse] configs/x.yaml: empty config: expected a "
                                    "mapping from signal names to entries, got nothing"));
    }
  }
  SECTION("a top level that is not a mapping") {
    ConfigError e = parse_error("- forward\n- params\n");
    CHECK(e.key().empty());
    CHECK_THAT(e.what(), Contains("configs/x.yaml (line 1, column 1): expected a mapping from "
                                  "signal names to entries at the top level, got a list"));
    CHECK_THAT(parse_error("forward\n").what(), Contains("got the string \"forward\""));
  }
  SECTION("malformed YAML and several documents") {
    ConfigError e = parse_error("forward:\n  shard: {axis: 0, workers: [0, 1}\n");
    CHECK_THAT(e.what(), StartsWith("[config.parse] configs/x.yaml (line 2"));
    CHECK_THAT(e.what(), Contains("invalid YAML: "));
    e = parse_error("a: {}\n---\nb: {}\n");
    CHECK_THAT(e.what(), Contains("(line 2, column 1): expected one YAML document, got a "
                                  "second one (---)"));
    e = parse_error(std::string(2000, '['));
    CHECK_THAT(e.what(), Contains("configs/x.yaml (line 1, column 1): invalid YAML: nesting "
                                  "deeper than "));
    // yaml-cpp 0.7's LoadAll would loop on this (Note [yaml-cpp document loop]).
    e = parse_error(",\n");
    CHECK_THAT(e.what(), Contains("configs/x.yaml (line 1, column 1): invalid YAML: unexpected "
                                  "',': expected a mapping"));
  }
}

TEST_CASE("config validate checks worker indices against the cluster size", "[config][unit]") {
  const Config c = detail::parse_config(
      "forward:\n  shard: {axis: 0, workers: [0, 1, 2]}\nparams: {shard: {replicated: true}}\n",
      "configs/x.yaml");
  CHECK_NOTHROW(detail::validate_config(c, 3));
  CHECK_NOTHROW(detail::validate_config(c, 8));
  const ConfigError e = validate_error(c, 2);
  CHECK(e.file() == "configs/x.yaml");
  CHECK(e.key() == "forward.shard.workers[2]");
  CHECK(std::string(e.what()) ==
        "[config.validate] configs/x.yaml: forward.shard.workers[2] (line 2, column 36): worker "
        "2 is out of range: expected an index in [0, 1] (the cluster has 2 workers)");
  CHECK_THAT(validate_error(c, 1).what(), Contains("forward.shard.workers[1]"));
  CHECK_THROWS_AS(detail::validate_config(c, 0), std::invalid_argument);
  // `workers` omitted means all workers: valid for any cluster.
  CHECK_NOTHROW(detail::validate_config(detail::parse_config("p: {shard: {replicated: true}}"), 1));
}

TEST_CASE("config validate checks configs built in code", "[config][unit]") {
  Config c;
  c.source = "built";
  SignalConfig s;
  s.name = "s";
  s.shard = ShardSpec{};
  s.shard->axis = 0;
  s.shard->replicated = true;
  c.signals["s"] = s;
  ConfigError e = validate_error(c, 2);
  CHECK(e.key() == "s.shard");
  CHECK_THAT(e.what(), Contains("[config.validate] built: s.shard: axis and replicated: true"));

  c.signals["s"].shard->replicated = false;
  c.signals["s"].shard->workers = {0, 0};
  e = validate_error(c, 2);
  CHECK(e.key() == "s.shard.workers[1]");
  CHECK_THAT(e.what(), Contains("duplicate worker 0"));

  c.signals["s"].shard->workers = {-1};
  CHECK_THAT(validate_error(c, 2).what(), Contains("worker -1 is out of range"));

  c.signals["s"].shard->workers = {1, 0};
  c.signals["s"].backward = "nope";
  e = validate_error(c, 2);
  CHECK(e.key() == "s.backward");
  CHECK_THAT(e.what(), Contains("signal 'nope' is not in this config: expected one of s"));

  c.signals["s"].backward = "s";
  CHECK_NOTHROW(detail::validate_config(c, 2));
  c.signals["bad name"] = SignalConfig{};
  CHECK_THAT(validate_error(c, 2).what(), Contains("invalid signal name 'bad name'"));
}

TEST_CASE("config load_config reads a file and names it in errors", "[config][unit]") {
  test::TempDir dir("gt-config");
  const std::string path = dir / "dp.yaml";
  write_file(path, kDataParallel);
  const Config c = detail::load_config(path);
  CHECK(c.source == path);
  CHECK(c.text == kDataParallel);  // the file as read, comments included
  CHECK(c.find("forward")->location.file == path);

  write_file(dir / "bad.yaml", "f:\n  shard: {axis: x}\n");
  try {
    detail::load_config(dir / "bad.yaml");
    FAIL("bad.yaml loaded");
  } catch (const ConfigError& e) {
    CHECK(e.file() == dir / "bad.yaml");
    CHECK_THAT(e.what(), Contains(dir / "bad.yaml" + ": f.shard.axis (line 2, column 17)"));
  }

  try {
    detail::load_config(dir / "missing.yaml");
    FAIL("missing.yaml loaded");
  } catch (const ConfigError& e) {
    CHECK(e.file() == dir / "missing.yaml");
    CHECK_THAT(e.what(), Contains("[config.load] " + dir / "missing.yaml" +
                                  ": cannot open: No such file or directory"));
  }
  CHECK_THROWS_WITH(detail::load_config(dir.path.string()),
                    Contains("cannot read: expected a YAML file, got a directory"));
}

TEST_CASE("config config_from_env reads GT_CONFIG", "[config][unit]") {
  test::TempDir dir("gt-config");
  const std::string path = dir / "dp.yaml";
  write_file(path, kDataParallel);
  {
    ScopedEnv unset("GT_CONFIG", nullptr);
    CHECK_FALSE(detail::config_from_env().has_value());
  }
  {
    ScopedEnv empty("GT_CONFIG", "");
    CHECK_FALSE(detail::config_from_env().has_value());
  }
  {
    ScopedEnv set("GT_CONFIG", path.c_str());
    const std::optional<Config> c = detail::config_from_env();
    REQUIRE(c.has_value());
    CHECK(c->source == path);
    CHECK(c->text == kDataParallel);
    CHECK(c->signals.size() == 3);
  }
  {
    const std::string missing = dir / "missing.yaml";
    ScopedEnv set("GT_CONFIG", missing.c_str());
    CHECK_THROWS_WITH(detail::config_from_env(),
                      Contains(missing + ": cannot open (from GT_CONFIG): No such file"));
  }
}

TEST_CASE("config parser survives mutated and truncated input", "[config][unit]") {
  const std::string base = std::string(kDataParallel) +
                           "other:\n  shard:\n    axis: -2\n    workers:\n      - 0\n"
                           "  backward: params\n  compile: off\n";
  REQUIRE_NOTHROW(detail::parse_config(base));
  const std::string alphabet =
      "{}[]:,-#&*!|>'\"%@`?~ \n\t0123456789axisworkersreplicated\\\x01\xff";
  std::mt19937_64 rng(20240611);
  auto pick = [&](size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng); };
  int parsed = 0, rejected = 0;
  for (int i = 0; i < 1000; ++i) {
    std::string s = base;
    const int edits = 1 + static_cast<int>(pick(4));
    for (int k = 0; k < edits && !s.empty(); ++k) {
      switch (pick(6)) {
        case 0:
          s.resize(pick(s.size()));
          break;  // truncate
        case 1:
          s[pick(s.size())] = alphabet[pick(alphabet.size())];
          break;  // replace
        case 2:
          s.insert(pick(s.size()), 1, alphabet[pick(alphabet.size())]);
          break;
        case 3:
          s.erase(pick(s.size()), 1 + pick(8));
          break;   // delete a run
        case 4: {  // duplicate a slice somewhere else
          const size_t from = pick(s.size());
          const std::string slice = s.substr(from, 1 + pick(40));
          s.insert(pick(s.size()), slice);
          break;
        }
        default:
          s.insert(pick(s.size()), std::string(1 + pick(6), ' '));
          break;  // indent
      }
    }
    try {
      const Config c = detail::parse_config(s, "fuzz.yaml");
      detail::validate_config(c, 4096);  // a parsed config is structurally valid
      ++parsed;
    } catch (const ConfigError& e) {
      ++rejected;
      INFO("input:\n" << s);
      CHECK_THAT(e.what(), StartsWith("[config.parse] fuzz.yaml"));
      CHECK(e.file() == "fuzz.yaml");
    } catch (const std::exception& e) {
      FAIL("not a ConfigError: " << e.what() << "\ninput:\n" << s);
    } catch (...) {
      FAIL("a non-std exception\ninput:\n" << s);
    }
  }
  CHECK(parsed + rejected == 1000);
  CHECK(parsed > 0);
  CHECK(rejected > 0);
}

TEST_CASE("config examples in configs/ parse and validate", "[config][unit]") {
  // The cluster size each example is written for; a new example adds a row.
  const std::map<std::string, int> workers = {
      {"data_parallel.yaml", 2},
      {"tensor_parallel_rows.yaml", 2},
      {"tensor_parallel_columns.yaml", 2},
      {"pipeline_stages.yaml", 3},
  };
  const std::filesystem::path dir = std::filesystem::path(GT_SOURCE_DIR) / "configs";
  int seen = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() != ".yaml") continue;
    const std::string name = entry.path().filename().string();
    INFO(name);
    REQUIRE(workers.count(name) == 1);
    ++seen;
    const Config c = detail::load_config(entry.path().string());
    CHECK_FALSE(c.signals.empty());
    CHECK_NOTHROW(detail::validate_config(c, workers.at(name)));
    // An example that names workers needs all the workers it is written for;
    // one that names none (all workers) runs on any cluster.
    bool names_workers = false;
    for (const auto& [signal, entry] : c.signals) {
      names_workers |= entry.shard && !entry.shard->all_workers();
    }
    if (names_workers) {
      CHECK_THROWS_AS(detail::validate_config(c, workers.at(name) - 1), ConfigError);
    } else {
      CHECK_NOTHROW(detail::validate_config(c, 1));
    }
  }
  CHECK(seen == static_cast<int>(workers.size()));

  const Config dp = detail::load_config((dir / "data_parallel.yaml").string());
  REQUIRE(dp.find("batch"));
  REQUIRE(dp.find("batch")->shard);
  CHECK(dp.find("batch")->shard->axis == 0);
  CHECK(dp.find("batch")->shard->all_workers());
  CHECK(dp.find("batch")->backward == "grads");
  REQUIRE(dp.find("params"));
  CHECK(dp.find("params")->shard->replicated);
  CHECK(dp.find("params")->shard->all_workers());
  const Config rows = detail::load_config((dir / "tensor_parallel_rows.yaml").string());
  CHECK(rows.find("weight")->shard->axis == 0);
  CHECK(rows.find("input")->shard->axis == -1);
  CHECK(rows.find("output")->shard->replicated);
  const Config cols = detail::load_config((dir / "tensor_parallel_columns.yaml").string());
  CHECK(cols.find("weight")->shard->axis == -1);
  CHECK(cols.find("input")->shard->replicated);
  const Config pipe = detail::load_config((dir / "pipeline_stages.yaml").string());
  CHECK(pipe.find("stage2")->shard->workers == std::vector<int>{2});
  CHECK_THAT(validate_error(pipe, 2).what(),
             Contains("pipeline_stages.yaml: stage2.shard.workers[0] (line 28, column 39): worker "
                      "2 is out of range"));
}
