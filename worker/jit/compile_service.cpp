#include "worker/jit/compile_service.h"

#include <algorithm>
#include <cmath>
#include <chrono>
#include <cstdio>
#include <exception>

#include <c10/util/Exception.h>

#include "common/check.h"
#include "common/env.h"

namespace gt::worker::jit {

JitOptions jit_options_from_env() {
  JitOptions o;
  o.auto_compile = env_flag("GT_AUTO_COMPILE");
  o.compile_all = env_flag("GT_COMPILE");
  o.threshold = static_cast<int>(env_int("GT_HOTPATH_THRESHOLD", 10, 2, 1000000));
  o.debug = env_flag("GT_DEBUG_COMPILE");
  o.verify = env_flag("GT_COMPILE_VERIFY");
  o.recompile_limit = static_cast<int>(env_int("GT_RECOMPILE_LIMIT", 8, 1, 1000000));
  if (auto dir = env_string("GT_COMPILE_CACHE_DIR")) o.cache_dir = *dir;
  return o;
}

namespace {

CpuCompilerConfig compiler_config(const JitOptions& o) {
  CpuCompilerConfig c;
  c.compiler = default_compiler();
  c.cache_dir = o.cache_dir.empty() ? default_cache_dir() : o.cache_dir;
  return c;
}

double ms(std::chrono::nanoseconds d) { return std::chrono::duration<double, std::milli>(d).count(); }

std::string hex(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace

std::string sequence_name(uint64_t digest) { return hex(digest).substr(0, 12); }

CompileService::CompileService(JitOptions options, int worker, std::shared_ptr<spdlog::logger> log)
    : options_(std::move(options)),
      worker_(worker),
      log_(std::move(log)),
      compiler_(compiler_config(options_)),
      thread_([this] { loop(); }) {}

CompileService::~CompileService() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    queue_.clear();
  }
  wake_.notify_all();
  thread_.join();
}

std::optional<Promotion> CompileService::submit(uint64_t session, Chain chain,
                                               uint32_t repetitions) {
  Chain escaping = chain;
  escaping.escapes.assign(escaping.escapes.size(), true);
  Promotion p;
  p.escaping = escaping.digest();
  const bool elide = chain.has_dead_values();
  if (elide) p.elided = chain.digest();
  const uint64_t structure = chain.structure_digest();
  {
    std::lock_guard lock(mutex_);
    ++stats_.detected;
    std::vector<uint64_t>& variants = variants_[structure];
    if (std::find(variants.begin(), variants.end(), p.escaping) == variants.end()) {
      if (variants.size() >= static_cast<size_t>(options_.recompile_limit)) {
        ++stats_.limited;
        debug_line("fallback: chain " + hex(p.escaping) + " stays eager: its loop body has " +
                   std::to_string(variants.size()) + " compiled variants already " +
                   "(GT_RECOMPILE_LIMIT=" + std::to_string(options_.recompile_limit) + ")");
        log_event("COMPILE", "Limited",
                  "session=" + std::to_string(session) + " sequence=" + sequence_name(p.escaping) +
                      " ops=" + std::to_string(chain.ops.size()) +
                      " variants=" + std::to_string(variants.size()));
        return std::nullopt;
      }
      variants.push_back(p.escaping);
    }
    // The elided variant first: it is the one that runs when the client frees
    // what the unit's iterations freed before.
    const size_t queued = queue_.size();
    const size_t ops = chain.ops.size();
    if (elide) enqueue(std::move(chain), p.elided, p.escaping);
    enqueue(std::move(escaping), p.escaping, p.elided);
    if (queue_.size() == queued) return p;  // both known: nothing to compile
    debug_line("hot path detected: chain " + hex(p.escaping) + ", " + std::to_string(ops) +
               " ops, " + std::to_string(repetitions) + " repetitions, session " +
               std::to_string(session));
    log_event("HOTPATH", "Detected",
              "session=" + std::to_string(session) + " sequence=" + sequence_name(p.escaping) +
                  " ops=" + std::to_string(ops) + " repetitions=" + std::to_string(repetitions));
    if (!unit_of_.contains(p.escaping)) {
      if (units_.size() >= kMaxSummaries) {
        unit_of_.erase(units_.front().digest);
        units_.pop_front();
      }
      units_.push_back(UnitSummary{p.escaping, ops, "compiling", -1});
      unit_of_[p.escaping] = p.escaping;
      if (elide) unit_of_[p.elided] = p.escaping;
    }
  }
  wake_.notify_one();
  return p;
}

bool CompileService::pending_locked(uint64_t digest) const {
  if (busy_ && current_ == digest) return true;
  return std::any_of(queue_.begin(), queue_.end(),
                     [digest](const Job& j) { return j.digest == digest; });
}

void CompileService::enqueue(Chain chain, uint64_t digest, uint64_t sibling) {
  if (chains_.contains(digest) || pending_locked(digest)) {
    ++stats_.duplicates;
    return;
  }
  queue_.push_back(Job{std::move(chain), digest, sibling});
}

ChainState CompileService::state(uint64_t digest) const {
  std::lock_guard lock(mutex_);
  if (auto it = chains_.find(digest); it != chains_.end()) {
    return it->second ? ChainState::Ready : ChainState::Failed;
  }
  return pending_locked(digest) ? ChainState::Pending : ChainState::Unknown;
}

std::shared_ptr<const CompiledChain> CompileService::find(uint64_t digest) const {
  std::lock_guard lock(mutex_);
  auto it = chains_.find(digest);
  return it == chains_.end() ? nullptr : it->second;
}

void CompileService::drain() {
  std::unique_lock lock(mutex_);
  idle_.wait(lock, [&] { return stopping_ || (queue_.empty() && !busy_); });
}

void CompileService::count_run(bool elided) {
  std::lock_guard lock(mutex_);
  if (elided) ++stats_.elided_runs;
  if (stats_.runs++ == 0) debug_line("first compiled run");
}

void CompileService::count_fallback() {
  std::lock_guard lock(mutex_);
  ++stats_.fallbacks;
}

void CompileService::report_trial(uint64_t digest, double compiled_ms, double eager_ms,
                                  bool kept) {
  {
    std::lock_guard lock(mutex_);
    if (!kept) ++stats_.dropped;
    if (UnitSummary* u = unit_locked(digest)) {
      u->state = kept ? "kept" : "dropped";
      u->speedup = eager_ms / std::max(compiled_ms, 1e-9);
    }
  }
  {
    char buf[160];
    std::snprintf(buf, sizeof buf, "sequence=%s speedup=%.3f compiled_ms=%.3f eager_ms=%.3f",
                  sequence_name(digest).c_str(), eager_ms / std::max(compiled_ms, 1e-9),
                  compiled_ms, eager_ms);
    log_event("COMPILE", kept ? "Kept" : "Dropped", buf);
  }
  char buf[200];
  std::snprintf(buf, sizeof buf,
                "%s: chain %s, compiled %.3f ms vs eager %.3f ms per unit, fastest of each (%.2fx)",
                kept ? "speedup" : "dropped (not faster than eager)", hex(digest).c_str(),
                compiled_ms, eager_ms, eager_ms / std::max(compiled_ms, 1e-9));
  debug_line(buf);
}

void CompileService::report_verify(uint64_t digest, double max_abs_difference,
                                   const std::optional<std::string>& mismatch) {
  char buf[128];
  std::snprintf(buf, sizeof buf, "verify: chain %s, max abs difference %.3g vs eager",
                hex(digest).c_str(), max_abs_difference);
  std::string line = buf;
  line += mismatch ? " MISMATCH: " + *mismatch : " (within tolerance)";
  std::fprintf(stderr, "gt jit [worker %d] %s\n", worker_.load(), line.c_str());
  std::fflush(stderr);
  if (mismatch) {
    log_->warn("[worker {}] JIT: GT_COMPILE_VERIFY: chain {} differs from eager: {}",
               worker_.load(), hex(digest), *mismatch);
  }
}

JitStats CompileService::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

void CompileService::loop() {
  for (;;) {
    Job job;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) {
        idle_.notify_all();
        return;
      }
      job = std::move(queue_.front());
      queue_.pop_front();
      busy_ = true;
      current_ = job.digest;
    }
    compile(job);
    {
      std::lock_guard lock(mutex_);
      busy_ = false;
    }
    idle_.notify_all();
  }
}

void CompileService::compile(Job& job) {
  const uint64_t digest = job.digest;
  const std::string name = hex(digest);
  const bool all_escape = !job.chain.has_dead_values();
  debug_line("compile start: chain " + name +
             (all_escape ? " (every value materialised)" : " (dead values elided)"));
  const std::string sequence = sequence_name(digest);
  const char* variant = all_escape ? "escaping" : "elided";
  log_event("COMPILE", "Starting",
            "sequence=" + sequence + " ops=" + std::to_string(job.chain.ops.size()) +
                " variant=" + variant);
  std::shared_ptr<const CompiledChain> compiled;
  std::string error;
  try {
    compiled = std::make_shared<const CompiledChain>(job.chain, compiler_);
  } catch (const c10::Error& e) {
    error = e.what_without_backtrace();
  } catch (const std::exception& e) {
    error = e.what();
  } catch (...) {
    error = "a non-standard exception";
  }
  std::lock_guard lock(mutex_);
  if (!compiled) {
    ++stats_.failures;
    chains_[digest] = nullptr;  // never again: the chain stays eager
    // The other variant has the same ops and would fail the same way: one
    // warning per unit.
    if (job.sibling != 0 && !chains_.contains(job.sibling)) {
      chains_[job.sibling] = nullptr;
      std::erase_if(queue_, [&](const Job& j) { return j.digest == job.sibling; });
    }
    log_->warn("[worker {}] JIT: compiling chain {} ({} ops) failed, it stays eager: {}", worker_.load(),
               name, job.chain.ops.size(), error);
    debug_line("fallback: chain " + name + " stays eager (compile failed)");
    if (UnitSummary* u = unit_locked(digest)) u->state = "failed";
    log_event("COMPILE", "Failed",
              "sequence=" + sequence + " variant=" + variant + " what=" + error);
    return;
  }
  ++stats_.compiled;
  if (compiled->cache_hit()) ++stats_.cache_hits;
  const Graph& g = compiled->graph();
  debug_line("compile done: chain " + name + " in " + std::to_string(ms(compiled->compile_time())) +
             " ms" + (compiled->cache_hit() ? " (cache hit)" : "") + ", " +
             std::to_string(g.fused_groups()) + " fused groups covering " +
             std::to_string(g.fused_ops()) + " of " + std::to_string(job.chain.ops.size()) +
             " ops");
  if (UnitSummary* u = unit_locked(digest); u && u->state == "compiling") u->state = "trial";
  log_event("COMPILE", "Done",
            "sequence=" + sequence + " variant=" + variant +
                " groups=" + std::to_string(g.fused_groups()) +
                " fused=" + std::to_string(g.fused_ops()) +
                " ms=" + std::to_string(std::llround(ms(compiled->compile_time()))) +
                " cache=" + (compiled->cache_hit() ? "hit" : "miss"));
  chains_[digest] = std::move(compiled);
}

void CompileService::set_instruction_log(std::shared_ptr<InstructionLog> log, bool events) {
  std::lock_guard lock(log_mutex_);
  ilog_ = events ? std::move(log) : nullptr;
}

void CompileService::log_event(std::string_view event, std::string_view kind,
                               const std::string& details) const {
  std::lock_guard lock(log_mutex_);
  if (ilog_) ilog_->record(event, kind, "", details);
}

UnitSummary* CompileService::unit_locked(uint64_t digest) {
  auto it = unit_of_.find(digest);
  if (it == unit_of_.end()) return nullptr;
  for (UnitSummary& u : units_) {
    if (u.digest == it->second) return &u;
  }
  return nullptr;
}

std::vector<UnitSummary> CompileService::unit_summaries() const {
  std::lock_guard lock(mutex_);
  return {units_.begin(), units_.end()};
}

void CompileService::debug_line(const std::string& line) const {
  if (!options_.debug) return;
  // Straight to stderr: GT_DEBUG_COMPILE is asked for explicitly and must show
  // even when the worker's log level hides info lines (local clusters).
  std::fprintf(stderr, "gt jit [worker %d] %s\n", worker_.load(), line.c_str());
  std::fflush(stderr);
}

}  // namespace gt::worker::jit
