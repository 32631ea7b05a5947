"""Run records -> the paper's tables and figures, a summary of every other run, and ``REPORT.md``.

``report(results_dir, out)`` is a pure function of the records under ``results_dir``: it never trains
and never parses logs. What it writes under ``out``:

- ``table3_<scale>.{md,tex,csv}``, ``table4_<scale>.{md,tex,csv}``: the paper's Tables 3 and 4, ours
  (mean +- std of the last-epoch accuracy over seeds, with the seed count; best per column in bold)
  beside the paper's published value (package data ``nlbench/paper_data/``).
- ``fig1_*``, ``fig3_*``, ``fig4_*`` (PNG and PDF): Figures 1, 3 and 4.
- ``summary_<dataset>_<scale>.{md,csv}``: every run that fits no paper table or figure.
- ``dynamics/``: per setting, test accuracy, memorisation, selection and GSS-pool curves over epochs.
- ``networks.*``, ``detection.*``, ``noise_rate.*``, ``validation.*``: beyond the paper (when runs have
  the numbers); ``validation`` is every run with a noisy validation split, per cell: last / best test,
  noisy validation and the test accuracy at its best epoch, selection precision / recall, memorised
  share, minutes and collapsed runs.
- ``REPORT.md``: all of it on one page, with the runs still missing and the commands that make them.

Which records form a paper cell is decided by config, not by name: the experiment file behind a table
(``conf/experiment/table3.yaml``) is expanded, each run composed and validated exactly as ``run`` would,
and a record belongs to the cell when its effective config agrees with that expected config on every
key both have. So a cell never mixes scales, protocols, method hyperparameters or noise seeds. On top:
records of different data copies (the record's ``data.md5_ok``) go to separate blocks; two records of
one seed with different numbers (two code versions, or devices) split the cell into variants instead
of being averaged; a diverged run counts as a failed run of its cell (shown, never dropped).

One module per step; each imports only the ones above it in this list:

- ``records``: record files -> :class:`Run` (malformed files skipped with the reason);
- ``cells``: the runs an experiment expects, records matched to them by config, :class:`Cell` statistics;
- ``output``: the files, REPORT.md sections and result object every step writes into, missing-run lists;
- ``tables``: Tables 3 and 4 and the summary tables; ``figures``: Figures 1, 3, 4 and the dynamics;
  ``analysis``: beyond the paper (each network beside its ensemble, methods scored as detectors of
  mislabeled samples beside cleanlab, the estimated noise rate against the truth, what a user without
  clean labels sees on a noisy validation split);
- ``page``: :func:`report` over all the steps, ``REPORT.md``, and the command line (:func:`main`).
"""
from .cells import Cell, Expected, Index, comparable, config_diff, config_matches, expected_runs, split_versions
from .output import ReportResult, Section, missing_commands
from .page import HELP, NoRecords, main, report
from .records import DATASET_NAMES, METHOD_NAMES, Run, load_runs, method_name, method_sort_key, provenance
from .tables import TABLES, paper_values

__all__ = ["Cell", "Expected", "Index", "comparable", "config_diff", "config_matches", "expected_runs",
           "split_versions", "ReportResult", "Section", "missing_commands", "HELP", "NoRecords", "main", "report",
           "DATASET_NAMES", "METHOD_NAMES", "Run", "load_runs", "method_name", "method_sort_key", "provenance",
           "TABLES", "paper_values"]
