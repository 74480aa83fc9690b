// gt::signal::Context and the per-thread scope stacks behind it (Note [lazy
// signal scopes] in client/internal/scope.h).

#include <gt/signal.h>

#include <stdexcept>
#include <utility>

#include "client/internal/scope.h"
#include "common/check.h"

namespace gt {
namespace client {
namespace {

thread_local ScopeRef t_scope;

// Long names are cut in messages; the length is given in full.
std::string shorten_name(const std::string& name) {
  constexpr size_t kShown = 64;
  return name.size() <= kShown ? name : name.substr(0, kShown) + "...";
}

wire::Instr scope_instr(wire::ScopeAction action, std::string name) {
  wire::Instr in;
  in.kind = wire::InstrKind::Scope;
  in.ints = {static_cast<int64_t>(action)};
  in.name = std::move(name);
  return in;
}

}  // namespace

const ScopeRef& current_scope() noexcept { return t_scope; }

ScopeRef exchange_current_scope(ScopeRef scope) noexcept {
  return std::exchange(t_scope, std::move(scope));
}

const ScopeRef& BackwardScopes::map(const ScopeRef& forward) {
  static const ScopeRef kEmpty;
  if (!forward) return kEmpty;
  if (auto it = mapped_.find(forward.get()); it != mapped_.end()) return it->second;
  // The frames below the nearest mapped ancestor, innermost first, then
  // mapped outermost first so each one's parent is ready. Iterative: the
  // depth of a stack is the user's to choose.
  std::vector<ScopeRef> unmapped;
  ScopeRef mapped_parent;
  for (ScopeRef f = forward; f; f = f->parent) {
    if (auto it = mapped_.find(f.get()); it != mapped_.end()) {
      mapped_parent = it->second;
      break;
    }
    unmapped.push_back(f);
  }
  for (auto it = unmapped.rbegin(); it != unmapped.rend(); ++it) {
    const ScopeFrame& f = **it;
    auto mapped = std::make_shared<const ScopeFrame>(
        ScopeFrame{f.name, true, std::move(mapped_parent), f.depth});
    mapped_parent = mapped_.emplace(&f, std::move(mapped)).first->second;
  }
  return mapped_.find(forward.get())->second;
}

void append_scope_transition(const ScopeFrame* from, const ScopeFrame* to,
                             std::vector<wire::Instr>& out) {
  if (from == to) return;
  // Walk the deeper stack up to the other's depth, then both up together
  // until they meet: the common ancestor (null: the empty stack).
  const ScopeFrame* a = from;
  const ScopeFrame* b = to;
  size_t exits = 0;
  std::vector<const ScopeFrame*> enters;  // innermost first
  auto depth = [](const ScopeFrame* f) { return f ? f->depth : size_t{0}; };
  while (depth(a) > depth(b)) {
    a = a->parent.get();
    ++exits;
  }
  while (depth(b) > depth(a)) {
    enters.push_back(b);
    b = b->parent.get();
  }
  while (a != b) {
    a = a->parent.get();
    ++exits;
    enters.push_back(b);
    b = b->parent.get();
  }
  out.reserve(out.size() + exits + enters.size());
  for (size_t i = 0; i < exits; ++i) out.push_back(scope_instr(wire::ScopeAction::Exit, {}));
  for (auto it = enters.rbegin(); it != enters.rend(); ++it) {
    const ScopeFrame* f = *it;
    out.push_back(scope_instr(
        f->backward ? wire::ScopeAction::EnterBackward : wire::ScopeAction::Enter, f->name));
  }
}

}  // namespace client

namespace signal {

Context::Context(std::string name) {
  GT_CHECK(!name.empty(), "[client.signal] a signal name must be 1 to ", wire::kMaxSignalName,
           " bytes, got an empty name");
  GT_CHECK(name.size() <= wire::kMaxSignalName, "[client.signal] signal name '",
           client::shorten_name(name), "' is ", name.size(), " bytes: expected at most ",
           wire::kMaxSignalName);
  const client::ScopeRef& parent = client::current_scope();
  const size_t depth = parent ? parent->depth + 1 : 1;
  frame_ = std::make_shared<const client::ScopeFrame>(
      client::ScopeFrame{std::move(name), false, parent, depth});
  client::exchange_current_scope(frame_);
}

Context::~Context() { client::exchange_current_scope(frame_->parent); }

const std::string& Context::name() const { return frame_->name; }

std::string current() {
  const client::ScopeRef& s = client::current_scope();
  return s ? s->name : std::string();
}

}  // namespace signal
}  // namespace gt
