// Host-side argument checks of the time-aware recurrent ops, shared by the CPU and CUDA entry
// points: every index a kernel forms stays inside its tensor whatever the caller passes (the
// Python layer adds the data checks: dt finite and >= 0, lengths in range).
#pragma once

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>

#include <optional>
#include <string>
#include <string_view>
#include <type_traits>

#include "common/checks.h"
#include "time_rnn/time_rnn.h"

namespace stseq {
namespace time_rnn {

struct Problem {
  int64_t seq_len;     // L
  int64_t batch;       // B
  int64_t input_size;  // I
  int64_t hidden;      // H
};

inline void check_shape(const at::Tensor& t, const char* name, at::IntArrayRef shape,
                        const char* shape_text) {
  TORCH_CHECK_VALUE(t.sizes() == shape, name, " must have shape ", shape_text, " = ", shape,
                    ", got ", t.sizes());
}

// A parameter, state or gradient: the given shape, input's dtype and device.
inline void check_like_input(const at::Tensor& t, const char* name, at::IntArrayRef shape,
                             const char* shape_text, const at::Tensor& input) {
  check_shape(t, name, shape, shape_text);
  TORCH_CHECK_VALUE(t.scalar_type() == input.scalar_type(), name, " must have the dtype of input (",
                    input.scalar_type(), "), got ", t.scalar_type());
  check_same_device(t, input, name, "input");
}

// input [L, B, I], dt [L, B], lengths [B], weight_ih [G*H, I], weight_hh [R*H, H].
inline Problem check_sequence(const at::Tensor& input, const at::Tensor& dt,
                              const std::optional<at::Tensor>& lengths, const at::Tensor& weight_ih,
                              int64_t gates, const at::Tensor& weight_hh, int64_t recurrent_gates) {
  check_rank(input, 3, "input", "[L, B, I]");
  TORCH_CHECK_VALUE(at::isFloatingType(input.scalar_type()),
                    "input must be a floating-point tensor, got ", input.scalar_type());
  check_rank(weight_hh, 2, "weight_hh", "[R*H, H]");
  const Problem p{input.size(0), input.size(1), input.size(2), weight_hh.size(1)};
  check_like_input(weight_ih, "weight_ih", {gates * p.hidden, p.input_size}, "[G*H, I]", input);
  check_like_input(weight_hh, "weight_hh", {recurrent_gates * p.hidden, p.hidden}, "[R*H, H]",
                   input);
  check_shape(dt, "dt", {p.seq_len, p.batch}, "[L, B]");
  TORCH_CHECK_VALUE(at::isFloatingType(dt.scalar_type()),
                    "dt must be a floating-point tensor, got ", dt.scalar_type());
  check_same_device(dt, input, "dt", "input");
  if (lengths.has_value()) {
    check_shape(*lengths, "lengths", {p.batch}, "[B]");
    TORCH_CHECK_VALUE(at::isIntegralType(lengths->scalar_type(), /*includeBool=*/false),
                      "lengths must be an integer tensor, got ", lengths->scalar_type());
    check_same_device(*lengths, input, "lengths", "input");
  }
  return p;
}

inline void check_state(const Problem& p, const at::Tensor& state, const char* name,
                        const at::Tensor& input) {
  check_like_input(state, name, {p.batch, p.hidden}, "[B, H]", input);
}

inline void check_vector(const Problem& p, const at::Tensor& t, const char* name, int64_t blocks,
                         const at::Tensor& input) {
  check_like_input(t, name, {blocks * p.hidden}, "[blocks*H]", input);
}

// What a training forward saved for the backward: gates [L, B, G*H] (the activations, input's
// dtype), cells [L, B, C*H] (the accumulation dtype) and recurrent_input [L, B, H].
inline void check_saved(const Problem& p, const at::Tensor& input, const at::Tensor& gates,
                        int64_t gate_blocks, const at::Tensor& cells, int64_t cell_blocks,
                        const at::Tensor& recurrent_input) {
  TORCH_CHECK_VALUE(cells.numel() != 0 || p.seq_len * p.batch * p.hidden == 0,
                    "cells is empty: the forward ran with save_workspace=False, so there is "
                    "nothing to differentiate");
  check_like_input(gates, "gates", {p.seq_len, p.batch, gate_blocks * p.hidden}, "[L, B, G*H]",
                   input);
  check_shape(cells, "cells", {p.seq_len, p.batch, cell_blocks * p.hidden}, "[L, B, C*H]");
  const at::ScalarType acc = at::toOpMathType(input.scalar_type());
  TORCH_CHECK_VALUE(cells.scalar_type() == acc, "cells must have dtype ", acc, ", got ",
                    cells.scalar_type());
  check_same_device(cells, input, "cells", "input");
  check_like_input(recurrent_input, "recurrent_input", {p.seq_len, p.batch, p.hidden}, "[L, B, H]",
                   input);
}

inline void check_gradients(const Problem& p, const at::Tensor& input,
                            const at::Tensor& grad_output, const at::Tensor& grad_h_n,
                            const at::Tensor* grad_c_n) {
  check_like_input(grad_output, "grad_output", {p.seq_len, p.batch, p.hidden}, "[L, B, H]", input);
  check_state(p, grad_h_n, "grad_h_n", input);
  if (grad_c_n != nullptr) check_state(p, *grad_c_n, "grad_c_n", input);
}

inline ActivationKind parse_activation(std::string_view name, const char* argument) {
  if (name == "tanh") return ActivationKind::kTanh;
  if (name == "sigmoid") return ActivationKind::kSigmoid;
  TORCH_CHECK_VALUE(false, argument, " must be 'tanh' or 'sigmoid', got '", std::string(name), "'");
}

// Calls f(std::integral_constant<int, variant>{}) for a Time-LSTM variant, checked to be 1-3.
template <typename F>
decltype(auto) with_variant(int64_t variant, F&& f) {
  TORCH_CHECK_VALUE(variant >= 1 && variant <= 3, "variant must be 1, 2 or 3, got ", variant);
  if (variant == 1) return f(std::integral_constant<int, 1>{});
  if (variant == 2) return f(std::integral_constant<int, 2>{});
  return f(std::integral_constant<int, 3>{});
}

// Block counts of a Time-LSTM variant (see TimeLSTMLayout).
struct TimeLSTMBlocks {
  int64_t gates, recurrent_gates, peepholes, time_weights, cells;
};

inline TimeLSTMBlocks time_lstm_blocks(int64_t variant) {
  return with_variant(variant, [](auto v) {
    using Layout = TimeLSTMLayout<decltype(v)::value>;
    return TimeLSTMBlocks{Layout::kGates, Layout::kRecurrentGates, Layout::kPeepholes,
                          Layout::kTimeWeights, Layout::kCells};
  });
}

inline Problem check_time_lstm(const at::Tensor& input, const at::Tensor& dt,
                               const std::optional<at::Tensor>& lengths,
                               const at::Tensor& weight_ih, const at::Tensor& weight_hh,
                               const at::Tensor& peephole, const at::Tensor& time_weight,
                               int64_t variant) {
  const TimeLSTMBlocks blocks = time_lstm_blocks(variant);
  const Problem p = check_sequence(input, dt, lengths, weight_ih, blocks.gates, weight_hh,
                                   blocks.recurrent_gates);
  check_like_input(peephole, "peephole", {blocks.peepholes, p.hidden}, "[P, H]", input);
  check_like_input(time_weight, "time_weight", {blocks.time_weights, p.hidden}, "[K, H]", input);
  return p;
}

inline Problem check_tlstm(const at::Tensor& input, const at::Tensor& dt,
                           const std::optional<at::Tensor>& lengths, const at::Tensor& weight_ih,
                           const at::Tensor& weight_hh, const at::Tensor& decay_weight,
                           const at::Tensor& decay_bias) {
  const Problem p = check_sequence(input, dt, lengths, weight_ih, TLSTMLayout::kGates, weight_hh,
                                   TLSTMLayout::kGates);
  check_like_input(decay_weight, "decay_weight", {p.hidden, p.hidden}, "[H, H]", input);
  check_vector(p, decay_bias, "decay_bias", 1, input);
  return p;
}

inline Problem check_time_decay_gru(const at::Tensor& input, const at::Tensor& dt,
                                    const std::optional<at::Tensor>& lengths,
                                    const at::Tensor& weight_ih, const at::Tensor& weight_hh,
                                    const at::Tensor& decay_weight, const at::Tensor& decay_bias) {
  const Problem p = check_sequence(input, dt, lengths, weight_ih, TimeDecayGRULayout::kGates,
                                   weight_hh, TimeDecayGRULayout::kGates);
  check_vector(p, decay_weight, "decay_weight", 1, input);
  check_vector(p, decay_bias, "decay_bias", 1, input);
  return p;
}

}  // namespace time_rnn
}  // namespace stseq
