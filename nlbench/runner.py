"""A :class:`RunSpec` -> a trained method and its run record.

``execute(spec)`` skips a finished record, takes the run's lock, prepares the run
(:mod:`nlbench.prepare`), trains through :class:`nlbench.trainer.Trainer` (resuming a checkpoint) and
writes the record atomically; ``write_failure`` records a run that raised. The config side is
:mod:`nlbench.spec` (``build_spec``), the data side :mod:`nlbench.prepare`.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from . import store
from .data import data_line
from .prepare import dataset_index, prepare
from .registry import ConfigError, RunError
from .spec import RunSpec, sample_epochs_of
from .trainer import Trainer, train_config_dict

_DATA_SAID: set[str] = set()       # data lines this process printed: each data copy is named once


def _git(root: Path | None = None) -> dict:
    """The commit of the checkout at ``root`` (default: this source tree) and whether it has changes.
    Both are null when unknown: no git, or a copy without ``.git`` (a tarball, an sdist), even one
    unpacked inside another repository; a copy without git must not claim to be clean."""
    root = Path(root or Path(__file__).resolve().parent.parent).resolve()
    unknown = {"commit": None, "dirty": None}
    try:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10)
        lines = top.stdout.split()
        if top.returncode != 0 or len(lines) != 2 or Path(lines[0]).resolve() != root:
            return unknown
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                capture_output=True, text=True, timeout=10)
        dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
        out = {"commit": lines[1], "dirty": dirty}
        if dirty:   # the code a dirty run used is recorded nowhere: keep at least a fingerprint of the changes
            diff = subprocess.run(["git", "diff", "HEAD", "--no-ext-diff", "--binary"], cwd=root,
                                  capture_output=True, timeout=30)
            if diff.returncode == 0:
                out["diff_sha256"] = hashlib.sha256(diff.stdout).hexdigest()
                out["diff_files"] = [ln[3:] for ln in status.stdout.splitlines() if len(ln) > 3]
    except (OSError, subprocess.SubprocessError):
        return unknown
    return out


def _versions(device: torch.device) -> dict:
    import importlib.metadata as md

    v = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("torch", "torchvision", "timm", "numpy", "scikit-learn", "hydra-core"):
        try:
            v[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            v[pkg] = None
    v["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    v["torch_threads"] = torch.get_num_threads()
    return v


def final_metrics(history: list[dict], primary: str) -> dict:
    """The record's ``final`` block from the per-epoch history. Only evaluated epochs count (with
    ``train.eval_every`` = k the test splits are scored every k epochs and at the last): ``acc_best``
    is the best evaluated epoch, ``acc_last10`` the mean of the evaluated epochs among the last 10
    (``n_last10`` of them). ``collapsed`` flags a one-class end (:func:`metrics.collapse_status`)."""
    from .metrics import collapse_status

    rows = [h for h in history if primary in h]
    if not rows:
        return {}
    accs = [h[primary] for h in rows]
    best = int(np.argmax(accs))
    last_epoch = history[-1]["epoch"]
    tail = [h[primary] for h in rows if h["epoch"] > last_epoch - 10]
    out = {"metric": primary, "acc_last": accs[-1], "acc_best": accs[best], "best_epoch": rows[best]["epoch"],
           "acc_last10": float(np.mean(tail)), "n_last10": len(tail)}
    top5 = primary.replace("_top1", "_top5")
    if top5 in history[-1]:
        out["top5_last"] = history[-1][top5]
    for h in history[-1:]:
        for k, v in h.items():
            if k.endswith("_top1") or k.endswith("_top5"):
                out[f"last_{k}"] = v
    vrows = [h for h in history if "val_top1" in h]
    if vrows:   # test at the best (noisy or clean) validation epoch
        b = int(np.argmax([h["val_top1"] for h in vrows]))
        out["val_best_epoch"] = vrows[b]["epoch"]
        out["test_at_best_val"] = vrows[b].get("test_top1")
    out.update(collapse_status(history[-1], split=primary.removesuffix("_top1")))
    return out


def check_writable(spec: RunSpec, *, create: bool = True) -> None:
    """results_dir and checkpoint_dir must be creatable and writable before any epoch is spent:
    create them and write (then remove) a probe file; so must the run's own cell folders below them
    (``<dataset>/<noise>/<method>/``: a shared results tree where another user owns the cell), probed
    where they exist, else at the nearest folder that does (where they will be made). A failure is a
    ConfigError naming the folder. ``create=False`` (validating a sweep) probes without making anything."""
    for key, folder in (("results_dir", spec.results_dir), ("checkpoint_dir", spec.checkpoint_dir)):
        if folder.exists() and not folder.is_dir():   # mkdir would only say "File exists"
            raise ConfigError(f"{key}={str(folder)!r} is a file, not a folder; set {key}=<a folder>")
        if create:
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise _not_writable(key, folder, e) from None
        _probe(key, folder, _existing(folder))
    for key, cell in (("results_dir", spec.record_path.parent), ("checkpoint_dir", spec.checkpoint_path.parent)):
        _probe(key, getattr(spec, key), _existing(cell))


def _not_writable(key: str, folder: Path, e: OSError, *, where: Path | None = None) -> ConfigError:
    inside = f" (its folder {where})" if where is not None and Path(where) != Path(folder) else ""
    return ConfigError(f"{key}={str(folder)!r}{inside} is not writable ({e.strerror or type(e).__name__}"
                       f"{': ' + str(e.filename) if getattr(e, 'filename', None) else ''}); "
                       f"set {key}=<a writable folder>")


def _probe(key: str, root: Path, folder: Path) -> None:
    """Create and remove a file in ``folder`` (a folder of ``key`` = ``root``), or raise the ConfigError."""
    import tempfile

    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".nlbench-write-probe-"):
            pass
    except OSError as e:
        raise _not_writable(key, root, e, where=folder) from None


def _existing(folder: Path) -> Path:
    """``folder`` or its nearest existing parent: where a folder not made yet will take its space."""
    folder = Path(folder).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def _size(n: float) -> str:
    for unit, k in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= k:
            return f"{n / k:.1f} {unit}"
    return f"{int(n)} bytes"


#: what a record takes besides its history (resolved config, noise, versions), and a history row before any
#: row is known. Four shipped records (CE, Co-teaching, DivideMix, GSS-SSL; digits and CIFAR-10 scale=cpu)
#: held 10-19 KB besides the history and 0.5-1.8 KB per row (compact JSON): both rounded up

RECORD_BASE_BYTES, HISTORY_ROW_BYTES = 64 * 2 ** 10, 2 * 2 ** 10


def check_space(spec: RunSpec, *, checkpoint_bytes: int, record_bytes: int) -> None:
    """Refuse to go on (ConfigError: one line, exit 2) when the folders the run writes to lack the space
    for what it will write: the next checkpoint (written beside the current one before it replaces it)
    and the record. Folders on one filesystem share its free space. The probe is ``shutil.disk_usage``."""
    import shutil

    needs = [("checkpoint_dir", spec.checkpoint_path.parent, checkpoint_bytes, "checkpoint"),
             ("results_dir", spec.record_path.parent, record_bytes, "record")]
    groups: dict[int, list] = {}
    for key, folder, n, what in needs:
        if n > 0:
            groups.setdefault(os.stat(_existing(folder)).st_dev, []).append((key, folder, n, what))
    for group in groups.values():
        total = sum(n for _, _, n, _ in group)
        try:   # one filesystem: the least any of its folders reports (quotas may differ per folder)
            free, folder = min((shutil.disk_usage(_existing(f)).free, f) for _, f, _, _ in group)
        except OSError:   # a filesystem that cannot say: the write itself reports a full disk
            continue
        if free < total:
            parts = " + ".join(f"{what} {_size(n)}" for _, _, n, what in group)
            keys = " or ".join(sorted({k for k, _, _, _ in group}))
            raise ConfigError(f"not enough free space in {folder}: {_size(free)} free, this run needs about "
                              f"{_size(total)} there ({parts}); free space there or set {keys}=<a folder on "
                              "another disk>")


def estimate_checkpoint_bytes(method, epochs: int) -> int:
    """A checkpoint's size before the first one exists: the method's state (networks, per-sample buffers)
    plus two optimiser moments per parameter (Adam; SGD's momentum is one) plus the history."""
    import torch

    state = sum(t.numel() * t.element_size() for t in method.state_dict().values() if torch.is_tensor(t))
    params = sum(p.numel() * p.element_size() for p in method.parameters())
    return state + 2 * params + epochs * HISTORY_ROW_BYTES + RECORD_BASE_BYTES


def prune_empty_dirs(folder: Path, stop: Path, *, remove_stop: bool = True) -> None:
    """Remove ``folder`` and its parents up to ``stop`` while they are empty: a finished run leaves no
    empty checkpoint folders behind. A folder another job is using is not empty. ``stop`` itself goes
    only with ``remove_stop``: a checkpoint_dir the run did not make (a shared folder an admin set up
    with its own permissions, e.g. 1777) stays."""
    folder, stop = Path(folder), Path(stop)
    while folder == stop or stop in folder.parents:
        if folder == stop and not remove_stop:
            return
        try:
            folder.rmdir()
        except FileNotFoundError:   # never made (a start that failed early): its parents may be empty
            pass
        except OSError:
            return
        if folder == stop:
            return
        folder = folder.parent


def leftovers(spec: RunSpec) -> list[Path]:
    """The temp files an earlier process of this cell left when it was killed mid-write (``kill -9``, a
    power loss): the record's ``.<record>.json.XXXX.tmp``, the checkpoint's and the sample table's ``.tmp``.
    Only this cell's, never another's, and only plain files (nlbench writes no links)."""
    from .samples import samples_path

    rec = spec.record_path
    found = sorted(rec.parent.glob(f".{rec.name}.*.tmp")) if rec.parent.is_dir() else []
    found += [spec.checkpoint_path.with_suffix(".tmp"), samples_path(rec).with_name(samples_path(rec).name + ".tmp")]
    return [p for p in found if p.is_file() and not p.is_symlink()]


def remove_leftovers(spec: RunSpec, log) -> None:
    """Remove :func:`leftovers`; call it only while holding the cell's lock."""
    gone = []
    for p in leftovers(spec):
        try:
            p.unlink()
            gone.append(p.name)
        except FileNotFoundError:
            pass
    if gone:
        log(f"removed {len(gone)} temp file(s) an interrupted run of this cell left: {', '.join(gone)}")


def _skip_finished(spec: RunSpec, log, *, warn: bool = True) -> dict | None:
    """The run's finished record (or its shipped ``.json.gz``) as the skipped result; None when it must train.
    A malformed file at the record's path is named (``warn``) and does not count as finished."""
    found = None if spec.force else store.finished_record(spec.record_path, warn=log if warn else None,
                                                          reuse=spec.reuse)
    if found is None:
        return None
    done, rec = found
    say = lambda s: print(s, file=sys.stderr, flush=True)   # noqa: E731
    # said even with verbosity=quiet: nothing was trained, and the numbers shown are the record's
    if str(done).endswith(".gz"):
        say(f"not trained: reusing the shipped reference record {done} (reuse=true; "
            "reuse=false trains this run)")
    else:
        say(f"not trained: a finished record of this run exists at {done} (force=true trains it again)")
    return {**rec, "_skipped": True, "_path": str(done)}


def execute(spec: RunSpec, *, log=None) -> dict:
    """Run (or skip) one experiment; returns the record (a finished one is written atomically)."""
    quiet = spec.verbosity == "quiet"
    log = log or (lambda s: None if quiet else print(s, file=sys.stderr, flush=True))
    path = spec.record_path
    if (skipped := _skip_finished(spec, log)) is not None:
        return skipped
    from .runlock import RunBusy, RunLock

    made_checkpoint_dir = not spec.checkpoint_dir.exists()   # only then may the run remove it again
    made_results_dir = not spec.results_dir.exists()
    check_writable(spec)   # a clear error for an unwritable folder, before the lock file is made there
    lock = RunLock(spec.checkpoint_path.with_suffix(".lock"))
    try:
        lock.acquire()
    except RunBusy as e:   # another process runs this cell: leave its checkpoint alone, write nothing
        log(f"busy: {e}")
        return {"status": "busy", "message": str(e), "final": {}, "_skipped": True, "_path": None}
    except OSError as e:   # a full disk, say: one line that names the file
        raise RunError(f"cannot write the run's lock file {lock.path}: {e.strerror or e}") from None
    threads = torch.get_num_threads()
    try:
        if (skipped := _skip_finished(spec, log, warn=False)) is not None:   # finished in the process we waited behind
            return skipped
        remove_leftovers(spec, log)   # the cell is ours now: no other process is writing its temp files
        if spec.threads:   # before any tensor work; the record's versions.torch_threads shows it
            torch.set_num_threads(spec.threads)
        elif spec.device.type == "cpu":   # threads=null: what is fast for this run on this machine now
            from .cpu import auto_threads, machine_load

            small = spec.dataset == "digits" or spec.scale == "smoke"
            torch.set_num_threads(auto_threads(small=small, cores=os.cpu_count() or 1,
                                               load=None if small else machine_load()))
        return _execute(spec, log, path)
    finally:
        torch.set_num_threads(threads)
        lock.release()
        prune_empty_dirs(spec.checkpoint_path.parent, spec.checkpoint_dir, remove_stop=made_checkpoint_dir)
        # a start that failed (bad data, a bad value) wrote no record: leave no empty folder behind either
        prune_empty_dirs(spec.record_path.parent, spec.results_dir, remove_stop=made_results_dir)


def _execute(spec: RunSpec, log, path: Path) -> dict:
    t0, quiet = time.time(), spec.verbosity == "quiet"
    git = _git()  # the code as it was when the run started
    prep = prepare(spec)
    said = data_line(spec.dataset, prep.data)
    if said not in _DATA_SAID:   # which copy of the data (official MD5s or not), once per process
        _DATA_SAID.add(said)
        log(said)
    sinks = []
    if spec.logger == "tensorboard":
        from .tblog import TensorBoardSink

        rel = spec.record_path.relative_to(spec.results_dir).with_suffix("")
        sinks.append(TensorBoardSink(spec.tb_dir / rel, store.flatten({**spec.semantic(),
                                                                       "method_params": prep.method_params})))
    epochs = spec.train.epochs
    # per-sample tables (save_samples / sample_epochs): at most 11 columns of 8 bytes per sample and epoch,
    # written beside the record and carried in the checkpoint until then
    samples = int(prep.stream.num_train) * 11 * 8 * len(sample_epochs_of(spec))
    check_space(spec, checkpoint_bytes=estimate_checkpoint_bytes(prep.method, epochs) + samples if epochs > 1 else 0,
                record_bytes=RECORD_BASE_BYTES + epochs * HISTORY_ROW_BYTES + samples)

    def space_after_checkpoint(written: int, history: list[dict]) -> None:
        """With a checkpoint's real size and a real history row known: is there room to go on?"""
        # the record is written with indent=1: half as much again as the compact row
        row = 3 * len(json.dumps(store.sanitize(history[-1]))) // 2 + 16 if history else HISTORY_ROW_BYTES
        check_space(spec, checkpoint_bytes=written + 2 * row + samples,
                    record_bytes=RECORD_BASE_BYTES + epochs * row + samples)

    trainer = Trainer(prep.method, prep.stream, prep.test_sets, spec.train, device=spec.device,
                      data_seed=spec.seed, clean_labels=prep.clean,
                      checkpoint=spec.checkpoint_path,
                      progress=spec.progress and spec.verbosity == "bar", interrupt_after=spec.interrupt_after,
                      log=log, diagnose_train=spec.diagnose_train, headline=spec.headline, log_epochs=not quiet,
                      sinks=sinks, sample_epochs=sample_epochs_of(spec), dataset_index=dataset_index(prep.data),
                      # what `runs --unfinished` shows of a run in progress: the settings `runs` shows of a record
                      checkpoint_meta={"settings": store.setting_columns(
                          {**spec.semantic(), "method_params": prep.method_params}, spec.noise["options"])},
                      on_checkpoint=space_after_checkpoint)
    res = trainer.fit()
    primary = next(iter(prep.test_sets)) + "_top1"
    if "val" in prep.test_sets and "test" in prep.test_sets:
        primary = "test_top1"
    data = prep.data
    record = {
        "schema_version": store.SCHEMA_VERSION, "status": res.status, "message": res.message,
        "method": spec.method, "dataset": spec.dataset, "scale": spec.scale, "seed": spec.seed,
        "noise_seed": spec.noise_seed, "backbone": spec.backbone, "backbone_init": prep.backbone_init,
        "epochs": spec.train.epochs,
        "config_hash": spec.config_hash, "method_module": type(prep.method).__module__,
        "noise": {**prep.noise.to_record(), "options": spec.noise["options"]},
        "data": {"num_train": int(prep.stream.num_train), "classes": list(getattr(data, "classes", [])),
                 **{k: v for k, v in getattr(data, "meta", {}).items() if isinstance(v, (str, int, float, bool, type(None)))}},
        "effective": {**spec.semantic(), "method_params": prep.method_params, "train": train_config_dict(spec.train),
                      "optim_plan": None if trainer.plan is None else trainer.plan.to_dict()},
        "val_split": prep.val,
        "config": spec.resolved, "git": git, "versions": _versions(spec.device),
        # how the run executed, not what it computed: the compile mode train.compile resolved to
        "runtime": {"compiled": trainer.compile_mode, "cuda_graphs": trainer.cuda_graphs}, "history": res.history,
        "final": {**final_metrics(res.history, primary), "headline": spec.headline},
        "wall_s": res.wall_s, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "elapsed_this_call_s": time.time() - t0,
    }
    for sink in sinks:
        sink.close(None if res.status == "interrupted" else record["final"])
    if trainer.samples and res.status != "interrupted":   # before the record: a record never points at nothing
        from .samples import samples_path, write_samples

        write_samples(samples_path(path), trainer.samples)
        record["samples"] = {"file": samples_path(path).name, "epochs": sorted(trainer.samples)}
    if res.status == "interrupted":
        return {**record, "_path": None}
    record = store.ordered(record)
    try:
        store.write_final(path, record)
    except OSError as e:   # the record's temp file is removed; the last checkpoint stays for the rerun
        raise RunError(f"the record could not be written in {path.parent} ({e.strerror or e}); free space "
                       "there and rerun the same command: it resumes from the last checkpoint") from None
    trainer.discard_checkpoint()   # execute() prunes the emptied folders once the run's lock is gone
    return {**record, "_path": str(path)}


def write_failure(spec: RunSpec, exc: BaseException, tb: str = "") -> dict:
    """Record a run that raised while it ran: status ``failed`` with the exception as its message.

    ``failed`` is not final, so the next run of the same config retries it (resuming from the kept
    checkpoint). A finished record already at the path (a forced rerun that crashed) is left as it is.
    """
    path = spec.record_path
    record = store.ordered({
        "schema_version": store.SCHEMA_VERSION, "status": "failed",
        "message": f"{type(exc).__name__}: {exc}".strip(), "method": spec.method, "dataset": spec.dataset,
        "scale": spec.scale, "seed": spec.seed, "noise_seed": spec.noise_seed, "final": {},
        "noise": {"name": spec.noise["name"], "kind": spec.noise["kind"], "nominal_rate": spec.noise["rate"],
                  "options": spec.noise["options"]},
        "backbone": spec.backbone, "epochs": spec.train.epochs, "config_hash": spec.config_hash,
        "traceback": tb.splitlines()[-30:], "effective": {**spec.semantic(), "train": train_config_dict(spec.train)},
        "git": _git(), "versions": _versions(spec.device), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": spec.resolved, "history": [],
    })
    if store.is_finished(path, reuse=spec.reuse):
        return {**record, "_path": None}
    try:
        store.atomic_write_json(path, record)
    except OSError as e:  # the failure may be the disk itself: still report it, never mask it
        print(f"could not write the failed record {path}: {e}", file=sys.stderr)
        return {**record, "_path": None}
    return {**record, "_path": str(path)}
