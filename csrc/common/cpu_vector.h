// The hidden units of a row as vector lanes, for the CPU element kernels of the recurrent layers
// (csrc/rnn/rnn_cpu_pointwise.h, csrc/time_rnn/time_rnn_cpu_rows.h): at::vec::Vectorized lanes
// (one lane per unit) with fast exp-based activations, then the remaining units one by one.
// The cell math is written once against a lane type `lane`:
//   lane.load(row) / lane.store(row, value)   units j.. of a row pointer ([H] or a block of one)
//   Lane::Value                                 the value type (a vector or a scalar)
//   Lane::Act                                   its activations and selects (static functions)
// Included by the translation units built for different instruction sets (the baseline one, the
// AVX2 + FMA one, where Vectorized<float> holds 8 lanes, and for LSTM/GRU the AVX-512 one, 16
// lanes), each naming its namespace first with STSEQ_CPU_NAMESPACE: everything here has
// internal linkage there, so the builds are never merged by the linker.
#pragma once

#ifndef STSEQ_CPU_NAMESPACE
#error "define STSEQ_CPU_NAMESPACE before including common/cpu_vector.h"
#endif

#include <ATen/cpu/vec/vec.h>

#include <cstdint>

#if defined(CPU_CAPABILITY_AVX512)
#include <immintrin.h>
#endif

namespace stseq {
namespace STSEQ_CPU_NAMESPACE {
namespace {

// sigmoid(x) = 1 / (1 + exp(-x)) and tanh(x) = 1 - 2 / (1 + exp(2x)) through a fast vector exp
// (activation_exp, below; a third of SLEEF's vector tanh), which saturate cleanly (where exp's
// clamped argument saturates, within 3e-38 of 0, 1 or -1).
// NaN propagates as in torch's ops: a NaN input lane of an activation or exp comes out NaN
// (exp_u20 clamps its argument, so a NaN lane would come out finite: keep_nan puts it back);
// minimum and maximum return a NaN `a` (torch.clamp / torch.relu do), and where_greater passes
// `value` for a NaN `a` (the gradient of relu at a NaN input is the incoming gradient, as in
// torch's threshold_backward).
struct VectorActivations {
  template <typename V>
  static V keep_nan(const V& x, const V& result) { return V::blendv(result, x, x.isnan()); }
  // exp(x) as sigmoid and tanh use it, a NaN lane kept: ATen's exp_u20 (a polynomial within
  // about 1e-7 relative error in float32, SLEEF's exp in float64), which clamps its argument.
  template <typename V>
  static V activation_exp(const V& x) { return keep_nan(x, x.exp_u20()); }
#if defined(CPU_CAPABILITY_AVX512)
  // float32 with AVX-512: x = n ln2 + r (|r| <= ln2 / 2, ln2 in two parts as in Cephes' expf,
  // so that n ln2 is exact), exp(r) = 1 + r + r^2 p(r) with Cephes' degree-5 p, and 2^n applied
  // by vscalefps: within 1.4 half-ulps of exp over [-87, 87] (exp_u20: ATen's "20 ulp"). The
  // argument is clamped to [-87, 100]: above ln(FLT_MAX) = 88.72 the result overflows to inf, as
  // exp does, so that sigmoid and tanh come out exactly 0, 1 or -1 there (torch's sigmoid(-inf)
  // is exactly 0, and so is its gradient: an inf input times it is NaN in both); below -87,
  // exp(x) < 1.7e-38 no longer changes 1 + exp(x), and a subnormal exp would send the additions
  // after it through microcode assists. The clamps keep a NaN lane (vminps / vmaxps return their
  // second operand when either is NaN), and roundscale, the multiply-adds and vscalefps carry it
  // through, so no blend is needed. 15 vector instructions against exp_u20's 17 and keep_nan's
  // 4. Measured (issue 17, one thread): the LSTM forward step alone (pre-activations
  // [64, 4 x 256] in L2, medians of 21 interleaved) 29.8 -> 25.4 ns per 16 units; LSTM
  // inference, L = 50, I = H, interleaved with torch.nn.LSTM, medians of 40, torch / stseq:
  // B = 256, H = 64 0.984x -> 1.042x, B = 256, H = 128 0.978x -> 0.998x, B = 64, H = 256
  // 0.947x -> 0.952x, B = 8, H = 128 1.088x -> 1.099x.
  static at::vec::Vectorized<float> activation_exp(const at::vec::Vectorized<float>& value) {
    __m512 x = _mm512_min_ps(_mm512_set1_ps(100.0f), value);
    x = _mm512_max_ps(_mm512_set1_ps(-87.0f), x);
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r);
    return _mm512_scalef_ps(_mm512_add_ps(p, _mm512_set1_ps(1.0f)), n);
  }
#endif
  template <typename V>
  static V sigmoid(const V& x) { return (V(1) + activation_exp(x.neg())).reciprocal(); }
  template <typename V>
  static V tanh(const V& x) { return V(1) - V(2) / (V(1) + activation_exp(x + x)); }
  template <typename V>
  static V exp(const V& x) { return keep_nan(x, x.exp_u20()); }
  template <typename V>
  static V minimum(const V& a, const V& b) { return V::blendv(a, b, a >= b); }
  template <typename V>
  static V maximum(const V& a, const V& b) { return V::blendv(a, b, a <= b); }
  // value where a > b or a is NaN, 0 where a <= b.
  template <typename V>
  static V where_greater(const V& a, const V& b, const V& value) {
    return V::blendv(value, V(0), a <= b);
  }
  // value where a <= b, 0 elsewhere (a NaN compares false).
  template <typename V>
  static V where_less_equal(const V& a, const V& b, const V& value) {
    return V::blendv(V(0), value, a <= b);
  }
};

// Units j .. j + lanes - 1 of a row, as one vector.
template <typename scalar_t>
struct VectorLanes {
  using Act = VectorActivations;
  using Value = at::vec::Vectorized<scalar_t>;
  int64_t j;
  Value load(const scalar_t* row) const { return Value::loadu(row + j); }
  void store(scalar_t* row, const Value& value) const { value.store(row + j); }
};

// Unit j of a row, with the scalar activations `ScalarAct` of the caller's cell math.
template <typename scalar_t, typename ScalarAct>
struct ScalarLane {
  using Act = ScalarAct;
  using Value = scalar_t;
  int64_t j;
  scalar_t load(const scalar_t* row) const { return row[j]; }
  void store(scalar_t* row, scalar_t value) const { row[j] = value; }
};

// Two vectors of units side by side (units j .. j + 2 * lanes - 1), every operation applied to
// both in turn: the LSTM step of a unit is one long chain of dependent operations (exp, division,
// then tanh(c) on the result), and with one vector per iteration the core waits on that chain's
// latency; two chains interleaved operation by operation fill those waits. Each unit's
// arithmetic is unchanged (the results are bitwise those of one vector at a time). Measured
// (issue 17, LSTM inference, one thread, L = 50, I = H, interleaved with torch.nn.LSTM, medians
// of 50-60, torch / stseq, one vector -> pairs): B = 256, H = 64 0.963-0.977x -> 1.032-1.036x,
// B = 256, H = 128 0.972-0.986x -> 1.001-1.014x, B = 64, H = 256 0.888x -> 0.904x, B = 8,
// H = 128 1.003x -> 1.056x; B = 64, H = 128 unchanged (0.960-1.015x either way).
template <typename V>
struct VectorPair {
  V a, b;
  friend VectorPair operator+(const VectorPair& x, const VectorPair& y) {
    return {x.a + y.a, x.b + y.b};
  }
  friend VectorPair operator*(const VectorPair& x, const VectorPair& y) {
    return {x.a * y.a, x.b * y.b};
  }
};

struct VectorPairActivations {
  template <typename V>
  static VectorPair<V> sigmoid(const VectorPair<V>& x) {
    return {VectorActivations::sigmoid(x.a), VectorActivations::sigmoid(x.b)};
  }
  template <typename V>
  static VectorPair<V> tanh(const VectorPair<V>& x) {
    return {VectorActivations::tanh(x.a), VectorActivations::tanh(x.b)};
  }
};

template <typename scalar_t>
struct VectorPairLanes {
  using Act = VectorPairActivations;
  using V = at::vec::Vectorized<scalar_t>;
  using Value = VectorPair<V>;
  int64_t j;
  Value load(const scalar_t* row) const {
    return {V::loadu(row + j), V::loadu(row + j + V::size())};
  }
  void store(scalar_t* row, const Value& value) const {
    value.a.store(row + j);
    value.b.store(row + j + V::size());
  }
};

// body(lane) over the H units of a row: pairs of vectors, then full vectors, then the
// remaining units one by one. The body's math may use only +, * and Act's sigmoid and tanh on
// a pair's values (the LSTM forward step).
template <typename scalar_t, typename ScalarAct, typename Body>
inline void for_each_unit_in_pairs(int64_t hidden, const Body& body) {
  constexpr int64_t kLanes = at::vec::Vectorized<scalar_t>::size();
  int64_t j = 0;
  for (; j + 2 * kLanes <= hidden; j += 2 * kLanes) body(VectorPairLanes<scalar_t>{j});
  for (; j + kLanes <= hidden; j += kLanes) body(VectorLanes<scalar_t>{j});
  for (; j < hidden; ++j) body(ScalarLane<scalar_t, ScalarAct>{j});
}

// body(lane) over the H units of a row: full vectors, then the remaining units one by one.
template <typename scalar_t, typename ScalarAct, typename Body>
inline void for_each_unit(int64_t hidden, const Body& body) {
  constexpr int64_t kLanes = at::vec::Vectorized<scalar_t>::size();
  int64_t j = 0;
  for (; j + kLanes <= hidden; j += kLanes) body(VectorLanes<scalar_t>{j});
  for (; j < hidden; ++j) body(ScalarLane<scalar_t, ScalarAct>{j});
}

}  // namespace
}  // namespace STSEQ_CPU_NAMESPACE
}  // namespace stseq
