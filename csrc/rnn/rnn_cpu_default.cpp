// The CPU pointwise kernels and the recurrent GEMM built for the baseline instruction set (no
// extra flags): what the CPU launcher (rnn_cpu_loop.h) runs where ATen runs neither AVX2 nor
// AVX-512 kernels (or ATEN_CPU_CAPABILITY=default asks for the baseline).
#define STSEQ_CPU_NAMESPACE cpu_default
#include "rnn/rnn_cpu_pointwise.h"
