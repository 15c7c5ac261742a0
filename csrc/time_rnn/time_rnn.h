// Time-aware recurrent cells: the per-element math shared by the CPU and CUDA kernels.
//
// Every step of every cell is one "element step": a functor with
//   row(b)                 -> Row: which position row b processes at this step, whether it is
//                             active (step < its length) and its time gap;
//   active(row, b, lane)   -> the cell math of the hidden units `lane` of row b;
//   inactive(b, lane)      -> what a finished (or not yet started) row writes (zeros into GEMM
//                             operands of the backward, nothing in the forward);
//   prefetch(row)          -> (CPU) the row's by-position reads, asked for one row ahead.
// A lane is a set of hidden units with lane.load(row pointer) / lane.store(row pointer, value)
// and its math in Lane::Act (sigmoid, tanh, exp, minimum, maximum, where_greater,
// where_less_equal; see common/cpu_vector.h): the CPU runs each row as at::vec::Vectorized lanes
// plus a ScalarMath lane per remaining unit (time_rnn_cpu_rows.h, built for the baseline and for
// AVX2 + FMA), the CUDA kernel gives one thread, one scalar lane, to each (b, j)
// (time_rnn_cuda_launcher.cuh, over common/cuda_element_kernel.cuh); the host drivers around
// them (time_rnn_forward.h, time_rnn_backward.h: the GEMMs and the time loop) are the same code
// for both.
//
// Notation: H hidden units, B rows, L positions; buffers "by position" are [L, B, ...] indexed
// by (t, b) -> t * B + b, "step" buffers are [B, ...] and hold the current step's values.
// scalar_t is the tensors' dtype, acc_t its accumulation type (float for half and bfloat16):
// cell states and gradient accumulators are acc_t.
//
// What a training forward saves: the gates' activations, written in place over the input
// projections x W_ih^T they were computed from (gates [L, B, G*H], scalar_t: each element is
// read, then overwritten, by its own thread; the input GEMM adds the bias), the
// cell states the backward cannot recompute cheaply from them (cells [L, B, C*H], acc_t), and
// the h each position multiplied W_hh by (recurrent_input [L, B, H]).
//
// The backward steps read one gradient per state, never a per-row choice (which would keep the
// CPU loop from vectorising): the driver adds d/dh_n to grad_output at each row's last position
// where h comes out of a GEMM (the LSTM cells), and otherwise starts the state's gradient
// buffer at d/dh_n or d/dc_n, which inactive rows leave untouched.
#pragma once
//
// Files: common/element_math.h (the primitives every cell shares: ScalarMath, the activations'
// derivatives, Activation), element_step.h (Row, Steps, ElementStep, AddRecurrent), and one file
// per cell: time_lstm.h, tlstm.h, time_decay_gru.h.
#pragma once

#include "common/element_math.h"
#include "time_rnn/element_step.h"
#include "time_rnn/time_decay_gru.h"
#include "time_rnn/time_lstm.h"
#include "time_rnn/tlstm.h"
