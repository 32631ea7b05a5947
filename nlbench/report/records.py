"""Step 1 of the report: run records -> :class:`Run` objects (one per usable record), and the names
the tables print. A malformed file is skipped with its reason, never fatal."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from .. import store
from ..registry import ConfigError

METHOD_NAMES = {"ce": "CE", "gce": "GCE", "sl": "SL", "elr_plus": "ELR+", "coteaching": "Co-teaching",
                "jocor": "JoCoR", "dividemix": "DivideMix", "gss_sb": "GSS-SB", "gss_db": "GSS-DB",
                "gss_ssl": "GSS-SSL"}
METHOD_ORDER = list(METHOD_NAMES)
NOISE_KIND_ORDER = ["clean", "sym", "sym_other", "asym", "asym_super", "pairflip", "human", "real"]
DATASET_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "clothing1m": "Clothing1M",
                 "webvision": "WebVision", "digits": "digits"}
HEADLINE = "last-epoch test accuracy (%)"
#: scoring rule -> the history key that holds a several-network run's accuracy under it
SCORING_RULES = {"ensemble": "test_top1_ensemble", "single": "test_top1_mean_nets"}
RULE_WORDS = {"ensemble": "several-network methods scored on their ensemble (the sum of the networks' logits)",
              "single": "several-network methods scored as a single network (the mean of the networks' own "
                        "accuracies)"}


def method_name(m: str) -> str:
    return METHOD_NAMES.get(m, m)


def method_sort_key(m: str):
    return (METHOD_ORDER.index(m) if m in METHOD_ORDER else len(METHOD_ORDER), m)


@dataclass
class Run:
    """One record, with the fields the report groups on read once."""

    path: str                   # relative to results_dir
    rec: dict
    method: str
    dataset: str
    scale: str
    noise: str
    noise_kind: str
    seed: int
    status: str
    acc_last: float | None
    acc_best: float | None
    data_tag: str               # official | nonofficial | unchecked | embedded | local
    data_label: str
    build: str                  # git commit (10 chars), "+dirty" when the tree had changes
    device: str
    noise_seed: int = 0         # the noisy-label draw (and the scale=cpu subset); records before the key: 0
    dirty: bool | None = None   # made from a tree with uncommitted changes (None: unknown, e.g. no git)

    def acc(self, rule: str = "ensemble", when: str = "last") -> float | None:
        """Test accuracy (%) at the last epoch (``when="last"``) or the best evaluated one (``"best"``) under
        a scoring rule (docs/protocol.md): ``ensemble`` scores a several-network method on all of its
        networks together (``test_top1_ensemble``), ``single`` on the mean of the networks' own accuracies
        (``test_top1_mean_nets``); a one-network run has neither key and both rules give its
        ``final.acc_last`` / ``acc_best``."""
        if rule not in SCORING_RULES:
            raise ValueError(f"unknown scoring rule {rule!r}; valid choices: {', '.join(SCORING_RULES)}")
        key = SCORING_RULES[rule]
        vals = [(h.get("epoch"), num(h.get(key))) for h in self.history if num(h.get(key)) is not None]
        if not vals:
            return self.acc_last if when == "last" else self.acc_best
        return vals[-1][1] if when == "last" else max(v for _, v in vals)

    @property
    def pair(self) -> tuple[int, int]:
        """(noise_seed, seed): two methods' runs on the same pair share labels, subset and init draw."""
        return (self.noise_seed, self.seed)

    @property
    def effective(self) -> dict:
        return self.rec.get("effective") or {}

    @property
    def history(self) -> list[dict]:
        h = self.rec.get("history")
        return h if isinstance(h, list) else []

    @property
    def ok(self) -> bool:
        return self.status == "completed"

    def value(self, metric: str) -> float | None:
        """``acc_last``/``acc_best`` from the final block, else the last epoch's value of a history key."""
        if metric in ("acc_last", "acc_best"):
            return getattr(self, metric)
        fin = self.rec.get("final") or {}
        v = fin.get(f"last_{metric}")
        if v is None and self.history:
            v = self.history[-1].get(metric)
        return num(v)

    def resolve_auto(self, composed: dict) -> dict:
        """``composed`` (a config this checkout composes for the run's cell) with ``forget_rate: auto``
        resolved as the run resolved it: from the noise config and the class count alone (the record
        holds the number, never ``auto``)."""
        from ..spec import resolve_auto_rates

        params = composed.get("method_params") if isinstance(composed, dict) else None
        if not isinstance(params, dict) or "auto" not in params.values():
            return composed
        noise = self.effective.get("noise") or composed.get("noise") or {}
        classes = (self.rec.get("data") or {}).get("classes") or []
        try:
            params = resolve_auto_rates(params, noise, dataset=self.dataset, num_classes=len(classes))
        except (ConfigError, KeyError, TypeError):   # a noise with no expected rate, or an odd old record
            return composed
        return {**composed, "method_params": params}

    def param(self, name: str):
        return (self.effective.get("method_params") or {}).get(name)

    @property
    def collapsed(self) -> bool:
        """The run ended in a collapsed prediction (``final.collapsed``: one class takes >= 90% of the
        test predictions, or the labelled set is one class)."""
        return self.ok and (self.rec.get("final") or {}).get("collapsed") is True

    @property
    def num_classes(self) -> int | None:
        n = len((self.rec.get("data") or {}).get("classes") or [])
        return n or None

    @property
    def scale_description(self) -> str:
        cfg = self.rec.get("config") if isinstance(self.rec.get("config"), dict) else {}
        return str((cfg.get("scale") or {}).get("description") or "")


def scale_description(scale: str, runs: list[Run]) -> str:
    """The one-line description of ``scale`` from its newest record that has one (by ``finished_at``,
    ISO timestamps): a scale's wording may be improved after older records were made, and the newest
    run says what the scale means now."""
    have = [r for r in runs if r.scale == scale and r.scale_description]
    if not have:
        return ""
    return max(have, key=lambda r: str(r.rec.get("finished_at") or "")).scale_description


def num(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _int(v, default: int) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else default


def provenance(rec: dict) -> tuple[str, str]:
    """(tag, words) for the data copy a record was trained on; records of different tags never mix."""
    d = rec.get("data") or {}
    if "md5_ok" in d:
        return {True: ("official", "official files (MD5 verified)"),
                False: ("nonofficial", "local copy (files differ from the official MD5s)"),
                }.get(d["md5_ok"], ("unchecked", "files not checked against the official MD5s"))
    if d.get("source"):
        return "embedded", f"embedded ({d['source']})"
    return "local", "local files (official file lists, no checksum)"


def _malformed(rec) -> str | None:
    """Why ``rec`` is not a usable result for the report: not a run record at all (the store's one check,
    :func:`nlbench.store.record_problem`), or a run that did not end in a final status with a headline."""
    problem = store.record_problem(rec)
    if problem:
        return problem
    if rec["status"] not in store.FINAL_STATUSES:
        return f"status {rec['status']!r} is not one of {', '.join(store.FINAL_STATUSES)}"
    if rec["status"] == "completed" and num((rec.get("final") or {}).get("acc_last")) is None:
        return "completed but final.acc_last is missing"
    return None


def load_detectors(results_dir: str | Path) -> list[dict]:
    """The reference-detector records (``python -m nlbench detect``; ``method: cleanlab_cv``), each with its
    relative ``_path``."""
    root = Path(results_dir)
    out = []
    for p in store.record_files(root):
        rec = store.read_record(p)
        if isinstance(rec, dict) and rec.get("record_kind") == "detector" and rec.get("status") == "completed":
            out.append({**rec, "_path": p.relative_to(root).as_posix()})
    return out


def load_runs(results_dir: str | Path) -> tuple[list[Run], list[tuple[str, str]]]:
    """Every record under ``results_dir`` as a :class:`Run`, and the files skipped with the reason.
    Reference-detector records are not runs of a method: :func:`load_detectors` reads them."""
    root = Path(results_dir)
    runs, skipped = [], []
    for p in store.record_files(root):
        rel = p.relative_to(root).as_posix()
        rec = store.read_record(p)
        if isinstance(rec, dict) and rec.get("record_kind") == "detector":
            continue
        reason = _malformed(rec)
        if reason:
            skipped.append((rel, reason))
            continue
        fin, git = rec.get("final") or {}, rec.get("git") or {}
        tag, label = provenance(rec)
        build = (str(git.get("commit") or "unknown")[:10]) + ("+dirty" if git.get("dirty") else "")
        runs.append(Run(path=rel, rec=rec, method=str(rec["method"]), dataset=str(rec["dataset"]),
                        scale=str(rec["scale"]), noise=str(rec["noise"]["name"]),
                        noise_kind=str(rec["noise"].get("kind", "")), seed=rec["seed"], status=rec["status"],
                        acc_last=num(fin.get("acc_last")), acc_best=num(fin.get("acc_best")),
                        data_tag=tag, data_label=label, build=build,
                        device=str((rec.get("versions") or {}).get("device", "unknown")),
                        noise_seed=_int(rec.get("noise_seed"), 0), dirty=git.get("dirty")))
    return runs, skipped


