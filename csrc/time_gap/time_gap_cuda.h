// CUDA entry points of stseq::time_gap_embedding and its backward (schemas in bindings.cpp).
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <string_view>
#include <tuple>

namespace stseq {

// out [B, L, D]: mean over the valid lags of the time (and distance) table rows.
at::Tensor time_gap_embedding_cuda(const at::Tensor& timestamps, const at::Tensor& time_weight,
                                 const std::optional<at::Tensor>& lengths,
                                 const std::optional<at::Tensor>& coordinates,
                                 const std::optional<at::Tensor>& distance_weight, int64_t window,
                                 double time_unit, double time_scale, double distance_scale,
                                 std::string_view bucketing, bool interpolate);

// (grad_time_weight like time_weight, grad_distance_weight like distance_weight or [0]).
std::tuple<at::Tensor, at::Tensor> time_gap_embedding_backward_cuda(
    const at::Tensor& grad, const at::Tensor& timestamps, const at::Tensor& time_weight,
    const std::optional<at::Tensor>& lengths, const std::optional<at::Tensor>& coordinates,
    const std::optional<at::Tensor>& distance_weight, int64_t window, double time_unit,
    double time_scale, double distance_scale, std::string_view bucketing, bool interpolate);

}  // namespace stseq
