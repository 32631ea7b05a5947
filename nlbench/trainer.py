"""THE training loop: epochs, steps, optimisers, schedule, evaluation, diagnostics, checkpoints.

The trainer knows no method by name. It builds one optimiser per parameter group the method declares
(default: one per network), with the protocol's optimiser and lr schedule or the method's own
:class:`~nlbench.method.OptimPlan`; asks the method for its batch stream and its loss, steps every
optimiser after each backward (a network that got no gradient in a step is left untouched by
SGD/Adam), evaluates top-1/top-5 on every test split each epoch (for several networks: each
network, the ensemble, and the method's headline as ``<split>_top1``), times each epoch and
checkpoints everything needed to resume bit-exactly at an epoch boundary: networks, optimisers and
the optimiser plan, method buffers (per-sample state), the method's generator, the data generator
and the global torch RNG.
"""
from __future__ import annotations

import io
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch

from .common import bf16_on, progress_bar
from .method import Context, Method, OptimPlan
from .metrics import belief_stats, confidence_stats, detector_stats, selection_stats, topk_correct
from .registry import ConfigError, RunError, as_int, check_range
from .safeio import checkpoint_header, checkpoint_payload, write_durably

SCHEDULES = ("cosine", "multistep", "onecycle", "constant")
OPTIMIZERS = ("sgd", "adam")
#: what ``<split>_top1`` (the record's headline) means for a method with several networks:
#: the ensemble (Method.predict), the mean of the networks' accuracies, or one network (net<i>)
HEADLINES = ("ensemble", "mean_nets")


def check_headline(headline: str, num_networks: int) -> str:
    valid = [*HEADLINES, *(f"net{i}" for i in range(num_networks))]
    if headline not in valid:
        raise ConfigError(f"unknown headline {headline!r}; valid choices: {', '.join(valid)}")
    return headline


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
COMPILE_AUTO_MIN_EPOCHS = 20
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")
#: compiled variants allowed per network frame (dynamo's recompile_limit, default 8). A network is called
#: in up to 3 grad modes (training, no_grad, inference) x 2 batch-norm modes, each compiled for its first
#: batch size and again with a dynamic one: DivideMix and GSS-SSL use 8 such variants on cnn_small
#: (tests/test_gpu_paths.py), all of the default; past the limit dynamo runs the frame eager, silently.
RECOMPILE_LIMIT = 32


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
    amp: bool | str = True         # bf16 autocast: true = on CUDA only, false, always = on the CPU too
    channels_last: bool = True     # networks and batches in channels_last (CUDA and CPU)
    compile: bool | str = "auto"   # torch.compile the networks: true, false, or auto (see compile_mode_for)
    compile_mode: str = "default"  # torch.compile mode; reduce-overhead adds CUDA graphs for fixed-shape steps
    infer_batch_size: int = 1024
    num_workers: int = 4           # file-based datasets
    checkpoint_every: int = 1
    eval_every: int = 1            # evaluate the test splits every k epochs and at the last epoch

    def __post_init__(self) -> None:
        for k in ("epochs", "batch_size", "infer_batch_size", "num_workers", "checkpoint_every", "eval_every"):
            setattr(self, k, as_int(f"train.{k}", getattr(self, k)))
        if self.epochs < 1:
            raise ConfigError(f"train.epochs={self.epochs} must be >= 1")
        if self.batch_size < 2:
            raise ConfigError(f"train.batch_size={self.batch_size} must be >= 2")
        if self.checkpoint_every < 1:
            raise ConfigError(f"train.checkpoint_every={self.checkpoint_every} must be >= 1")
        if self.eval_every < 1:
            raise ConfigError(f"train.eval_every={self.eval_every} must be >= 1 (evaluate every k epochs)")
        check_range("train.lr", self.lr, 0, None, lo_open=True)
        check_range("train.momentum", self.momentum, 0, 1, hi_open=True)
        check_range("train.weight_decay", self.weight_decay, 0, None)
        check_range("train.gamma", self.gamma, 0, None, lo_open=True)
        check_range("train.warmup_epochs", self.warmup_epochs, 0, None)
        check_range("train.eta_min", self.eta_min, 0, None)
        for k in ("nesterov", "channels_last"):
            if not isinstance(getattr(self, k), bool):
                raise ConfigError(f"train.{k} must be true or false, got {getattr(self, k)!r}")
        if not (isinstance(self.amp, bool) or self.amp == "always"):
            raise ConfigError(f"train.amp must be true or false (bf16 autocast on CUDA, or never) or always "
                              f"(bf16 on the CPU too), got {self.amp!r}")
        if not (isinstance(self.compile, bool) or self.compile == "auto"):
            raise ConfigError(f"train.compile must be true, false or auto, got {self.compile!r}")
        if self.compile_mode not in COMPILE_MODES:
            raise ConfigError(f"unknown train.compile_mode {self.compile_mode!r}; "
                              f"valid choices: {', '.join(COMPILE_MODES)}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"unknown train.schedule {self.schedule!r}; valid choices: {', '.join(SCHEDULES)}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown train.optimizer {self.optimizer!r}; valid choices: {', '.join(OPTIMIZERS)}")
        if isinstance(self.milestones, (str, int, float)):
            raise ConfigError(f"train.milestones must be a list of epochs, got {self.milestones!r}")
        self.milestones = tuple(as_int("train.milestones", m) for m in self.milestones)

    def evaluates(self, epoch: int) -> bool:
        """Whether 0-based ``epoch`` ends with an evaluation of the test splits: every ``eval_every``
        epochs and always the last one (the headline)."""
        return (epoch + 1) % self.eval_every == 0 or epoch + 1 == self.epochs

    @property
    def lr_ramp_epochs(self) -> float:
        """Length of the schedule's linear lr ramp in epochs (onecycle's ``warmup_epochs``; else 0)."""
        return float(self.warmup_epochs) if self.schedule == "onecycle" else 0.0

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


def checkpoint_write_error(e: OSError, folder: Path) -> str:
    """One line for a checkpoint that could not be written: a full disk (or quota) says so."""
    import errno

    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"no space left on device: the checkpoint could not be written in {folder} (the partial file "
                f"was removed); free space there or set checkpoint_dir=<a folder on another disk>")
    return (f"the checkpoint could not be written in {folder} ({e.strerror or type(e).__name__}; the partial "
            f"file was removed); set checkpoint_dir=<a writable folder>")


def load_checkpoint(path: Path, map_location=None) -> dict:
    """A checkpoint written by :meth:`Trainer._save`, its sha256 checked first (raises
    safeio.CheckpointMismatch when the content does not match)."""
    return torch.load(io.BytesIO(checkpoint_payload(path)), map_location=map_location, weights_only=False)


def compile_mode_for(cfg: TrainConfig, device: torch.device) -> str | None:
    """The ``torch.compile`` mode a run on ``device`` uses, or None for eager.

    ``train.compile=auto`` (the default) compiles on CUDA when the run has at least
    ``COMPILE_AUTO_MIN_EPOCHS`` epochs, where compiling pays: measured on one H200 (issue 11, CE,
    resnet18_cifar, 5 runs sharing the GPU), the first compiled epoch cost 56 s and every later one
    saved 3.5-4 s (3.1-3.7 s against 7.2 s eager), so it breaks even after about 15 epochs. On the CPU
    auto stays eager: on 2 cores (CE, scale=cpu, docs/lab-notes.md issue 11) compiling cost about 70 s and made
    the epoch slower (9.1 s against 8.3 s; inference 1.6x faster, training steps 0.89x).
    ``true``/``false`` force it on any device. ``train.compile_mode=reduce-overhead`` (or
    ``max-autotune``) also captures the fixed-shape steps as CUDA graphs on CUDA; the trainer marks
    each training step's start for them. That path is implemented but has not been timed on a GPU
    (docs/lab-notes.md, issue 11)."""
    on = (device.type == "cuda" and cfg.epochs >= COMPILE_AUTO_MIN_EPOCHS) if cfg.compile == "auto" else cfg.compile
    return cfg.compile_mode if on else None


def uses_cuda_graphs(mode: str | None, device: torch.device) -> bool:
    """Whether compile ``mode`` on ``device`` captures CUDA graphs (then each step's start is marked)."""
    return device.type == "cuda" and mode in CUDA_GRAPH_MODES


def make_optimizer(params: list, cfg: TrainConfig, device: torch.device,
                   plan: OptimPlan | None = None) -> torch.optim.Optimizer:
    """The protocol's optimiser (or the method's ``plan``) over ``params``. On CUDA the fused
    one-kernel update (``fused=True``): one launch per step instead of a few per parameter tensor,
    the same update up to rounding. On the CPU the default path, so CPU runs keep their numbers."""
    fused = True if device.type == "cuda" else None
    if plan is not None:
        return plan.build(params, fused=fused)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                           nesterov=cfg.nesterov, fused=fused)


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
                 diagnose_train: bool = False, headline: str = "ensemble", log_epochs: bool = True,
                 sinks: list | None = None, sample_epochs: tuple[int, ...] = (),
                 dataset_index=None, checkpoint_meta: dict | None = None,
                 on_checkpoint: Callable[[int, list[dict]], None] | None = None) -> None:
        self.method = method.to(device)
        self.headline = check_headline(headline, method.num_networks)
        self.stream = stream
        self.test_sets = test_sets
        self.cfg = cfg
        self.device = device
        self.data_gen = torch.Generator().manual_seed(int(data_seed))
        self.clean = None if clean_labels is None else clean_labels.to(device)
        self.checkpoint = checkpoint
        self.checkpoint_meta = dict(checkpoint_meta or {})   # saved as is, for tools that list checkpoints
        self.on_checkpoint = on_checkpoint       # called with (bytes written, history) after each checkpoint
        self.checkpoint_bytes: int | None = None
        self.progress = progress
        self.interrupt_after = interrupt_after   # for tests: stop as if killed after this many epochs
        self.diagnose_train = diagnose_train     # extra eval pass per epoch: fit of clean vs mislabeled samples
        self.log = log or (lambda s: print(s, file=sys.stderr, flush=True))
        self.log_epochs = log_epochs             # False (verbosity=quiet): no line per epoch
        self.sinks = list(sinks or [])           # live curves (e.g. tblog.TensorBoardSink): each gets every row
        self.sample_epochs = set(sample_epochs)  # 1-based epochs whose per-sample table is kept (samples.py)
        self.dataset_index = dataset_index
        self.samples: dict[int, dict] = {}
        if device.type == "cuda":  # fixed input shapes: let cuDNN pick the fastest convolution algorithms once
            torch.backends.cudnn.benchmark = True
        if cfg.channels_last:
            for net in method.nets:
                net.to(memory_format=torch.channels_last)
        self.compile_mode = compile_mode_for(cfg, device)
        if self.compile_mode is not None:
            import torch._dynamo as dynamo   # (bound as dynamo: `import torch...` here would shadow torch)

            dynamo.config.recompile_limit = max(dynamo.config.recompile_limit, RECOMPILE_LIMIT)
            # in place (Module.compile): the state_dict keys, so checkpoints, stay those of the eager net
            for net in method.nets:
                net.compile(mode=self.compile_mode)
        self.cuda_graphs = uses_cuda_graphs(self.compile_mode, device)
        self.plan: OptimPlan | None = method.optim_plan()
        self.optimizers = [self._optimizer(group) for group in method.param_groups()]

    def _optimizer(self, params: list) -> torch.optim.Optimizer:
        return make_optimizer(params, self.cfg, self.device, self.plan)

    def schedule(self, epoch: int) -> dict[str, float]:
        """The optimiser settings of 0-based ``epoch``: lr, and beta1 under a method's Adam plan."""
        if self.plan is None:
            return {"lr": self.cfg.lr_at(epoch)}
        out = {"lr": self.plan.lr_at(epoch, self.cfg.epochs)}
        if self.plan.kind == "adam":
            out["beta1"] = self.plan.betas_at(epoch, self.cfg.epochs)[0]
        return out

    def _apply_schedule(self, epoch: int) -> dict[str, float]:
        s = self.schedule(epoch)
        for o in self.optimizers:
            for g in o.param_groups:
                g["lr"] = s["lr"]
                if "beta1" in s:
                    g["betas"] = (s["beta1"], g["betas"][1])
        return s

    # -- checkpoints ---------------------------------------------------------------------------
    def _save(self, epoch_done: int, history: list[dict], wall: float) -> None:
        if self.checkpoint is None:
            return
        state = {
            "epoch_done": epoch_done, "epochs": self.cfg.epochs, "history": history, "wall_s": wall,
            "samples": self.samples, "meta": self.checkpoint_meta,
            "method": self.method.state_dict(),
            "optimizers": [o.state_dict() for o in self.optimizers],
            "optim_plan": None if self.plan is None else self.plan.to_dict(),
            "method_generator": self.method.generator.get_state(),
            "data_generator": self.data_gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }
        # serialised in memory first: torch's own file writer reports a full disk as "unexpected pos
        # 2496 vs 2390" (a RuntimeError); a plain file write says ENOSPC. The sha256 header lets a
        # resume refuse a checkpoint damaged on disk (safeio.checkpoint_payload).
        buf = io.BytesIO()
        torch.save(state, buf)
        payload = buf.getbuffer()
        tmp = self.checkpoint.with_suffix(".tmp")
        for attempt in range(3):  # a parallel job may prune the (empty) folder between mkdir and save
            try:
                self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
                # write_durably removes the temp file on any failure (a full disk, a signal): no partial file
                self.checkpoint_bytes = write_durably(self.checkpoint, (checkpoint_header(payload), payload), tmp=tmp)
                break
            except FileNotFoundError:
                if attempt == 2 or self.checkpoint.parent.is_dir():
                    raise
            except (OSError, RuntimeError) as e:
                if isinstance(e, OSError):
                    raise RunError(checkpoint_write_error(e, self.checkpoint.parent)) from None
                raise RunError(f"the checkpoint could not be written in {self.checkpoint.parent} ({e}; the "
                               "partial file was removed); free space there or set checkpoint_dir=<another "
                               "folder>") from None
        if self.on_checkpoint is not None:   # e.g. the runner's free-space check, now that the size is known
            self.on_checkpoint(self.checkpoint_bytes, history)

    def _load(self) -> tuple[int, list[dict], float]:
        if self.checkpoint is None or not self.checkpoint.exists():
            return 0, [], 0.0
        try:
            state = load_checkpoint(self.checkpoint, self.device)
            saved = state.get("optim_plan")
            if saved != (None if self.plan is None else self.plan.to_dict()):
                raise ValueError(f"it was made with optimiser plan {saved}, this run has "
                                 f"{None if self.plan is None else self.plan.to_dict()}")
            if len(state["optimizers"]) != len(self.optimizers):
                raise ValueError(f"it holds {len(state['optimizers'])} optimisers, this run has {len(self.optimizers)}")
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
        self.samples = dict(state.get("samples") or {})
        self.log(f"resumed from {self.checkpoint} after epoch {state['epoch_done']}")
        return int(state["epoch_done"]), list(state["history"]), float(state["wall_s"])

    # -- evaluation ----------------------------------------------------------------------------
    @torch.inference_mode()
    def evaluate(self) -> dict[str, float]:
        """Top-1/top-5 per test split. With several networks: ``<split>_top1_net<i>`` for each network,
        ``<split>_top1_ensemble`` for Method.predict, and ``<split>_top1`` = the method's headline."""
        out = {}
        m = self.method
        multi = m.num_networks > 1
        self.method.eval()
        try:
            for name, batches in self.test_sets.items():
                n, correct, counts = 0, {}, None
                for x, y in progress_bar(batches(), enabled=self.progress, desc=f"eval {name}"):
                    x, y = x.to(self.device, non_blocking=True), y.to(self.device)
                    with torch.autocast(self.device.type, torch.bfloat16, enabled=bf16_on(self.cfg.amp, self.device)):
                        if multi:   # each network once when the method keeps the default predictions
                            ens, nets = m.predict_with_nets(x)
                            probs = {"ensemble": ens, **{f"net{i}": p for i, p in enumerate(nets)}}
                        else:
                            probs = {"ensemble": m.predict(x)}
                    for key, p in probs.items():
                        for k in (1, 5):
                            correct[(key, k)] = correct.get((key, k), 0) + topk_correct(p, y, k)
                    head = probs.get(self.headline, probs["ensemble"])
                    bc = torch.bincount(head.argmax(1), minlength=head.shape[1])
                    counts = bc if counts is None else counts + bc
                    n += len(y)
                acc = {key: 100.0 * float(c) / max(n, 1) for key, c in correct.items()}
                if counts is not None:   # the share of the commonest predicted class: the collapse check
                    out[f"{name}_pred_top_share"] = float(counts.max()) / max(n, 1)
                if multi:
                    for k in (1, 5):
                        for i in range(m.num_networks):
                            out[f"{name}_top{k}_net{i}"] = acc[(f"net{i}", k)]
                        out[f"{name}_top{k}_ensemble"] = acc[("ensemble", k)]
                        out[f"{name}_top{k}_mean_nets"] = sum(acc[(f"net{i}", k)] for i in range(m.num_networks)) \
                            / m.num_networks
                        out[f"{name}_top{k}"] = out[f"{name}_top{k}_{self.headline}"]
                else:
                    out[f"{name}_top1"], out[f"{name}_top5"] = acc[("ensemble", 1)], acc[("ensemble", 5)]
        finally:
            self.method.train()
        return out

    def selection_health(self) -> dict[str, int]:
        """How many classes the method's selected (labelled) set spans by its noisy labels, and its
        size; 1 class is a collapsed split. Needs no true labels. Empty for methods that do not select."""
        sel = self.method.selected()
        if sel is None:
            return {}
        labels = self.method.noisy_labels[sel.to(self.method.noisy_labels.device).bool()]
        return {"sel_size": int(labels.numel()), "sel_classes": int(labels.unique().numel())}

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
        verdict = self.method.verdict()
        if verdict is not None:   # the method as a mislabeled-sample detector
            out.update(detector_stats(verdict.clean_prob.to(self.device), is_clean))
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
                      step=sum(h.get("steps", 0) for h in history),
                      lr_ramp_epochs=cfg.lr_ramp_epochs if self.plan is None else 0.0)
        m.train()
        if start_epoch == 0:
            # the global torch RNG (dropout, any library-internal draw) starts from the run's seed;
            # on resume it is restored from the checkpoint instead
            torch.manual_seed(int(torch.randint(0, 2 ** 62, (1,), generator=self.data_gen)))
            m.on_train_start(ctx)
        amp = bf16_on(cfg.amp, self.device)
        for epoch in range(start_epoch, cfg.epochs):
            t0 = time.perf_counter()
            ctx.epoch, ctx.step_in_epoch = epoch, 0
            sched = self._apply_schedule(epoch)
            lr = sched["lr"]
            m.on_epoch_start(ctx)
            sums: dict[str, torch.Tensor] = {}
            it = m.batches(ctx)
            bar = progress_bar(it, enabled=self.progress, total=steps_default or None,
                               desc=f"epoch {epoch + 1}/{cfg.epochs}")
            it, bar = bar, (bar if bar is not it else None)
            for batch in it:
                if self.cuda_graphs:   # a new step: outputs of the last step's graphs may be overwritten
                    torch.compiler.cudagraph_mark_step_begin()
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
                history.append({"epoch": epoch + 1, **sched, "steps": steps, **logs,
                                "seconds": time.perf_counter() - t0})
                self.log(f"epoch {epoch + 1}: loss is {logs.get('loss')}; the run diverged")
                return FitResult("diverged", history, wall + time.perf_counter() - t0,
                                 f"non-finite loss at epoch {epoch + 1}")
            m.on_epoch_end(ctx)
            train_s = time.perf_counter() - t0
            if cfg.evaluates(epoch):
                scores = self.evaluate()
            else:   # the same mode evaluate() leaves the method in, so eval_every changes no number
                scores = {}
                m.train()
            row = {"epoch": epoch + 1, **sched, "steps": steps, **logs, **scores,
                   **self.selection_health(), **self.diagnostics(), "train_seconds": train_s}
            row["seconds"] = time.perf_counter() - t0
            history.append(row)
            if epoch + 1 in self.sample_epochs:   # eval mode, no grad, no RNG: changes no number of the run
                from .samples import sample_table

                self.samples[epoch + 1] = sample_table(m, self.stream, self.clean, self.dataset_index)
            for sink in self.sinks:
                sink.epoch(row)
            wall += row["seconds"]
            main = next((k for k in row if k.endswith("_top1")), None)
            if self.log_epochs and (main or cfg.eval_every == 1 or epoch % 10 == 9):
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
