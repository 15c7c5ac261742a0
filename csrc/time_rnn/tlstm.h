// T-LSTM (Baytas et al., KDD 2017): layout, forward and backward element steps.
// Element-step contract, notation and what a training forward saves: time_rnn.h.
#pragma once

#include <cstdint>

#include "common/element_math.h"
#include "time_rnn/element_step.h"

namespace stseq {
namespace time_rnn {

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

}  // namespace time_rnn
}  // namespace stseq
