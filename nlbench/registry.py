"""Name -> class/builder registries, and the one error type users see.

Every component (method, dataset, noise model, backbone) is looked up by one string name. A
misspelled name is a ``ConfigError`` that names the bad value and lists the valid choices; the CLI
turns any ``ConfigError`` into a one-line message and exit code 2.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A bad value in user input (config, CLI, data directory). The message is shown as is."""


class DataError(ConfigError):
    """A missing, partial or corrupt data directory or file."""


class RunError(Exception):
    """A run cannot go on, for a reason its message states in full (the checkpoint disk is full): shown
    as one ``error:`` line without a traceback; the run is recorded as failed (exit code 1)."""


class Terminated(KeyboardInterrupt):
    """The process was asked to stop (SIGTERM: Slurm preemption, ``scancel``, ``kill``). Raised by the
    command line's signal handler and handled as an interrupt (Ctrl-C): every ``finally`` runs (the run's
    lock is released, no temp file is left), the last epoch checkpoint is kept, and rerunning the same
    command resumes; the process exits with its own code (143)."""


class Registry(Generic[T]):
    """A name -> object mapping; duplicate names raise, unknown names list the choices.

    >>> r = Registry("backbone")
    >>> @r.register("tiny")
    ... def tiny(): ...
    >>> r.names()
    ['tiny']
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            try:
                setattr(obj, "registry_name", name)
            except (AttributeError, TypeError):
                pass
            return obj

        return deco

    def get(self, name: str) -> T:
        if name not in self._items:
            raise ConfigError(f"unknown {self.kind} {name!r}{did_you_mean(name, self.names())}; "
                              f"valid choices: {', '.join(self.names())}")
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def items(self) -> list[tuple[str, T]]:
        return [(n, self._items[n]) for n in self.names()]


def did_you_mean(name: str, choices) -> str:
    """``" (did you mean gss_sb?)"`` when ``name`` is close to one of ``choices`` (a typo), else ""."""
    import difflib

    close = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def check_range(name: str, value: Any, lo: float | None = None, hi: float | None = None,
                *, lo_open: bool = False, hi_open: bool = False) -> float:
    """Validate a numeric hyperparameter; raise ConfigError naming it and the allowed range."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    said = f"{name} {value!r}" if " " in name else f"{name}={value!r}"
    if not math.isfinite(v):   # inf passes a range without an upper bound and fails later, mid-run
        raise ConfigError(f"{said} is not a finite number")
    bad = (lo is not None and (v < lo or (lo_open and v == lo))) or (
        hi is not None and (v > hi or (hi_open and v == hi)))
    if bad:
        lb = "(" if lo_open else "["
        rb = ")" if hi_open else "]"
        # a key reads key=value (train.lr=0.0); a name in words reads "noise rate 1.5"
        raise ConfigError(f"{said} is outside {lb}{lo if lo is not None else '-inf'}, "
                          f"{hi if hi is not None else 'inf'}{rb}")
    return v


def check_finite(obj, key: str) -> None:
    """Every float in ``obj`` (a value, or mappings and lists of them, walked with dotted keys) must be
    finite: ``inf`` and ``nan`` pass most range checks and break a run epochs later. Raises ConfigError
    naming the first key and its value."""
    if isinstance(obj, float) and not math.isfinite(obj):
        raise ConfigError(f"{key}={obj} is not a finite number; give a finite value")
    if isinstance(obj, dict):
        for k, v in obj.items():
            check_finite(v, f"{key}.{k}" if key else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            check_finite(v, f"{key}[{i}]")


def as_int(name: str, value) -> int:
    """``value`` as an int (``3``, ``3.0``, ``"3"``); anything else is a ConfigError naming ``name``."""
    try:
        if isinstance(value, bool):
            raise ValueError
        f = float(value)
        if not f.is_integer():
            raise ValueError
        return int(f)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{name} must be an integer, got {value!r}") from None
