// Backward drivers of the time-aware cells (the launcher interface: recurrent/recurrent_driver.h),
// one section per cell: the time loop in reverse (`*_backward_loop`: per step the cell's
// backward element step and the recurrent GEMM that carries d/dh to the earlier step; after the
// loop the weight-gradient GEMMs and the partial sums' totals) and the entry point
// (`*_backward`).
#pragma once

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>

#include <optional>
#include <string_view>

#include "time_rnn/time_rnn.h"
#include "time_rnn/time_rnn_args.h"
#include "time_rnn/time_rnn_plan.h"

namespace stseq {
namespace time_rnn {

// ---------------------------------------------------------------------------------------------
// Time-LSTM

template <typename Launcher, int kVariant, typename scalar_t>
Tensors8 time_lstm_backward_loop(const Setup& s, const at::Tensor& grad_output,
                                 const at::Tensor& grad_h_n, const at::Tensor& grad_c_n,
                                 const at::Tensor& input, const at::Tensor& weight_ih,
                                 const at::Tensor& weight_hh, const at::Tensor& peephole,
                                 const at::Tensor& time_weight, const at::Tensor& gates,
                                 const at::Tensor& cells, const at::Tensor& recurrent_input,
                                 ActivationKind phi) {
  using acc_t = at::opmath_type<scalar_t>;
  using Layout = TimeLSTMLayout<kVariant>;
  const int64_t H = s.p.hidden;
  at::Tensor grad_h_later = s.step_buffer(1, s.options);                            // [B, H]
  const at::Tensor grad_out = s.hidden_grads(grad_output, grad_h_n, grad_h_later);  // [L, B, H]
  const at::Tensor gates_c = gates.contiguous(), cells_c = cells.contiguous();
  const at::Tensor peephole_c = peephole.contiguous(), time_weight_c = time_weight.contiguous();
  const at::Tensor grad_gates = s.workspace<Launcher>(0, Layout::kGates, s.options);  // [L, B, G*H]
  const StepOperand<scalar_t> grad_gates_step(s, grad_gates, Layout::kRecurrentGates);
  const at::Tensor grad_c = s.acc_copy(grad_c_n);                                        // [B, H]
  const at::Tensor grad_weights = s.partial_sums(Layout::kGradWeights);  // [B, (P+K+G)*H]
  const TimeLSTMBackwardArgs<scalar_t, acc_t> args{s.steps(0),
                                                   H,
                                                   grad_out.data_ptr<scalar_t>(),
                                                   s.dt.data_ptr<acc_t>(),
                                                   peephole_c.data_ptr<scalar_t>(),
                                                   time_weight_c.data_ptr<scalar_t>(),
                                                   Activation<acc_t>::of(phi),
                                                   gates_c.data_ptr<scalar_t>(),
                                                   cells_c.data_ptr<acc_t>(),
                                                   grad_h_later.data_ptr<scalar_t>(),
                                                   grad_c.data_ptr<acc_t>(),
                                                   grad_gates.data_ptr<scalar_t>(),
                                                   grad_gates_step.pointer(),
                                                   grad_weights.data_ptr<acc_t>()};
  s.time_loop<Launcher>(true, [&](int64_t begin, int64_t end, int64_t step) {
    run_step<Launcher, TimeLSTMBackward<kVariant, scalar_t, acc_t>>(args, s, step, begin, end);
    at::Tensor grad_h_rows = rows_of(grad_h_later, begin, end);
    at::mm_out(grad_h_rows, grad_gates_step.rows(step, begin, end), weight_hh);
  });
  auto [grad_input, grad_weight_ih] = s.input_grads(grad_gates, input, weight_ih);
  const at::Tensor grad_weight_hh =
      at::mm(s.leading_blocks(grad_gates, 0, Layout::kRecurrentGates).t(),
             recurrent_input.reshape({s.p.seq_len * s.p.batch, H}));
  const at::Tensor sums = s.total(grad_weights);  // [P+K+G, H]
  return {grad_input,
          s.initial_state_grad(grad_h_later, grad_h_n),
          grad_c.to(s.dtype),
          grad_weight_ih,
          grad_weight_hh,
          sums.narrow(0, Layout::kPeepholes + Layout::kTimeWeights, Layout::kGates)
              .flatten()
              .clone(),
          sums.narrow(0, 0, Layout::kPeepholes).clone(),
          sums.narrow(0, Layout::kPeepholes, Layout::kTimeWeights).clone()};
}

template <typename Launcher>
Tensors8 time_lstm_backward(const at::Tensor& grad_output, const at::Tensor& grad_h_n,
                            const at::Tensor& grad_c_n, const at::Tensor& input,
                            const at::Tensor& dt, const std::optional<at::Tensor>& lengths,
                            const at::Tensor& weight_ih, const at::Tensor& weight_hh,
                            const at::Tensor& peephole, const at::Tensor& time_weight,
                            const at::Tensor& gates, const at::Tensor& cells,
                            const at::Tensor& recurrent_input, int64_t variant,
                            std::string_view time_activation, bool reverse) {
  const Problem p =
      check_time_lstm(input, dt, lengths, weight_ih, weight_hh, peephole, time_weight, variant);
  check_gradients(p, input, grad_output, grad_h_n, &grad_c_n);
  const TimeLSTMBlocks blocks = time_lstm_blocks(variant);
  check_saved(p, input, gates, blocks.gates, cells, blocks.cells, recurrent_input);
  const ActivationKind phi = parse_activation(time_activation, "time_activation");
  return run_entry<Launcher, Tensors8>(
      p, input, dt, lengths, reverse, [&](const Setup& s, auto tag) {
        return with_variant(variant, [&](auto v) {
          return time_lstm_backward_loop<Launcher, decltype(v)::value, decltype(tag)>(
              s, grad_output, grad_h_n, grad_c_n, input, weight_ih, weight_hh, peephole,
              time_weight, gates, cells, recurrent_input, phi);
        });
      });
}

// ---------------------------------------------------------------------------------------------
// T-LSTM

template <typename Launcher, typename scalar_t>
Tensors8 tlstm_backward_loop(const Setup& s, const at::Tensor& grad_output,
                             const at::Tensor& grad_h_n, const at::Tensor& grad_c_n,
                             const at::Tensor& input, const at::Tensor& weight_ih,
                             const at::Tensor& weight_hh, const at::Tensor& decay_weight,
                             const at::Tensor& gates, const at::Tensor& cells,
                             const at::Tensor& recurrent_input, ActivationKind act) {
  using acc_t = at::opmath_type<scalar_t>;
  using Layout = TLSTMLayout;
  const int64_t H = s.p.hidden;
  at::Tensor grad_h_later = s.step_buffer(1, s.options);                            // [B, H]
  const at::Tensor grad_out = s.hidden_grads(grad_output, grad_h_n, grad_h_later);  // [L, B, H]
  const at::Tensor gates_c = gates.contiguous(), cells_c = cells.contiguous();
  const at::Tensor decay_weight_acc = decay_weight.to(s.acc_options);                 // [H, H]
  const at::Tensor grad_gates = s.workspace<Launcher>(0, Layout::kGates, s.options);  // [L, B, 4H]
  const at::Tensor grad_short = s.workspace<Launcher>(1, 1, s.acc_options);           // [L, B, H]
  const StepOperand<scalar_t> grad_gates_step(s, grad_gates, Layout::kGates);
  const StepOperand<acc_t> grad_short_step(s, grad_short, 1);
  const at::Tensor grad_c_direct = s.acc_copy(grad_c_n);                              // [B, H]
  const at::Tensor grad_c_recurrent = s.step_buffer(1, s.acc_options);                // [B, H]
  const at::Tensor grad_weights = s.partial_sums(Layout::kGradWeights);               // [B, 5H]
  const TLSTMBackwardArgs<scalar_t, acc_t> args{s.steps(0),
                                                H,
                                                grad_out.data_ptr<scalar_t>(),
                                                s.dt.data_ptr<acc_t>(),
                                                Activation<acc_t>::of(act),
                                                gates_c.data_ptr<scalar_t>(),
                                                cells_c.data_ptr<acc_t>(),
                                                grad_h_later.data_ptr<scalar_t>(),
                                                grad_c_recurrent.data_ptr<acc_t>(),
                                                grad_gates.data_ptr<scalar_t>(),
                                                grad_gates_step.pointer(),
                                                grad_short.data_ptr<acc_t>(),
                                                grad_short_step.pointer(),
                                                grad_c_direct.data_ptr<acc_t>(),
                                                grad_weights.data_ptr<acc_t>()};
  s.time_loop<Launcher>(true, [&](int64_t begin, int64_t end, int64_t step) {
    run_step<Launcher, TLSTMBackward<scalar_t, acc_t>>(args, s, step, begin, end);
    at::Tensor grad_h_rows = rows_of(grad_h_later, begin, end);
    at::Tensor grad_c_rows = rows_of(grad_c_recurrent, begin, end);
    at::mm_out(grad_h_rows, grad_gates_step.rows(step, begin, end), weight_hh);
    at::mm_out(grad_c_rows, grad_short_step.rows(step, begin, end), decay_weight_acc);
  });
  auto [grad_input, grad_weight_ih] = s.input_grads(grad_gates, input, weight_ih);
  const int64_t rows = s.p.seq_len * s.p.batch;
  const at::Tensor grad_weight_hh =
      at::mm(grad_gates.view({rows, Layout::kGates * H}).t(), recurrent_input.reshape({rows, H}));
  const at::Tensor grad_decay_weight =
      at::mm(grad_short.view({rows, H}).t(), s.leading_blocks(cells_c, Layout::kCPrev, 1));
  const at::Tensor sums = s.total(grad_weights);  // [5, H]
  return {grad_input,
          s.initial_state_grad(grad_h_later, grad_h_n),
          (grad_c_direct + grad_c_recurrent).to(s.dtype),
          grad_weight_ih,
          grad_weight_hh,
          sums.narrow(0, 0, Layout::kGates).flatten().clone(),
          grad_decay_weight.to(s.dtype),
          sums[Layout::kGradDecayBias].clone()};
}

template <typename Launcher>
Tensors8 tlstm_backward(const at::Tensor& grad_output, const at::Tensor& grad_h_n,
                        const at::Tensor& grad_c_n, const at::Tensor& input, const at::Tensor& dt,
                        const std::optional<at::Tensor>& lengths, const at::Tensor& weight_ih,
                        const at::Tensor& weight_hh, const at::Tensor& decay_weight,
                        const at::Tensor& decay_bias, const at::Tensor& gates,
                        const at::Tensor& cells, const at::Tensor& recurrent_input,
                        std::string_view short_term_activation, bool reverse) {
  const Problem p = check_tlstm(input, dt, lengths, weight_ih, weight_hh, decay_weight, decay_bias);
  check_gradients(p, input, grad_output, grad_h_n, &grad_c_n);
  check_saved(p, input, gates, TLSTMLayout::kGates, cells, TLSTMLayout::kCells, recurrent_input);
  const ActivationKind act = parse_activation(short_term_activation, "short_term_activation");
  return run_entry<Launcher, Tensors8>(
      p, input, dt, lengths, reverse, [&](const Setup& s, auto tag) {
        return tlstm_backward_loop<Launcher, decltype(tag)>(
            s, grad_output, grad_h_n, grad_c_n, input, weight_ih, weight_hh, decay_weight, gates,
            cells, recurrent_input, act);
      });
}

// ---------------------------------------------------------------------------------------------
// Time-decay GRU

template <typename Launcher, typename scalar_t>
Tensors8 time_decay_gru_backward_loop(const Setup& s, const at::Tensor& grad_output,
                                      const at::Tensor& grad_h_n, const at::Tensor& input,
                                      const at::Tensor& weight_ih, const at::Tensor& weight_hh,
                                      const at::Tensor& decay_weight, const at::Tensor& decay_bias,
                                      const at::Tensor& gates, const at::Tensor& cells,
                                      const at::Tensor& recurrent_input) {
  using acc_t = at::opmath_type<scalar_t>;
  using Layout = TimeDecayGRULayout;
  const int64_t H = s.p.hidden;
  const at::Tensor grad_out = grad_output.contiguous();  // [L, B, H]
  const at::Tensor gates_c = gates.contiguous(), cells_c = cells.contiguous();
  const at::Tensor decay_w = decay_weight.contiguous(), decay_b = decay_bias.contiguous();
  const at::Tensor grad_gates_x =
      s.workspace<Launcher>(0, Layout::kGates, s.options);  // [L, B, 3H]
  const at::Tensor grad_gates_h =
      s.workspace<Launcher>(1, Layout::kGates, s.options);                        // [L, B, 3H]
  const StepOperand<scalar_t> grad_gates_h_step(s, grad_gates_h, Layout::kGates);
  const at::Tensor grad_h_tilde_direct = s.step_buffer(1, s.options);             // [B, H]
  const at::Tensor grad_h_tilde = s.step_buffer(1, s.options);                    // [B, H]
  const at::Tensor grad_h = s.acc_copy(grad_h_n);                                 // [B, H]
  const at::Tensor grad_weights = s.partial_sums(2);                              // [B, 2H]
  const at::Tensor grad_biases = s.partial_sums(2 * Layout::kGates);              // [B, 6H]
  const TimeDecayGRUBackwardArgs<scalar_t, acc_t> cell{s.steps(0),
                                                       H,
                                                       grad_out.data_ptr<scalar_t>(),
                                                       s.dt.data_ptr<acc_t>(),
                                                       gates_c.data_ptr<scalar_t>(),
                                                       cells_c.data_ptr<acc_t>(),
                                                       grad_h.data_ptr<acc_t>(),
                                                       grad_gates_x.data_ptr<scalar_t>(),
                                                       grad_gates_h.data_ptr<scalar_t>(),
                                                       grad_gates_h_step.pointer(),
                                                       grad_h_tilde_direct.data_ptr<scalar_t>(),
                                                       grad_biases.data_ptr<acc_t>()};
  const TimeDecayBackwardArgs<scalar_t, acc_t> decay{s.steps(0),
                                                     H,
                                                     s.dt.data_ptr<acc_t>(),
                                                     decay_w.data_ptr<scalar_t>(),
                                                     decay_b.data_ptr<scalar_t>(),
                                                     cells_c.data_ptr<acc_t>(),
                                                     grad_h_tilde.data_ptr<scalar_t>(),
                                                     grad_h.data_ptr<acc_t>(),
                                                     grad_weights.data_ptr<acc_t>()};
  s.time_loop<Launcher>(true, [&](int64_t begin, int64_t end, int64_t step) {
    run_step<Launcher, TimeDecayGRUBackward<scalar_t, acc_t>>(cell, s, step, begin, end);
    at::Tensor grad_h_tilde_rows = rows_of(grad_h_tilde, begin, end);
    at::addmm_out(grad_h_tilde_rows, rows_of(grad_h_tilde_direct, begin, end),
                  grad_gates_h_step.rows(step, begin, end), weight_hh);
    run_step<Launcher, TimeDecayBackward<scalar_t, acc_t>>(decay, s, step, begin, end);
  });
  auto [grad_input, grad_weight_ih] = s.input_grads(grad_gates_x, input, weight_ih);
  const int64_t rows = s.p.seq_len * s.p.batch;
  const at::Tensor grad_weight_hh =
      at::mm(grad_gates_h.view({rows, Layout::kGates * H}).t(), recurrent_input.reshape({rows, H}));
  const at::Tensor decay_grads = s.total(grad_weights);  // [2, H]
  const at::Tensor bias_grads = s.total(grad_biases).view({2, Layout::kGates * H});
  return {grad_input,
          grad_h.to(s.dtype),
          grad_weight_ih,
          grad_weight_hh,
          bias_grads[0].clone(),
          bias_grads[1].clone(),
          decay_grads[0].clone(),
          decay_grads[1].clone()};
}

template <typename Launcher>
Tensors8 time_decay_gru_backward(const at::Tensor& grad_output, const at::Tensor& grad_h_n,
                                 const at::Tensor& input, const at::Tensor& dt,
                                 const std::optional<at::Tensor>& lengths,
                                 const at::Tensor& weight_ih, const at::Tensor& weight_hh,
                                 const at::Tensor& decay_weight, const at::Tensor& decay_bias,
                                 const at::Tensor& gates, const at::Tensor& cells,
                                 const at::Tensor& recurrent_input, bool reverse) {
  const Problem p =
      check_time_decay_gru(input, dt, lengths, weight_ih, weight_hh, decay_weight, decay_bias);
  check_gradients(p, input, grad_output, grad_h_n, nullptr);
  check_saved(p, input, gates, TimeDecayGRULayout::kGates, cells, TimeDecayGRULayout::kCells,
              recurrent_input);
  return run_entry<Launcher, Tensors8>(
      p, input, dt, lengths, reverse, [&](const Setup& s, auto tag) {
        return time_decay_gru_backward_loop<Launcher, decltype(tag)>(
            s, grad_output, grad_h_n, input, weight_ih, weight_hh, decay_weight, decay_bias, gates,
            cells, recurrent_input);
      });
}

}  // namespace time_rnn
}  // namespace stseq
