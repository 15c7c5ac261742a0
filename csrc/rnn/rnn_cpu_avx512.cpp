// The CPU pointwise kernels and the recurrent GEMM built for AVX-512 (CMake compiles this file
// with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma and ATen's CPU_CAPABILITY=AVX512, on
// x86-64 only, where Vectorized<float> holds 16 lanes). rnn_cpu_loop.h calls them only where ATen
// itself runs AVX-512 kernels (as oneDNN's LSTM does there), so the build stays portable.
#define STSEQ_CPU_NAMESPACE cpu_avx512
#include "rnn/rnn_cpu_pointwise.h"
