"""Training benchmark: the real trainer and data path against the bare PyTorch loop (the floor).

For each method it builds the run exactly as ``python -m nlbench run`` does (``runner.build_spec`` +
``runner.prepare``: the real data, noise, stream, networks and method) and runs ``Trainer.fit`` for a
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
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from .method import METHODS, Passes


# ---------------------------------------------------------------------------------------------
# pass counts: each method's own (Method.passes, nlbench.method.Passes)
def epoch_phase(method, epoch: int, epochs: int) -> tuple[bool, float]:
    """(is a warm-up epoch, labelled share l) of 0-based ``epoch``, read from the method's own
    schedule and division when it has them (DivideMix family), else (False, 1.0)."""
    warm = bool(hasattr(method, "warmup_length") and epoch < method.warmup_length(epochs))
    if warm or not hasattr(method, "labeled_fraction"):
        return warm, 1.0
    n = method.num_networks
    return False, float(sum(float(method.labeled_fraction(i)) for i in range(n)) / n)


# ---------------------------------------------------------------------------------------------
# the bare loop (the floor)
@dataclass
class BareResult:
    steps: int          # timed steps (warm-up steps excluded)
    images: int         # images in the timed steps
    seconds: float

    @property
    def ips(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("nan")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _synthetic(n: int, shape: tuple[int, ...], num_classes: int, device: torch.device, channels_last: bool,
               seed: int, rotate: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``rotate`` different random batches of ``n`` images on the device (never zeros, never one
    buffer reused: caches must not make the floor look faster than real data)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(rotate):
        x = torch.randn(n, *shape, generator=g).to(device)
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        out.append((x, torch.randint(0, num_classes, (n,), generator=g).to(device)))
    return out


def bare_train(net: torch.nn.Module, opt: torch.optim.Optimizer, *, batch_size: int, steps: int, warmup: int,
               shape: tuple[int, ...], num_classes: int, device: torch.device, amp: bool, channels_last: bool,
               seed: int = 0, rotate: int = 4, cuda_graphs: bool = False) -> BareResult:
    """The floor of a training step: forward, CE, backward, optimiser step on synthetic batches
    already on ``device``; ``warmup`` untimed steps first, then ``steps`` timed ones. ``cuda_graphs``:
    mark each step's start, as the trainer does under a CUDA-graph compile mode."""
    data = _synthetic(batch_size, shape, num_classes, device, channels_last, seed, rotate)
    net.train()
    use_amp = amp and device.type == "cuda"
    n_steps = n_images = 0
    t0 = time.perf_counter()
    for s in range(warmup + steps):
        if s == warmup:
            _sync(device)
            t0 = time.perf_counter()
        x, y = data[s % rotate]
        if cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        with torch.autocast(device.type, torch.bfloat16, enabled=use_amp):
            loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if s >= warmup:
            n_steps += 1
            n_images += x.shape[0]
    _sync(device)
    return BareResult(n_steps, n_images, time.perf_counter() - t0)


def bare_infer(net: torch.nn.Module, *, batch_size: int, batches: int, warmup: int, shape: tuple[int, ...],
               num_classes: int, device: torch.device, amp: bool, channels_last: bool, seed: int = 1,
               rotate: int = 2) -> BareResult:
    """The floor of an inference pass: eval-mode forwards under inference mode."""
    data = _synthetic(batch_size, shape, num_classes, device, channels_last, seed, rotate)
    was = net.training
    net.eval()
    n_steps = n_images = 0
    t0 = time.perf_counter()
    try:
        with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16,
                                                    enabled=amp and device.type == "cuda"):
            for s in range(warmup + batches):
                if s == warmup:
                    _sync(device)
                    t0 = time.perf_counter()
                x = data[s % rotate][0]
                net(x)
                if s >= warmup:
                    n_steps += 1
                    n_images += x.shape[0]
        _sync(device)
    finally:
        net.train(was)
    return BareResult(n_steps, n_images, time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------
# the real trainer, instrumented
def count_samples(batch) -> int:
    """Training samples in whatever ``Method.batches`` yields: a Batch, or tuples / dataclasses
    holding Batches (DivideMix's labelled + unlabelled step counts both)."""
    from .method import Batch

    if isinstance(batch, Batch):
        return int(batch.idx.shape[0])
    if isinstance(batch, (tuple, list)):
        return sum(count_samples(b) for b in batch)
    if dataclasses.is_dataclass(batch):
        return sum(count_samples(getattr(batch, f.name)) for f in dataclasses.fields(batch))
    return 0


class StepProbe:
    """Times a method's steady-state steps inside ``Trainer.fit`` by wrapping three of its hooks on
    the instance (the trainer and the method run unchanged): ``loss`` counts the step's samples,
    ``on_step_end`` opens the window after ``warmup`` (>= 1) steps of each epoch, ``on_epoch_end``
    closes it after the epoch's last step (the device synchronised at both ends). On CUDA, with a
    ``caught`` warnings list, it counts the host synchronisations inside the window
    (``torch.cuda.set_sync_debug_mode``)."""

    def __init__(self, method, *, warmup: int, device: torch.device, caught: list | None = None) -> None:
        if warmup < 1:
            raise ValueError(f"warmup={warmup} must be >= 1")
        self.m, self.warmup, self.device = method, warmup, device
        self.caught = caught if device.type == "cuda" else None
        self.epochs: list[dict] = []
        self._reset()
        loss, step_end, epoch_end = method.loss, method.on_step_end, method.on_epoch_end

        def probed_loss(batch, ctx):
            self._pending = count_samples(batch)
            return loss(batch, ctx)

        def probed_step_end(ctx):
            step_end(ctx)
            self.steps += 1
            if self.steps > self.warmup:
                self.w_steps += 1
                self.w_samples += self._pending
            elif self.steps == self.warmup:
                _sync(self.device)
                self.t0 = time.perf_counter()
                if self.caught is not None:
                    self._w0 = len(self.caught)
                    torch.cuda.set_sync_debug_mode("warn")

        def probed_epoch_end(ctx):
            dt, syncs = float("nan"), None
            if self.t0 is not None:
                if self.caught is not None:
                    torch.cuda.set_sync_debug_mode(0)
                    syncs = sum("synchroniz" in str(w.message) for w in self.caught[self._w0:])
                _sync(self.device)
                dt = time.perf_counter() - self.t0
            warm, lab = epoch_phase(self.m, ctx.epoch, ctx.epochs)
            self.epochs.append({"epoch": ctx.epoch, "steps": self.steps, "timed_steps": self.w_steps,
                                "timed_samples": self.w_samples, "timed_s": dt, "warmup_epoch": warm,
                                "labeled": lab, "host_syncs": syncs})
            self._reset()
            epoch_end(ctx)

        method.loss, method.on_step_end, method.on_epoch_end = probed_loss, probed_step_end, probed_epoch_end

    def _reset(self) -> None:
        self.steps = self.w_steps = self.w_samples = self._pending = self._w0 = 0
        self.t0 = None


@dataclass
class MethodResult:
    method: str
    num_train: int
    num_test: int
    protocol_epochs: int            # the epochs of the protocol (before --epochs), for the grid estimate
    epochs: list[dict] = field(default_factory=list)   # per epoch: trainer seconds + probe numbers


def _overrides(a, method: str, epochs: int | None) -> list[str]:
    o = [f"method={method}", f"dataset={a.dataset}", f"scale={a.scale}", f"device={a.device}",
         "progress=false", f"seed={a.seed}", f"noise={a.noise}"]
    if a.backbone:
        o.append(f"backbone={a.backbone}")
    if a.data_dir:
        o.append(f"data_dir={a.data_dir}")
    if epochs is not None:
        o.append(f"train.epochs={epochs}")
    if a.batch_size:
        o.append(f"train.batch_size={a.batch_size}")
    for k in ("amp", "channels_last", "compile"):
        v = getattr(a, k)
        if v is not None:
            o.append(f"train.{k}={str(v).lower()}")
    if a.compile_mode is not None:
        o.append(f"train.compile_mode={a.compile_mode}")
    return o + list(a.overrides)


def build(a, method: str):
    """(spec, prepared) of ``method`` as ``python -m nlbench run`` builds them, and the protocol's epochs."""
    from .config import compose
    from .runner import build_spec, prepare

    protocol_epochs = build_spec(compose(_overrides(a, method, None))).train.epochs
    spec = build_spec(compose(_overrides(a, method, a.epochs)))
    return spec, prepare(spec), protocol_epochs


def measure_method(a, name: str, device: torch.device) -> MethodResult:
    from .trainer import Trainer

    spec, prep, protocol_epochs = build(a, name)
    trainer = Trainer(prep.method, prep.stream, prep.test_sets, spec.train, device=spec.device,
                      data_seed=spec.seed, clean_labels=prep.clean, checkpoint=None, progress=False,
                      log=lambda s: None, headline=spec.headline)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        probe = StepProbe(trainer.method, warmup=a.warmup, device=device, caught=caught)
        res = trainer.fit()
    if res.status != "completed":
        raise RuntimeError(f"benchmark run of {name} ended {res.status}: {res.message}")
    num_test = sum(len(y) for split in prep.test_sets.values() for _, y in split())
    rows = [{**p, "seconds": h["seconds"], "train_seconds": h.get("train_seconds")}
            for p, h in zip(probe.epochs, res.history)]
    return MethodResult(name, int(prep.stream.num_train), int(num_test), protocol_epochs, rows)


def measure_bare(a, device: torch.device, run: int) -> dict:
    """The bare training and inference rates on the network and protocol of CE for this benchmark."""
    from .trainer import compile_mode_for, make_optimizer, uses_cuda_graphs

    spec, prep, _ = build(a, "ce")
    cfg = spec.train
    x0 = next(iter(prep.stream.batches(batch_size=2, generator=torch.Generator().manual_seed(0)))).x
    shape, k = tuple(x0.shape[1:]), prep.method.num_classes
    net = prep.method.nets[0].to(device)   # CE's network: the backbone the methods train, same init
    if cfg.channels_last:
        net.to(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True    # as the trainer sets it
    mode = compile_mode_for(cfg, device)         # as the trainer resolves it
    if mode is not None:
        net.compile(mode=mode)
    graphs = uses_cuda_graphs(mode, device)
    opt = make_optimizer(list(net.parameters()), cfg, device)
    tr = bare_train(net, opt, batch_size=cfg.batch_size, steps=a.bare_steps, warmup=a.warmup, shape=shape,
                    num_classes=k, device=device, amp=cfg.amp, channels_last=cfg.channels_last, seed=run,
                    cuda_graphs=graphs)
    inf = bare_infer(net, batch_size=cfg.infer_batch_size, batches=max(a.bare_steps // 4, 2), warmup=2,
                     shape=shape, num_classes=k, device=device, amp=cfg.amp, channels_last=cfg.channels_last,
                     seed=run + 1000)
    by_batch = {}
    for bs in a.infer_batches:   # the same network and data; which inference batch suits this device
        by_batch[str(bs)] = inf.ips if bs == cfg.infer_batch_size else bare_infer(
            net, batch_size=bs, batches=max(a.bare_steps * cfg.infer_batch_size // (4 * bs), 2), warmup=2,
            shape=shape, num_classes=k, device=device, amp=cfg.amp, channels_last=cfg.channels_last,
            seed=run + 1000).ips
    return {"train_ips": tr.ips, "infer_ips": inf.ips, "infer_ips_by_batch": by_batch,
            "train_steps": tr.steps, "train_images": tr.images,
            "batch_size": cfg.batch_size, "infer_batch_size": cfg.infer_batch_size,
            "backbone": spec.backbone, "amp": cfg.amp and device.type == "cuda",
            "channels_last": cfg.channels_last, "compile": mode, "cuda_graphs": graphs}


# ---------------------------------------------------------------------------------------------
# summary
def floor_seconds(passes: Passes, warm: bool, labeled: float, n: int, n_test: int, bare: dict) -> float:
    """Seconds an epoch must take at the bare rates: its training passes at the bare training rate,
    its no-grad forwards and test evaluation at the bare inference rate."""
    t, i, e = passes.at(warm, labeled)
    return t * n / bare["train_ips"] + (i * n + e * n_test) / bare["infer_ips"]


def summarise(runs: list[dict]) -> list[dict]:
    """One row per method: medians over runs of within-run numbers and ratios."""
    names = [m["method"] for m in runs[0]["methods"]]
    rows = []
    for name in names:
        per_run = []
        for run in runs:
            bare = run["bare"]
            m = next(r for r in run["methods"] if r["method"] == name)
            ce = next((r for r in run["methods"] if r["method"] == "ce"), None)
            steady = m["epochs"][1:] or m["epochs"]
            windows = [e for e in steady if e["timed_steps"] > 0]
            step_ips = (sum(e["timed_samples"] for e in windows) / sum(e["timed_s"] for e in windows)
                        if windows else float("nan"))
            passes = METHODS.get(name).pass_counts()
            ep_s = statistics.median(e["seconds"] for e in steady)
            r = {"step_ips": step_ips, "step_x_bare": bare["train_ips"] / step_ips, "epoch_s": ep_s,
                 "epoch_ips": m["num_train"] / ep_s, "timed_steps": sum(e["timed_steps"] for e in windows),
                 "epochs_timed": len(steady), "host_syncs": None}
            syncs = [e["host_syncs"] for e in windows if e.get("host_syncs") is not None]
            if syncs:
                r["host_syncs"] = sum(syncs) / max(r["timed_steps"], 1)
            fl = statistics.median(floor_seconds(passes, e["warmup_epoch"], e["labeled"], m["num_train"],
                                                 m["num_test"], bare) for e in steady)
            r.update(floor_s=fl, x_floor=ep_s / fl)
            if ce is not None:
                ce_steady = ce["epochs"][1:] or ce["epochs"]
                ce_s = statistics.median(e["seconds"] for e in ce_steady)
                ce_fl = floor_seconds(METHODS.get("ce").pass_counts(), False, 1.0, ce["num_train"], ce["num_test"],
                                      bare)
                r.update(vs_ce=ep_s / ce_s, floor_vs_ce=fl / ce_fl)
                r["cost_x_pass_floor"] = r["vs_ce"] / r["floor_vs_ce"]
            per_run.append(r)
        row = {"method": name, "runs": len(per_run), "protocol_epochs": next(
            r["protocol_epochs"] for r in runs[0]["methods"] if r["method"] == name)}
        for k in per_run[0]:
            vals = [r[k] for r in per_run if r.get(k) is not None]
            row[k] = statistics.median(vals) if vals else None
        rows.append(row)
    return rows


def machine(device: torch.device) -> dict:
    cpu = platform.processor() or "cpu"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "torch": torch.__version__, "threads": torch.get_num_threads(), "python": platform.python_version()}


def _f(v, fmt: str) -> str:
    return "-" if v is None or v != v else format(v, fmt)


def table(result: dict) -> str:
    mc, cfg, rows = result["machine"], result["config"], result["rows"]
    bare = result["bare"]
    la = result["load"]
    lines = [
        "# nlbench training benchmark",
        f"machine: {mc['platform']}; CPU {mc['cpu']} ({mc['cpu_count']} cores)"
        + (f"; GPU {mc['gpu']}" if mc["gpu"] else "")
        + f"; torch {mc['torch']}; threads {mc['threads']}",
        f"load average (1/5/15 min): {' '.join(f'{x:.2f}' for x in la['start'])} at start, "
        f"{' '.join(f'{x:.2f}' for x in la['end'])} at end; runs sharing the device: {cfg['shared']}",
        f"run: dataset={cfg['dataset']} scale={cfg['scale']} noise={cfg['noise']} backbone={bare['backbone']} "
        f"batch={bare['batch_size']} infer_batch={bare['infer_batch_size']} device={cfg['device']} "
        f"bf16={'on' if bare['amp'] else 'off'} channels_last={'on' if bare['channels_last'] else 'off'} "
        f"compile={bare['compile'] or 'off'}{' (CUDA graphs)' if bare.get('cuda_graphs') else ''} epochs={cfg['epochs']} (first not timed) "
        f"warm-up steps={cfg['warmup']} runs={cfg['runs']}"
        + (f" overrides: {' '.join(cfg['overrides'])}" if cfg["overrides"] else ""),
        f"bare loop (median of {cfg['runs']} runs): training {bare['train_ips_median']:,.0f} images/s "
        f"({bare['train_steps']} steps of {bare['batch_size']}), inference {bare['infer_ips_median']:,.0f} images/s",
        *([f"bare inference by batch size (median of {cfg['runs']} runs, x the configured "
           f"{bare['infer_batch_size']}): " + ", ".join(
               f"{b}: {v:,.0f} images/s ({v / bare['infer_ips_median']:.2f}x)"
               for b, v in bare["infer_ips_by_batch_median"].items())] if bare.get("infer_ips_by_batch_median") else []),
        "",
        "| method | runs | steps timed | step samples/s | x bare step | host syncs/step | epochs timed "
        "| s/epoch | samples/s (epoch) | floor s/epoch | x floor | cost vs CE | pass floor vs CE | cost / pass floor |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['runs']} | {_f(r['timed_steps'], '.0f')} | {_f(r['step_ips'], ',.0f')} "
            f"| {_f(r['step_x_bare'], '.2f')} | {_f(r['host_syncs'], '.2f')} | {_f(r['epochs_timed'], '.0f')} "
            f"| {_f(r['epoch_s'], '.3f')} | {_f(r['epoch_ips'], ',.0f')} | {_f(r.get('floor_s'), '.3f')} "
            f"| {_f(r.get('x_floor'), '.2f')} | {_f(r.get('vs_ce'), '.2f')} | {_f(r.get('floor_vs_ce'), '.2f')} "
            f"| {_f(r.get('cost_x_pass_floor'), '.2f')} |")
    lines += ["", "step samples/s: training samples per second over each epoch's steps after the warm-up steps "
              "(device synchronised at both ends); x bare step: bare-loop images/s over it. s/epoch: the trainer's "
              "epoch (steps, method passes, evaluation). floor s/epoch: the method's pass counts at the bare "
              "rates; x floor = s/epoch over it. cost vs CE / pass floor vs CE: measured and floor epoch cost "
              "relative to CE's; cost / pass floor = their ratio. Medians over runs of within-run ratios."]
    grid = result.get("grid")
    if grid:
        lines.append(f"grid estimate: {grid['runs_per_method']} runs per method x protocol epochs, methods "
                     f"{', '.join(grid['methods'])}: {grid['gpu_hours']:.1f} device-hours at these epoch times "
                     f"(one run at a time{'; ' + grid['note'] if grid.get('note') else ''})")
    return "\n".join(lines)


def grid_estimate(rows: list[dict], runs_per_method: int, train_size: int | None = None) -> dict:
    """Device-hours of ``runs_per_method`` runs of every measured method at its protocol's epochs, one
    run at a time; with ``train_size``, epochs of that many samples at the measured samples/s (the
    test evaluation then counts as if it scaled too: an overestimate when the timed set was smaller)."""
    used = [r for r in rows if r.get("epoch_s")]
    secs = sum((train_size / r["epoch_ips"] if train_size else r["epoch_s"]) * r["protocol_epochs"] * runs_per_method
               for r in used)
    return {"runs_per_method": runs_per_method, "methods": [r["method"] for r in used], "gpu_hours": secs / 3600,
            "note": f"epochs of {train_size} samples at the measured samples/s" if train_size else ""}


# ---------------------------------------------------------------------------------------------
def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="bench_train", description=__doc__.split("\n\n")[0],
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
    from .method import METHODS
    from .registry import ConfigError

    names = METHODS.names() if spec == "all" else [s.strip() for s in spec.split(",") if s.strip()]
    for n in names:
        METHODS.get(n)
    if not names:
        raise ConfigError("--methods names no method")
    return (["ce"] if "ce" in names else []) + [n for n in names if n != "ce"]


def run_benchmark(a) -> dict:
    from .runner import _device

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


def concurrent_table(res: dict) -> str:
    kids = res["children"]
    k = res["concurrent"]
    head = table(kids[0]).split("\n")[:5]
    head[0] = f"# nlbench training benchmark: {k} runs sharing the device (separate processes, started together)"
    lines = head + ["", "| method | runs | step samples/s per run (median) | step samples/s, all runs | "
                        "s/epoch per run (median) | samples/s, all runs (epochs) |", "|---|---|---|---|---|---|"]
    for i, row in enumerate(kids[0]["rows"]):
        per = [c["rows"][i] for c in kids]
        lines.append(f"| {row['method']} | {k} | {_f(statistics.median(r['step_ips'] for r in per), ',.0f')} "
                     f"| {_f(sum(r['step_ips'] for r in per), ',.0f')} "
                     f"| {_f(statistics.median(r['epoch_s'] for r in per), '.3f')} "
                     f"| {_f(sum(r['epoch_ips'] for r in per), ',.0f')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = parse(argv)
    from .registry import ConfigError

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


if __name__ == "__main__":
    sys.exit(main())
