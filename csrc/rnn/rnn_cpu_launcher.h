// The LSTM/GRU part of the CPU launcher (recurrent/recurrent_cpu.cpp): rnn::CpuLoops, the four
// time loops the device-independent entry points (rnn_forward.h, rnn_backward.h) call through
// the launcher, over the step plan and buffers of rnn_plan.h.
//
// Forward, per layer and direction: the LSTM computes each step's [x_t, h_prev] [W_ih; W_hh]^T
// in one packed product (below), or at few rows per step (lstm_projects_first) x W_ih^T for all
// rows first and h_prev W_hh^T per step (both on the packed weights); the GRU, whose
// candidate gate needs the two parts apart, xg = W_ih x for all rows as one GEMM (rnn_plan.h;
// at up to kMaxRowsProjectingHere rows per step the packed GEMM on the calling thread); the
// biases are added in the step. The active batch rows are split into tiles of at least
// kMinTileRows rows, at most one per thread (about equal total length; common/cpu_tiles.h),
// and each thread carries its tile through every step on its own: hg = W_hh h_prev for the
// tile's active rows (common/cpu_gemm.h: W_hh packed once per call, a register-blocked loop on
// the tile's thread; a BLAS call per step re-packed W_hh every step and went through the
// dispatcher), then the
// fused pointwise kernel (rnn_cpu_pointwise.h) adds the biases and writes the new states. Rows
// whose sequence has ended drop out of the tile (rows are sorted by length), so no work is
// spent on padding. No thread synchronises with another inside the loop. A batch of one tile
// with threads to spare (up to 31 rows) splits each step's hidden units across the threads
// instead (rnn_cpu_split.h), where the step is big enough to pay for a handover per step.
//
// Backward: the same tiles walk the steps in reverse, computing the gate gradients of each step
// and the recurrent gradient dh_prev = dgates W_hh (the same packed loop); W_ih, W_hh (and W_hr)
// gradients, the input gradient and the bias gradient (a column sum) are large GEMMs /
// reductions after the loop.
#pragma once

#include <ATen/ATen.h>

#include "common/cpu_tiles.h"
#include "rnn/rnn_cpu_kernels.h"
#include "rnn/rnn_cpu_loop.h"
#include "rnn/rnn_cpu_split.h"
#include "rnn/rnn_plan.h"

namespace stseq {
namespace rnn {

struct CpuLoops {
  template <typename scalar_t>
  static void lstm_loop(const LstmForward& f) {
    const LayerShape& shape = f.shape;
    const Steps& steps = f.steps;
    const int64_t H = shape.hidden, P = shape.proj, G = shape.gates, I = shape.input_size;
    const at::TensorOptions options = f.x.options();
    const bool keep = f.keep_activations;
    const at::Tensor w_hr_t = shape.has_proj ? f.weight_hr.t() : at::Tensor();  // [H, P]
    const auto& kernels = pointwise<scalar_t>();
    // One tile of rows with threads to spare: the hidden units split across them per step.
    if (const SplitPlan plan = lstm_split_plan(f, kernels.panel_width); plan.chunks > 0) {
      return lstm_split_loop<scalar_t>(f, plan);
    }
    // Each step computes [x_t, h_prev] [W_ih; W_hh]^T for its rows in one packed product: the
    // input projection of all steps is never written to memory and read back (at B = 256,
    // L = 50, H = 128 that buffer is 26 MB), and the bias is added in the step.
    const at::Tensor packed =
        pack_panels<scalar_t>(kernels, {f.weight_ih.t(), f.weight_hh.t()});  // [I + P, 4H]
    // With project_first, xg = x W_ih^T for every row first, on this thread (rows [0, I) of the
    // packed weights), and each step multiplies h_prev by rows [I, I + P) only.
    const bool project_first = lstm_projects_first<scalar_t>(shape, steps);
    const at::Tensor xg = project_first ? at::empty({steps.rows, G}, options) : at::Tensor();
    if (project_first && steps.rows > 0) {
      kernels.recurrent_gemm({steps.rows, I + P, G, f.x.data_ptr<scalar_t>(), I,
                              packed.data_ptr<scalar_t>(), xg.data_ptr<scalar_t>(), G, I,
                              nullptr, 0, 0, I});
    }
    for_each_tile(cut_tiles(steps.sizes, kMinTileRows), [&](const CpuTile& tile) {
      const int64_t tile_rows = tile.end - tile.begin;
      const at::Tensor hg = at::empty({tile_rows, G}, options);  // [rows, 4H] pre-activations
      const at::Tensor r = shape.has_proj ? at::empty({tile_rows, H}, options) : at::Tensor();
      for (int64_t s = 0; s < steps.num_steps(); ++s) {
        const int64_t n = tile_rows_at(steps, tile, s);
        if (n <= 0) break;
        const int64_t row = steps.offsets[s] + tile.begin;
        const scalar_t* h_prev = previous_rows_ptr<scalar_t>(steps, f.h0, f.hidden, tile, s, P);
        if (project_first) {
          kernels.recurrent_gemm({n, I + P, G, h_prev, P, packed.data_ptr<scalar_t>(),
                                  hg.data_ptr<scalar_t>(), G, -1, nullptr, 0, I});
        } else {
          kernels.recurrent_gemm({n, I + P, G, f.x.data_ptr<scalar_t>() + row * I, I,
                                  packed.data_ptr<scalar_t>(), hg.data_ptr<scalar_t>(), G, I,
                                  h_prev, P});
        }
        const LstmForwardRows<scalar_t> rows{
            n, H, H, H, project_first ? xg.data_ptr<scalar_t>() + row * G : nullptr, G,
            hg.data_ptr<scalar_t>(), G,
            f.bias.defined() ? f.bias.data_ptr<scalar_t>() : nullptr,
            f.c_state.data_ptr<scalar_t>() + tile.begin * H,
            keep ? f.gates.data_ptr<scalar_t>() + row * G : nullptr,
            keep ? f.cells.data_ptr<scalar_t>() + row * H : nullptr,
            shape.has_proj ? r.data_ptr<scalar_t>() : f.hidden.data_ptr<scalar_t>() + row * P,
            shape.has_proj ? H : P};
        kernels.lstm_forward(rows);
        if (shape.has_proj) mm_into(f.hidden.narrow(0, row, n), r.narrow(0, 0, n), w_hr_t);
      }
    });
  }

  template <typename scalar_t>
  static void lstm_backward_loop(const LstmBackward& b) {
    const LayerShape& shape = b.shape;
    const Steps& steps = b.steps;
    const int64_t H = shape.hidden, P = shape.proj, G = shape.gates;
    const at::TensorOptions options = b.dy.options();
    const auto& kernels = pointwise<scalar_t>();
    const at::Tensor packed = pack_panels<scalar_t>(kernels, {b.weight_hh});  // [4H, P]
    for_each_tile(cut_tiles(steps.sizes, kMinTileRows), [&](const CpuTile& tile) {
      const at::Tensor dr =
          shape.has_proj ? at::empty({tile.end - tile.begin, H}, options) : at::Tensor();
      for (int64_t s = steps.num_steps() - 1; s >= 0; --s) {
        const int64_t n = tile_rows_at(steps, tile, s);
        if (n <= 0) continue;
        const int64_t row = steps.offsets[s] + tile.begin;
        LstmBackwardRows<scalar_t> rows{
            n, H, b.dh.data_ptr<scalar_t>() + tile.begin * P, P,
            b.dy.data_ptr<scalar_t>() + row * P, b.gates.data_ptr<scalar_t>() + row * G,
            b.cells.data_ptr<scalar_t>() + row * H,
            previous_rows_ptr<scalar_t>(steps, b.c0, b.cells, tile, s, H),
            b.dc.data_ptr<scalar_t>() + tile.begin * H, b.dgates.data_ptr<scalar_t>() + row * G,
            nullptr};
        if (shape.has_proj) {
          const at::Tensor dh_rows = b.dh_total.narrow(0, row, n);
          add_into(dh_rows, b.dh.narrow(0, tile.begin, n), b.dy.narrow(0, row, n));
          mm_into(dr.narrow(0, 0, n), dh_rows, b.weight_hr);
          rows.dh = dr.data_ptr<scalar_t>();
          rows.dh_stride = H;
          rows.dy = nullptr;
          rows.r = b.r.data_ptr<scalar_t>() + row * H;
        }
        kernels.lstm_backward(rows);
        recurrent_product<scalar_t>(kernels, G, P, packed, b.dgates, row, n, b.dh, tile.begin);
      }
    });
  }

  template <typename scalar_t>
  static void gru_loop(const GruForward& f) {
    const Steps& steps = f.steps;
    const int64_t H = f.shape.hidden, G = f.shape.gates;
    const at::TensorOptions options = f.x.options();
    const auto& kernels = pointwise<scalar_t>();
    // The biases are added in the step, not by the GEMM (addmm first copies one into every
    // row). At up to kMaxRowsProjectingHere rows per step the projection (at most 8 L rows)
    // runs on this thread through the packed GEMM: at::mm's threads wait for a busy core
    // (issue 17, two threads, one core busy, B = 1, H = 128: 13 ms against torch.nn's 1.5 ms).
    const bool project_here = steps.active_rows() <= kMaxRowsProjectingHere;
    const at::Tensor xg = project_here  // [N, 3H]
                              ? at::empty({steps.rows, G}, options)
                              : input_projection(f.x, f.weight_ih, at::Tensor());
    if (project_here && steps.rows > 0) {
      const at::Tensor packed_ih =
          pack_panels<scalar_t>(kernels, {f.weight_ih.t()});  // [I, 3H]
      recurrent_product<scalar_t>(kernels, f.x.size(1), G, packed_ih, f.x, 0, steps.rows, xg, 0);
    }
    const at::Tensor packed = pack_panels<scalar_t>(kernels, {f.weight_hh.t()});  // [H, 3H]
    const scalar_t* b_ih = f.bias_ih.defined() ? f.bias_ih.data_ptr<scalar_t>() : nullptr;
    const scalar_t* b_hh = f.bias_hh.defined() ? f.bias_hh.data_ptr<scalar_t>() : nullptr;
    for_each_tile(cut_tiles(steps.sizes, kMinTileRows), [&](const CpuTile& tile) {
      const at::Tensor hg = at::empty({tile.end - tile.begin, G}, options);  // [rows, 3H]
      for (int64_t s = 0; s < steps.num_steps(); ++s) {
        const int64_t n = tile_rows_at(steps, tile, s);
        if (n <= 0) break;
        const int64_t row = steps.offsets[s] + tile.begin;
        const scalar_t* h_prev = previous_rows_ptr<scalar_t>(steps, f.h0, f.hidden, tile, s, H);
        recurrent_product<scalar_t>(kernels, H, G, packed, s == 0 ? f.h0 : f.hidden,
                                    previous_row(steps, tile, s), n, hg, 0);
        kernels.gru_forward(
            {n, H, xg.data_ptr<scalar_t>() + row * G, G, hg.data_ptr<scalar_t>(), b_ih, b_hh,
             h_prev, f.keep_activations ? f.gates.data_ptr<scalar_t>() + row * 4 * H : nullptr,
             f.hidden.data_ptr<scalar_t>() + row * H});
      }
    });
  }

  template <typename scalar_t>
  static void gru_backward_loop(const GruBackward& b) {
    const Steps& steps = b.steps;
    const int64_t H = b.shape.hidden, G = b.shape.gates;
    const auto& kernels = pointwise<scalar_t>();
    const at::Tensor packed = pack_panels<scalar_t>(kernels, {b.weight_hh});  // [3H, H]
    for_each_tile(cut_tiles(steps.sizes, kMinTileRows), [&](const CpuTile& tile) {
      for (int64_t s = steps.num_steps() - 1; s >= 0; --s) {
        const int64_t n = tile_rows_at(steps, tile, s);
        if (n <= 0) continue;
        const int64_t row = steps.offsets[s] + tile.begin;
        kernels.gru_backward({n, H, b.dh.data_ptr<scalar_t>() + tile.begin * H,
                              b.carry.data_ptr<scalar_t>() + tile.begin * H,
                              b.dy.data_ptr<scalar_t>() + row * H,
                              b.gates.data_ptr<scalar_t>() + row * 4 * H,
                              previous_rows_ptr<scalar_t>(steps, b.h0, b.hidden, tile, s, H),
                              b.dxg.data_ptr<scalar_t>() + row * G,
                              b.dhg.data_ptr<scalar_t>() + row * G});
        recurrent_product<scalar_t>(kernels, G, H, packed, b.dhg, row, n, b.dh, tile.begin);
      }
    });
  }
};

}  // namespace rnn
}  // namespace stseq
