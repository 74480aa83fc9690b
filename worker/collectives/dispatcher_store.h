#pragma once
// The rendezvous store served by the dispatcher (Note [rendezvous store] in
// dispatcher/dispatcher.cpp): StoreSet / StoreGet / StoreReply messages on a
// worker's connection to the dispatcher.

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <zmq.hpp>

#include "worker/collectives/store.h"

namespace gt::worker::collectives {

/// How a DispatcherStore reaches the dispatcher. Both calls come from the
/// thread using the store. A worker implements it over its IO thread (send
/// through the executor's reply pipe, receive the StoreReplies the IO thread
/// hands over); a test over its own DEALER socket.
class StoreTransport {
 public:
  virtual ~StoreTransport() = default;
  /// Sends one header frame (StoreSet or StoreGet) to the dispatcher.
  virtual void send(zmq::message_t header) = 0;
  /// The next StoreReply header for this store, waiting up to `timeout`;
  /// nullopt when none came.
  virtual std::optional<zmq::message_t> receive(std::chrono::milliseconds timeout) = 0;
};

/// A Store whose data lives in the dispatcher. Not thread-safe beyond the
/// Store contract's needs: one thread at a time (the collectives' owner).
/// Transport failures and a dispatcher that does not answer throw gt::Error.
class DispatcherStore final : public Store {
 public:
  explicit DispatcherStore(std::unique_ptr<StoreTransport> transport);

  void set(const std::string& key, const std::vector<char>& value) override;
  [[nodiscard]] std::optional<std::vector<char>> get(const std::string& key,
                                                     std::chrono::milliseconds timeout) override;
  [[nodiscard]] std::vector<std::string> wait(const std::vector<std::string>& keys,
                                              std::chrono::milliseconds timeout) override;

  /// Extra time allowed for the dispatcher's answer after a get's timeout.
  static constexpr std::chrono::milliseconds kReplyGrace{5000};

 private:
  struct Answer {
    std::vector<std::vector<char>> values;  // of the keys, in order, when none is missing
    std::vector<std::string> missing;
  };
  Answer request(const std::vector<std::string>& keys, std::chrono::milliseconds timeout);

  std::unique_ptr<StoreTransport> transport_;
  uint64_t next_request_ = 1;
};

}  // namespace gt::worker::collectives
