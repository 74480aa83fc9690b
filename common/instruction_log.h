#pragma once
// The instruction log (issue 5): one line per event in each component, in a
// human-readable aligned form and in JSON lines for tools. See
// Note [instruction log format] and docs/instruction_log.md.

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace gt {

// Note [instruction log format]
// With GT_INSTRUCTION_LOG=<path>, a component writes every event twice:
// `<path>.<component>.log` (text) and `<path>.<component>.jsonl` (JSON lines),
// where <component> is the component name lower-cased with every character
// other than a-z and 0-9 turned into '-' ("WORKER 0" -> "worker-0"). Both are
// opened in append mode; the directory must exist.
//
// Fields of one event (LogEvent):
//   elapsed_s  seconds since the component's log was opened (steady clock)
//   seq        sequence number, 0, 1, 2, ... per component (per log object);
//              sequence numbers and elapsed times never decrease along a file
//   event      what happened: RECV, SEND, EXEC, FREE, FETCH, COMPILE, HOTPATH,
//              ERROR, ... (open set, upper case by convention)
//   component  who wrote it: CLIENT, DISPATCHER, WORKER <n>
//   kind       instruction kind (Op, Fetch, Free, Batch, ...) or the phase of
//              a multi-step event (Starting, Done)
//   op         the op name (matmul, add, ...); empty when none applies
//   details    free text, by convention `key=value` fields separated by
//              spaces: ids, shapes, bytes, duration
//
// Text form, one line per event, fields separated by " | ":
//   "%7.3fs | #%04llu | %-10s | %-8s | %-9s | details"
//   e.g. "  1.500s | #0150 | COMPILE    | WORKER 0 | Starting  | sequence=abc"
// The fifth column is the kind, or "kind/op" when op is not empty. Padding
// only widens short values: longer ones (DISPATCHER) push the rest right.
// When details are empty the line ends after the padded fifth column with
// trailing spaces removed. Backslashes and control characters (newlines,
// tabs) are escaped in every field (\\, \n, \r, \t, \xNN), so one event is
// always one line. parse_text() undoes this, but it rounds elapsed_s to the
// millisecond and trims the padding, so values with trailing spaces, a "/"
// in the kind or " | " in a field other than details do not come back
// exactly: the JSON form is the exact one.
//
// JSON form, one object per line with exactly these members:
//   {"elapsed_s":1.5,"seq":150,"event":"COMPILE","component":"WORKER 0",
//    "kind":"Starting","op":"","details":"sequence=abc"}
// elapsed_s is written with the shortest digits that read back to the same
// double. Strings escape '"', '\\' and control characters; other bytes of
// valid UTF-8 are written as they are, and a byte that is not valid UTF-8
// becomes U+FFFD. parse_json() accepts members in any order, whitespace,
// \uXXXX escapes (surrogate pairs included) and ignores unknown members with
// scalar values, so tools keep working when fields are added.
//
// Cost: with the variable unset, InstructionLog::from_env returns nullptr and
// callers test the pointer, so a disabled log costs one branch. When on,
// record() formats both lines into in-memory buffers under a mutex and
// writes them when they pass 64 KiB, on flush() and in the destructor: there
// is no system call per event.

/// One event of the instruction log (Note [instruction log format]).
struct LogEvent {
  double elapsed_s = 0.0;
  uint64_t seq = 0;
  std::string event;
  std::string component;
  std::string kind;
  std::string op;
  std::string details;

  bool operator==(const LogEvent&) const = default;
};

/// The aligned human-readable line, without the trailing newline.
std::string format_text(const LogEvent& e);

/// One JSON object, without the trailing newline.
std::string format_json(const LogEvent& e);

/// Reads a line written by format_json (a trailing "\n" or "\r\n" is
/// allowed). Returns nullopt for anything malformed: not an object, missing
/// or duplicate members, wrong types, a negative or fractional seq, bad
/// escapes, trailing bytes. Never throws.
std::optional<LogEvent> parse_json(std::string_view line);

/// Reads a line written by format_text (a trailing newline is allowed);
/// returns nullopt when it does not have that shape. Never throws. Lossy for
/// the values listed in Note [instruction log format].
std::optional<LogEvent> parse_text(std::string_view line);

/// The `key=value` fields of an event's details, in order (Note: the keys
/// `what` and `why` take the rest of the line, spaces included; see
/// docs/instruction_log.md, "Events"). A word without '=' becomes a key with
/// an empty value. Views into `details`.
std::vector<std::pair<std::string_view, std::string_view>> split_details(std::string_view details);

/// The value of `key` in `details`; nullopt when absent.
std::optional<std::string_view> detail_value(std::string_view details, std::string_view key);

/// "WORKER 0" -> "worker-0": the component's part of the file names.
std::string instruction_log_file_tag(std::string_view component);

/// Writes one component's instruction log (Note [instruction log format]).
/// Pinned (no copy or move). record() and flush() are thread-safe; the
/// sequence numbers follow the order in which record() calls took the lock,
/// and the files hold the events in that order. I/O errors while buffering
/// are kept and reported by the next flush(); the destructor flushes and
/// never throws.
class InstructionLog {
 public:
  /// Opens `<base_path>.<tag>.log` and `.jsonl` for appending; throws
  /// gt::Error naming the path and the system's reason when one cannot be
  /// opened.
  InstructionLog(std::string component, const std::string& base_path);
  ~InstructionLog();
  InstructionLog(const InstructionLog&) = delete;
  InstructionLog& operator=(const InstructionLog&) = delete;
  InstructionLog(InstructionLog&&) = delete;
  InstructionLog& operator=(InstructionLog&&) = delete;

  /// nullptr when GT_INSTRUCTION_LOG is unset or empty (the log is off);
  /// otherwise a log at that base path. Throws like the constructor.
  static std::unique_ptr<InstructionLog> from_env(std::string component);

  /// Appends one event stamped with the next sequence number and the time
  /// since construction.
  void record(std::string_view event, std::string_view kind, std::string_view op,
              std::string_view details);

  /// Writes the buffered lines; throws gt::Error if a write failed (now or
  /// during an earlier automatic flush).
  void flush();

  const std::string& component() const { return component_; }
  const std::string& text_path() const { return text_path_; }
  const std::string& json_path() const { return json_path_; }

  /// Buffered bytes (both forms) that trigger a write.
  static constexpr size_t kFlushBytes = 64 * 1024;

 private:
  // Writes `text` and `json` to the files; called with write_mutex_ held.
  void write_locked(const std::string& text, const std::string& json);
  /// Takes both buffers (mutex_ held by `lock`, released here) and writes
  /// them under write_mutex_.
  void write_buffers(std::unique_lock<std::mutex>& lock);

  const std::string component_;
  std::string text_path_;
  std::string json_path_;
  const std::chrono::steady_clock::time_point start_;
  int text_fd_ = -1;
  int json_fd_ = -1;

  std::mutex mutex_;
  uint64_t next_seq_ = 0;   // guarded by mutex_
  std::string text_buf_;    // guarded by mutex_
  std::string json_buf_;    // guarded by mutex_

  // Taken before mutex_ is released when buffers are handed over for
  // writing, so chunks reach the files in sequence order.
  std::mutex write_mutex_;
  std::string write_error_;  // guarded by write_mutex_; first failure
};

}  // namespace gt
