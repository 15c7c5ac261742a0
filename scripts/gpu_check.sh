#!/usr/bin/env bash
# On a CUDA machine with no network: build stseq with CUDA in place (nothing fetched), run the
# CUDA tests and then the whole suite, run the GPU benchmarks, and write logs, JUnit XML and
# JSON under OUTDIR. Usage: scripts/gpu_check.sh OUTDIR
set -uo pipefail
out=${1:?usage: scripts/gpu_check.sh OUTDIR}
mkdir -p "$out"
cd "$(dirname "$0")/.."
export STSEQ_CUDA=1 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
status=0
step() {  # step NAME COMMAND...: run, log to OUTDIR/NAME.log, remember a failure
  local name=$1
  shift
  echo "== $name: $*"
  if ! "$@" >"$out/$name.log" 2>&1; then
    echo "== $name FAILED (see $out/$name.log)"
    status=1
  fi
  tail -n 5 "$out/$name.log"
}
nvidia-smi >"$out/nvidia-smi.txt" 2>&1
step build python -m pip install --no-build-isolation --no-deps -v -e .
step info stseq info --json
cp "$out/info.log" "$out/info.json"
step cuda-tests python -m pytest tests -m cuda -q -rs --junitxml="$out/cuda-tests.xml"
step all-tests python -m pytest tests -q -rs --junitxml="$out/all-tests.xml"
step bench stseq bench --device cuda --out "$out"
step bench-pytest python -m pytest benchmarks --device cuda -q \
  --benchmark-json="$out/pytest-benchmark-cuda.json"
exit $status
