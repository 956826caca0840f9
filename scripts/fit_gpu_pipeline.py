"""Fit each GPU architecture's in-loop compute share (chip ``pipeline_compute``) on measured points.

Usage: .venv/bin/python scripts/fit_gpu_pipeline.py POINTS.csv

POINTS.csv is the development half of aiconfigurator's measured rows (docs/points.md; never committed).
``pipeline_compute`` divides every compute ceiling (cmperf.roofline); it stands for what a kernel loses
inside the serving loop against its microbenchmark (a second stream on the chip, ragged shapes,
sustained clocks). The 910C's is fitted on CM384 decode (scripts/fit_pipeline.py); a GPU's cannot be
that chip's value, so each architecture gets its own from its own rows:

* rows: disaggregated (the decode pool alone: no prefill chunk in the step), posed by cmperf with their
  backend's framework profile, and *compute-sensitive*: the predicted TPOT at share 0.5 differs from the
  one at share 1.0 by more than ``SENSITIVE`` (the selection does not depend on the fitted value);
* fit: the share on a grid ``GRID`` that minimises the mean |predicted / measured TPOT - 1| over the
  architecture's rows (an L1 fit: robust to the data's repeat noise, docs/points.md). A fit on the
  grid's edge (1.0) says the rows show no in-loop loss this knob can explain.

Every chip of an architecture (``ARCHITECTURES``) gets the architecture's value. Prints the rows per
architecture, the error at every grid value and the fit; the values are written into hardware/*.toml by
hand, with this script and the row counts as their source.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

import numpy as np

from cmperf import points, specs

#: Chips per architecture (hardware/*.toml) and the systems of the measured rows that run them.
ARCHITECTURES = {
    "hopper": (("h100", "h200", "h800", "h20"), ("dgx-h100", "hgx-h200", "dgx-h800", "hgx-h20")),
    "blackwell": (
        ("b200", "b300", "gb200", "gb300"),
        ("hgx-b200", "hgx-b300", "gb200-nvl72", "gb300-nvl72"),
    ),
}
GRID = np.round(np.arange(0.40, 1.0001, 0.02), 2)
SENSITIVE = 0.05  # |TPOT(0.5) / TPOT(1.0) - 1| above this: the row's TPOT depends on the compute share
_LINE = re.compile(r"^pipeline_compute = \{ value = [0-9.]+", re.M)


def write_shares(d: str, shares: dict[str, float]) -> None:
    """Shadow each chip spec in folder ``d`` (a --spec-dir) with its ``pipeline_compute`` set to
    ``shares[chip]``, the rest of the file as shipped."""
    for chip, share in shares.items():
        text = specs.find(chip, "chip").read_text()
        (Path(d) / f"{chip}.toml").write_text(_LINE.sub(f"pipeline_compute = {{ value = {share}", text))


def evaluate_at(pts: list[points.Point], share: float) -> dict[int, points.Result]:
    """Results by row with every GPU chip's ``pipeline_compute`` set to ``share`` (spec files shadowed
    through a temporary --spec-dir)."""
    with tempfile.TemporaryDirectory() as d:
        write_shares(d, {chip: share for chips, _ in ARCHITECTURES.values() for chip in chips})
        return {r.row: r for r in points.evaluate(pts, spec_dirs=[d])}


def main(argv: list[str]) -> None:
    pts = points.read(argv[0])
    at = {float(s): evaluate_at(pts, float(s)) for s in sorted({*GRID, 0.5, 1.0})}
    lo, hi = at[0.5], at[1.0]
    for arch, (_, systems) in ARCHITECTURES.items():
        rows = [
            k
            for k, r in hi.items()
            if r.mode == "disagg"
            and r.system in systems
            and r.error is not None
            and lo[k].predicted_tpot_s is not None
            and abs(lo[k].predicted_tpot_s / r.predicted_tpot_s - 1) > SENSITIVE
        ]
        per_system = {s: sum(hi[k].system == s for k in rows) for s in systems}
        print(f"{arch}: {len(rows)} compute-sensitive disagg rows {per_system}")
        if not rows:
            print(f"{arch}: no rows, no fit")
            continue
        best = None
        for s in GRID:
            e = np.array([at[float(s)][k].error for k in rows])
            l1 = float(np.mean(np.abs(e)))
            print(
                f"  share {s:.2f}: mean |error| {100 * l1:5.1f}%  median |error| "
                f"{100 * np.median(np.abs(e)):5.1f}%  median error {100 * np.median(e):+5.1f}%"
            )
            if best is None or l1 < best[1]:
                best = (float(s), l1)
        assert best is not None
        print(f"fit {arch}: pipeline_compute = {best[0]:.2f} (mean |error| {100 * best[1]:.1f}%)")


if __name__ == "__main__":
    main(sys.argv[1:])
