"""Compose op times into a layer period and a step, with an overlap policy for n microbatches.

Two streams per layer, per microbatch: A (time a) and M (time m).
* split-cores (CM384 decode §4.2): A = attention ops on the attention cores, M = gate, dispatch,
  experts, combine on the rest; the cores are split only when n > 1.
* compute-comm (CM384 prefill §4.3; DeepSeek/SGLang two-batch overlap): A = all compute on all cores,
  M = the collectives on the DMA engines / network. When n > 1 and the comm kernels hold cores while
  they run (DeepEP normal kernels in prefill: 20 of 132 H800 SMs, DeepSeek-V3 report §3.2.2), A gets
  ``compute_share`` = (cores - comm_cube_cores) / cores of them (112/132 = 0.848 on H800); CM384's
  prefill all-to-all runs on AIV + SDMA, so its AIC share stays 1.

The step (both phases) is a *segment-level list schedule* (``compose``, ``pipeline_s``): one layer is the
sequence of its ops cut into segments, maximal runs of one stream's ops (``segments``): a CM384 decode
layer is [A][M]; a GPU decode layer [residual + attention + gate][dispatch][experts][combine]; a prefill
layer [residual + prolog][all-gather][attention][all-to-all][o_proj + gate][dispatch][experts][combine]
(both phases run a layer's trailing residual add at the head of the next layer's compute, ``rotate``,
as a two-batch-overlap runtime does). Microbatch j's segment k waits for its
own segment k-1 and for its stream, and each stream serves the segments in order (segment k of
microbatches 0..n-1, then segment k+1), over all layers. It is exact for that schedule, vectorized over
the operating points; the layer period is its steady state. Prefill simulates every layer; decode
simulates each point until its schedule is periodic and extrapolates exactly (``_periodic_stage``).

The coarse composition (``stage_time``, kept as the "ideal" period: prefill's ``ideal_overlap_batch_s``,
decode's ``ideal_period_s``) assumes each stream can run its microbatches back to back:

    period = max(n*a, n*m, a + m, n * hbm_s)

(n = 1: a + m, fully serial; n = 2 with a = m: 2a, fully hidden). With two segments per layer (split
cores) the list schedule's steady state is exactly that; with more, a segment that waits behind a short
segment of the other stream makes the list schedule slower (segments [A=2][M=1][A=1][M=2], n = 2:
coarse max(2*3, 2*3, 3+3) = 6; list schedule: layer 1 ends at 9, then one layer every 7, because mb0's
A=1 waits behind mb1's A=2 and mb0's M=2 behind it; tests/test_step.py). ``hbm_s`` is the HBM time
of all ops of one microbatch: concurrent streams share the die's bandwidth, so both compositions are
floored at n * hbm_s per layer (the list schedule: each stage at count * n * hbm_s). Bounds: the lower
uses every op's speed-of-light time (peak compute, full bandwidth, no fixed costs); the upper runs every
op's ceilings back to back with no overlap at all.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from .comm import DomainDedupOp, allreduce_time, ep_collective_time, plane_collective_time
from .graph import Array, Op, Stage
from .roofline import OpTime, compute_op_time, compute_rate, first_max_index, op_totals
from .specs import System


def binding_names(policy: str) -> tuple[str, str, str, str]:
    """Names of the four binding verdicts under ``policy`` (stream A, stream M, serial, HBM): of
    StageTime.binding (coarse period) and of ``schedule_binding`` (list schedule)."""
    a, m = (
        ("attention stream", "MoE stream") if policy == "split-cores" else ("compute stream", "comm stream")
    )
    return (a, m, "serial A+M", "shared HBM")


@dataclass(frozen=True)
class StageTime:
    """Timing of one stage. ``op_times`` parallels ``stage.ops``; built with ``keep_ops=False`` it holds
    only the collectives' OpTime (None for the compute ops) and ``binding`` is None: the arrays a step
    sums are all there, the per-op breakdown is not."""

    stage: Stage
    op_times: tuple[OpTime | None, ...]
    a_s: np.ndarray  # stream A per microbatch
    m_s: np.ndarray  # stream M per microbatch
    period_s: np.ndarray  # coarse ("ideal") period of one repetition (layer), all microbatches
    lower_s: np.ndarray
    upper_s: np.ndarray
    binding: np.ndarray | None  # coarse verdict: 0: stream A, 1: stream M, 2: A + M serial, 3: shared HBM
    hbm_s: float | np.ndarray  # HBM time of all ops of one microbatch (the shared-HBM floor is n * hbm_s)
    runs: tuple[tuple[bool, np.ndarray], ...] = ()  # (in_m, time): maximal runs of one stream, in op order


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
    if op.collective == "allreduce":  # attention / dense TP (cmperf.graph.tp_allreduce_ops)
        return allreduce_time(system, plane, op.comm_bytes, op.ep_size)
    return plane_collective_time(system, plane, op.comm_bytes, op.ep_size)


def _in_a(op: Op, policy: str) -> bool:
    return op.stream == "attn" if policy == "split-cores" else op.kind != "comm"


class _Sum:
    """A running sum ``((x1 + x2) + x3) + ...`` (the bits of summing in that order) that adds in place once
    it holds an array of its own of the result's shape: one pass per term, no temporary."""

    __slots__ = ("owned", "value")

    def __init__(self, first=0.0):
        self.value, self.owned = first, False  # ``first`` is not ours: never written in place

    def add(self, x) -> None:
        v = self.value
        if self.owned and (np.shape(x) == v.shape or np.broadcast_shapes(v.shape, np.shape(x)) == v.shape):
            v += x
        else:
            self.value = v + x
            self.owned = isinstance(self.value, np.ndarray)


def stage_time(
    stage: Stage,
    system: System,
    microbatches,
    policy: str,
    attn_cube_share,
    phase: str = "decode",
    compute_share: float = 1.0,
    keep_ops: bool = True,
    memo: dict | None = None,
) -> StageTime:
    """``attn_cube_share``: float or array (broadcasts with the ops' arrays and ``microbatches``), the
    split-cores attention share; ``compute_share``: compute-comm's compute-stream share when n > 1
    (module docstring); ``phase`` picks the EP kernels (``op_time``). ``keep_ops=False``: only what a
    step sums (``roofline.op_totals`` per compute op, no per-op breakdown; the same bits).

    ``memo``: a dict shared by the stages of one step (``step_time``) with the same arguments: an op
    object that several stages hold (decode's attention block in the dense and the MoE layers) is timed
    once. Its arrays are only read (the sums below copy before adding in place)."""
    n = np.asarray(microbatches, dtype=float)
    if not stage.overlapped:
        n = np.ones_like(n)
    split = (n > 1) & (policy == "split-cores")
    # the cube-core share of each stream's ops (every op of a stream has the same)
    share_a: Any = np.where(split, attn_cube_share, 1.0)
    if policy == "compute-comm" and compute_share != 1.0:
        share_a = np.where(n > 1, compute_share, share_a)
    share_m = np.where(split, 1.0 - attn_cube_share, 1.0)
    chip = system.chip
    if memo is None:
        memo = {}
    # compute_rate per (stream, kind, dtype): one array per stage, not one per op
    rates: dict = memo.setdefault(("rates", stage.overlapped), {})
    in_a_ops = [_in_a(op, policy) for op in stage.ops]
    n_runs = {True: 0, False: 0}  # runs per stream: a stream of one run sums to that run (same bits)
    for i, in_a in enumerate(in_a_ops):
        if i == 0 or in_a_ops[i - 1] != in_a:
            n_runs[in_a] += 1
    times: list[OpTime | None] = []
    sums = {k: _Sum() for k in ("a", "m", "hbm", "lo_a", "lo_m", "serial")}
    runs: list[tuple[bool, _Sum]] = []
    for op, in_a in zip(stage.ops, in_a_ops, strict=True):
        share = share_a if in_a else share_m
        op_key = (id(op), in_a, stage.overlapped)  # ops stay alive (in the stages) while memo is used
        if keep_ops or op.kind == "comm":
            t = memo.get(op_key)
            if t is None:
                t = memo[op_key] = op_time(op, system, share, phase)
            times.append(t)
            time_s, ideal_s, serial_s, memory_s = t.time_s, t.ideal_s, t.serial_s, t.memory_s
        else:
            times.append(None)
            totals = memo.get(op_key)
            if totals is None:
                key = (in_a, op.kind, op.dtype)
                if op.kind != "vector" and key not in rates:
                    rates[key] = compute_rate(chip, op.kind, op.dtype, share)
                totals = memo[op_key] = op_totals(op, chip, rates.get(key))
            time_s, ideal_s, serial_s, memory_s = totals
        sums["hbm"].add(memory_s)
        sums["serial"].add(serial_s)
        if n_runs[in_a] > 1:
            sums["a" if in_a else "m"].add(time_s)
        sums["lo_a" if in_a else "lo_m"].add(ideal_s)
        if runs and runs[-1][0] == (not in_a):
            runs[-1][1].add(time_s)
        else:
            runs.append((not in_a, _Sum(time_s)))
    for in_m, r in runs:  # a stream of one run: its sum is the run's (0.0 + t1 is t1)
        if n_runs[not in_m] == 1:
            sums["m" if in_m else "a"] = r
    a, m, hbm, lo_a, lo_m, serial = (sums[k].value for k in ("a", "m", "hbm", "lo_a", "lo_m", "serial"))
    if keep_ops:  # the breakdown's arrays broadcast over the stage's points
        a, m = np.asarray(a + 0 * n), np.asarray(m + 0 * n)
    else:
        a, m = np.asarray(a), np.asarray(m)
    na, nm, ab, nh = n * a, n * m, a + m, n * hbm
    period = np.maximum(np.maximum(na, nm), np.maximum(ab, nh))
    binding = first_max_index(na, nm, ab, nh) if keep_ops else None
    lower = np.maximum(n * lo_a, n * lo_m)
    upper = n * serial + 0 * period if keep_ops else n * serial
    return StageTime(
        stage,
        tuple(times),
        a,
        m,
        period,
        lower,
        upper,
        binding,
        hbm,
        tuple((in_m, r.value) for in_m, r in runs),
    )


def step_time(
    stages: list[Stage],
    system: System,
    microbatches,
    policy: str,
    attn_cube_share,
    phase: str = "decode",
    compute_share: float = 1.0,
    keep_ops: bool = True,
):
    """(list of StageTime, step_s, lower_s, upper_s) with the coarse composition: step = sum over stages of
    count * period (the "ideal" step; ``compose`` is the list schedule)."""
    memo: dict = {}  # per call: an op shared by several stages is timed once
    sts = [
        stage_time(s, system, microbatches, policy, attn_cube_share, phase, compute_share, keep_ops, memo)
        for s in stages
    ]
    step = sum(s.stage.count * s.period_s for s in sts)
    lower = sum(s.stage.count * s.lower_s for s in sts)
    upper = sum(s.stage.count * s.upper_s for s in sts)
    return sts, step, lower, upper


# ------------------------------------------------------------------------------------- list schedule


def segments(st: StageTime, policy: str, rotate: bool = False) -> list[list]:
    """One layer of ``st`` as [[in_m, per-microbatch time]]: consecutive ops of one stream merged, in layer
    order (``StageTime.runs``). Stream membership as ``stage_time``: split-cores: A = ops with op.stream ==
    "attn", M = the rest (CM384 decode: [A][M]); compute-comm: A = non-comm ops, M = comm ops (GPU decode:
    [attention + gate] [dispatch][experts][combine][residual]; prefill: 9 segments, module docstring).

    ``rotate``: when the layer ends on the stream it starts on, its trailing run moves to the front, so
    layers are cut where the stream changes (GPU decode: [residual + attention + gate][dispatch][experts]
    [combine]). Over a stage that is the merge of the trailing segment of layer l with the leading one of
    layer l+1, one segment per microbatch as a two-batch-overlap runtime runs them (no stream switch in
    between), not two list-scheduled segments; the only change is where the first layer's residual sits.
    """
    del policy  # the runs were cut by stage_time under the same policy
    segs: list[list] = [[in_m, t] for in_m, t in st.runs]
    if rotate and len(segs) > 2 and segs[0][0] == segs[-1][0]:
        last = segs.pop()
        segs[0] = [last[0], last[1] + segs[0][1]]
    return segs


def _shape(layers, n) -> tuple[int, ...]:
    arrays = [np.shape(n)]
    for _, segs, count in layers:
        arrays.append(np.shape(count))
        arrays.extend(np.shape(d) for _, d in segs)
    return np.broadcast_shapes(*arrays)


def _layer(segs, done: list, free: dict) -> None:
    """One layer of the list schedule, updating ``done`` (end of each microbatch's latest segment) and
    ``free`` (each stream's free time) in place: their arrays must be distinct and not shared. ``segs``:
    [(in_m, [duration of microbatch j])]; a point's microbatches j >= n have duration 0: they start at
    their stream's free time (never later: they follow microbatch n-1, whose previous segment they ended
    with) and end there, so they change nothing."""
    for in_m, durs in segs:
        f = free[in_m]
        for x, dur in zip(done, durs, strict=True):
            np.maximum(f, x, out=x)  # start
            x += dur  # end
            f = x
        np.copyto(free[in_m], f)


def _latest(done: list) -> np.ndarray:
    """Latest microbatch end (a new array)."""
    return functools.reduce(np.maximum, done) if len(done) > 1 else done[0].copy()


#: Stages of fewer layers are simulated layer by layer even with ``extrapolate`` (checking costs more).
EXTRAPOLATE_MIN_LAYERS = 8

#: A stage's schedule is periodic at a point once every state time moved by the same amount over one
#: layer, to within this fraction of the elapsed time (float noise is ~1e-16; a transient this close to
#: periodic misplaces the makespan by at most layers * 1e-12 of it).
PERIODIC_RTOL = 1e-12


def _periodic_stage(segs, done: list, free: dict, count: int):
    """``count`` layers of one stage, each point simulated until its schedule is periodic, then extrapolated.

    The list schedule is max-plus linear in the state x = (microbatch ends, stream free times): one layer
    maps x to A (x) x, and A (x) (x + p) = A (x) x + p. So once one layer moved every state time by the same
    p, every later layer does too, and the remaining (count - i) layers add (count - i) * p to each: the
    extrapolation is exact. A point that is not periodic yet (a backlog from the previous stage that the
    slower stream works off, e.g. the 3 dense layers' M stream before MoE layers whose A stream binds) is
    simulated further; working arrays shrink to those points. Checked from the second layer on (the first
    carries the previous stage's state). Returns (done, free, period) with the period = p (periodic points)
    or the growth of the latest microbatch end over the last layer (the others)."""
    nd = len(done)  # state rows: microbatch ends 0..nd-1, then the free times of streams A (False), M (True)
    used = sorted({in_m for in_m, _ in segs})
    rows = list(range(nd)) + [nd + int(k) for k in used]  # the rows a layer moves
    other = np.array([nd + int(k) for k in (False, True) if k not in used], dtype=np.intp)
    rows_ix = slice(None) if not other.size else rows  # (every row: a view, no gather)
    state = np.stack([*done, free[False], free[True]])  # one array: one copy / difference per layer

    def views(x):  # the state as _layer's (done list, free dict): row views, updated in place
        return list(x[:nd]), {False: x[nd], True: x[nd + 1]}

    out = np.empty(0)  # the extrapolated state, set at the first check (before idx)
    period = np.empty(0)
    idx = None  # flat indices of the points still simulated (None: all)
    w_segs = segs
    last = None
    for i in range(1, count + 1):
        check = 1 < i < count
        if check:
            before = state.copy()
        if i == count:
            last = state[:nd].max(axis=0)
        _layer(w_segs, *views(state))
        if not check:
            continue
        moved = state[rows_ix] - before[rows_ix]
        hi, lo = moved.max(axis=0), moved.min(axis=0)  # max / min are exact: any order, the same bits
        ok = hi - lo <= PERIODIC_RTOL * state[:nd].max(axis=0)
        if idx is None:  # first check: every point's extrapolation (the rest are overwritten later)
            out = state + (count - i) * hi
            out[other] = state[other]
            period = hi
            keep = np.flatnonzero(~ok)
            idx = keep
        else:
            sel = np.flatnonzero(ok)
            if not sel.size:
                continue
            g = idx[sel]
            out[:, g] = state[:, sel] + (count - i) * hi[sel]
            if other.size:
                out[np.ix_(other, g)] = state[other][:, sel]
            period[g] = hi[sel]
            keep = np.flatnonzero(~ok)
            idx = idx[keep]
        if not idx.size:
            return (*views(out), period)
        if keep.size < ok.size:
            w_segs = [(in_m, [d[keep] for d in durs]) for in_m, durs in w_segs]
            state = state[:, keep]
    if idx is None:  # count == 2: nothing checked
        return (*views(state), state[:nd].max(axis=0) - last)
    out[:, idx] = state
    period[idx] = state[:nd].max(axis=0) - last
    return (*views(out), period)


def pipeline_s(
    layers: list[tuple[str, list, int | Array]],
    n,
    shape=None,
    extrapolate: bool = False,
    floors: dict | None = None,
):
    """List schedule of n microbatches over two streams (A, M), all layers in order.

    ``layers``: [(stage name, segments [[in_m, duration]], count)], count an int or an array (per point,
    e.g. 0 or 1 MTP layers). Segment k of microbatch j starts at max(its stream's free time, end of
    segment k-1 of microbatch j); each stream serves segment k for microbatches 0..n-1, then segment k+1.
    Returns (makespan_s, steady-state period per stage name): the period is the growth of the latest
    microbatch end over the stage's last layer (a one-layer stage: over that layer). n = 1 gives the
    serial sum; equal compute and comm segments with n = 2 give 2*max per layer. Worked case: segments
    [A=1, C=1] x 1 layer, n = 2 -> 3 (fill + drain).

    ``extrapolate``: a stage of an int count > 1 runs each point only until its schedule is periodic, then
    adds the rest exactly (``_periodic_stage``: fill + (count - k) * period + drain); False simulates every
    layer (prefill). Per-point arithmetic either way: an array of points equals the points one by one.

    ``floors``: {stage name: minimum time from the previous stage's end to this stage's end} (``compose``:
    the shared-HBM floor count * n * hbm_s); where a stage ends earlier, every state time moves later by
    the difference (a uniform delay: the schedule after it is the same, later).
    """
    if shape is None:
        shape = np.broadcast_shapes(_shape(layers, n), *(np.shape(f) for f in (floors or {}).values()))
    size = int(np.prod(shape))

    def flat(x):
        return np.broadcast_to(np.asarray(x, dtype=float), shape).reshape(-1)

    nf = flat(n)
    nmax, nmin = (int(nf.max()), int(nf.min())) if size else (1, 1)
    done = [np.zeros(size) for _ in range(nmax)]  # updated in place by _layer
    free = {False: np.zeros(size), True: np.zeros(size)}
    stage_end, periods = np.zeros(size), {}
    # microbatch j of a point with n <= j has durations 0: np.where(j < n, d, 0.0) as a bit mask (all ones
    # or 0, and +0.0 is the all-zero bit pattern: the same bits, without np.where's per-element branch)
    pad = {j: -(j < nf).astype(np.int64) for j in range(nmin, nmax)}
    for name, segs, count in layers:
        fsegs = []
        for in_m, d in segs:  # per microbatch; 0 for a point's microbatches j >= n (``_layer``)
            d = np.ascontiguousarray(flat(d))
            bits = d.view(np.int64)
            fsegs.append((in_m, [d if j < nmin else (bits & pad[j]).view(float) for j in range(nmax)]))
        start = stage_end
        if np.ndim(count):  # per-point layer counts: run max(count) layers, keep the state where i < count
            c = flat(count)
            for i in range(int(c.max()) if size else 0):
                on = i < c
                d0, f0 = [x.copy() for x in done], {k: x.copy() for k, x in free.items()}
                _layer(fsegs, done, free)
                done = [np.where(on, x, y) for x, y in zip(done, d0, strict=True)]
                free = {k: np.where(on, free[k], f0[k]) for k in free}
            stage_end = _latest(done)
            periods[name] = stage_end - start
        else:
            count = int(count)
            if count == 0:
                periods[name] = np.zeros(size)
                continue
            if extrapolate and count >= EXTRAPOLATE_MIN_LAYERS and size:
                done, free, periods[name] = _periodic_stage(fsegs, done, free, count)
                stage_end = _latest(done)
            else:
                before = start
                for i in range(count):
                    if i == count - 1 and count > 1:
                        before = _latest(done)
                    _layer(fsegs, done, free)
                stage_end = _latest(done)
                periods[name] = stage_end - before
        if floors is not None and name in floors:
            late = np.maximum(start + flat(floors[name]) - stage_end, 0.0)
            if late.any():  # (+ 0.0 where the floor does not bind: the same bits as skipping it)
                for x in (*done, *free.values(), stage_end):
                    x += late
    return stage_end.reshape(shape), {k: v.reshape(shape) for k, v in periods.items()}


def compose(
    sts: list[StageTime], microbatches, policy: str, *, rotate: bool = False, extrapolate=False, layers=None
):
    """(makespan_s, {stage name: steady-state period_s}) of the overlapped stages ``sts`` run in order.

    The list schedule (``pipeline_s``) over ``segments(st, policy, rotate)`` (or the given ``layers`` of
    (name, segments, count), prefill's with its cache-load segment), floored by the shared HBM (module
    docstring): each stage takes at least count * n * hbm_s after the previous one ended (so the makespan
    is at least sum_stages count * n * hbm_s), each period is at least n * hbm_s.
    """
    n = np.asarray(microbatches, dtype=float)
    if layers is None:
        layers = [(st.stage.name, segments(st, policy, rotate), st.stage.count) for st in sts]
    floors = {st.stage.name: st.stage.count * n * st.hbm_s for st in sts}
    chain, periods = pipeline_s(layers, n, extrapolate=extrapolate, floors=floors)
    for st in sts:
        periods[st.stage.name] = np.maximum(periods[st.stage.name], n * st.hbm_s)
    return chain, periods


def _critical_path_s(segs, n: int, layers: int = 12) -> dict[bool, float]:
    """Seconds of each stream (key in_m) on the critical path of the steady-state layers of ``segs`` run
    alone for ``layers`` layers (scalar). The path is traced back from the last end through each segment's
    later predecessor (its stream's previous segment on ties); it has no idle time, so per layer its
    seconds sum to the period. Counted over layers layers//2 .. layers-2 (past the fill, before the drain).
    """
    done = [(0.0, -1)] * n
    free = {False: (0.0, -1), True: (0.0, -1)}
    nodes = []  # (layer, in_m, duration, predecessor node)
    for layer in range(layers):
        for in_m, dur in segs:
            for j in range(n):
                (f_end, f_node), (d_end, d_node) = free[in_m], done[j]
                nodes.append((layer, in_m, dur, f_node if f_end >= d_end else d_node))
                done[j] = free[in_m] = (max(f_end, d_end) + dur, len(nodes) - 1)
    on_path = {False: 0.0, True: 0.0}
    node = max(done)[1]
    while node >= 0:
        layer, in_m, dur, node = nodes[node]
        if layers // 2 <= layer < layers - 1:
            on_path[in_m] += dur
    return on_path


def schedule_binding(st: StageTime, policy: str, microbatches, period_s, rotate: bool = False) -> int:
    """Verdict on one point's list-schedule period (scalar; ``binding_names`` order): 3 "shared HBM" when
    the HBM floor n * hbm_s sets it, 2 "serial A+M" for n = 1 (no overlap), else the stream with more time
    on the steady-state critical path (``_critical_path_s``): with two segments per layer the busier
    stream (the coarse verdict); with more, the stream whose segments a stall still leaves on the path
    most (dgx-h800 decode with 200 Gb/s NICs: the comm stream, busy 95% of the period)."""

    def first(x):
        return float(np.asarray(x, dtype=float).reshape(-1)[0])

    n = int(first(microbatches)) if st.stage.overlapped else 1
    if n * first(st.hbm_s) >= first(period_s):
        return 3
    if n == 1:
        return 2
    on_path = _critical_path_s([(m, first(d)) for m, d in segments(st, policy, rotate)], n)
    return 0 if on_path[False] >= on_path[True] else 1
