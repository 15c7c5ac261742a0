// CUDA time loops of the LSTM/GRU layer ops. Layout, semantics and the device-independent plan
// (step order, input projection, final states, weight-gradient GEMMs) are shared with the CPU
// (rnn_args.h, rnn_driver.h); the per-unit gate math is rnn.h's. Half types accumulate in float32
// and keep the cell state, the recurrent gradients and the saved activations in float32.
//
// Stepwise loop (any hidden size, projection, every dtype). Forward, per step: one cuBLAS GEMM
// (at::mm) hg = h_prev W_hh^T over the step's active rows only (rows are sorted by length, so
// finished rows are a suffix that is skipped), then one fused pointwise kernel, a thread per
// (row, unit), that reads xg + hg and the cell state and writes h, c and the saved activations.
// Backward, per step in reverse: one pointwise kernel writes the gate gradients of the active
// rows, then one GEMM dh_prev = dgates W_hh.
//
// Persistent loop (hidden size <= 256, no projection, float32/float16/bfloat16, sm_90): one
// kernel runs every step. The hidden units are split over a thread-block cluster of
// K = ceil(H / 32) CTAs, 32 units per CTA (one per lane), and the cluster owns a tile of 8 * R
// batch rows (R per warp) for the whole sequence, so the only synchronisation is one cluster
// barrier per step. Each CTA keeps, in shared memory and across all steps, the slice of W_hh
// that its units need.
//  - Forward step: lane u of warp w accumulates, for its unit j = 32 * rank + u, all Q gates of
//    its R rows over the full h of the tile (float32 [H][9R] in shared memory, every CTA holds a
//    copy), applies the gate math with c in registers, writes h, c and the activations to
//    global memory, and stores its new h into every CTA's next h buffer through distributed
//    shared memory (the h buffers are double-buffered, hence one barrier per step).
//  - Backward step: each thread turns the recurrent gradient of its (row, unit) into gate
//    gradients (written to global memory for the weight GEMMs, and to shared memory); each CTA
//    then multiplies its gate gradients by its W_hh rows, giving partial dh_prev for all H
//    columns, and sends the 32 columns of CTA m into slot [its rank] of CTA m's (double-
//    buffered) reduction buffer. After the barrier, CTA m adds its K slots in rank order: a
//    deterministic reduction without atomics.
// Rows that finished (variable lengths) stop doing work but stay in the tile; a tile whose rows
// have all finished stops (forward) or has not started yet (backward), for the whole cluster
// at once. "auto" uses the persistent loop when its plan fits and the clusters needed run in at
// most kMaxAutoWaves waves; otherwise the stepwise loop.
#include "rnn/rnn_cuda.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cooperative_groups.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <type_traits>

#include "rnn/rnn.h"
#include "rnn/rnn_args.h"
#include "rnn/rnn_driver.h"

namespace stseq {
namespace {

using rnn::Algorithm;
using rnn::CellKind;
using rnn::LayerShape;
using rnn::ScalarActivations;
using rnn::Steps;
using rnn::StepOrder;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int64_t kMaxBlocks = 1 << 16;
constexpr int kUnits = 32;         // hidden units per CTA of a persistent cluster (one per lane)
constexpr int kMaxRanks = 8;       // portable cluster size: H <= 8 * 32
constexpr int64_t kMaxAutoWaves = 2;

unsigned blocks_for(int64_t work) {
  return static_cast<unsigned>(std::max<int64_t>(1, std::min((work + kThreads - 1) / kThreads,
                                                             kMaxBlocks)));
}

// ---------------------------------------------------------------------------------------------
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
        rnn::lstm_unit_forward<ScalarActivations>(pre(0), pre(1), pre(2), pre(3), p.c_state[k]);
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
    const auto d = rnn::lstm_unit_backward<ScalarActivations>(g[0], g[H], g[2 * H], g[3 * H], c,
                                                              p.c_prev[k], dh, p.dc[k]);
    scalar_t* dg = p.dgates + b * 4 * H + j;
    dg[0] = static_cast<scalar_t>(d.d_i);
    dg[H] = static_cast<scalar_t>(d.d_f);
    dg[2 * H] = static_cast<scalar_t>(d.d_g);
    dg[3 * H] = static_cast<scalar_t>(d.d_o);
    p.dc[k] = d.dc_prev;
    if (p.r != nullptr) p.r[k] = static_cast<scalar_t>(g[3 * H] * rnn::tanh_of(c));
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
    const auto u = rnn::gru_unit_forward<ScalarActivations>(
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
    const auto d = rnn::gru_unit_backward<ScalarActivations>(
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

// ---------------------------------------------------------------------------------------------
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
        const auto u = rnn::lstm_unit_forward<ScalarActivations>(
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
        const auto u = rnn::gru_unit_forward<ScalarActivations>(
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
        const auto d = rnn::lstm_unit_backward<ScalarActivations>(
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
            rnn::gru_unit_backward<ScalarActivations>(g[0], g[H], g[2 * H], g[3 * H], h_prev, dh);
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

// How the persistent kernels cut a batch: R rows per warp, K = ranks CTAs per cluster, tiles.
struct PersistentPlan {
  int rows_per_thread;
  int ranks;
  int64_t tiles;
};

int device_attribute(cudaDeviceAttr attribute, int device) {
  int value = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&value, attribute, device));
  return value;
}

// The persistent plan for this call, or nullopt when the persistent kernels cannot run it. R is
// the smallest that still fits every cluster in one wave (fewer rows per CTA: shorter steps), or
// 4 when none does (more rows per CTA: fewer waves).
std::optional<PersistentPlan> persistent_plan(const LayerShape& shape, const Steps& steps,
                                              at::ScalarType type, const at::Device& device) {
  if (shape.has_proj || shape.hidden > kMaxRanks * kUnits || type == at::kDouble ||
      steps.active_rows() == 0 || steps.num_steps() == 0) {
    return std::nullopt;
  }
  if (device_attribute(cudaDevAttrComputeCapabilityMajor, device.index()) < 9) return std::nullopt;
  const int sms = device_attribute(cudaDevAttrMultiProcessorCount, device.index());
  const int ranks = static_cast<int>((shape.hidden + kUnits - 1) / kUnits);
  PersistentPlan plan{4, ranks, 0};
  for (int r : {1, 2, 4}) {
    const int64_t tiles = (steps.active_rows() + kWarps * r - 1) / (kWarps * r);
    plan = {r, ranks, tiles};
    if (tiles * ranks <= sms) break;
  }
  return plan;
}

// Launches `kernel` as plan.tiles clusters of plan.ranks CTAs; false (nothing launched) when it
// cannot run here, or when "auto" would need more than kMaxAutoWaves waves of clusters.
template <typename Params>
bool launch_persistent(void (*kernel)(Params), const Params& params, const PersistentPlan& plan,
                       int64_t smem_bytes, Algorithm algorithm, int device) {
  if (smem_bytes > device_attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin, device)) return false;
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      static_cast<int>(smem_bytes)));
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(static_cast<unsigned>(plan.tiles * plan.ranks));
  config.blockDim = dim3(kThreads);
  config.dynamicSmemBytes = static_cast<size_t>(smem_bytes);
  config.stream = c10::cuda::getCurrentCUDAStream();
  cudaLaunchAttribute attribute[1];
  attribute[0].id = cudaLaunchAttributeClusterDimension;
  attribute[0].val.clusterDim.x = static_cast<unsigned>(plan.ranks);
  attribute[0].val.clusterDim.y = 1;
  attribute[0].val.clusterDim.z = 1;
  config.attrs = attribute;
  config.numAttrs = 1;
  int clusters = 0;
  C10_CUDA_CHECK(cudaOccupancyMaxActiveClusters(&clusters, kernel, &config));
  if (clusters < 1) return false;
  if (algorithm == Algorithm::kAuto && (plan.tiles + clusters - 1) / clusters > kMaxAutoWaves) {
    return false;
  }
  C10_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, params));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return true;
}

// Steps' sizes and offsets as int64 device tensors for the persistent kernels.
std::pair<at::Tensor, at::Tensor> device_steps(const Steps& steps, const at::Device& device) {
  const auto options = at::TensorOptions().dtype(at::kLong);
  return {at::tensor(steps.sizes, options).to(device),
          at::tensor(steps.offsets, options).to(device)};
}

// Fills the step tables of `params` and runs a persistent kernel through
// `launch(params, plan, rows_per_thread_tag)` when the plan allows; false (nothing launched)
// means "use the stepwise path".
template <typename scalar_t, typename Params, typename Launch>
bool run_persistent(Params params, const LayerShape& shape, const Steps& steps,
                    Algorithm algorithm, const at::Device& device, const Launch& launch) {
  if constexpr (std::is_same_v<scalar_t, double>) {
    return false;
  } else {
    if (algorithm == Algorithm::kStepwise) return false;
    const auto plan = persistent_plan(shape, steps, c10::CppTypeToScalarType<scalar_t>::value,
                                      device);
    if (!plan.has_value()) return false;
    const auto [sizes, offsets] = device_steps(steps, device);
    params.sizes = sizes.data_ptr<int64_t>();
    params.offsets = offsets.data_ptr<int64_t>();
    params.num_steps = steps.num_steps();
    params.hidden_size = shape.hidden;
    params.ranks = plan->ranks;
    switch (plan->rows_per_thread) {
      case 1: return launch(params, *plan, std::integral_constant<int, 1>{});
      case 2: return launch(params, *plan, std::integral_constant<int, 2>{});
      default: return launch(params, *plan, std::integral_constant<int, 4>{});
    }
  }
}

template <typename scalar_t, bool kLstm>
bool run_persistent_forward(const PersistentForward<scalar_t>& params, const LayerShape& shape,
                            const Steps& steps, Algorithm algorithm, const at::Device& device) {
  return run_persistent<scalar_t>(
      params, shape, steps, algorithm, device,
      [&](const auto& filled, const PersistentPlan& plan, auto rows_tag) {
        constexpr int R = decltype(rows_tag)::value;
        return launch_persistent(&persistent_forward<scalar_t, R, kLstm>, filled, plan,
                                 forward_smem_bytes<scalar_t, R, kLstm>(shape.hidden), algorithm,
                                 device.index());
      });
}

template <typename scalar_t, bool kLstm>
bool run_persistent_backward(const PersistentBackward<scalar_t>& params, const LayerShape& shape,
                             const Steps& steps, Algorithm algorithm, const at::Device& device) {
  return run_persistent<scalar_t>(
      params, shape, steps, algorithm, device,
      [&](const auto& filled, const PersistentPlan& plan, auto rows_tag) {
        constexpr int R = decltype(rows_tag)::value;
        return launch_persistent(&persistent_backward<scalar_t, R, kLstm>, filled, plan,
                                 backward_smem_bytes<scalar_t, R, kLstm>(shape.hidden, plan.ranks),
                                 algorithm, device.index());
      });
}

// ---------------------------------------------------------------------------------------------
// Host helpers.

void check_cuda_call(const at::Tensor& input, CellKind kind) {
  TORCH_CHECK_VALUE(input.is_cuda(), "input must be a CUDA tensor, got ", input.device());
  const at::ScalarType type = input.scalar_type();
  TORCH_CHECK_VALUE(type == at::kFloat || type == at::kDouble || type == at::kHalf ||
                        type == at::kBFloat16,
                    rnn::cell_name(kind), " layers on CUDA support float32, float64, float16 and "
                    "bfloat16, got ", type);
}

at::ScalarType activation_type(const at::Tensor& input) {
  return input.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

void require_ran(bool ran, Algorithm algorithm, CellKind kind) {
  TORCH_CHECK_VALUE(ran || algorithm != Algorithm::kPersistent, "algorithm='persistent' cannot "
                    "run this ", rnn::cell_name(kind), " layer here: it needs an sm_90 GPU, "
                    "hidden_size <= ", kMaxRanks * kUnits, ", no projection, float32/float16/"
                    "bfloat16 input and the shared memory it asks for; use 'auto' or 'stepwise'");
}

// h_prev of step s for its n active rows: h0's first rows, or the previous step's first rows.
at::Tensor previous_step(const Steps& steps, const at::Tensor& first, const at::Tensor& states,
                         int64_t s, int64_t n) {
  return s == 0 ? first.narrow(0, 0, n) : states.narrow(0, steps.offsets[s - 1], n);
}

template <typename T>
T* data_or_null(const at::Tensor& t) {
  return t.numel() > 0 ? t.data_ptr<T>() : nullptr;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_layer_cuda(
    const at::Tensor& input, const at::Tensor& h0, const at::Tensor& c0,
    const at::Tensor& weight_ih, const at::Tensor& weight_hh,
    const std::optional<at::Tensor>& bias_ih, const std::optional<at::Tensor>& bias_hh,
    const std::optional<at::Tensor>& weight_hr, const at::Tensor& batch_sizes, bool padded,
    bool reverse, bool keep_activations, std::string_view algorithm_name) {
  const LayerShape shape = rnn::check_layer(CellKind::kLstm, input, h0, &c0, weight_ih, weight_hh,
                                            bias_ih, bias_hh, weight_hr);
  check_cuda_call(input, CellKind::kLstm);
  const Algorithm algorithm = rnn::parse_algorithm(algorithm_name);
  const Steps steps = rnn::make_steps(batch_sizes, padded, shape.batch, shape.rows);
  const c10::cuda::CUDAGuard device_guard(input.device());
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // a kernel, not a graph
  const int64_t H = shape.hidden, P = shape.proj, G = shape.gates;
  const StepOrder order(steps, reverse, input.device());
  const std::optional<at::Tensor> bias =
      bias_ih.has_value() ? std::optional<at::Tensor>(*bias_ih + *bias_hh) : std::nullopt;
  const at::Tensor xg = rnn::input_projection(order(input), weight_ih, bias);  // [N, 4H]
  const at::TensorOptions options = input.options();
  const at::TensorOptions saved_options = options.dtype(activation_type(input));
  const at::Tensor hidden = rnn::step_buffer(steps, P, options);  // [N, P]
  const at::Tensor gates = keep_activations ? rnn::step_buffer(steps, G, saved_options)
                                            : at::empty({0}, saved_options);  // [N, 4H]
  const at::Tensor cells = keep_activations ? rnn::step_buffer(steps, H, saved_options)
                                            : at::empty({0}, saved_options);  // [N, H]
  const at::Tensor c_state = c0.to(activation_type(input)).clone(at::MemoryFormat::Contiguous);
  const at::Tensor h_first = h0.contiguous();
  const at::Tensor w_hh = weight_hh.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(),
                                  "lstm_layer_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    PersistentForward<scalar_t> params{};
    params.xg = xg.data_ptr<scalar_t>();
    params.w_hh = w_hh.data_ptr<scalar_t>();
    params.h0 = h_first.data_ptr<scalar_t>();
    params.c_state = c_state.data_ptr<acc_t>();
    params.hidden_out = hidden.data_ptr<scalar_t>();
    params.gates = data_or_null<acc_t>(gates);
    params.cells = data_or_null<acc_t>(cells);
    const bool ran = run_persistent_forward<scalar_t, true>(params, shape, steps, algorithm,
                                                            input.device());
    if (ran) return;
    require_ran(ran, algorithm, CellKind::kLstm);
    const at::Tensor hg = at::empty({shape.batch, G}, options);  // [B, 4H]
    const at::Tensor r = shape.has_proj ? at::empty({shape.batch, H}, options) : at::Tensor();
    const at::Tensor w_hh_t = weight_hh.t();
    for (int64_t s = 0; s < steps.num_steps(); ++s) {
      const int64_t n = steps.sizes[s];
      if (n == 0) break;
      const int64_t row = steps.offsets[s];
      rnn::mm_into(hg.narrow(0, 0, n), previous_step(steps, h_first, hidden, s, n), w_hh_t);
      launch_step(lstm_step_forward<scalar_t, acc_t>,
                  LstmStepForward<scalar_t, acc_t>{
                      n, H, xg.data_ptr<scalar_t>() + row * G, hg.data_ptr<scalar_t>(),
                      c_state.data_ptr<acc_t>(),
                      keep_activations ? gates.data_ptr<acc_t>() + row * G : nullptr,
                      keep_activations ? cells.data_ptr<acc_t>() + row * H : nullptr,
                      shape.has_proj ? r.data_ptr<scalar_t>()
                                     : hidden.data_ptr<scalar_t>() + row * P});
      if (shape.has_proj) {
        rnn::mm_into(hidden.narrow(0, row, n), r.narrow(0, 0, n), weight_hr->t());
      }
    }
  });
  return {order(hidden), rnn::final_hidden(steps, hidden, h0), c_state.to(input.scalar_type()),
          gates, cells};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
lstm_layer_backward_cuda(const std::optional<at::Tensor>& grad_output,
                         const std::optional<at::Tensor>& grad_h_n,
                         const std::optional<at::Tensor>& grad_c_n, const at::Tensor& input,
                         const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& weight_ih,
                         const at::Tensor& weight_hh, const std::optional<at::Tensor>& weight_hr,
                         const at::Tensor& output, const at::Tensor& gates,
                         const at::Tensor& cells, const at::Tensor& batch_sizes, bool padded,
                         bool reverse, bool has_bias, std::string_view algorithm_name) {
  const LayerShape shape = rnn::check_layer(CellKind::kLstm, input, h0, &c0, weight_ih, weight_hh,
                                            std::nullopt, std::nullopt, weight_hr);
  check_cuda_call(input, CellKind::kLstm);
  const Algorithm algorithm = rnn::parse_algorithm(algorithm_name);
  rnn::check_saved(shape, input, output, gates, &cells, activation_type(input));
  const Steps steps = rnn::make_steps(batch_sizes, padded, shape.batch, shape.rows);
  const c10::cuda::CUDAGuard device_guard(input.device());
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  const int64_t H = shape.hidden, P = shape.proj, G = shape.gates;
  const StepOrder order(steps, reverse, input.device());
  const at::TensorOptions options = input.options();
  const at::Tensor dy = order(rnn::grad_or_zeros(grad_output, {shape.rows, P}, input,
                                                 "grad_output"));                 // [N, P]
  const at::Tensor dh = rnn::grad_or_zeros(grad_h_n, {shape.batch, P}, input, "grad_h_n")
                            .clone(at::MemoryFormat::Contiguous);  // [B, P]
  const at::Tensor dc = rnn::grad_or_zeros(grad_c_n, {shape.batch, H}, input, "grad_c_n")
                            .to(activation_type(input))
                            .clone(at::MemoryFormat::Contiguous);  // [B, H]
  const at::Tensor hidden = order(output);                          // [N, P]
  const at::Tensor saved_gates = gates.contiguous(), saved_cells = cells.contiguous();
  const at::Tensor c_first = c0.to(activation_type(input)).contiguous();  // [B, H]
  const at::Tensor dgates = rnn::step_buffer(steps, G, options);    // [N, 4H]
  const at::Tensor dh_total = shape.has_proj ? rnn::step_buffer(steps, P, options) : at::Tensor();
  const at::Tensor r_all = shape.has_proj ? rnn::step_buffer(steps, H, options) : at::Tensor();
  const at::Tensor w_hh = weight_hh.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(),
                                  "lstm_layer_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    PersistentBackward<scalar_t> params{};
    params.w_hh = w_hh.data_ptr<scalar_t>();
    params.dy = dy.data_ptr<scalar_t>();
    params.gates = saved_gates.data_ptr<acc_t>();
    params.cells = saved_cells.data_ptr<acc_t>();
    params.c0 = c_first.data_ptr<acc_t>();
    params.dh = dh.data_ptr<scalar_t>();
    params.dc = dc.data_ptr<acc_t>();
    params.dxg = dgates.data_ptr<scalar_t>();
    const bool ran = run_persistent_backward<scalar_t, true>(params, shape, steps, algorithm,
                                                             input.device());
    if (ran) return;
    require_ran(ran, algorithm, CellKind::kLstm);
    const at::Tensor dr = shape.has_proj ? at::empty({shape.batch, H}, options) : at::Tensor();
    for (int64_t s = steps.num_steps() - 1; s >= 0; --s) {
      const int64_t n = steps.sizes[s];
      if (n == 0) continue;
      const int64_t row = steps.offsets[s];
      LstmStepBackward<scalar_t, acc_t> rows{
          n, H, dh.data_ptr<scalar_t>(), dy.data_ptr<scalar_t>() + row * P,
          saved_gates.data_ptr<acc_t>() + row * G, saved_cells.data_ptr<acc_t>() + row * H,
          previous_step(steps, c_first, saved_cells, s, n).data_ptr<acc_t>(),
          dc.data_ptr<acc_t>(), dgates.data_ptr<scalar_t>() + row * G, nullptr};
      if (shape.has_proj) {
        const at::Tensor dh_rows = dh_total.narrow(0, row, n);
        rnn::add_into(dh_rows, dh.narrow(0, 0, n), dy.narrow(0, row, n));
        rnn::mm_into(dr.narrow(0, 0, n), dh_rows, *weight_hr);
        rows.dh = dr.data_ptr<scalar_t>();
        rows.dy = nullptr;
        rows.r = r_all.data_ptr<scalar_t>() + row * H;
      }
      launch_step(lstm_step_backward<scalar_t, acc_t>, rows);
      rnn::mm_into(dh.narrow(0, 0, n), dgates.narrow(0, row, n), weight_hh);
    }
  });
  const at::Tensor x = order(input);
  auto [grad_input, grad_weight_ih] = rnn::input_projection_grads(order, dgates, x, weight_ih);
  return {grad_input,
          dh,
          dc.to(input.scalar_type()),
          grad_weight_ih,
          rnn::recurrent_weight_grad(steps, dgates, hidden, h0.contiguous()),
          rnn::bias_grad(dgates, has_bias),
          shape.has_proj ? at::mm(dh_total.t(), r_all) : at::empty({0}, options)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> gru_layer_cuda(
    const at::Tensor& input, const at::Tensor& h0, const at::Tensor& weight_ih,
    const at::Tensor& weight_hh, const std::optional<at::Tensor>& bias_ih,
    const std::optional<at::Tensor>& bias_hh, const at::Tensor& batch_sizes, bool padded,
    bool reverse, bool keep_activations, std::string_view algorithm_name) {
  const LayerShape shape = rnn::check_layer(CellKind::kGru, input, h0, nullptr, weight_ih,
                                            weight_hh, bias_ih, bias_hh, std::nullopt);
  check_cuda_call(input, CellKind::kGru);
  const Algorithm algorithm = rnn::parse_algorithm(algorithm_name);
  const Steps steps = rnn::make_steps(batch_sizes, padded, shape.batch, shape.rows);
  const c10::cuda::CUDAGuard device_guard(input.device());
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  const int64_t H = shape.hidden, G = shape.gates;
  const StepOrder order(steps, reverse, input.device());
  const at::Tensor xg = rnn::input_projection(order(input), weight_ih, bias_ih);  // [N, 3H]
  const at::TensorOptions options = input.options();
  const at::TensorOptions saved_options = options.dtype(activation_type(input));
  const at::Tensor hidden = rnn::step_buffer(steps, H, options);  // [N, H]
  const at::Tensor gates = keep_activations ? rnn::step_buffer(steps, 4 * H, saved_options)
                                            : at::empty({0}, saved_options);  // [N, 4H]
  const at::Tensor h_first = h0.contiguous();
  const at::Tensor w_hh = weight_hh.contiguous();
  const at::Tensor b_hh = bias_hh.has_value() ? bias_hh->contiguous() : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(),
                                  "gru_layer_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    PersistentForward<scalar_t> params{};
    params.xg = xg.data_ptr<scalar_t>();
    params.w_hh = w_hh.data_ptr<scalar_t>();
    params.b_hh = b_hh.defined() ? b_hh.data_ptr<scalar_t>() : nullptr;
    params.h0 = h_first.data_ptr<scalar_t>();
    params.hidden_out = hidden.data_ptr<scalar_t>();
    params.gates = data_or_null<acc_t>(gates);
    const bool ran = run_persistent_forward<scalar_t, false>(params, shape, steps, algorithm,
                                                             input.device());
    if (ran) return;
    require_ran(ran, algorithm, CellKind::kGru);
    const at::Tensor hg = at::empty({shape.batch, G}, options);  // [B, 3H]
    const at::Tensor w_hh_t = weight_hh.t();
    for (int64_t s = 0; s < steps.num_steps(); ++s) {
      const int64_t n = steps.sizes[s];
      if (n == 0) break;
      const int64_t row = steps.offsets[s];
      const at::Tensor h_prev = previous_step(steps, h_first, hidden, s, n);
      rnn::mm_into(hg.narrow(0, 0, n), h_prev, w_hh_t);
      launch_step(gru_step_forward<scalar_t, acc_t>,
                  GruStepForward<scalar_t, acc_t>{
                      n, H, xg.data_ptr<scalar_t>() + row * G, hg.data_ptr<scalar_t>(),
                      params.b_hh, h_prev.data_ptr<scalar_t>(),
                      keep_activations ? gates.data_ptr<acc_t>() + row * 4 * H : nullptr,
                      hidden.data_ptr<scalar_t>() + row * H});
    }
  });
  return {order(hidden), rnn::final_hidden(steps, hidden, h0), gates};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
gru_layer_backward_cuda(const std::optional<at::Tensor>& grad_output,
                        const std::optional<at::Tensor>& grad_h_n, const at::Tensor& input,
                        const at::Tensor& h0, const at::Tensor& weight_ih,
                        const at::Tensor& weight_hh, const at::Tensor& output,
                        const at::Tensor& gates, const at::Tensor& batch_sizes, bool padded,
                        bool reverse, bool has_bias, std::string_view algorithm_name) {
  const LayerShape shape = rnn::check_layer(CellKind::kGru, input, h0, nullptr, weight_ih,
                                            weight_hh, std::nullopt, std::nullopt, std::nullopt);
  check_cuda_call(input, CellKind::kGru);
  const Algorithm algorithm = rnn::parse_algorithm(algorithm_name);
  rnn::check_saved(shape, input, output, gates, nullptr, activation_type(input));
  const Steps steps = rnn::make_steps(batch_sizes, padded, shape.batch, shape.rows);
  const c10::cuda::CUDAGuard device_guard(input.device());
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  const int64_t H = shape.hidden, G = shape.gates;
  const StepOrder order(steps, reverse, input.device());
  const at::TensorOptions options = input.options();
  const at::Tensor dy = order(rnn::grad_or_zeros(grad_output, {shape.rows, H}, input,
                                                 "grad_output"));  // [N, H]
  const at::Tensor dh = rnn::grad_or_zeros(grad_h_n, {shape.batch, H}, input, "grad_h_n")
                            .clone(at::MemoryFormat::Contiguous);  // [B, H]
  const at::Tensor carry = at::zeros({shape.batch, H}, options.dtype(activation_type(input)));
  const at::Tensor hidden = order(output);  // [N, H]
  const at::Tensor saved_gates = gates.contiguous();
  const at::Tensor h_first = h0.contiguous();
  const at::Tensor dxg = rnn::step_buffer(steps, G, options);  // [N, 3H]
  const at::Tensor dhg = rnn::step_buffer(steps, G, options);  // [N, 3H]
  const at::Tensor w_hh = weight_hh.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(),
                                  "gru_layer_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    PersistentBackward<scalar_t> params{};
    params.w_hh = w_hh.data_ptr<scalar_t>();
    params.dy = dy.data_ptr<scalar_t>();
    params.gates = saved_gates.data_ptr<acc_t>();
    params.hidden = hidden.data_ptr<scalar_t>();
    params.h0 = h_first.data_ptr<scalar_t>();
    params.dh = dh.data_ptr<scalar_t>();
    params.dxg = dxg.data_ptr<scalar_t>();
    params.dhg = dhg.data_ptr<scalar_t>();
    // The persistent kernel adds the direct part to dh itself (carry stays zero).
    const bool ran = run_persistent_backward<scalar_t, false>(params, shape, steps, algorithm,
                                                              input.device());
    if (ran) return;
    require_ran(ran, algorithm, CellKind::kGru);
    for (int64_t s = steps.num_steps() - 1; s >= 0; --s) {
      const int64_t n = steps.sizes[s];
      if (n == 0) continue;
      const int64_t row = steps.offsets[s];
      launch_step(gru_step_backward<scalar_t, acc_t>,
                  GruStepBackward<scalar_t, acc_t>{
                      n, H, dh.data_ptr<scalar_t>(), carry.data_ptr<acc_t>(),
                      dy.data_ptr<scalar_t>() + row * H,
                      saved_gates.data_ptr<acc_t>() + row * 4 * H,
                      previous_step(steps, h_first, hidden, s, n).data_ptr<scalar_t>(),
                      dxg.data_ptr<scalar_t>() + row * G, dhg.data_ptr<scalar_t>() + row * G});
      rnn::mm_into(dh.narrow(0, 0, n), dhg.narrow(0, row, n), weight_hh);
    }
  });
  const at::Tensor x = order(input);
  auto [grad_input, grad_weight_ih] = rnn::input_projection_grads(order, dxg, x, weight_ih);
  return {grad_input,
          (dh.to(carry.scalar_type()) + carry).to(input.scalar_type()),
          grad_weight_ih,
          rnn::recurrent_weight_grad(steps, dhg, hidden, h_first),
          rnn::bias_grad(dxg, has_bias),
          rnn::bias_grad(dhg, has_bias)};
}

}  // namespace stseq

TORCH_LIBRARY_IMPL(stseq, CUDA, m) {
  m.impl("lstm_layer", &stseq::lstm_layer_cuda);
  m.impl("lstm_layer_backward", &stseq::lstm_layer_backward_cuda);
  m.impl("gru_layer", &stseq::gru_layer_cuda);
  m.impl("gru_layer_backward", &stseq::gru_layer_backward_cuda);
}
