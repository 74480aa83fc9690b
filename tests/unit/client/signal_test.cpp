// Signal scopes and session configs as the dispatcher sees them: the
// instruction stream a FakeDispatcher records.

#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include <catch2/catch.hpp>

#include <gt/gt.h>

#include "client/internal/scope.h"
#include "common/config.h"
#include "common/status.h"
#include "fake_dispatcher.h"

using gt::wire::Instr;
using gt::wire::InstrKind;
using gt::wire::ScopeAction;

using Connected = gt::test::FakeSession;

static_assert(!std::is_copy_constructible_v<gt::signal::Context>);
static_assert(!std::is_move_constructible_v<gt::signal::Context>);
static_assert(!std::is_copy_assignable_v<gt::signal::Context>);

namespace {

// A stack as the dispatcher rebuilds it: outermost first; backward frames as
// "name'".
using Stack = std::vector<std::string>;

bool is_scope(const Instr& in) { return in.kind == InstrKind::Scope; }

// Replays a stream's Scope instructions: the stack each op was issued in, by
// its output id. Fails the test on an Exit from the empty stack.
std::map<uint64_t, Stack> op_stacks(const std::vector<Instr>& stream) {
  std::map<uint64_t, Stack> out;
  Stack stack;
  for (const auto& in : stream) {
    if (is_scope(in)) {
      REQUIRE(in.ints.size() == 1);
      REQUIRE(in.outputs.empty());
      REQUIRE(in.inputs.empty());
      switch (static_cast<ScopeAction>(in.ints[0])) {
        case ScopeAction::Exit:
          REQUIRE_FALSE(stack.empty());
          stack.pop_back();
          break;
        case ScopeAction::Enter:
          stack.push_back(in.name);
          break;
        case ScopeAction::EnterBackward:
          stack.push_back(in.name + "'");
          break;
      }
    } else if (in.kind == InstrKind::Op && !in.outputs.empty()) {
      out[in.outputs[0]] = stack;
    }
  }
  return out;
}

// "enter NAME", "backward NAME", "exit", "op", "free", "fetch", "sync",
// "configure": one per instruction.
std::vector<std::string> kinds(const std::vector<Instr>& stream) {
  std::vector<std::string> out;
  for (const auto& in : stream) {
    switch (in.kind) {
      case InstrKind::Scope: {
        const auto action = static_cast<ScopeAction>(in.ints.at(0));
        out.push_back(action == ScopeAction::Exit    ? "exit"
                      : action == ScopeAction::Enter ? "enter " + in.name
                                                     : "backward " + in.name);
        break;
      }
      case InstrKind::Op:
        out.push_back("op");
        break;
      case InstrKind::Free:
        out.push_back("free");
        break;
      case InstrKind::Fetch:
        out.push_back("fetch");
        break;
      case InstrKind::Sync:
        out.push_back("sync");
        break;
      case InstrKind::Configure:
        out.push_back("configure");
        break;
      default:
        out.push_back("other");
    }
  }
  return out;
}

std::vector<Instr> stream_after_sync(Connected& c) {
  gt::synchronize();
  return c.fake.instructions();
}

size_t count_configures(const std::vector<Instr>& stream) {
  size_t n = 0;
  for (const auto& in : stream) n += in.kind == InstrKind::Configure;
  return n;
}

}  // namespace

TEST_CASE("signal context brackets the ops issued in it", "[signal][unit]") {
  Connected c;
  gt::Tensor x, y;
  {
    gt::signal::Context fwd("forward");
    x = gt::zeros({2});
    y = x + 1;
  }
  auto z = gt::ones({2});
  const auto stream = stream_after_sync(c);
  CHECK(kinds(stream) ==
        std::vector<std::string>{"enter forward", "op", "op", "exit", "op", "sync"});
  const auto stacks = op_stacks(stream);
  CHECK(stacks.at(x.id()) == Stack{"forward"});
  CHECK(stacks.at(y.id()) == Stack{"forward"});
  CHECK(stacks.at(z.id()).empty());
}

TEST_CASE("signal contexts nest and leave each level", "[signal][unit]") {
  Connected c;
  gt::Tensor a, b, d, e;
  {
    gt::signal::Context outer("outer");
    a = gt::zeros({2});
    {
      gt::signal::Context inner("inner");
      CHECK(gt::signal::current() == "inner");
      b = a * 2;
    }
    d = a - 1;
    {
      gt::signal::Context inner("inner");  // a new scope of the same name
      e = a * 3;
    }
  }
  const auto stream = stream_after_sync(c);
  CHECK(kinds(stream) == std::vector<std::string>{"enter outer", "op", "enter inner", "op",
                                                  "exit", "op", "enter inner", "op", "sync"});
  const auto stacks = op_stacks(stream);
  CHECK(stacks.at(a.id()) == Stack{"outer"});
  CHECK(stacks.at(b.id()) == (Stack{"outer", "inner"}));
  CHECK(stacks.at(d.id()) == Stack{"outer"});
  CHECK(stacks.at(e.id()) == (Stack{"outer", "inner"}));
}

TEST_CASE("signal context without ops sends nothing", "[signal][unit]") {
  Connected c;
  {
    gt::signal::Context empty("empty");
    gt::signal::Context nested("nested");
  }
  auto x = gt::zeros({1});
  {
    gt::signal::Context after("after");
  }
  const auto stream = stream_after_sync(c);
  CHECK(kinds(stream) == std::vector<std::string>{"op", "sync"});
}

TEST_CASE("signal current names the innermost scope of this thread", "[signal][unit]") {
  CHECK(gt::signal::current().empty());
  {
    gt::signal::Context a("a");
    CHECK(gt::signal::current() == "a");
    CHECK(a.name() == "a");
    {
      gt::signal::Context b("b");
      CHECK(gt::signal::current() == "b");
      std::string seen_by_other = "unset";
      std::thread([&] { seen_by_other = gt::signal::current(); }).join();
      CHECK(seen_by_other.empty());  // scopes are per thread
    }
    CHECK(gt::signal::current() == "a");
  }
  CHECK(gt::signal::current().empty());
}

TEST_CASE("signal context rejects empty and over-long names", "[signal][unit]") {
  CHECK_THROWS_AS(gt::signal::Context(""), std::invalid_argument);
  CHECK_THROWS_WITH(gt::signal::Context(""), Catch::Contains("empty name") &&
                                                 Catch::Contains("1 to 256 bytes"));
  const std::string too_long(257, 'x');
  CHECK_THROWS_AS(gt::signal::Context(too_long), std::invalid_argument);
  CHECK_THROWS_WITH(gt::signal::Context(too_long),
                    Catch::StartsWith("[client.signal] signal name 'xxxx") &&
                        Catch::Contains("is 257 bytes: expected at most 256"));
  CHECK(gt::signal::current().empty());  // a refused scope is not entered
  gt::signal::Context longest(std::string(256, 'y'));
  CHECK(gt::signal::current().size() == 256);
}

TEST_CASE("signal scopes follow each thread's own stack", "[signal][unit]") {
  Connected c;
  constexpr int kOpsPerThread = 20;
  // The threads take turns, so their ops interleave in the stream.
  std::mutex mutex;
  std::condition_variable cv;
  int turn = 0;
  std::vector<gt::Tensor> made[2];
  auto run = [&](int me) {
    gt::signal::Context outer(me == 0 ? "left" : "right");
    std::optional<gt::signal::Context> inner;
    if (me == 1) inner.emplace("inner");
    for (int i = 0; i < kOpsPerThread; ++i) {
      std::unique_lock lock(mutex);
      cv.wait(lock, [&] { return turn % 2 == me; });
      made[me].push_back(gt::full({1}, i));
      ++turn;
      cv.notify_all();
    }
  };
  std::thread left(run, 0), right(run, 1);
  left.join();
  right.join();
  auto unscoped = gt::zeros({1});
  const auto stream = stream_after_sync(c);
  const auto stacks = op_stacks(stream);
  for (const auto& t : made[0]) CHECK(stacks.at(t.id()) == Stack{"left"});
  for (const auto& t : made[1]) CHECK(stacks.at(t.id()) == (Stack{"right", "inner"}));
  CHECK(stacks.at(unscoped.id()).empty());
  // Every switch of thread moved the stream: left -> right/inner is 1 exit
  // and 2 enters, back is 2 exits and 1 enter.
  size_t scope_instrs = 0;
  for (const auto& in : stream) scope_instrs += is_scope(in);
  CHECK(scope_instrs == 1 + 3 * (2 * kOpsPerThread - 1) + 2);
}

TEST_CASE("signal scopes leave frees, fetches and syncs unwrapped", "[signal][unit]") {
  Connected c;
  auto outside = gt::zeros({2});
  {
    gt::signal::Context s("s");
    auto inside = gt::ones({2});
    outside = gt::Tensor();     // its Free is queued in the scope
    inside.to_vector<float>();  // a fetch in the scope
    gt::synchronize();          // a sync in the scope
  }                             // inside's Free is queued out of it
  gt::synchronize();            // out of the scope, no op since
  auto after = gt::zeros({1});
  const auto stream = stream_after_sync(c);
  // The Frees ride at the end of the batch a sync point seals.
  CHECK(kinds(stream) == std::vector<std::string>{"op", "enter s", "op", "fetch", "free", "sync",
                                                  "sync", "free", "exit", "op", "sync"});
}

TEST_CASE("backward issues gradients in the backward scopes of the forward ops",
          "[signal][autograd][unit]") {
  Connected c;
  auto a = gt::randn({3}, gt::TensorOptions().requires_grad(true));
  gt::Tensor b, e;
  {
    gt::signal::Context fwd("fwd");
    b = a * 2;
    gt::signal::Context inner("inner");
    e = b.exp();
  }
  auto loss = e.sum();  // unscoped
  {
    gt::signal::Context user("user");  // backward's own scope does not matter
    loss.backward();
    CHECK(gt::signal::current() == "user");  // restored
  }
  const auto stream = stream_after_sync(c);
  const auto stacks = op_stacks(stream);
  // Every op after the forward pass is a gradient op.
  bool saw_unscoped = false, saw_exp_grad = false;
  for (const auto& in : stream) {
    if (in.kind != InstrKind::Op || in.outputs.empty() || in.outputs[0] <= loss.id()) continue;
    const Stack& stack = stacks.at(in.outputs[0]);
    for (const auto& frame : stack) CHECK(frame.back() == '\'');  // backward frames only
    saw_unscoped |= stack.empty();  // the seed and SumBackward
    for (auto input : in.inputs) {
      if (input == e.id()) {  // ExpBackward multiplies by the saved output
        CHECK(stack == (Stack{"fwd'", "inner'"}));
        saw_exp_grad = true;
      }
    }
  }
  CHECK(saw_unscoped);
  CHECK(saw_exp_grad);
  // a's gradient comes out of MulBackward, issued in fwd.
  REQUIRE(a.grad().defined());
  CHECK(stacks.at(a.grad().id()) == Stack{"fwd'"});
  // The forward scopes are never entered by backward.
  size_t forward_enters = 0;
  for (const auto& in : stream) {
    forward_enters += is_scope(in) && in.ints[0] == static_cast<int64_t>(ScopeAction::Enter);
  }
  CHECK(forward_enters == 2);  // fwd and inner, once each, in the forward pass
}

TEST_CASE("backward of unscoped ops sends no scope", "[signal][autograd][unit]") {
  Connected c;
  auto w = gt::randn({2, 2}, gt::TensorOptions().requires_grad(true));
  auto loss = (w * w).relu().sum();
  {
    gt::signal::Context user("user");
    loss.backward();
  }
  const auto stream = stream_after_sync(c);
  for (const auto& in : stream) CHECK_FALSE(is_scope(in));
  CHECK(w.grad().defined());
}

TEST_CASE("backward scopes map each chain once and share prefixes", "[signal][autograd][unit]") {
  using gt::client::ScopeFrame;
  using gt::client::ScopeRef;
  auto outer = std::make_shared<const ScopeFrame>(ScopeFrame{"outer", false, nullptr, 1});
  auto inner = std::make_shared<const ScopeFrame>(ScopeFrame{"inner", false, outer, 2});
  auto other = std::make_shared<const ScopeFrame>(ScopeFrame{"other", false, outer, 2});
  gt::client::BackwardScopes scopes;
  CHECK(scopes.map(nullptr) == nullptr);
  const ScopeRef bw_inner = scopes.map(inner);
  REQUIRE(bw_inner);
  CHECK(bw_inner->name == "inner");
  CHECK(bw_inner->backward);
  CHECK(bw_inner->depth == 2);
  REQUIRE(bw_inner->parent);
  CHECK(bw_inner->parent->name == "outer");
  CHECK(bw_inner->parent->backward);
  CHECK(bw_inner->parent->parent == nullptr);
  CHECK(scopes.map(inner) == bw_inner);               // cached
  CHECK(scopes.map(outer) == bw_inner->parent);       // the prefix is shared
  CHECK(scopes.map(other)->parent == bw_inner->parent);
  CHECK_FALSE(inner->backward);                       // the forward chain is untouched
}

TEST_CASE("set_config sends the YAML text in a Configure between syncs", "[signal][config][unit]") {
  Connected c;
  const std::string yaml = "forward:\n  shard: {axis: 0}\n  backward: grads\ngrads: {}\n";
  const gt::Config config = gt::parse_config(yaml, "mine.yaml");
  CHECK(config.text == yaml);
  auto x = gt::zeros({2});
  gt::set_config(config);
  const auto stream = c.fake.instructions();
  CHECK(kinds(stream) == std::vector<std::string>{"op", "sync", "configure", "sync"});
  CHECK(stream[2].name == yaml);
}

TEST_CASE("set_config writes a config built in code as YAML", "[signal][config][unit]") {
  Connected c;
  gt::Config config;
  config.source = "built in code";
  gt::SignalConfig yes;  // an identifier YAML would read as a bool unquoted
  yes.name = "yes";
  yes.shard = gt::ShardSpec{};
  yes.shard->axis = -1;
  yes.shard->workers = {0};
  yes.backward = "grads";
  yes.compile = true;
  config.signals["yes"] = yes;
  gt::SignalConfig grads;
  grads.name = "grads";
  grads.shard = gt::ShardSpec{};
  grads.shard->replicated = true;
  config.signals["grads"] = grads;
  config.signals["plain"] = gt::SignalConfig{};
  gt::set_config(config);

  const auto stream = c.fake.instructions();
  REQUIRE(count_configures(stream) == 1);
  const gt::Config sent = gt::parse_config(stream[1].name);
  REQUIRE(sent.signals.size() == 3);
  const gt::SignalConfig* s = sent.find("yes");
  REQUIRE(s);
  REQUIRE(s->shard);
  CHECK(s->shard->axis == -1);
  CHECK(s->shard->workers == std::vector<int>{0});
  CHECK_FALSE(s->shard->replicated);
  CHECK(s->backward == "grads");
  CHECK(s->compile);
  REQUIRE(sent.find("grads"));
  CHECK(sent.find("grads")->shard->replicated);
  CHECK(sent.find("grads")->shard->all_workers());
  REQUIRE(sent.find("plain"));
  CHECK_FALSE(sent.find("plain")->shard);

  // No signals at all: an empty mapping, which the dispatcher accepts.
  gt::set_config(gt::Config{});
  const auto after = c.fake.instructions();
  REQUIRE(count_configures(after) == 2);
  REQUIRE(after[after.size() - 2].kind == InstrKind::Configure);  // then its Sync
  CHECK(gt::parse_config(after[after.size() - 2].name).signals.empty());
}

TEST_CASE("set_config throws the dispatcher's refusal as a ConfigError",
          "[signal][config][unit]") {
  Connected c;
  // The fake has one worker: worker 1 is out of range there.
  const gt::Config config =
      gt::parse_config("forward:\n  shard: {axis: 0, workers: [0, 1]}\n", "two.yaml");
  try {
    gt::set_config(config);
    FAIL("set_config should throw");
  } catch (const gt::ConfigError& e) {
    CHECK(e.file() == "two.yaml");
    CHECK_THAT(std::string(e.what()), Catch::Contains("config refused") &&
                                          Catch::Contains("worker 1 is out of range"));
  }
  CHECK(count_configures(c.fake.instructions()) == 1);
  gt::synchronize();  // the refusal was reported once
}

TEST_CASE("set_config checks the text before sending it", "[signal][config][unit]") {
  Connected c;
  gt::Config bad;
  bad.source = "mine.yaml";
  bad.text = "forward: {shard: {axis: zero}}\n";
  try {
    gt::set_config(bad);
    FAIL("set_config should throw");
  } catch (const gt::ConfigError& e) {
    CHECK(e.file() == "mine.yaml");
    CHECK(e.key() == "forward.shard.axis");
  }

  gt::Config huge = gt::parse_config("forward: {}\n");
  huge.text += "#" + std::string(gt::wire::kMaxConfigText, 'x') + "\n";
  CHECK_THROWS_AS(gt::set_config(huge), std::invalid_argument);
  CHECK_THROWS_WITH(gt::set_config(huge), Catch::Contains("expected at most 1048576 (1 MiB)"));

  gt::Config bad_name;  // built in code: the structural checks run here
  bad_name.signals["not a name"] = gt::SignalConfig{};
  CHECK_THROWS_AS(gt::set_config(bad_name), gt::ConfigError);

  CHECK(count_configures(stream_after_sync(c)) == 0);
}

TEST_CASE("set_config reports earlier failures as themselves and sends nothing",
          "[signal][config][unit]") {
  Connected c;
  auto x = gt::zeros({2});
  c.fake.fail_next_sync({gt::wire::failure(gt::Status::ExecutionFailed, "[worker 0] zeros failed",
                                           0, "zeros", x.id())});
  CHECK_THROWS_AS(gt::set_config(gt::parse_config("forward: {}\n")), gt::RemoteError);
  CHECK(count_configures(stream_after_sync(c)) == 0);
}
