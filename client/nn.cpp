// gt::nn: Module bookkeeping, layers and losses. Everything a layer computes
// is an ordinary gt op, so autograd records it and the workers run it.

#include <gt/nn.h>

#include <cmath>

#include <gt/autograd.h>

#include "client/internal/autograd.h"
#include "common/check.h"
#include "common/shape.h"

namespace gt::nn {

// ---- Module ------------------------------------------------------------------------------

Module::Module(std::string name) : name_(std::move(name)) {}
Module::~Module() = default;

namespace {

void check_name(const Module& m, const std::string& name, const char* what,
                bool taken) {
  GT_CHECK(!name.empty(), "[nn.", m.name(), "] a ", what, " name must not be empty");
  GT_CHECK(name.find('.') == std::string::npos, "[nn.", m.name(), "] ", what, " name '", name,
           "' must not contain '.'");
  GT_CHECK(!taken, "[nn.", m.name(), "] a parameter or module named '", name,
           "' is already registered");
}

}  // namespace

Tensor Module::register_parameter(std::string name, Tensor tensor, bool requires_grad) {
  bool taken = false;
  for (const auto& [n, _] : parameters_) taken |= n == name;
  for (const auto& [n, _] : children_) taken |= n == name;
  check_name(*this, name, "parameter", taken);
  GT_CHECK(tensor.defined(), "[nn.", name_, "] parameter '", name, "' is undefined");
  // As in LibTorch, the flag is set either way (a frozen parameter stops
  // requiring grad even if the tensor did).
  if (tensor.requires_grad() != requires_grad) tensor.requires_grad_(requires_grad);
  parameters_.emplace_back(std::move(name), tensor);
  return tensor;
}

void Module::add_child(std::string name, std::shared_ptr<Module> child) {
  bool taken = false;
  for (const auto& [n, _] : parameters_) taken |= n == name;
  for (const auto& [n, _] : children_) taken |= n == name;
  check_name(*this, name, "module", taken);
  GT_CHECK(child != nullptr, "[nn.", name_, "] module '", name, "' is empty");
  children_.emplace_back(std::move(name), std::move(child));
}

void Module::collect(const std::string& prefix, bool recurse,
                     std::vector<std::pair<std::string, Tensor>>& out) const {
  for (const auto& [name, p] : parameters_) out.emplace_back(prefix + name, p);
  if (!recurse) return;
  for (const auto& [name, child] : children_) child->collect(prefix + name + ".", true, out);
}

std::vector<std::pair<std::string, Tensor>> Module::named_parameters(bool recurse) const {
  std::vector<std::pair<std::string, Tensor>> out;
  collect("", recurse, out);
  return out;
}

std::vector<Tensor> Module::parameters(bool recurse) const {
  std::vector<Tensor> out;
  for (auto& [_, p] : named_parameters(recurse)) out.push_back(std::move(p));
  return out;
}

std::vector<std::shared_ptr<Module>> Module::children() const {
  std::vector<std::shared_ptr<Module>> out;
  for (const auto& [_, c] : children_) out.push_back(c);
  return out;
}

std::vector<std::pair<std::string, std::shared_ptr<Module>>> Module::named_children() const {
  return children_;
}

void Module::zero_grad() {
  for (const Tensor& p : parameters()) client::set_grad(p, Tensor());
}

void Module::train(bool on) {
  training_ = on;
  for (const auto& [_, child] : children_) child->train(on);
}

// ---- layers ------------------------------------------------------------------------------

namespace {

// U(-bound, bound) drawn on the workers, as a fresh leaf.
Tensor uniform(const Shape& shape, double bound) {
  NoGradGuard no_grad;
  return gt::rand(shape) * (2 * bound) - bound;
}

}  // namespace

LinearImpl::LinearImpl(int64_t in_features, int64_t out_features, bool with_bias)
    : Module("Linear"), in_features_(in_features), out_features_(out_features) {
  GT_CHECK(in_features > 0 && out_features > 0, "[nn.Linear] expected positive sizes, got in ",
           in_features, ", out ", out_features);
  // kaiming_uniform_(a = sqrt(5)) on a (out, in) weight: gain sqrt(2 / (1 + 5)),
  // bound gain * sqrt(3 / in) = 1 / sqrt(in); the bias uses the same bound.
  const double bound = 1.0 / std::sqrt(static_cast<double>(in_features));
  weight = register_parameter("weight", uniform({out_features, in_features}, bound));
  if (with_bias) bias = register_parameter("bias", uniform({out_features}, bound));
}

Tensor LinearImpl::forward(const Tensor& x) const {
  GT_CHECK(x.dim() >= 1 && x.size(-1) == in_features_, "[nn.Linear] expected input with ",
           in_features_, " features in the last dim, got shape ", shape_str(x.shape()));
  Tensor y = x.matmul(weight.t());
  return bias.defined() ? y + bias : y;
}

DropoutImpl::DropoutImpl(double p) : Module("Dropout"), p_(p) {
  GT_CHECK(p >= 0.0 && p <= 1.0, "[nn.Dropout] dropout probability has to be between 0 and 1, "
           "but got ", p);
}

Tensor DropoutImpl::forward(const Tensor& x) const {
  if (!is_training() || p_ == 0.0) return x;
  if (p_ == 1.0) return x * 0;
  // Keep an element when u >= p, u ~ U[0, 1): probability 1 - p.
  Tensor keep;
  {
    NoGradGuard no_grad;
    keep = gt::rand(x.shape(), is_floating(x.dtype()) ? x.dtype() : kFloat32) >= p_;
  }
  return x * keep * (1.0 / (1.0 - p_));
}

LayerNormImpl::LayerNormImpl(Shape normalized_shape, double eps, bool elementwise_affine)
    : Module("LayerNorm"), normalized_shape_(std::move(normalized_shape)), eps_(eps) {
  GT_CHECK(!normalized_shape_.empty(), "[nn.LayerNorm] normalized_shape must not be empty");
  if (elementwise_affine) {
    weight = register_parameter("weight", gt::ones(normalized_shape_));
    bias = register_parameter("bias", gt::zeros(normalized_shape_));
  }
}

Tensor LayerNormImpl::forward(const Tensor& x) const {
  const Shape& s = x.shape();
  const size_t k = normalized_shape_.size();
  GT_CHECK(s.size() >= k && Shape(s.end() - k, s.end()) == normalized_shape_,
           "[nn.LayerNorm] expected input with trailing dims ", shape_str(normalized_shape_),
           ", got shape ", shape_str(s));
  std::vector<int64_t> dims;
  for (size_t i = 0; i < k; ++i) dims.push_back(-1 - static_cast<int64_t>(i));
  const Tensor centered = x - x.mean(dims, /*keepdim=*/true);
  const Tensor var = (centered * centered).mean(dims, /*keepdim=*/true);
  Tensor y = centered * (var + eps_).rsqrt();
  if (weight.defined()) y = y * weight + bias;
  return y;
}

EmbeddingImpl::EmbeddingImpl(int64_t num_embeddings, int64_t embedding_dim)
    : Module("Embedding"), num_embeddings_(num_embeddings), embedding_dim_(embedding_dim) {
  GT_CHECK(num_embeddings > 0 && embedding_dim > 0, "[nn.Embedding] expected positive sizes, "
           "got num_embeddings ", num_embeddings, ", embedding_dim ", embedding_dim);
  Tensor w;
  {
    NoGradGuard no_grad;
    w = gt::randn({num_embeddings, embedding_dim});
  }
  weight = register_parameter("weight", w);
}

Tensor EmbeddingImpl::forward(const Tensor& indices) const {
  GT_CHECK(indices.dtype() == kInt64 || indices.dtype() == kInt32,
           "[nn.Embedding] expected int64 or int32 indices, got ", to_string(indices.dtype()),
           " (shape ", shape_str(indices.shape()), ")");
  Shape out = indices.shape();
  out.push_back(embedding_dim_);
  return weight.index_select(0, indices.reshape({-1})).reshape(out);
}

Tensor SequentialImpl::forward(const Tensor& x) const {
  Tensor y = x;
  for (const auto& step : steps_) y = step(y);
  return y;
}

// ---- functional ----------------------------------------------------------------------------

namespace functional {

Tensor relu(const Tensor& x) { return x.relu(); }
Tensor gelu(const Tensor& x) { return x.gelu(); }
Tensor sigmoid(const Tensor& x) { return x.sigmoid(); }
Tensor tanh(const Tensor& x) { return x.tanh(); }
Tensor softmax(const Tensor& x, int64_t dim) { return x.softmax(dim); }
Tensor log_softmax(const Tensor& x, int64_t dim) { return x.log_softmax(dim); }

namespace {

Tensor reduce(const Tensor& losses, Reduction reduction) {
  switch (reduction) {
    case Reduction::None: return losses;
    case Reduction::Sum: return losses.sum();
    case Reduction::Mean: return losses.mean();
  }
  return losses;
}

// The class-index checks shared by nll_loss and cross_entropy: int64
// targets shaped like the input without its class dim.
void check_class_targets(const char* op, const Tensor& input, const Tensor& target,
                         const char* input_name) {
  GT_CHECK(input.defined() && target.defined(), "[nn.", op, "] undefined input or target");
  GT_CHECK(target.dtype() == kInt64, "[nn.", op, "] expected int64 class indices for target, "
           "got ", to_string(target.dtype()), ": target ", shape_str(target.shape()), " ",
           to_string(target.dtype()), ", ", input_name, " ", shape_str(input.shape()), " ",
           to_string(input.dtype()), " (for probabilities as targets, compute the loss from "
           "log_softmax directly)");
  GT_CHECK(is_floating(input.dtype()), "[nn.", op, "] expected floating ", input_name, ", got ",
           to_string(input.dtype()));
  const Shape& s = input.shape();
  GT_CHECK(!s.empty(), "[nn.", op, "] ", input_name, " must have a class dim, got a 0-dim "
           "tensor");
  Shape expected = s;
  expected.erase(expected.begin() + (s.size() == 1 ? 0 : 1));
  GT_CHECK(target.shape() == expected, "[nn.", op, "] target shape ",
           shape_str(target.shape()), " does not match ", input_name, " shape ", shape_str(s),
           ": expected target shape ", shape_str(expected));
}

Tensor nll_unchecked(const Tensor& log_probs, const Tensor& target, Reduction reduction) {
  const int64_t class_dim = log_probs.dim() == 1 ? 0 : 1;
  const Tensor picked =
      log_probs.gather(class_dim, target.unsqueeze(class_dim)).squeeze(class_dim);
  return reduce(-picked, reduction);
}

}  // namespace

Tensor mse_loss(const Tensor& input, const Tensor& target, Reduction reduction) {
  GT_CHECK(input.defined() && target.defined(), "[nn.mse_loss] undefined input or target");
  GT_CHECK(input.shape() == target.shape(), "[nn.mse_loss] input and target shapes differ: "
           "input ", shape_str(input.shape()), ", target ", shape_str(target.shape()));
  const Tensor diff = input - target;
  return reduce(diff * diff, reduction);
}

Tensor nll_loss(const Tensor& input, const Tensor& target, Reduction reduction) {
  check_class_targets("nll_loss", input, target, "input");
  return nll_unchecked(input, target, reduction);
}

Tensor cross_entropy(const Tensor& logits, const Tensor& target, Reduction reduction) {
  check_class_targets("cross_entropy", logits, target, "logits");
  const int64_t class_dim = logits.dim() == 1 ? 0 : 1;
  return nll_unchecked(logits.log_softmax(class_dim), target, reduction);
}

}  // namespace functional

}  // namespace gt::nn
