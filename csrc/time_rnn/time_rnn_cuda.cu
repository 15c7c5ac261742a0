// CUDA kernels of the time-aware recurrent ops: the shared drivers (time_rnn_driver.h, the
// same code as on the CPU) with a launcher that runs every step over the whole batch and gives
// one thread to each hidden unit of each row. Per step that is the recurrent GEMM(s) through cuBLAS
// (at::mm_out on the current stream; half and bfloat16 accumulate in float32) and one fused kernel
// running the cell math of time_rnn.h: gates, dt terms and, when training, the saved activations.
// States, saved activations and gradient accumulators are float32 for half and bfloat16 inputs;
// every (row, unit) accumulator is owned by one thread per step, so there are no atomics and the
// backward is bitwise reproducible.

#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "time_rnn/time_rnn_cuda.h"
#include "time_rnn/time_rnn_driver.h"

namespace stseq {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65535;  // the kernel grid-strides beyond

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
    if (row.active) {
      step.active(row, b, j);
    } else {
      step.inactive(b, j);
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

  // Internal buffers: the caching allocator already reuses device memory across calls.
  static at::Tensor scratch(int, at::IntArrayRef shape, const at::TensorOptions& options) {
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

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> time_lstm_cuda(
    const at::Tensor& input, const at::Tensor& dt, const at::Tensor& h0, const at::Tensor& c0,
    const std::optional<at::Tensor>& lengths, const at::Tensor& weight_ih,
    const at::Tensor& weight_hh, const at::Tensor& bias, const at::Tensor& peephole,
    const at::Tensor& time_weight, int64_t variant, std::string_view time_activation, bool reverse,
    bool save_workspace) {
  return time_rnn::time_lstm_forward<CudaLauncher>(input, dt, h0, c0, lengths, weight_ih, weight_hh,
                                                   bias, peephole, time_weight, variant,
                                                   time_activation, reverse, save_workspace);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
           at::Tensor>
time_lstm_backward_cuda(const at::Tensor& grad_output, const at::Tensor& grad_h_n,
                        const at::Tensor& grad_c_n, const at::Tensor& input, const at::Tensor& dt,
                        const std::optional<at::Tensor>& lengths, const at::Tensor& weight_ih,
                        const at::Tensor& weight_hh, const at::Tensor& peephole,
                        const at::Tensor& time_weight, const at::Tensor& gates,
                        const at::Tensor& cells, const at::Tensor& recurrent_input, int64_t variant,
                        std::string_view time_activation, bool reverse) {
  return time_rnn::time_lstm_backward<CudaLauncher>(
      grad_output, grad_h_n, grad_c_n, input, dt, lengths, weight_ih, weight_hh, peephole,
      time_weight, gates, cells, recurrent_input, variant, time_activation, reverse);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> tlstm_cuda(
    const at::Tensor& input, const at::Tensor& dt, const at::Tensor& h0, const at::Tensor& c0,
    const std::optional<at::Tensor>& lengths, const at::Tensor& weight_ih,
    const at::Tensor& weight_hh, const at::Tensor& bias, const at::Tensor& decay_weight,
    const at::Tensor& decay_bias, std::string_view short_term_activation, bool reverse,
    bool save_workspace) {
  return time_rnn::tlstm_forward<CudaLauncher>(input, dt, h0, c0, lengths, weight_ih, weight_hh,
                                               bias, decay_weight, decay_bias,
                                               short_term_activation, reverse, save_workspace);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
           at::Tensor>
tlstm_backward_cuda(const at::Tensor& grad_output, const at::Tensor& grad_h_n,
                    const at::Tensor& grad_c_n, const at::Tensor& input, const at::Tensor& dt,
                    const std::optional<at::Tensor>& lengths, const at::Tensor& weight_ih,
                    const at::Tensor& weight_hh, const at::Tensor& decay_weight,
                    const at::Tensor& decay_bias, const at::Tensor& gates, const at::Tensor& cells,
                    const at::Tensor& recurrent_input, std::string_view short_term_activation,
                    bool reverse) {
  return time_rnn::tlstm_backward<CudaLauncher>(
      grad_output, grad_h_n, grad_c_n, input, dt, lengths, weight_ih, weight_hh, decay_weight,
      decay_bias, gates, cells, recurrent_input, short_term_activation, reverse);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> time_decay_gru_cuda(
    const at::Tensor& input, const at::Tensor& dt, const at::Tensor& h0,
    const std::optional<at::Tensor>& lengths, const at::Tensor& weight_ih,
    const at::Tensor& weight_hh, const at::Tensor& bias_ih, const at::Tensor& bias_hh,
    const at::Tensor& decay_weight, const at::Tensor& decay_bias, bool reverse,
    bool save_workspace) {
  return time_rnn::time_decay_gru_forward<CudaLauncher>(input, dt, h0, lengths, weight_ih,
                                                        weight_hh, bias_ih, bias_hh, decay_weight,
                                                        decay_bias, reverse, save_workspace);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
           at::Tensor>
time_decay_gru_backward_cuda(const at::Tensor& grad_output, const at::Tensor& grad_h_n,
                             const at::Tensor& input, const at::Tensor& dt,
                             const std::optional<at::Tensor>& lengths, const at::Tensor& weight_ih,
                             const at::Tensor& weight_hh, const at::Tensor& decay_weight,
                             const at::Tensor& decay_bias, const at::Tensor& gates,
                             const at::Tensor& cells, const at::Tensor& recurrent_input,
                             bool reverse) {
  return time_rnn::time_decay_gru_backward<CudaLauncher>(
      grad_output, grad_h_n, input, dt, lengths, weight_ih, weight_hh, decay_weight, decay_bias,
      gates, cells, recurrent_input, reverse);
}

}  // namespace stseq
