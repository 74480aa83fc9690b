// Gloo collectives whose ranks meet through the dispatcher's rendezvous store
// (Note [rendezvous store] in dispatcher/dispatcher.cpp): an in-process
// dispatcher, each rank a thread with its own worker connection.

#include <catch2/catch.hpp>

#include <ATen/ATen.h>

#include <thread>
#include <vector>

#include <gt/error.h>

#include "common/transport.h"
#include "common/wire.h"
#include "dispatcher/dispatcher.h"
#include "worker/collectives/dispatcher_store.h"
#include "worker/collectives/gloo_collectives.h"

using namespace gt;
using namespace gt::worker::collectives;
using namespace std::chrono_literals;

namespace {

struct RunningDispatcher {
  dispatcher::Dispatcher d;
  std::thread t;
  RunningDispatcher()
      : d(dispatcher::DispatcherOptions{"tcp://127.0.0.1:0", 2000, ""}), t([this] { d.run(); }) {}
  ~RunningDispatcher() {
    d.stop();
    t.join();
  }
};

// A worker connection owned by one thread: registers, then carries the
// store's messages (heartbeats and other bodies are skipped).
class SocketTransport final : public StoreTransport {
 public:
  explicit SocketTransport(const std::string& endpoint) : socket_(context_, zmq::socket_type::dealer) {
    socket_.set(zmq::sockopt::linger, 0);
    socket_.connect(endpoint);
    send(wire::encode_hello(wire::Role::Worker, "cpu", 0, 1, "store-test", 0));
    auto welcome = receive_body(wire::Body::Welcome, 5000ms);
    REQUIRE(welcome.has_value());
  }
  void send(zmq::message_t header) override {
    Frames f;
    f.push_back(std::move(header));
    REQUIRE(send_frames(socket_, f));
  }
  std::optional<zmq::message_t> receive(std::chrono::milliseconds timeout) override {
    return receive_body(wire::Body::StoreReply, timeout, /*or_error=*/true);
  }

 private:
  std::optional<zmq::message_t> receive_body(wire::Body want, std::chrono::milliseconds timeout,
                                             bool or_error = false) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
      zmq::poll(&item, 1, 20ms);
      while (auto frames = recv_frames(socket_)) {
        const auto type = wire::decode((*frames)[0])->body_type();
        if (type == want || (or_error && type == wire::Body::ErrorReply)) {
          return std::move((*frames)[0]);
        }
      }
    }
    return std::nullopt;
  }
  zmq::context_t context_{1};
  zmq::socket_t socket_;
};

}  // namespace

TEST_CASE("Gloo ranks rendezvous through the dispatcher's store", "[collectives][store][unit]") {
  RunningDispatcher r;
  for (const int size : {2, 3}) {
    std::vector<at::Tensor> results(size);
    std::vector<std::string> errors(size);
    std::vector<std::thread> ranks;
    for (int rank = 0; rank < size; ++rank) {
      ranks.emplace_back([&, rank] {
        try {
          DispatcherStore store(std::make_unique<SocketTransport>(r.d.endpoint()));
          GlooOptions o;
          o.rank = rank;
          o.size = size;
          o.name = "store-test-" + std::to_string(size);
          o.timeout = 20000ms;
          auto comm = make_gloo_collectives(store, o);
          at::Tensor t = at::full({5}, static_cast<float>(rank + 1));
          comm->all_reduce(t, ReduceOp::Sum);
          results[rank] = t;
        } catch (const std::exception& e) {
          errors[rank] = e.what();
        }
      });
    }
    for (auto& t : ranks) t.join();
    const float want = size * (size + 1) / 2.0f;
    for (int rank = 0; rank < size; ++rank) {
      INFO("size " << size << " rank " << rank << ": " << errors[rank]);
      REQUIRE(errors[rank].empty());
      CHECK(at::equal(results[rank], at::full({5}, want)));
    }
  }
}

TEST_CASE("the dispatcher store times out and refuses bad values", "[collectives][store][unit]") {
  RunningDispatcher r;
  DispatcherStore store(std::make_unique<SocketTransport>(r.d.endpoint()));
  const std::vector<char> v = {'a', 'b'};
  store.set("present", v);
  CHECK(store.get("present", 1000ms) == v);
  CHECK_FALSE(store.get("absent", 100ms).has_value());
  CHECK(store.wait({"present", "absent"}, 100ms) == std::vector<std::string>{"absent"});
  CHECK(store.wait({"present"}, 0ms).empty());
  CHECK_THROWS_WITH(store.set("", v), Catch::Contains("a key of 0 bytes"));
  CHECK_THROWS_WITH(store.set("big", std::vector<char>(wire::kMaxStoreValueBytes + 1)),
                    Catch::Contains("at most"));
  // A rank that never joins: Gloo's rendezvous times out naming it.
  GlooOptions o;
  o.rank = 0;
  o.size = 2;
  o.name = "lonely";
  o.timeout = 300ms;
  CHECK_THROWS_AS(make_gloo_collectives(store, o), gt::Error);
}
