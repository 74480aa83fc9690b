#pragma once
// The worker's JIT driver between the executor and the compiler: JIT settings
// from the environment, and a background thread that compiles the chains the
// sessions' detectors promote, so that the instruction stream never waits for
// the system compiler.
//
// Note [JIT stages]
// 1. Recording and detection (worker/jit/recorder.h) run on the executor
//    thread for sessions of a worker started with GT_AUTO_COMPILE=1 (threshold
//    GT_HOTPATH_THRESHOLD) or GT_COMPILE=1 (threshold 2: the first repetition).
// 2. A detected unit becomes a Chain and is submitted here; the service
//    compiles it (graph, CPU codegen, system compiler, on-disk cache) on its
//    own thread and keeps the result by the chain's digest, so the same loop
//    in another session, or a later run of the program, compiles nothing.
// 3. Once a session's promoted chain is ready, the executor matches incoming
//    instructions against it and runs matched units compiled instead of eagerly
//    (Note [compiled execution] in worker/executor.cpp), after a timed trial
//    against eager that drops chains that are not faster.

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>

#include <spdlog/spdlog.h>

#include "common/instruction_log.h"
#include "worker/jit/chain.h"
#include "worker/jit/compiled_chain.h"
#include "worker/jit/compiler_cpu.h"

namespace gt::worker::jit {

/// The JIT settings of a worker.
struct JitOptions {
  bool auto_compile = false;        // GT_AUTO_COMPILE: detect hot paths and compile them
  bool compile_all = false;         // GT_COMPILE: compile every chain at its first repetition
  int threshold = 10;               // GT_HOTPATH_THRESHOLD: repetitions before a chain is hot
  bool debug = false;               // GT_DEBUG_COMPILE: one stderr line per JIT event
  bool verify = false;              // GT_COMPILE_VERIFY: run compiled and eager once, compare
  int recompile_limit = 8;          // GT_RECOMPILE_LIMIT: variants compiled per loop body
  /// Units of each kind (compiled, eager) timed before a compiled unit is
  /// kept or dropped (Note [compiled execution]); 0 keeps every unit
  /// untimed (tests that need deterministic compiled runs).
  int trial_units = 5;
  std::filesystem::path cache_dir;  // GT_COMPILE_CACHE_DIR (empty: default_cache_dir())

  bool enabled() const { return auto_compile || compile_all; }
  /// The detector's threshold: GT_COMPILE=1 compiles at the first repetition.
  int detector_threshold() const { return compile_all ? 2 : threshold; }
};

/// Reads the GT_* JIT variables (docs/environment.md); bad values throw
/// std::invalid_argument naming the variable.
JitOptions jit_options_from_env();

/// Counters of a worker's JIT (all sessions).
struct JitStats {
  uint64_t detected = 0;     // units promoted by the detectors
  uint64_t compiled = 0;     // chains compiled and loaded (cache hits included)
  uint64_t cache_hits = 0;   // of those, found in the on-disk cache
  uint64_t failures = 0;     // chains whose compile failed (they stay eager)
  uint64_t duplicates = 0;   // promoted chains already compiled or queued
  uint64_t runs = 0;         // units executed by compiled chains instead of eagerly
  uint64_t elided_runs = 0;  // of those, run by the variant that elides dead values
  uint64_t dropped = 0;      // chains dropped after timing slower than eager
  uint64_t fallbacks = 0;    // matched units run eagerly instead (refused inputs, run failures)
  uint64_t limited = 0;      // chains left eager by GT_RECOMPILE_LIMIT
};

/// The compiled variants of one promoted unit (Note [dead values] in
/// worker/executor.cpp): `escaping` materialises every value the unit
/// produces; `elided` (0 when no value dies inside the unit) leaves out the
/// values the recorder saw freed inside every iteration.
struct Promotion {
  uint64_t escaping = 0;
  uint64_t elided = 0;
};

/// A unit's name in logs, STATS and `gt top`: the first 12 hex digits of
/// its digest (the prefix `gt cache list` and GT_DEBUG_COMPILE show).
std::string sequence_name(uint64_t digest);

/// One promoted unit, for STATS and `gt top`: its escaping digest, op count,
/// where it stands ("compiling", "trial", "kept", "dropped", "failed") and
/// the trial's speedup (eager / compiled; negative before the trial ends).
struct UnitSummary {
  uint64_t digest = 0;
  size_t ops = 0;
  std::string state;
  double speedup = -1;
};

/// Where a submitted chain stands.
enum class ChainState { Unknown, Pending, Ready, Failed };

/// Compiles promoted chains on a background thread.
///
/// Ownership and threads: owns its thread, started by the constructor and
/// stopped and joined by the destructor (pending jobs are dropped). submit(),
/// find() and stats() may be called from any thread. Never throws from the
/// thread: a failed compile is logged once (warn) and counted, and its chain
/// is remembered as failed so it is not compiled again.
class CompileService {
 public:
  CompileService(JitOptions options, int worker, std::shared_ptr<spdlog::logger> log);
  ~CompileService();
  CompileService(const CompileService&) = delete;
  CompileService& operator=(const CompileService&) = delete;

  /// Queues the variants of `chain` (promoted after `repetitions`
  /// repetitions in `session`; its escapes are the recorder's): the chain as
  /// given when a value dies inside it, and the chain with every value
  /// escaping. Returns their digests, or nullopt when GT_RECOMPILE_LIMIT
  /// variants of the same loop body (Chain::structure_digest) exist already:
  /// that body stays eager (counted in JitStats::limited, one debug line).
  std::optional<Promotion> submit(uint64_t session, Chain chain, uint32_t repetitions);
  /// The compiled chain with this digest, once ready; nullptr otherwise.
  std::shared_ptr<const CompiledChain> find(uint64_t digest) const;
  /// Whether `digest` is queued or compiling, ready, failed (or limited), or
  /// was never submitted.
  ChainState state(uint64_t digest) const;
  /// Blocks until every job submitted so far has finished (tests, shutdown).
  void drain();
  JitStats stats() const;
  /// Counts one unit executed by a compiled chain (executor thread).
  void count_run(bool elided);
  /// Counts one matched unit that ran eagerly instead (executor thread).
  void count_fallback();
  /// The outcome of a chain's timed trial against eager (executor thread):
  /// kept when faster, else dropped for that session.
  void report_trial(uint64_t digest, double compiled_ms, double eager_ms, bool kept);
  /// GT_COMPILE_VERIFY's report for a chain's first compiled unit: always one
  /// stderr line; a mismatch beyond tolerance also warns.
  void report_verify(uint64_t digest, double max_abs_difference,
                     const std::optional<std::string>& mismatch);
  const JitOptions& options() const { return options_; }
  /// Where JIT events go (HOTPATH, COMPILE: docs/instruction_log.md); `events`
  /// false or a null log: nowhere. Any thread.
  void set_instruction_log(std::shared_ptr<InstructionLog> log, bool events);
  /// Every promoted unit, in promotion order (at most kMaxSummaries, newest kept).
  std::vector<UnitSummary> unit_summaries() const;
  static constexpr size_t kMaxSummaries = 64;
  /// The worker index named in messages (known once the dispatcher welcomes us).
  void set_worker(int worker) { worker_.store(worker, std::memory_order_relaxed); }

 private:
  struct Job {
    Chain chain;
    uint64_t digest;   // chain.digest(), computed once
    uint64_t sibling;  // the other variant of the same promotion (0: none)
  };
  void loop();
  void compile(Job& job);
  /// Whether `digest` is queued or being compiled; mutex_ held.
  bool pending_locked(uint64_t digest) const;
  /// Queues one chain unless it is known; mutex_ held.
  void enqueue(Chain chain, uint64_t digest, uint64_t sibling);
  void debug_line(const std::string& line) const;
  /// Records a JIT event in the instruction log, when one is set.
  void log_event(std::string_view event, std::string_view kind, const std::string& details) const;
  /// The summary of the unit a variant digest belongs to; mutex_ held.
  UnitSummary* unit_locked(uint64_t digest);

  const JitOptions options_;
  std::atomic<int> worker_;
  std::shared_ptr<spdlog::logger> log_;
  CpuCompiler compiler_;  // thread-safe

  mutable std::mutex mutex_;
  std::condition_variable wake_;     // jobs queued or stopping
  std::condition_variable idle_;     // a job finished
  std::deque<Job> queue_;            // guarded by mutex_
  bool busy_ = false;                // guarded by mutex_: a job is being compiled
  uint64_t current_ = 0;             // guarded by mutex_: the digest being compiled
  bool stopping_ = false;            // guarded by mutex_
  // Guarded by mutex_: digest -> compiled chain (null when its compile failed).
  std::unordered_map<uint64_t, std::shared_ptr<const CompiledChain>> chains_;
  // Guarded by mutex_: structure digest -> the escaping digests of its
  // variants submitted so far (GT_RECOMPILE_LIMIT).
  std::unordered_map<uint64_t, std::vector<uint64_t>> variants_;
  JitStats stats_;                   // guarded by mutex_
  std::deque<UnitSummary> units_;    // guarded by mutex_: unit_summaries()
  std::unordered_map<uint64_t, uint64_t> unit_of_;  // guarded by mutex_: variant -> unit digest
  mutable std::mutex log_mutex_;
  std::shared_ptr<InstructionLog> ilog_;  // guarded by log_mutex_; null: no events
  std::thread thread_;               // last: starts once everything above exists
};

}  // namespace gt::worker::jit
