"""Co-teaching (Han et al., NeurIPS 2018; bhanML/Co-teaching loss.py, main.py).

Two networks see the same batch; each ranks it by its own per-sample CE and keeps the
int((1 - tau_t) B) smallest (methods/small_loss.py); network 0 is updated on network 1's selection
and network 1 on network 0's, one optimiser each. tau_t ramps linearly to tau over ``num_gradual``
= 10 epochs.

Choices (also in conf/method/coteaching.yaml):
- the loss of each network is the plain mean CE over the samples its peer kept (the official code
  divides that mean by the kept count again, methods.md 5, which with SGD shrinks the lr by ~B).
- ``forget_rate: auto`` = the noise config's expected rate (0.36 for sym0.4 on 10 classes);
  ``forget_rate: estimate`` estimates it from the data at the start of epoch ``estimate_epoch`` with
  ``estimator`` (small_loss.estimate_noise_rate; tau_t = 0 until then) and records it as
  ``forget_rate_est`` in the history, beside the noise block's true rate.
- ``num_gradual`` stays 10 epochs at every epoch count (the official ramp is 10 epochs of 200 and
  the paper's T_k = 10; the ramp lets both nets fit easy patterns before memorisation, which does
  not stretch with the run's length); an option.
- ``optim``: the official Adam plan (lr 0.001, linear decay to 0 and beta1 0.1 from 40% of the
  epochs; 50% for CIFAR-100); ``optim: null`` trains with the protocol's optimiser instead.
- headline (yaml): the mean of both networks' test accuracy; the official code evaluates each
  network and has no ensemble. Both networks and the ensemble are in the record.
- ``selected()``: the samples network 0's ranking kept in the last epoch (what network 1 trained on).
"""
from __future__ import annotations

import torch

from nlbench.losses import make_ce
from nlbench.method import METHODS, Batch, Context, Method, StepOutput

from .small_loss import OFFICIAL_PLAN, ForgetSchedule, keep_smallest


@METHODS.register("coteaching")
class CoTeaching(Method):
    num_networks = 2
    optim = OFFICIAL_PLAN
    passes = dict(train=2)   # two networks forward+backward on each batch

    def __init__(self, *, forget_rate: float | str = 0.2, num_gradual: int = 10, exponent: float = 1.0,
                 estimate_epoch: int = 5, estimator: str = "gmm", **base) -> None:
        super().__init__(**base)
        self.schedule = ForgetSchedule(forget_rate, num_gradual, exponent, estimate_epoch=estimate_epoch,
                                       estimator=estimator)
        self.ce = make_ce()
        self.register_buffer("kept", torch.zeros(self.num_train, dtype=torch.bool))   # by net 0, this epoch

    def on_epoch_start(self, ctx: Context) -> None:
        self.kept.zero_()
        self.schedule.estimate_if_due(ctx.epoch, ctx.infer, self.nets, self.noisy_labels)

    def loss(self, batch: Batch, ctx: Context) -> StepOutput:
        tau = self.schedule(ctx.epoch)
        l0 = self.ce(self.nets[0](batch.x), batch.y)
        l1 = self.ce(self.nets[1](batch.x), batch.y)
        keep0, keep1 = keep_smallest(l0, tau), keep_smallest(l1, tau)   # each net's own small-loss picks
        self.kept[batch.idx[keep0]] = True
        loss = l0[keep1].mean() + l1[keep0].mean()                        # cross update
        return StepOutput(loss, {"forget_rate": tau, **self.schedule.logs()})

    def selected(self) -> torch.Tensor:
        return self.kept
