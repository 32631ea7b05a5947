"""The benchmark's numbers: per method, medians over runs of within-run rates and ratios
(:func:`summarise`), and the tables that print them."""
from __future__ import annotations

import os
import platform
import statistics
from pathlib import Path

import torch

from ..method import METHODS
from .floor import floor_seconds


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
