// Fuzz target: the instruction log's line readers (docs/fuzzing.md), which
// gt trace, gt viz and gt top run on files and event streams they did not
// write. parse_json, parse_text, split_details and detail_value take any
// bytes without crashing or throwing. The JSON form is exact (Note
// [instruction log format]): an event parse_json accepts is written by
// format_json as a line that reads back to the same event, and its text form
// reads back with parse_text.

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "common/instruction_log.h"

namespace {

volatile size_t g_sink;

[[noreturn]] void fail(const char* what, std::string_view line) {
  std::fprintf(stderr, "instruction_log_fuzz: %s: %.*s\n", what, static_cast<int>(line.size()),
               line.data());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view line(reinterpret_cast<const char*>(data), size);
  for (const auto& [key, value] : gt::split_details(line))
    g_sink = g_sink + key.size() + value.size();
  for (std::string_view key : {"what", "session", "in", ""}) {
    if (auto v = gt::detail_value(line, key)) g_sink = g_sink + v->size();
  }
  g_sink = g_sink + gt::instruction_log_file_tag(line).size();

  if (auto text = gt::parse_text(line)) g_sink = g_sink + gt::format_text(*text).size();
  if (auto e = gt::parse_json(line)) {
    const std::string json = gt::format_json(*e);
    auto back = gt::parse_json(json);
    if (!back) fail("format_json wrote a line parse_json refuses", json);
    // Strings that were not valid UTF-8 come back as U+FFFD: compare the
    // second round, which is exact.
    if (gt::format_json(*back) != json) fail("the JSON form does not round-trip", json);
    const std::string text = gt::format_text(*back);
    if (!gt::parse_text(text)) fail("format_text wrote a line parse_text refuses", text);
  }
  return 0;
}
