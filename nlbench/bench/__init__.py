"""Training benchmark: the real trainer and data path against the bare PyTorch loop (the floor).

For each method it builds the run exactly as ``python -m nlbench run`` does (``spec.build_spec`` +
``prepare.prepare``: the real data, noise, stream, networks and method) and runs ``Trainer.fit`` for a
few epochs with no checkpoint and no record. It times

- steady-state steps: per epoch, from after its first ``--warmup`` steps to its last step (the device
  synchronised at both ends), counted in training samples per second;
- whole epochs: the trainer's own epoch time (steps, the method's extra passes, evaluation), epochs
  after the first (compilation, autotuning, allocator warm-up) only;

and, in the same run, the bare loop on the same network, batch size, precision and optimiser over
synthetic tensors already on the device (forward, CE, backward, optimiser step; no data pipeline),
and the bare inference pass (eval mode, inference mode, the inference batch size). From the bare
rates and each method's pass counts (its ``passes``, :class:`nlbench.method.Passes`) it derives each
method's floor per epoch. Each run measures the bare loop and then every method; ratios are taken within a run and
the table shows their median over runs, so a machine that slows down during the benchmark moves
both sides of a ratio. Nothing here asserts a time.

    python benchmarks/bench_train.py --methods ce,gss_sb --dataset digits --scale smoke --epochs 3
    python benchmarks/bench_train.py --methods all --dataset cifar10 --scale paper --device cuda \\
        --epochs 2 --compile --out bench.md train.subset_per_class=1000   # 10k-sample epochs
    python benchmarks/bench_train.py ... --concurrent 4      # 4 runs sharing the device, summed

The package, one module per part: ``floor`` (the bare loop and a method's floor from its pass counts),
``probe`` (the real trainer, instrumented), ``table`` (medians and the printed table), ``cli`` (this
command line), ``compiled`` (torch.compile's work per method: compile time, graph breaks,
recompilations; ``python -m nlbench.bench.compiled``).
"""
from .cli import main, methods_of, parse
from .floor import BareResult, bare_infer, bare_train, epoch_phase, floor_seconds
from .probe import StepProbe, count_samples, measure_bare, measure_method
from .table import grid_estimate, summarise, table

__all__ = ["main", "methods_of", "parse", "BareResult", "bare_infer", "bare_train", "epoch_phase", "floor_seconds",
           "StepProbe", "count_samples", "measure_bare", "measure_method", "grid_estimate", "summarise", "table"]
