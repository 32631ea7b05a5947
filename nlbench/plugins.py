"""Methods from outside the suite: a researcher's own package registers methods and their yaml
without editing this repository. Two doors, usable together:

- Settings: ``method_modules=[mypkg.methods]`` imports those modules (each registers its classes with
  ``@METHODS.register``) and ``method_conf_dirs=[/path/to/conf]`` adds config folders that hold
  ``method/<name>.yaml`` to Hydra's search path. The same from the environment:
  ``NLBENCH_METHOD_MODULES=mypkg.methods,other.mod`` and ``NLBENCH_METHOD_CONF_DIRS=/a/conf:/b/conf``.
- An entry point in the package's own ``pyproject.toml``::

      [project.entry-points."nlbench.methods"]
      mypkg = "mypkg.methods"

  nlbench imports ``mypkg.methods`` whenever it looks up methods, and when a ``conf/`` folder sits
  next to that module's file (``mypkg/conf/method/<name>.yaml``) adds it to the search path.

A module that cannot be imported, or a config folder that does not exist, is a ConfigError naming it.
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path

from .registry import ConfigError

ENTRY_POINT_GROUP = "nlbench.methods"
_loaded: set[str] = set()
_entry_point_dirs: list[Path] | None = None


def _import(name: str, origin: str):
    try:
        return importlib.import_module(name)
    except Exception as e:  # a broken plugin must name itself, not crash somewhere deeper
        raise ConfigError(f"{origin}: cannot import {name!r} ({type(e).__name__}: {e})") from None


def load_entry_points() -> list[Path]:
    """Import every module registered under the ``nlbench.methods`` entry-point group (once); returns
    the ``conf/`` folders found next to them."""
    global _entry_point_dirs
    if _entry_point_dirs is None:
        from importlib.metadata import entry_points

        dirs = []
        for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            mod = _import(ep.value.partition(":")[0], f"entry point {ep.name!r} ({ENTRY_POINT_GROUP})")
            conf = Path(getattr(mod, "__file__", "") or ".").resolve().parent / "conf"
            if getattr(mod, "__file__", None) and conf.is_dir():
                dirs.append(conf)
        _entry_point_dirs = dirs
    return list(_entry_point_dirs)


def load_method_modules(modules=None) -> None:
    """Import ``modules`` (a list, e.g. the ``method_modules`` setting), the ones named in
    ``$NLBENCH_METHOD_MODULES`` and the entry points; each module once."""
    load_entry_points()
    env = [m.strip() for m in os.environ.get("NLBENCH_METHOD_MODULES", "").split(",") if m.strip()]
    if isinstance(modules, str):
        modules = [modules]
    for name in [*(modules or []), *env]:
        if name not in _loaded:
            _import(str(name), "method_modules")
            _loaded.add(name)


def override_list(overrides: list[str], key: str) -> list[str]:
    """The list value of ``key=[a,b]`` (or ``key=a``) among command-line overrides."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for o in overrides:
        if o.lstrip("+~").partition("=")[0] == key:
            (parsed,) = OverridesParser.create().parse_overrides([o])
            v = parsed.value()
            return [str(x) for x in (v if isinstance(v, list) else [v] if v not in (None, "") else [])]
    return []


def conf_dirs(overrides: list[str] = ()) -> list[Path]:
    """Every extra config folder: ``method_conf_dirs=[...]`` among ``overrides``, then
    ``$NLBENCH_METHOD_CONF_DIRS``, then the entry points' ``conf/`` folders."""
    given = override_list(list(overrides), "method_conf_dirs")
    env = [d for d in os.environ.get("NLBENCH_METHOD_CONF_DIRS", "").split(os.pathsep) if d]
    out = []
    for d in [*given, *env]:
        p = Path(d).expanduser().resolve()
        if not p.is_dir():
            raise ConfigError(f"method_conf_dirs: {d!r} is not a folder (it should hold method/<name>.yaml)")
        out.append(p)
    return out + [p for p in load_entry_points() if p not in out]


def conf_search_overrides(overrides: list[str] = ()) -> list[str]:
    """The ``hydra.searchpath=[...]`` override that adds :func:`conf_dirs` (none when there are none)."""
    dirs = conf_dirs(overrides)
    return [f"hydra.searchpath=[{','.join(f'file://{d}' for d in dirs)}]"] if dirs else []
