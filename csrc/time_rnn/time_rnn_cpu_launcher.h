// The time-aware cells' part of the CPU launcher (recurrent/recurrent_cpu.cpp):
// time_rnn::CpuElementSteps gives each thread a tile of the batch for the whole sequence (its own
// small GEMMs and element steps, no synchronisation between steps; tiles: common/cpu_tiles.h),
// runs the hidden units of a row as vector lanes (time_rnn_cpu_rows.h, compiled for the baseline
// in time_rnn_cpu_default.cpp and for AVX2 + FMA in time_rnn_cpu_avx2.cpp, chosen at run time),
// and hands out the drivers' large buffers.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Version.h>
#include <c10/core/InferenceMode.h>
#include <c10/util/accumulate.h>

#include <array>
#include <mutex>
#include <string>
#include <vector>

#include "common/cpu_tiles.h"
#include "time_rnn/time_rnn_cpu_kernels.h"

namespace stseq {
namespace time_rnn {
namespace {

// The AVX2 kernels when this build has them and ATen runs AVX2 (or AVX-512) kernels here (which
// honours ATEN_CPU_CAPABILITY=default); the baseline kernels otherwise.
template <typename scalar_t>
const CpuRowKernels<scalar_t>& row_kernels() {
#if defined(STSEQ_CPU_AVX2)
  static const CpuRowKernels<scalar_t> kernels = [] {
    const std::string capability = at::get_cpu_capability();
    return capability == "AVX2" || capability == "AVX512"
               ? cpu_avx2::row_kernels<scalar_t>()
               : cpu_default::row_kernels<scalar_t>();
  }();
#else
  static const CpuRowKernels<scalar_t> kernels =
      cpu_default::row_kernels<scalar_t>();
#endif
  return kernels;
}

struct CpuElementSteps {
  // Each thread carries one tile of rows through every step on its own: no barrier per step
  // (common/cpu_tiles.h: tiles of about equal work, each at least kMinRows rows so that its
  // GEMMs stay efficient, under the caller's thread-local state for the ATen GEMMs they call).
  // A tile's body always gets the tile's first row as `begin` (the element steps' partial sums
  // go to that row: time_rnn_cpu_rows.h).
  template <typename Body>
  static void time_loop(const std::vector<int64_t>& active, const Body& body) {
    constexpr int64_t kMinRows = 32;
    const int64_t steps = static_cast<int64_t>(active.size());
    for_each_tile(cut_tiles(active, kMinRows), [&](const CpuTile& tile) {
      for (int64_t i = 0; i < steps; ++i) body(tile.begin, tile.end, i);
    });
  }

  // A buffer this thread reuses from call to call. The drivers take their internal
  // by-position buffers (tens of MB: the gate gradients of the backward, the projections of an
  // inference forward) from here, because a fresh allocation of that size is mapped anew by the
  // allocator at each call and then costs a page fault per 4 KiB page on its first write, more
  // than the writes themselves. Never returned to the caller; each slot keeps its largest size
  // until the thread exits.
  static at::Tensor scratch(int slot, at::IntArrayRef shape, const at::TensorOptions& options) {
    thread_local std::array<at::Tensor, 2> buffers;
    const int64_t bytes =
        c10::multiply_integers(shape) * static_cast<int64_t>(options.dtype().itemsize());
    at::Tensor& buffer = buffers.at(slot);
    if (!buffer.defined() || buffer.numel() < bytes) {
      const c10::InferenceMode normal_tensor(false);  // usable inside and outside inference mode
      buffer = at::Tensor();                          // release the smaller buffer first
      buffer = at::empty({bytes}, options.dtype(at::kByte));
    }
    return buffer.narrow(0, 0, bytes).view(options.dtype().toScalarType()).view(shape);
  }

  // A buffer for what a training forward saves (the activations over the projections: tens of
  // MB), handed out again once nobody holds it: a fresh allocation above glibc's mmap threshold
  // (at most 32 MiB) is mapped anew at each call and costs a page fault and the kernel's zeroing
  // per 4 KiB page on its first writes, and an munmap when autograd frees it. The pool keeps up
  // to kPooled buffers (the peak number held at once, e.g. one per layer and direction of a
  // model; a new buffer replaces a free one too small for it); a buffer is free when the pool
  // holds its only reference (every tensor handed out from it, and every view of those, is
  // gone). Small requests go to the allocator as usual.
  static at::Tensor saved_buffer(at::IntArrayRef shape, const at::TensorOptions& options) {
    constexpr size_t kPooled = 8;
    constexpr int64_t kMinBytes = int64_t(1) << 22;  // 4 MiB
    const int64_t bytes =
        c10::multiply_integers(shape) * static_cast<int64_t>(options.dtype().itemsize());
    if (bytes < kMinBytes) return at::empty(shape, options);
    static std::mutex mutex;
    static std::vector<at::Tensor> pool;  // byte buffers
    const std::lock_guard<std::mutex> lock(mutex);  // held until the view below holds the buffer
    at::Tensor buffer;
    at::Tensor* too_small = nullptr;  // a free buffer the new one may replace
    for (at::Tensor& pooled : pool) {  // the smallest free buffer that fits
      if (pooled.storage().use_count() != 1) continue;
      if (pooled.numel() < bytes) {
        too_small = &pooled;
      } else if (!buffer.defined() || pooled.numel() < buffer.numel()) {
        buffer = pooled;
      }
    }
    if (!buffer.defined()) {
      const c10::InferenceMode normal_tensor(false);  // usable inside and outside inference mode
      buffer = at::empty({bytes}, options.dtype(at::kByte));
      if (pool.size() < kPooled) {
        pool.push_back(buffer);
      } else if (too_small != nullptr) {
        *too_small = buffer;
      }
    }
    return buffer.narrow(0, 0, bytes).view(options.dtype().toScalarType()).view(shape);
  }

  template <typename Step>
  static void run(const Step& step, int64_t begin, int64_t end, int64_t hidden) {
    row_kernels<typename Step::acc_type>().run(step, begin, end, hidden);
  }
};

}  // namespace
}  // namespace time_rnn
}  // namespace stseq
