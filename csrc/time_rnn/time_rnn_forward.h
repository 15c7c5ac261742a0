// Forward drivers of the time-aware cells (the launcher interface: recurrent/recurrent_driver.h),
// one section per cell: the time loop (`*_forward_loop`: the input GEMM, then per step the
// recurrent GEMM(s) and the cell's element step) and the entry point (`*_forward`: checks, then
// the loop for input's dtype).
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
Tensors6 time_lstm_forward_loop(const Setup& s, const at::Tensor& input, const at::Tensor& h0,
                                const at::Tensor& c0, const at::Tensor& weight_ih,
                                const at::Tensor& weight_hh, const at::Tensor& bias,
                                const at::Tensor& peephole, const at::Tensor& time_weight,
                                ActivationKind phi, bool save) {
  using acc_t = at::opmath_type<scalar_t>;
  using Layout = TimeLSTMLayout<kVariant>;
  const at::Tensor gates = s.project_inputs<Launcher>(input, weight_ih, bias, save);  // [L, B, G*H]
  const RecurrentGates<Launcher, scalar_t> recurrent(s, gates, Layout::kRecurrentGates,
                                                      weight_hh);
  const at::Tensor h = h0.clone(at::MemoryFormat::Contiguous);                   // [B, H]
  const at::Tensor c = s.acc_copy(c0);                                           // [B, H]
  const at::Tensor output = s.by_position(1, s.options);                         // [L, B, H]
  const at::Tensor cells = s.saved<Launcher>(save, Layout::kCells, s.acc_options);  // [L, B, H]
  const at::Tensor recurrent_input = s.saved<Launcher>(save, 1, s.options);         // [L, B, H]
  const at::Tensor peephole_c = peephole.contiguous(), time_weight_c = time_weight.contiguous();
  const TimeLSTMForwardArgs<scalar_t, acc_t> args{
      s.steps(0),
      s.p.hidden,
      gates.data_ptr<scalar_t>(),
      s.dt.data_ptr<acc_t>(),
      peephole_c.data_ptr<scalar_t>(),
      time_weight_c.data_ptr<scalar_t>(),
      Activation<acc_t>::of(phi),
      h.data_ptr<scalar_t>(),
      c.data_ptr<acc_t>(),
      output.data_ptr<scalar_t>(),
      save ? cells.data_ptr<acc_t>() : nullptr,
      save ? recurrent_input.data_ptr<scalar_t>() : nullptr};
  s.time_loop<Launcher>(false, [&](int64_t begin, int64_t end, int64_t step) {
    recurrent.add(h, step, begin, end);
    if (save) {
      run_step<Launcher, TimeLSTMForward<kVariant, true, scalar_t, acc_t>>(args, s, step, begin,
                                                                           end);
    } else {
      run_step<Launcher, TimeLSTMForward<kVariant, false, scalar_t, acc_t>>(args, s, step, begin,
                                                                            end);
    }
  });
  return {output, h, c.to(s.dtype), s.saved_gates(save, gates), cells, recurrent_input};
}

template <typename Launcher>
Tensors6 time_lstm_forward(const at::Tensor& input, const at::Tensor& dt, const at::Tensor& h0,
                           const at::Tensor& c0, const std::optional<at::Tensor>& lengths,
                           const at::Tensor& weight_ih, const at::Tensor& weight_hh,
                           const at::Tensor& bias, const at::Tensor& peephole,
                           const at::Tensor& time_weight, int64_t variant,
                           std::string_view time_activation, bool reverse, bool save_workspace) {
  const Problem p =
      check_time_lstm(input, dt, lengths, weight_ih, weight_hh, peephole, time_weight, variant);
  check_state(p, h0, "h0", input);
  check_state(p, c0, "c0", input);
  check_vector(p, bias, "bias", time_lstm_blocks(variant).gates, input);
  const ActivationKind phi = parse_activation(time_activation, "time_activation");
  return run_entry<Launcher, Tensors6>(
      p, input, dt, lengths, reverse, [&](const Setup& s, auto tag) {
        return with_variant(variant, [&](auto v) {
          return time_lstm_forward_loop<Launcher, decltype(v)::value, decltype(tag)>(
              s, input, h0, c0, weight_ih, weight_hh, bias, peephole, time_weight, phi,
              save_workspace);
        });
      });
}

// ---------------------------------------------------------------------------------------------
// T-LSTM

template <typename Launcher, typename scalar_t>
Tensors6 tlstm_forward_loop(const Setup& s, const at::Tensor& input, const at::Tensor& h0,
                            const at::Tensor& c0, const at::Tensor& weight_ih,
                            const at::Tensor& weight_hh, const at::Tensor& bias,
                            const at::Tensor& decay_weight, const at::Tensor& decay_bias,
                            ActivationKind act, bool save) {
  using acc_t = at::opmath_type<scalar_t>;
  using Layout = TLSTMLayout;
  const at::Tensor gates = s.project_inputs<Launcher>(input, weight_ih, bias, save);  // [L, B, 4H]
  const RecurrentGates<Launcher, scalar_t> recurrent(s, gates, Layout::kGates, weight_hh);
  const at::Tensor short_pre = s.step_buffer(1, s.acc_options);                 // [B, H]
  // The short-term memory's GEMM runs in the accumulation dtype, on the acc_t cell state.
  const at::Tensor decay_weight_t = decay_weight.to(s.acc_options).t();   // [H, H]
  const at::Tensor decay_bias_acc = decay_bias.to(s.acc_options);         // [H]
  const at::Tensor h = h0.clone(at::MemoryFormat::Contiguous);            // [B, H]
  const at::Tensor c = s.acc_copy(c0);                                    // [B, H]
  const at::Tensor output = s.by_position(1, s.options);                  // [L, B, H]
  const at::Tensor cells = s.saved<Launcher>(save, Layout::kCells, s.acc_options);  // [L, B, 2H]
  const at::Tensor recurrent_input = s.saved<Launcher>(save, 1, s.options);         // [L, B, H]
  const TLSTMForwardArgs<scalar_t, acc_t> args{
      s.steps(0),
      s.p.hidden,
      gates.data_ptr<scalar_t>(),
      short_pre.data_ptr<acc_t>(),
      decay_bias_acc.data_ptr<acc_t>(),
      s.dt.data_ptr<acc_t>(),
      Activation<acc_t>::of(act),
      h.data_ptr<scalar_t>(),
      c.data_ptr<acc_t>(),
      output.data_ptr<scalar_t>(),
      save ? cells.data_ptr<acc_t>() : nullptr,
      save ? recurrent_input.data_ptr<scalar_t>() : nullptr};
  s.time_loop<Launcher>(false, [&](int64_t begin, int64_t end, int64_t step) {
    at::Tensor short_pre_rows = rows_of(short_pre, begin, end);
    recurrent.add(h, step, begin, end);
    at::mm_out(short_pre_rows, rows_of(c, begin, end), decay_weight_t);
    if (save) {
      run_step<Launcher, TLSTMForward<true, scalar_t, acc_t>>(args, s, step, begin, end);
    } else {
      run_step<Launcher, TLSTMForward<false, scalar_t, acc_t>>(args, s, step, begin, end);
    }
  });
  return {output, h, c.to(s.dtype), s.saved_gates(save, gates), cells, recurrent_input};
}

template <typename Launcher>
Tensors6 tlstm_forward(const at::Tensor& input, const at::Tensor& dt, const at::Tensor& h0,
                       const at::Tensor& c0, const std::optional<at::Tensor>& lengths,
                       const at::Tensor& weight_ih, const at::Tensor& weight_hh,
                       const at::Tensor& bias, const at::Tensor& decay_weight,
                       const at::Tensor& decay_bias, std::string_view short_term_activation,
                       bool reverse, bool save_workspace) {
  const Problem p = check_tlstm(input, dt, lengths, weight_ih, weight_hh, decay_weight, decay_bias);
  check_state(p, h0, "h0", input);
  check_state(p, c0, "c0", input);
  check_vector(p, bias, "bias", TLSTMLayout::kGates, input);
  const ActivationKind act = parse_activation(short_term_activation, "short_term_activation");
  return run_entry<Launcher, Tensors6>(
      p, input, dt, lengths, reverse, [&](const Setup& s, auto tag) {
        return tlstm_forward_loop<Launcher, decltype(tag)>(s, input, h0, c0, weight_ih, weight_hh,
                                                           bias, decay_weight, decay_bias, act,
                                                           save_workspace);
      });
}

// ---------------------------------------------------------------------------------------------
// Time-decay GRU

template <typename Launcher, typename scalar_t>
Tensors5 time_decay_gru_forward_loop(const Setup& s, const at::Tensor& input, const at::Tensor& h0,
                                     const at::Tensor& weight_ih, const at::Tensor& weight_hh,
                                     const at::Tensor& bias_ih, const at::Tensor& bias_hh,
                                     const at::Tensor& decay_weight, const at::Tensor& decay_bias,
                                     bool save) {
  using acc_t = at::opmath_type<scalar_t>;
  using Layout = TimeDecayGRULayout;
  const at::Tensor gates =
      s.project_inputs<Launcher>(input, weight_ih, bias_ih, save);  // [L, B, 3H]
  const at::Tensor gates_h = s.step_buffer(Layout::kGates, s.options);              // [B, 3H]
  const at::Tensor h = s.acc_copy(h0);                                              // [B, H]
  const at::Tensor h_tilde = s.step_buffer(1, s.options);                           // [B, H]
  const at::Tensor gamma = s.step_buffer(1, s.acc_options);                         // [B, H]
  const at::Tensor output = s.by_position(1, s.options);                            // [L, B, H]
  const at::Tensor cells = s.saved<Launcher>(save, Layout::kCells, s.acc_options);  // [L, B, 3H]
  const at::Tensor recurrent_input = s.saved<Launcher>(save, 1, s.options);         // [L, B, H]
  const at::Tensor decay_w = decay_weight.contiguous(), decay_b = decay_bias.contiguous();
  acc_t* saved_cells = save ? cells.data_ptr<acc_t>() : nullptr;
  const TimeDecayArgs<scalar_t, acc_t> decay{s.steps(0),
                                             s.p.hidden,
                                             s.dt.data_ptr<acc_t>(),
                                             decay_w.data_ptr<scalar_t>(),
                                             decay_b.data_ptr<scalar_t>(),
                                             h.data_ptr<acc_t>(),
                                             h_tilde.data_ptr<scalar_t>(),
                                             gamma.data_ptr<acc_t>(),
                                             saved_cells,
                                             save ? recurrent_input.data_ptr<scalar_t>() : nullptr};
  const TimeDecayGRUForwardArgs<scalar_t, acc_t> cell{s.steps(0),
                                                      s.p.hidden,
                                                      gates.data_ptr<scalar_t>(),
                                                      gates_h.data_ptr<scalar_t>(),
                                                      s.dt.data_ptr<acc_t>(),
                                                      gamma.data_ptr<acc_t>(),
                                                      h.data_ptr<acc_t>(),
                                                      output.data_ptr<scalar_t>(),
                                                      saved_cells};
  const at::Tensor weight_hh_t = weight_hh.t();
  s.time_loop<Launcher>(false, [&](int64_t begin, int64_t end, int64_t step) {
    if (save) {
      run_step<Launcher, TimeDecay<true, scalar_t, acc_t>>(decay, s, step, begin, end);
    } else {
      run_step<Launcher, TimeDecay<false, scalar_t, acc_t>>(decay, s, step, begin, end);
    }
    at::Tensor gates_h_rows = rows_of(gates_h, begin, end);
    at::addmm_out(gates_h_rows, bias_hh, rows_of(h_tilde, begin, end), weight_hh_t);
    if (save) {
      run_step<Launcher, TimeDecayGRUForward<true, scalar_t, acc_t>>(cell, s, step, begin, end);
    } else {
      run_step<Launcher, TimeDecayGRUForward<false, scalar_t, acc_t>>(cell, s, step, begin, end);
    }
  });
  return {output, h.to(s.dtype), s.saved_gates(save, gates), cells, recurrent_input};
}

template <typename Launcher>
Tensors5 time_decay_gru_forward(const at::Tensor& input, const at::Tensor& dt, const at::Tensor& h0,
                                const std::optional<at::Tensor>& lengths,
                                const at::Tensor& weight_ih, const at::Tensor& weight_hh,
                                const at::Tensor& bias_ih, const at::Tensor& bias_hh,
                                const at::Tensor& decay_weight, const at::Tensor& decay_bias,
                                bool reverse, bool save_workspace) {
  const Problem p =
      check_time_decay_gru(input, dt, lengths, weight_ih, weight_hh, decay_weight, decay_bias);
  check_state(p, h0, "h0", input);
  check_vector(p, bias_ih, "bias_ih", TimeDecayGRULayout::kGates, input);
  check_vector(p, bias_hh, "bias_hh", TimeDecayGRULayout::kGates, input);
  return run_entry<Launcher, Tensors5>(
      p, input, dt, lengths, reverse, [&](const Setup& s, auto tag) {
        return time_decay_gru_forward_loop<Launcher, decltype(tag)>(
            s, input, h0, weight_ih, weight_hh, bias_ih, bias_hh, decay_weight, decay_bias,
            save_workspace);
      });
}

}  // namespace time_rnn
}  // namespace stseq
