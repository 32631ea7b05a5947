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
