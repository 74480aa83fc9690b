#include "worker/collectives/communicators.h"

#include <unistd.h>

#include <climits>
#include <stdexcept>
#include <utility>

#include <gt/error.h>

#include "common/check.h"
#include "worker/collectives/gloo_collectives.h"
#include "worker/collectives/nccl_collectives.h"

namespace gt::worker::collectives {

// Note [communicator cache]
// A Collective instruction names its group by worker indices; the worker
// keeps one communicator per distinct group, created on the group's first
// collective and reused by every session after it (the dispatcher issues
// each worker's collectives from one thread, so every rank sees one group's
// collectives in the same order whatever sessions they come from).
// A group whose communicator timed out or lost a connection is never created
// again while the worker stays registered, for two reasons: its peers may be
// mid-transfer, and a communicator's name is good for one instance only: the
// rendezvous keys under "gt/comm/<group>/" stay in the dispatcher's store
// until it stops, so a second instance would read the first one's addresses.
// The group stays broken and fails its collectives at once with the first
// failure (docs/protocol.md, "Collectives"), instead of each one waiting for
// the timeout. A creation that failed counts the same (this rank's join key
// is already set). Only a bad rank, refused before anything reaches the
// store, is not remembered. Re-registration drops the cache: the worker's
// index changes, so its groups are new.

CommunicatorProvider::CommunicatorProvider(CommunicatorFactory factory,
                                           std::function<bool()> stopping)
    : factory_(std::move(factory)), stopping_(std::move(stopping)) {
  GT_CHECK(factory_ != nullptr, "[collectives.provider] no communicator factory given");
}

Collectives& CommunicatorProvider::get(const std::vector<int>& group, int rank) {
  GT_CHECK(rank >= 0 && static_cast<size_t>(rank) < group.size(), "[collectives.provider] rank ",
           rank, " is outside the group ", group_str(group), ": expected a rank in [0, ",
           group.size(), ")");
  if (stopping_ && stopping_()) {
    throw TransportError(detail::cat("the worker is stopping: no collective over workers ",
                                     group_str(group), " starts any more"));
  }
  Entry& e = groups_[group];
  if (!e.failure.empty()) {
    const std::string what = detail::cat("the communicator of workers ", group_str(group),
                                         " broke earlier and stays unusable: ", e.failure);
    if (e.timed_out) throw TimeoutError(what);
    throw TransportError(what);
  }
  if (e.comm) return *e.comm;
  try {
    e.comm = factory_(group, rank);
    GT_CHECK(e.comm != nullptr, "[collectives.provider] the factory made no communicator for ",
             group_str(group));
  } catch (const std::invalid_argument&) {
    groups_.erase(group);
    throw;
  } catch (const TimeoutError& ex) {
    e.failure = ex.what();
    e.timed_out = true;
    throw;
  } catch (const std::exception& ex) {
    e.failure = ex.what();
    throw;
  }
  return *e.comm;
}

void CommunicatorProvider::mark_broken(const std::vector<int>& group, std::string failure,
                                       bool timed_out) {
  Entry& e = groups_[group];
  e.comm.reset();  // closes its connections: peers still waiting fail at once
  if (!e.failure.empty()) return;
  e.failure = failure.empty() ? std::string("an unnamed failure") : std::move(failure);
  e.timed_out = timed_out;
}

std::optional<std::string> CommunicatorProvider::broken(const std::vector<int>& group) const {
  auto it = groups_.find(group);
  if (it == groups_.end() || it->second.failure.empty()) return std::nullopt;
  return it->second.failure;
}

void CommunicatorProvider::reset() {
  groups_.clear();
}

size_t CommunicatorProvider::communicator_count() const {
  size_t n = 0;
  for (const auto& [group, e] : groups_) n += e.comm != nullptr;
  return n;
}

std::string group_str(std::span<const int> group) {
  std::string out = "[";
  for (size_t i = 0; i < group.size(); ++i) {
    if (i) out += ',';
    out += std::to_string(group[i]);
  }
  return out + "]";
}

std::string communicator_name(std::span<const int> group) {
  std::string out = "gt/comm/";
  for (size_t i = 0; i < group.size(); ++i) {
    if (i) out += ',';
    out += std::to_string(group[i]);
  }
  return out;
}

CommunicatorFactory gloo_communicator_factory(std::shared_ptr<Store> store, std::string host,
                                              std::chrono::milliseconds timeout) {
  GT_CHECK(store != nullptr, "[collectives.gloo_communicator_factory] no store given");
  return [store = std::move(store), host = std::move(host), timeout](const std::vector<int>& group,
                                                                     int rank) {
    GlooOptions o;
    o.rank = rank;
    o.size = static_cast<int>(group.size());
    o.name = communicator_name(group);
    o.host = host;
    o.timeout = timeout;
    return make_gloo_collectives(*store, o);
  };
}

CommunicatorFactory nccl_communicator_factory(std::shared_ptr<Store> store, int device_index,
                                              std::chrono::milliseconds timeout) {
  GT_CHECK(store != nullptr, "[collectives.nccl_communicator_factory] no store given");
  return [store = std::move(store), device_index, timeout](const std::vector<int>& group,
                                                           int rank) {
    NcclOptions o;
    o.rank = rank;
    o.size = static_cast<int>(group.size());
    o.name = communicator_name(group);
    o.device = device_index;
    o.timeout = timeout;
    return make_nccl_collectives(*store, o);
  };
}

std::string default_collective_host(std::string_view endpoint) {
  constexpr std::string_view kLoopback = "127.0.0.1";
  if (endpoint.starts_with("ipc://") || endpoint.starts_with("inproc://")) {
    return std::string(kLoopback);
  }
  if (endpoint.starts_with("tcp://")) {
    std::string_view host = endpoint.substr(6);
    if (host.starts_with('[')) {  // tcp://[::1]:5555
      const size_t close = host.find(']');
      host = host.substr(1, close == std::string_view::npos ? host.npos : close - 1);
    } else if (const size_t colon = host.rfind(':'); colon != std::string_view::npos) {
      host = host.substr(0, colon);
    }
    // ZeroMQ's "tcp://source;destination" form: the destination decides.
    if (const size_t semi = host.find(';'); semi != std::string_view::npos) {
      host = host.substr(semi + 1);
    }
    if (host.starts_with("127.") || host == "localhost" || host == "::1") {
      return std::string(kLoopback);
    }
  }
  char name[HOST_NAME_MAX + 1] = {};
  if (::gethostname(name, sizeof name - 1) == 0 && name[0] != '\0') return name;
  return std::string(kLoopback);  // no host name: peers on other machines cannot reach us anyway
}

}  // namespace gt::worker::collectives
