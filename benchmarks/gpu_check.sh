#!/usr/bin/env bash
# The GPU check of the training benchmark (issues 11, 23): one script, every registered method, sized
# to stay under 8 minutes on one H100/H200, no network access. Paper protocol on CIFAR-10:
# resnet18_cifar, batch 128, bf16, channels_last.
#   1. eager, every method (CE first): steps, epochs, bare-loop floor, pass-count floors;
#   2. train.compile=true against eager, every method (nlbench.bench.compiled): compile seconds, graph
#      breaks, recompilations per epoch, eager vs compiled epoch time. Inductor's caches stay on, so a
#      method reuses the graphs it shares with the methods before it (CE pays the cold compile);
#   3. CUDA graphs (train.compile_mode=reduce-overhead): CE, GSS-SB and DivideMix (fixed-shape steps,
#      an epoch-end pass, and labelled/unlabelled batches whose sizes change from step to step);
#   4. several runs sharing the GPU (separate processes started together), compiled CE;
# then the Table 3 grid estimate (70 runs per method at the protocol's epochs) from step 1's epochs.
# Epochs are cut to a class-balanced subset (step 1: 1000 per class, 10k samples; step 2: 200 per
# class) so each method gets its epochs in seconds: s/epoch is for that subset (plus the 10k-image
# evaluation); samples/s carry over; the grid line converts to 50k-sample epochs.
# Time limits per step: 150 + 220 + 60 + 50 s; a step that runs out leaves its table of the methods
# done so far (marked partial).
#
# usage: benchmarks/gpu_check.sh [OUT_DIR]          (default: bench_gpu/; the tables land there)
# data:  NLBENCH_DATA_DIR=<dir holding cifar-10-batches-py>, or CIFAR10_NPZ=<cifar10_webp.npz> to
#        rebuild it first with shared/tools/carry/unpack_cifar.py (see that folder's README), or the
#        default data/ or ../shared/data when they hold it.
# knobs: METHODS (default: all), CONCURRENT (4), SUBSET (1000 per class), SUBSET2 (200), EPOCHS (2),
#        EPOCHS2 (3: DivideMix and GSS-SSL compile again in their first epoch after the warm-up, so the
#        third is the one that times them), GRAPH_METHODS (ce,gss_sb,dividemix)
# CPU rehearsal, no GPU: DEVICE=cpu runs the same four steps on the embedded digits at smoke scale
#        (the script, the flags and every method's path through them; no number there says anything
#        about a GPU): DEVICE=cpu benchmarks/gpu_check.sh /tmp/gpu_check_cpu    (a few minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench_gpu}
mkdir -p "$OUT"
PY=${PYTHON:-python}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
DEVICE=${DEVICE:-cuda}

if [ "$DEVICE" = cpu ]; then
  DATASET=${DATASET:-digits}; SCALE=${SCALE:-smoke}; SUBSET=${SUBSET:-}; SUBSET2=${SUBSET2:-}
  CONCURRENT=${CONCURRENT:-2}
  # inductor compiles in C++ on the CPU, far slower than on a GPU host: longer limits for the rehearsal
  T1=${T1:-300}; T2=${T2:-600}; T3=${T3:-300}; T4=${T4:-300}
else
  DATASET=${DATASET:-cifar10}; SCALE=${SCALE:-paper}; SUBSET=${SUBSET-1000}; SUBSET2=${SUBSET2-200}
  CONCURRENT=${CONCURRENT:-4}
  T1=${T1:-150}; T2=${T2:-220}; T3=${T3:-60}; T4=${T4:-50}
fi

if [ "$DATASET" = cifar10 ]; then
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
fi
if [ "$DEVICE" != cpu ]; then
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'error: no CUDA device')"
fi
nvidia-smi --query-gpu=name,memory.used,memory.total,utilization.gpu --format=csv > "$OUT/nvidia_smi_before.csv" 2>/dev/null || true

SUB1=(); [ -n "$SUBSET" ] && SUB1=("train.subset_per_class=$SUBSET")
SUB2=(); [ -n "$SUBSET2" ] && SUB2=("train.subset_per_class=$SUBSET2")
COMMON=(--dataset "$DATASET" --scale "$SCALE" --noise sym0.4 --device "$DEVICE" --batch-size 128 --amp --channels-last
        --epochs "${EPOCHS:-2}" --warmup 5 --bare-steps 100 ${SUB1[@]+"${SUB1[@]}"})
t0=$(date +%s)
echo "== 1/4 eager, methods ${METHODS:-all}" >&2
timeout "$T1" "$PY" -m nlbench.bench "${COMMON[@]}" --methods "${METHODS:-all}" --no-compile \
  --grid-runs 70 --grid-train 50000 --out "$OUT/eager.md" \
  || echo "(eager step stopped: exit $?)" >> "$OUT/eager.md"
echo "== 2/4 compiled against eager (train.compile=true), methods ${METHODS:-all}  [$(( $(date +%s) - t0 ))s]" >&2
timeout "$T2" "$PY" -m nlbench.bench.compiled --methods "${METHODS:-all}" --dataset "$DATASET" --scale "$SCALE" \
  --noise sym0.4 --device "$DEVICE" --epochs "${EPOCHS2:-3}" --warm-cache --out "$OUT/compiled.md" \
  train.batch_size=128 train.amp=true train.channels_last=true ${SUB2[@]+"${SUB2[@]}"} \
  || echo "(compiled step stopped: exit $?)" >> "$OUT/compiled.md"
echo "== 3/4 CUDA graphs (train.compile_mode=reduce-overhead): ${GRAPH_METHODS:-ce,gss_sb,dividemix}  [$(( $(date +%s) - t0 ))s]" >&2
timeout "$T3" "$PY" -m nlbench.bench "${COMMON[@]}" --methods "${GRAPH_METHODS:-ce,gss_sb,dividemix}" --compile \
  --compile-mode reduce-overhead --out "$OUT/cudagraphs.md" \
  || echo "(CUDA-graph step stopped: exit $?)" >> "$OUT/cudagraphs.md"
echo "== 4/4 $CONCURRENT concurrent compiled CE runs  [$(( $(date +%s) - t0 ))s]" >&2
timeout "$T4" "$PY" -m nlbench.bench "${COMMON[@]}" --methods ce --compile --concurrent "$CONCURRENT" \
  --out "$OUT/concurrent.md" \
  || echo "(concurrent step stopped: exit $?)" >> "$OUT/concurrent.md"
nvidia-smi --query-gpu=name,memory.used,memory.total,utilization.gpu --format=csv > "$OUT/nvidia_smi_after.csv" 2>/dev/null || true
{ cat "$OUT/eager.md"; echo; cat "$OUT/compiled.md"; echo; cat "$OUT/cudagraphs.md"; echo; cat "$OUT/concurrent.md"
  echo; echo "gpu_check wall: $(( $(date +%s) - t0 ))s on $DEVICE ($DATASET, scale=$SCALE); step 1 timed epochs over ${SUBSET:-all} samples per class, step 2 over ${SUBSET2:-all}; the grid line converts to 50k-sample epochs at the measured samples/s"; } > "$OUT/gpu_check.md"
cat "$OUT/gpu_check.md"
