"""Optional extras (``pip install 'cmperf[plot]'`` etc.): imported only when a flag asks for them.

A missing extra is bad input, not a feature switch: ``require`` raises one line naming the flag and the
install command, and nothing falls back silently.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import CmperfError

EXTRA_OF = {"matplotlib": "plot", "pyarrow": "parquet", "dask": "dask", "distributed": "dask"}


def require(module: str, flag: str) -> ModuleType:
    """Import ``module`` (e.g. "matplotlib.pyplot") for ``flag``; if its extra is absent, say how."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:  # the one allowed probe (tests/test_cli_core.IMPORT_PROBE_ALLOWED)
        extra = EXTRA_OF.get(module.split(".")[0], module.split(".")[0])
        raise CmperfError(
            f"{flag} needs the optional package {e.name!r}: pip install 'cmperf[{extra}]'"
        ) from None
