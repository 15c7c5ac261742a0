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

  // out[r, :] = a[r, :] B for r in [0, rows); a [rows, K] stride lda, out stride ldo.
  void operator()(int64_t rows, const scalar_t* a, int64_t lda, scalar_t* out,
                  int64_t ldo) const {
    const int64_t panels = (n + kPanel - 1) / kPanel;
    const int64_t blocked = rows - rows % 4;
    // 4 rows x 1 panel: 8 accumulators; each panel ([K, kPanel], 8 KB at K = 128 in float32)
    // stays in L1 while every block of rows passes over it, so B is read once per step.
    for (int64_t p = 0; p < panels; ++p) {
      for (int64_t r = 0; r < blocked; r += 4) four_rows(a + r * lda, lda, p, out + r * ldo, ldo);
    }
    for (int64_t r = blocked; r < rows; ++r) {  // 1 row x 4 panels: 8 accumulators
      int64_t p = 0;
      for (; p + 4 <= panels; p += 4) one_row_four_panels(a + r * lda, p, out + r * ldo);
      for (; p < panels; ++p) one_row_one_panel(a + r * lda, p, out + r * ldo);
    }
  }

 private:
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

  // The accumulators are named locals, not arrays: GCC keeps an array of vectors in memory and
  // stores every element on each iteration (measured: twice the loop's time).
  void four_rows(const scalar_t* a, int64_t lda, int64_t p, scalar_t* out, int64_t ldo) const {
    V c00(0), c01(0), c10(0), c11(0), c20(0), c21(0), c30(0), c31(0);
    const scalar_t* w = panel(p);
    const scalar_t *a0 = a, *a1 = a + lda, *a2 = a + 2 * lda, *a3 = a + 3 * lda;
    for (int64_t j = 0; j < k; ++j, w += kPanel) {
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
    store(out, p, c00, c01);
    store(out + ldo, p, c10, c11);
    store(out + 2 * ldo, p, c20, c21);
    store(out + 3 * ldo, p, c30, c31);
  }

  // One row against panels first .. first + 3.
  void one_row_four_panels(const scalar_t* a, int64_t first, scalar_t* out) const {
    V c00(0), c01(0), c10(0), c11(0), c20(0), c21(0), c30(0), c31(0);
    const scalar_t* w0 = panel(first);
    const scalar_t *w1 = w0 + k * kPanel, *w2 = w1 + k * kPanel, *w3 = w2 + k * kPanel;
    for (int64_t j = 0; j < k; ++j) {
      const V x(a[j]);
      const int64_t o = j * kPanel;
      c00 = at::vec::fmadd(x, V::loadu(w0 + o), c00);
      c01 = at::vec::fmadd(x, V::loadu(w0 + o + kLanes), c01);
      c10 = at::vec::fmadd(x, V::loadu(w1 + o), c10);
      c11 = at::vec::fmadd(x, V::loadu(w1 + o + kLanes), c11);
      c20 = at::vec::fmadd(x, V::loadu(w2 + o), c20);
      c21 = at::vec::fmadd(x, V::loadu(w2 + o + kLanes), c21);
      c30 = at::vec::fmadd(x, V::loadu(w3 + o), c30);
      c31 = at::vec::fmadd(x, V::loadu(w3 + o + kLanes), c31);
    }
    store(out, first, c00, c01);
    store(out, first + 1, c10, c11);
    store(out, first + 2, c20, c21);
    store(out, first + 3, c30, c31);
  }

  void one_row_one_panel(const scalar_t* a, int64_t p, scalar_t* out) const {
    V c0(0), c1(0);
    const scalar_t* w = panel(p);
    for (int64_t j = 0; j < k; ++j, w += kPanel) {
      const V x(a[j]);
      c0 = at::vec::fmadd(x, V::loadu(w), c0);
      c1 = at::vec::fmadd(x, V::loadu(w + kLanes), c1);
    }
    store(out, p, c0, c1);
  }
};

}  // namespace
}  // namespace STSEQ_CPU_NAMESPACE
}  // namespace stseq
