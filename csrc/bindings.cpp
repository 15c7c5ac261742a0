// The stseq._C module: a small pybind11 surface that says what this build contains. Each op
// family registers its own torch.library schemas (one TORCH_LIBRARY_FRAGMENT per family, schema
// next to its impls) and impls: time_gap and item_logsumexp at the end of their
// <family>_cpu.cpp and <family>_cuda.cu, the recurrent cells in csrc/recurrent/ (schemas and
// register_impls in recurrent_driver.h, one line per device in recurrent_cpu.cpp and
// recurrent_cuda.cu). Tensors never cross pybind11: Python reaches the kernels through
// torch.ops.stseq.*.
#include <pybind11/pybind11.h>

#include "rnn/rnn_cpu_split_count.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.doc() = "stseq native kernels (ops are registered under torch.ops.stseq)";
#ifdef STSEQ_WITH_CUDA
  module.attr("cuda_built") = true;
#else
  module.attr("cuda_built") = false;
#endif
  module.def(
      "_lstm_split_forward_calls", [] { return stseq::rnn::lstm_split_forward_calls().load(); },
      "How many CPU LSTM forward calls split their hidden units across threads (for tests)");
}
