"""The scale-calibration table (issue 21) from CE records: one row per candidate scale.

    python benchmarks/calibration_table.py <results_dir> [--eval-every K]

Reads every CE record under ``results_dir`` (the calibration runs, made with ``diagnose_train=true``),
groups them by candidate (images per class, width, epochs, augmentation, eval_every) and prints, per
candidate: the share of mislabeled training samples CE predicts as their wrong given label at the last
epoch (sym0.6, ``memorized``), the best and last test accuracy at sym0.6 and their gap, clean CE's last
accuracy, and the measured minutes per run (``wall_s``; the records of one candidate were made one
after another on the same machine). ``--eval-every K`` adds what a run that evaluates the test set only
every K epochs would cost, from the same records: training seconds of every epoch plus the evaluation
seconds of the epochs it would still evaluate (an estimate; the chosen scale is then timed for real).
"""
from __future__ import annotations

import argparse
import gzip
import json
from collections import defaultdict
from pathlib import Path


def _read(p: Path) -> dict:
    opener = gzip.open if p.suffix == ".gz" else open
    with opener(p, "rt") as f:
        return json.load(f)


def candidate(rec: dict) -> tuple:
    eff = rec["effective"]
    aug = eff.get("augment") or {}
    return (eff.get("subset_per_class"), (eff.get("backbone_options") or {}).get("width"), eff["train"]["epochs"],
            "crop+flip" if aug.get("crop_pad") and aug.get("flip") else "none", eff["train"].get("eval_every", 1))


def est_minutes(rec: dict, k: int) -> float:
    hist, n = rec["history"], len(rec["history"])
    s = 0.0
    for h in hist:
        s += h["train_seconds"]
        if h["epoch"] % k == 0 or h["epoch"] == n:
            s += h["seconds"] - h["train_seconds"]
    return s / 60


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results_dir", type=Path)
    ap.add_argument("--eval-every", type=int, default=None)
    a = ap.parse_args(argv)
    rows = defaultdict(dict)
    for p in sorted(a.results_dir.rglob("*.json*")):
        rec = _read(p)
        if rec.get("method") != "ce" or rec.get("status") != "completed":
            continue
        rows[candidate(rec)][rec["noise"]["name"]] = rec
    head = ["images/class", "width", "epochs", "augment", "eval_every", "sym0.6 memorised (last)",
            "sym0.6 best / last (best epoch)", "best - last", "clean last", "minutes sym0.6 / clean"]
    if a.eval_every:
        head.append(f"est. minutes at eval_every={a.eval_every}")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for cand, by_noise in sorted(rows.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        s6, cl = by_noise.get("sym0.6"), by_noise.get("clean")
        cells = [str(c) for c in cand]
        if s6:
            f = s6["final"]
            mem = s6["history"][-1].get("memorized")
            cells += [f"{100 * mem:.1f}%" if mem is not None else "-",
                      f"{f['acc_best']:.2f} / {f['acc_last']:.2f} ({f['best_epoch']})",
                      f"{f['acc_best'] - f['acc_last']:.2f}"]
        else:
            cells += ["-", "-", "-"]
        cells.append(f"{cl['final']['acc_last']:.2f}" if cl else "-")
        cells.append(" / ".join(f"{r['wall_s'] / 60:.1f}" if r else "-" for r in (s6, cl)))
        if a.eval_every:
            cells.append(" / ".join(f"{est_minutes(r, a.eval_every):.1f}" if r else "-" for r in (s6, cl)))
        print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
