"""CE: plain cross entropy on the noisy labels; with ``noise=clean`` it is the clean-label upper bound."""
from nlbench.losses import make_ce
from nlbench.method import METHODS, Batch, Context, Method, StepOutput


@METHODS.register("ce")
class CrossEntropy(Method):
    passes = dict(train=1)   # per epoch: one training pass (nlbench.method.Passes)
    def __init__(self, **base) -> None:
        super().__init__(**base)
        self.ce = make_ce()

    def loss(self, batch: Batch, ctx: Context) -> StepOutput:
        return StepOutput(self.ce(self.nets[0](batch.x), batch.y).mean())
