#include "dispatcher/dispatcher.h"

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <mutex>
#include <optional>
#include <set>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <gt/error.h>

#include "common/config.h"
#include "common/dtype_rules.h"
#include "common/env.h"
#include "common/instruction_log.h"
#include "common/logging.h"
#include "common/op_table.h"
#include "common/security.h"
#include "common/transport.h"
#include "common/wire.h"
#include "dispatcher/sharding.h"

namespace gt::dispatcher {
namespace {

using wire::TensorId;

struct WorkerEntry {
  std::string identity;
  std::string device;
  uint64_t capacity_bytes = 0;
  int64_t pid = 0;
  int64_t last_seen_ms = 0;
  bool alive = true;
  std::unordered_set<uint64_t> sessions;

  std::string describe(int index) const {
    return "worker " + std::to_string(index) + " (" + device + ", pid " + std::to_string(pid) + ")";
  }
};

// A Fetch or Sync forwarded to workers and not yet answered.
struct PendingRequest {
  wire::InstrKind kind = wire::InstrKind::Sync;
  int outstanding = 0;  // workers still to answer (Sync)
  std::vector<wire::FailureInfo> errors;
};

// Note [stats gathering]
// A StatsRequest is not tied to the session's worker: it goes to every alive
// worker, and the reply gathers one entry per worker that answered. A worker
// lost meanwhile is simply left out (lose_worker stops waiting for it), so a
// dying worker never hangs the client and a session whose own worker is lost
// can still ask. Kept apart from Session::requests, which fail as a whole
// when the session's worker is lost.
struct PendingStats {
  std::vector<int> awaiting;  // worker indices that have not answered yet
  std::vector<wire::WorkerStatsInfo> workers;
};

// A client fetch of a split tensor: the dispatcher fetches each shard
// (sub-requests) and answers once all arrived (Note [fetch gathering]).
struct GatherFetch {
  FetchPlan plan;
  TensorId tensor = 0;
  std::vector<zmq::message_t> parts;  // data of each shard, by shard index
  size_t received = 0;
};

struct Session {
  uint64_t id = 0;
  std::string identity;  // the client's ROUTER identity
  std::string name;
  int64_t pid = 0;
  int64_t last_seen_ms = 0;
  int worker = -1;  // home: every tensor lives there until the session shards
  // Logical tensor table while the session is unsharded: meta when the op
  // table could infer it. Once `shards` exists, it holds the table instead.
  std::unordered_map<TensorId, std::optional<TensorMeta>> tensors;
  std::unique_ptr<ShardedSession> shards;  // Note [sharded sessions]
  std::unordered_map<uint64_t, GatherFetch> gathers;  // by the client's request id
  std::unordered_map<uint64_t, std::pair<uint64_t, size_t>> subrequests;  // -> request, shard
  std::vector<wire::FailureInfo> refused;  // the dispatcher's failures, for the next Sync
  std::unordered_map<uint64_t, PendingRequest> requests;
  std::unordered_map<uint64_t, PendingStats> stats_requests;  // Note [stats gathering]
  std::optional<wire::FailureInfo> lost;  // set once its worker is lost
};

struct PendingHello {
  std::string identity;
  std::string name;
  int64_t pid = 0;
  uint32_t min_workers = 1;
  int64_t deadline_ms = 0;
};

// A StoreGet waiting for keys (Note [rendezvous store]).
struct PendingStoreGet {
  int worker = -1;
  uint64_t request = 0;
  std::vector<std::string> keys;
  int64_t deadline_ms = 0;
};

enum class PeerRole { Client, Worker };

// STATS events while a monitor subscribes (Note [event stream]).
constexpr int64_t kStatsPeriodMs = 250;
// How long the last messages (Note [dispatcher shutdown]) may wait to be delivered.
constexpr int kShutdownLingerMs = 500;
struct Peer {
  PeerRole role;
  uint64_t id;  // session id or worker index
};

}  // namespace

struct Dispatcher::State {
  DispatcherOptions options;
  Env env = read_env();
  std::shared_ptr<spdlog::logger> log = make_logger("dispatcher");
  zmq::context_t context{1};
  // Note [zap handler] in common/security.cpp: created before the sockets
  // bind and destroyed after they close, so no CURVE peer is ever let in
  // unchecked. Both empty without GT_CURVE_SECRET_KEY.
  std::optional<CurveServerKeys> curve;
  std::unique_ptr<ZapHandler> zap;
  zmq::socket_t router{context, zmq::socket_type::router};
  std::string endpoint;
  std::atomic<bool> stopping{false};
  DispatcherStats stats;

  // Note [event stream]
  zmq::socket_t events_pub{context, zmq::socket_type::xpub};
  std::string events_endpoint;
  // The dispatcher's own instruction log: files with GT_INSTRUCTION_LOG, and
  // a tap while someone subscribes. Its writer thread hands chunks over here;
  // run() publishes them (the socket is run()'s). ilog comes after what its
  // tap uses, so it is destroyed (and drained) first.
  std::mutex tap_mutex;
  std::vector<InstructionLog::TapChunk> tap_chunks;  // guarded by tap_mutex
  std::unique_ptr<InstructionLog> ilog;

  // run() thread only below this line.
  // Note [rendezvous store]
  std::unordered_map<std::string, std::string> store;
  size_t store_bytes = 0;
  std::vector<PendingStoreGet> store_gets;
  std::set<std::string> subscriptions;  // topic prefixes someone subscribes to
  bool want_events = false;             // someone gets the "events" topic
  bool want_stats = false;              // someone gets the "stats" topic
  bool log_events = false;              // files or want_events: record events
  int64_t next_stats_ms = 0;
  std::unordered_map<std::string, Peer> peers;
  std::vector<WorkerEntry> workers;
  std::unordered_map<uint64_t, Session> sessions;
  std::vector<PendingHello> pending_hellos;
  uint64_t next_session = 1;
  // Note [sharded sessions]
  std::shared_ptr<const Config> config;  // GT_CONFIG
  uint64_t next_tag = 1;                 // send/recv tags
  uint64_t next_subrequest = uint64_t{1} << 63;

  void serve_message(Frames& frames);
  void on_hello(const std::string& identity, const wire::Hello* hello);
  void on_client(Session& s, const wire::Message* msg, Frames& frames);
  void on_worker(int index, const wire::Message* msg, Frames& frames);
  void on_batch(Session& s, const wire::Batch* batch, Frames& frames);
  void on_sharded_batch(Session& s, const wire::Batch* batch, Frames& frames);
  /// Starts rewriting the session's stream (Note [sharded sessions]).
  void start_sharding(Session& s);
  void forward_fetch(Session& s, const wire::Instruction& in, Outputs& out);
  void on_gathered_part(Session& s, const wire::FetchReply* r, Frames& frames);
  ClusterView cluster_view();
  std::vector<int> alive_list() const;
  void on_stats_request(Session& s, const wire::StatsRequest* r);
  void on_stats_reply(int index, Session& s, const wire::StatsReply* r);
  /// Sends the gathered StatsReply once no worker is awaited; true if sent.
  bool finish_stats(Session& s, uint64_t request, PendingStats& p);
  void track(Session& s, const wire::Instruction* in);
  void welcome_client(const PendingHello& h);
  void close_session(uint64_t id, const char* why);
  void lose_worker(int index, const std::string& why);
  void fail_request(Session& s, uint64_t request, const wire::FailureInfo& f);
  void check_timers();
  void on_store_set(int index, const wire::StoreSet* set);
  void on_store_get(int index, const wire::StoreGet* get);
  /// Answers a pending get if all its keys are set, or (`expired`) with the
  /// keys still missing; true when answered.
  bool answer_store_get(const PendingStoreGet& g, bool expired);
  void on_subscription();
  void bind_events();
  void publish(std::string_view topic, std::string_view payload);
  void publish_tap_chunks();
  void send_trace_control(const WorkerEntry& w);
  void record_stats();
  /// A hot-path event (Note [raw events]) when events are recorded.
  void event(const RawEvent& e) {
    if (log_events) ilog->record_raw(e);
  }
  /// A rare event with free-text details.
  void event(std::string_view name, std::string_view kind, const std::string& details) {
    if (log_events) ilog->record(name, kind, "", details);
  }
  int alive_workers() const;
  int place_session() const;

  enum class Sent { Ok, QueueFull, Unreachable };
  /// Unreachable when the peer is gone (ROUTER_MANDATORY reports it).
  Sent send(const std::string& identity, zmq::message_t header, Frames* data = nullptr,
            size_t data_from = 0);
  void reply_error(const std::string& identity, uint64_t session, uint64_t request,
                   const wire::FailureInfo& f) {
    send(identity, wire::encode_error_reply(session, request, f));
  }
};

Dispatcher::Dispatcher(DispatcherOptions options) : state_(std::make_unique<State>()) {
  auto& s = *state_;
  s.options = std::move(options);
  check_endpoint(s.options.listen);
  s.curve = curve_server_keys(s.env);  // throws ConfigError naming the variable and file
  if (check_plaintext_bind(s.options.listen, s.curve.has_value(), s.env.allow_plaintext,
                           "endpoint")) {
    s.log->warn("listening in plaintext on {}, which is not a loopback address "
                "(GT_ALLOW_PLAINTEXT=1): anyone who reaches it can use the cluster",
                s.options.listen);
  }
  configure_socket(s.router);
  s.router.set(zmq::sockopt::router_mandatory, 1);
  if (s.curve) {
    s.zap = std::make_unique<ZapHandler>(s.context, *s.curve, s.log);
    apply_curve(s.router, *s.curve);
  }
  // "tcp://host:0" asks for any free port, as "tcp://host:*" does in ZeroMQ.
  std::string bind_to = s.options.listen;
  if (bind_to.rfind("tcp://", 0) == 0 && bind_to.size() > 2 &&
      bind_to.compare(bind_to.size() - 2, 2, ":0") == 0) {
    bind_to.replace(bind_to.size() - 1, 1, "*");
  }
  try {
    s.router.bind(bind_to);
  } catch (const zmq::error_t& e) {
    throw TransportError("[dispatcher] cannot bind " + s.options.listen + ": " + e.what());
  }
  s.endpoint = s.router.get(zmq::sockopt::last_endpoint);
  s.log->info("listening endpoint={}", s.endpoint);
  if (auto c = gt::detail::config_from_env()) {
    s.config = std::make_shared<const Config>(std::move(*c));
    s.log->info("signal config {} with {} signal(s)", s.config->source, s.config->signals.size());
  }
  s.ilog = InstructionLog::from_env("DISPATCHER");
  if (!s.ilog) s.ilog = std::make_unique<InstructionLog>("DISPATCHER", "");
  s.log_events = s.ilog->has_files();
  s.bind_events();
  if (!s.options.endpoint_file.empty()) {
    // Written whole under a temporary name, then renamed: readers never see a
    // partial endpoint.
    const std::string tmp = s.options.endpoint_file + ".tmp";
    std::FILE* f = std::fopen(tmp.c_str(), "w");
    if (!f || std::fputs(s.endpoint.c_str(), f) < 0 || std::fclose(f) != 0 ||
        std::rename(tmp.c_str(), s.options.endpoint_file.c_str()) != 0) {
      throw Error("[dispatcher] cannot write the endpoint file " + s.options.endpoint_file);
    }
  }
}

Dispatcher::~Dispatcher() = default;

const std::string& Dispatcher::endpoint() const { return state_->endpoint; }
const std::string& Dispatcher::events_endpoint() const { return state_->events_endpoint; }
const DispatcherStats& Dispatcher::stats() const { return state_->stats; }
void Dispatcher::stop() { state_->stopping.store(true); }

void Dispatcher::run() {
  auto& s = *state_;
  const auto tick = std::chrono::milliseconds(
      std::clamp<int64_t>(s.env.heartbeat_interval_ms / 2, 5, 100));
  while (!s.stopping.load(std::memory_order_relaxed)) {
    zmq::pollitem_t items[] = {{s.router.handle(), 0, ZMQ_POLLIN, 0},
                               {s.events_pub.handle(), 0, ZMQ_POLLIN, 0}};
    const int n_items = s.events_endpoint.empty() ? 1 : 2;
    try {
      zmq::poll(items, n_items, tick);
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;
      throw;
    }
    if (n_items == 2 && (items[1].revents & ZMQ_POLLIN)) s.on_subscription();
    // Drain what is queued, bounded so timers still run under load.
    for (int i = 0; i < 4096; ++i) {
      std::optional<Frames> frames;
      try {
        frames = recv_frames(s.router);
      } catch (const zmq::error_t& e) {
        if (e.num() == EINTR) break;
        throw;
      }
      if (!frames) break;
      s.stats.messages_in.fetch_add(1, std::memory_order_relaxed);
      try {
        s.serve_message(*frames);
      } catch (const std::exception& e) {
        // Nothing a peer sends may stop the dispatcher.
        s.log->error("internal error while serving a message: {}", e.what());
      }
    }
    s.check_timers();
    s.publish_tap_chunks();
  }
  // Note [dispatcher shutdown]: clients hear Bye with their session (their
  // waits fail at once instead of timing out); workers hear one Bye per
  // session they hold, so they free its memory, then Bye with session 0:
  // drop everything and register again when a dispatcher answers. Sockets
  // close with a linger long enough to deliver these.
  for (const auto& [id, session] : s.sessions) s.send(session.identity, wire::encode_bye(id));
  for (auto& w : s.workers) {
    if (!w.alive) continue;
    for (uint64_t id : w.sessions) s.send(w.identity, wire::encode_bye(id));
    s.send(w.identity, wire::encode_bye(0));
  }
  s.router.set(zmq::sockopt::linger, kShutdownLingerMs);
  s.log->info("stopped endpoint={} sessions={} workers={}", s.endpoint, s.sessions.size(),
              s.alive_workers());
}

// Note [event stream]
// The dispatcher binds an XPUB socket (DispatcherOptions::events) and tells
// every Hello its endpoint in the Welcome; tools send a Hello with role
// Monitor just to learn it. Subscribers get two topics, each message being
// [topic, JSON lines] in the instruction log's JSON form:
//   "events"  every event the dispatcher and the workers log
//   "stats"   the periodic STATS events (docs/instruction_log.md, "Events")
// XPUB reports the first subscription to a prefix and the last
// unsubscription, so the dispatcher knows whether anyone wants each topic.
// Only then does it record its own events (unless GT_INSTRUCTION_LOG is set)
// and tell the workers (TraceControl) to send theirs (TraceEvents), which it
// republishes as they are: a cluster nobody watches pays nothing. Workers
// that join later get the current TraceControl after their Welcome. PUB
// drops messages for a subscriber that falls behind (send high-water mark),
// so a slow tool never stalls the dispatcher; gt trace reports the gaps it
// sees in the sequence numbers.
void Dispatcher::State::bind_events() {
  if (options.events == "off") return;
  std::string bind_to = options.events;
  if (bind_to == "auto") {
    if (endpoint.rfind("tcp://", 0) == 0) {
      bind_to = endpoint.substr(0, endpoint.rfind(':')) + ":*";
    } else if (endpoint.rfind("ipc://", 0) == 0) {
      bind_to = endpoint + ".events";
    } else {
      return;  // inproc: no stream
    }
  } else {
    check_endpoint(bind_to);
    if (check_plaintext_bind(bind_to, curve.has_value(), env.allow_plaintext, "event stream")) {
      log->warn("event stream in plaintext on {} (GT_ALLOW_PLAINTEXT=1)", bind_to);
    }
  }
  if (bind_to.rfind("tcp://", 0) == 0 && bind_to.size() > 2 &&
      bind_to.compare(bind_to.size() - 2, 2, ":0") == 0) {
    bind_to.replace(bind_to.size() - 1, 1, "*");
  }
  events_pub.set(zmq::sockopt::linger, 0);
  events_pub.set(zmq::sockopt::sndhwm, 10000);
  if (curve) apply_curve(events_pub, *curve);  // subscribers authenticate like clients
  try {
    events_pub.bind(bind_to);
  } catch (const zmq::error_t& e) {
    throw TransportError("[dispatcher] cannot bind the event stream " + bind_to + ": " +
                         e.what() + " (choose another with --events, or --events off)");
  }
  events_endpoint = events_pub.get(zmq::sockopt::last_endpoint);
  log->info("event stream endpoint={}", events_endpoint);
}

void Dispatcher::State::on_subscription() {
  for (;;) {
    zmq::message_t m;
    std::optional<size_t> got;
    try {
      got = events_pub.recv(m, zmq::recv_flags::dontwait);
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;
      throw;
    }
    if (!got) break;
    if (m.size() == 0) continue;
    const auto* bytes = static_cast<const char*>(m.data());
    std::string topic(bytes + 1, m.size() - 1);
    if (bytes[0] == 1) {
      subscriptions.insert(std::move(topic));
    } else if (bytes[0] == 0) {
      subscriptions.erase(topic);
    }
  }
  auto wanted = [&](std::string_view name) {
    for (const std::string& p : subscriptions) {
      if (name.substr(0, p.size()) == p) return true;
    }
    return false;
  };
  const bool events = wanted("events");
  const bool stats_on = wanted("stats");
  if (events == want_events && stats_on == want_stats) return;
  want_events = events;
  want_stats = stats_on;
  log_events = ilog->has_files() || want_events;
  log->info("event stream: events {} stats {}", want_events ? "on" : "off",
            want_stats ? "on" : "off");
  if (want_events || want_stats) {
    ilog->set_tap([this](InstructionLog::TapChunk&& chunk) {
      std::lock_guard lock(tap_mutex);
      tap_chunks.push_back(std::move(chunk));
    });
  } else {
    ilog->set_tap({});
  }
  next_stats_ms = 0;
  for (const WorkerEntry& w : workers) {
    if (w.alive) send_trace_control(w);
  }
}

void Dispatcher::State::send_trace_control(const WorkerEntry& w) {
  send(w.identity, wire::encode_trace_control(want_events, want_stats));
}

void Dispatcher::State::publish(std::string_view topic, std::string_view payload) {
  if (payload.empty()) return;
  try {
    // PUB never blocks: past the high-water mark a slow subscriber loses messages.
    events_pub.send(zmq::buffer(topic), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    events_pub.send(zmq::buffer(payload), zmq::send_flags::dontwait);
  } catch (const zmq::error_t& e) {
    log->debug("event stream publish failed: {}", e.what());
  }
}

void Dispatcher::State::publish_tap_chunks() {
  std::vector<InstructionLog::TapChunk> chunks;
  {
    std::lock_guard lock(tap_mutex);
    if (tap_chunks.empty()) return;
    chunks.swap(tap_chunks);
  }
  for (const auto& c : chunks) {
    if (want_events) publish("events", c.events);
    if (want_stats) publish("stats", c.stats);
  }
}

void Dispatcher::State::record_stats() {
  std::string clients;
  for (const auto& [id, session] : sessions) {
    if (!clients.empty()) clients += ',';
    std::string name = session.name.empty() ? "-" : session.name;
    for (char& c : name) {
      if (c == ' ' || c == ',' || c == ':' || static_cast<unsigned char>(c) < 0x20) c = '_';
    }
    clients += std::to_string(id) + ":" + name + ":" + std::to_string(session.pid);
  }
  std::string details = "workers=" + std::to_string(alive_workers()) +
                        " clients=" + std::to_string(sessions.size()) +
                        " messages=" + std::to_string(stats.messages_in.load()) +
                        " instructions=" + std::to_string(stats.instructions.load()) +
                        " endpoint=" + endpoint;
  if (!clients.empty()) details += " clients_list=" + clients;
  ilog->record("STATS", "Dispatcher", "", details);
}

Dispatcher::State::Sent Dispatcher::State::send(const std::string& identity, zmq::message_t header, Frames* data,
                             size_t data_from) {
  Frames out;
  out.reserve(2 + (data ? data->size() - data_from : 0));
  out.emplace_back(identity.data(), identity.size());
  out.push_back(std::move(header));
  if (data) {
    for (size_t i = data_from; i < data->size(); ++i) out.push_back(std::move((*data)[i]));
  }
  try {
    if (send_frames(router, out)) return Sent::Ok;
    log->warn("send to peer dropped: queue full");
    return Sent::QueueFull;
  } catch (const zmq::error_t& e) {
    // EHOSTUNREACH: the peer disconnected; callers or timers clean up.
    log->debug("send to a gone peer failed: {}", e.what());
    return Sent::Unreachable;
  }
}

void Dispatcher::State::serve_message(Frames& frames) {
  if (frames.size() < 2) {
    stats.malformed.fetch_add(1);
    log->warn("dropping a message of {} frame(s): expected identity, header, data...",
              frames.size());
    return;
  }
  const std::string identity = frames[0].to_string();
  const wire::Message* msg = nullptr;
  try {
    msg = wire::decode(frames[1]);
  } catch (const ProtocolError& e) {
    stats.malformed.fetch_add(1);
    log->warn("malformed message from peer: {}", e.what());
    event("ERROR", "Malformed", std::string("what=") + e.what());
    reply_error(identity, 0, 0, wire::failure(Status::Malformed, e.what()));
    return;
  }
  if (msg->body_type() == wire::Body::Hello) {
    on_hello(identity, msg->body_as_Hello());
    return;
  }
  auto peer = peers.find(identity);
  if (peer == peers.end()) {
    log->warn("{} from an unregistered peer: rejected", wire::body_name(msg->body_type()));
    reply_error(identity, 0, 0,
                wire::failure(Status::WrongRole,
                              "[dispatcher] expected Hello first, got " +
                                  std::string(wire::body_name(msg->body_type()))));
    return;
  }
  if (peer->second.role == PeerRole::Worker) {
    on_worker(static_cast<int>(peer->second.id), msg, frames);
    return;
  }
  auto session = sessions.find(peer->second.id);
  if (session == sessions.end()) {
    reply_error(identity, peer->second.id, 0,
                wire::failure(Status::SessionClosed, "[dispatcher] session " +
                                                         std::to_string(peer->second.id) +
                                                         " is closed; reconnect"));
    peers.erase(peer);
    return;
  }
  session->second.last_seen_ms = now_ms();
  on_client(session->second, msg, frames);
}

void Dispatcher::State::on_hello(const std::string& identity, const wire::Hello* hello) {
  if (hello->version() != wire::kProtocolVersion) {
    const std::string text = "[dispatcher] protocol version mismatch: dispatcher speaks " +
                             std::to_string(wire::kProtocolVersion) + ", peer sent " +
                             std::to_string(hello->version());
    log->warn("{}", text);
    reply_error(identity, 0, 0, wire::failure(Status::VersionMismatch, text));
    return;
  }
  if (peers.contains(identity)) {
    // A peer re-registering on the same connection: forget the old role first.
    const Peer old = peers[identity];
    if (old.role == PeerRole::Client) close_session(old.id, "client said Hello again");
    else lose_worker(static_cast<int>(old.id), "worker registered again");
    peers.erase(identity);
  }
  const std::string name = hello->name() ? hello->name()->str() : "";
  if (hello->role() == wire::Role::Monitor) {
    // A tool asking where the event stream is (Note [event stream]); it
    // never becomes a peer.
    event("RECV", "Hello", "role=monitor pid=" + std::to_string(hello->pid()));
    send(identity, wire::encode_welcome(0, -1, alive_workers(), events_endpoint));
    return;
  }
  if (hello->role() == wire::Role::Worker) {
    WorkerEntry w;
    w.identity = identity;
    w.device = hello->device() ? hello->device()->str() : "cpu";
    w.capacity_bytes = hello->capacity_bytes();
    w.pid = hello->pid();
    w.last_seen_ms = now_ms();
    const int index = static_cast<int>(workers.size());
    workers.push_back(std::move(w));
    peers[identity] = Peer{PeerRole::Worker, static_cast<uint64_t>(index)};
    stats.workers_joined.fetch_add(1);
    log->info("worker joined worker={} dev={} pid={}", index, workers[index].device,
              workers[index].pid);
    event("JOIN", "Worker",
          "worker=" + std::to_string(index) + " device=" + workers[index].device +
              " pid=" + std::to_string(workers[index].pid));
    send(identity, wire::encode_welcome(0, index, alive_workers(), events_endpoint));
    if (want_events || want_stats) send_trace_control(workers[index]);
    // Clients waiting for workers may go ahead now.
    std::vector<PendingHello> still;
    for (auto& h : pending_hellos) {
      if (alive_workers() >= static_cast<int>(h.min_workers)) welcome_client(h);
      else still.push_back(std::move(h));
    }
    pending_hellos = std::move(still);
    return;
  }
  if (hello->role() != wire::Role::Client) {
    reply_error(identity, 0, 0,
                wire::failure(Status::WrongRole,
                              "[dispatcher] unknown role " +
                                  std::to_string(static_cast<int>(hello->role())) +
                                  ": expected client (0), worker (1) or monitor (2)"));
    return;
  }
  PendingHello h{identity, name, hello->pid(), std::max<uint32_t>(1, hello->min_workers()),
                 now_ms() + options.worker_wait_ms};
  if (alive_workers() >= static_cast<int>(h.min_workers)) welcome_client(h);
  else pending_hellos.push_back(std::move(h));
}

int Dispatcher::State::alive_workers() const {
  int n = 0;
  for (const auto& w : workers) n += w.alive;
  return n;
}

int Dispatcher::State::place_session() const {
  // The alive worker with the fewest sessions (sharding comes with signals).
  int best = -1;
  for (int i = 0; i < static_cast<int>(workers.size()); ++i) {
    if (!workers[i].alive) continue;
    if (best < 0 || workers[i].sessions.size() < workers[best].sessions.size()) best = i;
  }
  return best;
}

void Dispatcher::State::welcome_client(const PendingHello& h) {
  Session s;
  s.id = next_session++;
  s.identity = h.identity;
  s.name = h.name;
  s.pid = h.pid;
  s.last_seen_ms = now_ms();
  s.worker = place_session();
  s.tensors.reserve(1024);
  workers[s.worker].sessions.insert(s.id);
  peers[h.identity] = Peer{PeerRole::Client, s.id};
  stats.sessions_opened.fetch_add(1);
  log->info("session opened session={} client={} pid={} worker={}", s.id, s.name, s.pid,
            s.worker);
  const uint64_t id = s.id;
  event("OPEN", "Session",
        "session=" + std::to_string(id) + " worker=" + std::to_string(s.worker) +
            " pid=" + std::to_string(s.pid) + " name=" + (s.name.empty() ? "-" : s.name));
  Session& placed = sessions.emplace(id, std::move(s)).first->second;
  if (config || (env.auto_shard && alive_workers() > 1)) start_sharding(placed);
  send(h.identity, wire::encode_welcome(id, -1, alive_workers(), events_endpoint));
}

void Dispatcher::State::on_client(Session& s, const wire::Message* msg, Frames& frames) {
  switch (msg->body_type()) {
    case wire::Body::Batch:
      on_batch(s, msg->body_as_Batch(), frames);
      return;
    case wire::Body::Heartbeat:
      send(s.identity, wire::encode_heartbeat(s.id));
      return;
    case wire::Body::StatsRequest:
      on_stats_request(s, msg->body_as_StatsRequest());
      return;
    case wire::Body::Bye: {
      const std::string identity = s.identity;
      close_session(s.id, "client said Bye");
      peers.erase(identity);
      return;
    }
    default:
      log->warn("session={} sent {}: not a client message", s.id,
                wire::body_name(msg->body_type()));
      reply_error(s.identity, s.id, 0,
                  wire::failure(Status::WrongRole,
                                "[dispatcher] clients may send Batch, StatsRequest, Heartbeat or "
                                "Bye, got " +
                                    std::string(wire::body_name(msg->body_type()))));
  }
}

void Dispatcher::State::on_batch(Session& s, const wire::Batch* batch, Frames& frames) {
  const auto* instrs = batch->instructions();
  const size_t n = instrs ? instrs->size() : 0;
  stats.instructions.fetch_add(n, std::memory_order_relaxed);
  RawEvent e;
  if (log_events) {
    e.event = "RECV";
    e.kind = "Batch";
    e.session = s.id;
    e.n = static_cast<int64_t>(n);
    e.bytes = 0;
    for (size_t i = 1; i < frames.size(); ++i) e.bytes += static_cast<int64_t>(frames[i].size());
    ilog->record_raw(e);
  }
  if (!s.shards) {
    // A config or a collective (refused there) takes the rewriting path; so
    // does GT_AUTO_SHARD once a second worker has joined.
    bool shard = env.auto_shard && alive_workers() > 1;
    for (size_t i = 0; i < n && !shard; ++i) {
      const auto kind = instrs->Get(i)->kind();
      shard = kind == wire::InstrKind::Configure || kind == wire::InstrKind::Collective;
    }
    if (shard) start_sharding(s);
  }
  if (s.shards) {
    on_sharded_batch(s, batch, frames);
    return;
  }
  // The worker needs the session id; stamp it into the header in place so the
  // batch and its data frames are forwarded without copies.
  auto* mutable_msg = wire::GetMutableMessage(frames[1].data());
  if (!mutable_msg->mutate_session(s.id)) {
    stats.malformed.fetch_add(1);
    reply_error(s.identity, s.id, 0,
                wire::failure(Status::Malformed,
                              "[dispatcher] batch header lacks the session id from Welcome"));
    return;
  }
  for (size_t i = 0; i < n; ++i) track(s, instrs->Get(i));
  if (s.lost) {
    // Its worker is gone: every request in the batch fails at once.
    for (size_t i = 0; i < n; ++i) {
      const auto* in = instrs->Get(i);
      if (in->kind() == wire::InstrKind::Fetch || in->kind() == wire::InstrKind::Sync) {
        fail_request(s, in->request(), *s.lost);
      }
    }
    return;
  }
  if (log_events) {
    e.event = "SEND";
    e.worker = s.worker;
    ilog->record_raw(e);
  }
  if (send(workers[s.worker].identity, std::move(frames[1]), &frames, 2) == Sent::Unreachable) {
    // Its connection is gone: fail the session's requests (those of this batch
    // included) now rather than after the heartbeat timeout.
    lose_worker(s.worker, "its connection closed");
  }
}

// Note [sharded sessions]
// A session starts on its home worker (the alive worker with the fewest
// sessions) and its batches are forwarded whole, without copies: the fast
// path. It is rewritten instruction by instruction (dispatcher/sharding.h)
// once a config can place its tensors elsewhere: the dispatcher has
// GT_CONFIG, the client sent a Configure, or GT_AUTO_SHARD is on with more
// than one worker. Then each client batch becomes one batch per worker
// involved, with the collectives that move data between them, sent in one
// pass so that every worker sees the collectives in the same order. Fetches
// of split tensors are gathered here; syncs go to every worker the session
// has used.
void Dispatcher::State::start_sharding(Session& s) {
  if (s.shards) return;
  s.shards = std::make_unique<ShardedSession>(s.worker, config);
  for (auto& [id, meta] : s.tensors) s.shards->adopt(id, std::move(meta));
  s.tensors.clear();
  log->info("session={} is sharded (config {})", s.id, config ? config->source : "none");
}

std::vector<int> Dispatcher::State::alive_list() const {
  std::vector<int> out;
  for (int i = 0; i < static_cast<int>(workers.size()); ++i) {
    if (workers[i].alive) out.push_back(i);
  }
  return out;
}

ClusterView Dispatcher::State::cluster_view() {
  return ClusterView{alive_list(), env.auto_shard, env.auto_shard_min_bytes, &next_tag};
}

void Dispatcher::State::on_sharded_batch(Session& s, const wire::Batch* batch, Frames& frames) {
  // on_batch counted the batch and recorded its RECV.
  const auto* instrs = batch->instructions();
  const size_t n = instrs ? instrs->size() : 0;
  if (s.lost) {
    for (size_t i = 0; i < n; ++i) {
      const auto* in = instrs->Get(i);
      if (in->kind() == wire::InstrKind::Fetch || in->kind() == wire::InstrKind::Sync) {
        reply_error(s.identity, s.id, in->request(), *s.lost);
      }
    }
    return;
  }
  const ClusterView cluster = cluster_view();
  // Note [payload sharing]: the data frames, shared by what each worker gets.
  std::vector<Payload> payloads;
  payloads.reserve(frames.size() > 2 ? frames.size() - 2 : 0);
  for (size_t i = 2; i < frames.size(); ++i) {
    payloads.push_back(std::make_shared<zmq::message_t>(std::move(frames[i])));
  }
  Outputs out;
  for (size_t i = 0; i < n; ++i) {
    const wire::Instruction& in = *instrs->Get(i);
    switch (in.kind()) {
      case wire::InstrKind::Fetch: {
        const auto ids = wire::view(in.inputs());
        s.shards->barrier(out, ids.empty() ? std::nullopt : std::optional<TensorId>(ids[0]));
        forward_fetch(s, in, out);
        continue;
      }
      case wire::InstrKind::Sync: {
        s.shards->barrier(out);
        const auto& used = s.shards->used_workers();
        PendingRequest p{wire::InstrKind::Sync, static_cast<int>(used.size()), std::move(s.refused)};
        s.refused.clear();
        if (used.empty()) {
          send(s.identity, wire::encode_sync_reply(s.id, in.request(), p.errors));
          continue;
        }
        for (int w : used) {
          wire::Instr sync;
          sync.kind = wire::InstrKind::Sync;
          sync.request = in.request();
          out[w].instrs.push_back(std::move(sync));
        }
        s.requests[in.request()] = std::move(p);
        continue;
      }
      case wire::InstrKind::Configure: {
        const std::string text = in.name() ? in.name()->str() : "";
        try {
          if (text.size() > wire::kMaxConfigText) {
            throw std::invalid_argument("the config text is " + std::to_string(text.size()) +
                                        " bytes: expected at most 1 MiB");
          }
          auto c = std::make_shared<Config>(gt::detail::parse_config(text, "<session config>"));
          gt::detail::validate_config(*c, static_cast<int>(workers.size()));
          s.shards->set_config(std::move(c));
          log->info("session={} uses its own config ({} signals)", s.id,
                    s.shards->config()->signals.size());
        } catch (const std::exception& e) {
          s.refused.push_back(wire::failure(Status::InvalidArgument,
                                            std::string("[dispatcher] config refused: ") + e.what()));
        }
        continue;
      }
      default:
        break;
    }
    try {
      s.shards->rewrite(in, payloads, cluster, out);
    } catch (const RewriteError& e) {
      const OpInfo* op = find_op(in.op());
      const auto outs = wire::view(in.outputs());
      log->warn("session={} {}", s.id, e.message);
      s.refused.push_back(wire::failure(e.code, e.message, -1,
                                        in.kind() == wire::InstrKind::Op && op ? std::string(op->name) : "",
                                        outs.empty() ? 0 : outs[0]));
    }
  }
  for (auto& [w, o] : out) {
    if (o.instrs.empty()) continue;
    workers[w].sessions.insert(s.id);
    if (log_events) {
      RawEvent e;
      e.event = "SEND";
      e.kind = "Batch";
      e.session = s.id;
      e.worker = w;
      e.n = static_cast<int64_t>(o.instrs.size());
      ilog->record_raw(e);
    }
    if (send(workers[w].identity, wire::encode_batch(s.id, batch->seq(), o.instrs), &o.data, 0) ==
        Sent::Unreachable) {
      lose_worker(w, "its connection closed");
    }
  }
}

// Note [fetch gathering]
// A fetch of a tensor held whole is forwarded to one worker holding it and
// its reply passes through. A split tensor is fetched shard by shard under
// sub-request ids (top bit set, never a client's) and joined along the
// split axis once every shard arrived; the first error of any shard answers
// the client's request and the other shards are dropped as they come.
void Dispatcher::State::forward_fetch(Session& s, const wire::Instruction& in, Outputs& out) {
  const uint64_t request = in.request();
  const auto ids = wire::view(in.inputs());
  FetchPlan plan;
  try {
    if (ids.empty()) {
      throw RewriteError{Status::Malformed, "[dispatcher] fetch without a tensor id"};
    }
    plan = s.shards->plan_fetch(ids[0]);
  } catch (const RewriteError& e) {
    reply_error(s.identity, s.id, request, wire::failure(e.code, e.message, -1, "", ids.empty() ? 0 : ids[0]));
    return;
  }
  auto fetch = [&](int w, uint64_t req) {
    wire::Instr f;
    f.kind = wire::InstrKind::Fetch;
    f.inputs = {ids[0]};
    f.request = req;
    out[w].instrs.push_back(std::move(f));
  };
  if (plan.parts.size() == 1) {
    s.requests[request] = PendingRequest{wire::InstrKind::Fetch, 1, {}};
    fetch(plan.parts[0].worker, request);
    return;
  }
  GatherFetch g;
  g.tensor = ids[0];
  g.parts.resize(plan.parts.size());
  for (size_t k = 0; k < plan.parts.size(); ++k) {
    const uint64_t sub = next_subrequest++;
    s.subrequests[sub] = {request, k};
    fetch(plan.parts[k].worker, sub);
  }
  g.plan = std::move(plan);
  s.gathers[request] = std::move(g);
}

void Dispatcher::State::on_gathered_part(Session& s, const wire::FetchReply* r, Frames& frames) {
  auto sub = s.subrequests.find(r->request());
  if (sub == s.subrequests.end()) return;
  const auto [request, k] = sub->second;
  s.subrequests.erase(sub);
  auto it = s.gathers.find(request);
  if (it == s.gathers.end()) return;  // an earlier shard failed
  GatherFetch& g = it->second;
  const Shape& expected = g.plan.parts[k].shape;
  const auto shape = wire::view(r->shape());
  const int64_t bytes = numel(expected) * element_size(g.plan.meta.dtype);
  if (frames.size() < 3 || static_cast<DType>(r->dtype()) != g.plan.meta.dtype ||
      !std::equal(shape.begin(), shape.end(), expected.begin(), expected.end()) ||
      static_cast<int64_t>(frames[2].size()) != bytes) {
    const std::string text = "[dispatcher] shard " + std::to_string(k) + " of tensor " +
                             std::to_string(g.tensor) + " came back as " + shape_str(shape) +
                             ": expected " + shape_str(expected) + " " +
                             std::string(to_string(g.plan.meta.dtype));
    log->error("session={} {}", s.id, text);
    reply_error(s.identity, s.id, request, wire::failure(Status::Internal, text, -1, "", g.tensor));
    s.gathers.erase(it);
    return;
  }
  g.parts[k] = std::move(frames[2]);
  if (++g.received < g.parts.size()) return;
  std::vector<std::span<const char>> parts;
  std::vector<Shape> shapes;
  for (size_t i = 0; i < g.parts.size(); ++i) {
    parts.emplace_back(static_cast<const char*>(g.parts[i].data()), g.parts[i].size());
    shapes.push_back(g.plan.parts[i].shape);
  }
  std::vector<char> joined = concat_rows(parts, shapes, g.plan.axis, element_size(g.plan.meta.dtype));
  Frames data;
  data.emplace_back(joined.data(), joined.size());
  send(s.identity,
       wire::encode_fetch_reply(s.id, request, g.tensor, g.plan.meta.dtype, g.plan.meta.shape),
       &data, 0);
  s.gathers.erase(it);
}

void Dispatcher::State::on_stats_request(Session& s, const wire::StatsRequest* r) {
  const uint64_t request = r->request();
  if (request == 0 || s.stats_requests.contains(request)) {
    stats.malformed.fetch_add(1);
    log->warn("session={} sent a StatsRequest with request id {}: rejected", s.id, request);
    reply_error(s.identity, s.id, request,
                wire::failure(Status::Malformed,
                              "[dispatcher] StatsRequest needs a non-zero request id that is "
                              "not pending already, got " +
                                  std::to_string(request)));
    return;
  }
  // Note [stats gathering]. The session's own worker gets the request after
  // the batches forwarded before it (same connection), so its counters
  // include them.
  PendingStats p;
  std::vector<int> unreachable;
  for (int i = 0; i < static_cast<int>(workers.size()); ++i) {
    if (!workers[i].alive) continue;
    switch (send(workers[i].identity, wire::encode_stats_request(s.id, request))) {
      case Sent::Ok: p.awaiting.push_back(i); break;
      case Sent::QueueFull: break;  // dropped: do not wait for an answer
      case Sent::Unreachable: unreachable.push_back(i); break;
    }
  }
  SPDLOG_LOGGER_DEBUG(log, "stats request session={} req={} workers={}", s.id, request,
                      p.awaiting.size());
  if (!finish_stats(s, request, p)) s.stats_requests.emplace(request, std::move(p));
  // After the request is recorded: losing a worker may complete it.
  for (int i : unreachable) lose_worker(i, "its connection closed");
}

void Dispatcher::State::on_stats_reply(int index, Session& s, const wire::StatsReply* r) {
  auto it = s.stats_requests.find(r->request());
  if (it == s.stats_requests.end()) {
    SPDLOG_LOGGER_DEBUG(log, "stats reply for unknown req={} worker={}", r->request(), index);
    return;
  }
  PendingStats& p = it->second;
  auto pos = std::find(p.awaiting.begin(), p.awaiting.end(), index);
  if (pos == p.awaiting.end()) {
    log->warn("worker={} answered stats req={} twice: ignored", index, r->request());
    return;
  }
  p.awaiting.erase(pos);
  const size_t n = r->workers() ? r->workers()->size() : 0;
  if (n == 1) {
    wire::WorkerStatsInfo w = wire::to_worker_stats(r->workers()->Get(0));
    w.worker = index;  // the dispatcher's numbering is authoritative
    if (w.device.empty()) w.device = workers[index].device;
    p.workers.push_back(std::move(w));
  } else {
    stats.malformed.fetch_add(1);
    log->warn("worker={} sent a StatsReply with {} entries: expected exactly 1; left out", index,
              n);
  }
  if (finish_stats(s, r->request(), p)) s.stats_requests.erase(it);
}

bool Dispatcher::State::finish_stats(Session& s, uint64_t request, PendingStats& p) {
  if (!p.awaiting.empty()) return false;
  std::sort(p.workers.begin(), p.workers.end(),
            [](const auto& a, const auto& b) { return a.worker < b.worker; });
  send(s.identity, wire::encode_stats_reply(s.id, request, p.workers));
  return true;
}

// Keeps the session's tensor table and pending requests in step with the
// stream. The worker does the authoritative validation and reports failures;
// here an op the table rejects just leaves its outputs without a meta.
void Dispatcher::State::track(Session& s, const wire::Instruction* in) {
  switch (in->kind()) {
    case wire::InstrKind::Op: {
      const OpInfo* op = find_op(in->op());
      const auto outputs = wire::view(in->outputs());
      std::optional<TensorMeta> meta;
      if (op && outputs.size() == 1) {
        std::vector<TensorMeta> metas;
        bool known = true;
        for (TensorId id : wire::view(in->inputs())) {
          auto it = s.tensors.find(id);
          if (it == s.tensors.end() || !it->second) {
            known = false;
            break;
          }
          metas.push_back(*it->second);
        }
        if (known && valid_dtype_code(in->dtype())) {
          try {
            auto out = infer(*op, OpCall{metas, wire::view(in->ints()), wire::view(in->floats()),
                                         static_cast<DType>(in->dtype())});
            if (out.size() == 1) meta = std::move(out[0]);
          } catch (const std::invalid_argument&) {
            // The worker reports it with the full context.
          }
        }
      }
      for (TensorId id : outputs) s.tensors[id] = meta;
      return;
    }
    case wire::InstrKind::Free:
      for (TensorId id : wire::view(in->inputs())) s.tensors.erase(id);
      return;
    case wire::InstrKind::Fetch:
      s.requests[in->request()] = PendingRequest{wire::InstrKind::Fetch, 1, {}};
      return;
    case wire::InstrKind::Sync:
      s.requests[in->request()] = PendingRequest{wire::InstrKind::Sync, 1, {}};
      return;
    default:
      return;  // scopes: the worker ignores them; the others start sharding
  }
}

void Dispatcher::State::on_worker(int index, const wire::Message* msg, Frames& frames) {
  WorkerEntry& w = workers[index];
  w.last_seen_ms = now_ms();
  const wire::Body type = msg->body_type();
  if (type == wire::Body::Heartbeat) {
    send(w.identity, wire::encode_heartbeat(0));
    return;
  }
  if (type == wire::Body::StoreSet) {
    on_store_set(index, msg->body_as_StoreSet());
    return;
  }
  if (type == wire::Body::StoreGet) {
    on_store_get(index, msg->body_as_StoreGet());
    return;
  }
  if (type == wire::Body::TraceEvents) {
    const auto* t = msg->body_as_TraceEvents();
    if (want_events && t->events()) publish("events", t->events()->string_view());
    if (want_stats && t->stats()) publish("stats", t->stats()->string_view());
    return;
  }
  auto it = sessions.find(msg->session());
  if (it == sessions.end()) return;  // the client left meanwhile
  Session& s = it->second;
  if (log_events) {
    RawEvent e;
    e.event = "RECV";
    e.kind = wire::body_name(type);
    e.session = s.id;
    e.worker = index;
    e.req = wire::reply_request(*msg);
    ilog->record_raw(e);
  }
  switch (type) {
    case wire::Body::FetchReply: {
      if (s.subrequests.contains(msg->body_as_FetchReply()->request())) {
        on_gathered_part(s, msg->body_as_FetchReply(), frames);
        return;
      }
      s.requests.erase(msg->body_as_FetchReply()->request());
      send(s.identity, std::move(frames[1]), &frames, 2);
      return;
    }
    case wire::Body::ErrorReply: {
      const auto* e = msg->body_as_ErrorReply();
      if (e->request() == 0) {
        send(s.identity, std::move(frames[1]));
        return;
      }
      if (auto sub = s.subrequests.find(e->request()); sub != s.subrequests.end()) {
        // Note [fetch gathering]: a shard failed; the request fails once.
        const uint64_t request = sub->second.first;
        s.subrequests.erase(sub);
        if (s.gathers.erase(request) > 0) {
          reply_error(s.identity, s.id, request, wire::to_failure_info(e->error()));
        }
        return;
      }
      auto req = s.requests.find(e->request());
      if (req == s.requests.end()) return;
      if (req->second.kind == wire::InstrKind::Sync) {
        req->second.errors.push_back(wire::to_failure_info(e->error()));
        if (--req->second.outstanding > 0) return;
        send(s.identity, wire::encode_sync_reply(s.id, e->request(), req->second.errors));
      } else {
        send(s.identity, std::move(frames[1]));
      }
      s.requests.erase(req);
      return;
    }
    case wire::Body::StatsReply:
      on_stats_reply(index, s, msg->body_as_StatsReply());
      return;
    case wire::Body::SyncReply: {
      const auto* r = msg->body_as_SyncReply();
      auto req = s.requests.find(r->request());
      if (req == s.requests.end()) return;
      if (r->errors()) {
        for (const auto* f : *r->errors()) req->second.errors.push_back(wire::to_failure_info(f));
      }
      if (--req->second.outstanding > 0) return;
      send(s.identity, wire::encode_sync_reply(s.id, r->request(), req->second.errors));
      s.requests.erase(req);
      return;
    }
    default:
      log->warn("worker={} sent {}: not a worker message", index, wire::body_name(type));
  }
}

void Dispatcher::State::fail_request(Session& s, uint64_t request, const wire::FailureInfo& f) {
  s.requests.erase(request);
  reply_error(s.identity, s.id, request, f);
}

void Dispatcher::State::close_session(uint64_t id, const char* why) {
  auto it = sessions.find(id);
  if (it == sessions.end()) return;
  Session& s = it->second;
  // Counted before the worker hears of it, so whoever sees the Bye sees the count.
  stats.sessions_closed.fetch_add(1);
  for (WorkerEntry& w : workers) {
    if (w.sessions.erase(id) > 0 && w.alive) send(w.identity, wire::encode_bye(id));
  }
  log->info("session closed session={} tensors={} reason='{}'", id,
            s.shards ? s.shards->tensor_count() : s.tensors.size(), why);
  event("CLOSE", "Session", "session=" + std::to_string(id) + " why=" + why);
  sessions.erase(it);
}

void Dispatcher::State::lose_worker(int index, const std::string& why) {
  WorkerEntry& w = workers[index];
  if (!w.alive) return;
  w.alive = false;
  stats.workers_lost.fetch_add(1);
  const std::string text = "[dispatcher] " + w.describe(index) + " lost: " + why;
  log->error("{}", text);
  event("LOST", "Worker", "worker=" + std::to_string(index) + " why=" + why);
  peers.erase(w.identity);
  // Note [stats gathering]: stop waiting for it, whichever session asked.
  for (auto& [sid, s] : sessions) {
    std::vector<uint64_t> done;
    for (auto& [request, p] : s.stats_requests) {
      auto pos = std::find(p.awaiting.begin(), p.awaiting.end(), index);
      if (pos == p.awaiting.end()) continue;
      p.awaiting.erase(pos);
      if (finish_stats(s, request, p)) done.push_back(request);
    }
    for (uint64_t request : done) s.stats_requests.erase(request);
  }
  for (uint64_t sid : w.sessions) {
    auto it = sessions.find(sid);
    if (it == sessions.end()) continue;
    Session& s = it->second;
    s.lost = wire::failure(Status::WorkerLost, text, index);
    std::vector<uint64_t> pending;
    for (const auto& [request, _] : s.requests) pending.push_back(request);
    for (const auto& [request, _] : s.gathers) pending.push_back(request);
    s.gathers.clear();
    s.subrequests.clear();
    for (uint64_t request : pending) fail_request(s, request, *s.lost);
  }
}

// Note [rendezvous store]
// Collectives between workers (Gloo, NCCL) need a key/value store for their
// ranks to find each other: each rank publishes its listening address and
// reads the others'. The dispatcher is that store, so a cluster needs no
// extra service: workers send StoreSet and StoreGet (wait until every key is
// set, up to a timeout) and get a StoreReply. Only a few hundred bytes per
// rank pass through it; tensor data goes worker to worker. Only registered
// workers may use it. Values live until the dispatcher stops; the store is
// bounded (kMaxStoreBytes in all, wire::kMaxStoreKeyBytes per key,
// wire::kMaxStoreValueBytes per value), and a set beyond the bounds gets an
// ErrorReply naming the limit. Pending gets of a lost worker are dropped.
constexpr size_t kMaxStoreBytes = size_t{64} << 20;

void Dispatcher::State::on_store_set(int index, const wire::StoreSet* set) {
  const std::string key = set->key() ? set->key()->str() : "";
  const size_t value_size = set->value() ? set->value()->size() : 0;
  std::string problem;
  if (key.empty() || key.size() > wire::kMaxStoreKeyBytes) {
    problem = "a store key of " + std::to_string(key.size()) + " bytes: expected 1 to " +
              std::to_string(wire::kMaxStoreKeyBytes);
  } else if (value_size > wire::kMaxStoreValueBytes) {
    problem = "a store value of " + std::to_string(value_size) + " bytes for '" + key +
              "': expected at most " + std::to_string(wire::kMaxStoreValueBytes);
  }
  auto it = store.find(key);
  const size_t replaced = it == store.end() ? 0 : key.size() + it->second.size();
  if (problem.empty() && store_bytes - replaced + key.size() + value_size > kMaxStoreBytes) {
    problem = "the rendezvous store is full (" + std::to_string(store_bytes) + " of " +
              std::to_string(kMaxStoreBytes) + " bytes) setting '" + key + "'";
  }
  if (!problem.empty()) {
    stats.malformed.fetch_add(1);
    log->warn("worker={} sent {}", index, problem);
    reply_error(workers[index].identity, 0, 0,
                wire::failure(Status::InvalidArgument, "[dispatcher] " + problem));
    return;
  }
  std::string value(reinterpret_cast<const char*>(set->value() ? set->value()->data() : nullptr),
                    value_size);
  store_bytes = store_bytes - replaced + key.size() + value.size();
  store[key] = std::move(value);
  std::erase_if(store_gets, [&](const PendingStoreGet& g) { return answer_store_get(g, false); });
}

void Dispatcher::State::on_store_get(int index, const wire::StoreGet* get) {
  PendingStoreGet g;
  g.worker = index;
  g.request = get->request();
  if (get->keys()) {
    for (const auto* k : *get->keys()) g.keys.push_back(k ? k->str() : "");
  }
  g.deadline_ms = now_ms() + get->timeout_ms();
  if (!answer_store_get(g, get->timeout_ms() == 0)) store_gets.push_back(std::move(g));
}

bool Dispatcher::State::answer_store_get(const PendingStoreGet& g, bool expired) {
  std::vector<std::string> missing, values;
  for (const std::string& k : g.keys) {
    auto it = store.find(k);
    if (it == store.end()) {
      missing.push_back(k);
    } else {
      values.push_back(it->second);
    }
  }
  if (!missing.empty() && !expired) return false;
  if (g.worker >= 0 && workers[g.worker].alive) {
    send(workers[g.worker].identity, wire::encode_store_reply(g.request, g.keys, values, missing));
  }
  return true;
}

void Dispatcher::State::check_timers() {
  const int64_t now = now_ms();
  if (want_stats && now >= next_stats_ms) {
    record_stats();
    next_stats_ms = now + kStatsPeriodMs;
  }
  std::erase_if(store_gets, [&](const PendingStoreGet& g) {
    return !workers[g.worker].alive || (now >= g.deadline_ms && answer_store_get(g, true));
  });
  for (int i = 0; i < static_cast<int>(workers.size()); ++i) {
    if (workers[i].alive && now - workers[i].last_seen_ms > env.heartbeat_timeout_ms) {
      lose_worker(i, "no heartbeat for " + std::to_string(now - workers[i].last_seen_ms) + " ms");
    }
  }
  // A client beats every interval even while its program computes, so silence
  // means it crashed; allow twice the timeout before freeing its tensors.
  std::vector<uint64_t> silent;
  for (const auto& [id, s] : sessions) {
    if (now - s.last_seen_ms > 2 * env.heartbeat_timeout_ms) silent.push_back(id);
  }
  for (uint64_t id : silent) {
    const std::string identity = sessions[id].identity;
    close_session(id, "client silent (crashed or disconnected)");
    peers.erase(identity);
  }
  std::vector<PendingHello> still;
  for (auto& h : pending_hellos) {
    if (now < h.deadline_ms) {
      still.push_back(std::move(h));
      continue;
    }
    const std::string text = "[dispatcher] " + std::to_string(alive_workers()) +
                             " worker(s) registered at " + endpoint + " after " +
                             std::to_string(options.worker_wait_ms) + " ms: expected at least " +
                             std::to_string(h.min_workers) +
                             "; start workers with `gt worker --connect " + endpoint + "`";
    log->warn("{}", text);
    reply_error(h.identity, 0, 0, wire::failure(Status::NoWorkers, text));
  }
  pending_hellos = std::move(still);
}

namespace {
std::atomic<Dispatcher*> g_running{nullptr};
void on_signal(int) {
  if (auto* d = g_running.load()) d->stop();
}
}  // namespace

int run_dispatcher_main(const DispatcherOptions& options) {
  configure_process_logging();
  try {
    Dispatcher d(options);
    g_running.store(&d);
    std::signal(SIGTERM, on_signal);
    std::signal(SIGINT, on_signal);
    d.run();
    g_running.store(nullptr);
    return 0;
  } catch (const std::exception& e) {
    spdlog::error("[dispatcher] {}", e.what());
    return 1;
  }
}

}  // namespace gt::dispatcher
