"""Fit each GPU architecture's two in-loop kernel efficiencies on measured points: the expert weight-
streaming fraction (chip ``expert_memory``) and the in-loop compute share (chip ``pipeline_compute``).

Usage: .venv/bin/python scripts/fit_gpu_pipeline.py POINTS.csv

POINTS.csv is the development half of aiconfigurator's measured rows (docs/points.md; never committed).

* ``expert_memory`` is the fraction of HBM bandwidth the routed experts' grouped GEMMs stream their
  weights at (cmperf.roofline: the memory ceiling of ``moe.experts.*``). The only GPU figure in the
  references, DeepGEMM's 45-68% on H800, is for decode-shaped *dense* GEMMs (``gemm_memory``, kept for
  them); a grouped GEMM over many experts streams hundreds of MB per kernel, a different shape.
* ``pipeline_compute`` divides every compute ceiling; it stands for what a kernel loses inside the
  serving loop against its microbenchmark (a second stream on the chip, ragged shapes, sustained clocks).
  The 910C's is fitted on CM384 decode (scripts/fit_pipeline.py); a GPU's cannot be that chip's value.

Each architecture gets its own values from its own rows (disaggregated: the decode pool alone, no
prefill chunk in the step; posed by cmperf with their backend's framework profile):

* ``expert_memory`` with the frameworks' ``step_overhead`` (frameworks/*.toml), jointly (``joint_fit``):
  on the low-batch rows a constant per step and a per-byte rate trade off, so fitting either alone moves
  the other. The L1 fit of TPOT over every posed GPU row at once; rows of different expert-weight reads
  per step (EP size, batch) separate the two;
* ``pipeline_compute`` (``fit``) on the rows *sensitive* to it: the predicted TPOT at its two probe
  values (``KNOBS``) differs by more than ``SENSITIVE`` (the selection does not depend on the fit); the
  value on a grid ``GRID`` that minimises the mean |predicted / measured TPOT - 1| (an L1 fit: robust to
  the data's repeat noise, docs/points.md). A fit on the grid's edge (1.0) says the rows show no loss
  this knob can explain.

Each fit holds the others as shipped (coordinate descent): write the values, run again, and they should
not move (the shipped values are such a fixed point). Every chip of an architecture (``ARCHITECTURES``)
gets the architecture's value. Prints the rows, the error across each grid and the fits; the values are
written into hardware/*.toml and frameworks/*.toml by hand, with this script and the row counts as their
source.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

import numpy as np

from cmperf import points, specs
from cmperf.specs import EXPERT_MEMORY

#: Chips per architecture (hardware/*.toml) and the systems of the measured rows that run them.
ARCHITECTURES = {
    "hopper": (("h100", "h200", "h800", "h20"), ("dgx-h100", "hgx-h200", "dgx-h800", "hgx-h20")),
    "blackwell": (
        ("b200", "b300", "gb200", "gb300"),
        ("hgx-b200", "hgx-b300", "gb200-nvl72", "gb300-nvl72"),
    ),
}
FITTED_GPU_CHIPS = tuple(c for chips, _ in ARCHITECTURES.values() for c in chips)
#: Knob -> the two values whose predicted TPOTs decide whether a row is sensitive to it.
KNOBS = {"pipeline_compute": (0.5, 1.0)}
GRID = np.round(np.arange(0.40, 1.0001, 0.02), 2)
SENSITIVE = 0.05  # |TPOT(probe 0) / TPOT(probe 1) - 1| above this: the row's TPOT depends on the knob


def write_values(d: str, key: str, values: dict[str, float]) -> None:
    """Shadow each chip spec in folder ``d`` (a --spec-dir) with its efficiency ``key`` set to
    ``values[chip]``, the rest of the file as shipped (every GPU chip file has both keys)."""
    line = re.compile(rf"^{key} = \{{ value = [0-9.]+", re.M)
    for chip, v in values.items():
        text = specs.find(chip, "chip").read_text()
        if not line.search(text):
            sys.exit(f"{chip}: no {key} line to set")
        (Path(d) / f"{chip}.toml").write_text(line.sub(f"{key} = {{ value = {v}", text))


def evaluate_at(pts: list[points.Point], key: str, value: float) -> dict[int, points.Result]:
    """Results by row with every GPU chip's ``key`` set to ``value`` (spec files shadowed through a
    temporary --spec-dir)."""
    with tempfile.TemporaryDirectory() as d:
        write_values(d, key, dict.fromkeys(FITTED_GPU_CHIPS, value))
        return {r.row: r for r in points.evaluate(pts, spec_dirs=[d])}


def fit(pts: list[points.Point], key: str) -> dict[str, float]:
    """{architecture: fitted ``key``} (printing the rows and the error at every grid value)."""
    probes = KNOBS[key]
    at = {float(s): evaluate_at(pts, key, float(s)) for s in sorted({*GRID, *probes})}
    lo, hi = at[probes[0]], at[probes[1]]
    out = {}
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
        print(f"{arch} {key}: {len(rows)} sensitive disagg rows {per_system}")
        if not rows:
            print(f"{arch}: no rows, no fit")
            continue
        best = None
        for s in GRID:
            e = np.array([at[float(s)][k].error for k in rows])
            l1 = float(np.mean(np.abs(e)))
            print(
                f"  {key} {s:.2f}: mean |error| {100 * l1:5.1f}%  median |error| "
                f"{100 * np.median(np.abs(e)):5.1f}%  median error {100 * np.median(e):+5.1f}%"
            )
            if best is None or l1 < best[1]:
                best = (float(s), l1)
        assert best is not None
        print(f"fit {arch}: {key} = {best[0]:.2f} (mean |error| {100 * best[1]:.1f}%)")
        out[arch] = best[0]
    return out


STEP_GRID_S = np.arange(0.0, 5.0e-3 + 1e-12, 5e-6)  # step_overhead values the joint fit tries (0-5 ms)
STEP_PROBE_S = 1e-3  # added to every step once: each row's TPOT per second of step overhead


def crosses_domain(r: points.Result) -> bool:
    """The row's attention TP group spans more than one scale-up domain (dgx-h100 TP16 over two nodes):
    its all-reduce crosses the scale-out network through NCCL, whose cross-node latency has no source in
    the references, so it would fit the step overhead to a missing term; the joint fit leaves it out."""
    system = specs.load_system(r.system)
    return (r.attn_tp or 1) > system.domain_ranks(system.scaleup_plane())


def joint_fit(pts: list[points.Point]) -> tuple[dict[str, float], dict[str, float]]:
    """({architecture: expert_memory}, {framework: step_overhead s}) minimising the mean |TPOT error| over
    every posed disaggregated GPU row at once but those whose TP crosses a domain (``crosses_domain``),
    printing the fit and its error.

    The two trade off on the same rows (a constant per step against a per-byte rate), so they are fitted
    jointly: an architecture's rows see its ``expert_memory``, a backend's rows its framework's step
    overhead, and rows of different expert-weight reads per step (EP, batch) separate the two. A
    disaggregated row's TPOT is linear in the step overhead (a fixed batch; MTP divides it by the tokens a
    step makes), so each ``GRID`` value is evaluated once and the overhead enters as
    ``TPOT(o) = TPOT(o_shipped) + (o - o_shipped) x slope``, the slope measured by one run with
    ``STEP_PROBE_S`` added to every step."""
    from dataclasses import replace

    from cmperf import frameworks

    dis = [p for p in pts if p.mode == "disagg"]
    at = {float(g): evaluate_at(dis, EXPERT_MEMORY, float(g)) for g in GRID}
    base = {r.row: r for r in points.evaluate(dis)}
    probe = points.evaluate(
        dis, adjust=lambda d: replace(d, step_overhead_s=d.step_overhead_s + STEP_PROBE_S)
    )
    slope = {
        r.row: (r.predicted_tpot_s - base[r.row].predicted_tpot_s) / STEP_PROBE_S
        for r in probe
        if r.error is not None
    }
    shipped = {b: frameworks.load(n).step_overhead_s for b, n in points.BACKEND_FRAMEWORKS.items()}
    fitted = sorted(
        {r.backend for r in base.values() if r.error is not None}
        & {b for b, n in points.BACKEND_FRAMEWORKS.items() if n in frameworks.known()}
    )
    archs = list(ARCHITECTURES)
    # loss[arch][backend]: summed |error| over that arch's rows of that backend, at (GRID, STEP_GRID_S)
    loss = {a: {b: np.zeros((GRID.size, STEP_GRID_S.size)) for b in fitted} for a in archs}
    counts: dict[tuple[str, str], int] = {}
    for a, (_, systems) in ARCHITECTURES.items():
        for k, r in base.items():
            if r.system not in systems or r.error is None or k not in slope or r.backend not in fitted:
                continue
            if crosses_domain(r):
                continue
            counts[a, r.backend] = counts.get((a, r.backend), 0) + 1
            t = np.array([at[float(g)][k].predicted_tpot_s for g in GRID])[:, None]
            t = t + (STEP_GRID_S[None, :] - shipped[r.backend]) * slope[k]
            loss[a][r.backend] += np.abs(t / r.measured_tpot_s - 1)
    n_rows = sum(counts.values())
    print(f"joint fit rows {dict(sorted(counts.items()))}")
    shape = (GRID.size,) * len(archs)  # every architecture's expert_memory at once
    total = np.zeros(shape)
    step_at = {b: np.zeros(shape, dtype=int) for b in fitted}
    for i in np.ndindex(*shape):
        for b in fitted:  # given the expert_memory values, each framework's overhead is its own 1-D fit
            per_o = sum(loss[a][b][j] for a, j in zip(archs, i, strict=True))
            step_at[b][i] = int(np.argmin(per_o))
            total[i] += per_o[step_at[b][i]]
    i = np.unravel_index(int(np.argmin(total)), shape)
    em = {a: float(GRID[j]) for a, j in zip(archs, i, strict=True)}
    steps = {b: float(STEP_GRID_S[step_at[b][i]]) for b in fitted}
    for n, a in enumerate(archs):  # the profile: the best mean |error| at each value, the rest refitted
        prof = total.min(axis=tuple(m for m in range(len(archs)) if m != n)) / n_rows
        print(
            f"{a} {EXPERT_MEMORY}: "
            + " ".join(f"{g:.2f} {100 * e:.1f}%" for g, e in zip(GRID, prof, strict=True) if g >= 0.6)
        )
        print(f"fit {a}: {EXPERT_MEMORY} = {em[a]:.2f}")
    for b, o in steps.items():
        print(f"fit {points.BACKEND_FRAMEWORKS[b]}: step_overhead = {1e3 * o:.3f} ms")
    print(f"joint mean |error| {100 * total[i] / n_rows:.1f}% on {n_rows} rows")
    return em, {points.BACKEND_FRAMEWORKS[b]: o for b, o in steps.items()}


def main(argv: list[str]) -> None:
    pts = points.read(argv[0])
    joint_fit(pts)
    fit(pts, "pipeline_compute")


if __name__ == "__main__":
    main(sys.argv[1:])
