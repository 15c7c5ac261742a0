// The stepwise loop's fused pointwise kernels of the CUDA LSTM/GRU layers (see
// rnn_cuda_launcher.cuh): a thread per (row, unit) of one step, grid-stride, around the cell
// maths of lstm.h and gru.h.
#pragma once

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <cstdint>

#include "common/element_math.h"
#include "rnn/rnn.h"
#include "rnn/rnn_cuda_common.cuh"

namespace stseq {
namespace {

// Stepwise pointwise kernels: a thread per (row, unit) of one step, grid-stride.

template <typename scalar_t, typename acc_t>
struct LstmStepForward {
  int64_t rows, hidden;  // n, H
  const scalar_t* xg;    // [n, 4H] W_ih x + b_ih + b_hh
  const scalar_t* hg;    // [n, 4H] W_hh h_prev
  acc_t* c_state;        // [n, H] c_prev in, c out
  acc_t* gates;          // [n, 4H] i, f, g, o (nullptr: not kept)
  acc_t* cells;          // [n, H] (nullptr: not kept)
  scalar_t* h;           // [n, H] o * tanh(c)
};

template <typename scalar_t, typename acc_t>
__global__ void lstm_step_forward(const LstmStepForward<scalar_t, acc_t> p) {
  const int64_t H = p.hidden;
  for (int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; k < p.rows * H;
       k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = k / H, j = k % H;
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
}

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
};

template <typename scalar_t, typename acc_t>
__global__ void lstm_step_backward(const LstmStepBackward<scalar_t, acc_t> p) {
  const int64_t H = p.hidden;
  for (int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; k < p.rows * H;
       k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = k / H, j = k % H;
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
}

template <typename scalar_t, typename acc_t>
struct GruStepForward {
  int64_t rows, hidden;    // n, H
  const scalar_t* xg;      // [n, 3H] W_ih x + b_ih
  const scalar_t* hg;      // [n, 3H] W_hh h_prev
  const scalar_t* b_hh;    // [3H] added to hg (nullptr: no bias)
  const scalar_t* h_prev;  // [n, H]
  acc_t* gates;            // [n, 4H] r, z, n, h_n (nullptr: not kept)
  scalar_t* h;             // [n, H]
};

template <typename scalar_t, typename acc_t>
__global__ void gru_step_forward(const GruStepForward<scalar_t, acc_t> p) {
  const int64_t H = p.hidden;
  for (int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; k < p.rows * H;
       k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = k / H, j = k % H;
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
}

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
};

template <typename scalar_t, typename acc_t>
__global__ void gru_step_backward(const GruStepBackward<scalar_t, acc_t> p) {
  const int64_t H = p.hidden;
  for (int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; k < p.rows * H;
       k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = k / H, j = k % H;
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
}

template <typename Kernel, typename Params>
void launch_step(Kernel kernel, const Params& params) {
  kernel<<<blocks_for(params.rows * params.hidden), kThreads, 0,
           c10::cuda::getCurrentCUDAStream()>>>(params);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace
}  // namespace stseq
