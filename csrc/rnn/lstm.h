// LSTM gate math for one hidden unit of one batch row (torch.nn.LSTM's gate order and
// equations; see rnn.h), shared by the CPU kernels and the CUDA kernels: T is float/double or an
// at::vec::Vectorized of them, `Act` supplies sigmoid and tanh for T.
#pragma once

#include "common/element_math.h"

namespace stseq {
namespace rnn {

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
  const T tanh_c = Act::tanh(c);
  const T dc_total = dc + dh * o * tanh_derivative(tanh_c);
  LstmUnitGrad<T> d;
  d.d_o = dh * tanh_c * logistic_derivative(o);
  d.d_i = dc_total * g * logistic_derivative(i);
  d.d_f = dc_total * c_prev * logistic_derivative(f);
  d.d_g = dc_total * i * tanh_derivative(g);
  d.dc_prev = dc_total * f;
  return d;
}

}  // namespace rnn
}  // namespace stseq
