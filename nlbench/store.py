"""Run records: one JSON per run, written atomically; all records -> one pandas DataFrame.

Path: ``<results_dir>/<dataset>/<noise>/<method>/seed<k>-<confighash>.json``. A record is written
with a temp file + ``os.replace`` so a crash never leaves a half-written record; a record whose
status is final (``completed`` or ``diverged``) makes the run skipped unless forced.
"""
from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path

SCHEMA_VERSION = 1
FINAL_STATUSES = ("completed", "diverged")


def record_path(results_dir: str | Path, *, dataset: str, noise: str, method: str, seed: int,
                config_hash: str) -> Path:
    return Path(results_dir) / dataset / noise / method / f"seed{seed}-{config_hash}.json"


def atomic_write_json(path: str | Path, obj) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1, sort_keys=False, allow_nan=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_record(path: str | Path) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None


def is_finished(path: str | Path) -> bool:
    rec = read_record(path)
    return rec is not None and rec.get("status") in FINAL_STATUSES


def load_records(results_dir: str | Path = "results", *, with_history: bool = False):
    """All records under ``results_dir`` as a DataFrame, one row per run.

    Columns: method, dataset, noise, noise_kind, nominal_rate, actual_rate, seed, noise_seed, scale,
    backbone, epochs, status, acc_last, acc_best, acc_last10, top5_last, wall_s, config_hash, git_commit,
    path (and ``history``, a list of per-epoch dicts, when ``with_history``). Unreadable files are
    skipped with a warning, never silently.
    """
    import pandas as pd

    rows = []
    for p in sorted(Path(results_dir).rglob("*.json")):
        rec = read_record(p)
        if rec is None or "schema_version" not in rec:
            warnings.warn(f"skipping unreadable or foreign record {p}")
            continue
        fin = rec.get("final", {}) or {}
        noise = rec.get("noise", {}) or {}
        row = {
            "method": rec.get("method"), "dataset": rec.get("dataset"), "noise": noise.get("name"),
            "noise_kind": noise.get("kind"), "nominal_rate": noise.get("nominal_rate"),
            "actual_rate": noise.get("actual_rate"), "seed": rec.get("seed"),
            "noise_seed": rec.get("noise_seed"), "scale": rec.get("scale"),
            "backbone": rec.get("backbone"), "epochs": rec.get("epochs"), "status": rec.get("status"),
            "acc_last": fin.get("acc_last"), "acc_best": fin.get("acc_best"),
            "acc_last10": fin.get("acc_last10"), "top5_last": fin.get("top5_last"),
            "wall_s": rec.get("wall_s"), "config_hash": rec.get("config_hash"),
            "git_commit": (rec.get("git") or {}).get("commit"), "path": str(p),
        }
        if with_history:
            row["history"] = rec.get("history", [])
        rows.append(row)
    return pd.DataFrame(rows)
