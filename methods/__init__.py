"""Noisy-label methods. Each module registers its class in ``nlbench.method.METHODS``.

Adding a method: drop one file here with a ``@METHODS.register("name")`` class and one
``conf/method/<name>.yaml``; every module in this package is imported automatically.
"""
import importlib
import pkgutil

for _m in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_m.name}")
