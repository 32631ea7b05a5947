"""``python -m nlbench runs [key=value ...] [--columns a,b,c] [--by a,b] [--csv]``: the records as a
table (``runs --by``: counted per group; ``runs --unfinished``: the runs in progress).

Reads every record under ``results_dir`` (``results_dir=PATH``, else ``$NLBENCH_RESULTS_DIR``, else
``results``) through :func:`nlbench.store.load_records` and prints one row per run.

- ``key=value`` keeps the rows whose column ``key`` equals ``value`` (numbers compare as numbers,
  ``a,b`` means either): ``method=gss_sb train.lr=0.02 status=failed``.
- The default view fits 100 columns: method, setting (dataset noise scale), seed (``n:s`` for noise
  draw n, seed s when a noise draw other than 0 is among the rows), status, acc_last (the headline) and
  minutes.
- ``--settings`` adds every setting column that takes two or more values among the rows shown (so a
  sweep shows the values it swept); ``--columns a,b,c`` chooses the columns (``--columns all``: every
  column, over 200).
- ``--by a,b`` prints one row per group of those columns instead of one per run: ``runs`` (records),
  ``completed``, ``diverged``, ``failed``, ``collapsed``, the mean last-epoch accuracy of the completed
  runs and the wall time they took (``minutes``, ``hours``: as recorded, so runs that shared a machine
  count their own wall time); a total line follows. ``runs --by dataset,method`` counts a grid.
- ``--csv`` prints CSV instead of an aligned table.
- ``--unfinished`` lists the runs that started and have not finished, from their checkpoints under
  ``checkpoint_dir`` (``checkpoint_dir=PATH``, else ``$NLBENCH_CHECKPOINT_DIR``, else ``checkpoints``):
  ``running (pid N on host)`` while a process holds the run, ``resumable`` when none does (killed or
  stopped: the same command resumes it), with the epochs done of the run's total, the last evaluated
  test / validation top-1, training minutes, the minutes left at the pace so far (``eta_min``),
  minutes since the last checkpoint, and the settings that differ between the listed runs (named as
  ``runs`` names them, e.g. ``method.unlabeled_target``).

An unknown column (in a filter or in ``--columns``) is an error that lists the valid columns.
"""
from __future__ import annotations

import math
import os
import sys
from pathlib import Path

from .registry import ConfigError

SUMMARY = ["method", "dataset", "noise", "scale", "seed", "status", "acc_last", "acc_best", "minutes"]
#: the default view: narrow enough for a 100-column terminal
NARROW = ["method", "setting", "seed", "status", "acc_last", "minutes"]
#: prefixes of the setting columns that are shown by default when they vary between rows
SETTING_PREFIXES = ("method.", "train.", "backbone.", "dataset.", "augment.", "noise.")


def _matches(cell, wanted: str) -> bool:
    if cell is None or (isinstance(cell, float) and math.isnan(cell)):
        return wanted.lower() in ("none", "null", "nan", "")
    if isinstance(cell, bool):
        return wanted.lower() == str(cell).lower()
    if isinstance(cell, (int, float)):
        try:
            return float(wanted) == float(cell)
        except ValueError:
            return False
    if isinstance(cell, tuple):
        return wanted.strip("[]()").replace(" ", "") == ",".join(str(x) for x in cell)
    return str(cell) == wanted


def filter_rows(df, filters: dict[str, str]):
    """Rows of ``df`` whose column ``k`` matches ``v`` for every filter (``v`` may be ``a,b``: either)."""
    for key, val in filters.items():
        if key not in df.columns:
            raise unknown_columns([key], df.columns)
        wanted = val.split(",") if not val.startswith(("[", "(")) else [val]
        df = df[[any(_matches(c, w) for w in wanted) for c in df[key]]]
    return df


def varying_settings(df) -> list[str]:
    """The setting columns that take two or more values among the rows that have them (a setting of one
    method only, e.g. ``method.q``, counts when those rows differ in it, not merely because the other
    rows lack it)."""
    return [c for c in df.columns if c.startswith(SETTING_PREFIXES) and df[c].dropna().astype(str).nunique() > 1]


def default_columns(df) -> list[str]:
    """The summary columns and every setting that varies between the rows (:func:`varying_settings`)."""
    cols = [c for c in SUMMARY if c in df.columns] + varying_settings(df)
    if "message" in df.columns and df["message"].notna().any():
        cols.append("message")
    return cols


def narrow_view(df):
    """``df`` with the :data:`NARROW` columns: ``setting`` joins dataset, noise and scale; ``seed`` shows the
    noise draw too (``1:0``) when any row has a draw other than 0."""
    df = df.copy()
    df["setting"] = [" ".join(str(x) for x in t if x is not None and x == x)
                     for t in zip(df.get("dataset", ""), df.get("noise", ""), df.get("scale", ""))]
    if "noise_seed" in df.columns and (df["noise_seed"].fillna(0) != 0).any():
        df["seed"] = [f"{int(n) if n == n else 0}:{s}" for n, s in zip(df["noise_seed"], df["seed"])]
    return df


def unknown_columns(bad: list[str], valid, what: str = "") -> ConfigError:
    """One short error for unknown column names: the closest valid names, and where the full list is."""
    import difflib

    close = list(dict.fromkeys(m for b in bad for m in difflib.get_close_matches(b, list(valid), n=3, cutoff=0.6)))
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return ConfigError(f"unknown column(s) {', '.join(map(repr, bad))}{what}{hint} ({len(valid)} columns: "
                       "`python -m nlbench runs --columns all --csv | head -1` lists them, `runs --help` says more)")


#: columns printed with a fixed number of decimals instead of 4 significant digits (0.08 minutes, not 0.08328)
DECIMALS = {"minutes": 2, "hours": 2, "acc_last": 2}


def group_counts(df, by: list[str]):
    """One row per group of ``by``: record counts by status, collapsed runs, the completed runs' mean
    last-epoch accuracy and their summed wall minutes / hours."""
    import pandas as pd

    bad = [c for c in by if c not in df.columns]
    if bad:
        raise unknown_columns(bad, df.columns, " for --by")
    rows = []
    for key, g in df.groupby(by, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        done = g[g.status == "completed"]
        minutes = float(g["minutes"].fillna(0).sum()) if "minutes" in g else 0.0
        rows.append({**dict(zip(by, key)), "runs": len(g), "completed": len(done),
                     "diverged": int((g.status == "diverged").sum()), "failed": int((g.status == "failed").sum()),
                     "collapsed": int(done["collapsed"].fillna(False).astype(bool).sum()) if "collapsed" in g else 0,
                     "acc_last": float(done["acc_last"].mean()) if len(done) else None,
                     "minutes": minutes, "hours": minutes / 60})
    return pd.DataFrame(rows)


def _emit(df, columns: list[str], as_csv: bool) -> None:
    print(df[columns].to_csv(index=False) if as_csv else format_table(df, columns) + "\n", end="")


def _fmt(v, decimals: int | None = None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        if decimals is not None:
            return f"{v:.{decimals}f}"
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v)


def format_table(df, columns: list[str]) -> str:
    cells = [[_fmt(v, DECIMALS.get(c)) for v, c in zip(row, columns)] for row in df[columns].itertuples(index=False)]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def unfinished_runs(checkpoint_dir: str | Path) -> list[dict]:
    """The runs with a checkpoint under ``checkpoint_dir``: started and not finished (a finished run
    removes its checkpoint). Each: its cell (``<dataset>/<noise>/<method>/seed<k>-<hash>``), ``running``
    (the lock's holder) or ``resumable`` (nobody holds it: killed or stopped; the same command resumes it),
    the epochs done (of the total), the last evaluated test / validation top-1, training minutes, the
    minutes left at the pace so far, minutes since the last checkpoint, and the run's settings as ``runs``
    names them (checkpoints written before they were kept have neither the total nor the settings)."""
    import time

    from .runlock import holder
    from .trainer import load_checkpoint

    rows = []
    root = Path(checkpoint_dir)
    for p in sorted(root.rglob("*.pt")) if root.is_dir() else []:
        try:
            ck = load_checkpoint(p, "cpu")
        except Exception as e:   # being replaced this instant, a foreign file, or damaged (checksum mismatch)
            rows.append({"cell": p.relative_to(root).with_suffix("").as_posix(), "state": f"unreadable ({type(e).__name__})"})
            continue
        hist = ck.get("history") or []
        last = {k: v for h in hist for k, v in h.items() if k in ("test_top1", "val_top1") and v is not None}
        who = holder(p.with_suffix(".lock"))
        done, total, minutes = ck.get("epoch_done"), ck.get("epochs"), (ck.get("wall_s") or 0.0) / 60
        # at the mean pace of the epochs so far (a DivideMix-family run's warm-up epochs are cheaper, so
        # its estimate runs low); checkpoints written before the total was saved have none
        eta = (round(minutes / done * (total - done), 1) if isinstance(total, int) and isinstance(done, int)
               and done > 0 else None)
        rows.append({"cell": p.relative_to(root).with_suffix("").as_posix(),
                     "state": f"running ({who})" if who else "resumable",
                     "epoch": done if total is None else f"{done}/{total}",
                     "test_top1": last.get("test_top1"), "val_top1": last.get("val_top1"),
                     "minutes": round(minutes, 1), "eta_min": eta,
                     "idle_min": round((time.time() - p.stat().st_mtime) / 60, 1),
                     **((ck.get("meta") or {}).get("settings") or {})})
    return rows


def cmd_runs(args: list[str]) -> int:
    import warnings

    from .store import load_records

    if any(a in ("-h", "--help") for a in args):
        print(__doc__.replace("``", "`"))   # plain text on a terminal, not reStructuredText
        return 0
    if "--unfinished" in args:
        rest = [a for a in args if a != "--unfinished"]
        ck = os.environ.get("NLBENCH_CHECKPOINT_DIR", "checkpoints")
        for a in rest:
            if a.startswith("checkpoint_dir="):
                ck = a.partition("=")[2]
            else:
                raise ConfigError(f"unknown argument {a!r} for runs --unfinished; valid: checkpoint_dir=PATH")
        import pandas as pd

        rows = unfinished_runs(ck)
        if not rows:
            print(f"no unfinished runs under {ck}", file=sys.stderr)
            return 0
        df = pd.DataFrame(rows)
        # the settings that tell the rows apart (as `runs` shows them), after the progress columns
        _emit(df, [c for c in ("cell", "state", "epoch", "test_top1", "val_top1", "minutes", "eta_min", "idle_min")
                   if c in df.columns] + varying_settings(df), as_csv=False)
        print(f"{len(df)} unfinished run(s) under {ck}", file=sys.stderr)
        return 0
    results_dir = os.environ.get("NLBENCH_RESULTS_DIR", "results")
    columns, as_csv, filters, by, settings = None, False, {}, None, False
    it = iter(args)
    for a in it:
        if a == "--csv":
            as_csv = True
        elif a == "--settings":
            settings = True
        elif a == "--results-dir" or a.startswith("--results-dir="):   # as `report` spells it
            results_dir = a.partition("=")[2] if "=" in a else next(it, "")
            if not results_dir:
                raise ConfigError("--results-dir needs a folder, e.g. --results-dir results")
        elif a == "--by" or a.startswith("--by="):
            spec = a.partition("=")[2] if "=" in a else next(it, "")
            by = [c.strip() for c in spec.split(",") if c.strip()]
            if not by:
                raise ConfigError("--by needs a comma-separated list of columns, e.g. --by dataset,method")
        elif a == "--columns" or a.startswith("--columns="):
            spec = a.partition("=")[2] if "=" in a else next(it, "")
            columns = [c.strip() for c in spec.split(",") if c.strip()]
            if not columns:
                raise ConfigError("--columns needs a comma-separated list of columns (or 'all')")
        elif "=" in a and not a.startswith("-"):
            k, _, v = a.partition("=")
            if k == "results_dir":
                results_dir = v
            else:
                filters[k] = v
        else:
            raise ConfigError(f"unknown argument {a!r} for runs; valid: key=value filters, results_dir=PATH "
                              "(or --results-dir PATH), --settings, --columns a,b,c, --by a,b, --csv, --unfinished")
    if os.path.exists(results_dir) and not os.path.isdir(results_dir):
        raise ConfigError(f"results_dir={results_dir!r} is a file, not a folder; set results_dir=<the folder of records>")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df = load_records(results_dir)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    if df.empty:
        print(f"no records under {results_dir}", file=sys.stderr)
        return 0
    df = filter_rows(df, filters)
    if by is not None:
        if columns is not None:
            raise ConfigError("--by and --columns do not go together: --by prints its own columns")
        table = group_counts(df, by)
        _emit(table, list(table.columns), as_csv)
        minutes = float(table["minutes"].sum()) if len(table) else 0.0
        print(f"{len(df)} run(s) in {len(table)} group(s) under {results_dir}, {minutes / 60:.2f} wall hours",
              file=sys.stderr)
        return 0
    if columns == ["all"]:
        columns = list(df.columns)
    elif columns is None and settings:
        columns = default_columns(df)
    elif columns is None:
        df, columns = narrow_view(df), list(NARROW)
    else:
        bad = [c for c in columns if c not in df.columns]
        if bad:
            raise unknown_columns(bad, df.columns)
    df = df.sort_values([c for c in ("dataset", "noise", "method", "seed") if c in df.columns], kind="stable")
    _emit(df, columns, as_csv)
    print(f"{len(df)} run(s) under {results_dir}", file=sys.stderr)
    return 0
