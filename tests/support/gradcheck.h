#pragma once
// Finite-difference gradient checks for gt's autograd (flashlight and ggml
// keep the same helper beside their tests). Needs a connected gt session.

#include <functional>
#include <string>
#include <vector>

#include <gt/gt.h>

namespace gt::test {

struct GradcheckOptions {
  double eps = 1e-6;   // central-difference step
  double atol = 1e-6;  // |analytic - numeric| <= atol + rtol * |numeric|
  double rtol = 1e-4;
};

using GradcheckFn = std::function<gt::Tensor(const std::vector<gt::Tensor>&)>;

/// Checks the gradients autograd computes for f against central differences.
/// The inputs that require grad must be float64 leaves; the others (indices,
/// masks) are passed through unchanged. The scalar checked is
/// sum(f(inputs) * w) for a fixed pseudo-random w shaped like f's output, so
/// that every output element contributes with its own weight. Returns an
/// empty string on success, else a description of the first mismatch
/// (input, flat element index, analytic and numeric values).
std::string gradcheck(const GradcheckFn& f, const std::vector<gt::Tensor>& inputs,
                      const GradcheckOptions& options = {});

}  // namespace gt::test
