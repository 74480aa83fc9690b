#pragma once
// gt::optim: SGD, Adam and AdamW with LibTorch 1.13's update rules.
//
//   gt::optim::SGD opt(model->parameters(), gt::optim::SGDOptions(0.1).momentum(0.9));
//   for (...) {
//     opt.zero_grad();
//     auto loss = gt::nn::functional::mse_loss(model(x), y);
//     loss.backward();
//     opt.step();
//   }
//
// step() issues the update as in-place instructions on the workers, under
// gt::NoGradGuard: no data travels back to the program. Optimizer state
// (momentum buffers, Adam moments) lives on the workers too.

#include <cstdint>
#include <utility>
#include <vector>

#include <gt/export.h>
#include <gt/tensor.h>

namespace gt::optim {

/// Base of the optimizers: the parameters it updates and zero_grad().
/// Pinned (state is tied to the parameter handles); not thread-safe.
class GT_API Optimizer {
 public:
  /// Throws std::invalid_argument for an undefined or non-floating parameter.
  explicit Optimizer(std::vector<Tensor> params);
  virtual ~Optimizer();
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  /// Applies one update to every parameter that has a gradient.
  virtual void step() = 0;
  /// Clears the gradients of the parameters (they become undefined, like
  /// set_to_none in PyTorch: the next backward starts afresh).
  void zero_grad();
  /// The parameters, in the order given.
  const std::vector<Tensor>& parameters() const { return params_; }

 protected:
  std::vector<Tensor> params_;
};

/// SGD's hyper-parameters; setters return *this for chaining.
class GT_API SGDOptions {
 public:
  explicit SGDOptions(double lr) : lr_(lr) {}
  SGDOptions& lr(double v) { lr_ = v; return *this; }
  SGDOptions& momentum(double v) { momentum_ = v; return *this; }
  SGDOptions& dampening(double v) { dampening_ = v; return *this; }
  SGDOptions& weight_decay(double v) { weight_decay_ = v; return *this; }
  SGDOptions& nesterov(bool v) { nesterov_ = v; return *this; }
  double lr() const { return lr_; }
  double momentum() const { return momentum_; }
  double dampening() const { return dampening_; }
  double weight_decay() const { return weight_decay_; }
  bool nesterov() const { return nesterov_; }

 private:
  double lr_;
  double momentum_ = 0;
  double dampening_ = 0;
  double weight_decay_ = 0;
  bool nesterov_ = false;
};

/// Stochastic gradient descent with optional momentum, dampening, weight
/// decay and Nesterov momentum. Bad options (negative lr, momentum or weight
/// decay; Nesterov without momentum or with dampening) throw
/// std::invalid_argument.
class GT_API SGD : public Optimizer {
 public:
  SGD(std::vector<Tensor> params, SGDOptions options);
  void step() override;
  SGDOptions& options() { return options_; }

 private:
  SGDOptions options_;
  std::vector<Tensor> momentum_buffers_;  // undefined until the first step
};

/// Adam's and AdamW's hyper-parameters (AdamW's weight decay defaults to 1e-2).
class GT_API AdamOptions {
 public:
  explicit AdamOptions(double lr = 1e-3) : lr_(lr) {}
  AdamOptions& lr(double v) { lr_ = v; return *this; }
  AdamOptions& betas(std::pair<double, double> v) { betas_ = v; return *this; }
  AdamOptions& eps(double v) { eps_ = v; return *this; }
  AdamOptions& weight_decay(double v) { weight_decay_ = v; return *this; }
  AdamOptions& amsgrad(bool v) { amsgrad_ = v; return *this; }
  double lr() const { return lr_; }
  const std::pair<double, double>& betas() const { return betas_; }
  double eps() const { return eps_; }
  double weight_decay() const { return weight_decay_; }
  bool amsgrad() const { return amsgrad_; }

 protected:
  double lr_;
  std::pair<double, double> betas_{0.9, 0.999};
  double eps_ = 1e-8;
  double weight_decay_ = 0;
  bool amsgrad_ = false;
};

/// AdamW's options: AdamOptions with weight_decay 1e-2 by default. The
/// setters return AdamWOptions&, so that a chain still converts to AdamW.
class GT_API AdamWOptions : public AdamOptions {
 public:
  explicit AdamWOptions(double lr = 1e-3) : AdamOptions(lr) { weight_decay_ = 1e-2; }
  using AdamOptions::lr;
  using AdamOptions::betas;
  using AdamOptions::eps;
  using AdamOptions::weight_decay;
  using AdamOptions::amsgrad;
  AdamWOptions& lr(double v) { lr_ = v; return *this; }
  AdamWOptions& betas(std::pair<double, double> v) { betas_ = v; return *this; }
  AdamWOptions& eps(double v) { eps_ = v; return *this; }
  AdamWOptions& weight_decay(double v) { weight_decay_ = v; return *this; }
  AdamWOptions& amsgrad(bool v) { amsgrad_ = v; return *this; }
};

/// Adam (L2 weight decay added to the gradient). Bad options (negative lr or
/// eps, betas outside [0, 1)) throw std::invalid_argument.
class GT_API Adam : public Optimizer {
 public:
  Adam(std::vector<Tensor> params, AdamOptions options = AdamOptions());
  void step() override;
  AdamOptions& options() { return options_; }

 protected:
  Adam(std::vector<Tensor> params, AdamOptions options, bool decoupled_weight_decay);

 private:
  struct State {
    int64_t step = 0;
    Tensor exp_avg, exp_avg_sq, max_exp_avg_sq;
  };
  AdamOptions options_;
  bool decoupled_weight_decay_;
  std::vector<State> state_;
};

/// AdamW: Adam with decoupled weight decay (p *= 1 - lr * weight_decay).
class GT_API AdamW : public Adam {
 public:
  AdamW(std::vector<Tensor> params, AdamWOptions options = AdamWOptions());
};

}  // namespace gt::optim
