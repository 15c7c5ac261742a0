// The recurrent GEMM of one CPU step, out[n, N] = a[n, K] B with B [K, N] packed once per call:
// the small-M product that each step of a recurrent layer runs (W_hh h_prev for a tile's active
// rows). A BLAS call per step re-packs B every time (M is 1 to a few dozen rows, so packing
// 64-256 KB of weights costs as much as the arithmetic) and goes through the dispatcher and,
// with more than one thread, through the library's own thread pool; here B is packed once per
// call into panels of two vector registers' width and each step is a register-blocked loop on
// the calling thread.
//
// Layout of the packed B (pack_panels, rnn_cpu.cpp): panels of kPanel = 2 vector lanes columns,
// [ceil(N / kPanel)][K][kPanel], zero beyond column N.
// Included by the translation units built for different instruction sets, after cpu_vector.h,
// each naming its namespace first with STSEQ_CPU_NAMESPACE (internal linkage there).
#pragma once

#ifndef STSEQ_CPU_NAMESPACE
#error "define STSEQ_CPU_NAMESPACE before including common/cpu_gemm.h"
#endif

#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cstdint>

#if defined(_MSC_VER)
#define STSEQ_GEMM_INLINE __forceinline
#else
#define STSEQ_GEMM_INLINE inline __attribute__((always_inline))
#endif

namespace stseq {
namespace STSEQ_CPU_NAMESPACE {
namespace {

template <typename scalar_t>
struct PanelGemm {
  using V = at::vec::Vectorized<scalar_t>;
  static constexpr int64_t kLanes = V::size();
  static constexpr int64_t kPanel = 2 * kLanes;

  int64_t k, n;            // K, N
  const scalar_t* packed;  // [ceil(N / kPanel)][K][kPanel]

  // out[r, :] = [a[r, :k1], a2[r, :K - k1]] B for r in [0, rows): the product of two operands
  // side by side (e.g. x_t and h_prev against [W_ih; W_hh]^T), a [rows, k1] stride lda, a2
  // [rows, K - k1] stride lda2 (unused when k1 = K), out stride ldo.
  void operator()(int64_t rows, const scalar_t* a, int64_t lda, int64_t k1, const scalar_t* a2,
                  int64_t lda2, scalar_t* out, int64_t ldo) const {
    const int64_t panels = (n + kPanel - 1) / kPanel;
    const int64_t blocked = rows - rows % 4;
    const Operand first{a, lda, 0, k1}, second{a2, lda2, k1, k};
    // 4 rows x 1 panel: 8 accumulators; each panel ([K, kPanel], 8 KB at K = 128 in float32)
    // stays in L1 while every block of rows passes over it, so B is read once per step.
    for (int64_t p = 0; p < panels; ++p) {
      for (int64_t r = 0; r < blocked; r += 4) {
        Block4 acc;
        four_rows(first, r, p, acc);
        four_rows(second, r, p, acc);
        for (int i = 0; i < 4; ++i) store(out + (r + i) * ldo, p, acc.c[i][0], acc.c[i][1]);
      }
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
  };
  // Eight accumulators. Passed by reference into always-inlined loops: GCC keeps them in
  // registers there (an array of vectors held across a non-inlined loop is stored to memory on
  // every iteration: measured, twice the loop's time).
  struct Block4 {
    V c[4][2] = {{V(0), V(0)}, {V(0), V(0)}, {V(0), V(0)}, {V(0), V(0)}};
  };

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

  STSEQ_GEMM_INLINE void four_rows(const Operand& o, int64_t r, int64_t p, Block4& acc) const {
    if (o.begin >= o.end) return;
    V c00 = acc.c[0][0], c01 = acc.c[0][1], c10 = acc.c[1][0], c11 = acc.c[1][1];
    V c20 = acc.c[2][0], c21 = acc.c[2][1], c30 = acc.c[3][0], c31 = acc.c[3][1];
    const scalar_t* w = panel(p) + o.begin * kPanel;
    const scalar_t* a0 = o.a + r * o.lda - o.begin;
    const scalar_t *a1 = a0 + o.lda, *a2 = a1 + o.lda, *a3 = a2 + o.lda;
    for (int64_t j = o.begin; j < o.end; ++j, w += kPanel) {
      const V low = V::loadu(w), high = V::loadu(w + kLanes);
      const V x0(a0[j]), x1(a1[j]), x2(a2[j]), x3(a3[j]);
      c00 = at::vec::fmadd(x0, low, c00);
      c01 = at::vec::fmadd(x0, high, c01);
      c10 = at::vec::fmadd(x1, low, c10);
      c11 = at::vec::fmadd(x1, high, c11);
      c20 = at::vec::fmadd(x2, low, c20);
      c21 = at::vec::fmadd(x2, high, c21);
      c30 = at::vec::fmadd(x3, low, c30);
      c31 = at::vec::fmadd(x3, high, c31);
    }
    acc.c[0][0] = c00, acc.c[0][1] = c01, acc.c[1][0] = c10, acc.c[1][1] = c11;
    acc.c[2][0] = c20, acc.c[2][1] = c21, acc.c[3][0] = c30, acc.c[3][1] = c31;
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
