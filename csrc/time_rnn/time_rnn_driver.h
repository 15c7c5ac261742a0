// Host drivers of the time-aware recurrent ops, shared by the CPU and CUDA entry points (haste's
// structure, written for every cell):
//   forward:  one GEMM projects the inputs of all L steps onto every gate, time gates included
//             (gates = x W_ih^T + b, [L, B, G*H]); then a time loop in C++ with, per step, the
//             recurrent GEMM(s) and one fused element step (time_rnn.h) that adds the dt terms,
//             applies the gates, writes the output and, when training, saves the activations
//             (over the projections in `gates`, and the cell states in `cells`);
//   backward: the element steps in reverse write the pre-activation gradients by position and
//             the recurrent GEMM carries d/dh to the earlier step; after the loop dx, dW_ih and
//             dW_hh are three large GEMMs; the element steps also add the gradients of the biases
//             and elementwise weights (peepholes, time and decay weights) into partial sums
//             (per row on CUDA, per thread's tile on the CPU), summed after the loop (no atomics
//             anywhere: bitwise reproducible on a device for a given thread count).
//
// Variable lengths: with rows sorted by length, longest first (stseq/ops/time_rnn.py sorts
// them), the rows that still run at a step are a prefix of the batch, and every GEMM and element
// step covers only that prefix (csrc/rnn's plan): no work is spent on padding. Unsorted lengths
// stay correct (every row, each checked by the element step), only slower.
//
// A Launcher provides
//   template <typename F> static void dispatch(at::ScalarType, F f)  f(scalar_t{}) per dtype
//   static auto guard(const at::Tensor&)                                the device guard
//   template <typename Body> static void time_loop(const std::vector<int64_t>& active, body)
//       body(begin, end, i) for i = 0..L-1 in order (L = active.size(), active[i] the rows
//       that run at loop step i, a prefix), over rows [begin, end): the CPU gives each thread
//       a tile of rows for the whole sequence (rows are independent; no barrier per step),
//       CUDA runs all rows per step;
//   template <typename Step> static void run(const Step&, begin, end, H)  one element step
//   static at::Tensor scratch(int slot, shape, options)  a buffer that never leaves the op
//       (slots 0 and 1; one call uses each slot for one buffer at a time)
//   static at::Tensor saved_buffer(shape, options)  a new buffer for what a training forward
//       saves for its backward (uninitialised)
#pragma once

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <string_view>
#include <tuple>
#include <vector>

#include "time_rnn/time_rnn.h"
#include "time_rnn/time_rnn_args.h"

namespace stseq {
namespace time_rnn {

using Tensors6 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
using Tensors5 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
using Tensors8 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                            at::Tensor, at::Tensor>;

// What every cell's loop shares: sizes, options, lengths.
struct Setup {
  Problem p;
  at::ScalarType dtype;           // input's
  at::ScalarType acc_dtype;       // its accumulation dtype (float for half and bfloat16)
  at::TensorOptions options;      // input's dtype and device
  at::TensorOptions acc_options;  // acc_dtype on input's device
  at::Tensor lengths;             // [B] int64 or undefined (every row has L positions)
  at::Tensor dt;                  // [L, B] in the accumulation dtype
  bool reverse;
  std::vector<int64_t> active;  // [L] rows [0, active[t]) run at loop step t (see active_rows)

  Setup(const Problem& problem, const at::Tensor& input, const at::Tensor& dt_in,
        const std::optional<at::Tensor>& lengths_in, bool reverse_in)
      : p(problem),
        dtype(input.scalar_type()),
        acc_dtype(at::toOpMathType(dtype)),
        options(input.options()),
        acc_options(input.options().dtype(acc_dtype)),
        lengths(lengths_in.has_value() ? lengths_in->to(at::kLong).contiguous() : at::Tensor()),
        dt(dt_in.to(acc_dtype).contiguous()),
        reverse(reverse_in),
        active(active_rows(problem, lengths)) {}

  bool padded() const { return lengths.defined(); }

  // Rows that run at each step (the same in both directions: row b runs n_b steps): with
  // lengths non-increasing (one copy of lengths to the host), #{b : n_b > t}, a prefix of the
  // batch; otherwise every row (the element steps skip the finished ones one by one).
  static std::vector<int64_t> active_rows(const Problem& p, const at::Tensor& lengths) {
    std::vector<int64_t> active(p.seq_len, p.batch);
    if (!lengths.defined() || p.batch == 0) return active;
    const at::Tensor n = lengths.to(at::kCPU).clamp(0, p.seq_len).contiguous();
    const int64_t* length = n.data_ptr<int64_t>();
    for (int64_t b = 1; b < p.batch; ++b) {
      if (length[b] > length[b - 1]) return active;
    }
    int64_t rows = p.batch;
    for (int64_t t = 0; t < p.seq_len; ++t) {
      while (rows > 0 && length[rows - 1] <= t) --rows;
      active[t] = rows;
    }
    return active;
  }

  // body(begin, end, step) for every step (from the last one down when `backward`), over the
  // rows of the launcher's [begin, end) that run at that step; nothing for the others.
  template <typename Launcher, typename Body>
  void time_loop(bool backward, const Body& body) const {
    Launcher::time_loop(active, [&](int64_t begin, int64_t end, int64_t i) {
      const int64_t step = backward ? p.seq_len - 1 - i : i;
      end = std::min(end, active[step]);
      if (begin < end) body(begin, end, step);
    });
  }

  // A buffer by position: zero-filled when rows have padding (padded positions are never written
  // but are read by the GEMMs after the loop), uninitialised otherwise.
  at::Tensor by_position(int64_t blocks, const at::TensorOptions& opts) const {
    const std::vector<int64_t> shape{p.seq_len, p.batch, blocks * p.hidden};
    return padded() ? at::zeros(shape, opts) : at::empty(shape, opts);
  }
  // What a training forward saves by position (zero-filled like by_position), or nothing.
  template <typename Launcher>
  at::Tensor saved(bool save, int64_t blocks, const at::TensorOptions& opts) const {
    if (!save) return at::empty({0}, opts);
    at::Tensor buffer = Launcher::saved_buffer({p.seq_len, p.batch, blocks * p.hidden}, opts);
    return padded() ? buffer.zero_() : buffer;
  }
  // A by-position buffer that never leaves the op, from the launcher's scratch `slot`.
  template <typename Launcher>
  at::Tensor workspace(int slot, int64_t blocks, const at::TensorOptions& opts) const {
    at::Tensor buffer = Launcher::scratch(slot, {p.seq_len, p.batch, blocks * p.hidden}, opts);
    return padded() ? buffer.zero_() : buffer;
  }
  at::Tensor step_buffer(int64_t blocks, const at::TensorOptions& opts) const {
    return at::zeros({p.batch, blocks * p.hidden}, opts);
  }

  Steps steps(int64_t step) const {
    return {padded() ? lengths.data_ptr<int64_t>() : nullptr, p.seq_len, p.batch, step, reverse};
  }

  // x W_ih^T + b for every position -> [L, B, G*H] (the bias folded into the GEMM: it costs
  // what the GEMM's zeroing of its output costs): a saved buffer when the forward saves the
  // activations over it, else scratch slot 0.
  template <typename Launcher>
  at::Tensor project_inputs(const at::Tensor& input, const at::Tensor& weight_ih,
                            const at::Tensor& bias, bool save) const {
    const std::vector<int64_t> shape{p.seq_len, p.batch, weight_ih.size(0)};
    const at::Tensor gates =
        save ? Launcher::saved_buffer(shape, options) : Launcher::scratch(0, shape, options);
    at::Tensor rows = gates.view({p.seq_len * p.batch, weight_ih.size(0)});
    at::addmm_out(rows, bias, input.reshape({p.seq_len * p.batch, p.input_size}), weight_ih.t());
    return gates;
  }

  // What a forward returns as its saved gates: the activations, or nothing in inference.
  at::Tensor saved_gates(bool save, const at::Tensor& gates) const {
    return save ? gates : at::empty({0}, options);
  }

  // d/d(initial state): from the loop for rows with at least one step, else the final state's.
  at::Tensor initial_state_grad(const at::Tensor& from_loop, const at::Tensor& grad_final) const {
    if (!padded()) return p.seq_len > 0 ? from_loop : grad_final.clone();
    return at::where(lengths.clamp(0, p.seq_len).gt(0).unsqueeze(1), from_loop, grad_final);
  }

  // The gradient of h for the backward of an LSTM cell, whose h comes out of a GEMM: returns
  // grad_output [L, B, H] and fills grad_h_later [B, H] so that the element steps read d/dh_n
  // at each row's last processed position (L-1 or n_b-1 forward, 0 in reverse). Without
  // padding every row ends at the first backward step, so grad_h_later starts at d/dh_n;
  // otherwise d/dh_n is added to a copy of grad_output there (h_n is the output there).
  at::Tensor hidden_grads(const at::Tensor& grad_output, const at::Tensor& grad_h_n,
                          at::Tensor& grad_h_later) const {
    if (!padded()) {
      grad_h_later.copy_(grad_h_n);
      return grad_output.contiguous();
    }
    at::Tensor folded = grad_output.clone(at::MemoryFormat::Contiguous);
    if (p.seq_len == 0) return folded;
    const at::Tensor n = lengths.clamp(0, p.seq_len);
    const at::Tensor last = reverse ? at::zeros_like(n) : (n - 1).clamp_min(0);
    const at::Tensor rows = at::arange(p.batch, n.options());
    const at::Tensor has_steps = n.gt(0).unsqueeze(1).to(dtype);  // rows of length 0 add nothing
    folded.index_put_({last, rows}, folded.index({last, rows}) + grad_h_n * has_steps);
    return folded;
  }

  // A state gradient [B, H] as a contiguous acc_t copy (the buffer the loop updates).
  at::Tensor acc_copy(const at::Tensor& grad) const {
    return grad.to(acc_options, false, true).contiguous();
  }

  // (dx [L, B, I], dW_ih [G*H, I]) from the pre-activation gradients [L, B, G*H]; padded
  // positions of x (whatever they hold) are masked out of dW_ih, and their dx is exactly 0
  // (their zero gate gradients times a non-finite weight would give NaN).
  std::pair<at::Tensor, at::Tensor> input_grads(const at::Tensor& grad_gates,
                                                const at::Tensor& input,
                                                const at::Tensor& weight_ih) const {
    const int64_t rows = p.seq_len * p.batch;
    const at::Tensor grad2d = grad_gates.view({rows, grad_gates.size(2)});
    at::Tensor x = input;
    at::Tensor grad_x = at::mm(grad2d, weight_ih).view({p.seq_len, p.batch, p.input_size});
    if (padded()) {
      const at::Tensor positions = at::arange(p.seq_len, lengths.options()).unsqueeze(1);
      const at::Tensor padding = positions.ge(lengths.unsqueeze(0)).unsqueeze(2);  // [L, B, 1]
      x = input.masked_fill(padding, 0);
      grad_x.masked_fill_(padding, 0);
    }
    return {grad_x, at::mm(grad2d.t(), x.reshape({rows, p.input_size}))};
  }

  // The backward element steps' partial sums [B, blocks*H] (acc_t, zeros: only the rows a
  // launcher uses are written, see Row::sums), and their total [blocks, H] in input's dtype.
  at::Tensor partial_sums(int64_t blocks) const { return step_buffer(blocks, acc_options); }
  at::Tensor total(const at::Tensor& partial_sums) const {
    return partial_sums.sum(0).view({-1, p.hidden}).to(dtype);
  }

  // The first `blocks` column blocks of a [L, B, N] buffer as a [L*B, blocks*H] matrix.
  at::Tensor leading_blocks(const at::Tensor& by_pos, int64_t first, int64_t blocks) const {
    return by_pos.view({p.seq_len * p.batch, by_pos.size(2)})
        .narrow(1, first * p.hidden, blocks * p.hidden);
  }

  // Whether the rows of every step sit at one position (no padding, or the forward direction;
  // in reverse with padding each row starts at its own last position).
  bool steps_share_position() const { return !(reverse && padded()); }

  // Rows [begin, end) of step `step` in the first `blocks` blocks of a by-position buffer
  // (steps_share_position() only): a [end - begin, blocks*H] matrix, rows strided by N.
  at::Tensor step_rows(const at::Tensor& by_pos, int64_t blocks, int64_t step, int64_t begin,
                       int64_t end) const {
    const int64_t position = reverse ? p.seq_len - 1 - step : step;
    return leading_blocks(by_pos, 0, blocks).narrow(0, position * p.batch + begin, end - begin);
  }
};

// What every entry point runs after its checks: below autograd (a kernel, not a graph), on
// input's device, body(setup, scalar_t{}) for input's dtype.
template <typename Launcher, typename Result, typename Body>
Result run_entry(const Problem& p, const at::Tensor& input, const at::Tensor& dt,
                 const std::optional<at::Tensor>& lengths, bool reverse, const Body& body) {
  const at::AutoDispatchBelowADInplaceOrView below_autograd;
  [[maybe_unused]] const auto guard = Launcher::guard(input);
  const Setup s(p, input, dt, lengths, reverse);
  Result result;
  Launcher::dispatch(input.scalar_type(), [&](auto tag) { result = body(s, tag); });
  return result;
}

// Rows [begin, end) of a [B, N] step buffer.
inline at::Tensor rows_of(const at::Tensor& buffer, int64_t begin, int64_t end) {
  return buffer.narrow(0, begin, end - begin);
}

// The element step Step{args} of time step `step` over rows [begin, end).
template <typename Launcher, typename Step, typename Args>
void run_step(Args args, const Setup& s, int64_t step, int64_t begin, int64_t end) {
  args.steps = s.steps(step);
  Launcher::run(Step{args}, begin, end, s.p.hidden);
}

// The recurrent GEMM of an LSTM cell's step over rows [begin, end): the first R blocks of their
// gates [L, B, G*H] (at each row's position) += h W_hh^T. Where the rows run one position (no
// padding, or the forward direction) the GEMM accumulates into the gates in place; otherwise
// (reverse with padding: each row at its own position) into gates_h [B, R*H], which the element
// step AddRecurrent adds. (In place saves the step buffer's writes and reads, and the GEMM's
// zeroing of its output.)
template <typename Launcher, typename scalar_t>
class RecurrentGates {
 public:
  RecurrentGates(const Setup& s, const at::Tensor& gates, int64_t recurrent_blocks,
                 const at::Tensor& weight_hh)
      : s_(s),
        gates_(gates),
        recurrent_blocks_(recurrent_blocks),
        weight_hh_t_(weight_hh.t()),
        gates_h_(s.steps_share_position() ? at::Tensor()
                                          : s.step_buffer(recurrent_blocks, s.options)) {}

  void add(const at::Tensor& h, int64_t step, int64_t begin, int64_t end) const {
    const at::Tensor h_rows = rows_of(h, begin, end);
    if (!gates_h_.defined()) {
      s_.step_rows(gates_, recurrent_blocks_, step, begin, end).addmm_(h_rows, weight_hh_t_);
      return;
    }
    at::Tensor gates_h_rows = rows_of(gates_h_, begin, end);
    at::mm_out(gates_h_rows, h_rows, weight_hh_t_);
    using acc_t = at::opmath_type<scalar_t>;
    const AddRecurrentArgs<scalar_t, acc_t> args{s_.steps(0),
                                                 s_.p.hidden,
                                                 gates_.size(2) / s_.p.hidden,
                                                 recurrent_blocks_,
                                                 gates_.data_ptr<scalar_t>(),
                                                 gates_h_.data_ptr<scalar_t>(),
                                                 s_.dt.data_ptr<acc_t>()};
    run_step<Launcher, AddRecurrent<scalar_t, acc_t>>(args, s_, step, begin, end);
  }

 private:
  const Setup& s_;
  at::Tensor gates_;
  int64_t recurrent_blocks_;
  at::Tensor weight_hh_t_;
  at::Tensor gates_h_;  // [B, R*H] (reverse with padding only)
};

// A backward step's gradient operand of a recurrent GEMM, the first `blocks` blocks of a
// by-position gradient [L, B, N] at the step's rows: read in place where the rows of a step share
// one position, else copied by the element step into a [B, blocks*H] step buffer (pointer()
// gives the element step that buffer, or nullptr when there is none).
template <typename T>
class StepOperand {
 public:
  StepOperand(const Setup& s, const at::Tensor& by_position, int64_t blocks)
      : s_(s),
        by_position_(by_position),
        blocks_(blocks),
        step_(s.steps_share_position() ? at::Tensor()
                                       : s.step_buffer(blocks, by_position.options())) {}

  T* pointer() const { return step_.defined() ? step_.data_ptr<T>() : nullptr; }

  at::Tensor rows(int64_t step, int64_t begin, int64_t end) const {
    return step_.defined() ? rows_of(step_, begin, end)
                           : s_.step_rows(by_position_, blocks_, step, begin, end);
  }

 private:
  const Setup& s_;
  at::Tensor by_position_;
  int64_t blocks_;
  at::Tensor step_;  // [B, blocks*H] (reverse with padding only)
};

// ---------------------------------------------------------------------------------------------
// Time-LSTM

template <typename Launcher, int kVariant, typename scalar_t>
Tensors6 time_lstm_forward_loop(const Setup& s, const at::Tensor& input, const at::Tensor& h0,
                                const at::Tensor& c0, const at::Tensor& weight_ih,
                                const at::Tensor& weight_hh, const at::Tensor& bias,
                                const at::Tensor& peephole, const at::Tensor& time_weight,
                                ActivationKind phi, bool save) {
  using acc_t = at::opmath_type<scalar_t>;
  using Layout = TimeLSTMLayout<kVariant>;
  const at::Tensor gates = s.project_inputs<Launcher>(input, weight_ih, bias, save);  // [L, B, G*H]
  const RecurrentGates<Launcher, scalar_t> recurrent(s, gates, Layout::kRecurrentGates,
                                                      weight_hh);
  const at::Tensor h = h0.clone(at::MemoryFormat::Contiguous);                   // [B, H]
  const at::Tensor c = s.acc_copy(c0);                                           // [B, H]
  const at::Tensor output = s.by_position(1, s.options);                         // [L, B, H]
  const at::Tensor cells = s.saved<Launcher>(save, Layout::kCells, s.acc_options);  // [L, B, H]
  const at::Tensor recurrent_input = s.saved<Launcher>(save, 1, s.options);         // [L, B, H]
  const at::Tensor peephole_c = peephole.contiguous(), time_weight_c = time_weight.contiguous();
  const TimeLSTMForwardArgs<scalar_t, acc_t> args{
      s.steps(0),
      s.p.hidden,
      gates.data_ptr<scalar_t>(),
      s.dt.data_ptr<acc_t>(),
      peephole_c.data_ptr<scalar_t>(),
      time_weight_c.data_ptr<scalar_t>(),
      Activation<acc_t>::of(phi),
      h.data_ptr<scalar_t>(),
      c.data_ptr<acc_t>(),
      output.data_ptr<scalar_t>(),
      save ? cells.data_ptr<acc_t>() : nullptr,
      save ? recurrent_input.data_ptr<scalar_t>() : nullptr};
  s.time_loop<Launcher>(false, [&](int64_t begin, int64_t end, int64_t step) {
    recurrent.add(h, step, begin, end);
    if (save) {
      run_step<Launcher, TimeLSTMForward<kVariant, true, scalar_t, acc_t>>(args, s, step, begin,
                                                                           end);
    } else {
      run_step<Launcher, TimeLSTMForward<kVariant, false, scalar_t, acc_t>>(args, s, step, begin,
                                                                            end);
    }
  });
  return {output, h, c.to(s.dtype), s.saved_gates(save, gates), cells, recurrent_input};
}

template <typename Launcher, int kVariant, typename scalar_t>
Tensors8 time_lstm_backward_loop(const Setup& s, const at::Tensor& grad_output,
                                 const at::Tensor& grad_h_n, const at::Tensor& grad_c_n,
                                 const at::Tensor& input, const at::Tensor& weight_ih,
                                 const at::Tensor& weight_hh, const at::Tensor& peephole,
                                 const at::Tensor& time_weight, const at::Tensor& gates,
                                 const at::Tensor& cells, const at::Tensor& recurrent_input,
                                 ActivationKind phi) {
  using acc_t = at::opmath_type<scalar_t>;
  using Layout = TimeLSTMLayout<kVariant>;
  const int64_t H = s.p.hidden;
  at::Tensor grad_h_later = s.step_buffer(1, s.options);                            // [B, H]
  const at::Tensor grad_out = s.hidden_grads(grad_output, grad_h_n, grad_h_later);  // [L, B, H]
  const at::Tensor gates_c = gates.contiguous(), cells_c = cells.contiguous();
  const at::Tensor peephole_c = peephole.contiguous(), time_weight_c = time_weight.contiguous();
  const at::Tensor grad_gates = s.workspace<Launcher>(0, Layout::kGates, s.options);  // [L, B, G*H]
  const StepOperand<scalar_t> grad_gates_step(s, grad_gates, Layout::kRecurrentGates);
  const at::Tensor grad_c = s.acc_copy(grad_c_n);                                        // [B, H]
  const at::Tensor grad_weights = s.partial_sums(Layout::kGradWeights);  // [B, (P+K+G)*H]
  const TimeLSTMBackwardArgs<scalar_t, acc_t> args{s.steps(0),
                                                   H,
                                                   grad_out.data_ptr<scalar_t>(),
                                                   s.dt.data_ptr<acc_t>(),
                                                   peephole_c.data_ptr<scalar_t>(),
                                                   time_weight_c.data_ptr<scalar_t>(),
                                                   Activation<acc_t>::of(phi),
                                                   gates_c.data_ptr<scalar_t>(),
                                                   cells_c.data_ptr<acc_t>(),
                                                   grad_h_later.data_ptr<scalar_t>(),
                                                   grad_c.data_ptr<acc_t>(),
                                                   grad_gates.data_ptr<scalar_t>(),
                                                   grad_gates_step.pointer(),
                                                   grad_weights.data_ptr<acc_t>()};
  s.time_loop<Launcher>(true, [&](int64_t begin, int64_t end, int64_t step) {
    run_step<Launcher, TimeLSTMBackward<kVariant, scalar_t, acc_t>>(args, s, step, begin, end);
    at::Tensor grad_h_rows = rows_of(grad_h_later, begin, end);
    at::mm_out(grad_h_rows, grad_gates_step.rows(step, begin, end), weight_hh);
  });
  auto [grad_input, grad_weight_ih] = s.input_grads(grad_gates, input, weight_ih);
  const at::Tensor grad_weight_hh =
      at::mm(s.leading_blocks(grad_gates, 0, Layout::kRecurrentGates).t(),
             recurrent_input.reshape({s.p.seq_len * s.p.batch, H}));
  const at::Tensor sums = s.total(grad_weights);  // [P+K+G, H]
  return {grad_input,
          s.initial_state_grad(grad_h_later, grad_h_n),
          grad_c.to(s.dtype),
          grad_weight_ih,
          grad_weight_hh,
          sums.narrow(0, Layout::kPeepholes + Layout::kTimeWeights, Layout::kGates)
              .flatten()
              .clone(),
          sums.narrow(0, 0, Layout::kPeepholes).clone(),
          sums.narrow(0, Layout::kPeepholes, Layout::kTimeWeights).clone()};
}

template <typename Launcher>
Tensors6 time_lstm_forward(const at::Tensor& input, const at::Tensor& dt, const at::Tensor& h0,
                           const at::Tensor& c0, const std::optional<at::Tensor>& lengths,
                           const at::Tensor& weight_ih, const at::Tensor& weight_hh,
                           const at::Tensor& bias, const at::Tensor& peephole,
                           const at::Tensor& time_weight, int64_t variant,
                           std::string_view time_activation, bool reverse, bool save_workspace) {
  const Problem p =
      check_time_lstm(input, dt, lengths, weight_ih, weight_hh, peephole, time_weight, variant);
  check_state(p, h0, "h0", input);
  check_state(p, c0, "c0", input);
  check_vector(p, bias, "bias", time_lstm_blocks(variant).gates, input);
  const ActivationKind phi = parse_activation(time_activation, "time_activation");
  return run_entry<Launcher, Tensors6>(
      p, input, dt, lengths, reverse, [&](const Setup& s, auto tag) {
        return with_variant(variant, [&](auto v) {
          return time_lstm_forward_loop<Launcher, decltype(v)::value, decltype(tag)>(
              s, input, h0, c0, weight_ih, weight_hh, bias, peephole, time_weight, phi,
              save_workspace);
        });
      });
}

template <typename Launcher>
Tensors8 time_lstm_backward(const at::Tensor& grad_output, const at::Tensor& grad_h_n,
                            const at::Tensor& grad_c_n, const at::Tensor& input,
                            const at::Tensor& dt, const std::optional<at::Tensor>& lengths,
                            const at::Tensor& weight_ih, const at::Tensor& weight_hh,
                            const at::Tensor& peephole, const at::Tensor& time_weight,
                            const at::Tensor& gates, const at::Tensor& cells,
                            const at::Tensor& recurrent_input, int64_t variant,
                            std::string_view time_activation, bool reverse) {
  const Problem p =
      check_time_lstm(input, dt, lengths, weight_ih, weight_hh, peephole, time_weight, variant);
  check_gradients(p, input, grad_output, grad_h_n, &grad_c_n);
  const TimeLSTMBlocks blocks = time_lstm_blocks(variant);
  check_saved(p, input, gates, blocks.gates, cells, blocks.cells, recurrent_input);
  const ActivationKind phi = parse_activation(time_activation, "time_activation");
  return run_entry<Launcher, Tensors8>(
      p, input, dt, lengths, reverse, [&](const Setup& s, auto tag) {
        return with_variant(variant, [&](auto v) {
          return time_lstm_backward_loop<Launcher, decltype(v)::value, decltype(tag)>(
              s, grad_output, grad_h_n, grad_c_n, input, weight_ih, weight_hh, peephole,
              time_weight, gates, cells, recurrent_input, phi);
        });
      });
}

// ---------------------------------------------------------------------------------------------
// T-LSTM

template <typename Launcher, typename scalar_t>
Tensors6 tlstm_forward_loop(const Setup& s, const at::Tensor& input, const at::Tensor& h0,
                            const at::Tensor& c0, const at::Tensor& weight_ih,
                            const at::Tensor& weight_hh, const at::Tensor& bias,
                            const at::Tensor& decay_weight, const at::Tensor& decay_bias,
                            ActivationKind act, bool save) {
  using acc_t = at::opmath_type<scalar_t>;
  using Layout = TLSTMLayout;
  const at::Tensor gates = s.project_inputs<Launcher>(input, weight_ih, bias, save);  // [L, B, 4H]
  const RecurrentGates<Launcher, scalar_t> recurrent(s, gates, Layout::kGates, weight_hh);
  const at::Tensor short_pre = s.step_buffer(1, s.acc_options);                 // [B, H]
  // The short-term memory's GEMM runs in the accumulation dtype, on the acc_t cell state.
  const at::Tensor decay_weight_t = decay_weight.to(s.acc_options).t();   // [H, H]
  const at::Tensor decay_bias_acc = decay_bias.to(s.acc_options);         // [H]
  const at::Tensor h = h0.clone(at::MemoryFormat::Contiguous);            // [B, H]
  const at::Tensor c = s.acc_copy(c0);                                    // [B, H]
  const at::Tensor output = s.by_position(1, s.options);                  // [L, B, H]
  const at::Tensor cells = s.saved<Launcher>(save, Layout::kCells, s.acc_options);  // [L, B, 2H]
  const at::Tensor recurrent_input = s.saved<Launcher>(save, 1, s.options);         // [L, B, H]
  const TLSTMForwardArgs<scalar_t, acc_t> args{
      s.steps(0),
      s.p.hidden,
      gates.data_ptr<scalar_t>(),
      short_pre.data_ptr<acc_t>(),
      decay_bias_acc.data_ptr<acc_t>(),
      s.dt.data_ptr<acc_t>(),
      Activation<acc_t>::of(act),
      h.data_ptr<scalar_t>(),
      c.data_ptr<acc_t>(),
      output.data_ptr<scalar_t>(),
      save ? cells.data_ptr<acc_t>() : nullptr,
      save ? recurrent_input.data_ptr<scalar_t>() : nullptr};
  s.time_loop<Launcher>(false, [&](int64_t begin, int64_t end, int64_t step) {
    at::Tensor short_pre_rows = rows_of(short_pre, begin, end);
    recurrent.add(h, step, begin, end);
    at::mm_out(short_pre_rows, rows_of(c, begin, end), decay_weight_t);
    if (save) {
      run_step<Launcher, TLSTMForward<true, scalar_t, acc_t>>(args, s, step, begin, end);
    } else {
      run_step<Launcher, TLSTMForward<false, scalar_t, acc_t>>(args, s, step, begin, end);
    }
  });
  return {output, h, c.to(s.dtype), s.saved_gates(save, gates), cells, recurrent_input};
}

template <typename Launcher, typename scalar_t>
Tensors8 tlstm_backward_loop(const Setup& s, const at::Tensor& grad_output,
                             const at::Tensor& grad_h_n, const at::Tensor& grad_c_n,
                             const at::Tensor& input, const at::Tensor& weight_ih,
                             const at::Tensor& weight_hh, const at::Tensor& decay_weight,
                             const at::Tensor& gates, const at::Tensor& cells,
                             const at::Tensor& recurrent_input, ActivationKind act) {
  using acc_t = at::opmath_type<scalar_t>;
  using Layout = TLSTMLayout;
  const int64_t H = s.p.hidden;
  at::Tensor grad_h_later = s.step_buffer(1, s.options);                            // [B, H]
  const at::Tensor grad_out = s.hidden_grads(grad_output, grad_h_n, grad_h_later);  // [L, B, H]
  const at::Tensor gates_c = gates.contiguous(), cells_c = cells.contiguous();
  const at::Tensor decay_weight_acc = decay_weight.to(s.acc_options);                 // [H, H]
  const at::Tensor grad_gates = s.workspace<Launcher>(0, Layout::kGates, s.options);  // [L, B, 4H]
  const at::Tensor grad_short = s.workspace<Launcher>(1, 1, s.acc_options);           // [L, B, H]
  const StepOperand<scalar_t> grad_gates_step(s, grad_gates, Layout::kGates);
  const StepOperand<acc_t> grad_short_step(s, grad_short, 1);
  const at::Tensor grad_c_direct = s.acc_copy(grad_c_n);                              // [B, H]
  const at::Tensor grad_c_recurrent = s.step_buffer(1, s.acc_options);                // [B, H]
  const at::Tensor grad_weights = s.partial_sums(Layout::kGradWeights);               // [B, 5H]
  const TLSTMBackwardArgs<scalar_t, acc_t> args{s.steps(0),
                                                H,
                                                grad_out.data_ptr<scalar_t>(),
                                                s.dt.data_ptr<acc_t>(),
                                                Activation<acc_t>::of(act),
                                                gates_c.data_ptr<scalar_t>(),
                                                cells_c.data_ptr<acc_t>(),
                                                grad_h_later.data_ptr<scalar_t>(),
                                                grad_c_recurrent.data_ptr<acc_t>(),
                                                grad_gates.data_ptr<scalar_t>(),
                                                grad_gates_step.pointer(),
                                                grad_short.data_ptr<acc_t>(),
                                                grad_short_step.pointer(),
                                                grad_c_direct.data_ptr<acc_t>(),
                                                grad_weights.data_ptr<acc_t>()};
  s.time_loop<Launcher>(true, [&](int64_t begin, int64_t end, int64_t step) {
    run_step<Launcher, TLSTMBackward<scalar_t, acc_t>>(args, s, step, begin, end);
    at::Tensor grad_h_rows = rows_of(grad_h_later, begin, end);
    at::Tensor grad_c_rows = rows_of(grad_c_recurrent, begin, end);
    at::mm_out(grad_h_rows, grad_gates_step.rows(step, begin, end), weight_hh);
    at::mm_out(grad_c_rows, grad_short_step.rows(step, begin, end), decay_weight_acc);
  });
  auto [grad_input, grad_weight_ih] = s.input_grads(grad_gates, input, weight_ih);
  const int64_t rows = s.p.seq_len * s.p.batch;
  const at::Tensor grad_weight_hh =
      at::mm(grad_gates.view({rows, Layout::kGates * H}).t(), recurrent_input.reshape({rows, H}));
  const at::Tensor grad_decay_weight =
      at::mm(grad_short.view({rows, H}).t(), s.leading_blocks(cells_c, Layout::kCPrev, 1));
  const at::Tensor sums = s.total(grad_weights);  // [5, H]
  return {grad_input,
          s.initial_state_grad(grad_h_later, grad_h_n),
          (grad_c_direct + grad_c_recurrent).to(s.dtype),
          grad_weight_ih,
          grad_weight_hh,
          sums.narrow(0, 0, Layout::kGates).flatten().clone(),
          grad_decay_weight.to(s.dtype),
          sums[Layout::kGradDecayBias].clone()};
}

template <typename Launcher>
Tensors6 tlstm_forward(const at::Tensor& input, const at::Tensor& dt, const at::Tensor& h0,
                       const at::Tensor& c0, const std::optional<at::Tensor>& lengths,
                       const at::Tensor& weight_ih, const at::Tensor& weight_hh,
                       const at::Tensor& bias, const at::Tensor& decay_weight,
                       const at::Tensor& decay_bias, std::string_view short_term_activation,
                       bool reverse, bool save_workspace) {
  const Problem p = check_tlstm(input, dt, lengths, weight_ih, weight_hh, decay_weight, decay_bias);
  check_state(p, h0, "h0", input);
  check_state(p, c0, "c0", input);
  check_vector(p, bias, "bias", TLSTMLayout::kGates, input);
  const ActivationKind act = parse_activation(short_term_activation, "short_term_activation");
  return run_entry<Launcher, Tensors6>(
      p, input, dt, lengths, reverse, [&](const Setup& s, auto tag) {
        return tlstm_forward_loop<Launcher, decltype(tag)>(s, input, h0, c0, weight_ih, weight_hh,
                                                           bias, decay_weight, decay_bias, act,
                                                           save_workspace);
      });
}

template <typename Launcher>
Tensors8 tlstm_backward(const at::Tensor& grad_output, const at::Tensor& grad_h_n,
                        const at::Tensor& grad_c_n, const at::Tensor& input, const at::Tensor& dt,
                        const std::optional<at::Tensor>& lengths, const at::Tensor& weight_ih,
                        const at::Tensor& weight_hh, const at::Tensor& decay_weight,
                        const at::Tensor& decay_bias, const at::Tensor& gates,
                        const at::Tensor& cells, const at::Tensor& recurrent_input,
                        std::string_view short_term_activation, bool reverse) {
  const Problem p = check_tlstm(input, dt, lengths, weight_ih, weight_hh, decay_weight, decay_bias);
  check_gradients(p, input, grad_output, grad_h_n, &grad_c_n);
  check_saved(p, input, gates, TLSTMLayout::kGates, cells, TLSTMLayout::kCells, recurrent_input);
  const ActivationKind act = parse_activation(short_term_activation, "short_term_activation");
  return run_entry<Launcher, Tensors8>(
      p, input, dt, lengths, reverse, [&](const Setup& s, auto tag) {
        return tlstm_backward_loop<Launcher, decltype(tag)>(
            s, grad_output, grad_h_n, grad_c_n, input, weight_ih, weight_hh, decay_weight, gates,
            cells, recurrent_input, act);
      });
}

// ---------------------------------------------------------------------------------------------
// Time-decay GRU

template <typename Launcher, typename scalar_t>
Tensors5 time_decay_gru_forward_loop(const Setup& s, const at::Tensor& input, const at::Tensor& h0,
                                     const at::Tensor& weight_ih, const at::Tensor& weight_hh,
                                     const at::Tensor& bias_ih, const at::Tensor& bias_hh,
                                     const at::Tensor& decay_weight, const at::Tensor& decay_bias,
                                     bool save) {
  using acc_t = at::opmath_type<scalar_t>;
  using Layout = TimeDecayGRULayout;
  const at::Tensor gates =
      s.project_inputs<Launcher>(input, weight_ih, bias_ih, save);  // [L, B, 3H]
  const at::Tensor gates_h = s.step_buffer(Layout::kGates, s.options);              // [B, 3H]
  const at::Tensor h = s.acc_copy(h0);                                              // [B, H]
  const at::Tensor h_tilde = s.step_buffer(1, s.options);                           // [B, H]
  const at::Tensor gamma = s.step_buffer(1, s.acc_options);                         // [B, H]
  const at::Tensor output = s.by_position(1, s.options);                            // [L, B, H]
  const at::Tensor cells = s.saved<Launcher>(save, Layout::kCells, s.acc_options);  // [L, B, 3H]
  const at::Tensor recurrent_input = s.saved<Launcher>(save, 1, s.options);         // [L, B, H]
  const at::Tensor decay_w = decay_weight.contiguous(), decay_b = decay_bias.contiguous();
  acc_t* saved_cells = save ? cells.data_ptr<acc_t>() : nullptr;
  const TimeDecayArgs<scalar_t, acc_t> decay{s.steps(0),
                                             s.p.hidden,
                                             s.dt.data_ptr<acc_t>(),
                                             decay_w.data_ptr<scalar_t>(),
                                             decay_b.data_ptr<scalar_t>(),
                                             h.data_ptr<acc_t>(),
                                             h_tilde.data_ptr<scalar_t>(),
                                             gamma.data_ptr<acc_t>(),
                                             saved_cells,
                                             save ? recurrent_input.data_ptr<scalar_t>() : nullptr};
  const TimeDecayGRUForwardArgs<scalar_t, acc_t> cell{s.steps(0),
                                                      s.p.hidden,
                                                      gates.data_ptr<scalar_t>(),
                                                      gates_h.data_ptr<scalar_t>(),
                                                      s.dt.data_ptr<acc_t>(),
                                                      gamma.data_ptr<acc_t>(),
                                                      h.data_ptr<acc_t>(),
                                                      output.data_ptr<scalar_t>(),
                                                      saved_cells};
  const at::Tensor weight_hh_t = weight_hh.t();
  s.time_loop<Launcher>(false, [&](int64_t begin, int64_t end, int64_t step) {
    if (save) {
      run_step<Launcher, TimeDecay<true, scalar_t, acc_t>>(decay, s, step, begin, end);
    } else {
      run_step<Launcher, TimeDecay<false, scalar_t, acc_t>>(decay, s, step, begin, end);
    }
    at::Tensor gates_h_rows = rows_of(gates_h, begin, end);
    at::addmm_out(gates_h_rows, bias_hh, rows_of(h_tilde, begin, end), weight_hh_t);
    if (save) {
      run_step<Launcher, TimeDecayGRUForward<true, scalar_t, acc_t>>(cell, s, step, begin, end);
    } else {
      run_step<Launcher, TimeDecayGRUForward<false, scalar_t, acc_t>>(cell, s, step, begin, end);
    }
  });
  return {output, h.to(s.dtype), s.saved_gates(save, gates), cells, recurrent_input};
}

template <typename Launcher, typename scalar_t>
Tensors8 time_decay_gru_backward_loop(const Setup& s, const at::Tensor& grad_output,
                                      const at::Tensor& grad_h_n, const at::Tensor& input,
                                      const at::Tensor& weight_ih, const at::Tensor& weight_hh,
                                      const at::Tensor& decay_weight, const at::Tensor& decay_bias,
                                      const at::Tensor& gates, const at::Tensor& cells,
                                      const at::Tensor& recurrent_input) {
  using acc_t = at::opmath_type<scalar_t>;
  using Layout = TimeDecayGRULayout;
  const int64_t H = s.p.hidden;
  const at::Tensor grad_out = grad_output.contiguous();  // [L, B, H]
  const at::Tensor gates_c = gates.contiguous(), cells_c = cells.contiguous();
  const at::Tensor decay_w = decay_weight.contiguous(), decay_b = decay_bias.contiguous();
  const at::Tensor grad_gates_x =
      s.workspace<Launcher>(0, Layout::kGates, s.options);  // [L, B, 3H]
  const at::Tensor grad_gates_h =
      s.workspace<Launcher>(1, Layout::kGates, s.options);                        // [L, B, 3H]
  const StepOperand<scalar_t> grad_gates_h_step(s, grad_gates_h, Layout::kGates);
  const at::Tensor grad_h_tilde_direct = s.step_buffer(1, s.options);             // [B, H]
  const at::Tensor grad_h_tilde = s.step_buffer(1, s.options);                    // [B, H]
  const at::Tensor grad_h = s.acc_copy(grad_h_n);                                 // [B, H]
  const at::Tensor grad_weights = s.partial_sums(2);                              // [B, 2H]
  const at::Tensor grad_biases = s.partial_sums(2 * Layout::kGates);              // [B, 6H]
  const TimeDecayGRUBackwardArgs<scalar_t, acc_t> cell{s.steps(0),
                                                       H,
                                                       grad_out.data_ptr<scalar_t>(),
                                                       s.dt.data_ptr<acc_t>(),
                                                       gates_c.data_ptr<scalar_t>(),
                                                       cells_c.data_ptr<acc_t>(),
                                                       grad_h.data_ptr<acc_t>(),
                                                       grad_gates_x.data_ptr<scalar_t>(),
                                                       grad_gates_h.data_ptr<scalar_t>(),
                                                       grad_gates_h_step.pointer(),
                                                       grad_h_tilde_direct.data_ptr<scalar_t>(),
                                                       grad_biases.data_ptr<acc_t>()};
  const TimeDecayBackwardArgs<scalar_t, acc_t> decay{s.steps(0),
                                                     H,
                                                     s.dt.data_ptr<acc_t>(),
                                                     decay_w.data_ptr<scalar_t>(),
                                                     decay_b.data_ptr<scalar_t>(),
                                                     cells_c.data_ptr<acc_t>(),
                                                     grad_h_tilde.data_ptr<scalar_t>(),
                                                     grad_h.data_ptr<acc_t>(),
                                                     grad_weights.data_ptr<acc_t>()};
  s.time_loop<Launcher>(true, [&](int64_t begin, int64_t end, int64_t step) {
    run_step<Launcher, TimeDecayGRUBackward<scalar_t, acc_t>>(cell, s, step, begin, end);
    at::Tensor grad_h_tilde_rows = rows_of(grad_h_tilde, begin, end);
    at::addmm_out(grad_h_tilde_rows, rows_of(grad_h_tilde_direct, begin, end),
                  grad_gates_h_step.rows(step, begin, end), weight_hh);
    run_step<Launcher, TimeDecayBackward<scalar_t, acc_t>>(decay, s, step, begin, end);
  });
  auto [grad_input, grad_weight_ih] = s.input_grads(grad_gates_x, input, weight_ih);
  const int64_t rows = s.p.seq_len * s.p.batch;
  const at::Tensor grad_weight_hh =
      at::mm(grad_gates_h.view({rows, Layout::kGates * H}).t(), recurrent_input.reshape({rows, H}));
  const at::Tensor decay_grads = s.total(grad_weights);  // [2, H]
  const at::Tensor bias_grads = s.total(grad_biases).view({2, Layout::kGates * H});
  return {grad_input,
          grad_h.to(s.dtype),
          grad_weight_ih,
          grad_weight_hh,
          bias_grads[0].clone(),
          bias_grads[1].clone(),
          decay_grads[0].clone(),
          decay_grads[1].clone()};
}

template <typename Launcher>
Tensors5 time_decay_gru_forward(const at::Tensor& input, const at::Tensor& dt, const at::Tensor& h0,
                                const std::optional<at::Tensor>& lengths,
                                const at::Tensor& weight_ih, const at::Tensor& weight_hh,
                                const at::Tensor& bias_ih, const at::Tensor& bias_hh,
                                const at::Tensor& decay_weight, const at::Tensor& decay_bias,
                                bool reverse, bool save_workspace) {
  const Problem p =
      check_time_decay_gru(input, dt, lengths, weight_ih, weight_hh, decay_weight, decay_bias);
  check_state(p, h0, "h0", input);
  check_vector(p, bias_ih, "bias_ih", TimeDecayGRULayout::kGates, input);
  check_vector(p, bias_hh, "bias_hh", TimeDecayGRULayout::kGates, input);
  return run_entry<Launcher, Tensors5>(
      p, input, dt, lengths, reverse, [&](const Setup& s, auto tag) {
        return time_decay_gru_forward_loop<Launcher, decltype(tag)>(
            s, input, h0, weight_ih, weight_hh, bias_ih, bias_hh, decay_weight, decay_bias,
            save_workspace);
      });
}

template <typename Launcher>
Tensors8 time_decay_gru_backward(const at::Tensor& grad_output, const at::Tensor& grad_h_n,
                                 const at::Tensor& input, const at::Tensor& dt,
                                 const std::optional<at::Tensor>& lengths,
                                 const at::Tensor& weight_ih, const at::Tensor& weight_hh,
                                 const at::Tensor& decay_weight, const at::Tensor& decay_bias,
                                 const at::Tensor& gates, const at::Tensor& cells,
                                 const at::Tensor& recurrent_input, bool reverse) {
  const Problem p =
      check_time_decay_gru(input, dt, lengths, weight_ih, weight_hh, decay_weight, decay_bias);
  check_gradients(p, input, grad_output, grad_h_n, nullptr);
  check_saved(p, input, gates, TimeDecayGRULayout::kGates, cells, TimeDecayGRULayout::kCells,
              recurrent_input);
  return run_entry<Launcher, Tensors8>(
      p, input, dt, lengths, reverse, [&](const Setup& s, auto tag) {
        return time_decay_gru_backward_loop<Launcher, decltype(tag)>(
            s, grad_output, grad_h_n, input, weight_ih, weight_hh, decay_weight, decay_bias, gates,
            cells, recurrent_input);
      });
}

// ---------------------------------------------------------------------------------------------
// The impls of one device (schemas in bindings.cpp): time_rnn_cpu.cpp and time_rnn_cuda.cu
// register their launcher's instantiations of the entry points above.

template <typename Launcher>
void register_impls(torch::Library& m) {
  m.impl("time_lstm", &time_lstm_forward<Launcher>);
  m.impl("time_lstm_backward", &time_lstm_backward<Launcher>);
  m.impl("tlstm", &tlstm_forward<Launcher>);
  m.impl("tlstm_backward", &tlstm_backward<Launcher>);
  m.impl("time_decay_gru", &time_decay_gru_forward<Launcher>);
  m.impl("time_decay_gru_backward", &time_decay_gru_backward<Launcher>);
}

}  // namespace time_rnn
}  // namespace stseq
