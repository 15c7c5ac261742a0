// GRU gate math for one hidden unit of one batch row (torch.nn.GRU's gate order and equations;
// see rnn.h), shared by the CPU kernels and the CUDA kernels: T is float/double or an
// at::vec::Vectorized of them, `Act` supplies sigmoid and tanh for T.
#pragma once

#include "common/element_math.h"

namespace stseq {
namespace rnn {

// Activated GRU gates of one unit (h_n, the recurrent part of the candidate's pre-activation, is
// kept: the reset gate's gradient needs it) and the new hidden state.
template <typename T>
struct GruUnit {
  T r, z, n, h_n;
  T h;
};

template <typename Act, typename T>
STSEQ_HOST_DEVICE inline GruUnit<T> gru_unit_forward(const T& x_r, const T& x_z, const T& x_n,
                                                     const T& h_r, const T& h_z, const T& h_n,
                                                     const T& h_prev) {
  GruUnit<T> u;
  u.r = Act::sigmoid(x_r + h_r);
  u.z = Act::sigmoid(x_z + h_z);
  u.h_n = h_n;
  u.n = Act::tanh(x_n + u.r * h_n);
  u.h = (T(1) - u.z) * u.n + u.z * h_prev;
  return u;
}

// Gradients of one GRU unit. The input side's pre-activations (x_r, x_z, x_n) get d_r, d_z, d_n;
// the recurrent side's (h_r, h_z, h_n) get d_r, d_z, d_hn = d_n * r; dh_prev_direct is the part of
// dh_prev that does not go through W_hh.
template <typename T>
struct GruUnitGrad {
  T d_r, d_z, d_n, d_hn;
  T dh_prev_direct;
};

template <typename Act, typename T>
STSEQ_HOST_DEVICE inline GruUnitGrad<T> gru_unit_backward(const T& r, const T& z, const T& n,
                                                        const T& h_n, const T& h_prev,
                                                        const T& dh) {
  GruUnitGrad<T> d;
  d.d_n = dh * (T(1) - z) * tanh_derivative(n);
  d.d_z = dh * (h_prev - n) * logistic_derivative(z);
  d.d_r = d.d_n * h_n * logistic_derivative(r);
  d.d_hn = d.d_n * r;
  d.dh_prev_direct = dh * z;
  return d;
}

}  // namespace rnn
}  // namespace stseq
