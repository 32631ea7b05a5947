"""What Hydra needs before it composes nlbench's config: the conf folder and the custom resolvers.

Noise names are derived, not written: a rate-family preset (``conf/noise/sym0.4.yaml``, and the
rate-free ``sym.yaml``) sets ``name: ${nlbench_noise_name:${.prefix},${.rate}}``, so the run's name
and record path always come from the rate it trains with. ``noise=sym noise.rate=0.3`` is ``sym0.3``;
``noise=sym0.2 noise.rate=0.3`` is renamed ``sym0.3`` too (the rate wins; the preset only supplied
a default). :func:`check_noise_name` refuses a name that disagrees (an explicit ``noise.name=``).
"""
from __future__ import annotations

import re
from pathlib import Path

from .registry import ConfigError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
#: the rate families: config prefix -> noise kind (conf/noise/<prefix>.yaml takes any rate)
RATE_FAMILIES = {"sym": "sym", "symo": "sym_other", "asym": "asym", "asym_super": "asym_super",
                 "pair": "pairflip", "idn": "idn"}


def split_noise_name(name: str) -> tuple[str, str] | None:
    """``split_noise_name("sym0.3") == ("sym", "0.3")``: a rate family's prefix and the rate as written
    (the inverse of :func:`noise_name`); None for a name outside the rate families (``clean``) or whose
    tail is not a number (``sym0.3.1``)."""
    m = re.match(rf"^({'|'.join(sorted(RATE_FAMILIES, key=len, reverse=True))})([0-9]*\.?[0-9]+)$", str(name))
    return (m.group(1), m.group(2)) if m else None


def noise_name(prefix: str, rate) -> str:
    """``noise_name("sym", 0.3) == "sym0.3"``: the prefix and the rate in its shortest form (``:g``)."""
    try:
        return f"{prefix}{float(rate):g}"
    except (TypeError, ValueError):
        return f"{prefix}{rate}"      # not a number: build_spec's range check names the bad rate


def register_resolvers() -> None:
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("nlbench_noise_name"):
        OmegaConf.register_new_resolver("nlbench_noise_name", noise_name)


register_resolvers()   # importing this module is enough to compose or resolve nlbench's config


def check_noise_name(ncfg: dict) -> None:
    """A rate-family noise must be named ``<prefix><rate:g>``; anything else would file the run under
    a rate it did not train with."""
    prefix = ncfg.get("prefix")
    if prefix is None:
        return
    want = noise_name(prefix, ncfg["rate"])
    if ncfg["name"] != want:
        raise ConfigError(f"noise.name={ncfg['name']!r} disagrees with noise.rate={ncfg['rate']!r}: a {prefix} "
                          f"noise at that rate is named {want!r}; drop the noise.name override")
