#pragma once
// Gradient mode: whether ops record the autograd tape on this thread.
//
//   {
//     gt::NoGradGuard no_grad;   // e.g. in an optimizer step or evaluation
//     w.sub_(w.grad() * lr);     // in-place on a leaf: allowed without grad mode
//   }
//
// Recording is per thread and on by default. Tensor::backward, grad(),
// requires_grad_() and detach() are declared with gt::Tensor.

#include <gt/export.h>

namespace gt {

/// Whether ops issued on this thread record gradients (true unless disabled).
GT_API bool is_grad_enabled();
/// Turns gradient recording on or off for this thread.
GT_API void set_grad_enabled(bool enabled);

/// Sets the gradient mode of this thread for its lifetime and restores the
/// previous mode when destroyed (nestable). Pinned; never throws.
class AutoGradMode {
 public:
  explicit AutoGradMode(bool enabled) : previous_(is_grad_enabled()) {
    set_grad_enabled(enabled);
  }
  ~AutoGradMode() { set_grad_enabled(previous_); }
  AutoGradMode(const AutoGradMode&) = delete;
  AutoGradMode& operator=(const AutoGradMode&) = delete;

 private:
  bool previous_;
};

/// Disables gradient recording on this thread for its lifetime, like
/// torch::NoGradGuard: ops issued meanwhile have no history and their results
/// do not require grad, and in-place updates of leaves are allowed.
class NoGradGuard : public AutoGradMode {
 public:
  NoGradGuard() : AutoGradMode(false) {}
};

}  // namespace gt
