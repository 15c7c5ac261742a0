// The CPU element kernels of the time-aware recurrent ops: one function per element step of
// time_rnn.h that runs it over rows [begin, end) of a step, each row's hidden units as vector
// lanes. This header is shared by the translation units built for different instruction sets
// (time_rnn_cpu_rows.h is compiled once plainly in time_rnn_cpu_default.cpp and once with AVX2 +
// FMA in time_rnn_cpu_avx2.cpp); time_rnn_cpu_launcher.h picks the best table the processor
// runs.
#pragma once

#include <cstdint>
#include <tuple>

#include "time_rnn/time_rnn.h"

namespace stseq {
namespace time_rnn {

// Every element step the drivers run on the CPU, where acc_t is scalar_t (float or double).
template <typename scalar_t>
using CpuSteps = std::tuple<
    AddRecurrent<scalar_t, scalar_t>, TimeLSTMForward<1, true, scalar_t, scalar_t>,
    TimeLSTMForward<1, false, scalar_t, scalar_t>, TimeLSTMForward<2, true, scalar_t, scalar_t>,
    TimeLSTMForward<2, false, scalar_t, scalar_t>, TimeLSTMForward<3, true, scalar_t, scalar_t>,
    TimeLSTMForward<3, false, scalar_t, scalar_t>, TimeLSTMBackward<1, scalar_t, scalar_t>,
    TimeLSTMBackward<2, scalar_t, scalar_t>, TimeLSTMBackward<3, scalar_t, scalar_t>,
    TLSTMForward<true, scalar_t, scalar_t>, TLSTMForward<false, scalar_t, scalar_t>,
    TLSTMBackward<scalar_t, scalar_t>, TimeDecay<true, scalar_t, scalar_t>,
    TimeDecay<false, scalar_t, scalar_t>, TimeDecayGRUForward<true, scalar_t, scalar_t>,
    TimeDecayGRUForward<false, scalar_t, scalar_t>, TimeDecayGRUBackward<scalar_t, scalar_t>,
    TimeDecayBackward<scalar_t, scalar_t>>;

// run(step, begin, end, hidden): the kernel of Step (one of Steps).
template <typename StepList>
struct RowKernels;

template <typename... Steps>
struct RowKernels<std::tuple<Steps...>> {
  std::tuple<void (*)(const Steps&, int64_t, int64_t, int64_t)...> kernels;

  template <typename Step>
  void run(const Step& step, int64_t begin, int64_t end, int64_t hidden) const {
    std::get<void (*)(const Step&, int64_t, int64_t, int64_t)>(kernels)(step, begin, end, hidden);
  }
};

template <typename scalar_t>
using CpuRowKernels = RowKernels<CpuSteps<scalar_t>>;

namespace cpu_default {
template <typename scalar_t>
CpuRowKernels<scalar_t> row_kernels();
}
namespace cpu_avx2 {
template <typename scalar_t>
CpuRowKernels<scalar_t> row_kernels();
}

}  // namespace time_rnn
}  // namespace stseq
