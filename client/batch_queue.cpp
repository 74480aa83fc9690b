#include "client/internal/batch_queue.h"

#include <gt/error.h>

namespace gt::client {

BatchQueue::BatchQueue(size_t max_instructions)
    : max_instructions_(max_instructions == 0 ? 1 : max_instructions) {}

void BatchQueue::mark_open_locked(bool& wake) {
  if (!open_since_) {
    open_since_ = Clock::now();
    wake = true;
  }
}

void BatchQueue::check_open_locked() const {
  if (closed_) throw Error("[client] the session is shut down: no further operations");
}

void BatchQueue::append_locked(wire::Instr&& instr, bool& wake) {
  mark_open_locked(wake);
  if (open_.instrs.empty()) open_.instrs.reserve(std::min<size_t>(max_instructions_, 1024));
  open_.instrs.push_back(std::move(instr));
  if (open_.instrs.size() >= max_instructions_) {
    seal_locked();
    wake = true;
  }
}

void BatchQueue::enter_scope_locked(const ScopeRef& scope, bool& wake) {
  if (scope == stream_scope_) return;
  scope_steps_.clear();
  append_scope_transition(stream_scope_.get(), scope.get(), scope_steps_);
  // A batch may end between the steps: the stream is one sequence.
  for (auto& step : scope_steps_) append_locked(std::move(step), wake);
  scope_steps_.clear();
  stream_scope_ = scope;
}

bool BatchQueue::push(wire::Instr&& instr) {
  std::lock_guard lock(mutex_);
  check_open_locked();
  bool wake = false;
  append_locked(std::move(instr), wake);
  return wake;
}

bool BatchQueue::push(wire::Instr&& instr, const ScopeRef& scope) {
  std::lock_guard lock(mutex_);
  check_open_locked();
  bool wake = false;
  enter_scope_locked(scope, wake);
  append_locked(std::move(instr), wake);
  return wake;
}

bool BatchQueue::push(wire::Instr&& instr, zmq::message_t&& payload, const ScopeRef& scope) {
  std::lock_guard lock(mutex_);
  check_open_locked();
  bool wake = false;
  enter_scope_locked(scope, wake);
  // After the scope steps: they may have sealed the batch the index counts in.
  instr.payload = static_cast<int32_t>(open_.payloads.size());
  open_.payloads.push_back(std::move(payload));
  append_locked(std::move(instr), wake);
  return wake;
}

void BatchQueue::push_and_seal(wire::Instr&& instr) {
  std::lock_guard lock(mutex_);
  check_open_locked();
  open_.instrs.push_back(std::move(instr));
  seal_locked();
}

void BatchQueue::push_stats_request(uint64_t request) {
  std::lock_guard lock(mutex_);
  check_open_locked();
  seal_locked();
  Batch stats;
  stats.stats_request = request;
  sealed_.push_back(std::move(stats));
}

bool BatchQueue::push_free(wire::TensorId id) noexcept {
  try {
    std::lock_guard lock(mutex_);
    if (closed_) return false;
    bool wake = false;
    mark_open_locked(wake);
    frees_.push_back(id);
    return wake;
  } catch (...) {
    return false;  // out of memory: the id stays allocated until Bye
  }
}

void BatchQueue::seal_locked() {
  if (!frees_.empty()) {
    wire::Instr free;
    free.kind = wire::InstrKind::Free;
    free.inputs = std::move(frees_);
    frees_.clear();
    open_.instrs.push_back(std::move(free));
  }
  if (!open_.instrs.empty()) sealed_.push_back(std::move(open_));
  open_ = Batch{};
  open_since_.reset();
}

void BatchQueue::seal() {
  std::lock_guard lock(mutex_);
  seal_locked();
}

std::optional<BatchQueue::Clock::time_point> BatchQueue::seal_if_due(
    Clock::time_point now, Clock::duration max_delay) {
  std::lock_guard lock(mutex_);
  if (!open_since_) return std::nullopt;
  const auto due = *open_since_ + max_delay;
  if (now < due) return due;
  seal_locked();
  return std::nullopt;
}

bool BatchQueue::pop(Batch& out) {
  std::lock_guard lock(mutex_);
  if (sealed_.empty()) return false;
  out = std::move(sealed_.front());
  sealed_.pop_front();
  return true;
}

void BatchQueue::close() noexcept {
  std::deque<Batch> drop;
  Batch open;
  ScopeRef scope;
  {
    std::lock_guard lock(mutex_);
    closed_ = true;
    drop.swap(sealed_);
    open = std::move(open_);
    open_ = Batch{};
    frees_.clear();
    open_since_.reset();
    scope = std::move(stream_scope_);
  }
}

bool BatchQueue::closed() const {
  std::lock_guard lock(mutex_);
  return closed_;
}

size_t BatchQueue::open_size() const {
  std::lock_guard lock(mutex_);
  return open_.instrs.size();
}

}  // namespace gt::client
