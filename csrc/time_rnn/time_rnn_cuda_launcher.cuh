// The time-aware cells' part of the CUDA launcher (recurrent/recurrent_cuda.cu):
// time_rnn::CudaElementSteps runs the shared drivers' steps (time_rnn_forward.h,
// time_rnn_backward.h, the same code as on the CPU) over the rows still running and gives one
// thread to each hidden unit of each row. Per step that is the recurrent GEMM(s) through cuBLAS
// (at::mm_out on the current stream; half and bfloat16 accumulate in float32) and one launch of
// the shared element kernel (common/cuda_element_kernel.cuh, also the LSTM/GRU stepwise loop's)
// whose body, ElementStepBody, runs the cell math of time_rnn.h: gates, dt terms and, when
// training, the saved activations. States, saved activations and gradient accumulators are
// float32 for half and bfloat16 inputs; every (row, unit) accumulator is owned by one thread per
// step, so there are no atomics and the backward is bitwise reproducible.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "common/cuda_element_kernel.cuh"
#include "time_rnn/time_rnn.h"

namespace stseq {
namespace time_rnn {
namespace {

constexpr int64_t kMaxBlocks = 65535;  // the element kernel grid-strides beyond

// Unit j of a row as a lane of the cell math (time_rnn.h): loads convert to the accumulation type
// acc_t, stores back to the pointer's type (float32 math for half and bfloat16 tensors).
template <typename acc_t>
struct UnitLane {
  using Act = ScalarMath;
  using Value = acc_t;
  int64_t j;
  template <typename T>
  __device__ __forceinline__ acc_t load(const T* row) const {
    return static_cast<acc_t>(row[j]);
  }
  template <typename T>
  __device__ __forceinline__ void store(T* row, acc_t value) const {
    row[j] = static_cast<T>(value);
  }
};

// One element step as the element kernel's body: unit j of row b runs the cell math of a running
// row, or writes what a finished row writes.
template <typename Step>
struct ElementStepBody {
  Step step;
  __device__ __forceinline__ void run_unit(int64_t b, int64_t j) const {
    const auto row = step.row(b);
    const UnitLane<typename Step::acc_type> lane{j};
    if (row.active) {
      step.active(row, b, lane);
    } else {
      step.inactive(b, lane);
    }
  }
};

struct CudaElementSteps {
  // Every step over the rows that run at it (the driver narrows [0, active[0]) to them): the
  // GEMMs use the whole batch, one kernel per element step.
  template <typename Body>
  static void time_loop(const std::vector<int64_t>& active, const Body& body) {
    const int64_t steps = static_cast<int64_t>(active.size());
    for (int64_t i = 0; i < steps; ++i) body(0, steps > 0 ? active[0] : 0, i);
  }

  // Internal and saved buffers: the caching allocator already reuses device memory across calls.
  static at::Tensor scratch(int, at::IntArrayRef shape, const at::TensorOptions& options) {
    return at::empty(shape, options);
  }
  static at::Tensor saved_buffer(at::IntArrayRef shape, const at::TensorOptions& options) {
    return at::empty(shape, options);
  }

  template <typename Step>
  static void run(const Step& step, int64_t begin, int64_t end, int64_t hidden) {
    launch_element_kernel(ElementStepBody<Step>{step}, begin, end, hidden, kMaxBlocks);
  }
};

}  // namespace
}  // namespace time_rnn
}  // namespace stseq
