"""The house has one way down: no module of the package imports another that (directly or not) imports
it back, nothing imports the command line, the data layer stands below the loop and the methods, and
the report's steps import only the steps before them. Imports inside functions count too: a cycle
that is only deferred to call time is still a cycle."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(packages=("nlbench", "methods")) -> dict[str, set[str]]:
    """module -> the modules of ``packages`` it imports anywhere in its file (``from . import x`` names
    module x when x is a file)."""
    files = {_module_name(p): p for pkg in packages for p in (ROOT / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = mod.split(".")
                    base = base[:len(base) - node.level + (1 if is_pkg else 0)]
                    stem = ".".join(base + ([node.module] if node.module else []))
                else:
                    stem = node.module or ""
                targets = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in files else stem for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in files:   # nlbench.report.cells.Cell -> nlbench.report.cells
                    t = t.rpartition(".")[0]
                if t and t != mod:
                    deps.add(t)
        graph[mod] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state and (c := visit(d)):
                return c
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (c := visit(m)):
            return c
    return None


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for d in graph.get(todo.pop(), ()):
            if d not in seen:
                seen.add(d)
                todo.append(d)
    return seen


def test_the_graph_sees_function_level_and_relative_imports():
    g = import_graph()
    assert "nlbench.config" in g["nlbench.spec"]             # a function-level import
    assert "nlbench.store" in g["nlbench.report.records"]    # from .. import store
    assert "nlbench.report.cells" in g["nlbench.report.tables"]
    assert "nlbench.report.page" in g["nlbench.report"]      # the package's __init__
    assert "methods.ssl_parts" in g["methods.dividemix"]     # from . import ssl_parts as S


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle)


def test_nothing_imports_the_command_line():
    g = import_graph()
    assert [m for m, deps in g.items() if "nlbench.__main__" in deps] == []


def test_data_layer_stands_below_the_loop_and_the_methods():
    g = import_graph()
    above = {"nlbench.trainer", "nlbench.method", "nlbench.spec", "nlbench.prepare", "nlbench.runner", "nlbench.__main__",
             "nlbench.report"}
    for data in ("nlbench.data", "nlbench.stream", "nlbench.filedata", "nlbench.filestream", "nlbench.noise"):
        assert not reachable(g, data) & above, data
    assert not reachable(g, "nlbench.method") & {"nlbench.trainer", "nlbench.spec", "nlbench.prepare", "nlbench.runner"}
    assert not reachable(g, "nlbench.trainer") & {"nlbench.spec", "nlbench.prepare", "nlbench.runner", "nlbench.config"}
    # the run layer in its order: the config side, then the data side, then the run
    assert not reachable(g, "nlbench.spec") & {"nlbench.prepare", "nlbench.runner"}
    assert not reachable(g, "nlbench.prepare") & {"nlbench.runner"}


def test_methods_import_only_the_contract_layer():
    g = import_graph()
    for m in (m for m in g if m.startswith("methods.")):
        assert not reachable(g, m) & {"nlbench.trainer", "nlbench.spec", "nlbench.prepare", "nlbench.runner",
                                      "nlbench.config", "nlbench.data"}, m


#: the report's steps in the order data flows through them; a new module of nlbench/report/ takes its place here
REPORT_STEPS = ["records", "protocol", "cells", "output", "tables", "analysis", "figures", "page", "quote"]


def test_report_steps_import_only_earlier_steps():
    g = import_graph()
    modules = sorted(m.rpartition(".")[2] for m in g if m.startswith("nlbench.report."))
    assert set(modules) <= set(REPORT_STEPS), f"place {set(modules) - set(REPORT_STEPS)} in REPORT_STEPS"
    for i, step in enumerate(REPORT_STEPS):
        if f"nlbench.report.{step}" not in g:
            continue
        inside = {d.rpartition(".")[2] for d in g[f"nlbench.report.{step}"] if d.startswith("nlbench.report.")}
        later = inside - set(REPORT_STEPS[:i])
        assert not later, f"report.{step} imports {later}, a later step"
