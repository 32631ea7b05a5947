"""Runs and sweeps that finish: validate every member first, record failures, summarise, exit codes.

``run key=value ...`` is one member; ``run -m ...`` expands Hydra's sweep grammar into members. Before
the first member trains, every member that is not already finished is validated the way its run
would start: config (``build_spec``), data and noise, networks and method (``prepare`` on the CPU,
each dataset loaded once), and writable ``results_dir`` / ``checkpoint_dir``. A bad member stops the
sweep with exit 2 before anything trains.

While training, a member that raises is recorded with status ``failed`` and its message (and
traceback) at its record path; ``failed`` is not a final status, so rerunning the sweep retries it
(resuming from its last checkpoint) and skips the finished members. The sweep goes on to the next
member and ends with a summary table (member, status, acc_last, minutes, record).

Members run one after another in this process, unless a Hydra launcher is asked for
(``hydra/launcher=joblib`` / ``submitit_local`` / ``submitit_slurm``, or any other ``hydra.*``
override): then :mod:`nlbench.launch` hands the validated sweep to Hydra's own multirun machinery.

Exit codes (``EXIT_*``): 0 every member completed (or was already finished); 1 a member failed (or was
busy in another process, or, with a launcher, left no record); 2 bad input, nothing trained; 3 a member
diverged (NaN loss) and none failed; 130 interrupted (Ctrl-C), 143 terminated (SIGTERM): then the summary
shows the member that was stopped (``interrupted``, resumable) and those not started (``not-run``).
"""
from __future__ import annotations

import dataclasses
import sys
import traceback
from dataclasses import dataclass

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


@dataclass
class Member:
    label: str          # the overrides that tell this member from the others ("" for a single run)
    overrides: list     # every override of this member (Hydra grammar, no sweeps)
    spec: object        # RunSpec


@dataclass
class Outcome:
    label: str
    status: str         # completed | diverged | failed | skipped-<final status> | skipped-busy | missing
    acc_last: float | None
    minutes: float | None
    path: str | None
    message: str = ""


def member_labels(combos: list[list[str]]) -> list[str]:
    """For each combination, the overrides whose value differs between combinations."""
    if len(combos) < 2:
        return [""] * len(combos)
    key = lambda o: o.lstrip("+~").partition("=")[0]   # noqa: E731
    dicts = [{key(o): o for o in c} for c in combos]
    # a key varies when its override differs between members or some member lacks it (experiment grids)
    varying = {k for d in dicts for k in d if len({e.get(k) for e in dicts}) > 1}
    return [" ".join(o.lstrip("+") for o in c if key(o) in varying) for c in combos]


def validate_members(members: list[Member]) -> None:
    """Raise ConfigError for the first member whose config, data, noise, method or output folders are
    bad; members already finished (and not forced) are skipped, as their run would be."""
    import torch

    from . import store
    from .prepare import prepare, shared_data_cache
    from .runner import check_writable

    cpu = torch.device("cpu")
    with shared_data_cache():
        for m in members:
            spec = m.spec
            if not spec.force and store.is_finished(spec.record_path, reuse=spec.reuse):
                continue
            try:
                prepare(dataclasses.replace(spec, device=cpu))
                check_writable(spec, create=False)   # each member's cell folders too; makes no folder
            except Exception as e:
                from .registry import ConfigError

                where = f"sweep member {m.label!r}: " if m.label else ""
                if isinstance(e, ConfigError):
                    raise ConfigError(f"{where}{e}") from None
                raise ConfigError(f"{where}cannot start ({type(e).__name__}: {e})") from None


def run_member(spec, *, bad_input_raises: bool) -> dict:
    """``execute(spec)``; an exception while it runs is written as a ``failed`` record and returned.

    With ``bad_input_raises`` a ConfigError propagates (a single run's bad input: exit 2, nothing
    written); in a validated sweep every exception becomes a failed record so the sweep goes on.
    """
    from .registry import ConfigError, RunError
    from .runner import execute, write_failure

    try:
        return execute(spec)
    except KeyboardInterrupt:
        raise
    except Exception as e:
        if bad_input_raises and isinstance(e, ConfigError):
            raise
        tb = traceback.format_exc()
        if isinstance(e, (RunError, ConfigError)):   # its message says it all (a full disk): one line
            print(f"error: {e}", file=sys.stderr)
        else:
            print(tb, file=sys.stderr, end="")
        return write_failure(spec, e, tb)


def result_line(spec, rec: dict) -> str:
    """The one line that ends a run. A run that was not trained (its finished record exists) says so: the
    numbers and the wall time are the record's, not this call's."""
    fin = rec.get("final") or {}
    acc = fin.get("acc_last")
    skipped = rec.get("_skipped") and rec.get("status") != "busy"
    return (f"{rec['status']}{' (not trained now: an existing record)' if skipped else ''}: method={spec.method} dataset={spec.dataset} noise={spec.noise['name']} "
            f"seed={spec.seed} scale={spec.scale} final {fin.get('metric', 'acc')}="
            + (f"{acc:.2f}% (best {fin['acc_best']:.2f}% at epoch {fin['best_epoch']})" if acc is not None
               else f"n/a ({rec.get('message') or 'no evaluated epoch'})")
            + (f" COLLAPSED ({fin.get('collapse_reason')})" if fin.get("collapsed") else "")
            + (f" (trained in {rec.get('wall_s') or 0:.1f}s when recorded)" if skipped else
               f" wall {rec.get('wall_s') or 0:.1f}s") + f" record={rec.get('_path')}")


def outcome_of(member: Member, rec: dict | None) -> Outcome:
    if rec is None:
        return Outcome(member.label, "missing", None, None, str(member.spec.record_path),
                       "the job wrote no record (killed, out of time or memory?)")
    status = rec.get("status", "?")
    if rec.get("_skipped"):
        status = f"skipped-{status}"
    wall = rec.get("wall_s")
    return Outcome(member.label, status, (rec.get("final") or {}).get("acc_last"),
                   None if wall is None else wall / 60, rec.get("_path"), rec.get("message") or "")


def summary_table(outcomes: list[Outcome]) -> str:
    from .runs import format_table

    import pandas as pd

    df = pd.DataFrame([{"member": o.label or "-", "status": o.status, "acc_last": o.acc_last,
                        "minutes": o.minutes, "message": o.message[:60] or None} for o in outcomes])
    cols = ["member", "status", "acc_last", "minutes"] + (["message"] if df["message"].notna().any() else [])
    return format_table(df, cols)


def exit_code(outcomes: list[Outcome]) -> int:
    statuses = {o.status.removeprefix("skipped-") for o in outcomes}
    if statuses & {"failed", "missing", "busy"}:
        return EXIT_FAILED
    if "diverged" in statuses:
        return EXIT_DIVERGED
    return EXIT_OK


def run_members(members: list[Member], *, multi: bool) -> list[Outcome]:
    """Run the members one after another in this process."""
    outcomes = []
    for i, m in enumerate(members):
        if multi and m.spec.verbosity != "quiet":
            print(f"[{i + 1}/{len(members)}] {m.label or ' '.join(m.overrides)}", file=sys.stderr, flush=True)
        try:
            rec = run_member(m.spec, bad_input_raises=not multi)
        except KeyboardInterrupt:   # Ctrl-C or SIGTERM: the summary still says where the sweep stopped
            if multi:
                outcomes.append(Outcome(m.label, "interrupted", None, None, None,
                                        "resumes from its last checkpoint"))
                outcomes += [Outcome(x.label, "not-run", None, None, None) for x in members[i + 1:]]
                print(f"\nsweep summary ({len(outcomes)} members, stopped):")
                print(summary_table(outcomes), flush=True)
            raise
        print(result_line(m.spec, rec), flush=True)
        outcomes.append(outcome_of(m, rec))
    return outcomes


def finish(outcomes: list[Outcome], *, multi: bool) -> int:
    if multi:
        print(f"\nsweep summary ({len(outcomes)} members):")
        print(summary_table(outcomes))
        busy = [o for o in outcomes if o.status == "skipped-busy"]
        if busy:
            print(f"{len(busy)} member(s) were running in another process and were left alone; rerun the "
                  "same command when it has finished", file=sys.stderr)
        bad = [o for o in outcomes if o.status in ("failed", "missing")]
        if bad:
            print(f"{len(bad)} member(s) failed; rerun the same command to retry them (finished members are "
                  "skipped)", file=sys.stderr)
    return exit_code(outcomes)
