#pragma once
// Moving data between gt and a local LibTorch for comparisons in tests.

#include <ATen/ATen.h>

#include <gt/gt.h>

namespace gt::test {

inline at::ScalarType to_torch(gt::DType t) {
  switch (t) {
    case gt::DType::Float32: return at::kFloat;
    case gt::DType::Float64: return at::kDouble;
    case gt::DType::Float16: return at::kHalf;
    case gt::DType::BFloat16: return at::kBFloat16;
    case gt::DType::Int32: return at::kInt;
    case gt::DType::Int64: return at::kLong;
    case gt::DType::Bool: return at::kBool;
  }
  return at::kFloat;
}

/// Uploads a local tensor to gt with the same values, shape and dtype.
inline gt::Tensor to_gt(const at::Tensor& t) {
  const at::Tensor c = t.contiguous();
  const std::vector<int64_t> shape(c.sizes().begin(), c.sizes().end());
  switch (c.scalar_type()) {
    case at::kFloat: return gt::tensor(std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel()), shape);
    case at::kDouble: return gt::tensor(std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel()), shape);
    case at::kInt: return gt::tensor(std::vector<int32_t>(c.data_ptr<int32_t>(), c.data_ptr<int32_t>() + c.numel()), shape);
    case at::kLong: return gt::tensor(std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel()), shape);
    case at::kBool: {
      std::vector<bool> v(c.numel());
      for (int64_t i = 0; i < c.numel(); ++i) v[i] = c.data_ptr<bool>()[i];
      return gt::tensor(v, shape);
    }
    case at::kHalf:
    case at::kBFloat16:
      // Uploaded as float32 (exact) and converted on the worker.
      return to_gt(c.to(at::kFloat)).to(c.scalar_type() == at::kHalf ? gt::kFloat16
                                                                     : gt::kBFloat16);
    default:
      throw std::invalid_argument("to_gt: unsupported dtype");
  }
}

/// Fetches a gt tensor into a local float64 tensor of the same shape.
inline at::Tensor fetch_double(const gt::Tensor& t) {
  std::vector<double> v = t.to_vector<double>();
  return at::tensor(v, at::kDouble).reshape(t.shape());
}

}  // namespace gt::test
