"""SL: symmetric cross entropy alpha*CE + beta*RCE (Wang et al., ICCV 2019).

RCE uses the one-hot label clamped at ``label_clamp`` = 1e-4 (natural log, A = -9.21) as the
official code; alpha/beta per dataset live in conf/method/sl.yaml (CIFAR-10 0.1/1.0, CIFAR-100 6.0/0.1).
"""
from __future__ import annotations

from nlbench.losses import make_sl
from nlbench.method import METHODS, Batch, Context, Method, StepOutput


@METHODS.register("sl")
class SymmetricCE(Method):
    passes = dict(train=1)   # one training pass
    def __init__(self, *, alpha: float = 0.1, beta: float = 1.0, label_clamp: float = 1e-4, **base) -> None:
        super().__init__(**base)
        self.sl = make_sl(alpha=alpha, beta=beta, label_clamp=label_clamp)

    def loss(self, batch: Batch, ctx: Context) -> StepOutput:
        return StepOutput(self.sl(self.nets[0](batch.x), batch.y).mean())
