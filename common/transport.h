#pragma once
// Thin helpers over cppzmq shared by every component: multipart send/receive,
// socket set-up with gt's limits, endpoint checks.

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include <zmq.hpp>

namespace gt {

using Frames = std::vector<zmq::message_t>;

/// Receives all frames of one message; nullopt when nothing is waiting
/// (non-blocking) or the socket timed out.
[[nodiscard]] std::optional<Frames> recv_frames(zmq::socket_t& s,
                                                bool dont_wait = true);

/// Sends all frames as one message (moves them out). Blocks only if the peer's
/// queue is full. Returns false when the message could not be queued.
bool send_frames(zmq::socket_t& s, Frames& frames);

/// Applies gt's socket options: no linger at close, frame size bound, high
/// water marks large enough for pipelined streams.
void configure_socket(zmq::socket_t& s);

/// Validates an endpoint ("tcp://host:port", "ipc://path", "inproc://name");
/// throws std::invalid_argument naming the endpoint and the accepted forms.
void check_endpoint(const std::string& endpoint);

/// Milliseconds since an arbitrary fixed point (steady clock).
int64_t now_ms();

}  // namespace gt
