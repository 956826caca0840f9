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

from dataclasses import dataclass
from typing import Any

import numpy as np

from .comm import DomainDedupOp, allreduce_time, ep_collective_time, plane_collective_time
from .graph import Array, Op, Stage
from .roofline import OpTime, Scratch, compute_op_time, compute_rate, first_max_index, op_totals
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
    plane = system.scaleup_plane()
    if op.collective == "allreduce":  # attention / dense TP (cmperf.graph.tp_allreduce_ops)
        return allreduce_time(system, plane, op.comm_bytes, op.ep_size)
    return plane_collective_time(system, plane, op.comm_bytes, op.ep_size, op.collective)


def _in_a(op: Op, policy: str) -> bool:
    return op.stream == "attn" if policy == "split-cores" else op.kind != "comm"


class _Sum:
    """A running sum ``((x1 + x2) + x3) + ...`` (the bits of summing in that order) that adds in place once
    it holds an array of its own of the result's shape: one pass per term, no temporary."""

    __slots__ = ("owned", "value")

    def __init__(self, first=0.0, owned: bool = False):
        self.value, self.owned = first, owned  # a ``first`` not ours is never written in place

    def add(self, x) -> None:
        v = self.value
        sx = getattr(x, "shape", ())
        if self.owned and (not sx or sx == v.shape or np.broadcast_shapes(v.shape, sx) == v.shape):
            v += x
        else:
            self.value = v + x
            self.owned = isinstance(self.value, np.ndarray)


def _zero_view(x) -> bool:
    """True for a read-only broadcast of one 0.0 (``comm._comm_optime``'s zero ceilings)."""
    return isinstance(x, np.ndarray) and x.size > 0 and not any(x.strides) and x.flat[0] == 0.0


class _StageSums:
    """The sums a stage keeps over its ops, in op order (``stage_time``): HBM time, serial time, ideal time
    per stream, each maximal run of one stream's ops (``runs``: [in_m, sum]) and, for a stream of several
    runs, its total over them. A stream's total is summed from 0.0 over its ops in order; over its first
    run that is 0.0 + the run's sum, bit for bit (starting from 0.0 rather than from the first term only
    turns a -0.0 into 0.0, and so does 0.0 + the run's sum), so it starts at the stream's second run."""

    __slots__ = ("hbm", "lo", "runs", "serial", "times", "total")

    def __init__(self) -> None:
        self.hbm, self.serial = _Sum(), _Sum()
        self.lo = {True: _Sum(), False: _Sum()}  # keyed by in_a
        self.total: dict[bool, _Sum | None] = {True: None, False: None}
        self.runs: list[tuple[bool, _Sum]] = []
        self.times: list[OpTime | None] = []

    def add(self, in_a: bool, time_s, ideal_s, serial_s, memory_s, scratch: bool) -> None:
        """Add one op's times (``scratch``: they live in work buffers, so a new run copies its first)."""
        if not _zero_view(memory_s):  # (a collective's memory_s: x + 0.0 is x, no pass for it)
            self.hbm.add(memory_s)
        self.serial.add(serial_s)
        self.lo[in_a].add(ideal_s)
        in_m = not in_a
        if self.runs and self.runs[-1][0] == in_m:
            self.runs[-1][1].add(time_s)
        else:  # a new run
            first_run = next((r for m, r in self.runs if m == in_m), None)
            if first_run is not None and self.total[in_a] is None:  # the stream's second run
                started = self.total[in_a] = _Sum()
                started.add(first_run.value)  # 0.0 + its first run: its total so far
            first = np.copy(time_s) if scratch and np.ndim(time_s) else time_s
            self.runs.append((in_m, _Sum(first, owned=first is not time_s)))
        total = self.total[in_a]
        if total is not None:
            total.add(time_s)

    def stream(self, in_a: bool):
        """The stream's sum over its ops: its total, its one run, or 0.0 (no op)."""
        total = self.total[in_a]
        if total is not None:
            return total.value
        return next((r.value for m, r in self.runs if m == (not in_a)), 0.0)

    def snapshot(self) -> _StageSums:
        """A copy that shares the arrays: from now on neither writes them in place."""
        out = _StageSums()
        for s in (self.hbm, self.serial, *self.lo.values(), *self.total.values(), *(r for _, r in self.runs)):
            if s is not None:
                s.owned = False
        out.hbm, out.serial = _Sum(self.hbm.value), _Sum(self.serial.value)
        out.lo = {k: _Sum(v.value) for k, v in self.lo.items()}
        out.total = {k: None if v is None else _Sum(v.value) for k, v in self.total.items()}
        out.runs = [(m, _Sum(r.value)) for m, r in self.runs]
        out.times = list(self.times)
        return out


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
    shared_prefix: int = 0,
) -> StageTime:
    """``attn_cube_share``: float or array (broadcasts with the ops' arrays and ``microbatches``), the
    split-cores attention share; ``compute_share``: compute-comm's compute-stream share when n > 1
    (module docstring); ``phase`` picks the EP kernels (``op_time``). ``keep_ops=False``: only what a
    step sums (``roofline.op_totals`` per compute op, into work buffers; no per-op breakdown; the same
    bits). Per stream: a = sum of its ops' time_s; hbm = sum of memory_s, serial = sum of serial_s, lower
    = sum of ideal_s; then the coarse period = max(n*a, n*m, a + m, n*hbm) (module docstring).

    ``memo``: a dict shared by the stages of one step (``step_time``) with the same arguments: an op
    object that several stages hold (decode's attention block in the dense and the MoE layers) is timed
    once (its arrays are only read: the sums copy before adding in place), and, with ``keep_ops=False``,
    the sums over a stage's first ``shared_prefix`` ops, which another stage of the step starts with too
    (the same op objects), are computed once."""
    n = np.asarray(microbatches, dtype=float)
    if not stage.overlapped:
        n = np.ones_like(n)
    if memo is None:
        memo = {}
    shares = memo.get(("shares", stage.overlapped))
    if shares is None:  # the cube-core share of each stream's ops (every op of a stream has the same)
        split = (n > 1) & (policy == "split-cores")
        share_a: Any = np.where(split, attn_cube_share, 1.0)
        if policy == "compute-comm" and compute_share != 1.0:
            share_a = np.where(n > 1, compute_share, share_a)
        shares = memo[("shares", stage.overlapped)] = {
            True: share_a,
            False: np.where(split, 1.0 - attn_cube_share, 1.0),
        }
    chip = system.chip
    # compute_rate per (stream, kind, dtype): one array per stage, not one per op
    rates: dict = memo.setdefault(("rates", stage.overlapped), {})
    scratch = memo.setdefault("scratch", Scratch()) if not keep_ops else None
    ops = stage.ops
    prefix_key = (
        (stage.overlapped, tuple(id(op) for op in ops[:shared_prefix]))
        if shared_prefix and not keep_ops
        else None
    )
    sums = memo.get(prefix_key) if prefix_key else None
    start = 0
    if sums is not None:
        sums, start = sums.snapshot(), shared_prefix
    else:
        sums = _StageSums()
    for k in range(start, len(ops)):
        op = ops[k]
        in_a = _in_a(op, policy)
        share = shares[in_a]
        op_key = (id(op), in_a, stage.overlapped)  # ops stay alive (in the stages) while memo is used
        if keep_ops or op.kind == "comm":
            t = memo.get(op_key)
            if t is None:
                t = memo.get(("given", id(op)))  # (timed by the caller: ``step_time``'s ``op_times``)
                t = memo[op_key] = op_time(op, system, share, phase) if t is None else t
            sums.times.append(t)
            sums.add(in_a, t.time_s, t.ideal_s, t.serial_s, t.memory_s, scratch=False)
        else:
            sums.times.append(None)
            key = (in_a, op.kind, op.dtype)
            if op.kind != "vector" and key not in rates:
                rates[key] = compute_rate(chip, op.kind, op.dtype, share)
            sums.add(in_a, *op_totals(op, chip, rates.get(key), scratch), scratch=True)
        if prefix_key and k + 1 == shared_prefix:
            memo[prefix_key] = sums.snapshot()
    a, m = sums.stream(True), sums.stream(False)
    hbm, lo_a, lo_m, serial = sums.hbm.value, sums.lo[True].value, sums.lo[False].value, sums.serial.value
    if keep_ops:  # the breakdown's arrays broadcast over the stage's points
        a, m = np.asarray(a + 0 * n), np.asarray(m + 0 * n)
        na, nm, ab, nh = n * a, n * m, a + m, n * hbm
        period = np.maximum(np.maximum(na, nm), np.maximum(ab, nh))
        binding = first_max_index(na, nm, ab, nh)
        upper = n * serial + 0 * period
    else:
        a, m = np.asarray(a), np.asarray(m)
        period = _coarse_period(n, a, m, hbm)
        binding = None
        upper = n * serial
    lower = np.maximum(n * lo_a, n * lo_m)
    return StageTime(
        stage,
        tuple(sums.times),
        a,
        m,
        period,
        lower,
        upper,
        binding,
        hbm,
        tuple((in_m, r.value) for in_m, r in sums.runs),
    )


def _coarse_period(n, a, m, hbm) -> np.ndarray:
    """max(n*a, n*m, a + m, n*hbm) in two result-sized arrays."""
    shape = np.broadcast_shapes(np.shape(n), np.shape(a), np.shape(m), np.shape(hbm))
    if not shape:
        return np.maximum(np.maximum(n * a, n * m), np.maximum(a + m, n * hbm))
    p, q = np.empty(shape), np.empty(shape)
    # n * a at its own shape (the attention stream's sum spans fewer axes than the MoE stream's); max is
    # exact, so the order of the four terms changes no bit
    np.maximum(n * a, np.multiply(n, m, out=p), out=p)
    np.maximum(p, np.add(a, m, out=q), out=p)
    return np.maximum(p, np.multiply(n, hbm, out=q), out=p)


def _shared_prefixes(stages: list[Stage]) -> list[int]:
    """Per stage, the most leading ops (the same objects, in order) it shares with another stage of the
    same overlap (decode: the dense and the MoE layers' attention block)."""
    out = []
    for s in stages:
        best = 0
        for t in stages:
            if t is s or t.overlapped != s.overlapped:
                continue
            k = 0
            for x, y in zip(s.ops, t.ops, strict=False):
                if x is not y:
                    break
                k += 1
            best = max(best, k)
        out.append(best)
    return out


def step_time(
    stages: list[Stage],
    system: System,
    microbatches,
    policy: str,
    attn_cube_share,
    phase: str = "decode",
    compute_share: float = 1.0,
    keep_ops: bool = True,
    op_times: dict | None = None,
):
    """(list of StageTime, step_s, lower_s, upper_s) with the coarse composition: step = sum over stages of
    count * period (the "ideal" step; ``compose`` is the list schedule). ``op_times``: {id(op): OpTime}
    the caller computed for some collectives of ``stages`` (``op_time``'s numbers: decode times the expert
    side's once per distinct microbatch count, cmperf.decode.CountFold)."""
    memo: dict = {}  # per call: an op (or a run of ops) shared by several stages is timed once
    for key, t in (op_times or {}).items():
        memo[("given", key)] = t
    sts = [
        stage_time(s, system, microbatches, policy, attn_cube_share, phase, compute_share, keep_ops, memo, k)
        for s, k in zip(stages, _shared_prefixes(stages), strict=True)
    ]
    return sts, _count_sum(sts, "period_s"), _count_sum(sts, "lower_s"), _count_sum(sts, "upper_s")


def _count_sum(sts: list[StageTime], name: str):
    """sum(st.stage.count * st.<name> for st in sts), the same sum in place once it holds an array of its
    own, and no product for a count of 1 (x * 1 is x)."""
    total = _Sum()
    for st in sts:
        x, count = getattr(st, name), st.stage.count
        total.add(x if np.ndim(count) == 0 and count == 1 else count * x)
    return total.value


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


def _layer(segs, x: np.ndarray, nd: int) -> None:
    """One layer of the list schedule on the state ``x``, updated in place: rows 0..nd-1 hold the end of
    each microbatch's latest segment, row nd + in_m stream in_m's free time, one column per point. For each
    segment (in order) and each microbatch j (in order):

        start = max(free[in_m], done[j]),  done[j] = start + duration[j],  free[in_m] = done[j]

    ``segs``: [(in_m, [duration of microbatch j])]; a point's microbatches j >= n have duration 0: they
    start at their stream's free time (never later: they follow microbatch n-1, whose previous segment
    they ended with) and end there, so they change nothing."""
    done = [x[j, ...] for j in range(nd)]  # row views (0-d arrays for one point)
    for in_m, durs in segs:
        f = x[nd + int(in_m), ...]
        for d, dur in zip(done, durs, strict=True):
            np.maximum(f, d, out=d)  # start
            d += dur  # end
            f = d
        x[nd + int(in_m)] = f


def _take(durs: list, keep: np.ndarray, shape: tuple[int, ...] | None = None) -> list:
    """``[d[keep] for d in durs]`` (each array that several microbatches share gathered once). ``shape``:
    the durations broadcast to it and ``keep`` indexes its flattened points (else they are flat)."""
    taken: dict[int, np.ndarray] = {}
    for d in durs:
        if id(d) not in taken:  # (a broadcast array: flattened by a copy, faster than a 5-index gather)
            taken[id(d)] = (d if shape is None else np.broadcast_to(d, shape).reshape(-1))[keep]
    return [taken[id(d)] for d in durs]


#: Stages of fewer layers are simulated layer by layer even with ``extrapolate`` (checking costs more).
EXTRAPOLATE_MIN_LAYERS = 8

#: A stage's schedule is periodic at a point once every state time moved by the same amount over one
#: layer, to within this fraction of the elapsed time (float noise is ~1e-16; a transient this close to
#: periodic misplaces the makespan by at most layers * 1e-12 of it).
PERIODIC_RTOL = 1e-12

#: Points still simulated after the first check run in rounds of about this many point-layers (at least
#: one layer per round): a few points run many layers between two checks, many points one.
ROUND_POINT_LAYERS = 8192


def _periodic_check(before: np.ndarray, after: np.ndarray, rows, nd: int):
    """(ok, p) of layers that took each point from the state ``before`` to ``after`` (arrays of k states,
    shape (k, rows, points)): p = the largest move of a state time over the layer, ok = every moved time
    (``rows``) moved by p to within PERIODIC_RTOL of the latest microbatch end after it."""
    moved = after[:, rows] - before[:, rows]
    hi, lo = moved.max(axis=1), moved.min(axis=1)  # max / min are exact: any order, the same bits
    return hi - lo <= PERIODIC_RTOL * after[:, :nd].max(axis=1), hi


def _periodic_stage(segs, x: np.ndarray, nd: int, count: int) -> np.ndarray:
    """``count`` (>= 3) layers of one stage on the state ``x`` (``_layer``, updated in place), each point
    simulated until its schedule is periodic, then extrapolated; returns the period per point (flat).

    The list schedule is max-plus linear in the state x = (microbatch ends, stream free times): one layer
    maps x to A (x) x, and A (x) (x + p) = A (x) x + p. So once one layer i moved every state time by the
    same p, every later layer does too, and the remaining (count - i) layers add (count - i) * p to each:
    the extrapolation is exact. A point that is not periodic yet (a backlog from the previous stage that
    the slower stream works off, e.g. the 3 dense layers' M stream before MoE layers whose A stream binds)
    is simulated further. Checked from the second layer on (the first carries the previous stage's state),
    never on the last. The period is p (periodic points) or the growth of the latest microbatch end over
    the last layer (the others).

    Work: layers 1 and 2 run on every point in place, checked once; the points not periodic yet then run
    on working copies in rounds of k layers (k * points ~ ROUND_POINT_LAYERS) that keep every state of
    the round and check its layers together: a point periodic first at layer i of a round is extrapolated
    from its state after layer i, as a check after every layer would (its later layers in the round are
    dropped; the arithmetic is per point, so they change no other point)."""
    used = sorted({bool(in_m) for in_m, _ in segs})
    other = [nd + int(k) for k in (False, True) if k not in used]  # a stream the stage leaves alone
    rows: Any = [*range(nd), *(nd + int(k) for k in used)] if other else slice(None)  # the rows that move
    shape = x.shape[1:]
    xf = x.reshape(len(x), -1)  # the points flat (a view)
    _layer(segs, x, nd)
    moved = xf.copy()  # the state before layer 2, then (in place) each time's move over layer 2
    _layer(segs, x, nd)
    moved = np.subtract(xf, moved, out=moved)[rows]
    hi, spread = moved.max(axis=0), moved.min(axis=0)  # (as _periodic_check, without temporaries)
    del moved
    spread = np.subtract(hi, spread, out=spread)
    latest = xf[:nd].max(axis=0)
    ok = spread <= np.multiply(PERIODIC_RTOL, latest, out=latest)
    del latest
    period = hi
    idx = np.flatnonzero(~ok)  # points still simulated
    w = np.take(xf, idx, axis=1)  # (= xf[:, idx]: the same copy, faster than fancy indexing)
    xf[rows] += (count - 2) * hi  # every point's extrapolation (the others' are overwritten below)
    w_segs = [(in_m, _take(durs, idx, shape)) for in_m, durs in segs]
    i = 2  # layers run
    while idx.size:
        m = idx.size
        k = min(count - i, max(1, ROUND_POINT_LAYERS // m))
        states = np.empty((k + 1, *w.shape))  # the states of the round: before its first layer, after each
        states[0] = w
        for j in range(k):
            states[j + 1] = states[j]
            _layer(w_segs, states[j + 1], nd)
        ok, hi = _periodic_check(states[:-1], states[1:], rows, nd)
        if i + k == count:
            ok[-1] = False  # the last layer is not checked
        periodic = ok.any(axis=0)  # the points periodic at some layer of the round
        sel = np.flatnonzero(periodic)
        if sel.size:
            g = idx[sel]
            if k == 1:  # one layer: each periodic point's first (the same picks, by a plain gather)
                first: Any = 0
                st, p = np.take(states[1], sel, axis=1), hi[0, sel]
            else:
                first = ok[:, sel].argmax(axis=0)  # each periodic point's first periodic layer in the round
                st = states[first + 1, :, sel].T  # (state rows, points) after layer i + 1 + first
                p = hi[first, sel]
            ext = st + (count - (i + 1 + first)) * p
            if other:
                ext[other] = st[other]
            xf[:, g] = ext
            period[g] = p
        i += k
        keep = np.flatnonzero(~periodic)
        if i == count:  # the points not periodic by the last layer: simulated to the end
            g = idx[keep]
            xf[:, g] = np.take(states[k], keep, axis=1)
            period[g] = states[k][:nd, keep].max(axis=0) - states[k - 1][:nd, keep].max(axis=0)
            break
        idx = idx[keep]
        if keep.size < m:
            w_segs = [(in_m, _take(durs, keep)) for in_m, durs in w_segs]
        w = np.take(states[k], keep, axis=1)
    return period


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
    segment k-1 of microbatch j); each stream serves segment k for microbatches 0..n-1, then segment k+1
    (``_layer``). Returns (makespan_s, steady-state period per stage name): the period is the growth of
    the latest microbatch end over the stage's last layer (a one-layer stage: over that layer). n = 1
    gives the serial sum; equal compute and comm segments with n = 2 give 2*max per layer. Worked case:
    segments [A=1, C=1] x 1 layer, n = 2 -> 3 (fill + drain).

    ``extrapolate``: a stage of an int count > 1 runs each point only until its schedule is periodic, then
    adds the rest exactly (``_periodic_stage``: fill + (count - k) * period + drain); False simulates every
    layer (prefill). Per-point arithmetic either way: an array of points equals the points one by one.
    The state lives at the broadcast shape of the inputs seen so far (an open mesh's first stages need
    not span the axes only later stages depend on), broadcast further when a stage needs it.

    ``floors``: {stage name: minimum time from the previous stage's end to this stage's end} (``compose``:
    the shared-HBM floor count * n * hbm_s); where a stage ends earlier, every state time moves later by
    the difference (a uniform delay: the schedule after it is the same, later).
    """
    if shape is None:
        shape = np.broadcast_shapes(_shape(layers, n), *(np.shape(f) for f in (floors or {}).values()))
    size = int(np.prod(shape))
    nf = np.asarray(n, dtype=float)
    nmax, nmin = (int(nf.max()), int(nf.min())) if size else (1, 1)
    cur = np.broadcast_shapes(nf.shape, (1,) * len(shape)) if size else shape  # the state's shape
    x = np.zeros((nmax + 2, *cur))  # the state (``_layer``): microbatch ends, free times of streams A, M
    stage_end, periods = np.zeros(cur), {}
    # microbatch j of a point with n <= j has durations 0: np.where(j < n, d, 0.0) as a bit mask (all ones
    # or 0, and +0.0 is the all-zero bit pattern: the same bits, without np.where's per-element branch)
    pad = {j: -(j < nf).astype(np.int64) for j in range(nmin, nmax)}
    for name, segs, count in layers:
        floor = np.asarray(floors[name], dtype=float) if floors is not None and name in floors else None
        psegs = []
        for in_m, d in segs:  # per microbatch; 0 for a point's microbatches j >= n (``_layer``)
            d = np.asarray(d, dtype=float)
            d = d if d.flags.c_contiguous else d.copy()  # (for the bit view)
            bits = d.view(np.int64)
            psegs.append((in_m, [d if j < nmin else (bits & pad[j]).view(float) for j in range(nmax)]))
        need = np.broadcast_shapes(
            cur,
            np.shape(count),
            np.shape(0.0 if floor is None else floor),
            *(np.shape(t) for _, ts in psegs for t in ts),
        )
        if need != cur:  # the state spans a new axis from this stage on
            x = np.broadcast_to(x, (nmax + 2, *need)).copy()
            stage_end = np.broadcast_to(stage_end, need).copy()
            cur = need
        start = stage_end
        if np.ndim(count):  # per-point layer counts: run max(count) layers, keep the state where i < count
            c = np.asarray(count, dtype=float)
            for i in range(int(c.max()) if size else 0):
                before = x.copy()
                _layer(psegs, x, nmax)
                np.copyto(x, before, where=~(i < c))
            stage_end = x[:nmax].max(axis=0)
            periods[name] = stage_end - start
        else:
            count = int(count)
            if count == 0:
                periods[name] = np.zeros(cur)
                continue
            if extrapolate and count >= EXTRAPOLATE_MIN_LAYERS and size:
                periods[name] = _periodic_stage(psegs, x, nmax, count).reshape(cur)
                stage_end = x[:nmax].max(axis=0)
            else:
                before = start
                for i in range(count):
                    if i == count - 1 and count > 1:
                        before = x[:nmax].max(axis=0)
                    _layer(psegs, x, nmax)
                stage_end = x[:nmax].max(axis=0)
                periods[name] = stage_end - before
        if floor is not None:
            late = np.maximum(start + floor - stage_end, 0.0)
            if late.any():  # (+ 0.0 where the floor does not bind: the same bits as skipping it)
                x += late
                stage_end += late

    def full(v):
        return v if v.shape == shape else np.broadcast_to(v, shape).copy()

    return full(stage_end), {k: full(v) for k, v in periods.items()}


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
