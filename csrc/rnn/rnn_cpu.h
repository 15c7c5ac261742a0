// CPU entry points of the recurrent layer ops (schemas in bindings.cpp; arguments and layout:
// rnn_args.h). One call runs one layer in one direction over rows in data order:
// input [N, I] (a PackedSequence's data, or time-major padded [L * B, I]) with batch_sizes [L].
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <string_view>
#include <tuple>

namespace stseq {

// (output [N, P], h_n [B, P], c_n [B, H], gates [N, 4H], cells [N, H]); gates and cells are the
// activations the backward reads, [0] when keep_activations is false.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_cpu(
    const at::Tensor& input, const at::Tensor& h0, const at::Tensor& c0,
    const at::Tensor& weight_ih, const at::Tensor& weight_hh,
    const std::optional<at::Tensor>& bias_ih, const std::optional<at::Tensor>& bias_hh,
    const std::optional<at::Tensor>& weight_hr, const at::Tensor& batch_sizes, bool padded,
    bool reverse, bool keep_activations, std::string_view algorithm);

// (grad_input, grad_h0, grad_c0, grad_weight_ih, grad_weight_hh, grad_bias [4H] or [0],
//  grad_weight_hr [P, H] or [0]); grad_bias is the gradient of bias_ih and of bias_hh.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
lstm_backward_cpu(const std::optional<at::Tensor>& grad_output,
                        const std::optional<at::Tensor>& grad_h_n,
                        const std::optional<at::Tensor>& grad_c_n, const at::Tensor& input,
                        const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& weight_ih,
                        const at::Tensor& weight_hh, const std::optional<at::Tensor>& weight_hr,
                        const at::Tensor& output, const at::Tensor& gates, const at::Tensor& cells,
                        const at::Tensor& batch_sizes, bool padded, bool reverse, bool has_bias,
                        std::string_view algorithm);

// (output [N, H], h_n [B, H], gates [N, 4H] = r, z, n, W_hn h + b_hn; [0] when not kept).
std::tuple<at::Tensor, at::Tensor, at::Tensor> gru_cpu(
    const at::Tensor& input, const at::Tensor& h0, const at::Tensor& weight_ih,
    const at::Tensor& weight_hh, const std::optional<at::Tensor>& bias_ih,
    const std::optional<at::Tensor>& bias_hh, const at::Tensor& batch_sizes, bool padded,
    bool reverse, bool keep_activations, std::string_view algorithm);

// (grad_input, grad_h0, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh; the bias
//  gradients are [0] without bias).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
gru_backward_cpu(const std::optional<at::Tensor>& grad_output,
                       const std::optional<at::Tensor>& grad_h_n, const at::Tensor& input,
                       const at::Tensor& h0, const at::Tensor& weight_ih,
                       const at::Tensor& weight_hh, const at::Tensor& output,
                       const at::Tensor& gates, const at::Tensor& batch_sizes, bool padded,
                       bool reverse, bool has_bias, std::string_view algorithm);

}  // namespace stseq
