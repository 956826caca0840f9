"""Each mechanism of the model switched off, one at a time, against the development points (issue 14).

Usage: .venv/bin/python scripts/mechanisms.py [POINTS.csv]

Development points: the CloudMatrix384 reference points of ``cmperf validate`` (the paper's three
headline points and Table 7 dispatch/combine: reference/*.toml), the Insights bound (tests/data/insights)
and, when POINTS.csv is given, the development half of aiconfigurator's measured NVIDIA rows
(docs/points.md; never committed). A row of the table is the model with one mechanism off (or replaced)
and everything else as shipped; the columns are the errors it gives (predicted / published - 1 on the
headline points and the Insights bound; median |error| of TPOT, and of the aggregated rows' first-wave
TTFT, on the measured rows). The Table 7 points time one all-to-all at the mean volume, which none of
these mechanisms touches (one line); the Insights bound goes through the decode path (its comm-bound
TPOT against 14.76 ms).
Prints a markdown table (docs/calibration.md keeps the one as run).
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from fit_gpu_pipeline import FITTED_GPU_CHIPS, write_values  # (scripts/: the folder this script runs from)

from cmperf import decode, points, prefill, scenario, specs, validate
from cmperf.deployment import Deployment, Precision
from cmperf.errors import CmperfError

ROOT = Path(__file__).resolve().parent.parent
HEADLINE = ("decode-50ms.tokens_per_s", "decode-15ms.tokens_per_s", "prefill.tokens_per_s")
GPU_CHIPS = ("h100", "h200", "h800", "h20", "b200", "b300", "gb200", "gb300", "rubin", "mi355x", "tpu7x")


@dataclass(frozen=True)
class Mechanism:
    name: str  # what is switched off (or replaced)
    adjust: Callable[[Deployment], Deployment] | None = None  # applied to every record
    shares: dict[str, float] | None = None  # chip -> its value of ``key`` (spec files shadowed)
    key: str = "pipeline_compute"
    frameworks: bool = True


def _set(**knobs) -> Callable[[Deployment], Deployment]:
    return lambda dep: replace(dep, **knobs)


MECHANISMS = (
    Mechanism("as shipped"),
    Mechanism("routing imbalance off (every expert rank at the mean load)", _set(imbalance=1.0)),
    Mechanism(
        "measured routing, dynamic EPLB, busiest-rank all-to-all (instead of Zipf)", _set(eplb="dynamic")
    ),
    Mechanism("KV-length straggler off (kv_cv 0)", _set(kv_cv=0.0)),
    Mechanism("microbatch overlap off (1 microbatch)", _set(microbatches=1)),
    Mechanism("framework profiles off (no step overhead, any microbatch count)", frameworks=False),
    Mechanism(
        "in-loop compute share off (pipeline_compute 1 on every chip)",
        shares={c: 1.0 for c in ("ascend-910c", "ascend-910b", *GPU_CHIPS)},
    ),
    Mechanism(
        "GPU in-loop share transferred from the 910C (0.74, before)", shares=dict.fromkeys(GPU_CHIPS, 0.74)
    ),
    Mechanism(
        "GPU experts' weight streaming at gemm_memory (0.6, before; step overheads as shipped)",
        shares=dict.fromkeys(FITTED_GPU_CHIPS, 0.6),
        key="expert_memory",
    ),
)


def _spec_dir(d: str, mech: Mechanism) -> list[str]:
    if not mech.shares:
        return []
    write_values(d, mech.key, mech.shares)
    return [d]


def headline(mech: Mechanism, spec_dirs: list[str]) -> dict[str, float]:
    """{reference point id: error} of the three headline points under ``mech``."""
    out = {}
    for pt in validate.load_reference():
        if pt.id not in HEADLINE:
            continue
        sc = scenario.load(pt.spec["scenario"], spec_dirs)
        system, model = scenario.specs_of(sc, spec_dirs)
        dep = scenario.records(sc, system, model)
        if mech.adjust is not None:
            dep = mech.adjust(dep)
        try:
            pred = (decode.predict if sc.command == "decode" else prefill.predict)(system, model, dep)
        except CmperfError:  # a knob the phase does not take (prefill has no measured routing modes)
            continue
        out[pt.id] = getattr(pred, pt.spec["metric"]) / pt.published - 1.0
    return out


def insights(mech: Mechanism) -> float:
    """Error of the Insights EP bound (14.76 ms at 50 GB/s: (1 + 2) B x 32 tokens x 9 experts x 7,000 x
    2 microbatches x 61 layers) through the decode path under ``mech`` (tests/data/insights, as
    tests/test_hardware.py builds it)."""
    dirs = [str(ROOT / "tests" / "data" / "insights")]
    s, m = specs.load_system("insights-50gbps", dirs), specs.load_model("insights-7000", dirs)
    prec = Precision(gemm="fp8", experts="fp8", dispatch="fp8", combine="bf16")
    dep = Deployment(batch_per_device=64, kv_len=4096, ep_size=320, microbatches=2, mtp=0, precision=prec)
    if mech.adjust is not None:
        dep = mech.adjust(dep)
    bound = 2 * 61 * 32 * 9 * 7000 * (1 + 2) / 50e9
    return float(decode.evaluate(s, m, dep).comm_bound_tpot_s) / bound - 1.0


def measured(mech: Mechanism, pts: list[points.Point], spec_dirs: list[str]) -> dict[str, tuple[float, int]]:
    res = points.evaluate(pts, spec_dirs, frameworks=mech.frameworks, adjust=mech.adjust)
    out = {}
    for key, mode, attr in (
        ("disagg", "disagg", "error"),
        ("agg", "agg", "error"),
        ("ttft", "agg", "ttft_error"),
    ):
        e = [abs(getattr(r, attr)) for r in res if r.mode == mode and getattr(r, attr) is not None]
        out[key] = (float(np.median(e)) if e else float("nan"), len(e))
    return out


def main(argv: list[str]) -> None:
    pts = points.read(argv[0]) if argv else None
    comm_points = [p for p in validate.load_reference() if p.kind == "comm"]
    worst = max(abs(r.error or 0.0) for r in validate.rows(points=comm_points))
    head = "| mechanism | decode b96 tok/s | decode b8 tok/s | prefill tok/s | Insights bound |"
    rule = "|---|---|---|---|---|"
    if pts is not None:
        head += " disagg TPOT med abs err | agg TPOT | agg TTFT |"
        rule += "---|---|---|"
    n = len(comm_points)
    print(f"Table 7 collective points ({n} rows): worst |error| {100 * worst:.1f}% in every row.")
    print()
    print(head)
    print(rule)
    for mech in MECHANISMS:
        with tempfile.TemporaryDirectory() as d:
            dirs = _spec_dir(d, mech)
            h = headline(mech, dirs)
            cells = [f"{100 * h[k]:+.1f}%" if k in h else "n/a" for k in HEADLINE]
            cells.append(f"{100 * insights(mech):+.1f}%")
            if pts is not None:
                cells += [f"{100 * v:.1f}% ({rows})" for v, rows in measured(mech, pts, dirs).values()]
        line = f"| {mech.name} | " + " | ".join(cells) + " |"
        print(line)


if __name__ == "__main__":
    main(sys.argv[1:])
