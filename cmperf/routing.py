"""Expert routing from measured statistics: per-layer popularity, EPLB planning, and the busiest rank's
receive and send volumes for the expert GEMMs and the dispatch/combine all-to-all.

Sources: ``../shared/reference/routing.md`` (TensorRT-LLM EP blog 04, DeepSeek-R1 decode on 32 GB200;
xDeepServe §4.5; SGLang's EP blogs) and ``cloudmatrix384.md`` §3 (DeepSeek-R1: 256 routed experts in 8
groups, top-8 from the top-4 groups, 58 MoE layers). docs/routing.md states the model at length:

1. **Popularity** of expert e in MoE layer l: p_le ∝ exp(σ_l z_le), z_le standard normal over the expert
   ids (an id says nothing about the load: placing experts in id order is a random placement), with a
   share ``GROUP_CORR`` of its variance common to the expert's routing group (group-limited routing
   picks groups before experts), capped at p ≤ 1/k (a token picks k *distinct* experts: max/mean ≤
   E/k, 32 for DeepSeek-R1). σ_l spreads over the layers (uniform quantiles between a cool and a hot
   layer) in an order per dataset (the hot layer changes with the dataset: 36 for translation, 57 for
   GSM8K). A lognormal over a Zipf law: both fit xDeepServe's two facts (lognormal P(p > mean) =
   Φ(-σ/2) = 20% at σ = 1.683, hottest of 256 near 30x; Zipf 0.8: 20%, 24x), but on the TensorRT-LLM
   no-EPLB row a Zipf law gives by-slot/by-rank 8.1 (exponent 0.6: 11.1 / 1.37, routing.md) against the
   measured 7.0 and the lognormal's ~7.4, and a rank-order law has no per-layer realization spread.
2. **EPLB** (DeepSeek's eplb.py, global policy): ``replicate_experts`` gives each of the R*slots - E
   redundant slots, one at a time, to the expert with the highest load per copy; ``balanced_packing``
   puts the copies, heaviest first, on the least loaded rank with a free slot. The plan's input is the
   mode: ``perfect`` the true distribution, ``dynamic`` a finite-window estimate of it (its error is a
   second noise term), ``static`` another dataset's distribution (sharing ``SHARED_FRACTION`` of the
   log-popularity), ``none`` no plan (experts in id order, no replicas). ``ideal`` is the
   perfect-balance assumption, every ratio 1 (CM384 §5's prefill). Tokens of a replicated expert split
   evenly over its copies (xDeepServe §4.5: rotated over the replicas by position).
3. **Per-step noise**: a slot's count has variance D * mean, D = D_COPY * (1 + (m - 1) ρ): Kish's design
   effect for clusters of m = tokens/sequences tokens with intra-sequence correlation ρ (the tokens of
   one sequence route alike: at ρ = 1 the independent samples are the sequences, not the tokens).
4. **Expected maximum** over ranks (slots, senders) of independent normals by Clark's moment matching
   (C. E. Clark, "The greatest of a finite set of random variables", Oper. Res. 9, 1961; within 1% of
   Monte Carlo for 8-288 variables). Everything but the noise level ε is fixed per (experts, top-k,
   groups, EP, slots, plan, dataset, layers): tabulated once on a log grid of ε (cached) and
   interpolated per operating point, so a call is numpy arithmetic.

``rank_load_stats`` is the entry point; ``fit_*`` reproduce the fitted constants from routing.md's
table (development data).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import ArrayLike

from .errors import CmperfError

MODES = ("none", "static", "dynamic", "perfect", "ideal")

#: Slot-count variance over the independent-copy (Poisson) variance at one token per sequence.
#: Fitted (``fit_copy_dispersion``) to the by-rank std of the two EPLB rows of the TensorRT-LLM table
#: (routing.md: 52.0 at EP32 x 9 slots, 53.9 at EP36 x 8 slots, 1024 copies per rank, where Poisson
#: gives 32), those rows taken as EPLB planned on the run's own statistics (``perfect``). It stands for
#: what makes a token's k copies and a batch's tokens co-vary (co-activated experts, requests of one
#: task); the by-rank *max* columns of those rows are then predictions.
D_COPY = 3.48

#: Share of the log-popularity variance common to an expert's routing group (DeepSeek-R1: 8 groups of
#: 32, each token picks its top-4 groups first, CM384 §3). Fitted (``fit_translation``) with the skews
#: below to the no-EPLB row of the TensorRT-LLM table: the by-slot columns fix the skews, the by-rank
#: (max-mean)/mean, larger than independent experts give, this share (at EP32 x 8 a rank holds 8
#: experts of one group in id order).
GROUP_CORR = 0.024

#: Intra-sequence correlation of routing (Kish's ρ). 1: the tokens of one sequence route as one sample
#: (effective samples = sequences; routing.md: one request keeps the same hot experts over 400 steps,
#: hot experts differ per request). An upper bound on the noise: no measured value is in the references.
SEQ_CORR = 1.0

#: ``dynamic`` EPLB: the statistics window holds this many independent batches of sequences (routing.md:
#: imbalance stable over tens to hundreds of iterations, a request's hot experts stable over 400 steps,
#: so a window of ~100 decode iterations sees about one batch of distinct requests).
WINDOW_BATCHES = 1.0

#: ``static`` EPLB plans on another dataset. Share of the log-popularity variance that is the model's
#: own (common to every dataset); the rest is dataset-specific. ASSUMPTION, no measured source (routing.md
#: says only that the hot layers and hot experts change with the dataset): 0.5, no information either
#: way. Only the ordering perfect <= dynamic <= static <= none is tested on it.
SHARED_FRACTION = 0.5

#: Popularity realizations per layer (per-layer statistics are expectations over them).
REALIZATIONS = 8

#: Noise-level grid (ε: standard deviation of a unit share of the group's copies). ε = 1 is one effective copy
#: (the normal approximation has failed long before), 3e-4 is below any plan residual.
_EPS = np.geomspace(3e-4, 1.0, 33)
_LOG_EPS0, _DLOG_EPS = math.log(_EPS[0]), math.log(_EPS[1] / _EPS[0])

_SEED = 14  # issue 14: fixed seeds, every call deterministic


@dataclass(frozen=True)
class Dataset:
    """Per-layer skew profile of one workload on DeepSeek-R1 (58 MoE layers)."""

    sigma_lo: float  # skew of the coolest layer
    sigma_hi: float  # skew of the hottest layer
    hot_layer: int | None  # DeepSeek-R1 layer id (3..60) of the hottest layer; None: not measured
    seed: int  # the dataset-specific part of the popularity and the layer order
    source: str


#: Fitted (``fit_translation``, with GROUP_CORR) to the TensorRT-LLM table's no-EPLB row (routing.md):
#: the coolest layer's by-rank 0.459 (layer 5), the layer-mean by-rank 1.564 and by-slot 10.948.
_TRANSLATION_LO, _TRANSLATION_HI = 0.462, 1.551
#: xDeepServe §4.5 (ShareGPT, one layer): "20% of experts receive more than the average load":
#: lognormal P(p > mean) = Φ(-σ/2) -> σ = 2 Φ^-1(0.8) = 1.683 for that layer, taken as the median
#: layer, with the translation profile's relative spread (an assumption: no per-layer ShareGPT data).
_SHAREGPT_SCALE = 1.683 / ((_TRANSLATION_LO + _TRANSLATION_HI) / 2)

DATASETS: dict[str, Dataset] = {
    "translation": Dataset(
        _TRANSLATION_LO,
        _TRANSLATION_HI,
        36,
        1,
        "TensorRT-LLM EP blog 04 (routing.md): machine translation, hot layer 36, no-EPLB EP32 row",
    ),
    "gsm8k": Dataset(
        _TRANSLATION_LO,
        _TRANSLATION_HI,
        57,
        2,
        "TensorRT-LLM EP blog 04 (routing.md): hot layer 57; skews assumed as translation's",
    ),
    "sharegpt": Dataset(
        _TRANSLATION_LO * _SHAREGPT_SCALE,
        _TRANSLATION_HI * _SHAREGPT_SCALE,
        None,  # xDeepServe names no layer: the seeded order alone
        3,
        "xDeepServe §4.5 (routing.md): 20% of experts above mean load; spread as translation's",
    ),
}
_FIRST_MOE_LAYER, _LAST_LAYER = 3, 60  # DeepSeek-R1: 3 dense layers, then MoE layers 3..60 (CM384 §3)


def _dataset(name: str | Dataset) -> Dataset:
    if isinstance(name, Dataset):
        return name
    if name not in DATASETS:
        raise CmperfError(f"routing dataset {name!r}: one of {', '.join(DATASETS)}")
    return DATASETS[name]


# ---------------------------------------------------------------------------------------------------
# popularity


def layer_sigmas(dataset: str | Dataset, n_layers: int = 58) -> np.ndarray:
    """Per-MoE-layer skew σ_l: uniform quantiles of [σ_lo, σ_hi] in a seeded order per dataset, the
    hottest on the dataset's hot layer (DeepSeek-R1's layer id, scaled by depth for another count)."""
    ds = _dataset(dataset)
    q = (np.arange(n_layers) + 0.5) / n_layers
    sig = ds.sigma_lo + (ds.sigma_hi - ds.sigma_lo) * q
    sig = sig[np.random.default_rng([_SEED, ds.seed, n_layers]).permutation(n_layers)]
    if ds.hot_layer is None:
        return sig
    hot = round((ds.hot_layer - _FIRST_MOE_LAYER) / (_LAST_LAYER - _FIRST_MOE_LAYER) * (n_layers - 1))
    hot = min(max(hot, 0), n_layers - 1)
    i = int(np.argmax(sig))
    sig[[i, hot]] = sig[[hot, i]]
    return sig


def _cap(p: np.ndarray, top_k: int) -> np.ndarray:
    """Rows of p normalized to shares, each capped at 1/k, the excess given to the uncapped experts in
    proportion (a token routes to k distinct experts: an expert's share of the copies is at most 1/k)."""
    p = p / p.sum(axis=-1, keepdims=True)
    cap = 1.0 / top_k
    for _ in range(64):
        over = p > cap * (1.0 + 1e-12)
        if not over.any():
            break
        free = np.where(over, 0.0, p)
        excess = np.where(over, p - cap, 0.0).sum(axis=-1, keepdims=True)
        scale = 1.0 + excess / np.maximum(free.sum(axis=-1, keepdims=True), 1e-300)
        p = np.where(over, cap, free * scale)
    return p


def _normal(
    seed: int, n_layers: int, n_experts: int, n_groups: int, group_corr: float, reals: int
) -> np.ndarray:
    """Unit-variance normals (n_layers, reals, n_experts): a share ``group_corr`` per routing group
    (contiguous expert ids, as DeepSeek's gate groups them), the rest per expert."""
    rng = np.random.default_rng([_SEED, seed, n_layers, n_experts, reals])
    z = rng.standard_normal((n_layers, reals, n_experts))
    if n_groups > 1 and group_corr > 0:
        g = rng.standard_normal((n_layers, reals, n_groups))
        z = math.sqrt(1.0 - group_corr) * z + math.sqrt(group_corr) * np.repeat(g, n_experts // n_groups, -1)
    return z


def _shares(
    sigmas: np.ndarray,
    dataset_seed: int,
    n_experts: int,
    top_k: int,
    n_groups: int,
    shared: float,
    group_corr: float = GROUP_CORR,
    reals: int = REALIZATIONS,
) -> np.ndarray:
    """Shares of the routed copies (n_layers, reals, n_experts), each row summing to 1, for per-layer
    skews ``sigmas``: log-popularity sqrt(shared) * the model's part (seed common to every dataset) +
    sqrt(1 - shared) * the dataset's part."""
    n_layers = sigmas.size
    parts = (_normal(s, n_layers, n_experts, n_groups, group_corr, reals) for s in (0, dataset_seed))
    z = math.sqrt(shared) * next(parts) + math.sqrt(1.0 - shared) * next(parts)
    sz = sigmas[:, None, None] * z
    return _cap(np.exp(sz - sz.max(axis=-1, keepdims=True)), top_k)


def popularity(
    dataset: str | Dataset,
    n_experts: int = 256,
    top_k: int = 8,
    n_layers: int = 58,
    n_groups: int = 8,
    shared: float = SHARED_FRACTION,
) -> np.ndarray:
    """Shares of the routed copies of ``dataset``, (n_layers, REALIZATIONS, n_experts)."""
    ds = _dataset(dataset)
    return _shares(layer_sigmas(ds, n_layers), ds.seed, n_experts, top_k, n_groups, shared)


# ---------------------------------------------------------------------------------------------------
# EPLB (DeepSeek eplb.py, global policy)


def replicate(p: np.ndarray, n_slots: int) -> np.ndarray:
    """Copies per expert (rows of p): each redundant slot to the expert with the highest load per copy
    (eplb.py ``replicate_experts``)."""
    copies = np.ones(p.shape, dtype=np.int64)
    idx = np.arange(p.shape[0])
    for _ in range(n_slots - p.shape[1]):
        copies[idx, np.argmax(p / copies, axis=1)] += 1
    return copies


def pack(loads: np.ndarray, ranks: int, capacity: int) -> np.ndarray:
    """Rank of each item (rows of ``loads``): heaviest first onto the least loaded rank holding fewer than
    ``capacity`` items (eplb.py ``balanced_packing``)."""
    n, items = loads.shape
    order = np.argsort(-loads, axis=1, kind="stable")
    rank_load = np.zeros((n, ranks))
    used = np.zeros((n, ranks), dtype=np.int64)
    out = np.zeros((n, items), dtype=np.int64)
    idx = np.arange(n)
    for j in range(items):
        item = order[:, j]
        r = np.argmin(np.where(used < capacity, rank_load, np.inf), axis=1)
        out[idx, item] = r
        rank_load[idx, r] += loads[idx, item]
        used[idx, r] += 1
    return out


def placement(
    plan_p: np.ndarray | None, n_experts: int, rows: int, ranks: int, slots: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(expert, its copies, rank) of every used slot, each (rows, used slots): EPLB (replicate, then
    pack) on the shares ``plan_p``, or with None (no EPLB) the experts in id order without replicas, as
    evenly over the ranks as they split (the redundant slots unused)."""
    if plan_p is None:
        expert = np.tile(np.arange(n_experts), (rows, 1))
        return expert, np.ones_like(expert), expert * min(ranks, n_experts) // n_experts
    copies = replicate(plan_p, ranks * slots)
    expert = np.stack([np.repeat(np.arange(n_experts), c) for c in copies])
    slot_copies = np.take_along_axis(copies, expert, axis=1)
    rank = pack(np.take_along_axis(plan_p, expert, axis=1) / slot_copies, ranks, slots)
    return expert, slot_copies, rank


# ---------------------------------------------------------------------------------------------------
# expected maximum of independent normals


def _ncdf(x: np.ndarray) -> np.ndarray:
    """Standard normal CDF (erfc by Numerical Recipes' Chebyshev fit, §6.2: fractional error < 1.2e-7)."""
    z = np.abs(x) * (1.0 / math.sqrt(2.0))
    t = 1.0 / (1.0 + 0.5 * z)
    c = (-0.82215223, 1.48851587, -1.13520398, 0.27886807, -0.18628806, 0.09678418, 0.37409196, 1.00002368)
    poly = 0.17087277
    for coef in c:
        poly = coef + t * poly
    half_erfc = 0.5 * t * np.exp(-z * z - 1.26551223 + t * poly)
    return np.where(x >= 0, 1.0 - half_erfc, half_erfc)


def expected_max(mu: np.ndarray, weight: np.ndarray, eps2: np.ndarray) -> np.ndarray:
    """E[max_i X_i], X_i ~ N(mu_i, weight_i * eps2) independent along the last axis of ``mu`` and
    ``weight`` (rows, n), at each noise level of ``eps2`` (G,): (rows, G). Clark 1961: the running
    maximum is moment-matched to a normal, the variables taken largest mean first. A noise level is
    finished once every remaining variable lies 8 standard deviations below the running maximum (its
    contribution then is below 1e-15 of it)."""
    order = np.argsort(-mu, axis=-1, kind="stable")
    mu_t = np.ascontiguousarray(np.take_along_axis(mu, order, axis=-1).T)  # (n, rows)
    w_t = np.ascontiguousarray(np.take_along_axis(weight, order, axis=-1).T)
    w_tail = np.maximum.accumulate(w_t[::-1], axis=0)[::-1]  # bounds the spread of every later variable
    result = np.empty((mu.shape[0], eps2.size))
    live = np.arange(eps2.size)
    e2 = eps2[None, :]
    m = np.repeat(mu_t[0][:, None], eps2.size, axis=1)
    s2 = w_t[0][:, None] * e2
    inv_sqrt_2pi = 1.0 / math.sqrt(2.0 * math.pi)
    for i in range(1, mu_t.shape[0]):
        if i % 8 == 0:
            gap = (m - mu_t[i][:, None]) / np.sqrt(np.maximum(s2 + w_tail[i][:, None] * e2, 1e-300))
            done = (gap > 8.0).all(axis=0)
            if done.any():
                result[:, live[done]] = m[:, done]
                keep = ~done
                live, m, s2, e2 = live[keep], m[:, keep], s2[:, keep], e2[:, keep]
                if not live.size:
                    return result
        mi, vi = mu_t[i][:, None], w_t[i][:, None] * e2
        theta = np.sqrt(np.maximum(s2 + vi, 1e-300))
        a = (m - mi) / theta
        cdf = _ncdf(a)
        pdf = np.exp(-0.5 * np.minimum(a * a, 1e4)) * inv_sqrt_2pi
        e1 = m * cdf + mi * (1.0 - cdf) + theta * pdf
        sec = (m * m + s2) * cdf + (mi * mi + vi) * (1.0 - cdf) + (m + mi) * theta * pdf
        m, s2 = e1, np.maximum(sec - e1 * e1, 0.0)
    result[:, live] = m
    return result


# ---------------------------------------------------------------------------------------------------
# statistics of one placement over the noise grid

_RATIO_KEYS = (
    "recv_max_over_mean",
    "recv_cv",
    "slot_max_over_mean",
    "slot_cv",
    "send_max_over_mean",
    "recv_rank_max_over_mean",
)


def _row_stats(
    p: np.ndarray,
    slot_expert: np.ndarray,
    slot_copies: np.ndarray,
    slot_rank: np.ndarray,
    ranks: int,
    top_k: int,
    eps: np.ndarray,
) -> dict[str, np.ndarray]:
    """Statistics per row of true shares ``p`` (rows, E) under a placement, at the noise levels ``eps``
    (G,): each (rows, G); 'rank_copies_per_token' (rows,)."""
    s = np.take_along_axis(p, slot_expert, axis=1) / slot_copies  # true share of each used slot
    rows, n_used = s.shape
    eps2 = eps**2
    w = s / slot_copies  # a replica carries 1/c of its expert's noise (tokens rotated over the copies)
    a = np.zeros((rows, ranks))  # rank shares
    b = np.zeros((rows, ranks))  # their variance weights
    ridx = np.broadcast_to(np.arange(rows)[:, None], slot_rank.shape)
    np.add.at(a, (ridx, slot_rank), s)
    np.add.at(b, (ridx, slot_rank), w)
    out = {
        "recv_max_over_mean": ranks * expected_max(a, b, eps2),
        "recv_cv": ranks * np.sqrt(b.mean(axis=1)[:, None] * eps2 + a.var(axis=1)[:, None]),
        "slot_max_over_mean": n_used * expected_max(s, w, eps2),
        "slot_cv": n_used * np.sqrt(w.mean(axis=1)[:, None] * eps2 + s.var(axis=1)[:, None]),
    }
    # the busiest sender: a rank's tokens send (1 - a_r) of their copies (share 1/R) off the rank; the
    # variance is that of its local copies (share a_r of its 1/R)
    if ranks > 1:
        send = expected_max((1.0 - a) / ranks, a / ranks, eps2)
        out["send_max_over_mean"] = send / ((1.0 - 1.0 / ranks) / ranks)
    else:
        out["send_max_over_mean"] = np.ones((rows, eps.size))
    # one message per (token, destination rank): P(token reaches r) = 1 - prod over r's slots (1 - k s_j),
    # in messages per token; a token's count at r is Bernoulli: variance pi (1 - pi) at k eps2 per token
    miss = np.ones((rows, ranks))
    np.multiply.at(miss, (ridx, slot_rank), 1.0 - np.minimum(top_k * s, 1.0))
    pi = 1.0 - miss
    per_token = pi.sum(axis=1)
    out["recv_rank_max_over_mean"] = (
        expected_max(pi, pi * (1.0 - pi) * top_k, eps2) / (per_token / ranks)[:, None]
    )
    out["rank_copies_per_token"] = per_token
    return out


def _plan_shares(
    dataset: str,
    plan_dataset: str | None,
    n_experts: int,
    top_k: int,
    n_layers: int,
    n_groups: int,
    shared: float,
) -> np.ndarray:
    """What ``static`` plans on: ``plan_dataset``'s shares, or (None) another dataset's: the served
    dataset's skews in another layer order (the hot layers change with the dataset) and its own
    dataset-specific part."""
    ds = _dataset(plan_dataset or dataset)
    sig = layer_sigmas(ds, n_layers)
    seed = ds.seed
    if plan_dataset is None:
        seed += 100
        sig = sig[np.random.default_rng([_SEED, seed, n_layers]).permutation(n_layers)]
    return _shares(sig, seed, n_experts, top_k, n_groups, shared)


@lru_cache(maxsize=256)
def _tables(
    n_experts: int,
    top_k: int,
    n_groups: int,
    ranks: int,
    slots: int,
    plan: str,
    dataset: str,
    n_layers: int,
    plan_dataset: str | None,
    shared: float,
) -> dict[str, np.ndarray]:
    """Per layer (n_layers, len(_EPS)) statistics of one EP group under ``plan`` (none, static or
    perfect; dynamic is perfect at a larger ε), averaged over the popularity realizations, and
    'rank_copies_per_token' (n_layers,). Read-only (cached)."""
    p = popularity(dataset, n_experts, top_k, n_layers, n_groups, shared).reshape(-1, n_experts)
    plan_p = None if plan == "none" else p
    if plan == "static":
        plan_p = _plan_shares(dataset, plan_dataset, n_experts, top_k, n_layers, n_groups, shared)
        plan_p = plan_p.reshape(-1, n_experts)
    rows = _row_stats(p, *placement(plan_p, n_experts, p.shape[0], ranks, slots), ranks, top_k, _EPS)
    tables = {k: v.reshape(n_layers, REALIZATIONS, *v.shape[1:]).mean(axis=1) for k, v in rows.items()}
    for v in tables.values():
        v.flags.writeable = False
    return tables


# ---------------------------------------------------------------------------------------------------
# entry point


def noise_level(
    top_k: int,
    ep_size: ArrayLike,
    eplb: str,
    tokens_per_rank: ArrayLike,
    seqs_per_rank: ArrayLike,
    seq_corr: float = SEQ_CORR,
    window_batches: float = WINDOW_BATCHES,
    copy_dispersion: float = D_COPY,
) -> np.ndarray:
    """ε per point: the standard deviation of a unit share of the EP group's copies per step.

    ε² = D_COPY (1 + (m - 1) ρ) / N with N = tokens_per_rank * ep * k copies and m = tokens per sequence
    (at least 1); ``dynamic`` adds the plan's estimation error D_COPY ρ / (W * sequences * k), a window
    of W batches whose sequences count once each (ρ = 1) however many tokens they route in it."""
    t = np.asarray(tokens_per_rank, dtype=float)
    s = np.minimum(np.asarray(seqs_per_rank, dtype=float), t)
    ep = np.asarray(ep_size, dtype=float)
    m = np.maximum(t / np.maximum(s, 1e-300), 1.0)
    eps2 = copy_dispersion * (1.0 + (m - 1.0) * seq_corr) / np.maximum(t * ep * top_k, 1e-300)
    if eplb == "dynamic":
        eps2 = eps2 + copy_dispersion * seq_corr / np.maximum(s * ep * top_k * window_batches, 1e-300)
    return np.sqrt(eps2)


def _interp(table: np.ndarray, eps: np.ndarray) -> np.ndarray:
    """``table`` (L, G) or (G,) interpolated linearly in log ε at ``eps`` (clamped to the grid):
    eps.shape + (L,) or eps.shape."""
    u = (np.log(np.clip(eps, _EPS[0], _EPS[-1])) - _LOG_EPS0) / _DLOG_EPS
    i = np.clip(np.floor(u).astype(np.int64), 0, _EPS.size - 2)
    f = u - i
    val = table[..., i] * (1.0 - f) + table[..., i + 1] * f
    return np.moveaxis(val, 0, -1) if table.ndim == 2 else val


def rank_load_stats(
    n_experts: int,
    top_k: int,
    ep_size: ArrayLike,
    slots_per_rank: ArrayLike,
    eplb: str,
    dataset: str,
    tokens_per_rank: ArrayLike,
    seqs_per_rank: ArrayLike,
    layer: int | str | None = None,
    *,
    n_groups: int = 1,
    n_layers: int = 58,
    plan_dataset: str | None = None,
    seq_corr: float = SEQ_CORR,
    window_batches: float = WINDOW_BATCHES,
    shared: float = SHARED_FRACTION,
) -> dict[str, np.ndarray]:
    """Expected load statistics of the busiest rank of one EP group, per operating point.

    ``ep_size`` ranks holding routed experts x ``slots_per_rank`` expert slots; each rank routes
    ``tokens_per_rank`` tokens per step from ``seqs_per_rank`` sequences (decode: batch * (1 + MTP)
    tokens of batch sequences; prefill: a chunk's tokens of its prompts) to ``top_k`` of ``n_experts``
    experts in ``n_groups`` routing groups (the model's n_group: 8 for DeepSeek-R1). ``eplb``: none |
    static | dynamic | perfect | ideal (module docstring); ``plan_dataset``: what ``static`` planned on
    (None: another dataset of the same skews). ``layer``: None (the mean over the MoE layers: what a
    step's layers add up to, and what the TensorRT-LLM table reports), an MoE-layer index 0..n_layers-1
    (DeepSeek-R1: layer id - 3), or "all" (a trailing axis of n_layers).

    Returns arrays over the broadcast of ep_size, slots_per_rank, tokens_per_rank, seqs_per_rank:

    - recv_max_over_mean: E[max over ranks of the expert copies a rank receives] / mean (the busiest
      rank's expert-GEMM rows, its dispatch receive and combine send volume; the same ratio for
      remote-only copies, since every rank keeps 1/R of its own tokens' copies to a rank)
    - recv_cv: std / mean of the ranks' copies
    - slot_max_over_mean, slot_cv: the same over the used expert slots (the hottest expert copy)
    - send_max_over_mean: the busiest sender's remote copies / mean (its dispatch send, combine receive)
    - recv_rank_max_over_mean: the busiest rank's messages / mean with one message per (token,
      destination rank) (a dispatch sending a token once per rank)
    - rank_copies_per_token: destination ranks per token in that mode (ep (1 - (1 - 1/ep)^k) if uniform)
    """
    if eplb not in MODES:
        raise CmperfError(f"--eplb: {eplb!r} is not one of {' | '.join(MODES)}")
    _dataset(dataset)
    if plan_dataset is not None:
        _dataset(plan_dataset)
    if n_groups < 1 or n_experts % n_groups:
        raise CmperfError(f"{n_groups} routing groups do not divide the {n_experts} routed experts")
    if isinstance(layer, str) and layer != "all":
        raise CmperfError(f"layer: {layer!r} is not None, an MoE-layer index or 'all'")
    if isinstance(layer, int) and not 0 <= layer < n_layers:
        raise CmperfError(f"layer: {layer} is not an MoE-layer index 0..{n_layers - 1}")
    ep = np.asarray(ep_size, dtype=float)
    sl = np.asarray(slots_per_rank, dtype=float)
    tok = np.asarray(tokens_per_rank, dtype=float)
    seq = np.asarray(seqs_per_rank, dtype=float)
    shape = np.broadcast_shapes(ep.shape, sl.shape, tok.shape, seq.shape)
    tail = (n_layers,) if layer == "all" else ()
    if eplb == "ideal":
        out = {k: np.full(shape + tail, 0.0 if k.endswith("_cv") else 1.0) for k in _RATIO_KEYS}
        per_tok = ep * (1.0 - (1.0 - 1.0 / np.maximum(ep, 1.0)) ** top_k)
        out["rank_copies_per_token"] = np.broadcast_to(
            per_tok.reshape(ep.shape + (1,) * len(tail)), shape + tail
        ).copy()
        return out
    small = np.broadcast_shapes(ep.shape, sl.shape)
    ep_s, sl_s = np.broadcast_to(ep, small), np.broadcast_to(sl, small)
    pairs = sorted(set(zip(ep_s.ravel().tolist(), sl_s.ravel().tolist(), strict=True)))
    for e, n in pairs:
        if e < 1 or n < 1 or e != int(e) or n != int(n):
            raise CmperfError(f"EP {e:g} x {n:g} slots per rank: both must be positive integers")
        if e * n < n_experts:
            raise CmperfError(
                f"EP{e:g} x {n:g} slots per rank hold {e * n:g} of the {n_experts} routed experts"
            )
    eps = np.broadcast_to(noise_level(top_k, ep, eplb, tok, seq, seq_corr, window_batches), shape)
    res = {k: np.empty(shape + tail) for k in (*_RATIO_KEYS, "rank_copies_per_token")}
    plan = "perfect" if eplb == "dynamic" else eplb
    pdata = plan_dataset if eplb == "static" else None
    for e, n in pairs:
        tables = _tables(n_experts, top_k, n_groups, int(e), int(n), plan, dataset, n_layers, pdata, shared)
        where = np.broadcast_to((ep_s == e) & (sl_s == n), shape)
        pts = eps[where]
        for k in (*_RATIO_KEYS, "rank_copies_per_token"):
            t = tables[k]
            t = t.mean(axis=0) if layer is None else (t if layer == "all" else t[int(layer)])
            res[k][where] = _interp(t, pts) if k in _RATIO_KEYS else t
    empty = np.broadcast_to(tok <= 0, shape)  # nothing routed: every rank alike
    if empty.any():
        for k in _RATIO_KEYS:
            res[k][empty] = 0.0 if k.endswith("_cv") else 1.0
    return res


# ---------------------------------------------------------------------------------------------------
# the fits behind the constants (development data: the TensorRT-LLM table in routing.md). Not on any
# prediction's path; tests/test_routing_measured.py checks that the constants are their results.

#: TensorRT-LLM EP blog 04 (routing.md): DeepSeek-R1 decode, 1024 copies = 128 tokens (one per
#: sequence) x top-8 per rank and step.
TRT_TOKENS_PER_RANK = 128
TRT_TABLE = {
    # (eplb, EP, slots per rank): by-rank (max-mean)/mean, by-rank std/mean, by-slot (max-mean)/mean,
    # by-slot std/mean; means 1024 copies per rank, 128 per slot (256 or 288 slots at EP36) or 114 (288)
    ("none", 32, 8): (1.564, 491.6 / 1024, 10.948, 164.1 / 128),
    ("perfect", 32, 9): (0.109, 52.0 / 1024, 1.792, 77.8 / (32 * 1024 / 288)),
    ("perfect", 36, 8): (0.115, 53.9 / 1024, 1.791, 87.5 / 128),
}
TRT_COOLEST_LAYER = 0.459  # layer 5, no EPLB, by-rank (max-mean)/mean (routing.md)


def _trt_stats(
    sigmas: np.ndarray,
    eplb: str,
    ranks: int,
    slots: int,
    copy_dispersion: float,
    group_corr: float,
    reals: int = REALIZATIONS,
) -> dict[str, float]:
    """Mean statistics over the layers of skews ``sigmas`` at the TensorRT-LLM operating point."""
    p = _shares(sigmas, DATASETS["translation"].seed, 256, 8, 8, SHARED_FRACTION, group_corr, reals)
    p = p.reshape(-1, 256)
    t = TRT_TOKENS_PER_RANK
    eps = noise_level(8, ranks, eplb, t, t, copy_dispersion=copy_dispersion).reshape(1)
    rows = _row_stats(
        p, *placement(None if eplb == "none" else p, 256, p.shape[0], ranks, slots), ranks, 8, eps
    )
    return {k: float(v.mean()) for k, v in rows.items()}


def fit_copy_dispersion(group_corr: float = GROUP_CORR) -> float:
    """D_COPY: the model's by-rank std/mean at the two EPLB rows of TRT_TABLE equal to theirs on average
    (least squares in the variance, which is the placement's residual + D x the Poisson variance)."""
    sig = layer_sigmas("translation")
    num = den = 0.0
    for (eplb, ranks, slots), (_, cv, _, _) in TRT_TABLE.items():
        if eplb == "none":
            continue
        at0 = _trt_stats(sig, eplb, ranks, slots, 0.0, group_corr)["recv_cv"] ** 2
        per_d = _trt_stats(sig, eplb, ranks, slots, 1.0, group_corr)["recv_cv"] ** 2 - at0
        num += per_d * (cv**2 - at0)
        den += per_d**2
    return num / den


def fit_translation(copy_dispersion: float = D_COPY) -> tuple[float, float, float]:
    """(σ_lo, σ_hi, GROUP_CORR) such that the model gives the no-EPLB row of TRT_TABLE's layer-mean
    by-rank and by-slot (max-mean)/mean and, for a layer at σ_lo (256 realizations), the coolest
    measured layer's by-rank (Newton's method, finite differences)."""
    base = DATASETS["translation"]
    target = np.array([TRT_COOLEST_LAYER, TRT_TABLE[("none", 32, 8)][0], TRT_TABLE[("none", 32, 8)][2]])

    def resid(x: np.ndarray) -> np.ndarray:
        sig = layer_sigmas(Dataset(float(x[0]), float(x[1]), base.hot_layer, base.seed, "fit"))
        row = _trt_stats(sig, "none", 32, 8, copy_dispersion, float(x[2]))
        cool = _trt_stats(np.array([x[0]]), "none", 32, 8, copy_dispersion, float(x[2]), reals=256)
        got = [cool["recv_max_over_mean"], row["recv_max_over_mean"], row["slot_max_over_mean"]]
        return np.array(got) - 1.0 - target

    x = np.array([base.sigma_lo, base.sigma_hi, GROUP_CORR])
    for _ in range(20):
        r = resid(x)
        if np.max(np.abs(r / target)) < 1e-4:
            break
        steps = np.array([1e-3, 1e-3, 1e-3])
        jac = np.column_stack([(resid(x + steps[j] * np.eye(3)[j]) - r) / steps[j] for j in range(3)])
        x = x - np.linalg.solve(jac, r)
        x[2] = min(max(x[2], 0.0), 0.95)
    return float(x[0]), float(x[1]), float(x[2])
