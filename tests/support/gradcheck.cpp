#include "tests/support/gradcheck.h"

#include <cmath>
#include <sstream>

namespace gt::test {
namespace {

// Deterministic weights of alternating sign with magnitudes in [0.5, 1), so
// that no output element is ignored and none cancels another by symmetry.
std::vector<double> weights(int64_t n) {
  std::vector<double> w(n);
  uint64_t state = 0x9e3779b97f4a7c15ull;
  for (int64_t i = 0; i < n; ++i) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    const double u = static_cast<double>(state >> 11) / static_cast<double>(1ull << 53);
    w[i] = (i % 2 == 0 ? 1.0 : -1.0) * (0.5 + 0.5 * u);
  }
  return w;
}

double weighted_sum(const GradcheckFn& f, const std::vector<gt::Tensor>& inputs,
                    const gt::Tensor& w) {
  gt::NoGradGuard no_grad;
  return (f(inputs).to(gt::kFloat64) * w).sum().item<double>();
}

}  // namespace

std::string gradcheck(const GradcheckFn& f, const std::vector<gt::Tensor>& inputs,
                      const GradcheckOptions& options) {
  std::vector<std::vector<double>> values(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!inputs[i].requires_grad()) continue;
    if (inputs[i].dtype() != gt::kFloat64) return "gradcheck needs float64 inputs";
    values[i] = inputs[i].to_vector<double>();
  }
  // Analytic: fresh leaves with the same values, one backward.
  std::vector<gt::Tensor> leaves = inputs;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (inputs[i].requires_grad()) {
      leaves[i] = gt::tensor(values[i], inputs[i].shape()).requires_grad_();
    }
  }
  const gt::Tensor out = f(leaves);
  if (!out.requires_grad()) return "the output does not require grad";
  const gt::Tensor w = gt::tensor(weights(out.numel()), out.shape());
  (out.to(gt::kFloat64) * w).sum().backward();

  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!inputs[i].requires_grad()) continue;
    const gt::Tensor g = leaves[i].grad();
    const std::vector<double> analytic =
        g.defined() ? g.to_vector<double>() : std::vector<double>(values[i].size(), 0.0);
    std::vector<gt::Tensor> probe = inputs;
    for (size_t j = 0; j < values[i].size(); ++j) {
      std::vector<double> v = values[i];
      v[j] = values[i][j] + options.eps;
      probe[i] = gt::tensor(v, inputs[i].shape());
      const double plus = weighted_sum(f, probe, w);
      v[j] = values[i][j] - options.eps;
      probe[i] = gt::tensor(v, inputs[i].shape());
      const double minus = weighted_sum(f, probe, w);
      const double numeric = (plus - minus) / (2 * options.eps);
      if (!(std::abs(analytic[j] - numeric) <= options.atol + options.rtol * std::abs(numeric))) {
        std::ostringstream msg;
        msg << "input " << i << ", element " << j << ": analytic " << analytic[j]
            << ", numeric " << numeric;
        return msg.str();
      }
    }
  }
  return "";
}

}  // namespace gt::test
