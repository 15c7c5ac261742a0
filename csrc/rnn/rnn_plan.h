// The device-independent plan of an LSTM/GRU layer call, shared by every launcher (the entry
// points of rnn_forward.h and rnn_backward.h build it, the launchers' time loops run it):
// moving rows between data order and step order, the input projection of all steps as one GEMM,
// the buffers the loops write, the final states, and the weight gradients as large GEMMs after
// the backward time loop; and what each of the four time loops reads and writes (LstmForward,
// LstmBackward, GruForward, GruBackward: every tensor in step order, shapes beside each). Only
// ATen ops: they run on either device.
#pragma once

#include <ATen/ATen.h>

#include "rnn/rnn_args.h"

namespace stseq {
namespace rnn {

// Rows of one direction: the reverse direction reads and writes its rows through
// reverse_rows(); the forward direction's step order is the data order.
class StepOrder {
 public:
  StepOrder(const Steps& steps, bool reverse, const at::Device& device)
      : reverse_(reverse),
        index_(reverse ? reverse_rows(steps).to(device) : at::Tensor()) {}

  // A [N, *] tensor in data order -> step order (and back: the map is its own inverse).
  at::Tensor operator()(const at::Tensor& rows) const {
    return reverse_ ? rows.index_select(0, index_) : rows.contiguous();
  }

 private:
  bool reverse_;
  at::Tensor index_;  // [N] int64 on the device, reverse direction only
};

// out = a b and out = a + b written into `out`, a view of a larger buffer (the ATen `out`
// variants take an lvalue; views are temporaries).
inline void mm_into(at::Tensor out, const at::Tensor& a, const at::Tensor& b) {
  at::mm_out(out, a, b);
}

inline void add_into(at::Tensor out, const at::Tensor& a, const at::Tensor& b) {
  at::add_out(out, a, b);
}

// W_ih x + bias for every row of every step: [N, I] -> [N, G] (bias [G], or undefined: none).
inline at::Tensor input_projection(const at::Tensor& x, const at::Tensor& weight_ih,
                                   const at::Tensor& bias) {
  return bias.defined() ? at::addmm(bias, x, weight_ih.t()) : at::mm(x, weight_ih.t());
}

// The dtype of the cell state and the saved activations: float32 for float32, float16 and
// bfloat16 input (the half types accumulate in float32), float64 for float64.
inline at::ScalarType activation_type(const at::Tensor& input) {
  return input.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// h_prev (or c_prev) of step s for its n active rows: the initial state's first rows [B, *], or
// the previous step's first rows in the step-ordered states [N, *] (a prefix: rows only drop out).
inline at::Tensor previous_step(const Steps& steps, const at::Tensor& first,
                                const at::Tensor& states, int64_t s, int64_t n) {
  return s == 0 ? first.narrow(0, 0, n) : states.narrow(0, steps.offsets[s - 1], n);
}

// A [N, *] buffer that the time loop writes row by row: zero-filled where padding rows exist
// (the loop never writes them), otherwise uninitialised.
inline at::Tensor step_buffer(const Steps& steps, int64_t width, const at::TensorOptions& options) {
  return steps.has_padding() ? at::zeros({steps.rows, width}, options)
                             : at::empty({steps.rows, width}, options);
}

// h_n [B, P]: each batch row's hidden state after its last step (h0 for rows without steps).
inline at::Tensor final_hidden(const Steps& steps, const at::Tensor& hidden, const at::Tensor& h0) {
  at::Tensor h_n = h0.clone(at::MemoryFormat::Contiguous);
  if (steps.active_rows() > 0) {
    h_n.narrow(0, 0, steps.active_rows())
        .copy_(hidden.index_select(0, last_rows(steps).to(hidden.device())));
  }
  return h_n;
}

// sum over steps and active rows of grad_gates[row]^T h_prev[row] -> [G, P]: the gradient of
// W_hh. grad_gates [N, G] is zero on padding rows; hidden [N, P] in step order.
inline at::Tensor recurrent_weight_grad(const Steps& steps, const at::Tensor& grad_gates,
                                        const at::Tensor& hidden, const at::Tensor& h0) {
  const int64_t batch = steps.batch;
  if (steps.padded || steps.uniform()) {
    // Step s's rows are [s * B, (s + 1) * B): the previous rows sit exactly B rows earlier.
    at::Tensor grad = at::mm(grad_gates.narrow(0, 0, std::min(batch, steps.rows)).t(),
                             h0.narrow(0, 0, std::min(batch, steps.rows)));
    if (steps.rows > batch) {
      grad.addmm_(grad_gates.narrow(0, batch, steps.rows - batch).t(),
                  hidden.narrow(0, 0, steps.rows - batch));
    }
    return grad;
  }
  const at::Tensor previous = at::cat({h0, hidden}).index_select(
      0, previous_rows(steps).to(hidden.device()));  // [N, P]
  return at::mm(grad_gates.t(), previous);
}

// Gradients of the input projection: (grad_input [N, I] in data order, grad_weight_ih [G, I]).
inline std::tuple<at::Tensor, at::Tensor> input_projection_grads(const StepOrder& order,
                                                                 const at::Tensor& grad_x_gates,
                                                                 const at::Tensor& x_steps,
                                                                 const at::Tensor& weight_ih) {
  return {order(at::mm(grad_x_gates, weight_ih)), at::mm(grad_x_gates.t(), x_steps)};
}

// The bias gradient [G] (a column reduction; or [0] without bias).
inline at::Tensor bias_grad(const at::Tensor& grad_gates, bool has_bias) {
  return has_bias ? grad_gates.sum(0) : at::empty({0}, grad_gates.options());
}

// What a time loop reads and writes; rows in step order, N = steps.rows, B = shape.batch, H the
// hidden size, P the size of h (H without a projection), "acc" the activation_type().

struct LstmForward {
  const LayerShape& shape;
  const Steps& steps;
  Algorithm algorithm;
  bool keep_activations;
  at::Tensor x;          // [N, I]
  at::Tensor h0;         // [B, P] contiguous
  at::Tensor weight_ih;  // [4H, I]
  at::Tensor weight_hh;  // [4H, P]
  at::Tensor bias;       // [4H] b_ih + b_hh, or undefined (no bias)
  at::Tensor weight_hr;  // [P, H], or undefined (no projection)
  at::Tensor hidden;     // [N, P] out: h of every row
  at::Tensor c_state;    // [B, H] acc: c0 in, c_n out (rows with steps)
  at::Tensor gates;      // [N, 4H] acc out: i, f, g, o ([0] unless keep_activations)
  at::Tensor cells;      // [N, H] acc out: c ([0] unless keep_activations)
};

struct LstmBackward {
  const LayerShape& shape;
  const Steps& steps;
  Algorithm algorithm;
  at::Tensor weight_hh;    // [4H, P]
  at::Tensor weight_hr;    // [P, H], or undefined (no projection)
  at::Tensor dy;           // [N, P] the gradient of the output
  at::Tensor dh;           // [B, P]: d/dh_n in, d/dh0 out (the gradient through W_hh)
  at::Tensor dc;           // [B, H] acc: d/dc_n in, d/dc0 out
  at::Tensor hidden;       // [N, P] the forward's output
  at::Tensor gates;        // [N, 4H] acc, saved by the forward
  at::Tensor cells;        // [N, H] acc, saved by the forward
  at::Tensor c0;           // [B, H] acc contiguous
  at::Tensor dgates;       // [N, 4H] out: gradients of the gate pre-activations
  at::Tensor dh_total;     // [N, P] out: the gradient reaching h (projection only)
  at::Tensor r;            // [N, H] out: o * tanh(c) recomputed (projection only)
};

struct GruForward {
  const LayerShape& shape;
  const Steps& steps;
  Algorithm algorithm;
  bool keep_activations;
  at::Tensor x;          // [N, I]
  at::Tensor h0;         // [B, H] contiguous
  at::Tensor weight_ih;  // [3H, I]
  at::Tensor weight_hh;  // [3H, H]
  at::Tensor bias_ih;    // [3H] contiguous, or undefined (no bias)
  at::Tensor bias_hh;    // [3H] contiguous, or undefined (no bias)
  at::Tensor hidden;     // [N, H] out
  at::Tensor gates;      // [N, 4H] acc out: r, z, n, W_hn h + b_hn ([0] unless kept)
};

struct GruBackward {
  const LayerShape& shape;
  const Steps& steps;
  Algorithm algorithm;
  at::Tensor weight_hh;  // [3H, H]
  at::Tensor dy;         // [N, H]
  at::Tensor dh;         // [B, H]: d/dh_n in, the part of d/dh0 through W_hh out
  at::Tensor carry;      // [B, H] acc zeros in: the direct part of d/dh0 out (dh * z)
  at::Tensor hidden;     // [N, H] the forward's output
  at::Tensor gates;      // [N, 4H] acc, saved by the forward
  at::Tensor h0;         // [B, H] contiguous
  at::Tensor dxg;        // [N, 3H] out: gradients of the input-side pre-activations
  at::Tensor dhg;        // [N, 3H] out: gradients of the recurrent-side pre-activations
};

}  // namespace rnn
}  // namespace stseq
