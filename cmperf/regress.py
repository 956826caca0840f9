"""Prediction snapshots and their diff, for CI pipelines that pin predicted numbers.

A snapshot maps ``scenario/metric`` to a value (numbers, booleans, strings such as a binding ceiling).
``diff(old, new)`` sorts every metric into one category:

* ``removed`` / ``added``: present only in the old / the new snapshot;
* for a number that moved by more than its tolerance, |new/old - 1| > rtol (or, when old = 0, |new| > rtol):
  ``regression`` or ``improvement`` by the metric's direction (higher is better for throughput
  ``*tokens_per_s*`` and capacity ``max_*``; lower is better for times ``*_s`` and ``*bytes*``), and
  ``drift`` for a metric with no better direction (``imbalance``, ...) or a changed string/boolean
  (a new binding ceiling; ``feasible`` turning false is a regression);
* ``unchanged``: equal, or within tolerance.

Worked example: tokens_per_s_per_device 2,384 -> 2,200 with rtol 0.01 is -7.7%: a regression.
"""

from __future__ import annotations

import fnmatch
import json
import math
from dataclasses import dataclass
from typing import Any, TypeGuard

from .errors import CmperfError

CATEGORIES = ("regression", "improvement", "drift", "added", "removed")
SKIP_KEYS = ("deployment", "schema_version", "kind", "reasons", "ops")


def direction(metric: str) -> int:
    """+1 higher is better, -1 lower is better, 0 no preferred direction."""
    leaf = metric.rsplit("/", 1)[-1].rsplit(".", 1)[-1]
    if (
        leaf == "feasible"
        or "tokens_per_s" in leaf
        or "goodput" in leaf
        or "attainment" in leaf
        or leaf.startswith("max_")
        or "throughput" in leaf
    ):
        return 1
    if leaf.endswith("_s") or "bytes" in leaf or leaf.startswith(("num_devices", "devices_needed")):
        return -1
    return 0


def flatten(doc: dict[str, object], prefix: str = "") -> dict[str, object]:
    """Scalar leaves of a prediction JSON (dotted names), skipping inputs echoed back and per-op lists."""
    out: dict[str, object] = {}
    for k in sorted(doc):
        if not prefix and k in SKIP_KEYS:
            continue
        v = doc[k]
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, name + "."))
        elif isinstance(v, bool | int | float | str) or v is None:
            out[name] = v
    return out


@dataclass(frozen=True)
class Change:
    metric: str
    category: str  # one of CATEGORIES or "unchanged"
    old: object
    new: object
    rel: float | None  # new/old - 1 for numbers
    rtol: float


def _is_num(v: object) -> TypeGuard[int | float]:
    return isinstance(v, int | float) and not isinstance(v, bool)


def rtol_for(metric: str, rtol: float, per_metric: dict[str, float]) -> float:
    """Per-metric tolerance: exact name, the part after 'scenario/', the metric's own name (after the last
    '/': a grid snapshot's scenario names hold '/' themselves), or a glob of any of them; else rtol."""
    names = {metric, metric.split("/", 1)[-1], metric.rsplit("/", 1)[-1]}
    for pat in sorted(per_metric):
        if pat in names or any(fnmatch.fnmatchcase(n, pat) for n in names):
            return per_metric[pat]
    return rtol


def classify(metric: str, old: object, new: object, rtol: float) -> Change:
    if _is_num(old) and _is_num(new):
        rel = (new / old - 1.0) if old != 0 else (float("inf") if new != 0 else 0.0)
        # fail closed: a NaN (which no comparison holds for) counts as moved, never as within tolerance
        within = abs(new - old) <= rtol * abs(old) if old != 0 else abs(new) <= rtol
        if within:
            return Change(metric, "unchanged", old, new, rel, rtol)
        d = direction(metric)
        cat = "drift" if d == 0 else ("improvement" if (new - old) * d > 0 else "regression")
        return Change(metric, cat, old, new, rel, rtol)
    if old == new:
        return Change(metric, "unchanged", old, new, None, rtol)
    if _is_num(old) and new is None:  # a prediction that lost its value (null) fails closed
        return Change(metric, "regression", old, new, None, rtol)
    if isinstance(old, bool) and isinstance(new, bool) and direction(metric) > 0:
        return Change(metric, "improvement" if new else "regression", old, new, None, rtol)
    return Change(metric, "drift", old, new, None, rtol)


def diff(
    old: dict[str, object], new: dict[str, object], rtol: float, per_metric: dict[str, float] | None = None
) -> list[Change]:
    per_metric = per_metric or {}
    for name, tol in [("--rtol", rtol), *((f"--metric-rtol {k}", v) for k, v in per_metric.items())]:
        check_rtol(tol, name)
    out = []
    for m in sorted(set(old) | set(new)):
        tol = rtol_for(m, rtol, per_metric)
        if m not in new:
            out.append(Change(m, "removed", old[m], None, None, tol))
        elif m not in old:
            out.append(Change(m, "added", None, new[m], None, tol))
        else:
            out.append(classify(m, old[m], new[m], tol))
    return out


def failed(changes: list[Change], fail_on: str) -> bool:
    bad = ("regression",) if fail_on == "regression" else CATEGORIES
    return any(c.category in bad for c in changes)


def counts(changes: list[Change]) -> dict[str, int]:
    return {c: sum(1 for x in changes if x.category == c) for c in (*CATEGORIES, "unchanged")}


def _val(v: object) -> str:
    if v is None:
        return "-"
    if _is_num(v):
        return f"{v:.6g}"
    return str(v)


def rows(changes: list[Change]) -> list[tuple[str, ...]]:
    order = {c: i for i, c in enumerate(CATEGORIES)}
    shown = sorted(
        (c for c in changes if c.category != "unchanged"), key=lambda c: (order[c.category], c.metric)
    )
    return [
        (
            c.category,
            c.metric,
            _val(c.old),
            _val(c.new),
            "-" if c.rel is None else ("inf" if c.rel == float("inf") else f"{100 * c.rel:+.2f}%"),
            f"{100 * c.rtol:g}%",
        )
        for c in shown
    ]


HEADER = ("category", "metric", "old", "new", "change", "tolerance")


def summary_line(changes: list[Change]) -> str:
    n = counts(changes)
    return ", ".join(f"{n[c]} {c}" for c in (*CATEGORIES, "unchanged"))


# ------------------------------------------------------------------------------------------- snapshot schema

#: Keys of a snapshot document and of one scenario record in it (``cmperf snapshot``; the goldens add
#: ``args``, the command line of a grid case, and ``error``, the first line of a case that exits 2).
SNAPSHOT_KEYS = ("schema_version", "kind", "cmperf_version", "scenarios")
RECORD_KEYS = ("command", "spec_hash", "metrics", "args", "error")
#: Largest snapshot file read (bytes): the shipped goldens are ~50 KB; a gate never needs 64 MB.
MAX_SNAPSHOT_BYTES = 64 * 2**20


def check_rtol(value: object, where: str) -> float:
    """A tolerance: a finite number >= 0 (NaN would make every comparison false and pass every change)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise CmperfError(f"{where}: {value!r} is not a tolerance; give a finite number >= 0, e.g. 0.01")
    return float(value)


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number a snapshot may hold")


def read_snapshot(data: bytes, where: str, schema_version: int) -> dict[str, Any]:
    """Parse and check a snapshot file's bytes (``where`` names it in every error):

    UTF-8 JSON without NaN/Infinity, an object ``{"schema_version": <schema_version>, "kind": "snapshot",
    "cmperf_version": str, "scenarios": {name: record}}`` where a record holds ``metrics``, a flat object of
    metric name -> finite number, boolean, string or null (or ``error``, a string), and optionally
    ``command``, ``spec_hash`` (strings) and ``args`` (a list of strings). Nesting deeper than that, or any
    other type, is a CmperfError naming the file and the key."""
    hint = "make one with `cmperf snapshot`"
    if len(data) > MAX_SNAPSHOT_BYTES:
        raise CmperfError(f"{where}: {len(data):,} bytes is not a snapshot (at most {MAX_SNAPSHOT_BYTES:,})")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise CmperfError(f"{where}: not UTF-8 text (a binary file?); {hint}") from None
    try:
        doc = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise CmperfError(f"{where}: JSON nested too deep for a snapshot; {hint}") from None
    except ValueError as e:  # json.JSONDecodeError and the NaN/Infinity constants
        raise CmperfError(f"{where}: not snapshot JSON ({e}); {hint}") from None
    if not isinstance(doc, dict) or doc.get("kind") != "snapshot":
        raise CmperfError(f"{where}: not a cmperf snapshot (kind != snapshot); {hint}")
    unknown = sorted(set(doc) - set(SNAPSHOT_KEYS))
    if unknown:
        raise CmperfError(
            f"{where}: key {unknown[0]!r} is not part of a snapshot ({', '.join(SNAPSHOT_KEYS)})"
        )
    version = doc.get("schema_version")
    if isinstance(version, bool) or version != schema_version:
        raise CmperfError(
            f"{where}: schema_version {version!r} is not {schema_version}, the version this cmperf reads; "
            f"make the snapshot again with this cmperf"
        )
    if not isinstance(doc.get("cmperf_version"), str):
        raise CmperfError(f"{where}: key cmperf_version must be a string")
    scenarios = doc.get("scenarios")
    if not isinstance(scenarios, dict):
        raise CmperfError(f"{where}: key scenarios must be an object {{name: {{metrics: {{...}}}}}}")
    for name, rec in scenarios.items():
        at = f"{where}: key scenarios.{name}"
        if not name:
            raise CmperfError(f"{at}: a scenario needs a name")
        if not isinstance(rec, dict):
            raise CmperfError(f"{at} must be an object with metrics")
        unknown = sorted(set(rec) - set(RECORD_KEYS))
        if unknown:
            raise CmperfError(f"{at}.{unknown[0]}: unknown key ({', '.join(RECORD_KEYS)})")
        for key in ("command", "spec_hash", "error"):
            if key in rec and not isinstance(rec[key], str):
                raise CmperfError(f"{at}.{key} must be a string")
        args = rec.get("args", [])
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise CmperfError(f"{at}.args must be a list of strings")
        if "metrics" not in rec and "error" not in rec:
            raise CmperfError(f"{at} has no metrics")
        metrics = rec.get("metrics", {})
        if not isinstance(metrics, dict):
            raise CmperfError(f"{at}.metrics must be an object of metric name -> value")
        for m, v in metrics.items():
            if not m:
                raise CmperfError(f"{at}.metrics: a metric needs a name")
            if v is None or isinstance(v, bool | str):
                continue
            if not isinstance(v, int | float):
                raise CmperfError(
                    f"{at}.metrics.{m}: {type(v).__name__} is not a metric value "
                    "(number, boolean, string, null)"
                )
            if not math.isfinite(v):
                raise CmperfError(f"{at}.metrics.{m}: {v!r} is not a finite number")
    return doc


def metrics(doc: dict[str, Any]) -> dict[str, object]:
    """``scenario/metric`` -> value over a checked snapshot; a case recorded as an error is its metric
    ``scenario/error`` (so a case that starts or stops failing is a change, not a silence)."""
    out: dict[str, object] = {}
    for sc, rec in doc["scenarios"].items():
        out.update({f"{sc}/{k}": v for k, v in rec.get("metrics", {}).items()})
        if "error" in rec:
            out[f"{sc}/error"] = rec["error"]
    return out
