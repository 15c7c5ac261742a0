// The stseq._C module: a small pybind11 surface that says what this build contains. Each op
// family registers its own torch.library schemas and CPU impls at the end of its
// csrc/<family>/<family>_cpu.cpp (one TORCH_LIBRARY_FRAGMENT per family, schema next to its
// impls) and its CUDA impls at the end of <family>_cuda.cu. Tensors never cross pybind11:
// Python reaches the kernels through torch.ops.stseq.*.
#include <pybind11/pybind11.h>

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.doc() = "stseq native kernels (ops are registered under torch.ops.stseq)";
#ifdef STSEQ_WITH_CUDA
  module.attr("cuda_built") = true;
#else
  module.attr("cuda_built") = false;
#endif
}
