#pragma once
// The order in which a worker runs its clients' messages: Note [fair
// scheduling]. No LibTorch and no sockets, so it is unit-tested on its own.

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <utility>

namespace gt::worker {

// Note [fair scheduling]
// Many clients share a worker, and the dispatcher forwards each client's
// batches as they come: one client that streams thousands of batches without
// waiting would queue them all ahead of another client's single step, which
// then waits for the whole backlog. So the worker keeps a queue per session
// and takes one message from each non-empty queue in turn (round robin by
// session id): a client waits for at most one message of every other client
// between two of its own. A session's own messages keep their order.
//
// Collectives need one more rule. A collective blocks the executor until the
// group's other workers run it, and the workers of a group share one
// communicator whose operations must come in the same order everywhere; the
// dispatcher sends every worker its collectives in one global order. If two
// workers picked different sessions' collectives first, each would wait for
// the other forever. So messages with collectives run in their arrival order
// relative to each other: a session whose next message holds a collective
// waits (others go on) until every earlier-arrived message with a collective
// has run. Every worker then runs the collectives in the dispatcher's order,
// and nothing waits on a message that cannot run: the earliest collective
// message always can once its session's earlier messages have run.
template <class Message>
class FairQueue {
 public:
  /// Appends `m` to `session`'s queue; `collective`: it holds a collective.
  void push(uint64_t session, Message m, bool collective) {
    const uint64_t seq = next_seq_++;
    queues_[session].push_back(Entry{std::move(m), seq, collective});
    if (collective) collective_order_.push_back(seq);
    ++size_;
  }

  /// The next message to run and its session; nullopt when empty.
  std::optional<std::pair<uint64_t, Message>> pop() {
    if (size_ == 0) return std::nullopt;
    // Round robin: the first session after the last one served, wrapping.
    auto start = queues_.upper_bound(last_);
    for (int pass = 0; pass < 2; ++pass) {
      auto end = pass == 0 ? queues_.end() : queues_.upper_bound(last_);
      for (auto it = pass == 0 ? start : queues_.begin(); it != end; ++it) {
        Entry& head = it->second.front();
        if (head.collective && head.seq != collective_order_.front()) continue;
        const uint64_t session = it->first;
        Message m = std::move(head.message);
        if (head.collective) collective_order_.pop_front();
        it->second.pop_front();
        if (it->second.empty()) queues_.erase(it);
        --size_;
        last_ = session;
        return std::make_pair(session, std::move(m));
      }
    }
    return std::nullopt;  // unreachable: the earliest collective message can always run
  }

  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  /// Drops every queued message (the worker registered again).
  void clear() {
    queues_.clear();
    collective_order_.clear();
    size_ = 0;
  }

 private:
  struct Entry {
    Message message;
    uint64_t seq;
    bool collective;
  };
  std::map<uint64_t, std::deque<Entry>> queues_;  // non-empty queues only
  std::deque<uint64_t> collective_order_;         // seqs of queued collective messages
  uint64_t next_seq_ = 0;
  uint64_t last_ = 0;  // the session served last
  size_t size_ = 0;
};

}  // namespace gt::worker
