#pragma once
// gt::nn: modules, layers, losses and parameter files, shaped like LibTorch's
// C++ frontend.
//
//   struct NetImpl : gt::nn::Module {
//     NetImpl() : fc1(784, 128), fc2(128, 10) {
//       register_module("fc1", fc1);
//       register_module("fc2", fc2);
//     }
//     gt::Tensor forward(const gt::Tensor& x) { return fc2(fc1(x).relu()); }
//     gt::nn::Linear fc1, fc2;
//   };
//   GT_MODULE(Net);  // Net is a handle: copies share the parameters
//
// Parameters live on the workers like any tensor; layers only issue ops.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <gt/export.h>
#include <gt/tensor.h>

namespace gt::nn {

/// Base of layers and models, like torch::nn::Module: owns named parameters
/// and named child modules, both kept in registration order.
///
/// Ownership: a module is shared by its handles (ModuleHolder) and by the
/// parents it is registered with; it is pinned (no copy or move). Parameters
/// are tensor handles, so a parameter returned by parameters() is the
/// module's own tensor: in-place updates (optimizers) show in the module.
/// Thread-safety: registration is not thread-safe; reading parameters is.
/// Errors: bad names (empty, containing '.', duplicates) throw
/// std::invalid_argument.
class GT_API Module {
 public:
  /// `name` appears in messages ("Linear").
  explicit Module(std::string name = "Module");
  virtual ~Module();
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  /// The module's type name.
  const std::string& name() const { return name_; }

  /// Parameters of this module and (if recurse) of its descendants, depth first.
  std::vector<Tensor> parameters(bool recurse = true) const;
  /// Parameters with dotted paths: "weight", "fc1.weight", "layers.0.bias".
  std::vector<std::pair<std::string, Tensor>> named_parameters(bool recurse = true) const;
  /// Direct children in registration order.
  std::vector<std::shared_ptr<Module>> children() const;
  /// Direct children with their names.
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> named_children() const;

  /// Clears the gradient of every parameter (they become undefined).
  void zero_grad();
  /// Sets training mode here and in every descendant (Dropout reads it).
  virtual void train(bool on = true);
  /// Same as train(false).
  void eval() { train(false); }
  /// Whether the module is in training mode (the default).
  bool is_training() const { return training_; }

  /// Adds a parameter and sets its requires_grad flag to `requires_grad`, as
  /// LibTorch does. Returns the stored handle.
  Tensor register_parameter(std::string name, Tensor tensor, bool requires_grad = true);
  /// Adds a child module (any holder such as gt::nn::Linear, or a shared_ptr).
  template <typename M>
  auto register_module(std::string name, M module) {
    if constexpr (requires { module.ptr(); }) {
      add_child(std::move(name), module.ptr());
    } else {
      add_child(std::move(name), std::shared_ptr<Module>(module));
    }
    return module;
  }

 private:
  void add_child(std::string name, std::shared_ptr<Module> child);
  void collect(const std::string& prefix, bool recurse,
               std::vector<std::pair<std::string, Tensor>>& out) const;

  std::string name_;
  bool training_ = true;
  std::vector<std::pair<std::string, Tensor>> parameters_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
};

/// A handle to a module implementation (LibTorch's ModuleHolder): copies share
/// the module, `->` reaches it, and calling the handle calls its forward().
/// `Holder(nullptr)` is empty until assigned.
template <typename Impl>
class ModuleHolder {
 public:
  using ImplType = Impl;

  /// Constructs the module with Impl's constructor arguments.
  template <typename... Args>
    requires(std::is_constructible_v<Impl, Args...> &&
             !(sizeof...(Args) == 1 &&
               (std::is_base_of_v<ModuleHolder, std::remove_cvref_t<Args>> && ...)))
  ModuleHolder(Args&&... args)  // NOLINT(google-explicit-constructor)
      : impl_(std::make_shared<Impl>(std::forward<Args>(args)...)) {}
  /// An empty holder.
  ModuleHolder(std::nullptr_t) {}  // NOLINT(google-explicit-constructor)
  /// Wraps an existing module.
  ModuleHolder(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}  // NOLINT

  Impl* operator->() const { return impl_.get(); }
  Impl& operator*() const { return *impl_; }
  const std::shared_ptr<Impl>& ptr() const { return impl_; }
  bool is_empty() const { return impl_ == nullptr; }

  /// Calls the module's forward().
  template <typename... Args>
  decltype(auto) operator()(Args&&... args) const {
    return impl_->forward(std::forward<Args>(args)...);
  }

 private:
  std::shared_ptr<Impl> impl_;
};

/// Declares `Name` as the holder of `NameImpl` (LibTorch's TORCH_MODULE).
#define GT_MODULE(Name)                                       \
  class Name : public ::gt::nn::ModuleHolder<Name##Impl> {    \
   public:                                                    \
    using ::gt::nn::ModuleHolder<Name##Impl>::ModuleHolder;   \
  }

// ---- layers ------------------------------------------------------------------------

/// y = x W^T + b. W is (out, in) and b is (out), both initialised as
/// PyTorch does: U(-1/sqrt(in), 1/sqrt(in)) (kaiming_uniform with a = sqrt(5)),
/// drawn on the workers (gt::manual_seed makes it reproducible).
class GT_API LinearImpl : public Module {
 public:
  LinearImpl(int64_t in_features, int64_t out_features, bool bias = true);
  Tensor forward(const Tensor& x) const;
  int64_t in_features() const { return in_features_; }
  int64_t out_features() const { return out_features_; }
  Tensor weight;
  Tensor bias;  // undefined without bias

 private:
  int64_t in_features_, out_features_;
};
GT_MODULE(Linear);

/// max(x, 0).
class GT_API ReLUImpl : public Module {
 public:
  ReLUImpl() : Module("ReLU") {}
  Tensor forward(const Tensor& x) const { return x.relu(); }
};
GT_MODULE(ReLU);

/// GELU, exact erf form.
class GT_API GELUImpl : public Module {
 public:
  GELUImpl() : Module("GELU") {}
  Tensor forward(const Tensor& x) const { return x.gelu(); }
};
GT_MODULE(GELU);

/// 1 / (1 + e^-x).
class GT_API SigmoidImpl : public Module {
 public:
  SigmoidImpl() : Module("Sigmoid") {}
  Tensor forward(const Tensor& x) const { return x.sigmoid(); }
};
GT_MODULE(Sigmoid);

/// tanh(x).
class GT_API TanhImpl : public Module {
 public:
  TanhImpl() : Module("Tanh") {}
  Tensor forward(const Tensor& x) const { return x.tanh(); }
};
GT_MODULE(Tanh);

/// In training mode zeroes each element with probability p (the mask comes
/// from gt::rand on the workers) and scales the rest by 1 / (1 - p); in
/// eval mode returns x. Throws std::invalid_argument unless 0 <= p <= 1.
class GT_API DropoutImpl : public Module {
 public:
  explicit DropoutImpl(double p = 0.5);
  Tensor forward(const Tensor& x) const;
  double p() const { return p_; }

 private:
  double p_;
};
GT_MODULE(Dropout);

/// Normalises over the trailing dims `normalized_shape` (biased variance,
/// eps inside the square root), then applies weight (ones) and bias (zeros)
/// when elementwise_affine. Inputs whose trailing dims differ throw
/// std::invalid_argument naming both shapes.
class GT_API LayerNormImpl : public Module {
 public:
  explicit LayerNormImpl(Shape normalized_shape, double eps = 1e-5,
                         bool elementwise_affine = true);
  Tensor forward(const Tensor& x) const;
  const Shape& normalized_shape() const { return normalized_shape_; }
  double eps() const { return eps_; }
  Tensor weight;  // undefined without elementwise_affine
  Tensor bias;

 private:
  Shape normalized_shape_;
  double eps_;
};
GT_MODULE(LayerNorm);

/// A lookup table: forward(indices) gives weight rows, shaped
/// indices.shape() + (embedding_dim). weight is (num_embeddings,
/// embedding_dim) from N(0, 1), as in PyTorch. Indices must be int32/int64.
class GT_API EmbeddingImpl : public Module {
 public:
  EmbeddingImpl(int64_t num_embeddings, int64_t embedding_dim);
  Tensor forward(const Tensor& indices) const;
  Tensor weight;

 private:
  int64_t num_embeddings_, embedding_dim_;
};
GT_MODULE(Embedding);

/// Runs its modules in order, each on the previous one's output. Children
/// are named "0", "1", ... as in LibTorch. Accepts module holders and plain
/// callables `Tensor(const Tensor&)` (which have no parameters).
class GT_API SequentialImpl : public Module {
 public:
  SequentialImpl() : Module("Sequential") {}
  template <typename... Modules>
    requires(sizeof...(Modules) > 0)
  explicit SequentialImpl(Modules&&... modules) : Module("Sequential") {
    (push_back(std::forward<Modules>(modules)), ...);
  }

  /// Appends a module holder (e.g. gt::nn::Linear(4, 8)) or a callable.
  template <typename M>
  void push_back(M module) {
    if constexpr (requires { module.ptr(); }) {
      auto impl = module.ptr();
      register_module(std::to_string(steps_.size()), module);
      steps_.push_back([impl](const Tensor& x) { return impl->forward(x); });
    } else {
      steps_.push_back(std::function<Tensor(const Tensor&)>(std::move(module)));
    }
  }

  Tensor forward(const Tensor& x) const;
  size_t size() const { return steps_.size(); }

 private:
  std::vector<std::function<Tensor(const Tensor&)>> steps_;
};
GT_MODULE(Sequential);

// ---- functional ------------------------------------------------------------------------

/// How a loss reduces its per-element values.
enum class Reduction { None, Mean, Sum };

namespace functional {

GT_API Tensor relu(const Tensor& x);
GT_API Tensor gelu(const Tensor& x);
GT_API Tensor sigmoid(const Tensor& x);
GT_API Tensor tanh(const Tensor& x);
GT_API Tensor softmax(const Tensor& x, int64_t dim);
GT_API Tensor log_softmax(const Tensor& x, int64_t dim);

/// (input - target)^2, reduced. input and target must have the same shape
/// (std::invalid_argument naming both otherwise).
GT_API Tensor mse_loss(const Tensor& input, const Tensor& target,
                       Reduction reduction = Reduction::Mean);

/// Negative log likelihood of class indices: input is log-probabilities of
/// shape (N, C), (C) or (N, C, d1, ...); target is int64 of shape (N), () or
/// (N, d1, ...). Wrong target dtype or shape throws std::invalid_argument
/// naming both tensors.
GT_API Tensor nll_loss(const Tensor& input, const Tensor& target,
                       Reduction reduction = Reduction::Mean);

/// nll_loss(log_softmax(logits, class dim), target): the class dim is 1, or
/// 0 for 1-D logits; numerically stable for large logits.
GT_API Tensor cross_entropy(const Tensor& logits, const Tensor& target,
                            Reduction reduction = Reduction::Mean);

}  // namespace functional

}  // namespace gt::nn

namespace gt {

/// Writes every parameter of `module` (named_parameters() order) to `path`
/// (a sync point: the values are fetched). The format, little-endian:
///   "GTPARAM1" (8 bytes), uint32 count, then per parameter:
///   uint32 name length, name bytes (UTF-8, dotted path), uint8 dtype
///   (gt::DType value), uint8 rank, int64 extents[rank], uint64 byte count,
///   the elements in row-major order.
/// Throws gt::Error when the file cannot be written.
GT_API void save(const nn::Module& module, const std::string& path);
/// Reads a file written by gt::save into the module's parameters (in place:
/// handles held by optimizers stay valid). The file must name exactly the
/// module's parameters with the same shapes and dtypes; otherwise throws
/// gt::Error naming the parameter, what the file has and what the module
/// expects, and leaves the module unchanged.
GT_API void load(nn::Module& module, const std::string& path);

/// gt::save for a module handle (gt::nn::Linear, a GT_MODULE, ...).
template <typename Impl>
void save(const nn::ModuleHolder<Impl>& module, const std::string& path) {
  save(static_cast<const nn::Module&>(*module), path);
}
/// gt::load for a module handle.
template <typename Impl>
void load(const nn::ModuleHolder<Impl>& module, const std::string& path) {
  load(static_cast<nn::Module&>(*module), path);
}

}  // namespace gt
