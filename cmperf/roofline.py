"""Time of one compute op on one rank: every ceiling and the binding one.

    compute_s = flops / (peak[dtype] * eff_compute[kind] * eff_pipeline * core_share)
    memory_s  = hbm_bytes / (hbm_bytes_per_s * eff_memory[kind])    (eff[op.memory_key] where it is set:
    time_s    = max(compute_s, memory_s) + fixed_s[kind]              the routed experts' expert_memory)

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
        mem_eff = chip.eff[op.memory_key or f"{kind}_memory"]
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


def _hbm_bytes(op: Op, out: np.ndarray | None = None) -> Any:
    """``op.hbm_bytes`` without adding the byte counts that are the scalar 0 (x + 0.0 is x: same bits);
    ``out``: a buffer of the sum's shape it is written into when it adds arrays (else a new array)."""
    total: Any = None
    for x in (op.weight_bytes, op.act_in_bytes, op.act_out_bytes, op.kv_read_bytes, op.kv_write_bytes):
        if np.ndim(x) == 0 and x == 0.0:
            continue
        if total is None:
            total = x
        elif out is not None and total is not out:
            total = np.add(total, x, out=out)  # (the first sum: into the buffer, then in place)
        elif out is not None:
            total += x
        else:
            total = total + x
    return np.float64(0.0) if total is None else total


class Scratch:
    """Work buffers for ``op_totals``, one per (role, shape), reused from op to op: a step's ops are timed
    without allocating (a fresh array per result and op costs page faults and cache misses)."""

    __slots__ = ("bufs",)

    def __init__(self) -> None:
        self.bufs: dict[tuple[str, tuple[int, ...]], np.ndarray] = {}

    def get(self, role: str, *xs: Any) -> np.ndarray | None:
        """The ``role`` buffer of the broadcast shape of ``xs``; None for a scalar shape (numpy's ufuncs
        then return a new scalar, as with no ``out``)."""
        shape: tuple[int, ...] = ()
        for x in xs:  # np.broadcast_shapes(*shapes), without its cost when the shapes agree
            sx = getattr(x, "shape", ())
            if sx and sx != shape:
                shape = np.broadcast_shapes(shape, sx) if shape else sx
        if not shape:
            return None
        buf = self.bufs.get((role, shape))
        if buf is None:
            buf = self.bufs[(role, shape)] = np.empty(shape)
        return buf


def op_totals(
    op: Op, chip: Chip, rate: Any = None, scratch: Scratch | None = None
) -> tuple[Any, Any, Any, Any]:
    """(time_s, ideal_s, serial_s, memory_s) of a compute op: what a step sums, with the arithmetic of
    ``compute_op_time`` (the same bits) and no other ceiling (no bound, no broadcast padding):

        memory_s = hbm_bytes / (hbm_bytes_per_s * eff_memory[kind])   (an op's memory_key, if set)
        compute_s = flops / rate                      (0 for a vector op)
        time_s = max(compute_s, memory_s) + fixed_s,  serial_s = compute_s + memory_s + fixed_s
        ideal_s = max(flops / peak[dtype], hbm_bytes / hbm_bytes_per_s)

    ``rate``: its ``compute_rate`` (a stage computes it once per kind, dtype and stream). ``scratch``: the
    results are written into its buffers (valid until its next use: the caller sums them first)."""
    kind = op.kind
    s = scratch.get if scratch is not None else lambda role, *xs: None
    hbm = _hbm_bytes(
        op, s("hbm", op.weight_bytes, op.act_in_bytes, op.act_out_bytes, op.kv_read_bytes, op.kv_write_bytes)
    )
    fixed = 0.0 if op.fused else chip.overhead_s[kind]
    bw = chip.hbm_bytes_per_s
    if kind == "vector":  # compute_s = 0: max(0, memory_s) = memory_s, and serial = time
        memory_s = np.divide(hbm, bw * chip.eff["vector_memory"], out=s("memory", hbm))
        time_s = np.add(memory_s, fixed, out=s("time", hbm)) if fixed else memory_s
        return time_s, np.divide(hbm, bw, out=s("ideal", hbm)), time_s, memory_s
    if rate is None:
        rate = compute_rate(chip, kind, op.dtype, 1.0)
    flops = op.flops
    t_buf = s("time", flops, rate, hbm)
    compute_s = np.divide(flops, rate, out=t_buf)  # (at time_s's shape: the same numbers, broadcast)
    memory_s = np.divide(hbm, bw * chip.eff[op.memory_key or f"{kind}_memory"], out=s("memory", hbm))
    serial_s = np.add(compute_s, memory_s, out=s("serial", compute_s, memory_s))
    time_s = np.maximum(compute_s, memory_s, out=t_buf)  # (compute_s is not needed after this)
    if fixed:  # (+ 0.0 for a fused op: the same bits as skipping it)
        time_s += fixed
        serial_s += fixed
    i_buf = s("ideal", flops, hbm)
    ideal_s = np.maximum(
        np.divide(flops, chip.peak(op.dtype), out=i_buf),
        np.divide(hbm, bw, out=s("hbm_ideal", hbm)),
        out=i_buf,
    )
    return time_s, ideal_s, serial_s, memory_s
