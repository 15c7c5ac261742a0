// How a call runs on the persistent CUDA LSTM/GRU kernels (rnn_cuda_persistent.cuh): the plan
// (rows per thread, cluster size, tiles), the cluster launch, and run_persistent_forward /
// run_persistent_backward, which return false (nothing launched) when the stepwise loop must
// run instead.
#pragma once

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <optional>
#include <type_traits>
#include <utility>

#include "rnn/rnn_cuda_common.cuh"
#include "rnn/rnn_cuda_persistent.cuh"

namespace stseq {
namespace {

// How the persistent kernels cut a batch: R rows per warp, K = ranks CTAs per cluster, tiles.
struct PersistentPlan {
  int rows_per_thread;
  int ranks;
  int64_t tiles;
};

int device_attribute(cudaDeviceAttr attribute, int device) {
  int value = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&value, attribute, device));
  return value;
}

// The persistent plan for this call, or nullopt when the persistent kernels cannot run it. R is
// the smallest that still fits every cluster in one wave (fewer rows per CTA: shorter steps), or
// 4 when none does (more rows per CTA: fewer waves).
std::optional<PersistentPlan> persistent_plan(const LayerShape& shape, const Steps& steps,
                                              at::ScalarType type, const at::Device& device) {
  if (shape.has_proj || shape.hidden > kMaxRanks * kUnits || type == at::kDouble ||
      steps.active_rows() == 0 || steps.num_steps() == 0) {
    return std::nullopt;
  }
  if (device_attribute(cudaDevAttrComputeCapabilityMajor, device.index()) < 9) return std::nullopt;
  const int sms = device_attribute(cudaDevAttrMultiProcessorCount, device.index());
  const int ranks = static_cast<int>((shape.hidden + kUnits - 1) / kUnits);
  PersistentPlan plan{4, ranks, 0};
  for (int r : {1, 2, 4}) {
    const int64_t tiles = (steps.active_rows() + kWarps * r - 1) / (kWarps * r);
    plan = {r, ranks, tiles};
    if (tiles * ranks <= sms) break;
  }
  return plan;
}

// Launches `kernel` as plan.tiles clusters of plan.ranks CTAs; false (nothing launched) when it
// cannot run here, or when "auto" would need more than kMaxAutoWaves waves of clusters.
template <typename Params>
bool launch_persistent(void (*kernel)(Params), const Params& params, const PersistentPlan& plan,
                       int64_t smem_bytes, Algorithm algorithm, int device) {
  if (smem_bytes > device_attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin, device)) return false;
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      static_cast<int>(smem_bytes)));
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(static_cast<unsigned>(plan.tiles * plan.ranks));
  config.blockDim = dim3(kThreads);
  config.dynamicSmemBytes = static_cast<size_t>(smem_bytes);
  config.stream = c10::cuda::getCurrentCUDAStream();
  cudaLaunchAttribute attribute[1];
  attribute[0].id = cudaLaunchAttributeClusterDimension;
  attribute[0].val.clusterDim.x = static_cast<unsigned>(plan.ranks);
  attribute[0].val.clusterDim.y = 1;
  attribute[0].val.clusterDim.z = 1;
  config.attrs = attribute;
  config.numAttrs = 1;
  int clusters = 0;
  C10_CUDA_CHECK(cudaOccupancyMaxActiveClusters(&clusters, kernel, &config));
  if (clusters < 1) return false;
  if (algorithm == Algorithm::kAuto && (plan.tiles + clusters - 1) / clusters > kMaxAutoWaves) {
    return false;
  }
  C10_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, params));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return true;
}

// Steps' sizes and offsets as int64 device tensors for the persistent kernels.
std::pair<at::Tensor, at::Tensor> device_steps(const Steps& steps, const at::Device& device) {
  const auto options = at::TensorOptions().dtype(at::kLong);
  return {at::tensor(steps.sizes, options).to(device),
          at::tensor(steps.offsets, options).to(device)};
}

// Fills the step tables of `params` and runs a persistent kernel through
// `launch(params, plan, rows_per_thread_tag)` when the plan allows; false (nothing launched)
// means "use the stepwise path".
template <typename scalar_t, typename Params, typename Launch>
bool run_persistent(Params params, const LayerShape& shape, const Steps& steps,
                    Algorithm algorithm, const at::Device& device, const Launch& launch) {
  if constexpr (std::is_same_v<scalar_t, double>) {
    return false;
  } else {
    if (algorithm == Algorithm::kStepwise) return false;
    const auto plan = persistent_plan(shape, steps, c10::CppTypeToScalarType<scalar_t>::value,
                                      device);
    if (!plan.has_value()) return false;
    const auto [sizes, offsets] = device_steps(steps, device);
    params.sizes = sizes.data_ptr<int64_t>();
    params.offsets = offsets.data_ptr<int64_t>();
    params.num_steps = steps.num_steps();
    params.hidden_size = shape.hidden;
    params.ranks = plan->ranks;
    switch (plan->rows_per_thread) {
      case 1: return launch(params, *plan, std::integral_constant<int, 1>{});
      case 2: return launch(params, *plan, std::integral_constant<int, 2>{});
      default: return launch(params, *plan, std::integral_constant<int, 4>{});
    }
  }
}

template <typename scalar_t, bool kLstm>
bool run_persistent_forward(const PersistentForward<scalar_t>& params, const LayerShape& shape,
                            const Steps& steps, Algorithm algorithm, const at::Device& device) {
  return run_persistent<scalar_t>(
      params, shape, steps, algorithm, device,
      [&](const auto& filled, const PersistentPlan& plan, auto rows_tag) {
        constexpr int R = decltype(rows_tag)::value;
        return launch_persistent(&persistent_forward<scalar_t, R, kLstm>, filled, plan,
                                 forward_smem_bytes<scalar_t, R, kLstm>(shape.hidden), algorithm,
                                 device.index());
      });
}

template <typename scalar_t, bool kLstm>
bool run_persistent_backward(const PersistentBackward<scalar_t>& params, const LayerShape& shape,
                             const Steps& steps, Algorithm algorithm, const at::Device& device) {
  return run_persistent<scalar_t>(
      params, shape, steps, algorithm, device,
      [&](const auto& filled, const PersistentPlan& plan, auto rows_tag) {
        constexpr int R = decltype(rows_tag)::value;
        return launch_persistent(&persistent_backward<scalar_t, R, kLstm>, filled, plan,
                                 backward_smem_bytes<scalar_t, R, kLstm>(shape.hidden, plan.ranks),
                                 algorithm, device.index());
      });
}

}  // namespace
}  // namespace stseq
