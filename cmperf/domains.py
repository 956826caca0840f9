"""The domain of every number a user gives cmperf: finite, in range, whole where it counts something.

One table per record (``DEPLOYMENT``, ``WORKLOAD``, ``SLO``, ``POOLS``) keyed by the record's field names, and
``OPTIONS`` for the command-line options that are not record fields. The same ``Domain`` is applied
everywhere a number enters: the command-line option types (``cmperf.cli.types``), the scenario loader
(``cmperf.scenario``: the message names the file and key) and the records' ``check`` methods (the library
path: ``Deployment.check``, ``Workload.check``, ``Pools.check``). A number outside its domain is one
``CmperfError`` line naming the flag or key and the allowed range, e.g.

    --batch: nan is not a finite number; give a number in (0, 1e+06]

The bounds are the static ones (a count is >= 1, a fraction is in [0, 1], nothing is NaN or infinite,
and nothing is so large that an allocation or a float overflows: 10^6 devices, 10^12 prefixes); the
bounds that depend on the system or model (devices <= the system's, KV <= the model's context) stay in
the records' ``check``. Pure Python (no numpy): the command line imports it before any model code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real

from .errors import CmperfError


def _bound(x: float, integer: bool) -> str:
    if integer and abs(x) < 1e16:
        return str(int(x))
    return f"{x:g}"


@dataclass(frozen=True)
class Domain:
    """A closed or open interval of finite reals, optionally whole numbers only.

    ``lo``/``hi`` None: unbounded on that side (the value must still be finite). ``check`` converts a
    number or a numeric string ("1e9" is a whole number too) and returns an ``int`` for whole-number
    domains, a ``float`` otherwise; anything else raises ``CmperfError`` naming ``where``."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    integer: bool = False

    def describe(self) -> str:
        """'a whole number in [1, 1000000]', 'a number in (0, 1e+06]', 'a number >= 0'."""
        what = "a whole number" if self.integer else "a number"
        lo, hi = self.lo, self.hi
        if lo is not None and hi is not None:
            left, right = "(" if self.lo_open else "[", ")" if self.hi_open else "]"
            return f"{what} in {left}{_bound(lo, self.integer)}, {_bound(hi, self.integer)}{right}"
        if lo is not None:
            return f"{what} {'>' if self.lo_open else '>='} {_bound(lo, self.integer)}"
        if hi is not None:
            return f"{what} {'<' if self.hi_open else '<='} {_bound(hi, self.integer)}"
        return f"a finite {what.removeprefix('a ')}"

    def contains(self, x: float) -> bool:
        if not math.isfinite(x):
            return False
        if self.lo is not None and (x < self.lo or (self.lo_open and x == self.lo)):
            return False
        return not (self.hi is not None and (x > self.hi or (self.hi_open and x == self.hi)))

    def check(self, value: object, where: str, *, text: bool = True) -> int | float:
        """``value`` as an int (whole-number domain) or float, or CmperfError naming ``where``. ``text``:
        a numeric string is read as its number (command lines); ``text=False`` refuses strings (records and
        files, where a number must be a number)."""
        shown = _show(value)
        if isinstance(value, str) and not text:
            raise CmperfError(f"{where}: {shown} is a string, not a number; give {self.describe()}")
        if isinstance(value, str):
            digits = value.strip()
            try:
                num: int | float = int(digits)
            except ValueError:
                try:
                    num = float(digits)
                except ValueError:
                    raise CmperfError(f"{where}: {shown} is not a number; give {self.describe()}") from None
        elif isinstance(value, bool) or not isinstance(value, Real):
            raise CmperfError(f"{where}: {shown} is not a number; give {self.describe()}")
        elif isinstance(value, Integral):
            num = int(value)
        else:
            num = float(value)
        if isinstance(num, float) and not math.isfinite(num):
            raise CmperfError(f"{where}: {shown} is not a finite number; give {self.describe()}")
        if self.integer:
            if isinstance(num, float):
                if not num.is_integer():
                    raise CmperfError(f"{where}: {shown} is not a whole number; give {self.describe()}")
                num = int(num)
            ok = (self.lo is None or num >= self.lo) and (self.hi is None or num <= self.hi)
            ok = ok and not (self.lo_open and num == self.lo) and not (self.hi_open and num == self.hi)
            if not ok:
                raise CmperfError(f"{where}: {shown} is out of range; give {self.describe()}")
            return num
        try:
            x = float(num)
        except OverflowError:  # an int beyond the float range
            raise CmperfError(f"{where}: {shown} is out of range; give {self.describe()}") from None
        if not self.contains(x):
            raise CmperfError(f"{where}: {shown} is out of range; give {self.describe()}")
        return x


def _show(value: object) -> str:
    """The value as the message quotes it: a string in quotes, at most 40 characters."""
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def whole(lo: float | None = 1, hi: float | None = None) -> Domain:
    return Domain(lo, hi, integer=True)


def real(
    lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False
) -> Domain:
    return Domain(lo, hi, lo_open, hi_open)


#: Upper bounds shared by several fields (stated, generous: a machine of a million devices, a prompt of a
#: billion tokens; beyond them an allocation or a float product overflows before a prediction means much).
MAX_DEVICES = 1_000_000
MAX_RANKS = 10_000_000
MAX_TOKENS = 1e9
FRACTION = real(0.0, 1.0)
CV = real(0.0, 10.0)  # coefficient of variation: 10 is a gamma law of shape 0.01, far beyond any trace

#: ``cmperf.deployment.Deployment`` fields (``microbatches``: an int 1..4 or "auto", checked by the record).
DEPLOYMENT: dict[str, Domain] = {
    "devices": whole(1, MAX_DEVICES),
    "ep_size": whole(1, MAX_RANKS),
    "imbalance": real(1.0, 1000.0),
    "num_redundant": whole(0, MAX_RANKS),
    "slots_per_rank": whole(1, 65536),
    "batch_per_device": real(0.0, 1e6, lo_open=True),
    "kv_len": real(1.0, MAX_TOKENS),
    "kv_capacity_len": real(1.0, MAX_TOKENS),
    "kv_cv": CV,
    "mtp": whole(0, 64),
    "mtp_accept": FRACTION,
    "attention_cube_cores": whole(0, 1_000_000),
    "step_overhead_s": real(0.0, 1.0, hi_open=True),
    "tokens_per_device": real(0.0, 1e12, lo_open=True),
    "prompt_len": real(1.0, MAX_TOKENS),
    "cache_hit": FRACTION,
    "attn_tp": whole(1, MAX_RANKS),
    "moe_tp": whole(1, MAX_RANKS),
    "prefill_chunk_tokens": real(0.0, 1e9),
}

#: ``cmperf.serving.Workload`` fields.
WORKLOAD: dict[str, Domain] = {
    "rate_per_s": real(0.0, 1e9, lo_open=True),
    "concurrency": whole(1, 1e9),
    "prompt_len": real(1.0, MAX_TOKENS),
    "output_len": real(1.0, MAX_TOKENS),
    "prompt_cv": real(0.0, 4.0),
    "output_cv": real(0.0, 4.0),
    "cache_hit": real(0.0, 1.0, hi_open=True),
    "num_prefixes": whole(1, 1e12),
    "prefix_skew": real(0.0, 4.0),
    "prefix_len": real(0.0, MAX_TOKENS, lo_open=True),
}

#: ``cmperf.serving.SLO`` fields (an infinite SLO is "none" and is set by the library, never read).
SLO: dict[str, Domain] = {
    "ttft_s": real(0.0, 1e6, lo_open=True),
    "tpot_s": real(0.0, 1e6, lo_open=True),
    "quantile": real(0.5, 1.0, hi_open=True),
}

#: ``cmperf.serving.Pools`` fields and the serve / sizing knobs around them.
POOLS: dict[str, Domain] = {
    "prefill_devices": whole(1, MAX_DEVICES),
    "decode_devices": whole(1, MAX_DEVICES),
    "prefill_instance_devices": whole(1, MAX_DEVICES),
    "cache_dram_bytes": real(0.0, 1e18),
    "devices_total": whole(1, MAX_DEVICES),
}

#: Command-line options that are not record fields (click parameter names).
OPTIONS: dict[str, Domain] = {
    "slo_percentile": real(50.0, 100.0, hi_open=True),
    "tokens_per_rank": real(0.0, 1e9),
    "top_k": whole(1, 4096),
    "top": whole(1, 10_000),
    "devices": whole(1, MAX_DEVICES),
    "ep_size": whole(1, MAX_RANKS),
    "rtol": real(0.0, None),
}
