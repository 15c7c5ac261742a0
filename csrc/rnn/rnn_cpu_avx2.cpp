// The CPU pointwise kernels built for AVX2 + FMA (CMake compiles this file with -mavx2 -mfma
// -mf16c and ATen's CPU_CAPABILITY=AVX2, on x86-64 only). rnn_cpu_loop.h calls them only where ATen
// itself runs AVX2 kernels, so the build stays portable to processors without AVX2.
#define STSEQ_CPU_NAMESPACE cpu_avx2
#include "rnn/rnn_cpu_pointwise.h"
