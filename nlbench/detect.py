"""Reference detectors of mislabeled samples, beside the methods' own verdicts (issue 24).

``python -m nlbench detect <run overrides> [folds=K] [stop=last|heldout]`` trains cross entropy K times
(K-fold, stratified by the noisy label, drawn with the training seed), each time on K-1 folds with the
run's own protocol (scale, augmentation, schedule), and predicts the held-out fold: out-of-sample
probabilities for every training sample, as confident learning asks for. ``stop=heldout`` (default) takes
each fold's network at the evaluated epoch with the best accuracy on the held-out fold's noisy labels
(early stopping on a noisy validation set: a network trained to the end has memorised its folds' noise,
and its probabilities are a damaged model's; on digits sym0.4 the last epoch gave cleanlab AUROC 0.961 and
a rate estimate of 0.517 for a true 0.356, the held-out stop 0.992 and 0.382); ``stop=last`` at its last
epoch. On them:

- ``cleanlab``: ``cleanlab.filter.find_label_issues`` (its default, prune by noise rate) flags the
  samples; ``cleanlab.rank.get_label_quality_scores`` (self-confidence) ranks them for the AUROC; the
  noise rate is 1 - trace of ``cleanlab.count.estimate_joint``. cleanlab is the field's library for this:
  nlbench calls it and rewrites none of it (``pip install cleanlab``).
- ``ce_loss``: the CE loss of the given label under the same probabilities; flagged where the
  2-component GMM of the losses (DivideMix's split) puts the sample in the high-loss component.

Both are scored against the truth (precision, recall, AUROC) and written as one record,
``<results_dir>/<dataset>/<noise>/cleanlab_cv/seed<k>-<hash>.json`` (``method: cleanlab_cv``), with the
per-sample table beside it (``samples.py``; ``clean_prob`` = the out-of-sample probability of the given
label). The true labels are read only to score, never to detect.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time

import numpy as np
import torch
import torch.nn.functional as F

from . import store
from .metrics import auroc
from .registry import ConfigError, as_int

DETECTOR = "cleanlab_cv"


def kfold(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold id (N,) in 0..folds-1, stratified by ``labels``: each class's samples in a random order
    (``np.random.default_rng([seed, 2])``) dealt round-robin."""
    rng = np.random.default_rng([int(seed), 2])
    fold = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        fold[members] = np.arange(len(members)) % folds
    return fold


def _scores(flagged: np.ndarray, score: np.ndarray, noisy: np.ndarray, prefix: str) -> dict:
    tp = int((flagged & noisy).sum())
    return {f"{prefix}_precision": tp / max(int(flagged.sum()), 1), f"{prefix}_recall": tp / max(int(noisy.sum()), 1),
            f"{prefix}_auroc": auroc(torch.from_numpy(score), torch.from_numpy(noisy)),
            f"{prefix}_flagged": float(flagged.mean())}


STOPS = ("last", "heldout")


class _BestHeldout:
    """A trainer sink that, at every epoch the run evaluates, predicts the held-out fold and keeps the
    probabilities of the epoch whose accuracy on the fold's **given (noisy)** labels is highest (the
    first such epoch on a tie). The held-out fold is a noisy validation set: nothing here reads the truth."""

    def __init__(self, net, stream, labels: torch.Tensor, cfg):
        self.net, self.stream, self.labels, self.cfg = net, stream, labels, cfg
        self.best_acc, self.best_epoch, self.probs = -1.0, 0, None
        self.curve: list[tuple[int, float]] = []   # (epoch, accuracy on the fold's noisy labels)

    def epoch(self, row: dict) -> None:
        e = int(row["epoch"])
        if not self.cfg.evaluates(e - 1):   # the trainer's own schedule (rows count epochs from 1)
            return
        was = self.net.training
        self.net.eval()
        probs = F.softmax(self.stream.infer(self.net).float(), 1)
        self.net.train(was)
        acc = float((probs.argmax(1).cpu() == self.labels).float().mean())
        self.curve.append((e, 100.0 * acc))
        if acc > self.best_acc:
            self.best_acc, self.best_epoch, self.probs = acc, e, probs.cpu().numpy()


def out_of_sample_probs(spec, prep, folds: int, log=print, stop: str = "heldout") -> tuple[np.ndarray, list[int], list[dict]]:
    """(N, K) softmax of each training sample by a CE network that never trained on it, and the epoch
    each fold's network was taken at: its last (``stop="last"``), or the evaluated epoch with the best
    accuracy on the held-out fold's noisy labels (``stop="heldout"``; early stopping on a noisy
    validation set, as confident learning wants probabilities from a model that has not memorised), and
    with ``heldout`` each fold's curve: one row per evaluated epoch, its accuracy on the fold's noisy labels."""
    from .backbones import build_backbone
    from .method import METHODS
    from .stream import DeviceStream
    from .trainer import Trainer

    data, stream = prep.data, prep.stream
    if not isinstance(stream, DeviceStream):
        raise ConfigError(f"detect needs an in-memory dataset (digits, cifar10, cifar100), not {spec.dataset!r}")
    noisy = stream.y.cpu().numpy()
    fold = kfold(noisy, folds, spec.seed)
    K = data.num_classes
    probs = np.zeros((len(noisy), K), dtype=np.float32)
    t = spec.train
    kw = dict(mean=data.mean, std=data.std, batch_size=t.batch_size, infer_batch_size=t.infer_batch_size,
              device=spec.device, channels_last=t.channels_last, amp=t.amp)
    extra = {"input_size": int(data.train_x.shape[-1])} if spec.backbone == "mlp" else {}
    epochs, curves = [], []
    for k in range(folds):
        tr, ho = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        tr_t, ho_t = torch.from_numpy(tr).to(stream.x.device), torch.from_numpy(ho).to(stream.x.device)
        s_tr = DeviceStream(stream.x[tr_t], stream.y[tr_t], crop_pad=int(spec.augment.get("crop_pad", 0)),
                            flip=bool(spec.augment.get("flip", False)), **kw)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed * 1000 + k)
            net = build_backbone(spec.backbone, num_classes=K, in_channels=data.in_channels,
                                 **{**extra, **spec.backbone_options})
        gen = torch.Generator(device=spec.device).manual_seed(spec.seed * 1000 + k + 1)
        method = METHODS.get("ce")(nets=[net], num_classes=K, noisy_labels=torch.from_numpy(noisy[tr]), generator=gen)
        t0 = time.perf_counter()
        s_ho = DeviceStream(stream.x[ho_t], stream.y[ho_t], **kw)
        sinks = [_BestHeldout(method.nets[0], s_ho, torch.from_numpy(noisy[ho]), t)] if stop == "heldout" else []
        res = Trainer(method, s_tr, {}, t, device=spec.device, data_seed=spec.seed * 1000 + k, progress=False,
                      log=log, log_epochs=False, sinks=sinks).fit()
        if res.status != "completed":
            raise RuntimeError(f"fold {k + 1} of {folds}: {res.status} ({res.message})")
        if sinks:
            probs[ho], at = sinks[0].probs, sinks[0].best_epoch
            curves += [{"fold": k, "epoch": e, "heldout_noisy_top1": a} for e, a in sinks[0].curve]
        else:
            probs[ho], at = F.softmax(s_ho.infer(method.nets[0]), 1).cpu().numpy(), t.epochs
        epochs.append(at)
        log(f"fold {k + 1}/{folds}: trained on {len(tr)}, predicted {len(ho)} with epoch {at} "
            f"({time.perf_counter() - t0:.0f}s)")
    return probs, epochs, curves


def detect(spec, *, folds: int = 4, stop: str = "heldout", log=print) -> dict:
    """Run the reference detectors for ``spec`` (a CE run's spec) and write their record."""
    from .prepare import dataset_index, prepare
    from .runner import _git, _versions
    from .samples import samples_path, write_samples

    folds = as_int("folds", folds)
    if folds < 2:
        raise ConfigError(f"folds={folds} must be >= 2 (K-fold cross-validation)")
    if stop not in STOPS:
        raise ConfigError(f"stop={stop!r} is not a stopping rule; valid choices: {', '.join(STOPS)}")
    try:
        from cleanlab.count import estimate_joint
        from cleanlab.filter import find_label_issues
        from cleanlab.rank import get_label_quality_scores
    except ImportError:
        raise ConfigError("detect needs the cleanlab package: pip install cleanlab") from None
    # stop=last adds nothing, so the records made before the option existed keep their hash
    semantic = {**spec.semantic(), "method": DETECTOR, "folds": folds, **({"stop": stop} if stop != "last" else {})}
    chash = hashlib.sha256(json.dumps(semantic, sort_keys=True, default=str).encode()).hexdigest()[:10]
    path = store.record_path(spec.results_dir, dataset=spec.dataset, noise=spec.noise["name"], method=DETECTOR,
                             seed=spec.seed, config_hash=chash)
    if not spec.force and (found := store.finished_record(path, reuse=spec.reuse)) is not None:
        done, rec = found
        log(f"skipping: finished record exists at {done} (pass force=true to rerun)")
        return {**rec, "_path": str(done)}
    t0 = time.time()
    prep = prepare(dataclasses.replace(spec, method="ce", method_params={}))
    if prep.clean is None:
        raise ConfigError(f"detect scores against the true labels, which {spec.dataset!r} does not have")
    probs, stop_epochs, curves = out_of_sample_probs(spec, prep, folds, log, stop)
    given = prep.stream.y.cpu().numpy()
    true = prep.clean.numpy()
    noisy = given != true
    issues = find_label_issues(labels=given, pred_probs=probs)
    quality = get_label_quality_scores(labels=given, pred_probs=probs)
    p_given = probs[np.arange(len(given)), given]
    loss = -np.log(np.clip(p_given, 1e-12, None))
    from methods.ssl_parts import gmm_clean_prob, minmax

    w = gmm_clean_prob(minmax(torch.from_numpy(loss)), seed=spec.seed).numpy()
    final = {**_scores(issues, 1 - quality, noisy, "det"), **_scores(w < 0.5, loss, noisy, "det_loss"),
             "noise_rate_est": 1.0 - float(estimate_joint(labels=given, pred_probs=probs).trace()),
             "noise_rate_true": float(noisy.mean()), "oof_top1": 100.0 * float((probs.argmax(1) == true).mean()),
             "folds": folds, "stop": stop, "stop_epochs": stop_epochs}
    pred = probs.argmax(1)
    index = dataset_index(prep.data)
    table = {"index": np.arange(len(given)), "dataset_index": np.full(len(given), -1) if index is None else index,
             "given": given, "true": true, "is_noisy": noisy.astype(np.int64), "clean_prob": p_given.astype(np.float32),
             "verdict_label": np.full(len(given), -1), "verdict_prob": np.full(len(given), np.nan, np.float32),
             "loss": loss.astype(np.float32), "pred": pred, "pred_prob": probs.max(1).astype(np.float32)}
    write_samples(samples_path(path), {spec.train.epochs: table})
    record = store.ordered({
        "schema_version": store.SCHEMA_VERSION, "record_kind": "detector", "status": "completed", "message": "",
        "method": DETECTOR,
        "dataset": spec.dataset, "scale": spec.scale, "seed": spec.seed, "noise_seed": spec.noise_seed,
        "backbone": spec.backbone, "epochs": spec.train.epochs, "config_hash": chash,
        "noise": {**prep.noise.to_record(), "options": spec.noise["options"]},
        "data": {"num_train": int(len(given)),
                 **{k: v for k, v in getattr(prep.data, "meta", {}).items() if isinstance(v, (str, int, float, bool, type(None)))}},
        "effective": semantic, "config": spec.resolved, "git": _git(), "versions": _versions(spec.device),
        "final": final, "history": curves, "samples": {"file": samples_path(path).name, "epochs": [spec.train.epochs]},
        "wall_s": time.time() - t0, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    store.write_final(path, record)
    log(f"detect: cleanlab precision {final['det_precision']:.3f} recall {final['det_recall']:.3f} "
        f"AUROC {final['det_auroc']:.3f}; CE loss AUROC {final['det_loss_auroc']:.3f}; noise rate est "
        f"{final['noise_rate_est']:.3f} (true {final['noise_rate_true']:.3f}) record={path}")
    return {**record, "_path": str(path)}
