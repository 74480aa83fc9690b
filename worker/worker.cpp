#include "worker/worker.h"

#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cctype>
#include <cerrno>
#include <condition_variable>
#include <csignal>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <thread>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <zmq.hpp>

#include <gt/error.h>

#include "common/check.h"
#include "common/env.h"
#include "common/instruction_log.h"
#include "common/logging.h"
#include "common/security.h"
#include "common/transport.h"
#include "common/wire.h"
#include "common/zero_copy.h"
#include "worker/collectives/communicators.h"
#include "worker/collectives/dispatcher_store.h"
#include "worker/fair_queue.h"
#include "worker/executor.h"

namespace gt::worker {

namespace {

// Set by run_worker_main's SIGTERM/SIGINT handler; every worker's IO loop
// watches it. A lock-free atomic is async-signal-safe.
std::atomic<bool> g_signal_stop{false};
static_assert(std::atomic<bool>::is_always_lock_free);

extern "C" void on_stop_signal(int) { g_signal_stop.store(true); }

// The IO loop wakes at least this often to check stop flags and timers.
constexpr std::chrono::milliseconds kPollInterval{50};
// Messages read from one socket before looking at the other, so a flood of
// batches cannot starve replies (or the reverse).
constexpr int kMaxDrain = 256;
// How long the executor's reply send waits on a full pipe before checking
// whether it should give up (shutdown).
constexpr int kReplySendTimeoutMs = 100;

// zmq::poll that reports an interrupting signal (EINTR) as false instead of
// throwing, so SIGTERM ends the loop through the flag.
bool poll(zmq::pollitem_t* items, size_t n, std::chrono::milliseconds timeout) {
  try {
    zmq::poll(items, n, timeout);
    return true;
  } catch (const zmq::error_t& e) {
    if (e.num() == EINTR) return false;
    throw;
  }
}

// recv_frames that treats an interrupting signal like "nothing waiting".
std::optional<Frames> try_recv(zmq::socket_t& s) {
  try {
    return recv_frames(s, true);
  } catch (const zmq::error_t& e) {
    if (e.num() == EINTR) return std::nullopt;
    throw;
  }
}

at::Device parse_device(const std::string& device) {
  if (device == "cpu") return at::kCPU;
  const std::string_view prefix = "cuda:";
  const bool digits = device.size() > prefix.size() && device.size() <= prefix.size() + 4 &&
                      std::all_of(device.begin() + prefix.size(), device.end(),
                                  [](unsigned char c) { return std::isdigit(c); });
  GT_CHECK(device.rfind(prefix, 0) == 0 && digits, "[worker] invalid device '", device,
           "': expected cpu or cuda:N");
  const int n = std::stoi(device.substr(prefix.size()));
  GT_CHECK(at::hasCUDA(), "[worker] device ", device,
           " requested but this gt worker's LibTorch has no CUDA support");
  const size_t count = at::getNumGPUs();
  GT_CHECK(static_cast<size_t>(n) < count, "[worker] device ", device, " requested but ", count,
           " CUDA device(s) are visible");
  return at::Device(at::kCUDA, static_cast<at::DeviceIndex>(n));
}

uint64_t host_memory_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? static_cast<uint64_t>(pages) * static_cast<uint64_t>(page) : 0;
}

// Note [store mailbox]
// The executor thread uses the dispatcher's rendezvous store while it
// creates a communicator (Note [communicator cache] in
// worker/collectives/communicators.cpp), but the DEALER socket to the
// dispatcher belongs to the IO thread. So the store's StoreSet and StoreGet
// headers go out through the executor's reply pipe (the IO thread forwards
// whatever the executor pushes, in order), and the IO thread puts every
// StoreReply it receives into a StoreMailbox, where the store waits for it
// (DispatcherStore matches replies to its requests and skips stale ones).
// A StoreSet the dispatcher refuses (its store is full) is answered with an
// ErrorReply that the IO thread only logs; the rendezvous then times out
// naming the ranks whose keys are missing. The mailbox's wait also ends when
// the worker stops: a stop() during a rendezvous is prompt. A stop() during a
// collective's transfer waits for the collective's timeout at worst
// (GT_COLLECTIVE_TIMEOUT_MS): Gloo's waits cannot be interrupted from another
// thread. Peers of a worker that goes away see their connections close and
// fail at once.
class StoreMailbox {
 public:
  /// IO thread: a StoreReply header from the dispatcher.
  void push(zmq::message_t header) {
    {
      std::lock_guard lock(mutex_);
      // Only answers to the store's own requests arrive, but one that came
      // after its request gave up stays until the next wait: bound them.
      if (replies_.size() >= kMaxReplies) replies_.pop_front();
      replies_.push_back(std::move(header));
    }
    ready_.notify_all();
  }

  /// Executor thread: the next reply, waiting up to `timeout`; nullopt when
  /// none came. Throws gt::TransportError once the worker is stopping.
  std::optional<zmq::message_t> pop(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    ready_.wait_for(lock, timeout, [&] { return closed_ || !replies_.empty(); });
    if (closed_) {
      throw TransportError(
          "[worker.store] the worker is stopping: gave up waiting for the dispatcher's "
          "rendezvous store");
    }
    if (replies_.empty()) return std::nullopt;
    zmq::message_t header = std::move(replies_.front());
    replies_.pop_front();
    return header;
  }

  /// Any thread: ends every wait, now and later.
  void close() {
    {
      std::lock_guard lock(mutex_);
      closed_ = true;
    }
    ready_.notify_all();
  }

 private:
  static constexpr size_t kMaxReplies = 64;
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<zmq::message_t> replies_;  // guarded by mutex_
  bool closed_ = false;                 // guarded by mutex_
};

// The executor thread's side of Note [store mailbox].
class WorkerStoreTransport final : public collectives::StoreTransport {
 public:
  WorkerStoreTransport(const ReplySink& sink, StoreMailbox& mailbox)
      : sink_(sink), mailbox_(mailbox) {}
  void send(zmq::message_t header) override {
    Frames frames;
    frames.push_back(std::move(header));
    sink_(std::move(frames));
  }
  std::optional<zmq::message_t> receive(std::chrono::milliseconds timeout) override {
    return mailbox_.pop(timeout);
  }

 private:
  const ReplySink& sink_;  // the executor thread's reply pipe; outlives the store
  StoreMailbox& mailbox_;
};

// Whether a message holds a collective (Note [fair scheduling]).
bool holds_collective(const wire::Message& msg) {
  const wire::Batch* batch = msg.body_as_Batch();
  if (!batch || !batch->instructions()) return false;
  for (const auto* in : *batch->instructions()) {
    if (in->kind() == wire::InstrKind::Collective) return true;
  }
  return false;
}

// What the IO thread hands the executor thread, in stream order.
struct Item {
  Frames frames;       // a verified Batch, Bye or StatsRequest (header + data frames)
  bool reset = false;  // (re-)registered: drop every session, take `index`
  int index = -1;
};

// Note [worker events]: the log and TraceControl flags the executor should
// use. Not queued with the messages: a worker far behind (a client that ran
// ahead) must start producing STATS now, not after its backlog.
struct TraceConfig {
  std::shared_ptr<InstructionLog> log;
  bool events = false, stats = false;
};

// Note [worker events]
// A worker's instruction log ("WORKER n") exists from its Welcome on: with
// files when GT_INSTRUCTION_LOG is set, and with a tap while the dispatcher
// says (TraceControl) that someone subscribes to its event stream (Note
// [event stream] in dispatcher/dispatcher.cpp). The IO thread logs RECV per
// batch; the executor logs an event per instruction (EXEC/FREE/FETCH/SYNC,
// with its duration) when events are wanted, and otherwise only times
// instructions per category while STATS are wanted; the compile service logs
// HOTPATH and COMPILE. The tap runs on the log's writer thread and hands
// JSON chunks to the IO thread (trace_chunks), which sends them to the
// dispatcher as TraceEvents. A TraceControl reaches the executor as a
// TraceConfig it checks between messages (not in the message queue, which may
// hold a long backlog). While STATS are wanted the executor thread records a
// STATS event every kStatsPeriod, between messages (so a long instruction
// delays it, never the reverse). With no files and no subscriber, nothing is
// recorded and nothing is timed.
constexpr auto kStatsPeriod = std::chrono::milliseconds(250);

// The details of a worker's STATS event (docs/instruction_log.md, "Events").
std::string stats_details(const Executor& executor, const jit::CompileService* jit,
                          const std::string& device, size_t queued, double seconds,
                          uint64_t instructions_delta,
                          const std::array<int64_t, Executor::kUtilCategories>& busy_delta) {
  char buf[128];
  std::string out = "device=" + device + " sessions=" + std::to_string(executor.session_count()) +
                    " tensors=" + std::to_string(executor.tensor_count()) +
                    " bytes=" + std::to_string(executor.tensor_bytes()) +
                    " queue=" + std::to_string(queued) +
                    " instructions=" + std::to_string(executor.instructions_executed());
  const double dt = std::max(seconds, 1e-6);
  int64_t busy = 0;
  for (int64_t b : busy_delta) busy += b;
  std::snprintf(buf, sizeof buf, " ops_per_s=%.1f busy=%.3f", instructions_delta / dt,
                std::min(1.0, busy * 1e-9 / dt));
  out += buf;
  std::string util;
  for (int i = 0; i < Executor::kUtilCategories; ++i) {
    if (busy_delta[i] <= 0) continue;
    std::snprintf(buf, sizeof buf, "%s%.*s:%.3f", util.empty() ? "" : ",",
                  static_cast<int>(Executor::util_category(i).size()),
                  Executor::util_category(i).data(), busy_delta[i] * 1e-9 / dt);
    util += buf;
  }
  if (!util.empty()) out += " util=" + util;
  if (jit) {
    std::string chains;
    for (const jit::UnitSummary& u : jit->unit_summaries()) {
      char speed[32] = "-";
      if (u.speedup >= 0) std::snprintf(speed, sizeof speed, "%.2f", u.speedup);
      if (!chains.empty()) chains += ',';
      chains += jit::sequence_name(u.digest);
      chains += ':';
      chains += std::to_string(u.ops);
      chains += ':';
      chains += speed;
      chains += ':';
      chains += u.state;
    }
    if (!chains.empty()) out += " chains=" + chains;
  }
  return out;
}

// This worker's StatsReply for `session`: the executor's counters and the
// JIT's (zeros when the JIT is off). Runs on the executor thread, so it sees
// every batch received before the request (Note [stats gathering] in
// dispatcher/dispatcher.cpp).
zmq::message_t stats_reply(const Executor& executor, const jit::CompileService* jit,
                           const std::string& device, uint64_t session, uint64_t request) {
  wire::WorkerStatsInfo w;
  w.worker = executor.worker_index();
  w.device = device;
  w.sessions = executor.session_count();
  w.session_tensors = executor.tensor_count(session);
  w.tensors = executor.tensor_count();
  w.instructions = executor.instructions_executed();
  w.session_bytes = executor.session_bytes(session);
  w.tensor_bytes = executor.tensor_bytes();
  if (jit) {
    const jit::JitStats j = jit->stats();
    w.jit_enabled = true;
    w.jit_detected = j.detected;
    w.jit_compiled = j.compiled;
    w.jit_cache_hits = j.cache_hits;
    w.jit_failures = j.failures;
    w.jit_duplicates = j.duplicates;
    w.jit_runs = j.runs;
    w.jit_dropped = j.dropped;
    w.jit_fallbacks = j.fallbacks;
    w.jit_limited = j.limited;
    w.jit_elided_runs = j.elided_runs;
  }
  return wire::encode_stats_reply(session, request, std::span(&w, 1));
}

}  // namespace

void check_device(const std::string& device) { parse_device(device); }

struct Worker::Impl {
  explicit Impl(WorkerOptions o)
      : options(std::move(o)), device(parse_device(options.device)), log(make_logger("worker")) {
    check_endpoint(options.dispatcher);
    GT_CHECK(options.threads >= 0 && options.threads <= 4096,
             "[worker] threads must be in [0, 4096] (0 = LibTorch's default), got ",
             options.threads);
    if (options.name.empty()) options.name = "worker-" + std::to_string(getpid());
    capacity_bytes = device.is_cpu() ? host_memory_bytes() : 0;
    curve = curve_client_keys(env());  // a bad key file fails here, before any thread
    reply_endpoint =
        "inproc://gt-worker-replies-" + std::to_string(reinterpret_cast<uintptr_t>(this));
  }

  bool stopping() const {
    return stop_requested.load(std::memory_order_relaxed) ||
           g_signal_stop.load(std::memory_order_relaxed);
  }

  void io_main();
  void io_loop(zmq::socket_t& pull);
  void executor_main();
  void push_item(Item item);

  WorkerOptions options;
  at::Device device;
  uint64_t capacity_bytes = 0;
  std::optional<CurveClientKeys> curve;  // GT_CURVE_SERVER_KEY / GT_CURVE_CLIENT_KEY
  std::shared_ptr<spdlog::logger> log;
  std::string reply_endpoint;
  zmq::context_t context{1};

  std::atomic<bool> stop_requested{false};
  std::atomic<int> index{-1};
  std::atomic<bool> is_registered{false};

  std::mutex queue_mutex;
  std::condition_variable queue_cv;
  std::deque<Item> queue;                      // guarded by queue_mutex
  TraceConfig trace_config;                    // guarded by queue_mutex
  std::atomic<bool> trace_changed{false};      // set under queue_mutex; read without it first
  bool executor_stop = false;                  // guarded by queue_mutex
  std::atomic<bool> executor_stopping{false};  // lets a blocked reply send give up

  // Note [worker events]; the IO thread owns ilog and the flags. ilog comes
  // after what its tap uses, so it is destroyed (and drained) first.
  bool trace_events = false, trace_stats = false;
  std::mutex trace_mutex;
  std::vector<InstructionLog::TapChunk> trace_chunks;  // guarded by trace_mutex
  static constexpr size_t kMaxTraceChunks = 256;       // beyond: dropped (slow dispatcher)
  std::shared_ptr<InstructionLog> ilog;
  void open_instruction_log(int worker);
  void set_trace(bool events, bool stats);

  StoreMailbox store_replies;  // Note [store mailbox]: IO thread pushes, executor thread waits

  std::mutex thread_mutex;            // guards io_thread (start/join) and fatal
  std::thread io_thread;              // started by start(), joined by wait() or the destructor
  std::thread executor_thread;        // io thread only: started and joined by io_main
  std::exception_ptr fatal;           // io thread writes before exiting; read after join
  std::exception_ptr executor_fatal;  // guarded by queue_mutex
};

void Worker::Impl::open_instruction_log(int worker) {
  const std::string component = "WORKER " + std::to_string(worker);
  if (ilog && ilog->component() == component) return;
  ilog.reset();
  try {
    ilog = InstructionLog::from_env(component);
  } catch (const std::exception& e) {
    // A bad GT_INSTRUCTION_LOG must not take the worker down: no files.
    log->error("[worker] {}; this worker writes no instruction log", e.what());
  }
  if (!ilog) ilog = std::make_shared<InstructionLog>(component, "");
}

void Worker::Impl::set_trace(bool events, bool stats) {
  trace_events = events;
  trace_stats = stats;
  if (events || stats) {
    ilog->set_tap([this](InstructionLog::TapChunk&& chunk) {
      std::lock_guard lock(trace_mutex);
      if (trace_chunks.size() < kMaxTraceChunks) trace_chunks.push_back(std::move(chunk));
    });
  } else {
    ilog->set_tap({});
  }
  {
    std::lock_guard lock(queue_mutex);
    trace_config = TraceConfig{ilog, events, stats};
    trace_changed = true;
  }
  queue_cv.notify_one();
}

void Worker::Impl::push_item(Item item) {
  {
    std::lock_guard lock(queue_mutex);
    queue.push_back(std::move(item));
  }
  queue_cv.notify_one();
}

void Worker::Impl::executor_main() {
  try {
    if (options.threads > 0) at::set_num_threads(options.threads);
    zmq::socket_t push(context, zmq::socket_type::push);
    configure_socket(push);
    push.set(zmq::sockopt::sndtimeo, kReplySendTimeoutMs);
    push.connect(reply_endpoint);

    // Replies go to the IO thread in order; at shutdown a send stuck on a
    // full pipe gives up instead of blocking the join.
    const ReplySink sink = [&](Frames&& frames) {
      if (frames.empty()) return;
      for (auto& f : frames) tsan::handing_over(f);  // Note [zero-copy frames and TSan]
      const auto first = frames.size() > 1 ? zmq::send_flags::sndmore : zmq::send_flags::none;
      for (;;) {
        try {
          if (push.send(frames[0], first)) break;
        } catch (const zmq::error_t& e) {
          if (e.num() != EINTR) throw;
        }
        if (executor_stopping.load(std::memory_order_relaxed)) return;
      }
      for (size_t i = 1; i < frames.size(); ++i) {
        const auto flags = i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none;
        (void)push.send(frames[i], flags);  // later parts of a message are never refused
      }
    };

    // The JIT's compile thread lives as long as this executor (Note [JIT stages]).
    std::shared_ptr<jit::CompileService> jit;
    const jit::JitOptions jit_options = jit::jit_options_from_env();
    if (jit_options.enabled()) {
      jit = std::make_shared<jit::CompileService>(jit_options, index.load(), log);
      log->info("[worker] JIT on: {} threshold={} cache={}",
                jit_options.compile_all ? "GT_COMPILE" : "GT_AUTO_COMPILE",
                jit_options.detector_threshold(),
                jit_options.cache_dir.empty() ? jit::default_cache_dir().string()
                                              : jit_options.cache_dir.string());
    }
    // Note [store mailbox]; the communicators are made on the executor
    // thread, through the sink above (declared first, so it outlives them).
    const Env& settings = env();
    auto store = std::make_shared<collectives::DispatcherStore>(
        std::make_unique<WorkerStoreTransport>(sink, store_replies));
    const std::string collective_host =
        settings.collective_host.value_or(
            collectives::default_collective_host(options.dispatcher));
    // A CUDA worker's collectives move its device's memory with NCCL; a CPU
    // worker's go over Gloo.
    const std::chrono::milliseconds collective_timeout(settings.collective_timeout_ms);
    auto communicators = std::make_shared<collectives::CommunicatorProvider>(
        device.is_cuda()
            ? collectives::nccl_communicator_factory(std::move(store), device.index(),
                                                     collective_timeout)
            : collectives::gloo_communicator_factory(std::move(store), collective_host,
                                                     collective_timeout),
        [this] { return executor_stopping.load(std::memory_order_relaxed); });
    Executor executor(ExecutorOptions{index.load(), device, capacity_bytes, log, jit,
                                      std::move(communicators),
                                      static_cast<uint64_t>(settings.session_memory_limit)});
    std::deque<Item> work;
    // Note [worker events]: STATS while the dispatcher asks for them.
    std::shared_ptr<InstructionLog> ilog;
    bool want_stats = false;
    auto next_stats = std::chrono::steady_clock::now();
    auto last_stats = next_stats;
    uint64_t last_instructions = 0;
    std::array<int64_t, Executor::kUtilCategories> last_busy{};
    // Checked between messages too: a client far ahead queues many batches
    // at once, and STATS must keep coming while the worker works them off.
    // Takes a new TraceConfig from the IO thread, if there is one.
    const auto apply_trace = [&] {
      if (!trace_changed.load(std::memory_order_relaxed)) return;  // once per message
      TraceConfig config;
      {
        std::lock_guard lock(queue_mutex);
        trace_changed = false;
        config = trace_config;
      }
      ilog = config.log;
      const bool events = ilog && (ilog->has_files() || config.events);
      executor.set_instruction_log(ilog, events, config.stats);
      if (jit) jit->set_instruction_log(ilog, events);
      const bool was = want_stats;
      want_stats = ilog && config.stats;
      if (want_stats && !was) {
        last_stats = std::chrono::steady_clock::now();
        next_stats = last_stats + kStatsPeriod;
        last_instructions = executor.instructions_executed();
        last_busy = executor.busy_ns();
      }
    };
    // `unprocessed`: messages taken from the queue but not run yet.
    const auto maybe_record_stats = [&](size_t unprocessed) {
      apply_trace();
      const auto now = std::chrono::steady_clock::now();
      if (!want_stats || now < next_stats) return;
      size_t queued = unprocessed;
      {
        std::lock_guard lock(queue_mutex);
        queued += queue.size();
      }
      std::array<int64_t, Executor::kUtilCategories> busy = executor.busy_ns();
      for (int i = 0; i < Executor::kUtilCategories; ++i) busy[i] -= last_busy[i];
      ilog->record("STATS", "Worker", "",
                   stats_details(executor, jit.get(), options.device, queued,
                                 std::chrono::duration<double>(now - last_stats).count(),
                                 executor.instructions_executed() - last_instructions, busy));
      last_stats = now;
      next_stats = now + kStatsPeriod;
      last_instructions = executor.instructions_executed();
      last_busy = executor.busy_ns();
    };
    // Note [fair scheduling] (worker/fair_queue.h): messages wait here by
    // session; one runs per turn, and new arrivals are taken in between so a
    // client's step does not wait behind another client's backlog.
    FairQueue<Item> pending;
    for (;;) {
      {
        std::unique_lock lock(queue_mutex);
        const auto ready = [&] { return executor_stop || !queue.empty() || trace_changed; };
        if (!pending.empty()) {
          // Work is waiting: take what arrived, without sleeping.
        } else if (want_stats) {
          queue_cv.wait_until(lock, next_stats, ready);
        } else {
          queue_cv.wait(lock, ready);
        }
        if (executor_stop) break;
        work.swap(queue);
      }
      apply_trace();
      for (Item& item : work) {
        if (item.reset) {
          if (executor.session_count() > 0 || !pending.empty()) {
            log->warn("[worker] dropping {} sessions and {} queued messages: registered again as "
                      "worker={}",
                      executor.session_count(), pending.size(), item.index);
          }
          pending.clear();
          executor.drop_all_sessions();
          executor.set_worker_index(item.index);
          continue;
        }
        // The IO thread verified the header.
        const wire::Message* msg = wire::GetMessage(item.frames[0].data());
        const uint64_t session = msg->session();
        const bool collective = holds_collective(*msg);
        pending.push(session, std::move(item), collective);
      }
      work.clear();
      if (executor_stopping.load(std::memory_order_relaxed)) continue;
      if (auto next = pending.pop()) {
        Item& item = next->second;
        const wire::Message* msg = wire::GetMessage(item.frames[0].data());
        if (msg->body_type() == wire::Body::StatsRequest) {
          executor.flush_held(msg->session(), sink);
          Frames reply;
          reply.push_back(stats_reply(executor, jit.get(), options.device, msg->session(),
                                      msg->body_as_StatsRequest()->request()));
          sink(std::move(reply));
        } else {
          executor.handle_verified(*msg, std::span(item.frames).subspan(1), sink, &item.frames[0]);
        }
      }
      maybe_record_stats(pending.size());
    }
  } catch (...) {
    std::lock_guard lock(queue_mutex);
    executor_fatal = std::current_exception();
    stop_requested.store(true);
  }
}

void Worker::Impl::io_main() {
  try {
    zmq::socket_t pull(context, zmq::socket_type::pull);
    configure_socket(pull);
    pull.bind(reply_endpoint);  // before the executor's PUSH connects
    executor_thread = std::thread([this] { executor_main(); });

    try {
      io_loop(pull);
    } catch (...) {
      fatal = std::current_exception();
    }

    // Shutdown: stop the executor and join it. Its reply sends give up once
    // executor_stopping is set, so a full pipe cannot block the join, and a
    // wait for the rendezvous store ends (Note [store mailbox]).
    executor_stopping.store(true);
    store_replies.close();
    {
      std::lock_guard lock(queue_mutex);
      executor_stop = true;
    }
    queue_cv.notify_all();
    executor_thread.join();
    std::lock_guard lock(queue_mutex);
    if (!fatal && executor_fatal) fatal = executor_fatal;
  } catch (...) {
    if (!fatal) fatal = std::current_exception();
  }
  is_registered.store(false);
  index.store(-1);
  if (ilog) ilog->set_tap({});
  log->info("[worker] stopped dispatcher={} dev={}", options.dispatcher, options.device);
}

void Worker::Impl::io_loop(zmq::socket_t& pull) {
  const Env& e = env();
  const int64_t heartbeat_interval = e.heartbeat_interval_ms;
  const int64_t heartbeat_timeout = e.heartbeat_timeout_ms;
  const int64_t give_up_after = std::max(e.connect_timeout_ms, heartbeat_timeout);

  std::optional<zmq::socket_t> dealer;
  std::optional<HandshakeMonitor> handshake;  // of `dealer`; destroyed before it
  bool registered = false;
  int64_t last_heard = now_ms();
  int64_t last_hello = 0;
  int64_t last_heartbeat = 0;

  auto send = [&](Frames frames, const char* what) {
    bool sent = false;
    try {
      sent = send_frames(*dealer, frames);
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) throw;
    }
    if (!sent) {
      log->warn(
          "[worker] dropped a {} to the dispatcher: its queue is full "
          "(dispatcher={} unreachable?)",
          what, options.dispatcher);
    }
  };
  auto send_one = [&](zmq::message_t msg, const char* what) {
    Frames frames;
    frames.push_back(std::move(msg));
    send(std::move(frames), what);
  };
  // A fresh socket: a restarted dispatcher sees a new peer, and anything still
  // queued for the old one is dropped.
  auto hello = [&] {
    handshake.reset();
    dealer.emplace(context, zmq::socket_type::dealer);
    configure_socket(*dealer);
    dealer->set(zmq::sockopt::sndtimeo, 0);
    apply_curve(*dealer, curve ? &*curve : nullptr);
    handshake.emplace(context, *dealer, curve.has_value());
    dealer->connect(options.dispatcher);
    send_one(wire::encode_hello(wire::Role::Worker, options.device, capacity_bytes, getpid(),
                                options.name, 0),
             "Hello");
    last_hello = now_ms();
  };

  log->info("[worker] starting dispatcher={} dev={} threads={} name={}", options.dispatcher,
            options.device, options.threads, options.name);
  if (options.device == "cpu" && !std::getenv("OMP_WAIT_POLICY")) {
    // Note [worker thread pools] in common/env.h.
    log->info("[worker] OMP_WAIT_POLICY is unset: LibTorch's threads spin between ops; when "
              "this worker shares cores with clients or a dispatcher, start it with "
              "OMP_WAIT_POLICY=PASSIVE OPENBLAS_THREAD_TIMEOUT=10 (local clusters do)");
  }
  hello();

  while (!stopping()) {
    // A dispatcher that refuses this worker's key (or speaks another security
    // mechanism) will not change its mind: say why instead of retrying.
    if (auto refused = handshake->failure()) {
      throw TransportError(gt::detail::cat("[worker] the dispatcher at ", options.dispatcher,
                                           " refused this worker: ", *refused));
    }
    zmq::pollitem_t items[] = {{dealer->handle(), 0, ZMQ_POLLIN, 0},
                               {pull.handle(), 0, ZMQ_POLLIN, 0}};
    if (!poll(items, 2, kPollInterval)) continue;  // a signal: look at the flags

    // Replies from the executor go out first.
    if (items[1].revents & ZMQ_POLLIN) {
      for (int i = 0; i < kMaxDrain; ++i) {
        auto frames = try_recv(pull);
        if (!frames) break;
        send(std::move(*frames), "reply");
      }
    }

    if (items[0].revents & ZMQ_POLLIN) {
      for (int i = 0; i < kMaxDrain; ++i) {
        auto frames = try_recv(*dealer);
        if (!frames) break;
        last_heard = now_ms();
        const wire::Message* msg = nullptr;
        try {
          msg = wire::decode((*frames)[0]);
        } catch (const std::exception& ex) {
          log->warn("[worker] malformed message from the dispatcher: {}", ex.what());
          send_one(wire::encode_error_reply(
                       0, 0, wire::failure(Status::Malformed, ex.what(), index.load())),
                   "ErrorReply");
          continue;
        }
        if (msg->body_type() == wire::Body::Bye && msg->session() == 0) {
          // Note [dispatcher shutdown] in dispatcher/dispatcher.cpp: the
          // sessions are over; look for a dispatcher again right away.
          if (registered) {
            log->info("[worker] the dispatcher shut down: dropping worker={}'s sessions, "
                      "registering again when it is back",
                      index.load());
            registered = false;
            is_registered.store(false);
            Item reset;
            reset.reset = true;
            reset.index = -1;
            push_item(std::move(reset));
            hello();
          }
          continue;
        }
        switch (msg->body_type()) {
          case wire::Body::Batch:
          case wire::Body::Bye:
          case wire::Body::StatsRequest:  // answered in stream order by the executor thread
            if (registered) {
              if (msg->body_type() == wire::Body::Batch && ilog &&
                  (trace_events || ilog->has_files())) {
                RawEvent e;
                e.event = "RECV";
                e.kind = "Batch";
                e.session = msg->session();
                const auto* instrs = msg->body_as_Batch()->instructions();
                e.n = instrs ? static_cast<int64_t>(instrs->size()) : 0;
                e.bytes = 0;
                for (const auto& f : *frames) e.bytes += static_cast<int64_t>(f.size());
                ilog->record_raw(e);
              }
              Item item;
              item.frames = std::move(*frames);
              push_item(std::move(item));
            } else {
              SPDLOG_LOGGER_DEBUG(log, "[worker] dropped a {} received before Welcome",
                                  wire::body_name(msg->body_type()));
            }
            break;
          case wire::Body::Welcome: {
            const auto* w = msg->body_as_Welcome();
            if (w->version() != wire::kProtocolVersion) {
              throw ProtocolError(gt::detail::cat("[worker] dispatcher speaks protocol version ",
                                                  w->version(), ", this worker speaks version ",
                                                  wire::kProtocolVersion));
            }
            if (registered) break;  // a duplicate Welcome changes nothing
            registered = true;
            index.store(w->worker());
            is_registered.store(true);
            Item reset;
            reset.reset = true;
            reset.index = w->worker();
            push_item(std::move(reset));
            open_instruction_log(w->worker());
            set_trace(false, false);  // the dispatcher sends TraceControl if someone watches
            last_heartbeat = 0;
            log->info("[worker] registered worker={} dispatcher={} dev={}", w->worker(),
                      options.dispatcher, options.device);
            break;
          }
          case wire::Body::Heartbeat: break;
          case wire::Body::StoreReply:  // Note [store mailbox]
            store_replies.push(std::move((*frames)[0]));
            break;
          case wire::Body::TraceControl:
            if (registered) {
              const auto* t = msg->body_as_TraceControl();
              set_trace(t->events(), t->stats());
            }
            break;
          case wire::Body::ErrorReply: {
            const wire::FailureInfo f = wire::to_failure_info(msg->body_as_ErrorReply()->error());
            if (f.code == Status::VersionMismatch) {
              throw ProtocolError("[worker] the dispatcher refused this worker: " + f.message);
            }
            if (registered && f.code == Status::WrongRole) {
              // The dispatcher no longer knows us (it restarted): register anew.
              log->warn("[worker] dispatcher does not know worker={}: registering again ({})",
                        index.load(), f.message);
              registered = false;
              is_registered.store(false);
              hello();
            } else {
              log->warn("[worker] error from the dispatcher: {} code={}", f.message,
                        to_string(f.code));
            }
            break;
          }
          default:
            log->warn("[worker] ignored a {} message from the dispatcher",
                      wire::body_name(msg->body_type()));
            break;
        }
      }
    }

    if (registered && (trace_events || trace_stats)) {
      std::vector<InstructionLog::TapChunk> chunks;
      {
        std::lock_guard lock(trace_mutex);
        chunks.swap(trace_chunks);
      }
      for (const auto& c : chunks) {
        const std::string_view events = trace_events ? std::string_view(c.events) : "";
        const std::string_view stats = trace_stats ? std::string_view(c.stats) : "";
        if (!events.empty() || !stats.empty()) {
          send_one(wire::encode_trace_events(events, stats), "TraceEvents");
        }
      }
    }
    const int64_t now = now_ms();
    if (registered && now - last_heartbeat >= heartbeat_interval) {
      send_one(wire::encode_heartbeat(0), "Heartbeat");
      last_heartbeat = now;
    }
    if (now - last_heard > heartbeat_timeout) {
      if (now - last_heard > give_up_after) {
        throw TransportError(gt::detail::cat(
            "[worker] no reply from the dispatcher at ", options.dispatcher, " for ",
            now - last_heard, " ms: giving up",
            curve ? " (CURVE is on: is GT_CURVE_SERVER_KEY the dispatcher's public key?)" : ""));
      }
      if (now - last_hello > heartbeat_timeout) {
        if (registered) {
          log->warn(
              "[worker] dispatcher silent for {} ms: registering again (sessions of "
              "worker={} will be dropped)",
              now - last_heard, index.load());
        }
        registered = false;
        is_registered.store(false);
        hello();
      }
    }
  }
}

Worker::Worker(WorkerOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}

Worker::~Worker() {
  stop();
  std::lock_guard lock(impl_->thread_mutex);
  if (impl_->io_thread.joinable()) impl_->io_thread.join();
}

void Worker::run() {
  start();
  wait();
}

void Worker::start() {
  std::lock_guard lock(impl_->thread_mutex);
  GT_CHECK(!impl_->io_thread.joinable(), "[worker.start] the worker is already running");
  impl_->io_thread = std::thread([impl = impl_.get()] { impl->io_main(); });
}

void Worker::wait() {
  std::exception_ptr fatal;
  {
    std::lock_guard lock(impl_->thread_mutex);
    if (impl_->io_thread.joinable()) impl_->io_thread.join();
    fatal = std::exchange(impl_->fatal, nullptr);
  }
  if (fatal) std::rethrow_exception(fatal);
}

void Worker::stop() { impl_->stop_requested.store(true); }

int Worker::index() const { return impl_->index.load(); }

bool Worker::registered() const { return impl_->is_registered.load(); }

const WorkerOptions& Worker::options() const { return impl_->options; }

int run_worker_main(const WorkerOptions& options) {
  configure_process_logging();  // GT_LOG_LEVEL / SPDLOG_LEVEL, gt's pattern
  auto log = make_logger("worker");
  g_signal_stop.store(false);
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  struct sigaction old_term {
  }, old_int{};
  sigaction(SIGTERM, &action, &old_term);
  sigaction(SIGINT, &action, &old_int);
  int code = 0;
  try {
    Worker worker(options);
    worker.run();
  } catch (const std::exception& e) {
    log->error("{}", e.what());
    code = 1;
  }
  // Leave the process as we found it (matters when embedded, e.g. in tests).
  sigaction(SIGTERM, &old_term, nullptr);
  sigaction(SIGINT, &old_int, nullptr);
  g_signal_stop.store(false);
  return code;
}

}  // namespace gt::worker
