"""Sizing: split a device total into prefill instances, a decode pool and cache DRAM under SLOs.

The one sizing model (``cmperf serve --size`` and ``cmperf optimize`` both call ``size``): the limits of a
split are those of ``cmperf.serving`` (TTFT by Allen-Cunneen M/G/c over prefill batch slots, TPOT at the
decode pool's Little's-law batch), both on ``slo.quantile``; the split with the most goodput per device
wins, or with a target rate the fewest devices that serve it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from .errors import CmperfError
from .serving import (
    APPROXIMATIONS,
    SLO,
    Pools,
    PrefillGrid,
    Workload,
    cache_pool,
    decode_curves,
    prefill_grid,
    tpot_limits_rps,
    ttft_limit_rps,
    workload_inputs,
)
from .specs import Model, System


@dataclass(frozen=True)
class SizeResult:
    """A P/D/cache split: ``best`` and the ``candidates`` ranked by goodput per device (or devices for a
    rate), every rate a limit of the SLO on ``slo_percentile`` (TTFT and TPOT alike)."""

    system: str
    model: str
    mode: str  # "total" (max goodput/device at a device total) | "rate" (fewest devices for a rate)
    total_devices: int
    rate_rps: float | None
    slo: dict  # {"ttft_s", "tpot_s", "quantile": "p99"}, as ServeResult.slo
    slo_percentile: float  # 99.0: the percentile of TTFT and of TPOT that must meet the SLO
    inputs: dict  # the workload and pool knobs the split was sized with
    best: dict
    candidates: list[dict]
    approximations: list[str]


#: Unit counts searched one by one before the geometric spacing (CloudMatrix384: every split).
DENSE_COUNTS = 64


def unit_counts(top: int, dense: int = DENSE_COUNTS, step: float = 1.125) -> np.ndarray:
    """1, 2, ..., ``dense``, then counts spaced by ``step`` (~1/8) up to ``top``, and ``top``: the counts of
    a unit (node, prefill instance, decode step) a search tries, so a pod of thousands of chips stays a few
    hundred candidates while every count up to ``dense`` is tried."""
    counts = list(range(1, min(top, dense) + 1))
    n = float(dense)
    while n * step <= top:
        n *= step
        counts.append(round(n))
    if top > dense:
        counts.append(top)
    return np.array(sorted(set(counts)), dtype=int)


def _with_instances(grid: PrefillGrid, n: int) -> PrefillGrid:
    """The prefill grid of ``n`` instances from that of one: an instance's batch service does not depend on
    how many instances run (the grid's capacity is the instances x the best batch rate)."""
    return replace(grid, instances=int(n), capacity_rps=float(np.max(n * grid.batch_prompts / grid.batch_s)))


def size(
    system: System,
    model: Model,
    wl: Workload,
    pools: Pools,
    slo: SLO | None = None,
    *,
    total_devices: int | None = None,
    cache_fractions=(0.0, 0.125, 0.25, 0.5, 1.0),
    decode_step: int = 8,
    total_flag: str = "--devices-total",
) -> SizeResult:
    """Split ``total_devices`` into prefill instances and decode devices (and pick cache DRAM) for the
    most goodput per device, the goodput of a split being min(TTFT-limited rate(P, cache), TPOT-limited
    rate(D)) — the pools decouple, so each limit is computed once per P and per D and the grid of splits
    is a vectorized outer minimum. With ``wl.rate_per_s`` set ("rate" mode) the best split is the one
    with the fewest devices whose limits both reach the rate. Decode devices step by ``decode_step``
    (a node); cache DRAM is a fraction of the DRAM of the nodes in use, the smallest that is within
    0.5% of the best goodput is reported. A total too small for one prefill instance and one step of
    decode devices steps by the decode record's TP group instead (1 device without attention TP).
    ``total_flag``: the caller's flag for the total, named in its errors (``cmperf optimize --devices``).

    The limits are those of ``evaluate`` (``ttft_limit_rps``: Allen-Cunneen M/G/c TTFT tail;
    ``tpot_limit_rps``: the decode fixed point), both on ``slo.quantile`` (p99 by default,
    ``DEFAULT_SLO_PERCENTILE``). This is the one sizing model: ``cmperf serve --size`` and
    ``cmperf optimize`` (``cmperf.search.optimize``, with the knobs its searches found) both call it.
    Worked number: CloudMatrix384, 384 NPUs, 4K/256, TTFT p99 <= 2 s, TPOT p99 <= 50 ms -> 304 prefill
    (19 x 16) + 72 decode at 523.9 req/s, the decode pool binding.
    """
    from .domains import POOLS

    slo = slo or SLO()
    pools.check_numbers()
    pools = pools.resolve(system, model)
    total = (
        system.num_devices
        if total_devices is None
        else int(POOLS["devices_total"].check(total_devices, total_flag, text=False))
    )
    if total < 1 or total > system.num_devices:
        raise CmperfError(f"{total_flag}: {total} is outside 1..{system.num_devices} ({system.name})")
    inst = pools.prefill_instance_devices
    if total - inst < decode_step:  # a small total: every whole number of the decode record's TP groups
        decode_step = pools.decode_group_devices(system)
    wl0 = replace(wl, rate_per_s=wl.rate_per_s or 1.0, concurrency=None)
    wl0.check(model)
    pools.split(inst, decode_step).check(system, model, wl0)  # the smallest decode pool tried
    if not slo.ttft_s > 0 or not slo.tpot_s > 0:
        raise CmperfError("--ttft-slo and --tpot-slo must be positive times")
    if not 0.5 <= slo.quantile < 1.0:
        raise CmperfError(f"--slo-percentile: must be in [50, 100), got {100 * slo.quantile:g}")
    if inst < 1:
        raise CmperfError("--prefill-instance-devices: must be at least 1")
    ps = inst * unit_counts((total - 1) // inst)
    ds = decode_step * unit_counts((total - 1) // decode_step)
    if ps.size == 0 or ds.size == 0:
        raise CmperfError(
            f"{total_flag}: {total} devices leave no room for one {inst}-device prefill instance "
            f"and {decode_step} decode devices"
        )
    # TPOT-limited rate per decode size, every size in two evaluate calls (0 where the lengths do not fit
    # the pool's HBM)
    curves = decode_curves(system, model, wl0, pools.split(inst, 1), ds)
    fit = [j for j, cv in enumerate(curves) if cv is not None]
    tpot_lim = np.zeros(ds.size)
    tpot_lim[fit] = tpot_limits_rps([cv for cv in curves if cv is not None], slo)
    dram_node = system.cpu_dram_per_node_bytes
    dram_total = dram_node * math.ceil(total / system.devices_per_node)
    fr = np.asarray(cache_fractions, dtype=float)
    ttft_lim = np.zeros((fr.size, ps.size))
    by_hit: dict[float, np.ndarray] = {}
    for k, f in enumerate(fr):
        # cache DRAM: a fraction of the DRAM of the nodes the whole split occupies. It acts only through the
        # token hit rate, and one instance's prefill service does not depend on the instance count: one
        # prefill evaluation per distinct hit rate (a single one without a cache model), each P from it.
        pk = replace(pools.split(inst, 1), cache_dram_bytes=f * dram_total)
        hit = cache_pool(system, model, wl0, pk).token_hit_rate
        if hit not in by_hit:
            one = prefill_grid(system, model, wl0, pk, hit)
            by_hit[hit] = np.array(
                [ttft_limit_rps(_with_instances(one, int(pp // inst)), wl0, slo) for pp in ps]
            )
        ttft_lim[k] = by_hit[hit]
    P, D = np.meshgrid(ps, ds, indexing="ij")
    valid = total >= (P + D)
    rate_ok = np.minimum(ttft_lim[:, :, None], tpot_lim[None, None, :])  # [cache, P, D]
    rate_ok = np.where(valid[None], rate_ok, 0.0)
    if wl.rate_per_s is None:
        mode = "total"
        score = rate_ok / (P + D)[None]  # goodput per device of the devices used
    else:
        mode = "rate"
        meets = rate_ok >= wl.rate_per_s
        score = np.where(meets, wl.rate_per_s / (P + D)[None], 0.0)
    best_score = float(score.max())
    if best_score <= 0:
        k, i, j = 0, 0, 0
    else:
        # smallest cache fraction within 0.5% of the best, then the best split at it
        k = int(np.argmax(score.reshape(fr.size, -1).max(axis=1) >= best_score * 0.995))
        i, j = map(int, np.unravel_index(int(np.argmax(score[k])), score[k].shape))
    cands = []
    order = np.argsort(-score[k].ravel(), kind="stable")[:10]
    for flat in order:
        ii, jj = np.unravel_index(int(flat), score[k].shape)
        if not valid[ii, jj]:
            continue
        cands.append(
            {
                "prefill_devices": int(ps[ii]),
                "decode_devices": int(ds[jj]),
                "ttft_slo_rps": float(ttft_lim[k, ii]),
                "tpot_slo_rps": float(tpot_lim[jj]),
                "goodput_rps": float(rate_ok[k, ii, jj]),
                "goodput_rps_per_device": float(score[k, ii, jj]),
            }
        )
    best = {
        "prefill_devices": int(ps[i]),
        "prefill_instances": int(ps[i]) // inst,
        "decode_devices": int(ds[j]),
        "devices": int(ps[i] + ds[j]),
        "cache_dram_bytes": float(fr[k] * dram_total),
        "ttft_slo_rps": float(ttft_lim[k, i]),
        "tpot_slo_rps": float(tpot_lim[j]),
        "goodput_rps": float(rate_ok[k, i, j]) if mode == "total" else float(wl.rate_per_s or 0.0),
        "goodput_rps_per_device": best_score,
        "binding": "prefill (TTFT)" if ttft_lim[k, i] <= tpot_lim[j] else "decode (TPOT)",
        "feasible": best_score > 0,
    }
    inputs = {
        **workload_inputs(wl),
        "prefill_instance_devices": inst,
        "prefill_ep_size": pools.prefill.ep_size or inst * system.ranks_per_device,
        "prefill_microbatches": pools.prefill.microbatches,
        "decode_step_devices": decode_step,
        "decode_microbatches": pools.decode.microbatches,
        "mtp": pools.decode.mtp,
        "mtp_accept": pools.decode.mtp_accept,
        "cache_plane": pools.plane(system),
        "precision": pools.decode.precision.__dict__,
    }
    return SizeResult(
        system.name,
        model.name,
        mode,
        total,
        wl.rate_per_s,
        {"ttft_s": slo.ttft_s, "tpot_s": slo.tpot_s, "quantile": slo.percentile_label},
        100 * slo.quantile,
        inputs,
        best,
        cands,
        [
            *APPROXIMATIONS[:6],
            f"sizing: prefill in {inst}-device instances, decode in steps of {decode_step} devices "
            "(EP = all decode ranks), cache DRAM as a fraction of the nodes' DRAM; the SLO "
            f"quantile is {slo.percentile_label}",
        ],
    )
