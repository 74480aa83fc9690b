#pragma once
// Attaching a tool to a running dispatcher's event stream (docs/instruction_log.md,
// "Event stream"): a Hello with role Monitor returns the endpoint of the
// dispatcher's PUB socket; subscribers receive instruction-log events as JSON
// lines under two topics, "events" (everything a component logs) and "stats"
// (the periodic STATS events). The dispatcher asks workers to produce them only
// while someone subscribes.

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "common/instruction_log.h"

namespace gt::tools {

/// The dispatcher endpoint a tool attaches to: `endpoint` if not empty, else
/// GT_DISPATCHER, else the endpoint file of the newest local cluster this user
/// auto-started (Note [local cluster endpoint] in client/local_cluster.cpp).
/// Throws gt::Error naming all three when none is found.
std::string resolve_dispatcher(const std::string& endpoint);

/// What a dispatcher's Welcome to a monitor says.
struct DispatcherInfo {
  std::string events;    // event stream endpoint as advertised; empty: none
  uint32_t workers = 0;  // workers registered now
};

/// One Hello with role Monitor to the dispatcher at `dispatcher`, with CURVE
/// when GT_CURVE_SERVER_KEY is set (docs/security.md). Throws gt::Error naming
/// the endpoint when it does not answer within `timeout`, refuses the
/// handshake (gt::TransportError with the reason) or answers with an error;
/// gt::ConfigError for bad key files.
DispatcherInfo ask_dispatcher(const std::string& dispatcher, std::chrono::milliseconds timeout);

/// The dispatcher's event stream endpoint, reachable from here
/// (reachable_events_endpoint); throws like ask_dispatcher, and when the
/// dispatcher has no stream.
std::string events_endpoint(const std::string& dispatcher, std::chrono::milliseconds timeout);

/// The event stream endpoint as this tool can reach it: a dispatcher bound
/// on all interfaces advertises tcp://0.0.0.0:PORT (or *, [::]); the tool
/// connects to the host it reached the dispatcher at instead.
std::string reachable_events_endpoint(const std::string& events, const std::string& dispatcher);

/// A SUB socket on a dispatcher's event stream.
class EventSubscriber {
 public:
  /// Connects to `events` (from events_endpoint), with CURVE like
  /// ask_dispatcher, and subscribes to `topics` ("events", "stats"; empty:
  /// both).
  EventSubscriber(const std::string& events, const std::vector<std::string>& topics);
  ~EventSubscriber();
  EventSubscriber(const EventSubscriber&) = delete;
  EventSubscriber& operator=(const EventSubscriber&) = delete;

  /// Waits up to `timeout` for the next message, then drains what else is
  /// queued. Returns the events received (possibly none). Lines that do not
  /// parse are counted in malformed() and skipped.
  std::vector<LogEvent> poll(std::chrono::milliseconds timeout);
  /// Same, but returns the raw JSON lines (gt trace writes them as they are).
  std::vector<std::string> poll_lines(std::chrono::milliseconds timeout);
  uint64_t malformed() const { return malformed_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  uint64_t malformed_ = 0;
};

}  // namespace gt::tools
