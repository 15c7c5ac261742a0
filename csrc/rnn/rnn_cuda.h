// CUDA entry points of the recurrent layer ops (schemas in bindings.cpp; semantics, layout and
// results are those of rnn_cpu.h). float32, float64, float16 and bfloat16; the half types
// accumulate, and keep the cell state and the saved activations, in float32.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <string_view>
#include <tuple>

namespace stseq {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_cuda(
    const at::Tensor& input, const at::Tensor& h0, const at::Tensor& c0,
    const at::Tensor& weight_ih, const at::Tensor& weight_hh,
    const std::optional<at::Tensor>& bias_ih, const std::optional<at::Tensor>& bias_hh,
    const std::optional<at::Tensor>& weight_hr, const at::Tensor& batch_sizes, bool padded,
    bool reverse, bool keep_activations, std::string_view algorithm);

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
lstm_backward_cuda(const std::optional<at::Tensor>& grad_output,
                         const std::optional<at::Tensor>& grad_h_n,
                         const std::optional<at::Tensor>& grad_c_n, const at::Tensor& input,
                         const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& weight_ih,
                         const at::Tensor& weight_hh, const std::optional<at::Tensor>& weight_hr,
                         const at::Tensor& output, const at::Tensor& gates,
                         const at::Tensor& cells, const at::Tensor& batch_sizes, bool padded,
                         bool reverse, bool has_bias, std::string_view algorithm);

std::tuple<at::Tensor, at::Tensor, at::Tensor> gru_cuda(
    const at::Tensor& input, const at::Tensor& h0, const at::Tensor& weight_ih,
    const at::Tensor& weight_hh, const std::optional<at::Tensor>& bias_ih,
    const std::optional<at::Tensor>& bias_hh, const at::Tensor& batch_sizes, bool padded,
    bool reverse, bool keep_activations, std::string_view algorithm);

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
gru_backward_cuda(const std::optional<at::Tensor>& grad_output,
                        const std::optional<at::Tensor>& grad_h_n, const at::Tensor& input,
                        const at::Tensor& h0, const at::Tensor& weight_ih,
                        const at::Tensor& weight_hh, const at::Tensor& output,
                        const at::Tensor& gates, const at::Tensor& batch_sizes, bool padded,
                        bool reverse, bool has_bias, std::string_view algorithm);

}  // namespace stseq
