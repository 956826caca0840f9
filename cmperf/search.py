"""Deployment search: candidate spaces from the hardware and model, one vectorized evaluation per grid,
constraint masks with a counted reason for every rejected candidate, ranking, and Pareto frontiers.

Method (issue 5). A phase predictor (``decode.evaluate``, ``prefill.evaluate``) takes numpy arrays for
every knob and broadcasts, so a search is: build the axes, evaluate the open mesh in few calls, flatten,
apply masks in a fixed order, rank with ``np.lexsort`` (stable, total tie-break on every knob, so the
ranking and the JSON are deterministic). No Python loop runs over configurations.

Pruning (issue 18), exact: the result is the exhaustive search's (tests/test_fast_paths.py). Instance
sizes above the device total are never built; a size's batches above its HBM limit are not evaluated
(``hbm_batches``: one probe gives every limit, a witness batch proves the rest do not fit); the ranking
sorts the accepted rows only and the Pareto sort runs on the ``staircase`` candidates. A TPOT-SLO cut of
the batch axis is not made: the Pareto frontier and the closest list hold configurations above the SLO.

Search spaces, each derived from the system and model files, not typed in:

* instance size (devices): the sub-node powers of two below ``devices_per_node`` plus every whole number
  of nodes up to the system (CloudMatrix384: 1, 2, 4, 8, 16, ..., 384 = 51 sizes); EP = devices x
  ``ranks_per_device`` (all ranks of the instance, the paper's DP-attention + EP layout) and the size is
  dropped with reason ``placement invalid`` when ``deployment.place_experts`` cannot place routed +
  shared + redundant experts on it.
* batch per device: multiples of ``ranks_per_device`` (a whole number of sequences per rank) from
  ``ranks_per_device`` to the largest HBM limit ``max_batch_per_device`` of any instance size (one cheap
  evaluation at batch 1 finds it); points above their own limit are rejected as ``HBM fit``.
* microbatches 1, 2, 3; on ``split-cores`` systems the attention stream's cube cores run from
  ``cube_cores/12`` to ``cube_cores - cube_cores/12`` in steps of ``cube_cores/12`` (910C: 2, 4, ..., 22;
  the paper's 16 is one of them), only with more than one microbatch (one microbatch runs serially on
  all cores);
* MTP depth 0 .. ``num_mtp_modules``.

Objectives: decode tokens/s per device; prefill tokens/s per device (``prefill.evaluate``); serving
goodput per device and the fewest devices for a target request rate (``optimize``: ``sizing.size``, the
serving model's split, on the searched knobs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from . import decode, serving, sizing
from .deployment import (
    Deployment,
    attn_tp_reasons,
    kv_lengths,
    megatron_prefill,
    place_experts,
    search_attn_tp,
)
from .errors import CmperfError
from .graph import principal_stage
from .queueing import find_root
from .serving import DEFAULT_SLO_PERCENTILE
from .specs import Model, System

# Reasons in the order they are tested: a candidate is counted once, under the first it fails.
DECODE_REASONS = ("device total", "placement invalid", "HBM fit", "TPOT SLO")
PREFILL_REASONS = ("device total", "placement invalid", "HBM fit", "TTFT SLO")


# ---------------------------------------------------------------------------------------- spaces


def instance_sizes(system: System, max_devices: int | None = None) -> np.ndarray:
    """Candidate instance sizes in devices, at most ``max_devices``: powers of two below a node, then whole
    nodes (``sizing.unit_counts``: every count up to 64 nodes, then spaced by ~1/8 up to the top).

    CloudMatrix384 (8 NPUs per node, 384 NPUs): 1, 2, 4, 8, 16, ..., 384 -> 51 sizes.
    """
    node = max(int(system.devices_per_node), 1)
    top = int(system.num_devices if max_devices is None else min(max_devices, system.num_devices))
    sub = [2**i for i in range(int(math.log2(node)) + 1) if 2**i < node and 2**i <= top]
    sizes = [node * int(k) for k in sizing.unit_counts(top // node)] if top >= node else []
    return np.array(sub + sizes, dtype=float)


def tp_fits(system: System, model: Model, devices: np.ndarray, tp: int) -> np.ndarray:
    """Per instance size: attention TP ``tp`` is valid there (``deployment.attn_tp_reasons``, the rule
    ``Deployment.check`` applies: it divides the ranks and the heads, fits one scale-up domain, the
    attention kind has a TP form)."""
    if tp == 1:
        return np.ones(np.shape(devices), dtype=bool)
    out = []
    for n in devices:
        rec = Deployment(devices=int(n), attn_tp=tp)
        d = rec.resolve(system, model)
        out.append(not attn_tp_reasons(rec, d, system, model, d.devices * system.ranks_per_device))
    return np.array(out, dtype=bool)


def placement_ok(model: Model, ep_sizes) -> np.ndarray:
    """True where ``deployment.place_experts`` accepts the EP size (it raises with the reason otherwise)."""
    out = []
    for ep in np.asarray(ep_sizes, dtype=int).ravel():  # one check per instance size, not per configuration
        try:
            place_experts(model, int(ep))
            out.append(True)
        except CmperfError:
            out.append(False)
    return np.array(out, dtype=bool)


def core_splits(system: System) -> tuple[int, ...]:
    """Attention-stream cube cores to try with >1 microbatch on split-cores systems (() otherwise)."""
    ov = system.overlap_for("decode")
    if ov.policy != "split-cores":
        return ()
    c = int(system.chip.cube_cores)
    step = max(c // 12, 1)
    vals = set(range(step, c, step))
    if ov.attention_cube_cores:
        vals.add(ov.attention_cube_cores)
    return tuple(sorted(v for v in vals if 0 < v < c))


@dataclass(frozen=True)
class DecodeSpace:
    """The axes of the decode grid (instance sizes in devices, batch per device, ...)."""

    devices: np.ndarray
    batch_per_device: np.ndarray
    microbatches: tuple[int, ...]
    attention_cube_cores: tuple[int, ...]  # () = the system default only
    mtp: tuple[int, ...]
    placement_ok: np.ndarray

    @property
    def size(self) -> int:
        """Configurations in the space: sizes x batches x (mb=1 + mb>1 x core splits) x MTP depths."""
        n_split = max(len(self.attention_cube_cores), 1)
        per = sum(1 if mb == 1 else n_split for mb in self.microbatches)
        return len(self.devices) * len(self.batch_per_device) * per * len(self.mtp)


def decode_space(
    system: System,
    model: Model,
    base: Deployment,
    *,
    mtp: tuple[int, ...] | None = None,
    microbatches: tuple[int, ...] = (1, 2, 3),
    max_batch: float | None = None,
    max_devices: int | None = None,
) -> DecodeSpace:
    """Axes for the decode grid around ``base`` (its KV, precision, ... knobs); the batch axis ends at
    the largest HBM limit over all instance sizes. A framework profile (``base.framework``) keeps the
    microbatch counts it runs and, without MTP chains, MTP depths up to 1 (cmperf.frameworks)."""
    from .frameworks import of as framework_of
    from .frameworks import runnable

    fw = framework_of(base)
    if mtp is None:
        mtp = tuple(range(0, max(model.num_mtp_modules, 0) + 1))
    if fw is not None:
        microbatches = runnable(fw, model, microbatches)
        mtp = tuple(m for m in mtp if fw.mtp_chains or m <= 1)
    sizes = instance_sizes(system, max_devices)
    ok = placement_ok(model, sizes * system.ranks_per_device)
    rpd = system.ranks_per_device
    if max_batch is None:
        probe = replace(
            base,
            batch_per_device=float(rpd),
            devices=sizes[ok],
            ep_size=sizes[ok] * rpd,
            microbatches=1,
            mtp=max(mtp),
        )
        ev = decode.evaluate(system, model, probe)
        max_batch = float(np.max(ev.max_batch_per_device)) if ok.any() else float(rpd)
    batches = np.arange(rpd, max(max_batch, rpd) + 0.5, rpd, dtype=float)
    splits = core_splits(system) if any(mb > 1 for mb in microbatches) else ()
    return DecodeSpace(sizes, batches, tuple(microbatches), splits, tuple(mtp), ok)


# ---------------------------------------------------------------------------------------- grid


@dataclass(frozen=True)
class DecodeGrid:
    """Flat arrays over every configuration of a DecodeSpace (knobs, predictions, reason index)."""

    devices: np.ndarray
    ep_size: np.ndarray
    batch_per_device: np.ndarray
    microbatches: np.ndarray
    attention_cube_cores: np.ndarray  # -1 where not applicable (one microbatch / not split-cores)
    mtp: np.ndarray
    tpot_s: np.ndarray
    tokens_per_s_per_device: np.ndarray
    lower_tpot_s: np.ndarray
    upper_tpot_s: np.ndarray
    comm_bound_tpot_s: np.ndarray
    hbm_bytes_per_rank: np.ndarray
    max_batch_per_device: np.ndarray
    placement_ok: np.ndarray
    hbm_ok: np.ndarray
    attn_tp: np.ndarray  # attention TP degree of every row (1: data-parallel attention)

    @property
    def size(self) -> int:
        return int(self.tpot_s.size)


def concat_grids(grids: list[DecodeGrid]) -> DecodeGrid:
    """One grid of the rows of ``grids`` in order (one grid per attention-TP degree)."""
    if len(grids) == 1:
        return grids[0]
    return DecodeGrid(
        **{f: np.concatenate([getattr(g, f) for g in grids]) for f in DecodeGrid.__dataclass_fields__}
    )


def decode_modes(space: DecodeSpace) -> tuple[np.ndarray, np.ndarray]:
    """(microbatches, attention cube cores) of every pipeline mode of the space, as two arrays.

    One microbatch runs serially on all cores (cores -1); more than one runs once per core split, or once
    with cores -1 on systems without split cores. CM384: (1, -1), (2, 2), (3, 2), (2, 4), ..., (3, 22): 23.
    """
    pairs = []
    for mb in space.microbatches:
        if mb == 1 or not space.attention_cube_cores:
            pairs.append((mb, -1))
    for c in space.attention_cube_cores:
        pairs += [(mb, c) for mb in space.microbatches if mb > 1]
    a = np.array(pairs, dtype=float).reshape(-1, 2)
    return a[:, 0], a[:, 1]


# Points per decode.evaluate call. Its op arrays peak at ~0.9 kB per point (tracemalloc: 254 MB for the
# 279,174 configurations of the default CloudMatrix384 grid); larger grids are split over instance sizes
# so a call stays under ~0.5 GB.
MAX_POINTS_PER_CALL = 1 << 19

_PREDICTIONS = (
    "tpot_s",
    "tokens_per_s_per_device",
    "lower_tpot_s",
    "upper_tpot_s",
    "comm_bound_tpot_s",
    "hbm_bytes_per_rank",
    "max_batch_per_device",
)


#: Fixed cost of one ``decode.evaluate`` call, in grid points: its per-op Python work takes what ~20,000
#: points of array work take (CloudMatrix384 grid, 2-core machine), so the batches a search keeps are
#: grouped into calls that minimize calls x this + points evaluated.
CALL_COST_POINTS = 20_000


def group_sizes(nb: np.ndarray, per_batch: int, max_points: int, call_cost: int = CALL_COST_POINTS) -> list:
    """Instance sizes (indices into ``nb``) grouped into ``decode.evaluate`` calls, a call evaluating its
    sizes' batches up to the largest ``nb`` (batches to evaluate) among them: runs of the sizes sorted by
    ``nb``, chosen by dynamic programming to minimize Σ (call_cost + sizes x max nb x per_batch) with no
    call above ``max_points`` (one size is always allowed). ``nb`` = [3, 3, 50], per_batch 1, cost 10 ->
    [[0, 1], [2]] (one call over all would evaluate 150 points, two calls 56 + 2 x 10)."""
    order = np.argsort(nb, kind="stable")
    srt = nb[order].astype(float)
    n = order.size
    best, cut = [0.0] + [math.inf] * n, [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j - 1, -1, -1):
            pts = (j - i) * srt[j - 1] * per_batch
            if pts > max_points and j - i > 1:
                break
            cost = best[i] + call_cost + pts
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups, j = [], n
    while j > 0:
        groups.append(np.sort(order[cut[j] : j]))
        j = cut[j]
    return groups[::-1]


def hbm_batches(system: System, model: Model, space: DecodeSpace, base: Deployment) -> np.ndarray:
    """For each placeable instance size: how many batches of the axis to evaluate, all those at or below
    the largest HBM limit over its MTP depths and modes, plus the first one above (the witness that the
    rest do not fit). One ``decode.evaluate`` at the axis's first batch gives every limit (the memory model
    is linear in batch: ``decode.evaluate``'s max_batch_per_device)."""
    rpd = system.ranks_per_device
    mb, cores = decode_modes(space)
    dev = space.devices[space.placement_ok][None, None, :]
    probe = replace(
        base,
        batch_per_device=np.full((1, 1, 1), float(space.batch_per_device[0])),
        devices=dev,
        ep_size=dev * rpd,
        microbatches=mb[None, :, None],
        mtp=np.array(space.mtp, dtype=float)[:, None, None],
        attention_cube_cores=np.where(cores < 0, np.nan, cores)[None, :, None],
    )
    ev = decode.evaluate(system, model, probe)
    shape = (len(space.mtp), mb.size, dev.shape[2])
    cap = np.broadcast_to(np.asarray(ev.max_batch_per_device, dtype=float), shape).max(axis=(0, 1))
    below = np.searchsorted(space.batch_per_device, cap, side="right")
    return np.minimum(below + 1, space.batch_per_device.size)


def evaluate_decode_grid(
    system: System,
    model: Model,
    space: DecodeSpace,
    base: Deployment,
    *,
    progress=None,
    max_points: int = MAX_POINTS_PER_CALL,
    prune: bool = True,
) -> DecodeGrid:
    """Evaluate the space around ``base`` as open meshes MTP x mode x instance sizes x batch
    (``decode.evaluate`` broadcasts every knob), the sizes grouped into calls of at most ``max_points``.

    Not evaluated, and so NaN in every prediction: sizes the experts cannot be placed on (``placement_ok``
    False), and with ``prune`` the batches of a size above its HBM limit (``hbm_batches``; ``hbm_ok``
    False, counted under that reason as if evaluated). The cut is exact: HBM use grows with batch, so a
    line (size, mode, MTP) whose last evaluated batch does not fit has no larger batch that fits, and a
    line without that witness is evaluated to the end of the axis. Every evaluated point is the number a
    call for that point alone gives, however the calls are grouped.
    """
    rpd = system.ranks_per_device
    mb, cores = decode_modes(space)
    mtp = np.array(space.mtp, dtype=float)[:, None, None, None]
    mb, cores = mb[None, :, None, None], cores[None, :, None, None]
    dev = space.devices[None, None, :, None]
    b = space.batch_per_device[None, None, None, :]
    shape = (mtp.shape[0], mb.shape[1], dev.shape[2], b.shape[3])
    out = {k: np.full(shape, np.nan) for k in _PREDICTIONS}
    hbm_ok = np.zeros(shape, dtype=bool)
    good = np.flatnonzero(space.placement_ok)
    full = np.full(good.size, shape[3])
    nb = hbm_batches(system, model, space, base) if prune and good.size else full
    per_batch = shape[0] * shape[1]
    groups = group_sizes(nb, per_batch, max(int(max_points), 1))

    def run(idx, ends, b0):
        """Evaluate sizes ``good[idx]`` from batch index b0 to the largest of ``ends``, keep each size's
        batches below its own end (so the grouping changes no number), and return the sizes whose last
        kept batch still fits somewhere (no witness)."""
        sizes, b1 = good[idx], int(ends.max())
        grid = replace(
            base,
            batch_per_device=b[..., b0:b1],
            devices=dev[:, :, sizes],
            ep_size=dev[:, :, sizes] * rpd,
            microbatches=mb,
            mtp=mtp,
            attention_cube_cores=np.where(cores < 0, np.nan, cores),  # NaN: system default (unused)
        )
        ev = decode.evaluate(system, model, grid)
        sub = (shape[0], shape[1], sizes.size, b1 - b0)
        keep = np.arange(b0, b1)[None, :] < ends[:, None]  # [size, batch]
        for k in _PREDICTIONS:
            out[k][:, :, sizes, b0:b1] = np.where(keep, np.broadcast_to(getattr(ev, k), sub), np.nan)
        feas = np.broadcast_to(ev.feasible, sub)
        fits = feas & (b[..., b0:b1] <= out["max_batch_per_device"][:, :, sizes, b0:b1])
        hbm_ok[:, :, sizes, b0:b1] = fits & keep
        last = feas[:, :, np.arange(sizes.size), ends - 1 - b0]  # [mtp, mode, size]
        return idx[(ends < shape[3]) & last.any(axis=(0, 1))]

    rest = []
    for i, idx in enumerate(groups):
        rest += run(idx, nb[idx], 0).tolist()
        if progress is not None:
            progress(i + 1, len(groups))
    for j in rest:  # none on the bundled systems; kept so the cut never rests on the probe alone
        run(np.array([j]), np.array([shape[3]]), int(nb[j]))

    def flat(x):
        return np.broadcast_to(x, shape).ravel()

    devices = flat(dev)
    return DecodeGrid(
        devices=devices,
        ep_size=devices * rpd,
        batch_per_device=flat(b),
        microbatches=flat(mb),
        attention_cube_cores=flat(cores),
        mtp=flat(mtp),
        **{k: v.ravel() for k, v in out.items()},
        placement_ok=flat(space.placement_ok[None, None, :, None]),
        hbm_ok=hbm_ok.ravel(),
        attn_tp=np.full(hbm_ok.size, float(base.attn_tp or 1)),  # None: the decode default, 1
    )


# ---------------------------------------------------------------------------------------- ranking


def pareto_mask(maximize, minimize, *tie_asc) -> np.ndarray:
    """Vectorized Pareto filter: True where no other point has maximize >= and minimize <= (one strict).

    Sort by ``minimize`` ascending (ties: ``maximize`` descending, then each ``tie_asc`` ascending, then
    position); a point is on the frontier iff its ``maximize`` beats the running maximum of every point
    before it, so of exact duplicates the first in that order is kept. O(n log n), no Python loop.
    >>> pareto_mask(np.array([1.0, 3.0, 2.0]), np.array([1.0, 2.0, 3.0])).tolist()
    [True, True, False]
    """
    x = np.asarray(maximize, dtype=float)
    y = np.asarray(minimize, dtype=float)
    ties = [np.asarray(k, dtype=float) for k in reversed(tie_asc)]
    order = np.lexsort((*ties, -x, y))
    xs = x[order]
    prev = np.concatenate(([-np.inf], np.maximum.accumulate(xs)[:-1])) if xs.size else xs
    keep = np.zeros(x.shape, dtype=bool)
    keep[order] = xs > prev
    return keep


def staircase(maximize, minimize) -> np.ndarray:
    """True where no point has a strictly smaller ``minimize`` and an ``maximize`` at least as large: the
    only points ``pareto_mask`` can keep, whatever its tie keys, found with one sort instead of a sort on
    every key (after an O(n) cut at the smallest minimize of the largest maximize). A point dominated so
    is never kept (that point sorts before it with an x >= its own); among the others the running maximum
    before a point comes from its own ``minimize`` value's ties, which are in or below it, so
    ``pareto_mask`` on these points keeps exactly what it keeps on all of them.
    >>> staircase(np.array([1.0, 3.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0, 2.0])).tolist()
    [True, True, False, True]
    """
    x = np.asarray(maximize, dtype=float)
    y = np.asarray(minimize, dtype=float)
    keep = np.isnan(y)  # a NaN minimize sorts last in pareto_mask: left to it
    ok = ~keep & ~np.isnan(x)  # a NaN maximize is never kept, nor dominates
    if not ok.any():
        return keep
    x_top = x[ok].max()
    cand = np.flatnonzero(ok & (y <= y[ok & (x == x_top)].min()))  # above: a largest-maximize point wins
    order = cand[np.argsort(y[cand])]  # the order within ties changes nothing below
    ys, xs = y[order], x[order]
    # the largest maximize before each run of equal minimize values (the points with a strictly smaller
    # one), repeated over the run
    starts = np.flatnonzero(np.r_[True, ys[1:] != ys[:-1]])
    before = np.r_[-np.inf, np.maximum.accumulate(xs)[:-1]][starts]
    keep[order] |= xs > np.repeat(before, np.diff(np.r_[starts, ys.size]))
    return keep


def rank(primary_desc, *tie_asc) -> np.ndarray:
    """Indices sorted by ``primary_desc`` descending, then each ``tie_asc`` ascending (stable, total)."""
    ties = [np.asarray(k, dtype=float) for k in reversed(tie_asc)]
    return np.lexsort((*ties, -np.asarray(primary_desc, dtype=float)))


def first_reason(masks: list[tuple[str, np.ndarray]]) -> tuple[np.ndarray, dict[str, int]]:
    """(passes-all mask, {reason: count}) counting each failing candidate under its first failed reason."""
    alive = np.ones(masks[0][1].shape, dtype=bool)
    counts = {}
    for name, ok in masks:
        fail = alive & ~ok
        counts[name] = int(fail.sum())
        alive = alive & ok
    return alive, counts


# ---------------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class DecodeConfig:
    """One decode configuration and its prediction (a row of the grid)."""

    devices: int
    ep_size: int
    batch_per_device: float
    microbatches: int
    attention_cube_cores: int | None
    mtp: int
    tpot_s: float
    tokens_per_s_per_device: float
    lower_tpot_s: float
    upper_tpot_s: float
    comm_bound_tpot_s: float
    hbm_bytes_per_rank: float
    max_batch_per_device: float
    attn_tp: int = 1


def _decode_row(g: DecodeGrid, i: int) -> DecodeConfig:
    cores = int(g.attention_cube_cores[i])
    return DecodeConfig(
        int(g.devices[i]),
        int(g.ep_size[i]),
        float(g.batch_per_device[i]),
        int(g.microbatches[i]),
        None if cores < 0 else cores,
        int(g.mtp[i]),
        float(g.tpot_s[i]),
        float(g.tokens_per_s_per_device[i]),
        float(g.lower_tpot_s[i]),
        float(g.upper_tpot_s[i]),
        float(g.comm_bound_tpot_s[i]),
        float(g.hbm_bytes_per_rank[i]),
        float(g.max_batch_per_device[i]),
        int(g.attn_tp[i]),
    )


@dataclass(frozen=True)
class Binding:
    """Why a configuration is where it is: the constraint that stops a larger batch and the ceilings."""

    constraint: str  # "TPOT SLO" | "HBM fit" | "batch axis end" | "none"
    detail: str
    moe_stream_binding: str  # from decode.predict streams["moe"]["binding"]
    top_ops: list[dict] = field(default_factory=list)  # the largest ops per step with their bound
    max_batch_under_slo: float | None = None  # root finding on the continuous batch (same knobs)
    stage: str = "moe"  # the layer stage moe_stream_binding is of ("dense" for a dense model)


@dataclass(frozen=True)
class DecodeSearch:
    """Result of a decode search (all fields deterministic functions of the inputs)."""

    objective: str
    constraints: dict
    space: dict
    evaluated: int
    accepted: int
    rejected: dict[str, int]
    best: DecodeConfig | None
    binding: Binding | None
    top: list[DecodeConfig]
    pareto: list[DecodeConfig]
    closest: list[DecodeConfig]  # when nothing meets the SLO: lowest TPOT configurations that fit


def _tie_keys(g: DecodeGrid):
    return (g.tpot_s, g.devices, g.batch_per_device, g.microbatches, g.attention_cube_cores, g.mtp, g.attn_tp)


def config_deployment(base: Deployment, c: DecodeConfig, batch_per_device: float | None = None) -> Deployment:
    """The record of configuration ``c`` (its EP, batch, microbatches, MTP, attention cores) on ``base``."""
    return replace(
        base,
        devices=c.devices,
        ep_size=c.ep_size,
        batch_per_device=c.batch_per_device if batch_per_device is None else batch_per_device,
        microbatches=c.microbatches,
        mtp=c.mtp,
        attention_cube_cores=c.attention_cube_cores,
        attn_tp=c.attn_tp,
    )


def largest_batch_under_slo(
    system: System, model: Model, base: Deployment, c: DecodeConfig, tpot_slo_s: float
) -> float:
    """Largest continuous batch per device with TPOT <= SLO for the knobs of ``c`` (Brent's method,
    ``queueing.find_root``).

    TPOT rises with batch (tests of the decode model), so the root of TPOT(b) - SLO on [1, HBM limit]
    is unique; returns the HBM limit when even it meets the SLO, 0 when batch 1 does not.
    """

    def f(b):
        return float(decode.evaluate(system, model, config_deployment(base, c, b)).tpot_s) - tpot_slo_s

    hi = max(c.max_batch_per_device, 1.0)
    if f(1.0) > 0:
        return 0.0
    if f(hi) <= 0:
        return hi
    return find_root(f, 1.0, hi, xtol=1e-3)


def explain_decode(
    system: System, model: Model, base: Deployment, c: DecodeConfig, tpot_slo_s: float | None
) -> Binding:
    """Binding constraint (what stops the next batch step) and the binding stream/ops from decode.predict."""
    step = float(system.ranks_per_device)
    nxt = c.batch_per_device + step
    if tpot_slo_s is not None and c.tpot_s > tpot_slo_s:
        constraint, detail = (
            "TPOT SLO",
            (
                f"unmet: TPOT {c.tpot_s * 1e3:.2f} ms > SLO {tpot_slo_s * 1e3:g} ms even at "
                f"batch {c.batch_per_device:g}; speed-of-light bound "
                f"{c.lower_tpot_s * 1e3:.2f} ms, EP all-to-all bound "
                f"{c.comm_bound_tpot_s * 1e3:.2f} ms"
            ),
        )
    elif nxt > c.max_batch_per_device:
        constraint, detail = (
            "HBM fit",
            (f"batch {nxt:g} would exceed the HBM limit of {c.max_batch_per_device:g} sequences per device"),
        )
    elif tpot_slo_s is not None:
        t = float(decode.evaluate(system, model, config_deployment(base, c, nxt)).tpot_s)
        if t > tpot_slo_s:
            constraint, detail = (
                "TPOT SLO",
                (f"batch {nxt:g} would give TPOT {t * 1e3:.2f} ms > SLO {tpot_slo_s * 1e3:g} ms"),
            )
        else:
            constraint, detail = "batch axis end", f"batch {nxt:g} is outside the searched axis"
    else:
        constraint, detail = "none", "no TPOT SLO: the largest batch that fits wins"
    p = decode.predict(system, model, config_deployment(base, c))
    ops = sorted(p.ops, key=lambda r: (-r.total_s, r.stage, r.name))[:5]
    top_ops = [
        {
            "stage": r.stage,
            "name": r.name,
            "bound": r.bound,
            "total_s": r.total_s,
            "share_of_step": r.total_s / p.step_s if p.step_s > 0 else 0.0,
        }
        for r in ops
    ]
    mb = None
    if tpot_slo_s is not None:
        mb = largest_batch_under_slo(system, model, base, c, tpot_slo_s)
    stage = principal_stage(model)  # the MoE layers; a dense model's: its dense layers
    return Binding(constraint, detail, str(p.streams.get(stage, {}).get("binding", "")), top_ops, mb, stage)


def search_decode(
    system: System,
    model: Model,
    *,
    prompt_len: float,
    output_len: float,
    devices: int | None = None,
    tpot_slo_s: float | None = None,
    base: Deployment | None = None,
    mtp: tuple[int, ...] | None = None,
    top_k: int = 10,
    pareto_max: int = 40,
    progress=None,
    explain: bool = True,
    attn_tp: tuple[int, ...] | None = None,
) -> tuple[DecodeSearch, DecodeGrid]:
    """Best decode configuration for tokens/s per device under a TPOT SLO.

    ``attn_tp``: the attention-TP degrees searched (one grid each; an instance size a degree does not
    divide, or a degree beyond one scale-up domain or the heads, is "placement invalid" there); None:
    ``deployment.search_attn_tp`` (1 for an MoE model, the powers of two of a scale-up domain for a dense
    one).

    ``base`` holds the knobs the search does not vary (MTP acceptance, precision, EPLB, ...); its KV
    knobs are set from the workload (``deployment.kv_lengths``: KV = prompt + output/2, capacity prompt +
    output, the spread of the sequences' positions as ``kv_cv``), as ``cmperf decode --prompt-len
    --output-len`` sets them, so a configuration here and there gives the same TPOT."""
    kv_len, kv_cap, kv_cv = kv_lengths(model, prompt_len, output_len)
    attn_tp = search_attn_tp(system, model) if attn_tp is None else attn_tp
    base = replace(base or Deployment(), kv_len=kv_len, kv_capacity_len=kv_cap, kv_cv=kv_cv).resolve(
        system, model
    )
    total = system.num_devices if devices is None else int(devices)
    if total < 1 or total > system.num_devices:
        raise CmperfError(f"--devices: {total} is outside 1..{system.num_devices} ({system.name})")
    # the batch axis ends at the largest HBM limit over the degrees (TP splits the weights)
    spaces = [
        decode_space(system, model, replace(base, attn_tp=int(t)), mtp=mtp, max_devices=total)
        for t in attn_tp
    ]
    space = max(spaces, key=lambda sp: sp.batch_per_device.size)
    grids = []
    for t in attn_tp:
        base_t = replace(base, attn_tp=int(t))
        ok_t = space.placement_ok & tp_fits(system, model, space.devices, int(t))
        grids.append(
            evaluate_decode_grid(system, model, replace(space, placement_ok=ok_t), base_t, progress=progress)
        )
    g = concat_grids(grids)
    slo_ok = np.ones(g.size, dtype=bool) if tpot_slo_s is None else (g.tpot_s <= tpot_slo_s)
    ok, rejected = first_reason(
        [
            ("device total", g.devices <= total),
            ("placement invalid", g.placement_ok),
            ("HBM fit", g.hbm_ok),
            ("TPOT SLO", slo_ok),
        ]
    )
    fits = (g.devices <= total) & g.placement_ok & g.hbm_ok
    # ranking the accepted rows alone gives their order in the ranking of all rows (a stable sort)
    acc = np.flatnonzero(ok)
    winners = acc[rank(g.tokens_per_s_per_device[acc], *(k[acc] for k in _tie_keys(g)))]
    top = [_decode_row(g, int(i)) for i in winners[:top_k]]
    closest = []
    if not top:
        near = np.lexsort(
            (
                g.mtp,
                g.attention_cube_cores,
                g.microbatches,
                g.batch_per_device,
                g.devices,
                -g.tokens_per_s_per_device,
                np.where(fits, g.tpot_s, np.inf),
            )
        )
        closest = [_decode_row(g, int(i)) for i in near[fits[near]][:top_k]]
    idx = np.flatnonzero(fits)
    # ties between identical (tokens/s, TPOT) points go to the knobs in this order, so the frontier does
    # not depend on the row order of the grid
    knobs = (g.mtp, g.attention_cube_cores, g.devices, g.batch_per_device, g.microbatches, g.attn_tp)
    idx = idx[staircase(g.tokens_per_s_per_device[idx], g.tpot_s[idx])]
    pm = pareto_mask(g.tokens_per_s_per_device[idx], g.tpot_s[idx], *(k[idx] for k in knobs))
    pidx = idx[pm]
    pidx = pidx[np.lexsort((g.devices[pidx], g.tpot_s[pidx]))]
    if pidx.size > pareto_max:  # thin evenly along TPOT, keeping both ends
        pidx = pidx[np.unique(np.linspace(0, pidx.size - 1, pareto_max).round().astype(int))]
    pareto = [_decode_row(g, int(i)) for i in pidx]
    best = top[0] if top else None
    subject = best or (closest[0] if closest else None)
    binding = None
    if explain and subject is not None:
        binding = explain_decode(system, model, base, subject, tpot_slo_s)
    space_d = {
        "devices": space.devices.tolist(),
        "batch_per_device": [float(space.batch_per_device[0]), float(space.batch_per_device[-1])],
        "batch_step": float(system.ranks_per_device),
        "microbatches": list(space.microbatches),
        "attention_cube_cores": list(space.attention_cube_cores),
        "mtp": list(space.mtp),
        "attn_tp": [int(t) for t in attn_tp],
        "configurations": space.size * len(attn_tp),
    }
    constraints = {
        "tpot_slo_s": tpot_slo_s,
        "devices": total,
        "prompt_len": prompt_len,
        "output_len": output_len,
        "kv_len": kv_len,
        "kv_cv": kv_cv,
        "mtp_accept": base.mtp_accept,
        "eplb": base.eplb,
    }
    res = DecodeSearch(
        "decode tokens/s per device",
        constraints,
        space_d,
        g.size,
        int(ok.sum()),
        rejected,
        best,
        binding,
        top,
        pareto,
        closest,
    )
    return res, g


# ---------------------------------------------------------------------------------------- prefill


@dataclass(frozen=True)
class PrefillConfig:
    devices: int
    ep_size: int
    tokens_per_device: float
    microbatches: int
    ttft_s: float
    batch_s: float
    tokens_per_s_per_device: float
    hbm_bytes_per_rank: float
    attn_tp: int = 1  # attention TP degree (a dense model's Megatron TP)


@dataclass(frozen=True)
class PrefillSearch:
    objective: str
    constraints: dict
    space: dict
    evaluated: int
    accepted: int
    rejected: dict[str, int]
    best: PrefillConfig | None
    top: list[PrefillConfig]
    pareto: list[PrefillConfig]


def prefill_tokens_axis(prompt_len: float, group_devices: float = 1.0) -> np.ndarray:
    """Tokens per device per batch: whole prompts, prompt_len x 1, 2, 4, ..., 64 (HBM masks the top); a
    TP group of ``group_devices`` holds one prompt in budgets of prompt_len / group_devices, so the axis
    starts there (TP8: prompt_len / 8 x 1, 2, ..., 512)."""
    low = round(math.log2(max(group_devices, 1.0)))
    return float(prompt_len) * 2.0 ** np.arange(-low, 7)


def search_prefill(
    system: System,
    model: Model,
    *,
    prompt_len: float,
    devices: int | None = None,
    ttft_slo_s: float | None = None,
    base: Deployment | None = None,
    microbatches: tuple[int, ...] = (1, 2),
    top_k: int = 10,
    pareto_max: int = 40,
    progress=None,
) -> PrefillSearch:
    """Best prefill configuration (tokens/s per device) with the batch + KV-transfer TTFT under the SLO.

    One ``prefill.evaluate`` over instance size x tokens per device x microbatches, around ``base``
    (the knobs the search does not vary: precision, EPLB, cache...); EP = devices x ranks_per_device. A
    dense model run as Megatron TP (``deployment.megatron_prefill``) is searched over its TP degrees too
    (one evaluate each, ``deployment.search_attn_tp``) unless ``base.attn_tp`` fixes it. An instance size a
    degree does not divide is "placement invalid", as is a budget below one prompt per TP group (the
    tokens axis starts at P / t per device: one prompt per TP8 group, the lowest TTFT). TP1 holds the
    whole model on every rank and, needing no all-reduce, has the most tokens/s where it fits.
    """
    from . import prefill
    from .frameworks import of as framework_of
    from .frameworks import runnable

    base = replace(base or Deployment(phase="prefill"), prompt_len=prompt_len)
    fw = framework_of(base)
    if fw is not None:  # the counts the framework runs for this model (one for a dense model)
        microbatches = runnable(fw, model, microbatches)

    total = system.num_devices if devices is None else int(devices)
    sizes = instance_sizes(system, total)
    rpd = system.ranks_per_device
    tps_axis: tuple = (base.attn_tp,)  # None: the record's default (Deployment.resolve)
    if base.attn_tp is None and megatron_prefill(model):
        tps_axis = search_attn_tp(system, model)
    group_devices = np.array([max((t or 1) / rpd, 1.0) for t in tps_axis])
    toks = prefill_tokens_axis(prompt_len, float(group_devices.max()))
    mbs = np.array(microbatches, dtype=float)
    shape = (len(tps_axis), sizes.size, toks.size, mbs.size)  # TP, devices, tokens, microbatches
    ok_place = np.stack(
        [placement_ok(model, sizes * rpd) & ((sizes * rpd) % (t or 1) == 0) for t in tps_axis]
    )
    # placement also needs whole prompts per (TP group of) device(s): a prompt is not split over DP groups
    whole = toks[None, :] * group_devices[:, None] >= prompt_len
    g = {
        "devices": np.broadcast_to(sizes[None, :, None, None], shape).ravel(),
        "tok": np.broadcast_to(toks[None, None, :, None], shape).ravel(),
        "mb": np.broadcast_to(mbs[None, None, None, :], shape).ravel(),
        "place": np.broadcast_to(ok_place[:, :, None, None] & whole[:, None, :, None], shape).ravel(),
    }
    pred = {k: np.full(shape, np.nan) for k in ("ttft", "batch", "tps", "hbm", "attn_tp")}
    fit = np.zeros(shape, dtype=bool)
    for j, t in enumerate(tps_axis):  # one evaluate over every placeable size of each TP degree
        if not ok_place[j].any():
            continue
        d = sizes[ok_place[j]][:, None, None]
        grid = replace(
            base,
            tokens_per_device=toks[None, :, None],
            ep_size=(d * rpd).astype(int),
            devices=d.astype(int),
            microbatches=mbs[None, None, :],
            attn_tp=t,
        )
        ev = prefill.evaluate(system, model, grid)
        sub = (int(ok_place[j].sum()), toks.size, mbs.size)

        def f(x, sub=sub):
            return np.broadcast_to(np.asarray(x, dtype=float), sub)

        for k, name in (("ttft", "ttft_s"), ("batch", "batch_s"), ("tps", "tokens_per_s_per_device")):
            pred[k][j][ok_place[j]] = f(getattr(ev, name))
        pred["hbm"][j][ok_place[j]] = f(ev.hbm_bytes_per_rank)
        pred["attn_tp"][j][ok_place[j]] = f(ev.deployment.attn_tp)
        fit[j][ok_place[j]] = f(ev.feasible).astype(bool) & (
            toks[None, :, None] <= f(ev.max_tokens_per_device)
        )
    if progress is not None:
        progress(1, 1)
    g |= {k: v.ravel() for k, v in pred.items()} | {"fit": fit.ravel()}
    slo_ok = np.ones(g["tps"].shape, dtype=bool) if ttft_slo_s is None else (g["ttft"] <= ttft_slo_s)
    ok, rejected = first_reason(
        [
            ("device total", g["devices"] <= total),
            ("placement invalid", g["place"]),
            ("HBM fit", g["fit"]),
            ("TTFT SLO", slo_ok),
        ]
    )
    order = rank(g["tps"], g["ttft"], g["devices"], g["tok"], g["mb"])

    def row(i):
        return PrefillConfig(
            int(g["devices"][i]),
            int(g["devices"][i] * rpd),
            float(g["tok"][i]),
            int(g["mb"][i]),
            float(g["ttft"][i]),
            float(g["batch"][i]),
            float(g["tps"][i]),
            float(g["hbm"][i]),
            int(g["attn_tp"][i]),
        )

    top = [row(int(i)) for i in order[ok[order]][:top_k]]
    fits = (g["devices"] <= total) & g["place"] & g["fit"]
    idx = np.flatnonzero(fits)
    pidx = idx[pareto_mask(g["tps"][idx], g["ttft"][idx])]
    pidx = pidx[np.lexsort((g["devices"][pidx], g["ttft"][pidx]))]
    if pidx.size > pareto_max:
        pidx = pidx[np.unique(np.linspace(0, pidx.size - 1, pareto_max).round().astype(int))]
    space = {
        "devices": sizes.tolist(),
        "tokens_per_device": toks.tolist(),
        "microbatches": list(microbatches),
        "configurations": int(g["tps"].size),
    }
    if len(tps_axis) > 1:
        space["attn_tp"] = [int(t) for t in tps_axis]
    return PrefillSearch(
        "prefill tokens/s per device",
        {
            "ttft_slo_s": ttft_slo_s,
            "devices": total,
            "prompt_len": prompt_len,
            "eplb": base.eplb or "perfect",
        },
        space,
        int(g["tps"].size),
        int(ok.sum()),
        rejected,
        top[0] if top else None,
        top,
        [row(int(i)) for i in pidx],
    )


# ---------------------------------------------------------------------------------------- optimize


@dataclass(frozen=True)
class OptimizeResult:
    decode: DecodeSearch
    prefill: PrefillSearch | None
    serving: sizing.SizeResult | None  # the split, by cmperf.sizing.size (as `cmperf serve --size`)
    notes: list[str]
    slo_percentile: float = DEFAULT_SLO_PERCENTILE  # the percentile the split's SLOs are on


def serving_pools(
    system: System,
    model: Model,
    dec: DecodeConfig,
    pre: PrefillConfig,
    decode: Deployment,
    prefill: Deployment,
) -> serving.Pools:
    """The serving pools of the searched configurations, for ``sizing.size``: prefill instances of the best
    prefill configuration's size and microbatches (EP = its ranks), decode with the best decode
    configuration's microbatches and MTP, on the ``decode`` / ``prefill`` records the searches started
    from. The rest is the serving model's: decode EP over all ranks of the pool, the scheduler's prefill
    batch, the system's attention core split. CloudMatrix384 at 4K/256: 16-device EP32 instances, 2
    microbatches in both phases, MTP 1, the knobs ``cmperf serve`` defaults to, so ``serve --size`` prints
    the same split."""
    base = serving.default_pools(system, model)
    dec_dep = replace(
        decode,
        devices=base.decode_devices,
        ep_size=None,
        microbatches=dec.microbatches,
        mtp=dec.mtp,
        attn_tp=dec.attn_tp,
    )
    pre_dep = replace(prefill, devices=int(pre.devices), ep_size=None, microbatches=int(pre.microbatches))
    if megatron_prefill(model):  # the searched TP degree (an MoE prefill keeps the record's SP-TP-SP)
        pre_dep = replace(pre_dep, attn_tp=pre.attn_tp)
    return replace(base, decode=dec_dep, prefill=pre_dep).resolve(system, model)


def optimize(
    system: System,
    model: Model,
    *,
    devices: int | None = None,
    workload: serving.Workload | None = None,
    slo: serving.SLO | None = None,
    decode: Deployment | None = None,
    prefill: Deployment | None = None,
    top_k: int = 10,
    progress=None,
    attn_tp: tuple[int, ...] | None = None,
) -> OptimizeResult:
    """Decode search, prefill search, then the prefill/decode split of the device total.

    ``workload``: prompt and output lengths, and ``rate_per_s`` (None: the most goodput per device, else
    the fewest devices serving that rate); ``slo``: TTFT and TPOT on ``slo.quantile`` (an infinite time is
    no limit: that pool serves up to its capacity); ``decode`` / ``prefill``: the knobs the searches do not
    vary (MTP acceptance, precision, EPLB, ...); ``attn_tp``: the attention-TP degrees the decode search
    tries (``search_decode``; None: ``deployment.search_attn_tp``).

    The split is the serving model's, ``sizing.size`` (the sizing ``cmperf serve --size`` runs), on the
    pools of the searched configurations (``serving_pools``). The searches hold each configuration's own
    TPOT at its batch and TTFT of one batch (no queueing) to the same SLO values.
    """
    total = system.num_devices if devices is None else int(devices)
    wl = workload or serving.Workload(rate_per_s=None)
    slo = slo or serving.SLO()
    if not 0.5 <= slo.quantile < 1.0:
        raise CmperfError(f"--slo-percentile: must be in [50, 100), got {100 * slo.quantile:g}")
    decode = decode or Deployment()
    prefill = prefill or Deployment(phase="prefill")
    tpot = None if math.isinf(slo.tpot_s) else slo.tpot_s
    ttft = None if math.isinf(slo.ttft_s) else slo.ttft_s
    dec, _ = search_decode(
        system,
        model,
        prompt_len=wl.prompt_len,
        output_len=wl.output_len,
        devices=total,
        tpot_slo_s=tpot,
        base=decode,
        top_k=top_k,
        progress=progress,
        attn_tp=attn_tp,
    )
    notes: list[str] = []
    serv = None
    pre = search_prefill(
        system, model, prompt_len=wl.prompt_len, devices=total, ttft_slo_s=ttft, base=prefill, top_k=top_k
    )
    pools = (
        serving_pools(system, model, dec.best, pre.best, decode, prefill) if pre.best and dec.best else None
    )
    unit = pools.decode_group_devices(system) if pools else 1
    if pools is not None and total < pools.prefill_instance_devices + unit:
        notes.append(
            f"serving split skipped: {total} devices hold no {pools.prefill_instance_devices}-device prefill "
            f"instance beside a {unit}-device decode group (the searches above are each phase on its own)"
        )
    elif pools is not None:
        serv = sizing.size(system, model, wl, pools, slo, total_devices=total, total_flag="--devices")
        q, inst = slo.percentile_label, pools.prefill_instance_devices
        notes += [
            f"serving split: cmperf.sizing.size, as `cmperf serve --size`, on {inst}-device prefill "
            f"instances ({pools.prefill.microbatches} microbatches) and a decode pool with EP over all its "
            f"ranks ({pools.decode.microbatches} microbatches, MTP {pools.decode.mtp}); TTFT {q} by "
            f"Allen-Cunneen M/G/c over prefill batch slots, TPOT {q} at the decode pool's Little's-law batch",
            "decode and prefill searches: a configuration's TPOT at its batch and the TTFT of one prefill "
            "batch (no queueing) against the SLO values",
        ]
    else:
        notes.append("serving split skipped: no decode or prefill configuration meets the SLOs")
    return OptimizeResult(dec, pre, serv, notes, 100.0 * slo.quantile)


def optimize_json(res: OptimizeResult) -> dict:
    """The JSON body of ``cmperf optimize``: best knobs + predictions, top, pareto, rejected counts, and
    the serving split (``serving``: a ``sizing.SizeResult``; ``slo_percentile``: its SLOs' percentile)."""
    d = res.decode
    s = res.serving.best if res.serving is not None else None
    best = None
    if d.best is not None:
        best = dict(d.best.__dict__)
        best["decode_instance_devices"] = best["devices"]
        best["prefill_devices"] = s["prefill_devices"] if s else None
        best["decode_devices"] = s["decode_devices"] if s else None
        p = res.prefill.best if res.prefill is not None else None
        best["prefill"] = p
        best["serving"] = s
    return {
        "best": best,
        "binding": d.binding,
        "top": d.top,
        "pareto": d.pareto,
        "closest": d.closest,
        "rejected": d.rejected,
        "evaluated": d.evaluated,
        "accepted": d.accepted,
        "space": d.space,
        "constraints": d.constraints,
        "objective": d.objective,
        "prefill": res.prefill,
        "serving": res.serving,
        "slo_percentile": res.slo_percentile,
        "notes": res.notes,
    }
