// Host drivers of the time-aware recurrent ops, shared by the CPU and CUDA entry points (haste's
// structure, written for every cell):
//   forward:  one GEMM projects the inputs of all L steps onto every gate, time gates included
//             (gates = x W_ih^T + b, [L, B, G*H]); then a time loop in C++ with, per step, the
//             recurrent GEMM(s) and one fused element step (time_rnn.h) that adds the dt terms,
//             applies the gates, writes the output and, when training, saves the activations
//             (over the projections in `gates`, and the cell states in `cells`);
//   backward: the element steps in reverse write the pre-activation gradients by position and
//             the recurrent GEMM carries d/dh to the earlier step; after the loop dx, dW_ih and
//             dW_hh are three large GEMMs; the element steps also add the gradients of the biases
//             and elementwise weights (peepholes, time and decay weights) into partial sums
//             (per row on CUDA, per thread's tile on the CPU), summed after the loop (no atomics
//             anywhere: bitwise reproducible on a device for a given thread count).
//
// Variable lengths: with rows sorted by length, longest first (stseq/ops/time_rnn.py sorts
// them), the rows that still run at a step are a prefix of the batch, and every GEMM and element
// step covers only that prefix (csrc/rnn's plan): no work is spent on padding. Unsorted lengths
// stay correct (every row, each checked by the element step), only slower.
//
// Files: time_rnn_plan.h (Setup: buffers and plans; the helpers every loop shares),
// time_rnn_forward.h and time_rnn_backward.h (each cell's time loop and entry point), this file
// (the launcher interface and the registration of one device's impls).
//
//
// A Launcher provides
//   template <typename F> static void dispatch(at::ScalarType, F f)  f(scalar_t{}) per dtype
//   static auto guard(const at::Tensor&)                                the device guard
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

#include "time_rnn/time_rnn_backward.h"
#include "time_rnn/time_rnn_forward.h"

namespace stseq {
namespace time_rnn {

// The impls of one device (schemas: the fragment at the end of time_rnn_cpu.cpp): time_rnn_cpu.cpp and time_rnn_cuda.cu
// register their launcher's instantiations of the entry points of time_rnn_forward.h and
// time_rnn_backward.h.

template <typename Launcher>
void register_impls(torch::Library& m) {
  m.impl("time_lstm", &time_lstm_forward<Launcher>);
  m.impl("time_lstm_backward", &time_lstm_backward<Launcher>);
  m.impl("tlstm", &tlstm_forward<Launcher>);
  m.impl("tlstm_backward", &tlstm_backward<Launcher>);
  m.impl("time_decay_gru", &time_decay_gru_forward<Launcher>);
  m.impl("time_decay_gru_backward", &time_decay_gru_backward<Launcher>);
}

}  // namespace time_rnn
}  // namespace stseq
