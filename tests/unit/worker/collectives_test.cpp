// Worker collectives over real Gloo on 127.0.0.1: ranks as threads of this
// process (InMemoryStore) and as separate processes (FileStore), results
// compared with the same computation done locally with LibTorch.

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <functional>
#include <future>
#include <iterator>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

// LibTorch before Catch (see worker_test_support.h: glog's CHECK).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gloo/allreduce.h>
#include <gloo/barrier.h>
#include <gloo/math.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/hash_store.h>
#include <gloo/transport/tcp/device.h>
#include <catch2/catch.hpp>

#include <gt/error.h>

#include "tests/support/temp_dir.h"
#include "worker/collectives/gloo_collectives.h"

extern char** environ;

namespace gt::worker::collectives::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

/// A communicator name no other test in this process uses.
std::string fresh_name(const std::string& what) {
  static std::atomic<int> counter{0};
  return what + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
}

/// What one rank's thread produced: its tensors, or the exception it threw.
struct RankOutcome {
  std::vector<at::Tensor> tensors;
  std::exception_ptr error;
};

std::string what_of(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "non-standard exception";
  }
}

/// Runs `fn(comm, rank)` for `size` ranks, each a thread with its own
/// communicator, all meeting through one InMemoryStore. Catch's assertions
/// are not thread-safe, so the threads only compute; tests check on the
/// main thread.
template <typename Fn>
std::vector<RankOutcome> run_ranks(int size, Fn fn, std::chrono::milliseconds timeout = 10s) {
  InMemoryStore store;
  const std::string name = fresh_name("threads");
  std::vector<RankOutcome> out(static_cast<size_t>(size));
  std::vector<std::thread> threads;
  for (int r = 0; r < size; ++r) {
    threads.emplace_back([&, r] {
      try {
        auto comm = make_gloo_collectives(store, {r, size, name, "127.0.0.1", timeout});
        out[static_cast<size_t>(r)].tensors = fn(*comm, r);
      } catch (...) {
        out[static_cast<size_t>(r)].error = std::current_exception();
      }
    });
  }
  for (std::thread& t : threads) t.join();
  return out;
}

void require_success(const std::vector<RankOutcome>& outcomes) {
  for (size_t r = 0; r < outcomes.size(); ++r) {
    INFO("rank " << r);
    if (outcomes[r].error) FAIL(what_of(outcomes[r].error));
  }
}

/// Rank r's input: small integers (exact in every dtype and under every
/// reduction), different on each rank, with one negative entry.
at::Tensor input(int rank, at::IntArrayRef shape, at::ScalarType dtype) {
  const int64_t n = c10::multiply_integers(shape);
  at::Tensor t = (at::arange(n, at::kLong) % 5 + rank + 1).reshape(shape);
  if (n > 1) t.view(-1)[1] = -(rank + 2);
  return t.to(dtype);
}

std::vector<at::Tensor> inputs(int size, at::IntArrayRef shape, at::ScalarType dtype) {
  std::vector<at::Tensor> all;
  for (int r = 0; r < size; ++r) all.push_back(input(r, shape, dtype));
  return all;
}

at::Tensor reduce_locally(const std::vector<at::Tensor>& all, ReduceOp op) {
  const at::Tensor s = at::stack(all);
  switch (op) {
    case ReduceOp::Sum:
      return s.sum(0, false, s.scalar_type());
    case ReduceOp::Avg:
      return s.sum(0) / static_cast<double>(all.size());
    case ReduceOp::Max:
      return std::get<0>(s.max(0));
    case ReduceOp::Min:
      return std::get<0>(s.min(0));
    case ReduceOp::Product:
      return s.prod(0, false, s.scalar_type());
  }
  return {};
}

void check_equal(const at::Tensor& got, const at::Tensor& want) {
  INFO("got " << got.scalar_type() << " " << got.sizes() << ", want " << want.scalar_type() << " "
              << want.sizes());
  REQUIRE(got.scalar_type() == want.scalar_type());
  REQUIRE(got.sizes() == want.sizes());
  if (at::isFloatingType(want.scalar_type())) {
    CHECK(at::allclose(got.to(at::kDouble), want.to(at::kDouble), 1e-2, 1e-3));
  } else {
    CHECK(at::equal(got, want));
  }
}

constexpr ReduceOp kAllOps[] = {ReduceOp::Sum, ReduceOp::Avg, ReduceOp::Max, ReduceOp::Min,
                                ReduceOp::Product};

// ---- the five collectives, ranks as threads ------------------------------

TEST_CASE("collectives all_reduce matches LibTorch for every reduce op and dtype",
          "[collectives][unit]") {
  const std::vector<at::ScalarType> dtypes{at::kFloat, at::kDouble, at::kInt, at::kLong};
  for (int size : {2, 3}) {
    // Every (dtype, op) the layer supports, in a fixed order on every rank,
    // plus 16-bit floats, a non-contiguous tensor and an empty one.
    auto cases = [&](auto&& each) {
      for (at::ScalarType dt : dtypes) {
        for (ReduceOp op : kAllOps) {
          if (op == ReduceOp::Avg && !at::isFloatingType(dt)) continue;
          each(dt, op, std::vector<int64_t>{3, 5}, false);
        }
      }
      each(at::kHalf, ReduceOp::Sum, std::vector<int64_t>{9}, false);
      each(at::kBFloat16, ReduceOp::Max, std::vector<int64_t>{9}, false);
      each(at::kFloat, ReduceOp::Sum, std::vector<int64_t>{4, 6}, true);
      each(at::kFloat, ReduceOp::Sum, std::vector<int64_t>{0, 3}, false);
      // Several of Gloo's ring segments (1 MiB each), not a multiple of the size.
      each(at::kFloat, ReduceOp::Sum, std::vector<int64_t>{3 * 262144 + 7}, false);
    };
    auto outcomes = run_ranks(size, [&](Collectives& comm, int rank) {
      std::vector<at::Tensor> results;
      cases([&](at::ScalarType dt, ReduceOp op, std::vector<int64_t> shape, bool transposed) {
        at::Tensor t = input(rank, shape, dt);
        if (transposed) t = t.t();  // non-contiguous: written back in place
        comm.all_reduce(t, op);
        results.push_back(t);
      });
      return results;
    });
    require_success(outcomes);
    for (int r = 0; r < size; ++r) {
      size_t i = 0;
      cases([&](at::ScalarType dt, ReduceOp op, std::vector<int64_t> shape, bool transposed) {
        INFO("size " << size << ", rank " << r << ", " << dt << " " << to_string(op));
        std::vector<at::Tensor> all = inputs(size, shape, dt);
        if (transposed) {
          for (at::Tensor& t : all) t = t.t();
        }
        const at::Tensor& got = outcomes[size_t(r)].tensors[i++];
        check_equal(got, reduce_locally(all, op));
        if (transposed) CHECK_FALSE(got.is_contiguous());  // the caller's own tensor
      });
    }
  }
}

TEST_CASE("collectives all_gather concatenates along any dim, uneven sizes included",
          "[collectives][unit]") {
  struct Case {
    std::function<std::vector<int64_t>(int rank)> shape;
    int64_t dim;
  };
  const std::vector<Case> cases{
      {[](int) {
         return std::vector<int64_t>{2, 3};
       },
       0},
      {[](int) {
         return std::vector<int64_t>{2, 3};
       },
       1},  // not the leading dim
      {[](int r) {
         return std::vector<int64_t>{r + 1, 3};
       },
       0},
      {[](int r) {
         return std::vector<int64_t>{2, r + 1, 2};
       },
       -2},
      {[](int r) {
         return std::vector<int64_t>{r == 1 ? 0 : 2, 4};
       },
       0},  // a rank with no rows
      {[](int) {
         return std::vector<int64_t>{0, 4};
       },
       0},  // nothing at all
  };
  for (int size : {2, 3}) {
    auto outcomes = run_ranks(size, [&](Collectives& comm, int rank) {
      std::vector<at::Tensor> results;
      for (const Case& c : cases) {
        results.push_back(comm.all_gather(input(rank, c.shape(rank), at::kFloat), c.dim));
      }
      results.push_back(comm.all_gather(input(rank, {2, 2}, at::kLong).t(), 0));
      results.push_back(comm.all_gather(input(rank, {3}, at::kBool), 0));
      return results;
    });
    require_success(outcomes);
    for (int r = 0; r < size; ++r) {
      for (size_t i = 0; i < cases.size(); ++i) {
        INFO("size " << size << ", rank " << r << ", case " << i);
        std::vector<at::Tensor> all;
        for (int q = 0; q < size; ++q) all.push_back(input(q, cases[i].shape(q), at::kFloat));
        check_equal(outcomes[size_t(r)].tensors[i], at::cat(all, cases[i].dim));
      }
      std::vector<at::Tensor> transposed, flags;
      for (int q = 0; q < size; ++q) {
        transposed.push_back(input(q, {2, 2}, at::kLong).t());
        flags.push_back(input(q, {3}, at::kBool));
      }
      check_equal(outcomes[size_t(r)].tensors[cases.size()], at::cat(transposed, 0));
      check_equal(outcomes[size_t(r)].tensors[cases.size() + 1], at::cat(flags, 0));
    }
  }
}

TEST_CASE("collectives reduce_scatter returns this rank's part of the reduction",
          "[collectives][unit]") {
  struct Case {
    std::vector<int64_t> shape;
    int64_t dim;
    ReduceOp op;
    at::ScalarType dtype;
  };
  const std::vector<Case> cases{
      {{6, 4}, 0, ReduceOp::Sum, at::kFloat},
      {{7, 4}, 0, ReduceOp::Sum, at::kLong},    // uneven: 4+3 or 3+2+2
      {{4, 7}, 1, ReduceOp::Max, at::kInt},     // along a later dim
      {{2, 5}, 0, ReduceOp::Avg, at::kDouble},  // fewer rows than ranks at size 3
      {{3, 2, 5}, -1, ReduceOp::Min, at::kFloat},
      {{5, 3}, 0, ReduceOp::Product, at::kLong},
      {{9}, 0, ReduceOp::Sum, at::kBFloat16},
  };
  for (int size : {2, 3}) {
    auto outcomes = run_ranks(size, [&](Collectives& comm, int rank) {
      std::vector<at::Tensor> results;
      for (const Case& c : cases) {
        results.push_back(comm.reduce_scatter(input(rank, c.shape, c.dtype), c.dim, c.op));
      }
      return results;
    });
    require_success(outcomes);
    for (int r = 0; r < size; ++r) {
      for (size_t i = 0; i < cases.size(); ++i) {
        const Case& c = cases[i];
        INFO("size " << size << ", rank " << r << ", case " << i);
        const at::Tensor full = reduce_locally(inputs(size, c.shape, c.dtype), c.op);
        check_equal(outcomes[size_t(r)].tensors[i], full.tensor_split(size, c.dim)[size_t(r)]);
      }
    }
  }
}

TEST_CASE("collectives broadcast copies the root's tensor, from any root", "[collectives][unit]") {
  for (int size : {2, 3}) {
    auto outcomes = run_ranks(size, [&](Collectives& comm, int rank) {
      std::vector<at::Tensor> results;
      for (int root = size - 1; root >= 0; --root) {
        at::Tensor t = input(rank, {3, 4}, at::kFloat);
        comm.broadcast(t, root);
        results.push_back(t);
      }
      at::Tensor strided = input(rank, {4, 3}, at::kInt).t();  // written back in place
      comm.broadcast(strided, 1);
      results.push_back(strided);
      at::Tensor flags = input(rank, {5}, at::kBool);
      comm.broadcast(flags, size - 1);
      results.push_back(flags);
      return results;
    });
    require_success(outcomes);
    for (int r = 0; r < size; ++r) {
      INFO("size " << size << ", rank " << r);
      const auto& got = outcomes[size_t(r)].tensors;
      for (int root = size - 1, i = 0; root >= 0; --root, ++i) {
        check_equal(got[size_t(i)], input(root, {3, 4}, at::kFloat));
      }
      check_equal(got[size_t(size)], input(1, {4, 3}, at::kInt).t());
      check_equal(got[size_t(size) + 1], input(size - 1, {5}, at::kBool));
    }
  }
}

TEST_CASE("collectives send and recv pass tensors around a ring", "[collectives][unit]") {
  for (int size : {2, 3}) {
    auto outcomes = run_ranks(size, [&](Collectives& comm, int rank) {
      const int right = (rank + 1) % size, left = (rank + size - 1) % size;
      at::Tensor mine = input(rank, {2, 3}, at::kDouble);
      at::Tensor got = at::zeros({3, 2}, at::kDouble).t();  // non-contiguous destination
      at::Tensor empty_in = at::empty({0}, at::kLong);
      // send is a rendezvous: even ranks send first, odd ranks receive first.
      if (rank % 2 == 0) {
        comm.send(mine, right, 42);
        comm.recv(got, left, 42);
        comm.send(at::empty({0}, at::kLong), right, 43);
        comm.recv(empty_in, left, 43);
      } else {
        comm.recv(got, left, 42);
        comm.send(mine, right, 42);
        comm.recv(empty_in, left, 43);
        comm.send(at::empty({0}, at::kLong), right, 43);
      }
      comm.barrier();
      return std::vector<at::Tensor>{got};
    });
    require_success(outcomes);
    for (int r = 0; r < size; ++r) {
      INFO("size " << size << ", rank " << r);
      check_equal(outcomes[size_t(r)].tensors[0],
                  input((r + size - 1) % size, {2, 3}, at::kDouble));
    }
  }
}

TEST_CASE("collectives on a single rank are local copies", "[collectives][unit]") {
  InMemoryStore store;
  auto comm = make_gloo_collectives(store, {0, 1, fresh_name("single"), "127.0.0.1", 1s});
  const at::Tensor want = input(0, {2, 3}, at::kFloat);
  at::Tensor t = want.clone();
  comm->all_reduce(t, ReduceOp::Avg);
  check_equal(t, want);
  comm->broadcast(t, 0);
  check_equal(t, want);
  comm->barrier();
  check_equal(comm->all_gather(t, 1), want);
  check_equal(comm->reduce_scatter(t, 0, ReduceOp::Sum), want);
  CHECK_THROWS_WITH(
      comm->send(t, 0, 1),
      Catch::Contains("peer 0 invalid: expected a rank in [0, 1) other than this rank"));
}

// ---- ranks as separate processes ---------------------------------------

/// Every collective once on a 3-rank communicator, checked against LibTorch;
/// returns the failures found (empty: all good). Runs in each process.
std::string cross_process_script(Collectives& comm) {
  const int rank = comm.rank(), size = comm.size();
  std::ostringstream failures;
  auto expect = [&](const char* what, const at::Tensor& got, const at::Tensor& want) {
    if (got.sizes() != want.sizes() || !at::equal(got, want)) {
      failures << what << " on rank " << rank << ": got " << got << ", want " << want << "\n";
    }
  };
  at::Tensor t = input(rank, {4, 3}, at::kFloat);
  comm.all_reduce(t, ReduceOp::Sum);
  expect("all_reduce", t, reduce_locally(inputs(size, {4, 3}, at::kFloat), ReduceOp::Sum));

  std::vector<at::Tensor> parts;
  for (int q = 0; q < size; ++q) parts.push_back(input(q, {q + 1, 2}, at::kLong));
  expect("all_gather", comm.all_gather(input(rank, {rank + 1, 2}, at::kLong), 0),
         at::cat(parts, 0));

  const at::Tensor full = reduce_locally(inputs(size, {7, 2}, at::kInt), ReduceOp::Max);
  expect("reduce_scatter", comm.reduce_scatter(input(rank, {7, 2}, at::kInt), 0, ReduceOp::Max),
         full.tensor_split(size, 0)[size_t(rank)]);

  at::Tensor b = input(rank, {5}, at::kDouble);
  comm.broadcast(b, size - 1);
  expect("broadcast", b, input(size - 1, {5}, at::kDouble));

  at::Tensor got = at::zeros({3}, at::kFloat);
  const int right = (rank + 1) % size, left = (rank + size - 1) % size;
  if (rank % 2 == 0) {
    comm.send(input(rank, {3}, at::kFloat), right, 9);
    comm.recv(got, left, 9);
  } else {
    comm.recv(got, left, 9);
    comm.send(input(rank, {3}, at::kFloat), right, 9);
  }
  expect("send/recv", got, input(left, {3}, at::kFloat));
  comm.barrier();
  return failures.str();
}

const char* env_or_null(const char* name) {
  return std::getenv(name);
}

// The child side of the cross-process test: hidden, and a no-op unless the
// parent set the environment.
TEST_CASE("collectives cross-process child", "[.][collectives_child]") {
  const char* dir = env_or_null("GT_COLLECTIVES_CHILD_DIR");
  if (dir == nullptr) return;
  const int rank = std::atoi(env_or_null("GT_COLLECTIVES_CHILD_RANK"));
  const int size = std::atoi(env_or_null("GT_COLLECTIVES_CHILD_SIZE"));
  FileStore store(dir);
  auto comm = make_gloo_collectives(
      store, {rank, size, env_or_null("GT_COLLECTIVES_CHILD_NAME"), "127.0.0.1", 20s});
  const std::string failures = cross_process_script(*comm);
  INFO(failures);
  CHECK(failures.empty());
}

/// Starts this test binary again as rank `rank`, its output going to `log`.
pid_t spawn_child(const std::string& dir, const std::string& name, int rank, int size,
                  const std::string& log) {
  std::vector<std::string> env_strings{"GT_COLLECTIVES_CHILD_DIR=" + dir,
                                       "GT_COLLECTIVES_CHILD_NAME=" + name,
                                       "GT_COLLECTIVES_CHILD_RANK=" + std::to_string(rank),
                                       "GT_COLLECTIVES_CHILD_SIZE=" + std::to_string(size)};
  std::vector<char*> envp;
  for (char** e = environ; *e != nullptr; ++e) envp.push_back(*e);
  for (std::string& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::string exe = "/proc/self/exe", spec = "[collectives_child]";
  std::vector<char*> argv{exe.data(), spec.data(), nullptr};
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, exe.c_str(), &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  REQUIRE(rc == 0);
  return pid;
}

/// Exit status of `pid`, or -1 after killing it when it outlives `deadline`.
int wait_child(pid_t pid, Clock::time_point deadline) {
  while (true) {
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    if (Clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return -1;
    }
    std::this_thread::sleep_for(10ms);
  }
}

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

TEST_CASE("collectives work across processes through a FileStore", "[collectives][unit]") {
  gt::test::TempDir tmp("gt-collectives");
  const std::string store_dir = tmp / "store";
  const std::string name = fresh_name("processes");
  constexpr int kSize = 3;
  std::vector<pid_t> children;
  for (int r = 1; r < kSize; ++r) {
    children.push_back(
        spawn_child(store_dir, name, r, kSize, tmp / ("rank" + std::to_string(r) + ".log")));
  }
  std::string failures;
  try {
    FileStore store(store_dir);
    auto comm = make_gloo_collectives(store, {0, kSize, name, "127.0.0.1", 20s});
    failures = cross_process_script(*comm);
  } catch (const std::exception& e) {
    failures = std::string("rank 0 threw: ") + e.what();
  }
  const auto deadline = Clock::now() + 30s;
  for (int r = 1; r < kSize; ++r) {
    const int status = wait_child(children[size_t(r - 1)], deadline);
    INFO("rank " << r << " output:\n" << slurp(tmp / ("rank" + std::to_string(r) + ".log")));
    CHECK(status == 0);
  }
  INFO(failures);
  CHECK(failures.empty());
}

// ---- errors --------------------------------------------------------------

/// The message of what rank `r` threw, or "" when it threw nothing.
template <typename E>
std::string thrown(const std::vector<RankOutcome>& outcomes, int r) {
  const std::exception_ptr& error = outcomes[size_t(r)].error;
  if (!error) return "";
  try {
    std::rethrow_exception(error);
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("unexpected exception type: ") + e.what();
  }
  return "";
}

/// Runs `call` on every rank of a 2-rank communicator and collects what each
/// threw; then checks the communicator still works (an all_reduce).
template <typename Call>
std::vector<std::string> errors_of(Call call, bool expect_usable = true) {
  std::vector<std::string> messages(2);
  std::vector<std::string> after(2);
  const auto start = Clock::now();
  auto outcomes = run_ranks(2, [&](Collectives& comm, int rank) {
    try {
      call(comm, rank);
      messages[size_t(rank)] = "nothing thrown";
    } catch (const std::invalid_argument& e) {
      messages[size_t(rank)] = std::string("invalid_argument: ") + e.what();
    } catch (const TimeoutError& e) {
      messages[size_t(rank)] = std::string("TimeoutError: ") + e.what();
    } catch (const Error& e) {
      messages[size_t(rank)] = std::string("Error: ") + e.what();
    }
    if (expect_usable) {
      at::Tensor t = at::ones({3});
      comm.all_reduce(t, ReduceOp::Sum);
      if (!at::equal(t, at::full({3}, 2.0f))) after[size_t(rank)] = "wrong all_reduce afterwards";
    }
    return std::vector<at::Tensor>{};
  });
  require_success(outcomes);
  // Agreement errors come from one header exchange, not from a timeout.
  CHECK(Clock::now() - start < 5s);
  CHECK(after == std::vector<std::string>(2));
  return messages;
}

TEST_CASE("collectives ranks that disagree get a clear error on every rank",
          "[collectives][unit]") {
  SECTION("dtype") {
    auto m = errors_of([](Collectives& comm, int rank) {
      at::Tensor t = at::ones({4}, rank == 0 ? at::kFloat : at::kDouble);
      comm.all_reduce(t, ReduceOp::Sum);
    });
    for (const std::string& s : m) {
      CHECK_THAT(s, Catch::StartsWith("Error: [collectives.all_reduce] dtypes differ across ranks: "
                                      "rank 0 has float32 (4), rank 1 has float64 (4)"));
    }
    CHECK_THAT(m[1], Catch::Contains("rank 1 of 2, tensor float64 (4)"));
  }
  SECTION("shape") {
    auto m = errors_of([](Collectives& comm, int rank) {
      comm.reduce_scatter(at::ones({4, rank + 2}), 0, ReduceOp::Sum);
    });
    for (const std::string& s : m) {
      CHECK_THAT(s,
                 Catch::Contains("[collectives.reduce_scatter] shapes differ across ranks: rank 0 "
                                 "has float32 (4, 2), rank 1 has float32 (4, 3); expected the "
                                 "same shape on every rank"));
    }
  }
  SECTION("all_gather sizes off the gathered dim") {
    auto m = errors_of([](Collectives& comm, int rank) {
      comm.all_gather(at::ones({2, rank + 1}), 0);
    });
    for (const std::string& s : m) {
      CHECK_THAT(s, Catch::Contains("expected the same sizes except along dim 0"));
    }
  }
  SECTION("root") {
    auto m = errors_of([](Collectives& comm, int rank) {
      at::Tensor t = at::ones({2});
      comm.broadcast(t, rank);
    });
    for (const std::string& s : m) {
      CHECK_THAT(s, Catch::Contains("roots differ across ranks: rank 0 passed 0, rank 1 passed 1"));
    }
  }
  SECTION("reduce op") {
    auto m = errors_of([](Collectives& comm, int rank) {
      at::Tensor t = at::ones({2});
      comm.all_reduce(t, rank == 0 ? ReduceOp::Sum : ReduceOp::Max);
    });
    for (const std::string& s : m) {
      CHECK_THAT(s, Catch::Contains(
                        "reduce ops differ across ranks: rank 0 passed sum, rank 1 passed max"));
    }
  }
  SECTION("different collectives") {
    auto m = errors_of([](Collectives& comm, int rank) {
      at::Tensor t = at::ones({2});
      if (rank == 0)
        comm.all_reduce(t, ReduceOp::Sum);
      else
        comm.barrier();
    });
    for (const std::string& s : m) {
      CHECK_THAT(s, Catch::Contains("ranks called different collectives: rank 0 called all_reduce, "
                                    "rank 1 called barrier"));
    }
  }
  SECTION("send and recv shapes") {
    auto m = errors_of([](Collectives& comm, int rank) {
      if (rank == 0)
        comm.send(at::ones({3}), 1, 5);
      else {
        at::Tensor t = at::empty({4});
        comm.recv(t, 0, 5);
      }
    });
    CHECK_THAT(m[0],
               Catch::StartsWith("Error: [collectives.send] tensors differ: the sender (rank 0) "
                                 "has float32 (3), the receiver (rank 1) has float32 (4)"));
    CHECK_THAT(m[1],
               Catch::StartsWith("Error: [collectives.recv] tensors differ: the sender (rank 0) "
                                 "has float32 (3), the receiver (rank 1) has float32 (4)"));
  }
  SECTION("two senders") {
    auto m = errors_of([](Collectives& comm, int rank) { comm.send(at::ones({3}), 1 - rank, 5); });
    CHECK_THAT(m[0], Catch::Contains("rank 1 called send with tag 5: expected recv"));
    CHECK_THAT(m[1], Catch::Contains("rank 0 called send with tag 5: expected recv"));
  }
}

TEST_CASE("collectives reject invalid arguments on every rank without hanging",
          "[collectives][unit]") {
  SECTION("root out of range everywhere") {
    auto m = errors_of([](Collectives& comm, int) {
      at::Tensor t = at::ones({2});
      comm.broadcast(t, 5);
    });
    for (const std::string& s : m) {
      CHECK_THAT(s,
                 Catch::StartsWith("invalid_argument: [collectives.broadcast] root 5 out of range: "
                                   "expected a rank in [0, 2)"));
    }
  }
  SECTION("root out of range on one rank") {
    auto m = errors_of([](Collectives& comm, int rank) {
      at::Tensor t = at::ones({2});
      comm.broadcast(t, rank == 0 ? 0 : -1);
    });
    CHECK_THAT(m[0],
               Catch::StartsWith("Error: [collectives.broadcast] rank 1 rejected its arguments "
                                 "(it passed a root outside the communicator)"));
    CHECK_THAT(m[1],
               Catch::StartsWith("invalid_argument: [collectives.broadcast] root -1 out of range"));
  }
  SECTION("dtypes and reduce ops") {
    auto m = errors_of([](Collectives& comm, int) {
      at::Tensor t = at::ones({2}, at::kInt);
      comm.all_reduce(t, ReduceOp::Avg);
    });
    for (const std::string& s : m) {
      CHECK_THAT(
          s, Catch::Contains("reduce op avg not supported for int32: expected a floating dtype"));
    }
    m = errors_of([](Collectives& comm, int) {
      at::Tensor t = at::ones({2}, at::kBool);
      comm.all_reduce(t, ReduceOp::Max);
    });
    for (const std::string& s : m) CHECK_THAT(s, Catch::Contains("dtype bool not supported"));
  }
  SECTION("dims, undefined and expanded tensors") {
    auto m = errors_of([](Collectives& comm, int) { comm.all_gather(at::ones({2, 3}), 2); });
    for (const std::string& s : m) {
      CHECK_THAT(s, Catch::Contains("dim 2 out of range: expected a dim in [-2, 2)"));
    }
    m = errors_of(
        [](Collectives& comm, int) { comm.reduce_scatter(at::Tensor(), 0, ReduceOp::Sum); });
    for (const std::string& s : m) CHECK_THAT(s, Catch::Contains("undefined tensor"));
    m = errors_of([](Collectives& comm, int) {
      at::Tensor t = at::ones({1}).expand({4});
      comm.all_reduce(t, ReduceOp::Sum);
    });
    for (const std::string& s : m) CHECK_THAT(s, Catch::Contains("tensor elements share memory"));
  }
  SECTION("peers and tags") {
    auto m = errors_of([](Collectives& comm, int rank) { comm.send(at::ones({2}), rank, 1); });
    for (const std::string& s : m) {
      CHECK_THAT(s, Catch::Contains("invalid: expected a rank in [0, 2) other than this rank"));
    }
    m = errors_of([](Collectives& comm, int) {
      at::Tensor t = at::ones({2});
      comm.recv(t, 7, 1);
    });
    for (const std::string& s : m) {
      CHECK_THAT(s, Catch::StartsWith("invalid_argument: [collectives.recv] peer 7 invalid"));
    }
    m = errors_of(
        [](Collectives& comm, int rank) { comm.send(at::ones({2}), 1 - rank, uint64_t{1} << 60); });
    for (const std::string& s : m) CHECK_THAT(s, Catch::Contains("expected a tag below 2^56"));
  }
  SECTION("options") {
    InMemoryStore store;
    CHECK_THROWS_WITH(
        make_gloo_collectives(store, {2, 2, "bad", "127.0.0.1", 1s}),
        Catch::StartsWith("[collectives.connect] rank 2 out of range: expected a rank "
                          "in [0, 2)"));
    CHECK_THROWS_AS(make_gloo_collectives(store, {0, 0, "bad", "127.0.0.1", 1s}),
                    std::invalid_argument);
    CHECK_THROWS_AS(make_gloo_collectives(store, {0, 1, "", "127.0.0.1", 1s}),
                    std::invalid_argument);
  }
}

TEST_CASE("collectives name the ranks that never join", "[collectives][unit]") {
  InMemoryStore store;
  const auto start = Clock::now();
  CHECK_THROWS_WITH(
      make_gloo_collectives(store, {0, 3, fresh_name("lonely"), "127.0.0.1", 200ms}),
      Catch::StartsWith("[collectives.connect] ranks 1, 2 did not join within 200 ms") &&
          Catch::Contains("rank 0 of 3"));
  CHECK(Clock::now() - start < 2s);
  CHECK_THROWS_AS(make_gloo_collectives(store, {1, 2, fresh_name("lonely"), "127.0.0.1", 100ms}),
                  TimeoutError);
}

TEST_CASE("collectives time out on a silent peer, then refuse further calls",
          "[collectives][unit]") {
  std::promise<void> rank0_done;
  std::shared_future<void> done = rank0_done.get_future().share();
  std::string timeout_message, later_message;
  auto outcomes = run_ranks(
      2,
      [&](Collectives& comm, int rank) {
        if (rank == 1) {
          done.wait_for(10s);  // connected, but never joins the all_reduce
          return std::vector<at::Tensor>{};
        }
        at::Tensor t = at::ones({8});
        try {
          comm.all_reduce(t, ReduceOp::Sum);
        } catch (const TimeoutError& e) {
          timeout_message = e.what();
        } catch (...) {
        }
        try {
          comm.barrier();
        } catch (const TransportError& e) {
          later_message = e.what();
        } catch (...) {
        }
        rank0_done.set_value();
        return std::vector<at::Tensor>{};
      },
      300ms);
  require_success(outcomes);
  CHECK_THAT(timeout_message,
             Catch::StartsWith("[collectives.all_reduce] timed out after 300 ms waiting for rank 1 "
                               "(communicator '") &&
                 Catch::Contains("rank 0 of 2, tensor float32 (8)"));
  CHECK_THAT(later_message,
             Catch::StartsWith("[collectives.barrier] communicator unusable after an "
                               "earlier failure") &&
                 Catch::Contains("timed out after 300 ms"));
}

TEST_CASE("collectives report a peer that goes away as a transport error", "[collectives][unit]") {
  std::string message = "nothing thrown";
  const auto start = Clock::now();
  auto outcomes = run_ranks(2, [&](Collectives& comm, int rank) {
    if (rank == 0) {
      // Rank 1 closes its connections instead of joining.
      at::Tensor t = at::ones({1000});
      try {
        comm.all_reduce(t, ReduceOp::Sum);
      } catch (const TimeoutError& e) {
        message = std::string("TimeoutError: ") + e.what();
      } catch (const TransportError& e) {
        message = e.what();
      }
    }
    return std::vector<at::Tensor>{};
  });
  require_success(outcomes);
  CHECK_THAT(message, Catch::StartsWith("[collectives.all_reduce] connection failed while waiting "
                                        "for rank 1 (communicator '"));
  CHECK(Clock::now() - start < 5s);  // noticed at once, not at the 10 s timeout
}

TEST_CASE("collectives stores block until set and report missing keys", "[collectives][unit]") {
  gt::test::TempDir tmp("gt-store");
  InMemoryStore memory;
  FileStore files(tmp / "store");
  for (Store* store : std::vector<Store*>{&memory, &files}) {
    CHECK_FALSE(store->get("a/b.c", 20ms).has_value());
    CHECK(store->wait({"a/b.c", "x"}, 0ms) == std::vector<std::string>{"a/b.c", "x"});
    std::thread writer([&] { store->set("a/b.c", {'h', 'i'}); });
    CHECK(store->get("a/b.c", 5s) == std::vector<char>{'h', 'i'});
    writer.join();
    store->set("x", {});
    CHECK(store->wait({"a/b.c", "x", "y"}, 20ms) == std::vector<std::string>{"y"});
    store->set("x", {'2'});
    CHECK(store->get("x", 0ms) == std::vector<char>{'2'});
  }
  CHECK_THROWS_AS(files.set("", {}), std::invalid_argument);
}

// ---- benchmark -------------------------------------------------------------

/// The median over batches of the slower rank's seconds per operation;
/// `per_rank[rank][batch]`.
double median_of_slower(const std::vector<std::vector<double>>& per_rank) {
  std::vector<double> slower;
  for (size_t b = 0; b < per_rank[0].size(); ++b) {
    slower.push_back(std::max(per_rank[0][b], per_rank[1][b]));
  }
  std::nth_element(slower.begin(), slower.begin() + slower.size() / 2, slower.end());
  return slower[slower.size() / 2];
}

TEST_CASE("collectives all_reduce bandwidth against plain Gloo", "[.][collectives][bench]") {
  // Two ranks as threads on loopback. Each rank owns a gt communicator and,
  // side by side, a plain Gloo context of its own (HashStore rendezvous,
  // its own TCP connections); both run the same in-place float32 sum
  // all-reduce. Short batches alternate between the two and each side
  // reports its median batch, so load from other processes hits both alike.
  const std::vector<int64_t> sizes_bytes{1 << 20, 16 << 20, 64 << 20};
  constexpr int kBatches = 21;
  constexpr int64_t kBytesPerBatch = 16 << 20;
  constexpr int kBarriersPerBatch = 20;
  // One intra-op thread, as a worker runs: LibTorch's OpenMP team would
  // otherwise spin after each fill_ and take the two cores from the ranks.
  const int threads_before = at::get_num_threads();
  at::set_num_threads(1);
  struct RestoreThreads {
    int n;
    ~RestoreThreads() { at::set_num_threads(n); }
  } restore{threads_before};
  InMemoryStore store;
  gloo::rendezvous::HashStore gloo_store;
  // [what][rank][batch]: seconds per operation.
  using Times = std::vector<std::vector<double>>;
  std::vector<Times> layer(sizes_bytes.size(), Times(2)), plain(sizes_bytes.size(), Times(2));
  Times barrier(2), plain_barrier(2);
  auto outcomes = run_ranks(
      2,
      [&](Collectives& comm, int rank) {
        gloo::transport::tcp::attr attr;
        attr.hostname = "127.0.0.1";
        auto device = gloo::transport::tcp::CreateDevice(attr);
        auto context = std::make_shared<gloo::rendezvous::Context>(rank, 2);
        context->setTimeout(30s);
        context->connectFullMesh(gloo_store, device);
        uint32_t tag = 0;
        auto timed = [](int iters, auto&& op) {
          const auto t0 = Clock::now();
          for (int i = 0; i < iters; ++i) op();
          return std::chrono::duration<double>(Clock::now() - t0).count() / iters;
        };
        // The fixed cost of the agreement header (Note [agreement header] in
        // agreement.cpp): our barrier is that exchange and nothing else.
        for (int b = 0; b < kBatches; ++b) {
          comm.barrier();
          barrier[size_t(rank)].push_back(timed(kBarriersPerBatch, [&] { comm.barrier(); }));
          plain_barrier[size_t(rank)].push_back(timed(kBarriersPerBatch, [&] {
            gloo::BarrierOptions opts(context);
            opts.setTag(tag++);
            gloo::barrier(opts);
          }));
        }
        for (size_t s = 0; s < sizes_bytes.size(); ++s) {
          const int64_t n = sizes_bytes[s] / 4;
          const int iters = static_cast<int>(std::max<int64_t>(1, kBytesPerBatch / sizes_bytes[s]));
          at::Tensor a = at::rand({n});
          at::Tensor b = a.clone();
          for (int batch = 0; batch < kBatches; ++batch) {
            comm.barrier();
            layer[s][size_t(rank)].push_back(
                timed(iters, [&] { comm.all_reduce(a, ReduceOp::Sum); }));
            comm.barrier();
            plain[s][size_t(rank)].push_back(timed(iters, [&] {
              gloo::AllreduceOptions opts(context);
              opts.setOutput(b.data_ptr<float>(), static_cast<size_t>(n));
              opts.setReduceFunction(static_cast<void (*)(void*, const void*, const void*, size_t)>(
                  &gloo::sum<float>));
              opts.setTag(tag++);
              gloo::allreduce(opts);
            }));
            a.fill_(1.0f);  // values stay small: 2^k after k rounds of sums
            b.fill_(1.0f);
          }
        }
        return std::vector<at::Tensor>{};
      },
      60s);
  require_success(outcomes);
  std::printf(
      "all_reduce float32 sum, 2 ranks (threads) on 127.0.0.1; median of %d alternating "
      "batches, slower rank\n",
      kBatches);
  std::printf("barrier: gt %.1f us (one agreement header exchange), plain gloo::barrier %.1f us\n",
              median_of_slower(barrier) * 1e6, median_of_slower(plain_barrier) * 1e6);
  std::printf("%10s %10s %10s %10s %10s %7s\n", "size", "gt ms", "gloo ms", "gt GB/s", "gloo GB/s",
              "ratio");
  for (size_t s = 0; s < sizes_bytes.size(); ++s) {
    const double ours = median_of_slower(layer[s]), theirs = median_of_slower(plain[s]);
    const double gb = static_cast<double>(sizes_bytes[s]) / 1e9;
    std::printf("%7lld MB %10.3f %10.3f %10.3f %10.3f %7.2f\n",
                static_cast<long long>(sizes_bytes[s] >> 20), ours * 1e3, theirs * 1e3, gb / ours,
                gb / theirs, theirs / ours);
  }
}

}  // namespace
}  // namespace gt::worker::collectives::test
