#!/bin/bash
# One one-thread run queue: the lines of $CAMPAIGN/$1.txt, in order, from the pinned checkout $RUNTREE.
# Progress in $CAMPAIGN/$1.pos (lines done): a restarted queue goes on where it stopped, and the run in
# flight resumes from its checkpoint. Lines may be appended while it runs; `touch $CAMPAIGN/$1.stop`
# ends it when its list is done.
name=$1
CAMPAIGN=${CAMPAIGN:-/work/runs} RUNTREE=${RUNTREE:-/work/runtree} DATA=${DATA:-/work/shared/data}
cd "$RUNTREE" || exit 1
[ -n "${VENV:-/work/venv}" ] && . "${VENV:-/work/venv}/bin/activate"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 NLBENCH_CHECKPOINT_DIR=$CAMPAIGN/ckpt
common="scale=cpu dataset=cifar10 data_dir=$DATA threads=1 results_dir=$CAMPAIGN/results progress=false verbosity=quiet"
mkdir -p "$CAMPAIGN/logs"
[ -e "$CAMPAIGN/$name.txt" ] || cp "$(dirname "$(readlink -f "$0")")/$name.txt" "$CAMPAIGN/$name.txt"
touch "$CAMPAIGN/$name.pos"
while true; do
  pos=$(cat "$CAMPAIGN/$name.pos"); pos=${pos:-0}
  line=$(sed -n "$((pos+1))p" "$CAMPAIGN/$name.txt")
  if [ -z "$line" ]; then
    [ -e "$CAMPAIGN/$name.stop" ] && exit 0
    sleep 60; continue
  fi
  case "$line" in \#*) echo $((pos+1)) > "$CAMPAIGN/$name.pos"; continue;; esac
  echo "$(date -Is) START $line" >> "$CAMPAIGN/$name.log"
  python -m nlbench run -m +experiment=table3 $common $line >> "$CAMPAIGN/logs/$name.out" 2>&1
  echo "$(date -Is) END rc=$? $line" >> "$CAMPAIGN/$name.log"
  echo $((pos+1)) > "$CAMPAIGN/$name.pos"
done
