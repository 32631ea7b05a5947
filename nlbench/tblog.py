"""Live curves where people already look: every per-epoch number of a run as TensorBoard scalars.

``logger=tensorboard`` (config) writes, under ``tb_dir/<dataset>/<noise>/<method>/seed<k>-<hash>/``
(the run's record name), one scalar per numeric key of each history row (test and validation
accuracy, loss terms, learning rate, selection precision / recall, memorised share, pool statistics,
per-network accuracies), at step = epoch, and at the end the run's config as hparams with its final
metrics. The JSON record stays the source of truth; without the option nothing is written and
TensorBoard is not imported. Needs the ``tensorboard`` package (``pip install tensorboard``).
"""
from __future__ import annotations

import math
from pathlib import Path

from .registry import ConfigError

LOGGERS = ("none", "tensorboard")

#: history keys that are not curves
SKIP = frozenset({"epoch"})


def check_logger(value) -> str:
    if value not in LOGGERS:
        raise ConfigError(f"unknown logger {value!r}; valid choices: {', '.join(LOGGERS)}")
    return value


def _hparam(v):
    """TensorBoard hparams take bool, int, float and str: anything else is shown as its text."""
    if isinstance(v, (bool, int, float, str)):
        return v
    return "null" if v is None else str(v)


class TensorBoardSink:
    """Writes a run's history rows and final metrics to one TensorBoard event folder."""

    def __init__(self, log_dir: Path, hparams: dict) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:   # torch's writer needs the tensorboard package
            raise ConfigError("logger=tensorboard needs the tensorboard package: pip install tensorboard "
                              "(or logger=none)") from None
        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(log_dir=str(self.log_dir))
        self.hparams = {k: _hparam(v) for k, v in hparams.items()}

    def epoch(self, row: dict) -> None:
        step = int(row["epoch"])
        for k, v in row.items():
            if k in SKIP or isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                continue
            self.writer.add_scalar(k, float(v), step)
        self.writer.flush()

    def close(self, final: dict | None) -> None:
        """Write the hparams with the final metrics (``None``: an interrupted run, which resumes into
        the same folder: only close the file)."""
        if final is None:
            self.writer.close()
            return
        metrics = {f"final/{k}": float(v) for k, v in final.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
        self.writer.add_hparams(self.hparams, metrics, run_name=".")
        self.writer.close()
