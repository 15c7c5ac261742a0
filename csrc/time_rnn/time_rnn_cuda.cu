// CUDA kernels of the time-aware recurrent ops, registered as their CUDA impls: the shared
// drivers (time_rnn_driver.h, the same code as on the CPU) with a launcher that runs every step
// over the rows still running and gives one thread to each hidden unit of each row. Per step that
// is the recurrent GEMM(s) through cuBLAS (at::mm_out on the current stream; half and bfloat16
// accumulate in float32) and one fused kernel running the cell math of time_rnn.h: gates, dt terms
// and, when training, the saved activations. States, saved activations and gradient accumulators
// are float32 for half and bfloat16 inputs; every (row, unit) accumulator is owned by one thread
// per step, so there are no atomics and the backward is bitwise reproducible.

#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "time_rnn/time_rnn_driver.h"

namespace stseq {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65535;  // the kernel grid-strides beyond

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

// One element step over rows [begin, begin + rows): thread (b, j) runs the cell math of unit j
// of row b.
template <typename Step>
__global__ void __launch_bounds__(kThreads)
    element_step_kernel(const Step step, int64_t begin, int64_t rows, int64_t hidden) {
  const int64_t total = rows * hidden;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += stride) {
    const int64_t b = begin + i / hidden;
    const int64_t j = i % hidden;
    const auto row = step.row(b);
    const UnitLane<typename Step::acc_type> lane{j};
    if (row.active) {
      step.active(row, b, lane);
    } else {
      step.inactive(b, lane);
    }
  }
}

struct CudaLauncher {
  static c10::cuda::CUDAGuard guard(const at::Tensor& input) {
    TORCH_CHECK_VALUE(input.is_cuda(), "input must be a CUDA tensor, got one on ", input.device());
    return c10::cuda::CUDAGuard(input.device());
  }

  template <typename F>
  static void dispatch(at::ScalarType type, F&& f) {
    switch (type) {
      case at::kFloat:
        return f(float{});
      case at::kDouble:
        return f(double{});
      case at::kHalf:
        return f(c10::Half{});
      case at::kBFloat16:
        return f(c10::BFloat16{});
      default:
        TORCH_CHECK_VALUE(false,
                          "time-aware recurrent layers on CUDA support float32, float64, "
                          "float16 and bfloat16, got ",
                          type);
    }
  }

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
    const int64_t total = (end - begin) * hidden;
    if (total == 0) return;
    const int64_t blocks = std::min<int64_t>((total + kThreads - 1) / kThreads, kMaxBlocks);
    element_step_kernel<<<static_cast<unsigned>(blocks), kThreads, 0,
                          c10::cuda::getCurrentCUDAStream()>>>(step, begin, end - begin, hidden);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

}  // namespace
}  // namespace stseq

TORCH_LIBRARY_IMPL(stseq, CUDA, m) { stseq::time_rnn::register_impls<stseq::CudaLauncher>(m); }
