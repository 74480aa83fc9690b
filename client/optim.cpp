// gt::optim: the update rules of LibTorch 1.13 (torch/csrc/api/src/optim/),
// written with the same in-place ops (add_ with alpha, addcmul_, addcdiv_) so
// that they run on the workers, allocate no more temporaries than LibTorch
// does, and give the same float32 results. Where LibTorch uses an
// out-of-place add with alpha, the product is formed first (alpha * t).

#include <gt/optim.h>

#include <cmath>

#include <gt/autograd.h>

#include "client/internal/autograd.h"
#include "common/check.h"

namespace gt::optim {

Optimizer::Optimizer(std::vector<Tensor> params) : params_(std::move(params)) {
  for (size_t i = 0; i < params_.size(); ++i) {
    GT_CHECK(params_[i].defined(), "[optim] parameter ", i, " is undefined");
    GT_CHECK(is_floating(params_[i].dtype()), "[optim] parameter ", i,
             " must be floating to be optimized, got ", to_string(params_[i].dtype()));
  }
}

Optimizer::~Optimizer() = default;

void Optimizer::zero_grad() {
  for (const Tensor& p : params_) client::set_grad(p, Tensor());
}

// ---- SGD ---------------------------------------------------------------------------------

SGD::SGD(std::vector<Tensor> params, SGDOptions options)
    : Optimizer(std::move(params)), options_(options), momentum_buffers_(params_.size()) {
  GT_CHECK(options.lr() >= 0, "[optim.SGD] invalid learning rate: ", options.lr());
  GT_CHECK(options.momentum() >= 0, "[optim.SGD] invalid momentum value: ", options.momentum());
  GT_CHECK(options.weight_decay() >= 0, "[optim.SGD] invalid weight_decay value: ",
           options.weight_decay());
  GT_CHECK(!options.nesterov() || (options.momentum() > 0 && options.dampening() == 0),
           "[optim.SGD] Nesterov momentum requires a momentum and zero dampening");
}

void SGD::step() {
  NoGradGuard no_grad;
  const SGDOptions& o = options_;
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor& p = params_[i];
    Tensor d_p = p.grad();
    if (!d_p.defined()) continue;
    if (o.weight_decay() != 0) d_p = d_p + p * o.weight_decay();
    if (o.momentum() != 0) {
      Tensor& buf = momentum_buffers_[i];
      if (!buf.defined()) {
        buf = d_p * 1;  // a private copy: the buffer is updated in place
      } else {
        buf.mul_(o.momentum());
        buf.add_(d_p, 1 - o.dampening());
      }
      d_p = o.nesterov() ? d_p + buf * o.momentum() : buf;
    }
    p.add_(d_p, -o.lr());
  }
}

// ---- Adam / AdamW ---------------------------------------------------------------------------

Adam::Adam(std::vector<Tensor> params, AdamOptions options)
    : Adam(std::move(params), options, false) {}

Adam::Adam(std::vector<Tensor> params, AdamOptions options, bool decoupled_weight_decay)
    : Optimizer(std::move(params)), options_(options),
      decoupled_weight_decay_(decoupled_weight_decay), state_(params_.size()) {
  const char* name = decoupled_weight_decay ? "AdamW" : "Adam";
  const auto [beta1, beta2] = options.betas();
  GT_CHECK(options.lr() >= 0, "[optim.", name, "] invalid learning rate: ", options.lr());
  GT_CHECK(options.eps() >= 0, "[optim.", name, "] invalid epsilon value: ", options.eps());
  GT_CHECK(beta1 >= 0 && beta1 < 1, "[optim.", name, "] invalid beta parameter at index 0: ",
           beta1);
  GT_CHECK(beta2 >= 0 && beta2 < 1, "[optim.", name, "] invalid beta parameter at index 1: ",
           beta2);
  GT_CHECK(options.weight_decay() >= 0, "[optim.", name, "] invalid weight_decay value: ",
           options.weight_decay());
}

void Adam::step() {
  NoGradGuard no_grad;
  const AdamOptions& o = options_;
  const auto [beta1, beta2] = o.betas();
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor& p = params_[i];
    Tensor grad = p.grad();
    if (!grad.defined()) continue;
    State& s = state_[i];
    if (s.step == 0) {
      s.exp_avg = gt::zeros(p.shape(), p.dtype());
      s.exp_avg_sq = gt::zeros(p.shape(), p.dtype());
      if (o.amsgrad()) s.max_exp_avg_sq = gt::zeros(p.shape(), p.dtype());
    }
    ++s.step;
    const double bias_correction1 = 1 - std::pow(beta1, static_cast<double>(s.step));
    const double bias_correction2 = 1 - std::pow(beta2, static_cast<double>(s.step));
    if (o.weight_decay() != 0) {
      if (decoupled_weight_decay_) {
        p.mul_(1 - o.lr() * o.weight_decay());
      } else {
        grad = grad + p * o.weight_decay();
      }
    }
    s.exp_avg.mul_(beta1);
    s.exp_avg.add_(grad, 1 - beta1);
    s.exp_avg_sq.mul_(beta2);
    s.exp_avg_sq.addcmul_(grad, grad, 1 - beta2);
    Tensor second = s.exp_avg_sq;
    if (o.amsgrad()) {
      // The state is private to the optimizer, so it can be replaced.
      s.max_exp_avg_sq = gt::where(s.max_exp_avg_sq > s.exp_avg_sq, s.max_exp_avg_sq,
                                   s.exp_avg_sq);
      second = s.max_exp_avg_sq;
    }
    Tensor denom = second.sqrt() / std::sqrt(bias_correction2);
    denom.add_(o.eps());  // a fresh temporary: updated in place, as LibTorch does
    const double step_size = o.lr() / bias_correction1;
    p.addcdiv_(s.exp_avg, denom, -step_size);
  }
}

AdamW::AdamW(std::vector<Tensor> params, AdamWOptions options)
    : Adam(std::move(params), options, true) {}

}  // namespace gt::optim
