// The native recurrent engine: one device-independent driver for all five cells (LSTM, GRU,
// Time-LSTM 1-3, T-LSTM, time-decay GRU), templated on a Launcher that each device supplies, the
// schemas of every recurrent op, and register_impls<Launcher>(m), which each device calls once
// (recurrent_cpu.cpp, recurrent_cuda.cu). Every op is one layer in one direction; stacking,
// bidirectional runs, dropout, packing and autocast live in stseq/nn/recurrent.py.
//
// Files, cell by cell (entry points: checks, plan, buffers, the launcher's time loop, results):
//   LSTM, GRU          rnn/rnn_forward.h, rnn/rnn_backward.h over rnn/rnn_args.h (checks, the
//                      step structure of packed and padded batches) and rnn/rnn_plan.h (step
//                      order, input projection, buffers, final states, weight-gradient GEMMs);
//                      cell maths rnn/lstm.h, rnn/gru.h
//   time-aware cells   time_rnn/time_rnn_forward.h, time_rnn/time_rnn_backward.h over
//                      time_rnn/time_rnn_args.h and time_rnn/time_rnn_plan.h; cell maths
//                      time_rnn/time_lstm.h, tlstm.h, time_decay_gru.h (element steps,
//                      time_rnn/element_step.h)
//   shared             common/element_math.h (activations and their derivatives),
//                      common/cpu_tiles.h (the CPU's tiles of rows), common/cpu_vector.h,
//                      common/cpu_gemm.h
//   launchers          CPU: recurrent_cpu.cpp over rnn/rnn_cpu_launcher.h (tile loops on packed
//                      weights) and time_rnn/time_rnn_cpu_launcher.h (element steps as vector
//                      lanes); CUDA: recurrent_cuda.cu over rnn/rnn_cuda_launcher.cuh (stepwise
//                      cuBLAS + pointwise kernels, or the persistent cluster kernels) and
//                      time_rnn/time_rnn_cuda_launcher.cuh (one element-step kernel per step);
//                      both pointwise kernels are common/cuda_element_kernel.cuh's
//
// A Launcher provides
//   static void check_input(const at::Tensor& input, const char* layers)
//       the device and dtype checks ("<layers> on CPU support float32 and float64, got ...")
//   template <typename F> static void dispatch(at::ScalarType, const char* layers, F f)
//       f(scalar_t{}) for input's dtype (the same check)
//   static auto guard(const at::Tensor&)                              the device guard
// for the LSTM and GRU (rows in step order, the plan of rnn/rnn_plan.h; the strategy of the
// time loop is the launcher's: CPU tiles on packed panels with the projection-first choice,
// CUDA stepwise or persistent by the "auto" plan):
//   template <typename scalar_t> static void lstm_loop(const rnn::LstmForward&)
//   template <typename scalar_t> static void lstm_backward_loop(const rnn::LstmBackward&)
//   template <typename scalar_t> static void gru_loop(const rnn::GruForward&)
//   template <typename scalar_t> static void gru_backward_loop(const rnn::GruBackward&)
// for the time-aware cells (their drivers run the GEMMs, the launcher the rows):
//   template <typename Body> static void time_loop(const std::vector<int64_t>& active, body)
//       body(begin, end, i) for i = 0..L-1 in order (L = active.size(), active[i] the rows
//       that run at loop step i, a prefix), over rows [begin, end): the CPU gives each thread
//       a tile of rows for the whole sequence (rows are independent; no barrier per step),
//       CUDA runs all rows per step;
//   template <typename Step> static void run(const Step&, begin, end, H)  one element step
//   static at::Tensor scratch(int slot, shape, options)  a buffer that never leaves the op
//       (slots 0 and 1; one call uses each slot for one buffer at a time)
//   static at::Tensor saved_buffer(shape, options)  a new buffer for what a training forward
//       saves for its backward (uninitialised)
#pragma once

#include <torch/library.h>

#include "rnn/rnn_backward.h"
#include "rnn/rnn_forward.h"
#include "time_rnn/time_rnn_backward.h"
#include "time_rnn/time_rnn_forward.h"

namespace stseq {
namespace recurrent {

// The schemas of the recurrent ops (recurrent_cpu.cpp defines them once, as a fragment).
// LSTM/GRU: input [N, I] in data order with batch_sizes [L] (rnn/rnn_args.h describes the packed
// and padded layouts). Time-aware cells: time-major input [L, B, I] with dt [L, B] and lengths
// [B] (stseq/ops/time_rnn.py).
inline void define_schemas(torch::Library& m) {
  m.def(
      "lstm(Tensor input, Tensor h0, Tensor c0, Tensor weight_ih, Tensor weight_hh, "
      "Tensor? bias_ih, Tensor? bias_hh, Tensor? weight_hr, Tensor batch_sizes, bool padded, "
      "bool reverse, bool keep_activations, str algorithm) "
      "-> (Tensor output, Tensor h_n, Tensor c_n, Tensor gates, Tensor cells)");
  m.def(
      "lstm_backward(Tensor? grad_output, Tensor? grad_h_n, Tensor? grad_c_n, "
      "Tensor input, Tensor h0, Tensor c0, Tensor weight_ih, Tensor weight_hh, "
      "Tensor? weight_hr, Tensor output, Tensor gates, Tensor cells, Tensor batch_sizes, "
      "bool padded, bool reverse, bool has_bias, str algorithm) -> (Tensor grad_input, "
      "Tensor grad_h0, Tensor grad_c0, Tensor grad_weight_ih, Tensor grad_weight_hh, "
      "Tensor grad_bias, Tensor grad_weight_hr)");
  m.def(
      "gru(Tensor input, Tensor h0, Tensor weight_ih, Tensor weight_hh, Tensor? bias_ih, "
      "Tensor? bias_hh, Tensor batch_sizes, bool padded, bool reverse, bool keep_activations, "
      "str algorithm) -> (Tensor output, Tensor h_n, Tensor gates)");
  m.def(
      "gru_backward(Tensor? grad_output, Tensor? grad_h_n, Tensor input, Tensor h0, "
      "Tensor weight_ih, Tensor weight_hh, Tensor output, Tensor gates, Tensor batch_sizes, "
      "bool padded, bool reverse, bool has_bias, str algorithm) -> (Tensor grad_input, "
      "Tensor grad_h0, Tensor grad_weight_ih, Tensor grad_weight_hh, Tensor grad_bias_ih, "
      "Tensor grad_bias_hh)");
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

// The impls of one device: its launcher's instantiations of every entry point.
template <typename Launcher>
void register_impls(torch::Library& m) {
  m.impl("lstm", &rnn::lstm_forward<Launcher>);
  m.impl("lstm_backward", &rnn::lstm_backward<Launcher>);
  m.impl("gru", &rnn::gru_forward<Launcher>);
  m.impl("gru_backward", &rnn::gru_backward<Launcher>);
  m.impl("time_lstm", &time_rnn::time_lstm_forward<Launcher>);
  m.impl("time_lstm_backward", &time_rnn::time_lstm_backward<Launcher>);
  m.impl("tlstm", &time_rnn::tlstm_forward<Launcher>);
  m.impl("tlstm_backward", &time_rnn::tlstm_backward<Launcher>);
  m.impl("time_decay_gru", &time_rnn::time_decay_gru_forward<Launcher>);
  m.impl("time_decay_gru_backward", &time_rnn::time_decay_gru_backward<Launcher>);
}

}  // namespace recurrent
}  // namespace stseq
