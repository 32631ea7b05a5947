"""THE training loop: epochs, steps, optimisers, schedule, evaluation, diagnostics, checkpoints.

The trainer knows no method by name. It builds one optimiser per network the method owns, asks the
method for its batch stream and its loss, steps every optimiser after each backward (a network that
got no gradient in a step is left untouched by SGD/Adam), evaluates top-1/top-5 on every test split
each epoch, times each epoch and checkpoints everything needed to resume bit-exactly at an epoch
boundary: networks, optimisers, method buffers (per-sample state), the method's generator, the data
generator and the global torch RNG.
"""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch

from .method import Context, Method
from .metrics import belief_stats, confidence_stats, selection_stats, topk_correct
from .registry import ConfigError, as_int, check_range

SCHEDULES = ("cosine", "multistep", "onecycle", "constant")
OPTIMIZERS = ("sgd", "adam")


@dataclass
class TrainConfig:
    """Optimisation protocol. ``schedule``: cosine (per epoch, to ``eta_min``), multistep
    (x ``gamma`` at each of ``milestones``), onecycle (linear warm-up over ``warmup_epochs`` from
    lr/10, then cosine to ``eta_min``), constant."""

    epochs: int
    batch_size: int
    lr: float
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    optimizer: str = "sgd"
    schedule: str = "cosine"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    eta_min: float = 0.0
    amp: bool = True               # bf16 autocast, CUDA only
    channels_last: bool = True     # networks and batches in channels_last (CUDA and CPU)
    compile: bool = False          # torch.compile the networks (CUDA)
    infer_batch_size: int = 1024
    num_workers: int = 4           # file-based datasets
    checkpoint_every: int = 1

    def __post_init__(self) -> None:
        for k in ("epochs", "batch_size", "infer_batch_size", "num_workers", "checkpoint_every"):
            setattr(self, k, as_int(f"train.{k}", getattr(self, k)))
        if self.epochs < 1:
            raise ConfigError(f"train.epochs={self.epochs} must be >= 1")
        if self.batch_size < 2:
            raise ConfigError(f"train.batch_size={self.batch_size} must be >= 2")
        if self.checkpoint_every < 1:
            raise ConfigError(f"train.checkpoint_every={self.checkpoint_every} must be >= 1")
        check_range("train.lr", self.lr, 0, None, lo_open=True)
        check_range("train.momentum", self.momentum, 0, 1, hi_open=True)
        check_range("train.weight_decay", self.weight_decay, 0, None)
        check_range("train.gamma", self.gamma, 0, None, lo_open=True)
        check_range("train.warmup_epochs", self.warmup_epochs, 0, None)
        check_range("train.eta_min", self.eta_min, 0, None)
        for k in ("nesterov", "amp", "channels_last", "compile"):
            if not isinstance(getattr(self, k), bool):
                raise ConfigError(f"train.{k} must be true or false, got {getattr(self, k)!r}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"unknown train.schedule {self.schedule!r}; valid choices: {', '.join(SCHEDULES)}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown train.optimizer {self.optimizer!r}; valid choices: {', '.join(OPTIMIZERS)}")
        if isinstance(self.milestones, (str, int, float)):
            raise ConfigError(f"train.milestones must be a list of epochs, got {self.milestones!r}")
        self.milestones = tuple(as_int("train.milestones", m) for m in self.milestones)

    def lr_at(self, epoch: int) -> float:
        """Learning rate used throughout 0-based ``epoch``."""
        e, E, lr = epoch, self.epochs, self.lr
        if self.schedule == "constant":
            return lr
        if self.schedule == "multistep":
            return lr * self.gamma ** sum(e >= m for m in self.milestones)
        w = self.warmup_epochs if self.schedule == "onecycle" else 0.0
        if e < w:
            return lr / 10 + (lr - lr / 10) * e / w
        t = (e - w) / max(E - w, 1)
        return self.eta_min + 0.5 * (lr - self.eta_min) * (1 + math.cos(math.pi * t))


EvalSet = Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]]


@dataclass
class FitResult:
    status: str                                  # completed | diverged | interrupted
    history: list[dict] = field(default_factory=list)
    wall_s: float = 0.0
    message: str = ""


class Trainer:
    """Runs one method to completion (or divergence), resuming from ``checkpoint`` when it exists."""

    def __init__(self, method: Method, stream, test_sets: dict[str, EvalSet], cfg: TrainConfig, *,
                 device: torch.device, data_seed: int, clean_labels: torch.Tensor | None = None,
                 checkpoint: Path | None = None, progress: bool = True,
                 interrupt_after: int | None = None, log: Callable[[str], None] | None = None,
                 diagnose_train: bool = False, log_epochs: bool = True) -> None:
        self.method = method.to(device)
        self.stream = stream
        self.test_sets = test_sets
        self.cfg = cfg
        self.device = device
        self.data_gen = torch.Generator().manual_seed(int(data_seed))
        self.clean = None if clean_labels is None else clean_labels.to(device)
        self.checkpoint = checkpoint
        self.progress = progress
        self.interrupt_after = interrupt_after   # for tests: stop as if killed after this many epochs
        self.diagnose_train = diagnose_train     # extra eval pass per epoch: fit of clean vs mislabeled samples
        self.log = log or (lambda s: print(s, file=sys.stderr, flush=True))
        self.log_epochs = log_epochs             # False (verbosity=quiet): no line per epoch
        cuda = device.type == "cuda"
        if cfg.channels_last:
            for net in method.nets:
                net.to(memory_format=torch.channels_last)
        if cuda and cfg.compile:
            for i in range(len(method.nets)):
                method.nets[i] = torch.compile(method.nets[i])
        self.optimizers = [self._optimizer(net) for net in method.nets]

    def _optimizer(self, net: torch.nn.Module) -> torch.optim.Optimizer:
        c = self.cfg
        if c.optimizer == "adam":
            return torch.optim.Adam(net.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        return torch.optim.SGD(net.parameters(), lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay,
                               nesterov=c.nesterov)

    # -- checkpoints ---------------------------------------------------------------------------
    def _save(self, epoch_done: int, history: list[dict], wall: float) -> None:
        if self.checkpoint is None:
            return
        state = {
            "epoch_done": epoch_done, "history": history, "wall_s": wall,
            "method": self.method.state_dict(),
            "optimizers": [o.state_dict() for o in self.optimizers],
            "method_generator": self.method.generator.get_state(),
            "data_generator": self.data_gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }
        tmp = self.checkpoint.with_suffix(".tmp")
        for attempt in range(3):  # a parallel job may prune the (empty) folder between mkdir and save
            try:
                self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
                torch.save(state, tmp)
                break
            except (FileNotFoundError, RuntimeError):  # torch says RuntimeError("Parent directory ...")
                if attempt == 2 or self.checkpoint.parent.is_dir():
                    raise
        os.replace(tmp, self.checkpoint)

    def _load(self) -> tuple[int, list[dict], float]:
        if self.checkpoint is None or not self.checkpoint.exists():
            return 0, [], 0.0
        try:
            state = torch.load(self.checkpoint, map_location=self.device, weights_only=False)
            self.method.load_state_dict(state["method"])
            for o, s in zip(self.optimizers, state["optimizers"]):
                o.load_state_dict(s)
        except Exception as e:  # an unreadable checkpoint must not block the run: start over
            self.log(f"checkpoint {self.checkpoint} unreadable ({type(e).__name__}: {e}); starting from scratch")
            return 0, [], 0.0
        self.method.generator.set_state(state["method_generator"].cpu())
        self.data_gen.set_state(state["data_generator"].cpu())
        torch.set_rng_state(state["torch_rng"].cpu())
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
        self.log(f"resumed from {self.checkpoint} after epoch {state['epoch_done']}")
        return int(state["epoch_done"]), list(state["history"]), float(state["wall_s"])

    # -- evaluation ----------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        out = {}
        self.method.eval()
        try:
            for name, batches in self.test_sets.items():
                n = c1 = c5 = 0
                for x, y in batches():
                    with torch.autocast(self.device.type, torch.bfloat16,
                                        enabled=self.cfg.amp and self.device.type == "cuda"):
                        p = self.method.predict(x.to(self.device, non_blocking=True))
                    y = y.to(self.device)
                    c1 += topk_correct(p, y, 1)
                    c5 += topk_correct(p, y, 5)
                    n += len(y)
                out[f"{name}_top1"] = 100.0 * float(c1) / max(n, 1)
                out[f"{name}_top5"] = 100.0 * float(c5) / max(n, 1)
        finally:
            self.method.train()
        return out

    def diagnostics(self) -> dict[str, float]:
        if self.clean is None:
            return {}
        is_clean = self.method.noisy_labels == self.clean
        out = {}
        sel = self.method.selected()
        if sel is not None:
            out.update(selection_stats(sel.to(self.device), is_clean))
        bel = self.method.label_beliefs()
        if bel is not None:
            out.update(belief_stats(bel.to(self.device), self.clean, is_clean))
        if self.diagnose_train:  # eval mode, no grad, no RNG: the run's numbers are unchanged
            probs = torch.softmax(self.stream.infer(self.method.nets[0]), dim=1)
            out.update(confidence_stats(probs, self.method.noisy_labels, self.clean))
        return out

    # -- the loop ------------------------------------------------------------------------------
    def fit(self) -> FitResult:
        m, cfg = self.method, self.cfg
        start_epoch, history, wall = self._load()
        steps_default = self.stream.steps(batch_size=cfg.batch_size) if hasattr(self.stream, "steps") else 0
        ctx = Context(epoch=start_epoch, epochs=cfg.epochs, stream=self.stream, batch_size=cfg.batch_size,
                      device=self.device, generator=self.data_gen, steps_per_epoch=steps_default,
                      step=sum(h.get("steps", 0) for h in history))
        m.train()
        if start_epoch == 0:
            # the global torch RNG (dropout, any library-internal draw) starts from the run's seed;
            # on resume it is restored from the checkpoint instead
            torch.manual_seed(int(torch.randint(0, 2 ** 62, (1,), generator=self.data_gen)))
            m.on_train_start(ctx)
        amp = cfg.amp and self.device.type == "cuda"
        for epoch in range(start_epoch, cfg.epochs):
            t0 = time.perf_counter()
            ctx.epoch, ctx.step_in_epoch = epoch, 0
            lr = cfg.lr_at(epoch)
            for o in self.optimizers:
                for g in o.param_groups:
                    g["lr"] = lr
            m.on_epoch_start(ctx)
            sums: dict[str, torch.Tensor] = {}
            it = m.batches(ctx)
            bar = None
            if self.progress and sys.stderr.isatty():
                from tqdm import tqdm
                bar = tqdm(it, total=steps_default or None, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                           leave=False, dynamic_ncols=True)
                it = bar
            for batch in it:
                with torch.autocast(self.device.type, torch.bfloat16, enabled=amp):
                    out = m.loss(batch, ctx)
                for o in self.optimizers:
                    o.zero_grad(set_to_none=True)
                out.loss.backward()
                for o in self.optimizers:
                    o.step()
                ctx.step += 1
                ctx.step_in_epoch += 1
                sums["loss"] = sums.get("loss", 0) + out.loss.detach().float()
                for k, v in out.logs.items():
                    sums[k] = sums.get(k, 0) + (v.detach().float() if torch.is_tensor(v) else float(v))
                m.on_step_end(ctx)
            if bar is not None:
                bar.close()
            steps = ctx.step_in_epoch
            logs = {k: float(v) / max(steps, 1) for k, v in sums.items()}
            if not math.isfinite(logs.get("loss", 0.0)):
                history.append({"epoch": epoch + 1, "lr": lr, "steps": steps, **logs,
                                "seconds": time.perf_counter() - t0})
                self.log(f"epoch {epoch + 1}: loss is {logs.get('loss')}; the run diverged")
                return FitResult("diverged", history, wall + time.perf_counter() - t0,
                                 f"non-finite loss at epoch {epoch + 1}")
            m.on_epoch_end(ctx)
            train_s = time.perf_counter() - t0
            row = {"epoch": epoch + 1, "lr": lr, "steps": steps, **logs, **self.evaluate(),
                   **self.diagnostics(), "train_seconds": train_s}
            row["seconds"] = time.perf_counter() - t0
            history.append(row)
            wall += row["seconds"]
            main = next((k for k in row if k.endswith("_top1")), None)
            if self.log_epochs:
                self.log(f"epoch {epoch + 1}/{cfg.epochs} loss {logs.get('loss', float('nan')):.4f} "
                         + (f"{main} {row[main]:.2f}% " if main else "") + f"lr {lr:.4g} ({row['seconds']:.1f}s)")
            last = epoch + 1 == cfg.epochs
            if not last and (epoch + 1) % cfg.checkpoint_every == 0:
                self._save(epoch + 1, history, wall)
            if self.interrupt_after is not None and epoch + 1 - start_epoch >= self.interrupt_after and not last:
                self._save(epoch + 1, history, wall)
                return FitResult("interrupted", history, wall, "stopped by interrupt_after")
        return FitResult("completed", history, wall)

    def discard_checkpoint(self) -> None:
        if self.checkpoint is not None and self.checkpoint.exists():
            self.checkpoint.unlink()


def train_config_dict(cfg: TrainConfig) -> dict:
    d = asdict(cfg)
    d["milestones"] = list(d["milestones"])
    return d
