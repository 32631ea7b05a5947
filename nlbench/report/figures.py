"""Step 3 of the report, figures: each figure function computes the DataFrame it plots, draws it,
writes the files and returns the DataFrame (tests check figures by the data they show);
:func:`figure_sections` and :func:`dynamics_sections` make the REPORT.md sections around them.

Figures are drawn on a bare :class:`matplotlib.figure.Figure` with the Agg canvas (no pyplot state, no
display needed) in seaborn's whitegrid style. Every series differs by marker and line style (bars by
hatch), not by colour alone, so a grayscale print stays readable.
"""
from __future__ import annotations

import math
import textwrap
from collections import defaultdict
from pathlib import Path

import pandas as pd

from .cells import Cell, Index, config_diff, expected_runs
from .output import Section, Writer, missing_md, report_scales, row_label
from .records import DATASET_NAMES, Run, method_name, method_sort_key
from .tables import partial_words, scale_words

STYLES = [("o", "-"), ("s", "--"), ("^", "-."), ("D", ":"), ("v", "-"), ("P", "--"), ("X", "-."), ("*", ":"),
          ("<", "-"), (">", "--"), ("h", "-."), ("p", ":")]
HATCHES = ["", "//", "..", "xx", "\\\\", "oo", "--", "++"]
CAPTIONS = {
    "fig1": "Test accuracy per epoch (mean over seeds, band: ± std) of every method at 40% symmetric noise; "
            "dashed: cross entropy trained on the clean labels, the upper bound. Legend: last-epoch mean.",
    "fig3": "GSS-SB last-epoch test accuracy at 40% symmetric noise as lambda1 varies (lambda2 = 1, left) and "
            "as lambda2 varies (lambda1 = 2, right); error bars: ± std over seeds, n runs per point.",
    "fig4": "Last-epoch test accuracy of GSS-SB / GSS-DB / GSS-SSL at 40% and 60% symmetric noise; error bars: "
            "± std over seeds.",
    "accuracy": "Test accuracy per epoch, mean over seeds (band: ± std).",
    "memorization": "Memorised fraction: share of mislabeled training samples the network predicts as their "
                    "(wrong) given label, per epoch; the 'continuous damage' of the noise.",
    "selection": "Clean-sample selection of the methods that select: precision and recall of the selected set "
                 "against the true clean samples.",
    "gss_pool": "GSS direction pools, clean (solid) vs mislabeled (dashed) samples: share whose pool argmax is "
                "the true label, mean pool probability of the true label, mean pool entropy (nats).",
    "detection": "The method's verdict on the given labels as a detector of mislabeled samples (AUROC against "
                 "the truth), and the CE loss of the given label under the run's own network as the reference.",
}
#: dynamics figure -> panels, each (title, [history keys], scale to %)
DYNAMICS = {
    "accuracy": [("test accuracy (%)", ["@metric"], 1.0)],
    "memorization": [("memorised mislabeled samples (%)", ["memorized"], 100.0)],
    "selection": [("selection precision (%)", ["sel_precision"], 100.0),
                  ("selection recall (%)", ["sel_recall"], 100.0)],
    "detection": [("detector AUROC (verdict)", ["det_auroc"], 1.0),
                  ("detector AUROC (CE loss)", ["det_loss_auroc"], 1.0)],
    "gss_pool": [("pool argmax = true label (%)", ["belief_true_clean", "belief_true_noisy"], 100.0),
                 ("pool P(true label)", ["belief_ptrue_clean", "belief_ptrue_noisy"], 1.0),
                 ("pool entropy (nats)", ["belief_entropy_clean", "belief_entropy_noisy"], 1.0)],
}
FRAME_COLUMNS = ["series", "method", "key", "epoch", "mean", "std", "n"]


def _metric(r: Run) -> str:
    """The history key of a run's test accuracy under the protocol's scoring rule: a several-network
    run's ensemble (or mean of networks) when it logged one, else its own metric."""
    from .protocol import load_protocol
    from .records import SCORING_RULES

    metric = (r.rec.get("final") or {}).get("metric") or "test_top1"
    ruled = SCORING_RULES[load_protocol().headline_rule]
    if metric == "test_top1" and any(ruled in h for h in r.history):
        return ruled
    return metric


def _rule() -> str:
    from .protocol import load_protocol

    return load_protocol().headline_rule


def history_frame(series: list[tuple[str, list[Run]]], keys: list[str], scale: float = 1.0) -> pd.DataFrame:
    """Per series, key and epoch: mean, sample std and count over the completed runs' history values."""
    rows = []
    for label, runs in series:
        for key in keys:
            per_epoch = defaultdict(list)
            for r in runs:
                if not r.ok:
                    continue
                k = _metric(r) if key == "@metric" else key
                for h in r.history:
                    v = h.get(k)
                    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                        per_epoch[int(h.get("epoch", 0))].append(float(v) * scale)
            for ep in sorted(per_epoch):
                v = per_epoch[ep]
                m = sum(v) / len(v)
                sd = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else float("nan")
                rows.append([label, runs[0].method, key, ep, m, sd, len(v)])
    # typed even when empty: an empty panel concatenated with a full one must not turn the numbers into objects
    return pd.DataFrame(rows, columns=FRAME_COLUMNS).astype({"epoch": "int64", "mean": "float64", "std": "float64",
                                                             "n": "int64"})


def figure_data_csv(df: pd.DataFrame) -> str:
    """The numbers a figure plots, as CSV (floats to 6 decimals): the figure's own record, compared byte
    for byte by the shipped-report check (a PNG's bytes depend on the matplotlib build)."""
    return df.to_csv(index=False, float_format="%.6f", lineterminator="\n")


def _wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.wrap(text, width))


def _figure(ncols: int = 1, width: float = 5.0, height: float = 3.4):
    import matplotlib as mpl
    import seaborn as sns
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    theme = {**sns.axes_style("whitegrid"), **sns.plotting_context("paper", font_scale=1.1)}
    with mpl.rc_context(theme):
        fig = Figure(figsize=(width * ncols, height), layout="constrained")
        FigureCanvasAgg(fig)
        axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes, theme


def _save(fig, theme, stem: Path, formats=("png", "pdf")) -> None:
    import matplotlib as mpl

    stem.parent.mkdir(parents=True, exist_ok=True)
    with mpl.rc_context(theme):
        for fmt in formats:
            # no creation date in a PDF: regenerating the report from the same records rewrites the same bytes
            fig.savefig(f"{stem}.{fmt}", dpi=150, metadata={"CreationDate": None} if fmt == "pdf" else None)


def _palette(n: int):
    """n distinct colours: seaborn's colorblind palette up to its 10, evenly spaced husl hues beyond (a
    repeated colour would make two series one)."""
    import seaborn as sns

    return sns.color_palette("colorblind" if n <= 10 else "husl", max(n, 1))


def _legend_outside(fig, ax, handles, labels, fontsize=8):
    """The legend to the right of the plot, never over the curves (a 40% band, say)."""
    if handles:
        ax.legend(handles, labels, fontsize=fontsize, loc="center left", bbox_to_anchor=(1.02, 0.5),
                  frameon=False, ncols=1 if len(labels) <= 16 else 2)


def _curves(ax, df: pd.DataFrame, order: list[str], key_styles: dict | None = None, dashed: set = frozenset()):
    colors = _palette(len(order))
    for i, s in enumerate(order):
        marker, ls = STYLES[i % len(STYLES)]
        sub = df[df.series == s]
        for key, d in sub.groupby("key", sort=False):
            d = d.sort_values("epoch")
            style = key_styles.get(key, ls) if key_styles else ls
            if s in dashed:
                color, marker, style, lw = "black", None, "--", 2.0
            else:
                color, lw = colors[i], 1.4
            every = max(1, len(d) // 8)
            ax.plot(d.epoch, d["mean"], color=color, ls=style, marker=marker, markevery=every, lw=lw, ms=5,
                    label=s if key == sub.key.iloc[0] else None)
            if d["std"].notna().any():
                ax.fill_between(d.epoch, d["mean"] - d["std"].fillna(0), d["mean"] + d["std"].fillna(0),
                                color=color, alpha=0.12, lw=0)
    ax.set_xlabel("epoch")


def fig1(runs: list[Run], stem: Path, *, subtitle: str, n_asked: int | None = None) -> pd.DataFrame:
    """Figure 1: test accuracy per epoch of each method at 40% noise and CE on clean labels (dashed)."""
    bound = "CE, clean labels (upper bound)"
    noisy = defaultdict(list)
    for r in runs:
        noisy[bound if r.noise == "clean" else method_name(r.method)].append(r)
    order = sorted((s for s in noisy if s != bound), key=lambda s: method_sort_key(noisy[s][0].method))
    order += [bound] if bound in noisy else []
    df = history_frame([(s, noisy[s]) for s in order], ["@metric"])
    if bound not in noisy:   # the caption promises the clean-label reference: say on the figure that it is missing
        subtitle += " · clean-label reference (CE, noise=clean) not run yet"
    df["noise"] = df.series.map({s: noisy[s][0].noise for s in order})
    fig, (ax,), theme = _figure(width=8.0, height=4.0)
    _curves(ax, df, order, dashed={bound})
    last = {s: Cell(noisy[s], n_asked, rule=_rule()) for s in order}
    handles, labels = ax.get_legend_handles_labels()
    labels = [f"{lab}: {last[lab].mean:.1f} ({last[lab].n})" if last[lab].mean is not None else lab
              for lab in labels]
    _legend_outside(fig, ax, handles, labels)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(_wrap(f"Figure 1 · 40% symmetric noise · {subtitle}", 70), fontsize=10)
    _save(fig, theme, stem)
    return df


def fig3(runs: list[Run], stem: Path, *, subtitle: str, n_asked: int | None = None) -> pd.DataFrame:
    """Figure 3: GSS-SB last-epoch accuracy vs lambda1 (lambda2 = 1) and vs lambda2 (lambda1 = 2)."""
    rows = []
    for panel, fixed, fixed_val, vary in (("lambda1", "lambda2", 1.0, "lambda1"), ("lambda2", "lambda1", 2.0, "lambda2")):
        groups = defaultdict(list)
        for r in runs:
            try:
                l1, l2 = float(r.param("lambda1")), float(r.param("lambda2"))
            except (TypeError, ValueError):
                continue
            vals = {"lambda1": l1, "lambda2": l2}
            if vals[fixed] == fixed_val:
                groups[vals[vary]].append(r)
        for x in sorted(groups):
            c = Cell(groups[x], n_asked, rule=_rule())
            rows.append([panel, x, c.mean, c.std, c.n, c.n_diverged, n_asked])
    df = pd.DataFrame(rows, columns=["panel", "value", "mean", "std", "n", "n_diverged", "n_asked"]).astype(
        {"mean": "float64", "std": "float64"})      # a one-seed cell's std is None: NaN, not an object column
    fig, axes, theme = _figure(ncols=2, width=4.2, height=3.4)
    for ax, (panel, xlabel, marker, ls) in zip(axes, (("lambda1", "λ1 (λ2 = 1)", "o", "-"),
                                                     ("lambda2", "λ2 (λ1 = 2)", "s", "--"))):
        d = df[(df.panel == panel) & df["mean"].notna()]
        ax.errorbar(d.value, d["mean"], yerr=d["std"].fillna(0), marker=marker, ls=ls, color="0.15", capsize=4,
                    ms=6, lw=1.4)
        for _, row in d.iterrows():
            ax.annotate(f"n={row.n}", (row.value, row["mean"]), textcoords="offset points", xytext=(6, -10),
                        ha="left", fontsize=7)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("last-epoch test accuracy (%)")
    fig.suptitle(_wrap(f"Figure 3 · GSS-SB, 40% symmetric noise · {subtitle}", 110), fontsize=10)
    _save(fig, theme, stem)
    return df


def fig4(runs: list[Run], stem: Path, *, subtitle: str, n_asked: int | None = None) -> pd.DataFrame:
    """Figure 4: GSS-SB / DB / SSL last-epoch accuracy at 40% and 60% symmetric noise (grouped bars)."""
    groups = defaultdict(list)
    for r in runs:
        groups[(r.noise, r.method)].append(r)
    rows = []
    for (noise, m) in sorted(groups, key=lambda k: (k[0], method_sort_key(k[1]))):
        c = Cell(groups[(noise, m)], n_asked, rule=_rule())
        rows.append([noise, m, method_name(m), c.mean, c.std, c.n, c.n_diverged, n_asked])
    df = pd.DataFrame(rows, columns=["noise", "method", "method_name", "mean", "std", "n", "n_diverged", "n_asked"]
                      ).astype({"mean": "float64", "std": "float64"})
    fig, (ax,), theme = _figure(width=5.5, height=3.6)
    noises = sorted(df.noise.unique())
    methods = sorted(df.method.unique(), key=method_sort_key)
    width = 0.8 / max(len(methods), 1)
    grays = ["0.85", "0.6", "0.35", "0.75", "0.5", "0.25"]
    for j, m in enumerate(methods):
        d = df[df.method == m].set_index("noise").reindex(noises)
        xs = [i + (j - (len(methods) - 1) / 2) * width for i in range(len(noises))]
        ax.bar(xs, d["mean"].fillna(0), width, yerr=d["std"].fillna(0), capsize=3, color=grays[j % len(grays)],
               hatch=HATCHES[j % len(HATCHES)], edgecolor="black", label=method_name(m))
        for x, (_, row) in zip(xs, d.iterrows()):
            if pd.notna(row["mean"]):
                ax.annotate(f"{row['mean']:.1f}\nn={int(row.n)}", (x, row["mean"]), textcoords="offset points",
                            xytext=(0, 3), ha="center", fontsize=7)
    ax.set_xticks(range(len(noises)), [n.replace("sym0.", "sym ") + "0%" if n.startswith("sym0.") else n
                                       for n in noises])
    ax.set_ylabel("last-epoch test accuracy (%)")
    hi = df["mean"].dropna()
    ax.set_ylim(0.0, min(100.0, (hi.max() if len(hi) else 90.0) + 10))   # bars start at 0: heights compare
    ax.legend(fontsize=8)
    ax.set_title(_wrap(f"Figure 4 · GSS combinations · {subtitle}", 65), fontsize=10)
    _save(fig, theme, stem)
    return df


def dynamics(kind: str, series: list[tuple[str, list[Run]]], stem: Path, *, subtitle: str) -> pd.DataFrame | None:
    """One training-dynamics figure (a key of :data:`DYNAMICS`); None when no run logged its keys."""
    panels = DYNAMICS[kind]
    frames = [history_frame(series, keys, scale).assign(panel=title) for title, keys, scale in panels]
    df = pd.concat(frames, ignore_index=True)
    if df.empty:
        return None
    present = [s for s, _ in series if s in set(df.series)]
    fig, axes, theme = _figure(ncols=len(panels), width=4.4 + 2.2 / len(panels), height=3.4)
    for ax, (title, keys, _) in zip(axes, panels):
        d = df[df.panel == title]
        styles = {k: ("-" if k.endswith("_clean") else "--") for k in keys} if len(keys) > 1 else None
        _curves(ax, d, present, key_styles=styles)
        ax.set_ylabel(title)
    handles, labels = axes[0].get_legend_handles_labels()
    if any(len(keys) > 1 for _, keys, _ in panels):  # the line style says which key: say so in the legend
        from matplotlib.lines import Line2D

        handles += [Line2D([], [], color="0.3", ls="-"), Line2D([], [], color="0.3", ls="--")]
        labels += ["clean samples" if kind == "gss_pool" else panels[0][1][0].split("_", 1)[-1],
                   "mislabeled samples" if kind == "gss_pool" else panels[0][1][1].split("_", 1)[-1]]
    _legend_outside(fig, axes[-1], handles, labels, fontsize=7)
    fig.suptitle(_wrap(f"{kind.replace('_', ' ')} · {subtitle}", 60 * len(panels)), fontsize=10)
    _save(fig, theme, stem, formats=("png",))
    return df


# ------------------------------------------------------------------------ report sections
PAPER_FIGURES = {"fig1": fig1, "fig3": fig3, "fig4": fig4}


def figure_sections(index: Index, scales: list[str] | None, w: Writer, results_arg: str) -> list[Section]:
    from .protocol import load_protocol

    proto = load_protocol()
    res = w.result
    sections = []
    for key, title in (("fig1", "Figure 1: every method at 40% noise vs the clean-label upper bound"),
                       ("fig3", "Figure 3: GSS-SB pool-update weights lambda1 and lambda2"),
                       ("fig4", "Figure 4: GSS-SB / GSS-DB / GSS-SSL")):
        sc = report_scales(key, index, scales)
        if not sc:
            sections.append(Section(title, f"No runs yet. `python -m nlbench run -m +experiment={key} scale=cpu"
                                           f"{results_arg}` (or scale=paper on a GPU) makes them.\n"))
        for scale in sc:
            expected = expected_runs(key, scale)
            matched, missing, unavailable = [], [], {}
            left_out = []
            for e in expected:
                runs, err = index.match(e, scale)
                if err:
                    unavailable[e.method] = err
                res.used.update(r.path for r in runs)
                keep = [r for r in runs if proto.exclusion(r) is None]   # as the tables: docs/protocol.md
                left_out += [r for r in runs if proto.exclusion(r)]
                matched.extend(keep)
                if not runs:
                    missing.append(e)
            res.missing[(key, scale)] = missing
            res.unavailable[(key, scale)] = unavailable
            res.used.update(r.path for r in matched)
            asked = defaultdict(int)
            for e in expected:
                asked[e.cell] += 1
            n_asked = max(asked.values()) if asked else None
            body, files = [], []
            methods_asked = {e.method for e in expected}
            for tag in sorted({r.data_tag for r in matched}):
                rs = [r for r in matched if r.data_tag == tag]
                label = rs[0].data_label
                stem = f"{key}_{scale}_{tag}"
                partial = partial_words(len({r.path for r in rs if r.ok}), len(expected),
                                        len({r.method for r in rs if r.ok}), len(methods_asked))
                subtitle = f"CIFAR-10 · scale={scale} · data: {label}" + (f" · {partial}" if partial else "")
                df = PAPER_FIGURES[key](rs, w.out / stem, subtitle=subtitle, n_asked=n_asked)
                res.figures[stem] = df
                files.append(w.text(f"{stem}.data.csv", figure_data_csv(df)))
                res.files += [w.out / f"{stem}.png", w.out / f"{stem}.pdf"]
                files += [f"{stem}.png", f"{stem}.pdf"]
                bound_missing = key == "fig1" and not any(r.noise == "clean" for r in rs)
                body.append(f"![{title}, scale={scale}, data: {label}]({stem}.png)\n\n"
                            f"{CAPTIONS[key]} Data: {label}; {scale_words(scale, rs)}."
                            + (f" **{partial[0].upper() + partial[1:]}.**" if partial else "")
                            + (" **The clean-label reference has no run yet** (its command is below)."
                               if bound_missing else "") + "\n")
            if not matched:
                body.append("No runs of this figure yet.\n")
            if left_out:
                sel = sorted({f"{method_name(r.method)} {r.noise} noise_seed {r.noise_seed} seed {r.seed}"
                              for r in left_out if proto.exclusion(r) == "selection"})
                dirty = sorted({f"{method_name(r.method)} {r.noise} noise_seed {r.noise_seed} seed {r.seed}"
                                for r in left_out if proto.exclusion(r) == "dirty"})
                body.append("Left out, as in the tables (docs/protocol.md): "
                            + "; ".join(([f"runs that chose a method's default: {', '.join(sel)}"] if sel else [])
                                        + ([f"records from uncommitted trees: {', '.join(dirty)}"] if dirty else []))
                            + ".\n")
            body.append(missing_md(key, scale, expected, missing, unavailable, results_arg))
            sections.append(Section(f"{title} (scale={scale})", "\n".join(body), files))
    return sections


def dynamics_sections(runs: list[Run], w: Writer) -> list[Section]:
    """Beyond the paper: per (dataset, scale, data, noise), curves over epochs of every method."""
    sections = []
    groups = defaultdict(list)
    for r in runs:
        if r.ok and r.history:
            groups[(r.dataset, r.scale, r.data_tag, r.noise)].append(r)
    for (ds, scale, tag, noise) in sorted(groups):
        rs = groups[(ds, scale, tag, noise)]
        series = defaultdict(list)
        n_variants = 0
        for r in rs:   # each method's default configuration: one curve per method, readable
            if config_diff(r):
                n_variants += 1
                continue
            series[row_label(r.method, "")].append(r)
        if not series:
            continue
        order = sorted(series, key=lambda s: (method_sort_key(series[s][0].method), s))
        sub = f"{DATASET_NAMES.get(ds, ds)} · {noise} · scale={scale} · data: {rs[0].data_label}"
        body, files = [], []
        for kind in DYNAMICS:
            stem = f"dynamics/{kind}_{ds}_{scale}_{tag}_{noise}"
            df = dynamics(kind, [(s, series[s]) for s in order], w.out / stem, subtitle=sub)
            if df is None:
                continue
            w.result.figures[stem] = df
            files.append(w.text(f"{stem}.data.csv", figure_data_csv(df)))
            w.result.files.append(w.out / f"{stem}.png")
            files.append(f"{stem}.png")
            body.append(f"![{kind}, {sub}]({stem}.png)\n\n{CAPTIONS[kind]}"
                        + (f" Each method's default configuration ({n_variants} runs of other settings are in "
                           "the tables, not drawn)." if n_variants else "") + "\n")
        sections.append(Section(sub, "\n".join(body), files))
    return sections
