"""Time of one compute op on one rank: every ceiling and the binding one.

    compute_s = flops / (peak[dtype] * eff_compute[kind] * eff_pipeline * core_share)
    memory_s  = hbm_bytes / (hbm_bytes_per_s * eff_memory[kind])
    time_s    = max(compute_s, memory_s) + fixed_s[kind]

``eff_pipeline`` (chip key ``pipeline_compute``, default 1) is the fraction of the microbenchmark compute
efficiency that a kernel sustains inside the serving loop; see hardware/ascend-910c.toml for its physics
and calibration (scripts/fit_pipeline.py). It scales compute ceilings only: memory-bound ops keep their
HBM fraction, so it moves large-batch decode and prefill and leaves small-batch decode nearly alone.
``core_share`` is the fraction of the cube cores (GEMM, attention) or vector cores (vector ops) that the
op's stream owns (CM384 §4.2: the decode attention stream has 16 of 24 AIC). HBM bandwidth is not
split: a stream alone can pull the die's bandwidth; the step adds a shared-HBM bound for concurrent
streams (cmperf.step). Worked number: INT8 expert GEMM, 853 tokens x 7168 x 4096 on 8 of 24 AIC of a
910C die: 2*853*7168*4096 / (752e12 * 0.797 * 1/3) = 0.25 ms (eff_pipeline = 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from .graph import Array, Op
from .specs import Chip

BOUNDS = ("compute", "memory", "link", "latency")
COMPUTE, MEMORY, LINK, LATENCY = range(4)


@dataclass(frozen=True)
class OpTime:
    """Ceilings of one op (arrays broadcast over the operating points). ``bound`` indexes BOUNDS."""

    compute_s: np.ndarray
    memory_s: np.ndarray
    link_s: np.ndarray
    fixed_s: np.ndarray
    time_s: np.ndarray
    bound: np.ndarray
    ideal_s: np.ndarray  # speed of light: peak compute, full bandwidth, no fixed cost
    serial_s: np.ndarray  # no overlap inside the op: compute + memory + link + fixed


def _bound(compute_s: ArrayLike, memory_s: ArrayLike, link_s: ArrayLike, fixed_s: ArrayLike) -> np.ndarray:
    stacked = np.stack(np.broadcast_arrays(compute_s, memory_s, link_s, fixed_s))
    return np.argmax(stacked, axis=0).astype(np.int8)


def compute_op_time(op: Op, chip: Chip, cube_share: ArrayLike = 1.0, vector_share: ArrayLike = 1.0) -> OpTime:
    kind = op.kind
    zero = np.zeros(())
    if kind == "vector":
        compute_s: Array = zero
        peak_s: Array = zero
        mem_eff = chip.eff["vector_memory"]
    else:
        peak = chip.peak(op.dtype)
        share = np.asarray(cube_share, dtype=float)
        comp_eff = chip.eff[f"{kind}_compute"] * chip.eff["pipeline_compute"]
        compute_s = op.flops / (peak * comp_eff * share)
        peak_s = op.flops / peak
        mem_eff = chip.eff[f"{kind}_memory"]
    if kind == "vector":
        del vector_share  # memory-bound streaming: the HBM, not the vector cores, sets the pace
    hbm = op.hbm_bytes
    memory_s = hbm / (chip.hbm_bytes_per_s * mem_eff)
    fixed = np.asarray(0.0 if op.fused else chip.overhead_s[kind])
    time_s = np.maximum(compute_s, memory_s) + fixed
    ideal = np.maximum(peak_s, hbm / chip.hbm_bytes_per_s)
    return OpTime(
        compute_s + zero * memory_s,
        memory_s + zero * compute_s,
        zero + 0 * memory_s,
        fixed + 0 * memory_s,
        time_s,
        _bound(compute_s, memory_s, zero, fixed),
        ideal,
        compute_s + memory_s + fixed,
    )
