#pragma once
// The communicators a worker runs Collective instructions on
// (docs/protocol.md, "Collectives"): one per group of workers, created on
// first use and kept until the worker registers again. See Note
// [communicator cache] in communicators.cpp.

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "worker/collectives/collectives.h"
#include "worker/collectives/store.h"

namespace gt::worker::collectives {

/// Creates the communicator of `group` (worker indices, strictly ascending)
/// in which this worker is `rank` (its position in `group`). Blocks until
/// every rank has joined; throws like make_gloo_collectives or
/// make_nccl_collectives.
using CommunicatorFactory =
    std::function<std::unique_ptr<Collectives>(const std::vector<int>& group, int rank)>;

/// One communicator per group of workers, created by the factory on first
/// use and cached. A group whose communicator could not be created or
/// failed with a timeout or a broken connection stays broken: get() throws
/// the first failure again at once, without communicating.
///
/// Pinned (copy and move deleted). Not thread-safe: the executor thread
/// drives it, as it drives the communicators themselves (`stopping` is
/// called on that thread too).
class CommunicatorProvider {
 public:
  /// `stopping`, when given, is asked on every get(): once it answers true
  /// (the worker shuts down), get() throws gt::TransportError at once rather
  /// than start a collective whose peers may be gone.
  explicit CommunicatorProvider(CommunicatorFactory factory, std::function<bool()> stopping = {});
  CommunicatorProvider(const CommunicatorProvider&) = delete;
  CommunicatorProvider& operator=(const CommunicatorProvider&) = delete;
  CommunicatorProvider(CommunicatorProvider&&) = delete;
  CommunicatorProvider& operator=(CommunicatorProvider&&) = delete;

  /// The communicator of `group`, created on first use. Throws
  /// std::invalid_argument for a rank outside the group (nothing is
  /// remembered); the factory's gt::TimeoutError or gt::Error (the group is
  /// then broken); for a broken group gt::TimeoutError or
  /// gt::TransportError naming the first failure; gt::TransportError while
  /// stopping.
  Collectives& get(const std::vector<int>& group, int rank);

  /// Marks `group` broken by `failure` (what a collective on it threw:
  /// gt::TimeoutError when `timed_out`, else gt::TransportError); its
  /// communicator is closed. A group already broken keeps its first failure.
  void mark_broken(const std::vector<int>& group, std::string failure, bool timed_out);

  /// The first failure of a broken group; nullopt for a healthy or unknown one.
  std::optional<std::string> broken(const std::vector<int>& group) const;

  /// Drops every communicator and every broken mark (the worker registered
  /// again: its index, and so its groups, are new).
  void reset();

  /// Communicators created and not broken.
  size_t communicator_count() const;

 private:
  struct Entry {
    std::unique_ptr<Collectives> comm;  // null once broken
    std::string failure;                // the first failure; empty while healthy
    bool timed_out = false;
  };
  CommunicatorFactory factory_;
  std::function<bool()> stopping_;
  std::map<std::vector<int>, Entry> groups_;
};

/// "[0,2,5]": a group as messages name it.
std::string group_str(std::span<const int> group);

/// "gt/comm/0,2,5": the name of a group's communicator, which prefixes its
/// rendezvous keys (docs/protocol.md, "Collectives").
std::string communicator_name(std::span<const int> group);

/// A factory of Gloo communicators named communicator_name(group) that meet
/// through `store` (kept alive by the factory), listen on `host` and wait
/// up to `timeout` for their peers.
CommunicatorFactory gloo_communicator_factory(std::shared_ptr<Store> store, std::string host,
                                              std::chrono::milliseconds timeout);

/// A factory of NCCL communicators named communicator_name(group) on
/// cuda:`device_index`, meeting through `store` (kept alive by the factory)
/// and waiting up to `timeout` for their peers and for each collective.
/// Where NCCL cannot be used (a build without its headers, no libnccl, no
/// usable device), every communicator's creation throws gt::Error saying
/// why, and the provider keeps that group broken.
CommunicatorFactory nccl_communicator_factory(std::shared_ptr<Store> store, int device_index,
                                              std::chrono::milliseconds timeout);

/// Where a worker's communicators listen when GT_COLLECTIVE_HOST is unset:
/// "127.0.0.1" when the dispatcher at `dispatcher_endpoint` is on this
/// machine (ipc://, inproc://, or a tcp loopback host: 127.x.x.x, localhost,
/// ::1), else this machine's host name. Peers on other machines must be able
/// to reach it.
std::string default_collective_host(std::string_view dispatcher_endpoint);

}  // namespace gt::worker::collectives
