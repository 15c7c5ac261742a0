// CPU entry points of the time-aware recurrent ops (schemas in bindings.cpp; semantics in
// stseq/ops/time_rnn.py). One layer, one direction, time-major: input [L, B, I], dt [L, B].
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <string_view>
#include <tuple>

namespace stseq {

// (output [L, B, H], h_n [B, H], c_n [B, H], and what a training forward saves: gates
// [L, B, G*H] (activations), cells [L, B, 2H], recurrent_input [L, B, H]; empty otherwise).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> time_lstm_cpu(
    const at::Tensor& input, const at::Tensor& dt, const at::Tensor& h0, const at::Tensor& c0,
    const std::optional<at::Tensor>& lengths, const at::Tensor& weight_ih,
    const at::Tensor& weight_hh, const at::Tensor& bias, const at::Tensor& peephole,
    const at::Tensor& time_weight, int64_t variant, std::string_view time_activation, bool reverse,
    bool save_workspace);

// (grad_input, grad_h0, grad_c0, grad_weight_ih, grad_weight_hh, grad_bias, grad_peephole,
//  grad_time_weight).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
           at::Tensor>
time_lstm_backward_cpu(const at::Tensor& grad_output, const at::Tensor& grad_h_n,
                       const at::Tensor& grad_c_n, const at::Tensor& input, const at::Tensor& dt,
                       const std::optional<at::Tensor>& lengths, const at::Tensor& weight_ih,
                       const at::Tensor& weight_hh, const at::Tensor& peephole,
                       const at::Tensor& time_weight, const at::Tensor& gates,
                       const at::Tensor& cells, const at::Tensor& recurrent_input, int64_t variant,
                       std::string_view time_activation, bool reverse);

// (output, h_n, c_n, gates [L, B, 4H], cells [L, B, 3H], recurrent_input).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> tlstm_cpu(
    const at::Tensor& input, const at::Tensor& dt, const at::Tensor& h0, const at::Tensor& c0,
    const std::optional<at::Tensor>& lengths, const at::Tensor& weight_ih,
    const at::Tensor& weight_hh, const at::Tensor& bias, const at::Tensor& decay_weight,
    const at::Tensor& decay_bias, std::string_view short_term_activation, bool reverse,
    bool save_workspace);

// (grad_input, grad_h0, grad_c0, grad_weight_ih, grad_weight_hh, grad_bias, grad_decay_weight,
//  grad_decay_bias).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
           at::Tensor>
tlstm_backward_cpu(const at::Tensor& grad_output, const at::Tensor& grad_h_n,
                   const at::Tensor& grad_c_n, const at::Tensor& input, const at::Tensor& dt,
                   const std::optional<at::Tensor>& lengths, const at::Tensor& weight_ih,
                   const at::Tensor& weight_hh, const at::Tensor& decay_weight,
                   const at::Tensor& decay_bias, const at::Tensor& gates, const at::Tensor& cells,
                   const at::Tensor& recurrent_input, std::string_view short_term_activation,
                   bool reverse);

// (output, h_n, gates [L, B, 3H], cells [L, B, 3H], recurrent_input).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> time_decay_gru_cpu(
    const at::Tensor& input, const at::Tensor& dt, const at::Tensor& h0,
    const std::optional<at::Tensor>& lengths, const at::Tensor& weight_ih,
    const at::Tensor& weight_hh, const at::Tensor& bias_ih, const at::Tensor& bias_hh,
    const at::Tensor& decay_weight, const at::Tensor& decay_bias, bool reverse,
    bool save_workspace);

// (grad_input, grad_h0, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh,
//  grad_decay_weight, grad_decay_bias).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
           at::Tensor>
time_decay_gru_backward_cpu(const at::Tensor& grad_output, const at::Tensor& grad_h_n,
                            const at::Tensor& input, const at::Tensor& dt,
                            const std::optional<at::Tensor>& lengths, const at::Tensor& weight_ih,
                            const at::Tensor& weight_hh, const at::Tensor& decay_weight,
                            const at::Tensor& decay_bias, const at::Tensor& gates,
                            const at::Tensor& cells, const at::Tensor& recurrent_input,
                            bool reverse);

}  // namespace stseq
