// Time-decay GRU: layout, the decay step, and the forward and backward element steps.
// Element-step contract, notation and what a training forward saves: time_rnn.h.
#pragma once

#include <cstdint>

#include "common/element_math.h"
#include "time_rnn/element_step.h"

namespace stseq {
namespace time_rnn {

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
