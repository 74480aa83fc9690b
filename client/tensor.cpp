// gt::Tensor: metadata, method ops, in-place ops and data access.

#include <gt/tensor.h>

#include <ostream>

#include "client/internal/autograd.h"
#include "client/internal/format.h"
#include "client/internal/ops.h"
#include "client/internal/session.h"
#include "common/check.h"
#include "common/shape.h"

namespace gt {

namespace client {

TensorNode::TensorNode(std::shared_ptr<Session> session, wire::TensorId id, TensorMeta meta,
                       bool requires_grad)
    : session_(std::move(session)), id_(id), meta_(std::move(meta)),
      requires_grad_(requires_grad) {}

// Note [tensor release batching] in session.h.
TensorNode::~TensorNode() {
  if (session_ && !id_holder_) session_->release(id_);
}

const TensorNode& node_of(const Tensor& t, std::string_view op) {
  if (!t.defined()) {
    throw std::invalid_argument(detail::cat("[client.", op, "] the tensor is undefined"));
  }
  return *t.node();
}

std::vector<TensorMeta> infer_or_throw(const OpInfo& info, const OpCall& call) {
  try {
    return infer(info, call);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(detail::cat("[client.", info.name, "] ", e.what()));
  }
}

namespace {

// Both operands must live in the same session (a tensor made before
// gt::shutdown() cannot meet one made after).
const TensorNode* second_operand(const OpInfo& info, const TensorNode& a, const Tensor* b) {
  if (!b) return nullptr;
  const TensorNode& nb = node_of(*b, info.name);
  GT_CHECK(nb.session() == a.session(), "[client.", info.name,
           "] the operands belong to different sessions (one was created before "
           "gt::shutdown())");
  return &nb;
}

std::vector<TensorMeta> infer_for(const OpInfo& info, const TensorNode& a, const TensorNode* b,
                                  const std::vector<int64_t>& ints,
                                  const std::vector<double>& floats) {
  if (b) {
    const TensorMeta metas[2] = {a.meta(), b->meta()};
    return infer_or_throw(info, OpCall{metas, ints, floats});
  }
  return infer_or_throw(info, OpCall{std::span(&a.meta(), 1), ints, floats});
}

}  // namespace

Tensor apply(OpCode code, const Tensor& a, const Tensor* b, std::vector<int64_t> ints,
             std::vector<double> floats) {
  const OpInfo& info = op_info(code);
  const TensorNode& na = node_of(a, info.name);
  const TensorNode* nb = second_operand(info, na, b);
  std::vector<TensorMeta> out = infer_for(info, na, nb, ints, floats);
  Session& session = *na.session();
  const wire::TensorId id = session.new_id();
  wire::Instr in;
  in.op = code;
  in.outputs.assign(1, id);
  if (nb) {
    in.inputs = {na.id(), nb->id()};
  } else {
    in.inputs.assign(1, na.id());
  }
  in.ints = std::move(ints);
  in.floats = std::move(floats);
  in.dtype = out[0].dtype;
  Tensor result(std::make_shared<TensorNode>(na.session(), id, std::move(out[0]), false));
  const Tensor* operands[] = {&a, b};
  record_op(code, std::span(operands, nb ? 2 : 1), result, in.ints, in.floats);
  session.issue(std::move(in));
  return result;
}

Tensor apply_n(OpCode code, std::span<const Tensor* const> inputs, std::vector<int64_t> ints,
               std::vector<double> floats, DType dtype) {
  const OpInfo& info = op_info(code);
  GT_CHECK(!inputs.empty(), "[client.", info.name, "] ", info.name,
           ": expected a non-empty list of tensors");
  const TensorNode& first = node_of(*inputs[0], info.name);
  std::vector<TensorMeta> metas;
  metas.reserve(inputs.size());
  wire::Instr in;
  in.inputs.reserve(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    const TensorNode& n = i == 0 ? first : *second_operand(info, first, inputs[i]);
    metas.push_back(n.meta());
    in.inputs.push_back(n.id());
  }
  std::vector<TensorMeta> out = infer_or_throw(info, OpCall{metas, ints, floats, dtype});
  Session& session = *first.session();
  const wire::TensorId id = session.new_id();
  in.op = code;
  in.outputs.assign(1, id);
  in.ints = std::move(ints);
  in.floats = std::move(floats);
  in.dtype = out[0].dtype;
  Tensor result(std::make_shared<TensorNode>(first.session(), id, std::move(out[0]), false));
  record_op(code, inputs, result, in.ints, in.floats);
  session.issue(std::move(in));
  return result;
}

void apply_inplace(OpCode code, const Tensor& self, std::span<const Tensor* const> others,
                   std::vector<int64_t> ints, std::vector<double> floats) {
  const OpInfo& info = op_info(code);
  const TensorNode& na = node_of(self, info.name);
  std::vector<TensorMeta> metas{na.meta()};
  wire::Instr in;
  in.inputs.assign(1, na.id());
  for (const Tensor* other : others) {
    const TensorNode& n = *second_operand(info, na, other);
    metas.push_back(n.meta());
    in.inputs.push_back(n.id());
  }
  infer_or_throw(info, OpCall{metas, ints, floats});
  in.op = code;
  in.ints = std::move(ints);
  in.floats = std::move(floats);
  in.dtype = na.meta().dtype;
  record_inplace(code, self, others, in.ints, in.floats);
  na.session()->issue(std::move(in));
}

void apply_inplace(OpCode code, const Tensor& self, const Tensor* other,
                   std::vector<int64_t> ints, std::vector<double> floats) {
  const Tensor* others[] = {other};
  apply_inplace(code, self, std::span(others, other ? 1 : 0), std::move(ints),
                std::move(floats));
}

void scalar_attrs(Scalar s, std::vector<int64_t>& ints, std::vector<double>& floats) {
  if (s.is_floating()) {
    floats.assign(1, s.to_double());
  } else {
    ints.assign(1, s.to_int());
  }
}

Tensor apply_scalar(OpCode code, const Tensor& a, Scalar s) {
  std::vector<int64_t> ints;
  std::vector<double> floats;
  scalar_attrs(s, ints, floats);
  return apply(code, a, nullptr, std::move(ints), std::move(floats));
}

Tensor gelu_backward(const Tensor& grad, const Tensor& x) {
  return apply(OpCode::GeluBackward, grad, &x);
}

}  // namespace client

using client::apply;
using client::apply_inplace;
using client::apply_n;
using client::apply_scalar;
using client::node_of;

Tensor::Tensor(std::shared_ptr<client::TensorNode> node) : node_(std::move(node)) {}

const Shape& Tensor::shape() const { return node_of(*this, "shape").meta().shape; }

int64_t Tensor::size(int64_t d) const {
  const Shape& s = node_of(*this, "size").meta().shape;
  GT_CHECK(!s.empty(), "[client.size] a 0-dim tensor has no dims, asked for dim ", d);
  try {
    return s[wrap_dim(d, static_cast<int64_t>(s.size()))];
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(std::string("[client.size] ") + e.what());
  }
}

int64_t Tensor::dim() const {
  return static_cast<int64_t>(node_of(*this, "dim").meta().shape.size());
}

int64_t Tensor::numel() const { return gt::numel(node_of(*this, "numel").meta().shape); }

DType Tensor::dtype() const { return node_of(*this, "dtype").meta().dtype; }

uint64_t Tensor::id() const { return node_ ? node_->id() : 0; }

bool Tensor::requires_grad() const { return node_ && node_->requires_grad(); }

Tensor Tensor::matmul(const Tensor& other) const { return apply(OpCode::Matmul, *this, &other); }
Tensor Tensor::exp() const { return apply(OpCode::Exp, *this, nullptr); }
Tensor Tensor::log() const { return apply(OpCode::Log, *this, nullptr); }
Tensor Tensor::sqrt() const { return apply(OpCode::Sqrt, *this, nullptr); }
Tensor Tensor::relu() const { return apply(OpCode::Relu, *this, nullptr); }
Tensor Tensor::sigmoid() const { return apply(OpCode::Sigmoid, *this, nullptr); }
Tensor Tensor::tanh() const { return apply(OpCode::Tanh, *this, nullptr); }
Tensor Tensor::rsqrt() const { return apply(OpCode::Rsqrt, *this, nullptr); }
Tensor Tensor::abs() const { return apply(OpCode::Abs, *this, nullptr); }
Tensor Tensor::sign() const { return apply(OpCode::Sign, *this, nullptr); }
Tensor Tensor::pow(Scalar exponent) const {
  return apply_scalar(OpCode::PowScalar, *this, exponent);
}
Tensor Tensor::pow(const Tensor& exponent) const {
  return apply(OpCode::Pow, *this, &exponent);
}
Tensor Tensor::gelu() const { return apply(OpCode::Gelu, *this, nullptr); }
Tensor Tensor::softmax(int64_t dim) const {
  return apply(OpCode::Softmax, *this, nullptr, {dim});
}
Tensor Tensor::log_softmax(int64_t dim) const {
  return apply(OpCode::LogSoftmax, *this, nullptr, {dim});
}

namespace {
std::vector<int64_t> reduce_attrs(const std::vector<int64_t>& dims, bool keepdim) {
  std::vector<int64_t> ints;
  ints.reserve(dims.size() + 1);
  ints.push_back(keepdim ? 1 : 0);
  ints.insert(ints.end(), dims.begin(), dims.end());
  return ints;
}
}  // namespace

Tensor Tensor::sum() const { return apply(OpCode::Sum, *this, nullptr, {0}); }
Tensor Tensor::sum(const std::vector<int64_t>& dims, bool keepdim) const {
  return apply(OpCode::Sum, *this, nullptr, reduce_attrs(dims, keepdim));
}
Tensor Tensor::mean() const { return apply(OpCode::Mean, *this, nullptr, {0}); }
Tensor Tensor::mean(const std::vector<int64_t>& dims, bool keepdim) const {
  return apply(OpCode::Mean, *this, nullptr, reduce_attrs(dims, keepdim));
}
Tensor Tensor::max() const { return apply(OpCode::Amax, *this, nullptr, {0}); }
Tensor Tensor::max(const std::vector<int64_t>& dims, bool keepdim) const {
  return apply(OpCode::Amax, *this, nullptr, reduce_attrs(dims, keepdim));
}
Tensor Tensor::min() const { return apply(OpCode::Amin, *this, nullptr, {0}); }
Tensor Tensor::min(const std::vector<int64_t>& dims, bool keepdim) const {
  return apply(OpCode::Amin, *this, nullptr, reduce_attrs(dims, keepdim));
}
Tensor Tensor::argmax() const { return apply(OpCode::Argmax, *this, nullptr, {0}); }
Tensor Tensor::argmax(int64_t dim, bool keepdim) const {
  return apply(OpCode::Argmax, *this, nullptr, {keepdim ? 1 : 0, dim});
}
Tensor Tensor::reshape(const Shape& shape) const {
  return apply(OpCode::Reshape, *this, nullptr, shape);
}
Tensor Tensor::view(const Shape& shape) const {
  return apply(OpCode::View, *this, nullptr, shape);
}
Tensor Tensor::transpose(int64_t d0, int64_t d1) const {
  return apply(OpCode::Transpose, *this, nullptr, {d0, d1});
}
Tensor Tensor::slice(int64_t dim, int64_t start, int64_t end, int64_t step) const {
  return apply(OpCode::Slice, *this, nullptr, {dim, start, end, step});
}
Tensor Tensor::unsqueeze(int64_t d) const {
  return apply(OpCode::Unsqueeze, *this, nullptr, {d});
}
Tensor Tensor::squeeze() const { return apply(OpCode::Squeeze, *this, nullptr); }
Tensor Tensor::squeeze(int64_t d) const { return apply(OpCode::Squeeze, *this, nullptr, {d}); }
Tensor Tensor::permute(const std::vector<int64_t>& dims) const {
  return apply(OpCode::Permute, *this, nullptr, dims);
}

Tensor Tensor::t() const {
  const Shape& s = node_of(*this, "t").meta().shape;
  GT_CHECK(s.size() <= 2, "[client.t] t() expects a tensor with at most 2 dims, got shape ",
           shape_str(s), "; use transpose(d0, d1)");
  return transpose(0, s.size() < 2 ? 0 : 1);
}

// A reshape, as in LibTorch; flatten of a 0-dim tensor is 1-D, and a range of
// one dim returns the tensor itself.
Tensor Tensor::flatten(int64_t start_dim, int64_t end_dim) const {
  const Shape& s = node_of(*this, "flatten").meta().shape;
  if (s.empty()) return reshape({1});
  const int64_t rank = static_cast<int64_t>(s.size());
  int64_t start = 0, end = 0;
  try {
    start = wrap_dim(start_dim, rank);
    end = wrap_dim(end_dim, rank);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(std::string("[client.flatten] flatten: ") + e.what());
  }
  GT_CHECK(start <= end, "[client.flatten] flatten: start dim ", start_dim,
           " comes after end dim ", end_dim, " for shape ", shape_str(s));
  if (start == end) return *this;
  Shape out(s.begin(), s.begin() + start);
  int64_t merged = 1;
  for (int64_t d = start; d <= end; ++d) merged *= s[d];
  out.push_back(merged);
  out.insert(out.end(), s.begin() + end + 1, s.end());
  return reshape(out);
}

Tensor Tensor::expand(const Shape& shape) const {
  return apply(OpCode::Expand, *this, nullptr, shape);
}
Tensor Tensor::to(DType dtype) const {
  if (node_of(*this, "to").meta().dtype == dtype) return *this;
  const Tensor* in[] = {this};
  return apply_n(OpCode::To, in, {}, {}, dtype);
}
Tensor Tensor::detach() const { return apply(OpCode::Alias, *this, nullptr); }
Tensor Tensor::gather(int64_t dim, const Tensor& index) const {
  return apply(OpCode::Gather, *this, &index, {dim});
}
Tensor Tensor::index_select(int64_t dim, const Tensor& index) const {
  return apply(OpCode::IndexSelect, *this, &index, {dim});
}
Tensor Tensor::scatter_add(int64_t dim, const Tensor& index, const Tensor& src) const {
  const Tensor* in[] = {this, &index, &src};
  return apply_n(OpCode::ScatterAdd, in, {dim});
}
Tensor Tensor::index_add(int64_t dim, const Tensor& index, const Tensor& source) const {
  const Tensor* in[] = {this, &index, &source};
  return apply_n(OpCode::IndexAdd, in, {dim});
}
Tensor Tensor::slice_scatter(const Tensor& src, int64_t dim, int64_t start, int64_t end,
                             int64_t step) const {
  return apply(OpCode::SliceScatter, *this, &src, {dim, start, end, step});
}

namespace {
// The attributes of an in-place op's optional number operand (alpha of add_
// and sub_): none when it is the integer 1, so plain a.add_(b) stays as it was.
void alpha_attrs(Scalar alpha, std::vector<int64_t>& ints, std::vector<double>& floats) {
  if (alpha.is_integral() && alpha.to_int() == 1) return;
  client::scalar_attrs(alpha, ints, floats);
}
}  // namespace

Tensor& Tensor::add_(const Tensor& other, Scalar alpha) {
  std::vector<int64_t> ints;
  std::vector<double> floats;
  alpha_attrs(alpha, ints, floats);
  apply_inplace(OpCode::AddInplace, *this, &other, std::move(ints), std::move(floats));
  return *this;
}
Tensor& Tensor::add_(Scalar value) {
  std::vector<int64_t> ints;
  std::vector<double> floats;
  client::scalar_attrs(value, ints, floats);
  apply_inplace(OpCode::AddScalarInplace, *this, nullptr, std::move(ints), std::move(floats));
  return *this;
}
Tensor& Tensor::sub_(const Tensor& other, Scalar alpha) {
  std::vector<int64_t> ints;
  std::vector<double> floats;
  alpha_attrs(alpha, ints, floats);
  apply_inplace(OpCode::SubInplace, *this, &other, std::move(ints), std::move(floats));
  return *this;
}
Tensor& Tensor::sub_(Scalar value) {
  std::vector<int64_t> ints;
  std::vector<double> floats;
  client::scalar_attrs(value, ints, floats);
  apply_inplace(OpCode::SubScalarInplace, *this, nullptr, std::move(ints), std::move(floats));
  return *this;
}
Tensor& Tensor::mul_(const Tensor& other) {
  apply_inplace(OpCode::MulInplace, *this, &other);
  return *this;
}
Tensor& Tensor::mul_(Scalar value) {
  std::vector<int64_t> ints;
  std::vector<double> floats;
  client::scalar_attrs(value, ints, floats);
  apply_inplace(OpCode::MulScalarInplace, *this, nullptr, std::move(ints), std::move(floats));
  return *this;
}
Tensor& Tensor::zero_() {
  apply_inplace(OpCode::ZeroInplace, *this, nullptr);
  return *this;
}
Tensor& Tensor::copy_(const Tensor& src) {
  apply_inplace(OpCode::CopyInplace, *this, &src);
  return *this;
}
namespace {
// addcmul_ / addcdiv_: self += value * (t1 op t2).
void apply_addc(OpCode code, const Tensor& self, const Tensor& t1, const Tensor& t2,
                Scalar value) {
  std::vector<int64_t> ints;
  std::vector<double> floats;
  client::scalar_attrs(value, ints, floats);
  const Tensor* others[] = {&t1, &t2};
  apply_inplace(code, self, others, std::move(ints), std::move(floats));
}
}  // namespace

Tensor& Tensor::addcmul_(const Tensor& t1, const Tensor& t2, Scalar value) {
  apply_addc(OpCode::AddcmulInplace, *this, t1, t2, value);
  return *this;
}
Tensor& Tensor::addcdiv_(const Tensor& t1, const Tensor& t2, Scalar value) {
  apply_addc(OpCode::AddcdivInplace, *this, t1, t2, value);
  return *this;
}

// ---- data ------------------------------------------------------------------------

namespace {

// Fetches and checks that the reply matches what the op table predicted.
client::FetchResult fetch_checked(const client::TensorNode& n, const char* op) {
  client::FetchResult r = n.session()->fetch(n.id());
  if (r.shape != n.meta().shape || r.dtype != n.meta().dtype) {
    throw ProtocolError(detail::cat("[client.", op, "] the cluster returned tensor ", n.id(),
                                    " as ", shape_str(r.shape), " ", to_string(r.dtype),
                                    ", but the client expected ", shape_str(n.meta().shape),
                                    " ", to_string(n.meta().dtype)));
  }
  return r;
}

}  // namespace

template <typename T>
  requires detail::is_fetch_type_v<T>
std::vector<T> Tensor::to_vector() const {
  const auto& n = node_of(*this, "to_vector");
  client::FetchResult r = fetch_checked(n, "to_vector");
  return client::convert_elements<T>(r.data.data(), gt::numel(r.shape), r.dtype);
}

template <typename T>
  requires detail::is_fetch_type_v<T>
T Tensor::item() const {
  const auto& n = node_of(*this, "item");
  GT_CHECK(gt::numel(n.meta().shape) == 1,
           "[client.item] expected a tensor with one element, got shape ",
           shape_str(n.meta().shape));
  client::FetchResult r = fetch_checked(n, "item");
  return client::convert_elements<T>(r.data.data(), 1, r.dtype)[0];
}

#define GT_INSTANTIATE_FETCH(T)                                 \
  template GT_API std::vector<T> Tensor::to_vector<T>() const; \
  template GT_API T Tensor::item<T>() const;
GT_INSTANTIATE_FETCH(float)
GT_INSTANTIATE_FETCH(double)
GT_INSTANTIATE_FETCH(int32_t)
GT_INSTANTIATE_FETCH(int64_t)
GT_INSTANTIATE_FETCH(uint8_t)
GT_INSTANTIATE_FETCH(bool)
#undef GT_INSTANTIATE_FETCH

std::ostream& operator<<(std::ostream& out, const Tensor& t) {
  if (!t.defined()) return out << "[ Tensor (undefined) ]";
  client::FetchResult r = fetch_checked(*t.node(), "print");
  const auto values = client::convert_elements<double>(r.data.data(), gt::numel(r.shape), r.dtype);
  return out << client::format_tensor(values, r.shape, r.dtype);
}

std::ostream& operator<<(std::ostream& out, DType dtype) { return out << to_string(dtype); }

}  // namespace gt
