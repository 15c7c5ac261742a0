// The device-independent parts of a recurrent layer's driver, shared by the CPU and CUDA entry
// points (and meant for any cell that follows the same plan): moving rows between data order and
// step order, the input projection of all steps as one GEMM, the final states, and the weight
// gradients as large GEMMs after the backward time loop. Only ATen ops: they run on either
// device. The time loops themselves (one small GEMM and one fused pointwise kernel per step, or
// the persistent CUDA kernels) live in rnn_cpu.cpp and rnn_cuda.cu.
#pragma once

#include <ATen/ATen.h>

#include <optional>

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

// W_ih x + bias for every row of every step: [N, I] -> [N, G].
inline at::Tensor input_projection(const at::Tensor& x, const at::Tensor& weight_ih,
                                   const std::optional<at::Tensor>& bias) {
  return bias.has_value() ? at::addmm(*bias, x, weight_ih.t()) : at::mm(x, weight_ih.t());
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

}  // namespace rnn
}  // namespace stseq
