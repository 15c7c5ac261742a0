// The persistent CUDA LSTM/GRU kernels (see rnn_cuda_launcher.cuh for the design): one kernel per
// direction of the pass runs every step, a thread-block cluster per tile of rows, W_hh resident
// in shared memory. Their plan and launch: rnn_cuda_persistent_plan.cuh.
#pragma once

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <cooperative_groups.h>

#include <cstdint>

#include "rnn/rnn.h"
#include "rnn/rnn_cuda_common.cuh"

namespace stseq {
namespace {

// Persistent kernels.

// R rows of one unit in a [unit][9R] shared-memory array: one 4-, 8- or 16-byte access. The
// row stride 9R (8R rows of the tile + R padding) keeps the lanes of a warp, which address
// consecutive units, on distinct banks.
template <int R>
struct Rows {
  float v[R];

  __device__ static Rows load(const float* p) {
    Rows rows;
    if constexpr (R == 4) {
      const float4 t = *reinterpret_cast<const float4*>(p);
      rows.v[0] = t.x, rows.v[1] = t.y, rows.v[2] = t.z, rows.v[3] = t.w;
    } else if constexpr (R == 2) {
      const float2 t = *reinterpret_cast<const float2*>(p);
      rows.v[0] = t.x, rows.v[1] = t.y;
    } else {
      rows.v[0] = p[0];
    }
    return rows;
  }

  __device__ void store(float* p) const {
    if constexpr (R == 4) {
      *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
    } else if constexpr (R == 2) {
      *reinterpret_cast<float2*>(p) = make_float2(v[0], v[1]);
    } else {
      p[0] = v[0];
    }
  }
};

constexpr int64_t align16(int64_t bytes) { return (bytes + 15) / 16 * 16; }

// Pointers to float32 data are at::opmath_type<scalar_t> (float32 for every dtype the persistent
// kernels are built for).
template <typename scalar_t>
struct PersistentForward {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* xg;       // [N, Q*H] W_ih x + b_ih (+ b_hh for the LSTM)
  const scalar_t* w_hh;     // [Q*H, H]
  const scalar_t* b_hh;     // [Q*H] GRU bias inside the reset gate's product (nullptr: none)
  const scalar_t* h0;       // [B, H]
  const int64_t* sizes;     // [S] active rows per step
  const int64_t* offsets;   // [S] first row of each step
  int64_t num_steps;        // S
  int64_t hidden_size;      // H
  int ranks;                // K CTAs per cluster
  acc_t* c_state;           // [B, H] LSTM: c0 in, c_n out (rows that have steps)
  scalar_t* hidden_out;     // [N, H]
  acc_t* gates;             // [N, 4H] (nullptr: not kept)
  acc_t* cells;             // [N, H] LSTM (nullptr: not kept)
};

template <bool kLstm>
constexpr int gate_count() { return kLstm ? 4 : 3; }

template <typename scalar_t, int R, bool kLstm>
int64_t forward_smem_bytes(int64_t hidden) {
  return align16(hidden * gate_count<kLstm>() * kUnits * sizeof(scalar_t)) +
         2 * hidden * 9 * R * static_cast<int64_t>(sizeof(float));
}

template <typename scalar_t, int R, bool kLstm>
__global__ void __launch_bounds__(kThreads, 1)
    persistent_forward(const PersistentForward<scalar_t> p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  namespace cg = cooperative_groups;
  constexpr int Q = gate_count<kLstm>();
  constexpr int kGateRows = Q * kUnits;  // W_hh rows of this CTA's units
  constexpr int kStride = 9 * R;
  const cg::cluster_group cluster = cg::this_cluster();
  const int rank = static_cast<int>(cluster.block_rank());
  const int64_t H = p.hidden_size;
  const int lane = threadIdx.x % 32;
  const int local = (threadIdx.x / 32) * R;  // this warp's first row in the tile
  const int64_t row0 = static_cast<int64_t>(blockIdx.x / p.ranks) * (kWarps * R);
  const int64_t j = static_cast<int64_t>(rank) * kUnits + lane;  // this lane's unit
  const bool unit_ok = j < H;

  extern __shared__ __align__(16) unsigned char smem[];
  scalar_t* w_s = reinterpret_cast<scalar_t*>(smem);  // [H][kGateRows]: W_hh[q*H + unit, k]
  float* h_s = reinterpret_cast<float*>(smem + align16(H * kGateRows * sizeof(scalar_t)));
  // h_s: [2][H][kStride], the tile's h (all units) of the current and the next step.

  for (int64_t idx = threadIdx.x; idx < kGateRows * H; idx += kThreads) {
    const int c = static_cast<int>(idx / H);
    const int64_t k = idx % H;  // consecutive threads read consecutive columns
    const int64_t unit = static_cast<int64_t>(rank) * kUnits + c % kUnits;
    w_s[k * kGateRows + c] = unit < H ? p.w_hh[((c / kUnits) * H + unit) * H + k] : scalar_t(0);
  }
  const int64_t rows_with_steps = p.sizes[0];
  for (int64_t idx = threadIdx.x; idx < kWarps * R * H; idx += kThreads) {
    const int b = static_cast<int>(idx / H);
    const int64_t k = idx % H, row = row0 + b;
    h_s[k * kStride + b] = row < rows_with_steps ? static_cast<float>(p.h0[row * H + k]) : 0.f;
  }
  float c[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int64_t row = row0 + local + r;
    c[r] = kLstm && unit_ok && row < rows_with_steps ? p.c_state[row * H + j] : 0.f;
  }
  cluster.sync();  // every CTA of the cluster is running and has its shared memory filled

  for (int64_t s = 0; s < p.num_steps; ++s) {
    const int64_t active = p.sizes[s];
    if (row0 >= active) break;  // the same decision in every CTA of the cluster
    const int64_t offset = p.offsets[s];
    const float* h_now = h_s + (s & 1) * H * kStride;
    float* h_next = h_s + ((s + 1) & 1) * H * kStride;
    float x[Q][R];    // input-side pre-activations
    float acc[Q][R];  // recurrent side: W_hh h_prev (+ b_hh)
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int64_t row = row0 + local + r;
      const bool live = unit_ok && row < active;
#pragma unroll
      for (int q = 0; q < Q; ++q) {
        x[q][r] = live ? static_cast<float>(p.xg[(offset + row) * Q * H + q * H + j]) : 0.f;
        acc[q][r] = unit_ok && p.b_hh != nullptr ? static_cast<float>(p.b_hh[q * H + j]) : 0.f;
      }
    }
#pragma unroll 4
    for (int64_t k = 0; k < H; ++k) {
      const Rows<R> h = Rows<R>::load(h_now + k * kStride + local);
      const scalar_t* w = w_s + k * kGateRows + lane;
#pragma unroll
      for (int q = 0; q < Q; ++q) {
        const float weight = static_cast<float>(w[q * kUnits]);
#pragma unroll
        for (int r = 0; r < R; ++r) acc[q][r] = fmaf(weight, h.v[r], acc[q][r]);
      }
    }
    Rows<R> h_new;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int64_t row = row0 + local + r;
      const bool live = unit_ok && row < active;
      const int64_t out = offset + row;
      float h_value = 0.f;
      if constexpr (kLstm) {
        const auto u = rnn::lstm_unit_forward<ScalarMath>(
            x[0][r] + acc[0][r], x[1][r] + acc[1][r], x[2][r] + acc[2][r], x[3][r] + acc[3][r],
            c[r]);
        if (live) {
          c[r] = u.c;
          h_value = u.h;
          if (p.gates != nullptr) {
            float* g = p.gates + out * 4 * H + j;
            g[0] = u.i, g[H] = u.f, g[2 * H] = u.g, g[3 * H] = u.o;
          }
          if (p.cells != nullptr) p.cells[out * H + j] = u.c;
        }
      } else {
        const float h_prev = unit_ok ? h_now[j * kStride + local + r] : 0.f;
        const auto u = rnn::gru_unit_forward<ScalarMath>(
            x[0][r], x[1][r], x[2][r], acc[0][r], acc[1][r], acc[2][r], h_prev);
        if (live) {
          h_value = u.h;
          if (p.gates != nullptr) {
            float* g = p.gates + out * 4 * H + j;
            g[0] = u.r, g[H] = u.z, g[2 * H] = u.n, g[3 * H] = u.h_n;
          }
        }
      }
      if (live) p.hidden_out[out * H + j] = static_cast<scalar_t>(h_value);
      h_new.v[r] = h_value;
    }
    if (unit_ok) {
      for (int m = 0; m < p.ranks; ++m) {
        h_new.store(cluster.map_shared_rank(h_next, m) + j * kStride + local);
      }
    }
    cluster.sync();  // h_next complete everywhere; h_now no longer read by anyone
  }
  if constexpr (kLstm) {
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int64_t row = row0 + local + r;
      if (unit_ok && row < rows_with_steps) p.c_state[row * H + j] = c[r];
    }
  }
#endif
}

template <typename scalar_t>
struct PersistentBackward {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* w_hh;     // [Q*H, H]
  const scalar_t* dy;       // [N, H] step order
  const acc_t* gates;       // [N, 4H] saved by the forward
  const acc_t* cells;       // [N, H] LSTM
  const acc_t* c0;          // [B, H] LSTM
  const scalar_t* hidden;   // [N, H] step order (GRU: h_prev)
  const scalar_t* h0;       // [B, H] GRU
  const int64_t* sizes;     // [S]
  const int64_t* offsets;   // [S]
  int64_t num_steps;        // S
  int64_t hidden_size;      // H
  int ranks;                // K
  scalar_t* dh;             // [B, H] dh_n in, dh0 out (rows that have steps)
  acc_t* dc;                // [B, H] LSTM: dc_n in, dc0 out
  scalar_t* dxg;            // [N, Q*H] input-side gate gradients (the LSTM's only ones)
  scalar_t* dhg;            // [N, 3H] GRU recurrent-side gate gradients
};

template <typename scalar_t, int R, bool kLstm>
int64_t backward_smem_bytes(int64_t hidden, int ranks) {
  const int64_t gate_rows = gate_count<kLstm>() * kUnits;
  return align16(gate_rows * ranks * kUnits * sizeof(scalar_t)) +
         (gate_rows + 2 * ranks * kUnits) * 9 * R * static_cast<int64_t>(sizeof(float));
}

template <typename scalar_t, int R, bool kLstm>
__global__ void __launch_bounds__(kThreads, 1)
    persistent_backward(const PersistentBackward<scalar_t> p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  namespace cg = cooperative_groups;
  constexpr int Q = gate_count<kLstm>();
  constexpr int kGateRows = Q * kUnits;
  constexpr int kStride = 9 * R;
  const cg::cluster_group cluster = cg::this_cluster();
  const int rank = static_cast<int>(cluster.block_rank());
  const int64_t H = p.hidden_size;
  const int64_t columns = static_cast<int64_t>(p.ranks) * kUnits;  // H rounded up to 32
  const int lane = threadIdx.x % 32;
  const int local = (threadIdx.x / 32) * R;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x / p.ranks) * (kWarps * R);
  const int64_t j = static_cast<int64_t>(rank) * kUnits + lane;
  const bool unit_ok = j < H;

  extern __shared__ __align__(16) unsigned char smem[];
  scalar_t* w_s = reinterpret_cast<scalar_t*>(smem);  // [kGateRows][columns]: W_hh rows
  float* dg_s = reinterpret_cast<float*>(
      smem + align16(kGateRows * columns * sizeof(scalar_t)));  // [kGateRows][kStride]
  float* red_s = dg_s + kGateRows * kStride;  // [2][K][kUnits][kStride] partial dh_prev
  const int64_t red_size = columns * kStride;

  for (int64_t idx = threadIdx.x; idx < kGateRows * columns; idx += kThreads) {
    const int c = static_cast<int>(idx / columns);
    const int64_t col = idx % columns;
    const int64_t unit = static_cast<int64_t>(rank) * kUnits + c % kUnits;
    w_s[idx] = unit < H && col < H ? p.w_hh[((c / kUnits) * H + unit) * H + col] : scalar_t(0);
  }
  const int64_t rows_with_steps = p.sizes[0];
  float dc[R], carry[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int64_t row = row0 + local + r;
    dc[r] = kLstm && unit_ok && row < rows_with_steps ? p.dc[row * H + j] : 0.f;
    carry[r] = 0.f;
  }
  cluster.sync();

  for (int64_t s = p.num_steps - 1; s >= 0; --s) {
    const int64_t active = p.sizes[s];
    if (row0 >= active) continue;  // this tile's rows start later (in reverse); same everywhere
    const int64_t next_active = s + 1 < p.num_steps ? p.sizes[s + 1] : 0;
    const int64_t offset = p.offsets[s];
    const int64_t prev_offset = s > 0 ? p.offsets[s - 1] : 0;
    const float* red_in = red_s + ((s + 1) & 1) * red_size;  // written at step s + 1
    float* red_out = red_s + (s & 1) * red_size;
    float through_w[R] = {};  // dh from step s + 1 through W_hh, summed over the ranks
    if (unit_ok && row0 < next_active) {
      for (int m = 0; m < p.ranks; ++m) {
        const Rows<R> part = Rows<R>::load(red_in + (m * kUnits + lane) * kStride + local);
#pragma unroll
        for (int r = 0; r < R; ++r) through_w[r] += part.v[r];
      }
    }
    float dgate[Q][R];  // recurrent-side gate gradients (0 for rows not running)
#pragma unroll
    for (int r = 0; r < R; ++r) {
#pragma unroll
      for (int q = 0; q < Q; ++q) dgate[q][r] = 0.f;
      const int64_t row = row0 + local + r;
      if (!unit_ok || row >= active) continue;
      const int64_t at = offset + row;
      // A row's last step (its first here) starts from dh_n.
      const float dh = (row < next_active ? through_w[r] : static_cast<float>(p.dh[row * H + j])) +
                       carry[r] + static_cast<float>(p.dy[at * H + j]);
      const float* g = p.gates + at * 4 * H + j;
      if constexpr (kLstm) {
        const float c_prev = s > 0 ? p.cells[(prev_offset + row) * H + j] : p.c0[row * H + j];
        const auto d = rnn::lstm_unit_backward<ScalarMath>(
            g[0], g[H], g[2 * H], g[3 * H], p.cells[at * H + j], c_prev, dh, dc[r]);
        dc[r] = d.dc_prev;
        dgate[0][r] = d.d_i, dgate[1][r] = d.d_f, dgate[2][r] = d.d_g, dgate[3][r] = d.d_o;
        scalar_t* out = p.dxg + at * 4 * H + j;
#pragma unroll
        for (int q = 0; q < Q; ++q) out[q * H] = static_cast<scalar_t>(dgate[q][r]);
      } else {
        const float h_prev = static_cast<float>(s > 0 ? p.hidden[(prev_offset + row) * H + j]
                                                      : p.h0[row * H + j]);
        const auto d =
            rnn::gru_unit_backward<ScalarMath>(g[0], g[H], g[2 * H], g[3 * H], h_prev, dh);
        carry[r] = d.dh_prev_direct;
        dgate[0][r] = d.d_r, dgate[1][r] = d.d_z, dgate[2][r] = d.d_hn;
        scalar_t* dxg = p.dxg + at * 3 * H + j;
        scalar_t* dhg = p.dhg + at * 3 * H + j;
        dxg[0] = dhg[0] = static_cast<scalar_t>(d.d_r);
        dxg[H] = dhg[H] = static_cast<scalar_t>(d.d_z);
        dxg[2 * H] = static_cast<scalar_t>(d.d_n);
        dhg[2 * H] = static_cast<scalar_t>(d.d_hn);
      }
    }
#pragma unroll
    for (int q = 0; q < Q; ++q) {
      Rows<R> rows;
#pragma unroll
      for (int r = 0; r < R; ++r) rows.v[r] = dgate[q][r];
      rows.store(dg_s + (q * kUnits + lane) * kStride + local);
    }
    __syncthreads();
    // Partial dh_prev over this CTA's gate rows, columns of CTA m, sent to CTA m's slot [rank].
    for (int m = 0; m < p.ranks; ++m) {
      Rows<R> part = {};
      const scalar_t* w = w_s + m * kUnits + lane;
#pragma unroll 4
      for (int g = 0; g < kGateRows; ++g) {
        const float weight = static_cast<float>(w[g * columns]);
        const Rows<R> d = Rows<R>::load(dg_s + g * kStride + local);
#pragma unroll
        for (int r = 0; r < R; ++r) part.v[r] = fmaf(weight, d.v[r], part.v[r]);
      }
      part.store(cluster.map_shared_rank(red_out, m) + (rank * kUnits + lane) * kStride + local);
    }
    cluster.sync();
  }
  // Step 0's partials are the gradient reaching h0 through W_hh; add the direct (GRU) part.
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int64_t row = row0 + local + r;
    if (!unit_ok || row >= rows_with_steps) continue;
    float sum = carry[r];
    for (int m = 0; m < p.ranks; ++m) sum += red_s[(m * kUnits + lane) * kStride + local + r];
    p.dh[row * H + j] = static_cast<scalar_t>(sum);
    if constexpr (kLstm) p.dc[row * H + j] = dc[r];
  }
#endif
}

}  // namespace
}  // namespace stseq
