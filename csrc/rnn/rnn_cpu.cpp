// CPU time loops of the LSTM/GRU layer ops.
//
// Forward, per layer and direction: the LSTM computes each step's [x_t, h_prev] [W_ih; W_hh]^T
// in one packed product (below), or with at most kMaxRowsProjectingFirst rows per step x W_ih^T
// for all rows first and h_prev W_hh^T per step (both on the packed weights); the GRU, whose
// candidate gate needs the two parts apart, xg = W_ih x for all rows as one GEMM (rnn_driver.h;
// at up to kMaxRowsProjectingFirst rows per step the packed GEMM on the calling thread); the
// biases are added in the step. The
// active batch rows are split into tiles of at least
// kMinTileRows rows, at most one per thread (about equal total length), and each thread carries
// its tile through every step on its own: hg = W_hh h_prev for the tile's active rows
// (common/cpu_gemm.h: W_hh packed once per call, a register-blocked loop on the tile's thread;
// a BLAS call per step re-packed W_hh every step and went through the dispatcher), then the
// fused pointwise kernel (rnn_cpu_pointwise.h) adds the biases and writes the new states. Rows
// whose sequence has ended drop out of the tile (rows are sorted by length), so no work is
// spent on padding. No thread synchronises with another inside the loop.
//
// Backward: the same tiles walk the steps in reverse, computing the gate gradients of each step
// and the recurrent gradient dh_prev = dgates W_hh (the same packed loop); W_ih, W_hh (and W_hr)
// gradients, the input gradient and the bias gradient (a column sum) are large GEMMs /
// reductions after the loop.
#include "rnn/rnn_cpu.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/Version.h>
#include <torch/library.h>

#include <algorithm>
#include <initializer_list>
#include <string>
#include <vector>

#include "rnn/rnn_args.h"
#include "rnn/rnn_driver.h"
#include "rnn/rnn_cpu_kernels.h"

#define STSEQ_CPU_NAMESPACE cpu_default
#include "rnn/rnn_cpu_pointwise.h"

namespace stseq {
namespace {

using rnn::CellKind;
using rnn::LayerShape;
using rnn::Steps;
using rnn::StepOrder;

// The kernels of the widest instruction set this build has and ATen runs here (which honours
// ATEN_CPU_CAPABILITY=default / avx2): AVX-512, AVX2, else the baseline ones.
template <typename scalar_t>
rnn::CpuPointwise<scalar_t> best_kernels() {
  const std::string capability = at::get_cpu_capability();
#if defined(STSEQ_CPU_AVX512)
  if (capability == "AVX512") return rnn::cpu_avx512::pointwise_kernels<scalar_t>();
#endif
#if defined(STSEQ_CPU_AVX2)
  if (capability == "AVX2" || capability == "AVX512") {
    return rnn::cpu_avx2::pointwise_kernels<scalar_t>();
  }
#endif
  return rnn::cpu_default::pointwise_kernels<scalar_t>();
}

template <typename scalar_t>
const rnn::CpuPointwise<scalar_t>& pointwise() {
  static const rnn::CpuPointwise<scalar_t> kernels = best_kernels<scalar_t>();
  return kernels;
}

void check_cpu_dtype(const at::Tensor& input, CellKind kind) {
  TORCH_CHECK_VALUE(input.scalar_type() == at::kFloat || input.scalar_type() == at::kDouble,
                    rnn::cell_name(kind), " layers on CPU support float32 and float64, got ",
                    input.scalar_type());
}

// Batch rows [begin, end) that one thread carries through every step.
struct Tile {
  int64_t begin;
  int64_t end;
};

// A tile's fewest rows: below it a step's work (a few microseconds) does not pay for a second
// thread, and on a busy machine a descheduled thread stalls the whole call (issue 17: B = 1 and
// 8 took 24 ms with two threads against 1 ms with one; the stall there was the parallel fill
// and copy of the weight packing, now on the calling thread). Tiles never wait for each other
// inside the time loop, so a second tile costs one parallel region per call, not per step.
// Measured with two threads on the 2-core machine while three other sessions kept it at a
// load average of 7.4 (L = 50, inference, B = 16/32/64, H = 64/128/256, grains 4, 8, 16 and
// one tile): every grain beat one tile from B = 32 on (B = 64, H = 256: 80-87 ms against
// 108 ms), and between 4, 8 and 16 the medians moved by more than the grains differed; 16
// stays until a quiet run (stseq bench --ops rnn, threads=2 cases) says otherwise.
constexpr int64_t kMinTileRows = 16;

// Up to one tile per thread over the rows that have steps (at least kMinTileRows rows each),
// cut where the running sum of row lengths crosses equal shares of the total, so that each tile
// gets about the same work.
std::vector<Tile> make_tiles(const Steps& steps) {
  const int64_t rows = steps.active_rows();
  std::vector<Tile> tiles;
  if (rows == 0) return tiles;
  const int64_t count = std::clamp<int64_t>(rows / kMinTileRows, 1, at::get_num_threads());
  int64_t total = 0;
  for (int64_t b = 0; b < rows; ++b) total += steps.lengths[b];
  int64_t begin = 0, done = 0;
  for (int64_t b = 0; b < rows; ++b) {
    done += steps.lengths[b];
    const int64_t next = static_cast<int64_t>(tiles.size()) + 1;
    if (next < count && done * count >= total * next) {
      tiles.push_back({begin, b + 1});
      begin = b + 1;
    }
  }
  tiles.push_back({begin, rows});
  return tiles;
}

// fn(tile) for every tile, one thread per tile, each thread running under the caller's
// thread-local state (grad mode, inference mode, dispatch keys) for the ATen calls it makes.
template <typename F>
void for_each_tile(const std::vector<Tile>& tiles, const F& fn) {
  const at::ThreadLocalState state;
  at::parallel_for(0, static_cast<int64_t>(tiles.size()), 1, [&](int64_t first, int64_t last) {
    at::ThreadLocalStateGuard guard(state);
    for (int64_t t = first; t < last; ++t) fn(tiles[t]);
  });
}

// Rows of `tile` active at step s: [tile.begin, tile.begin + n), n <= 0 when none.
int64_t tile_rows_at(const Steps& steps, const Tile& tile, int64_t s) {
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
at::Tensor pack_panels(const rnn::CpuPointwise<scalar_t>& kernels,
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
void recurrent_product(const rnn::CpuPointwise<scalar_t>& kernels, int64_t k, int64_t columns,
                       const at::Tensor& packed, const at::Tensor& a, int64_t a_row, int64_t n,
                       const at::Tensor& out, int64_t out_row) {
  kernels.recurrent_gemm({n, k, columns, a.data_ptr<scalar_t>() + a_row * k, k,
                          packed.data_ptr<scalar_t>(), out.data_ptr<scalar_t>() + out_row * columns,
                          columns});
}

// The first of the tile's rows of h_prev (or c_prev) of step s: a row of the initial state
// [B, width] at the first step, else of step s - 1 in the step-ordered states [N, width] (a
// prefix of that step's rows, since rows only drop out).
int64_t previous_row(const Steps& steps, const Tile& tile, int64_t s) {
  return s == 0 ? tile.begin : steps.offsets[s - 1] + tile.begin;
}

template <typename scalar_t>
const scalar_t* previous_rows_ptr(const Steps& steps, const at::Tensor& first,
                                  const at::Tensor& states, const Tile& tile, int64_t s,
                                  int64_t width) {
  return (s == 0 ? first : states).data_ptr<scalar_t>() + previous_row(steps, tile, s) * width;
}

// The most rows per step for which the LSTM forward computes x W_ih^T for every row of every
// step before the time loop (one product over all L * B rows: W_ih is read once per call) and
// each step multiplies h_prev by W_hh^T only; above it each step computes [x_t, h_prev]
// [W_ih; W_hh]^T in one product (the [N, 4H] projection is never written to memory and read
// back). Measured (issue 17, one thread, L = 50, I = H, inference, CPU time of the calling
// thread, interleaved with torch.nn.LSTM, ratios torch / stseq, projection first vs fused):
//   B = 1:  H = 64 1.24 vs 0.96, H = 128 1.08 vs 0.94, H = 256 1.15 vs 0.63
//   B = 8:  H = 64 1.08 vs 0.98, H = 128 0.88-0.97 vs 0.97-0.98, H = 256 1.13 vs 0.94
//   B = 16: H = 64 0.83-0.98 vs 0.99-1.01, H = 128 0.99 vs 1.08, H = 256 0.98 vs 0.93
//   B = 64: H = 64 0.83 vs 1.01, H = 128 0.80 vs 0.97, H = 256 0.80 vs 0.93
// At few rows the fused product reads all of [W_ih; W_hh] per step for a handful of rows (at
// I = H = 256 that is 2 MB, the size of L2); at many rows the weights are shared by enough rows
// that the fused product runs at the GEMM's speed and the [L * B, 4H] buffer (13 MB at B = 64,
// H = 256) is what costs.
constexpr int64_t kMaxRowsProjectingFirst = 8;

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_layer_cpu(
    const at::Tensor& input, const at::Tensor& h0, const at::Tensor& c0,
    const at::Tensor& weight_ih, const at::Tensor& weight_hh,
    const std::optional<at::Tensor>& bias_ih, const std::optional<at::Tensor>& bias_hh,
    const std::optional<at::Tensor>& weight_hr, const at::Tensor& batch_sizes, bool padded,
    bool reverse, bool keep_activations, std::string_view algorithm) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // a kernel, not a graph
  const LayerShape shape = rnn::check_layer(CellKind::kLstm, input, h0, &c0, weight_ih, weight_hh,
                                            bias_ih, bias_hh, weight_hr);
  check_cpu_dtype(input, CellKind::kLstm);
  rnn::parse_algorithm(algorithm);
  const Steps steps = rnn::make_steps(batch_sizes, padded, shape.batch, shape.rows);
  const int64_t H = shape.hidden, P = shape.proj, G = shape.gates;
  const StepOrder order(steps, reverse, input.device());
  // Each step computes [x_t, h_prev] [W_ih; W_hh]^T for its rows in one packed product: the
  // input projection of all steps is never written to memory and read back (at B = 256, L = 50,
  // H = 128 that buffer is 26 MB), and the bias is added in the step.
  const at::Tensor bias = bias_ih.has_value() ? *bias_ih + *bias_hh : at::Tensor();  // [4H]
  const at::Tensor x = order(input);                                           // [N, I]
  const int64_t I = x.size(1);
  const at::TensorOptions options = input.options();
  const at::Tensor hidden = rnn::step_buffer(steps, P, options);               // [N, P]
  const at::Tensor gates = keep_activations ? rnn::step_buffer(steps, G, options)
                                            : at::empty({0}, options);         // [N, 4H]
  const at::Tensor cells = keep_activations ? rnn::step_buffer(steps, H, options)
                                            : at::empty({0}, options);         // [N, H]
  const at::Tensor c_state = c0.clone(at::MemoryFormat::Contiguous);           // [B, H]
  const at::Tensor h_first = h0.contiguous();                                  // [B, P]
  const at::Tensor w_hr_t = shape.has_proj ? weight_hr->t() : at::Tensor();    // [H, P]
  const bool project_first = steps.active_rows() <= kMaxRowsProjectingFirst;
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "lstm_layer_cpu", [&] {
    const auto& kernels = pointwise<scalar_t>();
    const at::Tensor packed =
        pack_panels<scalar_t>(kernels, {weight_ih.t(), weight_hh.t()});  // [I + P, 4H]
    // With project_first, xg = x W_ih^T for every row first, on this thread (rows [0, I) of the
    // packed weights), and each step multiplies h_prev by rows [I, I + P) only.
    const at::Tensor xg = project_first ? at::empty({steps.rows, G}, options) : at::Tensor();
    if (project_first && steps.rows > 0) {
      kernels.recurrent_gemm({steps.rows, I + P, G, x.data_ptr<scalar_t>(), I,
                              packed.data_ptr<scalar_t>(), xg.data_ptr<scalar_t>(), G, I,
                              nullptr, 0, 0, I});
    }
    for_each_tile(make_tiles(steps), [&](const Tile& tile) {
      const int64_t tile_rows = tile.end - tile.begin;
      const at::Tensor hg = at::empty({tile_rows, G}, options);  // [rows, 4H] pre-activations
      const at::Tensor r = shape.has_proj ? at::empty({tile_rows, H}, options) : at::Tensor();
      for (int64_t s = 0; s < steps.num_steps(); ++s) {
        const int64_t n = tile_rows_at(steps, tile, s);
        if (n <= 0) break;
        const int64_t row = steps.offsets[s] + tile.begin;
        const scalar_t* h_prev = previous_rows_ptr<scalar_t>(steps, h_first, hidden, tile, s, P);
        if (project_first) {
          kernels.recurrent_gemm({n, I + P, G, h_prev, P, packed.data_ptr<scalar_t>(),
                                  hg.data_ptr<scalar_t>(), G, -1, nullptr, 0, I});
        } else {
          kernels.recurrent_gemm({n, I + P, G, x.data_ptr<scalar_t>() + row * I, I,
                                  packed.data_ptr<scalar_t>(), hg.data_ptr<scalar_t>(), G, I,
                                  h_prev, P});
        }
        const rnn::LstmForwardRows<scalar_t> rows{
            n, H, project_first ? xg.data_ptr<scalar_t>() + row * G : nullptr, G,
            hg.data_ptr<scalar_t>(), bias.defined() ? bias.data_ptr<scalar_t>() : nullptr,
            c_state.data_ptr<scalar_t>() + tile.begin * H,
            keep_activations ? gates.data_ptr<scalar_t>() + row * G : nullptr,
            keep_activations ? cells.data_ptr<scalar_t>() + row * H : nullptr,
            shape.has_proj ? r.data_ptr<scalar_t>() : hidden.data_ptr<scalar_t>() + row * P,
            shape.has_proj ? H : P};
        kernels.lstm_forward(rows);
        if (shape.has_proj) rnn::mm_into(hidden.narrow(0, row, n), r.narrow(0, 0, n), w_hr_t);
      }
    });
  });
  return {order(hidden), rnn::final_hidden(steps, hidden, h0), c_state, gates, cells};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
lstm_layer_backward_cpu(const std::optional<at::Tensor>& grad_output,
                        const std::optional<at::Tensor>& grad_h_n,
                        const std::optional<at::Tensor>& grad_c_n, const at::Tensor& input,
                        const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& weight_ih,
                        const at::Tensor& weight_hh, const std::optional<at::Tensor>& weight_hr,
                        const at::Tensor& output, const at::Tensor& gates, const at::Tensor& cells,
                        const at::Tensor& batch_sizes, bool padded, bool reverse, bool has_bias,
                        std::string_view algorithm) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // a kernel, not a graph
  const LayerShape shape = rnn::check_layer(CellKind::kLstm, input, h0, &c0, weight_ih, weight_hh,
                                            std::nullopt, std::nullopt, weight_hr);
  check_cpu_dtype(input, CellKind::kLstm);
  rnn::parse_algorithm(algorithm);
  rnn::check_saved(shape, input, output, gates, &cells, input.scalar_type());
  const Steps steps = rnn::make_steps(batch_sizes, padded, shape.batch, shape.rows);
  const int64_t H = shape.hidden, P = shape.proj, G = shape.gates;
  const StepOrder order(steps, reverse, input.device());
  const at::Tensor dy = order(rnn::grad_or_zeros(grad_output, {shape.rows, P}, input,
                                                 "grad_output"));                 // [N, P]
  const at::Tensor dh = rnn::grad_or_zeros(grad_h_n, {shape.batch, P}, input, "grad_h_n")
                            .clone(at::MemoryFormat::Contiguous);  // [B, P] dh through W_hh
  const at::Tensor dc = rnn::grad_or_zeros(grad_c_n, {shape.batch, H}, input, "grad_c_n")
                            .clone(at::MemoryFormat::Contiguous);  // [B, H]
  const at::Tensor hidden = order(output);                          // [N, P]
  const at::Tensor saved_gates = gates.contiguous(), saved_cells = cells.contiguous();
  const at::Tensor c_first = c0.contiguous();
  const at::TensorOptions options = input.options();
  const at::Tensor dgates = rnn::step_buffer(steps, G, options);    // [N, 4H]
  // With a projection h = W_hr r: the gradient reaching h per row, and r = o * tanh(c).
  const at::Tensor dh_total = shape.has_proj ? rnn::step_buffer(steps, P, options) : at::Tensor();
  const at::Tensor r_all = shape.has_proj ? rnn::step_buffer(steps, H, options) : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "lstm_layer_backward_cpu", [&] {
    const auto& kernels = pointwise<scalar_t>();
    const at::Tensor packed = pack_panels<scalar_t>(kernels, {weight_hh});  // [4H, P]
    for_each_tile(make_tiles(steps), [&](const Tile& tile) {
      const at::Tensor dr =
          shape.has_proj ? at::empty({tile.end - tile.begin, H}, options) : at::Tensor();
      for (int64_t s = steps.num_steps() - 1; s >= 0; --s) {
        const int64_t n = tile_rows_at(steps, tile, s);
        if (n <= 0) continue;
        const int64_t row = steps.offsets[s] + tile.begin;
        rnn::LstmBackwardRows<scalar_t> rows{
            n, H, dh.data_ptr<scalar_t>() + tile.begin * P, P, dy.data_ptr<scalar_t>() + row * P,
            saved_gates.data_ptr<scalar_t>() + row * G, saved_cells.data_ptr<scalar_t>() + row * H,
            previous_rows_ptr<scalar_t>(steps, c_first, saved_cells, tile, s, H),
            dc.data_ptr<scalar_t>() + tile.begin * H, dgates.data_ptr<scalar_t>() + row * G,
            nullptr};
        if (shape.has_proj) {
          const at::Tensor dh_rows = dh_total.narrow(0, row, n);
          rnn::add_into(dh_rows, dh.narrow(0, tile.begin, n), dy.narrow(0, row, n));
          rnn::mm_into(dr.narrow(0, 0, n), dh_rows, *weight_hr);
          rows.dh = dr.data_ptr<scalar_t>();
          rows.dh_stride = H;
          rows.dy = nullptr;
          rows.r = r_all.data_ptr<scalar_t>() + row * H;
        }
        kernels.lstm_backward(rows);
        recurrent_product<scalar_t>(kernels, G, P, packed, dgates, row, n, dh, tile.begin);
      }
    });
  });
  const at::Tensor x = order(input);
  auto [grad_input, grad_weight_ih] = rnn::input_projection_grads(order, dgates, x, weight_ih);
  return {grad_input,
          dh,
          dc,
          grad_weight_ih,
          rnn::recurrent_weight_grad(steps, dgates, hidden, h0.contiguous()),
          rnn::bias_grad(dgates, has_bias),
          shape.has_proj ? at::mm(dh_total.t(), r_all) : at::empty({0}, options)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> gru_layer_cpu(
    const at::Tensor& input, const at::Tensor& h0, const at::Tensor& weight_ih,
    const at::Tensor& weight_hh, const std::optional<at::Tensor>& bias_ih,
    const std::optional<at::Tensor>& bias_hh, const at::Tensor& batch_sizes, bool padded,
    bool reverse, bool keep_activations, std::string_view algorithm) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // a kernel, not a graph
  const LayerShape shape = rnn::check_layer(CellKind::kGru, input, h0, nullptr, weight_ih,
                                            weight_hh, bias_ih, bias_hh, std::nullopt);
  check_cpu_dtype(input, CellKind::kGru);
  rnn::parse_algorithm(algorithm);
  const Steps steps = rnn::make_steps(batch_sizes, padded, shape.batch, shape.rows);
  const int64_t H = shape.hidden, G = shape.gates;
  const StepOrder order(steps, reverse, input.device());
  // The biases are added in the step, not by the GEMM (addmm first copies one into every row).
  // At up to kMaxRowsProjectingFirst rows per step the projection (at most 8 L rows) runs on
  // this thread through the packed GEMM: at::mm's threads wait for a busy core (issue 17, two
  // threads, one core busy, B = 1, H = 128: 13 ms against torch.nn's 1.5 ms).
  const bool project_here = steps.active_rows() <= kMaxRowsProjectingFirst;
  const at::Tensor x = order(input);  // [N, I]
  const at::Tensor xg = project_here  // [N, 3H]
                            ? at::empty({steps.rows, G}, x.options())
                            : rnn::input_projection(x, weight_ih, std::nullopt);
  const at::Tensor b_ih = bias_ih.has_value() ? bias_ih->contiguous() : at::Tensor();  // [3H]
  const at::TensorOptions options = input.options();
  const at::Tensor hidden = rnn::step_buffer(steps, H, options);                  // [N, H]
  const at::Tensor gates = keep_activations ? rnn::step_buffer(steps, 4 * H, options)
                                            : at::empty({0}, options);            // [N, 4H]
  const at::Tensor h_first = h0.contiguous();
  const at::Tensor b_hh = bias_hh.has_value() ? bias_hh->contiguous() : at::Tensor();  // [3H]
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "gru_layer_cpu", [&] {
    const auto& kernels = pointwise<scalar_t>();
    if (project_here && steps.rows > 0) {
      const at::Tensor packed_ih = pack_panels<scalar_t>(kernels, {weight_ih.t()});  // [I, 3H]
      recurrent_product<scalar_t>(kernels, x.size(1), G, packed_ih, x, 0, steps.rows, xg, 0);
    }
    const at::Tensor packed = pack_panels<scalar_t>(kernels, {weight_hh.t()});  // [H, 3H]
    for_each_tile(make_tiles(steps), [&](const Tile& tile) {
      const at::Tensor hg = at::empty({tile.end - tile.begin, G}, options);  // [rows, 3H]
      for (int64_t s = 0; s < steps.num_steps(); ++s) {
        const int64_t n = tile_rows_at(steps, tile, s);
        if (n <= 0) break;
        const int64_t row = steps.offsets[s] + tile.begin;
        const scalar_t* h_prev = previous_rows_ptr<scalar_t>(steps, h_first, hidden, tile, s, H);
        recurrent_product<scalar_t>(kernels, H, G, packed, s == 0 ? h_first : hidden,
                                    previous_row(steps, tile, s), n, hg, 0);
        kernels.gru_forward({n, H, xg.data_ptr<scalar_t>() + row * G, G, hg.data_ptr<scalar_t>(),
                             b_ih.defined() ? b_ih.data_ptr<scalar_t>() : nullptr,
                             b_hh.defined() ? b_hh.data_ptr<scalar_t>() : nullptr, h_prev,
                             keep_activations ? gates.data_ptr<scalar_t>() + row * 4 * H : nullptr,
                             hidden.data_ptr<scalar_t>() + row * H});
      }
    });
  });
  return {order(hidden), rnn::final_hidden(steps, hidden, h0), gates};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
gru_layer_backward_cpu(const std::optional<at::Tensor>& grad_output,
                       const std::optional<at::Tensor>& grad_h_n, const at::Tensor& input,
                       const at::Tensor& h0, const at::Tensor& weight_ih,
                       const at::Tensor& weight_hh, const at::Tensor& output,
                       const at::Tensor& gates, const at::Tensor& batch_sizes, bool padded,
                       bool reverse, bool has_bias, std::string_view algorithm) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // a kernel, not a graph
  const LayerShape shape = rnn::check_layer(CellKind::kGru, input, h0, nullptr, weight_ih,
                                            weight_hh, std::nullopt, std::nullopt, std::nullopt);
  check_cpu_dtype(input, CellKind::kGru);
  rnn::parse_algorithm(algorithm);
  rnn::check_saved(shape, input, output, gates, nullptr, input.scalar_type());
  const Steps steps = rnn::make_steps(batch_sizes, padded, shape.batch, shape.rows);
  const int64_t H = shape.hidden, G = shape.gates;
  const StepOrder order(steps, reverse, input.device());
  const at::Tensor dy = order(rnn::grad_or_zeros(grad_output, {shape.rows, H}, input,
                                                 "grad_output"));  // [N, H]
  const at::Tensor dh = rnn::grad_or_zeros(grad_h_n, {shape.batch, H}, input, "grad_h_n")
                            .clone(at::MemoryFormat::Contiguous);  // [B, H] dh through W_hh
  const at::Tensor carry = at::zeros({shape.batch, H}, input.options());  // [B, H] dh * z
  const at::Tensor hidden = order(output);                                // [N, H]
  const at::Tensor saved_gates = gates.contiguous();
  const at::Tensor h_first = h0.contiguous();
  const at::Tensor dxg = rnn::step_buffer(steps, G, input.options());  // [N, 3H]
  const at::Tensor dhg = rnn::step_buffer(steps, G, input.options());  // [N, 3H]
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "gru_layer_backward_cpu", [&] {
    const auto& kernels = pointwise<scalar_t>();
    const at::Tensor packed = pack_panels<scalar_t>(kernels, {weight_hh});  // [3H, H]
    for_each_tile(make_tiles(steps), [&](const Tile& tile) {
      for (int64_t s = steps.num_steps() - 1; s >= 0; --s) {
        const int64_t n = tile_rows_at(steps, tile, s);
        if (n <= 0) continue;
        const int64_t row = steps.offsets[s] + tile.begin;
        kernels.gru_backward({n, H, dh.data_ptr<scalar_t>() + tile.begin * H,
                              carry.data_ptr<scalar_t>() + tile.begin * H,
                              dy.data_ptr<scalar_t>() + row * H,
                              saved_gates.data_ptr<scalar_t>() + row * 4 * H,
                              previous_rows_ptr<scalar_t>(steps, h_first, hidden, tile, s, H),
                              dxg.data_ptr<scalar_t>() + row * G,
                              dhg.data_ptr<scalar_t>() + row * G});
        recurrent_product<scalar_t>(kernels, G, H, packed, dhg, row, n, dh, tile.begin);
      }
    });
  });
  const at::Tensor x = order(input);
  auto [grad_input, grad_weight_ih] = rnn::input_projection_grads(order, dxg, x, weight_ih);
  return {grad_input,
          dh + carry,
          grad_weight_ih,
          rnn::recurrent_weight_grad(steps, dhg, hidden, h_first),
          rnn::bias_grad(dxg, has_bias),
          rnn::bias_grad(dhg, has_bias)};
}

}  // namespace stseq

// The op family's schemas and CPU impls (CUDA impls: rnn_cuda.cu).
TORCH_LIBRARY_FRAGMENT(stseq, m) {
  // One recurrent layer in one direction; input [N, I] in data order with batch_sizes [L]
  // (csrc/rnn/rnn_args.h describes the packed and padded layouts).
  m.def(
      "lstm(Tensor input, Tensor h0, Tensor c0, Tensor weight_ih, Tensor weight_hh, "
      "Tensor? bias_ih, Tensor? bias_hh, Tensor? weight_hr, Tensor batch_sizes, bool padded, "
      "bool reverse, bool keep_activations, str algorithm) "
      "-> (Tensor output, Tensor h_n, Tensor c_n, Tensor gates, Tensor cells)");
  m.def(
      "lstm_backward(Tensor? grad_output, Tensor? grad_h_n, Tensor? grad_c_n, "
      "Tensor input, Tensor h0, Tensor c0, Tensor weight_ih, Tensor weight_hh, "
      "Tensor? weight_hr, Tensor output, Tensor gates, Tensor cells, Tensor batch_sizes, "
      "bool padded, bool reverse, bool has_bias, str algorithm) -> (Tensor grad_input, "
      "Tensor grad_h0, Tensor grad_c0, Tensor grad_weight_ih, Tensor grad_weight_hh, "
      "Tensor grad_bias, Tensor grad_weight_hr)");
  m.def(
      "gru(Tensor input, Tensor h0, Tensor weight_ih, Tensor weight_hh, Tensor? bias_ih, "
      "Tensor? bias_hh, Tensor batch_sizes, bool padded, bool reverse, bool keep_activations, "
      "str algorithm) -> (Tensor output, Tensor h_n, Tensor gates)");
  m.def(
      "gru_backward(Tensor? grad_output, Tensor? grad_h_n, Tensor input, Tensor h0, "
      "Tensor weight_ih, Tensor weight_hh, Tensor output, Tensor gates, Tensor batch_sizes, "
      "bool padded, bool reverse, bool has_bias, str algorithm) -> (Tensor grad_input, "
      "Tensor grad_h0, Tensor grad_weight_ih, Tensor grad_weight_hh, Tensor grad_bias_ih, "
      "Tensor grad_bias_hh)");
}

TORCH_LIBRARY_IMPL(stseq, CPU, m) {
  m.impl("lstm", &stseq::lstm_layer_cpu);
  m.impl("lstm_backward", &stseq::lstm_layer_backward_cpu);
  m.impl("gru", &stseq::gru_layer_cpu);
  m.impl("gru_backward", &stseq::gru_layer_backward_cpu);
}
