// The CUDA launcher of the recurrent engine (recurrent_driver.h) and the CUDA impls of every
// recurrent op (one line; schemas: recurrent_cpu.cpp). The launcher is the device checks and
// dtype dispatch below plus two sets of capabilities: the LSTM/GRU time loops
// (rnn/rnn_cuda_launcher.cuh: cuBLAS per step and a pointwise kernel, or the persistent cluster
// kernels, by the "auto" plan) and the time-aware cells' element steps
// (time_rnn/time_rnn_cuda_launcher.cuh); both run their pointwise steps in one element kernel
// (common/cuda_element_kernel.cuh). float32, float64, float16 and bfloat16; the half types
// accumulate, and keep states and saved activations, in float32.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "recurrent/recurrent_driver.h"
#include "rnn/rnn_cuda_launcher.cuh"
#include "time_rnn/time_rnn_cuda_launcher.cuh"

namespace stseq {
namespace {

struct CudaLauncher : rnn::CudaLoops, time_rnn::CudaElementSteps {
  static c10::cuda::CUDAGuard guard(const at::Tensor& input) {
    TORCH_CHECK_VALUE(input.is_cuda(), "input must be a CUDA tensor, got one on ", input.device());
    return c10::cuda::CUDAGuard(input.device());
  }

  static void check_dtype(at::ScalarType type, const char* layers) {
    TORCH_CHECK_VALUE(type == at::kFloat || type == at::kDouble || type == at::kHalf ||
                          type == at::kBFloat16,
                      layers, " on CUDA support float32, float64, float16 and bfloat16, got ",
                      type);
  }

  static void check_input(const at::Tensor& input, const char* layers) {
    TORCH_CHECK_VALUE(input.is_cuda(), "input must be a CUDA tensor, got ", input.device());
    check_dtype(input.scalar_type(), layers);
  }

  template <typename F>
  static void dispatch(at::ScalarType type, const char* layers, F&& f) {
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
        check_dtype(type, layers);
    }
  }
};

}  // namespace
}  // namespace stseq

TORCH_LIBRARY_IMPL(stseq, CUDA, m) { stseq::recurrent::register_impls<stseq::CudaLauncher>(m); }
