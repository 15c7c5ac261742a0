// The transpose that packs a weight from torch's [N, K] layout into the recurrent GEMM's panels
// (common/cpu_gemm.h's PanelGemm::pack). Included by the translation units built for different
// instruction sets, each naming its namespace first with STSEQ_CPU_NAMESPACE (internal linkage
// there).
#pragma once

#ifndef STSEQ_CPU_NAMESPACE
#error "define STSEQ_CPU_NAMESPACE before including common/cpu_transpose.h"
#endif

#include <ATen/cpu/vec/vec.h>

#include <cstdint>
#include <type_traits>

#if defined(CPU_CAPABILITY_AVX512)
#include <immintrin.h>
#endif

namespace stseq {
namespace STSEQ_CPU_NAMESPACE {
namespace {

#if defined(CPU_CAPABILITY_AVX512)
// One 16 x 16 block of float32: rows interleaved by 32-bit, then 64-bit elements, then
// 128-bit lanes twice (the order of ATen's transpose_block).
// (always inlined: the call per block was the cost of ATen's version)
inline __attribute__((always_inline)) void transpose16(const float* src, int64_t lds, float* dst,
                                                       int64_t ldd) {
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

}  // namespace
}  // namespace STSEQ_CPU_NAMESPACE
}  // namespace stseq
