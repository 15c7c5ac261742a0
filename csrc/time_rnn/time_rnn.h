// Time-aware recurrent cells: the per-element math shared by the CPU and CUDA kernels.
//
// Every step of every cell is one "element step": a functor with
//   row(b)                 -> Row: which position row b processes at this step, whether it is
//                             active (step < its length) and its time gap;
//   active(row, b, lane)   -> the cell math of the hidden units `lane` of row b;
//   inactive(b, lane)      -> what a finished (or not yet started) row writes (zeros into GEMM
//                             operands of the backward, nothing in the forward);
//   prefetch(row)          -> (CPU) the row's by-position reads, asked for one row ahead.
// A lane is a set of hidden units with lane.load(row pointer) / lane.store(row pointer, value)
// and its math in Lane::Act (sigmoid, tanh, exp, minimum, maximum, where_greater,
// where_less_equal; see common/cpu_vector.h): the CPU runs each row as at::vec::Vectorized lanes
// plus a ScalarMath lane per remaining unit (time_rnn_cpu_rows.h, built for the baseline and for
// AVX2 + FMA), the CUDA kernel gives one thread, one scalar lane, to each (b, j)
// (time_rnn_cuda.cu); the host drivers around them (time_rnn_driver.h: the GEMMs and the time
// loop) are the same code for both.
//
// Notation: H hidden units, B rows, L positions; buffers "by position" are [L, B, ...] indexed
// by (t, b) -> t * B + b, "step" buffers are [B, ...] and hold the current step's values.
// scalar_t is the tensors' dtype, acc_t its accumulation type (float for half and bfloat16):
// cell states and gradient accumulators are acc_t.
//
// What a training forward saves: the gates' activations, written in place over the input
// projections x W_ih^T they were computed from (gates [L, B, G*H], scalar_t: each element is
// read, then overwritten, by its own thread; the input GEMM adds the bias), the
// cell states the backward cannot recompute cheaply from them (cells [L, B, C*H], acc_t), and
// the h each position multiplied W_hh by (recurrent_input [L, B, H]).
//
// The backward steps read one gradient per state, never a per-row choice (which would keep the
// CPU loop from vectorising): the driver adds d/dh_n to grad_output at each row's last position
// where h comes out of a GEMM (the LSTM cells), and otherwise starts the state's gradient
// buffer at d/dh_n or d/dc_n, which inactive rows leave untouched.
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
namespace time_rnn {

// ---------------------------------------------------------------------------------------------
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

// ---------------------------------------------------------------------------------------------
// Rows and steps. Step s of row b (length n_b, clamped to [0, L]) processes position s in the
// forward direction and n_b - 1 - s in the reverse one; rows with s >= n_b are inactive.

template <typename acc_t>
struct Row {
  int64_t index;  // (position, b) -> position * B + b; meaningful when active
  bool active;
  acc_t dt;        // time gap at the position (0 when inactive)
  acc_t discount;  // T-LSTM's g(dt) = 1 / log(e + dt); 1 for the other cells
  int64_t sums;    // the row of the backward's partial-sum buffers this row adds to: b itself
                   // (CUDA: one thread per (b, j)), or its tile's first row (the CPU launcher
                   // sets it: one thread carries a tile, its sums stay in L1)
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
    return {index, active, active ? dt[index] : acc_t(0), acc_t(1), b};
  }
};

// Asks the CPU's caches for count elements from p (host only: the CPU launcher prefetches the
// next row's by-position reads while a row runs; they come from memory, and the hardware
// prefetcher does not follow a row's interleaved gate blocks).
template <typename T>
STSEQ_FORCE_INLINE void prefetch_span(const T* p, int64_t count) {
#if defined(__GNUC__) || defined(__clang__)
  const char* bytes = reinterpret_cast<const char*>(p);
  const int64_t size = count * static_cast<int64_t>(sizeof(T));
  for (int64_t k = 0; k < size; k += 64) __builtin_prefetch(bytes + k);
#endif
}

// A backward row's by-position reads (saved gates and cells, grad_output) at position index.
template <typename Layout, typename Args>
STSEQ_FORCE_INLINE void prefetch_backward_row(const Args& a, int64_t index) {
  const int64_t H = a.hidden;
  prefetch_span(a.gates + index * (Layout::kGates * H), Layout::kGates * H);
  prefetch_span(a.cells + index * (Layout::kCells * H), Layout::kCells * H);
  prefetch_span(a.grad_output + index * H, H);
}

// What the element steps share: their arguments `a` (with the op's Steps and dt), the row a
// step gives row b, nothing to write for an inactive row and nothing to prefetch. Each step adds
// active() and hides row(), inactive() or prefetch() where it needs its own.
template <typename Args, typename acc_t>
struct ElementStep {
  using acc_type = acc_t;
  Args a;

  STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE Row<acc_t> row(int64_t b) const {
    return a.steps.row(b, a.dt);
  }
  template <typename Lane>
  STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE void inactive(int64_t, const Lane&) const {}
  STSEQ_FORCE_INLINE void prefetch(const Row<acc_t>&) const {}  // host only
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

  template <typename Lane>
  STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE void active(const Row<acc_t>& row, int64_t b,
                                                   const Lane& lane) const {
    const int64_t H = a.hidden;
    scalar_t* gx = a.gates + row.index * (a.gate_blocks * H);
    const scalar_t* gh = a.gates_h + b * (a.recurrent_blocks * H);
    for (int64_t k = 0; k < a.recurrent_blocks; ++k) {
      lane.store(gx + k * H, lane.load(gx + k * H) + lane.load(gh + k * H));
    }
  }
};

// ---------------------------------------------------------------------------------------------
// Time-LSTM (Zhu et al., IJCAI 2017), variants 1-3. Column blocks of H:
//   gates (x side + bias)   v1 [i, f, g, o, t]   v2 [i, f, g, o, t1, t2]   v3 [i, g, o, t1, t2]
//   gates (h side)          the first 4 blocks (v3: 3)
//   peephole rows           [w_ci, w_cf, w_co]   (v3: [w_ci, w_co])
//   time_weight rows        v1 [w_t, w_to]       v2, v3 [w_t1, w_t2, w_to]
//   cells (saved)           c_prev
// c_out is the cell state the output gate and h read: c' in variant 1, c~ in 2 and 3 (the
// backward recomputes it from c_prev and the saved gates).

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
  static constexpr int kGradWeights = kPeepholes + kTimeWeights + kGates;  // backward sums
  static constexpr int kCPrev = 0;
  static constexpr int kCells = 1;
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
  acc_t* cells;                 // [L, B, H] c_prev (kSave)
  scalar_t* recurrent_input;    // [L, B, H] (kSave)
};

// c_out of the Time-LSTM variants from c_prev and the gates (c_new in variant 1).
template <int kVariant, typename T>
STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE T time_lstm_c_out(const T& c, const T& i, const T& f,
                                                       const T& g, const T& t1) {
  if constexpr (kVariant == 3) {
    return (T(1) - i * t1) * c + i * t1 * g;
  } else {
    return f * c + i * t1 * g;
  }
}

template <int kVariant, bool kSave, typename scalar_t, typename acc_t>
struct TimeLSTMForward : ElementStep<TimeLSTMForwardArgs<scalar_t, acc_t>, acc_t> {
  using Layout = TimeLSTMLayout<kVariant>;
  using ElementStep<TimeLSTMForwardArgs<scalar_t, acc_t>, acc_t>::a;

  STSEQ_FORCE_INLINE void prefetch(const Row<acc_t>& row) const {
    prefetch_span(a.gates + row.index * (Layout::kGates * a.hidden), Layout::kGates * a.hidden);
  }

  template <typename Lane>
  STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE void active(const Row<acc_t>& row, int64_t b,
                                                   const Lane& lane) const {
    using T = typename Lane::Value;
    using Act = typename Lane::Act;
    const int64_t H = a.hidden;
    scalar_t* gx = a.gates + row.index * (Layout::kGates * H);
    scalar_t* h = a.h + b * H;
    acc_t* c_state = a.c + b * H;
    const T c = lane.load(c_state);
    const T dt(row.dt);
    // x W_ih^T + b (+ W_hh h in the recurrent blocks) of a gate.
    auto pre = [&](int gate) { return lane.load(gx + gate * H); };
    auto peephole = [&](int k) { return lane.load(a.peephole + k * H); };
    auto time_weight = [&](int k) { return lane.load(a.time_weight + k * H); };

    const T i = Act::sigmoid(pre(Layout::kI) + peephole(Layout::kPeepI) * c);
    const T g = Act::tanh(pre(Layout::kG));
    T w_t1 = time_weight(Layout::kTimeT1);
    T f(0), t2(0), c_new;
    if constexpr (Layout::kTwoTimeGates) {
      w_t1 = Act::minimum(w_t1, T(static_cast<acc_t>(kTimeWeightBound)));
      t2 = Act::sigmoid(pre(Layout::kT2) +
                        a.phi.template apply<Act>(dt * time_weight(Layout::kTimeT2)));
    }
    const T t1 = Act::sigmoid(pre(Layout::kT1) + a.phi.template apply<Act>(dt * w_t1));
    if constexpr (Layout::kForget) {
      f = Act::sigmoid(pre(Layout::kF) + peephole(Layout::kPeepF) * c);
    }
    const T c_out = time_lstm_c_out<kVariant>(c, i, f, g, t1);
    if constexpr (kVariant == 1) {
      c_new = c_out;
    } else if constexpr (kVariant == 2) {
      c_new = f * c + i * t2 * g;
    } else {
      c_new = (T(1) - i) * c + i * t2 * g;
    }
    const T o = Act::sigmoid(pre(Layout::kO) + dt * time_weight(Layout::kTimeO) +
                             peephole(Layout::kPeepO) * c_out);
    const T h_new = o * Act::tanh(c_out);
    if constexpr (kSave) {
      lane.store(gx + Layout::kI * H, i);
      lane.store(gx + Layout::kG * H, g);
      lane.store(gx + Layout::kO * H, o);
      lane.store(gx + Layout::kT1 * H, t1);
      if constexpr (Layout::kForget) lane.store(gx + Layout::kF * H, f);
      if constexpr (Layout::kTwoTimeGates) lane.store(gx + Layout::kT2 * H, t2);
      lane.store(a.cells + row.index * (Layout::kCells * H) + Layout::kCPrev * H, c);
      lane.store(a.recurrent_input + row.index * H, lane.load(h));
    }
    lane.store(c_state, c_new);
    lane.store(h, h_new);
    lane.store(a.output + row.index * H, h_new);
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
  const acc_t* cells;            // [L, B, H] c_prev
  const scalar_t* grad_h_later;  // [B, H] d/dh after this step through later steps (GEMM)
  acc_t* grad_c;                 // [B, H] in: d/dc after this step (d/dc_n before a row's
                                 //        last step), out: d/dc before it
  scalar_t* grad_gates;          // [L, B, G*H] d/d(pre-activations) by position
  scalar_t* grad_gates_step;     // [B, R*H] this step's recurrent part (GEMM operand), or
                                 //        nullptr: the GEMM reads grad_gates (StepOperand)
  acc_t* grad_weights;           // [B, (P+K+G)*H] partial sums (Row::sums) over steps and
                                 //        rows: peepholes, time weights, bias
};

template <int kVariant, typename scalar_t, typename acc_t>
struct TimeLSTMBackward : ElementStep<TimeLSTMBackwardArgs<scalar_t, acc_t>, acc_t> {
  using Layout = TimeLSTMLayout<kVariant>;
  using ElementStep<TimeLSTMBackwardArgs<scalar_t, acc_t>, acc_t>::a;

  STSEQ_FORCE_INLINE void prefetch(const Row<acc_t>& row) const {
    prefetch_backward_row<Layout>(a, row.index);
  }

  template <typename Lane>
  STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE void inactive(int64_t b, const Lane& lane) const {
    if (a.grad_gates_step == nullptr) return;
    scalar_t* gs = a.grad_gates_step + b * (Layout::kRecurrentGates * a.hidden);
    for (int k = 0; k < Layout::kRecurrentGates; ++k) {
      lane.store(gs + k * a.hidden, typename Lane::Value(0));
    }
  }

  template <typename Lane>
  STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE void active(const Row<acc_t>& row, int64_t b,
                                                   const Lane& lane) const {
    using T = typename Lane::Value;
    using Act = typename Lane::Act;
    const int64_t H = a.hidden;
    const scalar_t* gates = a.gates + row.index * (Layout::kGates * H);
    const acc_t* cells = a.cells + row.index * (Layout::kCells * H);
    acc_t* grad_c = a.grad_c + b * H;
    auto saved = [&](int gate) { return lane.load(gates + gate * H); };
    auto peephole = [&](int k) { return lane.load(a.peephole + k * H); };
    auto time_weight = [&](int k) { return lane.load(a.time_weight + k * H); };
    const T dt(row.dt);

    const T dh = lane.load(a.grad_output + row.index * H) + lane.load(a.grad_h_later + b * H);
    const T dc_new = lane.load(grad_c);
    const T i = saved(Layout::kI), g = saved(Layout::kG), o = saved(Layout::kO);
    const T t1 = saved(Layout::kT1);
    T f(0), t2(0);
    if constexpr (Layout::kForget) f = saved(Layout::kF);
    if constexpr (Layout::kTwoTimeGates) t2 = saved(Layout::kT2);
    const T c = lane.load(cells + Layout::kCPrev * H);
    const T c_out = time_lstm_c_out<kVariant>(c, i, f, g, t1);
    const T tanh_c_out = Act::tanh(c_out);

    const T d_pre_o = dh * tanh_c_out * logistic_derivative(o);
    const T dc_out = dh * o * tanh_derivative(tanh_c_out) + d_pre_o * peephole(Layout::kPeepO);
    T di, dg, dt1, dt2(0), df(0), dc;
    if constexpr (kVariant == 1) {  // c' = f c + i t1 g, read by o and h and carried
      const T dc_total = dc_new + dc_out;
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
      dc = dc_out * (T(1) - i * t1) + dc_new * (T(1) - i);
    }
    const T d_pre_i = di * logistic_derivative(i);
    const T d_pre_g = dg * tanh_derivative(g);
    const T d_pre_t1 = dt1 * logistic_derivative(t1);
    dc = dc + d_pre_i * peephole(Layout::kPeepI);

    acc_t* gw = a.grad_weights + row.sums * (Layout::kGradWeights * H);
    acc_t* gw_time = gw + Layout::kPeepholes * H;
    acc_t* gw_bias = gw_time + Layout::kTimeWeights * H;
    auto accumulate = [&](acc_t* sum, const T& value) { lane.store(sum, lane.load(sum) + value); };
    scalar_t* gg = a.grad_gates + row.index * (Layout::kGates * H);
    scalar_t* gs = a.grad_gates_step;
    if (gs != nullptr) gs += b * (Layout::kRecurrentGates * H);
    auto put = [&](int gate, const T& value) {
      lane.store(gg + gate * H, value);
      if (gs != nullptr && gate < Layout::kRecurrentGates) lane.store(gs + gate * H, value);
      accumulate(gw_bias + gate * H, value);
    };
    put(Layout::kI, d_pre_i);
    put(Layout::kG, d_pre_g);
    put(Layout::kO, d_pre_o);
    put(Layout::kT1, d_pre_t1);

    accumulate(gw + Layout::kPeepI * H, d_pre_i * c);
    accumulate(gw + Layout::kPeepO * H, d_pre_o * c_out);
    accumulate(gw_time + Layout::kTimeO * H, d_pre_o * dt);
    const T w_t1_given = time_weight(Layout::kTimeT1);
    const T bound(static_cast<acc_t>(kTimeWeightBound));
    T w_t1 = w_t1_given;
    if constexpr (Layout::kTwoTimeGates) {
      w_t1 = Act::minimum(w_t1, bound);
      const T d_pre_t2 = dt2 * logistic_derivative(t2);
      put(Layout::kT2, d_pre_t2);
      const T phi_t2 = a.phi.template apply<Act>(dt * time_weight(Layout::kTimeT2));
      accumulate(gw_time + Layout::kTimeT2 * H, d_pre_t2 * a.phi.derivative(phi_t2) * dt);
    }
    const T phi_t1 = a.phi.template apply<Act>(dt * w_t1);
    T d_w_t1 = d_pre_t1 * a.phi.derivative(phi_t1) * dt;
    if constexpr (Layout::kTwoTimeGates) {
      // Through the clamp w_t1 <= bound: a select (as torch.clamp's backward), so that a NaN
      // gradient does not pass where the clamp cut it off.
      d_w_t1 = Act::where_less_equal(w_t1_given, bound, d_w_t1);
    }
    accumulate(gw_time + Layout::kTimeT1 * H, d_w_t1);
    if constexpr (Layout::kForget) {
      const T d_pre_f = df * logistic_derivative(f);
      put(Layout::kF, d_pre_f);
      dc = dc + d_pre_f * peephole(Layout::kPeepF);
      accumulate(gw + Layout::kPeepF * H, d_pre_f * c);
    }
    lane.store(grad_c, dc);
  }
};

// ---------------------------------------------------------------------------------------------
// T-LSTM (Baytas et al., KDD 2017). Gate blocks [i, f, g, o] (torch.nn.LSTM's order, bias
// b_ih + b_hh). Per step: C_S = act(W_d c + b_d) (the GEMM gives short_pre = W_d c in acc_t, the
// element step adds b_d), c* = c - C_S + g(dt) C_S, then the LSTM step on c*.
// Saved cells: [C_S, c_prev] (c* and c' = f c* + i g are recomputed from them).

struct TLSTMLayout {
  static constexpr int kI = 0, kF = 1, kG = 2, kO = 3, kGates = 4;
  static constexpr int kShort = 0, kCPrev = 1, kCells = 2;
  static constexpr int kGradDecayBias = kGates, kGradWeights = kGates + 1;  // backward sums
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
  acc_t* cells;               // [L, B, 2H] (kSave)
  scalar_t* recurrent_input;  // [L, B, H] (kSave)
};

template <bool kSave, typename scalar_t, typename acc_t>
struct TLSTMForward : TLSTMStep<TLSTMForwardArgs<scalar_t, acc_t>, acc_t> {
  using Layout = TLSTMLayout;
  using TLSTMStep<TLSTMForwardArgs<scalar_t, acc_t>, acc_t>::a;

  STSEQ_FORCE_INLINE void prefetch(const Row<acc_t>& row) const {
    prefetch_span(a.gates + row.index * (Layout::kGates * a.hidden), Layout::kGates * a.hidden);
  }

  template <typename Lane>
  STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE void active(const Row<acc_t>& row, int64_t b,
                                                   const Lane& lane) const {
    using T = typename Lane::Value;
    using Act = typename Lane::Act;
    const int64_t H = a.hidden;
    scalar_t* gx = a.gates + row.index * (Layout::kGates * H);
    scalar_t* h = a.h + b * H;
    acc_t* c_state = a.c + b * H;
    auto pre = [&](int gate) { return lane.load(gx + gate * H); };
    const T c = lane.load(c_state);
    const T short_term =
        a.act.template apply<Act>(lane.load(a.short_pre + b * H) + lane.load(a.decay_bias));
    const T c_star = c - short_term + T(row.discount) * short_term;
    const T i = Act::sigmoid(pre(Layout::kI));
    const T f = Act::sigmoid(pre(Layout::kF));
    const T g = Act::tanh(pre(Layout::kG));
    const T o = Act::sigmoid(pre(Layout::kO));
    const T c_new = f * c_star + i * g;
    const T h_new = o * Act::tanh(c_new);
    if constexpr (kSave) {
      lane.store(gx + Layout::kI * H, i);
      lane.store(gx + Layout::kF * H, f);
      lane.store(gx + Layout::kG * H, g);
      lane.store(gx + Layout::kO * H, o);
      acc_t* cells = a.cells + row.index * (Layout::kCells * H);
      lane.store(cells + Layout::kShort * H, short_term);
      lane.store(cells + Layout::kCPrev * H, c);
      lane.store(a.recurrent_input + row.index * H, lane.load(h));
    }
    lane.store(c_state, c_new);
    lane.store(h, h_new);
    lane.store(a.output + row.index * H, h_new);
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
  const acc_t* cells;             // [L, B, 2H]
  const scalar_t* grad_h_later;   // [B, H] (GEMM: grad_gates_step W_hh of the later step)
  const acc_t* grad_c_recurrent;  // [B, H] d/dc through W_d from the later step (GEMM:
                                  //        grad_short_step W_d; 0 before a row's last step)
  scalar_t* grad_gates;           // [L, B, 4H]
  scalar_t* grad_gates_step;      // [B, 4H] (GEMM operands, or both nullptr: the GEMMs read
                                  //        grad_gates and grad_short: StepOperand)
  acc_t* grad_short;              // [L, B, H] d/d(W_d c + b_d) by position
  acc_t* grad_short_step;         // [B, H]
  acc_t* grad_c_direct;           // [B, H] in: d/dc after the step without the W_d path (d/dc_n
                                  //        before a row's last step); out: the same before it
  acc_t* grad_weights;            // [B, 5H] partial sums (Row::sums): bias [4H], b_d [H]
};

template <typename scalar_t, typename acc_t>
struct TLSTMBackward : TLSTMStep<TLSTMBackwardArgs<scalar_t, acc_t>, acc_t> {
  using Layout = TLSTMLayout;
  using TLSTMStep<TLSTMBackwardArgs<scalar_t, acc_t>, acc_t>::a;

  STSEQ_FORCE_INLINE void prefetch(const Row<acc_t>& row) const {
    prefetch_backward_row<Layout>(a, row.index);
  }

  template <typename Lane>
  STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE void inactive(int64_t b, const Lane& lane) const {
    const int64_t H = a.hidden;
    const typename Lane::Value zero(0);
    if (a.grad_gates_step == nullptr) return;
    scalar_t* gs = a.grad_gates_step + b * (Layout::kGates * H);
    for (int k = 0; k < Layout::kGates; ++k) lane.store(gs + k * H, zero);
    lane.store(a.grad_short_step + b * H, zero);
  }

  template <typename Lane>
  STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE void active(const Row<acc_t>& row, int64_t b,
                                                   const Lane& lane) const {
    using T = typename Lane::Value;
    using Act = typename Lane::Act;
    const int64_t H = a.hidden;
    const scalar_t* gates = a.gates + row.index * (Layout::kGates * H);
    const acc_t* cells = a.cells + row.index * (Layout::kCells * H);
    acc_t* grad_c_direct = a.grad_c_direct + b * H;
    const T dh = lane.load(a.grad_output + row.index * H) + lane.load(a.grad_h_later + b * H);
    const T dc_new = lane.load(grad_c_direct) + lane.load(a.grad_c_recurrent + b * H);
    const T i = lane.load(gates + Layout::kI * H);
    const T f = lane.load(gates + Layout::kF * H);
    const T g = lane.load(gates + Layout::kG * H);
    const T o = lane.load(gates + Layout::kO * H);
    const T short_term = lane.load(cells + Layout::kShort * H);
    const T c_star =
        lane.load(cells + Layout::kCPrev * H) - short_term + T(row.discount) * short_term;
    const T tanh_c = Act::tanh(f * c_star + i * g);

    const T d_pre_o = dh * tanh_c * logistic_derivative(o);
    const T dc = dc_new + dh * o * tanh_derivative(tanh_c);
    const T d_pre_i = dc * g * logistic_derivative(i);
    const T d_pre_f = dc * c_star * logistic_derivative(f);
    const T d_pre_g = dc * i * tanh_derivative(g);
    const T dc_star = dc * f;
    const T d_short_pre =
        dc_star * T(row.discount - acc_t(1)) * a.act.derivative(short_term);

    scalar_t* gg = a.grad_gates + row.index * (Layout::kGates * H);
    acc_t* gw = a.grad_weights + row.sums * (Layout::kGradWeights * H);
    auto accumulate = [&](acc_t* sum, const T& value) { lane.store(sum, lane.load(sum) + value); };
    const T grads[Layout::kGates] = {d_pre_i, d_pre_f, d_pre_g, d_pre_o};
    for (int k = 0; k < Layout::kGates; ++k) {
      lane.store(gg + k * H, grads[k]);
      accumulate(gw + k * H, grads[k]);
    }
    accumulate(gw + Layout::kGradDecayBias * H, d_short_pre);
    lane.store(a.grad_short + row.index * H, d_short_pre);
    if (a.grad_gates_step != nullptr) {
      scalar_t* gs = a.grad_gates_step + b * (Layout::kGates * H);
      for (int k = 0; k < Layout::kGates; ++k) lane.store(gs + k * H, grads[k]);
      lane.store(a.grad_short_step + b * H, d_short_pre);
    }
    lane.store(grad_c_direct, dc_star);
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

template <typename scalar_t, typename T, typename Lane>
STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE T decay_exponent(const scalar_t* decay_weight,
                                                      const scalar_t* decay_bias, const T& dt,
                                                      const Lane& lane) {  // w_gamma dt + b_gamma
  return lane.load(decay_weight) * dt + lane.load(decay_bias);
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

  template <typename Lane>
  STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE void active(const Row<acc_t>& row, int64_t b,
                                                   const Lane& lane) const {
    using T = typename Lane::Value;
    using Act = typename Lane::Act;
    const int64_t H = a.hidden;
    const T exponent = decay_exponent(a.decay_weight, a.decay_bias, T(row.dt), lane);
    const T gamma = Act::exp(T(0) - Act::maximum(exponent, T(0)));
    const T h = lane.load(a.h + b * H);
    scalar_t* h_tilde = a.h_tilde + b * H;
    lane.store(h_tilde, gamma * h);
    lane.store(a.gamma + b * H, gamma);
    if constexpr (kSave) {
      acc_t* cells = a.cells + row.index * (Layout::kCells * H);
      lane.store(cells + Layout::kHPrev * H, h);
      lane.store(cells + Layout::kGamma * H, gamma);
      lane.store(a.recurrent_input + row.index * H, lane.load(h_tilde));
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

  STSEQ_FORCE_INLINE void prefetch(const Row<acc_t>& row) const {
    prefetch_span(a.gates + row.index * (Layout::kGates * a.hidden), Layout::kGates * a.hidden);
  }

  template <typename Lane>
  STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE void active(const Row<acc_t>& row, int64_t b,
                                                   const Lane& lane) const {
    using T = typename Lane::Value;
    using Act = typename Lane::Act;
    const int64_t H = a.hidden;
    scalar_t* gx = a.gates + row.index * (Layout::kGates * H);
    const scalar_t* gh = a.gates_h + b * (Layout::kGates * H);
    acc_t* h = a.h + b * H;
    auto x_side = [&](int gate) { return lane.load(gx + gate * H); };
    auto h_side = [&](int gate) { return lane.load(gh + gate * H); };
    const T r = Act::sigmoid(x_side(Layout::kR) + h_side(Layout::kR));
    const T z = Act::sigmoid(x_side(Layout::kZ) + h_side(Layout::kZ));
    const T hidden_n = h_side(Layout::kN);
    const T n = Act::tanh(x_side(Layout::kN) + r * hidden_n);
    const T h_tilde = lane.load(a.gamma + b * H) * lane.load(h);
    const T h_new = (T(1) - z) * n + z * h_tilde;
    if constexpr (kSave) {
      lane.store(gx + Layout::kR * H, r);
      lane.store(gx + Layout::kZ * H, z);
      lane.store(gx + Layout::kN * H, n);
      lane.store(a.cells + row.index * (Layout::kCells * H) + Layout::kHiddenN * H, hidden_n);
    }
    lane.store(h, h_new);
    lane.store(a.output + row.index * H, h_new);
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
  scalar_t* grad_gates_h_step;    // [B, 3H] (GEMM operand), or nullptr: the GEMM reads
                                  //        grad_gates_h (StepOperand)
  scalar_t* grad_h_tilde_direct;  // [B, H] d/dh~ through z * h~ (GEMM addend)
  acc_t* grad_biases;             // [B, 6H] partial sums (Row::sums): b_ih [3H], b_hh [3H]
};

template <typename scalar_t, typename acc_t>
struct TimeDecayGRUBackward : ElementStep<TimeDecayGRUBackwardArgs<scalar_t, acc_t>, acc_t> {
  using Layout = TimeDecayGRULayout;
  using ElementStep<TimeDecayGRUBackwardArgs<scalar_t, acc_t>, acc_t>::a;

  STSEQ_FORCE_INLINE void prefetch(const Row<acc_t>& row) const {
    prefetch_backward_row<Layout>(a, row.index);
  }

  template <typename Lane>
  STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE void inactive(int64_t b, const Lane& lane) const {
    const int64_t H = a.hidden;
    const typename Lane::Value zero(0);
    lane.store(a.grad_h_tilde_direct + b * H, zero);
    if (a.grad_gates_h_step == nullptr) return;
    scalar_t* gs = a.grad_gates_h_step + b * (Layout::kGates * H);
    for (int k = 0; k < Layout::kGates; ++k) lane.store(gs + k * H, zero);
  }

  template <typename Lane>
  STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE void active(const Row<acc_t>& row, int64_t b,
                                                   const Lane& lane) const {
    using T = typename Lane::Value;
    const int64_t H = a.hidden;
    const scalar_t* gates = a.gates + row.index * (Layout::kGates * H);
    const acc_t* cells = a.cells + row.index * (Layout::kCells * H);
    const T dh = lane.load(a.grad_output + row.index * H) + lane.load(a.grad_h_later + b * H);
    const T r = lane.load(gates + Layout::kR * H);
    const T z = lane.load(gates + Layout::kZ * H);
    const T n = lane.load(gates + Layout::kN * H);
    const T hidden_n = lane.load(cells + Layout::kHiddenN * H);
    const T h_tilde = lane.load(cells + Layout::kGamma * H) * lane.load(cells + Layout::kHPrev * H);
    const T d_pre_n = dh * (T(1) - z) * tanh_derivative(n);
    const T d_pre_z = dh * (h_tilde - n) * logistic_derivative(z);
    const T d_pre_r = d_pre_n * hidden_n * logistic_derivative(r);
    const T x_grads[Layout::kGates] = {d_pre_r, d_pre_z, d_pre_n};
    const T h_grads[Layout::kGates] = {d_pre_r, d_pre_z, d_pre_n * r};
    scalar_t* gx = a.grad_gates_x + row.index * (Layout::kGates * H);
    scalar_t* gh = a.grad_gates_h + row.index * (Layout::kGates * H);
    scalar_t* gs = a.grad_gates_h_step;
    if (gs != nullptr) gs += b * (Layout::kGates * H);
    acc_t* sums_x = a.grad_biases + row.sums * (2 * Layout::kGates * H);
    acc_t* sums_h = sums_x + Layout::kGates * H;
    for (int k = 0; k < Layout::kGates; ++k) {
      lane.store(gx + k * H, x_grads[k]);
      lane.store(gh + k * H, h_grads[k]);
      if (gs != nullptr) lane.store(gs + k * H, h_grads[k]);
      lane.store(sums_x + k * H, lane.load(sums_x + k * H) + x_grads[k]);
      lane.store(sums_h + k * H, lane.load(sums_h + k * H) + h_grads[k]);
    }
    lane.store(a.grad_h_tilde_direct + b * H, dh * z);
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
  acc_t* grad_weights;           // [B, 2H] partial sums (Row::sums): w_gamma, b_gamma
};

template <typename scalar_t, typename acc_t>
struct TimeDecayBackward : ElementStep<TimeDecayBackwardArgs<scalar_t, acc_t>, acc_t> {
  using Layout = TimeDecayGRULayout;
  using ElementStep<TimeDecayBackwardArgs<scalar_t, acc_t>, acc_t>::a;

  template <typename Lane>
  STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE void active(const Row<acc_t>& row, int64_t b,
                                                   const Lane& lane) const {
    using T = typename Lane::Value;
    using Act = typename Lane::Act;
    const int64_t H = a.hidden;
    const acc_t* cells = a.cells + row.index * (Layout::kCells * H);
    const T gamma = lane.load(cells + Layout::kGamma * H);
    const T d_h_tilde = lane.load(a.grad_h_tilde + b * H);
    const T h_prev = lane.load(cells + Layout::kHPrev * H);
    const T dt(row.dt);
    const T exponent = decay_exponent(a.decay_weight, a.decay_bias, dt, lane);
    // d gamma / d exponent = -gamma where the exponent is positive, 0 elsewhere (relu).
    const T d_exponent =
        Act::where_greater(exponent, T(0), (T(0) - gamma) * d_h_tilde * h_prev);
    acc_t* gw = a.grad_weights + row.sums * (2 * H);
    lane.store(gw, lane.load(gw) + d_exponent * dt);
    lane.store(gw + H, lane.load(gw + H) + d_exponent);
    lane.store(a.grad_h + b * H, gamma * d_h_tilde);
  }
};

}  // namespace time_rnn
}  // namespace stseq
