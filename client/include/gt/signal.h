#pragma once
// Signal scopes: name a part of a program so that the YAML signal config
// (docs/config.md, gt::set_config in <gt/config.h>) can say where the tensors
// created and computed in it live, which entry their gradients follow, and
// whether the part is one compile unit.
//
//   {
//     gt::signal::Context forward("forward");
//     loss = model(x);                 // ops issued in scope "forward"
//   }
//   loss.backward();                   // their gradients: in forward's `backward` entry
//
// Scopes are per thread and nest: an op is issued in the scopes open on its
// thread at that moment, innermost last. Autograd issues the gradient ops of
// an op in the backward counterpart of the op's scopes, whatever scope
// backward() is called in; ops issued outside any scope get gradients
// outside any scope too.

#include <memory>
#include <string>

#include <gt/export.h>

namespace gt {

namespace client {
struct ScopeFrame;
}

namespace signal {

/// An RAII signal scope: from construction to destruction, ops issued on this
/// thread are in scope `name` (nested in the scopes that were open on the
/// thread when it was constructed).
///
/// Lifetime: pinned (no copy or move); destroy it on the thread that built it,
/// innermost first, as a plain local variable does. Entering and leaving cost
/// no message: the stream is told about a scope only when an op is issued in
/// it (Note [lazy signal scopes] in client/internal/scope.h).
///
/// Thread-safety: each thread has its own stack of scopes; threads that issue
/// ops concurrently each get their own scopes.
///
/// Errors: an empty name, or one longer than 256 bytes (the protocol's
/// limit), throws std::invalid_argument naming the name and the limit. Names
/// that are not identifiers are allowed but match no config entry.
class GT_API Context {
 public:
  explicit Context(std::string name);
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;
  Context(Context&&) = delete;
  Context& operator=(Context&&) = delete;

  /// The signal name.
  const std::string& name() const;

 private:
  std::shared_ptr<const client::ScopeFrame> frame_;
};

/// The name of the innermost scope open on this thread, or "" outside any.
/// While autograd issues gradient ops, the scope of the op being
/// differentiated.
GT_API std::string current();

}  // namespace signal
}  // namespace gt
