// LSTM and GRU gate math for one hidden unit of one batch row: shared by the CPU kernels (where
// T is float/double or an at::vec::Vectorized of them, one lane per unit) and the CUDA kernels
// (T is float or double). `Act` supplies sigmoid and tanh for T; ScalarActivations serves the
// scalar types on host and device.
//
// Gate order and equations are torch.nn.LSTM / torch.nn.GRU's:
//   LSTM  i, f, g, o = sigmoid(a_i), sigmoid(a_f), tanh(a_g), sigmoid(a_o)
//         c = f * c_prev + i * g;   h = o * tanh(c)       (a = W_ih x + b_ih + W_hh h_prev + b_hh)
//   GRU   r = sigmoid(x_r + h_r);   z = sigmoid(x_z + h_z);   n = tanh(x_n + r * h_n)
//         h = (1 - z) * n + z * h_prev    (x_* = W_i* x + b_i*, h_* = W_h* h_prev + b_h*)
// The backward functions return the gradients of the gate pre-activations given the gradient
// reaching h (and c) of the step.
#pragma once

#include <cmath>

#include "common/host_device.h"

namespace stseq {
namespace rnn {

STSEQ_HOST_DEVICE inline float sigmoid_of(float x) { return 1.0f / (1.0f + expf(-x)); }
STSEQ_HOST_DEVICE inline double sigmoid_of(double x) { return 1.0 / (1.0 + exp(-x)); }
STSEQ_HOST_DEVICE inline float tanh_of(float x) { return tanhf(x); }
STSEQ_HOST_DEVICE inline double tanh_of(double x) { return tanh(x); }

struct ScalarActivations {
  template <typename T>
  STSEQ_HOST_DEVICE static T sigmoid(T x) { return sigmoid_of(x); }
  template <typename T>
  STSEQ_HOST_DEVICE static T tanh(T x) { return tanh_of(x); }
};

// Activated LSTM gates and the new state of one unit.
template <typename T>
struct LstmUnit {
  T i, f, g, o;  // input, forget, cell candidate, output gates (activated)
  T c;           // new cell state
  T h;           // new hidden state before any projection: o * tanh(c)
};

template <typename Act, typename T>
STSEQ_HOST_DEVICE inline LstmUnit<T> lstm_unit_forward(const T& a_i, const T& a_f, const T& a_g,
                                                          const T& a_o, const T& c_prev) {
  LstmUnit<T> u;
  u.i = Act::sigmoid(a_i);
  u.f = Act::sigmoid(a_f);
  u.g = Act::tanh(a_g);
  u.o = Act::sigmoid(a_o);
  u.c = u.f * c_prev + u.i * u.g;
  u.h = u.o * Act::tanh(u.c);
  return u;
}

// Gradients of one LSTM unit: d_a* of the gate pre-activations and dc_prev.
template <typename T>
struct LstmUnitGrad {
  T d_i, d_f, d_g, d_o;
  T dc_prev;
};

// dh: gradient reaching o * tanh(c) (after the projection's backward); dc: gradient reaching c
// from the next step.
template <typename Act, typename T>
STSEQ_HOST_DEVICE inline LstmUnitGrad<T> lstm_unit_backward(const T& i, const T& f, const T& g,
                                                            const T& o, const T& c,
                                                            const T& c_prev, const T& dh,
                                                            const T& dc) {
  const T one(1);
  const T tanh_c = Act::tanh(c);
  const T dc_total = dc + dh * o * (one - tanh_c * tanh_c);
  LstmUnitGrad<T> d;
  d.d_o = dh * tanh_c * o * (one - o);
  d.d_i = dc_total * g * i * (one - i);
  d.d_f = dc_total * c_prev * f * (one - f);
  d.d_g = dc_total * i * (one - g * g);
  d.dc_prev = dc_total * f;
  return d;
}

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
  const T one(1);
  GruUnitGrad<T> d;
  d.d_n = dh * (one - z) * (one - n * n);
  d.d_z = dh * (h_prev - n) * z * (one - z);
  d.d_r = d.d_n * h_n * r * (one - r);
  d.d_hn = d.d_n * r;
  d.dh_prev_direct = dh * z;
  return d;
}

}  // namespace rnn
}  // namespace stseq
