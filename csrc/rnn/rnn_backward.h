// Backward entry points of the LSTM/GRU layer ops (torch.ops.stseq.lstm_backward,
// torch.ops.stseq.gru_backward; schemas: recurrent/recurrent_driver.h), the same code on every
// device: the checks, the step plan, the buffers, the launcher's reverse time loop (the gate
// gradients of each step and the recurrent gradient through W_hh), then the weight, input and
// bias gradients as large GEMMs and reductions after the loop (rnn_plan.h).
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/LegacyTypeDispatch.h>

#include <optional>
#include <string_view>
#include <tuple>

#include "rnn/rnn_args.h"
#include "rnn/rnn_plan.h"

namespace stseq {
namespace rnn {

// (grad_input [N, I], grad_h0 [B, P], grad_c0 [B, H], grad_weight_ih [4H, I], grad_weight_hh
//  [4H, P], grad_bias [4H] or [0], grad_weight_hr [P, H] or [0]); grad_bias is the gradient of
// bias_ih and of bias_hh.
template <typename Launcher>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
lstm_backward(const std::optional<at::Tensor>& grad_output,
              const std::optional<at::Tensor>& grad_h_n,
              const std::optional<at::Tensor>& grad_c_n, const at::Tensor& input,
              const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& weight_ih,
              const at::Tensor& weight_hh, const std::optional<at::Tensor>& weight_hr,
              const at::Tensor& output, const at::Tensor& gates, const at::Tensor& cells,
              const at::Tensor& batch_sizes, bool padded, bool reverse, bool has_bias,
              std::string_view algorithm) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // a kernel, not a graph
  const LayerShape shape = check_layer(CellKind::kLstm, input, h0, &c0, weight_ih, weight_hh,
                                       std::nullopt, std::nullopt, weight_hr);
  Launcher::check_input(input, "lstm layers");
  const Algorithm how = parse_algorithm(algorithm);
  check_saved(shape, input, output, gates, &cells, activation_type(input));
  const Steps steps = make_steps(batch_sizes, padded, shape.batch, shape.rows);
  [[maybe_unused]] const auto guard = Launcher::guard(input);
  const int64_t H = shape.hidden, P = shape.proj, G = shape.gates;
  const StepOrder order(steps, reverse, input.device());
  const at::TensorOptions options = input.options();
  const LstmBackward loop{
      shape,
      steps,
      how,
      weight_hh,
      shape.has_proj ? *weight_hr : at::Tensor(),
      order(grad_or_zeros(grad_output, {shape.rows, P}, input, "grad_output")),  // dy [N, P]
      grad_or_zeros(grad_h_n, {shape.batch, P}, input, "grad_h_n")
          .clone(at::MemoryFormat::Contiguous),                                  // dh [B, P]
      grad_or_zeros(grad_c_n, {shape.batch, H}, input, "grad_c_n")
          .to(activation_type(input))
          .clone(at::MemoryFormat::Contiguous),                                  // dc [B, H]
      order(output),                                                           // hidden [N, P]
      gates.contiguous(),                                                      // [N, 4H]
      cells.contiguous(),                                                      // [N, H]
      c0.to(activation_type(input)).contiguous(),                              // [B, H]
      step_buffer(steps, G, options),                                          // dgates [N, 4H]
      shape.has_proj ? step_buffer(steps, P, options) : at::Tensor(),          // dh_total [N, P]
      shape.has_proj ? step_buffer(steps, H, options) : at::Tensor()};         // r [N, H]
  Launcher::dispatch(input.scalar_type(), "lstm layers", [&](auto tag) {
    Launcher::template lstm_backward_loop<decltype(tag)>(loop);
  });
  auto [grad_input, grad_weight_ih] =
      input_projection_grads(order, loop.dgates, order(input), weight_ih);
  return {grad_input,
          loop.dh,
          loop.dc.to(input.scalar_type()),
          grad_weight_ih,
          recurrent_weight_grad(steps, loop.dgates, loop.hidden, h0.contiguous()),
          bias_grad(loop.dgates, has_bias),
          shape.has_proj ? at::mm(loop.dh_total.t(), loop.r) : at::empty({0}, options)};
}

// (grad_input [N, I], grad_h0 [B, H], grad_weight_ih [3H, I], grad_weight_hh [3H, H],
//  grad_bias_ih [3H], grad_bias_hh [3H]; the bias gradients are [0] without bias).
template <typename Launcher>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
gru_backward(const std::optional<at::Tensor>& grad_output,
             const std::optional<at::Tensor>& grad_h_n, const at::Tensor& input,
             const at::Tensor& h0, const at::Tensor& weight_ih, const at::Tensor& weight_hh,
             const at::Tensor& output, const at::Tensor& gates, const at::Tensor& batch_sizes,
             bool padded, bool reverse, bool has_bias, std::string_view algorithm) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // a kernel, not a graph
  const LayerShape shape = check_layer(CellKind::kGru, input, h0, nullptr, weight_ih, weight_hh,
                                       std::nullopt, std::nullopt, std::nullopt);
  Launcher::check_input(input, "gru layers");
  const Algorithm how = parse_algorithm(algorithm);
  check_saved(shape, input, output, gates, nullptr, activation_type(input));
  const Steps steps = make_steps(batch_sizes, padded, shape.batch, shape.rows);
  [[maybe_unused]] const auto guard = Launcher::guard(input);
  const int64_t H = shape.hidden, G = shape.gates;
  const StepOrder order(steps, reverse, input.device());
  const at::TensorOptions options = input.options();
  const GruBackward loop{
      shape,
      steps,
      how,
      weight_hh,
      order(grad_or_zeros(grad_output, {shape.rows, H}, input, "grad_output")),  // dy [N, H]
      grad_or_zeros(grad_h_n, {shape.batch, H}, input, "grad_h_n")
          .clone(at::MemoryFormat::Contiguous),                                  // dh [B, H]
      at::zeros({shape.batch, H}, options.dtype(activation_type(input))),       // carry [B, H]
      order(output),                                                           // hidden [N, H]
      gates.contiguous(),                                                      // [N, 4H]
      h0.contiguous(),                                                         // [B, H]
      step_buffer(steps, G, options),                                          // dxg [N, 3H]
      step_buffer(steps, G, options)};                                         // dhg [N, 3H]
  Launcher::dispatch(input.scalar_type(), "gru layers", [&](auto tag) {
    Launcher::template gru_backward_loop<decltype(tag)>(loop);
  });
  auto [grad_input, grad_weight_ih] =
      input_projection_grads(order, loop.dxg, order(input), weight_ih);
  return {grad_input,
          (loop.dh.to(loop.carry.scalar_type()) + loop.carry).to(input.scalar_type()),
          grad_weight_ih,
          recurrent_weight_grad(steps, loop.dhg, loop.hidden, loop.h0),
          bias_grad(loop.dxg, has_bias),
          bias_grad(loop.dhg, has_bias)};
}

}  // namespace rnn
}  // namespace stseq
