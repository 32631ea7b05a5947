"""A researcher's own method package, written into a temporary folder (never into this repository).

``write_plugin(root, pkg, method)`` writes ``root/<pkg>/methods.py`` registering ``method`` and
``root/<pkg>/conf/method/<method>.yaml``. The method is cross entropy, plus a way to crash on purpose:
it raises at 0-based epoch ``fail_at_epoch`` unless ``$NLBENCH_TEST_NO_CRASH`` is set, so a test can
make a run fail and then let the retry succeed without changing the run's config (or its hash).
With ``entry_point=True`` it also writes ``<pkg>-0.1.dist-info`` declaring the module under the
``nlbench.methods`` entry-point group, as ``pip install`` of the package would.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

METHOD_SOURCE = '''
"""{method}: cross entropy that can crash on purpose (a test plugin)."""
import os

from nlbench.losses import make_ce
from nlbench.method import METHODS, Method, StepOutput


@METHODS.register("{method}")
class CrashableCE(Method):
    def __init__(self, *, fail_at_epoch: int = -1, **base) -> None:
        super().__init__(**base)
        self.fail_at_epoch = int(fail_at_epoch)
        self.ce = make_ce()

    def loss(self, batch, ctx):
        if ctx.epoch == self.fail_at_epoch and not os.environ.get("NLBENCH_TEST_NO_CRASH"):
            raise RuntimeError(f"crash on purpose at epoch {{ctx.epoch + 1}}")
        return StepOutput(self.ce(self.nets[0](batch.x), batch.y).mean())
'''


def write_plugin(root: Path, pkg: str, method: str, *, entry_point: bool = False) -> Path:
    d = Path(root) / pkg
    (d / "conf" / "method").mkdir(parents=True, exist_ok=True)
    (d / "__init__.py").write_text("")
    (d / "methods.py").write_text(METHOD_SOURCE.format(method=method))
    (d / "conf" / "method" / f"{method}.yaml").write_text(
        f"# a method from outside the suite\nname: {method}\nparams:\n  fail_at_epoch: -1\n")
    if entry_point:
        info = Path(root) / f"{pkg}-0.1.dist-info"
        info.mkdir(exist_ok=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {pkg}\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(textwrap.dedent(f"""\
            [nlbench.methods]
            {pkg} = {pkg}.methods
            """))
    return d
