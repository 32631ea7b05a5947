#!/usr/bin/env bash
# The GPU check of the training benchmark (issue 11), one script, about 6-8 minutes on one H100/H200,
# no network access. Paper protocol on CIFAR-10: resnet18_cifar, batch 128, bf16, channels_last.
#   1. eager, every registered method (CE first): steps, epochs, bare-loop floor, pass-count floors;
#   2. train.compile=true, CE and GSS-SB (the first, untimed epoch pays the compile);
#   3. CE compiled with CUDA graphs (train.compile_mode=reduce-overhead);
#   4. several runs sharing the GPU (separate processes started together), compiled CE;
# then the Table 3 grid estimate (70 runs per method at the protocol's epochs) from step 1's epochs.
# Epochs are cut to a class-balanced 10k-sample subset (train.subset_per_class=1000) so that each
# method gets 3 epochs in seconds: s/epoch is for 10k samples (x5 for a full CIFAR-10 epoch, less the
# 10k-image evaluation); samples/s carry over; the grid line converts to 50k-sample epochs.
#
# usage: benchmarks/gpu_check.sh [OUT_DIR]          (default: bench_gpu/; the tables land there)
# data:  NLBENCH_DATA_DIR=<dir holding cifar-10-batches-py>, or CIFAR10_NPZ=<cifar10_webp.npz> to
#        rebuild it first with shared/tools/carry/unpack_cifar.py (see that folder's README), or the
#        default data/ or ../shared/data when they hold it.
# knobs: METHODS (default: all), CONCURRENT (default 4), SUBSET (default 1000 per class), EPOCHS (3)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench_gpu}
mkdir -p "$OUT"
PY=${PYTHON:-python}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if [ -n "${CIFAR10_NPZ:-}" ]; then
  export NLBENCH_DATA_DIR=${NLBENCH_DATA_DIR:-/tmp/nlbench_data}
  if [ ! -f "$NLBENCH_DATA_DIR/cifar-10-batches-py/test_batch" ]; then
    UNPACK=${UNPACK:-shared/tools/carry/unpack_cifar.py}
    [ -f "$UNPACK" ] || UNPACK=../shared/tools/carry/unpack_cifar.py
    echo "rebuilding CIFAR-10 from $CIFAR10_NPZ into $NLBENCH_DATA_DIR" >&2
    "$PY" "$UNPACK" "$CIFAR10_NPZ" "$NLBENCH_DATA_DIR/cifar-10-batches-py" >&2
  fi
fi
if [ -z "${NLBENCH_DATA_DIR:-}" ]; then
  for d in data shared/data ../shared/data; do
    if [ -f "$d/cifar-10-batches-py/test_batch" ]; then export NLBENCH_DATA_DIR=$d; break; fi
  done
fi
if [ ! -f "${NLBENCH_DATA_DIR:-data}/cifar-10-batches-py/test_batch" ]; then
  echo "error: no CIFAR-10 (cifar-10-batches-py) under NLBENCH_DATA_DIR=${NLBENCH_DATA_DIR:-data}; set it or CIFAR10_NPZ" >&2
  exit 2
fi
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'error: no CUDA device')"
nvidia-smi --query-gpu=name,memory.used,memory.total,utilization.gpu --format=csv > "$OUT/nvidia_smi_before.csv" 2>/dev/null || true

COMMON=(--dataset cifar10 --scale paper --noise sym0.4 --device cuda --batch-size 128 --amp --channels-last
        --epochs "${EPOCHS:-3}" --warmup 5 --bare-steps 100 "train.subset_per_class=${SUBSET:-1000}")
t0=$(date +%s)
# time limits: 200 + 110 + 80 + 90 s, so the whole check stays under 8 minutes; a step that runs out
# leaves its table of the methods done so far (marked partial)
echo "== 1/4 eager, methods ${METHODS:-all}" >&2
timeout 200 "$PY" -m nlbench.bench "${COMMON[@]}" --methods "${METHODS:-all}" --no-compile \
  --grid-runs 70 --grid-train 50000 --out "$OUT/eager.md" \
  || echo "(eager step stopped: exit $?)" >> "$OUT/eager.md"
echo "== 2/4 compiled (train.compile=true): ce, gss_sb  [$(( $(date +%s) - t0 ))s]" >&2
timeout 110 "$PY" -m nlbench.bench "${COMMON[@]}" --epochs 2 --methods ce,gss_sb --compile --out "$OUT/compiled.md" \
  || echo "(compiled step stopped: exit $?)" >> "$OUT/compiled.md"
echo "== 3/4 CUDA graphs (train.compile_mode=reduce-overhead): ce  [$(( $(date +%s) - t0 ))s]" >&2
timeout 80 "$PY" -m nlbench.bench "${COMMON[@]}" --epochs 2 --methods ce --compile --compile-mode reduce-overhead \
  --out "$OUT/cudagraphs.md" || echo "(CUDA-graph step stopped: exit $?)" >> "$OUT/cudagraphs.md"
echo "== 4/4 ${CONCURRENT:-4} concurrent compiled CE runs  [$(( $(date +%s) - t0 ))s]" >&2
timeout 90 "$PY" -m nlbench.bench "${COMMON[@]}" --epochs 2 --methods ce --compile --concurrent "${CONCURRENT:-4}" \
  --out "$OUT/concurrent.md" \
  || echo "(concurrent step stopped: exit $?)" >> "$OUT/concurrent.md"
nvidia-smi --query-gpu=name,memory.used,memory.total,utilization.gpu --format=csv > "$OUT/nvidia_smi_after.csv" 2>/dev/null || true
{ cat "$OUT/eager.md"; echo; cat "$OUT/compiled.md"; echo; cat "$OUT/cudagraphs.md"; echo; cat "$OUT/concurrent.md"
  echo; echo "gpu_check wall: $(( $(date +%s) - t0 ))s; timed epochs over ${SUBSET:-1000} samples per class; the grid line converts to 50k-sample epochs at the measured samples/s"; } > "$OUT/gpu_check.md"
cat "$OUT/gpu_check.md"
