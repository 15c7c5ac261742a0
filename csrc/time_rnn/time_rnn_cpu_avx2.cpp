// The CPU element kernels of the time-aware recurrent ops built for AVX2 + FMA (CMake compiles
// this file with -mavx2 -mfma -mf16c and ATen's CPU_CAPABILITY=AVX2, on x86-64 only).
// The CPU launcher (time_rnn_cpu_launcher.h) calls them only where ATen itself runs AVX2 kernels.
#define STSEQ_CPU_NAMESPACE cpu_avx2
#include "time_rnn/time_rnn_cpu_rows.h"
