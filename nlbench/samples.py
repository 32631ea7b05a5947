"""Per-sample tables: which samples a run thinks are mislabeled, one row per training sample.

``save_samples=true`` (config) makes a run save, at its end and at the epochs in ``sample_epochs``, a
table with one row per training sample (N rows):

    index          position in the training set the run trained on (after subset / validation split)
    dataset_index  index of the sample in the dataset's official training set (-1 when unknown)
    given          the noisy label the method trained with
    true           the clean label (-1 when unknown: real noise)
    is_noisy       given != true (-1 when unknown)
    clean_prob     the method's verdict: its probability that ``given`` is correct (Method.verdict;
                   NaN when the method has none, e.g. plain CE)
    verdict_label  the method's own label for the sample (GSS pool argmax, ELR target argmax; -1 if none)
    verdict_prob   that label's probability (NaN if none)
    loss           CE of the method's test-time prediction on the un-augmented image w.r.t. ``given``
    pred           argmax of that prediction, ``pred_prob`` its probability

The tables go to ``<record>.samples.npz`` beside the run's JSON record (written before the record, both
atomically), one set of columns per saved epoch (``e<epoch>/<column>``). ``python -m nlbench export
<record>`` writes them as CSV (or parquet where pyarrow is installed). Only this module and the trainer
read the true labels; the method only supplies its verdict.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch

from .safeio import write_durably

COLUMNS = ("index", "dataset_index", "given", "true", "is_noisy", "clean_prob", "verdict_label", "verdict_prob",
           "loss", "pred", "pred_prob")


@torch.no_grad()
def sample_table(method, stream, clean: torch.Tensor | None, dataset_index: np.ndarray | None) -> dict[str, np.ndarray]:
    """The table (a column per name of :data:`COLUMNS`, each (N,)) of ``method`` at this moment."""
    n = stream.num_train
    given = method.noisy_labels.cpu()
    probs = method.combine([stream.infer(net) for net in method.nets]).float().cpu()
    pred_prob, pred = probs.max(1)
    loss = -probs.gather(1, given[:, None].long()).squeeze(1).clamp_min(1e-12).log()
    v = method.verdict()
    nan = np.full(n, np.nan, dtype=np.float32)
    true = np.full(n, -1, dtype=np.int64) if clean is None else clean.cpu().numpy().astype(np.int64)
    return {
        "index": np.arange(n, dtype=np.int64),
        "dataset_index": (np.full(n, -1, dtype=np.int64) if dataset_index is None
                          else np.asarray(dataset_index, dtype=np.int64)),
        "given": given.numpy().astype(np.int64),
        "true": true,
        "is_noisy": np.where(true < 0, -1, (given.numpy() != true).astype(np.int64)),
        "clean_prob": nan if v is None else v.clean_prob.float().cpu().numpy(),
        "verdict_label": (np.full(n, -1, dtype=np.int64) if v is None or v.label is None
                          else v.label.cpu().numpy().astype(np.int64)),
        "verdict_prob": nan if v is None or v.label_prob is None else v.label_prob.float().cpu().numpy(),
        "loss": loss.numpy().astype(np.float32),
        "pred": pred.numpy().astype(np.int64),
        "pred_prob": pred_prob.numpy().astype(np.float32),
    }


def record_stem(record_path: Path) -> Path:
    """The record's path without ``.json`` / ``.json.gz``: ``seed0-abc.json.gz`` -> ``seed0-abc``."""
    p = Path(record_path)
    for suffix in (".json.gz", ".json"):
        if p.name.endswith(suffix):
            return p.with_name(p.name[: -len(suffix)])
    return p


def samples_path(record_path: Path) -> Path:
    """``<record>.samples.npz`` beside a record, whether the record is ``.json`` or compressed ``.json.gz``."""
    return record_stem(record_path).with_name(record_stem(record_path).name + ".samples.npz")


def write_samples(path: Path, tables: dict[int, dict[str, np.ndarray]]) -> None:
    """Write the tables {epoch: table} atomically (temp file + rename) as one compressed npz."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez_compressed(buf, **{f"e{ep}/{k}": v for ep, t in sorted(tables.items()) for k, v in t.items()})
    write_durably(path, (buf.getbuffer(),))


def read_samples(path: Path) -> dict[int, dict[str, np.ndarray]]:
    """{epoch: {column: (N,) array}} from a ``.samples.npz`` file."""
    out: dict[int, dict[str, np.ndarray]] = {}
    with np.load(path) as z:
        for key in z.files:
            ep, _, col = key.partition("/")
            out.setdefault(int(ep[1:]), {})[col] = z[key]
    return out


def as_frame(tables: dict[int, dict[str, np.ndarray]], epoch: int | None = None):
    """One pandas DataFrame: the rows of every saved epoch (column ``epoch`` first), or of ``epoch``."""
    import pandas as pd

    eps = sorted(tables) if epoch is None else [epoch]
    frames = [pd.DataFrame({"epoch": ep, **{c: tables[ep][c] for c in COLUMNS if c in tables[ep]}}) for ep in eps]
    return pd.concat(frames, ignore_index=True)


FORMATS = ("csv", "parquet")


def export(record: Path, *, out: Path | None = None, fmt: str | None = None, epoch: int | None = None) -> Path:
    """Write the per-sample tables of the run whose record is ``record`` (its ``.samples.npz``) as CSV or
    parquet (``fmt``; default parquet when pyarrow is installed, else CSV) to ``out`` (default: beside
    the record, ``<record>.samples.<ext>``). ``epoch``: only that saved epoch. Returns the path written."""
    from .registry import ConfigError

    record = Path(record)
    if not record.is_file():
        gz = Path(f"{record}.gz")
        hint = f"; a compressed one is there: {gz}" if gz.is_file() else ""
        raise ConfigError(f"no run record at {str(record)!r}{hint}")
    src = samples_path(record)
    if not src.is_file():
        raise ConfigError(f"the run {record.name} saved no per-sample table ({src.name} not found); "
                          "rerun it with save_samples=true force=true")
    tables = read_samples(src)
    if epoch is not None and epoch not in tables:
        raise ConfigError(f"epoch {epoch} was not saved; saved epochs: {', '.join(map(str, sorted(tables)))}")
    if fmt is None:
        try:
            import pyarrow  # noqa: F401
            fmt = "parquet"
        except ImportError:
            fmt = "csv"
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; valid choices: {', '.join(FORMATS)}")
    df = as_frame(tables, epoch)
    out = Path(out) if out is not None else record_stem(record).with_name(f"{record_stem(record).name}.samples.{fmt}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    if fmt == "csv":
        df.to_csv(tmp, index=False)
    else:
        try:
            df.to_parquet(tmp, index=False)
        except ImportError:
            raise ConfigError("parquet needs pyarrow: pip install pyarrow (or --format csv)") from None
    os.replace(tmp, out)
    return out
