"""torch.compile's work per method on the real trainer: compile seconds, graph breaks and
recompilations per epoch, and eager against compiled epoch time.

:class:`CompileWatch` reads torch._dynamo's own compilation metrics (one entry per compiled frame,
with the reason of each recompilation) and its graph-break counter while ``Trainer.fit`` runs, split
at each epoch's start, so the evaluation and the method's inference passes at an epoch's end count for
that epoch. tests/test_gpu_paths.py uses it to fail a method that keeps recompiling after its first
epoch; ``python -m nlbench.bench.compiled`` (``benchmarks/bench_compile.py``) prints the table:

    python benchmarks/bench_compile.py --methods all --dataset cifar10 --scale cpu --epochs 3

Compile seconds are cold by default (``torch._inductor.config.force_disable_caches``): what the first
run on a machine pays; ``--warm-cache`` lets inductor reuse the graphs it compiled before (on disk and
from earlier methods of the same benchmark). Nothing here asserts a time.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch


@dataclass
class CompileStats:
    """What torch.compile did during one ``fit``. Per epoch (0-based index): ``compiles`` frames compiled
    (a first compile or a recompilation), ``recompiles`` recompilations of an already compiled frame."""

    compiles: list[int] = field(default_factory=list)
    recompiles: list[int] = field(default_factory=list)
    graph_breaks: int = 0
    compile_s: float = 0.0          # dynamo + AOT + inductor, forward and backward graphs
    max_per_frame: int = 0          # most compiles of one frame (dynamo falls back to eager at its recompile_limit)
    reasons: list[str] = field(default_factory=list)   # "epoch k: <torch's recompile reason>"
    break_reasons: list[str] = field(default_factory=list)

    def recompiles_after(self, epoch: int) -> int:
        """Frames compiled after 0-based ``epoch`` (first compiles included: a new variant is a new cost)."""
        return sum(self.compiles[epoch + 1:])


class CompileWatch:
    """Counts torch.compile's work in each epoch of a fit of ``method`` (wraps its ``on_epoch_start``).

    It resets dynamo first (a compiled frame of an earlier run would hide this run's compiles), so
    use one watch per fit and read :meth:`stats` after it."""

    def __init__(self, method) -> None:
        import torch._dynamo
        from torch._dynamo import utils

        self._u = utils
        torch._dynamo.reset()
        utils.set_compilation_metrics_limit(100_000)   # the default keeps only the last 64 entries
        utils.clear_compilation_metrics()
        utils.counters.clear()
        self._marks: list[int] = []
        start = method.on_epoch_start

        def watched_epoch_start(ctx):
            self._marks.append(len(utils.get_compilation_metrics()))
            start(ctx)

        method.on_epoch_start = watched_epoch_start

    def stats(self) -> CompileStats:
        entries = list(self._u.get_compilation_metrics())
        marks = self._marks + [len(entries)]
        s = CompileStats(compiles=[0] * (len(marks) - 1), recompiles=[0] * (len(marks) - 1))
        per_frame: dict[str, int] = {}
        for i, m in enumerate(entries):
            epoch = max((k for k in range(len(marks) - 1) if marks[k] <= i), default=0)
            if m.is_forward is False:   # the backward graph of a frame compiled above
                s.compile_s += (m.backward_cumulative_compile_time_us or 0) / 1e6
                continue
            s.compile_s += m.entire_frame_compile_time_s or 0.0
            s.compiles[epoch] += 1
            frame = str(m.compile_id).split("/")[0]
            per_frame[frame] = per_frame.get(frame, 0) + 1
            if m.recompile_reason:
                s.recompiles[epoch] += 1
                s.reasons.append(f"epoch {epoch + 1}: {m.recompile_reason.strip().splitlines()[0][:160]}")
        s.max_per_frame = max(per_frame.values(), default=0)
        breaks = self._u.counters["graph_break"]
        s.graph_breaks = int(sum(breaks.values()))
        s.break_reasons = [r.strip().splitlines()[0][:160] for r in breaks]
        return s


def fit_watched(spec, prep, *, compile_on: bool):
    """``Trainer.fit`` of a prepared run (no checkpoint, no record), with a :class:`CompileWatch` when
    compiling; returns (FitResult, CompileStats or None)."""
    from ..trainer import Trainer

    trainer = Trainer(prep.method, prep.stream, prep.test_sets, spec.train, device=spec.device,
                      data_seed=spec.seed, clean_labels=prep.clean, checkpoint=None, progress=False,
                      log=lambda s: None, headline=spec.headline)
    if compile_on and trainer.compile_mode is None:
        raise ValueError("the spec does not compile: set train.compile=true")
    watch = CompileWatch(trainer.method) if compile_on else None
    res = trainer.fit()
    return res, (watch.stats() if watch else None)


# ------------------------------------------------------------------------------ the compile table
def measure(a, name: str) -> dict:
    """One method eager, then compiled, from the same config and seed: epoch times and compile stats."""
    from .probe import build

    row, histories = {"method": name}, {}
    for mode in ("eager", "compiled"):
        a.compile = mode == "compiled"
        spec, prep, _ = build(a, name)
        t0 = time.perf_counter()
        res, st = fit_watched(spec, prep, compile_on=a.compile)
        if res.status != "completed":
            raise RuntimeError(f"{mode} run of {name} ended {res.status}: {res.message}")
        histories[mode] = res.history
        row[mode] = {"first_s": res.history[0]["seconds"], "wall_s": time.perf_counter() - t0,
                     "loss_last": res.history[-1].get("loss"), "acc_last": res.history[-1].get("test_top1")}
        if st is not None:
            row["stats"] = st
    # steady epochs: those in which nothing compiled (DivideMix compiles again after its warm-up), the
    # first excluded; the same epochs of the eager run, so the two sides time the same phase
    steady = [i for i in range(1, len(row["stats"].compiles)) if row["stats"].compiles[i] == 0]
    for mode, hist in histories.items():   # none such epoch: no time (the table says '-'; run more epochs)
        row[mode]["epoch_s"] = statistics.median(hist[i]["seconds"] for i in steady) if steady else None
        # the training part: steps and the method's passes, without the evaluation
        row[mode]["train_s"] = statistics.median(hist[i].get("train_seconds", float("nan"))
                                                 for i in steady) if steady else None
    row["steady"] = [i + 1 for i in steady]
    return row


def _f(v, fmt: str) -> str:
    return "-" if v is None or v != v else format(v, fmt)


def _ratio(a, b):
    return None if a is None or b is None or not b else a / b


def table(rows: list[dict], a, machine: dict) -> str:
    lines = [
        "# torch.compile per method (train.compile=true against eager, same config and seed)",
        f"machine: {machine['cpu']} ({machine['cpu_count']} cores); torch {machine['torch']}; threads {machine['threads']}; "
        f"device {a.device}; load average {' '.join(f'{x:.2f}' for x in machine['load_start'])} at start, "
        f"{' '.join(f'{x:.2f}' for x in machine['load_end'])} at end",
        f"run: dataset={a.dataset} scale={a.scale} noise={a.noise} epochs={a.epochs}"
        + (f" overrides: {' '.join(a.overrides)}" if a.overrides else "")
        + f"; inductor caches {'on (warm)' if a.warm_cache else 'off (cold compiles)'}",
        "",
        "| method | compile s | graph breaks | compiles, epoch 1 | compiles after epoch 1 | most per frame "
        "| eager s/epoch | compiled s/epoch | compiled / eager | training part: eager / compiled s | compiled / eager "
        "| compiled epoch 1 s | acc eager / compiled |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s, e, c = r["stats"], r["eager"], r["compiled"]
        lines.append(
            f"| {r['method']} | {s.compile_s:.1f} | {s.graph_breaks} | {s.compiles[0] if s.compiles else 0} "
            f"| {s.recompiles_after(0)} | {s.max_per_frame} | {_f(e['epoch_s'], '.2f')} | {_f(c['epoch_s'], '.2f')} "
            f"| {_f(_ratio(c['epoch_s'], e['epoch_s']), '.2f')} | {_f(e['train_s'], '.2f')} / {_f(c['train_s'], '.2f')} "
            f"| {_f(_ratio(c['train_s'], e['train_s']), '.2f')} | {_f(c['first_s'], '.1f')} "
            f"| {_f(e['acc_last'], '.2f')} / {_f(c['acc_last'], '.2f')} |")
    lines += ["", "compile s: dynamo + AOT autograd + inductor time from torch's compilation metrics (forward and "
              "backward graphs, every epoch). compiles: frames compiled (first compiles and recompilations); "
              "most per frame: the most compiles of one frame (dynamo falls back to eager at "
              f"recompile_limit={torch._dynamo.config.recompile_limit}). s/epoch: median of the epochs after the "
              "first in which nothing compiled (steps, method passes, evaluation), the same epochs for eager "
              "('-': every epoch compiled something; run more epochs); "
              "training part: the same without the evaluation. A DivideMix-family epoch costs in proportion to its "
              "labelled share, which rounding can make the eager and compiled runs split differently (their "
              "accuracies say how far they drifted). Recompile reasons:"]
    for r in rows:
        for reason in r["stats"].reasons:
            lines.append(f"- {r['method']}, {reason}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench_compile", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default="all", help="comma list of registered methods, or 'all' (default)")
    ap.add_argument("--dataset", default="cifar10")
    ap.add_argument("--scale", default="cpu")
    ap.add_argument("--noise", default="sym0.4")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per run; the first (the compile) is not in s/epoch")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--warm-cache", action="store_true", help="let inductor reuse its compiled graphs")
    ap.add_argument("--out", default=None, help="also write the table here")
    ap.add_argument("overrides", nargs="*", help="extra key=value overrides for every run (as nlbench run)")
    a = ap.parse_args(argv)
    if a.epochs < 2:
        ap.error("--epochs must be >= 2 (the first epoch pays the compile)")
    # the attributes probe.build reads, for runs built exactly as `nlbench run` builds them
    a.backbone = a.batch_size = a.amp = a.channels_last = a.compile_mode = None
    from ..registry import ConfigError
    from .cli import methods_of

    if a.threads:
        torch.set_num_threads(a.threads)
    if not a.warm_cache:
        import torch._inductor.config as inductor_config   # (not `import torch...`: torch stays global)

        inductor_config.force_disable_caches = True
    from .table import machine as machine_info

    machine = {**machine_info(torch.device(a.device)), "load_start": os.getloadavg()}
    try:
        names = methods_of(a.methods)
        rows = []
        for n in names:
            rows.append(measure(a, n))
            print(f"{n}: done", file=sys.stderr, flush=True)
            if a.out:   # the table so far, in case a time limit stops the benchmark
                Path(a.out).parent.mkdir(parents=True, exist_ok=True)
                Path(a.out).write_text(table(rows, a, {**machine, "load_end": os.getloadavg()})
                                       + "\n(partial: measuring)\n")
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = table(rows, a, {**machine, "load_end": os.getloadavg()})
    print(text, flush=True)
    if a.out:
        Path(a.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
