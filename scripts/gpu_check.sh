#!/usr/bin/env bash
# The first-GPU-run check: one command that proves every CUDA and Triton path of stseq on a
# CUDA machine with no network, in at most 8 minutes on 16 cores (issue 20). Steps, each with a
# time budget, its log and its result under OUTDIR; a failing step does not stop the next,
# except that the steps needing the build are skipped when the build failed:
#   build       CUDA build for sm_90 (editable install, CMAKE_BUILD_PARALLEL_LEVEL=16)
#   info        stseq info --json                                        -> info.json
#   cuda-tests  the `cuda`-marked tests, -x, a per-test timeout          -> cuda-tests.xml
#   sanitizers  compute-sanitizer memcheck and racecheck over one small forward + backward of
#               each op (scripts/sanitize/<op>.py)                       -> sanitizer.log
#   bench       stseq bench --device cuda [--quick], every op vs its peers -> bench-cuda.json
# then summary.json (scripts/gpu_check_summary.py: per step passed/failed/skipped/timeout,
# counts, the first error; per benchmark case the ratio against each peer). All step output
# is in gpu_check.log, the build's in build.log: at most 8 files in OUTDIR.
#
# --dry-run (CI, no GPU): the CUDA build is skipped (the installed CPU build is used), the cuda
# tests are collected and skip, each sanitizer case runs on the CPU without the sanitizer (C++
# kernels, Triton's interpreter), the benchmark runs a small CPU grid; summary as on a GPU.
#
# Usage: scripts/gpu_check.sh [--quick] [--dry-run] [--budget SECONDS] OUTDIR
#   --budget: seconds for the whole run (default 480; 4 x that and every step's budget in a
#   dry run, which shares a loaded 2-core CPU)
set -uo pipefail

usage() {  # the comment block above
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
}

quick=0 dry_run=0 budget= out=
while [ $# -gt 0 ]; do
  case $1 in
    --quick) quick=1 ;;
    --dry-run) dry_run=1 ;;
    --budget) budget=${2:?--budget needs SECONDS}; shift ;;
    -h | --help) usage; exit 0 ;;
    -*) echo "gpu_check: unknown option $1" >&2; usage >&2; exit 2 ;;
    *) [ -z "$out" ] || { echo "gpu_check: one OUTDIR only" >&2; exit 2; }; out=$1 ;;
  esac
  shift
done
[ -n "$out" ] || { echo "gpu_check: OUTDIR missing" >&2; usage >&2; exit 2; }
# The dry run shares a loaded 2-core CPU: each step may take 4 times its GPU budget there.
scale=$([ "$dry_run" = 1 ] && echo 4 || echo 1)
budget=${budget:-$((480 * scale))}

root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out" && out=$(cd "$out" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Python runs from the work folder, never the checkout root: there the source folder would
# shadow the installed build (see README, Development).
cd "$work" || exit 1
python=${PYTHON:-python3}
mode=$([ "$dry_run" = 1 ] && echo dry-run || echo gpu)
deadline=$((SECONDS + budget))
reserve=10  # seconds kept for the summary
built=0 unbuilt_note="needs the build, which failed"
: >"$work/steps.tsv"
: >"$out/gpu_check.log"

record() {  # record STEP STATUS EXIT SECONDS BUDGET NOTE
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$work/steps.tsv"
  echo "== $1: $2${6:+ ($6)}"
}

skip() {  # skip STEP NOTE
  record "$1" skipped "" 0 0 "$2"
  echo "===== $1: skipped: $2" >>"$out/gpu_check.log"
}

step() {  # step NAME BUDGET_S NEEDS_BUILD NOTE COMMAND...: run with a timeout, log, record
  local name=$1 limit=$2 needs_build=$3 note=$4
  shift 4
  local left=$((deadline - SECONDS - reserve))
  limit=$((limit * scale))
  if [ "$needs_build" = 1 ] && [ "$built" != 1 ]; then
    skip "$name" "$unbuilt_note"
    return
  fi
  if [ "$left" -lt 10 ]; then
    skip "$name" "out of time (budget $budget s)"
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name (at most $limit s): $*"
  local start=$SECONDS code status
  timeout --kill-after=10 "$limit" "$@" >"$work/$name.log" 2>&1
  code=$?
  case $code in 0) status=passed ;; 124 | 137) status=timeout ;; *) status=failed ;; esac
  record "$name" "$status" "$code" $((SECONDS - start)) "$limit" "$note"
  {
    echo "===== $name: $status (exit $code, $((SECONDS - start)) s of $limit s): $*"
    cat "$work/$name.log"
  } >>"$out/gpu_check.log"
  tail -n 4 "$work/$name.log"
}

bench_args=(--out "$work/bench")
[ "$quick" = 1 ] && bench_args+=(--quick)
if [ "$dry_run" = 1 ]; then
  echo "gpu_check: dry run on the CPU (no GPU): CUDA steps skip or run their CPU fallbacks"
  skip build "no GPU (dry run): the CUDA build runs on the GPU machine; the CPU build is used"
  "$python" -c "from stseq._native import NATIVE; assert NATIVE" && built=1
  unbuilt_note="needs the compiled extension, which the installed stseq lacks"
  device=cpu
  sanitize=(--cpu)
  bench_args+=(--device cpu --repeats 1 --ops time_gap)
  tests_note="no GPU (dry run): the cuda tests are collected and skip"
else
  nvidia-smi >>"$out/gpu_check.log" 2>&1
  export CUDACXX=${CUDACXX:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
  step build 240 0 "CUDA for sm_90: build.log" \
    env CMAKE_BUILD_PARALLEL_LEVEL=16 STSEQ_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 \
    "$python" -m pip install --no-build-isolation --no-deps -v \
    -Cbuild-dir="$root/build/gpu-check" -e "$root"
  cp "$work/build.log" "$out/build.log"
  [ "$(tail -n 1 "$work/steps.tsv" | cut -f2)" = passed ] && built=1
  device=cuda
  sanitize=(--jobs 16 --timeout 80)
  bench_args+=(--device cuda)
  tests_note="cuda-tests.xml"
fi

step info 30 0 "info.json" bash -c '"$0" -m stseq.cli info --json >"$1"' "$python" "$out/info.json"
step cuda-tests 90 1 "$tests_note" "$python" -m pytest "$root/tests" -m cuda -x -q -rs \
  -p no:cacheprovider --per-test-timeout 60 --junitxml="$out/cuda-tests.xml"
: >"$out/sanitizer.log"
step sanitizers 90 1 "sanitizer.log" "$python" "$root/scripts/sanitize_ops.py" "${sanitize[@]}" \
  --log "$out/sanitizer.log" --results "$work/sanitizer.tsv"
# The bench takes what time is left; it rewrites its JSON after every op family, so a run cut
# by the timeout still returns the rows it measured.
step bench 100000 1 "bench-$device.json" "$python" -m stseq.cli bench "${bench_args[@]}"
cp "$work"/bench/*.json "$out/bench-$device.json" 2>/dev/null

"$python" "$root/scripts/gpu_check_summary.py" --work "$work" --out "$out" --mode "$mode" \
  $([ "$quick" = 1 ] && echo --quick)
