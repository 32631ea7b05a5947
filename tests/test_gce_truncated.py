"""Truncated GCE: per-sample weights w = [p_y > k] refreshed from an inference pass on schedule."""
import torch
import torch.nn.functional as F

import methods  # noqa: F401
from nlbench.backbones import build_backbone
from nlbench.data import load_dataset
from nlbench.losses import gce_at, make_gce
from nlbench.method import METHODS, Context
from nlbench.stream import DeviceStream


def _setup(**params):
    d = load_dataset("digits", data_dir=".")
    y = torch.from_numpy(d.train_y)
    stream = DeviceStream(d.train_x, y, mean=d.mean, std=d.std, batch_size=128)
    torch.manual_seed(0)
    net = build_backbone("mlp", num_classes=10, in_channels=1)
    m = METHODS.get("gce")(nets=[net], num_classes=10, noisy_labels=y, generator=torch.Generator(), **params)
    ctx = Context(epoch=0, epochs=10, stream=stream, batch_size=128, device=torch.device("cpu"),
                  generator=torch.Generator().manual_seed(0))
    return m, ctx, stream, y


def test_weights_refresh_only_on_schedule_and_equal_p_y_above_k():
    m, ctx, stream, y = _setup(truncated=True, k=0.5, start_prune=2, prune_every=2)
    assert m.selected().all()
    for epoch, refresh in [(0, False), (1, True), (2, False), (3, True)]:
        ctx.epoch = epoch
        with torch.no_grad():
            m.nets[0][-1].bias.add_(torch.randn(10))   # change the model so a refresh is visible
        before = m.weight.clone()
        m.on_epoch_end(ctx)
        if refresh:
            p_y = F.softmax(stream.infer(m.nets[0]), 1).gather(1, y[:, None]).squeeze(1)
            assert torch.equal(m.weight, (p_y > 0.5).float())
        else:
            assert torch.equal(m.weight, before)


def test_truncated_loss_value():
    m, ctx, stream, y = _setup(truncated=True, k=0.5)
    m.weight[::2] = 0
    b = next(stream.batches(generator=torch.Generator().manual_seed(1), shuffle=False))
    out = m.loss(b, ctx).loss
    per = make_gce(q=0.7)(m.nets[0](b.x), b.y)
    expect = (m.weight[b.idx] * (per - gce_at(0.5, 0.7))).mean()
    torch.testing.assert_close(out, expect)
    plain, *_ = _setup()
    assert plain.selected() is None
