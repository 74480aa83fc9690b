#include "common/instruction_log.h"

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <system_error>

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <gt/error.h>

#include "common/env.h"

namespace gt {
namespace {

constexpr std::string_view kSep = " | ";
constexpr size_t kEventWidth = 10;
constexpr size_t kComponentWidth = 8;
constexpr size_t kWhatWidth = 9;
constexpr char kHex[] = "0123456789abcdef";

// Bytes the text form escapes, and bytes the JSON form escapes or checks
// (non-ASCII bytes go through UTF-8 validation).
struct EscapeTable {
  bool text[256] = {};
  bool json[256] = {};
  constexpr EscapeTable() {
    for (int c = 0; c < 256; ++c) {
      text[c] = c < 0x20 || c == '\\' || c == 0x7f;
      json[c] = c < 0x20 || c >= 0x80 || c == '"' || c == '\\';
    }
  }
};
constexpr EscapeTable kEscapeTable;

// ---- text form --------------------------------------------------------------

// Index of the first byte at or after `i` that the text form (kJson false)
// or the JSON form (kJson true) must look at; s.size() when there is none.
// Most values are plain ASCII, so 8 bytes are checked at a time.
template <bool kJson>
size_t scan_plain(std::string_view s, size_t i) {
  constexpr uint64_t kOnes = 0x0101010101010101ull;
  constexpr uint64_t kHigh = 0x8080808080808080ull;
  const auto has_zero = [](uint64_t v) { return (v - kOnes) & ~v & kHigh; };
  while (i + 8 <= s.size()) {
    uint64_t w;
    std::memcpy(&w, s.data() + i, 8);
    // Bytes < 0x20 (may also flag a neighbour: only a false alarm), '\\',
    // and for text 0x7f, for JSON '"' and every byte >= 0x80.
    uint64_t special = ((w - 0x20 * kOnes) & ~w & kHigh) | has_zero(w ^ (0x5c * kOnes));
    if constexpr (kJson) {
      special |= has_zero(w ^ (0x22 * kOnes)) | (w & kHigh);
    } else {
      special |= has_zero(w ^ (0x7f * kOnes));
    }
    if (special) break;
    i += 8;
  }
  const bool* table = kJson ? kEscapeTable.json : kEscapeTable.text;
  while (i < s.size() && !table[static_cast<unsigned char>(s[i])]) ++i;
  return i;
}

// Escapes backslashes and control characters so an event stays on one line.
void append_text_escaped(std::string& out, std::string_view s) {
  size_t run = 0;  // start of the pending run of bytes copied as they are
  for (size_t i = 0;; ++i) {
    i = scan_plain<false>(s, i);
    if (i == s.size()) break;
    const auto c = static_cast<unsigned char>(s[i]);
    out.append(s.data() + run, i - run);
    run = i + 1;
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        out += "\\x";
        out += kHex[c >> 4];
        out += kHex[c & 15];
    }
  }
  out.append(s.data() + run, s.size() - run);
}

void pad_from(std::string& out, size_t start, size_t width) {
  const size_t used = out.size() - start;
  if (used < width) out.append(width - used, ' ');
}

void append_text(std::string& out, double elapsed_s, uint64_t seq, std::string_view event,
                 std::string_view component, std::string_view kind, std::string_view op,
                 std::string_view details) {
  // "%7.3fs | #%04llu | " without printf's cost (a third of a record()).
  char num[64];
  auto [end, ec] = std::to_chars(num, num + sizeof num, elapsed_s, std::chars_format::fixed, 3);
  if (ec != std::errc()) end = std::to_chars(num, num + sizeof num, elapsed_s).ptr;  // > 1e60 s
  size_t len = static_cast<size_t>(end - num);
  if (len < 7) out.append(7 - len, ' ');
  out.append(num, len);
  out += "s | #";
  end = std::to_chars(num, num + sizeof num, seq).ptr;
  len = static_cast<size_t>(end - num);
  if (len < 4) out.append(4 - len, '0');
  out.append(num, len);
  out += kSep;
  size_t start = out.size();
  append_text_escaped(out, event);
  pad_from(out, start, kEventWidth);
  out += kSep;
  start = out.size();
  append_text_escaped(out, component);
  pad_from(out, start, kComponentWidth);
  out += kSep;
  start = out.size();
  append_text_escaped(out, kind);
  if (!op.empty()) {
    out += '/';
    append_text_escaped(out, op);
  }
  pad_from(out, start, kWhatWidth);
  if (details.empty()) {
    while (out.size() > start && out.back() == ' ') out.pop_back();
    return;
  }
  out += kSep;
  append_text_escaped(out, details);
}

std::string_view trim_right(std::string_view s) {
  while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
  return s;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::optional<std::string> text_unescape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\\') {
      out += s[i];
      continue;
    }
    if (++i >= s.size()) return std::nullopt;
    switch (s[i]) {
      case '\\': out += '\\'; break;
      case 'n': out += '\n'; break;
      case 'r': out += '\r'; break;
      case 't': out += '\t'; break;
      case 'x': {
        if (i + 2 >= s.size()) return std::nullopt;
        const int hi = hex_value(s[i + 1]), lo = hex_value(s[i + 2]);
        if (hi < 0 || lo < 0) return std::nullopt;
        out += static_cast<char>(hi * 16 + lo);
        i += 2;
        break;
      }
      default: return std::nullopt;
    }
  }
  return out;
}

// ---- JSON form --------------------------------------------------------------

// Length of the valid UTF-8 sequence starting at s[i] (2 to 4), or 0.
size_t utf8_sequence(std::string_view s, size_t i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  size_t len;
  uint32_t cp;
  if (b0 >= 0xc2 && b0 <= 0xdf) {
    len = 2, cp = b0 & 0x1f;
  } else if (b0 >= 0xe0 && b0 <= 0xef) {
    len = 3, cp = b0 & 0x0f;
  } else if (b0 >= 0xf0 && b0 <= 0xf4) {
    len = 4, cp = b0 & 0x07;
  } else {
    return 0;
  }
  if (i + len > s.size()) return 0;
  for (size_t k = 1; k < len; ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if ((b & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (b & 0x3f);
  }
  // Overlong forms, surrogates and values past U+10FFFF are not valid UTF-8.
  if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000)) return 0;
  if ((cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff) return 0;
  return len;
}

void append_json_string(std::string& out, std::string_view s) {
  out += '"';
  size_t run = 0;  // start of the pending run of bytes copied as they are
  for (size_t i = 0;;) {
    i = scan_plain<true>(s, i);
    if (i == s.size()) break;
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x80) {
      if (const size_t len = utf8_sequence(s, i)) {
        i += len;
        continue;
      }
    }
    out.append(s.data() + run, i - run);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c >= 0x80) {
          out += "\xef\xbf\xbd";  // U+FFFD for a byte that is not valid UTF-8
        } else {
          out += "\\u00";
          out += kHex[c >> 4];
          out += kHex[c & 15];
        }
    }
    run = ++i;
  }
  out.append(s.data() + run, s.size() - run);
  out += '"';
}

void append_json(std::string& out, double elapsed_s, uint64_t seq, std::string_view event,
                 std::string_view component, std::string_view kind, std::string_view op,
                 std::string_view details) {
  char num[32];
  out += "{\"elapsed_s\":";
  if (std::isfinite(elapsed_s)) {
    out.append(num, std::to_chars(num, num + sizeof num, elapsed_s).ptr);
  } else {
    out += "null";  // not a JSON number; parse_json rejects the line
  }
  out += ",\"seq\":";
  out.append(num, std::to_chars(num, num + sizeof num, seq).ptr);
  out += ",\"event\":";
  append_json_string(out, event);
  out += ",\"component\":";
  append_json_string(out, component);
  out += ",\"kind\":";
  append_json_string(out, kind);
  out += ",\"op\":";
  append_json_string(out, op);
  out += ",\"details\":";
  append_json_string(out, details);
  out += '}';
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xc0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xe0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else {
    out += static_cast<char>(0xf0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  }
}

// A strict reader for the flat objects format_json writes. Every method
// returns false on malformed input and checks bounds before each read.
class JsonReader {
 public:
  explicit JsonReader(std::string_view s) : s_(s) {}

  void skip_ws() {
    while (i_ < s_.size() &&
           (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r'))
      ++i_;
  }
  bool at_end() const { return i_ == s_.size(); }
  bool consume(char c) {
    if (i_ < s_.size() && s_[i_] == c) {
      ++i_;
      return true;
    }
    return false;
  }
  bool peek(char c) const { return i_ < s_.size() && s_[i_] == c; }

  bool string(std::string& out) {
    out.clear();
    if (!consume('"')) return false;
    while (i_ < s_.size()) {
      const char c = s_[i_++];
      if (c == '"') return true;
      if (static_cast<unsigned char>(c) < 0x20) return false;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (i_ >= s_.size()) return false;
      switch (s_[i_++]) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          uint32_t cp;
          if (!hex4(cp)) return false;
          if (cp >= 0xdc00 && cp <= 0xdfff) return false;  // lone low surrogate
          if (cp >= 0xd800 && cp <= 0xdbff) {
            uint32_t low;
            if (!consume('\\') || !consume('u') || !hex4(low)) return false;
            if (low < 0xdc00 || low > 0xdfff) return false;
            cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
          }
          append_utf8(out, cp);
          break;
        }
        default: return false;
      }
    }
    return false;  // unterminated
  }

  // A number token by the JSON grammar; `integer` is set when it has no
  // sign, fraction or exponent.
  bool number(std::string_view& token, bool& integer) {
    const size_t start = i_;
    integer = true;
    if (consume('-')) integer = false;
    if (consume('0')) {
    } else if (!digits()) {
      return false;
    }
    if (consume('.')) {
      integer = false;
      if (!digits()) return false;
    }
    if (consume('e') || consume('E')) {
      integer = false;
      if (!consume('+')) consume('-');
      if (!digits()) return false;
    }
    token = s_.substr(start, i_ - start);
    return true;
  }

  bool literal(std::string_view word) {
    if (s_.substr(i_, word.size()) != word) return false;
    i_ += word.size();
    return true;
  }

  // Skips one scalar value (string, number, true, false, null).
  bool skip_scalar() {
    if (peek('"')) {
      std::string ignored;
      return string(ignored);
    }
    std::string_view token;
    bool integer;
    return literal("true") || literal("false") || literal("null") || number(token, integer);
  }

 private:
  bool digits() {
    const size_t start = i_;
    while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') ++i_;
    return i_ > start;
  }
  bool hex4(uint32_t& v) {
    if (s_.size() - i_ < 4) return false;
    v = 0;
    for (int k = 0; k < 4; ++k) {
      const int h = hex_value(s_[i_++]);
      if (h < 0) return false;
      v = v * 16 + static_cast<uint32_t>(h);
    }
    return true;
  }

  std::string_view s_;
  size_t i_ = 0;
};

// Room for one line of either form.
size_t estimate_bytes(const LogEvent& e) {
  return 128 + e.event.size() + e.component.size() + e.kind.size() + e.op.size() +
         e.details.size();
}

}  // namespace

std::string format_text(const LogEvent& e) {
  std::string out;
  out.reserve(estimate_bytes(e));
  append_text(out, e.elapsed_s, e.seq, e.event, e.component, e.kind, e.op, e.details);
  return out;
}

std::string format_json(const LogEvent& e) {
  std::string out;
  out.reserve(estimate_bytes(e));
  append_json(out, e.elapsed_s, e.seq, e.event, e.component, e.kind, e.op, e.details);
  return out;
}

std::optional<LogEvent> parse_json(std::string_view line) {
  JsonReader r(line);
  LogEvent e;
  std::string* const strings[] = {&e.event, &e.component, &e.kind, &e.op, &e.details};
  constexpr std::string_view kStringKeys[] = {"event", "component", "kind", "op", "details"};
  constexpr unsigned kAll = (1u << 7) - 1;  // elapsed_s, seq and the five strings
  unsigned seen = 0;
  std::string key;
  r.skip_ws();
  if (!r.consume('{')) return std::nullopt;
  do {
    r.skip_ws();
    if (!r.string(key)) return std::nullopt;
    r.skip_ws();
    if (!r.consume(':')) return std::nullopt;
    r.skip_ws();
    unsigned bit = 0;
    if (key == "elapsed_s" || key == "seq") {
      std::string_view token;
      bool integer;
      if (!r.number(token, integer)) return std::nullopt;
      const char* end = token.data() + token.size();
      if (key == "elapsed_s") {
        bit = 1u << 0;
        auto [p, ec] = std::from_chars(token.data(), end, e.elapsed_s);
        if (ec != std::errc() || p != end || !std::isfinite(e.elapsed_s)) return std::nullopt;
      } else {
        bit = 1u << 1;
        if (!integer) return std::nullopt;
        auto [p, ec] = std::from_chars(token.data(), end, e.seq);
        if (ec != std::errc() || p != end) return std::nullopt;
      }
    } else {
      size_t k = 0;
      while (k < 5 && key != kStringKeys[k]) ++k;
      if (k == 5) {
        if (!r.skip_scalar()) return std::nullopt;  // a member added later
      } else {
        bit = 1u << (2 + k);
        if (!r.string(*strings[k])) return std::nullopt;
      }
    }
    if (seen & bit) return std::nullopt;  // duplicate member
    seen |= bit;
    r.skip_ws();
  } while (r.consume(','));
  if (!r.consume('}')) return std::nullopt;
  r.skip_ws();
  if (!r.at_end() || seen != kAll) return std::nullopt;
  return e;
}

std::optional<LogEvent> parse_text(std::string_view line) {
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.remove_suffix(1);
  std::string_view cols[5];
  std::string_view rest = line;
  for (int k = 0; k < 4; ++k) {
    const size_t p = rest.find(kSep);
    if (p == std::string_view::npos) return std::nullopt;
    cols[k] = rest.substr(0, p);
    rest.remove_prefix(p + kSep.size());
  }
  std::string_view details;
  if (const size_t p = rest.find(kSep); p != std::string_view::npos) {
    cols[4] = rest.substr(0, p);
    details = rest.substr(p + kSep.size());
  } else {
    cols[4] = rest;
  }

  LogEvent e;
  std::string_view elapsed = cols[0];
  while (!elapsed.empty() && elapsed.front() == ' ') elapsed.remove_prefix(1);
  if (elapsed.size() < 2 || elapsed.back() != 's') return std::nullopt;
  elapsed.remove_suffix(1);
  {
    const char* end = elapsed.data() + elapsed.size();
    auto [p, ec] = std::from_chars(elapsed.data(), end, e.elapsed_s);
    if (ec != std::errc() || p != end) return std::nullopt;
  }
  std::string_view seq = cols[1];
  if (seq.size() < 2 || seq.front() != '#') return std::nullopt;
  seq.remove_prefix(1);
  {
    const char* end = seq.data() + seq.size();
    auto [p, ec] = std::from_chars(seq.data(), end, e.seq);
    if (ec != std::errc() || p != end) return std::nullopt;
  }
  std::string_view what = trim_right(cols[4]);
  std::string_view kind = what, op;
  if (const size_t slash = what.find('/'); slash != std::string_view::npos) {
    kind = what.substr(0, slash);
    op = what.substr(slash + 1);
  }
  const std::pair<std::string*, std::string_view> fields[] = {
      {&e.event, trim_right(cols[2])}, {&e.component, trim_right(cols[3])},
      {&e.kind, kind}, {&e.op, op}, {&e.details, details}};
  for (const auto& [dst, src] : fields) {
    auto v = text_unescape(src);
    if (!v) return std::nullopt;
    *dst = std::move(*v);
  }
  return e;
}

std::vector<std::pair<std::string_view, std::string_view>> split_details(std::string_view details) {
  std::vector<std::pair<std::string_view, std::string_view>> fields;
  size_t pos = 0;
  while (pos < details.size()) {
    if (details[pos] == ' ') {
      ++pos;
      continue;
    }
    size_t end = details.find(' ', pos);
    if (end == std::string_view::npos) end = details.size();
    const std::string_view word = details.substr(pos, end - pos);
    const size_t eq = word.find('=');
    const std::string_view key = word.substr(0, eq);
    if (eq != std::string_view::npos && (key == "what" || key == "why")) {
      fields.emplace_back(key, details.substr(pos + eq + 1));  // free text: the rest
      break;
    }
    fields.emplace_back(key, eq == std::string_view::npos ? std::string_view() : word.substr(eq + 1));
    pos = end;
  }
  return fields;
}

std::optional<std::string_view> detail_value(std::string_view details, std::string_view key) {
  for (const auto& [k, v] : split_details(details)) {
    if (k == key) return v;
  }
  return std::nullopt;
}

std::string instruction_log_file_tag(std::string_view component) {
  std::string tag;
  tag.reserve(component.size());
  for (const char c : component) {
    if (c >= 'A' && c <= 'Z') {
      tag += static_cast<char>(c - 'A' + 'a');
    } else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) {
      tag += c;
    } else {
      tag += '-';
    }
  }
  return tag;
}

namespace {

int open_for_append(const std::string& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) {
    const int err = errno;
    throw Error("[instruction_log.open] cannot open '" + path +
                "' for appending: " + std::system_category().message(err) +
                " (GT_INSTRUCTION_LOG is the base path; its directory must exist)");
  }
  return fd;
}

// Writes all of `data`; returns the errno of a failure, or 0.
int write_all(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    done += static_cast<size_t>(n);
  }
  return 0;
}

}  // namespace


namespace {

// ---- the writer's fast path for raw events (Note [raw events]) -------------
// A raw event's strings are literals and op-table names (plain ASCII: no
// escaping needed) and its details are digits and keys, so both lines are
// built in a stack buffer with raw pointer writes; std::string appends cost
// several times more per event. Elapsed time comes from integer nanoseconds:
// the text form rounds to milliseconds, the JSON form writes the exact
// decimal (at most 9 fraction digits, trailing zeros dropped), which reads
// back as the nearest double.
class LineWriter {
 public:
  explicit LineWriter(char* buf) : p_(buf) {}
  char* end() const { return p_; }
  void put(char c) { *p_++ = c; }
  void put(std::string_view s) {
    if (s.empty()) return;  // data() may be null, which memcpy must not see
    std::memcpy(p_, s.data(), s.size());
    p_ += s.size();
  }
  void put_uint(uint64_t v) { p_ = std::to_chars(p_, p_ + 20, v).ptr; }
  void put_int(int64_t v) { p_ = std::to_chars(p_, p_ + 21, v).ptr; }
  void pad_to(const char* start, size_t width) {
    while (static_cast<size_t>(p_ - start) < width) *p_++ = ' ';
  }
  // "%0*llu": at least `width` digits.
  void put_uint_padded(uint64_t v, int width) {
    char digits[20];
    const int n = static_cast<int>(std::to_chars(digits, digits + 20, v).ptr - digits);
    for (int i = n; i < width; ++i) *p_++ = '0';
    std::memcpy(p_, digits, static_cast<size_t>(n));
    p_ += n;
  }
  // Whole seconds, then `decimals` digits of the fraction of `ns` (rounded);
  // `trim` drops trailing zeros (and the point when nothing is left).
  void put_seconds(int64_t ns, int decimals, bool trim) {
    static constexpr int64_t kPow10[] = {1,      10,      100,      1000,      10000,
                                         100000, 1000000, 10000000, 100000000, 1000000000};
    const int64_t unit = kPow10[9 - decimals];
    const int64_t scaled = (ns + unit / 2) / unit;
    const int64_t whole = scaled / kPow10[decimals];
    int64_t frac = scaled % kPow10[decimals];
    put_int(whole);
    int digits = decimals;
    if (trim) {
      while (digits > 0 && frac % 10 == 0) {
        frac /= 10;
        --digits;
      }
      if (digits == 0) return;
    }
    put('.');
    put_uint_padded(static_cast<uint64_t>(frac), digits);
  }

 private:
  char* p_;
};

void put_raw_details(LineWriter& w, const RawEvent& e) {
  const char* start = w.end();
  auto key = [&](std::string_view k) {
    if (w.end() != start) w.put(' ');
    w.put(k);
    w.put('=');
  };
  auto ids = [&](std::string_view k, const uint64_t* v, int total, int max) {
    key(k);
    const int kept = std::min(total, max);
    for (int i = 0; i < kept; ++i) {
      if (i > 0) w.put(',');
      w.put_uint(v[i]);
    }
    if (total > kept) w.put(",...");
  };
  if (e.session != 0) {
    key("session");
    w.put_uint(e.session);
  }
  if (e.n_in > 0) ids("in", e.in, e.n_in, RawEvent::kMaxIds);
  if (e.n_out > 0) ids("out", e.out, e.n_out, RawEvent::kMaxOutIds);
  if (e.ndim >= 0) {
    key("shape");
    w.put('[');
    const int kept = std::min<int>(e.ndim, RawEvent::kMaxDims);
    for (int i = 0; i < kept; ++i) {
      if (i > 0) w.put(',');
      w.put_int(e.shape[i]);
    }
    if (e.ndim > kept) w.put(",...");
    w.put(']');
  }
  if (e.n >= 0) {
    key("n");
    w.put_int(e.n);
  }
  if (e.bytes >= 0) {
    key("bytes");
    w.put_int(e.bytes);
  }
  if (e.req != 0) {
    key("req");
    w.put_uint(e.req);
  }
  if (e.worker >= 0) {
    key("worker");
    w.put_int(e.worker);
  }
  if (e.dur_ns >= 0) {
    key("dur_us");
    w.put_int(e.dur_ns / 1000);
    w.put('.');
    w.put_uint_padded(static_cast<uint64_t>(e.dur_ns % 1000), 3);
  }
}

// Longest details put_raw_details writes (about 450 bytes), with room to spare.
constexpr size_t kMaxRawDetails = 640;

}  // namespace

std::string raw_details(const RawEvent& e) {
  std::string out;
  append_raw_details(out, e);
  return out;
}

void append_raw_details(std::string& out, const RawEvent& e) {
  char buf[kMaxRawDetails];
  LineWriter w(buf);
  put_raw_details(w, e);
  out.append(buf, w.end());
}

struct InstructionLog::Entry {
  uint64_t seq = 0;
  std::chrono::steady_clock::time_point time;
  RawEvent raw;
  std::unique_ptr<LogEvent> owned;  // record(): strings copied
};

InstructionLog::InstructionLog(std::string component, const std::string& base_path,
                               const std::string& file_tag)
    : component_(std::move(component)), start_(std::chrono::steady_clock::now()) {
  if (!base_path.empty()) {
    const std::string tag = file_tag.empty() ? instruction_log_file_tag(component_) : file_tag;
    text_path_ = base_path + "." + tag + ".log";
    json_path_ = base_path + "." + tag + ".jsonl";
    text_fd_ = open_for_append(text_path_);
    try {
      json_fd_ = open_for_append(json_path_);
    } catch (...) {
      ::close(text_fd_);
      throw;
    }
  }
  // The component as the raw-event lines write it: escaped (and padded) once.
  append_text_escaped(text_component_, component_);
  if (text_component_.size() < kComponentWidth) {
    text_component_.append(kComponentWidth - text_component_.size(), ' ');
  }
  append_json_string(json_component_, component_);
  queue_.reserve(1024);
  spare_.reserve(1024);
  update_enabled();
  record_clock();
  writer_ = std::thread([this] { writer_main(); });
}

InstructionLog::~InstructionLog() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  writer_.join();
  try {
    drain();
  } catch (...) {
    // A destructor never throws; a failed final write is lost.
  }
  if (text_fd_ >= 0) ::close(text_fd_);
  if (json_fd_ >= 0) ::close(json_fd_);
}

std::unique_ptr<InstructionLog> InstructionLog::from_env(std::string component) {
  const auto path = env_string("GT_INSTRUCTION_LOG");
  if (!path) return nullptr;
  return std::make_unique<InstructionLog>(std::move(component), *path);
}

void InstructionLog::update_enabled() {
  enabled_.store(text_fd_ >= 0 || has_tap_.load(), std::memory_order_relaxed);
}

InstructionLog::Entry* InstructionLog::stamp_locked(std::chrono::steady_clock::time_point now) {
  if (queue_.size() >= kMaxQueued) {
    ++dropped_;
    return nullptr;
  }
  now = std::max(now, last_stamp_);
  last_stamp_ = now;
  if (dropped_ > dropped_reported_) {
    // The writer caught up: say how many were lost, in sequence.
    Entry& d = queue_.emplace_back();
    d.owned = std::make_unique<LogEvent>();
    d.owned->event = "DROPPED";
    d.owned->kind = "Events";
    d.owned->details =
        "n=" + std::to_string(dropped_ - dropped_reported_) + " why=the writer fell behind";
    d.seq = next_seq_++;
    d.time = now;
    dropped_reported_ = dropped_;
  }
  // Stamped under the lock, so seq and elapsed_s both increase along a file.
  Entry& e = queue_.emplace_back();
  e.seq = next_seq_++;
  e.time = now;
  return &e;
}

void InstructionLog::record(std::string_view event, std::string_view kind, std::string_view op,
                            std::string_view details) {
  auto owned = std::make_unique<LogEvent>();
  owned->event = event;
  owned->kind = kind;
  owned->op = op;
  owned->details = details;
  bool wake = false;
  {
    std::lock_guard lock(mutex_);
    if (Entry* e = stamp_locked(std::chrono::steady_clock::now())) e->owned = std::move(owned);
    wake = queue_.size() == kWakeQueued;
  }
  if (wake) wake_.notify_one();
}

void InstructionLog::record_raw(const RawEvent& raw) {
  record_raw(raw, std::chrono::steady_clock::now());
}

void InstructionLog::record_raw(const RawEvent& raw, std::chrono::steady_clock::time_point at) {
  bool wake = false;
  {
    std::lock_guard lock(mutex_);
    if (Entry* e = stamp_locked(at)) e->raw = raw;
    wake = queue_.size() == kWakeQueued;
  }
  if (wake) wake_.notify_one();
}

void InstructionLog::record_clock() {
  const auto wall = std::chrono::system_clock::now().time_since_epoch();
  const int64_t us = std::chrono::duration_cast<std::chrono::microseconds>(wall).count();
  char buf[80];
  std::snprintf(buf, sizeof buf, "unix_s=%lld.%06lld pid=%lld", static_cast<long long>(us / 1000000),
                static_cast<long long>(us % 1000000), static_cast<long long>(::getpid()));
  record("CLOCK", "Start", "", buf);
}

void InstructionLog::set_tap(Tap tap) {
  {
    std::lock_guard lock(format_mutex_);
    tap_ = std::move(tap);
    has_tap_.store(static_cast<bool>(tap_));
  }
  update_enabled();
  if (has_tap_.load()) record_clock();
}

uint64_t InstructionLog::dropped() const {
  std::lock_guard lock(mutex_);
  return dropped_;
}

void InstructionLog::writer_main() {
  // Formatting is the log's main cost; at a lower priority it takes the CPU
  // the program leaves idle (queues absorb bursts), instead of competing with
  // the threads that do the work. Linux applies nice per thread.
  (void)::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), kWriterNice);
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    wake_.wait_for(lock, std::chrono::milliseconds(100),
                   [&] { return stopping_ || queue_.size() >= kWakeQueued; });
    if (stopping_) break;
    lock.unlock();
    try {
      drain();
    } catch (...) {
      // Kept in write_error_ and reported by the next flush().
    }
    lock.lock();
  }
}

void InstructionLog::drain() {
  std::lock_guard format_lock(format_mutex_);
  std::vector<Entry> batch;
  {
    std::lock_guard lock(mutex_);
    if (queue_.empty()) return;
    // Two buffers take turns, so recording reuses warm memory instead of
    // faulting in a fresh vector after every drain.
    batch.swap(spare_);
    batch.swap(queue_);
  }
  const bool files = text_fd_ >= 0;
  // Buffers keep their capacity between drains (warm memory, no page faults).
  std::string& text = text_out_;
  std::string& json = json_out_;
  TapChunk chunk;
  auto write_files = [&] {
    if (files && write_error_.empty()) {
      const std::pair<int, const std::string*> targets[] = {{text_fd_, &text_path_},
                                                            {json_fd_, &json_path_}};
      const std::string* data[] = {&text, &json};
      for (int k = 0; k < 2; ++k) {
        if (const int err = write_all(targets[k].first, *data[k])) {
          write_error_ = "[instruction_log.flush] cannot write '" + *targets[k].second +
                         "': " + std::system_category().message(err) +
                         "; later events of this log are dropped";
          break;
        }
      }
    }
    text.clear();
    json.clear();
  };
  for (Entry& e : batch) {
    const int64_t ns = std::chrono::duration_cast<std::chrono::nanoseconds>(e.time - start_).count();
    const size_t json_start = json.size();
    if (e.owned) {
      const double elapsed_s = static_cast<double>(ns) * 1e-9;
      const LogEvent& o = *e.owned;
      if (files) {
        append_text(text, elapsed_s, e.seq, o.event, component_, o.kind, o.op, o.details);
        text += '\n';
      }
      append_json(json, elapsed_s, e.seq, o.event, component_, o.kind, o.op, o.details);
      json += '\n';
    } else {
      append_raw_lines(files ? &text : nullptr, json, ns, e.seq, e.raw);
    }
    if (tap_) {
      const std::string_view event = e.owned ? std::string_view(e.owned->event) : e.raw.event;
      (event == "STATS" ? chunk.stats : chunk.events).append(json, json_start);
    }
    if (json.size() >= kWriteBytes) write_files();
  }
  write_files();
  if (tap_ && (!chunk.events.empty() || !chunk.stats.empty())) tap_(std::move(chunk));
  batch.clear();
  std::lock_guard lock(mutex_);
  if (batch.capacity() > spare_.capacity()) spare_.swap(batch);
}

void InstructionLog::append_raw_lines(std::string* text, std::string& json, int64_t ns,
                                      uint64_t seq, const RawEvent& e) {
  char details[kMaxRawDetails];
  LineWriter d(details);
  put_raw_details(d, e);
  const std::string_view det(details, static_cast<size_t>(d.end() - details));
  char line[kMaxRawDetails + 256];
  if (text) {
    LineWriter w(line);
    char num[32];
    LineWriter n(num);
    n.put_seconds(ns, 3, false);
    for (auto len = n.end() - num; len < 7; ++len) w.put(' ');
    w.put(std::string_view(num, static_cast<size_t>(n.end() - num)));
    w.put("s | #");
    w.put_uint_padded(seq, 4);
    w.put(kSep);
    char* field = w.end();
    w.put(e.event);
    w.pad_to(field, kEventWidth);
    w.put(kSep);
    w.put(text_component_);
    w.put(kSep);
    field = w.end();
    w.put(e.kind);
    if (!e.op.empty()) {
      w.put('/');
      w.put(e.op);
    }
    if (det.empty()) {
      w.put('\n');
    } else {
      w.pad_to(field, kWhatWidth);
      w.put(kSep);
      w.put(det);
      w.put('\n');
    }
    text->append(line, w.end());
  }
  LineWriter w(line);
  w.put("{\"elapsed_s\":");
  w.put_seconds(ns, 9, true);
  w.put(",\"seq\":");
  w.put_uint(seq);
  w.put(",\"event\":\"");
  w.put(e.event);
  w.put("\",\"component\":");
  w.put(json_component_);
  w.put(",\"kind\":\"");
  w.put(e.kind);
  w.put("\",\"op\":\"");
  w.put(e.op);
  w.put("\",\"details\":\"");
  w.put(det);
  w.put("\"}\n");
  json.append(line, w.end());
}

void InstructionLog::flush() {
  drain();
  std::lock_guard lock(format_mutex_);
  if (!write_error_.empty()) throw Error(write_error_);
}

}  // namespace gt
