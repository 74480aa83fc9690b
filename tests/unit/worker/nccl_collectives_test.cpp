// The NCCL backend. Without a GPU (CPU CI, and machines with CUDA's libraries
// but no driver): the type tables, loading the libraries by name, NCCL's
// unique id and its exchange through a store, and communicators that cannot
// be created failing quickly with the reason. With GPUs ([gpu]): every
// collective on one rank, and on two ranks as threads when two devices are
// visible, compared with LibTorch.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <exception>
#include <functional>
#include <future>
#include <limits>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

// LibTorch before Catch (see worker_test_support.h: glog's CHECK).
#include <ATen/ATen.h>
#include <catch2/catch.hpp>

#include <gt/error.h>

#include "worker/collectives/communicators.h"
#include "worker/collectives/nccl_collectives.h"
#include "worker/collectives/store.h"

namespace gt::worker::collectives::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

std::string what_of(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "non-standard exception";
  }
}

bool is_timeout(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const TimeoutError&) {
    return true;
  } catch (...) {
    return false;
  }
}

/// What loading NCCL says on this machine: empty when it loads.
std::string load_failure() {
  try {
    load_nccl();
    return {};
  } catch (const Error& e) {
    return e.what();
  }
}

/// The start of the error a communicator's creation gives on a machine where
/// NCCL cannot run, whichever the reason is here.
std::string expected_setup_failure() {
  if (!nccl_built()) return "built without NCCL headers";
  if (!load_failure().empty()) return "cannot load";
  return "CUDA";  // "CUDA is unusable: cudaGetDeviceCount failed: ..." or no such device
}

/// Runs `fn(rank)` on `size` threads and returns what each threw (null: no
/// throw). Catch's assertions are not thread-safe: threads only compute.
std::vector<std::exception_ptr> on_threads(int size, const std::function<void(int)>& fn) {
  std::vector<std::exception_ptr> errors(static_cast<size_t>(size));
  std::vector<std::thread> threads;
  for (int r = 0; r < size; ++r) {
    threads.emplace_back([&, r] {
      try {
        fn(r);
      } catch (...) {
        errors[static_cast<size_t>(r)] = std::current_exception();
      }
    });
  }
  for (std::thread& t : threads) t.join();
  return errors;
}

NcclOptions options(int rank, int size, std::string name,
                    std::chrono::milliseconds timeout = 2000ms) {
  NcclOptions o;
  o.rank = rank;
  o.size = size;
  o.name = std::move(name);
  o.device = rank;  // one device per rank, as NCCL wants
  o.timeout = timeout;
  return o;
}

TEST_CASE("nccl maps gt's dtypes and reduce ops to NCCL's values", "[collectives][nccl][unit]") {
  if (!nccl_built()) {
    CHECK_FALSE(nccl_data_type(at::kFloat).has_value());
    CHECK_FALSE(nccl_reduce_op(ReduceOp::Sum).has_value());
    return;
  }
  // ncclDataType_t and ncclRedOp_t values are NCCL's ABI: fixed since 2.x.
  const std::vector<std::pair<at::ScalarType, int>> types = {
      {at::kFloat, 7}, {at::kDouble, 8}, {at::kHalf, 6}, {at::kBFloat16, 9},
      {at::kInt, 2},   {at::kLong, 4},   {at::kBool, 1},  // bool moves as ncclUint8
  };
  for (const auto& [dtype, nccl] : types) {
    INFO(dtype);
    CHECK(nccl_data_type(dtype) == nccl);
  }
  for (at::ScalarType other : {at::kByte, at::kChar, at::kShort, at::kComplexFloat}) {
    INFO(other);
    CHECK_FALSE(nccl_data_type(other).has_value());
  }
  CHECK(nccl_reduce_op(ReduceOp::Sum) == 0);
  CHECK(nccl_reduce_op(ReduceOp::Product) == 1);
  CHECK(nccl_reduce_op(ReduceOp::Max) == 2);
  CHECK(nccl_reduce_op(ReduceOp::Min) == 3);
  CHECK(nccl_reduce_op(ReduceOp::Avg) == 4);
}

TEST_CASE("nccl loading names every library it tried", "[collectives][nccl][unit]") {
  if (!nccl_built()) {
    CHECK_THROWS_WITH(load_nccl(), Catch::Contains("built without NCCL headers"));
    CHECK_THROWS_AS(load_nccl_from({"libnccl.so.2"}, {"libcudart.so"}), Error);
    return;
  }
  SECTION("no such NCCL") {
    CHECK_THROWS_AS(
        load_nccl_from({"libgt-no-such-nccl.so.2", "libgt-no-such-nccl.so"}, {"libcudart.so"}),
        Error);
    CHECK_THROWS_WITH(
        load_nccl_from({"libgt-no-such-nccl.so.2", "libgt-no-such-nccl.so"}, {"libcudart.so"}),
        Catch::Contains("cannot load NCCL: tried libgt-no-such-nccl.so.2, libgt-no-such-nccl.so") &&
            Catch::Contains("libgt-no-such-nccl.so: cannot open shared object file") &&
            Catch::Contains("LD_LIBRARY_PATH"));
  }
  SECTION("a library that is not NCCL") {
    CHECK_THROWS_WITH(load_nccl_from({"libgt-no-such-nccl.so", "libm.so.6"}, {"libcudart.so"}),
                      Catch::Contains("libm.so.6 lacks ncclGetVersion, ncclGetUniqueId") &&
                          Catch::Contains("expected NCCL 2.14 or newer"));
  }
  SECTION("NCCL but no such CUDA runtime") {
    if (const std::string failure = load_failure(); !failure.empty()) {
      WARN("NCCL does not load here, so only its error is checked: " << failure);
      CHECK_THAT(failure, Catch::Contains("cannot load") && Catch::Contains("libnccl.so.2"));
      return;
    }
    CHECK_THROWS_WITH(load_nccl_from({"libnccl.so.2", "libnccl.so"}, {"libgt-no-such-cudart.so"}),
                      Catch::Contains("cannot load the CUDA runtime: tried "
                                      "libgt-no-such-cudart.so (libgt-no-such-cudart.so: "));
  }
  SECTION("the real names") {
    if (const std::string failure = load_failure(); !failure.empty()) {
      WARN("NCCL does not load here: " << failure);
      CHECK_THAT(failure, Catch::Contains("tried libnccl.so.2, libnccl.so"));
      return;
    }
    CHECK_THAT(load_nccl(), Catch::StartsWith("NCCL 2.") && Catch::Contains("CUDA runtime"));
    CHECK(load_nccl_from({"libnccl.so.2", "libnccl.so"},
                         {"libcudart.so.13", "libcudart.so.12", "libcudart.so"}) == load_nccl());
  }
}

TEST_CASE("nccl unique ids come from libnccl without a GPU", "[collectives][nccl][unit]") {
  if (const std::string failure = load_failure(); !failure.empty()) {
    WARN("NCCL does not load here, so only its error is checked: " << failure);
    CHECK_THROWS_WITH(nccl_unique_id(), Catch::Contains(failure));
    return;
  }
  const NcclUniqueId a = nccl_unique_id();
  const NcclUniqueId b = nccl_unique_id();
  CHECK(std::any_of(a.begin(), a.end(), [](char c) { return c != 0; }));
  CHECK(a != b);
}

TEST_CASE("nccl rendezvous hands rank 0's id to every rank", "[collectives][nccl][unit]") {
  InMemoryStore store;
  const int size = 3;
  // A real id where NCCL loads; the exchange itself does not care.
  NcclUniqueId made{};
  if (load_failure().empty()) {
    made = nccl_unique_id();
  } else {
    for (size_t i = 0; i < made.size(); ++i) made[i] = static_cast<char>(i * 7 + 1);
  }
  int made_calls = 0;
  std::vector<NcclUniqueId> got(size);
  const auto errors = on_threads(size, [&](int r) {
    got[static_cast<size_t>(r)] = nccl_rendezvous(store, options(r, size, "rv"), "", [&] {
      ++made_calls;  // rank 0's thread only
      return made;
    });
  });
  for (int r = 0; r < size; ++r) {
    INFO("rank " << r);
    if (errors[static_cast<size_t>(r)]) FAIL(what_of(errors[static_cast<size_t>(r)]));
    CHECK(got[static_cast<size_t>(r)] == made);
  }
  CHECK(made_calls == 1);
  const auto value = store.get("rv/nccl_id", 0ms);
  REQUIRE(value.has_value());
  CHECK(value->size() == 1 + made.size());
}

TEST_CASE("nccl rendezvous fails fast, naming the rank", "[collectives][nccl][unit]") {
  InMemoryStore store;
  const auto never = []() -> NcclUniqueId { throw std::logic_error("no id may be made"); };
  SECTION("a rank that cannot set up tells the others") {
    const auto start = Clock::now();
    const auto errors = on_threads(2, [&](int r) {
      nccl_rendezvous(store, options(r, 2, "fail", 5000ms), r == 1 ? "no GPU here" : "", never);
    });
    CHECK(Clock::now() - start < 4000ms);  // no one waited for the timeout
    REQUIRE(errors[0]);
    REQUIRE(errors[1]);
    CHECK_THAT(what_of(errors[0]),
               Catch::Contains("rank 1 could not create its communicator (communicator 'fail', "
                               "rank 0 of 2, cuda:0): no GPU here"));
    CHECK(what_of(errors[1]) == "no GPU here");
    CHECK_THROWS_AS(std::rethrow_exception(errors[0]), Error);
  }
  SECTION("a rank that never joins") {
    const auto start = Clock::now();
    CHECK_THROWS_AS(nccl_rendezvous(store, options(0, 3, "alone", 200ms), "", never), TimeoutError);
    CHECK(Clock::now() - start < 2000ms);
    CHECK_THROWS_WITH(nccl_rendezvous(store, options(0, 3, "alone2", 100ms), "", never),
                      Catch::Contains("ranks 1, 2 did not join within 100 ms"));
  }
  SECTION("rank 0 joins but publishes no id") {
    store.set("quiet/join/0", {});
    CHECK_THROWS_WITH(nccl_rendezvous(store, options(1, 2, "quiet", 200ms), "", never),
                      Catch::Contains("rank 0 did not publish NCCL's unique id within 200 ms"));
  }
  SECTION("rank 0 cannot make the id") {
    const auto errors = on_threads(2, [&](int r) {
      nccl_rendezvous(store, options(r, 2, "noid", 5000ms), "",
                      []() -> NcclUniqueId { throw Error("ncclGetUniqueId failed: boom"); });
    });
    REQUIRE(errors[0]);
    REQUIRE(errors[1]);
    CHECK(what_of(errors[0]) == "ncclGetUniqueId failed: boom");
    CHECK_THAT(what_of(errors[1]), Catch::Contains("rank 0 could not make NCCL's unique id") &&
                                       Catch::Contains("ncclGetUniqueId failed: boom"));
  }
}

TEST_CASE("nccl options are checked before anything reaches the store",
          "[collectives][nccl][unit]") {
  InMemoryStore store;
  auto bad = [&](NcclOptions o, const std::string& fragment) {
    INFO(fragment);
    CHECK_THROWS_AS(make_nccl_collectives(store, o), std::invalid_argument);
    CHECK_THROWS_WITH(make_nccl_collectives(store, o), Catch::Contains(fragment));
  };
  NcclOptions o = options(0, 2, "opts");
  o.rank = 2;
  bad(o, "rank 2 out of range: expected a rank in [0, 2)");
  o = options(0, 0, "opts");
  bad(o, "size 0 invalid");
  o = options(0, 2, "");
  bad(o, "empty communicator name");
  o = options(0, 2, "opts");
  o.device = -1;
  bad(o, "device -1 invalid");
  o = options(0, 2, "opts", 0ms);
  bad(o, "timeout 0 ms: expected a positive timeout");
  CHECK(store.wait({"opts/join/0"}, 0ms).size() == 1);  // nothing was published
  CHECK_THROWS_AS(nccl_communicator_factory(nullptr, 0, 1000ms), std::invalid_argument);
}

TEST_CASE("nccl communicators fail quickly with the reason where NCCL cannot run",
          "[collectives][nccl][unit]") {
  if (nccl_device_count() > 0) {
    WARN("a CUDA device is usable here: the [gpu] cases cover creation");
    return;
  }
  const std::string reason = expected_setup_failure();
  SECTION("two ranks") {
    InMemoryStore store;
    const auto start = Clock::now();
    const auto errors = on_threads(2, [&](int r) {
      NcclOptions o = options(r, 2, "nogpu", 5000ms);
      make_nccl_collectives(store, o);
    });
    CHECK(Clock::now() - start < 4000ms);  // bounded: nobody waited for the timeout
    for (int r = 0; r < 2; ++r) {
      INFO("rank " << r);
      REQUIRE(errors[static_cast<size_t>(r)]);
      const std::string what = what_of(errors[static_cast<size_t>(r)]);
      CHECK_THAT(what, Catch::Contains(reason));
      CHECK_THROWS_AS(std::rethrow_exception(errors[static_cast<size_t>(r)]), Error);
      CHECK_FALSE(is_timeout(errors[static_cast<size_t>(r)]));  // said why, did not wait
    }
  }
  SECTION("the provider keeps the group broken") {
    auto store = std::make_shared<InMemoryStore>();
    CommunicatorProvider provider(nccl_communicator_factory(store, 0, 2000ms));
    CHECK_THROWS_AS(provider.get({4}, 0), Error);
    const auto broken = provider.broken({4});
    REQUIRE(broken.has_value());
    CHECK_THAT(*broken, Catch::Contains(reason) && Catch::Contains("gt/comm/4"));
    CHECK_THROWS_AS(provider.get({4}, 0), TransportError);
    CHECK_THROWS_WITH(provider.get({4}, 0),
                      Catch::Contains("the communicator of workers [4] broke earlier") &&
                          Catch::Contains(reason));
    CHECK(provider.communicator_count() == 0);
  }
}

// ---- with GPUs ---------------------------------------------------------------

/// Whether `n` CUDA devices are usable by both LibTorch and NCCL; says why
/// not otherwise.
bool gpus_ready(int n) {
  if (!at::hasCUDA()) {
    WARN("skipped: this LibTorch has no CUDA");
    return false;
  }
  const int devices = std::min<int>(static_cast<int>(at::getNumGPUs()), nccl_device_count());
  if (devices < n) {
    WARN("skipped: needs " << n << " CUDA device(s), " << devices << " usable (" << load_failure()
                           << ")");
    return false;
  }
  return true;
}

at::Tensor on(int device, const at::Tensor& t) {
  return t.to(at::Device(at::kCUDA, static_cast<at::DeviceIndex>(device)));
}

/// Rank r's input: small integers, exact in every dtype and under every
/// reduction, different on each rank.
at::Tensor input(int rank, at::IntArrayRef shape, at::ScalarType dtype) {
  const int64_t n = c10::multiply_integers(shape);
  at::Tensor t = (at::arange(n, at::kLong) % 5 + rank + 1).reshape(shape);
  if (n > 1) t.view(-1)[1] = -(rank + 2);
  return t.to(dtype);
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
  const at::Tensor g = got.cpu();
  INFO("got " << g << ", want " << want);
  REQUIRE(g.scalar_type() == want.scalar_type());
  REQUIRE(g.sizes() == want.sizes());
  if (at::isFloatingType(want.scalar_type())) {
    CHECK(at::allclose(g.to(at::kDouble), want.to(at::kDouble), 1e-2, 1e-3, /*equal_nan=*/true));
  } else {
    CHECK(at::equal(g, want));
  }
}

constexpr ReduceOp kOps[] = {ReduceOp::Sum, ReduceOp::Avg, ReduceOp::Max, ReduceOp::Min,
                             ReduceOp::Product};
constexpr at::ScalarType kReduced[] = {at::kFloat,    at::kDouble, at::kHalf,
                                       at::kBFloat16, at::kInt,    at::kLong};

/// Creates `size` communicators on devices 0..size-1, one per thread, and
/// runs `fn(comm, rank)` on each; returns what each threw.
std::vector<std::exception_ptr> run_ranks(int size, const std::string& name,
                                          const std::function<void(Collectives&, int)>& fn,
                                          std::chrono::milliseconds timeout = 20000ms) {
  InMemoryStore store;
  return on_threads(size, [&](int r) {
    auto comm = make_nccl_collectives(store, options(r, size, name, timeout));
    fn(*comm, r);
  });
}

void require_success(const std::vector<std::exception_ptr>& errors) {
  for (size_t r = 0; r < errors.size(); ++r) {
    INFO("rank " << r);
    if (errors[r]) FAIL(what_of(errors[r]));
  }
}

TEST_CASE("nccl collectives on one GPU match LibTorch", "[collectives][nccl][gpu]") {
  if (!gpus_ready(1)) return;
  InMemoryStore store;
  auto comm = make_nccl_collectives(store, options(0, 1, "one"));
  REQUIRE(comm->rank() == 0);
  REQUIRE(comm->size() == 1);

  SECTION("all_reduce: every op and dtype, in place") {
    for (at::ScalarType dtype : kReduced) {
      for (ReduceOp op : kOps) {
        if (!comm->supports(Collective::AllReduce, dtype, op)) continue;
        INFO(dtype << " " << to_string(op));
        const at::Tensor x = input(0, {3, 4}, dtype);
        at::Tensor t = on(0, x);
        comm->all_reduce(t, op);
        check_equal(t, reduce_locally({x}, op));
      }
    }
  }
  SECTION("all_reduce of a non-contiguous view writes back; max keeps NaN") {
    at::Tensor base = on(0, input(0, {4, 3}, at::kFloat));
    at::Tensor view = base.t();
    comm->all_reduce(view, ReduceOp::Sum);
    check_equal(base, input(0, {4, 3}, at::kFloat));
    at::Tensor nan = on(0, at::tensor({1.0f, std::numeric_limits<float>::quiet_NaN(), 3.0f}));
    comm->all_reduce(nan, ReduceOp::Max);
    CHECK(std::isnan(nan.cpu()[1].item<float>()));
  }
  SECTION("all_gather, reduce_scatter, broadcast, barrier") {
    const at::Tensor x = input(0, {2, 3}, at::kFloat);
    check_equal(comm->all_gather(on(0, x), 0), x);
    check_equal(comm->all_gather(on(0, x).t(), 1), x.t().contiguous());
    const at::Tensor flags = at::tensor({true, false, true});
    check_equal(comm->all_gather(on(0, flags), 0), flags);
    check_equal(comm->reduce_scatter(on(0, x), 1, ReduceOp::Sum), x);
    at::Tensor b = on(0, x);
    comm->broadcast(b, 0);
    check_equal(b, x);
    comm->barrier();
    at::Tensor empty = on(0, at::empty({0, 3}));
    comm->all_reduce(empty, ReduceOp::Sum);
    CHECK(comm->all_gather(empty, 0).sizes() == at::IntArrayRef({0, 3}));
  }
  SECTION("tensors elsewhere are refused without breaking the communicator") {
    at::Tensor cpu = input(0, {2}, at::kFloat);
    CHECK_THROWS_AS(comm->all_reduce(cpu, ReduceOp::Sum), std::invalid_argument);
    CHECK_THROWS_WITH(comm->all_reduce(cpu, ReduceOp::Sum),
                      Catch::Contains("tensor on cpu: expected a CUDA tensor on cuda:0"));
    at::Tensor bools = on(0, at::tensor({true}));
    CHECK_THROWS_WITH(comm->all_reduce(bools, ReduceOp::Sum),
                      Catch::Contains("dtype bool not supported"));
    at::Tensor ok = on(0, input(0, {2}, at::kFloat));
    comm->all_reduce(ok, ReduceOp::Sum);  // still usable
    check_equal(ok, input(0, {2}, at::kFloat));
  }
}

TEST_CASE("nccl collectives on two GPUs match LibTorch", "[collectives][nccl][gpu]") {
  if (!gpus_ready(2)) return;
  SECTION("all_reduce: every op and dtype, NaN wins max and min") {
    std::vector<std::vector<at::Tensor>> got(2);
    require_success(run_ranks(2, "ar", [&](Collectives& comm, int r) {
      for (at::ScalarType dtype : kReduced) {
        for (ReduceOp op : kOps) {
          if (!comm.supports(Collective::AllReduce, dtype, op)) continue;
          at::Tensor t = on(r, input(r, {5, 3}, dtype));
          comm.all_reduce(t, op);
          got[static_cast<size_t>(r)].push_back(t.cpu());
        }
      }
      for (ReduceOp op : {ReduceOp::Max, ReduceOp::Min}) {
        at::Tensor t = on(r, at::tensor({1.0f, 2.0f}));
        if (r == 1) t[0] = std::numeric_limits<float>::quiet_NaN();
        comm.all_reduce(t, op);
        got[static_cast<size_t>(r)].push_back(t.cpu());
      }
    }));
    for (int r = 0; r < 2; ++r) {
      size_t i = 0;
      for (at::ScalarType dtype : kReduced) {
        for (ReduceOp op : kOps) {
          if (op == ReduceOp::Avg && !at::isFloatingType(dtype)) continue;
          INFO("rank " << r << " " << dtype << " " << to_string(op));
          check_equal(got[size_t(r)][i++],
                      reduce_locally({input(0, {5, 3}, dtype), input(1, {5, 3}, dtype)}, op));
        }
      }
      for (int k = 0; k < 2; ++k) {
        const at::Tensor t = got[size_t(r)][i++];
        CHECK(std::isnan(t[0].item<float>()));
        CHECK(t[1].item<float>() == 2.0f);
      }
    }
  }
  SECTION("uneven all_gather and reduce_scatter along any dim") {
    std::vector<std::vector<at::Tensor>> got(2);
    require_success(run_ranks(2, "ag", [&](Collectives& comm, int r) {
      auto& out = got[static_cast<size_t>(r)];
      // Rank 0 has 3 columns, rank 1 one; then rank 1 none at all.
      out.push_back(comm.all_gather(on(r, input(r, {2, r == 0 ? 3 : 1}, at::kFloat)), 1));
      out.push_back(comm.all_gather(on(r, input(r, {r == 0 ? 2 : 0, 2}, at::kLong)), 0));
      out.push_back(comm.all_gather(on(r, input(r, {4, 2}, at::kHalf)), -1));
      // 5 rows over 2 ranks: 3 and 2.
      out.push_back(comm.reduce_scatter(on(r, input(r, {5, 2}, at::kFloat)), 0, ReduceOp::Sum));
      out.push_back(comm.reduce_scatter(on(r, input(r, {2, 5}, at::kInt)), 1, ReduceOp::Max));
      out.push_back(comm.reduce_scatter(on(r, input(r, {4, 2}, at::kDouble)), 0, ReduceOp::Avg));
    }));
    for (int r = 0; r < 2; ++r) {
      INFO("rank " << r);
      const auto& out = got[size_t(r)];
      check_equal(out[0], at::cat({input(0, {2, 3}, at::kFloat), input(1, {2, 1}, at::kFloat)}, 1));
      check_equal(out[1], at::cat({input(0, {2, 2}, at::kLong), input(1, {0, 2}, at::kLong)}, 0));
      check_equal(out[2], at::cat({input(0, {4, 2}, at::kHalf), input(1, {4, 2}, at::kHalf)}, 1));
      const at::Tensor sum = reduce_locally(
          {input(0, {5, 2}, at::kFloat), input(1, {5, 2}, at::kFloat)}, ReduceOp::Sum);
      check_equal(out[3], r == 0 ? sum.narrow(0, 0, 3) : sum.narrow(0, 3, 2));
      const at::Tensor max =
          reduce_locally({input(0, {2, 5}, at::kInt), input(1, {2, 5}, at::kInt)}, ReduceOp::Max);
      check_equal(out[4], r == 0 ? max.narrow(1, 0, 3) : max.narrow(1, 3, 2));
      const at::Tensor avg = reduce_locally(
          {input(0, {4, 2}, at::kDouble), input(1, {4, 2}, at::kDouble)}, ReduceOp::Avg);
      check_equal(out[5], avg.narrow(0, 2 * r, 2));
    }
  }
  SECTION("broadcast from either root, send and recv, barrier") {
    std::vector<std::vector<at::Tensor>> got(2);
    require_success(run_ranks(2, "p2p", [&](Collectives& comm, int r) {
      auto& out = got[static_cast<size_t>(r)];
      for (int root = 0; root < 2; ++root) {
        at::Tensor t = on(r, input(r, {3, 2}, at::kBFloat16));
        comm.broadcast(t, root);
        out.push_back(t.cpu());
      }
      if (r == 0) {
        comm.send(on(0, input(0, {4}, at::kLong)), 1, 7);
        at::Tensor back = on(0, at::zeros({2, 2}, at::kFloat));
        comm.recv(back, 1, 8);
        out.push_back(back.cpu());
      } else {
        at::Tensor in = on(1, at::zeros({4}, at::kLong));
        comm.recv(in, 0, 7);
        out.push_back(in.cpu());
        comm.send(on(1, input(1, {2, 2}, at::kFloat)).t(), 0, 8);
      }
      comm.barrier();
    }));
    for (int r = 0; r < 2; ++r) {
      check_equal(got[size_t(r)][0], input(0, {3, 2}, at::kBFloat16));
      check_equal(got[size_t(r)][1], input(1, {3, 2}, at::kBFloat16));
    }
    check_equal(got[0][2], input(1, {2, 2}, at::kFloat).t().contiguous());
    check_equal(got[1][2], input(0, {4}, at::kLong));
  }
  SECTION("ranks that disagree fail on both sides and stay usable") {
    std::vector<std::vector<std::string>> messages(2);
    require_success(run_ranks(2, "disagree", [&](Collectives& comm, int r) {
      auto& m = messages[static_cast<size_t>(r)];
      auto expect_error = [&](const std::function<void()>& call) {
        try {
          call();
          m.push_back("no error");
        } catch (const Error& e) {
          m.push_back(e.what());
        }
      };
      expect_error([&] {
        at::Tensor t = on(r, input(r, {4}, r == 0 ? at::kFloat : at::kInt));
        comm.all_reduce(t, ReduceOp::Sum);
      });
      expect_error([&] {
        at::Tensor t = on(r, input(r, {4}, at::kFloat));
        comm.all_reduce(t, r == 0 ? ReduceOp::Sum : ReduceOp::Max);
      });
      expect_error([&] {
        if (r == 0) {
          comm.send(on(0, input(0, {2}, at::kFloat)), 1, 5);
        } else {
          at::Tensor t = on(1, at::zeros({2}));
          comm.recv(t, 0, 6);
        }
      });
      at::Tensor t = on(r, input(r, {4}, at::kFloat));
      comm.all_reduce(t, ReduceOp::Sum);  // still usable
      m.push_back(
          at::equal(t.cpu(), reduce_locally({input(0, {4}, at::kFloat), input(1, {4}, at::kFloat)},
                                            ReduceOp::Sum))
              ? "usable"
              : "wrong result");
    }));
    for (int r = 0; r < 2; ++r) {
      INFO("rank " << r);
      const auto& m = messages[size_t(r)];
      REQUIRE(m.size() == 4);
      CHECK_THAT(m[0], Catch::Contains("dtypes differ across ranks: rank 0 has float32 (4), "
                                       "rank 1 has int32 (4)"));
      CHECK_THAT(m[1], Catch::Contains("reduce ops differ across ranks: rank 0 passed sum, "
                                       "rank 1 passed max"));
      CHECK_THAT(m[2], Catch::Contains("tags differ"));
      CHECK(m[3] == "usable");
    }
  }
  SECTION("a rank that never calls makes its peer time out, then refuse") {
    std::promise<void> done;
    std::shared_future<void> finished = done.get_future().share();
    std::string first, second;
    bool timed_out = false;
    const auto errors = run_ranks(
        2, "silent",
        [&](Collectives& comm, int r) {
          if (r == 1) {
            finished.wait();  // keeps its communicator until rank 0 has given up
            return;
          }
          // Rank 1 waits for this, whatever happens here.
          struct Release {
            std::promise<void>& done;
            ~Release() { done.set_value(); }
          } release{done};
          at::Tensor t = on(0, input(0, {8}, at::kFloat));
          const auto start = Clock::now();
          try {
            comm.all_reduce(t, ReduceOp::Sum);
          } catch (const TimeoutError& e) {
            timed_out = Clock::now() - start < 5000ms;
            first = e.what();
          } catch (const Error& e) {
            first = e.what();
          }
          try {
            comm.barrier();
          } catch (const TransportError& e) {
            second = e.what();
          }
        },
        500ms);
    require_success(errors);
    CHECK(timed_out);
    CHECK_THAT(first, Catch::Contains("timed out after 500 ms") &&
                          Catch::Contains("rank 0 of 2, cuda:0, tensor float32 (8)"));
    CHECK_THAT(second, Catch::Contains("communicator unusable after an earlier failure"));
  }
}

}  // namespace
}  // namespace gt::worker::collectives::test
