"""Small-loss selection shared by Co-teaching and JoCoR: the forget-rate ramp and the batch selection.

Co-teaching main.py / JoCoR jocor.py: tau_t = forget_rate^c * e / (T_k - 1) for the first T_k = 10
epochs (``np.linspace(0, forget_rate**c, T_k)``), then forget_rate; each step keeps the
int((1 - tau_t) * B) samples of smallest loss. Epochs are 0-based here, so epoch 0 keeps every
sample (the official loops start at index 1 and so train 199 of 200 epochs).

``forget_rate: estimate`` (issue 24): the rate nobody told the method, estimated from the data after a
short warm-up (:class:`ForgetSchedule`, :func:`estimate_noise_rate`).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from nlbench.registry import ConfigError, as_int, check_range

#: the Adam plan of both official codes (main.py / jocor.py): lr 0.001, from epoch 80 of 200 (CIFAR-10;
#: 100 of 200 for CIFAR-100, decay_start 0.5 in the yaml) the lr decays linearly to 0 and beta1 0.9 -> 0.1
OFFICIAL_PLAN = {"kind": "adam", "lr": 1e-3, "betas": [0.9, 0.999], "weight_decay": 0.0,
                 "decay_start": 0.4, "beta1_decayed": 0.1}


ESTIMATORS = ("gmm", "cleanlab")


class ForgetSchedule(nn.Module):
    """tau_t, the fraction of each batch to drop at 0-based ``epoch``.

    ``forget_rate``: a number in [0, 1), or ``"estimate"``: the rate is estimated from the data at the
    start of epoch ``estimate_epoch`` (after that many epochs of plain training, where tau_t is 0 in
    any case for the first epoch of the official ramp), with :func:`estimate_noise_rate` on the
    networks' predictions and the noisy labels, never the true labels; until then tau_t = 0. The
    estimate is a buffer, so it is checkpointed with the method.
    """

    def __init__(self, forget_rate: float | str, num_gradual: int = 10, exponent: float = 1.0, *,
                 estimate_epoch: int = 5, estimator: str = "gmm") -> None:
        super().__init__()
        self.estimated = forget_rate == "estimate"
        rate = float("nan") if self.estimated else check_range("forget_rate", forget_rate, 0, 1, hi_open=True)
        self.register_buffer("rate", torch.tensor(rate, dtype=torch.float64))
        self.num_gradual = as_int("num_gradual", num_gradual)
        if self.num_gradual < 1:
            raise ConfigError(f"num_gradual={num_gradual} must be >= 1")
        self.exponent = check_range("exponent", exponent, 0, None, lo_open=True)
        self.estimate_epoch = as_int("estimate_epoch", estimate_epoch)
        if self.estimate_epoch < 1:
            raise ConfigError(f"estimate_epoch={estimate_epoch} must be >= 1 (epochs of training before the estimate)")
        if estimator not in ESTIMATORS:
            raise ConfigError(f"unknown forget-rate estimator {estimator!r}; valid choices: {', '.join(ESTIMATORS)}")
        self.estimator = estimator

        self._cached: float | None = None   # the rate as a Python float: no device read per step

    @property
    def forget_rate(self) -> float:
        if self._cached is None:
            self._cached = float(self.rate)
        return self._cached

    def _load_from_state_dict(self, *args, **kwargs) -> None:   # a resumed run reads its estimate again
        super()._load_from_state_dict(*args, **kwargs)
        self._cached = None

    def needs_estimate(self, epoch: int) -> bool:
        return self.estimated and epoch >= self.estimate_epoch and self.forget_rate != self.forget_rate

    def estimate_if_due(self, epoch: int, infer, nets, noisy: torch.Tensor) -> None:
        """At the start of epoch ``estimate_epoch`` (``forget_rate: estimate`` only): the networks'
        softmax over the training set (``infer(net)``: the trainer's inference pass) and the noisy labels
        give the estimate, never the true labels."""
        if self.needs_estimate(epoch):
            probs = [F.softmax(infer(net).float(), 1) for net in nets]
            self.set_estimate(estimate_noise_rate(probs, noisy, self.estimator))

    def set_estimate(self, value: float) -> None:
        self.rate.fill_(min(max(float(value), 0.0), 0.99))
        self._cached = None

    def forward(self, epoch: int) -> float:
        rate = self.forget_rate
        if rate != rate:      # not estimated yet: no sample is dropped
            return 0.0
        if epoch >= self.num_gradual:
            return rate
        top = rate ** self.exponent
        return top * epoch / (self.num_gradual - 1) if self.num_gradual > 1 else top

    def logs(self) -> dict[str, float]:
        """What a run records about the rate: the estimate once there is one."""
        rate = self.forget_rate
        return {"forget_rate_est": rate} if self.estimated and rate == rate else {}


@torch.no_grad()
def estimate_noise_rate(probs: list[torch.Tensor], noisy: torch.Tensor, estimator: str = "gmm") -> float:
    """The share of mislabeled training samples, estimated from each network's softmax (N, K) over the
    training set and the noisy labels (N,); the mean over the networks.

    ``gmm``: a 2-component GMM on each sample's min-max normalised CE loss (DivideMix's split,
    ``ssl_parts.gmm_clean_prob``); the rate is 1 - mean clean posterior. ``cleanlab``: confident
    learning's estimate of the joint distribution of given and true labels
    (``cleanlab.count.estimate_joint``), the rate is 1 - its trace. Both read in-sample predictions of an
    early epoch (cleanlab recommends out-of-sample ones; before the network memorises, in-sample ones
    are the cheap stand-in). cleanlab is optional: ``pip install cleanlab``.
    """
    from .ssl_parts import gmm_clean_prob, minmax

    rates = []
    for p in probs:
        p = p.float().clamp_min(1e-12)
        if estimator == "gmm":
            loss = minmax(-p.gather(1, noisy[:, None].long()).squeeze(1).log())
            rates.append(1.0 - float(gmm_clean_prob(loss, seed=0).mean()))
        else:
            try:
                from cleanlab.count import estimate_joint
            except ImportError:
                raise ConfigError("forget-rate estimator 'cleanlab' needs the cleanlab package: "
                                  "pip install cleanlab (or use estimator gmm)") from None
            p = p / p.sum(1, keepdim=True)
            joint = estimate_joint(labels=noisy.cpu().numpy(), pred_probs=p.cpu().double().numpy())
            rates.append(1.0 - float(joint.trace()))
    return sum(rates) / len(rates)


def keep_smallest(loss: torch.Tensor, forget: float) -> torch.Tensor:
    """Positions (int((1 - forget) * B),) of the smallest entries of ``loss`` (B,), smallest first.

    A stable sort: equal losses keep batch order, so a run is the same on every machine. At least one
    sample is kept (an empty selection would give a NaN mean)."""
    n_keep = max(int((1 - forget) * loss.numel()), 1)
    return torch.sort(loss.detach(), stable=True).indices[:n_keep]
