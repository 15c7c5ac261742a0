// LSTM and GRU gate math for one hidden unit of one batch row: shared by the CPU kernels (where
// T is float/double or an at::vec::Vectorized of them, one lane per unit) and the CUDA kernels
// (T is float or double). `Act` supplies sigmoid and tanh for T; common/element_math.h's
// ScalarMath serves the scalar types on host and device, as for the time-aware cells.
//
// Gate order and equations are torch.nn.LSTM / torch.nn.GRU's:
//   LSTM  i, f, g, o = sigmoid(a_i), sigmoid(a_f), tanh(a_g), sigmoid(a_o)
//         c = f * c_prev + i * g;   h = o * tanh(c)       (a = W_ih x + b_ih + W_hh h_prev + b_hh)
//   GRU   r = sigmoid(x_r + h_r);   z = sigmoid(x_z + h_z);   n = tanh(x_n + r * h_n)
//         h = (1 - z) * n + z * h_prev    (x_* = W_i* x + b_i*, h_* = W_h* h_prev + b_h*)
// The backward functions return the gradients of the gate pre-activations given the gradient
// reaching h (and c) of the step.
//
// Files: common/element_math.h (the primitives shared with the time-aware cells: ScalarMath,
// whose sigmoid and tanh serve the scalar lanes on host and device, and the activations'
// derivatives), lstm.h and gru.h (one file per cell).
#pragma once

#include "common/element_math.h"
#include "rnn/gru.h"
#include "rnn/lstm.h"
