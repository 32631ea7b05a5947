#!/usr/bin/env bash
# The threads crossover behind `threads=null` (docs/performance.md, "Threads"): seconds per training epoch
# of CE at 1 and 2 threads, with and without OpenMP's passive wait policy, for digits, scale=smoke and
# CIFAR-10 scale=cpu. Run it once on an idle machine and once beside another training run.
#   benchmarks/threads_crossover.sh [CIFAR_DATA_DIR]
set -uo pipefail
data=${1:-${NLBENCH_DATA_DIR:-../shared/data}}
b() {   # label, env, bench args
  local lab=$1 envs=$2; shift 2
  local row
  row=$(env $envs python -m nlbench.bench --methods ce --epochs 3 --runs 1 "$@" 2>&1 | grep "^| ce ")
  echo "| $lab | $(echo "$row" | awk -F'|' '{print $9}') |"
}
echo "| run | s/epoch |"; echo "|---|---|"
for ds in "digits paper" "digits smoke" "cifar10 cpu"; do
  set -- $ds
  extra=(); [ "$1" = cifar10 ] && extra=(--data-dir "$data")
  for t in 1 2; do b "$1 $2 threads=$t" "" --dataset "$1" --scale "$2" --threads $t "${extra[@]}"; done
  b "$1 $2 threads=2 PASSIVE" "OMP_WAIT_POLICY=PASSIVE" --dataset "$1" --scale "$2" --threads 2 "${extra[@]}"
done
