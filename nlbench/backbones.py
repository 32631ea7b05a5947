"""Backbone registry: name -> builder(num_classes, in_channels, **options) -> nn.Module.

- ``resnet18_cifar``: ResNet18 for 32x32 inputs (3x3 stride-1 stem, no max-pool), the GSS paper's
  CIFAR network. ``pretrained`` loads ImageNet ResNet-18 weights in torchvision's layout into the four
  residual stages; the 3x3 stem (conv1 + its BN) and the classifier stay freshly initialised, since
  the ImageNet stem is a 7x7 stride-2 conv and the classifier has 1000 outputs.
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
    """Build ``name``. ``pretrained`` (ImageNet weights) applies to the backbones whose builder takes it;
    ``pretrained: false`` is accepted (and ignored) by every backbone."""
    import inspect

    builder = BACKBONES.get(name)
    if "pretrained" in inspect.signature(builder).parameters:
        pass
    elif options.get("pretrained"):
        takes = [n for n in BACKBONES.names() if "pretrained" in inspect.signature(BACKBONES.get(n)).parameters]
        raise ConfigError(f"backbone {name!r} has no pretrained weights (pretrained={options['pretrained']!r}); "
                          f"backbones with ImageNet weights: {', '.join(takes)}")
    else:
        options = {k: v for k, v in options.items() if k not in ("pretrained", "download")}
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
def resnet18_cifar(*, num_classes: int, in_channels: int = 3, width: int = 64, pretrained=False,
                   download: bool = False) -> nn.Module:
    net = CifarResNet(BasicBlock, [2, 2, 2, 2], num_classes, in_channels, width)
    if pretrained:
        if width != 64:
            raise ConfigError(f"resnet18_cifar: ImageNet weights need width=64, got width={width}")
        net.nlbench_init = load_imagenet_into_cifar_resnet(net, *imagenet_state("resnet18", pretrained, download))
    return net


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


def imagenet_state(arch: str, pretrained, download: bool) -> tuple[dict[str, torch.Tensor], str]:
    """ImageNet weights of torchvision's ``arch`` ("resnet18" | "resnet50") and where they came from.

    ``pretrained``: ``true`` reads torchvision's IMAGENET1K_V1 file from the torch hub cache
    (downloading it only when ``download`` is true); a string is a path to a state dict in torchvision's
    layout (a bare state dict, or one under a ``state_dict`` key). A missing file is a ConfigError.
    """
    from torchvision.models import ResNet18_Weights, ResNet50_Weights

    if isinstance(pretrained, (str, os.PathLike)) and str(pretrained).lower() not in ("true", "imagenet"):
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise ConfigError(f"backbone.options.pretrained={str(pretrained)!r}: no such weight file; give a "
                              f"path to a torchvision-layout {arch} state dict, true (torch hub cache) or false")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # a corrupt or foreign file: many exception types
            raise ConfigError(f"could not read weight file {path}: {type(e).__name__}: {e}") from None
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        if not isinstance(state, dict):
            raise ConfigError(f"weight file {path} holds no state dict")
        return state, str(path)
    weights = {"resnet18": ResNet18_Weights, "resnet50": ResNet50_Weights}[arch].IMAGENET1K_V1
    path = _hub_checkpoint(weights.url)
    if not path.exists() and not download:
        raise ConfigError(
            f"pretrained {arch} weights not found at {path}; this machine is offline or "
            f"backbone.options.download=false. Copy {os.path.basename(weights.url)} there (from {weights.url}), "
            f"pass backbone.options.pretrained=<path to the file>, or set backbone.options.pretrained=false")
    try:
        state = weights.get_state_dict(progress=False, check_hash=True)
    except Exception as e:  # network errors come in many types
        raise ConfigError(f"could not load pretrained {arch} weights ({e}); put the file at {path}") from None
    return state, f"torchvision {arch} IMAGENET1K_V1 ({path.name})"


def _torchvision_to_cifar(key: str) -> str | None:
    """torchvision ResNet key -> CifarResNet key; None for the stem and the classifier (kept fresh)."""
    if not key.startswith("layer"):
        return None                                   # conv1.*, bn1.* (7x7 stem), fc.* (1000 classes)
    stage, rest = key[len("layer"):].split(".", 1)
    return f"layers.{int(stage) - 1}." + rest.replace("downsample.", "shortcut.")


def load_imagenet_into_cifar_resnet(net: nn.Module, state: dict[str, torch.Tensor], source: str) -> dict:
    """Copy the residual stages of a torchvision ResNet-18 state dict into ``net``; returns what loaded."""
    own = net.state_dict()
    mapped = {}
    for k, v in state.items():
        ck = _torchvision_to_cifar(k)
        if ck is None:
            continue
        if ck not in own or own[ck].shape != v.shape:
            raise ConfigError(f"weight file {source}: {k} (shape {tuple(v.shape)}) does not fit resnet18_cifar "
                              f"({ck}: {tuple(own[ck].shape) if ck in own else 'missing'}); expected a "
                              f"torchvision resnet18 state dict")
        mapped[ck] = v
    stage_keys = [k for k in own if k.startswith("layers.")]
    missing = [k for k in stage_keys if k not in mapped]
    if missing:
        raise ConfigError(f"weight file {source} lacks {len(missing)} residual-stage tensors of resnet18 "
                          f"(first: {missing[0]})")
    net.load_state_dict(mapped, strict=False)
    return {"weights": source, "loaded": "layers (the 4 residual stages)",
            "fresh": "conv1, bn1 (3x3 stem), linear (classifier)", "tensors_loaded": len(mapped)}


@BACKBONES.register("resnet50")
def resnet50(*, num_classes: int, in_channels: int = 3, pretrained=False,
             download: bool = False) -> nn.Module:
    """torchvision ResNet-50; ImageNet weights when ``pretrained`` (true: IMAGENET1K_V1 from the hub
    cache; a string: a weight file in torchvision's layout); always a new fc layer."""
    from torchvision.models import resnet50 as tv_resnet50

    if in_channels != 3:
        raise ConfigError(f"resnet50 expects 3 input channels, got {in_channels}")
    net = tv_resnet50(weights=None)
    info = None
    if pretrained:
        state, source = imagenet_state("resnet50", pretrained, download)
        try:
            net.load_state_dict(state)
        except RuntimeError as e:
            raise ConfigError(f"weight file {source} does not fit torchvision resnet50: "
                              f"{str(e).splitlines()[0]}") from None
        info = {"weights": source, "loaded": "all but fc", "fresh": "fc (classifier)"}
    net.fc = nn.Linear(net.fc.in_features, num_classes)
    if info:
        net.nlbench_init = info
    return net


@BACKBONES.register("inception_resnet_v2")
def inception_resnet_v2(*, num_classes: int, in_channels: int = 3) -> nn.Module:
    import timm

    return timm.create_model("inception_resnet_v2", pretrained=False, num_classes=num_classes,
                             in_chans=in_channels)
