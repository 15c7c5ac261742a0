// The LSTM/GRU part of the CUDA launcher (recurrent/recurrent_cuda.cu): rnn::CudaLoops, the four
// time loops the device-independent entry points (rnn_forward.h, rnn_backward.h) call through
// the launcher. Layout, semantics and the plan (step order, input projection, buffers, final
// states, weight-gradient GEMMs) are the entry points' (rnn_args.h, rnn_plan.h); the per-unit
// gate math is lstm.h's and gru.h's. Half types accumulate in float32 and keep the cell state,
// the recurrent gradients and the saved activations in float32.
//
// Stepwise loop (any hidden size, projection, every dtype). Forward, per step: one cuBLAS GEMM
// (at::mm) hg = h_prev W_hh^T over the step's active rows only (rows are sorted by length, so
// finished rows are a suffix that is skipped), then one fused pointwise kernel, a thread per
// (row, unit), that reads xg + hg and the cell state and writes h, c and the saved activations.
// Backward, per step in reverse: one pointwise kernel writes the gate gradients of the active
// rows, then one GEMM dh_prev = dgates W_hh. Both pointwise kernels are the element kernel the
// time-aware cells use too (common/cuda_element_kernel.cuh) over a step of rnn_cuda_stepwise.cuh.
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
//
// Files: rnn_cuda_common.cuh (launch sizes), rnn_cuda_stepwise.cuh (the stepwise pointwise
// steps and their launch in the shared element kernel), rnn_cuda_persistent.cuh (the persistent
// kernels) and rnn_cuda_persistent_plan.cuh (their plan and launch); this file holds the host
// helpers and the four time loops, each the persistent kernel when the plan takes it, else the
// stepwise loop.

#pragma once

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <cstdint>

#include "rnn/rnn.h"
#include "rnn/rnn_args.h"
#include "rnn/rnn_cuda_common.cuh"
#include "rnn/rnn_cuda_persistent.cuh"
#include "rnn/rnn_cuda_persistent_plan.cuh"
#include "rnn/rnn_cuda_stepwise.cuh"
#include "rnn/rnn_plan.h"

namespace stseq {
namespace rnn {
namespace {

void require_ran(bool ran, Algorithm algorithm, CellKind kind) {
  TORCH_CHECK_VALUE(ran || algorithm != Algorithm::kPersistent, "algorithm='persistent' cannot "
                    "run this ", cell_name(kind), " layer here: it needs an sm_90 GPU, "
                    "hidden_size <= ", kMaxRanks * kUnits, ", no projection, float32/float16/"
                    "bfloat16 input and the shared memory it asks for; use 'auto' or 'stepwise'");
}

template <typename T>
T* data_or_null(const at::Tensor& t) {
  return t.numel() > 0 ? t.data_ptr<T>() : nullptr;
}

struct CudaLoops {
  template <typename scalar_t>
  static void lstm_loop(const LstmForward& f) {
    using acc_t = at::opmath_type<scalar_t>;
    const LayerShape& shape = f.shape;
    const Steps& steps = f.steps;
    const int64_t H = shape.hidden, P = shape.proj, G = shape.gates;
    const at::TensorOptions options = f.x.options();
    const at::Tensor xg = input_projection(f.x, f.weight_ih, f.bias);  // [N, 4H]
    const at::Tensor w_hh = f.weight_hh.contiguous();
    PersistentForward<scalar_t> params{};
    params.xg = xg.data_ptr<scalar_t>();
    params.w_hh = w_hh.data_ptr<scalar_t>();
    params.h0 = f.h0.data_ptr<scalar_t>();
    params.c_state = f.c_state.data_ptr<acc_t>();
    params.hidden_out = f.hidden.data_ptr<scalar_t>();
    params.gates = data_or_null<acc_t>(f.gates);
    params.cells = data_or_null<acc_t>(f.cells);
    const bool ran =
        run_persistent_forward<scalar_t, true>(params, shape, steps, f.algorithm, f.x.device());
    if (ran) return;
    require_ran(ran, f.algorithm, CellKind::kLstm);
    const at::Tensor hg = at::empty({shape.batch, G}, options);  // [B, 4H]
    const at::Tensor r = shape.has_proj ? at::empty({shape.batch, H}, options) : at::Tensor();
    const at::Tensor w_hh_t = f.weight_hh.t();
    for (int64_t s = 0; s < steps.num_steps(); ++s) {
      const int64_t n = steps.sizes[s];
      if (n == 0) break;
      const int64_t row = steps.offsets[s];
      mm_into(hg.narrow(0, 0, n), previous_step(steps, f.h0, f.hidden, s, n), w_hh_t);
      launch_step(LstmStepForward<scalar_t, acc_t>{
          n, H, xg.data_ptr<scalar_t>() + row * G, hg.data_ptr<scalar_t>(),
          f.c_state.data_ptr<acc_t>(),
          f.keep_activations ? f.gates.data_ptr<acc_t>() + row * G : nullptr,
          f.keep_activations ? f.cells.data_ptr<acc_t>() + row * H : nullptr,
          shape.has_proj ? r.data_ptr<scalar_t>()
                         : f.hidden.data_ptr<scalar_t>() + row * P});
      if (shape.has_proj) {
        mm_into(f.hidden.narrow(0, row, n), r.narrow(0, 0, n), f.weight_hr.t());
      }
    }
  }

  template <typename scalar_t>
  static void lstm_backward_loop(const LstmBackward& b) {
    using acc_t = at::opmath_type<scalar_t>;
    const LayerShape& shape = b.shape;
    const Steps& steps = b.steps;
    const int64_t H = shape.hidden, P = shape.proj, G = shape.gates;
    const at::TensorOptions options = b.dy.options();
    const at::Tensor w_hh = b.weight_hh.contiguous();
    PersistentBackward<scalar_t> params{};
    params.w_hh = w_hh.data_ptr<scalar_t>();
    params.dy = b.dy.data_ptr<scalar_t>();
    params.gates = b.gates.data_ptr<acc_t>();
    params.cells = b.cells.data_ptr<acc_t>();
    params.c0 = b.c0.data_ptr<acc_t>();
    params.dh = b.dh.data_ptr<scalar_t>();
    params.dc = b.dc.data_ptr<acc_t>();
    params.dxg = b.dgates.data_ptr<scalar_t>();
    const bool ran =
        run_persistent_backward<scalar_t, true>(params, shape, steps, b.algorithm, b.dy.device());
    if (ran) return;
    require_ran(ran, b.algorithm, CellKind::kLstm);
    const at::Tensor dr = shape.has_proj ? at::empty({shape.batch, H}, options) : at::Tensor();
    for (int64_t s = steps.num_steps() - 1; s >= 0; --s) {
      const int64_t n = steps.sizes[s];
      if (n == 0) continue;
      const int64_t row = steps.offsets[s];
      LstmStepBackward<scalar_t, acc_t> rows{
          n, H, b.dh.data_ptr<scalar_t>(), b.dy.data_ptr<scalar_t>() + row * P,
          b.gates.data_ptr<acc_t>() + row * G, b.cells.data_ptr<acc_t>() + row * H,
          previous_step(steps, b.c0, b.cells, s, n).data_ptr<acc_t>(),
          b.dc.data_ptr<acc_t>(), b.dgates.data_ptr<scalar_t>() + row * G, nullptr};
      if (shape.has_proj) {
        const at::Tensor dh_rows = b.dh_total.narrow(0, row, n);
        add_into(dh_rows, b.dh.narrow(0, 0, n), b.dy.narrow(0, row, n));
        mm_into(dr.narrow(0, 0, n), dh_rows, b.weight_hr);
        rows.dh = dr.data_ptr<scalar_t>();
        rows.dy = nullptr;
        rows.r = b.r.data_ptr<scalar_t>() + row * H;
      }
      launch_step(rows);
      mm_into(b.dh.narrow(0, 0, n), b.dgates.narrow(0, row, n), b.weight_hh);
    }
  }

  template <typename scalar_t>
  static void gru_loop(const GruForward& f) {
    using acc_t = at::opmath_type<scalar_t>;
    const LayerShape& shape = f.shape;
    const Steps& steps = f.steps;
    const int64_t H = shape.hidden, G = shape.gates;
    const at::Tensor xg = input_projection(f.x, f.weight_ih, f.bias_ih);  // [N, 3H]
    const at::Tensor w_hh = f.weight_hh.contiguous();
    PersistentForward<scalar_t> params{};
    params.xg = xg.data_ptr<scalar_t>();
    params.w_hh = w_hh.data_ptr<scalar_t>();
    params.b_hh = f.bias_hh.defined() ? f.bias_hh.data_ptr<scalar_t>() : nullptr;
    params.h0 = f.h0.data_ptr<scalar_t>();
    params.hidden_out = f.hidden.data_ptr<scalar_t>();
    params.gates = data_or_null<acc_t>(f.gates);
    const bool ran =
        run_persistent_forward<scalar_t, false>(params, shape, steps, f.algorithm, f.x.device());
    if (ran) return;
    require_ran(ran, f.algorithm, CellKind::kGru);
    const at::Tensor hg = at::empty({shape.batch, G}, f.x.options());  // [B, 3H]
    const at::Tensor w_hh_t = f.weight_hh.t();
    for (int64_t s = 0; s < steps.num_steps(); ++s) {
      const int64_t n = steps.sizes[s];
      if (n == 0) break;
      const int64_t row = steps.offsets[s];
      const at::Tensor h_prev = previous_step(steps, f.h0, f.hidden, s, n);
      mm_into(hg.narrow(0, 0, n), h_prev, w_hh_t);
      launch_step(GruStepForward<scalar_t, acc_t>{
          n, H, xg.data_ptr<scalar_t>() + row * G, hg.data_ptr<scalar_t>(),
          params.b_hh, h_prev.data_ptr<scalar_t>(),
          f.keep_activations ? f.gates.data_ptr<acc_t>() + row * 4 * H : nullptr,
          f.hidden.data_ptr<scalar_t>() + row * H});
    }
  }

  template <typename scalar_t>
  static void gru_backward_loop(const GruBackward& b) {
    using acc_t = at::opmath_type<scalar_t>;
    const LayerShape& shape = b.shape;
    const Steps& steps = b.steps;
    const int64_t H = shape.hidden, G = shape.gates;
    const at::Tensor w_hh = b.weight_hh.contiguous();
    PersistentBackward<scalar_t> params{};
    params.w_hh = w_hh.data_ptr<scalar_t>();
    params.dy = b.dy.data_ptr<scalar_t>();
    params.gates = b.gates.data_ptr<acc_t>();
    params.hidden = b.hidden.data_ptr<scalar_t>();
    params.h0 = b.h0.data_ptr<scalar_t>();
    params.dh = b.dh.data_ptr<scalar_t>();
    params.dxg = b.dxg.data_ptr<scalar_t>();
    params.dhg = b.dhg.data_ptr<scalar_t>();
    // The persistent kernel adds the direct part to dh itself (carry stays zero).
    const bool ran =
        run_persistent_backward<scalar_t, false>(params, shape, steps, b.algorithm, b.dy.device());
    if (ran) return;
    require_ran(ran, b.algorithm, CellKind::kGru);
    for (int64_t s = steps.num_steps() - 1; s >= 0; --s) {
      const int64_t n = steps.sizes[s];
      if (n == 0) continue;
      const int64_t row = steps.offsets[s];
      launch_step(GruStepBackward<scalar_t, acc_t>{
          n, H, b.dh.data_ptr<scalar_t>(), b.carry.data_ptr<acc_t>(),
          b.dy.data_ptr<scalar_t>() + row * H, b.gates.data_ptr<acc_t>() + row * 4 * H,
          previous_step(steps, b.h0, b.hidden, s, n).data_ptr<scalar_t>(),
          b.dxg.data_ptr<scalar_t>() + row * G, b.dhg.data_ptr<scalar_t>() + row * G});
      mm_into(b.dh.narrow(0, 0, n), b.dhg.narrow(0, row, n), b.weight_hh);
    }
  }
};

}  // namespace
}  // namespace rnn
}  // namespace stseq
