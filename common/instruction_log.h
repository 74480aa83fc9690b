#pragma once
// The instruction log (issue 5): one line per event in each component, in a
// human-readable aligned form and in JSON lines for tools. See
// Note [instruction log format] and docs/instruction_log.md.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
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
// events are queued raw and formatted by a writer thread (Note [raw events]).

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

/// An event recorded on a hot path (Note [raw events]): fixed size, no
/// allocation. The string views must outlive the log (string literals, op
/// table names). Fields left at their "none" value are not printed; the
/// others become the details `session= in= out= shape= n= bytes= req=
/// worker= dur_us=` in that order (docs/instruction_log.md, "Events").
/// `event`, `kind` and `op` are written without escaping: plain ASCII
/// without quotes, backslashes or control characters.
struct RawEvent {
  static constexpr int kMaxIds = 4;
  static constexpr int kMaxOutIds = 2;
  static constexpr int kMaxDims = 6;
  std::string_view event;
  std::string_view kind;
  std::string_view op;
  uint64_t session = 0;  // 0: none
  uint64_t req = 0;      // 0: none
  int64_t n = -1;
  int64_t bytes = -1;
  int64_t dur_ns = -1;
  int32_t worker = -1;
  uint16_t n_in = 0;   // ids in the instruction; the first kMaxIds are kept
  uint16_t n_out = 0;
  int16_t ndim = -1;   // -1: no shape; the first kMaxDims are kept
  uint64_t in[kMaxIds] = {};
  uint64_t out[kMaxOutIds] = {};
  int64_t shape[kMaxDims] = {};
};

/// The details text of a raw event.
std::string raw_details(const RawEvent& e);
/// Same, appended to `out`.
void append_raw_details(std::string& out, const RawEvent& e);

/// Writes one component's instruction log (Note [instruction log format]),
/// to files, to a tap (the event stream, Note [event stream] in
/// dispatcher/dispatcher.cpp), or both.
///
/// Note [raw events]
/// Events are stamped (sequence number, time) under a mutex and queued
/// unformatted; a background thread (at nice kWriterNice, so it uses the CPU
/// the program leaves idle) formats and writes them every 100 ms (or sooner
/// when many are queued), so a hot path pays for a clock read, a lock and a
/// copy of a RawEvent (about 0.1 us), not for formatting. record()
/// takes arbitrary strings (one allocation); record_raw() takes a RawEvent.
/// Both go through the same queue, so the files keep sequence order. If the
/// writer falls behind by more than kMaxQueued events, newer events are
/// dropped and counted; the next written batch starts with a DROPPED event.
///
/// Pinned (no copy or move). Every member function is thread-safe. The
/// destructor writes what is queued and never throws.
class InstructionLog {
 public:
  /// Chunks of JSON lines (each ending in "\n") for the tap: STATS events
  /// apart from all others, since the event stream publishes them under
  /// their own topic.
  struct TapChunk {
    std::string events;
    std::string stats;
  };
  using Tap = std::function<void(TapChunk&&)>;

  /// Opens `<base_path>.<tag>.log` and `.jsonl` for appending, unless
  /// `base_path` is empty (no files: a log for a tap only). Throws gt::Error
  /// naming the path and the system's reason when one cannot be opened.
  /// Records the CLOCK event first. `file_tag` replaces the component's part
  /// of the file names (default: instruction_log_file_tag(component)).
  InstructionLog(std::string component, const std::string& base_path,
                 const std::string& file_tag = "");
  ~InstructionLog();
  InstructionLog(const InstructionLog&) = delete;
  InstructionLog& operator=(const InstructionLog&) = delete;
  InstructionLog(InstructionLog&&) = delete;
  InstructionLog& operator=(InstructionLog&&) = delete;

  /// nullptr when GT_INSTRUCTION_LOG is unset or empty (the log is off);
  /// otherwise a log at that base path. Throws like the constructor.
  static std::unique_ptr<InstructionLog> from_env(std::string component);

  /// Whether anything consumes events (files or a tap): hot paths test this
  /// (one relaxed atomic load) before building an event.
  bool enabled() const { return enabled_.load(std::memory_order_relaxed); }
  bool has_files() const { return text_fd_ >= 0; }

  /// Appends one event stamped with the next sequence number and the time
  /// since construction.
  void record(std::string_view event, std::string_view kind, std::string_view op,
              std::string_view details);
  /// Same for a hot-path event (Note [raw events]).
  void record_raw(const RawEvent& e);
  /// Same, stamped `at` (a time the caller read anyway, e.g. the end of the
  /// instruction), or the latest stamp so far if that is later, so times
  /// still never decrease along the file.
  void record_raw(const RawEvent& e, std::chrono::steady_clock::time_point at);
  /// Records a CLOCK event: wall-clock time now, for aligning components.
  void record_clock();

  /// Sets (or, with an empty function, removes) the tap that receives every
  /// formatted chunk from now on; setting one records a CLOCK event so the
  /// stream can be aligned. The tap runs on the writer thread (or the thread
  /// calling flush()) and must not call back into the log.
  void set_tap(Tap tap);

  /// Formats and writes everything queued; throws gt::Error if a write
  /// failed (now or during an earlier automatic write).
  void flush();

  const std::string& component() const { return component_; }
  const std::string& text_path() const { return text_path_; }
  const std::string& json_path() const { return json_path_; }
  /// Events lost because the writer fell behind.
  uint64_t dropped() const;

  /// Nice value of the writer thread (Note [raw events]).
  static constexpr int kWriterNice = 10;
  /// Queued events that wake the writer before its period ends.
  static constexpr size_t kWakeQueued = 8192;
  /// Queued events beyond which new ones are dropped.
  static constexpr size_t kMaxQueued = size_t{1} << 20;

 private:
  struct Entry;
  /// Appends a stamped entry (nullptr when full: counted as dropped); mutex_ held.
  Entry* stamp_locked(std::chrono::steady_clock::time_point now);
  void writer_main();
  /// Formats and writes the queue; one caller at a time (format_mutex_).
  void drain();
  /// The text (when `text` is set) and JSON lines of a raw event; format_mutex_ held.
  void append_raw_lines(std::string* text, std::string& json, int64_t ns, uint64_t seq,
                        const RawEvent& e);
  void update_enabled();

  const std::string component_;
  std::string text_path_;
  std::string json_path_;
  const std::chrono::steady_clock::time_point start_;
  int text_fd_ = -1;
  int json_fd_ = -1;
  std::atomic<bool> enabled_{false};

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  uint64_t next_seq_ = 0;          // guarded by mutex_
  std::chrono::steady_clock::time_point last_stamp_;  // guarded by mutex_
  std::vector<Entry> queue_;       // guarded by mutex_
  std::vector<Entry> spare_;       // guarded by mutex_: the other buffer (drain)
  uint64_t dropped_ = 0;           // guarded by mutex_
  uint64_t dropped_reported_ = 0;  // guarded by mutex_
  bool stopping_ = false;          // guarded by mutex_

  std::mutex format_mutex_;  // one drain at a time, so batches stay in order
  Tap tap_;                  // guarded by format_mutex_
  std::string write_error_;  // guarded by format_mutex_; first failure
  // Guarded by format_mutex_: drain()'s buffers, kept between drains.
  std::string text_out_, json_out_;
  std::string text_component_, json_component_;  // set by the constructor
  static constexpr size_t kWriteBytes = 1 << 20;  // written in chunks of about this
  std::atomic<bool> has_tap_{false};

  std::thread writer_;  // last: starts once everything above exists
};

}  // namespace gt
