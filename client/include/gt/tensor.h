#pragma once
// gt::Tensor and the functions that create tensors.

#include <cstdint>
#include <initializer_list>
#include <iosfwd>
#include <limits>
#include <memory>
#include <type_traits>
#include <vector>

#include <gt/dtype.h>
#include <gt/export.h>
#include <gt/options.h>
#include <gt/scalar.h>

namespace gt {

namespace client {
class TensorNode;
}

/// Shape of a tensor: one extent per dimension; {} is a 0-dim (scalar) tensor.
using Shape = std::vector<int64_t>;

namespace detail {
/// Element types accepted by gt::tensor(data, shape).
template <typename T>
inline constexpr bool is_data_type_v =
    std::is_same_v<T, float> || std::is_same_v<T, double> || std::is_same_v<T, int32_t> ||
    std::is_same_v<T, int64_t> || std::is_same_v<T, bool>;
/// Element types that to_vector() and item() can produce.
template <typename T>
inline constexpr bool is_fetch_type_v = is_data_type_v<T> || std::is_same_v<T, uint8_t>;
}  // namespace detail

/// A handle to a tensor that lives on the workers of the session's cluster.
///
/// Ownership and copies: a Tensor is a cheap handle to a shared node holding
/// the tensor's id, shape and dtype; copies share that node (and so the remote
/// data), as torch::Tensor copies do. When the last handle dies, the id is
/// released in a batched Free; destructors never block or throw. A
/// default-constructed Tensor is undefined (defined() is false).
///
/// Execution: operations return at once. They are checked on the calling
/// thread with the op table's shape and dtype rules and then queued; they run
/// on the workers in issue order. Only to_vector(), item(), printing and
/// gt::synchronize() wait for the cluster.
///
/// Thread-safety: handles may be copied and used from several threads; the
/// order of operations issued concurrently from different threads is
/// unspecified, and concurrent in-place ops on one tensor race as in LibTorch.
///
/// Errors: bad shapes, dims or dtypes throw std::invalid_argument at the call
/// site ("[client.matmul] matmul: inner dims differ: lhs (4, 3), rhs (5, 2)").
/// Failures on a worker surface as gt::RemoteError at the next sync point;
/// a lost connection as gt::TransportError.
class GT_API Tensor {
 public:
  /// An undefined tensor.
  Tensor() = default;
  /// Wraps a node (used by the library; programs create tensors with gt::zeros etc.).
  explicit Tensor(std::shared_ptr<client::TensorNode> node);

  // ---- metadata (local, never waits) ----
  /// Extents of every dimension.
  const Shape& shape() const;
  /// Extent of dim `d`; negative d counts from the end.
  int64_t size(int64_t d) const;
  /// Number of dimensions.
  int64_t dim() const;
  /// Number of elements.
  int64_t numel() const;
  /// Element type.
  DType dtype() const;
  /// Session-scoped id of the tensor (0 when undefined).
  uint64_t id() const;
  /// Whether this handle refers to a tensor.
  bool defined() const { return node_ != nullptr; }
  /// Whether gradients flow to this tensor: a leaf marked with requires_grad,
  /// or the result of an op recorded on such tensors.
  bool requires_grad() const;

  // ---- autograd (gt/autograd.h has NoGradGuard) ----
  /// Marks a leaf as needing gradients (floating dtypes only); returns *this.
  /// Turning it off on a non-leaf throws std::invalid_argument.
  Tensor& requires_grad_(bool requires_grad = true);
  /// True for tensors without recorded history (created, loaded, detached).
  bool is_leaf() const;
  /// The gradient accumulated by backward() into a leaf that requires grad;
  /// undefined until the first backward (and for non-leaves).
  Tensor grad() const;
  /// Computes the gradient of this tensor with respect to every leaf that
  /// requires grad and adds it into their grad(). Without `gradient` the
  /// tensor must have one element (else std::invalid_argument "grad can be
  /// implicitly created only for scalar outputs"); otherwise `gradient` has
  /// this tensor's shape. The work is issued as ordinary ops (asynchronous).
  /// The graph's saved tensors are freed unless retain_graph; a second
  /// backward through freed parts throws gt::Error.
  void backward(const Tensor& gradient = Tensor(), bool retain_graph = false) const;

  // ---- operations (asynchronous) ----
  /// Matrix product with torch.matmul's rules (1-D operands, batch broadcasting).
  Tensor matmul(const Tensor& other) const;
  /// Elementwise e^x.
  Tensor exp() const;
  /// Elementwise natural logarithm.
  Tensor log() const;
  /// Elementwise square root.
  Tensor sqrt() const;
  /// Elementwise max(x, 0).
  Tensor relu() const;
  /// Elementwise 1 / (1 + e^-x).
  Tensor sigmoid() const;
  /// Elementwise hyperbolic tangent.
  Tensor tanh() const;
  /// Elementwise 1 / sqrt(x) (integral and bool tensors give float32).
  Tensor rsqrt() const;
  /// Elementwise |x| (not for bool tensors).
  Tensor abs() const;
  /// Elementwise -1, 0 or 1 with the tensor's dtype.
  Tensor sign() const;
  /// Elementwise x ** exponent (integral tensors reject negative integral exponents).
  Tensor pow(Scalar exponent) const;
  /// Elementwise x ** exponent with broadcasting and type promotion.
  Tensor pow(const Tensor& exponent) const;
  /// Elementwise GELU (exact erf form; floating tensors).
  Tensor gelu() const;
  /// Softmax along `dim` (floating tensors; negative dims count from the end).
  Tensor softmax(int64_t dim) const;
  /// Log of softmax along `dim`, computed stably (floating tensors).
  Tensor log_softmax(int64_t dim) const;
  /// Sum of all elements (0-dim result; int64 for integral and bool tensors).
  Tensor sum() const;
  /// Sum over `dims` (all dims when empty), keeping them as size 1 if keepdim.
  Tensor sum(const std::vector<int64_t>& dims, bool keepdim = false) const;
  /// Mean of all elements (floating tensors only).
  Tensor mean() const;
  /// Mean over `dims` (all dims when empty), keeping them as size 1 if keepdim.
  Tensor mean(const std::vector<int64_t>& dims, bool keepdim = false) const;
  /// Largest element (0-dim result, the tensor's dtype; torch.amax). Needs numel() > 0.
  Tensor max() const;
  /// Largest values over `dims` (all dims when empty), like torch.amax (values only).
  Tensor max(const std::vector<int64_t>& dims, bool keepdim = false) const;
  /// Smallest element (0-dim result; torch.amin). Needs numel() > 0.
  Tensor min() const;
  /// Smallest values over `dims` (all dims when empty), like torch.amin (values only).
  Tensor min(const std::vector<int64_t>& dims, bool keepdim = false) const;
  /// Index of the largest element of the flattened tensor (0-dim int64).
  Tensor argmax() const;
  /// Indices of the largest values along `dim` (int64; first one on ties).
  Tensor argmax(int64_t dim, bool keepdim = false) const;
  /// Same data with a new shape (one extent may be -1).
  Tensor reshape(const Shape& shape) const;
  /// Same data with a new shape (one extent may be -1).
  Tensor view(const Shape& shape) const;
  /// Swaps dims d0 and d1.
  Tensor transpose(int64_t d0, int64_t d1) const;
  /// Elements start, start+step, ... < end along `dim`, with Python's slicing
  /// rules: negative start/end count from the end, out-of-range bounds clamp,
  /// step must be positive (slice(0, -3) is the last three rows).
  Tensor slice(int64_t dim, int64_t start,
               int64_t end = std::numeric_limits<int64_t>::max(), int64_t step = 1) const;
  /// Inserts a size-1 dim at `d` (negative d counts from the end of the result).
  Tensor unsqueeze(int64_t d) const;
  /// Removes every size-1 dim.
  Tensor squeeze() const;
  /// Removes dim `d` if its size is 1 (otherwise the same shape).
  Tensor squeeze(int64_t d) const;
  /// Reorders the dims: result dim i is dim dims[i] of this tensor.
  Tensor permute(const std::vector<int64_t>& dims) const;
  /// Transpose of a 2-D tensor (0-D and 1-D tensors come back unchanged).
  Tensor t() const;
  /// Merges dims start_dim..end_dim into one (a reshape; 0-D becomes 1-D).
  Tensor flatten(int64_t start_dim = 0, int64_t end_dim = -1) const;
  /// Broadcasts to `shape` without copying: -1 keeps a dim, size-1 dims grow,
  /// new dims may be added in front.
  Tensor expand(const Shape& shape) const;
  /// The values converted to `dtype` (this tensor itself when the dtype matches).
  Tensor to(DType dtype) const;
  /// A new handle to the same data without autograd history (in-place ops on
  /// either show in both).
  Tensor detach() const;
  /// out[i][j] = this[index[i][j]][j] for dim 0 (and so on): index is int64 with
  /// this tensor's rank; the result has index's shape.
  Tensor gather(int64_t dim, const Tensor& index) const;
  /// The slices at `index` (int32/int64, 0-D or 1-D) along `dim`.
  Tensor index_select(int64_t dim, const Tensor& index) const;
  /// A copy with src added at `index` (int64) along `dim` (out-of-place scatter_add_).
  Tensor scatter_add(int64_t dim, const Tensor& index, const Tensor& src) const;
  /// A copy with source's slices added at `index` along `dim` (out-of-place index_add_).
  Tensor index_add(int64_t dim, const Tensor& index, const Tensor& source) const;
  /// A copy with src written into slice(dim, start, end, step).
  Tensor slice_scatter(const Tensor& src, int64_t dim, int64_t start,
                       int64_t end = std::numeric_limits<int64_t>::max(),
                       int64_t step = 1) const;

  // ---- in-place (asynchronous; shape and dtype stay) ----
  /// this += alpha * other (other broadcast into this tensor's shape).
  Tensor& add_(const Tensor& other, Scalar alpha = 1);
  /// this += value.
  Tensor& add_(Scalar value);
  /// this -= alpha * other.
  Tensor& sub_(const Tensor& other, Scalar alpha = 1);
  /// this -= value.
  Tensor& sub_(Scalar value);
  /// this *= other.
  Tensor& mul_(const Tensor& other);
  /// this *= value.
  Tensor& mul_(Scalar value);
  /// Sets every element to zero.
  Tensor& zero_();
  /// Copies src into this tensor (src broadcasts to this shape and is cast to this dtype).
  Tensor& copy_(const Tensor& src);
  /// this += value * t1 * t2 in one pass (floating tensors; t1, t2 broadcast).
  Tensor& addcmul_(const Tensor& t1, const Tensor& t2, Scalar value = 1);
  /// this += value * t1 / t2 in one pass (floating tensors; t1, t2 broadcast).
  Tensor& addcdiv_(const Tensor& t1, const Tensor& t2, Scalar value = 1);
  /// Same as add_(other).
  Tensor& operator+=(const Tensor& other) { return add_(other); }
  /// Same as add_(value).
  Tensor& operator+=(Scalar value) { return add_(value); }
  /// Same as sub_(other).
  Tensor& operator-=(const Tensor& other) { return sub_(other); }
  /// Same as sub_(value).
  Tensor& operator-=(Scalar value) { return sub_(value); }
  /// Same as mul_(other).
  Tensor& operator*=(const Tensor& other) { return mul_(other); }
  /// Same as mul_(value).
  Tensor& operator*=(Scalar value) { return mul_(value); }

  // ---- data (sync points: wait for the cluster) ----
  /// All elements in row-major order, converted to T (float, double, int32_t,
  /// int64_t, uint8_t or bool) from any dtype, float16 and bfloat16 included.
  template <typename T>
    requires detail::is_fetch_type_v<T>
  std::vector<T> to_vector() const;
  /// The only element, converted to T; throws std::invalid_argument unless numel() == 1.
  template <typename T>
    requires detail::is_fetch_type_v<T>
  T item() const;

  /// The shared node (library use: autograd, tests).
  const std::shared_ptr<client::TensorNode>& node() const { return node_; }

 private:
  std::shared_ptr<client::TensorNode> node_;
};

// ---- arithmetic (asynchronous; LibTorch's type promotion) ----
/// Elementwise sum with broadcasting.
GT_API Tensor operator+(const Tensor& a, const Tensor& b);
/// Elementwise difference with broadcasting.
GT_API Tensor operator-(const Tensor& a, const Tensor& b);
/// Elementwise product with broadcasting.
GT_API Tensor operator*(const Tensor& a, const Tensor& b);
/// Elementwise true division with broadcasting (integral inputs give float32).
GT_API Tensor operator/(const Tensor& a, const Tensor& b);
/// a + s.
GT_API Tensor operator+(const Tensor& a, Scalar s);
/// a - s.
GT_API Tensor operator-(const Tensor& a, Scalar s);
/// a * s.
GT_API Tensor operator*(const Tensor& a, Scalar s);
/// a / s (true division).
GT_API Tensor operator/(const Tensor& a, Scalar s);
/// s + a.
GT_API Tensor operator+(Scalar s, const Tensor& a);
/// s - a.
GT_API Tensor operator-(Scalar s, const Tensor& a);
/// s * a.
GT_API Tensor operator*(Scalar s, const Tensor& a);
/// s / a (true division).
GT_API Tensor operator/(Scalar s, const Tensor& a);
/// Elementwise negation.
GT_API Tensor operator-(const Tensor& a);
/// Same as a.matmul(b).
GT_API Tensor matmul(const Tensor& a, const Tensor& b);
/// Same as base.pow(exponent).
GT_API Tensor pow(const Tensor& base, const Tensor& exponent);
/// Same as base.pow(exponent).
GT_API Tensor pow(const Tensor& base, Scalar exponent);
/// Elementwise base ** exponent for a number base.
GT_API Tensor pow(Scalar base, const Tensor& exponent);

// ---- comparisons (asynchronous; bool results, broadcasting, operands promoted as in LibTorch) ----
/// Elementwise a < b.
GT_API Tensor operator<(const Tensor& a, const Tensor& b);
/// Elementwise a <= b.
GT_API Tensor operator<=(const Tensor& a, const Tensor& b);
/// Elementwise a > b.
GT_API Tensor operator>(const Tensor& a, const Tensor& b);
/// Elementwise a >= b.
GT_API Tensor operator>=(const Tensor& a, const Tensor& b);
/// Elementwise a == b.
GT_API Tensor operator==(const Tensor& a, const Tensor& b);
/// Elementwise a != b.
GT_API Tensor operator!=(const Tensor& a, const Tensor& b);
/// Elementwise a < s.
GT_API Tensor operator<(const Tensor& a, Scalar s);
/// Elementwise a <= s.
GT_API Tensor operator<=(const Tensor& a, Scalar s);
/// Elementwise a > s.
GT_API Tensor operator>(const Tensor& a, Scalar s);
/// Elementwise a >= s.
GT_API Tensor operator>=(const Tensor& a, Scalar s);
/// Elementwise a == s.
GT_API Tensor operator==(const Tensor& a, Scalar s);
/// Elementwise a != s.
GT_API Tensor operator!=(const Tensor& a, Scalar s);
/// Elementwise s < a.
GT_API Tensor operator<(Scalar s, const Tensor& a);
/// Elementwise s <= a.
GT_API Tensor operator<=(Scalar s, const Tensor& a);
/// Elementwise s > a.
GT_API Tensor operator>(Scalar s, const Tensor& a);
/// Elementwise s >= a.
GT_API Tensor operator>=(Scalar s, const Tensor& a);
/// Elementwise s == a.
GT_API Tensor operator==(Scalar s, const Tensor& a);
/// Elementwise s != a.
GT_API Tensor operator!=(Scalar s, const Tensor& a);

// ---- joining and selection (asynchronous) ----
/// Joins tensors along an existing dim (the others must match; dtypes promote).
GT_API Tensor cat(const std::vector<Tensor>& tensors, int64_t dim = 0);
/// Joins same-shaped tensors along a new dim `dim` (dtypes promote).
GT_API Tensor stack(const std::vector<Tensor>& tensors, int64_t dim = 0);
/// Elementwise condition ? a : b (condition bool; all three broadcast; a, b promote).
GT_API Tensor where(const Tensor& condition, const Tensor& a, const Tensor& b);

/// Prints the values like LibTorch (a sync point), with a footer such as
/// "[ Float32Type{2,3} ]".
GT_API std::ostream& operator<<(std::ostream& out, const Tensor& t);
/// Prints the dtype's name ("float32").
GT_API std::ostream& operator<<(std::ostream& out, DType dtype);

// ---- creation (asynchronous; dtype default float32 unless stated) ----
/// Standard normal samples (floating dtypes).
GT_API Tensor randn(const Shape& shape, const TensorOptions& options = {});
/// Uniform samples in [0, 1) (floating dtypes).
GT_API Tensor rand(const Shape& shape, const TensorOptions& options = {});
/// All zeros.
GT_API Tensor zeros(const Shape& shape, const TensorOptions& options = {});
/// All ones.
GT_API Tensor ones(const Shape& shape, const TensorOptions& options = {});
/// Every element set to `value`.
GT_API Tensor full(const Shape& shape, Scalar value, const TensorOptions& options = {});
/// 0, 1, ..., end-1; int64 when `end` is integral, float32 otherwise.
GT_API Tensor arange(Scalar end, const TensorOptions& options = {});
/// start, start+step, ... < end; int64 when all three are integral, else float32.
GT_API Tensor arange(Scalar start, Scalar end, Scalar step = 1,
                     const TensorOptions& options = {});
/// start, start+1, ... < end with the given options.
GT_API Tensor arange(Scalar start, Scalar end, const TensorOptions& options);

/// A tensor holding `data` (row-major) with `shape`; throws
/// std::invalid_argument when data.size() differs from the shape's element count.
template <typename T>
  requires detail::is_data_type_v<T>
GT_API Tensor tensor(std::vector<T> data, Shape shape);
/// A 1-D tensor holding `data`.
template <typename T>
  requires detail::is_data_type_v<T>
GT_API Tensor tensor(std::vector<T> data);
/// gt::tensor({1.f, 2.f, 3.f, 4.f}, {2, 2}).
template <typename T>
  requires detail::is_data_type_v<T>
Tensor tensor(std::initializer_list<T> data, Shape shape) {
  return tensor(std::vector<T>(data), std::move(shape));
}
/// gt::tensor({1, 2, 3}).
template <typename T>
  requires detail::is_data_type_v<T>
Tensor tensor(std::initializer_list<T> data) {
  return tensor(std::vector<T>(data));
}

}  // namespace gt
