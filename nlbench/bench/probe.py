"""The real trainer, instrumented: each method built exactly as ``python -m nlbench run`` builds it
(``build_spec`` + ``prepare``), trained with ``Trainer.fit`` for a few epochs (no checkpoint, no
record) while :class:`StepProbe` times its steady-state steps; and the bare loop on CE's network."""
from __future__ import annotations

import dataclasses
import time
import warnings
from dataclasses import dataclass, field

import torch

from ..common import bf16_on
from .floor import bare_infer, bare_train, epoch_phase, sync


def count_samples(batch) -> int:
    """Training samples in whatever ``Method.batches`` yields: a Batch, or tuples / dataclasses
    holding Batches (DivideMix's labelled + unlabelled step counts both)."""
    from ..method import Batch

    if isinstance(batch, Batch):
        return int(batch.idx.shape[0])
    if isinstance(batch, (tuple, list)):
        return sum(count_samples(b) for b in batch)
    if dataclasses.is_dataclass(batch):
        return sum(count_samples(getattr(batch, f.name)) for f in dataclasses.fields(batch))
    return 0


class StepProbe:
    """Times a method's steady-state steps inside ``Trainer.fit`` by wrapping three of its hooks on
    the instance (the trainer and the method run unchanged): ``loss`` counts the step's samples,
    ``on_step_end`` opens the window after ``warmup`` (>= 1) steps of each epoch, ``on_epoch_end``
    closes it after the epoch's last step (the device synchronised at both ends). On CUDA, with a
    ``caught`` warnings list, it counts the host synchronisations inside the window
    (``torch.cuda.set_sync_debug_mode``)."""

    def __init__(self, method, *, warmup: int, device: torch.device, caught: list | None = None) -> None:
        if warmup < 1:
            raise ValueError(f"warmup={warmup} must be >= 1")
        self.m, self.warmup, self.device = method, warmup, device
        self.caught = caught if device.type == "cuda" else None
        self.epochs: list[dict] = []
        self._reset()
        loss, step_end, epoch_end = method.loss, method.on_step_end, method.on_epoch_end

        def probed_loss(batch, ctx):
            self._pending = count_samples(batch)
            return loss(batch, ctx)

        def probed_step_end(ctx):
            step_end(ctx)
            self.steps += 1
            if self.steps > self.warmup:
                self.w_steps += 1
                self.w_samples += self._pending
            elif self.steps == self.warmup:
                sync(self.device)
                self.t0 = time.perf_counter()
                if self.caught is not None:
                    self._w0 = len(self.caught)
                    torch.cuda.set_sync_debug_mode("warn")

        def probed_epoch_end(ctx):
            dt, syncs = float("nan"), None
            if self.t0 is not None:
                if self.caught is not None:
                    torch.cuda.set_sync_debug_mode(0)
                    syncs = sum("synchroniz" in str(w.message) for w in self.caught[self._w0:])
                sync(self.device)
                dt = time.perf_counter() - self.t0
            warm, lab = epoch_phase(self.m, ctx.epoch, ctx.epochs, ctx.lr_ramp_epochs)
            self.epochs.append({"epoch": ctx.epoch, "steps": self.steps, "timed_steps": self.w_steps,
                                "timed_samples": self.w_samples, "timed_s": dt, "warmup_epoch": warm,
                                "labeled": lab, "host_syncs": syncs})
            self._reset()
            epoch_end(ctx)

        method.loss, method.on_step_end, method.on_epoch_end = probed_loss, probed_step_end, probed_epoch_end

    def _reset(self) -> None:
        self.steps = self.w_steps = self.w_samples = self._pending = self._w0 = 0
        self.t0 = None


@dataclass
class MethodResult:
    method: str
    num_train: int
    num_test: int
    protocol_epochs: int            # the epochs of the protocol (before --epochs), for the grid estimate
    epochs: list[dict] = field(default_factory=list)   # per epoch: trainer seconds + probe numbers


def overrides(a, method: str, epochs: int | None) -> list[str]:
    o = [f"method={method}", f"dataset={a.dataset}", f"scale={a.scale}", f"device={a.device}",
         "progress=false", f"seed={a.seed}", f"noise={a.noise}"]
    if a.backbone:
        o.append(f"backbone={a.backbone}")
    if a.data_dir:
        o.append(f"data_dir={a.data_dir}")
    if epochs is not None:
        o.append(f"train.epochs={epochs}")
    if a.batch_size:
        o.append(f"train.batch_size={a.batch_size}")
    for k in ("amp", "channels_last", "compile"):
        v = getattr(a, k)
        if v is not None:
            o.append(f"train.{k}={str(v).lower()}")
    if a.compile_mode is not None:
        o.append(f"train.compile_mode={a.compile_mode}")
    return o + list(a.overrides)


def build(a, method: str):
    """(spec, prepared) of ``method`` as ``python -m nlbench run`` builds them, and the protocol's epochs."""
    from ..config import compose
    from ..prepare import prepare
    from ..spec import build_spec

    protocol_epochs = build_spec(compose(overrides(a, method, None))).train.epochs
    spec = build_spec(compose(overrides(a, method, a.epochs)))
    return spec, prepare(spec), protocol_epochs


def measure_method(a, name: str, device: torch.device) -> MethodResult:
    from ..trainer import Trainer

    spec, prep, protocol_epochs = build(a, name)
    trainer = Trainer(prep.method, prep.stream, prep.test_sets, spec.train, device=spec.device,
                      data_seed=spec.seed, clean_labels=prep.clean, checkpoint=None, progress=False,
                      log=lambda s: None, headline=spec.headline)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        probe = StepProbe(trainer.method, warmup=a.warmup, device=device, caught=caught)
        res = trainer.fit()
    if res.status != "completed":
        raise RuntimeError(f"benchmark run of {name} ended {res.status}: {res.message}")
    num_test = sum(len(y) for split in prep.test_sets.values() for _, y in split())
    rows = [{**p, "seconds": h["seconds"], "train_seconds": h.get("train_seconds")}
            for p, h in zip(probe.epochs, res.history)]
    return MethodResult(name, int(prep.stream.num_train), int(num_test), protocol_epochs, rows)


def measure_bare(a, device: torch.device, run: int) -> dict:
    """The bare training and inference rates on the network and protocol of CE for this benchmark."""
    from ..trainer import compile_mode_for, make_optimizer, uses_cuda_graphs

    spec, prep, _ = build(a, "ce")
    cfg = spec.train
    x0 = next(iter(prep.stream.batches(batch_size=2, generator=torch.Generator().manual_seed(0)))).x
    shape, k = tuple(x0.shape[1:]), prep.method.num_classes
    net = prep.method.nets[0].to(device)   # CE's network: the backbone the methods train, same init
    if cfg.channels_last:
        net.to(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True    # as the trainer sets it
    mode = compile_mode_for(cfg, device)         # as the trainer resolves it
    if mode is not None:
        net.compile(mode=mode)
    graphs = uses_cuda_graphs(mode, device)
    opt = make_optimizer(list(net.parameters()), cfg, device)
    tr = bare_train(net, opt, batch_size=cfg.batch_size, steps=a.bare_steps, warmup=a.warmup, shape=shape,
                    num_classes=k, device=device, amp=cfg.amp, channels_last=cfg.channels_last, seed=run,
                    cuda_graphs=graphs)
    inf = bare_infer(net, batch_size=cfg.infer_batch_size, batches=max(a.bare_steps // 4, 2), warmup=2,
                     shape=shape, num_classes=k, device=device, amp=cfg.amp, channels_last=cfg.channels_last,
                     seed=run + 1000)
    by_batch = {}
    for bs in a.infer_batches:   # the same network and data; which inference batch suits this device
        by_batch[str(bs)] = inf.ips if bs == cfg.infer_batch_size else bare_infer(
            net, batch_size=bs, batches=max(a.bare_steps * cfg.infer_batch_size // (4 * bs), 2), warmup=2,
            shape=shape, num_classes=k, device=device, amp=cfg.amp, channels_last=cfg.channels_last,
            seed=run + 1000).ips
    return {"train_ips": tr.ips, "infer_ips": inf.ips, "infer_ips_by_batch": by_batch,
            "train_steps": tr.steps, "train_images": tr.images,
            "batch_size": cfg.batch_size, "infer_batch_size": cfg.infer_batch_size,
            "backbone": spec.backbone, "amp": bf16_on(cfg.amp, device),
            "channels_last": cfg.channels_last, "compile": mode, "cuda_graphs": graphs}
