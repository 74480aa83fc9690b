#include "common/transport.h"

#include "common/check.h"
#include "common/wire.h"
#include "common/zero_copy.h"

namespace gt {

std::optional<Frames> recv_frames(zmq::socket_t& s, bool dont_wait) {
  Frames frames;
  const auto flags = dont_wait ? zmq::recv_flags::dontwait : zmq::recv_flags::none;
  zmq::message_t first;
  if (!s.recv(first, flags)) return std::nullopt;
  const bool more = first.more();
  frames.push_back(std::move(first));
  // The rest of a multipart message is already here once the first part is.
  for (bool m = more; m;) {
    zmq::message_t part;
    if (!s.recv(part, zmq::recv_flags::none)) break;
    m = part.more();
    frames.push_back(std::move(part));
  }
  return frames;
}

bool send_frames(zmq::socket_t& s, Frames& frames) {
  for (size_t i = 0; i < frames.size(); ++i) {
    const auto flags = i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none;
    tsan::handing_over(frames[i]);  // Note [zero-copy frames and TSan]
    if (!s.send(frames[i], flags)) return false;
  }
  return true;
}

void configure_socket(zmq::socket_t& s) {
  s.set(zmq::sockopt::linger, 0);
  s.set(zmq::sockopt::maxmsgsize, wire::kMaxFrameBytes);
  s.set(zmq::sockopt::sndhwm, 100000);
  s.set(zmq::sockopt::rcvhwm, 100000);
}

void check_endpoint(const std::string& endpoint) {
  const bool ok = endpoint.rfind("tcp://", 0) == 0 || endpoint.rfind("ipc://", 0) == 0 ||
                  endpoint.rfind("inproc://", 0) == 0;
  GT_CHECK(ok && endpoint.find("://") + 3 < endpoint.size(), "invalid endpoint '", endpoint,
           "': expected tcp://HOST:PORT, ipc://PATH or inproc://NAME");
}

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace gt
