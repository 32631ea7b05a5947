"""The Method contract and the small dataclasses that cross module borders.

The trainer owns the loop (epochs, optimisers, schedule, evaluation, checkpoints, records); a method
owns its networks' losses and its per-sample state. A method never sees the true labels, a config
object, a file path or the global RNG: it gets typed keyword arguments, the noisy labels, its own
``torch.Generator`` and, each epoch, a :class:`Context` through which it can ask for batches or for an
inference pass over the training set.

Shapes: N = training-set size, K = classes, B = batch size.
"""
from __future__ import annotations

import abc
import contextlib
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Iterable, Iterator, Protocol

import torch
import torch.nn as nn
import torch.nn.functional as F

from .common import Batch  # noqa: F401  (part of the contract: methods import it from here)
from .registry import ConfigError, Registry, check_range

if TYPE_CHECKING:  # pragma: no cover
    pass


METHODS: Registry = Registry("method")


@dataclass
class StepOutput:
    """What ``Method.loss`` returns: the scalar to back-propagate and floats to log (epoch means)."""

    loss: torch.Tensor
    logs: dict[str, float | torch.Tensor] = field(default_factory=dict)


OPTIM_KINDS = ("adam", "sgd")
_CLASS_PLAN = object()   # Method(optim=...) not given: the class attribute ``optim``


@dataclass(frozen=True)
class OptimPlan:
    """A method's own optimiser and per-epoch schedule; it replaces the protocol's optimiser, lr and
    lr schedule (``train.*``) for that method. No plan (the default) = the protocol's.

    The schedule is the Co-teaching/JoCoR plan, stated as fractions so that it scales with the
    epoch count E: for 0-based epoch e < s = round(decay_start * E) the lr is ``lr``; from s on it
    decays linearly, lr * (E - e) / (E - s) (1/(E - s) of ``lr`` in the last epoch, as the official
    alpha_plan), and Adam's beta1 becomes ``beta1_decayed`` (None: unchanged). ``decay_start`` = 1
    means no decay. Official numbers: E = 200, decay start 80 (CIFAR-10, MNIST) -> 0.4, 100
    (CIFAR-100) -> 0.5.
    """

    kind: str = "adam"
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = 0.9            # sgd only
    weight_decay: float = 0.0
    decay_start: float = 1.0
    beta1_decayed: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in OPTIM_KINDS:
            raise ConfigError(f"unknown optimiser kind {self.kind!r} in optim; valid choices: {', '.join(OPTIM_KINDS)}")
        check_range("optim.lr", self.lr, 0, None, lo_open=True)
        if len(self.betas) != 2:
            raise ConfigError(f"optim.betas must be two numbers, got {self.betas!r}")
        object.__setattr__(self, "betas", tuple(float(check_range("optim.betas", b, 0, 1, hi_open=True))
                                                for b in self.betas))
        check_range("optim.momentum", self.momentum, 0, 1, hi_open=True)
        check_range("optim.weight_decay", self.weight_decay, 0, None)
        check_range("optim.decay_start", self.decay_start, 0, 1)
        if self.beta1_decayed is not None:
            check_range("optim.beta1_decayed", self.beta1_decayed, 0, 1, hi_open=True)

    @classmethod
    def from_dict(cls, d: dict) -> "OptimPlan":
        bad = sorted(set(d) - set(cls.__dataclass_fields__))
        if bad:
            raise ConfigError(f"unknown optim key(s) {', '.join(bad)}; valid keys: {', '.join(cls.__dataclass_fields__)}")
        return cls(**d)

    def to_dict(self) -> dict:
        return {**asdict(self), "betas": list(self.betas)}

    def decay_epoch(self, epochs: int) -> int:
        return int(round(self.decay_start * epochs))

    def lr_at(self, epoch: int, epochs: int) -> float:
        s = self.decay_epoch(epochs)
        return self.lr if epoch < s else self.lr * (epochs - epoch) / (epochs - s)

    def betas_at(self, epoch: int, epochs: int) -> tuple[float, float]:
        if self.beta1_decayed is None or epoch < self.decay_epoch(epochs):
            return self.betas
        return (float(self.beta1_decayed), self.betas[1])

    def build(self, params: list, *, fused: bool | None = None) -> torch.optim.Optimizer:
        """The optimiser over ``params``; ``fused``: PyTorch's one-kernel update (the trainer sets it on CUDA)."""
        if self.kind == "adam":
            return torch.optim.Adam(params, lr=self.lr, betas=self.betas, weight_decay=self.weight_decay, fused=fused)
        return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay,
                               fused=fused)


@dataclass(frozen=True)
class Passes:
    """A method's work in one epoch, in passes over the N training samples (every network counts): the
    training benchmark (:mod:`nlbench.bench`) turns it into the epoch's floor at the bare loop's rates.
    A method states it as its class attribute ``passes``, a dict of these fields.

    ``train``: forward + backward passes; ``infer``: forwards without gradient (inference passes over
    the training set, a peer's or an EMA copy's forward on each batch); ``*_labeled``: passes per
    labelled sample, for methods that train on a labelled share l of the set (DivideMix family; the
    epoch then costs train + l * train_labeled, ...); ``eval_nets``: forwards per test image (each
    network once: the ensemble is made from the same logits; default: the method's networks);
    ``warmup``: the counts of the method's warm-up epochs, when it has them (``warmup_length(epochs)``).

    Worked example, DivideMix after its warm-up: co-divide is an inference pass per network (infer 2);
    then each network makes one pass over its labelled share l, each step B labelled + B unlabelled
    samples with 2 views each: 4 rows forward+backward per labelled sample (2 nets: train_labeled 8);
    without gradient the trained net sees the 2 unlabelled + 2 labelled views and the peer the 2
    unlabelled views (6 per net: infer_labeled 12). Its warm-up epochs are CE on all data, one pass
    per network (warmup train 2).
    """

    train: float = 1.0
    infer: float = 0.0
    train_labeled: float = 0.0
    infer_labeled: float = 0.0
    eval_nets: int = 1
    warmup: "Passes | None" = None

    @classmethod
    def from_dict(cls, d: dict, *, num_networks: int = 1) -> "Passes":
        bad = sorted(set(d) - set(cls.__dataclass_fields__))
        if bad:
            raise ConfigError(f"unknown passes key(s) {', '.join(bad)}; valid keys: {', '.join(cls.__dataclass_fields__)}")
        warm = d.get("warmup")
        return cls(**{"eval_nets": num_networks, **d,
                      "warmup": None if warm is None else cls.from_dict(warm, num_networks=num_networks)})

    def at(self, warm: bool, labeled: float) -> tuple[float, float, int]:
        """(train, infer, eval_nets) of an epoch, in passes over N (eval: per test image)."""
        p = self.warmup if warm and self.warmup is not None else self
        return p.train + labeled * p.train_labeled, p.infer + labeled * p.infer_labeled, p.eval_nets


@dataclass
class Verdict:
    """A method's own view of each training sample (N = training-set size), for diagnostics and export.

    ``clean_prob`` (N,) float in [0, 1]: how likely the method holds the *given* (noisy) label to be
    correct (a GMM posterior, a pool probability, or 0/1 for a hard small-loss selection); 1 - it is the
    method's score as a mislabeled-sample detector. ``label`` (N,) int: the label the method itself
    believes in (e.g. the argmax of a GSS pool), with ``label_prob`` (N,) its probability; None when the
    method has no label of its own.
    """

    clean_prob: torch.Tensor
    label: torch.Tensor | None = None
    label_prob: torch.Tensor | None = None


class Stream(Protocol):
    """The training data as the trainer exposes it to methods (device-resident or file-based)."""

    num_train: int

    def batches(self, *, indices: torch.Tensor | None = None, batch_size: int | None = None,
                views: int = 1, shuffle: bool = True, drop_last: bool = False,
                generator: torch.Generator | None = None) -> Iterator[Batch]:
        """Shuffled (by ``generator``), augmented batches over ``indices`` (default: all samples)."""
        ...

    def infer(self, net: nn.Module, *, indices: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (len(indices) or N, K) of ``net`` in eval mode, test transform, no grad, fp32."""
        ...


@dataclass
class Context:
    """Per-epoch view of the run that the trainer hands to a method's hooks."""

    epoch: int                     # 0-based index of the current epoch
    epochs: int                    # total epochs E
    stream: Stream                 # training data
    batch_size: int
    device: torch.device
    generator: torch.Generator     # the trainer's data generator (on the CPU)
    step: int = 0                  # global optimisation step
    step_in_epoch: int = 0
    steps_per_epoch: int = 0       # of the default stream; custom streams may differ
    lr_ramp_epochs: float = 0.0    # epochs of the lr schedule's linear ramp (onecycle warm-up), 0 without one

    def infer(self, net: nn.Module, indices: torch.Tensor | None = None) -> torch.Tensor:
        return self.stream.infer(net, indices=indices)


class Method(nn.Module, metaclass=abc.ABCMeta):
    """Base class of every noisy-label method.

    Subclasses set ``num_networks`` (the trainer builds that many backbones and passes them in as
    ``nets``) and implement :meth:`loss`. Constructors are keyword-only and validate their ranges.
    Per-sample state lives in registered buffers so that it follows ``.to(device)`` and is saved in
    ``state_dict()`` for resume. Random draws use ``self.generator`` (on the training device), whose
    state the trainer checkpoints.
    """

    num_networks: int = 1
    views: int = 1                    # augmented views per sample the default stream yields
    #: the method's own optimiser plan (an :class:`OptimPlan` as a dict), None = the protocol's;
    #: the ``optim`` parameter (method yaml / command line) overrides it, ``optim: null`` included
    optim: dict | None = None
    #: the work of one epoch (a dict of :class:`Passes` fields), for the training benchmark's floor;
    #: None = one training pass per network
    passes: dict | None = None

    def __init__(self, *, nets: Iterable[nn.Module], num_classes: int, noisy_labels: torch.Tensor,
                 generator: torch.Generator, optim: dict | None | object = _CLASS_PLAN) -> None:
        super().__init__()
        d = type(self).optim if optim is _CLASS_PLAN else optim
        if d is not None and not isinstance(d, dict):
            raise ConfigError(f"optim must be a mapping of OptimPlan keys or null, got {d!r}")
        self._optim_plan = None if d is None else OptimPlan.from_dict(dict(d))
        self.nets = nn.ModuleList(nets)
        if len(self.nets) != self.num_networks:
            raise ValueError(f"{type(self).__name__} needs {self.num_networks} networks, got {len(self.nets)}")
        self.num_classes = int(num_classes)
        self.register_buffer("noisy_labels", noisy_labels.clone().long(), persistent=False)
        self.generator = generator

    @property
    def num_train(self) -> int:
        return int(self.noisy_labels.numel())

    @classmethod
    def pass_counts(cls) -> Passes:
        """The method's per-epoch :class:`Passes`: its ``passes``, else one training pass per network."""
        return Passes.from_dict({"train": cls.num_networks} if cls.passes is None else cls.passes,
                                num_networks=cls.num_networks)

    # --- the one required hook ------------------------------------------------------------
    @abc.abstractmethod
    def loss(self, batch, ctx: Context) -> StepOutput:
        """The step's loss. ``batch`` is whatever :meth:`batches` yields: a :class:`Batch` by default,
        or a method's own composite (e.g. a labeled and an unlabeled Batch for DivideMix). The
        trainer back-propagates it and steps every network's optimiser; networks that got no
        gradient (a peer used under no_grad) are left untouched."""

    # --- optimisation doors ------------------------------------------------------------------
    def optim_plan(self) -> OptimPlan | None:
        """The method's optimiser plan, or None for the protocol's optimiser and lr schedule."""
        return self._optim_plan

    def param_groups(self) -> list[list[nn.Parameter]]:
        """How parameters group into optimisers: one optimiser per returned list. Default: one per
        network (Co-teaching); JoCoR returns one list over both networks (one joint optimiser)."""
        return [list(net.parameters()) for net in self.nets]

    # --- optional hooks --------------------------------------------------------------------
    def on_train_start(self, ctx: Context) -> None:
        """Called once before the first epoch (not again on resume)."""

    def on_epoch_start(self, ctx: Context) -> None:
        """Schedules, sample division (e.g. DivideMix's GMM split)."""

    def on_step_end(self, ctx: Context) -> None:
        """After each optimiser step (e.g. EMA updates)."""

    def on_epoch_end(self, ctx: Context) -> None:
        """After the last step of an epoch (e.g. GSS pool updates)."""

    def batches(self, ctx: Context) -> Iterator:
        """The epoch's batch stream; default: all samples, shuffled, ``self.views`` views.

        Override to build custom streams from ``ctx.stream.batches(indices=..., views=2, ...)``,
        e.g. pairs of labeled/unlabeled batches, or one pass per network."""
        return ctx.stream.batches(batch_size=ctx.batch_size, views=self.views, generator=ctx.generator)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities (B, K) at test time (the ensemble): :meth:`combine` of each network's logits."""
        return self.combine([net(x) for net in self.nets])

    def combine(self, logits: list[torch.Tensor]) -> torch.Tensor:
        """The ensemble's class probabilities (B, K) from the networks' logits; default: the mean softmax.

        A method whose paper tests on another rule (DivideMix: the softmax of the summed logits)
        overrides this rather than :meth:`predict`, so that evaluation runs each network once for both
        the ensemble and the per-network accuracies."""
        return torch.stack([F.softmax(z.float(), dim=1) for z in logits]).mean(0)

    @torch.no_grad()
    def predict_nets(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per-network class probabilities [(B, K)] * num_networks, for per-network test accuracy."""
        return [F.softmax(net(x).float(), dim=1) for net in self.nets]

    @torch.no_grad()
    def predict_with_nets(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(:meth:`predict`, :meth:`predict_nets`) for the trainer's evaluation of several networks.

        Unless a method overrides ``predict`` or ``predict_nets`` each network runs once: its logits
        give the per-network probabilities and, through :meth:`combine`, the ensemble. A method that
        overrides either gets both of its own calls."""
        cls = type(self)
        if cls.predict is Method.predict and cls.predict_nets is Method.predict_nets:
            logits = [net(x) for net in self.nets]
            return self.combine(logits), [F.softmax(z.float(), dim=1) for z in logits]
        return self.predict(x), self.predict_nets(x)

    @staticmethod
    @contextlib.contextmanager
    def mode(net: nn.Module, *, train: bool):
        """Run ``net`` in train or eval mode inside the block and restore its mode afterwards.

        A peer used under no_grad must be in the mode the method says (DivideMix: eval; ELR+'s EMA
        copies: train, batch statistics), never in whatever mode the last evaluation or inference
        pass left it."""
        was = net.training
        net.train(train)
        try:
            yield net
        finally:
            net.train(was)

    def selected(self) -> torch.Tensor | None:
        """Bool mask (N,) of samples the method currently treats as clean, for diagnostics only."""
        return None

    def verdict(self) -> Verdict | None:
        """The method's per-sample verdict on the given labels (:class:`Verdict`), or None when it has
        none (plain losses). Read by the trainer to score the method as a mislabeled-sample detector and
        to export per-sample tables; never used for training. Default: 1 - 0 for :meth:`selected`
        samples (a hard selection), else None."""
        sel = self.selected()
        return None if sel is None else Verdict(clean_prob=sel.float())

    def label_beliefs(self) -> torch.Tensor | None:
        """(N, K) per-sample label distribution the method trains towards (e.g. GSS pools), or None.

        Diagnostics code (never the method) compares it with the true labels.
        """
        return None
