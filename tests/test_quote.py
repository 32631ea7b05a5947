"""Quoted tables (nlbench.report.quote): a document's table between markers is rewritten from the
generated table it names, and result-like numbers outside them are found."""
from __future__ import annotations

import pytest

from nlbench.report.quote import QuoteError, fill, prose_numbers

PLOT = """## Table

**A** · heading

| Method | X | Y |
|---|---|---|
| CE | 1.00 (n=2) | 2.00 (n=2) |
| GCE | 3.00 (n=2) | 4.00 (n=2) |

**B** · heading

| Method | X | Y |
|---|---|---|
| CE | 9.00 (n=1) | 8.00 (n=1) |
"""


def test_fill_rewrites_a_quote_from_its_block_columns_and_rows(tmp_path):
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "t.md").write_text(PLOT)
    doc = ('intro\n<!-- quote plots/t.md block="**B**" columns="Y" -->\n| stale |\n<!-- /quote -->\n'
           '<!-- quote plots/t.md rows="GCE" -->\n<!-- /quote -->\nend\n')
    got = fill(doc, tmp_path)
    assert got == ('intro\n<!-- quote plots/t.md block="**B**" columns="Y" -->\n| Method | Y |\n|---|---|\n'
                   '| CE | 8.00 (n=1) |\n<!-- /quote -->\n<!-- quote plots/t.md rows="GCE" -->\n'
                   '| Method | X | Y |\n|---|---|---|\n| GCE | 3.00 (n=2) | 4.00 (n=2) |\n<!-- /quote -->\nend\n')
    assert fill(got, tmp_path) == got                                   # fresh quotes: nothing changes
    for bad, why in (('columns="Z"', "no column"), ('rows="SL"', "no row"), ('block="**C**"', "no line contains")):
        with pytest.raises(QuoteError, match=why):
            fill(f"<!-- quote plots/t.md {bad} -->\n<!-- /quote -->\n", tmp_path)
    with pytest.raises(QuoteError, match="no such file"):
        fill("<!-- quote plots/none.md -->\n<!-- /quote -->\n", tmp_path)


def test_prose_numbers_are_found_outside_quotes_and_code():
    text = ("GSS-SSL ends at 63.14 here.\n<!-- quote plots/t.md -->\n| CE | 1.00 |\n<!-- /quote -->\n"
            "```\npython x.py --lr 0.05\n```\ntorch==2.14.1 and 120 epochs, 0.1 held out\n")
    assert prose_numbers(text) == ["63.14"]
