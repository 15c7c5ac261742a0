// The CPU kernels of one recurrent step: for n batch rows, the gate math of rnn.h on every hidden
// unit (vectorised over units), and the step's recurrent GEMM. Raw pointers only: this header is
// shared by the translation units built for different instruction sets (rnn_cpu_pointwise.h is
// compiled plainly, with AVX2 and with AVX-512), and rnn_cpu_loop.h picks the widest one ATen
// runs.
// Row strides are in elements; every pointer addresses the step's first active row.
#pragma once

#include <cstdint>

namespace stseq {
namespace rnn {

// The units computed are all H of a layer, or a chunk of W of them (the split forward,
// rnn_cpu_split.h): there the pre-activations xg and hg hold the chunk's gates in blocks of W
// (pre_gate_stride = W) while bias, gates, cells and c_state keep the layer's layout (H).
template <typename scalar_t>
struct LstmForwardRows {
  int64_t rows, hidden;    // n, W: the units computed (H, or a chunk's width)
  int64_t pre_gate_stride; // from one gate's block of xg and hg to the next (H, or W)
  int64_t layer_hidden;    // H: row stride of c_state and cells, gate stride of bias and gates
  const scalar_t* xg;      // [n, 4 blocks] stride xg_stride: W_ih x (nullptr: already in hg)
  int64_t xg_stride;
  const scalar_t* hg;      // [n, 4 blocks] stride hg_stride: W_hh h_prev (+ W_ih x)
  int64_t hg_stride;
  const scalar_t* bias;    // [4H] b_ih + b_hh, added to xg + hg (nullptr: no bias)
  scalar_t* c_state;       // [n, W] stride H: c_prev in, c out
  scalar_t* gates;         // [n, 4H] stride 4H: i, f, g, o (nullptr: not kept)
  scalar_t* cells;         // [n, W] stride H: c (nullptr: not kept)
  scalar_t* h;             // [n, W] stride h_stride: o * tanh(c)
  int64_t h_stride;
};

template <typename scalar_t>
struct LstmBackwardRows {
  int64_t rows, hidden;    // n, H
  const scalar_t* dh;      // [n, H] stride dh_stride: gradient reaching o * tanh(c)
  int64_t dh_stride;
  const scalar_t* dy;      // [n, H] stride H, added to dh (nullptr: none)
  const scalar_t* gates;   // [n, 4H] stride 4H
  const scalar_t* cells;   // [n, H] stride H
  const scalar_t* c_prev;  // [n, H] stride H
  scalar_t* dc;            // [n, H] stride H: gradient reaching c in, reaching c_prev out
  scalar_t* dgates;        // [n, 4H] stride 4H: gradients of the gate pre-activations
  scalar_t* r;             // [n, H] stride H: o * tanh(c) recomputed (nullptr: not needed)
};

template <typename scalar_t>
struct GruForwardRows {
  int64_t rows, hidden;    // n, H
  const scalar_t* xg;      // [n, 3H] stride xg_stride: W_ih x
  int64_t xg_stride;
  const scalar_t* hg;      // [n, 3H] stride 3H: W_hh h_prev
  const scalar_t* b_ih;    // [3H] added to xg (nullptr: no bias)
  const scalar_t* b_hh;    // [3H] added to hg (nullptr: no bias)
  const scalar_t* h_prev;  // [n, H] stride H
  scalar_t* gates;         // [n, 4H] stride 4H: r, z, n, h_n (nullptr: not kept)
  scalar_t* h;             // [n, H] stride H
};

template <typename scalar_t>
struct GruBackwardRows {
  int64_t rows, hidden;    // n, H
  const scalar_t* dh_rec;  // [n, H] stride H: gradient through W_hh from the next step (or dh_n)
  scalar_t* carry;         // [n, H] stride H: direct gradient from the next step in, to h_prev out
  const scalar_t* dy;      // [n, H] stride H
  const scalar_t* gates;   // [n, 4H] stride 4H
  const scalar_t* h_prev;  // [n, H] stride H
  scalar_t* dxg;           // [n, 3H] stride 3H: gradients of the input-side pre-activations
  scalar_t* dhg;           // [n, 3H] stride 3H: gradients of the recurrent-side pre-activations
};

// out[n, N] = a[n, K] B, B packed by rnn_cpu_loop.h's pack_panels into panels of `panel_width`
// columns (common/cpu_gemm.h): the recurrent GEMM of one step.
// With a second operand a2 (k1 < k_end): out = [a, a2] B, a [n, k1] and a2 [n, k_end - k1] side
// by side. With k_begin > 0 or k_end < K only rows [k_begin, k_end) of B take part (a then has
// k1 - k_begin columns).
template <typename scalar_t>
struct RecurrentGemm {
  int64_t rows, k, n;      // n, K, N
  const scalar_t* a;       // [n, k1 - k_begin] stride lda
  int64_t lda;
  const scalar_t* packed;  // [ceil(N / panel_width)][K][panel_width]
  scalar_t* out;           // [n, N] stride ldo
  int64_t ldo;
  int64_t k1 = -1;         // a covers rows [k_begin, k1) of B (-1: up to k_end)
  const scalar_t* a2 = nullptr;  // [n, k_end - k1] stride lda2
  int64_t lda2 = 0;
  int64_t k_begin = 0;     // the first row of B taking part
  int64_t k_end = -1;      // one past the last (-1: K)
};

// One part of the recurrent GEMM's B, written into rows [k0, k0 + rows) of the packed buffer
// [ceil(N / panel_width)][K][panel_width] (zero beyond column N).
template <typename scalar_t>
struct PackPart {
  const scalar_t* src;     // [rows, N]: element (j, c) at src[j * row_stride + c * column_stride]
  int64_t rows, row_stride, column_stride;
  int64_t k, n, k0;        // K, N of the packed B; the part's first row in it
  scalar_t* packed;
  // Column c < n of the packed B is column (c / block) * block_stride + c % block of the part
  // (0: column c): a chunk's gate blocks side by side (rnn_cpu_split.h).
  int64_t block = 0, block_stride = 0;
};

template <typename scalar_t>
struct CpuPointwise {
  void (*lstm_forward)(const LstmForwardRows<scalar_t>&);
  void (*lstm_backward)(const LstmBackwardRows<scalar_t>&);
  void (*gru_forward)(const GruForwardRows<scalar_t>&);
  void (*gru_backward)(const GruBackwardRows<scalar_t>&);
  void (*recurrent_gemm)(const RecurrentGemm<scalar_t>&);
  void (*pack)(const PackPart<scalar_t>&);  // B for recurrent_gemm, one part at a time
  int64_t panel_width;     // columns per packed panel of recurrent_gemm's B
};

namespace cpu_default {
template <typename scalar_t>
CpuPointwise<scalar_t> pointwise_kernels();
}
namespace cpu_avx2 {
template <typename scalar_t>
CpuPointwise<scalar_t> pointwise_kernels();
}
namespace cpu_avx512 {
template <typename scalar_t>
CpuPointwise<scalar_t> pointwise_kernels();
}

}  // namespace rnn
}  // namespace stseq
