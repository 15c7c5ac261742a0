// The LSTM forward with each step's hidden units split across threads, for batches too small for
// row tiles (rnn_cpu_loop.h's kMinTileRows: up to 31 rows run as one tile on one thread). What
// oneDNN does with each step's GEMM, but fused with the pointwise step: chunk c owns units
// [u0, u1) and computes, per step, its four gates' pre-activations [x_t, h_prev] [W_ih; W_hh]^T
// (its own columns of the packed weights: the i, f, g, o columns of its units side by side,
// [I + H, 4 (u1 - u0)]) and then h[:, u0:u1] and c[:, u0:u1] (and, training, its units of the
// kept gates [N, 4H] and cells [N, H] in their usual layout). A step needs all of h_prev, so
// each step is one phase of common/cpu_phases.h: the chunks go to whichever thread claims them
// first, and a descheduled thread holds at most the chunk it is computing. The first phase packs
// the weights, chunk by chunk (pack_unit_chunk). Where the one-thread loop projects first
// (lstm_projects_first), the input projection of every step comes next, as one more phase
// (items: the same chunks of columns, by blocks of rows).
//
// The path is taken (lstm_split_plan) with two or more threads, no projection (proj_size), one
// tile of rows, and enough work per step (kMinSplitMultiplyAdds, kMinSplitWeightBytes), unless
// a recent split call waited for a descheduled thread (kBackoffCalls). Its results equal the
// one-thread path's bitwise (the same products in the same order per output), so
// lstm_split_forward_calls() counts its calls for the tests (stseq._C._lstm_split_forward_calls).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <vector>

#include "common/cpu_phases.h"
#include "rnn/rnn_cpu_kernels.h"
#include "rnn/rnn_cpu_loop.h"
#include "rnn/rnn_cpu_split_count.h"
#include "rnn/rnn_plan.h"

namespace stseq {
namespace rnn {
namespace {

// When a step is worth splitting: at least kMinSplitMultiplyAdds per step ([rows, I + H] x
// [I + H, 4H]), or packed weights of at least kMinSplitWeightBytes (split, each core reads its
// half of them, which then stays in its L2; one thread reads all of them every step). Below
// both, the per-step handover between threads costs what the split saves. Measured (issue 17,
// the 2-core machine quiet, two threads, L = 50, I = H, float32, inference, interleaved with the
// one-thread path, ratios one-thread time / split time; benchmarks/results/rnn/
// split-2026-12-07.log, which also holds the ratios against torch.nn.LSTM):
//   1.0 M multiply-adds: H = 128, B = 8: 1.24-1.28;  H = 256, B = 16 (4.2 M): 1.91-1.98
//   0.5 M: H = 256, B = 1 (2 MB of weights): 1.12-1.37;  H = 128, B = 4: 0.92;
//          H = 64, B = 16: 0.94;  0.26 M: H = 64, B = 8: 0.99;  0.13 M: H = 128, B = 1: 0.86-0.98
constexpr int64_t kMinSplitMultiplyAdds = int64_t{1} << 20;
constexpr int64_t kMinSplitWeightBytes = int64_t{1} << 20;

// Units per chunk: one panel width of the packed weights (32 in float32 with AVX-512), so that
// a chunk's four gate blocks are four whole panels. Half and twice that measured alike.
constexpr int64_t kChunkPanels = 4;

// After a split call whose calling thread waited for a descheduled (or late) helper, the next
// kBackoffCalls calls that would split run the one-thread path instead: on a machine where
// another process keeps a core busy most split calls would wait for a time slice, while one of
// kBackoffCalls + 1 costs little (issue 17's floor: no case below 0.8x torch.nn under load).
constexpr int64_t kBackoffCalls = 16;

inline std::atomic<int64_t>& split_backoff() {
  static std::atomic<int64_t> calls{0};
  return calls;
}

// Rows per item of the input projection (where it comes first): a
// chunk's columns for all L * B rows took up to 0.6 ms (L = 50, B = 8, H = 256), past
// cpu_phases.h's kStallTime when the other thread waited for the last one.
constexpr int64_t kProjectionRows = 64;

struct SplitPlan {
  int64_t width = 0;    // units per chunk (the last one may have fewer)
  int64_t chunks = 0;   // 0: not split
  int64_t helpers = 0;  // threads beside the calling one
};

inline SplitPlan lstm_split_plan(const LstmForward& f, int64_t panel_width) {
  const LayerShape& shape = f.shape;
  const int64_t rows = f.steps.active_rows(), H = shape.hidden;
  const int64_t threads = at::get_num_threads();
  if (shape.has_proj || threads < 2 || at::in_parallel_region()) return {};
  if (rows == 0 || rows / kMinTileRows >= 2) return {};  // row tiles (cut_tiles) split it
  const int64_t k = shape.input_size + shape.proj;
  if (rows * k * shape.gates < kMinSplitMultiplyAdds &&
      k * shape.gates * static_cast<int64_t>(f.x.element_size()) < kMinSplitWeightBytes) {
    return {};
  }
  const int64_t width = panel_width * kChunkPanels / 4;
  const int64_t chunks = (H + width - 1) / width;
  if (chunks < 2) return {};
  if (split_backoff().load(std::memory_order_relaxed) > 0 &&
      split_backoff().fetch_sub(1, std::memory_order_relaxed) > 0) {
    return {};
  }
  return {width, chunks, std::min(threads, chunks) - 1};
}

// One of [W_ih^T; W_hh^T]'s parts, W^T [K_i, 4H] of W [4H, K_i]: element (k, n) at
// data[k * row_stride + n * column_stride]. Raw, for the items (they run on helper threads too).
template <typename scalar_t>
struct WeightPart {
  const scalar_t* data;
  int64_t rows, row_stride, column_stride;

  static WeightPart of(const at::Tensor& weight) {  // weight [4H, K_i]
    return {weight.data_ptr<scalar_t>(), weight.size(1), weight.stride(1), weight.stride(0)};
  }
};

// Chunk c of [W_ih^T; W_hh^T] ([I + H, 4H]) packed: its columns are the i, f, g, o columns of
// units [c * width, ...) side by side (4 blocks of its width), packed into panels (rnn_cpu_loop.h's
// pack_panels) at c * panels_per_chunk panels from the start of `packed`
// ([chunks * panels_per_chunk, I + H, panel width]). The split's first phase, one item a chunk:
// packing all of it took 0.2 ms at I = H = 256 on one thread, a tenth of a B = 8 call.
template <typename scalar_t>
void pack_unit_chunk(const CpuPointwise<scalar_t>& kernels, const WeightPart<scalar_t> (&parts)[2],
                     int64_t hidden, int64_t k, const SplitPlan& plan, int64_t panels_per_chunk,
                     int64_t c, scalar_t* packed) {
  const int64_t u0 = c * plan.width, width = std::min(plan.width, hidden - u0);
  scalar_t* dst = packed + c * panels_per_chunk * k * kernels.panel_width;
  int64_t k0 = 0;
  for (const WeightPart<scalar_t>& part : parts) {
    kernels.pack({part.data + u0 * part.column_stride, part.rows, part.row_stride,
                  part.column_stride, k, 4 * width, k0, dst, width, hidden});
    k0 += part.rows;
  }
}

template <typename scalar_t>
void lstm_split_loop(const LstmForward& f, const SplitPlan& plan) {
  const LayerShape& shape = f.shape;
  const Steps& steps = f.steps;
  const int64_t H = shape.hidden, P = shape.proj, G = shape.gates, I = shape.input_size;
  const int64_t K = I + P;
  const auto& kernels = pointwise<scalar_t>();
  const int64_t panel = kernels.panel_width;
  const int64_t panels_per_chunk = (4 * plan.width + panel - 1) / panel;
  const at::Tensor packed =  // [chunks * panels_per_chunk, K, panel], by the first phase
      at::empty({plan.chunks * panels_per_chunk, K, panel}, f.x.options());
  const bool project_first = lstm_projects_first<scalar_t>(shape, steps);  // as one thread
  // Pre-activations, chunk c's four blocks at columns [4 c width, ...): xg [N, 4H] (x W_ih^T
  // of every row, with project_first), hg [rows, 4H] (the step's product).
  const at::Tensor xg = project_first ? at::empty({steps.rows, G}, f.x.options()) : at::Tensor();
  const at::Tensor hg = at::empty({steps.active_rows(), G}, f.x.options());
  int64_t num_steps = 0;
  while (num_steps < steps.num_steps() && steps.sizes[num_steps] > 0) ++num_steps;
  // The input projection's items: each chunk's columns for a block of kProjectionRows rows.
  const int64_t row_blocks = (steps.rows + kProjectionRows - 1) / kProjectionRows;
  std::vector<int64_t> items(num_steps, plan.chunks);
  if (project_first) items.insert(items.begin(), plan.chunks * row_blocks);
  items.insert(items.begin(), plan.chunks);  // the packing of the weights
  // Raw pointers only inside the items (they run on helper threads too).
  const scalar_t* x = f.x.data_ptr<scalar_t>();
  const scalar_t* h0 = f.h0.data_ptr<scalar_t>();
  const scalar_t* bias = f.bias.defined() ? f.bias.data_ptr<scalar_t>() : nullptr;
  scalar_t* packed_data = packed.data_ptr<scalar_t>();
  const WeightPart<scalar_t> parts[2] = {WeightPart<scalar_t>::of(f.weight_ih),
                                         WeightPart<scalar_t>::of(f.weight_hh)};
  scalar_t* xg_data = project_first ? xg.data_ptr<scalar_t>() : nullptr;
  scalar_t* hg_data = hg.data_ptr<scalar_t>();
  scalar_t* hidden = f.hidden.data_ptr<scalar_t>();
  scalar_t* c_state = f.c_state.data_ptr<scalar_t>();
  scalar_t* gates = f.keep_activations ? f.gates.data_ptr<scalar_t>() : nullptr;
  scalar_t* cells = f.keep_activations ? f.cells.data_ptr<scalar_t>() : nullptr;
  auto chunk = [&](int64_t phase, int64_t item) {
    if (phase == 0) {
      return pack_unit_chunk<scalar_t>(kernels, parts, H, K, plan, panels_per_chunk, item,
                                       packed_data);
    }
    --phase;
    const bool projection = project_first && phase == 0;
    const int64_t c = projection ? item / row_blocks : item;
    const int64_t u0 = c * plan.width, width = std::min(plan.width, H - u0);
    const scalar_t* weights = packed_data + c * panels_per_chunk * K * panel;
    scalar_t* const xg_chunk = project_first ? xg_data + 4 * u0 : nullptr;
    scalar_t* const hg_chunk = hg_data + 4 * u0;
    if (projection) {  // x W_ih^T for a block of rows: rows [0, I) of the weights
      const int64_t r0 = item % row_blocks * kProjectionRows;
      kernels.recurrent_gemm({std::min(kProjectionRows, steps.rows - r0), K, 4 * width,
                              x + r0 * I, I, weights, xg_chunk + r0 * G, G, I, nullptr, 0, 0,
                              I});
      return;
    }
    const int64_t s = phase - (project_first ? 1 : 0);
    const int64_t n = steps.sizes[s], row = steps.offsets[s];
    const scalar_t* h_prev = s == 0 ? h0 : hidden + steps.offsets[s - 1] * P;
    if (project_first) {
      kernels.recurrent_gemm({n, K, 4 * width, h_prev, P, weights, hg_chunk, G, -1, nullptr, 0,
                              I});
    } else {
      kernels.recurrent_gemm({n, K, 4 * width, x + row * I, I, weights, hg_chunk, G, I, h_prev,
                              P});
    }
    kernels.lstm_forward({n, width, width, H, project_first ? xg_chunk + row * G : nullptr, G,
                          hg_chunk, G, bias != nullptr ? bias + u0 : nullptr,
                          c_state + u0, gates != nullptr ? gates + row * G + u0 : nullptr,
                          cells != nullptr ? cells + row * H + u0 : nullptr,
                          hidden + row * P + u0, P});
  };
  lstm_split_forward_calls().fetch_add(1, std::memory_order_relaxed);
  if (run_phases(items, plan.helpers, chunk)) {
    split_backoff().store(kBackoffCalls, std::memory_order_relaxed);
  }
}

}  // namespace
}  // namespace rnn
}  // namespace stseq
