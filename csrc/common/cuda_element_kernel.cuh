// The one element kernel of the CUDA recurrent layers: a thread per (row, unit) of one step,
// grid-stride over rows x hidden, running a step functor's per-element body
// `__device__ void run_unit(int64_t b, int64_t j) const` (unit j of row b). Used by the LSTM/GRU
// stepwise loop (rnn/rnn_cuda_stepwise.cuh: forward and backward of each cell) and by the
// time-aware cells' element steps (time_rnn/time_rnn_cuda_launcher.cuh). CUDA translation units
// only (recurrent/recurrent_cuda.cu).
#pragma once

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <cstdint>

namespace stseq {
namespace {

constexpr int kElementThreads = 256;

// Rows [begin, begin + rows) x units [0, hidden): thread (b, j) runs step.run_unit(b, j).
template <typename Step>
__global__ void __launch_bounds__(kElementThreads)
    element_kernel(const Step step, int64_t begin, int64_t rows, int64_t hidden) {
  const int64_t total = rows * hidden;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += stride) {
    step.run_unit(begin + i / hidden, i % hidden);
  }
}

// Launches element_kernel over rows [begin, end) on the current stream, nothing when there is no
// work; at most max_blocks blocks of kElementThreads, the threads grid-stride beyond.
template <typename Step>
void launch_element_kernel(const Step& step, int64_t begin, int64_t end, int64_t hidden,
                           int64_t max_blocks) {
  const int64_t total = (end - begin) * hidden;
  if (total == 0) return;
  const int64_t blocks =
      std::min<int64_t>((total + kElementThreads - 1) / kElementThreads, max_blocks);
  element_kernel<<<static_cast<unsigned>(blocks), kElementThreads, 0,
                   c10::cuda::getCurrentCUDAStream()>>>(step, begin, end - begin, hidden);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace
}  // namespace stseq
