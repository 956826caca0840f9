"""Validated option types: every numeric flag is finite, in its range and whole where it counts something.

``Number(domain)`` is the one numeric click type (``cmperf.domains``: the same domains the scenario loader and
the records' ``check`` apply); ``Quantity(kind, domain)`` parses a value with its unit ("40 req/s", "2TB",
"50ms") and then applies the domain. A bad value is one line and exit 2 (a ``CmperfError`` raised during
conversion: ``LazyGroup.invoke`` prints it), naming the flag, or the scenario file and key when the value
came from ``--scenario`` (click's ``default_map``):

    cmperf: error: --prompt-cv: 'nan' is not a finite number; give a number in [0, 4]
"""

from __future__ import annotations

import click
from click.core import ParameterSource

from .. import domains
from ..errors import CmperfError


def where(param: click.Parameter | None, ctx: click.Context | None) -> str:
    """The flag a value was given with, or ``FILE: key TABLE.FIELD`` when a scenario file set it."""
    flag = (param.opts[0] if param.opts else param.name or "value") if param is not None else "value"
    if ctx is None or param is None or param.name is None:
        return flag
    if ctx.get_parameter_source(param.name) == ParameterSource.DEFAULT_MAP:
        sc = ctx.meta.get("cmperf.scenario")
        if sc is not None:
            if param.name in ("system", "model") and getattr(sc, param.name) is not None:
                return f"{sc.path}: key {param.name} (or {flag})"  # a top-level key of the file
            table = "deployment" if param.name in sc.deployment else "options"
            return f"{sc.path}: key {table}.{param.name} (or {flag})"
    return flag


def flag_of(name: str) -> str:
    """``where`` for the current command's parameter ``name``: its flag, or the scenario file and key that
    set it (``--system`` -> ``FILE: key system (or --system)``), for errors raised in a command's body."""
    ctx = click.get_current_context(silent=True)
    param = next((p for p in ctx.command.params if p.name == name), None) if ctx is not None else None
    if param is None:
        return f"--{name.replace('_', '-')}"
    return where(param, ctx)


class Number(click.ParamType):
    """A finite number in ``domain`` (an ``int`` for whole-number domains)."""

    def __init__(self, domain: domains.Domain) -> None:
        self.domain = domain
        self.name = "INTEGER" if domain.integer else "NUMBER"

    def convert(self, value, param, ctx):
        return self.domain.check(value, where(param, ctx))

    def __repr__(self) -> str:
        return f"Number({self.domain.describe()})"


class Quantity(click.ParamType):
    """A quantity with an optional unit (``cmperf.units.parse`` of ``kind``), then ``domain``.

    ``none=True``: the word "none" is accepted and converts to None (no limit: optimize's SLOs).
    ``unit=True``: a bare number typed on the command line is refused (``50`` could be ms or s); a number
    from a scenario file (an int or float: the field is named ``*_s``) is SI, as in the file's key."""

    def __init__(
        self, kind: str, domain: domains.Domain, name: str, none: bool = False, unit: bool = False
    ) -> None:
        self.kind, self.domain, self.name, self.none, self.unit = kind, domain, name, none, unit

    def convert(self, value, param, ctx):
        from ..units import parse

        at = where(param, ctx)
        if self.none and isinstance(value, str) and value.strip().lower() == "none":
            return None
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise CmperfError(f"{at}: {value!r} is not a quantity; give {self.domain.describe()}")
        if self.unit and isinstance(value, str):
            require_unit(value, self.kind, at, none=self.none)
        try:
            x = parse(value, self.kind, where=at)
        except OverflowError:
            raise CmperfError(f"{at}: {value!r} is out of range; give {self.domain.describe()}") from None
        return self.domain.check(x, at)


#: The units a time flag accepts (``cmperf.units``), as the error names them.
TIME_UNITS = "ns, us (µs), ms, s, min, h"


def require_unit(text: str, kind: str, at: str, none: bool = False) -> None:
    """Refuse a bare number for a quantity whose unit matters ("50" seconds or ms?): one line, exit 2.

    ``cmperf: error: --tpot-slo: '50' has no unit; write e.g. 50ms or 50s (units: ns, us (µs), ...)``"""
    t = text.strip()
    try:
        float(t)
    except ValueError:
        return
    units = TIME_UNITS if kind == "s" else kind
    also = ', or "none" for no limit' if none else ""
    raise CmperfError(f"{at}: {t!r} has no unit; write e.g. {t}ms or {t}s (units: {units}){also}")


def number(table: dict[str, domains.Domain], field: str) -> Number:
    """``Number`` of a record field's domain: ``number(domains.DEPLOYMENT, "batch_per_device")``."""
    return Number(table[field])


class AcceptRates(Number):
    """MTP acceptance: one rate for every depth ("0.7"), or per-depth conditional rates ("0.9,0.7,0.5",
    a list in a scenario file) -> a tuple (``cmperf.decode.accepted_per_step``)."""

    def convert(self, value, param, ctx):
        at = where(param, ctx)
        if isinstance(value, str) and "," in value:
            value = [x for x in value.split(",")]
        if isinstance(value, list | tuple):
            if not value:
                raise CmperfError(f"{at}: give at least one rate in [0, 1]")
            return tuple(float(self.domain.check(x, at)) for x in value)
        return self.domain.check(value, at)


class Counts(Number):
    """A comma-separated list of counts ("1,8", or a list in a scenario file) -> a sorted tuple of ints,
    each in the field's domain (``optimize --attn-tp``: the degrees the search tries)."""

    def convert(self, value, param, ctx):
        at = where(param, ctx)
        items = value.split(",") if isinstance(value, str) else value
        items = items if isinstance(items, list | tuple) else [items]
        if not items or any(str(x).strip() == "" for x in items):
            raise CmperfError(f"{at}: give one or more whole numbers, comma-separated (e.g. 1,8)")
        return tuple(sorted({int(self.domain.check(x, at)) for x in items}))


def dep(field: str) -> Number:
    """The option type of a ``Deployment`` field."""
    if field == "mtp_accept":
        return AcceptRates(domains.DEPLOYMENT[field])
    return Number(domains.DEPLOYMENT[field])


def workload(field: str) -> Number:
    """The option type of a ``serving.Workload`` field."""
    return Number(domains.WORKLOAD[field])


def pools(field: str) -> Number:
    """The option type of a ``serving.Pools`` field (and ``--devices-total``)."""
    return Number(domains.POOLS[field])


def option(name: str) -> Number:
    """The option type of a command-line option that is no record field (``domains.OPTIONS``)."""
    return Number(domains.OPTIONS[name])


class Name(click.ParamType):
    """A name (a plane, a spec): any non-blank string. A blank one ("", from a script's empty variable)
    is one line naming the flag, not a silent fall-back to the default."""

    name = "TEXT"

    def __init__(self, what: str) -> None:
        self.what = what

    def convert(self, value, param, ctx):
        if not isinstance(value, str) or not value.strip():
            raise CmperfError(f"{where(param, ctx)}: {value!r} is not a name; give {self.what}")
        return value.strip()


#: Names of a system's planes (``--cache-plane``) and of a model spec (``--draft-model``).
PLANE = Name("a plane of the system (e.g. ub, vpc; `cmperf specs show SYSTEM`), or leave the flag out")
MODEL_NAME = Name("a model spec name, .toml path or config.json, or leave the flag out")

#: Quantities with units on the command line.
RATE = Quantity("per_s", domains.WORKLOAD["rate_per_s"], "RATE")
BYTES = Quantity("bytes", domains.POOLS["cache_dram_bytes"], "BYTES")
SLO_TIME = Quantity("s", domains.SLO["ttft_s"], "TIME", unit=True)
SLO_TIME_OR_NONE = Quantity("s", domains.SLO["ttft_s"], "TIME|none", none=True, unit=True)
SLO_PERCENTILE = option("slo_percentile")
#: Prefill microbatches: a count 1..4 (``Deployment.check`` holds the same range; decode adds "auto").
PREFILL_MICROBATCHES = Number(domains.whole(1, 4))
