#include "client/internal/session.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>

#include <sys/eventfd.h>
#include <unistd.h>

#include <gt/error.h>

#include "client/internal/local_cluster.h"
#include "client/internal/scope.h"
#include "common/check.h"
#include "common/dtype_rules.h"
#include "common/env.h"
#include "common/logging.h"
#include "common/shape.h"
#include "common/transport.h"
#include "common/zero_copy.h"

namespace gt::client {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// How often the handshake looks at the local cluster's children.
constexpr milliseconds kStartupPoll{20};
// How long a Bye may wait in the socket at shutdown.
constexpr int kByeLingerMs = 200;
// Asynchronous errors kept until the next sync point.
constexpr size_t kMaxAsyncErrors = 64;
// Messages handled per loop turn before the IO thread looks at its queue again.
constexpr int kMaxReceivesPerTurn = 4096;

int64_t to_ms(Clock::duration d) {
  return std::chrono::duration_cast<milliseconds>(d).count();
}

std::string program_name() {
  const char* n = program_invocation_short_name;
  return n && *n ? n : "gt-client";
}

}  // namespace

SessionOptions SessionOptions::from_env() {
  // Read afresh at each session start: a program may start sessions with
  // other settings (GT_WORKERS, GT_DISPATCHER) after gt::shutdown().
  const Env e = read_env();
  SessionOptions o;
  o.endpoint = e.dispatcher;
  o.workers = e.workers;
  o.executable = e.executable;
  o.name = program_name();
  o.heartbeat_interval = milliseconds(e.heartbeat_interval_ms);
  o.heartbeat_timeout = milliseconds(e.heartbeat_timeout_ms);
  o.connect_timeout = milliseconds(e.connect_timeout_ms);
  o.batch_max_instructions = static_cast<size_t>(e.batch_max_instructions);
  o.batch_max_delay = std::chrono::microseconds(e.batch_max_delay_us);
  o.curve = curve_client_keys(e);
  return o;
}

// Removes a waiter from the table however the waiting call leaves.
class Session::WaiterGuard {
 public:
  WaiterGuard(Session& s, uint64_t request) : s_(s), request_(request) {}
  ~WaiterGuard() {
    std::lock_guard lock(s_.wait_mutex_);
    s_.waiters_.erase(request_);
  }
  WaiterGuard(const WaiterGuard&) = delete;
  WaiterGuard& operator=(const WaiterGuard&) = delete;

 private:
  Session& s_;
  uint64_t request_;
};

Session::Session(SessionOptions options)
    : options_(std::move(options)),
      log_(make_logger("client", /*register_globally=*/false)),
      context_(1),
      queue_(std::min(options_.batch_max_instructions, wire::kMaxInstructionsPerBatch - 1)) {
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0) {
    throw Error(detail::cat("[client] eventfd failed: ", std::strerror(errno)));
  }
  // One file pair per client process (several programs may share a base
  // path); the component stays CLIENT, the CLOCK event carries the pid.
  if (auto base = env_string("GT_INSTRUCTION_LOG")) {
    ilog_ = std::make_unique<InstructionLog>("CLIENT", *base,
                                             "client-" + std::to_string(::getpid()));
  }
}

std::shared_ptr<Session> Session::start(SessionOptions options) {
  if (options.endpoint) {
    try {
      check_endpoint(*options.endpoint);
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(std::string("[client.connect] ") + e.what());
    }
  } else if (!options.executable) {
    options.executable = find_executable(ExecutableSearch::from_process());
  }
  GT_CHECK(options.workers >= 1, "[client] a local cluster needs at least one worker, got ",
           options.workers);
  std::shared_ptr<Session> s(new Session(std::move(options)));
  s->io_thread_ = std::thread([raw = s.get()] { raw->io_main(); });
  std::exception_ptr failed;
  {
    std::unique_lock lock(s->wait_mutex_);
    s->wait_cv_.wait(lock, [&] { return s->state_ != State::Starting; });
    if (s->state_ == State::Failed) failed = s->fatal_;
  }
  if (failed) {
    s->close();
    std::rethrow_exception(failed);
  }
  s->log_->info("[client] session {} open: dispatcher={} workers={}", s->session_id_,
                s->endpoint_, s->workers_);
  return s;
}

Session::~Session() {
  close();
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

void Session::wake() noexcept {
  const uint64_t one = 1;
  // EAGAIN means the counter is already non-zero: the IO thread wakes anyway.
  [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof one);
}

void Session::check_usable() const {
  if (broken_.load(std::memory_order_acquire)) {
    std::exception_ptr e;
    {
      std::lock_guard lock(wait_mutex_);
      e = fatal_;
    }
    if (e) std::rethrow_exception(e);
  }
}

// Every instruction of a user thread enters the stream here, so this is where
// an Op takes its thread's signal scopes along (Note [lazy signal scopes] in
// scope.h); other kinds are scope-neutral.
void Session::issue(wire::Instr&& instr) {
  check_usable();
  const bool wake_io = instr.kind == wire::InstrKind::Op
                           ? queue_.push(std::move(instr), current_scope())
                           : queue_.push(std::move(instr));
  if (wake_io) wake();
}

void Session::issue(wire::Instr&& instr, zmq::message_t&& payload) {
  check_usable();
  if (queue_.push(std::move(instr), std::move(payload), current_scope())) wake();
}

void Session::release(wire::TensorId id) noexcept {
  if (queue_.push_free(id)) wake();
}

void Session::flush() {
  queue_.seal();
  wake();
}

uint64_t Session::register_waiter(Waiter& w) {
  const uint64_t request = next_request_.fetch_add(1, std::memory_order_relaxed);
  std::lock_guard lock(wait_mutex_);
  if (closed()) throw Error("[client] the session is shut down: no further operations");
  if (fatal_) std::rethrow_exception(fatal_);
  waiters_[request] = &w;
  return request;
}

void Session::wait(Waiter& w, std::string_view kind, uint64_t request) {
  const auto start = Clock::now();
  {
    // The IO thread completes every waiter: with the reply, or with an error
    // when the dispatcher goes silent for heartbeat_timeout or the session closes.
    std::unique_lock lock(wait_mutex_);
    wait_cv_.wait(lock, [&] { return w.done; });
  }
  if (ilog_) {
    RawEvent e;
    e.event = "WAIT";
    e.kind = kind;
    e.session = session_id_;
    e.req = request;
    e.dur_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count();
    ilog_->record_raw(e);
  }
}

void Session::throw_remote(std::vector<wire::FailureInfo> errors) {
  wire::FailureInfo first = std::move(errors.front());
  if (errors.size() > 1) {
    first.message += detail::cat(" (and ", errors.size() - 1,
                                 " more failure(s) since the previous sync)");
  }
  wire::throw_failure(first);
}

FetchResult Session::fetch(wire::TensorId id) {
  check_usable();
  Waiter w;
  const uint64_t request = register_waiter(w);
  WaiterGuard guard(*this, request);
  wire::Instr in;
  in.kind = wire::InstrKind::Fetch;
  in.inputs = {id};
  in.request = request;
  check_usable();
  queue_.push_and_seal(std::move(in));
  wake();
  wait(w, "Fetch", request);
  if (w.error) std::rethrow_exception(w.error);
  if (w.failure) {
    {
      std::lock_guard lock(wait_mutex_);
      thrown_by_fetch_.insert(w.failure->message);
    }
    wire::throw_failure(*w.failure);
  }
  std::vector<wire::FailureInfo> async;
  {
    std::lock_guard lock(wait_mutex_);
    async.swap(async_errors_);
  }
  if (!async.empty()) throw_remote(std::move(async));
  return std::move(w.fetched);
}

void Session::synchronize() {
  check_usable();
  Waiter w;
  const uint64_t request = register_waiter(w);
  WaiterGuard guard(*this, request);
  wire::Instr in;
  in.kind = wire::InstrKind::Sync;
  in.request = request;
  check_usable();
  queue_.push_and_seal(std::move(in));
  wake();
  wait(w, "Sync", request);
  if (w.error) std::rethrow_exception(w.error);
  std::vector<wire::FailureInfo> errors;
  {
    std::lock_guard lock(wait_mutex_);
    errors.swap(async_errors_);
    if (w.failure) errors.push_back(*w.failure);
    // A failure a fetch already threw is reported once, not again here.
    for (auto& f : w.sync_errors) {
      if (!thrown_by_fetch_.count(f.message)) errors.push_back(std::move(f));
    }
    thrown_by_fetch_.clear();
  }
  if (!errors.empty()) throw_remote(std::move(errors));
}

std::vector<wire::WorkerStatsInfo> Session::worker_stats() {
  check_usable();
  Waiter w;
  const uint64_t request = register_waiter(w);
  WaiterGuard guard(*this, request);
  check_usable();
  queue_.push_stats_request(request);
  wake();
  wait(w, "Stats", request);
  if (w.error) std::rethrow_exception(w.error);
  if (w.failure) wire::throw_failure(*w.failure);
  return std::move(w.worker_stats);
}

void Session::close() noexcept {
  std::lock_guard close_lock(close_mutex_);
  if (closed_.exchange(true, std::memory_order_acq_rel)) return;
  queue_.close();
  stop_.store(true, std::memory_order_release);
  wake();
  if (io_thread_.joinable()) io_thread_.join();
  {
    std::lock_guard lock(wait_mutex_);
    state_ = State::Stopped;
    auto e = std::make_exception_ptr(
        Error("[client] the session was shut down while waiting for a reply"));
    for (auto& [request, w] : waiters_) {
      if (!w->done) {
        w->error = e;
        w->done = true;
      }
    }
  }
  wait_cv_.notify_all();
}

SessionStats Session::stats() const {
  return SessionStats{batches_sent_.load(), instructions_sent_.load(),
                      heartbeats_sent_.load(), messages_received_.load()};
}

// ---- IO thread ------------------------------------------------------------------

void Session::io_main() {
  try {
    handshake();
  } catch (...) {
    auto e = std::current_exception();
    socket_.reset();
    if (cluster_) cluster_->stop();
    cluster_.reset();
    {
      std::lock_guard lock(wait_mutex_);
      fatal_ = e;
      broken_.store(true, std::memory_order_release);
      state_ = State::Failed;
    }
    wait_cv_.notify_all();
    return;
  }
  {
    std::lock_guard lock(wait_mutex_);
    state_ = State::Running;
  }
  wait_cv_.notify_all();

  try {
    serve();
  } catch (const std::exception& e) {
    log_->error("[client] IO thread failed: {}", e.what());
    fail_all(std::make_exception_ptr(
        TransportError(std::string("[client] the connection thread failed: ") + e.what())));
  } catch (...) {
    fail_all(std::make_exception_ptr(TransportError("[client] the connection thread failed")));
  }

  try {
    if (socket_ && !broken_.load()) {
      Frames bye;
      bye.push_back(wire::encode_bye(session_id_));
      socket_->set(zmq::sockopt::linger, kByeLingerMs);
      (void)try_send(bye);
    }
  } catch (const std::exception& e) {
    log_->debug("[client] Bye not sent: {}", e.what());
  }
  socket_.reset();
  if (cluster_) cluster_->stop();
  cluster_.reset();
  log_->info("[client] session {} closed", session_id_);
}

void Session::handshake() {
  if (!options_.endpoint) {
    LocalClusterOptions lo;
    lo.executable = *options_.executable;
    lo.workers = options_.workers;
    const unsigned hw = std::max(1u, std::thread::hardware_concurrency());
    lo.threads_per_worker = std::max(1, static_cast<int>(hw) / options_.workers);
    cluster_ = std::make_unique<LocalCluster>(lo);  // forks on this thread, on purpose
    endpoint_ = cluster_->endpoint();
  } else {
    endpoint_ = *options_.endpoint;
  }
  socket_ = std::make_unique<zmq::socket_t>(context_, zmq::socket_type::dealer);
  configure_socket(*socket_);
  socket_->set(zmq::sockopt::reconnect_ivl, 20);  // the local dispatcher binds late
  // A private cluster listens in a 0700 directory and runs plain.
  const CurveClientKeys* curve = !cluster_ && options_.curve ? &*options_.curve : nullptr;
  apply_curve(*socket_, curve);
  HandshakeMonitor handshake_monitor(context_, *socket_, curve != nullptr);
  socket_->connect(endpoint_);

  const uint32_t min_workers = cluster_ ? static_cast<uint32_t>(options_.workers) : 1;
  Frames hello;
  hello.push_back(wire::encode_hello(wire::Role::Client, "", 0, ::getpid(), options_.name,
                                     min_workers));
  send_frames(*socket_, hello);
  log_->debug("[client] Hello sent to {} min_workers={}", endpoint_, min_workers);

  const auto started = Clock::now();
  const auto deadline = started + options_.connect_timeout;
  zmq::pollitem_t items[] = {{socket_->handle(), 0, ZMQ_POLLIN, 0},
                             {nullptr, wake_fd_, ZMQ_POLLIN, 0}};
  while (true) {
    if (stop_.load()) throw Error("[client] shut down while connecting to " + endpoint_);
    while (auto frames = recv_frames(*socket_)) {
      const wire::Message* msg = nullptr;
      try {
        msg = wire::decode(frames->front());
      } catch (const ProtocolError& e) {
        log_->warn("[client] dropped a malformed message from {}: {}", endpoint_, e.what());
        continue;
      }
      if (const auto* w = msg->body_as_Welcome()) {
        session_id_ = w->session() ? w->session() : msg->session();
        workers_ = w->workers();
        last_send_ = last_recv_ = last_heartbeat_ = Clock::now();
        return;
      }
      if (const auto* e = msg->body_as_ErrorReply()) {
        wire::FailureInfo f = wire::to_failure_info(e->error());
        if (f.message.empty()) f.message = "[client] the dispatcher refused the session";
        wire::throw_failure(f);
      }
      log_->debug("[client] ignored {} before the Welcome", wire::body_name(msg->body_type()));
    }
    if (auto refused = handshake_monitor.failure()) {
      throw TransportError(detail::cat("[client] cannot connect to the dispatcher at ", endpoint_,
                                       ": ", *refused));
    }
    if (cluster_) {
      if (auto dead = cluster_->dead_child()) {
        throw TransportError(detail::cat(
            "[client] the local cluster failed to start: ", *dead,
            " before the dispatcher at ", endpoint_, " sent its Welcome"));
      }
    }
    const auto now = Clock::now();
    if (now >= deadline) {
      throw TransportError(detail::cat(
          "[client] no Welcome from the dispatcher at ", endpoint_, " within ",
          to_ms(now - started), " ms (GT_CONNECT_TIMEOUT_MS=", options_.connect_timeout.count(),
          cluster_ ? "); the local cluster's workers did not all register"
                   : "); is a dispatcher running there? (GT_DISPATCHER)",
          curve ? " CURVE is on: is GT_CURVE_SERVER_KEY the dispatcher's public key?" : ""));
    }
    const auto wait = std::min<Clock::duration>(deadline - now, kStartupPoll);
    zmq::poll(items, 2, std::chrono::ceil<milliseconds>(wait));
    if (items[1].revents & ZMQ_POLLIN) {
      uint64_t v;
      [[maybe_unused]] auto n = ::read(wake_fd_, &v, sizeof v);
    }
  }
}

void Session::serve() {
  zmq::pollitem_t items[] = {{socket_->handle(), 0, ZMQ_POLLIN, 0},
                             {nullptr, wake_fd_, ZMQ_POLLIN, 0}};
  const auto interval = options_.heartbeat_interval;
  const auto timeout = options_.heartbeat_timeout;
  auto next_child_check = Clock::now() + interval;
  while (!stop_.load(std::memory_order_acquire)) {
    for (int i = 0; i < kMaxReceivesPerTurn; ++i) {
      auto frames = recv_frames(*socket_);
      if (!frames) break;
      last_recv_ = Clock::now();
      messages_received_.fetch_add(1, std::memory_order_relaxed);
      handle(*frames);
    }

    auto now = Clock::now();
    const auto due = queue_.seal_if_due(now, options_.batch_max_delay);
    const bool broken = broken_.load(std::memory_order_acquire);
    if (!broken) {
      send_sealed();
      now = Clock::now();
      // Heartbeats keep both directions alive: the dispatcher must hear from us
      // (batches count), and we must hear from it, but it answers batches with
      // nothing, so a busy stream of ops still asks for a Heartbeat each interval.
      if (now >= heartbeat_due()) send_heartbeat();
      // Sending a long backlog can take a while: read what arrived meanwhile
      // before calling the dispatcher silent.
      if (now - last_recv_ >= timeout) {
        if (auto frames = recv_frames(*socket_)) {
          last_recv_ = Clock::now();
          messages_received_.fetch_add(1, std::memory_order_relaxed);
          handle(*frames);
          continue;
        }
      }
      if (now - last_recv_ >= timeout) {
        fail_all(std::make_exception_ptr(TransportError(detail::cat(
            "[client] dispatcher at ", endpoint_, " not responding for ",
            to_ms(now - last_recv_), " ms (GT_HEARTBEAT_TIMEOUT_MS=", timeout.count(), ")"))));
      } else if (cluster_ && now >= next_child_check) {
        next_child_check = now + interval;
        if (auto dead = cluster_->dead_dispatcher()) {
          fail_all(std::make_exception_ptr(TransportError(
              detail::cat("[client] the local dispatcher at ", endpoint_, " is gone: ", *dead))));
        }
      }
    } else {
      Batch dropped;
      while (queue_.pop(dropped)) {
      }
    }

    // Sleep until a message, a wake-up, the batch deadline or a liveness deadline.
    auto next = now + interval;
    if (!broken_.load(std::memory_order_acquire)) {
      next = std::min({heartbeat_due(), last_recv_ + timeout, next});
      if (cluster_) next = std::min(next, next_child_check);
    }
    if (due) next = std::min(next, *due);
    if (unsent_) next = std::min(next, now + milliseconds(1));
    const auto wait = std::max<Clock::duration>(next - Clock::now(), Clock::duration::zero());
    zmq::poll(items, 2, std::chrono::ceil<milliseconds>(wait));
    if (items[1].revents & ZMQ_POLLIN) {
      uint64_t v;
      [[maybe_unused]] auto n = ::read(wake_fd_, &v, sizeof v);
    }
  }
}

// Sends one message without blocking: false (nothing sent) when the socket's
// high-water mark is reached. ZeroMQ accepts the rest of a multipart message
// once it accepted the first frame.
bool Session::try_send(Frames& frames) {
  for (size_t i = 0; i < frames.size(); ++i) {
    const auto flags = i + 1 < frames.size() ? zmq::send_flags::sndmore | zmq::send_flags::dontwait
                                             : zmq::send_flags::dontwait;
    tsan::handing_over(frames[i]);  // Note [zero-copy frames and TSan]
    if (!socket_->send(frames[i], flags)) {
      if (i == 0) return false;
      throw TransportError(detail::cat("[client] could not send a batch to the dispatcher at ",
                                       endpoint_, ": the message was cut after frame ", i));
    }
  }
  return true;
}

// The IO thread never blocks on a full socket: a batch that does not fit waits
// in `unsent_` and is retried on the next turn (the loop polls every
// millisecond meanwhile), so heartbeat timeouts and waiters keep working.
void Session::send_sealed() {
  if (unsent_) {
    if (!try_send(*unsent_)) return;
    unsent_.reset();
    last_send_ = Clock::now();
  }
  Batch batch;
  while (queue_.pop(batch)) {
    Frames frames;
    if (batch.stats_request != 0) {
      frames.push_back(wire::encode_stats_request(session_id_, batch.stats_request));
      if (!try_send(frames)) {
        unsent_ = std::move(frames);
        return;
      }
      last_send_ = Clock::now();
      continue;
    }
    frames.reserve(1 + batch.payloads.size());
    frames.push_back(wire::encode_batch(session_id_, ++batch_seq_, batch.instrs));
    for (auto& p : batch.payloads) frames.push_back(std::move(p));
    if (ilog_) {
      RawEvent e;
      e.event = "SEND";
      e.kind = "Batch";
      e.session = session_id_;
      e.n = static_cast<int64_t>(batch.instrs.size());
      e.bytes = 0;
      for (const auto& f : frames) e.bytes += static_cast<int64_t>(f.size());
      ilog_->record_raw(e);
    }
    batches_sent_.fetch_add(1, std::memory_order_relaxed);
    instructions_sent_.fetch_add(batch.instrs.size(), std::memory_order_relaxed);
    SPDLOG_LOGGER_TRACE(log_, "[client] batch seq={} instructions={} frames={}", batch_seq_,
                        batch.instrs.size(), frames.size());
    if (!try_send(frames)) {
      unsent_ = std::move(frames);
      return;
    }
    last_send_ = Clock::now();
  }
}

Session::Clock::time_point Session::heartbeat_due() const {
  const auto interval = options_.heartbeat_interval;
  const auto quiet_in = std::max(last_recv_, last_heartbeat_) + interval;
  return std::min(last_send_ + interval, quiet_in);
}

void Session::send_heartbeat() {
  Frames hb;
  hb.push_back(wire::encode_heartbeat(session_id_));
  if (unsent_ || !try_send(hb)) return;  // the socket is full: that is traffic enough
  heartbeats_sent_.fetch_add(1, std::memory_order_relaxed);
  last_send_ = last_heartbeat_ = Clock::now();
}

void Session::handle(std::vector<zmq::message_t>& frames) {
  const wire::Message* msg = nullptr;
  try {
    msg = wire::decode(frames.front());
  } catch (const ProtocolError& e) {
    log_->warn("[client] dropped a malformed message from {}: {}", endpoint_, e.what());
    if (ilog_) ilog_->record("ERROR", "Malformed", "", std::string("what=") + e.what());
    return;
  }
  if (ilog_ && msg->body_type() != wire::Body::Heartbeat) {
    RawEvent e;
    e.event = "RECV";
    e.kind = wire::body_name(msg->body_type());
    e.session = session_id_;
    e.req = wire::reply_request(*msg);
    e.bytes = 0;
    for (const auto& f : frames) e.bytes += static_cast<int64_t>(f.size());
    ilog_->record_raw(e);
  }
  switch (msg->body_type()) {
    case wire::Body::Heartbeat:
      return;
    case wire::Body::FetchReply: {
      const auto* r = msg->body_as_FetchReply();
      std::lock_guard lock(wait_mutex_);
      auto it = waiters_.find(r->request());
      if (it == waiters_.end()) {
        log_->debug("[client] fetch reply for unknown req={}", r->request());
        return;
      }
      Waiter& w = *it->second;
      try {
        GT_CHECK(frames.size() == 2, "expected a header and one data frame, got ",
                 frames.size(), " frames");
        GT_CHECK(valid_dtype_code(r->dtype()), "dtype code ", int{r->dtype()},
                 " is out of range");
        const auto shape = wire::view(r->shape());
        const DType dtype = static_cast<DType>(r->dtype());
        const int64_t n = checked_numel(shape);
        const int64_t bytes = n * element_size(dtype);
        GT_CHECK(static_cast<int64_t>(frames[1].size()) == bytes, "data frame of ",
                 frames[1].size(), " bytes for ", shape_str(shape), " ", to_string(dtype),
                 ", expected ", bytes);
        w.fetched.dtype = dtype;
        w.fetched.shape.assign(shape.begin(), shape.end());
        w.fetched.data = std::move(frames[1]);
      } catch (const std::exception& e) {
        w.error = std::make_exception_ptr(ProtocolError(detail::cat(
            "[client] bad fetch reply for tensor ", r->tensor(), " (req=", r->request(),
            ") from ", endpoint_, ": ", e.what())));
      }
      w.done = true;
      break;
    }
    case wire::Body::SyncReply: {
      const auto* r = msg->body_as_SyncReply();
      std::lock_guard lock(wait_mutex_);
      auto it = waiters_.find(r->request());
      if (it == waiters_.end()) {
        log_->debug("[client] sync reply for unknown req={}", r->request());
        return;
      }
      Waiter& w = *it->second;
      if (r->errors()) {
        for (const auto* f : *r->errors()) w.sync_errors.push_back(wire::to_failure_info(f));
      }
      w.done = true;
      break;
    }
    case wire::Body::StatsReply: {
      const auto* r = msg->body_as_StatsReply();
      std::lock_guard lock(wait_mutex_);
      auto it = waiters_.find(r->request());
      if (it == waiters_.end()) {
        log_->debug("[client] stats reply for unknown req={}", r->request());
        return;
      }
      Waiter& w = *it->second;
      if (r->workers()) {
        for (const auto* entry : *r->workers()) {
          w.worker_stats.push_back(wire::to_worker_stats(entry));
        }
      }
      w.done = true;
      break;
    }
    case wire::Body::ErrorReply: {
      const auto* r = msg->body_as_ErrorReply();
      wire::FailureInfo f = wire::to_failure_info(r->error());
      std::lock_guard lock(wait_mutex_);
      if (r->request() == 0) {
        SPDLOG_LOGGER_DEBUG(log_, "[client] asynchronous error: {}", f.message);
        if (async_errors_.size() < kMaxAsyncErrors) async_errors_.push_back(std::move(f));
        return;
      }
      auto it = waiters_.find(r->request());
      if (it == waiters_.end()) {
        log_->debug("[client] error reply for unknown req={}: {}", r->request(), f.message);
        return;
      }
      it->second->failure = std::move(f);
      it->second->done = true;
      break;
    }
    case wire::Body::Bye:
      // The dispatcher is shutting down (SIGTERM): every wait fails now, as
      // does every later call, instead of timing out.
      fail_all(std::make_exception_ptr(TransportError(detail::cat(
          "[client] the dispatcher at ", endpoint_, " shut down and closed session ",
          msg->session(), "; reconnect when it is back"))));
      return;
    default:
      log_->debug("[client] ignored an unexpected {} from the dispatcher",
                  wire::body_name(msg->body_type()));
      return;
  }
  wait_cv_.notify_all();
}

void Session::fail_all(std::exception_ptr error) noexcept {
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    log_->error("{}", e.what());
  } catch (...) {
  }
  {
    std::lock_guard lock(wait_mutex_);
    if (!fatal_) fatal_ = error;
    broken_.store(true, std::memory_order_release);
    for (auto& [request, w] : waiters_) {
      if (!w->done) {
        w->error = fatal_;
        w->done = true;
      }
    }
  }
  wait_cv_.notify_all();
}

}  // namespace gt::client
