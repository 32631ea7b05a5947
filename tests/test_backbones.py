"""Backbones: every registered builder gives (B, K) logits; the CIFAR ResNet's stem; parameter counts;
offline pretrained weights fail with a path to put them at."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from nlbench.backbones import BACKBONES, build_backbone
from nlbench.registry import ConfigError

#: too heavy to run forward on a 2-core CPU in the test suite: construct only
CONSTRUCT_ONLY = {"inception_resnet_v2", "resnet50"}
#: per-backbone input (channels, size, extra builder options); the default is a 32x32 RGB batch
INPUTS = {"mlp": (1, 8, {"input_size": 8}), "inception_resnet_v2": (3, 299, {}), "resnet50": (3, 224, {})}


@pytest.mark.parametrize("name", BACKBONES.names())
def test_every_backbone_gives_batch_by_classes_logits(name):
    c, size, extra = INPUTS.get(name, (3, 32, {}))
    torch.manual_seed(0)
    net = build_backbone(name, num_classes=7, in_channels=c, **extra)
    assert isinstance(net, nn.Module)
    assert sum(p.numel() for p in net.parameters()) > 0
    if name in CONSTRUCT_ONLY:
        return
    x = torch.randn(3, c, size, size)
    net.train()
    out = net(x)
    assert out.shape == (3, 7) and out.dtype == torch.float32 and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)
    net.eval()
    with torch.no_grad():
        assert net(x[:1]).shape == (1, 7)


@pytest.mark.parametrize("name", ["resnet18_cifar", "preact_resnet18", "cnn_small"])
def test_small_image_nets_take_one_channel_and_other_widths(name):
    net = build_backbone(name, num_classes=4, in_channels=1, width=8)
    assert net(torch.randn(2, 1, 16, 16)).shape == (2, 4)


def test_resnet18_cifar_stem_and_parameter_count():
    net = build_backbone("resnet18_cifar", num_classes=10, in_channels=3)
    stem = net.conv1
    assert isinstance(stem, nn.Conv2d)
    assert stem.kernel_size == (3, 3) and stem.stride == (1, 1) and stem.padding == (1, 1)
    assert stem.in_channels == 3 and stem.out_channels == 64
    assert not any(isinstance(m, nn.MaxPool2d) for m in net.modules()), "no max-pool for 32x32 inputs"
    n = sum(p.numel() for p in net.parameters())
    assert n == 11_173_962            # the standard CIFAR ResNet18 (kuangliu / GSS paper), 10 classes
    assert round(n / 1e6, 2) == 11.17
    # spatial sizes: 32 -> 32 (stem), 32, 16, 8, 4 through the four stages
    feats = []
    hooks = [stage.register_forward_hook(lambda m, i, o: feats.append(o.shape[-1])) for stage in net.layers]
    net(torch.randn(2, 3, 32, 32))
    for h in hooks:
        h.remove()
    assert feats == [32, 16, 8, 4]
    assert sum(p.numel() for p in build_backbone("resnet18_cifar", num_classes=100, in_channels=3).parameters()) \
        == n + 90 * 512 + 90


def test_preact_resnet18_parameter_count():
    n = sum(p.numel() for p in build_backbone("preact_resnet18", num_classes=10, in_channels=3).parameters())
    assert n == 11_172_170          # DivideMix's PreResNet18: no stem BN, no BN on the shortcut convs


def test_resnet50_pretrained_offline_names_the_expected_file(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    with pytest.raises(ConfigError) as e:
        build_backbone("resnet50", num_classes=14, in_channels=3, pretrained=True)
    msg = str(e.value)
    expected = tmp_path / "hub" / "checkpoints" / "resnet50-0676ba61.pth"
    assert str(expected) in msg and "pretrained" in msg
    assert "\n" not in msg


def test_resnet50_new_head_and_channel_check():
    net = build_backbone("resnet50", num_classes=14, in_channels=3, pretrained=False)
    assert net.fc.out_features == 14 and net.fc.in_features == 2048
    with pytest.raises(ConfigError, match="3 input channels"):
        build_backbone("resnet50", num_classes=14, in_channels=1)


def test_unknown_backbone_and_option_are_config_errors():
    with pytest.raises(ConfigError, match="valid choices"):
        build_backbone("resnet19", num_classes=10, in_channels=3)
    with pytest.raises(ConfigError, match="depth"):
        build_backbone("cnn_small", num_classes=10, in_channels=3, depth=3)
