#!/usr/bin/env bash
# Compile every CUDA source under csrc/ with nvcc (compile only, sm_90) against the installed
# torch's headers, so CUDA code that does not compile fails CI even on a machine with no GPU.
# Usage: scripts/compile_cuda.sh [PYTHON]   (exits 0 with a note when nvcc is absent)
set -euo pipefail
python=${1:-python}
cd "$(dirname "$0")/.."
nvcc=${NVCC:-$(command -v nvcc || true)}
if [ -z "$nvcc" ]; then
  echo "compile_cuda: nvcc not found; CUDA sources not compiled"
  exit 0
fi
torch_dir=$("$python" -c "import os, torch; print(os.path.dirname(torch.__file__))")
abi=$("$python" -c "import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))")
# A CPU-only torch ships the c10/cuda headers without their generated config header (export
# macros only); tell c10 not to include it.
extra=()
if [ "$("$python" -c "import torch; print(torch.version.cuda or '')")" = "" ]; then
  extra+=(-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE)
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
mapfile -t sources < <(find csrc -name '*.cu' | sort)
status=0
for src in "${sources[@]}"; do
  if "$nvcc" -c "$src" -o "$out/$(basename "$src").o" -std=c++20 -O3 -arch=sm_90 \
      --expt-relaxed-constexpr -Xcompiler -fPIC \
      -D_GLIBCXX_USE_CXX11_ABI="$abi" -DSTSEQ_WITH_CUDA -DTORCH_EXTENSION_NAME=_C \
      -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__ \
      -D__CUDA_NO_BFLOAT16_CONVERSIONS__ -D__CUDA_NO_HALF2_OPERATORS__ "${extra[@]}" \
      -Icsrc -I"$torch_dir/include" -I"$torch_dir/include/torch/csrc/api/include"; then
    echo "compile_cuda: ok $src"
  else
    echo "compile_cuda: FAILED $src"
    status=1
  fi
done
echo "compile_cuda: ${#sources[@]} CUDA source(s) checked"
exit $status
