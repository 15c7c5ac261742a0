// The stseq._C module: torch.library schemas of every native op, their CPU and CUDA impls, and
// a small pybind11 surface that says what this build contains. Tensors never cross pybind11:
// Python reaches the kernels through torch.ops.stseq.*.
#include <pybind11/pybind11.h>
#include <torch/library.h>

#include "time_gap/time_gap_cpu.h"
#ifdef STSEQ_WITH_CUDA
#include "time_gap/time_gap_cuda.h"
#endif

TORCH_LIBRARY(stseq, m) {
  m.def(
      "time_gap_embedding(Tensor timestamps, Tensor time_weight, Tensor? lengths, "
      "Tensor? coordinates, Tensor? distance_weight, int window, float time_unit, "
      "float time_scale, float distance_scale, str bucketing, bool interpolate) -> Tensor");
  m.def(
      "time_gap_embedding_backward(Tensor grad, Tensor timestamps, Tensor time_weight, "
      "Tensor? lengths, Tensor? coordinates, Tensor? distance_weight, int window, "
      "float time_unit, float time_scale, float distance_scale, str bucketing, "
      "bool interpolate) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(stseq, CPU, m) {
  m.impl("time_gap_embedding", &stseq::time_gap_embedding_cpu);
  m.impl("time_gap_embedding_backward", &stseq::time_gap_embedding_backward_cpu);
}

#ifdef STSEQ_WITH_CUDA
TORCH_LIBRARY_IMPL(stseq, CUDA, m) {
  m.impl("time_gap_embedding", &stseq::time_gap_embedding_cuda);
  m.impl("time_gap_embedding_backward", &stseq::time_gap_embedding_backward_cuda);
}
#endif

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.doc() = "stseq native kernels (ops are registered under torch.ops.stseq)";
#ifdef STSEQ_WITH_CUDA
  module.attr("cuda_built") = true;
#else
  module.attr("cuda_built") = false;
#endif
  module.attr("ops") = pybind11::make_tuple("time_gap_embedding");
}
