#include <bit>
#include <sstream>

#include <catch2/catch.hpp>

#include <gt/gt.h>

#include "client/internal/api.h"
#include "client/internal/format.h"
#include "common/status.h"
#include "fake_dispatcher.h"

using namespace std::chrono_literals;
using gt::test::FakeDispatcher;
using gt::wire::Instr;
using gt::wire::InstrKind;

using Connected = gt::test::FakeSession;

TEST_CASE("creation checks shapes before touching the session", "[tensor][unit]") {
  REQUIRE(gt::client::session_if_started() == nullptr);
  CHECK_THROWS_WITH(gt::zeros({2, -1}), Catch::StartsWith("[client.zeros] zeros: ") &&
                                            Catch::Contains("(2, -1)"));
  CHECK_THROWS_WITH(gt::randn({2}, gt::kInt64),
                    Catch::StartsWith("[client.randn] randn: expected a floating dtype"));
  CHECK_THROWS_WITH(gt::arange(0, 10, 0), Catch::Contains("step must be nonzero"));
  CHECK_THROWS_WITH(gt::tensor(std::vector<float>(5), {2, 3}),
                    "[client.tensor] data has 5 elements but shape (2, 3) has 6");
  CHECK(gt::client::session_if_started() == nullptr);
}

TEST_CASE("tensor metadata is local and copies share the node", "[tensor][unit]") {
  Connected c;
  gt::Tensor undefined;
  CHECK_FALSE(undefined.defined());
  CHECK(undefined.id() == 0);
  CHECK_THROWS_WITH(undefined.shape(), Catch::Contains("undefined"));

  auto x = gt::zeros({4, 3});
  CHECK(x.defined());
  CHECK(x.id() == 1);
  CHECK(x.shape() == gt::Shape{4, 3});
  CHECK(x.size(0) == 4);
  CHECK(x.size(-1) == 3);
  CHECK_THROWS_AS(x.size(2), std::invalid_argument);
  CHECK(x.dim() == 2);
  CHECK(x.numel() == 12);
  CHECK(x.dtype() == gt::kFloat32);
  gt::Tensor y = x;
  CHECK(y.id() == x.id());
  CHECK(y.node() == x.node());
  CHECK(gt::ones({2}).id() == 2);  // ids are never reused
  CHECK(gt::full({1}, 3).id() == 3);
  CHECK(gt::randn({2}, gt::TensorOptions().requires_grad(true)).requires_grad());
}

TEST_CASE("ops infer shapes and dtypes and throw at the call site", "[tensor][unit]") {
  Connected c;
  auto a = gt::randn({4, 3});
  auto b = gt::randn({5, 2});
  CHECK_THROWS_WITH(a.matmul(b),
                    "[client.matmul] matmul: inner dims differ: lhs (4, 3), rhs (5, 2)");
  CHECK_THROWS_AS(gt::matmul(a, b), std::invalid_argument);
  CHECK_THROWS_WITH(a + b, Catch::StartsWith("[client.add] add: shapes cannot be broadcast"));
  CHECK_THROWS_WITH(a.reshape({5}), Catch::StartsWith("[client.reshape] reshape: "));
  CHECK_THROWS_WITH(a.transpose(0, 2), Catch::StartsWith("[client.transpose] transpose: dim 2"));
  CHECK(a.matmul(gt::randn({3, 2})).shape() == gt::Shape{4, 2});
  CHECK((a + gt::ones({3})).shape() == gt::Shape{4, 3});
  CHECK(a.sum().shape().empty());
  CHECK(a.sum({1}, true).shape() == gt::Shape{4, 1});
  CHECK(a.mean({0}).shape() == gt::Shape{3});
  CHECK(a.reshape({-1}).shape() == gt::Shape{12});
  CHECK(a.view({2, 6}).shape() == gt::Shape{2, 6});
  CHECK(a.transpose(0, 1).shape() == gt::Shape{3, 4});
  CHECK(a.slice(0, 1).shape() == gt::Shape{3, 3});
  CHECK(a.slice(1, 0, 3, 2).shape() == gt::Shape{4, 2});
  CHECK(a.exp().log().sqrt().relu().sigmoid().tanh().shape() == gt::Shape{4, 3});

  auto i = gt::arange(6);
  CHECK(i.dtype() == gt::kInt64);
  CHECK((i + 1).dtype() == gt::kInt64);
  CHECK((i + 1.0).dtype() == gt::kFloat32);
  CHECK((i / 2).dtype() == gt::kFloat32);
  CHECK((2 - i).dtype() == gt::kInt64);
  CHECK(i.sum().dtype() == gt::kInt64);
  CHECK_THROWS_WITH(i.mean(), Catch::StartsWith("[client.mean] mean: mean needs a floating"));
  CHECK(gt::arange(0.0, 6.0, 1.0).dtype() == gt::kFloat32);
  CHECK(gt::arange(0, 6, gt::kFloat64).dtype() == gt::kFloat64);
  CHECK(gt::arange(5, gt::kInt32).shape() == gt::Shape{5});
  CHECK(gt::full({2}, 1.5, gt::kFloat64).dtype() == gt::kFloat64);
  CHECK(gt::tensor({1, 2, 3}).dtype() == gt::kInt32);
  CHECK((-a).shape() == gt::Shape{4, 3});
}

TEST_CASE("ops reach the wire with the op table's attribute layout", "[tensor][unit]") {
  Connected c;
  auto a = gt::randn({2, 3});
  auto s = a.sum({1, 0}, true);
  auto sl = a.slice(1, -2);
  auto t = a.transpose(1, 0);
  auto p = a + 2;
  auto q = 0.5 - a;
  auto r = 3 / a;
  auto f = gt::full({2}, 7);
  auto ar = gt::arange(1, 7, 2);
  gt::manual_seed(0xFFFFFFFFFFFFFFFFull);
  auto ops = c.ops();
  REQUIRE(ops.size() == 10);
  CHECK(ops[0].op == gt::OpCode::Randn);
  CHECK(ops[0].ints == std::vector<int64_t>{2, 3});
  CHECK(ops[0].outputs == std::vector<uint64_t>{a.id()});
  CHECK(ops[1].op == gt::OpCode::Sum);
  CHECK(ops[1].ints == std::vector<int64_t>{1, 1, 0});
  CHECK(ops[1].inputs == std::vector<uint64_t>{a.id()});
  CHECK(ops[2].op == gt::OpCode::Slice);
  CHECK(ops[2].ints == std::vector<int64_t>{1, -2, INT64_MAX, 1});
  CHECK(ops[3].ints == std::vector<int64_t>{1, 0});
  CHECK(ops[4].op == gt::OpCode::AddScalar);
  CHECK(ops[4].ints == std::vector<int64_t>{2});
  CHECK(ops[4].floats.empty());
  CHECK(ops[5].op == gt::OpCode::RSubScalar);
  CHECK(ops[5].floats == std::vector<double>{0.5});
  CHECK(ops[6].op == gt::OpCode::RDivScalar);
  CHECK(ops[7].op == gt::OpCode::Full);
  CHECK(ops[7].floats == std::vector<double>{7});
  CHECK(ops[7].dtype == gt::kFloat32);
  CHECK(ops[8].op == gt::OpCode::Arange);
  CHECK(ops[8].floats == std::vector<double>{1, 7, 2});
  CHECK(ops[8].dtype == gt::kInt64);
  CHECK(ar.shape() == gt::Shape{3});
  CHECK(ops[9].op == gt::OpCode::ManualSeed);
  CHECK(ops[9].ints == std::vector<int64_t>{-1});
  CHECK(ops[9].outputs.empty());
}

TEST_CASE("in-place ops mutate the handle they are called on", "[tensor][unit]") {
  Connected c;
  auto x = gt::zeros({3}, gt::kInt64);
  auto y = gt::ones({3}, gt::kInt64);
  gt::Tensor& r = x.add_(y).mul_(2).sub_(1).zero_();
  CHECK(&r == &x);
  x += 1;
  x -= y;
  x *= y;
  CHECK_THROWS_WITH(x.add_(1.5), Catch::StartsWith("[client.add_scalar_] add_scalar_: result "
                                                    "dtype float32 can't be cast"));
  CHECK_THROWS_WITH(x.add_(gt::ones({2, 3}, gt::kInt64)),
                    Catch::StartsWith("[client.add_] add_: in-place result shape (2, 3)"));
  auto ops = c.ops();
  REQUIRE(ops.size() == 10);  // ones({2, 3}) above was issued before add_ failed
  CHECK(ops[2].op == gt::OpCode::AddInplace);
  CHECK(ops[2].inputs == std::vector<uint64_t>{x.id(), y.id()});
  CHECK(ops[2].outputs.empty());
  CHECK(ops[3].op == gt::OpCode::MulScalarInplace);
  CHECK(ops[3].ints == std::vector<int64_t>{2});
  CHECK(ops[4].op == gt::OpCode::SubScalarInplace);
  CHECK(ops[5].op == gt::OpCode::ZeroInplace);
  CHECK(ops[5].inputs == std::vector<uint64_t>{x.id()});
  CHECK(x.shape() == gt::Shape{3});
  CHECK(x.dtype() == gt::kInt64);
}

TEST_CASE("to_vector and item round-trip data through the cluster", "[tensor][unit]") {
  Connected c;
  auto f = gt::tensor({1.5f, -2.0f, 3.0f, 4.25f}, {2, 2});
  CHECK(f.shape() == gt::Shape{2, 2});
  CHECK(f.to_vector<float>() == std::vector<float>{1.5f, -2.0f, 3.0f, 4.25f});
  CHECK(f.to_vector<double>() == std::vector<double>{1.5, -2.0, 3.0, 4.25});
  CHECK(f.to_vector<int64_t>() == std::vector<int64_t>{1, -2, 3, 4});
  auto l = gt::tensor(std::vector<int64_t>{int64_t{1} << 40, 7});
  CHECK(l.to_vector<int64_t>() == std::vector<int64_t>{int64_t{1} << 40, 7});
  auto b = gt::tensor({true, false, true});
  CHECK(b.dtype() == gt::kBool);
  CHECK(b.to_vector<bool>() == std::vector<bool>{true, false, true});
  CHECK(b.to_vector<uint8_t>() == std::vector<uint8_t>{1, 0, 1});
  auto d = gt::tensor(std::vector<double>{2.5}, {});
  CHECK(d.item<double>() == 2.5);
  CHECK(d.item<int32_t>() == 2);
  CHECK_THROWS_WITH(f.item<float>(),
                    "[client.item] expected a tensor with one element, got shape (2, 2)");
  auto empty = gt::tensor(std::vector<float>{}, {0, 3});
  CHECK(empty.to_vector<float>().empty());
  auto z = gt::zeros({2});  // data the fake makes up from the op table
  CHECK(z.to_vector<float>() == std::vector<float>{0, 0});
}

TEST_CASE("to_vector decodes float16 and bfloat16 on the client", "[tensor][unit]") {
  Connected c;
  auto h = gt::zeros({3}, gt::kFloat16);
  const uint16_t half_bits[] = {gt::client::float_to_half(1.0f),
                                gt::client::float_to_half(-2.0f),
                                gt::client::float_to_half(0.5f)};
  std::vector<uint8_t> bytes(6);
  std::memcpy(bytes.data(), half_bits, 6);
  c.fake.set_fetch_data(h.id(), {gt::kFloat16, {3}, bytes});
  CHECK(h.to_vector<float>() == std::vector<float>{1.0f, -2.0f, 0.5f});
  CHECK(h.to_vector<int32_t>() == std::vector<int32_t>{1, -2, 0});

  auto bf = gt::zeros({}, gt::kBFloat16);
  const uint16_t bf_bits = gt::client::float_to_bfloat16(-3.5f);
  std::vector<uint8_t> bf_bytes(2);
  std::memcpy(bf_bytes.data(), &bf_bits, 2);
  c.fake.set_fetch_data(bf.id(), {gt::kBFloat16, {}, bf_bytes});
  CHECK(bf.item<float>() == -3.5f);
}

TEST_CASE("a fetch reply that disagrees with the op table is a protocol error",
          "[tensor][unit]") {
  Connected c;
  auto x = gt::zeros({2});
  c.fake.set_fetch_data(x.id(), {gt::kFloat32, {3}, std::vector<uint8_t>(12)});
  CHECK_THROWS_AS(x.to_vector<float>(), gt::ProtocolError);
  CHECK_THROWS_WITH(x.to_vector<float>(), Catch::Contains("(3) float32") &&
                                              Catch::Contains("expected (2) float32"));
}

TEST_CASE("printing a tensor fetches and formats it like LibTorch", "[tensor][unit]") {
  Connected c;
  std::ostringstream out;
  out << gt::tensor({1.5f, -2.25f, 3.0f, 0.125f, 4.0f, -1.0f}, {2, 3});
  CHECK(out.str() ==
        " 1.5000 -2.2500  3.0000\n"
        " 0.1250  4.0000 -1.0000\n"
        "[ Float32Type{2,3} ]");
  std::ostringstream u;
  u << gt::Tensor() << " " << gt::kBFloat16;
  CHECK(u.str() == "[ Tensor (undefined) ] bfloat16");
}

TEST_CASE("worker failures surface at the next sync point", "[tensor][unit]") {
  Connected c;
  auto x = gt::zeros({2});
  const auto f = gt::wire::failure(gt::Status::ExecutionFailed,
                                   "[worker 0] zeros failed: out of memory (inputs: )", 0,
                                   "zeros", x.id());
  c.fake.poison(x.id(), f);
  CHECK_THROWS_AS(x.to_vector<float>(), gt::RemoteError);
  c.fake.fail_next_sync({gt::wire::failure(gt::Status::ExecutionFailed,
                                           "[worker 0] exp failed: boom (inputs: (2) float32)",
                                           0, "exp", 9)});
  CHECK_THROWS_WITH(gt::synchronize(), Catch::Contains("[worker 0] exp failed: boom"));
  CHECK_NOTHROW(gt::synchronize());
}

TEST_CASE("dropped tensors are freed in a batch", "[tensor][unit]") {
  Connected c;
  uint64_t id_a = 0, id_b = 0;
  {
    auto a = gt::zeros({2});
    auto b = a + 1;
    id_a = a.id();
    id_b = b.id();
  }
  gt::synchronize();
  std::vector<uint64_t> freed;
  for (const auto& in : c.fake.instructions()) {
    if (in.kind == InstrKind::Free) freed.insert(freed.end(), in.inputs.begin(), in.inputs.end());
  }
  std::sort(freed.begin(), freed.end());
  CHECK(freed == std::vector<uint64_t>{id_a, id_b});
}

TEST_CASE("shutdown ends the session and is idempotent", "[tensor][session][unit]") {
  gt::Tensor old;
  {
    Connected c;
    old = gt::zeros({2});
    CHECK_THROWS_WITH(gt::connect("tcp://127.0.0.1:1"), Catch::Contains("already open"));
    CHECK_NOTHROW(gt::connect(c.fake.endpoint()));  // the same endpoint: no-op
    gt::shutdown();
    CHECK(c.fake.wait_for([&] { return c.fake.got_bye_locked(); }, 2s));
    gt::shutdown();
    CHECK(gt::client::session_if_started() == nullptr);
    CHECK_NOTHROW(gt::synchronize());  // no session: nothing to wait for
    CHECK_THROWS_AS(old + 1, gt::Error);
    CHECK_THROWS_AS(old.to_vector<float>(), gt::Error);
  }
  old = gt::Tensor();  // releasing after shutdown is a no-op
}

TEST_CASE("operands from different sessions are rejected", "[tensor][session][unit]") {
  gt::Tensor old;
  {
    Connected c;
    old = gt::zeros({2});
  }
  Connected c;
  CHECK_THROWS_WITH(old + gt::zeros({2}), Catch::Contains("different sessions"));
}
