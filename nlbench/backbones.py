"""Backbone registry: name -> builder(num_classes, in_channels, **options) -> nn.Module.

- ``resnet18_cifar``: ResNet18 for 32x32 inputs (3x3 stride-1 stem, no max-pool), the GSS paper's
  CIFAR network.
- ``preact_resnet18``: PreAct-ResNet18 as in DivideMix's PreResNet.py (also used by ELR+).
- ``resnet50``: torchvision ResNet-50; ``pretrained=true`` loads ImageNet weights from the local torch
  hub cache (or downloads them when ``download=true`` and a network exists); offline without the file is
  a ConfigError saying where to put it.
- ``inception_resnet_v2``: timm's Inception-ResNet-v2 (DivideMix/ELR+ WebVision network), from scratch.
- ``cnn_small``: a six-conv net for ``scale=cpu`` (2-core CPU, minutes per run).
- ``mlp``: a 2-hidden-layer MLP for 8x8 digits.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .registry import ConfigError, Registry

BACKBONES: Registry = Registry("backbone")


def build_backbone(name: str, *, num_classes: int, in_channels: int, **options) -> nn.Module:
    builder = BACKBONES.get(name)
    try:
        return builder(num_classes=num_classes, in_channels=in_channels, **options)
    except TypeError as e:  # an unknown option key
        raise ConfigError(f"backbone {name!r}: {e}") from None


# ---------------------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class PreActBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False))

    def forward(self, x):
        out = F.relu(self.bn1(x))
        sc = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + sc


class CifarResNet(nn.Module):
    """ResNet for small images: 3x3 stride-1 stem, no max-pool, 4 stages, global average pool."""

    def __init__(self, block, num_blocks, num_classes: int, in_channels: int = 3, width: int = 64,
                 preact: bool = False) -> None:
        super().__init__()
        self.preact = preact
        self.cin = width
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)  # stem BN (ResNet) or final BN (PreAct)
        layers = []
        for i, n in enumerate(num_blocks):
            layers.append(self._make(block, width * 2 ** i, n, 1 if i == 0 else 2))
        self.layers = nn.Sequential(*layers)
        if preact:
            self.bn1 = nn.BatchNorm2d(width * 2 ** (len(num_blocks) - 1))
        self.linear = nn.Linear(width * 2 ** (len(num_blocks) - 1), num_classes)

    def _make(self, block, cout, n, stride):
        blocks = []
        for s in [stride] + [1] * (n - 1):
            blocks.append(block(self.cin, cout, s))
            self.cin = cout
        return nn.Sequential(*blocks)

    def forward(self, x):
        if self.preact:
            out = self.layers(self.conv1(x))
            out = F.relu(self.bn1(out))
        else:
            out = self.layers(F.relu(self.bn1(self.conv1(x))))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


@BACKBONES.register("resnet18_cifar")
def resnet18_cifar(*, num_classes: int, in_channels: int = 3, width: int = 64) -> nn.Module:
    return CifarResNet(BasicBlock, [2, 2, 2, 2], num_classes, in_channels, width)


@BACKBONES.register("preact_resnet18")
def preact_resnet18(*, num_classes: int, in_channels: int = 3, width: int = 64) -> nn.Module:
    return CifarResNet(PreActBlock, [2, 2, 2, 2], num_classes, in_channels, width, preact=True)


@BACKBONES.register("cnn_small")
def cnn_small(*, num_classes: int, in_channels: int = 3, width: int = 16) -> nn.Module:
    """Six 3x3 conv-BN-ReLU layers (w, w | 2w, 2w | 4w, 4w), max-pool between stages, GAP, linear."""
    def cbr(a, b):
        return [nn.Conv2d(a, b, 3, 1, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU(inplace=True)]
    w = width
    return nn.Sequential(
        *cbr(in_channels, w), *cbr(w, w), nn.MaxPool2d(2),
        *cbr(w, 2 * w), *cbr(2 * w, 2 * w), nn.MaxPool2d(2),
        *cbr(2 * w, 4 * w), *cbr(4 * w, 4 * w),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, num_classes))


@BACKBONES.register("mlp")
def mlp(*, num_classes: int, in_channels: int = 1, input_size: int = 8, hidden: int = 256) -> nn.Module:
    d = in_channels * input_size * input_size
    return nn.Sequential(nn.Flatten(), nn.Linear(d, hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_classes))


def _hub_checkpoint(url: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


@BACKBONES.register("resnet50")
def resnet50(*, num_classes: int, in_channels: int = 3, pretrained: bool = False,
             download: bool = False) -> nn.Module:
    """torchvision ResNet-50; ImageNet weights (IMAGENET1K_V1) when ``pretrained``; new fc layer."""
    from torchvision.models import ResNet50_Weights, resnet50 as tv_resnet50

    if in_channels != 3:
        raise ConfigError(f"resnet50 expects 3 input channels, got {in_channels}")
    net = tv_resnet50(weights=None)
    if pretrained:
        weights = ResNet50_Weights.IMAGENET1K_V1
        path = _hub_checkpoint(weights.url)
        if not path.exists() and not download:
            raise ConfigError(
                f"pretrained resnet50 weights not found at {path}; this machine is offline or "
                f"backbone.download=false. Copy {os.path.basename(weights.url)} there (from {weights.url}) "
                f"or set backbone.pretrained=false")
        try:
            state = weights.get_state_dict(progress=False, check_hash=True)
        except Exception as e:  # network errors come in many types
            raise ConfigError(f"could not load pretrained resnet50 weights ({e}); put the file at {path}") from None
        net.load_state_dict(state)
    net.fc = nn.Linear(net.fc.in_features, num_classes)
    return net


@BACKBONES.register("inception_resnet_v2")
def inception_resnet_v2(*, num_classes: int, in_channels: int = 3) -> nn.Module:
    import timm

    return timm.create_model("inception_resnet_v2", pretrained=False, num_classes=num_classes,
                             in_chans=in_channels)
