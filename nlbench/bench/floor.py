"""The floor of an epoch: the bare PyTorch training step and inference pass over synthetic tensors
already on the device (no data pipeline, no method), and a method's epoch at those rates from its pass
counts (:class:`nlbench.method.Passes`)."""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..common import bf16_on
from ..method import Passes


def epoch_phase(method, epoch: int, epochs: int, lr_ramp: float = 0.0) -> tuple[bool, float]:
    """(is a warm-up epoch, labelled share l) of 0-based ``epoch`` of a run whose lr schedule ramps up
    over ``lr_ramp`` epochs, read from the method's own schedule and division when it has them
    (DivideMix family), else (False, 1.0)."""
    warm = bool(hasattr(method, "warmup_length") and epoch < method.warmup_length(epochs, lr_ramp))
    if warm or not hasattr(method, "labeled_fraction"):
        return warm, 1.0
    n = method.num_networks
    return False, float(sum(float(method.labeled_fraction(i)) for i in range(n)) / n)


@dataclass
class BareResult:
    steps: int          # timed steps (warm-up steps excluded)
    images: int         # images in the timed steps
    seconds: float

    @property
    def ips(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("nan")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _synthetic(n: int, shape: tuple[int, ...], num_classes: int, device: torch.device, channels_last: bool,
               seed: int, rotate: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``rotate`` different random batches of ``n`` images on the device (never zeros, never one
    buffer reused: caches must not make the floor look faster than real data)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(rotate):
        x = torch.randn(n, *shape, generator=g).to(device)
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        out.append((x, torch.randint(0, num_classes, (n,), generator=g).to(device)))
    return out


def bare_train(net: torch.nn.Module, opt: torch.optim.Optimizer, *, batch_size: int, steps: int, warmup: int,
               shape: tuple[int, ...], num_classes: int, device: torch.device, amp: bool, channels_last: bool,
               seed: int = 0, rotate: int = 4, cuda_graphs: bool = False) -> BareResult:
    """The floor of a training step: forward, CE, backward, optimiser step on synthetic batches
    already on ``device``; ``warmup`` untimed steps first, then ``steps`` timed ones. ``cuda_graphs``:
    mark each step's start, as the trainer does under a CUDA-graph compile mode."""
    data = _synthetic(batch_size, shape, num_classes, device, channels_last, seed, rotate)
    net.train()
    use_amp = bf16_on(amp, device)
    n_steps = n_images = 0
    t0 = time.perf_counter()
    for s in range(warmup + steps):
        if s == warmup:
            sync(device)
            t0 = time.perf_counter()
        x, y = data[s % rotate]
        if cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        with torch.autocast(device.type, torch.bfloat16, enabled=use_amp):
            loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if s >= warmup:
            n_steps += 1
            n_images += x.shape[0]
    sync(device)
    return BareResult(n_steps, n_images, time.perf_counter() - t0)


def bare_infer(net: torch.nn.Module, *, batch_size: int, batches: int, warmup: int, shape: tuple[int, ...],
               num_classes: int, device: torch.device, amp: bool, channels_last: bool, seed: int = 1,
               rotate: int = 2) -> BareResult:
    """The floor of an inference pass: eval-mode forwards under inference mode."""
    data = _synthetic(batch_size, shape, num_classes, device, channels_last, seed, rotate)
    was = net.training
    net.eval()
    n_steps = n_images = 0
    t0 = time.perf_counter()
    try:
        with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16,
                                                    enabled=bf16_on(amp, device)):
            for s in range(warmup + batches):
                if s == warmup:
                    sync(device)
                    t0 = time.perf_counter()
                x = data[s % rotate][0]
                net(x)
                if s >= warmup:
                    n_steps += 1
                    n_images += x.shape[0]
        sync(device)
    finally:
        net.train(was)
    return BareResult(n_steps, n_images, time.perf_counter() - t0)


def floor_seconds(passes: Passes, warm: bool, labeled: float, n: int, n_test: int, bare: dict) -> float:
    """Seconds an epoch must take at the bare rates: its training passes at the bare training rate,
    its no-grad forwards and test evaluation at the bare inference rate."""
    t, i, e = passes.at(warm, labeled)
    return t * n / bare["train_ips"] + (i * n + e * n_test) / bare["infer_ips"]
