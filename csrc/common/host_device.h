// Shared by the CPU (.cpp) and CUDA (.cu) translation units of every op: the math headers mark
// their functions STSEQ_HOST_DEVICE so one definition serves both compilers.
#pragma once

#if defined(__CUDACC__)
#define STSEQ_HOST_DEVICE __host__ __device__
#else
#define STSEQ_HOST_DEVICE
#endif
