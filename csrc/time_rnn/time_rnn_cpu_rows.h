// Definitions of the CPU element kernels declared in time_rnn_cpu_kernels.h: each row of a step
// as at::vec::Vectorized lanes over its hidden units (common/cpu_vector.h), the remaining units
// as ScalarMath lanes, around the shared cell math of time_rnn.h. Included by exactly one
// translation unit per instruction set, which names its namespace first: time_rnn_cpu_default.cpp
// (STSEQ_CPU_NAMESPACE cpu_default, baseline flags) and time_rnn_cpu_avx2.cpp (cpu_avx2, built
// with -mavx2 -mfma and ATen's CPU_CAPABILITY_AVX2).
#pragma once

#ifndef STSEQ_CPU_NAMESPACE
#error "define STSEQ_CPU_NAMESPACE before including time_rnn_cpu_rows.h"
#endif

#include "common/cpu_vector.h"
#include "time_rnn/time_rnn.h"
#include "time_rnn/time_rnn_cpu_kernels.h"

namespace stseq {
namespace time_rnn {
namespace STSEQ_CPU_NAMESPACE {
namespace {

// Rows [begin, end) of one element step, each with the next row's data prefetched. The launcher
// runs a tile's rows from one thread, with the same `begin` at every step: its rows share the
// partial sums of row `begin` (in L1).
template <typename Step>
void run_rows(const Step& step, int64_t begin, int64_t end, int64_t hidden) {
  using scalar_t = typename Step::acc_type;
  if (begin >= end) return;
  auto next = step.row(begin);
  for (int64_t b = begin; b < end; ++b) {
    auto row = next;
    row.sums = begin;
    if (b + 1 < end) {
      next = step.row(b + 1);
      if (next.active) step.prefetch(next);
    }
    if (row.active) {
      ::stseq::STSEQ_CPU_NAMESPACE::for_each_unit<scalar_t, ScalarMath>(
          hidden, [&](const auto& lane) { step.active(row, b, lane); });
    } else {
      ::stseq::STSEQ_CPU_NAMESPACE::for_each_unit<scalar_t, ScalarMath>(
          hidden, [&](const auto& lane) { step.inactive(b, lane); });
    }
  }
}

template <typename... Steps>
RowKernels<std::tuple<Steps...>> kernels_of(std::tuple<Steps...>*) {
  return {{&run_rows<Steps>...}};
}

}  // namespace

template <typename scalar_t>
CpuRowKernels<scalar_t> row_kernels() {
  return kernels_of(static_cast<CpuSteps<scalar_t>*>(nullptr));
}

template CpuRowKernels<float> row_kernels<float>();
template CpuRowKernels<double> row_kernels<double>();

}  // namespace STSEQ_CPU_NAMESPACE
}  // namespace time_rnn
}  // namespace stseq
