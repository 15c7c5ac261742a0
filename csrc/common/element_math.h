// The element-step primitives shared by every recurrent cell (LSTM, GRU, Time-LSTM, T-LSTM,
// time-decay GRU), on host and device: ScalarMath (the scalar lanes' sigmoid, tanh, exp, NaN-
// propagating minimum/maximum and selects), the activations' derivatives from their outputs and
// the selectable squashing function of the time gates. The vector lanes of common/cpu_vector.h
// supply the same names for at::vec::Vectorized values.
#pragma once

#include <cmath>
#include <cstdint>

#include "common/host_device.h"

#if defined(__CUDACC__)
#define STSEQ_FORCE_INLINE __forceinline__
#elif defined(_MSC_VER)
#define STSEQ_FORCE_INLINE __forceinline
#else
#define STSEQ_FORCE_INLINE inline __attribute__((always_inline))
#endif

namespace stseq {

// Primitives. ScalarMath is the scalar lanes' math (CUDA threads, the CPU's remaining units): the C
// library's (CUDA's) exp and tanh. The derivatives and the selectable activation are written
// for any lane value type T (a scalar or a vector).

STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE float exponential(float x) { return expf(x); }
STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE double exponential(double x) { return exp(x); }
STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE float hyperbolic_tangent(float x) { return tanhf(x); }
STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE double hyperbolic_tangent(double x) { return tanh(x); }

// NaN propagates as in torch's ops (the vector lanes of common/cpu_vector.h do the same):
// minimum and maximum return a NaN `a` (torch.clamp, torch.relu); where_greater(a, b, value) is
// value where a > b or a is NaN (relu's gradient, torch's threshold_backward), 0 where a <= b;
// where_less_equal(a, b, value) is value where a <= b, 0 elsewhere (a NaN compares false).
struct ScalarMath {
  template <typename T>
  STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE static T sigmoid(T x) {
    return T(1) / (T(1) + exponential(-x));
  }
  template <typename T>
  STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE static T tanh(T x) { return hyperbolic_tangent(x); }
  template <typename T>
  STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE static T exp(T x) { return exponential(x); }
  template <typename T>
  STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE static T minimum(T a, T b) { return a >= b ? b : a; }
  template <typename T>
  STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE static T maximum(T a, T b) { return a <= b ? b : a; }
  template <typename T>
  STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE static T where_greater(T a, T b, T value) {
    return a <= b ? T(0) : value;
  }
  template <typename T>
  STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE static T where_less_equal(T a, T b, T value) {
    return a <= b ? value : T(0);
  }
};

template <typename T>
STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE T logistic_derivative(const T& y) {  // from y = sigma(u)
  return y * (T(1) - y);
}

template <typename T>
STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE T tanh_derivative(const T& y) {  // from y = tanh(u)
  return T(1) - y * y;
}

// A selectable squashing function act(u) = scale * tanh(slope * u) + offset, without a branch:
// tanh is (1, 1, 0), and the logistic sigmoid(u) = 0.5 * tanh(u / 2) + 0.5 is (0.5, 0.5, 0.5).
enum class ActivationKind : int { kTanh = 0, kSigmoid = 1 };

template <typename acc_t>
struct Activation {
  acc_t scale;
  acc_t slope;
  acc_t offset;

  static Activation of(ActivationKind kind) {
    return kind == ActivationKind::kTanh ? Activation{acc_t(1), acc_t(1), acc_t(0)}
                                         : Activation{acc_t(0.5), acc_t(0.5), acc_t(0.5)};
  }
  template <typename Act, typename T>
  STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE T apply(const T& u) const {
    return T(scale) * Act::tanh(T(slope) * u) + T(offset);
  }
  // d act / du at the u where act(u) = y (1 / scale is exact: scale is 1 or 1/2).
  template <typename T>
  STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE T derivative(const T& y) const {
    const T t = (y - T(offset)) * T(acc_t(1) / scale);
    return T(scale * slope) * (T(1) - t * t);
  }
};

}  // namespace stseq
