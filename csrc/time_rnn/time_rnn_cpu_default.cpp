// The CPU element kernels of the time-aware recurrent ops built for the baseline instruction set
// (no extra flags): what the CPU launcher (time_rnn_cpu_launcher.h) runs where ATen does not run
// AVX2 kernels (or ATEN_CPU_CAPABILITY=default asks for the baseline).
#define STSEQ_CPU_NAMESPACE cpu_default
#include "time_rnn/time_rnn_cpu_rows.h"
