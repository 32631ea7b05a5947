"""Metrics computed outside the methods: accuracy, clean-sample selection, label-belief diagnostics.

Only this module (and the trainer that calls it) ever compares a method's state with the true labels.
"""
from __future__ import annotations

import torch


def topk_correct(probs: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """Number of rows of ``probs`` (B, K) whose top-``k`` classes contain ``y`` (B,); a 0-d tensor."""
    k = min(k, probs.shape[1])
    return (probs.topk(k, dim=1).indices == y[:, None]).any(1).sum()


def selection_stats(selected: torch.Tensor, is_clean: torch.Tensor) -> dict[str, float]:
    """Precision and recall of a clean-set estimate ``selected`` (N,) bool against ``is_clean`` (N,) bool."""
    sel, clean = selected.bool(), is_clean.bool()
    tp = (sel & clean).sum().item()
    return {"sel_frac": sel.float().mean().item(),
            "sel_precision": tp / max(sel.sum().item(), 1),
            "sel_recall": tp / max(clean.sum().item(), 1)}


def belief_stats(beliefs: torch.Tensor, true: torch.Tensor, is_clean: torch.Tensor) -> dict[str, float]:
    """How a method's per-sample label distribution (N, K) relates to the true labels.

    ``belief_true_clean`` / ``belief_true_noisy``: fraction of clean / mislabeled samples whose
    argmax belief is the true label; ``belief_entropy_clean`` / ``_noisy``: mean entropy (nats) of the
    normalised beliefs; ``belief_ptrue_*``: mean probability the beliefs put on the true label.
    """
    b = beliefs.float().clamp_min(0)
    p = b / b.sum(1, keepdim=True).clamp_min(1e-12)
    ent = -(p * p.clamp_min(1e-12).log()).sum(1)
    hit = p.argmax(1) == true
    ptrue = p.gather(1, true[:, None]).squeeze(1)
    out = {}
    for name, m in (("clean", is_clean.bool()), ("noisy", ~is_clean.bool())):
        n = m.sum().item()
        out[f"belief_true_{name}"] = hit[m].float().mean().item() if n else float("nan")
        out[f"belief_entropy_{name}"] = ent[m].mean().item() if n else float("nan")
        out[f"belief_ptrue_{name}"] = ptrue[m].mean().item() if n else float("nan")
    return out


def confidence_stats(probs: torch.Tensor, noisy: torch.Tensor, true: torch.Tensor) -> dict[str, float]:
    """A network's fit of the training set (N, K softmax), clean and mislabeled samples apart.

    ``conf_clean`` / ``conf_noisy``: mean probability of the given (noisy) label on clean /
    mislabeled samples (the p_noisy that GSS weights its pool updates with); ``fit_true_*``: argmax
    equals the true label; ``memorized``: fraction of mislabeled samples whose argmax is the wrong
    given label.
    """
    pn = probs.gather(1, noisy[:, None]).squeeze(1)
    pred = probs.argmax(1)
    clean = noisy == true
    out = {}
    for name, m in (("clean", clean), ("noisy", ~clean)):
        n = m.sum().item()
        out[f"conf_{name}"] = pn[m].mean().item() if n else float("nan")
        out[f"fit_true_{name}"] = (pred[m] == true[m]).float().mean().item() if n else float("nan")
    out["memorized"] = (pred[~clean] == noisy[~clean]).float().mean().item() if (~clean).any() else float("nan")
    # the CE-loss reference detector: the loss of the given label ranks mislabeled samples
    out["det_loss_auroc"] = auroc(-pn.clamp_min(1e-12).log(), ~clean)
    return out


#: a run has collapsed when one class takes at least this share of its test predictions
COLLAPSE_SHARE = 0.9


def collapse_status(last: dict, split: str = "test", share: float = COLLAPSE_SHARE) -> dict:
    """Whether a run ended in a collapsed prediction, from its last history row ``last``.

    Collapsed: one class takes >= ``share`` of the ``split`` predictions (``<split>_pred_top_share``,
    the headline's predictions), or the method's labelled (selected) set holds one class or none of
    the noisy labels (``sel_classes``). Returns ``{"collapsed": bool, "collapse_reason": str | None}``;
    a row with neither number (no evaluation, no selection) gives ``collapsed: None`` (not known).
    """
    reasons, known = [], False
    top = last.get(f"{split}_pred_top_share")
    if top is not None:
        known = True
        if top >= share:
            reasons.append(f"one class takes {100 * top:.0f}% of the {split} predictions")
    sel = last.get("sel_classes")
    if sel is not None:
        known = True
        if sel <= 1:
            reasons.append(f"the labelled set holds {sel} class{'es' if sel != 1 else ''} "
                           f"({last.get('sel_size', '?')} samples)")
    return {"collapsed": bool(reasons) if known else None, "collapse_reason": "; ".join(reasons) or None}


def auroc(score: torch.Tensor, positive: torch.Tensor) -> float:
    """Area under the ROC curve of ``score`` (N,) (higher = more likely positive) for ``positive`` (N,)
    bool: the Mann-Whitney probability that a random positive outscores a random negative, ties counting
    one half (average ranks). NaN when either class is empty."""
    score, positive = score.double().flatten(), positive.bool().flatten()
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = torch.argsort(score, stable=True)
    s = score[order]
    ranks = torch.empty_like(s)
    ranks[order] = torch.arange(1, len(s) + 1, dtype=torch.float64, device=s.device)
    # ties: every member of a run of equal scores gets the run's mean rank
    uniq, inverse, counts = torch.unique(score, return_inverse=True, return_counts=True)
    mean_rank = torch.zeros(len(uniq), dtype=torch.float64, device=s.device).index_add_(0, inverse, ranks) / counts
    ranks = mean_rank[inverse]
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def detector_stats(clean_prob: torch.Tensor, is_clean: torch.Tensor, prefix: str = "det") -> dict[str, float]:
    """A method's verdict scored as a detector of mislabeled samples against the truth.

    ``clean_prob`` (N,): the method's probability that the given label is correct (NaN = no verdict on
    that sample, left out). Flagged as mislabeled: ``clean_prob < 0.5``. ``<prefix>_precision`` /
    ``_recall``: of the flagged samples, the share truly mislabeled / of the mislabeled samples, the
    share flagged; ``<prefix>_auroc``: AUROC of 1 - clean_prob for the mislabeled samples;
    ``<prefix>_flagged``: the share flagged (the method's own estimate of the noise rate).
    """
    ok = ~torch.isnan(clean_prob.float())
    p, noisy = clean_prob.float()[ok], ~is_clean.bool()[ok]
    flagged = p < 0.5
    tp = (flagged & noisy).sum().item()
    return {f"{prefix}_precision": tp / max(flagged.sum().item(), 1),
            f"{prefix}_recall": tp / max(noisy.sum().item(), 1),
            f"{prefix}_auroc": auroc(1 - p, noisy),
            f"{prefix}_flagged": flagged.float().mean().item() if len(p) else float("nan")}
