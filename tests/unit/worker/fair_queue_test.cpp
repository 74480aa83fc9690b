// Note [fair scheduling]: the order in which a worker runs its sessions'
// messages (worker/fair_queue.h).

#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "worker/fair_queue.h"

using gt::worker::FairQueue;

namespace {

// Pops everything: "session:message" in the order they would run.
std::vector<std::string> drain(FairQueue<std::string>& q) {
  std::vector<std::string> out;
  while (auto next = q.pop()) out.push_back(std::to_string(next->first) + ":" + next->second);
  return out;
}

}  // namespace

TEST_CASE("fair queue: sessions take turns and keep their own order", "[worker][unit]") {
  FairQueue<std::string> q;
  // Session 1 streams a backlog before sessions 2 and 3 send one step each.
  for (int i = 0; i < 4; ++i) q.push(1, "a" + std::to_string(i), false);
  q.push(2, "b0", false);
  q.push(3, "c0", false);
  q.push(2, "b1", false);
  CHECK(q.size() == 7);
  CHECK(drain(q) == std::vector<std::string>{"1:a0", "2:b0", "3:c0", "1:a1", "2:b1", "1:a2",
                                             "1:a3"});
  CHECK(q.empty());
  CHECK_FALSE(q.pop());
}

TEST_CASE("fair queue: the turn goes on from the last session served", "[worker][unit]") {
  FairQueue<std::string> q;
  q.push(5, "x", false);
  q.push(9, "y", false);
  CHECK(q.pop()->first == 5);
  q.push(2, "z", false);  // arrives after 5 was served: 9 comes first, then 2
  CHECK(drain(q) == std::vector<std::string>{"9:y", "2:z"});
}

TEST_CASE("fair queue: messages with collectives run in arrival order", "[worker][unit]") {
  FairQueue<std::string> q;
  // Session 1's collective (A1) arrived before session 2's (B0). When 2's turn
  // comes first, 2 waits and 3 goes on; 1 then runs A1 and 2 runs B0.
  q.push(1, "a0", false);
  q.push(1, "A1", true);
  q.push(2, "B0", true);
  q.push(3, "c0", false);
  CHECK(drain(q) == std::vector<std::string>{"1:a0", "3:c0", "1:A1", "2:B0"});

  // Plain messages of a waiting session's peers interleave with the
  // collectives; the collectives keep their arrival order.
  q.push(2, "b0", false);
  q.push(1, "a0", false);
  q.push(1, "A1", true);
  q.push(2, "B1", true);
  q.push(2, "b2", false);
  q.push(3, "C0", true);
  CHECK(drain(q) ==
        std::vector<std::string>{"1:a0", "2:b0", "1:A1", "2:B1", "3:C0", "2:b2"});

  q.push(1, "x", true);
  q.push(2, "y", false);
  q.clear();  // registered again: nothing queued survives
  CHECK(q.empty());
  CHECK_FALSE(q.pop());
}
