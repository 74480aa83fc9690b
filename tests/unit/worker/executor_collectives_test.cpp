// Collective instructions (docs/protocol.md, "Collectives"; Note [collective
// instructions] in worker/executor_collectives.cpp): executors of 1 to 3
// workers as threads of this process, whose Gloo communicators meet through
// an InMemoryStore, checked against LibTorch; then whole Worker objects whose
// communicators meet through a fake dispatcher's rendezvous store
// (Note [store mailbox] in worker/worker.cpp).

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <thread>

#include <gt/error.h>

#include "common/env.h"
#include "common/instruction_log.h"
#include "common/logging.h"
#include "common/transport.h"
#include "tests/unit/worker/worker_test_support.h"
#include "worker/collectives/communicators.h"
#include "worker/collectives/nccl_collectives.h"
#include "worker/collectives/store.h"
#include "worker/worker.h"

namespace gt::worker::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using collectives::Collective;
using collectives::CommunicatorProvider;

Instr collective(Collective c, std::vector<int> group, int64_t a, int64_t b, Shape shape,
                 std::vector<TensorId> inputs, std::vector<TensorId> outputs,
                 DType dtype = DType::Float32) {
  Instr in;
  in.kind = InstrKind::Collective;
  in.op = static_cast<OpCode>(c);
  in.ints.push_back(static_cast<int64_t>(group.size()));
  in.ints.insert(in.ints.end(), group.begin(), group.end());
  in.ints.push_back(a);
  in.ints.push_back(b);
  in.ints.insert(in.ints.end(), shape.begin(), shape.end());
  in.inputs = std::move(inputs);
  in.outputs = std::move(outputs);
  in.dtype = dtype;
  return in;
}

Shape shape_of(const at::Tensor& t) {
  return Shape(t.sizes().begin(), t.sizes().end());
}

/// One worker's executor with communicators over `store`. run() is safe on
/// the rank's own thread: it uses no Catch assertion (Catch2 v2's are not
/// thread-safe); the main thread checks afterwards.
struct Rank {
  Rank(int worker, std::shared_ptr<collectives::Store> store,
       std::chrono::milliseconds timeout = 10s, uint64_t session_memory_limit = 0)
      : provider(std::make_shared<CommunicatorProvider>(
            [this, gloo = collectives::gloo_communicator_factory(store, "127.0.0.1", timeout)](
                const std::vector<int>& group, int rank) {
              ++communicators_made;
              return gloo(group, rank);
            })),
        ex(ExecutorOptions{worker, at::kCPU, 0, quiet_logger(), nullptr, provider,
                           session_memory_limit}) {}

  std::atomic<int> communicators_made{0};
  std::shared_ptr<CommunicatorProvider> provider;
  Executor ex;
  uint64_t session = 7;
  uint64_t seq = 0;
  std::vector<Frames> replies;
  ReplySink sink = [this](Frames&& f) { replies.push_back(std::move(f)); };

  void run(const std::vector<Instr>& instrs, Frames data = {}) {
    Frames frames;
    frames.push_back(wire::encode_batch(session, ++seq, instrs));
    for (auto& d : data) frames.push_back(std::move(d));
    ex.handle_message(frames, sink);
  }

  void put(TensorId id, const at::Tensor& t) {
    Instr in = op(OpCode::FromData, {id}, {}, shape_of(t), {}, *to_dtype(t.scalar_type()));
    in.payload = 0;
    Frames data;
    data.push_back(bytes_of(t));
    run({in}, std::move(data));
  }

  at::Tensor get(TensorId id) const {
    auto t = ex.tensor(session, id);
    INFO("worker " << ex.worker_index() << " tensor " << id);
    REQUIRE(t.has_value());
    return *t;
  }

  std::vector<wire::FailureInfo> sync() {
    run({sync_instr(99)});
    std::vector<wire::FailureInfo> out;
    REQUIRE_FALSE(replies.empty());
    const auto* r = wire::decode(replies.back()[0])->body_as_SyncReply();
    REQUIRE(r != nullptr);
    if (r->errors()) {
      for (const auto* f : *r->errors()) out.push_back(wire::to_failure_info(f));
    }
    return out;
  }
};

/// Executors of `workers` meeting through one InMemoryStore.
struct Cluster {
  explicit Cluster(const std::vector<int>& workers, std::chrono::milliseconds timeout = 10s,
                   uint64_t session_memory_limit = 0) {
    auto store = std::make_shared<collectives::InMemoryStore>();
    for (int w : workers) {
      ranks.push_back(std::make_unique<Rank>(w, store, timeout, session_memory_limit));
    }
  }

  /// Runs batch(rank) on every rank at once, each on a thread of its own.
  void run_all(const std::function<std::vector<Instr>(size_t rank)>& batch) {
    std::vector<std::thread> threads;
    for (size_t r = 0; r < ranks.size(); ++r) {
      threads.emplace_back([this, r, instrs = batch(r)] { ranks[r]->run(instrs); });
    }
    for (auto& t : threads) t.join();
  }

  Rank& operator[](size_t r) { return *ranks[r]; }
  std::vector<std::unique_ptr<Rank>> ranks;
};

TEST_CASE("workers run every collective instruction as LibTorch computes it",
          "[collectives][worker][unit]") {
  for (const std::vector<int>& workers : {std::vector<int>{0, 1}, std::vector<int>{0, 2, 5}}) {
    const size_t n = workers.size();
    INFO("workers " << collectives::group_str(workers));
    Cluster c(workers);
    // Per rank: all_reduce sum (1) and max (2) in place, all_gather along 0
    // (3 -> 13, uneven) and -1 (4 -> 14, rank 0 gives no columns),
    // reduce_scatter of float along 0 (5 -> 15) and of int64 along 1 with
    // max (6 -> 16), broadcast from the last rank (7 there; 17 elsewhere),
    // send from rank 0 to the last rank (8 -> 18 there), barrier.
    std::vector<std::map<TensorId, at::Tensor>> in(n);
    for (size_t r = 0; r < n; ++r) {
      const auto k = static_cast<int64_t>(r);
      in[r][1] = at::randn({4, 5});
      in[r][2] = at::randn({3});
      in[r][3] = at::randn({k + 1, 3});
      in[r][4] = at::randn({2, 2 * k});
      in[r][5] = at::randn({7, 4});
      in[r][6] = at::randint(-50, 50, {3, 5}, at::kLong);
      if (r == n - 1) in[r][7] = at::randn({2, 3});
      if (r == 0) in[r][8] = at::arange(6, at::kFloat);
      for (const auto& [id, t] : in[r]) c[r].put(id, t);
    }
    const int last = static_cast<int>(n) - 1;
    c.run_all([&](size_t r) {
      const int self = static_cast<int>(r);
      std::vector<Instr> b{
          collective(Collective::AllReduce, workers, 0, 0, {4, 5}, {1}, {}),
          collective(Collective::AllReduce, workers, 2, 0, {3}, {2}, {}),
          collective(Collective::AllGather, workers, 0, 0, shape_of(in[r][3]), {3}, {13}),
          collective(Collective::AllGather, workers, -1, 0, shape_of(in[r][4]), {4}, {14}),
          collective(Collective::ReduceScatter, workers, 0, 0, {7, 4}, {5}, {15}),
          collective(Collective::ReduceScatter, workers, 1, 2, {3, 5}, {6}, {16}, DType::Int64),
          self == last ? collective(Collective::Broadcast, workers, last, 0, {2, 3}, {7}, {})
                       : collective(Collective::Broadcast, workers, last, 0, {2, 3}, {}, {17})};
      if (self == 0) b.push_back(collective(Collective::Send, workers, last, 9, {6}, {8}, {}));
      if (self == last) b.push_back(collective(Collective::Recv, workers, 0, 9, {6}, {}, {18}));
      b.push_back(collective(Collective::Barrier, workers, 0, 0, {}, {}, {}));
      return b;
    });

    at::Tensor sum = in[0][1].clone(), max = in[0][2].clone();
    std::vector<at::Tensor> rows, cols;
    at::Tensor scatter_sum = at::zeros({7, 4}), scatter_max = in[0][6].clone();
    for (size_t r = 0; r < n; ++r) {
      if (r > 0) {
        sum += in[r][1];
        max = at::maximum(max, in[r][2]);
        scatter_max = at::maximum(scatter_max, in[r][6]);
      }
      scatter_sum += in[r][5];
      rows.push_back(in[r][3]);
      cols.push_back(in[r][4]);
    }
    const auto sum_parts = at::tensor_split(scatter_sum, static_cast<int64_t>(n), 0);
    const auto max_parts = at::tensor_split(scatter_max, static_cast<int64_t>(n), 1);
    for (size_t r = 0; r < n; ++r) {
      INFO("rank " << r);
      CHECK(c[r].sync().empty());
      CHECK(c[r].communicators_made == 1);  // one group, one communicator
      check_same(c[r].get(1), sum);
      check_same(c[r].get(2), max);
      check_same(c[r].get(13), at::cat(rows, 0));
      check_same(c[r].get(14), at::cat(cols, 1));
      check_same(c[r].get(15), sum_parts[r]);
      check_same(c[r].get(16), max_parts[r]);
      check_same(c[r].get(static_cast<int>(r) == last ? 7 : 17), in[n - 1][7]);
      if (static_cast<int>(r) == last) check_same(c[r].get(18), in[0][8]);
    }
  }
}

TEST_CASE("a rank with a bad input takes part with zeros and poisons its own outputs",
          "[collectives][worker][unit]") {
  Cluster c({0, 1});
  const std::vector<int> g{0, 1};
  const at::Tensor t1 = at::randn({2, 3}), healthy0 = at::randn({4}), healthy1 = at::randn({4});
  c[0].put(1, healthy0);
  c[1].put(1, healthy1);
  c[0].put(20, at::randn({3}));  // not the (2, 3) the instruction names
  c[1].put(10, t1);
  c[1].put(12, t1);
  c[1].put(20, t1);
  c[0].run({op(OpCode::Neg, {10}, {99})});  // poisons 10 on rank 0
  c.run_all([&](size_t r) {
    std::vector<Instr> b{
        collective(Collective::AllGather, g, 0, 0, {2, 3}, {10}, {11}),  // rank 0: poisoned
        collective(Collective::AllReduce, g, 0, 0, {2, 3}, {10}, {}),    // in place, poisoned
        collective(Collective::AllReduce, g, 0, 0, {2, 3}, {r == 0 ? 77u : 12u}, {}),  // unknown
        collective(Collective::AllReduce, g, 0, 0, {2, 3}, {20}, {}),  // rank 0: wrong shape
        // Rank 0 names a live output: it sends its data, keeps its tensor.
        collective(Collective::AllGather, g, 0, 0, {4}, {1}, {r == 0 ? 1u : 30u}),
        collective(Collective::AllReduce, g, 0, 0, {4}, {1}, {})};  // healthy again
    return b;
  });

  // Rank 1 got zeros wherever rank 0 had nothing to give.
  CHECK(c[1].sync().empty());
  check_same(c[1].get(11), at::cat({at::zeros({2, 3}), t1}));
  check_same(c[1].get(10), t1);
  check_same(c[1].get(12), t1);
  check_same(c[1].get(20), t1);
  check_same(c[1].get(30), at::cat({healthy0, healthy1}));
  check_same(c[1].get(1), healthy0 + healthy1);

  // Rank 0: the poisoned input's failure passes on silently; its own
  // problems are reported once each.
  const auto failures = c[0].sync();
  REQUIRE(failures.size() == 4);
  CHECK_THAT(failures[0].message, Catch::StartsWith("[worker 0] neg failed"));
  for (TensorId id : {10u, 11u}) {
    const auto poison = c[0].ex.poison(c[0].session, id);
    REQUIRE(poison);
    CHECK(poison->message == failures[0].message);
  }
  CHECK(failures[1].code == Status::UnknownTensor);
  CHECK(failures[1].op == "all_reduce");
  CHECK(failures[1].message ==
        "[worker 0] all_reduce over workers [0,1] failed: tensor 77 (input 0) is not live in "
        "this session; this worker took part with zeros of (2, 3) float32 so that its peers do "
        "not hang (inputs: unknown id 77)");
  CHECK(failures[2].code == Status::InvalidArgument);
  CHECK_THAT(failures[2].message,
             Catch::Contains("input 20 is (3) float32: expected (2, 3) float32 as the instruction "
                             "says; this worker took part with zeros"));
  CHECK(c[0].ex.poison(c[0].session, 20) != nullptr);  // the in-place target
  CHECK_THAT(failures[3].message,
             Catch::StartsWith("[worker 0] all_gather over workers [0,1] failed: output id 1 is "
                               "already live in this session (inputs: (4) float32)"));
  CHECK(c[0].sync().empty());                    // reported once
  check_same(c[0].get(1), healthy0 + healthy1);  // the live output untouched, then reduced
}

TEST_CASE("a collective result over the session's memory limit is dropped on that rank only",
          "[collectives][worker][unit]") {
  // Note [session memory]: 1000 bytes per session. Each rank holds 256
  // bytes; rank 0 also 600 more, so the 512-byte all_gather fits only on
  // rank 1. Rank 0 still takes part, so rank 1 gets its result.
  Cluster c({0, 1}, 10s, 1000);
  const std::vector<int> g{0, 1};
  const at::Tensor t0 = at::randn({4, 16}), t1 = at::randn({4, 16});
  c[0].put(1, t0);
  c[1].put(1, t1);
  c[0].put(2, at::randn({150}));
  c.run_all([&](size_t) {
    return std::vector<Instr>{collective(Collective::AllGather, g, 0, 0, {4, 16}, {1}, {3})};
  });
  CHECK(c[1].sync().empty());
  check_same(c[1].get(3), at::cat({t0, t1}));
  const auto failures = c[0].sync();
  REQUIRE(failures.size() == 1);
  CHECK(failures[0].code == Status::ExecutionFailed);
  CHECK(failures[0].op == "all_gather");
  CHECK_THAT(failures[0].message,
             Catch::StartsWith("[worker 0] all_gather over workers [0,1] failed: out of memory "
                               "for this session: its tensors hold 856 bytes on this worker and "
                               "the result needs 512 more, over the limit of 1000 bytes per "
                               "session (GT_SESSION_MEMORY_LIMIT)"));
  CHECK(c[0].ex.poison(c[0].session, 3) != nullptr);
  // In-place collectives allocate nothing: the group goes on.
  c.run_all([&](size_t) {
    return std::vector<Instr>{collective(Collective::AllReduce, g, 0, 0, {4, 16}, {1}, {})};
  });
  CHECK(c[0].sync().empty());
  CHECK(c[1].sync().empty());
  check_same(c[0].get(1), t0 + t1);
}

TEST_CASE("a bucketed all_reduce reduces several tensors in one collective",
          "[collectives][worker][unit]") {
  Cluster c({0, 2});
  const std::vector<int> g{0, 2};
  // Per rank: a matrix, a scalar, an empty tensor and a transposed
  // (non-contiguous) view's copy; the bucket names their element counts.
  std::vector<std::vector<at::Tensor>> in(2);
  for (size_t r = 0; r < 2; ++r) {
    in[r] = {at::randn({3, 4}), at::randn({}), at::randn({0, 2}), at::randn({5, 2})};
    for (size_t i = 0; i < in[r].size(); ++i) c[r].put(1 + i, in[r][i]);
    c[r].run({op(OpCode::Transpose, {10}, {4}, {0, 1})});  // a strided target
  }
  c.run_all([&](size_t) {
    return std::vector<Instr>{
        collective(Collective::AllReduce, g, 0, 0, {12, 1, 0, 10}, {1, 2, 3, 10}, {}),
        collective(Collective::AllReduce, g, 2, 0, {1, 12}, {2, 1}, {})};  // max, reordered
  });
  for (size_t r = 0; r < 2; ++r) {
    INFO("rank " << r);
    CHECK(c[r].sync().empty());
    CHECK(c[r].communicators_made == 1);
    const at::Tensor sum1 = in[0][0] + in[1][0], sum2 = in[0][1] + in[1][1];
    check_same(c[r].get(1), sum1);  // max of equal values: unchanged
    check_same(c[r].get(2), sum2);
    check_same(c[r].get(3), at::zeros({0, 2}));
    check_same(c[r].get(10), (in[0][3] + in[1][3]).t());
  }

  // A bad input on one rank: it takes part with zeros there, its peer's
  // healthy parts are still right, and its whole bucket is poisoned.
  const at::Tensor a0 = at::randn({2});
  c[0].put(20, a0), c[1].put(20, at::ones({2}));
  c[0].put(21, at::randn({3})), c[1].put(21, at::ones({3}));
  c.run_all([&](size_t r) {
    return std::vector<Instr>{collective(Collective::AllReduce, g, 0, 0, {2, 3},
                                         {20, r == 0 ? 88u : 21u}, {})};
  });
  CHECK(c[1].sync().empty());
  check_same(c[1].get(20), a0 + 1);
  check_same(c[1].get(21), at::ones({3}));  // rank 0 gave zeros
  const auto failures = c[0].sync();
  REQUIRE(failures.size() == 1);
  CHECK(failures[0].code == Status::UnknownTensor);
  CHECK_THAT(failures[0].message,
             Catch::Contains("tensor 88 (input 1) is not live in this session; this worker took "
                             "part with zeros in its place"));
  CHECK(c[0].ex.poison(c[0].session, 20) != nullptr);

  // Malformed buckets are refused before anything communicates.
  c[0].run({collective(Collective::AllReduce, g, 0, 0, {2}, {20, 21}, {}),
            collective(Collective::AllReduce, g, 0, 0, {2, -1}, {20, 21}, {}),
            collective(Collective::AllReduce, g, 9, 0, {2, 3}, {20, 21}, {})});
  const auto refused = c[0].sync();
  REQUIRE(refused.size() == 3);
  CHECK_THAT(refused[0].message,
             Catch::Contains("an all_reduce of 2 inputs with 1 element counts: expected one count "
                             "per input"));
  CHECK_THAT(refused[1].message, Catch::Contains("element count -1 in the bucket: expected >= 0"));
  CHECK_THAT(refused[2].message, Catch::Contains("reduce op 9 (a): expected 0 sum"));
}

TEST_CASE("collective instructions are validated before anything communicates",
          "[collectives][worker][unit]") {
  auto store = std::make_shared<collectives::InMemoryStore>();
  Rank rank(0, store);
  rank.put(1, at::randn({3}));
  const std::vector<int> g{0, 1};
  struct Case {
    std::string name;
    Instr in;
    Status code;
    std::string message;  // the whole message, or its start when it ends in "..."
  };
  auto with_code = [](Instr in, uint16_t code) {
    in.op = static_cast<OpCode>(code);
    return in;
  };
  auto with_ints = [](Instr in, std::vector<int64_t> ints) {
    in.ints = std::move(ints);
    return in;
  };
  auto with_dtype = [](Instr in, uint8_t dtype) {
    in.dtype = static_cast<DType>(dtype);
    return in;
  };
  const Instr reduce = collective(Collective::AllReduce, g, 0, 0, {3}, {1}, {});
  const std::vector<Case> cases{
      {"unknown collective", with_code(reduce, 9), Status::InvalidArgument,
       "[worker 0] collective#9 failed: collective code 9 is unknown: expected 1 (all_reduce), "
       "2 (all_gather), 3 (reduce_scatter), 4 (broadcast), 5 (send), 6 (recv) or 7 (barrier) "
       "(inputs: (3) float32)"},
      {"no ints", with_ints(reduce, {}), Status::Malformed,
       "[worker 0] all_reduce failed: no ints: expected [n, w_0 .. w_{n-1}, a, b, shape...]..."},
      {"empty group", with_ints(reduce, {0, 0, 0}), Status::Malformed,
       "[worker 0] all_reduce failed: a group of 0 workers (ints[0]): expected 1 to 4096..."},
      {"huge group", with_ints(reduce, {5000, 0, 0}), Status::Malformed,
       "[worker 0] all_reduce failed: a group of 5000 workers (ints[0]): expected 1 to 4096..."},
      {"too few ints", with_ints(reduce, {2, 0, 1, 0}), Status::Malformed,
       "[worker 0] all_reduce failed: 4 ints for a group of 2 workers: expected at least 5 "
       "([n, w_0 .. w_{n-1}, a, b, shape...])..."},
      {"negative worker", collective(Collective::AllReduce, {-1, 0}, 0, 0, {3}, {1}, {}),
       Status::InvalidArgument,
       "[worker 0] all_reduce failed: worker index -1 in the group: expected 0 to 2147483647..."},
      {"group without this worker", collective(Collective::AllReduce, {1, 2}, 0, 0, {3}, {1}, {}),
       Status::InvalidArgument,
       "[worker 0] all_reduce over workers [1,2] failed: this worker (0) is not in the group: "
       "expected only the group's workers to receive its collectives (inputs: (3) float32)"},
      {"unsorted group", collective(Collective::AllReduce, {1, 0}, 0, 0, {3}, {1}, {}),
       Status::InvalidArgument,
       "[worker 0] all_reduce failed: the workers [1,0] are not strictly ascending: expected "
       "each worker once, in increasing order..."},
      {"repeated worker", collective(Collective::AllReduce, {0, 0}, 0, 0, {3}, {1}, {}),
       Status::InvalidArgument,
       "[worker 0] all_reduce failed: the workers [0,0] are not strictly ascending..."},
      {"bad reduce op", collective(Collective::AllReduce, g, 7, 0, {3}, {1}, {}),
       Status::InvalidArgument,
       "[worker 0] all_reduce over workers [0,1] failed: reduce op 7 (a): expected 0 sum, 1 avg, "
       "2 max, 3 min, 4 product (inputs: (3) float32)"},
      {"bad reduce op of reduce_scatter",
       collective(Collective::ReduceScatter, g, 0, -1, {3}, {1}, {2}), Status::InvalidArgument,
       "[worker 0] reduce_scatter over workers [0,1] failed: reduce op -1 (b): expected 0 sum..."},
      {"dim out of range", collective(Collective::AllGather, g, 1, 0, {3}, {1}, {2}),
       Status::InvalidArgument,
       "[worker 0] all_gather over workers [0,1] failed: dim 1 (a) is out of range for the shape "
       "(3): expected a dim in [-1, 1) (inputs: (3) float32)"},
      {"gathering a scalar", collective(Collective::AllGather, g, 0, 0, {}, {1}, {2}),
       Status::InvalidArgument,
       "[worker 0] all_gather over workers [0,1] failed: dim 0 (a) is out of range for the shape "
       "(): expected a tensor with at least one dim..."},
      {"b of all_gather", collective(Collective::AllGather, g, 0, 1, {3}, {1}, {2}),
       Status::InvalidArgument,
       "[worker 0] all_gather over workers [0,1] failed: b = 1 is unused by all_gather: expected "
       "0..."},
      {"root outside the group", collective(Collective::Broadcast, g, 2, 0, {3}, {}, {2}),
       Status::InvalidArgument,
       "[worker 0] broadcast over workers [0,1] failed: root rank 2 (a) is outside the group "
       "[0,1]: expected a rank in [0, 2)"},
      {"send to itself", collective(Collective::Send, g, 0, 0, {3}, {1}, {}),
       Status::InvalidArgument,
       "[worker 0] send over workers [0,1] failed: peer rank 0 (a) is this worker's own rank: "
       "expected another rank of the group..."},
      {"negative tag", collective(Collective::Recv, g, 1, -1, {3}, {}, {2}),
       Status::InvalidArgument,
       "[worker 0] recv over workers [0,1] failed: tag -1 (b): expected 0 to 2^56 - 1"},
      {"outputs for all_reduce", collective(Collective::AllReduce, g, 0, 0, {3}, {1}, {2}),
       Status::InvalidArgument,
       "[worker 0] all_reduce over workers [0,1] failed: all_reduce takes 1 input and 0 outputs, "
       "got 1 input and 1 output..."},
      {"an input on a broadcast's receiver",
       collective(Collective::Broadcast, g, 1, 0, {3}, {1}, {}), Status::InvalidArgument,
       "[worker 0] broadcast over workers [0,1] failed: broadcast on rank 0 (the root is 1) "
       "takes 0 inputs and 1 output, got 1 input and 0 outputs..."},
      {"no input on the broadcast's root", collective(Collective::Broadcast, g, 0, 0, {3}, {}, {2}),
       Status::InvalidArgument,
       "[worker 0] broadcast over workers [0,1] failed: broadcast on the root takes 1 input and "
       "0 outputs, got 0 inputs and 1 output"},
      {"negative dim in the shape", collective(Collective::Recv, g, 1, 0, {2, -1}, {}, {2}),
       Status::InvalidArgument, "[worker 0] recv over workers [0,1] failed: shape (2, -1): ..."},
      {"too many dims", collective(Collective::Recv, g, 1, 0, Shape(17, 1), {}, {2}),
       Status::InvalidArgument,
       "[worker 0] recv over workers [0,1] failed: a shape of 17 dims: expected at most 16"},
      {"bad dtype", with_dtype(collective(Collective::Recv, g, 1, 0, {3}, {}, {2}), 200),
       Status::InvalidArgument,
       "[worker 0] recv over workers [0,1] failed: dtype code 200 is not a gt dtype..."},
  };
  for (const Case& k : cases) {
    DYNAMIC_SECTION(k.name) {
      rank.run({k.in});
      const auto failures = rank.sync();
      REQUIRE(failures.size() == 1);
      CHECK(failures[0].code == k.code);
      if (k.message.ends_with("...")) {
        CHECK_THAT(failures[0].message,
                   Catch::StartsWith(k.message.substr(0, k.message.size() - 3)));
      } else {
        CHECK(failures[0].message == k.message);
      }
      for (TensorId id : k.in.outputs) CHECK(rank.ex.poison(rank.session, id) != nullptr);
      if (k.in.op == static_cast<OpCode>(Collective::AllReduce)) {
        CHECK(rank.ex.poison(rank.session, 1) != nullptr);  // the in-place target
      }
    }
  }
  CHECK(rank.communicators_made == 0);
}

TEST_CASE("collectives fail fast without a backend or its library; Scope and Configure",
          "[collectives][worker][unit]") {
  const Instr recv = collective(Collective::Recv, {0, 1}, 1, 0, {3}, {}, {5});
  SECTION("an executor without communicators") {
    Harness h;
    h.run1(recv);
    const auto failures = h.sync();
    REQUIRE(failures.size() == 1);
    CHECK(failures[0].code == Status::ExecutionFailed);
    CHECK_THAT(failures[0].message,
               Catch::StartsWith("[worker 0] recv over workers [0,1] failed: this worker has no "
                                 "collectives backend"));
    CHECK(h.ex.poison(h.session, 5) != nullptr);
  }
  SECTION("a CUDA worker asks its provider (NCCL), whose failure breaks the group") {
    // The factory's failure (here: what a worker gets where libnccl is
    // missing) surfaces as the collective's failure, as Gloo's would.
    int made = 0;
    auto provider = std::make_shared<CommunicatorProvider>(
        [&](const std::vector<int>&, int) -> std::unique_ptr<collectives::Collectives> {
          ++made;
          collectives::load_nccl_from({"libgt-no-such-nccl.so.2"}, {"libcudart.so"});
          throw std::logic_error("the bogus NCCL loaded");
        });
    Harness h(ExecutorOptions{0, at::Device(at::kCUDA, 0), 0, quiet_logger(), nullptr, provider});
    h.run1(collective(Collective::Barrier, {0, 1}, 0, 0, {}, {}, {}));
    auto failures = h.sync();
    REQUIRE(failures.size() == 1);
    CHECK(failures[0].code == Status::ExecutionFailed);
    CHECK_THAT(failures[0].message,
               Catch::StartsWith("[worker 0] barrier over workers [0,1] failed: "));
    CHECK_THAT(failures[0].message,
               Catch::Contains(collectives::nccl_built() ? "cannot load NCCL: tried "
                                                           "libgt-no-such-nccl.so.2"
                                                         : "built without NCCL headers"));
    REQUIRE(provider->broken({0, 1}).has_value());
    h.run1(collective(Collective::Barrier, {0, 1}, 0, 0, {}, {}, {}));
    failures = h.sync();
    REQUIRE(failures.size() == 1);
    CHECK_THAT(failures[0].message, Catch::Contains("broke earlier"));
    CHECK(made == 1);
  }
  SECTION("Scope is ignored and Configure is dispatcher-only") {
    Harness h;
    Instr scope;
    scope.kind = InstrKind::Scope;
    scope.ints = {0};
    scope.name = "attention";
    Instr configure;
    configure.kind = InstrKind::Configure;
    configure.name = "signals: {}";
    h.run({scope, op(OpCode::Ones, {1}, {}, {2})});
    CHECK(h.sync().empty());
    h.run1(configure);
    const auto failures = h.sync();
    REQUIRE(failures.size() == 1);
    CHECK(failures[0].code == Status::Malformed);
    CHECK_THAT(failures[0].message, Catch::Contains("dispatcher-only"));
  }
}

TEST_CASE("a group whose communicator timed out fails its later collectives at once",
          "[collectives][worker][unit]") {
  SECTION("the other worker never joins") {
    Rank rank(0, std::make_shared<collectives::InMemoryStore>(), 200ms);
    rank.put(1, at::ones({3}));
    rank.run({collective(Collective::Barrier, {0, 1}, 0, 0, {}, {}, {}),
              collective(Collective::AllReduce, {0, 1}, 0, 0, {3}, {1}, {})});
    const auto failures = rank.sync();
    REQUIRE(failures.size() == 2);
    CHECK(failures[0].code == Status::ExecutionFailed);
    CHECK_THAT(failures[0].message,
               Catch::StartsWith("[worker 0] barrier over workers [0,1] failed: "
                                 "[collectives.connect] rank 1 did not join within 200 ms"));
    CHECK_THAT(failures[1].message,
               Catch::StartsWith("[worker 0] all_reduce over workers [0,1] failed: the "
                                 "communicator of workers [0,1] broke earlier and stays "
                                 "unusable: [collectives.connect] rank 1 did not join"));
    CHECK(rank.ex.poison(rank.session, 1) != nullptr);
    CHECK(rank.communicators_made == 1);  // the all_reduce did not try to join again

    // Another group is not affected; re-registration forgets the broken one.
    rank.run({collective(Collective::AllReduce, {0}, 0, 0, {3}, {}, {}),
              collective(Collective::Recv, {0}, 0, 0, {3}, {}, {2})});
    const auto more = rank.sync();
    REQUIRE(more.size() == 2);  // arity, then a peer that is itself: fails before connecting
    CHECK(rank.communicators_made == 1);
    rank.run({op(OpCode::Ones, {3}, {}, {3}),
              collective(Collective::AllReduce, {0}, 0, 0, {3}, {3}, {})});
    CHECK(rank.sync().empty());
    check_same(rank.get(3), at::ones({3}));
    CHECK(rank.communicators_made == 2);
    CHECK(rank.provider->broken({0, 1}).has_value());
    CHECK(rank.provider->communicator_count() == 1);
    rank.ex.drop_all_sessions();
    CHECK_FALSE(rank.provider->broken({0, 1}).has_value());
    CHECK(rank.provider->communicator_count() == 0);
  }
  SECTION("a peer stops taking part after the communicator was made") {
    Cluster c({0, 1}, 300ms);
    c[0].put(1, at::ones({3}));
    c.run_all([](size_t) {
      return std::vector<Instr>{collective(Collective::Barrier, {0, 1}, 0, 0, {}, {}, {})};
    });
    c[0].run({collective(Collective::AllReduce, {0, 1}, 0, 0, {3}, {1}, {}),
              collective(Collective::Barrier, {0, 1}, 0, 0, {}, {}, {})});
    const auto failures = c[0].sync();
    REQUIRE(failures.size() == 2);
    CHECK(failures[0].code == Status::ExecutionFailed);
    CHECK_THAT(failures[0].message,
               Catch::StartsWith("[worker 0] all_reduce over workers [0,1] failed: "));
    CHECK_THAT(failures[0].message, Catch::Contains("timed out"));
    // The barrier never reached Gloo: it failed with the first failure.
    CHECK_THAT(failures[1].message, Catch::Contains("broke earlier and stays unusable"));
    CHECK(c[0].ex.poison(c[0].session, 1) != nullptr);
    // Rank 0 closed its connections: rank 1's next collective fails without
    // waiting for its own timeout (the connection is closed, or it finds
    // rank 0's all_reduce where its barrier should be).
    c[1].run({collective(Collective::Barrier, {0, 1}, 0, 0, {}, {}, {})});
    const auto peer = c[1].sync();
    REQUIRE(peer.size() == 1);
    CHECK_THAT(peer[0].message,
               Catch::StartsWith("[worker 1] barrier over workers [0,1] failed: "));
    CHECK_THAT(peer[0].message, !Catch::Contains("timed out"));
  }
}

TEST_CASE("collective instructions are timed and logged as EXEC Collective events",
          "[collectives][worker][unit]") {
  Rank rank(0, std::make_shared<collectives::InMemoryStore>());
  auto log = std::make_shared<InstructionLog>("WORKER 0", "");
  std::mutex m;
  std::string events;
  log->set_tap([&](InstructionLog::TapChunk&& chunk) {
    std::lock_guard lock(m);
    events += chunk.events;
  });
  rank.ex.set_instruction_log(log, true, true);
  Instr scope;
  scope.kind = InstrKind::Scope;
  scope.ints = {0};
  scope.name = "layer";
  rank.put(1, at::ones({2, 3}));
  rank.run({scope, collective(Collective::AllReduce, {0}, 0, 0, {2, 3}, {1}, {}),
            collective(Collective::AllGather, {0}, 1, 0, {2, 3}, {1}, {2})});
  log->flush();
  CHECK(rank.ex.busy_ns()[13] > 0);
  CHECK(Executor::util_category(13) == "Collective");
  std::vector<LogEvent> exec;
  {
    std::lock_guard lock(m);
    size_t pos = 0;
    while (pos < events.size()) {
      const size_t nl = events.find('\n', pos);
      REQUIRE(nl != std::string::npos);
      auto e = parse_json(std::string_view(events).substr(pos, nl - pos));
      REQUIRE(e);
      if (e->event == "EXEC") exec.push_back(*e);
      pos = nl + 1;
    }
  }
  REQUIRE(exec.size() == 3);  // the upload and two collectives; the scope is not an event
  CHECK(exec[1].kind == "Collective");
  CHECK(exec[1].op == "all_reduce");
  CHECK_THAT(exec[1].details, Catch::StartsWith("session=7 in=1 shape=[2,3] bytes=24 dur_us="));
  CHECK(exec[2].op == "all_gather");
  CHECK_THAT(exec[2].details, Catch::StartsWith("session=7 in=1 out=2 shape=[2,3]"));
  rank.ex.set_instruction_log(nullptr, false, false);
}

TEST_CASE("communicators listen on loopback when the dispatcher is local",
          "[collectives][worker][unit]") {
  using collectives::default_collective_host;
  for (const char* local : {"ipc:///tmp/gt.sock", "inproc://gt", "tcp://127.0.0.1:5555",
                            "tcp://127.1.2.3:5555", "tcp://localhost:5555", "tcp://[::1]:5555"}) {
    CHECK(default_collective_host(local) == "127.0.0.1");
  }
  char name[256] = {};
  REQUIRE(gethostname(name, sizeof name - 1) == 0);
  CHECK(default_collective_host("tcp://10.1.2.3:5555") == name);
  CHECK(default_collective_host("tcp://dispatcher.example:5555") == name);
  CHECK(collectives::communicator_name(std::vector<int>{0, 2, 5}) == "gt/comm/0,2,5");
}

// ---- whole workers ----------------------------------------------------------

// The same liveness timers as worker_test.cpp: env() reads them once, at the
// first worker's start, whichever test that is.
void fast_timers() {
  setenv("GT_HEARTBEAT_INTERVAL_MS", "50", 1);
  setenv("GT_HEARTBEAT_TIMEOUT_MS", "400", 1);
  setenv("GT_CONNECT_TIMEOUT_MS", "1200", 1);
  setenv("GT_LOG_LEVEL", "error", 1);
  REQUIRE(env().heartbeat_timeout_ms == 400);
  make_logger("worker")->set_level(spdlog::level::err);
}

WorkerOptions worker_options(const std::string& dispatcher) {
  WorkerOptions o;
  o.dispatcher = dispatcher;
  o.threads = 1;
  return o;
}

// A dispatcher for whole workers, on a thread of its own: welcomes workers
// (indices in order of their Hellos), sends each the batch `batches` gives
// for its index, answers heartbeats, serves the rendezvous store (gets are
// answered once all their keys are set; unless `serve_gets` is false), and
// keeps every other message. It stops when `done` says so or at its
// deadline. Only the test's main thread uses Catch.
class StoreDispatcher {
 public:
  struct Received {
    int worker;
    Frames frames;
  };
  using Batches = std::function<std::vector<Instr>(int worker)>;
  using Done = std::function<bool(std::vector<Received>&)>;

  StoreDispatcher(Batches batches, Done done, bool serve_gets = true)
      : batches_(std::move(batches)), done_(std::move(done)), serve_gets_(serve_gets) {
    configure_socket(router_);
    router_.bind("tcp://127.0.0.1:*");
    endpoint = router_.get(zmq::sockopt::last_endpoint);
    thread_ = std::thread([this] { serve(); });
  }
  ~StoreDispatcher() {
    stop();
    join();
  }

  void join() {
    if (thread_.joinable()) thread_.join();
  }

  std::string endpoint;
  // Read after join().
  std::vector<Received> received;
  std::vector<std::string> keys_set;
  std::atomic<int> gets{0};  // also read while serving
  bool timed_out = false;

  /// Ends serving (then join()).
  void stop() { stop_requested_ = true; }

 private:
  struct Get {
    std::string identity;
    uint64_t request;
    std::vector<std::string> keys;
  };

  void send(const std::string& identity, zmq::message_t header) {
    Frames frames;
    frames.emplace_back(identity.data(), identity.size());
    frames.push_back(std::move(header));
    (void)send_frames(router_, frames);
  }

  void serve() {
    const auto deadline = Clock::now() + 20s;
    std::map<std::string, int> workers;  // identity -> index
    std::map<std::string, std::string> store;
    std::vector<Get> pending;
    while (!stop_requested_ && !done_(received)) {
      if (Clock::now() > deadline) {
        timed_out = true;
        return;
      }
      zmq::pollitem_t item{router_.handle(), 0, ZMQ_POLLIN, 0};
      zmq::poll(&item, 1, 20ms);
      auto frames = recv_frames(router_, true);
      if (!frames) continue;
      const std::string identity((*frames)[0].to_string());
      const wire::Message* msg = wire::decode((*frames)[1]);
      switch (msg->body_type()) {
        case wire::Body::Hello: {
          const int index = static_cast<int>(workers.size());
          workers[identity] = index;
          send(identity, wire::encode_welcome(0, index, 2));
          send(identity, wire::encode_batch(5, 1, batches_(index)));
          break;
        }
        case wire::Body::Heartbeat:
          send(identity, wire::encode_heartbeat(0));
          break;
        case wire::Body::StoreSet: {
          const auto* s = msg->body_as_StoreSet();
          keys_set.push_back(s->key()->str());
          store[s->key()->str()] =
              s->value() ? std::string(s->value()->begin(), s->value()->end()) : std::string();
          break;
        }
        case wire::Body::StoreGet: {
          ++gets;
          const auto* g = msg->body_as_StoreGet();
          Get get{identity, g->request(), {}};
          for (const auto* k : *g->keys()) get.keys.push_back(k->str());
          pending.push_back(std::move(get));
          break;
        }
        default: {
          Received r{workers.count(identity) ? workers[identity] : -1, {}};
          for (size_t i = 1; i < frames->size(); ++i) r.frames.push_back(std::move((*frames)[i]));
          received.push_back(std::move(r));
          break;
        }
      }
      if (!serve_gets_) continue;
      std::erase_if(pending, [&](const Get& g) {
        std::vector<std::string> values;
        for (const auto& k : g.keys) {
          auto it = store.find(k);
          if (it == store.end()) return false;
          values.push_back(it->second);
        }
        send(g.identity, wire::encode_store_reply(g.request, g.keys, values, {}));
        return true;
      });
    }
  }

  Batches batches_;
  Done done_;
  bool serve_gets_;
  std::atomic<bool> stop_requested_{false};
  zmq::context_t context_{1};
  zmq::socket_t router_{context_, zmq::socket_type::router};
  std::thread thread_;
};

TEST_CASE("workers meet through the dispatcher's store and run collectives",
          "[collectives][worker][unit]") {
  fast_timers();
  unsetenv("GT_COMPILE");
  unsetenv("GT_AUTO_COMPILE");
  const std::vector<int> g{0, 1};
  auto data_of = [](int worker) { return at::arange(6, at::kFloat).reshape({2, 3}) + 10 * worker; };
  StoreDispatcher d(
      [&](int worker) {
        // The ids' values come from Arange (no data frames needed).
        return std::vector<Instr>{op(OpCode::Arange, {1}, {}, {}, {0.0, 6.0, 1.0}),
                                  op(OpCode::AddScalar, {2}, {1}, {}, {10.0 * worker}),
                                  op(OpCode::Reshape, {3}, {2}, {2, 3}),
                                  collective(Collective::AllGather, g, 0, 0, {2, 3}, {3}, {4}),
                                  collective(Collective::AllReduce, g, 0, 0, {2, 3}, {3}, {}),
                                  fetch(4, 10),
                                  fetch(3, 11),
                                  sync_instr(12)};
      },
      [](std::vector<StoreDispatcher::Received>& r) {
        int syncs = 0;
        for (auto& m : r) syncs += wire::decode(m.frames[0])->body_as_SyncReply() != nullptr;
        return syncs == 2;
      });
  {
    Worker w0(worker_options(d.endpoint)), w1(worker_options(d.endpoint));
    w0.start();
    w1.start();
    d.join();
    w0.stop();
    w1.stop();
    CHECK_NOTHROW(w0.wait());
    CHECK_NOTHROW(w1.wait());
  }
  REQUIRE_FALSE(d.timed_out);
  CHECK(d.gets > 0);
  for (const std::string& key : d.keys_set) CHECK_THAT(key, Catch::StartsWith("gt/comm/0,1/"));
  const at::Tensor gathered = at::cat({data_of(0), data_of(1)});
  const at::Tensor reduced = data_of(0) + data_of(1);
  int fetched = 0;
  for (auto& m : d.received) {
    INFO("worker " << m.worker);
    const auto* msg = wire::decode(m.frames[0]);
    if (const auto* s = msg->body_as_SyncReply()) {
      CHECK((!s->errors() || s->errors()->size() == 0));
      continue;
    }
    const auto* f = msg->body_as_FetchReply();
    REQUIRE(f != nullptr);
    REQUIRE(m.frames.size() == 2);
    const at::Tensor want = f->request() == 10 ? gathered : reduced;
    REQUIRE(m.frames[1].size() == static_cast<size_t>(want.nbytes()));
    CHECK(std::memcmp(m.frames[1].data(), want.data_ptr(), want.nbytes()) == 0);
    ++fetched;
  }
  CHECK(fetched == 4);
}

TEST_CASE("a worker waiting for the rendezvous store stops promptly",
          "[collectives][worker][unit]") {
  fast_timers();
  // One worker of a group of two: its rendezvous waits for a peer that
  // never comes, and the dispatcher never answers its gets.
  StoreDispatcher d(
      [](int) {
        return std::vector<Instr>{collective(Collective::Barrier, {0, 1}, 0, 0, {}, {}, {})};
      },
      [](std::vector<StoreDispatcher::Received>&) { return false; },
      /*serve_gets=*/false);
  Worker w(worker_options(d.endpoint));
  w.start();
  const auto waiting_since = Clock::now();
  while (Clock::now() - waiting_since < 5s && !w.registered()) std::this_thread::sleep_for(5ms);
  REQUIRE(w.registered());
  // The worker sets its join key, then waits in a get that is never answered.
  while (Clock::now() - waiting_since < 5s && d.gets == 0) std::this_thread::sleep_for(5ms);
  REQUIRE(d.gets > 0);
  const auto t0 = Clock::now();
  w.stop();
  CHECK_NOTHROW(w.wait());
  CHECK(Clock::now() - t0 < 2s);  // not the store's timeout (GT_COLLECTIVE_TIMEOUT_MS + 5 s)
}

}  // namespace
}  // namespace gt::worker::test
