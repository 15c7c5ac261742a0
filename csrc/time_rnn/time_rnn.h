// Time-aware recurrent cells: the per-element math shared by the CPU and CUDA kernels.
//
// Every step of every cell is one "element step": a functor with
//   row(b)              -> Row: which position row b processes at this step, whether it is active
//                          (step < its length) and its time gap;
//   active(row, b, j)   -> the cell math of hidden unit j of row b;
//   inactive(b, j)      -> what a finished (or not yet started) row writes (zeros into GEMM
//                          operands of the backward, nothing in the forward).
// The CPU runs active() in a vectorised loop over j for each row (time_rnn_cpu.cpp), the CUDA
// kernel gives one thread to each (b, j) (time_rnn_cuda.cu); the host drivers around them
// (time_rnn_driver.h: the GEMMs and the time loop) are the same code for both.
//
// Notation: H hidden units, B rows, L positions; buffers "by position" are [L, B, ...] indexed
// by (t, b) -> t * B + b, "step" buffers are [B, ...] and hold the current step's values.
// scalar_t is the tensors' dtype, acc_t its accumulation type (float for half and bfloat16):
// cell states and gradient accumulators are acc_t.
//
// What a training forward saves: the gates' activations, written in place over the input
// projections x W_ih^T they were computed from (gates [L, B, G*H], scalar_t: each element is
// read, then overwritten, by its own thread; the input GEMM adds the bias), the
// cell states the backward needs (cells [L, B, C*H], acc_t), and the h each position
// multiplied W_hh by (recurrent_input [L, B, H]).
//
// The backward steps read one gradient per state, never a per-row choice (which would keep the
// CPU loop from vectorising): the driver adds d/dh_n to grad_output at each row's last position
// where h comes out of a GEMM (the LSTM cells), and otherwise starts the state's gradient
// buffer at d/dh_n or d/dc_n, which inactive rows leave untouched.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "common/host_device.h"

#if defined(__CUDACC__)
#define STSEQ_FORCE_INLINE __forceinline__
#elif defined(_MSC_VER)
#define STSEQ_FORCE_INLINE __forceinline
#else
#define STSEQ_FORCE_INLINE inline __attribute__((always_inline))
#endif

namespace stseq {
namespace time_rnn {

// ---------------------------------------------------------------------------------------------
// Primitives. CUDA uses its own expf/tanhf; the host uses branch-free float versions (relative
// error ~1e-7) that the compiler vectorises, and the C library for double.

#if !defined(__CUDA_ARCH__)
// e^x for float: x = n ln2 + r with |r| <= ln2 / 2, a degree-6 polynomial for e^r, 2^n from
// the exponent bits. Inputs are clamped to [-87, 88] (no overflow to inf; NaN stays NaN).
STSEQ_FORCE_INLINE float host_exp(float x) {
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  constexpr float kShifter = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float n = (x * 1.44269504088896341f + kShifter) - kShifter;
  float r = x - n * 0.693359375f;  // ln2 split in two parts for an exact reduction
  r = r + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) * (1 << 23);
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

// tanh for float: an odd Taylor polynomial below |x| = 0.3 (no cancellation), else
// (1 - e^{-2|x|}) / (1 + e^{-2|x|}) with the sign of x.
STSEQ_FORCE_INLINE float host_tanh(float x) {
  const float a = x < 0.0f ? -x : x;
  const float e = host_exp(-2.0f * a);
  const float large = (1.0f - e) / (1.0f + e);
  const float a2 = a * a;
  const float small =
      a * (1.0f +
           a2 * (-0.333333333f + a2 * (0.133333333f + a2 * (-0.0539682540f + a2 * 0.0218694885f))));
  const float magnitude = a < 0.3f ? small : large;
  return x < 0.0f ? -magnitude : magnitude;
}
#endif

STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE float exponential(float x) {
#if defined(__CUDA_ARCH__)
  return expf(x);
#else
  return host_exp(x);
#endif
}

STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE double exponential(double x) { return exp(x); }

STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE float hyperbolic_tangent(float x) {
#if defined(__CUDA_ARCH__)
  return tanhf(x);
#else
  return host_tanh(x);
#endif
}

STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE double hyperbolic_tangent(double x) { return tanh(x); }

template <typename acc_t>
STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE acc_t sigmoid(acc_t x) {
  return acc_t(1) / (acc_t(1) + exponential(-x));
}

template <typename acc_t>
STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE acc_t logistic_derivative(acc_t y) {  // from y = sigma(u)
  return y * (acc_t(1) - y);
}

template <typename acc_t>
STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE acc_t tanh_derivative(acc_t y) {  // from y = tanh(u)
  return acc_t(1) - y * y;
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
  STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE acc_t operator()(acc_t u) const {
    return scale * hyperbolic_tangent(slope * u) + offset;
  }
  // d act / du at the u where act(u) = y.
  STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE acc_t derivative(acc_t y) const {
    const acc_t t = (y - offset) / scale;
    return scale * slope * (acc_t(1) - t * t);
  }
};

// ---------------------------------------------------------------------------------------------
// Rows and steps. Step s of row b (length n_b, clamped to [0, L]) processes position s in the
// forward direction and n_b - 1 - s in the reverse one; rows with s >= n_b are inactive.

template <typename acc_t>
struct Row {
  int64_t index;  // (position, b) -> position * B + b; meaningful when active
  bool active;
  acc_t dt;        // time gap at the position (0 when inactive)
  acc_t discount;  // T-LSTM's g(dt) = 1 / log(e + dt); 1 for the other cells
};

struct Steps {
  const int64_t* lengths;  // [B] or nullptr (every row has L positions)
  int64_t seq_len;         // L
  int64_t batch;           // B
  int64_t step;            // s
  bool reverse;

  template <typename acc_t>
  STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE Row<acc_t> row(int64_t b, const acc_t* dt) const {
    int64_t n = seq_len;
    if (lengths != nullptr) {
      n = lengths[b];
      n = n < 0 ? 0 : (n > seq_len ? seq_len : n);
    }
    const bool active = step < n;
    const int64_t position = reverse ? n - 1 - step : step;
    const int64_t index = position * batch + b;
    return {index, active, active ? dt[index] : acc_t(0), acc_t(1)};
  }
};

template <typename scalar_t, typename acc_t>
STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE acc_t load(const scalar_t* p) {
  return static_cast<acc_t>(*p);
}

// What the element steps share: their arguments `a` (with the op's Steps and dt), the row a
// step gives row b, and nothing to write for an inactive row. Each step adds active() and hides
// row() or inactive() where it needs its own.
template <typename Args, typename acc_t>
struct ElementStep {
  Args a;

  STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE Row<acc_t> row(int64_t b) const {
    return a.steps.row(b, a.dt);
  }
  STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE void inactive(int64_t, int64_t) const {}
};

// ---------------------------------------------------------------------------------------------
// The LSTM cells' recurrent GEMM W_hh h goes into the first R blocks of the gates at each row's
// position: straight from the GEMM where a step's rows sit at one position (time_rnn_driver.h),
// else (reverse direction with padding) through a [B, R*H] step buffer and this step.

template <typename scalar_t, typename acc_t>
struct AddRecurrentArgs {
  Steps steps;
  int64_t hidden;            // H
  int64_t gate_blocks;       // G
  int64_t recurrent_blocks;  // R
  scalar_t* gates;           // [L, B, G*H] the first R blocks += gates_h
  const scalar_t* gates_h;   // [B, R*H] this step's W_hh h
  const acc_t* dt;           // [L, B]
};

template <typename scalar_t, typename acc_t>
struct AddRecurrent : ElementStep<AddRecurrentArgs<scalar_t, acc_t>, acc_t> {
  using ElementStep<AddRecurrentArgs<scalar_t, acc_t>, acc_t>::a;

  STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE void active(const Row<acc_t>& row, int64_t b,
                                                   int64_t j) const {
    const int64_t H = a.hidden;
    scalar_t* gx = a.gates + row.index * (a.gate_blocks * H) + j;
    const scalar_t* gh = a.gates_h + b * (a.recurrent_blocks * H) + j;
    for (int64_t k = 0; k < a.recurrent_blocks; ++k) {
      gx[k * H] = static_cast<scalar_t>(load<scalar_t, acc_t>(gx + k * H) +
                                        load<scalar_t, acc_t>(gh + k * H));
    }
  }
};

// ---------------------------------------------------------------------------------------------
// Time-LSTM (Zhu et al., IJCAI 2017), variants 1-3. Column blocks of H:
//   gates (x side + bias)   v1 [i, f, g, o, t]   v2 [i, f, g, o, t1, t2]   v3 [i, g, o, t1, t2]
//   gates (h side)          the first 4 blocks (v3: 3)
//   peephole rows           [w_ci, w_cf, w_co]   (v3: [w_ci, w_co])
//   time_weight rows        v1 [w_t, w_to]       v2, v3 [w_t1, w_t2, w_to]
//   cells (saved)           c_prev, c_out
// c_out is the cell state the output gate and h read: c' in variant 1, c~ in 2 and 3.

template <int kVariant>
struct TimeLSTMLayout {
  static_assert(kVariant >= 1 && kVariant <= 3, "Time-LSTM variants are 1, 2 and 3");
  static constexpr bool kForget = kVariant != 3;
  static constexpr bool kTwoTimeGates = kVariant != 1;
  static constexpr int kI = 0;
  static constexpr int kF = kForget ? 1 : -1;
  static constexpr int kG = kForget ? 2 : 1;
  static constexpr int kO = kG + 1;
  static constexpr int kT1 = kO + 1;
  static constexpr int kT2 = kTwoTimeGates ? kT1 + 1 : -1;
  static constexpr int kGates = kTwoTimeGates ? kT1 + 2 : kT1 + 1;
  static constexpr int kRecurrentGates = kO + 1;
  static constexpr int kPeepI = 0;
  static constexpr int kPeepF = kForget ? 1 : -1;
  static constexpr int kPeepO = kForget ? 2 : 1;
  static constexpr int kPeepholes = kPeepO + 1;
  static constexpr int kTimeT1 = 0;
  static constexpr int kTimeT2 = kTwoTimeGates ? 1 : -1;
  static constexpr int kTimeO = kTwoTimeGates ? 2 : 1;
  static constexpr int kTimeWeights = kTimeO + 1;
  static constexpr int kCPrev = 0;
  static constexpr int kCOut = 1;
  static constexpr int kCells = 2;
};

// Time-LSTM 2 and 3 constrain w_t1 <= 0; like the authors' code the gate uses
// min(w_t1, -1e-5), and the gradient reaches w_t1 only where it is not clamped (torch.clamp).
constexpr double kTimeWeightBound = -1e-5;

template <typename scalar_t, typename acc_t>
struct TimeLSTMForwardArgs {
  Steps steps;
  int64_t hidden;               // H
  scalar_t* gates;              // [L, B, G*H] in: x W_ih^T + b, plus W_hh h in the first R
                                //        blocks (AddRecurrent); out: activations (kSave)
  const acc_t* dt;              // [L, B]
  const scalar_t* peephole;     // [P, H]
  const scalar_t* time_weight;  // [K, H]
  Activation<acc_t> phi;        // inside the time gates
  scalar_t* h;                  // [B, H] in: h before the step, out: after
  acc_t* c;                     // [B, H] likewise
  scalar_t* output;             // [L, B, H]
  acc_t* cells;                 // [L, B, 2H] (kSave)
  scalar_t* recurrent_input;    // [L, B, H] (kSave)
};

template <int kVariant, bool kSave, typename scalar_t, typename acc_t>
struct TimeLSTMForward : ElementStep<TimeLSTMForwardArgs<scalar_t, acc_t>, acc_t> {
  using Layout = TimeLSTMLayout<kVariant>;
  using ElementStep<TimeLSTMForwardArgs<scalar_t, acc_t>, acc_t>::a;

  STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE void active(const Row<acc_t>& row, int64_t b,
                                                   int64_t j) const {
    const int64_t H = a.hidden;
    scalar_t* gx = a.gates + row.index * (Layout::kGates * H) + j;
    const int64_t state = b * H + j;
    const acc_t c = a.c[state];
    const acc_t dt = row.dt;
    // x W_ih^T + b (+ W_hh h in the recurrent blocks) of a gate.
    auto pre = [&](int gate) { return load<scalar_t, acc_t>(gx + gate * H); };
    auto peephole = [&](int k) { return load<scalar_t, acc_t>(a.peephole + k * H + j); };
    auto time_weight = [&](int k) { return load<scalar_t, acc_t>(a.time_weight + k * H + j); };

    const acc_t i = sigmoid(pre(Layout::kI) + peephole(Layout::kPeepI) * c);
    const acc_t g = hyperbolic_tangent(pre(Layout::kG));
    acc_t w_t1 = time_weight(Layout::kTimeT1);
    acc_t f = acc_t(0), t2 = acc_t(0), c_new, c_out;
    if constexpr (Layout::kTwoTimeGates) {
      const acc_t bound = static_cast<acc_t>(kTimeWeightBound);
      w_t1 = w_t1 < bound ? w_t1 : bound;
      t2 = sigmoid(pre(Layout::kT2) + a.phi(dt * time_weight(Layout::kTimeT2)));
    }
    const acc_t t1 = sigmoid(pre(Layout::kT1) + a.phi(dt * w_t1));
    if constexpr (Layout::kForget) {
      f = sigmoid(pre(Layout::kF) + peephole(Layout::kPeepF) * c);
    }
    if constexpr (kVariant == 1) {
      c_new = f * c + i * t1 * g;
      c_out = c_new;
    } else if constexpr (kVariant == 2) {
      c_out = f * c + i * t1 * g;
      c_new = f * c + i * t2 * g;
    } else {
      c_out = (acc_t(1) - i * t1) * c + i * t1 * g;
      c_new = (acc_t(1) - i) * c + i * t2 * g;
    }
    const acc_t o = sigmoid(pre(Layout::kO) + dt * time_weight(Layout::kTimeO) +
                            peephole(Layout::kPeepO) * c_out);
    const acc_t tanh_c_out = hyperbolic_tangent(c_out);
    const acc_t h_new = o * tanh_c_out;
    if constexpr (kSave) {
      gx[Layout::kI * H] = static_cast<scalar_t>(i);
      gx[Layout::kG * H] = static_cast<scalar_t>(g);
      gx[Layout::kO * H] = static_cast<scalar_t>(o);
      gx[Layout::kT1 * H] = static_cast<scalar_t>(t1);
      if constexpr (Layout::kForget) gx[Layout::kF * H] = static_cast<scalar_t>(f);
      if constexpr (Layout::kTwoTimeGates) gx[Layout::kT2 * H] = static_cast<scalar_t>(t2);
      acc_t* cells = a.cells + row.index * (Layout::kCells * H) + j;
      cells[Layout::kCPrev * H] = c;
      cells[Layout::kCOut * H] = c_out;
      a.recurrent_input[row.index * H + j] = a.h[state];
    }
    a.c[state] = c_new;
    a.h[state] = static_cast<scalar_t>(h_new);
    a.output[row.index * H + j] = static_cast<scalar_t>(h_new);
  }
};

template <typename scalar_t, typename acc_t>
struct TimeLSTMBackwardArgs {
  Steps steps;
  int64_t hidden;               // H
  const scalar_t* grad_output;  // [L, B, H] with d/dh_n added at each row's last position
  const acc_t* dt;              // [L, B]
  const scalar_t* peephole;     // [P, H]
  const scalar_t* time_weight;  // [K, H]
  Activation<acc_t> phi;
  const scalar_t* gates;         // [L, B, G*H] the gates' activations
  const acc_t* cells;            // [L, B, 2H]
  const scalar_t* grad_h_later;  // [B, H] d/dh after this step through later steps (GEMM)
  acc_t* grad_c;                 // [B, H] in: d/dc after this step (d/dc_n before a row's
                                 //        last step), out: d/dc before it
  scalar_t* grad_gates;          // [L, B, G*H] d/d(pre-activations) by position
  scalar_t* grad_gates_step;     // [B, R*H] this step's recurrent part (GEMM operand)
  acc_t* grad_weights;           // [B, (P+K)*H] per-row sums over steps: peepholes, time
};

template <int kVariant, typename scalar_t, typename acc_t>
struct TimeLSTMBackward : ElementStep<TimeLSTMBackwardArgs<scalar_t, acc_t>, acc_t> {
  using Layout = TimeLSTMLayout<kVariant>;
  using ElementStep<TimeLSTMBackwardArgs<scalar_t, acc_t>, acc_t>::a;

  STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE void inactive(int64_t b, int64_t j) const {
    scalar_t* gs = a.grad_gates_step + b * (Layout::kRecurrentGates * a.hidden) + j;
    for (int k = 0; k < Layout::kRecurrentGates; ++k) gs[k * a.hidden] = scalar_t(0);
  }

  STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE void active(const Row<acc_t>& row, int64_t b,
                                                   int64_t j) const {
    const int64_t H = a.hidden;
    const int64_t state = b * H + j;
    const scalar_t* gates = a.gates + row.index * (Layout::kGates * H) + j;
    const acc_t* cells = a.cells + row.index * (Layout::kCells * H) + j;
    auto saved = [&](int gate) { return load<scalar_t, acc_t>(gates + gate * H); };
    auto peephole = [&](int k) { return load<scalar_t, acc_t>(a.peephole + k * H + j); };
    auto time_weight = [&](int k) { return load<scalar_t, acc_t>(a.time_weight + k * H + j); };
    const acc_t dt = row.dt;

    const acc_t dh = load<scalar_t, acc_t>(a.grad_output + row.index * H + j) +
                     load<scalar_t, acc_t>(a.grad_h_later + state);
    const acc_t dc_new = a.grad_c[state];
    const acc_t i = saved(Layout::kI), g = saved(Layout::kG), o = saved(Layout::kO);
    const acc_t t1 = saved(Layout::kT1);
    const acc_t c = cells[Layout::kCPrev * H], c_out = cells[Layout::kCOut * H];
    const acc_t tanh_c_out = hyperbolic_tangent(c_out);

    const acc_t d_pre_o = dh * tanh_c_out * logistic_derivative(o);
    const acc_t dc_out = dh * o * tanh_derivative(tanh_c_out) + d_pre_o * peephole(Layout::kPeepO);
    acc_t di, dg, dt1, dt2 = acc_t(0), df = acc_t(0), f = acc_t(0), t2 = acc_t(0), dc;
    if constexpr (Layout::kForget) f = saved(Layout::kF);
    if constexpr (Layout::kTwoTimeGates) t2 = saved(Layout::kT2);
    if constexpr (kVariant == 1) {  // c' = f c + i t1 g, read by o and h and carried
      const acc_t dc_total = dc_new + dc_out;
      di = dc_total * t1 * g;
      dg = dc_total * i * t1;
      dt1 = dc_total * i * g;
      df = dc_total * c;
      dc = dc_total * f;
    } else if constexpr (kVariant == 2) {  // c~ = f c + i t1 g (read), c' = f c + i t2 g (carried)
      di = (dc_out * t1 + dc_new * t2) * g;
      dg = (dc_out * t1 + dc_new * t2) * i;
      dt1 = dc_out * i * g;
      dt2 = dc_new * i * g;
      df = (dc_out + dc_new) * c;
      dc = (dc_out + dc_new) * f;
    } else {  // c~ = c + i t1 (g - c), c' = c - i c + i t2 g
      di = dc_out * t1 * (g - c) + dc_new * (t2 * g - c);
      dg = (dc_out * t1 + dc_new * t2) * i;
      dt1 = dc_out * i * (g - c);
      dt2 = dc_new * i * g;
      dc = dc_out * (acc_t(1) - i * t1) + dc_new * (acc_t(1) - i);
    }
    const acc_t d_pre_i = di * logistic_derivative(i);
    const acc_t d_pre_g = dg * tanh_derivative(g);
    const acc_t d_pre_t1 = dt1 * logistic_derivative(t1);
    dc += d_pre_i * peephole(Layout::kPeepI);

    scalar_t* gg = a.grad_gates + row.index * (Layout::kGates * H) + j;
    scalar_t* gs = a.grad_gates_step + b * (Layout::kRecurrentGates * H) + j;
    auto put = [&](int gate, acc_t value) {
      gg[gate * H] = static_cast<scalar_t>(value);
      if (gate < Layout::kRecurrentGates) gs[gate * H] = static_cast<scalar_t>(value);
    };
    put(Layout::kI, d_pre_i);
    put(Layout::kG, d_pre_g);
    put(Layout::kO, d_pre_o);
    put(Layout::kT1, d_pre_t1);

    acc_t* gw = a.grad_weights + b * ((Layout::kPeepholes + Layout::kTimeWeights) * H) + j;
    acc_t* gw_time = gw + Layout::kPeepholes * H;
    gw[Layout::kPeepI * H] += d_pre_i * c;
    gw[Layout::kPeepO * H] += d_pre_o * c_out;
    gw_time[Layout::kTimeO * H] += d_pre_o * dt;
    acc_t w_t1 = time_weight(Layout::kTimeT1);
    acc_t pass_t1 = acc_t(1);
    if constexpr (Layout::kTwoTimeGates) {
      const acc_t bound = static_cast<acc_t>(kTimeWeightBound);
      pass_t1 = w_t1 <= bound ? acc_t(1) : acc_t(0);
      w_t1 = w_t1 < bound ? w_t1 : bound;
      const acc_t d_pre_t2 = dt2 * logistic_derivative(t2);
      put(Layout::kT2, d_pre_t2);
      const acc_t phi_t2 = a.phi(dt * time_weight(Layout::kTimeT2));
      gw_time[Layout::kTimeT2 * H] += d_pre_t2 * a.phi.derivative(phi_t2) * dt;
    }
    const acc_t phi_t1 = a.phi(dt * w_t1);
    gw_time[Layout::kTimeT1 * H] += pass_t1 * d_pre_t1 * a.phi.derivative(phi_t1) * dt;
    if constexpr (Layout::kForget) {
      const acc_t d_pre_f = df * logistic_derivative(f);
      put(Layout::kF, d_pre_f);
      dc += d_pre_f * peephole(Layout::kPeepF);
      gw[Layout::kPeepF * H] += d_pre_f * c;
    }
    a.grad_c[state] = dc;
  }
};

// ---------------------------------------------------------------------------------------------
// T-LSTM (Baytas et al., KDD 2017). Gate blocks [i, f, g, o] (torch.nn.LSTM's order, bias
// b_ih + b_hh). Per step: C_S = act(W_d c + b_d) (the GEMM gives short_pre = W_d c in acc_t, the
// element step adds b_d), c* = c - C_S + g(dt) C_S, then the LSTM step on c*.
// Saved cells: [C_S, c*, c_prev] (c' = f c* + i g is recomputed from them).

struct TLSTMLayout {
  static constexpr int kI = 0, kF = 1, kG = 2, kO = 3, kGates = 4;
  static constexpr int kShort = 0, kCStar = 1, kCPrev = 2, kCells = 3;
};

template <typename acc_t>
STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE acc_t tlstm_discount(acc_t dt) {  // g(dt) = 1 / log(e + dt)
  return acc_t(1) / log(static_cast<acc_t>(2.718281828459045) + dt);
}

// T-LSTM's steps give each row its discount g(dt) as well.
template <typename Args, typename acc_t>
struct TLSTMStep : ElementStep<Args, acc_t> {
  using ElementStep<Args, acc_t>::a;

  STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE Row<acc_t> row(int64_t b) const {
    Row<acc_t> r = a.steps.row(b, a.dt);
    r.discount = tlstm_discount(r.dt);
    return r;
  }
};

template <typename scalar_t, typename acc_t>
struct TLSTMForwardArgs {
  Steps steps;
  int64_t hidden;
  scalar_t* gates;            // [L, B, 4H] in: x W_ih^T + b + W_hh h (AddRecurrent); out:
                              //        activations (kSave)
  const acc_t* short_pre;     // [B, H] W_d c of this step
  const acc_t* decay_bias;    // [H] b_d
  const acc_t* dt;            // [L, B]
  Activation<acc_t> act;      // of the short-term memory
  scalar_t* h;                // [B, H]
  acc_t* c;                   // [B, H]
  scalar_t* output;           // [L, B, H]
  acc_t* cells;               // [L, B, 3H] (kSave)
  scalar_t* recurrent_input;  // [L, B, H] (kSave)
};

template <bool kSave, typename scalar_t, typename acc_t>
struct TLSTMForward : TLSTMStep<TLSTMForwardArgs<scalar_t, acc_t>, acc_t> {
  using Layout = TLSTMLayout;
  using TLSTMStep<TLSTMForwardArgs<scalar_t, acc_t>, acc_t>::a;

  STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE void active(const Row<acc_t>& row, int64_t b,
                                                   int64_t j) const {
    const int64_t H = a.hidden;
    const int64_t state = b * H + j;
    scalar_t* gx = a.gates + row.index * (Layout::kGates * H) + j;
    auto pre = [&](int gate) { return load<scalar_t, acc_t>(gx + gate * H); };
    const acc_t c = a.c[state];
    const acc_t short_term = a.act(a.short_pre[state] + a.decay_bias[j]);
    const acc_t c_star = c - short_term + row.discount * short_term;
    const acc_t i = sigmoid(pre(Layout::kI));
    const acc_t f = sigmoid(pre(Layout::kF));
    const acc_t g = hyperbolic_tangent(pre(Layout::kG));
    const acc_t o = sigmoid(pre(Layout::kO));
    const acc_t c_new = f * c_star + i * g;
    const acc_t tanh_c = hyperbolic_tangent(c_new);
    const acc_t h_new = o * tanh_c;
    if constexpr (kSave) {
      gx[Layout::kI * H] = static_cast<scalar_t>(i);
      gx[Layout::kF * H] = static_cast<scalar_t>(f);
      gx[Layout::kG * H] = static_cast<scalar_t>(g);
      gx[Layout::kO * H] = static_cast<scalar_t>(o);
      acc_t* cells = a.cells + row.index * (Layout::kCells * H) + j;
      cells[Layout::kShort * H] = short_term;
      cells[Layout::kCStar * H] = c_star;
      cells[Layout::kCPrev * H] = c;
      a.recurrent_input[row.index * H + j] = a.h[state];
    }
    a.c[state] = c_new;
    a.h[state] = static_cast<scalar_t>(h_new);
    a.output[row.index * H + j] = static_cast<scalar_t>(h_new);
  }
};

template <typename scalar_t, typename acc_t>
struct TLSTMBackwardArgs {
  Steps steps;
  int64_t hidden;
  const scalar_t* grad_output;  // [L, B, H] with d/dh_n added at each row's last position
  const acc_t* dt;              // [L, B]
  Activation<acc_t> act;
  const scalar_t* gates;          // [L, B, 4H] the gates' activations
  const acc_t* cells;             // [L, B, 3H]
  const scalar_t* grad_h_later;   // [B, H] (GEMM: grad_gates_step W_hh of the later step)
  const acc_t* grad_c_recurrent;  // [B, H] d/dc through W_d from the later step (GEMM:
                                  //        grad_short_step W_d; 0 before a row's last step)
  scalar_t* grad_gates;           // [L, B, 4H]
  scalar_t* grad_gates_step;      // [B, 4H]
  acc_t* grad_short;              // [L, B, H] d/d(W_d c + b_d) by position
  acc_t* grad_short_step;         // [B, H]
  acc_t* grad_c_direct;           // [B, H] in: d/dc after the step without the W_d path (d/dc_n
                                  //        before a row's last step); out: the same before it
};

template <typename scalar_t, typename acc_t>
struct TLSTMBackward : TLSTMStep<TLSTMBackwardArgs<scalar_t, acc_t>, acc_t> {
  using Layout = TLSTMLayout;
  using TLSTMStep<TLSTMBackwardArgs<scalar_t, acc_t>, acc_t>::a;

  STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE void inactive(int64_t b, int64_t j) const {
    const int64_t H = a.hidden;
    scalar_t* gs = a.grad_gates_step + b * (Layout::kGates * H) + j;
    for (int k = 0; k < Layout::kGates; ++k) gs[k * H] = scalar_t(0);
    a.grad_short_step[b * H + j] = acc_t(0);
  }

  STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE void active(const Row<acc_t>& row, int64_t b,
                                                   int64_t j) const {
    const int64_t H = a.hidden;
    const int64_t state = b * H + j;
    const scalar_t* gates = a.gates + row.index * (Layout::kGates * H) + j;
    const acc_t* cells = a.cells + row.index * (Layout::kCells * H) + j;
    const acc_t dh = load<scalar_t, acc_t>(a.grad_output + row.index * H + j) +
                     load<scalar_t, acc_t>(a.grad_h_later + state);
    const acc_t dc_new = a.grad_c_direct[state] + a.grad_c_recurrent[state];
    const acc_t i = load<scalar_t, acc_t>(gates + Layout::kI * H);
    const acc_t f = load<scalar_t, acc_t>(gates + Layout::kF * H);
    const acc_t g = load<scalar_t, acc_t>(gates + Layout::kG * H);
    const acc_t o = load<scalar_t, acc_t>(gates + Layout::kO * H);
    const acc_t short_term = cells[Layout::kShort * H], c_star = cells[Layout::kCStar * H];
    const acc_t tanh_c = hyperbolic_tangent(f * c_star + i * g);

    const acc_t d_pre_o = dh * tanh_c * logistic_derivative(o);
    const acc_t dc = dc_new + dh * o * tanh_derivative(tanh_c);
    const acc_t d_pre_i = dc * g * logistic_derivative(i);
    const acc_t d_pre_f = dc * c_star * logistic_derivative(f);
    const acc_t d_pre_g = dc * i * tanh_derivative(g);
    const acc_t dc_star = dc * f;
    const acc_t d_short_pre = dc_star * (row.discount - acc_t(1)) * a.act.derivative(short_term);

    scalar_t* gg = a.grad_gates + row.index * (Layout::kGates * H) + j;
    scalar_t* gs = a.grad_gates_step + b * (Layout::kGates * H) + j;
    const acc_t grads[Layout::kGates] = {d_pre_i, d_pre_f, d_pre_g, d_pre_o};
    for (int k = 0; k < Layout::kGates; ++k) {
      gg[k * H] = static_cast<scalar_t>(grads[k]);
      gs[k * H] = static_cast<scalar_t>(grads[k]);
    }
    a.grad_short[row.index * H + j] = d_short_pre;
    a.grad_short_step[state] = d_short_pre;
    a.grad_c_direct[state] = dc_star;
  }
};

// ---------------------------------------------------------------------------------------------
// Time-decay GRU: h~ = gamma * h with gamma = exp(-max(0, w_gamma dt + b_gamma)), then a
// torch.nn.GRU step on h~ (blocks [r, z, n]; n = tanh(x_n + r * (W_hn h~ + b_hn))).
// Per step: TimeDecay (h~ and gamma), the GEMM W_hh h~ + b_hh, then TimeDecayGRUForward.
// Saved cells: [W_hn h~ + b_hn, h_prev, gamma].

struct TimeDecayGRULayout {
  static constexpr int kR = 0, kZ = 1, kN = 2, kGates = 3;
  static constexpr int kHiddenN = 0, kHPrev = 1, kGamma = 2, kCells = 3;
};

template <typename scalar_t, typename acc_t>
STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE acc_t decay_exponent(const scalar_t* decay_weight,
                                                          const scalar_t* decay_bias, acc_t dt,
                                                          int64_t j) {  // w_gamma dt + b_gamma
  return load<scalar_t, acc_t>(decay_weight + j) * dt + load<scalar_t, acc_t>(decay_bias + j);
}

template <typename scalar_t, typename acc_t>
struct TimeDecayArgs {
  Steps steps;
  int64_t hidden;
  const acc_t* dt;               // [L, B]
  const scalar_t* decay_weight;  // [H] w_gamma
  const scalar_t* decay_bias;    // [H] b_gamma
  const acc_t* h;                // [B, H] the state before the step
  scalar_t* h_tilde;             // [B, H] gamma * h (GEMM operand)
  acc_t* gamma;                  // [B, H]
  acc_t* cells;                  // [L, B, 3H] (kSave)
  scalar_t* recurrent_input;     // [L, B, H] h~ by position (kSave)
};

template <bool kSave, typename scalar_t, typename acc_t>
struct TimeDecay : ElementStep<TimeDecayArgs<scalar_t, acc_t>, acc_t> {
  using Layout = TimeDecayGRULayout;
  using ElementStep<TimeDecayArgs<scalar_t, acc_t>, acc_t>::a;

  STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE void active(const Row<acc_t>& row, int64_t b,
                                                   int64_t j) const {
    const int64_t H = a.hidden;
    const int64_t state = b * H + j;
    const acc_t exponent = decay_exponent(a.decay_weight, a.decay_bias, row.dt, j);
    const acc_t gamma = exponential(-(exponent > acc_t(0) ? exponent : acc_t(0)));
    const acc_t h = a.h[state];
    const scalar_t h_tilde = static_cast<scalar_t>(gamma * h);
    a.h_tilde[state] = h_tilde;
    a.gamma[state] = gamma;
    if constexpr (kSave) {
      acc_t* cells = a.cells + row.index * (Layout::kCells * H) + j;
      cells[Layout::kHPrev * H] = h;
      cells[Layout::kGamma * H] = gamma;
      a.recurrent_input[row.index * H + j] = h_tilde;
    }
  }
};

template <typename scalar_t, typename acc_t>
struct TimeDecayGRUForwardArgs {
  Steps steps;
  int64_t hidden;
  scalar_t* gates;          // [L, B, 3H] in: x W_ih^T + b_ih; out: activations (kSave)
  const scalar_t* gates_h;  // [B, 3H] W_hh h~ + b_hh
  const acc_t* dt;          // [L, B]
  const acc_t* gamma;       // [B, H]
  acc_t* h;                 // [B, H] in: before the step (undecayed), out: after
  scalar_t* output;         // [L, B, H]
  acc_t* cells;             // [L, B, 3H] (kSave)
};

template <bool kSave, typename scalar_t, typename acc_t>
struct TimeDecayGRUForward : ElementStep<TimeDecayGRUForwardArgs<scalar_t, acc_t>, acc_t> {
  using Layout = TimeDecayGRULayout;
  using ElementStep<TimeDecayGRUForwardArgs<scalar_t, acc_t>, acc_t>::a;

  STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE void active(const Row<acc_t>& row, int64_t b,
                                                   int64_t j) const {
    const int64_t H = a.hidden;
    const int64_t state = b * H + j;
    scalar_t* gx = a.gates + row.index * (Layout::kGates * H) + j;
    const scalar_t* gh = a.gates_h + b * (Layout::kGates * H) + j;
    auto x_side = [&](int gate) { return load<scalar_t, acc_t>(gx + gate * H); };
    auto h_side = [&](int gate) { return load<scalar_t, acc_t>(gh + gate * H); };
    const acc_t r = sigmoid(x_side(Layout::kR) + h_side(Layout::kR));
    const acc_t z = sigmoid(x_side(Layout::kZ) + h_side(Layout::kZ));
    const acc_t hidden_n = h_side(Layout::kN);
    const acc_t n = hyperbolic_tangent(x_side(Layout::kN) + r * hidden_n);
    const acc_t h_tilde = a.gamma[state] * a.h[state];
    const acc_t h_new = (acc_t(1) - z) * n + z * h_tilde;
    if constexpr (kSave) {
      gx[Layout::kR * H] = static_cast<scalar_t>(r);
      gx[Layout::kZ * H] = static_cast<scalar_t>(z);
      gx[Layout::kN * H] = static_cast<scalar_t>(n);
      a.cells[row.index * (Layout::kCells * H) + Layout::kHiddenN * H + j] = hidden_n;
    }
    a.h[state] = h_new;
    a.output[row.index * H + j] = static_cast<scalar_t>(h_new);
  }
};

template <typename scalar_t, typename acc_t>
struct TimeDecayGRUBackwardArgs {
  Steps steps;
  int64_t hidden;
  const scalar_t* grad_output;    // [L, B, H]
  const acc_t* dt;                // [L, B]
  const scalar_t* gates;          // [L, B, 3H] the gates' activations
  const acc_t* cells;             // [L, B, 3H]
  const acc_t* grad_h_later;      // [B, H] d/dh after this step through later steps (d/dh_n
                                  //        before a row's last step)
  scalar_t* grad_gates_x;         // [L, B, 3H]
  scalar_t* grad_gates_h;         // [L, B, 3H] d/d(W_hh h~ + b_hh)
  scalar_t* grad_gates_h_step;    // [B, 3H] (GEMM operand)
  scalar_t* grad_h_tilde_direct;  // [B, H] d/dh~ through z * h~ (GEMM addend)
};

template <typename scalar_t, typename acc_t>
struct TimeDecayGRUBackward : ElementStep<TimeDecayGRUBackwardArgs<scalar_t, acc_t>, acc_t> {
  using Layout = TimeDecayGRULayout;
  using ElementStep<TimeDecayGRUBackwardArgs<scalar_t, acc_t>, acc_t>::a;

  STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE void inactive(int64_t b, int64_t j) const {
    const int64_t H = a.hidden;
    scalar_t* gs = a.grad_gates_h_step + b * (Layout::kGates * H) + j;
    for (int k = 0; k < Layout::kGates; ++k) gs[k * H] = scalar_t(0);
    a.grad_h_tilde_direct[b * H + j] = scalar_t(0);
  }

  STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE void active(const Row<acc_t>& row, int64_t b,
                                                   int64_t j) const {
    const int64_t H = a.hidden;
    const int64_t state = b * H + j;
    const scalar_t* gates = a.gates + row.index * (Layout::kGates * H) + j;
    const acc_t* cells = a.cells + row.index * (Layout::kCells * H) + j;
    const acc_t dh =
        load<scalar_t, acc_t>(a.grad_output + row.index * H + j) + a.grad_h_later[state];
    const acc_t r = load<scalar_t, acc_t>(gates + Layout::kR * H);
    const acc_t z = load<scalar_t, acc_t>(gates + Layout::kZ * H);
    const acc_t n = load<scalar_t, acc_t>(gates + Layout::kN * H);
    const acc_t hidden_n = cells[Layout::kHiddenN * H];
    const acc_t h_tilde = cells[Layout::kGamma * H] * cells[Layout::kHPrev * H];
    const acc_t d_pre_n = dh * (acc_t(1) - z) * tanh_derivative(n);
    const acc_t d_pre_z = dh * (h_tilde - n) * logistic_derivative(z);
    const acc_t d_pre_r = d_pre_n * hidden_n * logistic_derivative(r);
    const acc_t x_grads[Layout::kGates] = {d_pre_r, d_pre_z, d_pre_n};
    const acc_t h_grads[Layout::kGates] = {d_pre_r, d_pre_z, d_pre_n * r};
    scalar_t* gx = a.grad_gates_x + row.index * (Layout::kGates * H) + j;
    scalar_t* gh = a.grad_gates_h + row.index * (Layout::kGates * H) + j;
    scalar_t* gs = a.grad_gates_h_step + b * (Layout::kGates * H) + j;
    for (int k = 0; k < Layout::kGates; ++k) {
      gx[k * H] = static_cast<scalar_t>(x_grads[k]);
      gh[k * H] = static_cast<scalar_t>(h_grads[k]);
      gs[k * H] = static_cast<scalar_t>(h_grads[k]);
    }
    a.grad_h_tilde_direct[state] = static_cast<scalar_t>(dh * z);
  }
};

template <typename scalar_t, typename acc_t>
struct TimeDecayBackwardArgs {
  Steps steps;
  int64_t hidden;
  const acc_t* dt;               // [L, B]
  const scalar_t* decay_weight;  // [H]
  const scalar_t* decay_bias;    // [H]
  const acc_t* cells;            // [L, B, 3H]
  const scalar_t* grad_h_tilde;  // [B, H] d/dh~ of this step (GEMM output)
  acc_t* grad_h;                 // [B, H] out: d/dh before this step
  acc_t* grad_weights;           // [B, 2H] per-row sums over steps: w_gamma, b_gamma
};

template <typename scalar_t, typename acc_t>
struct TimeDecayBackward : ElementStep<TimeDecayBackwardArgs<scalar_t, acc_t>, acc_t> {
  using Layout = TimeDecayGRULayout;
  using ElementStep<TimeDecayBackwardArgs<scalar_t, acc_t>, acc_t>::a;

  STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE void active(const Row<acc_t>& row, int64_t b,
                                                   int64_t j) const {
    const int64_t H = a.hidden;
    const int64_t state = b * H + j;
    const acc_t* cells = a.cells + row.index * (Layout::kCells * H) + j;
    const acc_t gamma = cells[Layout::kGamma * H];
    const acc_t d_h_tilde = load<scalar_t, acc_t>(a.grad_h_tilde + state);
    const acc_t h_prev = cells[Layout::kHPrev * H];
    const acc_t exponent = decay_exponent(a.decay_weight, a.decay_bias, row.dt, j);
    // d gamma / d exponent = -gamma where the exponent is positive, 0 elsewhere (relu).
    const acc_t d_exponent = exponent > acc_t(0) ? -gamma * d_h_tilde * h_prev : acc_t(0);
    acc_t* gw = a.grad_weights + b * (2 * H) + j;
    gw[0] += d_exponent * row.dt;
    gw[H] += d_exponent;
    a.grad_h[state] = gamma * d_h_tilde;
  }
};

}  // namespace time_rnn
}  // namespace stseq
