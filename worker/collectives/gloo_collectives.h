#pragma once
// The Gloo backend of worker/collectives/collectives.h: CPU tensors over
// Gloo's TCP transport, one full mesh of connections per communicator. Gloo
// stays inside gloo_collectives.cpp; nothing here includes its headers.

#include <chrono>
#include <memory>
#include <string>

#include "worker/collectives/collectives.h"
#include "worker/collectives/store.h"

namespace gt::worker::collectives {

struct GlooOptions {
  int rank = 0;  // this worker's rank in [0, size)
  int size = 1;  // ranks in the communicator
  /// Communicator name: prefixes every store key, so several communicators
  /// (and several generations of one) can share a store. Every rank passes
  /// the same name; a name is used for one communicator instance only.
  std::string name = "gt";
  /// Where this rank listens for its peers: an IP address or host name, or a
  /// network interface name ("eth0"). Peers connect to the address it
  /// resolves to, so it must be reachable from every other rank.
  std::string host = "127.0.0.1";
  /// Longest wait for the other ranks: to join and connect, and for each
  /// transfer inside a collective.
  std::chrono::milliseconds timeout{30000};
};

/// Joins the communicator `options.name` through `store` and connects to
/// every other rank; returns once every rank is connected (it ends with a
/// barrier). The store is used only during this call. The first call sets
/// SIGPIPE to ignored if it still has its default action (Note [SIGPIPE] in
/// gloo_collectives.cpp).
///
/// Throws std::invalid_argument for bad options (rank outside [0, size),
/// size < 1 or > 65536, empty name, timeout <= 0), gt::TimeoutError naming
/// the ranks that did not join within the timeout, gt::TransportError when
/// the connections fail (bad host or interface, unreachable peer, a peer
/// that left while connecting).
std::unique_ptr<Collectives> make_gloo_collectives(Store& store, const GlooOptions& options);

}  // namespace gt::worker::collectives
