"""The Method contract carries what the ten methods need, without changes to the trainer:
two networks, per-sample buffers, epoch hooks, inference passes over the training set, and a
custom stream of labeled/unlabeled pairs with two views (DivideMix's shape)."""
from itertools import cycle

import torch
import torch.nn.functional as F

from nlbench.backbones import build_backbone
from nlbench.data import load_dataset
from nlbench.method import Batch, Context, Method, StepOutput
from nlbench.stream import DeviceStream
from nlbench.trainer import TrainConfig, Trainer


class PairedTwoNet(Method):
    """A toy two-network method: each epoch net i trains on a labeled/unlabeled split made by the
    other net's inference pass (kept in a buffer), with two augmented views per sample."""

    num_networks = 2

    def __init__(self, **base):
        super().__init__(**base)
        self.register_buffer("confident", torch.ones(2, self.num_train, dtype=torch.bool))
        self.register_buffer("calls", torch.zeros(3, dtype=torch.long))   # start, epoch_start, epoch_end
        self.seen_pairs = 0

    def on_train_start(self, ctx):
        self.calls[0] += 1

    @torch.no_grad()
    def on_epoch_start(self, ctx):
        self.calls[1] += 1
        for i, net in enumerate(self.nets):
            p = F.softmax(ctx.infer(net), 1)
            self.confident[1 - i] = p.gather(1, self.noisy_labels[:, None]).squeeze(1) >= p.median()

    def batches(self, ctx: Context):
        for i in range(2):
            lab = torch.nonzero(self.confident[i]).squeeze(1)
            unl = torch.nonzero(~self.confident[i]).squeeze(1)
            u_stream = cycle(list(ctx.stream.batches(indices=unl, batch_size=32, views=2, generator=ctx.generator)))
            for b in ctx.stream.batches(indices=lab, batch_size=32, views=2, generator=ctx.generator):
                yield i, b, next(u_stream)

    def loss(self, batch, ctx):
        i, lab, unl = batch
        assert isinstance(lab, Batch) and lab.x2 is not None and unl.x2 is not None
        self.seen_pairs += 1
        net, peer = self.nets[i], self.nets[1 - i]
        with torch.no_grad():
            target = F.softmax(peer(unl.x), 1)
        lu = F.mse_loss(F.softmax(net(unl.x2), 1), target)
        return StepOutput(F.cross_entropy(net(lab.x), lab.y) + lu, {"net": float(i)})

    def on_epoch_end(self, ctx):
        self.calls[2] += 1


def _make(seed=0, epochs=3, checkpoint=None, interrupt_after=None):
    d = load_dataset("digits", data_dir=".")
    y = torch.from_numpy(d.train_y)
    stream = DeviceStream(d.train_x, y, mean=d.mean, std=d.std, crop_pad=1, batch_size=64)
    test = DeviceStream(d.test_x, torch.from_numpy(d.test_y), mean=d.mean, std=d.std)
    torch.manual_seed(seed)
    nets = [build_backbone("mlp", num_classes=10, in_channels=1) for _ in range(2)]
    m = PairedTwoNet(nets=nets, num_classes=10, noisy_labels=y, generator=torch.Generator().manual_seed(seed))
    cfg = TrainConfig(epochs=epochs, batch_size=64, lr=0.05)
    return m, Trainer(m, stream, {"test": test.eval_batches}, cfg, device=torch.device("cpu"), data_seed=seed,
                      clean_labels=y, checkpoint=checkpoint, progress=False, interrupt_after=interrupt_after,
                      log=lambda s: None)


def test_two_networks_custom_paired_stream_trains_both_nets():
    m, tr = _make()
    before = [[p.detach().clone() for p in net.parameters()] for net in m.nets]
    res = tr.fit()
    assert res.status == "completed" and m.seen_pairs > 0
    assert m.calls.tolist() == [1, 3, 3]
    for net, old in zip(m.nets, before):
        assert any(not torch.equal(p, q) for p, q in zip(net.parameters(), old))
    assert res.history[-1]["test_top1"] > 50          # the toy method really learns digits
    assert 0 < res.history[-1]["net"] < 1             # both networks took steps within an epoch


def test_custom_stream_method_resumes_exactly(tmp_path):
    _, full = _make(checkpoint=tmp_path / "a.pt")
    ref = full.fit()
    _, part = _make(checkpoint=tmp_path / "b.pt", interrupt_after=1)
    assert part.fit().status == "interrupted"
    m, resumed = _make(checkpoint=tmp_path / "b.pt")
    res = resumed.fit()
    assert m.calls.tolist() == [1, 3, 3]              # buffers restored, on_train_start not rerun
    strip = lambda h: [{k: v for k, v in r.items() if "seconds" not in k} for r in h]
    assert strip(res.history) == strip(ref.history)
