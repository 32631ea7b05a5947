"""Synthetic run records in the real record format, for the report tests.

The config part of a record (``effective``, ``config_hash``, the path) comes from the real
``build_spec(compose(...))``, so a fixture record matches an experiment exactly as a trained one does;
``final`` comes from the real ``runner.final_metrics`` over a synthetic per-epoch history.
"""
from __future__ import annotations

import json
from pathlib import Path

from nlbench import store
from nlbench.config import compose
from nlbench.runner import final_metrics
from nlbench.spec import build_spec, resolve_auto_rates
from nlbench.trainer import train_config_dict

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _history(epochs: int, acc_last: float, acc_best: float | None, splits: dict[str, float],
             diag: set[str]) -> list[dict]:
    """A rising curve ending at ``acc_last`` (the best, ``acc_best``, at the middle epoch when given)."""
    rows = []
    for e in range(1, epochs + 1):
        frac = e / epochs
        row = {"epoch": e, "lr": 0.01, "steps": 10, "loss": 2.0 - frac}
        for key, last in splits.items():
            row[key] = round(last * (0.6 + 0.4 * frac), 4)
        if acc_best is not None and e == max(1, epochs // 2):
            row[next(iter(splits))] = acc_best
        if e == epochs:
            row[next(iter(splits))] = acc_last
        if "memorized" in diag:
            row.update(conf_clean=0.5 + 0.4 * frac, conf_noisy=0.1 + 0.5 * frac, memorized=round(0.6 * frac, 4))
        if "selection" in diag:
            row.update(sel_frac=0.6, sel_precision=round(0.8 + 0.1 * frac, 4), sel_recall=round(0.9 - 0.1 * frac, 4))
        if "beliefs" in diag:
            row.update(belief_true_clean=1.0, belief_true_noisy=round(0.5 * frac, 4),
                       belief_ptrue_clean=round(0.9 - 0.1 * frac, 4), belief_ptrue_noisy=round(0.4 * frac, 4),
                       belief_entropy_clean=round(0.3 + 0.5 * frac, 4), belief_entropy_noisy=round(1.0 + 0.5 * frac, 4))
        row.update(train_seconds=1.0, seconds=1.2)
        rows.append(row)
    return rows


def write_record(results: Path, *, method: str, dataset: str, noise: str, seed: int, acc_last: float,
                 scale: str = "cpu", acc_best: float | None = None, status: str = "completed",
                 params: dict | None = None, md5_ok: bool | None = False, commit: str = COMMIT,
                 dirty: bool = False, diag: set[str] = frozenset(), device: str = "x86_64",
                 noise_seed: int = 0, subdir: str | None = None, extra: tuple[str, ...] = (),
                 val_last: float | None = None, num_val: int = 350) -> Path:
    overrides = [f"method={method}", f"dataset={dataset}", f"noise={noise}", f"seed={seed}", f"scale={scale}",
                 f"noise_seed={noise_seed}", f"results_dir={results}", "checkpoint_dir=/nonexistent", "device=cpu",
                 *extra]
    overrides += [f"method.params.{k}={v}" for k, v in (params or {}).items()]
    spec = build_spec(compose(overrides))
    if dataset == "clothing1m":
        splits, primary = {"test_top1": acc_last, "test_top5": 95.0, "val_top1": acc_last + 1}, "test_top1"
    elif dataset == "webvision":
        splits = {"webvision_top1": acc_last, "webvision_top5": acc_last + 15, "imagenet_top1": acc_last - 2,
                  "imagenet_top5": acc_last + 12}
        primary = "webvision_top1"
    else:
        splits, primary = {"test_top1": acc_last, "test_top5": 99.0}, "test_top1"
    if val_last is not None:   # a noisy validation split (val_fraction), ending at val_last
        splits["val_top1"] = val_last
    history = _history(spec.train.epochs, acc_last, acc_best, splits, set(diag))
    if status == "diverged":  # the trainer's last row of a diverged run: a NaN loss, no evaluation
        history = history[:2] + [{"epoch": 3, "lr": 0.01, "steps": 10, "loss": float("nan"), "seconds": 1.0}]
    data = {"num_train": 5000, "classes": [str(i) for i in range(10)]}
    if dataset in ("cifar10", "cifar100"):
        data.update(root="/data/cifar", md5_ok=md5_ok)
    elif dataset == "digits":
        data.update(source="sklearn.datasets.load_digits")
    else:
        data.update(root=f"/data/{dataset}")
    record = {
        "schema_version": store.SCHEMA_VERSION, "status": status,
        "message": "non-finite loss at epoch 3" if status == "diverged" else "",
        "method": spec.method, "dataset": spec.dataset, "scale": spec.scale, "seed": spec.seed,
        "noise_seed": spec.noise_seed, "backbone": spec.backbone, "epochs": spec.train.epochs,
        "config_hash": spec.config_hash,
        "noise": {"name": spec.noise["name"], "kind": spec.noise["kind"], "nominal_rate": spec.noise["rate"],
                  "actual_rate": round(spec.noise["rate"] * 0.9, 4), "transition": None,
                  "label_hash": "0" * 16, "n_noisy": 0, "options": spec.noise["options"]},
        "data": data,
        "effective": {**spec.semantic(), "train": train_config_dict(spec.train),   # auto rates resolved as run does
                      "method_params": resolve_auto_rates(spec.method_params, spec.noise, dataset=spec.dataset,
                                                          num_classes=len(data["classes"]))},
        "config": {"method": {"name": method}}, "git": {"commit": commit, "dirty": dirty},
        "versions": {"python": "3.12", "torch": "2.x", "device": device},
        "history": history, "final": final_metrics(history, primary),
        **({"val_split": {"num_val": num_val, "fraction": 0.1}} if val_last is not None else {}),
        "wall_s": 10.0, "finished_at": "2025-01-01T00:00:00+0000", "elapsed_this_call_s": 10.0,
    }
    path = spec.record_path
    if subdir:
        path = results / subdir / path.relative_to(results)
    store.atomic_write_json(path, json.loads(json.dumps(record)))
    return path


def golden_results(results: Path) -> None:
    """The fixture behind the golden files: some of every table and figure, plus runs they do not use."""
    def w(**kw):
        write_record(results, **kw)

    for s, a in enumerate([80.1, 80.5, 79.9, 80.3, 80.7]):          # a complete cell
        w(method="gce", dataset="cifar10", noise="sym0.2", seed=s, acc_last=a, acc_best=a + 2, diag={"memorized"})
    for s, a in enumerate([81.0, 81.4]):                             # fewer seeds than asked; best of its column
        w(method="sl", dataset="cifar10", noise="sym0.2", seed=s, acc_last=a, diag={"selection"})
    w(method="ce", dataset="cifar10", noise="sym0.4", seed=0, acc_last=60.0, acc_best=70.0, diag={"memorized"})
    w(method="ce", dataset="cifar10", noise="sym0.4", seed=1, acc_last=62.0, acc_best=71.0, diag={"memorized"})
    w(method="ce", dataset="cifar10", noise="sym0.4", seed=2, acc_last=0.0, status="diverged")
    for s, a in enumerate([66.0, 67.0, 65.0, 66.5, 67.5]):           # Table 3, Figures 1, 3 (center), 4
        w(method="gss_sb", dataset="cifar10", noise="sym0.4", seed=s, acc_last=a, diag={"beliefs", "memorized"})
    for s, a in enumerate([55.0, 57.0]):
        w(method="gss_sb", dataset="cifar10", noise="sym0.6", seed=s, acc_last=a, diag={"beliefs"})
    for s, a in enumerate([70.0, 71.0]):                             # Figure 1's upper bound
        w(method="ce", dataset="cifar10", noise="clean", seed=s, acc_last=a)
    for s, a in enumerate([40.0, 42.0]):                             # Figure 3's ablations
        w(method="gss_sb", dataset="cifar10", noise="sym0.4", seed=s, acc_last=a, params={"lambda1": 0.0})
        w(method="gss_sb", dataset="cifar10", noise="sym0.4", seed=s, acc_last=a + 10, params={"lambda2": 0.0})
    w(method="gce", dataset="cifar100", noise="asym0.4", seed=0, acc_last=45.25, md5_ok=True)
    w(method="gce", dataset="clothing1m", noise="real", seed=0, acc_last=68.5)
    w(method="sl", dataset="webvision", noise="real", seed=0, acc_last=55.0)
    # outside every paper table: another seed, another noise seed, another dataset, an ablation
    w(method="ce", dataset="cifar10", noise="sym0.4", seed=7, acc_last=61.0)
    w(method="gce", dataset="cifar10", noise="sym0.2", seed=0, noise_seed=3, acc_last=79.0)
    for s, a in enumerate([62.25, 63.75]):
        w(method="ce", dataset="digits", noise="sym0.6", seed=s, scale="paper", acc_last=a, acc_best=a + 20)
    w(method="gss_sb", dataset="digits", noise="sym0.6", seed=0, scale="paper", acc_last=90.5,
      params={"lambda1": 1.0})
