// Definitions of the CPU pointwise kernels declared in rnn_cpu_kernels.h, vectorised over hidden
// units with the lanes of common/cpu_vector.h (one at::vec::Vectorized lane per unit, a scalar
// loop for the remainder) around the shared gate math of rnn.h. Included by exactly one
// translation unit per instruction set, which names its namespace first: rnn_cpu_default.cpp
// (STSEQ_CPU_NAMESPACE cpu_default, baseline flags), rnn_cpu_avx2.cpp (cpu_avx2, built with
// -mavx2 -mfma and ATen's CPU_CAPABILITY_AVX2, where Vectorized<float> holds 8 lanes) and
// rnn_cpu_avx512.cpp (cpu_avx512, CPU_CAPABILITY_AVX512: 16 lanes). The recurrent GEMM is
// common/cpu_gemm.h's.
#pragma once

#ifndef STSEQ_CPU_NAMESPACE
#error "define STSEQ_CPU_NAMESPACE before including rnn_cpu_pointwise.h"
#endif

#include <type_traits>

#include "common/cpu_gemm.h"
#include "common/cpu_vector.h"
#include "rnn/rnn.h"
#include "rnn/rnn_cpu_kernels.h"

namespace stseq {
namespace rnn {
namespace STSEQ_CPU_NAMESPACE {
namespace {

// The vector lanes (common/cpu_vector.h) of this instruction set, with rnn.h's scalar activations
// for the remaining units; the LSTM forward goes two vectors at a time first (VectorPair).
template <typename scalar_t, typename Body>
inline void for_each_unit(int64_t hidden, const Body& body) {
  ::stseq::STSEQ_CPU_NAMESPACE::for_each_unit<scalar_t, ScalarMath>(hidden, body);
}

template <typename scalar_t, typename Body>
inline void for_each_unit_in_pairs(int64_t hidden, const Body& body) {
  ::stseq::STSEQ_CPU_NAMESPACE::for_each_unit_in_pairs<scalar_t, ScalarMath>(hidden, body);
}

template <typename scalar_t>
void lstm_forward(const LstmForwardRows<scalar_t>& p) {
  const int64_t W = p.hidden, H = p.layer_hidden, pre = p.pre_gate_stride;
  for (int64_t b = 0; b < p.rows; ++b) {
    const scalar_t* xg = p.xg != nullptr ? p.xg + b * p.xg_stride : nullptr;  // [4 blocks]
    const scalar_t* hg = p.hg + b * p.hg_stride;                             // [4 blocks]
    scalar_t* c = p.c_state + b * H;              // [W]
    scalar_t* h = p.h + b * p.h_stride;           // [W]
    scalar_t* gates = p.gates != nullptr ? p.gates + b * 4 * H : nullptr;
    scalar_t* cells = p.cells != nullptr ? p.cells + b * H : nullptr;
    for_each_unit_in_pairs<scalar_t>(W, [&](const auto& lane) {
      using Act = typename std::decay_t<decltype(lane)>::Act;
      auto pre_activation = [&](int64_t gate) {
        auto sum = lane.load(hg + gate * pre);
        if (xg != nullptr) sum = lane.load(xg + gate * pre) + sum;
        return p.bias != nullptr ? sum + lane.load(p.bias + gate * H) : sum;
      };
      const auto u = lstm_unit_forward<Act>(pre_activation(0), pre_activation(1),
                                            pre_activation(2), pre_activation(3), lane.load(c));
      lane.store(c, u.c);
      lane.store(h, u.h);
      if (gates != nullptr) {
        lane.store(gates, u.i);
        lane.store(gates + H, u.f);
        lane.store(gates + 2 * H, u.g);
        lane.store(gates + 3 * H, u.o);
      }
      if (cells != nullptr) lane.store(cells, u.c);
    });
  }
}

template <typename scalar_t>
void lstm_backward(const LstmBackwardRows<scalar_t>& p) {
  const int64_t H = p.hidden;
  for (int64_t b = 0; b < p.rows; ++b) {
    const scalar_t* dh = p.dh + b * p.dh_stride;                  // [H]
    const scalar_t* dy = p.dy != nullptr ? p.dy + b * H : nullptr;  // [H]
    const scalar_t* gates = p.gates + b * 4 * H;                  // [4H]
    const scalar_t* cells = p.cells + b * H;                      // [H]
    const scalar_t* c_prev = p.c_prev + b * H;                    // [H]
    scalar_t* dc = p.dc + b * H;                                  // [H]
    scalar_t* dgates = p.dgates + b * 4 * H;                      // [4H]
    scalar_t* r = p.r != nullptr ? p.r + b * H : nullptr;         // [H]
    for_each_unit<scalar_t>(H, [&](const auto& lane) {
      using Act = typename std::decay_t<decltype(lane)>::Act;
      auto grad_h = lane.load(dh);
      if (dy != nullptr) grad_h = grad_h + lane.load(dy);
      const auto o = lane.load(gates + 3 * H);
      const auto c = lane.load(cells);
      const auto d = lstm_unit_backward<Act>(lane.load(gates), lane.load(gates + H),
                                             lane.load(gates + 2 * H), o, c, lane.load(c_prev),
                                             grad_h, lane.load(dc));
      lane.store(dgates, d.d_i);
      lane.store(dgates + H, d.d_f);
      lane.store(dgates + 2 * H, d.d_g);
      lane.store(dgates + 3 * H, d.d_o);
      lane.store(dc, d.dc_prev);
      if (r != nullptr) lane.store(r, o * Act::tanh(c));
    });
  }
}

template <typename scalar_t>
void gru_forward(const GruForwardRows<scalar_t>& p) {
  const int64_t H = p.hidden;
  for (int64_t b = 0; b < p.rows; ++b) {
    const scalar_t* xg = p.xg + b * p.xg_stride;  // [3H]
    const scalar_t* hg = p.hg + b * 3 * H;        // [3H]
    const scalar_t* h_prev = p.h_prev + b * H;    // [H]
    scalar_t* h = p.h + b * H;                    // [H]
    scalar_t* gates = p.gates != nullptr ? p.gates + b * 4 * H : nullptr;
    for_each_unit<scalar_t>(H, [&](const auto& lane) {
      using Act = typename std::decay_t<decltype(lane)>::Act;
      auto h_r = lane.load(hg), h_z = lane.load(hg + H), h_n = lane.load(hg + 2 * H);
      if (p.b_hh != nullptr) {
        h_r = h_r + lane.load(p.b_hh);
        h_z = h_z + lane.load(p.b_hh + H);
        h_n = h_n + lane.load(p.b_hh + 2 * H);
      }
      auto x_r = lane.load(xg), x_z = lane.load(xg + H), x_n = lane.load(xg + 2 * H);
      if (p.b_ih != nullptr) {
        x_r = x_r + lane.load(p.b_ih);
        x_z = x_z + lane.load(p.b_ih + H);
        x_n = x_n + lane.load(p.b_ih + 2 * H);
      }
      const auto u = gru_unit_forward<Act>(x_r, x_z, x_n, h_r, h_z, h_n, lane.load(h_prev));
      lane.store(h, u.h);
      if (gates != nullptr) {
        lane.store(gates, u.r);
        lane.store(gates + H, u.z);
        lane.store(gates + 2 * H, u.n);
        lane.store(gates + 3 * H, u.h_n);
      }
    });
  }
}

template <typename scalar_t>
void gru_backward(const GruBackwardRows<scalar_t>& p) {
  const int64_t H = p.hidden;
  for (int64_t b = 0; b < p.rows; ++b) {
    const scalar_t* dh_rec = p.dh_rec + b * H;  // [H]
    scalar_t* carry = p.carry + b * H;          // [H]
    const scalar_t* dy = p.dy + b * H;          // [H]
    const scalar_t* gates = p.gates + b * 4 * H;
    const scalar_t* h_prev = p.h_prev + b * H;
    scalar_t* dxg = p.dxg + b * 3 * H;
    scalar_t* dhg = p.dhg + b * 3 * H;
    for_each_unit<scalar_t>(H, [&](const auto& lane) {
      using Act = typename std::decay_t<decltype(lane)>::Act;
      const auto grad_h = lane.load(dh_rec) + lane.load(carry) + lane.load(dy);
      const auto d = gru_unit_backward<Act>(lane.load(gates), lane.load(gates + H),
                                            lane.load(gates + 2 * H), lane.load(gates + 3 * H),
                                            lane.load(h_prev), grad_h);
      lane.store(dxg, d.d_r);
      lane.store(dxg + H, d.d_z);
      lane.store(dxg + 2 * H, d.d_n);
      lane.store(dhg, d.d_r);
      lane.store(dhg + H, d.d_z);
      lane.store(dhg + 2 * H, d.d_hn);
      lane.store(carry, d.dh_prev_direct);
    });
  }
}

template <typename scalar_t>
void recurrent_gemm(const RecurrentGemm<scalar_t>& p) {
  const int64_t k_end = p.k_end < 0 ? p.k : p.k_end;
  ::stseq::STSEQ_CPU_NAMESPACE::PanelGemm<scalar_t>{p.k, p.n, p.packed}(
      p.rows, p.k_begin, p.a, p.lda, p.k1 < 0 ? k_end : p.k1, p.a2, p.lda2, k_end, p.out, p.ldo);
}

template <typename scalar_t>
void pack(const PackPart<scalar_t>& p) {
  ::stseq::STSEQ_CPU_NAMESPACE::PanelGemm<scalar_t>::pack(p.src, p.rows, p.row_stride,
                                                           p.column_stride, p.k, p.n, p.k0,
                                                           p.packed, p.block, p.block_stride);
}

}  // namespace

template <typename scalar_t>
CpuPointwise<scalar_t> pointwise_kernels() {
  return {&lstm_forward<scalar_t>, &lstm_backward<scalar_t>, &gru_forward<scalar_t>,
          &gru_backward<scalar_t>, &recurrent_gemm<scalar_t>, &pack<scalar_t>,
          ::stseq::STSEQ_CPU_NAMESPACE::PanelGemm<scalar_t>::kPanel};
}

template CpuPointwise<float> pointwise_kernels<float>();
template CpuPointwise<double> pointwise_kernels<double>();

}  // namespace STSEQ_CPU_NAMESPACE
}  // namespace rnn
}  // namespace stseq
