#include "tools/monitor.h"

#include <unistd.h>

#include <filesystem>
#include <system_error>

#include <gt/error.h>
#include <zmq.hpp>

#include "common/env.h"
#include "common/security.h"
#include "common/transport.h"
#include "common/wire.h"
#include "common/zero_copy.h"

namespace gt::tools {
namespace fs = std::filesystem;

namespace {

// Note [local cluster endpoint] in client/local_cluster.cpp: an auto-started
// cluster's dispatcher listens on ipc://<TMPDIR or /tmp>/gt-XXXXXX/dispatcher.
// The newest such socket is the cluster a user most likely means.
std::optional<std::string> newest_local_cluster() {
  std::string base = "/tmp";
  if (auto t = env_string("TMPDIR"); t && t->size() < 60 && fs::is_directory(*t)) base = *t;
  std::optional<std::string> best;
  fs::file_time_type best_time{};
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(base, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("gt-", 0) != 0) continue;
    const fs::path socket = entry.path() / "dispatcher";
    std::error_code ec2;
    if (!fs::is_socket(socket, ec2)) continue;
    const auto t = fs::last_write_time(socket, ec2);
    if (ec2) continue;
    if (!best || t > best_time) {
      best = "ipc://" + socket.string();
      best_time = t;
    }
  }
  return best;
}

}  // namespace

std::string resolve_dispatcher(const std::string& endpoint) {
  if (!endpoint.empty()) return endpoint;
  if (auto e = env_string("GT_DISPATCHER")) return *e;
  if (auto local = newest_local_cluster()) return *local;
  throw Error(
      "no dispatcher to attach to: pass --endpoint tcp://HOST:PORT (or ipc://PATH), set "
      "GT_DISPATCHER, or start a program that auto-starts a local cluster (its dispatcher "
      "socket is found as $TMPDIR/gt-*/dispatcher)");
}

DispatcherInfo ask_dispatcher(const std::string& dispatcher, std::chrono::milliseconds timeout) {
  check_endpoint(dispatcher);
  const auto curve = curve_client_keys(read_env());  // ConfigError for bad key files
  zmq::context_t context(1);
  zmq::socket_t dealer(context, zmq::socket_type::dealer);
  dealer.set(zmq::sockopt::linger, 0);
  apply_curve(dealer, curve ? &*curve : nullptr);
  HandshakeMonitor handshake(context, dealer, curve.has_value());
  dealer.connect(dispatcher);
  zmq::message_t hello = wire::encode_hello(wire::Role::Monitor, "", 0, ::getpid(), "gt monitor", 1);
  tsan::handing_over(hello);  // Note [zero-copy frames and TSan]
  if (!dealer.send(hello, zmq::send_flags::dontwait)) {
    throw TransportError("[monitor] cannot send a Hello to the dispatcher at " + dispatcher);
  }
  // Polled in slices, so that a refused handshake ends the wait with its reason.
  zmq::pollitem_t item{dealer.handle(), 0, ZMQ_POLLIN, 0};
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (auto refused = handshake.failure()) {
      throw TransportError("[monitor] the dispatcher at " + dispatcher + " refused this tool: " +
                           *refused);
    }
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      throw TransportError(
          "[monitor] the dispatcher at " + dispatcher + " did not answer within " +
          std::to_string(timeout.count()) + " ms (is it running? is the endpoint right?" +
          (curve ? " CURVE is on: is GT_CURVE_SERVER_KEY the dispatcher's public key?)" : ")"));
    }
    if (zmq::poll(&item, 1, std::min(left, std::chrono::milliseconds(50))) > 0) break;
  }
  auto frames = recv_frames(dealer);
  if (!frames || frames->empty()) {
    throw TransportError("[monitor] no reply from the dispatcher at " + dispatcher);
  }
  const wire::Message* msg = wire::decode((*frames)[0]);  // throws ProtocolError on garbage
  if (msg->body_type() == wire::Body::ErrorReply) {
    const auto* e = msg->body_as_ErrorReply();
    const std::string what = e->error() && e->error()->message() ? e->error()->message()->str() : "";
    throw TransportError("[monitor] the dispatcher at " + dispatcher + " refused: " + what);
  }
  if (msg->body_type() != wire::Body::Welcome) {
    throw ProtocolError("[monitor] the dispatcher at " + dispatcher + " answered " +
                        std::string(wire::body_name(msg->body_type())) + ", expected Welcome");
  }
  const auto* w = msg->body_as_Welcome();
  return DispatcherInfo{w->events() ? w->events()->str() : "", w->workers()};
}

std::string events_endpoint(const std::string& dispatcher, std::chrono::milliseconds timeout) {
  const std::string events = ask_dispatcher(dispatcher, timeout).events;
  if (events.empty()) {
    throw Error("[monitor] the dispatcher at " + dispatcher +
                " has no event stream (it was started with --events off)");
  }
  return reachable_events_endpoint(events, dispatcher);
}

std::string reachable_events_endpoint(const std::string& events, const std::string& dispatcher) {
  constexpr std::string_view kTcp = "tcp://";
  if (events.rfind(kTcp, 0) != 0 || dispatcher.rfind(kTcp, 0) != 0) return events;
  const size_t events_port = events.rfind(':');
  const size_t dispatcher_port = dispatcher.rfind(':');
  if (events_port == std::string::npos || dispatcher_port == std::string::npos ||
      events_port < kTcp.size() || dispatcher_port < kTcp.size()) {
    return events;
  }
  const std::string host = events.substr(kTcp.size(), events_port - kTcp.size());
  if (host != "0.0.0.0" && host != "*" && host != "[::]" && host != "::") return events;
  return std::string(kTcp) + dispatcher.substr(kTcp.size(), dispatcher_port - kTcp.size()) +
         events.substr(events_port);
}

struct EventSubscriber::Impl {
  zmq::context_t context{1};
  zmq::socket_t sub{context, zmq::socket_type::sub};
};

EventSubscriber::EventSubscriber(const std::string& events, const std::vector<std::string>& topics)
    : impl_(std::make_unique<Impl>()) {
  check_endpoint(events);
  const auto curve = curve_client_keys(read_env());
  impl_->sub.set(zmq::sockopt::linger, 0);
  impl_->sub.set(zmq::sockopt::rcvhwm, 100000);
  apply_curve(impl_->sub, curve ? &*curve : nullptr);  // the stream is a CURVE server too
  if (topics.empty()) {
    impl_->sub.set(zmq::sockopt::subscribe, "events");
    impl_->sub.set(zmq::sockopt::subscribe, "stats");
  }
  for (const std::string& t : topics) impl_->sub.set(zmq::sockopt::subscribe, t);
  impl_->sub.connect(events);
}

EventSubscriber::~EventSubscriber() = default;

std::vector<std::string> EventSubscriber::poll_lines(std::chrono::milliseconds timeout) {
  std::vector<std::string> lines;
  zmq::pollitem_t item{impl_->sub.handle(), 0, ZMQ_POLLIN, 0};
  try {
    if (zmq::poll(&item, 1, timeout) == 0) return lines;
  } catch (const zmq::error_t& e) {
    if (e.num() == EINTR) return lines;
    throw;
  }
  for (;;) {
    std::optional<Frames> frames;
    try {
      frames = recv_frames(impl_->sub);
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) break;
      throw;
    }
    if (!frames) break;
    if (frames->size() != 2) {
      ++malformed_;
      continue;
    }
    const std::string_view payload((*frames)[1].data<char>(), (*frames)[1].size());
    size_t pos = 0;
    while (pos < payload.size()) {
      size_t nl = payload.find('\n', pos);
      if (nl == std::string_view::npos) nl = payload.size();
      if (nl > pos) lines.emplace_back(payload.substr(pos, nl - pos));
      pos = nl + 1;
    }
  }
  return lines;
}

std::vector<LogEvent> EventSubscriber::poll(std::chrono::milliseconds timeout) {
  std::vector<LogEvent> events;
  for (const std::string& line : poll_lines(timeout)) {
    if (auto e = parse_json(line)) {
      events.push_back(std::move(*e));
    } else {
      ++malformed_;
    }
  }
  return events;
}

}  // namespace gt::tools
