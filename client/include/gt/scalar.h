#pragma once
// gt::Scalar: a plain number used as an operand (t + 1, full(shape, 0.5)).

#include <cstdint>
#include <type_traits>

namespace gt {

/// A number that remembers whether it was integral or floating, so that
/// `int_tensor + 1` stays integral and `int_tensor + 1.0` becomes float32, as in
/// LibTorch. Implicitly constructible from any arithmetic type; bool and char
/// count as integral. Unsigned values above INT64_MAX wrap. A value type:
/// trivially copyable and thread-safe to share. Never throws.
class Scalar {
 public:
  /// Integral zero.
  constexpr Scalar() = default;

  /// From any arithmetic value (implicit on purpose).
  template <typename T, std::enable_if_t<std::is_arithmetic_v<T>, int> = 0>
  constexpr Scalar(T value)  // NOLINT(google-explicit-constructor)
      : floating_(std::is_floating_point_v<T>),
        int_(std::is_floating_point_v<T> ? 0 : static_cast<int64_t>(value)),
        double_(static_cast<double>(value)) {}

  /// Whether the value came from a floating-point type.
  constexpr bool is_floating() const { return floating_; }
  /// Whether the value came from an integral type (bool included).
  constexpr bool is_integral() const { return !floating_; }
  /// The value as a double (exact for floating scalars).
  constexpr double to_double() const {
    return floating_ ? double_ : static_cast<double>(int_);
  }
  /// The value as int64 (exact for integral scalars; floating ones truncate).
  constexpr int64_t to_int() const {
    return floating_ ? static_cast<int64_t>(double_) : int_;
  }

 private:
  bool floating_ = false;
  int64_t int_ = 0;
  double double_ = 0.0;
};

}  // namespace gt
