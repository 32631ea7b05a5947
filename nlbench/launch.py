"""Sweeps on Hydra's launchers: several runs on one machine (joblib) or on a Slurm cluster (submitit).

``python -m nlbench run -m hydra/launcher=joblib hydra.launcher.n_jobs=4 method=ce,gce seed=0,1`` first
validates every member in this process (:func:`nlbench.sweep.validate_members`), then hands the same
overrides to Hydra's own multirun (``hydra.main`` -> sweeper -> launcher plugin -> ``run_job``), which
calls :func:`job` once per member in the launcher's worker (a joblib process, a Slurm job, ...). Each
job writes its own record (or a ``failed`` one); when the launcher returns, the records are read back
for the summary table, and a member without a record is reported as ``missing``.

GPU assignment: with ``device=auto`` and more than one visible GPU, job ``n`` of the sweep trains on
``cuda:(n mod G)`` (:func:`gpu_for_job`), so ``hydra.launcher.n_jobs=k*G`` runs k jobs per GPU (round
robin by job number: balanced when the runs take similar times). ``device=cuda:1`` pins every job. On
Slurm, ask each job for its own GPU (``hydra.launcher.gpus_per_node=1``): it then sees one GPU only.

Launcher logs (Hydra's ``.hydra/`` folders, submitit's pickles and Slurm ``.out``/``.err`` files) go to
``sweep_dir`` (``$NLBENCH_SWEEP_DIR``, default ``./sweeps``), never next to the records.
"""
from __future__ import annotations

import dataclasses
import os
import sys

import hydra

from .hydra_setup import CONF_DIR
from .registry import ConfigError


def gpu_for_job(job_num: int, num_gpus: int) -> int | None:
    """The GPU index of job ``job_num`` (round robin), or None when there are fewer than 2 GPUs."""
    return None if num_gpus < 2 else int(job_num) % int(num_gpus)


def threads_per_job(n_jobs, cores: int) -> int | None:
    """CPU threads for each of ``n_jobs`` concurrent CPU runs on ``cores`` cores: ``cores // n_jobs`` (at
    least 1), so that the workers do not oversubscribe the cores (torch's default is every core in every
    worker). None when the launcher runs one job at a time or does not say (``n_jobs`` absent); joblib's
    ``n_jobs=-1`` means one job per core."""
    if n_jobs is None:
        return None
    n = int(n_jobs)
    if n < 0:   # joblib: -1 = every core, -2 = all but one, ...
        n = max(cores + 1 + n, 1)
    if n <= 1:
        return None
    return max(cores // n, 1)


def job(cfg) -> dict:
    """Hydra's task function: one (already validated) member, in the launcher's worker process."""
    import torch
    from hydra.core.hydra_config import HydraConfig

    from .plugins import load_method_modules
    from .spec import build_spec
    from .sweep import result_line, run_member

    load_method_modules(cfg.get("method_modules"))
    spec = build_spec(cfg)
    num = HydraConfig.get().job.num
    gpu = gpu_for_job(num, torch.cuda.device_count()) if str(cfg.get("device", "auto")) == "auto" else None
    if gpu is not None:
        spec = dataclasses.replace(spec, device=torch.device("cuda", gpu))
    if spec.threads is None and spec.device.type == "cpu":
        threads = threads_per_job(HydraConfig.get().launcher.get("n_jobs"), os.cpu_count() or 1)
        if threads is not None:
            spec = dataclasses.replace(spec, threads=threads)
    rec = run_member(spec, bad_input_raises=False)
    print(f"[job {num}] {result_line(spec, rec)}", flush=True)
    return {"status": rec.get("status"), "path": rec.get("_path")}


# the decorated entry point; `job` stays a plain module-level function so launchers can pickle it
hydra_main = hydra.main(config_path=str(CONF_DIR), config_name="config", version_base=None)(job)


def check_launcher(hydra_args: list[str], search: list[str]) -> None:
    """Compose the hydra config with the launcher overrides: a launcher that is not installed (or a bad
    ``hydra.*`` key) is a ConfigError before anything runs."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(version_base=None, config_dir=str(CONF_DIR), job_name="nlbench"):
            compose(config_name="config", overrides=[*search, *hydra_args, "hydra.mode=MULTIRUN"],
                    return_hydra_config=True)
    except (HydraException, OmegaConfBaseException, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        want = next((a.partition("=")[2] for a in hydra_args if a.startswith("hydra/launcher=")), None)
        if want and ("hydra/launcher" in first or want in first):
            raise ConfigError(f"hydra/launcher={want} is not available ({first}); install the launchers with "
                              "pip install 'nlbench[launchers]' (hydra-joblib-launcher, hydra-submitit-launcher)") from None
        raise ConfigError(f"bad hydra override: {first}") from None


def launch(members, overrides: list[str], hydra_args: list[str]):
    """Run the validated ``members`` through Hydra's multirun with ``hydra_args``; returns Outcomes."""
    from . import store
    from .config import add_or_override
    from .plugins import conf_search_overrides
    from .sweep import outcome_of

    search = conf_search_overrides(overrides)
    check_launcher(hydra_args, search)
    argv = [sys.argv[0] if sys.argv else "nlbench", "--multirun", *search, *add_or_override(overrides), *hydra_args]
    saved = sys.argv
    sys.argv = argv
    try:
        hydra_main()
    except SystemExit as e:          # Hydra reports a launcher error and exits; the records still tell
        if e.code not in (0, None):
            print(f"the launcher stopped with exit code {e.code}; reading the records it left", file=sys.stderr)
    finally:
        sys.argv = saved
    outcomes = []
    for m in members:
        path = m.spec.record_path
        rec = store.read_record(path)
        outcomes.append(outcome_of(m, None if rec is None else {**rec, "_path": str(path)}))
    return outcomes
