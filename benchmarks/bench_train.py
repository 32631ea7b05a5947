"""Training benchmark: the real trainer and data path against the bare PyTorch loop (the floor).

The same as ``python -m nlbench.bench``; see nlbench/bench/ for what is timed and how. Examples:

    python benchmarks/bench_train.py --methods ce,gss_sb --dataset digits --scale smoke
    python benchmarks/bench_train.py --methods all --dataset cifar10 --scale cpu --runs 3 --out bench_cpu.md
    benchmarks/gpu_check.sh            # the prepared GPU check (every method, CIFAR-10, < 8 minutes)
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # the checkout's nlbench and methods

from nlbench.bench import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
