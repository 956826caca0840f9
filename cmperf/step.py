"""Compose op times into a layer period and a step, with an overlap policy for n microbatches.

Two streams per layer, per microbatch: A (time a) and M (time m).
* split-cores (CM384 decode §4.2): A = attention ops on the attention cores, M = gate, dispatch,
  experts, combine on the rest; the cores are split only when n > 1.
* compute-comm (CM384 prefill §4.3; DeepSeek/SGLang two-batch overlap): A = all compute on all cores,
  M = the collectives on the DMA engines / network. When n > 1 and the comm kernels hold cores while
  they run (DeepEP normal kernels in prefill: 20 of 132 H800 SMs, DeepSeek-V3 report §3.2.2), A gets
  ``compute_share`` = (cores - comm_cube_cores) / cores of them (112/132 = 0.848 on H800); CM384's
  prefill all-to-all runs on AIV + SDMA, so its AIC share stays 1.

Microbatch i of layer l+1 needs M_i of layer l, and each stream runs its microbatches in order, so the
steady-state layer period is

    period = max(n*a, n*m, a + m, n * hbm_s)

(n = 1: a + m, fully serial; n = 2 with a = m: 2a, fully hidden). ``hbm_s`` is the HBM time of all
ops of one microbatch: concurrent streams share the die's bandwidth. Bounds: the lower uses every
op's speed-of-light time (peak compute, full bandwidth, no fixed costs); the upper runs every op's
ceilings back to back with no overlap at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .comm import DomainDedupOp, ep_collective_time, plane_collective_time
from .graph import Op, Stage
from .roofline import OpTime, compute_op_time
from .specs import System


def binding_names(policy: str) -> tuple[str, str, str, str]:
    """Names of StageTime.binding's four verdicts under ``policy`` (stream A, stream M, serial, HBM)."""
    a, m = (
        ("attention stream", "MoE stream") if policy == "split-cores" else ("compute stream", "comm stream")
    )
    return (a, m, "serial A+M", "shared HBM")


@dataclass(frozen=True)
class StageTime:
    stage: Stage
    op_times: tuple[OpTime, ...]
    a_s: np.ndarray  # stream A per microbatch
    m_s: np.ndarray  # stream M per microbatch
    period_s: np.ndarray  # one repetition (layer), all microbatches
    lower_s: np.ndarray
    upper_s: np.ndarray
    binding: np.ndarray  # 0: stream A, 1: stream M, 2: A + M serial, 3: shared HBM


def op_time(op: Op, system: System, cube_share=1.0, phase: str = "decode") -> OpTime:
    """Time of one op; EP collectives use ``phase``'s kernels (System.collective: a spec's
    [collectives.prefill.dispatch] in prefill, else [collectives.dispatch])."""
    if op.kind != "comm":
        return compute_op_time(op, system.chip, cube_share)
    if op.collective in system.collectives or op.collective in system.phase_collectives.get(phase, {}):
        scaleout = op.scaleout_bytes if isinstance(op, DomainDedupOp) else None
        return ep_collective_time(system, op.collective, op.comm_bytes, op.ep_size, phase, scaleout)
    # intra-instance collectives (prefill SP-TP-SP) ride the EP kernels' scale-up plane
    plane = next(iter(system.collectives.values())).plane if system.collectives else next(iter(system.planes))
    return plane_collective_time(system, plane, op.comm_bytes, op.ep_size)


def _in_a(op: Op, policy: str) -> bool:
    return op.stream == "attn" if policy == "split-cores" else op.kind != "comm"


def stage_time(
    stage: Stage,
    system: System,
    microbatches,
    policy: str,
    attn_cube_share,
    phase: str = "decode",
    compute_share: float = 1.0,
) -> StageTime:
    """``attn_cube_share``: float or array (broadcasts with the ops' arrays and ``microbatches``), the
    split-cores attention share; ``compute_share``: compute-comm's compute-stream share when n > 1
    (module docstring); ``phase`` picks the EP kernels (``op_time``)."""
    n = np.asarray(microbatches, dtype=float)
    if not stage.overlapped:
        n = np.ones_like(n)
    split = (n > 1) & (policy == "split-cores")
    reserve = policy == "compute-comm" and compute_share != 1.0
    times, a, m, hbm, lo_a, lo_m, serial = [], 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
    for op in stage.ops:
        in_a = _in_a(op, policy)
        share = np.where(split, attn_cube_share if in_a else 1.0 - attn_cube_share, 1.0)
        if reserve and in_a:
            share = np.where(n > 1, compute_share, share)
        t = op_time(op, system, share, phase)
        times.append(t)
        hbm = hbm + t.memory_s
        serial = serial + t.serial_s
        if in_a:
            a, lo_a = a + t.time_s, lo_a + t.ideal_s
        else:
            m, lo_m = m + t.time_s, lo_m + t.ideal_s
    a, m = np.asarray(a + 0 * n), np.asarray(m + 0 * n)
    cands = np.stack(np.broadcast_arrays(n * a, n * m, a + m, n * hbm))
    period = cands.max(axis=0)
    binding = cands.argmax(axis=0).astype(np.int8)
    lower = np.max(np.stack(np.broadcast_arrays(n * lo_a, n * lo_m)), axis=0)
    return StageTime(stage, tuple(times), a, m, period, lower, n * serial + 0 * period, binding)


def step_time(
    stages: list[Stage],
    system: System,
    microbatches,
    policy: str,
    attn_cube_share,
    phase: str = "decode",
    compute_share: float = 1.0,
):
    """(list of StageTime, step_s, lower_s, upper_s): step = sum over stages of count * period."""
    sts = [stage_time(s, system, microbatches, policy, attn_cube_share, phase, compute_share) for s in stages]
    step = sum(s.stage.count * s.period_s for s in sts)
    lower = sum(s.stage.count * s.lower_s for s in sts)
    upper = sum(s.stage.count * s.upper_s for s in sts)
    return sts, step, lower, upper
