"""GSS-SB: the Gradient Switching Strategy on a single branch (Yu et al., CVPR 2023, Sec. 5.1-5.2).

Every step each sample's training label is drawn from its direction pool (``gss_pool.DirectionPool``)
with the method's own generator, and the base loss (``ce`` by default; ``gce`` or ``sl`` selectable,
since GSS is pluggable) is applied to the drawn labels. After every epoch the pools are updated with
lambda1 = 2, lambda2 = 1 (paper, SB/DB).

Choices where the paper is silent (also in conf/method/gss_sb.yaml):
- ``stats``: where p_noisy and pred come from. ``infer`` (default): an inference pass over the
  training set at the end of each epoch (eval mode, no augmentation, deterministic). ``train``: the
  softmax of each sample's last training forward pass in the epoch (augmented, train-mode BN; no
  extra pass).
- ``pred_weight``: Eqn. 7's prediction term weighted by p_noisy (``noisy``, the literal reading) or
  by the prediction's own confidence max(p) (``pred``); see gss_pool.
- ``init``: pool start, ``onehot`` (default, epoch 0 == base loss) or ``zeros``; see gss_pool.
With lambda1 = lambda2 = 0 and a one-hot start the pools only ever hold the noisy label, so GSS-SB
reproduces its base loss exactly (tested).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from nlbench.losses import build_loss
from nlbench.method import METHODS, Batch, Context, Method, StepOutput, Verdict

from .gss_pool import DirectionPool, check_gss_options


@METHODS.register("gss_sb")
class GSSSingleBranch(Method):
    passes = dict(train=1, infer=1)   # + an inference pass for the pools (stats=infer; 0 with stats=train)
    def __init__(self, *, lambda1: float = 2.0, lambda2: float = 1.0, base_loss: str = "ce",
                 base_params: dict | None = None, init: str = "onehot", init_mass: float = 1.0,
                 stats: str = "infer", pred_weight: str = "noisy", **base) -> None:
        super().__init__(**base)
        self.lambda1, self.lambda2, self.stats, self.pred_weight = check_gss_options(
            lambda1=lambda1, lambda2=lambda2, stats=stats, pred_weight=pred_weight)
        self.base_loss = build_loss(base_loss, **(base_params or {}))
        self.pool = DirectionPool(self.noisy_labels, self.num_classes, init=init, init_mass=init_mass)
        if stats == "train":
            self.register_buffer("train_probs", torch.zeros(self.num_train, self.num_classes))

    def loss(self, batch: Batch, ctx: Context) -> StepOutput:
        y_hat = self.pool.sample(batch.idx, self.generator)
        logits = self.nets[0](batch.x)
        if self.stats == "train":
            self.train_probs[batch.idx] = F.softmax(logits.detach().float(), dim=1)
        return StepOutput(self.base_loss(logits, y_hat).mean(),
                          {"switched": (y_hat != batch.y).float().mean()})

    @torch.no_grad()
    def on_epoch_end(self, ctx: Context) -> None:
        probs = self.train_probs if self.stats == "train" else F.softmax(ctx.infer(self.nets[0]), dim=1)
        self.pool.update(probs, epoch=ctx.epoch, epochs=ctx.epochs, lambda1=self.lambda1, lambda2=self.lambda2,
                         pred_weight=self.pred_weight)

    def label_beliefs(self) -> torch.Tensor:
        return self.pool.pool

    def verdict(self) -> Verdict:
        """The pool's probability of the given label, and the pool's argmax label with its probability."""
        return Verdict(*self.pool.verdict())
