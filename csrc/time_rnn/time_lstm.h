// Time-LSTM 1-3 (Zhu et al., IJCAI 2017): layout, forward and backward element steps.
// Element-step contract, notation and what a training forward saves: time_rnn.h.
#pragma once

#include <cstdint>

#include "common/element_math.h"
#include "time_rnn/element_step.h"

namespace stseq {
namespace time_rnn {

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

}  // namespace time_rnn
}  // namespace stseq
