#include "worker/kernels.h"

#include <array>
#include <bit>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <numeric>
#include <tuple>
#include <vector>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/ScalarOps.h>

#include "common/check.h"

namespace gt::worker {

at::ScalarType to_scalar_type(DType t) {
  switch (t) {
    case DType::Float32: return at::kFloat;
    case DType::Float64: return at::kDouble;
    case DType::Float16: return at::kHalf;
    case DType::BFloat16: return at::kBFloat16;
    case DType::Int32: return at::kInt;
    case DType::Int64: return at::kLong;
    case DType::Bool: return at::kBool;
  }
  return at::kFloat;
}

std::optional<DType> to_dtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return DType::Float32;
    case at::kDouble: return DType::Float64;
    case at::kHalf: return DType::Float16;
    case at::kBFloat16: return DType::BFloat16;
    case at::kInt: return DType::Int32;
    case at::kLong: return DType::Int64;
    case at::kBool: return DType::Bool;
    default: return std::nullopt;
  }
}

at::Generator make_cpu_generator(uint64_t seed) {
  return at::make_generator<at::CPUGeneratorImpl>(seed);
}

namespace {

// ---- helpers ------------------------------------------------------------------

at::IntArrayRef shape_arg(std::span<const int64_t> ints) {
  return at::IntArrayRef(ints.data(), ints.size());
}

at::ScalarType out_type(const KernelArgs& a) { return to_scalar_type(a.out->dtype); }

// LibTorch's promotion agrees with the op table's (common/dtype_rules.cpp
// mirrors it); this cast only fires where the two could differ, and is a
// single comparison otherwise.
at::Tensor as_out(at::Tensor t, const KernelArgs& a) {
  const at::ScalarType want = out_type(a);
  return t.scalar_type() == want ? t : t.to(want);
}

// The number operand of *_scalar ops: ints[0] when integral (so int + 1 stays
// integral), floats[0] when floating. The op table guarantees exactly one.
at::Scalar scalar_arg(const KernelArgs& a) {
  return a.ints.empty() ? at::Scalar(a.floats[0]) : at::Scalar(a.ints[0]);
}

// Random values come from the session's CPU generator, so a seed gives the same
// values on every device; other devices get a copy.
at::Tensor on_device(at::Tensor t, const KernelArgs& a) {
  return a.device.is_cpu() ? t : t.to(a.device);
}

at::TensorOptions creation_options(const KernelArgs& a) {
  return at::TensorOptions().dtype(to_scalar_type(a.dtype)).device(a.device);
}

// ---- creation -----------------------------------------------------------------

at::Tensor k_randn(const KernelArgs& a) {
  auto t = at::randn(shape_arg(a.ints), *a.generator,
                     at::TensorOptions().dtype(to_scalar_type(a.dtype)));
  return on_device(std::move(t), a);
}

at::Tensor k_rand(const KernelArgs& a) {
  auto t =
      at::rand(shape_arg(a.ints), *a.generator, at::TensorOptions().dtype(to_scalar_type(a.dtype)));
  return on_device(std::move(t), a);
}

at::Tensor k_zeros(const KernelArgs& a) {
  return at::zeros(shape_arg(a.ints), creation_options(a));
}

at::Tensor k_ones(const KernelArgs& a) { return at::ones(shape_arg(a.ints), creation_options(a)); }

at::Tensor k_full(const KernelArgs& a) {
  return at::full(shape_arg(a.ints), at::Scalar(a.floats[0]), creation_options(a));
}

bool integral_valued(double x) { return std::nearbyint(x) == x && std::fabs(x) < 0x1p53; }

// The element count must be the op table's ceil((end - start) / step) computed
// in double. LibTorch computes the count of integral aranges after converting
// the bounds to integers, so fractional integral aranges run in float64 and are
// converted (truncating, as a cast does).
at::Tensor k_arange(const KernelArgs& a) {
  const double start = a.floats[0], end = a.floats[1], step = a.floats[2];
  if (is_floating(a.dtype) ||
      (integral_valued(start) && integral_valued(end) && integral_valued(step))) {
    if (is_floating(a.dtype)) {
      return at::arange(at::Scalar(start), at::Scalar(end), at::Scalar(step), creation_options(a));
    }
    return at::arange(at::Scalar(static_cast<int64_t>(start)),
                      at::Scalar(static_cast<int64_t>(end)), at::Scalar(static_cast<int64_t>(step)),
                      creation_options(a));
  }
  auto t = at::arange(at::Scalar(start), at::Scalar(end), at::Scalar(step),
                      at::TensorOptions().dtype(at::kDouble).device(a.device));
  return t.to(to_scalar_type(a.dtype));
}

// Note [FromData zero copy]: the frame's bytes become the tensor's storage when
// they are 8-byte aligned (ZeroMQ hands out received data at arbitrary offsets
// of its receive buffer, so this is not guaranteed); the message moves to the
// heap first, because a small message keeps its bytes inside the message object
// itself. Otherwise the bytes are copied once.
at::Tensor k_from_data(const KernelArgs& a) {
  const auto type = to_scalar_type(a.dtype);
  const at::IntArrayRef shape = shape_arg(a.ints);
  if (a.payload->size() == 0) return at::empty(shape, creation_options(a));
  auto owned = std::make_shared<zmq::message_t>(std::move(*a.payload));
  void* data = owned->data();
  at::Tensor t;
  if (reinterpret_cast<uintptr_t>(data) % 8 == 0) {
    t = at::from_blob(
        data, shape, [owned](void*) mutable { owned.reset(); }, at::TensorOptions().dtype(type));
  } else {
    t = at::empty(shape, at::TensorOptions().dtype(type));
    std::memcpy(t.data_ptr(), data, owned->size());
  }
  return on_device(std::move(t), a);
}

at::Tensor k_manual_seed(const KernelArgs& a) {
  *a.generator = make_cpu_generator(std::bit_cast<uint64_t>(a.ints[0]));
  return {};
}

// ---- elementwise ----------------------------------------------------------------

const at::Tensor& in0(const KernelArgs& a) { return a.inputs[0]; }
const at::Tensor& in1(const KernelArgs& a) { return a.inputs[1]; }

at::Tensor k_add(const KernelArgs& a) { return as_out(at::add(in0(a), in1(a)), a); }
at::Tensor k_sub(const KernelArgs& a) { return as_out(at::sub(in0(a), in1(a)), a); }
at::Tensor k_mul(const KernelArgs& a) { return as_out(at::mul(in0(a), in1(a)), a); }
at::Tensor k_div(const KernelArgs& a) { return as_out(at::div(in0(a), in1(a)), a); }

at::Tensor k_add_scalar(const KernelArgs& a) { return as_out(at::add(in0(a), scalar_arg(a)), a); }
at::Tensor k_sub_scalar(const KernelArgs& a) { return as_out(at::sub(in0(a), scalar_arg(a)), a); }
at::Tensor k_rsub_scalar(const KernelArgs& a) { return as_out(at::rsub(in0(a), scalar_arg(a)), a); }
at::Tensor k_mul_scalar(const KernelArgs& a) { return as_out(at::mul(in0(a), scalar_arg(a)), a); }
at::Tensor k_div_scalar(const KernelArgs& a) { return as_out(at::div(in0(a), scalar_arg(a)), a); }

// s / t as a true division with the number as a wrapped scalar (the way
// LibTorch treats a number operand), so the promotion is the op table's.
at::Tensor k_rdiv_scalar(const KernelArgs& a) {
  return as_out(at::div(at::native::wrapped_scalar_tensor(scalar_arg(a)), in0(a)), a);
}

at::Tensor k_neg(const KernelArgs& a) { return at::neg(in0(a)); }

// exp/log/... of integral or bool tensors compute in the inferred float dtype.
at::Tensor float_input(const KernelArgs& a) {
  const at::ScalarType want = out_type(a);
  return in0(a).scalar_type() == want ? in0(a) : in0(a).to(want);
}

at::Tensor k_exp(const KernelArgs& a) { return at::exp(float_input(a)); }
at::Tensor k_log(const KernelArgs& a) { return at::log(float_input(a)); }
at::Tensor k_sqrt(const KernelArgs& a) { return at::sqrt(float_input(a)); }
at::Tensor k_relu(const KernelArgs& a) { return at::relu(in0(a)); }
at::Tensor k_sigmoid(const KernelArgs& a) { return at::sigmoid(float_input(a)); }
at::Tensor k_tanh(const KernelArgs& a) { return at::tanh(float_input(a)); }

// ---- linear algebra ---------------------------------------------------------------

at::Tensor k_matmul(const KernelArgs& a) { return at::matmul(in0(a), in1(a)); }

// ---- reductions --------------------------------------------------------------------

// ints = [keepdim, dims...]; no dims = every dim (listed explicitly when
// keepdim, so the result keeps rank).
at::Tensor reduce(const KernelArgs& a, bool mean) {
  const at::Tensor& x = in0(a);
  const bool keepdim = a.ints[0] != 0;
  const auto dims = a.ints.subspan(1);
  if (dims.empty() && !keepdim) {
    return mean ? at::mean(x) : at::sum(x, out_type(a));
  }
  std::vector<int64_t> all;
  at::IntArrayRef d = shape_arg(dims);
  if (dims.empty()) {
    all.resize(x.dim());
    std::iota(all.begin(), all.end(), int64_t{0});
    d = all;
  }
  return mean ? at::mean(x, d, keepdim) : at::sum(x, d, keepdim, out_type(a));
}

at::Tensor k_sum(const KernelArgs& a) { return reduce(a, false); }
at::Tensor k_mean(const KernelArgs& a) { return reduce(a, true); }

// ---- shape -----------------------------------------------------------------------

// Reshape and View both alias the input when the layout allows and copy
// otherwise (LibTorch's reshape); gt's view is documented that way, since a
// stream cannot fail later because a layout happened not to be viewable.
at::Tensor k_reshape(const KernelArgs& a) { return at::reshape(in0(a), a.out->shape); }

at::Tensor k_transpose(const KernelArgs& a) { return at::transpose(in0(a), a.ints[0], a.ints[1]); }

at::Tensor k_slice(const KernelArgs& a) {
  return at::slice(in0(a), a.ints[0], a.ints[1], a.ints[2], a.ints[3]);
}

// ---- in-place (mutate inputs[0], no output) ------------------------------------------

// add_/sub_ carry an optional alpha (none = 1).
at::Scalar alpha_arg(const KernelArgs& a) {
  return a.ints.empty() && a.floats.empty() ? at::Scalar(int64_t{1}) : scalar_arg(a);
}
at::Tensor k_add_(const KernelArgs& a) {
  in0(a).add_(in1(a), alpha_arg(a));
  return {};
}
at::Tensor k_add_scalar_(const KernelArgs& a) {
  in0(a).add_(scalar_arg(a));
  return {};
}
at::Tensor k_sub_(const KernelArgs& a) {
  in0(a).sub_(in1(a), alpha_arg(a));
  return {};
}
at::Tensor k_sub_scalar_(const KernelArgs& a) {
  in0(a).sub_(scalar_arg(a));
  return {};
}
at::Tensor k_mul_(const KernelArgs& a) {
  in0(a).mul_(in1(a));
  return {};
}
at::Tensor k_mul_scalar_(const KernelArgs& a) {
  in0(a).mul_(scalar_arg(a));
  return {};
}
at::Tensor k_zero_(const KernelArgs& a) {
  in0(a).zero_();
  return {};
}

// ---- protocol version 2: elementwise ---------------------------------------------

at::Tensor k_rsqrt(const KernelArgs& a) { return at::rsqrt(float_input(a)); }
at::Tensor k_abs(const KernelArgs& a) { return at::abs(in0(a)); }
at::Tensor k_sign(const KernelArgs& a) { return at::sign(in0(a)); }
at::Tensor k_pow(const KernelArgs& a) { return as_out(at::pow(in0(a), in1(a)), a); }
at::Tensor k_pow_scalar(const KernelArgs& a) { return as_out(at::pow(in0(a), scalar_arg(a)), a); }
at::Tensor k_rpow_scalar(const KernelArgs& a) { return as_out(at::pow(scalar_arg(a), in0(a)), a); }
at::Tensor k_gelu(const KernelArgs& a) { return at::gelu(in0(a)); }
at::Tensor k_gelu_backward(const KernelArgs& a) {
  return as_out(at::gelu_backward(in0(a), in1(a)), a);
}

at::Tensor k_lt(const KernelArgs& a) { return at::lt(in0(a), in1(a)); }
at::Tensor k_le(const KernelArgs& a) { return at::le(in0(a), in1(a)); }
at::Tensor k_gt(const KernelArgs& a) { return at::gt(in0(a), in1(a)); }
at::Tensor k_ge(const KernelArgs& a) { return at::ge(in0(a), in1(a)); }
at::Tensor k_eq(const KernelArgs& a) { return at::eq(in0(a), in1(a)); }
at::Tensor k_ne(const KernelArgs& a) { return at::ne(in0(a), in1(a)); }
at::Tensor k_lt_scalar(const KernelArgs& a) { return at::lt(in0(a), scalar_arg(a)); }
at::Tensor k_le_scalar(const KernelArgs& a) { return at::le(in0(a), scalar_arg(a)); }
at::Tensor k_gt_scalar(const KernelArgs& a) { return at::gt(in0(a), scalar_arg(a)); }
at::Tensor k_ge_scalar(const KernelArgs& a) { return at::ge(in0(a), scalar_arg(a)); }
at::Tensor k_eq_scalar(const KernelArgs& a) { return at::eq(in0(a), scalar_arg(a)); }
at::Tensor k_ne_scalar(const KernelArgs& a) { return at::ne(in0(a), scalar_arg(a)); }

at::Tensor k_where(const KernelArgs& a) {
  return as_out(at::where(in0(a), in1(a), a.inputs[2]), a);
}

// A dtype conversion; the same tensor when the dtype already matches (as
// Tensor::to does).
at::Tensor k_to(const KernelArgs& a) { return in0(a).to(out_type(a)); }

// ---- softmax ------------------------------------------------------------------------

at::Tensor k_softmax(const KernelArgs& a) { return at::softmax(in0(a), a.ints[0]); }
at::Tensor k_log_softmax(const KernelArgs& a) { return at::log_softmax(in0(a), a.ints[0]); }

// ---- protocol version 2: reductions -------------------------------------------------

// ints = [keepdim, dims...]; no dims = every dim (at::amax reduces every dim
// for an empty list).
at::Tensor k_amax(const KernelArgs& a) {
  return at::amax(in0(a), shape_arg(a.ints.subspan(1)), a.ints[0] != 0);
}
at::Tensor k_amin(const KernelArgs& a) {
  return at::amin(in0(a), shape_arg(a.ints.subspan(1)), a.ints[0] != 0);
}

at::Tensor k_argmax(const KernelArgs& a) {
  const bool keepdim = a.ints[0] != 0;
  if (a.ints.size() == 1) return at::argmax(in0(a), c10::nullopt, keepdim);
  return at::argmax(in0(a), a.ints[1], keepdim);
}

// ---- protocol version 2: joining and shape ------------------------------------------

at::TensorList tensor_list(const KernelArgs& a) {
  return at::TensorList(a.inputs.data(), a.inputs.size());
}

at::Tensor k_cat(const KernelArgs& a) { return as_out(at::cat(tensor_list(a), a.ints[0]), a); }
at::Tensor k_stack(const KernelArgs& a) {
  return as_out(at::stack(tensor_list(a), a.ints[0]), a);
}
at::Tensor k_unsqueeze(const KernelArgs& a) { return at::unsqueeze(in0(a), a.ints[0]); }
at::Tensor k_squeeze(const KernelArgs& a) {
  return a.ints.empty() ? at::squeeze(in0(a)) : at::squeeze(in0(a), a.ints[0]);
}
at::Tensor k_permute(const KernelArgs& a) { return at::permute(in0(a), shape_arg(a.ints)); }
at::Tensor k_expand(const KernelArgs& a) { return in0(a).expand(a.out->shape); }

// detach(): a second id for the same tensor (same storage, same metadata).
// Workers never change a tensor's metadata in place, so sharing the handle is
// enough, and costs a reference count.
at::Tensor k_alias(const KernelArgs& a) { return in0(a); }

at::Tensor k_copy_(const KernelArgs& a) {
  in0(a).copy_(in1(a));
  return {};
}
at::Tensor k_addcmul_(const KernelArgs& a) {
  in0(a).addcmul_(in1(a), a.inputs[2], scalar_arg(a));
  return {};
}
at::Tensor k_addcdiv_(const KernelArgs& a) {
  in0(a).addcdiv_(in1(a), a.inputs[2], scalar_arg(a));
  return {};
}

// ---- protocol version 2: indexing ----------------------------------------------------

// LibTorch's CPU kernels check index values and throw c10::Error; its CUDA
// kernels only assert on the device, which poisons the CUDA context. So off the
// CPU the range is checked here first (one small reduction and one copy to the
// host), and an index out of [0, size) fails the op like the CPU check does.
void check_index_range(const at::Tensor& index, const at::Tensor& self, int64_t dim) {
  if (index.device().is_cpu() || index.numel() == 0) return;
  const int64_t size = self.dim() == 0 ? 1 : self.size(dim);
  const auto [lo, hi] = at::aminmax(index);
  const at::Tensor range = at::stack({lo.to(at::kLong), hi.to(at::kLong)}).cpu();
  const int64_t min = range[0].item<int64_t>(), max = range[1].item<int64_t>();
  if (min < 0 || max >= size) {
    throw std::out_of_range(gt::detail::cat("index ", min < 0 ? min : max,
                                            " is out of bounds for dimension ", dim,
                                            " with size ", size));
  }
}

int64_t dim_arg(const KernelArgs& a) {
  return a.ints[0] < 0 ? a.ints[0] + std::max<int64_t>(in0(a).dim(), 1) : a.ints[0];
}

at::Tensor k_gather(const KernelArgs& a) {
  const int64_t dim = dim_arg(a);
  check_index_range(in1(a), in0(a), dim);
  return at::gather(in0(a), dim, in1(a));
}

at::Tensor k_index_select(const KernelArgs& a) {
  const int64_t dim = dim_arg(a);
  check_index_range(in1(a), in0(a), dim);
  return at::index_select(in0(a), dim, in1(a));
}

at::Tensor k_scatter_add(const KernelArgs& a) {
  const int64_t dim = dim_arg(a);
  check_index_range(in1(a), in0(a), dim);
  return at::scatter_add(in0(a), dim, in1(a), a.inputs[2]);
}

at::Tensor k_index_add(const KernelArgs& a) {
  const int64_t dim = dim_arg(a);
  check_index_range(in1(a), in0(a), dim);
  return at::index_add(in0(a), dim, in1(a), a.inputs[2]);
}

at::Tensor k_slice_scatter(const KernelArgs& a) {
  return at::slice_scatter(in0(a), in1(a), a.ints[0], a.ints[1], a.ints[2], a.ints[3]);
}

// ---- the table ---------------------------------------------------------------------

// A switch rather than a positional list, so that -Wswitch names an op code
// added to the table without a kernel.
constexpr Kernel kernel_for(OpCode op) {
  switch (op) {
    case OpCode::Randn: return k_randn;
    case OpCode::Rand: return k_rand;
    case OpCode::Zeros: return k_zeros;
    case OpCode::Ones: return k_ones;
    case OpCode::Full: return k_full;
    case OpCode::Arange: return k_arange;
    case OpCode::FromData: return k_from_data;
    case OpCode::ManualSeed: return k_manual_seed;
    case OpCode::Add: return k_add;
    case OpCode::Sub: return k_sub;
    case OpCode::Mul: return k_mul;
    case OpCode::Div: return k_div;
    case OpCode::AddScalar: return k_add_scalar;
    case OpCode::SubScalar: return k_sub_scalar;
    case OpCode::RSubScalar: return k_rsub_scalar;
    case OpCode::MulScalar: return k_mul_scalar;
    case OpCode::DivScalar: return k_div_scalar;
    case OpCode::RDivScalar: return k_rdiv_scalar;
    case OpCode::Neg: return k_neg;
    case OpCode::Exp: return k_exp;
    case OpCode::Log: return k_log;
    case OpCode::Sqrt: return k_sqrt;
    case OpCode::Relu: return k_relu;
    case OpCode::Sigmoid: return k_sigmoid;
    case OpCode::Tanh: return k_tanh;
    case OpCode::Matmul: return k_matmul;
    case OpCode::Sum: return k_sum;
    case OpCode::Mean: return k_mean;
    case OpCode::Reshape: return k_reshape;
    case OpCode::View: return k_reshape;
    case OpCode::Transpose: return k_transpose;
    case OpCode::Slice: return k_slice;
    case OpCode::AddInplace: return k_add_;
    case OpCode::AddScalarInplace: return k_add_scalar_;
    case OpCode::SubInplace: return k_sub_;
    case OpCode::SubScalarInplace: return k_sub_scalar_;
    case OpCode::MulInplace: return k_mul_;
    case OpCode::MulScalarInplace: return k_mul_scalar_;
    case OpCode::ZeroInplace: return k_zero_;
    case OpCode::Rsqrt: return k_rsqrt;
    case OpCode::Abs: return k_abs;
    case OpCode::Sign: return k_sign;
    case OpCode::Pow: return k_pow;
    case OpCode::PowScalar: return k_pow_scalar;
    case OpCode::RPowScalar: return k_rpow_scalar;
    case OpCode::Gelu: return k_gelu;
    case OpCode::Softmax: return k_softmax;
    case OpCode::LogSoftmax: return k_log_softmax;
    case OpCode::Amax: return k_amax;
    case OpCode::Amin: return k_amin;
    case OpCode::Argmax: return k_argmax;
    case OpCode::Lt: return k_lt;
    case OpCode::Le: return k_le;
    case OpCode::Gt: return k_gt;
    case OpCode::Ge: return k_ge;
    case OpCode::Eq: return k_eq;
    case OpCode::Ne: return k_ne;
    case OpCode::LtScalar: return k_lt_scalar;
    case OpCode::LeScalar: return k_le_scalar;
    case OpCode::GtScalar: return k_gt_scalar;
    case OpCode::GeScalar: return k_ge_scalar;
    case OpCode::EqScalar: return k_eq_scalar;
    case OpCode::NeScalar: return k_ne_scalar;
    case OpCode::Where: return k_where;
    case OpCode::Cat: return k_cat;
    case OpCode::Stack: return k_stack;
    case OpCode::Unsqueeze: return k_unsqueeze;
    case OpCode::Squeeze: return k_squeeze;
    case OpCode::Permute: return k_permute;
    case OpCode::Expand: return k_expand;
    case OpCode::To: return k_to;
    case OpCode::CopyInplace: return k_copy_;
    case OpCode::AddcmulInplace: return k_addcmul_;
    case OpCode::AddcdivInplace: return k_addcdiv_;
    case OpCode::Alias: return k_alias;
    case OpCode::Gather: return k_gather;
    case OpCode::IndexSelect: return k_index_select;
    case OpCode::GeluBackward: return k_gelu_backward;
    case OpCode::SliceScatter: return k_slice_scatter;
    case OpCode::ScatterAdd: return k_scatter_add;
    case OpCode::IndexAdd: return k_index_add;
  }
  return nullptr;
}

constexpr auto kKernels = [] {
  std::array<Kernel, kNumOps> table{};
  for (int i = 0; i < kNumOps; ++i) table[i] = kernel_for(static_cast<OpCode>(i));
  return table;
}();

static_assert(kKernels.size() == kNumOps, "one kernel per op code");
static_assert(std::find(kKernels.begin(), kKernels.end(), nullptr) == kKernels.end(),
              "every op code needs a kernel");

// ---- supports() probe ---------------------------------------------------------------

// A tiny call of `op` for dtype `t`: tensors of dtype t (indices int64 and
// conditions bool where the op needs them) and attributes that fit them.
struct Sample {
  std::vector<at::Tensor> inputs;
  std::vector<TensorMeta> metas;
  std::vector<int64_t> ints;
  std::vector<double> floats;
  zmq::message_t frame;
};

Sample sample_for(const OpInfo& op, DType t, const at::Device& device) {
  Sample s;
  auto add = [&](Shape shape, DType dtype) {
    const auto options = at::TensorOptions().dtype(to_scalar_type(dtype)).device(device);
    s.inputs.push_back(dtype == DType::Int64 ? at::zeros(shape, options) : at::ones(shape, options));
    s.metas.push_back({std::move(shape), dtype});
  };
  const OpCode code = op.code;
  switch (code) {
    case OpCode::Where:
      add({2, 2}, DType::Bool), add({2, 2}, t), add({2, 2}, t);
      break;
    case OpCode::Gather:
      add({2, 2}, t), add({2, 2}, DType::Int64), s.ints = {1};
      break;
    case OpCode::IndexSelect:
      add({2, 2}, t), add({2}, DType::Int64), s.ints = {0};
      break;
    case OpCode::ScatterAdd:
      add({2, 2}, t), add({2, 2}, DType::Int64), add({2, 2}, t), s.ints = {0};
      break;
    case OpCode::IndexAdd:
      add({2, 2}, t), add({2}, DType::Int64), add({2, 2}, t), s.ints = {0};
      break;
    case OpCode::SliceScatter:
      add({2, 2}, t), add({1, 2}, t), s.ints = {0, 0, 1, 1};
      break;
    default:
      for (int i = 0; i < (op.arity < 0 ? 2 : op.arity); ++i) add({2, 2}, t);
      break;
  }
  switch (op.kind) {
    case OpKind::Creation:
      s.ints = {2, 2};
      if (code == OpCode::Full) s.floats = {1.0};
      if (code == OpCode::Arange) s.ints.clear(), s.floats = {0.0, 4.0, 1.0};
      if (code == OpCode::FromData) {
        s.frame = zmq::message_t(4 * element_size(t));
        std::memset(s.frame.data(), 0, s.frame.size());
      }
      break;
    case OpKind::Control: s.ints = {1}; break;
    case OpKind::Reduction: s.ints = {0}; break;
    case OpKind::Softmax: s.ints = {1}; break;
    case OpKind::Shape:
      if (code == OpCode::Transpose || code == OpCode::Permute) {
        s.ints = {1, 0};
      } else if (code == OpCode::Slice) {
        s.ints = {0, 0, 1, 1};
      } else if (code == OpCode::Cat || code == OpCode::Stack || code == OpCode::Unsqueeze) {
        s.ints = {0};
      } else if (code == OpCode::Expand) {
        s.ints = {3, 2, 2};
      } else if (code == OpCode::Reshape || code == OpCode::View) {
        s.ints = {4};
      }
      break;
    default:
      if (op.max_floats == 1) {  // *_scalar ops: a number of the tensor's kind
        if (is_floating(t))
          s.floats = {2.0};
        else
          s.ints = {2};
      }
      break;
  }
  return s;
}

// Runs `op` once on a tiny sample of dtype `t` and reports whether the op table
// accepts it and LibTorch computes it with the inferred dtype.
bool probe(OpCode code, DType t, const at::Device& device) {
  c10::InferenceMode guard;
  const OpInfo& op = op_info(code);
  Sample s;
  try {
    s = sample_for(op, t, device);
  } catch (const std::exception&) {
    return false;  // e.g. the device cannot hold this dtype
  }
  OpCall call{s.metas, s.ints, s.floats, t};
  std::vector<TensorMeta> out;
  try {
    out = infer(op, call);
  } catch (const std::invalid_argument&) {
    return false;
  }
  at::Generator gen = make_cpu_generator(0);
  KernelArgs args{s.inputs, s.ints,  s.floats, t, out.empty() ? nullptr : &out[0],
                  &gen,     device, &s.frame};
  try {
    at::Tensor r = kernel(code)(args);
    if (!out.empty()) return r.defined() && to_dtype(r.scalar_type()) == out[0].dtype;
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

}  // namespace

Kernel kernel(OpCode op) { return kKernels[static_cast<uint16_t>(op)]; }

bool supports(OpCode op, DType t, const at::Device& device) {
  static std::mutex mutex;
  static std::map<std::tuple<int, int, std::string>, bool> cache;  // guarded by mutex
  if (static_cast<int>(op) >= kNumOps || static_cast<int>(t) >= kNumDTypes) return false;
  auto key = std::make_tuple(static_cast<int>(op), static_cast<int>(t), device.str());
  std::lock_guard lock(mutex);
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  const bool ok = probe(op, t, device);
  cache.emplace(std::move(key), ok);
  return ok;
}

}  // namespace gt::worker
