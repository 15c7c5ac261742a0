// CUDA time loops of the LSTM/GRU layer ops. Layout, semantics and the device-independent plan
// (step order, input projection, final states, weight-gradient GEMMs) are shared with the CPU
// (rnn_args.h, rnn_driver.h); the per-unit gate math is lstm.h's and gru.h's. Half types
// accumulate in float32 and keep the cell state, the recurrent gradients and the saved
// activations in float32.
//
// Stepwise loop (any hidden size, projection, every dtype). Forward, per step: one cuBLAS GEMM
// (at::mm) hg = h_prev W_hh^T over the step's active rows only (rows are sorted by length, so
// finished rows are a suffix that is skipped), then one fused pointwise kernel, a thread per
// (row, unit), that reads xg + hg and the cell state and writes h, c and the saved activations.
// Backward, per step in reverse: one pointwise kernel writes the gate gradients of the active
// rows, then one GEMM dh_prev = dgates W_hh.
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
// kernels), rnn_cuda_persistent.cuh (the persistent kernels) and rnn_cuda_persistent_plan.cuh
// (their plan and launch); this file holds the host helpers and the four entry points.

#include "rnn/rnn_cuda.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <type_traits>

#include "rnn/rnn.h"
#include "rnn/rnn_args.h"
#include "rnn/rnn_cuda_common.cuh"
#include "rnn/rnn_cuda_persistent.cuh"
#include "rnn/rnn_cuda_persistent_plan.cuh"
#include "rnn/rnn_cuda_stepwise.cuh"
#include "rnn/rnn_driver.h"

namespace stseq {
namespace {

// Host helpers.

void check_cuda_call(const at::Tensor& input, CellKind kind) {
  TORCH_CHECK_VALUE(input.is_cuda(), "input must be a CUDA tensor, got ", input.device());
  const at::ScalarType type = input.scalar_type();
  TORCH_CHECK_VALUE(type == at::kFloat || type == at::kDouble || type == at::kHalf ||
                        type == at::kBFloat16,
                    rnn::cell_name(kind), " layers on CUDA support float32, float64, float16 and "
                    "bfloat16, got ", type);
}

at::ScalarType activation_type(const at::Tensor& input) {
  return input.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

void require_ran(bool ran, Algorithm algorithm, CellKind kind) {
  TORCH_CHECK_VALUE(ran || algorithm != Algorithm::kPersistent, "algorithm='persistent' cannot "
                    "run this ", rnn::cell_name(kind), " layer here: it needs an sm_90 GPU, "
                    "hidden_size <= ", kMaxRanks * kUnits, ", no projection, float32/float16/"
                    "bfloat16 input and the shared memory it asks for; use 'auto' or 'stepwise'");
}

// h_prev of step s for its n active rows: h0's first rows, or the previous step's first rows.
at::Tensor previous_step(const Steps& steps, const at::Tensor& first, const at::Tensor& states,
                         int64_t s, int64_t n) {
  return s == 0 ? first.narrow(0, 0, n) : states.narrow(0, steps.offsets[s - 1], n);
}

template <typename T>
T* data_or_null(const at::Tensor& t) {
  return t.numel() > 0 ? t.data_ptr<T>() : nullptr;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_cuda(
    const at::Tensor& input, const at::Tensor& h0, const at::Tensor& c0,
    const at::Tensor& weight_ih, const at::Tensor& weight_hh,
    const std::optional<at::Tensor>& bias_ih, const std::optional<at::Tensor>& bias_hh,
    const std::optional<at::Tensor>& weight_hr, const at::Tensor& batch_sizes, bool padded,
    bool reverse, bool keep_activations, std::string_view algorithm_name) {
  const LayerShape shape = rnn::check_layer(CellKind::kLstm, input, h0, &c0, weight_ih, weight_hh,
                                            bias_ih, bias_hh, weight_hr);
  check_cuda_call(input, CellKind::kLstm);
  const Algorithm algorithm = rnn::parse_algorithm(algorithm_name);
  const Steps steps = rnn::make_steps(batch_sizes, padded, shape.batch, shape.rows);
  const c10::cuda::CUDAGuard device_guard(input.device());
  const at::AutoDispatchBelowADInplaceOrView below_autograd;  // a kernel, not a graph
  const int64_t H = shape.hidden, P = shape.proj, G = shape.gates;
  const StepOrder order(steps, reverse, input.device());
  const std::optional<at::Tensor> bias =
      bias_ih.has_value() ? std::optional<at::Tensor>(*bias_ih + *bias_hh) : std::nullopt;
  const at::Tensor xg = rnn::input_projection(order(input), weight_ih, bias);  // [N, 4H]
  const at::TensorOptions options = input.options();
  const at::TensorOptions saved_options = options.dtype(activation_type(input));
  const at::Tensor hidden = rnn::step_buffer(steps, P, options);  // [N, P]
  const at::Tensor gates = keep_activations ? rnn::step_buffer(steps, G, saved_options)
                                            : at::empty({0}, saved_options);  // [N, 4H]
  const at::Tensor cells = keep_activations ? rnn::step_buffer(steps, H, saved_options)
                                            : at::empty({0}, saved_options);  // [N, H]
  const at::Tensor c_state = c0.to(activation_type(input)).clone(at::MemoryFormat::Contiguous);
  const at::Tensor h_first = h0.contiguous();
  const at::Tensor w_hh = weight_hh.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(),
                                  "lstm_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    PersistentForward<scalar_t> params{};
    params.xg = xg.data_ptr<scalar_t>();
    params.w_hh = w_hh.data_ptr<scalar_t>();
    params.h0 = h_first.data_ptr<scalar_t>();
    params.c_state = c_state.data_ptr<acc_t>();
    params.hidden_out = hidden.data_ptr<scalar_t>();
    params.gates = data_or_null<acc_t>(gates);
    params.cells = data_or_null<acc_t>(cells);
    const bool ran = run_persistent_forward<scalar_t, true>(params, shape, steps, algorithm,
                                                            input.device());
    if (ran) return;
    require_ran(ran, algorithm, CellKind::kLstm);
    const at::Tensor hg = at::empty({shape.batch, G}, options);  // [B, 4H]
    const at::Tensor r = shape.has_proj ? at::empty({shape.batch, H}, options) : at::Tensor();
    const at::Tensor w_hh_t = weight_hh.t();
    for (int64_t s = 0; s < steps.num_steps(); ++s) {
      const int64_t n = steps.sizes[s];
      if (n == 0) break;
      const int64_t row = steps.offsets[s];
      rnn::mm_into(hg.narrow(0, 0, n), previous_step(steps, h_first, hidden, s, n), w_hh_t);
      launch_step(lstm_step_forward<scalar_t, acc_t>,
                  LstmStepForward<scalar_t, acc_t>{
                      n, H, xg.data_ptr<scalar_t>() + row * G, hg.data_ptr<scalar_t>(),
                      c_state.data_ptr<acc_t>(),
                      keep_activations ? gates.data_ptr<acc_t>() + row * G : nullptr,
                      keep_activations ? cells.data_ptr<acc_t>() + row * H : nullptr,
                      shape.has_proj ? r.data_ptr<scalar_t>()
                                     : hidden.data_ptr<scalar_t>() + row * P});
      if (shape.has_proj) {
        rnn::mm_into(hidden.narrow(0, row, n), r.narrow(0, 0, n), weight_hr->t());
      }
    }
  });
  return {order(hidden), rnn::final_hidden(steps, hidden, h0), c_state.to(input.scalar_type()),
          gates, cells};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
lstm_backward_cuda(const std::optional<at::Tensor>& grad_output,
                         const std::optional<at::Tensor>& grad_h_n,
                         const std::optional<at::Tensor>& grad_c_n, const at::Tensor& input,
                         const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& weight_ih,
                         const at::Tensor& weight_hh, const std::optional<at::Tensor>& weight_hr,
                         const at::Tensor& output, const at::Tensor& gates,
                         const at::Tensor& cells, const at::Tensor& batch_sizes, bool padded,
                         bool reverse, bool has_bias, std::string_view algorithm_name) {
  const LayerShape shape = rnn::check_layer(CellKind::kLstm, input, h0, &c0, weight_ih, weight_hh,
                                            std::nullopt, std::nullopt, weight_hr);
  check_cuda_call(input, CellKind::kLstm);
  const Algorithm algorithm = rnn::parse_algorithm(algorithm_name);
  rnn::check_saved(shape, input, output, gates, &cells, activation_type(input));
  const Steps steps = rnn::make_steps(batch_sizes, padded, shape.batch, shape.rows);
  const c10::cuda::CUDAGuard device_guard(input.device());
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  const int64_t H = shape.hidden, P = shape.proj, G = shape.gates;
  const StepOrder order(steps, reverse, input.device());
  const at::TensorOptions options = input.options();
  const at::Tensor dy = order(rnn::grad_or_zeros(grad_output, {shape.rows, P}, input,
                                                 "grad_output"));                 // [N, P]
  const at::Tensor dh = rnn::grad_or_zeros(grad_h_n, {shape.batch, P}, input, "grad_h_n")
                            .clone(at::MemoryFormat::Contiguous);  // [B, P]
  const at::Tensor dc = rnn::grad_or_zeros(grad_c_n, {shape.batch, H}, input, "grad_c_n")
                            .to(activation_type(input))
                            .clone(at::MemoryFormat::Contiguous);  // [B, H]
  const at::Tensor hidden = order(output);                          // [N, P]
  const at::Tensor saved_gates = gates.contiguous(), saved_cells = cells.contiguous();
  const at::Tensor c_first = c0.to(activation_type(input)).contiguous();  // [B, H]
  const at::Tensor dgates = rnn::step_buffer(steps, G, options);    // [N, 4H]
  const at::Tensor dh_total = shape.has_proj ? rnn::step_buffer(steps, P, options) : at::Tensor();
  const at::Tensor r_all = shape.has_proj ? rnn::step_buffer(steps, H, options) : at::Tensor();
  const at::Tensor w_hh = weight_hh.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(),
                                  "lstm_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    PersistentBackward<scalar_t> params{};
    params.w_hh = w_hh.data_ptr<scalar_t>();
    params.dy = dy.data_ptr<scalar_t>();
    params.gates = saved_gates.data_ptr<acc_t>();
    params.cells = saved_cells.data_ptr<acc_t>();
    params.c0 = c_first.data_ptr<acc_t>();
    params.dh = dh.data_ptr<scalar_t>();
    params.dc = dc.data_ptr<acc_t>();
    params.dxg = dgates.data_ptr<scalar_t>();
    const bool ran = run_persistent_backward<scalar_t, true>(params, shape, steps, algorithm,
                                                             input.device());
    if (ran) return;
    require_ran(ran, algorithm, CellKind::kLstm);
    const at::Tensor dr = shape.has_proj ? at::empty({shape.batch, H}, options) : at::Tensor();
    for (int64_t s = steps.num_steps() - 1; s >= 0; --s) {
      const int64_t n = steps.sizes[s];
      if (n == 0) continue;
      const int64_t row = steps.offsets[s];
      LstmStepBackward<scalar_t, acc_t> rows{
          n, H, dh.data_ptr<scalar_t>(), dy.data_ptr<scalar_t>() + row * P,
          saved_gates.data_ptr<acc_t>() + row * G, saved_cells.data_ptr<acc_t>() + row * H,
          previous_step(steps, c_first, saved_cells, s, n).data_ptr<acc_t>(),
          dc.data_ptr<acc_t>(), dgates.data_ptr<scalar_t>() + row * G, nullptr};
      if (shape.has_proj) {
        const at::Tensor dh_rows = dh_total.narrow(0, row, n);
        rnn::add_into(dh_rows, dh.narrow(0, 0, n), dy.narrow(0, row, n));
        rnn::mm_into(dr.narrow(0, 0, n), dh_rows, *weight_hr);
        rows.dh = dr.data_ptr<scalar_t>();
        rows.dy = nullptr;
        rows.r = r_all.data_ptr<scalar_t>() + row * H;
      }
      launch_step(lstm_step_backward<scalar_t, acc_t>, rows);
      rnn::mm_into(dh.narrow(0, 0, n), dgates.narrow(0, row, n), weight_hh);
    }
  });
  const at::Tensor x = order(input);
  auto [grad_input, grad_weight_ih] = rnn::input_projection_grads(order, dgates, x, weight_ih);
  return {grad_input,
          dh,
          dc.to(input.scalar_type()),
          grad_weight_ih,
          rnn::recurrent_weight_grad(steps, dgates, hidden, h0.contiguous()),
          rnn::bias_grad(dgates, has_bias),
          shape.has_proj ? at::mm(dh_total.t(), r_all) : at::empty({0}, options)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> gru_cuda(
    const at::Tensor& input, const at::Tensor& h0, const at::Tensor& weight_ih,
    const at::Tensor& weight_hh, const std::optional<at::Tensor>& bias_ih,
    const std::optional<at::Tensor>& bias_hh, const at::Tensor& batch_sizes, bool padded,
    bool reverse, bool keep_activations, std::string_view algorithm_name) {
  const LayerShape shape = rnn::check_layer(CellKind::kGru, input, h0, nullptr, weight_ih,
                                            weight_hh, bias_ih, bias_hh, std::nullopt);
  check_cuda_call(input, CellKind::kGru);
  const Algorithm algorithm = rnn::parse_algorithm(algorithm_name);
  const Steps steps = rnn::make_steps(batch_sizes, padded, shape.batch, shape.rows);
  const c10::cuda::CUDAGuard device_guard(input.device());
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  const int64_t H = shape.hidden, G = shape.gates;
  const StepOrder order(steps, reverse, input.device());
  const at::Tensor xg = rnn::input_projection(order(input), weight_ih, bias_ih);  // [N, 3H]
  const at::TensorOptions options = input.options();
  const at::TensorOptions saved_options = options.dtype(activation_type(input));
  const at::Tensor hidden = rnn::step_buffer(steps, H, options);  // [N, H]
  const at::Tensor gates = keep_activations ? rnn::step_buffer(steps, 4 * H, saved_options)
                                            : at::empty({0}, saved_options);  // [N, 4H]
  const at::Tensor h_first = h0.contiguous();
  const at::Tensor w_hh = weight_hh.contiguous();
  const at::Tensor b_hh = bias_hh.has_value() ? bias_hh->contiguous() : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(),
                                  "gru_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    PersistentForward<scalar_t> params{};
    params.xg = xg.data_ptr<scalar_t>();
    params.w_hh = w_hh.data_ptr<scalar_t>();
    params.b_hh = b_hh.defined() ? b_hh.data_ptr<scalar_t>() : nullptr;
    params.h0 = h_first.data_ptr<scalar_t>();
    params.hidden_out = hidden.data_ptr<scalar_t>();
    params.gates = data_or_null<acc_t>(gates);
    const bool ran = run_persistent_forward<scalar_t, false>(params, shape, steps, algorithm,
                                                             input.device());
    if (ran) return;
    require_ran(ran, algorithm, CellKind::kGru);
    const at::Tensor hg = at::empty({shape.batch, G}, options);  // [B, 3H]
    const at::Tensor w_hh_t = weight_hh.t();
    for (int64_t s = 0; s < steps.num_steps(); ++s) {
      const int64_t n = steps.sizes[s];
      if (n == 0) break;
      const int64_t row = steps.offsets[s];
      const at::Tensor h_prev = previous_step(steps, h_first, hidden, s, n);
      rnn::mm_into(hg.narrow(0, 0, n), h_prev, w_hh_t);
      launch_step(gru_step_forward<scalar_t, acc_t>,
                  GruStepForward<scalar_t, acc_t>{
                      n, H, xg.data_ptr<scalar_t>() + row * G, hg.data_ptr<scalar_t>(),
                      params.b_hh, h_prev.data_ptr<scalar_t>(),
                      keep_activations ? gates.data_ptr<acc_t>() + row * 4 * H : nullptr,
                      hidden.data_ptr<scalar_t>() + row * H});
    }
  });
  return {order(hidden), rnn::final_hidden(steps, hidden, h0), gates};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
gru_backward_cuda(const std::optional<at::Tensor>& grad_output,
                        const std::optional<at::Tensor>& grad_h_n, const at::Tensor& input,
                        const at::Tensor& h0, const at::Tensor& weight_ih,
                        const at::Tensor& weight_hh, const at::Tensor& output,
                        const at::Tensor& gates, const at::Tensor& batch_sizes, bool padded,
                        bool reverse, bool has_bias, std::string_view algorithm_name) {
  const LayerShape shape = rnn::check_layer(CellKind::kGru, input, h0, nullptr, weight_ih,
                                            weight_hh, std::nullopt, std::nullopt, std::nullopt);
  check_cuda_call(input, CellKind::kGru);
  const Algorithm algorithm = rnn::parse_algorithm(algorithm_name);
  rnn::check_saved(shape, input, output, gates, nullptr, activation_type(input));
  const Steps steps = rnn::make_steps(batch_sizes, padded, shape.batch, shape.rows);
  const c10::cuda::CUDAGuard device_guard(input.device());
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  const int64_t H = shape.hidden, G = shape.gates;
  const StepOrder order(steps, reverse, input.device());
  const at::TensorOptions options = input.options();
  const at::Tensor dy = order(rnn::grad_or_zeros(grad_output, {shape.rows, H}, input,
                                                 "grad_output"));  // [N, H]
  const at::Tensor dh = rnn::grad_or_zeros(grad_h_n, {shape.batch, H}, input, "grad_h_n")
                            .clone(at::MemoryFormat::Contiguous);  // [B, H]
  const at::Tensor carry = at::zeros({shape.batch, H}, options.dtype(activation_type(input)));
  const at::Tensor hidden = order(output);  // [N, H]
  const at::Tensor saved_gates = gates.contiguous();
  const at::Tensor h_first = h0.contiguous();
  const at::Tensor dxg = rnn::step_buffer(steps, G, options);  // [N, 3H]
  const at::Tensor dhg = rnn::step_buffer(steps, G, options);  // [N, 3H]
  const at::Tensor w_hh = weight_hh.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(),
                                  "gru_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    PersistentBackward<scalar_t> params{};
    params.w_hh = w_hh.data_ptr<scalar_t>();
    params.dy = dy.data_ptr<scalar_t>();
    params.gates = saved_gates.data_ptr<acc_t>();
    params.hidden = hidden.data_ptr<scalar_t>();
    params.h0 = h_first.data_ptr<scalar_t>();
    params.dh = dh.data_ptr<scalar_t>();
    params.dxg = dxg.data_ptr<scalar_t>();
    params.dhg = dhg.data_ptr<scalar_t>();
    // The persistent kernel adds the direct part to dh itself (carry stays zero).
    const bool ran = run_persistent_backward<scalar_t, false>(params, shape, steps, algorithm,
                                                              input.device());
    if (ran) return;
    require_ran(ran, algorithm, CellKind::kGru);
    for (int64_t s = steps.num_steps() - 1; s >= 0; --s) {
      const int64_t n = steps.sizes[s];
      if (n == 0) continue;
      const int64_t row = steps.offsets[s];
      launch_step(gru_step_backward<scalar_t, acc_t>,
                  GruStepBackward<scalar_t, acc_t>{
                      n, H, dh.data_ptr<scalar_t>(), carry.data_ptr<acc_t>(),
                      dy.data_ptr<scalar_t>() + row * H,
                      saved_gates.data_ptr<acc_t>() + row * 4 * H,
                      previous_step(steps, h_first, hidden, s, n).data_ptr<scalar_t>(),
                      dxg.data_ptr<scalar_t>() + row * G, dhg.data_ptr<scalar_t>() + row * G});
      rnn::mm_into(dh.narrow(0, 0, n), dhg.narrow(0, row, n), weight_hh);
    }
  });
  const at::Tensor x = order(input);
  auto [grad_input, grad_weight_ih] = rnn::input_projection_grads(order, dxg, x, weight_ih);
  return {grad_input,
          (dh.to(carry.scalar_type()) + carry).to(input.scalar_type()),
          grad_weight_ih,
          rnn::recurrent_weight_grad(steps, dhg, hidden, h_first),
          rnn::bias_grad(dxg, has_bias),
          rnn::bias_grad(dhg, has_bias)};
}

}  // namespace stseq

TORCH_LIBRARY_IMPL(stseq, CUDA, m) {
  m.impl("lstm", &stseq::lstm_cuda);
  m.impl("lstm_backward", &stseq::lstm_backward_cuda);
  m.impl("gru", &stseq::gru_cuda);
  m.impl("gru_backward", &stseq::gru_backward_cuda);
}

