// Forward entry points of the LSTM/GRU layer ops (torch.ops.stseq.lstm, torch.ops.stseq.gru;
// schemas: recurrent/recurrent_driver.h), the same code on every device: the checks, the step
// plan, the buffers, the launcher's time loop, the results. One call runs one layer in one
// direction over rows in data order: input [N, I] (a PackedSequence's data, or time-major padded
// [L * B, I]) with batch_sizes [L] (rnn_args.h describes both layouts). The time loops are the
// launcher's (recurrent/recurrent_driver.h lists what a launcher provides): on the CPU tiles of
// rows on packed weights (rnn_cpu_launcher.h), on CUDA cuBLAS per step or the persistent cluster
// kernels (rnn_cuda_launcher.cuh).
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

// (output [N, P], h_n [B, P], c_n [B, H], gates [N, 4H], cells [N, H]); gates and cells are the
// activations the backward reads (in the activation dtype), [0] when keep_activations is false.
template <typename Launcher>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_forward(
    const at::Tensor& input, const at::Tensor& h0, const at::Tensor& c0,
    const at::Tensor& weight_ih, const at::Tensor& weight_hh,
    const std::optional<at::Tensor>& bias_ih, const std::optional<at::Tensor>& bias_hh,
    const std::optional<at::Tensor>& weight_hr, const at::Tensor& batch_sizes, bool padded,
    bool reverse, bool keep_activations, std::string_view algorithm) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // a kernel, not a graph
  const LayerShape shape =
      check_layer(CellKind::kLstm, input, h0, &c0, weight_ih, weight_hh, bias_ih, bias_hh,
                  weight_hr);
  Launcher::check_input(input, "lstm layers");
  const Algorithm how = parse_algorithm(algorithm);
  const Steps steps = make_steps(batch_sizes, padded, shape.batch, shape.rows);
  [[maybe_unused]] const auto guard = Launcher::guard(input);
  const int64_t H = shape.hidden, P = shape.proj, G = shape.gates;
  const StepOrder order(steps, reverse, input.device());
  const at::TensorOptions options = input.options();
  const at::TensorOptions saved_options = options.dtype(activation_type(input));
  const LstmForward loop{
      shape,
      steps,
      how,
      keep_activations,
      order(input),                                                            // x [N, I]
      h0.contiguous(),                                                         // [B, P]
      weight_ih,
      weight_hh,
      bias_ih.has_value() ? *bias_ih + *bias_hh : at::Tensor(),                // [4H]
      shape.has_proj ? *weight_hr : at::Tensor(),                              // [P, H]
      step_buffer(steps, P, options),                                          // hidden [N, P]
      c0.to(activation_type(input)).clone(at::MemoryFormat::Contiguous),       // [B, H]
      keep_activations ? step_buffer(steps, G, saved_options)
                       : at::empty({0}, saved_options),                        // gates [N, 4H]
      keep_activations ? step_buffer(steps, H, saved_options)
                       : at::empty({0}, saved_options)};                       // cells [N, H]
  Launcher::dispatch(input.scalar_type(), "lstm layers",
                     [&](auto tag) { Launcher::template lstm_loop<decltype(tag)>(loop); });
  return {order(loop.hidden), final_hidden(steps, loop.hidden, h0),
          loop.c_state.to(input.scalar_type()), loop.gates, loop.cells};
}

// (output [N, H], h_n [B, H], gates [N, 4H] = r, z, n, W_hn h + b_hn; [0] when not kept).
template <typename Launcher>
std::tuple<at::Tensor, at::Tensor, at::Tensor> gru_forward(
    const at::Tensor& input, const at::Tensor& h0, const at::Tensor& weight_ih,
    const at::Tensor& weight_hh, const std::optional<at::Tensor>& bias_ih,
    const std::optional<at::Tensor>& bias_hh, const at::Tensor& batch_sizes, bool padded,
    bool reverse, bool keep_activations, std::string_view algorithm) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // a kernel, not a graph
  const LayerShape shape = check_layer(CellKind::kGru, input, h0, nullptr, weight_ih, weight_hh,
                                       bias_ih, bias_hh, std::nullopt);
  Launcher::check_input(input, "gru layers");
  const Algorithm how = parse_algorithm(algorithm);
  const Steps steps = make_steps(batch_sizes, padded, shape.batch, shape.rows);
  [[maybe_unused]] const auto guard = Launcher::guard(input);
  const int64_t H = shape.hidden;
  const StepOrder order(steps, reverse, input.device());
  const at::TensorOptions options = input.options();
  const at::TensorOptions saved_options = options.dtype(activation_type(input));
  const GruForward loop{
      shape,
      steps,
      how,
      keep_activations,
      order(input),                                                       // x [N, I]
      h0.contiguous(),                                                    // [B, H]
      weight_ih,
      weight_hh,
      bias_ih.has_value() ? bias_ih->contiguous() : at::Tensor(),        // [3H]
      bias_hh.has_value() ? bias_hh->contiguous() : at::Tensor(),        // [3H]
      step_buffer(steps, H, options),                                     // hidden [N, H]
      keep_activations ? step_buffer(steps, 4 * H, saved_options)
                       : at::empty({0}, saved_options)};                  // gates [N, 4H]
  Launcher::dispatch(input.scalar_type(), "gru layers",
                     [&](auto tag) { Launcher::template gru_loop<decltype(tag)>(loop); });
  return {order(loop.hidden), final_hidden(steps, loop.hidden, h0), loop.gates};
}

}  // namespace rnn
}  // namespace stseq
