"""ELR+ (Liu et al., NeurIPS 2020; shengliu66/ELR ELR_plus/trainer/trainer.py, model/loss.py).

Two networks, each with a weight-averaged (EMA) copy. Each epoch network 0 makes one pass over the
data, then network 1 (one optimiser each). A step of network i on batch (x, y, idx):
  1. l ~ Beta(alpha, alpha), l = max(l, 1 - l), a random permutation pi; mix the inputs and the
     one-hot labels: x~ = l x + (1 - l) x[pi], y~ = l y + (1 - l) y[pi];
  2. the EMA copy of the OTHER network on the un-mixed x gives p_ema; the temporal ensemble of
     network i: t_i[idx] <- beta t_i[idx] + (1 - beta) p_ema; the mixed target q = l t_i[idx] +
     (1 - l) t_i[idx][pi];
  3. loss = -mean sum y~ log softmax(f_i(x~)) + w(s) lambda mean log(1 - <q, clamp(p, 1e-4, 1-1e-4)>),
     w(s) = exp(-5 (1 - s/S)^2) the sigmoid ramp over S steps (w = 1 without a ramp); for CIFAR-100
     (``reweight_targets``) y~ is first multiplied by q and renormalised, as the official loss;
  4. after the optimiser step, EMA_i <- g EMA_i + (1 - g) f_i on the parameters (buffers are the EMA
     copy's own, from its train-mode forwards), g = ramp(s + 1) * ema_alpha, or without a ramp
     min(1 - 1/(s + 1), ema_alpha); s counts network i's steps.

Choices (conf/method/elr_plus.yaml): the temporal ensemble starts at zeros (official); the EMA
copies start as copies of their networks; the official ramps of 40000 steps are given as fractions
of the run's steps per network (``ema_rampup``, ``lambda_rampup``: 40000 of 200 x 352 steps = 0.57
on CIFAR-10, of 250 x 352 = 0.45 on CIFAR-100; 0 = no ramp), so they scale with the epoch count;
the EMA copies run in train mode (batch statistics) as in the official code (``ema_mode``); test
prediction = softmax of the mean raw logits of the two networks (single-GPU official path), headline
ensemble.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from nlbench.method import METHODS, Batch, Context, Method, StepOutput, Verdict
from nlbench.mixup import mix, mixup_weight
from nlbench.registry import ConfigError, check_range

EMA_MODES = ("train", "eval")


def sigmoid_rampup(step: torch.Tensor, length: float) -> torch.Tensor:
    """exp(-5 (1 - min(step, length)/length)^2); 1 when length is 0 (no ramp)."""
    if length <= 0:
        return torch.ones_like(step, dtype=torch.float32)
    phase = 1.0 - step.float().clamp(0, length) / length
    return torch.exp(-5.0 * phase * phase)


def elr_plus_loss(logits: torch.Tensor, target: torch.Tensor, q: torch.Tensor, lam: torch.Tensor | float,
                  reweight: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, ce, reg) for logits (B, K), mixed soft targets (B, K), ELR targets q (B, K)."""
    logp = F.log_softmax(logits.float(), dim=1)
    p = logp.exp().clamp(1e-4, 1 - 1e-4)
    if reweight:   # CIFAR-100 in the official loss: the label target re-weighted by q
        target = target * q
        target = target / target.sum(1, keepdim=True).clamp_min(1e-12)
    ce = -(target * logp).sum(1).mean()
    reg = torch.log(1 - (q * p).sum(1)).mean()
    return ce + lam * reg, ce, reg


@METHODS.register("elr_plus")
class ELRPlus(Method):
    num_networks = 2
    passes = dict(train=2, infer=2)   # a pass per network + the peer's EMA copy forward (no grad) on its batches

    def __init__(self, *, beta: float = 0.7, lam: float = 3.0, ema_alpha: float = 0.997, ema_rampup: float = 0.57,
                 lambda_rampup: float = 0.0, mixup_alpha: float = 1.0, reweight_targets: bool = False,
                 ema_mode: str = "train", **base) -> None:
        super().__init__(**base)
        self.beta = check_range("elr_plus beta", beta, 0, 1, hi_open=True)
        self.lam = check_range("elr_plus lam", lam, 0, None)
        self.ema_alpha = check_range("elr_plus ema_alpha", ema_alpha, 0, 1)
        self.ema_rampup = check_range("elr_plus ema_rampup", ema_rampup, 0, 1)
        self.lambda_rampup = check_range("elr_plus lambda_rampup", lambda_rampup, 0, 1)
        self.mixup_alpha = check_range("elr_plus mixup_alpha", mixup_alpha, 0, None)
        if ema_mode not in EMA_MODES:
            raise ConfigError(f"unknown elr_plus ema_mode {ema_mode!r}; valid choices: {', '.join(EMA_MODES)}")
        self.ema_train = ema_mode == "train"
        self.reweight = bool(reweight_targets)
        self.emas = nn.ModuleList(copy.deepcopy(net) for net in self.nets)
        self.emas.requires_grad_(False)
        self.register_buffer("hist", torch.zeros(2, self.num_train, self.num_classes))   # t_i, per network
        self.register_buffer("net_steps", torch.zeros(2, dtype=torch.long))             # s, per network
        self._net_in_step = 0                           # which network the current step trains

    def batches(self, ctx: Context):
        for i in range(2):                           # a full pass of network 0, then of network 1
            for b in ctx.stream.batches(batch_size=ctx.batch_size, generator=ctx.generator):
                yield i, b

    @torch.no_grad()
    def on_epoch_start(self, ctx: Context) -> None:
        # the trainer may have put the networks in channels_last; the EMA copies follow (speed only)
        for ema, net in zip(self.emas, self.nets):
            w = next((p for p in net.parameters() if p.dim() == 4), None)
            if w is not None and not w.is_contiguous() and w.is_contiguous(memory_format=torch.channels_last):
                ema.to(memory_format=torch.channels_last)

    def _ramp_steps(self, ctx: Context, fraction: float) -> float:
        return fraction * ctx.epochs * max(ctx.steps_per_epoch, 1)

    def loss(self, batch: tuple[int, Batch], ctx: Context) -> StepOutput:
        i, b = batch
        self._net_in_step = i
        lam = mixup_weight(self.mixup_alpha, self.generator)
        perm = torch.randperm(len(b.y), generator=self.generator, device=self.generator.device).to(b.y.device)
        target = mix(F.one_hot(b.y, self.num_classes).float(), lam, perm)
        logits = self.nets[i](mix(b.x, lam, perm))
        with torch.no_grad(), self.mode(self.emas[1 - i], train=self.ema_train):
            p_ema = F.softmax(self.emas[1 - i](b.x).float(), dim=1)
            t = self.hist[i]
            t[b.idx] = self.beta * t[b.idx] + (1 - self.beta) * p_ema
            q = mix(t[b.idx], lam, perm)
        w = sigmoid_rampup(self.net_steps[i] + 1, self._ramp_steps(ctx, self.lambda_rampup))
        loss, ce, reg = elr_plus_loss(logits, target, q, w * self.lam, self.reweight)
        return StepOutput(loss, {"ce": ce.detach(), "elr_reg": reg.detach(), "mixup_l": lam})

    def ema_decay(self, step: torch.Tensor, ctx: Context) -> torch.Tensor:
        """g for the EMA update after network step ``step`` (0-based count of steps done before it)."""
        if self.ema_rampup > 0:
            return sigmoid_rampup(step + 1, self._ramp_steps(ctx, self.ema_rampup)) * self.ema_alpha
        return (1 - 1 / (step.float() + 1)).clamp(max=self.ema_alpha)

    @torch.no_grad()
    def on_step_end(self, ctx: Context) -> None:
        i = self._net_in_step
        g = self.ema_decay(self.net_steps[i], ctx)
        for e, p in zip(self.emas[i].parameters(), self.nets[i].parameters()):
            e.mul_(g).add_((1 - g) * p.detach())
        if not self.ema_train:   # an eval-mode EMA copy needs running statistics: its network's
            for eb, nb in zip(self.emas[i].buffers(), self.nets[i].buffers()):
                eb.copy_(nb)
        self.net_steps[i] += 1

    def verdict(self) -> Verdict | None:
        """The ELR targets t (the running mean of the EMA networks' predictions), both networks averaged:
        t's probability of the given label, its argmax label and that label's probability."""
        t = self.hist.mean(0)
        s = t.sum(1, keepdim=True)
        if not bool((s > 0).all()):   # a sample not trained yet has no target: no verdict before epoch 1
            return None
        t = t / s
        label_prob, label = t.max(1)
        return Verdict(t.gather(1, self.noisy_labels[:, None]).squeeze(1), label, label_prob)

    def combine(self, logits: list[torch.Tensor]) -> torch.Tensor:
        """The official test: the softmax of the mean of both networks' logits."""
        return F.softmax(0.5 * (logits[0].float() + logits[1].float()), dim=1)
