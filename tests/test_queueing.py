"""Queueing and LRU formulas against closed forms and seeded discrete-event simulations.

Acceptance (issue): analytic and simulated mean and p90 response time (TTFT = wait + service) agree within
10% from 10% to 90% utilization, for c = 1, 4, 16 servers with exponential (SCV 1) and gamma (SCV 0.25)
service. ``pytest -s`` prints the analytic-vs-simulated table.
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict

import numpy as np
import pytest

from cmperf.queueing import (
    che_lru_hit_rate,
    erlang_b,
    erlang_c,
    mgc_wait,
    mmc_wait,
    response_quantiles_s,
    zipf_popularity,
)

SERVICE_S = 1.0
UTILIZATIONS = (0.1, 0.3, 0.5, 0.7, 0.9)
SERVERS = (1, 4, 16)
SCVS = (1.0, 0.25)
TOL = 0.10


def simulate_fifo_waits(servers: int, utilization: float, service_scv: float, n: int, seed: int):
    """Waits and service times of a FIFO M/G/c queue started empty (first 5% dropped as warm-up).

    Service is exponential (SCV 1) or gamma(shape 1/SCV). With c servers under FIFO each arrival, in order,
    starts at max(arrival, earliest server-free time) on that server. c = 1 uses the vectorized Lindley
    recursion W_n = X_n - min(0, min_{k<=n} X_k), X the random walk of S_{k-1} - A_k.
    """
    rng = np.random.default_rng(seed)
    rate_per_s = utilization * servers / SERVICE_S
    arrivals_s = np.cumsum(rng.exponential(1.0 / rate_per_s, n))
    if service_scv == 1.0:
        service_s = rng.exponential(SERVICE_S, n)
    else:
        service_s = rng.gamma(1.0 / service_scv, SERVICE_S * service_scv, n)
    if servers == 1:
        walk = np.concatenate([[0.0], np.cumsum(service_s[:-1] - np.diff(arrivals_s))])
        wait_s = walk - np.minimum.accumulate(np.minimum(walk, 0.0))
    else:
        free_s = [0.0] * servers
        wait_s = np.empty(n)
        replace = heapq.heapreplace
        for i, (a, s) in enumerate(zip(arrivals_s.tolist(), service_s.tolist(), strict=True)):
            f = free_s[0]
            start = a if a > f else f
            replace(free_s, start + s)
            wait_s[i] = start - a
    k = n // 20
    return wait_s[k:], service_s[k:]


@pytest.fixture(scope="module")
def table():
    rows = []
    for scv in SCVS:
        for c in SERVERS:
            for i, rho in enumerate(UTILIZATIONS):
                # c = 1 is vectorized, so it affords more arrivals (its rho = 0.9 cell mixes slowest).
                n = 2_000_000 if c == 1 else 200_000
                wait_s, service_s = simulate_fifo_waits(c, rho, scv, n, seed=1000 * c + 10 * i + int(4 * scv))
                response_s = wait_s + service_s
                q = mgc_wait(rho * c / SERVICE_S, SERVICE_S, c, service_scv=scv)
                rows.append(
                    dict(
                        scv=scv,
                        c=c,
                        rho=rho,
                        wait_an=q.mean_wait_s,
                        wait_sim=float(wait_s.mean()),
                        mean_an=q.mean_response_s,
                        mean_sim=float(response_s.mean()),
                        p90_an=float(response_quantiles_s(q, SERVICE_S, 0.9, service_scv=scv)),
                        p90_sim=float(np.quantile(response_s, 0.9)),
                    )
                )
    print("\nM/G/c FIFO, S = 1 s: analytic (Allen-Cunneen + exp. tail) vs simulated; T = wait + service")
    print(
        f"{'SCV':>5} {'c':>3} {'rho':>4} | {'Wq an':>8} {'Wq sim':>8} | {'T an':>7} {'T sim':>7} "
        f"{'err':>6} | {'p90 an':>7} {'p90 sim':>7} {'err':>6}"
    )
    for r in rows:
        print(
            f"{r['scv']:5.2f} {r['c']:3d} {r['rho']:4.1f} | {r['wait_an']:8.4f} {r['wait_sim']:8.4f} | "
            f"{r['mean_an']:7.4f} {r['mean_sim']:7.4f} {r['mean_an'] / r['mean_sim'] - 1:+6.1%} | "
            f"{r['p90_an']:7.4f} {r['p90_sim']:7.4f} {r['p90_an'] / r['p90_sim'] - 1:+6.1%}"
        )
    return rows


def test_mean_and_p90_response_match_simulation(table):
    bad = [
        r
        for r in table
        if abs(r["mean_an"] / r["mean_sim"] - 1) > TOL or abs(r["p90_an"] / r["p90_sim"] - 1) > TOL
    ]
    assert not bad, bad


def test_mean_wait_matches_simulation_where_it_matters(table):
    # Where the wait is at least 20% of the service time it must match on its own, not just inside T.
    # (Below that, Allen-Cunneen under-predicts small waits for low-variability service by up to ~20%,
    # which moves T by < 1%; see the module docstring of cmperf.queueing.)
    cells = [r for r in table if r["wait_sim"] >= 0.2 * SERVICE_S]
    assert len(cells) >= 8
    bad = [r for r in cells if abs(r["wait_an"] / r["wait_sim"] - 1) > TOL]
    assert not bad, bad


# --- Erlang B/C ------------------------------------------------------------------------------------------


def _erlang_c_direct(c: int, a: float) -> float:
    """Textbook Erlang C in log space: (a^c/c! · c/(c-a)) / (Σ_{k<c} a^k/k! + a^c/c! · c/(c-a))."""
    logs = [k * math.log(a) - math.lgamma(k + 1) for k in range(c)]
    top = c * math.log(a) - math.lgamma(c + 1) + math.log(c / (c - a))
    m = max([*logs, top])
    den = sum(math.exp(x - m) for x in logs) + math.exp(top - m)
    return math.exp(top - m) / den


def test_erlang_c_known_values():
    rho = np.array([0.0, 0.1, 0.5, 0.9, 0.99])
    np.testing.assert_allclose(erlang_c(1, rho), rho, atol=1e-14)  # M/M/1: C = ρ
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)  # M/M/2, ρ = 0.5: C = 2ρ²/(1+ρ)
    assert erlang_c(2, 1.5) == pytest.approx(2 * 0.75**2 / 1.75)
    assert erlang_b(2, 1.0) == pytest.approx(0.2)  # (a²/2) / (1 + a + a²/2)
    assert erlang_c(3, 3.0) == 1.0 and erlang_c(3, 5.0) == 1.0  # a >= c: everyone waits


@pytest.mark.parametrize("c", [5, 64, 384, 1000])
def test_erlang_c_stable_for_large_c(c):
    loads = c * np.array([0.5, 0.9, 0.99])
    got = erlang_c(c, loads)
    assert np.all(np.isfinite(got)) and np.all((got >= 0) & (got <= 1))
    np.testing.assert_allclose(got, [_erlang_c_direct(c, a) for a in loads], rtol=1e-9)


def test_mmc_wait_formulas():
    q = mmc_wait(rate_per_s=1.0, service_s=1.0, servers=2)  # λ = 1, μ = 1, c = 2
    assert q.utilization == pytest.approx(0.5)
    assert q.p_wait == pytest.approx(1 / 3)
    assert q.mean_wait_s == pytest.approx((1 / 3) / (2 - 1))  # C / (cμ - λ)
    p = np.array([0.0, 0.5, 0.9, 0.99])
    np.testing.assert_allclose(q.wait_quantile_s(p), np.maximum(0, np.log((1 / 3) / (1 - p))))
    m1 = mmc_wait(0.8, 1.0, 1)  # M/M/1 response is Exp(μ - λ): p-quantile = -ln(1-p)/(μ-λ)
    assert response_quantiles_s(m1, 1.0, 0.9, service_scv=1.0) == pytest.approx(math.log(10) / 0.2)
    assert response_quantiles_s(m1, 1.0, 0.9) == pytest.approx(m1.wait_quantile_s(0.9) + 1.0)


def test_mgc_reduces_to_pollaczek_khinchine_for_one_server():
    lam, s, scv = 0.7, 1.0, 0.25  # P-K: W_q = λ E[S²] / (2(1-ρ)) = ρ S (1 + cs²) / (2(1-ρ))
    assert mgc_wait(lam, s, 1, service_scv=scv).mean_wait_s == pytest.approx(0.7 * 1.25 / (2 * 0.3))


def test_overload_is_flagged_not_raised():
    q = mgc_wait(rate_per_s=10.0, service_s=1.0, servers=4, service_scv=0.5)
    assert q.overloaded and q.utilization == pytest.approx(2.5)
    assert math.isinf(q.mean_wait_s) and math.isinf(q.wait_quantile_s(0.5))
    assert np.all(np.isinf(response_quantiles_s(q, 1.0, [0.5, 0.9])))
    assert mgc_wait(4.0, 1.0, 4).overloaded  # ρ = 1 exactly


def test_idle_queue_has_no_wait():
    q = mmc_wait(0.0, 1.0, 8)
    assert q.p_wait == 0.0 and q.mean_wait_s == 0.0 and q.wait_quantile_s(0.99) == 0.0
    assert response_quantiles_s(q, 2.0, 0.9) == 2.0


def test_monotonicity():
    rates = np.linspace(0.5, 7.9, 30)
    for c in (8, 9, 16):
        waits = [mgc_wait(r, 1.0, c, service_scv=0.5).mean_wait_s for r in rates]
        assert np.all(np.diff(waits) > 0)  # more load never lowers the wait
    for r in (0.5, 3.0, 7.5):
        waits = [mmc_wait(r, 1.0, c).mean_wait_s for c in range(8, 40)]
        assert np.all(np.diff(waits) <= 0)  # more servers never raise it
        p90 = [mmc_wait(r, 1.0, c).wait_quantile_s(0.9) for c in range(8, 40)]
        assert np.all(np.diff(p90) <= 0)


# --- Che's LRU approximation -----------------------------------------------------------------------------


def test_zipf_popularity():
    p = zipf_popularity(1000, 0.8)
    assert p.sum() == pytest.approx(1.0) and np.all(np.diff(p) < 0)
    assert p[0] / p[9] == pytest.approx(10**0.8)
    np.testing.assert_allclose(zipf_popularity(5, 0.0), 0.2)


def test_che_edge_cases_and_uniform():
    p = zipf_popularity(100, 1.0)
    assert che_lru_hit_rate(0, p) == 0.0 and che_lru_hit_rate(-3, p) == 0.0
    assert che_lru_hit_rate(100, p) == 1.0 and che_lru_hit_rate(500, p) == 1.0
    uniform = np.full(1000, 1e-3)
    for cap in (1, 100, 500, 999):
        assert che_lru_hit_rate(cap, uniform) == pytest.approx(cap / 1000, rel=1e-9)


def test_che_monotone_in_cache_size():
    p = zipf_popularity(1000, 0.8)
    hits = [che_lru_hit_rate(cap, p) for cap in range(0, 1001, 25)]
    assert np.all(np.diff(hits) > 0) and hits[-1] == 1.0


def test_che_matches_lru_simulation():
    p = zipf_popularity(1000, 0.8)
    rng = np.random.default_rng(7)
    refs = rng.choice(p.size, size=300_000, p=p).tolist()
    cache: OrderedDict[int, None] = OrderedDict()
    hits = 0
    warmup = 50_000
    for i, item in enumerate(refs):
        if item in cache:
            cache.move_to_end(item)
            hits += i >= warmup
        else:
            cache[item] = None
            if len(cache) > 100:
                cache.popitem(last=False)
    simulated = hits / (len(refs) - warmup)
    analytic = che_lru_hit_rate(100, p)
    print(f"\nLRU, Zipf 0.8, 1000 items, cache 100: Che {analytic:.4f} vs simulated {simulated:.4f}")
    assert analytic == pytest.approx(simulated, abs=0.02)
