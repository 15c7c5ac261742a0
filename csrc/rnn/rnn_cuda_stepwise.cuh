// The stepwise loop's fused pointwise steps of the CUDA LSTM/GRU layers (see
// rnn_cuda_launcher.cuh), forward and backward of each cell, around the cell maths of lstm.h and
// gru.h: each a struct of one step's buffers and run_unit, the per-(row, unit) body that
// launch_step runs in the shared element kernel (common/cuda_element_kernel.cuh, a thread per
// (row, unit), grid-stride; also the time-aware cells' kernel).
#pragma once

#include <cstdint>

#include "common/cuda_element_kernel.cuh"
#include "common/element_math.h"
#include "rnn/rnn.h"
#include "rnn/rnn_cuda_common.cuh"

namespace stseq {
namespace {

template <typename scalar_t, typename acc_t>
struct LstmStepForward {
  int64_t rows, hidden;  // n, H
  const scalar_t* xg;    // [n, 4H] W_ih x + b_ih + b_hh
  const scalar_t* hg;    // [n, 4H] W_hh h_prev
  acc_t* c_state;        // [n, H] c_prev in, c out
  acc_t* gates;          // [n, 4H] i, f, g, o (nullptr: not kept)
  acc_t* cells;          // [n, H] (nullptr: not kept)
  scalar_t* h;           // [n, H] o * tanh(c)

  // Unit j of row b (k: its index in the [n, H] buffers).
  __device__ __forceinline__ void run_unit(int64_t b, int64_t j) const {
    const auto& p = *this;
    const int64_t H = p.hidden, k = b * H + j;
    const scalar_t* xg = p.xg + b * 4 * H + j;
    const scalar_t* hg = p.hg + b * 4 * H + j;
    const auto pre = [&](int q) {
      return static_cast<acc_t>(xg[q * H]) + static_cast<acc_t>(hg[q * H]);
    };
    const auto u =
        rnn::lstm_unit_forward<ScalarMath>(pre(0), pre(1), pre(2), pre(3), p.c_state[k]);
    p.c_state[k] = u.c;
    p.h[k] = static_cast<scalar_t>(u.h);
    if (p.gates != nullptr) {
      acc_t* g = p.gates + b * 4 * H + j;
      g[0] = u.i;
      g[H] = u.f;
      g[2 * H] = u.g;
      g[3 * H] = u.o;
    }
    if (p.cells != nullptr) p.cells[k] = u.c;
  }
};

template <typename scalar_t, typename acc_t>
struct LstmStepBackward {
  int64_t rows, hidden;  // n, H
  const scalar_t* dh;    // [n, H] gradient reaching o * tanh(c)
  const scalar_t* dy;    // [n, H] added to dh (nullptr: none)
  const acc_t* gates;    // [n, 4H]
  const acc_t* cells;    // [n, H]
  const acc_t* c_prev;   // [n, H]
  acc_t* dc;             // [n, H] gradient reaching c in, reaching c_prev out
  scalar_t* dgates;      // [n, 4H]
  scalar_t* r;           // [n, H] o * tanh(c) (nullptr: not needed)

  // Unit j of row b (k: its index in the [n, H] buffers).
  __device__ __forceinline__ void run_unit(int64_t b, int64_t j) const {
    const auto& p = *this;
    const int64_t H = p.hidden, k = b * H + j;
    acc_t dh = static_cast<acc_t>(p.dh[k]);
    if (p.dy != nullptr) dh += static_cast<acc_t>(p.dy[k]);
    const acc_t* g = p.gates + b * 4 * H + j;
    const acc_t c = p.cells[k];
    const auto d = rnn::lstm_unit_backward<ScalarMath>(g[0], g[H], g[2 * H], g[3 * H], c,
                                                              p.c_prev[k], dh, p.dc[k]);
    scalar_t* dg = p.dgates + b * 4 * H + j;
    dg[0] = static_cast<scalar_t>(d.d_i);
    dg[H] = static_cast<scalar_t>(d.d_f);
    dg[2 * H] = static_cast<scalar_t>(d.d_g);
    dg[3 * H] = static_cast<scalar_t>(d.d_o);
    p.dc[k] = d.dc_prev;
    if (p.r != nullptr) p.r[k] = static_cast<scalar_t>(g[3 * H] * hyperbolic_tangent(c));
  }
};

template <typename scalar_t, typename acc_t>
struct GruStepForward {
  int64_t rows, hidden;    // n, H
  const scalar_t* xg;      // [n, 3H] W_ih x + b_ih
  const scalar_t* hg;      // [n, 3H] W_hh h_prev
  const scalar_t* b_hh;    // [3H] added to hg (nullptr: no bias)
  const scalar_t* h_prev;  // [n, H]
  acc_t* gates;            // [n, 4H] r, z, n, h_n (nullptr: not kept)
  scalar_t* h;             // [n, H]

  // Unit j of row b (k: its index in the [n, H] buffers).
  __device__ __forceinline__ void run_unit(int64_t b, int64_t j) const {
    const auto& p = *this;
    const int64_t H = p.hidden, k = b * H + j;
    const scalar_t* xg = p.xg + b * 3 * H + j;
    const scalar_t* hg = p.hg + b * 3 * H + j;
    const auto in = [](scalar_t v) { return static_cast<acc_t>(v); };
    const auto bias = [&](int q) { return p.b_hh != nullptr ? in(p.b_hh[q * H + j]) : acc_t(0); };
    const auto u = rnn::gru_unit_forward<ScalarMath>(
        in(xg[0]), in(xg[H]), in(xg[2 * H]), in(hg[0]) + bias(0), in(hg[H]) + bias(1),
        in(hg[2 * H]) + bias(2), in(p.h_prev[k]));
    p.h[k] = static_cast<scalar_t>(u.h);
    if (p.gates != nullptr) {
      acc_t* g = p.gates + b * 4 * H + j;
      g[0] = u.r;
      g[H] = u.z;
      g[2 * H] = u.n;
      g[3 * H] = u.h_n;
    }
  }
};

template <typename scalar_t, typename acc_t>
struct GruStepBackward {
  int64_t rows, hidden;    // n, H
  const scalar_t* dh_rec;  // [n, H] gradient through W_hh from the next step (or dh_n)
  acc_t* carry;            // [n, H] direct gradient from the next step in, to h_prev out
  const scalar_t* dy;      // [n, H]
  const acc_t* gates;      // [n, 4H]
  const scalar_t* h_prev;  // [n, H]
  scalar_t* dxg;           // [n, 3H]
  scalar_t* dhg;           // [n, 3H]

  // Unit j of row b (k: its index in the [n, H] buffers).
  __device__ __forceinline__ void run_unit(int64_t b, int64_t j) const {
    const auto& p = *this;
    const int64_t H = p.hidden, k = b * H + j;
    const acc_t dh = static_cast<acc_t>(p.dh_rec[k]) + p.carry[k] + static_cast<acc_t>(p.dy[k]);
    const acc_t* g = p.gates + b * 4 * H + j;
    const auto d = rnn::gru_unit_backward<ScalarMath>(
        g[0], g[H], g[2 * H], g[3 * H], static_cast<acc_t>(p.h_prev[k]), dh);
    scalar_t* dxg = p.dxg + b * 3 * H + j;
    scalar_t* dhg = p.dhg + b * 3 * H + j;
    dxg[0] = dhg[0] = static_cast<scalar_t>(d.d_r);
    dxg[H] = dhg[H] = static_cast<scalar_t>(d.d_z);
    dxg[2 * H] = static_cast<scalar_t>(d.d_n);
    dhg[2 * H] = static_cast<scalar_t>(d.d_hn);
    p.carry[k] = d.dh_prev_direct;
  }
};

// One step's element kernel over its n x H (row, unit) pairs.
template <typename Step>
void launch_step(const Step& step) {
  launch_element_kernel(step, 0, step.rows, step.hidden, kMaxBlocks);
}

}  // namespace
}  // namespace stseq
