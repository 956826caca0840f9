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
from dataclasses import dataclass
from typing import TypeGuard

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
    """Per-metric tolerance: exact name, the part after 'scenario/', or a glob pattern; else rtol."""
    leaf = metric.split("/", 1)[-1]
    for pat in sorted(per_metric):
        if pat in (metric, leaf) or fnmatch.fnmatchcase(metric, pat) or fnmatch.fnmatchcase(leaf, pat):
            return per_metric[pat]
    return rtol


def classify(metric: str, old: object, new: object, rtol: float) -> Change:
    if _is_num(old) and _is_num(new):
        rel = (new / old - 1.0) if old != 0 else (float("inf") if new != 0 else 0.0)
        moved = abs(new - old) > rtol * abs(old) if old != 0 else abs(new) > rtol
        if not moved:
            return Change(metric, "unchanged", old, new, rel, rtol)
        d = direction(metric)
        cat = "drift" if d == 0 else ("improvement" if (new - old) * d > 0 else "regression")
        return Change(metric, cat, old, new, rel, rtol)
    if old == new:
        return Change(metric, "unchanged", old, new, None, rtol)
    if isinstance(old, bool) and isinstance(new, bool) and direction(metric) > 0:
        return Change(metric, "improvement" if new else "regression", old, new, None, rtol)
    return Change(metric, "drift", old, new, None, rtol)


def diff(
    old: dict[str, object], new: dict[str, object], rtol: float, per_metric: dict[str, float] | None = None
) -> list[Change]:
    per_metric = per_metric or {}
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
