#pragma once
// The op table: every operation is described once, here. The client infers
// shapes and dtypes with it (so bad calls throw at the call site), the
// dispatcher and worker validate instructions with it, the worker maps codes to
// LibTorch calls (worker/kernels.cpp) and the compiler maps elementwise codes to
// expressions. Adding an op: one enum value (append only), one row in
// op_table.cpp, its kernel, and a row in the op test table.

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include <gt/dtype.h>

#include "common/shape.h"

namespace gt {

/// Op codes reach the wire: explicit values, append only.
enum class OpCode : uint16_t {
  // creation (no tensor inputs)
  Randn = 0,
  Rand = 1,
  Zeros = 2,
  Ones = 3,
  Full = 4,
  Arange = 5,
  FromData = 6,
  ManualSeed = 7,
  // elementwise, tensor with tensor, broadcasting
  Add = 8,
  Sub = 9,
  Mul = 10,
  Div = 11,
  // elementwise, tensor with a number
  AddScalar = 12,
  SubScalar = 13,
  RSubScalar = 14,
  MulScalar = 15,
  DivScalar = 16,
  RDivScalar = 17,
  // elementwise unary
  Neg = 18,
  Exp = 19,
  Log = 20,
  Sqrt = 21,
  Relu = 22,
  Sigmoid = 23,
  Tanh = 24,
  // linear algebra
  Matmul = 25,
  // reductions
  Sum = 26,
  Mean = 27,
  // shape and views
  Reshape = 28,
  View = 29,
  Transpose = 30,
  Slice = 31,
  // in-place (mutate input 0, no outputs)
  AddInplace = 32,
  AddScalarInplace = 33,
  SubInplace = 34,
  SubScalarInplace = 35,
  MulInplace = 36,
  MulScalarInplace = 37,
  ZeroInplace = 38,
  // ---- protocol version 2 ----
  // elementwise unary and powers
  Rsqrt = 39,
  Abs = 40,
  Sign = 41,
  Pow = 42,         // tensor ** tensor
  PowScalar = 43,   // tensor ** number
  RPowScalar = 44,  // number ** tensor
  Gelu = 45,
  // softmax family (along one dim)
  Softmax = 46,
  LogSoftmax = 47,
  // reductions
  Amax = 48,
  Amin = 49,
  Argmax = 50,
  // comparisons (bool result), tensor with tensor
  Lt = 51,
  Le = 52,
  Gt = 53,
  Ge = 54,
  Eq = 55,
  Ne = 56,
  // comparisons, tensor with a number
  LtScalar = 57,
  LeScalar = 58,
  GtScalar = 59,
  GeScalar = 60,
  EqScalar = 61,
  NeScalar = 62,
  // selection
  Where = 63,
  // joining and shape
  Cat = 64,
  Stack = 65,
  Unsqueeze = 66,
  Squeeze = 67,
  Permute = 68,
  Expand = 69,
  // conversion, copies and aliases
  To = 70,
  CopyInplace = 71,
  Alias = 72,
  // indexing
  Gather = 73,
  IndexSelect = 74,
  // backward helpers (used by autograd; callable like any op)
  GeluBackward = 75,
  SliceScatter = 76,
  ScatterAdd = 77,
  IndexAdd = 78,
  // fused in-place updates (optimizers): self += value * t1 * t2, self += value * t1 / t2
  AddcmulInplace = 79,
  AddcdivInplace = 80,
};

inline constexpr int kNumOps = 81;

/// Most tensor inputs one instruction may name (variadic ops such as cat and
/// stack); bounds what the worker reads off the wire before looking anything up.
inline constexpr int kMaxInputs = 1024;

enum class OpKind : uint8_t {
  Creation,    // makes a tensor from attributes (and maybe a payload)
  Control,     // no tensor result (manual_seed)
  Elementwise, // same-shape or broadcast map; fusible
  Linalg,      // library call (matmul)
  Reduction,   // reduces dims
  Shape,       // reshape / view / transpose / slice / cat / expand / alias
  Inplace,     // mutates input 0
  Softmax,     // softmax / log_softmax along one dim
  Index,       // gather / index_select / scatter_add / index_add / slice_scatter
};

/// Shape and dtype of a tensor, as the op table reasons about it.
struct TensorMeta {
  Shape shape;
  DType dtype = DType::Float32;
  bool operator==(const TensorMeta&) const = default;
};

/// Everything a shape rule looks at. Attributes are two flat lists whose
/// layout each row documents in `attr_doc`.
struct OpCall {
  std::span<const TensorMeta> inputs;
  std::span<const int64_t> ints;
  std::span<const double> floats;
  DType dtype = DType::Float32;  // requested dtype of creation ops and `to`
};

/// Shape/dtype rule: returns one meta per output; throws std::invalid_argument
/// with a message naming what was wrong and the shapes involved.
using InferFn = std::vector<TensorMeta> (*)(const OpCall&);

struct OpInfo {
  OpCode code;
  std::string_view name;
  int arity;        // tensor inputs; -1 = one to kMaxInputs
  int outputs;      // tensors produced (0 for in-place and control ops)
  int min_ints, max_ints;      // bounds on ints.size(); max -1 = kMaxRank + 2
  int min_floats, max_floats;  // bounds on floats.size()
  OpKind kind;
  bool elementwise;  // fusible by the compiler
  std::string_view attr_doc;
  InferFn infer;
};

/// Row for a code; nullptr for a code outside the table (e.g. off the wire).
const OpInfo* find_op(uint16_t code);
/// Row for a known code.
const OpInfo& op_info(OpCode code);
/// All rows, indexed by code.
std::span<const OpInfo> all_ops();

/// Validates attribute counts and input arity, then runs the shape rule.
/// Throws std::invalid_argument "<op>: ..." on any violation.
std::vector<TensorMeta> infer(const OpInfo& op, const OpCall& call);

}  // namespace gt
