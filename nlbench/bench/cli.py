"""``python -m nlbench.bench`` (or ``benchmarks/bench_train.py``): parse, measure, print the table."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from .probe import measure_bare, measure_method
from .table import concurrent_table, grid_estimate, machine, summarise, table

DESCRIPTION = "Training benchmark: the real trainer and data path against the bare PyTorch loop (the floor)."


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="bench_train", description=DESCRIPTION,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default="ce", help="comma list of registered methods, or 'all' (default: ce)")
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--scale", default="smoke", help="paper | cpu | smoke")
    ap.add_argument("--noise", default="sym0.4")
    ap.add_argument("--backbone", default=None, help="default: the scale's protocol backbone")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--epochs", type=int, default=3, help="epochs per method run; the first is not timed")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps at the start of each epoch / bare loop")
    ap.add_argument("--bare-steps", type=int, default=30, help="timed steps of the bare loop")
    ap.add_argument("--runs", type=int, default=1, help="repeats of (bare loop, every method); medians shown")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    for k in ("amp", "channels_last", "compile"):
        g = ap.add_mutually_exclusive_group()
        g.add_argument(f"--{k.replace('_', '-')}", dest=k, action="store_true", default=None)
        g.add_argument(f"--no-{k.replace('_', '-')}", dest=k, action="store_false")
    ap.add_argument("--compile-mode", default=None, help="train.compile_mode for every run: default, "
                    "reduce-overhead (CUDA graphs), max-autotune, max-autotune-no-cudagraphs")
    ap.add_argument("--infer-batches", type=lambda v: [int(x) for x in v.split(",") if x.strip()], default=[],
                    help="also time the bare inference pass at these batch sizes, e.g. 128,256,1024 "
                         "(to choose train.infer_batch_size for a device)")
    ap.add_argument("--grid-runs", type=int, default=0,
                    help="print the device-hours of this many runs per method at the protocol's epochs "
                         "(Table 3: 2 datasets x 7 noises x 5 seeds = 70)")
    ap.add_argument("--grid-train", type=int, default=None,
                    help="training-set size of a grid run (default: the measured one), e.g. 50000 for CIFAR")
    ap.add_argument("--concurrent", type=int, default=1, help="run this many benchmarks at once on the device")
    ap.add_argument("--shared", type=int, default=1, help=argparse.SUPPRESS)   # set for the concurrent children
    ap.add_argument("--out", default=None, help="also write the table here (and <out>.json)")
    ap.add_argument("--json", default=None, help=argparse.SUPPRESS)
    ap.add_argument("overrides", nargs="*", help="extra key=value overrides for every run (as nlbench run)")
    a = ap.parse_args(argv)
    if min(a.epochs, a.runs, a.warmup, a.bare_steps, a.concurrent) < 1:
        ap.error("--epochs, --runs, --warmup, --bare-steps and --concurrent must be >= 1")
    return a


def methods_of(spec: str) -> list[str]:
    import methods  # noqa: F401  (registers every method)
    from ..method import METHODS
    from ..registry import ConfigError

    names = METHODS.names() if spec == "all" else [s.strip() for s in spec.split(",") if s.strip()]
    for n in names:
        METHODS.get(n)
    if not names:
        raise ConfigError("--methods names no method")
    return (["ce"] if "ce" in names else []) + [n for n in names if n != "ce"]


def run_benchmark(a) -> dict:
    from ..spec import _device

    names = methods_of(a.methods)
    device = _device(a.device)
    load0 = os.getloadavg()
    runs = []
    for r in range(a.runs):
        runs.append({"bare": measure_bare(a, device, r), "methods": []})
        for n in names:
            runs[-1]["methods"].append(dataclasses.asdict(measure_method(a, n, device)))
            if a.out and r == 0:   # the table so far, in case a time limit stops the benchmark
                Path(a.out).parent.mkdir(parents=True, exist_ok=True)
                Path(a.out).write_text(table(_result(a, device, runs[:1], load0)) + "\n(partial: measuring)\n")
    return _result(a, device, runs, load0)


def _result(a, device: torch.device, runs: list[dict], load0) -> dict:
    bare = dict(runs[0]["bare"])
    bare["train_ips_median"] = statistics.median(r["bare"]["train_ips"] for r in runs)
    bare["infer_ips_median"] = statistics.median(r["bare"]["infer_ips"] for r in runs)
    bare["infer_ips_by_batch_median"] = {b: statistics.median(r["bare"]["infer_ips_by_batch"][b] for r in runs)
                                         for b in bare.get("infer_ips_by_batch", {})}
    result = {"machine": machine(device), "load": {"start": load0, "end": os.getloadavg()},
              "config": {"dataset": a.dataset, "scale": a.scale, "noise": a.noise, "device": str(device),
                         "epochs": a.epochs, "warmup": a.warmup, "runs": a.runs, "shared": a.shared,
                         "overrides": list(a.overrides)},
              "bare": bare, "rows": summarise(runs), "raw": runs}
    if a.grid_runs:
        result["grid"] = grid_estimate(result["rows"], a.grid_runs, a.grid_train)
    return result


def run_concurrent(a, argv: list[str]) -> dict:
    """``a.concurrent`` copies of this benchmark started together as separate processes (as the
    launcher runs several runs on one device); their step and epoch rates summed."""
    skip = {"--concurrent", "--out", "--json"}
    child_args, it = [], iter(argv)
    for x in it:
        key = x.split("=", 1)[0]
        if key in skip:
            if "=" not in x:
                next(it, None)
            continue
        child_args.append(x)
    with tempfile.TemporaryDirectory() as tmp:
        procs = []
        for i in range(a.concurrent):
            cmd = [sys.executable, "-m", "nlbench.bench", *child_args, "--shared", str(a.concurrent),
                   "--seed", str(a.seed + i), "--json", f"{tmp}/{i}.json"]
            procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
        errs = [p.communicate()[1] for p in procs]
        for p, e in zip(procs, errs):
            if p.returncode != 0:
                raise RuntimeError(f"a concurrent benchmark failed (exit {p.returncode}):\n{e[-2000:]}")
        results = [json.loads(Path(f"{tmp}/{i}.json").read_text()) for i in range(a.concurrent)]
    return {"concurrent": a.concurrent, "children": results}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = parse(argv)
    from ..registry import ConfigError

    if a.threads:
        torch.set_num_threads(a.threads)
    try:
        if a.concurrent > 1:
            res = run_concurrent(a, argv)
            text = concurrent_table(res)
        else:
            res = run_benchmark(a)
            text = table(res)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.json:
        Path(a.json).write_text(json.dumps(res, default=str))
    print(text, flush=True)
    if a.out:
        out = Path(a.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
        out.with_name(out.name + ".json").write_text(json.dumps(res, indent=1, default=str))
    return 0
