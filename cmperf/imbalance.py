"""Expected max/mean routed-expert load over the ranks of an EP group (the MoE layer waits for the
most loaded rank).

Statistical model, stated:
1. Popularity: expert e (sorted hottest first) receives a share p_e ∝ (e+1)^-zipf of the top-k
   routing decisions (``popularity_zipf`` in the model file; 0 = uniform).
2. Redundancy, DeepSeek EPLB (github.com/deepseek-ai/EPLB, ``replicate_experts``): each of the
   ``redundant`` extra copies goes, one at a time, to the expert with the highest load per copy;
   a copy carries p_e / copies_e.
3. Packing (EPLB ``balanced_packing``): copies sorted by load are placed greedily on the least
   loaded rank that still has a free slot (``slots`` per rank), giving each rank a share w_r.
4. Sampling noise: with N tokens routed top-k, rank r receives ~Poisson(mu_r = N k w_r) copies;
   the expected maximum over ranks is approximated by max_r(mu_r + z_R sqrt(mu_r)), with z_R the
   expected maximum of R standard normals, sqrt(2 ln R) - (ln ln R + ln 4π) / (2 sqrt(2 ln R)).

imbalance = E[max load] / (N k / R). ``perfect`` EPLB is 1.0 by definition.
"""

from __future__ import annotations

import heapq
import math
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import ArrayLike


@lru_cache(maxsize=256)
def rank_shares(n_experts: int, redundant: int, ranks: int, slots: int, zipf: float) -> tuple[float, ...]:
    """Share of all routed copies each rank receives after EPLB replication and packing (sums to 1)."""
    p = np.arange(1, n_experts + 1, dtype=float) ** -zipf
    p /= p.sum()
    copies = np.ones(n_experts, dtype=int)
    heap = [(-pe, e) for e, pe in enumerate(p)]
    heapq.heapify(heap)
    for _ in range(max(redundant, 0)):
        _, e = heapq.heappop(heap)
        copies[e] += 1
        heapq.heappush(heap, (-p[e] / copies[e], e))
    loads = np.sort(np.repeat(p / copies, copies))[::-1]
    cap = max(slots, math.ceil(len(loads) / ranks))
    rank_load = [(0.0, r) for r in range(ranks)]
    used = [0] * ranks
    share = [0.0] * ranks
    for q in loads:
        while True:
            load, r = heapq.heappop(rank_load)
            if used[r] < cap:
                break
        used[r] += 1
        share[r] = load + q
        heapq.heappush(rank_load, (share[r], r))
    return tuple(sorted(share, reverse=True))


def _expected_max_normal(n: int) -> float:
    if n < 2:
        return 0.0
    a = math.sqrt(2 * math.log(n))
    return a - (math.log(math.log(n)) + math.log(4 * math.pi)) / (2 * a) if n > 2 else 0.5642


@lru_cache(maxsize=1024)
def imbalance_constants(
    n_experts: int, redundant: int, ranks: int, slots: int, zipf: float
) -> tuple[float, float, int]:
    """(busiest rank's share w_max, z_R, ranks): what ``expected_imbalance`` needs of one EP group.

    Cached: a pure function of its five scalars (an immutable tuple back), asked once per EP size on every
    grid block (cmperf.decode.routing_constants: ~50 sizes per block of the optimizer's mesh)."""
    return rank_shares(n_experts, redundant, ranks, slots, zipf)[0], _expected_max_normal(ranks), ranks


def imbalance_from(
    copies_total: ArrayLike, w_max: float | np.ndarray, z: float | np.ndarray, ranks: float | np.ndarray
) -> np.ndarray:
    """E[max rank load] / mean rank load from ``imbalance_constants`` (scalars, or arrays per point):
    (mu + z sqrt(mu)) / mean with mu = n w_max, mean = n / ranks, i.e. ranks w_max + ranks z sqrt(w_max / n)
    (1 where n <= 0). The constants enter per EP group; ``copies_total`` is per point."""
    n = np.asarray(copies_total, dtype=float)
    if not (n.size and n.min() > 0.0 and n.max() < np.inf):  # n <= 0, NaN or inf somewhere: term by term
        mu = n * w_max  # mu + z*sqrt(mu) grows with mu, so the busiest rank by share is the worst
        mean = n / ranks
        return np.where(mean > 0, (mu + z * np.sqrt(mu)) / np.maximum(mean, 1e-300), 1.0)
    r = np.asarray(ranks, dtype=float)
    base, spread = r * w_max, r * np.asarray(z, dtype=float) * np.sqrt(w_max)  # per EP group
    out = np.sqrt(n)
    if not out.ndim or out.shape != np.broadcast_shapes(out.shape, base.shape, spread.shape):
        return base + spread / out
    np.divide(spread, out, out=out)
    return np.add(out, base, out=out)


def expected_imbalance(
    copies_total: ArrayLike, n_experts: int, redundant: int, ranks: int, slots: int, zipf: float
) -> np.ndarray:
    """E[max rank load] / mean rank load for ``copies_total`` routed copies (array) over ``ranks`` ranks.

    >>> round(float(expected_imbalance(1e9, 256, 0, 32, 8, 0.0)), 3)
    1.0
    """
    return imbalance_from(copies_total, *imbalance_constants(n_experts, redundant, ranks, slots, zipf))
