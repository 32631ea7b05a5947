"""The shipped reference results stay true.

1. The report regenerated from the shipped records (``results/**/*.json.gz``; a plain ``*.json`` there is
   the user's own run) equals the committed ``plots/``: every table (md, tex, csv), REPORT.md and every
   figure's data (``*.data.csv``) byte for byte, and the same
   set of PNG/PDF files (a PNG's bytes depend on the matplotlib build, so figures are compared by the
   numbers they plot).
2. Drift: a few digits cells are trained again and must land within ``DRIFT_TOL`` points of the shipped
   records, so that a change that moves a method's numbers cannot land silently. On the machine that made
   the records the runs are bit-identical; another CPU, BLAS or torch build may differ slightly.
3. The README's results tables quote ``plots/``: every cell is the cell the report gives under the same
   method and column, so a hand-copied number cannot go stale.
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from conftest import ROOT, make_results, read_json, run_cli

RESULTS, PLOTS = ROOT / "results", ROOT / "plots"
#: |rerun - shipped| last-epoch accuracy, in points (450 test images: one image is 0.22 points)
DRIFT_TOL = 1.5
#: the digits cells rerun (method, noise, seed): a plain loss, a GSS and a two-network method
DRIFT_CELLS = [("ce", "sym0.4", 0), ("gss_sb", "sym0.4", 0), ("coteaching", "asym0.4", 0)]


def _shipped() -> list[Path]:
    """The shipped records: gzip-compressed. A plain ``*.json`` under results/ is a local run of the
    user's, which the shipped report does not contain."""
    return sorted(RESULTS.rglob("*.json.gz"))


def _read(p: Path) -> dict:
    with (gzip.open(p, "rt") if p.suffix == ".gz" else open(p)) as f:
        return json.load(f)


needs_shipped = pytest.mark.skipif(not _shipped(), reason="no shipped records under results/ (none committed yet)")


@needs_shipped
def test_the_committed_report_is_what_the_shipped_records_give(tmp_path, monkeypatch):
    import shutil

    from nlbench import report as rp

    for p in _shipped():           # only the shipped records, wherever the user's own runs are
        dst = tmp_path / "results" / p.relative_to(RESULTS)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, dst)
    monkeypatch.chdir(tmp_path)    # the report names its results folder as given: "results", as when it was made
    monkeypatch.delenv("NLBENCH_RESULTS_DIR", raising=False)
    out = tmp_path / "plots"
    rp.report("results", out)
    made = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    shipped = {p.relative_to(PLOTS).as_posix() for p in PLOTS.rglob("*") if p.is_file()} - {"README.md"}
    assert made == shipped, (sorted(made - shipped)[:10], sorted(shipped - made)[:10])
    for name in sorted(made):
        if name.endswith((".png", ".pdf")):
            continue
        assert (out / name).read_text() == (PLOTS / name).read_text(), \
            f"plots/{name} differs from the report of the shipped records: run `python -m nlbench report`"


@needs_shipped
@pytest.mark.parametrize("method, noise, seed", DRIFT_CELLS)
def test_digits_cells_do_not_drift(tmp_path, method, noise, seed):
    shipped = [r for r in map(_read, RESULTS.glob(f"digits/{noise}/{method}/seed{seed}-*.json*"))
               if r.get("status") == "completed" and r.get("scale") == "paper"]
    if not shipped:
        pytest.skip(f"no shipped digits record for {method} {noise} seed {seed}")
    res = make_results(tmp_path)
    # the shipped records' thread count: BLAS sums in another order with another count, so only then is
    # the rerun bit-identical on the machine that made them
    threads = (shipped[0].get("versions") or {}).get("torch_threads")
    r = run_cli(["run", f"method={method}", "dataset=digits", f"noise={noise}", f"seed={seed}", "device=cpu",
                 "progress=false", "verbosity=quiet", *([f"threads={threads}"] if threads else [])], res)
    assert r.rc == 0, r.err
    (path,) = res.records()
    rec = read_json(path)
    ref = next((s for s in shipped if s["config_hash"] == rec["config_hash"]), None)
    assert ref is not None, (f"the default {method} config changed since the shipped records were made "
                             f"(hash {rec['config_hash']} not among {[s['config_hash'] for s in shipped]}): "
                             "rerun the digits grid and the report")
    got, want = rec["final"]["acc_last"], ref["final"]["acc_last"]
    assert abs(got - want) <= DRIFT_TOL, f"{method} {noise} seed {seed}: {got:.2f} vs shipped {want:.2f}"


def _md_tables(text: str) -> list[tuple[str, list[list[str]]]]:
    """The markdown tables of ``text``: (the prose before the table, its rows as stripped cells, the header
    first and the ``|---|`` line left out)."""
    out, before, rows = [], [], []
    for line in text.splitlines():
        if line.startswith("|"):
            if not line.startswith("|---"):
                rows.append([c.strip() for c in line.strip().strip("|").split("|")])
            continue
        if rows:
            out.append(("\n".join(before), rows))
            before, rows = [], []
        before.append(line)
    if rows:
        out.append(("\n".join(before), rows))
    return out


def _readme_quotes(readme: str) -> list[tuple[str, list[list[str]]]]:
    """The README's results tables, each with the ``plots/*.md`` file the prose before it names last."""
    import re

    section = readme.split("## Reference results", 1)[1].split("\n## ", 1)[0]
    quotes = []
    for before, rows in _md_tables(section):
        named = re.findall(r"plots/([\w.-]+\.md)", before)
        assert named, f"a README results table does not name the plots/ file it quotes: {rows[0]}"
        quotes.append((named[-1], rows))
    return quotes


def _quote_errors(readme: str, read_plot) -> list[str]:
    """What in the README's results tables is not what the ``plots/*.md`` table it names gives:
    each row's cells must be the cells of the row with the same method there, under the same column
    headers. ``read_plot(name)`` gives that file's text."""
    errors = []
    for name, (head, *rows) in _readme_quotes(readme):
        source = [t for _, t in _md_tables(read_plot(name))]
        for row in rows:
            hits = [t for t in source if row[0] in {r[0] for r in t[1:]} and all(h in t[0] for h in head[1:])]
            srcs = [next(r for r in t[1:] if r[0] == row[0]) for t in hits]
            if not any(all(cell == src[t[0].index(h)] for h, cell in zip(head[1:], row[1:]))
                       for t, src in zip(hits, srcs)):
                errors.append(f"README row {row} is not in plots/{name} under {head[1:]}")
    return errors


@needs_shipped
def test_the_readme_tables_quote_the_committed_report():
    """A README table cannot keep a number the report no longer gives (regenerate the README's tables
    from plots/ after `python -m nlbench report`)."""
    readme = (ROOT / "README.md").read_text()
    assert _readme_quotes(readme), "the README's results section has no table"
    assert _quote_errors(readme, lambda name: (PLOTS / name).read_text()) == []


def test_the_readme_quote_check_finds_a_changed_number_or_a_missing_row():
    table = "| Method | A | B |\n|---|---|---|\n| CE | 1.00 (1) | 2.00 (1) |\n"
    readme = "## Reference results\n\nFrom `plots/x.md`:\n\n| Method | B |\n|---|---|\n| {} | {} |\n\n## Next\n"
    plot = {"x.md": table}.__getitem__
    assert _quote_errors(readme.format("CE", "2.00 (1)"), plot) == []
    assert len(_quote_errors(readme.format("CE", "2.01 (1)"), plot)) == 1      # a changed number
    assert len(_quote_errors(readme.format("CE", "1.00 (1)"), plot)) == 1      # the wrong column
    assert len(_quote_errors(readme.format("GCE", "2.00 (1)"), plot)) == 1     # a row the report lacks
    with pytest.raises(AssertionError, match="does not name"):
        _readme_quotes(readme.replace("From `plots/x.md`:", "Here:").format("CE", "2.00 (1)"))


@needs_shipped
@pytest.mark.parametrize("doc", ["README.md", "RESULTS.md"])
def test_the_documents_quote_the_committed_report_and_carry_no_numbers_of_their_own(doc):
    """Every table in README.md and RESULTS.md between quote markers is what plots/ gives now
    (`python -m nlbench.report.quote README.md RESULTS.md` rewrites them), and no result-like number
    (two decimals) stands in their prose outside a quoted table."""
    from nlbench.report.quote import fill, prose_numbers

    text = (ROOT / doc).read_text()
    assert "<!-- quote plots/" in text
    assert fill(text, ROOT) == text, f"{doc}: a quoted table differs from plots/: run python -m nlbench.report.quote {doc}"
    assert prose_numbers(text) == [], f"{doc}: numbers in prose that no generated table holds"
