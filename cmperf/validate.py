"""The validation reference set: published numbers, their citations and tolerances, and the comparison.

``reference/*.toml`` (beside the package in a checkout, ``cmperf/data/reference`` in a wheel) lists points:

* ``kind = "scenario"``: a decode or prefill scenario run through the library (``cmperf.scenario.predict``,
  the numbers its command prints); ``metric`` names a field of its prediction record.
* ``kind = "comm"``: one EP collective on a system (``cmperf.comm.ep_collective_time``, as ``cmperf comm``).

error = predicted / published - 1; a point passes when |error| <= tolerance (10% unless stated).
Worked number: Table 7 dispatch EP256 predicts 154 us against 152 us published: +1.3%, pass.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import CmperfError
from .specs import builtin_dirs

POINT_KEYS = {
    "id",
    "kind",
    "scenario",
    "metric",
    "published",
    "unit",
    "tolerance",
    "source",
    "system",
    "model",
    "op",
    "ep_size",
    "tokens_per_rank",
    "dtype",
    "top_k",
}


@dataclass(frozen=True)
class RefPoint:
    id: str
    kind: str
    published: float
    unit: str
    tolerance: float
    source: str
    spec: dict[str, Any]  # the remaining keys (scenario/metric or system/op/ep_size/...)


@dataclass(frozen=True)
class Row:
    id: str
    unit: str
    published: float
    predicted: float | None
    error: float | None
    tolerance: float
    status: str  # pass | FAIL | skipped
    source: str
    note: str = ""


def reference_files() -> list[Path]:
    return sorted((builtin_dirs()[0] / "reference").glob("*.toml"))


def load_reference(paths: list[Path] | None = None) -> list[RefPoint]:
    points = []
    for path in paths if paths is not None else reference_files():
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise CmperfError(f"{path}: cannot read the reference set ({e})") from None
        for i, p in enumerate(raw.get("point", [])):
            where = f"{path}: point {i + 1}"
            unknown = sorted(set(p) - POINT_KEYS)
            if unknown:
                raise CmperfError(f"{where}: key {unknown[0]}: unknown key")
            for k in ("id", "kind", "published", "source"):
                if k not in p:
                    raise CmperfError(f"{where}: key {k} is missing")
            if p["kind"] not in ("scenario", "comm"):
                raise CmperfError(f"{where}: key kind: expected scenario or comm, got {p['kind']!r}")
            spec = {
                k: v
                for k, v in p.items()
                if k not in ("id", "kind", "published", "unit", "tolerance", "source")
            }
            points.append(
                RefPoint(
                    p["id"],
                    p["kind"],
                    float(p["published"]),
                    str(p.get("unit", "")),
                    float(p.get("tolerance", 0.10)),
                    str(p["source"]),
                    spec,
                )
            )
    return points


def rows(spec_dirs: tuple[str, ...] | list[str] = (), points: list[RefPoint] | None = None) -> list[Row]:
    """Predicted vs published for every reference point (scenario points through ``scenario.predict``)."""
    from . import scenario

    out = []
    for pt in points if points is not None else load_reference():
        if pt.kind == "comm":
            out.append(compare(pt, comm_value(pt, spec_dirs)))
            continue
        sc = scenario.load(pt.spec["scenario"], spec_dirs)
        system, model = scenario.specs_of(sc, spec_dirs)
        pred = scenario.predict(sc, system, model)
        val = getattr(pred, pt.spec["metric"], None)
        if not isinstance(val, int | float) or isinstance(val, bool):
            raise CmperfError(
                f"reference point {pt.id}: `cmperf {sc.command}` has no number {pt.spec['metric']!r}"
            )
        out.append(compare(pt, float(val)))
    return out


def comm_value(point: RefPoint, spec_dirs: tuple[str, ...] | list[str] = ()) -> float:
    """Predicted time (s) of a Table-7-style collective point: ``comm.ep_collective_estimate`` with the
    decode kernel, the numbers ``cmperf comm`` prints for the same flags."""
    from . import comm, specs

    s = point.spec
    system = specs.load_system(s.get("system", "cloudmatrix384"), spec_dirs)
    model = specs.load_model(s.get("model", "deepseek-r1"), spec_dirs)
    try:
        est = comm.ep_collective_estimate(
            system, model, s["op"], s["ep_size"], s["tokens_per_rank"], s.get("top_k"), s.get("dtype")
        )
    except CmperfError as e:  # the message names the `cmperf comm` flag; say which point it came from
        raise CmperfError(f"reference point {point.id}: {e}") from None
    return est.time_s


def compare(point: RefPoint, predicted: float | None, note: str = "") -> Row:
    if predicted is None:
        return Row(
            point.id, point.unit, point.published, None, None, point.tolerance, "skipped", point.source, note
        )
    err = predicted / point.published - 1.0
    status = "pass" if abs(err) <= point.tolerance + 1e-12 else "FAIL"
    return Row(
        point.id, point.unit, point.published, predicted, err, point.tolerance, status, point.source, note
    )


def _fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    if unit == "s":
        return f"{v * 1e3:.4g} ms" if v >= 1e-3 else f"{v * 1e6:.4g} µs"
    return f"{v:,.4g}"


def table_rows(rows: list[Row]) -> list[tuple[str, ...]]:
    return [
        (
            r.id,
            _fmt(r.published, r.unit),
            _fmt(r.predicted, r.unit),
            "-" if r.error is None else f"{100 * r.error:+.1f}%",
            f"±{100 * r.tolerance:.0f}%",
            r.status + (f" ({r.note})" if r.note else ""),
            r.source,
        )
        for r in rows
    ]


TABLE_HEADER = ("point", "published", "predicted", "error", "tolerance", "status", "source")
