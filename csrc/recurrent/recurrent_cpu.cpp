// The CPU launcher of the recurrent engine (recurrent_driver.h) and the registration of the
// recurrent ops: their schemas (one fragment) and their CPU impls (one line). The launcher is
// the device checks and dtype dispatch below plus two sets of capabilities: the LSTM/GRU time
// loops (rnn/rnn_cpu_launcher.h: tiles of rows on packed weights, the projection-first choice)
// and the time-aware cells' tile loop and element steps (time_rnn/time_rnn_cpu_launcher.h).
// Compiled with STSEQ_CPU_AVX2 / STSEQ_CPU_AVX512 where the build has those kernels.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "recurrent/recurrent_driver.h"
#include "rnn/rnn_cpu_launcher.h"
#include "time_rnn/time_rnn_cpu_launcher.h"

namespace stseq {
namespace {

struct CpuLauncher : rnn::CpuLoops, time_rnn::CpuElementSteps {
  struct NoGuard {};
  static NoGuard guard(const at::Tensor&) { return {}; }

  static void check_dtype(at::ScalarType type, const char* layers) {
    TORCH_CHECK_VALUE(type == at::kFloat || type == at::kDouble, layers,
                      " on CPU support float32 and float64, got ", type);
  }

  static void check_input(const at::Tensor& input, const char* layers) {
    check_dtype(input.scalar_type(), layers);
  }

  template <typename F>
  static void dispatch(at::ScalarType type, const char* layers, F&& f) {
    if (type == at::kFloat) return f(float{});
    if (type == at::kDouble) return f(double{});
    check_dtype(type, layers);
  }
};

}  // namespace
}  // namespace stseq

TORCH_LIBRARY_FRAGMENT(stseq, m) { stseq::recurrent::define_schemas(m); }

TORCH_LIBRARY_IMPL(stseq, CPU, m) { stseq::recurrent::register_impls<stseq::CpuLauncher>(m); }
