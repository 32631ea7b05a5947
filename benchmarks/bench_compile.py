"""torch.compile per method: compile seconds, graph breaks, recompilations, eager vs compiled epoch time.

    python benchmarks/bench_compile.py --methods all --dataset cifar10 --scale cpu --epochs 3

See nlbench/bench/compiled.py (also ``python -m nlbench.bench.compiled``).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout without installing

from nlbench.bench.compiled import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
