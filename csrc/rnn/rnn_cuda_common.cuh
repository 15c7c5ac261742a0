// What the CUDA LSTM/GRU kernels share (rnn_cuda_launcher.cuh and the .cuh files it includes, one
// translation unit): the persistent kernels' block size and cluster limits, the stepwise loop's
// grid cap (its element kernel and block size: common/cuda_element_kernel.cuh) and the names of
// the plan.
#pragma once

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <cstdint>

#include "rnn/rnn.h"
#include "rnn/rnn_args.h"

namespace stseq {
namespace {

using rnn::Algorithm;
using rnn::CellKind;
using rnn::LayerShape;
using rnn::Steps;

constexpr int kThreads = 256;  // threads per CTA of a persistent kernel
constexpr int kWarps = kThreads / 32;
constexpr int64_t kMaxBlocks = 1 << 16;  // the stepwise kernel's grid; it grid-strides beyond
constexpr int kUnits = 32;         // hidden units per CTA of a persistent cluster (one per lane)
constexpr int kMaxRanks = 8;       // portable cluster size: H <= 8 * 32
constexpr int64_t kMaxAutoWaves = 2;

}  // namespace
}  // namespace stseq
