"""GSS-DB: the Gradient Switching Strategy on two branches (Yu et al., CVPR 2023, Sec. 5.2).

Two networks, two direction pools per sample (``gss_pool.DirectionPool``): on each batch network i
trains with the base loss on labels drawn from its own pool D_i; after every epoch D_0 is updated
(Eqns. 6-9, lambda1 = 2, lambda2 = 1) with p_noisy and pred of network 1, and D_1 with those of
network 0 (the paper: each pool is updated with the predictions of the other branch).

Choices where the paper is silent (conf/method/gss_db.yaml), as GSS-SB: ``init`` (onehot), ``stats``
(``infer``: an eval-mode pass of each network over the training set after the epoch; ``train``: each
sample's last training softmax), ``pred_weight`` (Eqn. 7's reading), ``base_loss``. Both networks
see the same batches (each draws its own labels); one optimiser each. Test prediction: the mean
softmax of the two networks (methods.md 1.3 item 7), headline ensemble; both networks' accuracies
are in the record. ``label_beliefs()`` (diagnostics) shows network 0's pools.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from nlbench.losses import build_loss
from nlbench.method import METHODS, Batch, Context, Method, StepOutput, Verdict

from .gss_pool import DirectionPool, check_gss_options


@METHODS.register("gss_db")
class GSSDoubleBranch(Method):
    num_networks = 2
    passes = dict(train=2, infer=2)   # two networks on each batch + an inference pass each

    def __init__(self, *, lambda1: float = 2.0, lambda2: float = 1.0, base_loss: str = "ce",
                 base_params: dict | None = None, init: str = "onehot", init_mass: float = 1.0,
                 stats: str = "infer", pred_weight: str = "noisy", **base) -> None:
        super().__init__(**base)
        self.lambda1, self.lambda2, self.stats, self.pred_weight = check_gss_options(
            lambda1=lambda1, lambda2=lambda2, stats=stats, pred_weight=pred_weight)
        self.base_loss = build_loss(base_loss, **(base_params or {}))
        self.pools = nn.ModuleList(DirectionPool(self.noisy_labels, self.num_classes, init=init, init_mass=init_mass)
                                   for _ in range(2))
        if stats == "train":
            self.register_buffer("train_probs", torch.zeros(2, self.num_train, self.num_classes))

    def loss(self, batch: Batch, ctx: Context) -> StepOutput:
        total, switched = 0.0, 0.0
        for i, (net, pool) in enumerate(zip(self.nets, self.pools)):
            y_hat = pool.sample(batch.idx, self.generator)
            logits = net(batch.x)
            if self.stats == "train":
                self.train_probs[i, batch.idx] = F.softmax(logits.detach().float(), dim=1)
            total = total + self.base_loss(logits, y_hat).mean()
            switched = switched + (y_hat != batch.y).float().mean() / 2
        return StepOutput(total, {"switched": switched})

    @torch.no_grad()
    def on_epoch_end(self, ctx: Context) -> None:
        probs = [self.train_probs[i] if self.stats == "train" else F.softmax(ctx.infer(net), dim=1)
                 for i, net in enumerate(self.nets)]
        for i, pool in enumerate(self.pools):   # pool i learns from the OTHER network
            pool.update(probs[1 - i], epoch=ctx.epoch, epochs=ctx.epochs, lambda1=self.lambda1,
                        lambda2=self.lambda2, pred_weight=self.pred_weight)

    def label_beliefs(self) -> torch.Tensor:
        return self.pools[0].pool

    def verdict(self) -> Verdict:
        """Both pools' normalised distributions averaged: p of the given label, argmax and its probability."""
        n = self.num_train
        q = sum(p.probs(torch.arange(n, device=p.pool.device)) for p in self.pools) / len(self.pools)
        label_prob, label = q.max(1)
        return Verdict(q.gather(1, self.noisy_labels[:, None]).squeeze(1), label, label_prob)
