// The CPU time loops' building blocks for the LSTM/GRU layer ops (rnn_cpu_launcher.h, its only
// includer): the widest pointwise kernels this build runs, the fewest rows of a tile (tiles:
// common/cpu_tiles.h), weight packing for the recurrent product, the product itself, and the
// rows-per-step cut-off for the LSTM's up-front input projection.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Version.h>

#include <algorithm>
#include <initializer_list>
#include <string>

#include "common/cpu_tiles.h"
#include "rnn/rnn_args.h"
#include "rnn/rnn_cpu_kernels.h"

namespace stseq {
namespace rnn {
namespace {

// The kernels of the widest instruction set this build has and ATen runs here (which honours
// ATEN_CPU_CAPABILITY=default / avx2): AVX-512, AVX2, else the baseline ones.
template <typename scalar_t>
CpuPointwise<scalar_t> best_kernels() {
  const std::string capability = at::get_cpu_capability();
#if defined(STSEQ_CPU_AVX512)
  if (capability == "AVX512") return cpu_avx512::pointwise_kernels<scalar_t>();
#endif
#if defined(STSEQ_CPU_AVX2)
  if (capability == "AVX2" || capability == "AVX512") {
    return cpu_avx2::pointwise_kernels<scalar_t>();
  }
#endif
  return cpu_default::pointwise_kernels<scalar_t>();
}

template <typename scalar_t>
const CpuPointwise<scalar_t>& pointwise() {
  static const CpuPointwise<scalar_t> kernels = best_kernels<scalar_t>();
  return kernels;
}

// A tile's fewest rows (common/cpu_tiles.h): below it a step's work (a few microseconds) does
// not pay for a second thread, and on a busy machine a descheduled thread stalls the whole call
// (issue 17: B = 1 and 8 took 24 ms with two threads against 1 ms with one; the stall there was
// the parallel fill and copy of the weight packing, now on the calling thread). Tiles never wait
// for each other inside the time loop, so a second tile costs one parallel region per call, not
// per step. Measured with two threads on the 2-core machine while three other sessions kept it
// at a load average of 7.4 (L = 50, inference, B = 16/32/64, H = 64/128/256, grains 4, 8, 16 and
// one tile): every grain beat one tile from B = 32 on (B = 64, H = 256: 80-87 ms against
// 108 ms), and between 4, 8 and 16 the medians moved by more than the grains differed.
// Quiet, two threads (benchmarks/results/rnn/tiles-2026-12-07.log): tiles of 4 rows would take
// B = 16 from 0.70x to 1.15x torch.nn (H = 128) and from 0.44x to 0.79x (H = 256), but with
// one core kept busy by another process such calls stalled on the descheduled tile thread
// (B = 16, H = 128: 8 ms against torch.nn's 1.9 ms, 0.24x; a rule splitting from 25 M
// multiply-adds of work gave the same), against 0.82x as one tile. 16 stays: the loaded
// floor (no case below 0.8x) wins over the quiet two-thread gain. A batch of one tile uses the
// other threads by splitting each step's hidden units instead (rnn_cpu_split.h).
constexpr int64_t kMinTileRows = 16;

// Rows of `tile` active at step s: [tile.begin, tile.begin + n), n <= 0 when none.
inline int64_t tile_rows_at(const Steps& steps, const CpuTile& tile, int64_t s) {
  return std::min(tile.end, steps.sizes[s]) - tile.begin;
}

// B = [parts[0]; parts[1]; ...] ([K, N], each part [K_i, N] with any strides) packed for the
// recurrent GEMM (common/cpu_gemm.h): panels of the kernels' panel width, [ceil(N / width), K,
// width], zero beyond column N. Once per call: the steps then read the weights in the order
// they use them, with no packing of their own. On the calling thread and straight from the
// parts (no concatenated copy, no zero fill of the whole buffer): an ATen fill or copy of a
// buffer this size goes parallel, and with one core busy the call then waits for a descheduled
// thread (issue 17's B = 8 under load).
template <typename scalar_t>
at::Tensor pack_panels(const CpuPointwise<scalar_t>& kernels,
                       std::initializer_list<at::Tensor> parts) {
  const int64_t width = kernels.panel_width;
  int64_t k = 0;
  for (const at::Tensor& part : parts) k += part.size(0);
  const int64_t n = parts.begin()->size(1), panels = (n + width - 1) / width;
  const at::Tensor packed = at::empty({panels, k, width}, parts.begin()->options());
  int64_t k0 = 0;  // the part's first row of B
  for (const at::Tensor& part : parts) {
    kernels.pack({part.data_ptr<scalar_t>(), part.size(0), part.stride(0), part.stride(1), k, n,
                  k0, packed.data_ptr<scalar_t>()});
    k0 += part.size(0);
  }
  return packed;
}

// out[out_row + i, :] = a[a_row + i, :] b for i < n; a [*, K] and out [*, N] contiguous, b
// [K, N] packed by pack_panels. (Measured against at::mm per step, one thread, L = 50, H = 128:
// the packed loop was as fast or faster from B = 1 to B = 256, so there is no BLAS branch.)
template <typename scalar_t>
void recurrent_product(const CpuPointwise<scalar_t>& kernels, int64_t k, int64_t columns,
                       const at::Tensor& packed, const at::Tensor& a, int64_t a_row, int64_t n,
                       const at::Tensor& out, int64_t out_row) {
  kernels.recurrent_gemm({n, k, columns, a.data_ptr<scalar_t>() + a_row * k, k,
                          packed.data_ptr<scalar_t>(), out.data_ptr<scalar_t>() + out_row * columns,
                          columns});
}

// The first of the tile's rows of h_prev (or c_prev) of step s: a row of the initial state
// [B, width] at the first step, else of step s - 1 in the step-ordered states [N, width] (a
// prefix of that step's rows, since rows only drop out).
int64_t previous_row(const Steps& steps, const CpuTile& tile, int64_t s) {
  return s == 0 ? tile.begin : steps.offsets[s - 1] + tile.begin;
}

template <typename scalar_t>
const scalar_t* previous_rows_ptr(const Steps& steps, const at::Tensor& first,
                                  const at::Tensor& states, const CpuTile& tile, int64_t s,
                                  int64_t width) {
  return (s == 0 ? first : states).data_ptr<scalar_t>() + previous_row(steps, tile, s) * width;
}

// The most rows per step for which the GRU's input projection x W_ih^T (every row of every
// step, one product before the time loop) runs on the calling thread through the packed GEMM
// rather than at::mm, whose threads wait for a busy core (rnn_cpu_launcher.h). The LSTM decides
// where its projection goes with lstm_projects_first (below).
constexpr int64_t kMaxRowsProjectingHere = 8;

// Whether the LSTM forward (the tile loop, and the split with the same rule so that its results
// equal the one-thread path's bitwise) projects first (above) rather than computing each step's
// [x_t, h_prev] [W_ih; W_hh]^T in one product (the [N, 4H] projection never written to memory
// and read back), from the rows per step and the bytes of [W_ih; W_hh]: at up to 3 rows, and
// at up to 12 rows when the weights take 1 MB or more. At few rows the fused product reads all
// of [W_ih; W_hh] per step for a handful of rows (2 MB at I = H = 256, the size of L2); at many
// rows the weights are shared by enough rows that it runs at the GEMM's speed and the
// [L * B, 4H] buffer (13 MB at B = 64, H = 256) is what costs. Measured (issue 17, L = 50,
// I = H, stseq.nn.LSTM interleaved with torch.nn.LSTM, medians of 40, ratios torch / stseq,
// projection first vs fused; inference, training forward; one thread unless said):
//   H = 64:  B = 2 1.34 vs 1.26, 1.13 vs 1.20; B = 4 1.27 vs 1.39, 1.11 vs 1.33
//   H = 128: B = 2 1.13 vs 0.98, 0.95 vs 0.85; B = 3 0.91 vs 0.76, 0.83 vs 0.75;
//            B = 4 1.13 vs 1.15, 0.98 vs 1.12 (two threads 0.93 vs 0.97); B = 8 0.99 vs 1.11
//   H = 256: B = 4 1.56 vs 0.98; B = 8 1.12 vs 1.10; B = 12 1.01 vs 0.94 (two threads 0.91 vs
//            0.95); B = 16 1.12 vs 1.15, 0.99 vs 1.01 (two threads 1.02 vs 1.06)
// (The fused product streams the weights from L3 without waiting since the GEMM prefetches its
// next panel, common/cpu_gemm.h; before that the cut-offs were 4 and 16 rows, and with 1 MB of
// weights the fused path went by blocks of 4 steps, x_t W_ih^T for the block's rows first,
// which the prefetch made no faster than one step at a time: B = 64, H = 256 1.007x against
// 0.993x, B = 128 0.995x against 0.932x, B = 256 1.026x against 1.013x, two threads 1.115x
// against 1.069x.)
constexpr int64_t kMaxRowsAlwaysProjectingFirst = 3;
constexpr int64_t kMaxRowsProjectingFirstLargeWeights = 12;
constexpr int64_t kLargeWeightBytes = int64_t{1} << 20;

template <typename scalar_t>
bool lstm_projects_first(const LayerShape& shape, const Steps& steps) {
  const int64_t rows = steps.active_rows();
  const bool large_weights =
      (shape.input_size + shape.proj) * shape.gates * int64_t{sizeof(scalar_t)} >=
      kLargeWeightBytes;  // [W_ih; W_hh] ([I + P, 4H])
  return rows <= kMaxRowsAlwaysProjectingFirst ||
         (rows <= kMaxRowsProjectingFirstLargeWeights && large_weights);
}

}  // namespace
}  // namespace rnn
}  // namespace stseq
