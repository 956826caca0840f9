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
from typing import Any

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


def first_max_index(*xs: ArrayLike) -> np.ndarray:
    """Index of the first largest of ``xs`` per point, as ``np.argmax(np.stack(xs), axis=0)`` gives it
    (NaN counts as largest, ties go to the first), by a comparison cascade: no stacked copy of the inputs.
    >>> first_max_index(np.array([1.0, 3.0, 2.0]), np.array([2.0, 3.0, 1.0])).tolist()
    [1, 0, 0]
    """
    best = np.asarray(xs[0], dtype=float)
    idx = np.zeros(np.broadcast_shapes(*(np.shape(x) for x in xs)), dtype=np.int8)
    for k, x in enumerate(xs[1:], 1):
        # x beats the running best when not <= it (x larger, or x NaN) while the best is not NaN yet
        np.copyto(idx, k, where=~np.less_equal(x, best) & (best == best))
        best = np.maximum(best, x)
    return idx


def _bound(compute_s: ArrayLike, memory_s: ArrayLike, link_s: ArrayLike, fixed_s: ArrayLike) -> np.ndarray:
    return first_max_index(compute_s, memory_s, link_s, fixed_s)


def compute_rate(chip: Chip, kind: str, dtype: str, share: ArrayLike) -> np.ndarray:
    """Sustained FLOP/s of a ``kind`` op in ``dtype`` on ``share`` of the cores: peak[dtype] *
    eff[kind_compute] * eff[pipeline_compute] * share (the denominator of compute_s)."""
    comp_eff = chip.eff[f"{kind}_compute"] * chip.eff["pipeline_compute"]
    return chip.peak(dtype) * comp_eff * np.asarray(share, dtype=float)


def compute_op_time(op: Op, chip: Chip, cube_share: ArrayLike = 1.0, vector_share: ArrayLike = 1.0) -> OpTime:
    """Every ceiling of ``op`` and the binding one (module docstring); ``op_totals`` gives the same
    time_s, ideal_s, serial_s and memory_s without the rest."""
    kind = op.kind
    zero = np.zeros(())
    if kind == "vector":
        compute_s: Array = zero
        peak_s: Array = zero
        mem_eff = chip.eff["vector_memory"]
    else:
        compute_s = op.flops / compute_rate(chip, kind, op.dtype, cube_share)
        peak_s = op.flops / chip.peak(op.dtype)
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


def _hbm_bytes(op: Op) -> Any:
    """``op.hbm_bytes`` without adding the byte counts that are the scalar 0 (x + 0.0 is x: same bits)."""
    total: Any = None
    for x in (op.weight_bytes, op.act_in_bytes, op.act_out_bytes, op.kv_read_bytes, op.kv_write_bytes):
        if np.ndim(x) == 0 and x == 0.0:
            continue
        total = x if total is None else total + x
    return np.float64(0.0) if total is None else total


def op_totals(op: Op, chip: Chip, rate: Any = None) -> tuple[Any, Any, Any, Any]:
    """(time_s, ideal_s, serial_s, memory_s) of a compute op: what a step sums, with the arithmetic of
    ``compute_op_time`` (the same bits) and no other ceiling (no bound, no broadcast padding).
    ``rate``: its ``compute_rate`` (a stage computes it once per kind, dtype and stream)."""
    kind = op.kind
    hbm = _hbm_bytes(op)
    fixed = 0.0 if op.fused else chip.overhead_s[kind]
    if kind == "vector":  # compute_s = 0: max(0, memory_s) = memory_s, and serial = time
        memory_s = hbm / (chip.hbm_bytes_per_s * chip.eff["vector_memory"])
        time_s = memory_s + fixed if fixed else memory_s
        return time_s, hbm / chip.hbm_bytes_per_s, time_s, memory_s
    if rate is None:
        rate = compute_rate(chip, kind, op.dtype, 1.0)
    compute_s = op.flops / rate
    memory_s = hbm / (chip.hbm_bytes_per_s * chip.eff[f"{kind}_memory"])
    time_s = np.maximum(compute_s, memory_s)
    serial_s = compute_s + memory_s
    if fixed:  # (+ 0.0 for a fused op: the same bits as skipping it)
        time_s += fixed
        serial_s += fixed
    ideal_s = np.maximum(op.flops / chip.peak(op.dtype), hbm / chip.hbm_bytes_per_s)
    return time_s, ideal_s, serial_s, memory_s
