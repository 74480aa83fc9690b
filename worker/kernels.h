#pragma once
// The worker's kernel table: one LibTorch call per op code of the op table
// (common/op_table.h). The executor validates an instruction (op row, arity,
// attributes, shapes, dtypes) with gt::infer before calling a kernel, so a
// kernel may assume its arguments satisfy the op's rule; it produces exactly
// the inferred dtype (casting where LibTorch's promotion could differ).
// Kernels throw (c10::Error, std::exception) on failure; the executor turns
// that into an `execution_failed` failure.

#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include <ATen/ATen.h>
#include <zmq.hpp>

#include <gt/dtype.h>

#include "common/op_table.h"

namespace gt::worker {

/// LibTorch scalar type of a gt dtype.
at::ScalarType to_scalar_type(DType t);
/// gt dtype of a LibTorch scalar type; nullopt for types gt does not have.
std::optional<DType> to_dtype(at::ScalarType t);

/// Everything a kernel reads. Spans point into the instruction (read in place
/// off the wire) or into the executor's scratch space; valid during the call.
struct KernelArgs {
  std::span<const at::Tensor> inputs;
  std::span<const int64_t> ints;
  std::span<const double> floats;
  DType dtype = DType::Float32;        // requested dtype (creation ops)
  const TensorMeta* out = nullptr;     // inferred output 0; nullptr when none
  at::Generator* generator = nullptr;  // the session's CPU generator
  at::Device device = at::kCPU;        // where creation ops allocate
  /// FromData: the data frame, already checked to hold exactly numel *
  /// element_size bytes. The kernel may take ownership (moves out of it).
  zmq::message_t* payload = nullptr;
};

/// Returns the op's output (an undefined tensor for in-place and control
/// ops, which act on inputs[0] or the generator).
using Kernel = at::Tensor (*)(const KernelArgs&);

/// Kernel for an op code of the table.
Kernel kernel(OpCode op);

/// Whether `op` runs for inputs of dtype `t` on `device` with this LibTorch
/// build (c10d-style query instead of a kernel that throws by default). Found
/// by running the kernel once on a tiny sample and cached; thread-safe.
bool supports(OpCode op, DType t, const at::Device& device);

/// A fresh CPU generator seeded like at::make_generator<at::CPUGeneratorImpl>(seed).
at::Generator make_cpu_generator(uint64_t seed);

}  // namespace gt::worker
