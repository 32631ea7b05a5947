"""GCE: generalized cross entropy L_q (Zhang & Sabuncu, NeurIPS 2018), optionally truncated.

Plain L_q = (1 - p_y^q)/q, q = 0.7 (no official code; q from the common PyTorch reference and the
SCE repo). ``truncated=true`` gives the truncated L_q: per-sample weights w in {0, 1}, loss
w * (L_q(p_y) - L_q(k)), k = 0.5; after epoch e with e+1 >= ``start_prune`` and (e+1) % ``prune_every``
== 0, w_i = [p_y,i > k] is refreshed from an inference pass over the training set. Choice: the
refresh uses the *current* model, not the reference code's best-test-accuracy checkpoint (that
would read the test set).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from nlbench.losses import gce_at, make_gce
from nlbench.method import METHODS, Batch, Context, Method, StepOutput
from nlbench.registry import check_range


@METHODS.register("gce")
class GCE(Method):
    passes = dict(train=1)   # one training pass (truncated: a weight refresh every prune_every epochs, ignored)
    def __init__(self, *, q: float = 0.7, truncated: bool = False, k: float = 0.5, start_prune: int = 40,
                 prune_every: int = 10, **base) -> None:
        super().__init__(**base)
        self.q = check_range("gce q", q, 0, 1, lo_open=True)
        self.k = check_range("gce k", k, 0, 1, lo_open=True, hi_open=True)
        self.truncated = bool(truncated)
        self.start_prune, self.prune_every = int(start_prune), int(prune_every)
        if self.prune_every < 1:
            raise ValueError(f"prune_every={prune_every} must be >= 1")
        self.lq = make_gce(q=self.q)
        self.register_buffer("weight", torch.ones(self.num_train))

    def loss(self, batch: Batch, ctx: Context) -> StepOutput:
        per = self.lq(self.nets[0](batch.x), batch.y)
        if self.truncated:
            per = self.weight[batch.idx] * (per - gce_at(self.k, self.q))
        return StepOutput(per.mean())

    @torch.no_grad()
    def on_epoch_end(self, ctx: Context) -> None:
        e1 = ctx.epoch + 1
        if self.truncated and e1 >= self.start_prune and e1 % self.prune_every == 0:
            p = F.softmax(ctx.infer(self.nets[0]), dim=1)
            p_y = p.gather(1, self.noisy_labels[:, None]).squeeze(1)
            self.weight.copy_((p_y > self.k).float())

    def selected(self):
        return self.weight > 0 if self.truncated else None
