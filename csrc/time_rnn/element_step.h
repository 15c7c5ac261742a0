// The element-step framework of the time-aware cells (see time_rnn.h for the contract): Row and
// Steps (which position a row processes at a step, and whether it is active), the CPU prefetch
// helpers, the ElementStep base every cell's step derives from, and AddRecurrent (the LSTM
// cells' W_hh h added into the gates where the GEMM cannot write it in place).
#pragma once

#include <cstdint>

#include "common/element_math.h"

namespace stseq {
namespace time_rnn {

// Rows and steps. Step s of row b (length n_b, clamped to [0, L]) processes position s in the
// forward direction and n_b - 1 - s in the reverse one; rows with s >= n_b are inactive.

template <typename acc_t>
struct Row {
  int64_t index;  // (position, b) -> position * B + b; meaningful when active
  bool active;
  acc_t dt;        // time gap at the position (0 when inactive)
  acc_t discount;  // T-LSTM's g(dt) = 1 / log(e + dt); 1 for the other cells
  int64_t sums;    // the row of the backward's partial-sum buffers this row adds to: b itself
                   // (CUDA: one thread per (b, j)), or its tile's first row (the CPU launcher
                   // sets it: one thread carries a tile, its sums stay in L1)
};

struct Steps {
  const int64_t* lengths;  // [B] or nullptr (every row has L positions)
  int64_t seq_len;         // L
  int64_t batch;           // B
  int64_t step;            // s
  bool reverse;

  template <typename acc_t>
  STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE Row<acc_t> row(int64_t b, const acc_t* dt) const {
    int64_t n = seq_len;
    if (lengths != nullptr) {
      n = lengths[b];
      n = n < 0 ? 0 : (n > seq_len ? seq_len : n);
    }
    const bool active = step < n;
    const int64_t position = reverse ? n - 1 - step : step;
    const int64_t index = position * batch + b;
    return {index, active, active ? dt[index] : acc_t(0), acc_t(1), b};
  }
};

// Asks the CPU's caches for count elements from p (host only: the CPU launcher prefetches the
// next row's by-position reads while a row runs; they come from memory, and the hardware
// prefetcher does not follow a row's interleaved gate blocks).
template <typename T>
STSEQ_FORCE_INLINE void prefetch_span(const T* p, int64_t count) {
#if defined(__GNUC__) || defined(__clang__)
  const char* bytes = reinterpret_cast<const char*>(p);
  const int64_t size = count * static_cast<int64_t>(sizeof(T));
  for (int64_t k = 0; k < size; k += 64) __builtin_prefetch(bytes + k);
#endif
}

// A backward row's by-position reads (saved gates and cells, grad_output) at position index.
template <typename Layout, typename Args>
STSEQ_FORCE_INLINE void prefetch_backward_row(const Args& a, int64_t index) {
  const int64_t H = a.hidden;
  prefetch_span(a.gates + index * (Layout::kGates * H), Layout::kGates * H);
  prefetch_span(a.cells + index * (Layout::kCells * H), Layout::kCells * H);
  prefetch_span(a.grad_output + index * H, H);
}

// What the element steps share: their arguments `a` (with the op's Steps and dt), the row a
// step gives row b, nothing to write for an inactive row and nothing to prefetch. Each step adds
// active() and hides row(), inactive() or prefetch() where it needs its own.
template <typename Args, typename acc_t>
struct ElementStep {
  using acc_type = acc_t;
  Args a;

  STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE Row<acc_t> row(int64_t b) const {
    return a.steps.row(b, a.dt);
  }
  template <typename Lane>
  STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE void inactive(int64_t, const Lane&) const {}
  STSEQ_FORCE_INLINE void prefetch(const Row<acc_t>&) const {}  // host only
};

// The LSTM cells' recurrent GEMM W_hh h goes into the first R blocks of the gates at each row's
// position: straight from the GEMM where a step's rows sit at one position (RecurrentGates in
// time_rnn_plan.h), else (reverse direction with padding) through a [B, R*H] step buffer and
// this step.

template <typename scalar_t, typename acc_t>
struct AddRecurrentArgs {
  Steps steps;
  int64_t hidden;            // H
  int64_t gate_blocks;       // G
  int64_t recurrent_blocks;  // R
  scalar_t* gates;           // [L, B, G*H] the first R blocks += gates_h
  const scalar_t* gates_h;   // [B, R*H] this step's W_hh h
  const acc_t* dt;           // [L, B]
};

template <typename scalar_t, typename acc_t>
struct AddRecurrent : ElementStep<AddRecurrentArgs<scalar_t, acc_t>, acc_t> {
  using ElementStep<AddRecurrentArgs<scalar_t, acc_t>, acc_t>::a;

  template <typename Lane>
  STSEQ_HOST_DEVICE STSEQ_FORCE_INLINE void active(const Row<acc_t>& row, int64_t b,
                                                   const Lane& lane) const {
    const int64_t H = a.hidden;
    scalar_t* gx = a.gates + row.index * (a.gate_blocks * H);
    const scalar_t* gh = a.gates_h + b * (a.recurrent_blocks * H);
    for (int64_t k = 0; k < a.recurrent_blocks; ++k) {
      lane.store(gx + k * H, lane.load(gx + k * H) + lane.load(gh + k * H));
    }
  }
};

}  // namespace time_rnn
}  // namespace stseq
