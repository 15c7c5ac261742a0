// What the CUDA LSTM/GRU kernels share (rnn_cuda_launcher.cuh and the .cuh files it includes, one
// translation unit): launch sizes, the persistent cluster's limits and the names of the plan.
#pragma once

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <cstdint>

#include "rnn/rnn.h"
#include "rnn/rnn_args.h"

namespace stseq {
namespace {

using rnn::Algorithm;
using rnn::CellKind;
using rnn::LayerShape;
using rnn::Steps;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int64_t kMaxBlocks = 1 << 16;
constexpr int kUnits = 32;         // hidden units per CTA of a persistent cluster (one per lane)
constexpr int kMaxRanks = 8;       // portable cluster size: H <= 8 * 32
constexpr int64_t kMaxAutoWaves = 2;

unsigned blocks_for(int64_t work) {
  return static_cast<unsigned>(std::max<int64_t>(1, std::min((work + kThreads - 1) / kThreads,
                                                             kMaxBlocks)));
}

}  // namespace
}  // namespace stseq
