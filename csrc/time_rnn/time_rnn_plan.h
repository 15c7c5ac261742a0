// Buffers and plans of the time-aware recurrent drivers: Setup (sizes, options, lengths, the
// rows that run at each step, and every buffer the loops allocate, shapes beside each),
// run_entry (what every entry point runs after its checks), run_step (one element step over a
// step's rows), RecurrentGates (an LSTM cell's recurrent GEMM into its gates) and StepOperand
// (a backward step's GEMM operand).
//
// The time-aware cells' drivers (haste's structure, written for every cell), the same code on
// every device (the launcher interface: recurrent/recurrent_driver.h):
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
// step covers only that prefix (as in csrc/rnn's plan): no work is spent on padding. Unsorted
// lengths stay correct (every row, each checked by the element step), only slower.
//
// Files: this one, time_rnn_forward.h and time_rnn_backward.h (each cell's time loop and entry
// point); the cell maths: time_rnn.h.
#pragma once

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>

#include <algorithm>
#include <optional>
#include <tuple>
#include <vector>

#include "common/active_rows.h"
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
    return ::stseq::active_rows(length, p.batch, p.seq_len);
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
  Launcher::dispatch(input.scalar_type(), "time-aware recurrent layers",
                     [&](auto tag) { result = body(s, tag); });
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

}  // namespace time_rnn
}  // namespace stseq
