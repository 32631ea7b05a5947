"""DivideMix (Li et al., ICLR 2020), following the official code (LiJunnan1992/DivideMix; methods.md 2.6, 5).

Two networks. Warm-up epochs: each net in turn, CE on all data (batch 2 x ``batch_size``), plus the
confidence penalty mean(sum p log p) when ``conf_penalty`` (the official asymmetric-noise and
Clothing1M setting; set per noise config in the yaml, never derived from the labels). Every later
epoch starts with a co-divide: per net, per-sample CE over the training set from ``ctx.infer`` (eval
mode, un-augmented, fp32 logits), min-max normalised, averaged over the last ``loss_history`` epochs
(official: 5 at r = 0.9, else 1), a 2-component GMM (``ssl_parts.gmm_clean_prob``, seeded from the
method's generator), clean probability w = posterior of the lower-mean component. Net i then trains
on the split made by the OTHER net: labelled = {w > p_threshold} carrying w, unlabelled = the rest,
one pass over labelled batches (``batch_size``) with a cycled, reshuffled unlabelled stream, two
augmented views each. Step: co-guess (mean softmax of both nets x both views, sharpened with T),
co-refinement sharpen(w onehot(y) + (1 - w) p_bar), MixMatch with lam = max(lam, 1 - lam),
lam ~ Beta(alpha, alpha) and a random permutation of all 4B rows, loss = L_x (soft CE)
+ lambda_u * ramp * L_u (MSE, mean over batch and classes) + the uniform-prior penalty. The trained
net forwards the co-guess/refinement in train mode under no_grad (batch statistics, running stats
updated), the peer in eval mode. Test: softmax of the sum of both nets' logits.

Choices where the official code is tied to its 300-epoch CIFAR protocol (also in the yaml):
- Schedule scaling: warm-up and the 16-epoch lambda_u ramp are given in epochs of the official
  protocol (``warmup_epochs``, ``rampup_epochs``) of ``reference_epochs`` epochs and scaled by
  E / reference_epochs: warm-up = max(1, round(warmup_epochs * E / reference_epochs)) whole epochs,
  ramp length rampup_epochs * E / reference_epochs (fractional). At E = reference_epochs both are the
  official numbers. The ramp reads epoch + step / (n_labelled // batch_size + 1), as the official.
- ``labeled_only`` (official Clothing1M/WebVision step): only the 2B mixed labelled rows are
  forwarded, L_u is dropped (their partners still come from all 4B rows).
- ``balanced_subset_per_epoch`` = S (official Clothing1M): each warm-up pass trains on a fresh
  class-balanced subset (by noisy label) of 2S samples; each net's co-divide runs on its own fresh
  S-sample balanced subset, and the peer trains on that subset (outside it nothing is trained).
- Fewer than 2 unlabelled samples: the step mixes the labelled rows only (the official code crashes).
- ``selected()``: the labelled set network 1 trains on (made by network 2's GMM); None in warm-up.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from nlbench.method import METHODS, Batch, Context, Method, StepOutput, Verdict
from nlbench.registry import ConfigError, as_int, check_range

from . import ssl_parts as S


@dataclass
class SSLStep:
    """One step of a DivideMix epoch: network ``net`` trains on ``lab`` (and ``unl``)."""

    net: int
    lab: Batch
    unl: Batch | None
    progress: float          # epochs, for the lambda_u ramp
    warmup: bool


@METHODS.register("dividemix")
class DivideMix(Method):
    num_networks = 2
    passes = dict(train=0, infer=2, train_labeled=8, infer_labeled=12, warmup=dict(train=2))   # derived in method.Passes

    def __init__(self, *, lambda_u: float = 25.0, p_threshold: float = 0.5, T: float = 0.5, alpha: float = 4.0,
                 batch_size: int = 64, warmup_epochs: int = 10, rampup_epochs: float = 16.0,
                 reference_epochs: int = 300, warmup_after_ramp: int = 0, conf_penalty: bool = False,
                 loss_history: int = 1,
                 labeled_only: bool = False, balanced_subset_per_epoch: int | None = None, **base) -> None:
        super().__init__(**base)
        self.lambda_u = check_range("dividemix lambda_u", lambda_u, 0, None)
        self.p_threshold = check_range("dividemix p_threshold", p_threshold, 0, 1, lo_open=True, hi_open=True)
        self.T = check_range("dividemix T", T, 0, None, lo_open=True)
        self.alpha = check_range("dividemix alpha", alpha, 0, None, lo_open=True)
        self.batch_size = as_int("dividemix batch_size", batch_size)
        self.warmup_epochs = as_int("dividemix warmup_epochs", warmup_epochs)
        self.rampup_epochs = check_range("dividemix rampup_epochs", rampup_epochs, 0, None, lo_open=True)
        self.reference_epochs = as_int("dividemix reference_epochs", reference_epochs)
        self.warmup_after_ramp = as_int("dividemix warmup_after_ramp", warmup_after_ramp)
        self.loss_history = as_int("dividemix loss_history", loss_history)
        for name, v, lo in (("batch_size", self.batch_size, 2), ("warmup_epochs", self.warmup_epochs, 0),
                            ("reference_epochs", self.reference_epochs, 1), ("loss_history", self.loss_history, 1),
                            ("warmup_after_ramp", self.warmup_after_ramp, 0)):
            if v < lo:
                raise ConfigError(f"dividemix {name}={v} must be >= {lo}")
        for name, v in (("conf_penalty", conf_penalty), ("labeled_only", labeled_only)):
            if not isinstance(v, bool):
                raise ConfigError(f"dividemix {name} must be true or false, got {v!r}")
        self.conf_penalty, self.labeled_only = conf_penalty, labeled_only
        self.subset_size = None if balanced_subset_per_epoch is None else \
            as_int("dividemix balanced_subset_per_epoch", balanced_subset_per_epoch)
        if self.subset_size is not None:
            if self.subset_size < self.num_classes:
                raise ConfigError(f"dividemix balanced_subset_per_epoch={self.subset_size} must be >= the "
                                  f"number of classes ({self.num_classes})")
            if self.loss_history > 1:
                raise ConfigError("dividemix loss_history > 1 needs the whole training set each epoch; "
                                  "it cannot be combined with balanced_subset_per_epoch")
        n = self.num_train
        self.register_buffer("prob", torch.zeros(2, n))                       # clean prob. by net j's GMM
        self.register_buffer("member", torch.zeros(2, n, dtype=torch.bool))   # samples net j divided
        self.register_buffer("trains_on", torch.zeros(2, n, dtype=torch.bool))  # net i's samples this epoch
        self.register_buffer("divided", torch.zeros((), dtype=torch.bool))    # False during warm-up
        self.register_buffer("loss_hist", torch.zeros(2, self.loss_history, n))
        self.register_buffer("hist_count", torch.zeros((), dtype=torch.long))

    # --- schedule -----------------------------------------------------------------------------
    def warmup_length(self, epochs: int, lr_ramp: float = 0.0) -> int:
        """Warm-up epochs of a run of ``epochs`` whose lr schedule ramps up over ``lr_ramp`` epochs: the
        official length scaled to the run; with a ramp (a short schedule's onecycle), never ending before
        ``warmup_after_ramp`` whole epochs at full learning rate after it (the official warm-up is 10
        epochs at full lr: a split made inside the ramp is made on networks that have barely trained).
        Without a ramp (the paper protocols) the scaled official length, unchanged."""
        scaled = max(1, round(self.warmup_epochs * epochs / self.reference_epochs))
        if self.warmup_after_ramp == 0 or lr_ramp <= 0:
            return scaled
        return min(epochs, max(scaled, math.ceil(lr_ramp) + self.warmup_after_ramp))

    def rampup_length(self, epochs: int) -> float:
        return self.rampup_epochs * epochs / self.reference_epochs

    def lambda_u_at(self, progress: float, epochs: int, lr_ramp: float = 0.0) -> float:
        return self.lambda_u * S.rampup(progress, self.warmup_length(epochs, lr_ramp), self.rampup_length(epochs))

    def in_warmup(self, ctx: Context) -> bool:
        return ctx.epoch < self.warmup_length(ctx.epochs, ctx.lr_ramp_epochs)

    def labeled_mask(self, i: int) -> torch.Tensor:
        """(N,) bool: the samples network ``i`` trains on as labelled (the other net's division)."""
        return self.member[1 - i] & (self.prob[1 - i] > self.p_threshold)

    def labeled_fraction(self, i: int) -> torch.Tensor:
        """Share of the samples network ``i`` trains on this epoch that are labelled."""
        return self.labeled_mask(i).sum() / self.member[1 - i].sum().clamp_min(1)

    def _subset(self, size: int) -> torch.Tensor:
        return S.balanced_subset(self.noisy_labels, size, self.num_classes, self.generator)

    # --- co-divide ----------------------------------------------------------------------------
    @torch.no_grad()
    def on_epoch_start(self, ctx: Context) -> None:
        if self.in_warmup(ctx):
            return
        for j in range(2):
            idx = None if self.subset_size is None else self._subset(self.subset_size)
            y = self.noisy_labels if idx is None else self.noisy_labels[idx]
            loss = S.minmax(F.cross_entropy(ctx.infer(self.nets[j], idx).float(), y, reduction="none"))
            if self.loss_history > 1:
                self.loss_hist[j, int(self.hist_count) % self.loss_history] = loss
                loss = self.loss_hist[j, :min(int(self.hist_count) + 1, self.loss_history)].mean(0)
            seed = int(torch.randint(0, 2 ** 31 - 1, (1,), generator=self.generator, device=self.generator.device))
            w = S.gmm_clean_prob(loss, seed)
            self.prob[j].zero_()
            self.member[j].fill_(idx is None)
            if idx is None:
                self.prob[j] = w
            else:
                self.prob[j, idx] = w
                self.member[j, idx] = True
        self.hist_count += 1
        self.divided.fill_(True)

    # --- the batch stream ---------------------------------------------------------------------
    def _cycle(self, ctx: Context, idx: torch.Tensor):
        while True:   # reshuffled each time it runs out (the official iterator is re-created)
            yield from ctx.stream.batches(indices=idx, batch_size=self.batch_size, views=2, generator=ctx.generator)

    def batches(self, ctx: Context):
        if self.in_warmup(ctx):
            for i in range(2):
                idx = None if self.subset_size is None else self._subset(2 * self.subset_size)
                self.trains_on[i].fill_(idx is None)
                if idx is not None:
                    self.trains_on[i, idx] = True
                for b in ctx.stream.batches(indices=idx, batch_size=2 * self.batch_size, generator=ctx.generator):
                    yield SSLStep(i, b, None, float(ctx.epoch), True)
            return
        for i in range(2):
            lab_mask = self.labeled_mask(i)
            lab = lab_mask.nonzero().squeeze(1)
            unl = (self.member[1 - i] & ~lab_mask).nonzero().squeeze(1)
            self.trains_on[i] = self.member[1 - i]
            u_stream = self._cycle(ctx, unl) if len(unl) >= 2 else None
            n_iter = len(lab) // self.batch_size + 1
            for k, b in enumerate(ctx.stream.batches(indices=lab, batch_size=self.batch_size, views=2,
                                                     generator=ctx.generator)):
                u = next(u_stream) if u_stream is not None else None
                yield SSLStep(i, b, u, ctx.epoch + k / n_iter, False)

    # --- targets (GSS-SSL overrides these) ------------------------------------------------------
    def warmup_labels(self, i: int, batch: Batch) -> torch.Tensor:
        return batch.y

    def labeled_targets(self, i: int, lab: Batch, w: torch.Tensor, p_bar: torch.Tensor) -> torch.Tensor:
        return S.co_refine(F.one_hot(lab.y, self.num_classes).to(p_bar.dtype), w, p_bar, self.T)

    def unlabeled_targets(self, i: int, unl: Batch, p_guess: torch.Tensor) -> torch.Tensor:
        return S.sharpen(p_guess, self.T)

    # --- the loss -------------------------------------------------------------------------------
    def loss(self, step: SSLStep, ctx: Context) -> StepOutput:
        net = self.nets[step.net]
        net.train()
        if step.warmup:
            logits = net(step.lab.x).float()
            ce = F.cross_entropy(logits, self.warmup_labels(step.net, step.lab))
            pen = S.neg_entropy(logits) if self.conf_penalty else torch.zeros((), device=logits.device)
            return StepOutput(ce + pen, {"ce": ce.detach(), "conf_penalty": pen.detach()})
        peer = self.nets[1 - step.net]
        peer.eval()
        lab, unl = step.lab, step.unl
        soft = lambda m, x: F.softmax(m(x).float(), 1)                       # noqa: E731
        with torch.no_grad():   # official order of forwards (it moves the trained net's BN running stats)
            if unl is not None:
                p_guess = S.co_guess([soft(net, unl.x), soft(net, unl.x2), soft(peer, unl.x), soft(peer, unl.x2)])
            p_bar = (soft(net, lab.x) + soft(net, lab.x2)) / 2
            t_x = self.labeled_targets(step.net, lab, self.prob[1 - step.net][lab.idx], p_bar)
            xs, ts = [lab.x, lab.x2], [t_x, t_x]
            if unl is not None:
                t_u = self.unlabeled_targets(step.net, unl, p_guess)
                xs, ts = xs + [unl.x, unl.x2], ts + [t_u, t_u]
        inputs, targets = torch.cat(xs), torch.cat(ts)
        lam = S.draw_mix_lambda(self.alpha, self.generator)
        perm = torch.randperm(len(inputs), generator=self.generator, device=self.generator.device).to(inputs.device)
        mixed_x, mixed_t = S.mixup(inputs, targets, lam, perm)
        nl = 2 * len(lab.idx)
        if self.labeled_only:
            mixed_x, mixed_t = mixed_x[:nl], mixed_t[:nl]
        logits = net(mixed_x).float()
        lx = S.soft_ce(logits[:nl], mixed_t[:nl])
        lu = F.mse_loss(F.softmax(logits[nl:], 1), mixed_t[nl:]) if len(logits) > nl else torch.zeros_like(lx)
        lam_u = self.lambda_u_at(step.progress, ctx.epochs, ctx.lr_ramp_epochs)
        pen = S.uniform_prior_penalty(logits)
        return StepOutput(lx + lam_u * lu + pen, {
            "Lx": lx.detach(), "Lu": lu.detach(), "lambda_u": lam_u, "prior_penalty": pen.detach(),
            "labeled1": self.labeled_fraction(0), "labeled2": self.labeled_fraction(1)})

    def combine(self, logits: list[torch.Tensor]) -> torch.Tensor:
        """The official test: the softmax of the sum of both networks' logits."""
        return F.softmax(sum(z.float() for z in logits), 1)

    def selected(self) -> torch.Tensor | None:
        return self.labeled_mask(0) if bool(self.divided) else None

    def verdict(self) -> Verdict | None:
        """The GMM clean probability w, the mean over the networks whose last co-divide saw the sample
        (NaN for a sample no GMM saw, with a per-epoch subset); None in warm-up (no division yet)."""
        if not bool(self.divided):
            return None
        m = self.member.float()
        w = (self.prob * m).sum(0) / m.sum(0)
        return Verdict(clean_prob=w)
