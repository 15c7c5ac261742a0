// The stseq._C module: torch.library schemas of every native op, their CPU and CUDA impls, and
// a small pybind11 surface that says what this build contains. Tensors never cross pybind11:
// Python reaches the kernels through torch.ops.stseq.*.
#include <pybind11/pybind11.h>
#include <torch/library.h>

#include "rnn/rnn_cpu.h"
#include "time_gap/time_gap_cpu.h"
#ifdef STSEQ_WITH_CUDA
#include "rnn/rnn_cuda.h"
#include "time_gap/time_gap_cuda.h"
#endif

TORCH_LIBRARY(stseq, m) {
  m.def(
      "time_gap_embedding(Tensor timestamps, Tensor time_weight, Tensor? lengths, "
      "Tensor? coordinates, Tensor? distance_weight, int window, float time_unit, "
      "float time_scale, float distance_scale, str bucketing, bool interpolate) -> Tensor");
  m.def(
      "time_gap_embedding_backward(Tensor grad, Tensor timestamps, Tensor time_weight, "
      "Tensor? lengths, Tensor? coordinates, Tensor? distance_weight, int window, "
      "float time_unit, float time_scale, float distance_scale, str bucketing, "
      "bool interpolate) -> (Tensor, Tensor)");
  // One recurrent layer in one direction; input [N, I] in data order with batch_sizes [L]
  // (csrc/rnn/rnn_args.h describes the packed and padded layouts).
  m.def(
      "lstm_layer(Tensor input, Tensor h0, Tensor c0, Tensor weight_ih, Tensor weight_hh, "
      "Tensor? bias_ih, Tensor? bias_hh, Tensor? weight_hr, Tensor batch_sizes, bool padded, "
      "bool reverse, bool keep_activations, str algorithm) "
      "-> (Tensor output, Tensor h_n, Tensor c_n, Tensor gates, Tensor cells)");
  m.def(
      "lstm_layer_backward(Tensor? grad_output, Tensor? grad_h_n, Tensor? grad_c_n, "
      "Tensor input, Tensor h0, Tensor c0, Tensor weight_ih, Tensor weight_hh, "
      "Tensor? weight_hr, Tensor output, Tensor gates, Tensor cells, Tensor batch_sizes, "
      "bool padded, bool reverse, bool has_bias, str algorithm) -> (Tensor grad_input, "
      "Tensor grad_h0, Tensor grad_c0, Tensor grad_weight_ih, Tensor grad_weight_hh, "
      "Tensor grad_bias, Tensor grad_weight_hr)");
  m.def(
      "gru_layer(Tensor input, Tensor h0, Tensor weight_ih, Tensor weight_hh, Tensor? bias_ih, "
      "Tensor? bias_hh, Tensor batch_sizes, bool padded, bool reverse, bool keep_activations, "
      "str algorithm) -> (Tensor output, Tensor h_n, Tensor gates)");
  m.def(
      "gru_layer_backward(Tensor? grad_output, Tensor? grad_h_n, Tensor input, Tensor h0, "
      "Tensor weight_ih, Tensor weight_hh, Tensor output, Tensor gates, Tensor batch_sizes, "
      "bool padded, bool reverse, bool has_bias, str algorithm) -> (Tensor grad_input, "
      "Tensor grad_h0, Tensor grad_weight_ih, Tensor grad_weight_hh, Tensor grad_bias_ih, "
      "Tensor grad_bias_hh)");
}

TORCH_LIBRARY_IMPL(stseq, CPU, m) {
  m.impl("time_gap_embedding", &stseq::time_gap_embedding_cpu);
  m.impl("time_gap_embedding_backward", &stseq::time_gap_embedding_backward_cpu);
  m.impl("lstm_layer", &stseq::lstm_layer_cpu);
  m.impl("lstm_layer_backward", &stseq::lstm_layer_backward_cpu);
  m.impl("gru_layer", &stseq::gru_layer_cpu);
  m.impl("gru_layer_backward", &stseq::gru_layer_backward_cpu);
}

#ifdef STSEQ_WITH_CUDA
TORCH_LIBRARY_IMPL(stseq, CUDA, m) {
  m.impl("time_gap_embedding", &stseq::time_gap_embedding_cuda);
  m.impl("time_gap_embedding_backward", &stseq::time_gap_embedding_backward_cuda);
  m.impl("lstm_layer", &stseq::lstm_layer_cuda);
  m.impl("lstm_layer_backward", &stseq::lstm_layer_backward_cuda);
  m.impl("gru_layer", &stseq::gru_layer_cuda);
  m.impl("gru_layer_backward", &stseq::gru_layer_backward_cuda);
}
#endif

// ---- time-aware recurrent layers (issue 4): time_lstm, tlstm, time_decay_gru and their
// backwards. One layer and direction over time-major input [L, B, I]; see stseq/ops/time_rnn.py.
// Their CPU and CUDA impls register themselves (time_rnn/time_rnn_driver.h, register_impls).
TORCH_LIBRARY_FRAGMENT(stseq, m) {
  m.def(
      "time_lstm(Tensor input, Tensor dt, Tensor h0, Tensor c0, Tensor? lengths, "
      "Tensor weight_ih, Tensor weight_hh, Tensor bias, Tensor peephole, Tensor time_weight, "
      "int variant, str time_activation, bool reverse, bool save_workspace) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "time_lstm_backward(Tensor grad_output, Tensor grad_h_n, Tensor grad_c_n, Tensor input, "
      "Tensor dt, Tensor? lengths, Tensor weight_ih, Tensor weight_hh, Tensor peephole, "
      "Tensor time_weight, Tensor gates, Tensor cells, Tensor recurrent_input, int variant, "
      "str time_activation, bool reverse) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "tlstm(Tensor input, Tensor dt, Tensor h0, Tensor c0, Tensor? lengths, Tensor weight_ih, "
      "Tensor weight_hh, Tensor bias, Tensor decay_weight, Tensor decay_bias, "
      "str short_term_activation, bool reverse, bool save_workspace) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "tlstm_backward(Tensor grad_output, Tensor grad_h_n, Tensor grad_c_n, Tensor input, "
      "Tensor dt, Tensor? lengths, Tensor weight_ih, Tensor weight_hh, Tensor decay_weight, "
      "Tensor decay_bias, Tensor gates, Tensor cells, Tensor recurrent_input, "
      "str short_term_activation, bool reverse) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "time_decay_gru(Tensor input, Tensor dt, Tensor h0, Tensor? lengths, Tensor weight_ih, "
      "Tensor weight_hh, Tensor bias_ih, Tensor bias_hh, Tensor decay_weight, "
      "Tensor decay_bias, bool reverse, bool save_workspace) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "time_decay_gru_backward(Tensor grad_output, Tensor grad_h_n, Tensor input, Tensor dt, "
      "Tensor? lengths, Tensor weight_ih, Tensor weight_hh, Tensor decay_weight, "
      "Tensor decay_bias, Tensor gates, Tensor cells, Tensor recurrent_input, bool reverse) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
}

// ---- end of time-aware recurrent layers

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.doc() = "stseq native kernels (ops are registered under torch.ops.stseq)";
#ifdef STSEQ_WITH_CUDA
  module.attr("cuda_built") = true;
#else
  module.attr("cuda_built") = false;
#endif
}
