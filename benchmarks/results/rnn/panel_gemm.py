"""The recurrent GEMM of the CPU LSTM/GRU (csrc/common/cpu_gemm.h's PanelGemm, weights packed
once) against torch.mm (MKL) on the same products, one thread, the kernel alone: every call
reuses the same operands, so they stay in the caches as far as their sizes let them (issue 17:
is the kernel or its surroundings in the op the gap to oneDNN?). Builds the header into a small
extension with torch.utils.cpp_extension (AVX-512 flags; the machine must have AVX-512).

    python benchmarks/results/rnn/panel_gemm.py     # G multiply-adds per second, medians of 9
"""
import pathlib
import statistics
import tempfile
import time

import torch
from torch.utils.cpp_extension import load

CSRC = pathlib.Path(__file__).resolve().parents[3] / "csrc"
SOURCE = r"""
#define STSEQ_CPU_NAMESPACE panel_gemm_bench
#include <torch/extension.h>
#include <chrono>
#include <vector>
#include "common/cpu_vector.h"
#include "common/cpu_gemm.h"

using Gemm = stseq::panel_gemm_bench::PanelGemm<float>;

// out [M, N] = a [M, K] w^T (w [N, K], torch's weight layout); returns (out, seconds per call).
std::tuple<torch::Tensor, double> product(torch::Tensor a, torch::Tensor w, int64_t calls) {
  const int64_t M = a.size(0), K = a.size(1), N = w.size(0);
  std::vector<float> packed((N + Gemm::kPanel - 1) / Gemm::kPanel * K * Gemm::kPanel);
  Gemm::pack(w.data_ptr<float>(), K, 1, K, K, N, 0, packed.data());  // B = w^T [K, N]
  const Gemm gemm{K, N, packed.data()};
  torch::Tensor out = torch::empty({M, N});
  auto run = [&] {
    gemm(M, 0, a.data_ptr<float>(), K, K, nullptr, 0, K, out.data_ptr<float>(), N);
  };
  run();
  const auto start = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < calls; ++i) run();
  const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
  return {out, elapsed.count() / calls};
}
"""
SHAPES = [(64, 512, 1024), (8, 512, 1024), (256, 512, 1024), (64, 256, 1024), (256, 256, 1024),
          (64, 256, 512), (256, 256, 512), (3200, 256, 1024)]  # (M, K, N): [M, K] x [K, N]


def main():
    module = _build()
    torch.set_num_threads(1)
    print("one thread, G multiply-adds/s, medians of 9 (interleaved)")
    for m, k, n in SHAPES:
        a, w = torch.randn(m, k), torch.randn(n, k)
        out, _ = module.product(a, w, 1)
        error = (out - a @ w.t()).abs().max().item()
        calls = max(3, int(1e8 / (m * k * n)))
        ours, mkl = [], []
        for _ in range(9):
            ours.append(module.product(a, w, calls)[1])
            start = time.perf_counter()
            for _ in range(calls):
                torch.mm(a, w.t())
            mkl.append((time.perf_counter() - start) / calls)
        fma = m * k * n / 1e9
        print(f"[{m}, {k}] x [{k}, {n}]: PanelGemm {fma / statistics.median(ours):6.1f}  "
              f"torch.mm {fma / statistics.median(mkl):6.1f}  max error {error:.1e}")


def _build():
    """The extension, built in a fresh temporary folder."""
    directory = pathlib.Path(tempfile.mkdtemp())
    source = directory / "panel_gemm_bench.cpp"
    source.write_text(SOURCE + "\nPYBIND11_MODULE(TORCH_EXTENSION_NAME, m) "
                      "{ m.def(\"product\", &product); }\n")
    return load("panel_gemm_bench", [str(source)], extra_include_paths=[str(CSRC)],
                build_directory=str(directory),
                extra_cflags=["-O3", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq",
                              "-mfma", "-mf16c", "-DCPU_CAPABILITY=AVX512",
                              "-DCPU_CAPABILITY_AVX512"])


if __name__ == "__main__":
    main()
