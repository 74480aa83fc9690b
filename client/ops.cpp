// Free functions of the API: arithmetic operators and tensor creation.

#include <bit>

#include <gt/tensor.h>

#include "client/internal/api.h"
#include "client/internal/autograd.h"
#include "client/internal/ops.h"
#include "client/internal/session.h"
#include "common/check.h"
#include "common/shape.h"
#include "common/zero_copy.h"

namespace gt {

using client::apply;

namespace {

Tensor with_scalar(OpCode code, const Tensor& a, Scalar s) {
  return client::apply_scalar(code, a, s);
}

// Creation ops are checked before the session is touched, so a bad shape
// throws even when no cluster is reachable.
Tensor create(OpCode code, std::vector<int64_t> ints, std::vector<double> floats, DType dtype,
              bool requires_grad, zmq::message_t* payload = nullptr) {
  const OpInfo& info = op_info(code);
  std::vector<TensorMeta> out =
      client::infer_or_throw(info, OpCall{{}, ints, floats, dtype});
  if (requires_grad) client::check_requires_grad_dtype(dtype, info.name);
  std::shared_ptr<client::Session> session = client::current_session();
  const wire::TensorId id = session->new_id();
  wire::Instr in;
  in.op = code;
  in.outputs.assign(1, id);
  in.ints = std::move(ints);
  in.floats = std::move(floats);
  in.dtype = dtype;
  if (payload) {
    session->issue(std::move(in), std::move(*payload));
  } else {
    session->issue(std::move(in));
  }
  return Tensor(std::make_shared<client::TensorNode>(std::move(session), id,
                                                     std::move(out[0]), requires_grad));
}

}  // namespace

Tensor operator+(const Tensor& a, const Tensor& b) { return apply(OpCode::Add, a, &b); }
Tensor operator-(const Tensor& a, const Tensor& b) { return apply(OpCode::Sub, a, &b); }
Tensor operator*(const Tensor& a, const Tensor& b) { return apply(OpCode::Mul, a, &b); }
Tensor operator/(const Tensor& a, const Tensor& b) { return apply(OpCode::Div, a, &b); }
Tensor operator+(const Tensor& a, Scalar s) { return with_scalar(OpCode::AddScalar, a, s); }
Tensor operator-(const Tensor& a, Scalar s) { return with_scalar(OpCode::SubScalar, a, s); }
Tensor operator*(const Tensor& a, Scalar s) { return with_scalar(OpCode::MulScalar, a, s); }
Tensor operator/(const Tensor& a, Scalar s) { return with_scalar(OpCode::DivScalar, a, s); }
Tensor operator+(Scalar s, const Tensor& a) { return with_scalar(OpCode::AddScalar, a, s); }
Tensor operator-(Scalar s, const Tensor& a) { return with_scalar(OpCode::RSubScalar, a, s); }
Tensor operator*(Scalar s, const Tensor& a) { return with_scalar(OpCode::MulScalar, a, s); }
Tensor operator/(Scalar s, const Tensor& a) { return with_scalar(OpCode::RDivScalar, a, s); }
Tensor operator-(const Tensor& a) { return apply(OpCode::Neg, a, nullptr); }
Tensor matmul(const Tensor& a, const Tensor& b) { return apply(OpCode::Matmul, a, &b); }

Tensor pow(const Tensor& base, const Tensor& exponent) { return base.pow(exponent); }
Tensor pow(const Tensor& base, Scalar exponent) { return base.pow(exponent); }
Tensor pow(Scalar base, const Tensor& exponent) {
  return with_scalar(OpCode::RPowScalar, exponent, base);
}

Tensor operator<(const Tensor& a, const Tensor& b) { return apply(OpCode::Lt, a, &b); }
Tensor operator<=(const Tensor& a, const Tensor& b) { return apply(OpCode::Le, a, &b); }
Tensor operator>(const Tensor& a, const Tensor& b) { return apply(OpCode::Gt, a, &b); }
Tensor operator>=(const Tensor& a, const Tensor& b) { return apply(OpCode::Ge, a, &b); }
Tensor operator==(const Tensor& a, const Tensor& b) { return apply(OpCode::Eq, a, &b); }
Tensor operator!=(const Tensor& a, const Tensor& b) { return apply(OpCode::Ne, a, &b); }
Tensor operator<(const Tensor& a, Scalar s) { return with_scalar(OpCode::LtScalar, a, s); }
Tensor operator<=(const Tensor& a, Scalar s) { return with_scalar(OpCode::LeScalar, a, s); }
Tensor operator>(const Tensor& a, Scalar s) { return with_scalar(OpCode::GtScalar, a, s); }
Tensor operator>=(const Tensor& a, Scalar s) { return with_scalar(OpCode::GeScalar, a, s); }
Tensor operator==(const Tensor& a, Scalar s) { return with_scalar(OpCode::EqScalar, a, s); }
Tensor operator!=(const Tensor& a, Scalar s) { return with_scalar(OpCode::NeScalar, a, s); }
// A number on the left flips the comparison: s < a is a > s.
Tensor operator<(Scalar s, const Tensor& a) { return with_scalar(OpCode::GtScalar, a, s); }
Tensor operator<=(Scalar s, const Tensor& a) { return with_scalar(OpCode::GeScalar, a, s); }
Tensor operator>(Scalar s, const Tensor& a) { return with_scalar(OpCode::LtScalar, a, s); }
Tensor operator>=(Scalar s, const Tensor& a) { return with_scalar(OpCode::LeScalar, a, s); }
Tensor operator==(Scalar s, const Tensor& a) { return with_scalar(OpCode::EqScalar, a, s); }
Tensor operator!=(Scalar s, const Tensor& a) { return with_scalar(OpCode::NeScalar, a, s); }

namespace {
Tensor join(OpCode code, const std::vector<Tensor>& tensors, int64_t dim) {
  std::vector<const Tensor*> inputs(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) inputs[i] = &tensors[i];
  return client::apply_n(code, inputs, {dim});
}
}  // namespace

Tensor cat(const std::vector<Tensor>& tensors, int64_t dim) {
  return join(OpCode::Cat, tensors, dim);
}
Tensor stack(const std::vector<Tensor>& tensors, int64_t dim) {
  return join(OpCode::Stack, tensors, dim);
}
Tensor where(const Tensor& condition, const Tensor& a, const Tensor& b) {
  const Tensor* inputs[] = {&condition, &a, &b};
  return client::apply_n(OpCode::Where, inputs);
}

Tensor randn(const Shape& shape, const TensorOptions& options) {
  return create(OpCode::Randn, shape, {}, options.dtype(), options.requires_grad());
}
Tensor rand(const Shape& shape, const TensorOptions& options) {
  return create(OpCode::Rand, shape, {}, options.dtype(), options.requires_grad());
}
Tensor zeros(const Shape& shape, const TensorOptions& options) {
  return create(OpCode::Zeros, shape, {}, options.dtype(), options.requires_grad());
}
Tensor ones(const Shape& shape, const TensorOptions& options) {
  return create(OpCode::Ones, shape, {}, options.dtype(), options.requires_grad());
}
Tensor full(const Shape& shape, Scalar value, const TensorOptions& options) {
  return create(OpCode::Full, shape, {value.to_double()}, options.dtype(),
                options.requires_grad());
}

Tensor arange(Scalar end, const TensorOptions& options) {
  return arange(0, end, 1, options);
}
Tensor arange(Scalar start, Scalar end, const TensorOptions& options) {
  return arange(start, end, 1, options);
}
Tensor arange(Scalar start, Scalar end, Scalar step, const TensorOptions& options) {
  const bool integral = start.is_integral() && end.is_integral() && step.is_integral();
  const DType dtype = options.dtype_or(integral ? DType::Int64 : DType::Float32);
  return create(OpCode::Arange, {}, {start.to_double(), end.to_double(), step.to_double()},
                dtype, options.requires_grad());
}

template <typename T>
  requires detail::is_data_type_v<T>
Tensor tensor(std::vector<T> data, Shape shape) {
  int64_t n = 0;
  try {
    n = checked_numel(shape);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(std::string("[client.tensor] ") + e.what());
  }
  GT_CHECK(static_cast<int64_t>(data.size()) == n, "[client.tensor] data has ", data.size(),
           " elements but shape ", shape_str(shape), " has ", n);
  zmq::message_t payload;
  if constexpr (std::is_same_v<T, bool>) {
    // std::vector<bool> is packed: send one byte per element.
    std::vector<uint8_t> bytes(data.size());
    for (size_t i = 0; i < data.size(); ++i) bytes[i] = data[i] ? 1 : 0;
    if (!bytes.empty()) {
      auto* owned = new std::vector<uint8_t>(std::move(bytes));
      payload = zero_copy_frame(owned->data(), owned->size(), owned);
    }
  } else if (!data.empty()) {
    // Zero-copy: the frame owns the moved vector until ZeroMQ has sent it.
    auto* owned = new std::vector<T>(std::move(data));
    payload = zero_copy_frame(owned->data(), owned->size() * sizeof(T), owned);
  }
  return create(OpCode::FromData, std::move(shape), {}, dtype_of<T>(), false, &payload);
}

template <typename T>
  requires detail::is_data_type_v<T>
Tensor tensor(std::vector<T> data) {
  Shape shape{static_cast<int64_t>(data.size())};
  return tensor<T>(std::move(data), std::move(shape));
}

#define GT_INSTANTIATE_TENSOR(T)                                         \
  template GT_API Tensor tensor<T>(std::vector<T> data, Shape shape); \
  template GT_API Tensor tensor<T>(std::vector<T> data);
GT_INSTANTIATE_TENSOR(float)
GT_INSTANTIATE_TENSOR(double)
GT_INSTANTIATE_TENSOR(int32_t)
GT_INSTANTIATE_TENSOR(int64_t)
GT_INSTANTIATE_TENSOR(bool)
#undef GT_INSTANTIATE_TENSOR

}  // namespace gt
