#include "worker/worker.h"

#include <unistd.h>

#include <atomic>
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
#include "common/logging.h"
#include "common/transport.h"
#include "common/wire.h"
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

// What the IO thread hands the executor thread, in stream order.
struct Item {
  Frames frames;       // a verified Batch, Bye or StatsRequest (header + data frames)
  bool reset = false;  // (re-)registered: drop every session, take `index`
  int index = -1;
};

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
  std::shared_ptr<spdlog::logger> log;
  std::string reply_endpoint;
  zmq::context_t context{1};

  std::atomic<bool> stop_requested{false};
  std::atomic<int> index{-1};
  std::atomic<bool> is_registered{false};

  std::mutex queue_mutex;
  std::condition_variable queue_cv;
  std::deque<Item> queue;                      // guarded by queue_mutex
  bool executor_stop = false;                  // guarded by queue_mutex
  std::atomic<bool> executor_stopping{false};  // lets a blocked reply send give up

  std::mutex thread_mutex;            // guards io_thread (start/join) and fatal
  std::thread io_thread;              // started by start(), joined by wait() or the destructor
  std::thread executor_thread;        // io thread only: started and joined by io_main
  std::exception_ptr fatal;           // io thread writes before exiting; read after join
  std::exception_ptr executor_fatal;  // guarded by queue_mutex
};

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
    Executor executor(ExecutorOptions{index.load(), device, capacity_bytes, log, jit});
    std::deque<Item> work;
    for (;;) {
      {
        std::unique_lock lock(queue_mutex);
        queue_cv.wait(lock, [&] { return executor_stop || !queue.empty(); });
        if (executor_stop) break;
        work.swap(queue);
      }
      for (Item& item : work) {
        if (executor_stopping.load(std::memory_order_relaxed)) break;
        if (item.reset) {
          if (executor.session_count() > 0) {
            log->warn("[worker] dropping {} sessions: registered again as worker={}",
                      executor.session_count(), item.index);
          }
          executor.drop_all_sessions();
          executor.set_worker_index(item.index);
          continue;
        }
        // The IO thread verified the header; the frames moved here intact.
        const wire::Message* msg = wire::GetMessage(item.frames[0].data());
        if (msg->body_type() == wire::Body::StatsRequest) {
          executor.flush_held(msg->session(), sink);
          Frames reply;
          reply.push_back(stats_reply(executor, jit.get(), options.device, msg->session(),
                                      msg->body_as_StatsRequest()->request()));
          sink(std::move(reply));
          continue;
        }
        executor.handle_verified(*msg, std::span(item.frames).subspan(1), sink, &item.frames[0]);
      }
      work.clear();
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
    // executor_stopping is set, so a full pipe cannot block the join.
    executor_stopping.store(true);
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
  log->info("[worker] stopped dispatcher={} dev={}", options.dispatcher, options.device);
}

void Worker::Impl::io_loop(zmq::socket_t& pull) {
  const Env& e = env();
  const int64_t heartbeat_interval = e.heartbeat_interval_ms;
  const int64_t heartbeat_timeout = e.heartbeat_timeout_ms;
  const int64_t give_up_after = std::max(e.connect_timeout_ms, heartbeat_timeout);

  std::optional<zmq::socket_t> dealer;
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
    dealer.emplace(context, zmq::socket_type::dealer);
    configure_socket(*dealer);
    dealer->set(zmq::sockopt::sndtimeo, 0);
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
        switch (msg->body_type()) {
          case wire::Body::Batch:
          case wire::Body::Bye:
          case wire::Body::StatsRequest:  // answered in stream order by the executor thread
            if (registered) {
              push_item(Item{std::move(*frames)});
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
            push_item(Item{{}, true, w->worker()});
            last_heartbeat = 0;
            log->info("[worker] registered worker={} dispatcher={} dev={}", w->worker(),
                      options.dispatcher, options.device);
            break;
          }
          case wire::Body::Heartbeat: break;
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

    const int64_t now = now_ms();
    if (registered && now - last_heartbeat >= heartbeat_interval) {
      send_one(wire::encode_heartbeat(0), "Heartbeat");
      last_heartbeat = now;
    }
    if (now - last_heard > heartbeat_timeout) {
      if (now - last_heard > give_up_after) {
        throw TransportError(gt::detail::cat("[worker] no reply from the dispatcher at ",
                                             options.dispatcher, " for ", now - last_heard,
                                             " ms: giving up"));
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
