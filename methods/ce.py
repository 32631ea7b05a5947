"""CE: plain cross entropy on the noisy labels; with ``noise=clean`` it is the clean-label upper bound."""
import torch.nn.functional as F

from nlbench.method import METHODS, Batch, Context, Method, StepOutput


@METHODS.register("ce")
class CrossEntropy(Method):
    def __init__(self, **base) -> None:
        super().__init__(**base)

    def loss(self, batch: Batch, ctx: Context) -> StepOutput:
        return StepOutput(F.cross_entropy(self.nets[0](batch.x), batch.y))
