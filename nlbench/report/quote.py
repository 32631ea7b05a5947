"""Tables in prose documents (README.md, RESULTS.md) quoted from the report's generated tables, so that no
number in them can go stale: ``python -m nlbench.report.quote README.md RESULTS.md`` rewrites every quoted
table from ``plots/``, and a test checks that doing so changes nothing.

A quote is a marker pair around a markdown table::

    <!-- quote plots/table3_cpu.md block="**CIFAR-10**" columns="Symmetric 40%|Asymmetric 40%" rows="CE|GCE" -->
    | Method | Symmetric 40% | Asymmetric 40% |
    ...
    <!-- /quote -->

``block``: the table is the first one after the first line of the source that contains this text (default:
the file's first table); ``columns``: the columns kept after the first (default: all), ``|``-separated;
``rows``: the rows kept, by their first cell (default: all).
"""
from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

MARK = re.compile(r"^<!-- quote (?P<args>.+?) -->$")
END = "<!-- /quote -->"


class QuoteError(Exception):
    pass


def _split(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def source_table(text: str, block: str | None) -> list[list[str]]:
    """The rows (header first, the ``|---|`` line dropped) of the first table at or after ``block``."""
    lines = text.splitlines()
    start = 0
    if block:
        start = next((i for i, ln in enumerate(lines) if block in ln), None)
        if start is None:
            raise QuoteError(f"no line contains {block!r}")
    i = next((j for j in range(start, len(lines)) if lines[j].startswith("|")), None)
    if i is None:
        raise QuoteError(f"no table after {block!r}")
    rows = []
    while i < len(lines) and lines[i].startswith("|"):
        if not lines[i].startswith("|---"):
            rows.append(_split(lines[i]))
        i += 1
    return rows


def render(rows: list[list[str]], columns: list[str] | None, keep: list[str] | None) -> list[str]:
    head = rows[0]
    idx = [0] + ([head.index(c) if c in head else -1 for c in columns] if columns else list(range(1, len(head))))
    if -1 in idx:
        missing = [c for c, i in zip(columns, idx[1:]) if i == -1]
        raise QuoteError(f"no column {missing} in {head}")
    body = rows[1:]
    if keep:
        have = {r[0] for r in body}
        if missing := [k for k in keep if k not in have]:
            raise QuoteError(f"no row {missing}")
        body = [r for r in body if r[0] in keep]
    out = ["| " + " | ".join(head[i] for i in idx) + " |", "|" + "|".join("---" for _ in idx) + "|"]
    return out + ["| " + " | ".join(r[i] if i < len(r) else "" for i in idx) + " |" for r in body]


def fill(text: str, root: Path) -> str:
    """``text`` with every quoted table rewritten from its source under ``root``."""
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        m = MARK.match(lines[i])
        out.append(lines[i])
        i += 1
        if not m:
            continue
        parts = shlex.split(m.group("args"))
        src, opts = parts[0], dict(p.split("=", 1) for p in parts[1:])
        end = next((j for j in range(i, len(lines)) if lines[j] == END), None)
        if end is None:
            raise QuoteError(f"quote of {src}: no {END}")
        path = root / src
        if not path.is_file():
            raise QuoteError(f"quote of {src}: no such file")
        try:
            rows = source_table(path.read_text(), opts.get("block"))
            out += render(rows, opts["columns"].split("|") if "columns" in opts else None,
                          opts["rows"].split("|") if "rows" in opts else None)
        except QuoteError as e:
            raise QuoteError(f"quote of {src}: {e}") from None
        out.append(END)
        i = end + 1
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")


def prose_numbers(text: str) -> list[str]:
    """Results-like numbers (two decimals: 63.14) in ``text`` outside quoted tables and code blocks: in a
    document whose numbers must come from generated tables, each is a defect."""
    found, quoted, code = [], False, False
    for ln in text.splitlines():
        if ln.startswith("```"):
            code = not code
            continue
        if MARK.match(ln):
            quoted = True
        elif ln == END:
            quoted = False
        elif not quoted and not code:
            found += re.findall(r"(?<![\w.])\d+\.\d\d(?!\d|\.\d)", ln)   # not a version (2.14.1)
    return found


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    for name in argv:
        p = Path(name)
        try:
            new = fill(p.read_text(), p.resolve().parent)
        except QuoteError as e:
            print(f"error: {name}: {e}", file=sys.stderr)
            return 2
        if new != p.read_text():
            p.write_text(new)
            print(f"{name}: quoted tables rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
