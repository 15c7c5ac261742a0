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

#include "rnn/rnn_cpu_loop.h"

namespace stseq {

using rnn::CellKind;
using rnn::LayerShape;
using rnn::Steps;
using rnn::StepOrder;

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_cpu(
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
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "lstm_cpu", [&] {
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
lstm_backward_cpu(const std::optional<at::Tensor>& grad_output,
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
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "lstm_backward_cpu", [&] {
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

std::tuple<at::Tensor, at::Tensor, at::Tensor> gru_cpu(
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
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "gru_cpu", [&] {
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
gru_backward_cpu(const std::optional<at::Tensor>& grad_output,
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
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "gru_backward_cpu", [&] {
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
  m.impl("lstm", &stseq::lstm_cpu);
  m.impl("lstm_backward", &stseq::lstm_backward_cpu);
  m.impl("gru", &stseq::gru_cpu);
  m.impl("gru_backward", &stseq::gru_backward_cpu);
}
