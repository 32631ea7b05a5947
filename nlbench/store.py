"""Run records: one JSON per run, written atomically; all records -> one pandas DataFrame.

Path: ``<results_dir>/<dataset>/<noise>/<method>/seed<k>-<confighash>.json``. A record is written
with a temp file + ``os.replace`` so a crash never leaves a half-written record; a record whose
status is final (``completed`` or ``diverged``) makes the run skipped unless forced; a ``failed``
record (a crash while training, with its message) is not final, so a rerun retries it.

Records are strict JSON: a non-finite float (a diverged loss) is written as ``null``, never as a bare
``NaN``. The summary comes first in the file (status, method, dataset, scale, seed, final metrics,
noise), the bulky parts last (effective and resolved config, per-epoch history).
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import warnings
from pathlib import Path

from .safeio import fsync_dir

SCHEMA_VERSION = 1
FINAL_STATUSES = ("completed", "diverged")
#: the order of a record's top-level keys: the summary a reader looks for first, the bulk last
HEAD_KEYS = ("schema_version", "status", "message", "method", "dataset", "scale", "seed", "noise_seed",
             "final", "noise")
TAIL_KEYS = ("effective", "config", "history")


def record_path(results_dir: str | Path, *, dataset: str, noise: str, method: str, seed: int,
                config_hash: str) -> Path:
    return Path(results_dir) / dataset / noise / method / f"seed{seed}-{config_hash}.json"


def sanitize(obj):
    """``obj`` as strict JSON: non-finite floats -> None (recursively), numpy scalars -> Python
    numbers, tuples -> lists. Other types are left for ``json.dump`` to accept or reject."""
    if isinstance(obj, dict):
        return {k: sanitize(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [sanitize(v) for v in obj]
    if isinstance(obj, bool) or obj is None:
        return obj
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "shape", None) == ():
        obj = obj.item()                      # numpy / torch scalars
    if isinstance(obj, float):
        return float(obj) if math.isfinite(obj) else None
    return obj


def ordered(record: dict) -> dict:
    """``record`` with its keys in reading order: HEAD_KEYS, everything else, TAIL_KEYS."""
    head = [k for k in HEAD_KEYS if k in record]
    tail = [k for k in TAIL_KEYS if k in record]
    mid = [k for k in record if k not in head and k not in tail]
    return {k: record[k] for k in head + mid + tail}


def atomic_write_json(path: str | Path, obj) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    obj = sanitize(obj)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if hasattr(os, "fchmod"):   # mkstemp makes 0600; a record is as readable as any file the user writes
            mask = os.umask(0o022)   # os.umask can only be read by setting it: put it straight back
            os.umask(mask)
            os.fchmod(fd, 0o666 & ~mask)
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1, sort_keys=False, allow_nan=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)   # the rename is durable only once the folder is: a power loss keeps the record


def read_record(path: str | Path) -> dict | None:
    """A record as a dict (``*.json``, or gzip-compressed ``*.json.gz``); None when unreadable."""
    import gzip

    try:
        opener = gzip.open if str(path).endswith(".gz") else open
        with opener(path, "rt") as f:
            return json.load(f)
    except (OSError, EOFError, json.JSONDecodeError, UnicodeDecodeError):
        return None


#: the JSON names of Python types, for messages about a record's shape
_JSON_TYPE = {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number",
              bool: "true/false", type(None): "null"}
#: parts of a record that, when present, must have this shape (readers call ``.get`` on them)
_SHAPES = (("final", dict), ("noise", dict), ("effective", dict), ("config", dict), ("git", dict),
           ("versions", dict), ("data", dict), ("runtime", dict), ("history", list))


def record_problem(rec) -> str | None:
    """Why ``rec`` (a file's parsed JSON, None when unreadable) is not a run record that readers can use,
    or None when it is one. The one check behind every reader: ``run``/``--dry-run`` (is it finished?),
    ``runs`` and the report (which adds its own demands on a usable result). Any status passes here."""
    if rec is None:
        return "unreadable or not valid JSON"
    if not isinstance(rec, dict):
        return "not a JSON object"
    if "schema_version" not in rec:
        return "not a run record (no schema_version)"
    missing = [k for k in ("method", "dataset", "scale", "seed", "status") if rec.get(k) is None]
    if not isinstance(rec.get("noise"), dict) or not rec["noise"].get("name"):
        missing.append("noise.name")
    if missing:
        return f"missing {', '.join(missing)}"
    if not isinstance(rec["seed"], int) or isinstance(rec["seed"], bool):
        return f"seed {rec['seed']!r} is not an integer"
    if not isinstance(rec["status"], str):
        return f"status {rec['status']!r} is not a string"
    for key, kind in _SHAPES:
        v = rec.get(key)
        if v is not None and not isinstance(v, kind):
            return f"{key} is {_JSON_TYPE.get(type(v), type(v).__name__)}, not {_JSON_TYPE[kind]}"
    if any(not isinstance(h, dict) for h in rec.get("history") or []):
        return "history holds an entry that is not an object"
    return None


def read_run_record(path: str | Path) -> tuple[dict | None, str | None]:
    """``(record, None)`` for a usable run record at ``path``, else ``(None, why)`` (:func:`record_problem`)."""
    rec = read_record(path)
    problem = record_problem(rec)
    return (None, problem) if problem else (rec, None)


def finished_record(path: str | Path, *, warn=None, reuse: bool = False) -> tuple[Path, dict] | None:
    """The finished record of the run whose record belongs at ``path``, and where it is; None when there
    is none. A run's own record is ``path``. A shipped reference record (``<path>.gz``, how records ship in
    the repository's ``results/``) counts only with ``reuse`` (``reuse=true``): by default a user's run
    trains, and its own record then stands beside the reference one (readers take the plain file).

    A file there that is not a usable record (``[]``, ``7``, ``{"final": "oops"}``) does not count as
    finished: ``warn`` (when given) is told one line naming it and why; the run then replaces it."""
    for p in (Path(path), Path(f"{path}.gz")) if reuse else (Path(path),):
        if not p.exists():
            continue
        rec, problem = read_run_record(p)
        if problem:
            if warn is not None:
                warn(f"warning: {p} does not count as finished ({problem}); a run replaces it")
            continue
        if rec.get("status") in FINAL_STATUSES:
            return p, rec
    return None


def record_files(root: str | Path) -> list[Path]:
    """Run records under ``root``: ``*.json`` and gzip-compressed ``*.json.gz`` (shipped reference records);
    a record present in both forms (a user's own run beside the shipped one) is read once, from the plain
    file."""
    root = Path(root)
    plain = sorted(root.rglob("*.json"))
    have = {p.with_suffix("") for p in plain}
    gz = [p for p in sorted(root.rglob("*.json.gz")) if p.with_suffix("").with_suffix("") not in have]
    return sorted(plain + gz)


def is_finished(path: str | Path, *, reuse: bool = False) -> bool:
    return finished_record(path, reuse=reuse) is not None


def write_final(path: str | Path, record: dict) -> None:
    """Write a run's finished record atomically at ``path``. A shipped reference record of the same run
    (``<path>.gz``) is left as it is (it is part of the repository); every reader takes the plain file
    over it (:func:`record_files`)."""
    atomic_write_json(path, record)


def flatten(d: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}, "c": [1, 2]}`` -> ``{"<prefix>.a.b": 1, "<prefix>.c": (1, 2)}`` (no leading dot
    without a prefix); lists become tuples so that every column can be grouped on, an empty mapping None."""
    out = {}
    for k, v in (d or {}).items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(flatten(v, key))
        elif isinstance(v, dict):
            out[key] = None
        elif isinstance(v, list):
            out[key] = tuple(tuple(x) if isinstance(x, list) else x for x in v)
        else:
            out[key] = v
    return out


#: per-epoch diagnostics whose last-epoch value is a column of its own
LAST_EPOCH_COLUMNS = ("sel_precision", "sel_recall", "memorized", "det_auroc")


def setting_columns(effective: dict, noise_options: dict | None) -> dict:
    """A run's settings as flat columns (``method.<param>``, ``train.<key>``, ``backbone.<option>``,
    ``dataset.<option>``, ``augment.<key>``, ``noise.<option>``): the names ``runs`` filters and shows,
    for records and for the checkpoints of unfinished runs alike."""
    out = {}
    out.update(flatten(effective.get("method_params") or {}, "method"))
    out.update(flatten(effective.get("train") or {}, "train"))
    out.update(flatten(effective.get("backbone_options") or {}, "backbone"))
    out.update(flatten(effective.get("dataset_options") or {}, "dataset"))
    out.update(flatten(effective.get("augment") or {}, "augment"))
    out.update(flatten(noise_options or {}, "noise"))
    return out


def record_row(rec: dict, path: str | Path) -> dict:
    """One record as one flat table row (see :func:`load_records` for the columns)."""
    fin = rec.get("final", {}) or {}
    noise = rec.get("noise", {}) or {}
    eff = rec.get("effective", {}) or {}
    git = rec.get("git") or {}
    wall = rec.get("wall_s")
    last = (rec.get("history") or [{}])[-1] or {}
    row = {
        "method": rec.get("method"), "dataset": rec.get("dataset"), "noise": noise.get("name"),
        "noise_kind": noise.get("kind"), "nominal_rate": noise.get("nominal_rate"),
        "actual_rate": noise.get("actual_rate"), "seed": rec.get("seed"),
        "noise_seed": rec.get("noise_seed"), "scale": rec.get("scale"),
        "backbone": rec.get("backbone"), "epochs": rec.get("epochs"), "status": rec.get("status"),
        "message": rec.get("message") or None,
        "acc_last": fin.get("acc_last"), "acc_best": fin.get("acc_best"),
        "acc_last10": fin.get("acc_last10"), "top5_last": fin.get("top5_last"),
        "val_last": fin.get("last_val_top1"), "test_at_best_val": fin.get("test_at_best_val"),
        "collapsed": fin.get("collapsed"),
        # the last epoch's diagnostics, where the run recorded them (selection: the method's labelled /
        # kept set; memorized: diagnose_train; det_auroc: the method's verdict against the truth)
        **{k: last.get(k) for k in LAST_EPOCH_COLUMNS},
        "epochs_done": len(rec.get("history") or []),
        "wall_s": wall, "minutes": None if wall is None else wall / 60, "config_hash": rec.get("config_hash"),
        "git_commit": git.get("commit"), "git_dirty": git.get("dirty"), "method_module": rec.get("method_module"),
        "finished_at": rec.get("finished_at"),
        "path": str(path),
    }
    row.update(setting_columns(eff, noise.get("options")))
    if "subset_per_class" in eff:
        row["subset_per_class"] = eff["subset_per_class"]
    data = {k: v for k, v in (rec.get("data") or {}).items() if not isinstance(v, (list, dict))}
    row.update(flatten(data, "data"))
    return row


def load_records(results_dir: str | Path = "results", *, with_history: bool = False):
    """All records under ``results_dir`` as a DataFrame, one row per run, ready for ``groupby``.

    Columns: method, dataset, noise, noise_kind, nominal_rate, actual_rate, seed, noise_seed, scale,
    backbone, epochs, status, message, acc_last, acc_best, acc_last10, top5_last, val_last (the noisy
    validation split's last-epoch top-1), test_at_best_val, collapsed, the last epoch's sel_precision,
    sel_recall, memorized and det_auroc (where recorded), epochs_done, wall_s, minutes, config_hash, git_commit, git_dirty,
    method_module (the module that registered the method), finished_at, path; then every resolved setting as a
    dotted column: ``method.<param>`` (nested ones as ``method.base_params.q``), ``train.<key>``
    (``train.lr``, ``train.epochs``, ... lists as tuples), ``backbone.<option>``, ``dataset.<option>``,
    ``augment.<key>``, ``noise.<option>``, subset_per_class, and the data provenance ``data.<key>``
    (``data.num_train``, ``data.md5_ok``, ``data.subset_hash``, ``data.source``, ...). A column a
    record does not have is NaN/None in its row. ``history`` (a list of per-epoch dicts) is added when
    ``with_history``. Unreadable files are skipped with a warning, never silently.
    """
    import pandas as pd

    rows = []
    root = Path(results_dir)
    for p in record_files(root):   # .json.gz: shipped, compressed; a plain record beside one wins
        rec = read_record(p)
        if isinstance(rec, dict) and rec.get("record_kind") == "detector":   # not a method's run
            continue
        problem = record_problem(rec)
        if problem:
            warnings.warn(f"skipping {p}: {problem}")
            continue
        row = record_row(rec, p)
        if with_history:
            row["history"] = rec.get("history", [])
        rows.append(row)
    return pd.DataFrame(rows)
