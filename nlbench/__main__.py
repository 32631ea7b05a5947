"""Command line: ``python -m nlbench {run,validate,list,runs,report,export,detect} [hydra overrides]``.

- ``run [-m] key=value ...``: one run, or a sweep with ``-m`` (Hydra's override grammar: comma lists,
  ``range()``, ``choice()``; runs go one after another and finished ones are skipped).
  ``run -m +experiment=table3 scale=cpu``: the sweep behind a paper table or figure
  (``conf/experiment/``); keys given on the command line narrow it. ``run --dry-run ...`` lists the
  runs of a sweep (finished or to run, with their record paths) and trains nothing.
- ``validate key=value ...``: build the config, load the data and draw the noise, print a summary; no training.
- ``list``: every registry (methods, datasets, noise models, backbones) and every config choice.
- ``runs [key=value ...] [--columns a,b,c] [--by a,b] [--csv]``: every record under results_dir as a table (or counted per group).
- ``report [--results-dir D] [--out plots]``: tables and figures from the run records (see
  ``report --help``); never trains.
- ``export <record.json> [--format csv|parquet] [--epoch N] [--out F]``: a run's per-sample table
  (``save_samples=true``: index, given / true label, the method's verdict, loss, prediction).
- ``detect key=value ... [folds=K] [stop=last|heldout]``: the reference detectors of mislabeled samples (cleanlab's
  confident learning and the CE loss on K-fold out-of-sample probabilities), written as a record.

Bad input (unknown name, rate out of range, missing data, an unwritable results_dir) prints one line
naming the bad value and the valid choices, and exits with code 2 before anything is written.
Exit codes: 0 completed; 1 a run failed while training (recorded as ``failed``) or was busy elsewhere; 2 bad input;
3 a run diverged (NaN loss; recorded as ``diverged``); 130 interrupted (Ctrl-C); 143 terminated (SIGTERM: Slurm
preemption or ``scancel``; the same command resumes from the last epoch checkpoint).
"""
from __future__ import annotations

import signal
import sys

from .config import GROUPS, compose, group_choices
from .experiments import expand, expand_sweep, with_grids
from .registry import ConfigError, Terminated

USAGE = "usage: python -m nlbench {run,validate,list,runs,report,export,detect} [-m] [--dry-run] [key=value ...]"

RUN_HELP = """usage: python -m nlbench run [-m] [key=value ...]
       python -m nlbench validate [-m] [key=value ...]

Config groups (pick one each, default first; `python -m nlbench list` shows every registry):
{groups}

Settings (key=default; all of them in conf/config.yaml):
  seed=0 noise_seed=0           training seed / noisy-label (and scale=cpu subset) seed
  noise.rate=R                  with a rate family (noise=sym|symo|asym|asym_super|pair): the run is
                                <family><R>, e.g. noise=sym noise.rate=0.35 is sym0.35
  train.<key>=V                 protocol overrides: epochs, lr, batch_size, schedule, milestones,
                                warmup_epochs, ... (null keeps the dataset protocol's value)
  method.params.<key>=V         method hyperparameters (the method's yaml lists them)
  val_fraction=null             hold out this share of the noisy training set as a noisy validation
                                split (null: the scale's default, 0.1 at scale=cpu on CIFAR; 0 none)
  threads=null                  torch CPU threads (null: 1 for small models or a busy machine, else
                                the idle cores); changes speed, not the numbers' meaning
  device=auto                   auto|cpu|cuda|cuda:N
  data_dir=data results_dir=results checkpoint_dir=checkpoints
                                (or NLBENCH_DATA_DIR, NLBENCH_RESULTS_DIR, NLBENCH_CHECKPOINT_DIR)
  dataset.options.download=false  true: fetch CIFAR into data_dir
  force=false                   true: rerun a run whose record exists
  verbosity=bar                 quiet: the final line; epoch: a line per epoch; bar: + progress bar
  logger=none                   tensorboard: every per-epoch number as TensorBoard scalars (tb_dir=)
  save_samples=false            true: the per-sample table beside the record (`export` reads it)
  sample_epochs=[]              also keep that table at these epochs, e.g. [10,50]
  diagnose_train=false          true: per epoch, how the network fits clean vs mislabeled samples
  method_modules=[]             your own methods: [pkg.mod]; method_conf_dirs=[/path/conf] for yaml

Sweeps (-m): comma lists, range(a,b), choice(...) in Hydra's grammar, e.g.
  python -m nlbench run -m method=ce,gce noise=sym noise.rate=0.2,0.4 seed=0,1,2
  python -m nlbench run -m +experiment=table3 scale=cpu   the sweep behind a paper table
  python -m nlbench run --dry-run -m ...                   list the members, train nothing
Every member is validated (config, data, output folders) before the first one trains; a member
that fails is recorded as failed and the sweep goes on; a summary table ends it. Parallel or on a
cluster with Hydra's launchers (pip install 'nlbench[launchers]'):
  python -m nlbench run -m hydra/launcher=joblib hydra.launcher.n_jobs=4 seed=0,1,2,3
  python -m nlbench run -m hydra/launcher=submitit_slurm hydra.launcher.partition=gpu ...

Exit codes: 0 completed; 1 a run failed (or its cell was busy in another process); 2 bad input
(nothing written); 3 a run diverged; 130 interrupted (Ctrl-C); 143 terminated (SIGTERM, e.g. Slurm
preemption or scancel). After 130 or 143 the same command resumes from the last epoch checkpoint."""


#: each group's default in conf/config.yaml (experiment has none: it is added with +experiment=)
GROUP_DEFAULTS = {"method": "gss_sb", "dataset": "digits", "noise": "sym0.4", "backbone": "auto", "scale": "paper"}


def run_help(width: int = 100) -> str:
    """The run help, every line within ``width`` columns: a group's choices wrap under it."""
    import textwrap

    lines = []
    for g in GROUPS:   # experiment is not in the config's defaults: Hydra needs +experiment=
        choices = group_choices(g)
        d = GROUP_DEFAULTS.get(g)
        choices = ([d] if d in choices else []) + [c for c in choices if c != d]
        head = f"  {'+' if g == 'experiment' else ''}{g}="
        lines += textwrap.wrap(" | ".join(choices), width=width, initial_indent=head,
                               subsequent_indent=" " * len(head), break_on_hyphens=False)
    return RUN_HELP.format(groups="\n".join(lines))


def cmd_run(args: list[str], *, dry: bool = False) -> int:
    if any(a in ("-h", "--help") for a in args):   # before the imports below (torch): help comes at once
        print(run_help())
        return 0
    from . import sweep
    from .data import data_line
    from .prepare import prepare
    from .spec import build_spec

    multi = any(a in ("-m", "--multirun") for a in args)
    listing = "--dry-run" in args
    overrides = [a for a in args if a not in ("-m", "--multirun", "--dry-run")]
    hydra_args = [o for o in overrides if o.lstrip("+~").startswith("hydra")]
    overrides = [o for o in overrides if o not in hydra_args]
    if hydra_args and not multi:
        raise ConfigError(f"{hydra_args[0]!r} applies to sweeps: add -m (python -m nlbench run -m ...)")
    if not multi and with_grids(overrides)[1]:
        raise ConfigError(f"experiment {', '.join(e.partition('=')[2] for e in overrides if 'experiment=' in e)!r} "
                          f"defines a sweep; run it with -m (python -m nlbench run -m {' '.join(overrides)})")
    if multi:
        compose(expand_sweep(overrides)[0])          # bad input: the one-line error, before anything else
    combos = expand(overrides) if multi else [overrides]
    labels = sweep.member_labels(combos)
    members = [sweep.Member(lab, c, build_spec(compose(c))) for lab, c in zip(labels, combos)]
    if listing:
        from . import store
        from .spec import check_method_values

        for m in members:   # what the run would refuse is refused here too (e.g. method.params.lambda1=-1)
            try:
                check_method_values(m.spec)
            except ConfigError as e:
                raise ConfigError(f"sweep member {m.label!r}: {e}" if m.label else str(e)) from None
        done = 0
        for i, m in enumerate(members):
            # a shipped run's record (.json.gz) counts only with reuse=true; a malformed file is named, to run
            found = store.finished_record(m.spec.record_path, warn=lambda s: print(s, file=sys.stderr),
                                          reuse=m.spec.reuse)
            done += found is not None
            print(f"[{i + 1}/{len(members)}] {'finished' if found else 'to run  '} {' '.join(m.overrides)} "
                  f"-> {found[0] if found else m.spec.record_path}")
        print(f"{len(members)} runs: {done} finished, {len(members) - done} to run (--dry-run: nothing trained)")
        return 0
    if dry:
        said = set()
        for m in members:
            spec = m.spec
            prep = prepare(spec)
            n = prep.noise
            print(f"ok: method={spec.method} dataset={spec.dataset} ({prep.stream.num_train} train) "
                  f"noise={n.name} actual_rate={'n/a' if n.actual_rate is None else f'{n.actual_rate:.4g}'} "
                  f"hash={n.label_hash} backbone={spec.backbone} "
                  f"scale={spec.scale} epochs={spec.train.epochs} record={spec.record_path}")
            line = data_line(spec.dataset, prep.data)
            if line not in said:    # once per data copy, not once per member; stdout keeps the ok lines
                said.add(line)
                print(line, file=sys.stderr)
        return 0
    if multi:
        sweep.validate_members(members)   # config, data, method, output folders: before the first member trains
    if hydra_args:
        from .launch import launch

        outcomes = launch(members, overrides, hydra_args)
    else:
        outcomes = sweep.run_members(members, multi=multi)
    return sweep.finish(outcomes, multi=multi)


def cmd_list(args: list[str]) -> int:
    """Every registry and config choice; ``method_modules=[...]`` / ``method_conf_dirs=[...]`` add a
    researcher's own methods and their yaml, as they do for ``run``."""
    from .plugins import override_list

    if any(a in ("-h", "--help") for a in args):
        print("usage: python -m nlbench list [method_modules=[pkg.mod]] [method_conf_dirs=[/path/conf]]\n\n"
              + cmd_list.__doc__.split("\n")[0])
        return 0
    allowed = ("method_modules", "method_conf_dirs")
    for a in args:
        if a.lstrip("+").partition("=")[0] not in allowed or "=" not in a:
            raise ConfigError(f"unknown argument {a!r} for list; valid: {', '.join(f'{k}=[...]' for k in allowed)}")
    import methods  # noqa: F401
    from .plugins import load_method_modules

    load_method_modules(override_list(args, "method_modules"))   # + entry points and $NLBENCH_METHOD_MODULES
    from .backbones import BACKBONES
    from .data import DATASETS
    from .method import METHODS
    from .noise import NOISE

    for title, reg in (("methods", METHODS), ("datasets", DATASETS), ("noise models", NOISE),
                       ("backbones", BACKBONES)):
        print(f"{title}: {', '.join(reg.names())}")
    for g in GROUPS:
        print(f"conf/{g}: {', '.join(group_choices(g, args))}")
    return 0


def cmd_runs(args: list[str]) -> int:
    from .runs import cmd_runs as runs

    return runs(args)


def cmd_report(args: list[str]) -> int:
    from .report import main as report_main

    return report_main(args)


EXPORT_HELP = """usage: python -m nlbench export <record.json> [--format csv|parquet] [--epoch N] [--out FILE]

Writes the per-sample table a run saved (run it with save_samples=true; sample_epochs=[...] adds
epochs): one row per training sample with its index, dataset index, given and true label, the
method's verdict (clean_prob, verdict_label, verdict_prob), loss and prediction. Default format:
parquet when pyarrow is installed, else CSV; default file: beside the record."""

DETECT_HELP = """usage: python -m nlbench detect [key=value ...] [folds=K] [stop=last|heldout]

The reference detectors of mislabeled samples for one (dataset, noise, scale, seed): cross entropy
trained K times (default 4) on K-1 folds with the run's protocol gives out-of-sample probabilities
(stop=heldout, the default: each fold's network at the evaluated epoch with the best accuracy on the
held-out fold's noisy labels; stop=last: at its last epoch);
cleanlab's find_label_issues and the CE loss score them against the true labels. Writes
<results_dir>/<dataset>/<noise>/cleanlab_cv/seed<k>-<hash>.json and its per-sample table. Needs
cleanlab (pip install cleanlab). Example:
  python -m nlbench detect dataset=cifar10 noise=sym0.4 scale=cpu data_dir=../shared/data"""


def cmd_export(args: list[str]) -> int:
    if not args or any(a in ("-h", "--help") for a in args):
        print(EXPORT_HELP)
        return 0 if args else 2
    import argparse

    ap = argparse.ArgumentParser(prog="python -m nlbench export", add_help=False)
    ap.add_argument("record")
    ap.add_argument("--format", dest="fmt", default=None)
    ap.add_argument("--epoch", type=int, default=None)
    ap.add_argument("--out", default=None)
    a, unknown = ap.parse_known_args(args)
    if unknown:
        raise ConfigError(f"unknown argument(s) {' '.join(unknown)} for export; valid: --format, --epoch, --out")
    from .samples import export

    print(export(a.record, out=a.out, fmt=a.fmt, epoch=a.epoch))
    return 0


def cmd_detect(args: list[str]) -> int:
    if any(a in ("-h", "--help") for a in args):
        print(DETECT_HELP)
        return 0
    folds = [a for a in args if a.startswith("folds=")]
    stops = [a for a in args if a.startswith("stop=")]
    overrides = [a for a in args if not a.startswith(("folds=", "stop=", "method="))]
    from .detect import detect
    from .registry import as_int
    from .spec import build_spec

    k = as_int("folds", folds[-1].partition("=")[2]) if folds else 4
    rec = detect(build_spec(compose(["method=ce", *overrides])), folds=k,
                 stop=stops[-1].partition("=")[2] if stops else "heldout",
                 log=lambda s: print(s, file=sys.stderr, flush=True))
    print(rec["_path"])
    return 0


COMMANDS = {"run": cmd_run, "validate": lambda a: cmd_run(a, dry=True), "list": cmd_list, "runs": cmd_runs,
            "report": cmd_report, "export": cmd_export, "detect": cmd_detect}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE + "\n" + __doc__.replace("``", "`"))
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd not in COMMANDS:
        print(f"error: unknown command {cmd!r}; valid choices: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    previous = _on_sigterm_raise()
    try:
        return COMMANDS[cmd](rest)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Terminated:
        print("terminated (SIGTERM); finished records are kept, the run in progress resumes from its last "
              "epoch checkpoint: rerun the same command", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print("interrupted; finished records are kept, the run in progress resumes from its checkpoint",
              file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


#: the exit code of a run stopped by SIGTERM (128 + 15, what the shell reports for a process it killed):
#: a Slurm job preempted or cancelled resumes when the same command runs again (requeue)
EXIT_TERMINATED = 143


def _on_sigterm_raise():
    """SIGTERM (Slurm preemption, ``scancel``) becomes a :class:`Terminated` exception in the main thread,
    handled like Ctrl-C: the lock is released, no temp file is left, the checkpoint is kept, a sweep
    prints its summary. Returns the handler it replaced (None where none can be set: not the main thread)."""
    def handler(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)   # a second SIGTERM must not cut the clean-up short
        raise Terminated()

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:   # not the main thread (an embedding application): leave its signals alone
        return None


if __name__ == "__main__":
    sys.exit(main())
