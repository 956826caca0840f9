"""Parse quantities with units ("3.2 TB/s", "200 Gb/s", "50 ms", "64 GB") to SI floats, and format them.

Everything inside cmperf is an SI float (seconds, bytes, bytes/s, FLOP/s); the unit lives in the
variable name. Decimal prefixes are powers of 1000 and binary prefixes (KiB, GiB) powers of 1024.
Bits are lower-case ``b`` and are divided by 8: "200 Gb/s" = 25e9 bytes/s.
"""

from __future__ import annotations

import re

from .errors import CmperfError

_PREFIX = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15}
_BIN_PREFIX = {"Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40}

# kind -> {unit suffix: factor to SI}
_TIME = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9, "min": 60.0, "h": 3600.0}


def _size_units(base: str, bits_base: str | None) -> dict[str, float]:
    units: dict[str, float] = {}
    for p, f in _PREFIX.items():
        units[p + base] = f
        if bits_base:
            units[p + bits_base] = f / 8.0
    for p, f in _BIN_PREFIX.items():
        units[p + base] = f
        if bits_base:
            units[p + bits_base] = f / 8.0
    return units


UNITS: dict[str, dict[str, float]] = {
    "bytes": _size_units("B", "b"),
    "bytes_per_s": {k + "/s": v for k, v in _size_units("B", "b").items()}
    | {k.replace("b", "bps"): v for k, v in _size_units("B", "b").items() if k.endswith("b")},
    "s": _TIME,
    "flops": {p + "FLOPS": f for p, f in _PREFIX.items()} | {p + "OPS": f for p, f in _PREFIX.items()},
    "per_s": {"/s": 1.0, "rps": 1.0, "req/s": 1.0},
    "watts": {p + "W": f for p, f in _PREFIX.items()},
}

_NUM = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(.*?)\s*$")


def parse(text: str | float | int, kind: str, *, where: str = "value") -> float:
    """Parse ``text`` as a quantity of ``kind`` (bytes, bytes_per_s, s, flops, per_s, watts) to an SI float.

    A bare number is taken as already SI. ``where`` names the flag or file key for the error message.
    >>> parse("200 Gb/s", "bytes_per_s")
    25000000000.0
    """
    if isinstance(text, bool):
        raise CmperfError(f"{where}: expected a quantity in {kind}, got {text!r}")
    if isinstance(text, int | float):
        return float(text)
    m = _NUM.match(str(text))
    if not m:
        raise CmperfError(f"{where}: cannot parse {text!r} as a quantity ({_examples(kind)})")
    number, unit = float(m.group(1)), m.group(2)
    if unit == "":
        return number
    table = UNITS[kind]
    if unit not in table:
        raise CmperfError(f"{where}: unknown unit {unit!r} in {text!r} ({_examples(kind)})")
    return number * table[unit]


def _examples(kind: str) -> str:
    return {
        "bytes": 'e.g. "64 GB", "512 MiB"',
        "bytes_per_s": 'e.g. "1.6 TB/s", "200 Gb/s"',
        "s": 'e.g. "50 ms", "2 s", "1.9 us"',
        "flops": 'e.g. "752 TFLOPS", "1504 TOPS"',
        "per_s": 'e.g. "40" or "40 req/s"',
        "watts": 'e.g. "1400 W", "132 kW"',
    }[kind]


def fmt_s(seconds: float) -> str:
    """Human time: 0.0494 -> '49.40 ms'."""
    a = abs(seconds)
    if a >= 1.0:
        return f"{seconds:.3f} s"
    if a >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} µs"


def fmt_bytes(n: float) -> str:
    """Decimal bytes: 7.86e6 -> '7.86 MB'."""
    for unit, f in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(n) >= f:
            return f"{n / f:.2f} {unit}"
    return f"{n:.0f} B"


def fmt_rate(bytes_per_s: float) -> str:
    """Bandwidth: 1.346e12 -> '1.35 TB/s'."""
    return fmt_bytes(bytes_per_s) + "/s"


def fmt_flops(flops: float) -> str:
    """FLOP count: 1.1e12 -> '1.10 TFLOP'."""
    for unit, f in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if abs(flops) >= f:
            return f"{flops / f:.2f} {unit}"
    return f"{flops:.0f} FLOP"


def accept_text(accept: float | tuple[float, ...] | list[float]) -> str:
    """MTP acceptance as printed: "0.7", or per-depth rates "0.9,0.7,0.5"."""
    if isinstance(accept, tuple | list):
        return ",".join(f"{a:g}" for a in accept)
    return f"{float(accept):g}"
