#pragma once
// Signal scopes inside the client: the per-thread stack of
// gt::signal::Context frames, the Scope instructions that move the
// instruction stream from one stack to another, and the backward stacks that
// autograd issues gradient ops under.
//
// Note [lazy signal scopes]
// A Context does not write to the stream. It pushes a frame on its thread's
// stack, a chain of immutable ScopeFrames linked to their parents and shared
// by shared_ptr, so a stack is one pointer and entering or leaving a scope
// never locks or allocates more than the frame. The stream has a stack of
// its own: the frame the dispatcher was last told about, kept by the
// BatchQueue under its mutex. Every Op instruction is queued together with
// its thread's frame (Session::issue -> BatchQueue::push(instr, scope), the
// one place ops enter the stream); when that frame is not the stream's, the
// queue first appends Scope Exit instructions up to the two stacks' common
// ancestor and Scope Enter/EnterBackward instructions down to the thread's
// frame. So:
//   - the common case costs one pointer compare per op;
//   - a scope in which no op was issued costs nothing on the wire;
//   - threads with different stacks interleave correctly, since the compare
//     and the appends happen under the queue's lock in stream order;
//   - Free, Fetch, Sync and Configure are scope-neutral: they are queued
//     without a frame, whatever stack the stream is in.
// Frames are compared by identity, not by name: leaving a scope and entering
// a new one of the same name (the next loop iteration) shows as Exit then
// Enter, which the dispatcher needs to close a compile unit. The stream holds
// a reference to its frame, so a frame's address cannot be reused by a new
// frame while the stream still compares against it.

#include <cstddef>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include <gt/export.h>

#include "common/wire.h"

namespace gt::client {

/// One level of a signal-scope stack. Immutable once built; shared by the
/// Context that pushed it, the frames nested in it, the autograd records of
/// ops issued in it and the stream while it is in it.
struct ScopeFrame {
  std::string name;
  /// Entered as the `backward` entry of `name` (autograd's gradient ops).
  bool backward = false;
  /// The enclosing frame; null at the outermost level.
  std::shared_ptr<const ScopeFrame> parent;
  /// 1 for an outermost frame: how many frames the chain has.
  size_t depth = 1;
};

/// A whole stack, named by its innermost frame; null is the empty stack.
using ScopeRef = std::shared_ptr<const ScopeFrame>;

/// The calling thread's stack.
GT_API const ScopeRef& current_scope() noexcept;

/// Replaces the calling thread's stack and returns the previous one.
GT_API ScopeRef exchange_current_scope(ScopeRef scope) noexcept;

/// Sets the calling thread's stack for its lifetime (autograd's backward
/// frames), then restores the previous one. Pinned; never throws.
class ScopeOverride {
 public:
  explicit ScopeOverride(ScopeRef scope) noexcept
      : previous_(exchange_current_scope(std::move(scope))) {}
  ~ScopeOverride() { exchange_current_scope(std::move(previous_)); }
  ScopeOverride(const ScopeOverride&) = delete;
  ScopeOverride& operator=(const ScopeOverride&) = delete;

 private:
  ScopeRef previous_;
};

/// Maps forward stacks to their backward stacks (every frame of the chain
/// marked backward, names kept) for one backward pass. Chains are built once
/// per distinct frame and share their mapped prefixes, so a pass allocates
/// one frame per forward frame it meets, not per node. The forward frames
/// must outlive the map (the pass's GradFns hold them). Not thread-safe: one
/// per backward call.
class GT_API BackwardScopes {
 public:
  /// The backward stack of `forward`; null (the empty stack) for null.
  const ScopeRef& map(const ScopeRef& forward);

 private:
  std::unordered_map<const ScopeFrame*, ScopeRef> mapped_;
};

/// Appends to `out` the Scope instructions that take a stream whose stack is
/// `from` to the stack `to`: Exit (ints = [2]) for each frame of `from` below
/// their common ancestor, then Enter (ints = [0], name) or EnterBackward
/// (ints = [1], name) for each frame of `to` below it, outermost first.
/// Appends nothing when the two are the same frame.
GT_API void append_scope_transition(const ScopeFrame* from, const ScopeFrame* to,
                                    std::vector<wire::Instr>& out);

}  // namespace gt::client
