"""JoCoR (Wei et al., CVPR 2020; hongxin001/JoCoR algorithm/loss.py, algorithm/jocor.py).

Per sample, the joint loss of both networks on the same batch

    l_i = (1 - lambda) (CE(f1(x_i), y_i) + CE(f2(x_i), y_i)) + lambda (KL(p2 || p1) + KL(p1 || p2))

(each KL as F.kl_div(log_softmax(a), softmax(b)) summed over classes, neither side detached, so the
co-regularisation reaches both networks); the int((1 - tau_t) B) samples of smallest l_i are kept
and the loss is their plain mean; ONE optimiser over both networks (``param_groups``), one backward.

Choices and values (conf/method/jocor.yaml): lambda (``co_lambda``) per dataset and noise from the
README and issue #3 (0.9 CIFAR-10, 0.65 CIFAR-10 sym 80%, 0.85 CIFAR-100) via params_by_dataset /
params_by_rate (a CIFAR-10 noise takes the listed level nearest its rate: sym 90% or 70% -> 0.65) /
params_by_noise (class-dependent flips keep 0.9 at every rate); ``forget_rate: auto`` = the expected noise rate (so r/2 for CIFAR-10 asym, as the
code's tau = r/2), or ``estimate`` (from the data, as in coteaching.py); tau_t ramps over 10 epochs at every epoch count (see coteaching.py); the official
Adam plan; headline: the mean of both networks' test accuracy (main.py). ``selected()``: the
samples kept in the last epoch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from nlbench.method import METHODS, Batch, Context, Method, StepOutput
from nlbench.registry import check_range

from .small_loss import OFFICIAL_PLAN, ForgetSchedule, keep_smallest


def jocor_loss(logits1: torch.Tensor, logits2: torch.Tensor, y: torch.Tensor, co_lambda: float) -> torch.Tensor:
    """Per-sample joint loss (B,) of two networks' logits (B, K) on labels y (B,)."""
    a, b = logits1.float(), logits2.float()
    ce = F.cross_entropy(a, y, reduction="none") + F.cross_entropy(b, y, reduction="none")
    kl = (F.kl_div(F.log_softmax(a, 1), F.softmax(b, 1), reduction="none").sum(1)
          + F.kl_div(F.log_softmax(b, 1), F.softmax(a, 1), reduction="none").sum(1))
    return (1 - co_lambda) * ce + co_lambda * kl


@METHODS.register("jocor")
class JoCoR(Method):
    num_networks = 2
    optim = OFFICIAL_PLAN
    passes = dict(train=2)   # two networks on each batch, one joint backward

    def __init__(self, *, co_lambda: float = 0.9, forget_rate: float | str = 0.2, num_gradual: int = 10,
                 exponent: float = 1.0, estimate_epoch: int = 5, estimator: str = "gmm", **base) -> None:
        super().__init__(**base)
        self.co_lambda = check_range("jocor co_lambda", co_lambda, 0, 1)
        self.schedule = ForgetSchedule(forget_rate, num_gradual, exponent, estimate_epoch=estimate_epoch,
                                       estimator=estimator)
        self.register_buffer("kept", torch.zeros(self.num_train, dtype=torch.bool))

    def param_groups(self) -> list[list[torch.nn.Parameter]]:
        return [list(self.nets.parameters())]          # one joint optimiser (jocor.py)

    def on_epoch_start(self, ctx: Context) -> None:
        self.kept.zero_()
        self.schedule.estimate_if_due(ctx.epoch, ctx.infer, self.nets, self.noisy_labels)

    def loss(self, batch: Batch, ctx: Context) -> StepOutput:
        tau = self.schedule(ctx.epoch)
        per = jocor_loss(self.nets[0](batch.x), self.nets[1](batch.x), batch.y, self.co_lambda)
        keep = keep_smallest(per, tau)
        self.kept[batch.idx[keep]] = True
        return StepOutput(per[keep].mean(), {"forget_rate": tau, **self.schedule.logs()})

    def selected(self) -> torch.Tensor:
        return self.kept
