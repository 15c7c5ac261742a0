// The recurrent GEMM of one CPU step, out[n, N] = a[n, K] B with B [K, N] packed once per call:
// the small-M product that each step of a recurrent layer runs (W_hh h_prev for a tile's active
// rows). A BLAS call per step re-packs B every time (M is 1 to a few dozen rows, so packing
// 64-256 KB of weights costs as much as the arithmetic) and goes through the dispatcher and,
// with more than one thread, through the library's own thread pool; here B is packed once per
// call into panels of two vector registers' width and each step is a register-blocked loop on
// the calling thread.
//
// Layout of the packed B (pack_panels, rnn_cpu_loop.h): panels of kPanel = 2 vector lanes columns,
// [ceil(N / kPanel)][K][kPanel], zero beyond column N.
// Included by the translation units built for different instruction sets, after cpu_vector.h,
// each naming its namespace first with STSEQ_CPU_NAMESPACE (internal linkage there). 500 lines:
// one struct of about 400 (its block kernels, 1 to 14 rows x one or four panels, share the
// packed layout, the operands and the loop nest of operator(), which picks among them) and
// the transpose that its packing uses.
#pragma once

#ifndef STSEQ_CPU_NAMESPACE
#error "define STSEQ_CPU_NAMESPACE before including common/cpu_gemm.h"
#endif

#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#if defined(CPU_CAPABILITY_AVX512)
#include <immintrin.h>
#endif

#if defined(_MSC_VER)
#define STSEQ_GEMM_INLINE __forceinline
#else
#define STSEQ_GEMM_INLINE inline __attribute__((always_inline))
#endif

namespace stseq {
namespace STSEQ_CPU_NAMESPACE {
namespace {

// The transpose of PanelGemm::pack, from torch's [N, K] weight layout into panels.
#if defined(CPU_CAPABILITY_AVX512)
// One 16 x 16 block of float32: rows interleaved by 32-bit, then 64-bit elements, then
// 128-bit lanes twice (the order of ATen's transpose_block).
// (always inlined: the call per block was the cost of ATen's version)
STSEQ_GEMM_INLINE void transpose16(const float* src, int64_t lds, float* dst, int64_t ldd) {
  __m512 a[16], b[16];
  for (int i = 0; i < 16; ++i) a[i] = _mm512_loadu_ps(src + i * lds);
  for (int i = 0; i < 8; ++i) {
    b[2 * i] = _mm512_unpacklo_ps(a[2 * i], a[2 * i + 1]);
    b[2 * i + 1] = _mm512_unpackhi_ps(a[2 * i], a[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    const __m512d b0 = _mm512_castps_pd(b[4 * i]), b1 = _mm512_castps_pd(b[4 * i + 1]);
    const __m512d b2 = _mm512_castps_pd(b[4 * i + 2]), b3 = _mm512_castps_pd(b[4 * i + 3]);
    a[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(b0, b2));
    a[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(b0, b2));
    a[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b1, b3));
    a[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b1, b3));
  }
  for (int i = 0; i < 2; ++i) {
    for (int q = 0; q < 4; ++q) {
      b[8 * i + q] = _mm512_shuffle_f32x4(a[8 * i + q], a[8 * i + q + 4], 0x88);
      b[8 * i + q + 4] = _mm512_shuffle_f32x4(a[8 * i + q], a[8 * i + q + 4], 0xdd);
    }
  }
  for (int i = 0; i < 8; ++i) {
    _mm512_storeu_ps(dst + i * ldd, _mm512_shuffle_f32x4(b[i], b[8 + i], 0x88));
    _mm512_storeu_ps(dst + (8 + i) * ldd, _mm512_shuffle_f32x4(b[i], b[8 + i], 0xdd));
  }
}
#endif

// dst[c * ldd + r] = src[r * lds + c] for r < m, c < n. ATen's transpose_mxn goes through
// 16 x 16 blocks whose sizes it takes at run time; in this build GCC keeps that block
// function out of line (perf showed it as a separate .constprop clone, the top of a B = 1
// call) with the block in memory between its steps. With AVX-512 in float32, whole 16 x 16
// blocks here go through the same interleaves with fixed sizes, inlined, in registers.
// Measured (issue 17, one thread, torch.ops.stseq.lstm at L = 1, B = 1, I = H = 256, where
// packing the 2 MB of [W_ih; W_hh] is most of the call, medians of 9 x 200 calls, two
// alternations of the builds): 295-302 -> 260-263 us per call.
template <typename scalar_t>
inline void transpose(const scalar_t* src, int64_t lds, scalar_t* dst, int64_t ldd, int64_t m,
                      int64_t n) {
#if defined(CPU_CAPABILITY_AVX512)
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (m % 16 == 0 && n % 16 == 0) {
      for (int64_t r = 0; r < m; r += 16) {
        for (int64_t c = 0; c < n; c += 16) {
          transpose16(src + r * lds + c, lds, dst + c * ldd + r, ldd);
        }
      }
      return;
    }
  }
#endif
  at::vec::transpose_mxn<scalar_t>(src, lds, dst, ldd, static_cast<int>(m),
                                   static_cast<int>(n));
}

template <typename scalar_t>
struct PanelGemm {
  using V = at::vec::Vectorized<scalar_t>;
  static constexpr int64_t kLanes = V::size();
  static constexpr int64_t kPanel = 2 * kLanes;

  int64_t k, n;            // K, N
  const scalar_t* packed;  // [ceil(N / kPanel)][K][kPanel]

  // Rows [k0, k0 + rows) of the packed B ([ceil(N / kPanel)][K][kPanel], at `dst`) from a part
  // of B, [rows, N] with element (j, c) at src[j * row_stride + s(c) * column_stride], where
  // s(c) = (c / block) * block_stride + c % block (block = 0: s(c) = c; a chunk of LSTM units
  // packs its four gates' columns side by side, rnn_cpu_split.h); zero beyond column N. A
  // panel's columns go in runs of consecutive source columns. A transposed weight
  // (column_stride != 1) goes through ATen's vector transpose in blocks of kBlock rows, so that
  // the panel block being written stays in L1 (a scalar loop down a whole panel column missed
  // L1 at every element: half of a B = 1 call's time).
  static void pack(const scalar_t* src, int64_t rows, int64_t row_stride, int64_t column_stride,
                   int64_t k, int64_t n, int64_t k0, scalar_t* dst, int64_t block = 0,
                   int64_t block_stride = 0) {
    if (block <= 0) block = n;
    const int64_t panels = (n + kPanel - 1) / kPanel;
    for (int64_t p = 0; p < panels; ++p) {
      const int64_t width = std::min(kPanel, n - p * kPanel);
      scalar_t* panel = dst + (p * k + k0) * kPanel;
      for (int64_t j = 0; j < rows; ++j) {
        std::fill(panel + j * kPanel + width, panel + (j + 1) * kPanel, scalar_t(0));
      }
      for (int64_t c = p * kPanel; c < p * kPanel + width;) {
        const int64_t run = std::min(p * kPanel + width, (c / block + 1) * block) - c;
        const int64_t source = (c / block) * block_stride + c % block;
        pack_run(src + source * column_stride, rows, row_stride, column_stride, run,
                 panel + (c - p * kPanel));
        c += run;
      }
    }
  }

  // out[r, :] = [a[r, :k1 - k0], a2[r, :k2 - k1]] B[k0:k2, :] for r in [0, rows): the product
  // of two operands side by side (e.g. x_t and h_prev against [W_ih; W_hh]^T) with rows
  // [k0, k2) of B (e.g. h_prev against the W_hh^T rows only), a [rows, k1 - k0] stride lda, a2
  // [rows, k2 - k1] stride lda2 (unused when k1 = k2), out stride ldo.
  void operator()(int64_t rows, int64_t k0, const scalar_t* a, int64_t lda, int64_t k1,
                  const scalar_t* a2, int64_t lda2, int64_t k2, scalar_t* out,
                  int64_t ldo) const {
    const int64_t panels = (n + kPanel - 1) / kPanel;
    const Operand first{a, lda, k0, k1}, second{a2, lda2, k1, k2};
    // Blocks of rows x 1 panel (rows_block): with AVX-512 8 rows, 16 accumulators (its 32
    // vector registers hold them with the panel's two vectors; 4 rows, 8 FMAs per two panel
    // loads, left the FMA latency exposed) and the last block of a chunk up to 14 rows (below),
    // else 4 rows, 8 accumulators (AVX2's 16 registers). Each panel ([K, kPanel], 8 KB at
    // K = 128 in float32) stays in L1 while the blocks of rows pass over it, so B is read once
    // per step; rows go kRowChunk at a time so that the chunk of `a` stays in L2 when
    // `rows` is large (the input projection of every step, up to L * B rows: without the chunks
    // all of `a` streamed from memory once per panel), and B (2 MB at I = H = 256, the size of
    // L2) is streamed once per chunk. Measured (issue 17, one thread, L = 50, inference,
    // interleaved with torch.nn.LSTM, torch / stseq): 256 rows against 64, H = 256, B = 256
    // 1.00-1.01x against 0.93x; B = 64 and forward+backward alike.
    // With AVX-512 every row of 4 or more goes through the blocks over each panel: blocks of 8
    // while more than kMaxBlockRows rows of the chunk remain, then one block of the rest (4 to
    // 14 rows, up to 28 accumulators: rows_block), so that no row is left to stream all of B
    // again on its own; below 4 rows, 2 or 3 rows x 4 panels (few_rows) or 1 row x 4 panels.
    // Without AVX-512, blocks of 4 and the 1 to 3 rows left one at a time. Measured (issue 17,
    // LSTM inference, one thread, L = 50, I = H = 128, torch / stseq, two alternations of the
    // builds, against the rows left after blocks of 8 and 4 going 2 or 3 at a time over four
    // panels): B = 5 0.93-0.95x -> 1.09-1.11x, B = 9 0.93-1.01x -> 1.08-1.11x, B = 11
    // 0.91-0.94x -> 0.97-0.99x, B = 13 0.94-0.96x -> 1.02-1.07x, B = 15 0.94-0.95x ->
    // 1.04-1.09x; B = 20 and 256 unchanged.
    constexpr int64_t kRowChunk = 256;
    // K goes kDepth rows of B at a time (out accumulating after the first), so that the part
    // of a panel that the blocks of rows pass over ([kDepth, kPanel], 32 KB in float32 with
    // AVX-512) stays in L1: a whole panel of [x_t, h_prev] [W_ih; W_hh]^T at I = H = 256 is
    // 64 KB, and every block of rows streamed it from L2 again.
    constexpr int64_t kDepth = 256;
    // While the blocks of rows pass over a panel, they prefetch the next panel's rows of the
    // same depth into L2 (Prefetch, below). The hardware's L2 prefetcher stops at every 4 KB
    // page, which the first block of a panel crosses every 32 multiply-add steps, so where the
    // weights do not stay in L2 (2 MB of [W_ih; W_hh] at I = H = 256) that block waits on L3
    // at every page (the reading that the figures below bear out: this VM exposes no hardware
    // counters to show it). Arithmetic unchanged. Measured (issue 17, LSTM, L = 50, I = H,
    // interleaved with torch.nn.LSTM, medians of 30-40, torch / stseq without -> with): one
    // thread, inference, H = 256: B = 8 1.093x -> 1.129x, B = 32 1.026x -> 1.066x, B = 64
    // 0.946x -> 0.985x, B = 256 0.928x -> 1.019x; H = 128 and 64 within 1-2% either way; two
    // threads, B = 64, H = 256 0.970x -> 1.052x; forward+backward, one thread, H = 256: B = 8
    // 1.089x -> 1.152x, B = 64 1.112x -> 1.159x.
    const int64_t blocked = kEightRows ? (rows >= 4 ? rows : 0) : rows / 4 * 4;
    for (int64_t r0 = 0; r0 < blocked; r0 += kRowChunk) {
      // the last chunk takes up to kMaxBlockRows more rows rather than leave them to a chunk
      // of their own
      const int64_t r1 = blocked - r0 <= kRowChunk + kMaxBlockRows ? blocked : r0 + kRowChunk;
      int64_t blocks = 0;  // blocks of rows over each panel of the chunk
      for (int64_t left = r1 - r0; left > 0; left -= block_rows(left)) ++blocks;
      for (int64_t d0 = k0; d0 < k2; d0 += kDepth) {
        const int64_t d1 = std::min(k2, d0 + kDepth);
        const Operand f = first.within(d0, d1), g = second.within(d0, d1);
        const bool accumulate = d0 > k0;
        for (int64_t p = 0; p < panels; ++p) {
          for (int64_t r = r0, b = 0; r < r1; ++b) {
            Prefetch ahead{};
            if (p + 1 < panels) {
              ahead = {panel(p + 1) + (d0 + b * (d1 - d0) / blocks) * kPanel, blocks};
            }
            const int64_t m = block_rows(r1 - r);
            rows_block(m, f, g, r, p, accumulate, ahead, out, ldo);
            r += m;
          }
        }
      }
    }
    if (kEightRows && rows - blocked >= 2) {  // 2 or 3 rows x 4 panels: 16 or 24 accumulators
      rows - blocked == 2 ? few_rows<2>(first, second, blocked, panels, out, ldo)
                          : few_rows<3>(first, second, blocked, panels, out, ldo);
      return;
    }
    for (int64_t r = blocked; r < rows; ++r) {  // 1 row x 4 panels: 8 accumulators
      int64_t p = 0;
      for (; p + 4 <= panels; p += 4) {
        Block4 acc;
        one_row_four_panels(first, r, p, acc);
        one_row_four_panels(second, r, p, acc);
        for (int q = 0; q < 4; ++q) store(out + r * ldo, p + q, acc.c[q][0], acc.c[q][1]);
      }
      for (; p < panels; ++p) {
        V c0(0), c1(0);
        one_row_one_panel(first, r, p, c0, c1);
        one_row_one_panel(second, r, p, c0, c1);
        store(out + r * ldo, p, c0, c1);
      }
    }
  }

 private:
  // Columns [begin, end) of K come from `a` (stride lda).
  struct Operand {
    const scalar_t* a;
    int64_t lda, begin, end;
    // The same operand restricted to columns [d0, d1) of K (empty when they do not meet).
    Operand within(int64_t d0, int64_t d1) const {
      const int64_t b = std::max(begin, d0), e = std::min(end, d1);
      if (b >= e) return {a, lda, 0, 0};
      return {a + (b - begin), lda, b, e};
    }
  };
  // The next panel's rows [d0, d1) fetched into L2 by the blocks of rows passing over the
  // current one: block b of n fetches rows [d0 + b (d1 - d0) / n, ...), one row (kPanel
  // values, 128 bytes in two cache lines) every n multiply-add steps, so that the n blocks
  // fetch all of them between them, spread over the panel's work (a burst of prefetches would
  // wait for the core's few line-fill buffers).
  struct Prefetch {
    const scalar_t* row = nullptr;  // the next row of the next panel to fetch (nullptr: none)
    int64_t every = 0;               // multiply-add steps per row fetched
    int64_t countdown = 1;
    STSEQ_GEMM_INLINE void step() {
      if (row == nullptr || --countdown > 0) return;
      countdown = every;
      const char* line = reinterpret_cast<const char*>(row);
      __builtin_prefetch(line, 0, 2);
      __builtin_prefetch(line + kPanel * sizeof(scalar_t) / 2, 0, 2);
      row += kPanel;
    }
  };
  // Eight accumulators (one row x four panels). Passed by reference into an always-inlined
  // loop: GCC keeps them in registers there (an array of vectors held across a non-inlined
  // loop is stored to memory on every iteration: measured, twice the loop's time).
  struct Block4 {
    V c[4][2] = {{V(0), V(0)}, {V(0), V(0)}, {V(0), V(0)}, {V(0), V(0)}};
  };

#if defined(CPU_CAPABILITY_AVX512)
  static constexpr bool kEightRows = true;
#else
  static constexpr bool kEightRows = false;
#endif

  // `width` consecutive source columns (the first at `columns`) of every row into a panel's
  // columns from `out` on (row stride kPanel).
  static void pack_run(const scalar_t* columns, int64_t rows, int64_t row_stride,
                       int64_t column_stride, int64_t width, scalar_t* out) {
    constexpr int64_t kBlock = 64;
    if (column_stride == 1) {  // rows of B contiguous: copy them
      for (int64_t j = 0; j < rows; ++j) {
        std::copy(columns + j * row_stride, columns + j * row_stride + width, out + j * kPanel);
      }
    } else if (row_stride == 1) {  // columns of B contiguous: transpose [width, rows] blocks
      for (int64_t j = 0; j < rows; j += kBlock) {
        transpose(columns + j, column_stride, out + j * kPanel, kPanel, width,
                  std::min(kBlock, rows - j));
      }
    } else {
      for (int64_t j = 0; j < rows; ++j) {
        for (int64_t c = 0; c < width; ++c) {
          out[j * kPanel + c] = columns[j * row_stride + c * column_stride];
        }
      }
    }
  }

  const scalar_t* panel(int64_t p) const { return packed + p * k * kPanel; }

  // Columns [p * kPanel, ...) of one output row from two vectors (the last panel may be cut).
  void store(scalar_t* row, int64_t p, const V& low, const V& high) const {
    const int64_t column = p * kPanel, width = std::min(kPanel, n - column);
    if (width == kPanel) {
      low.store(row + column);
      high.store(row + column + kLanes);
      return;
    }
    scalar_t buffer[kPanel];
    low.store(buffer);
    high.store(buffer + kLanes);
    std::copy(buffer, buffer + width, row + column);
  }

  // The inverse of store: two vectors from columns [p * kPanel, ...) of one output row (zero
  // beyond column N).
  void load(const scalar_t* row, int64_t p, V& low, V& high) const {
    const int64_t column = p * kPanel, width = std::min(kPanel, n - column);
    if (width == kPanel) {
      low = V::loadu(row + column);
      high = V::loadu(row + column + kLanes);
      return;
    }
    scalar_t buffer[kPanel] = {};
    std::copy(row + column, row + column + width, buffer);
    low = V::loadu(buffer);
    high = V::loadu(buffer + kLanes);
  }



  // One row against panels first .. first + 3.
  STSEQ_GEMM_INLINE void one_row_four_panels(const Operand& o, int64_t r, int64_t first,
                                             Block4& acc) const {
    if (o.begin >= o.end) return;
    V c00 = acc.c[0][0], c01 = acc.c[0][1], c10 = acc.c[1][0], c11 = acc.c[1][1];
    V c20 = acc.c[2][0], c21 = acc.c[2][1], c30 = acc.c[3][0], c31 = acc.c[3][1];
    const scalar_t* w0 = panel(first);
    const scalar_t *w1 = w0 + k * kPanel, *w2 = w1 + k * kPanel, *w3 = w2 + k * kPanel;
    const scalar_t* a = o.a + r * o.lda - o.begin;
    for (int64_t j = o.begin; j < o.end; ++j) {
      const V x(a[j]);
      const int64_t o_j = j * kPanel;
      c00 = at::vec::fmadd(x, V::loadu(w0 + o_j), c00);
      c01 = at::vec::fmadd(x, V::loadu(w0 + o_j + kLanes), c01);
      c10 = at::vec::fmadd(x, V::loadu(w1 + o_j), c10);
      c11 = at::vec::fmadd(x, V::loadu(w1 + o_j + kLanes), c11);
      c20 = at::vec::fmadd(x, V::loadu(w2 + o_j), c20);
      c21 = at::vec::fmadd(x, V::loadu(w2 + o_j + kLanes), c21);
      c30 = at::vec::fmadd(x, V::loadu(w3 + o_j), c30);
      c31 = at::vec::fmadd(x, V::loadu(w3 + o_j + kLanes), c31);
    }
    acc.c[0][0] = c00, acc.c[0][1] = c01, acc.c[1][0] = c10, acc.c[1][1] = c11;
    acc.c[2][0] = c20, acc.c[2][1] = c21, acc.c[3][0] = c30, acc.c[3][1] = c31;
  }

  static constexpr int64_t kMaxBlockRows = 14;
  // Rows of the next block over a panel when `left` rows of the chunk remain: 8, the last 4 to
  // kMaxBlockRows with AVX-512; 4 without.
  static int64_t block_rows(int64_t left) {
    return kEightRows ? (left > kMaxBlockRows ? 8 : left) : 4;
  }

  // One block of m rows (4 to kMaxBlockRows) against panel p over the operands' depth, out
  // accumulating when `accumulate`.
  void rows_block(int64_t m, const Operand& f, const Operand& g, int64_t r, int64_t p,
                  bool accumulate, Prefetch& ahead, scalar_t* out, int64_t ldo) const {
    switch (m) {
      case 4: return rows_block<4>(f, g, r, p, accumulate, ahead, out, ldo);
      case 5: return rows_block<5>(f, g, r, p, accumulate, ahead, out, ldo);
      case 6: return rows_block<6>(f, g, r, p, accumulate, ahead, out, ldo);
      case 7: return rows_block<7>(f, g, r, p, accumulate, ahead, out, ldo);
      case 8: return rows_block<8>(f, g, r, p, accumulate, ahead, out, ldo);
      case 9: return rows_block<9>(f, g, r, p, accumulate, ahead, out, ldo);
      case 10: return rows_block<10>(f, g, r, p, accumulate, ahead, out, ldo);
      case 11: return rows_block<11>(f, g, r, p, accumulate, ahead, out, ldo);
      case 12: return rows_block<12>(f, g, r, p, accumulate, ahead, out, ldo);
      case 13: return rows_block<13>(f, g, r, p, accumulate, ahead, out, ldo);
      default: return rows_block<14>(f, g, r, p, accumulate, ahead, out, ldo);
    }
  }

  template <int R>
  void rows_block(const Operand& f, const Operand& g, int64_t r, int64_t p, bool accumulate,
                  Prefetch& ahead, scalar_t* out, int64_t ldo) const {
    V c[R][2];
    for (int i = 0; i < R; ++i) {
      c[i][0] = V(0);
      c[i][1] = V(0);
      if (accumulate) load(out + (r + i) * ldo, p, c[i][0], c[i][1]);
    }
    rows_one_panel<R>(f, r, p, c, ahead);
    rows_one_panel<R>(g, r, p, c, ahead);
    for (int i = 0; i < R; ++i) store(out + (r + i) * ldo, p, c[i][0], c[i][1]);
  }

  // R rows against panel p, accumulating into c: the accumulators are copied into a local
  // array for the loop (rows_block's array is also passed to load and store; held across the
  // loop through the reference, GCC kept it in memory: twice the time).
  template <int R>
  STSEQ_GEMM_INLINE void rows_one_panel(const Operand& o, int64_t r, int64_t p, V (&c)[R][2],
                                        Prefetch& ahead) const {
    if (o.begin >= o.end) return;
    const scalar_t* w = panel(p) + o.begin * kPanel;
    const scalar_t* a = o.a + r * o.lda - o.begin;
    const int64_t lda = o.lda;
    V acc[R][2];
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
      acc[i][0] = c[i][0];
      acc[i][1] = c[i][1];
    }
    for (int64_t j = o.begin; j < o.end; ++j, w += kPanel) {
      ahead.step();
      const V low = V::loadu(w), high = V::loadu(w + kLanes);
#pragma GCC unroll 16
      for (int i = 0; i < R; ++i) {
        const V x(a[i * lda + j]);
        acc[i][0] = at::vec::fmadd(x, low, acc[i][0]);
        acc[i][1] = at::vec::fmadd(x, high, acc[i][1]);
      }
    }
#pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
      c[i][0] = acc[i][0];
      c[i][1] = acc[i][1];
    }
  }

  // Rows [r, r + R) (all of a product of 2 or 3 rows) against every panel: four panels at a
  // time, each row of B loaded once for the R rows (one row at a time streamed all of B once
  // per row), then the remaining panels row by row. Each output is the same chain of
  // multiply-adds as in the other blocks. Measured (issue 17, LSTM inference, one thread,
  // L = 50, I = H, torch / stseq, two alternations of the builds): B = 3, H = 128 0.93-0.99x ->
  // 1.14-1.16x, B = 3, H = 256 1.31-1.35x -> 1.52-1.55x, B = 2, H = 64 1.33-1.38x ->
  // 1.42-1.51x.
  template <int R>
  void few_rows(const Operand& first, const Operand& second, int64_t r, int64_t panels,
                scalar_t* out, int64_t ldo) const {
    int64_t p = 0;
    for (; p + 4 <= panels; p += 4) {
      V c[R][8];
      for (int i = 0; i < R; ++i) {
        for (int v = 0; v < 8; ++v) c[i][v] = V(0);
      }
      rows_four_panels<R>(first, r, p, c);
      rows_four_panels<R>(second, r, p, c);
      for (int i = 0; i < R; ++i) {
        for (int q = 0; q < 4; ++q) store(out + (r + i) * ldo, p + q, c[i][2 * q], c[i][2 * q + 1]);
      }
    }
    for (; p < panels; ++p) {
      for (int i = 0; i < R; ++i) {
        V c0(0), c1(0);
        one_row_one_panel(first, r + i, p, c0, c1);
        one_row_one_panel(second, r + i, p, c0, c1);
        store(out + (r + i) * ldo, p, c0, c1);
      }
    }
  }

  template <int R>
  STSEQ_GEMM_INLINE void rows_four_panels(const Operand& o, int64_t r, int64_t first,
                                          V (&c)[R][8]) const {
    if (o.begin >= o.end) return;
    const scalar_t* w = panel(first);
    const scalar_t* a[R];
    for (int i = 0; i < R; ++i) a[i] = o.a + (r + i) * o.lda - o.begin;
    for (int64_t j = o.begin; j < o.end; ++j) {
      const int64_t o_j = j * kPanel;
      V b[8];
      for (int q = 0; q < 4; ++q) {
        b[2 * q] = V::loadu(w + q * k * kPanel + o_j);
        b[2 * q + 1] = V::loadu(w + q * k * kPanel + o_j + kLanes);
      }
      for (int i = 0; i < R; ++i) {
        const V x(a[i][j]);
        for (int v = 0; v < 8; ++v) c[i][v] = at::vec::fmadd(x, b[v], c[i][v]);
      }
    }
  }

  STSEQ_GEMM_INLINE void one_row_one_panel(const Operand& o, int64_t r, int64_t p, V& c0,
                                           V& c1) const {
    if (o.begin >= o.end) return;
    const scalar_t* w = panel(p) + o.begin * kPanel;
    const scalar_t* a = o.a + r * o.lda - o.begin;
    for (int64_t j = o.begin; j < o.end; ++j, w += kPanel) {
      const V x(a[j]);
      c0 = at::vec::fmadd(x, V::loadu(w), c0);
      c1 = at::vec::fmadd(x, V::loadu(w + kLanes), c1);
    }
  }
};

}  // namespace
}  // namespace STSEQ_CPU_NAMESPACE
}  // namespace stseq
