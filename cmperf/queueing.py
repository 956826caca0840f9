"""Queueing formulas for request admission (M/M/c, M/G/c) and Che's LRU approximation for prefix caches.

All times are seconds, rates per second, loads in Erlangs (a = λ·S). Functions are pure; numpy in, numpy
out where a vector argument is natural. Sources: Kleinrock, *Queueing Systems* vol. 1 (1975) §3.5;
Gross & Harris, *Fundamentals of Queueing Theory* (Erlang B/C, M/M/c waiting-time distribution);
Allen, *Probability, Statistics, and Queueing Theory* 2nd ed. (1990) §6.3 (Allen-Cunneen M/G/c);
Che, Tung & Wang, IEEE JSAC 20(7) 2002 (LRU characteristic time).

Approximations used (stated once here, and again where they are applied):

* M/G/c mean wait is Allen-Cunneen: W_q ≈ W_q(M/M/c) · (ca² + cs²)/2. Exact for M/M/c and for M/G/1
  (Pollaczek-Khinchine); a few percent off elsewhere at moderate-to-high load.
* M/G/c wait distribution: an atom at 0 of mass 1 - C (C = Erlang C) plus an exponential tail
  P(W > t) = C·exp(-θ t) whose rate θ = C / W_q is chosen so the mean matches Allen-Cunneen.
  Exact for M/M/c (θ = cμ - λ); for other service laws it is the standard exponential-tail heuristic.
* Response (wait + service) quantiles convolve that wait law with a gamma service law of the given SCV;
  SCV 0 means deterministic service (quantile = wait quantile + S). W and S are treated as independent,
  which is exact for FIFO (a customer's wait does not depend on its own service time).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "QueueWait",
    "che_lru_hit_rate",
    "erlang_b",
    "erlang_c",
    "mgc_wait",
    "mmc_wait",
    "response_quantiles_s",
    "zipf_popularity",
]


def _check_servers(servers: int) -> int:
    c = int(servers)
    if c != servers or c < 1:
        raise ValueError(f"servers must be a positive integer, got {servers!r}")
    return c


def erlang_b(servers: int, offered_load: ArrayLike) -> float | np.ndarray:
    """Erlang B blocking probability by the recursion B(k) = a·B(k-1) / (k + a·B(k-1)), B(0) = 1.

    Gross & Harris §2.5. Never forms a^c/c!, so it is stable for c in the thousands. Vectorized over a.
    """
    c = _check_servers(servers)
    a = np.asarray(offered_load, dtype=float)
    if np.any(a < 0):
        raise ValueError("offered_load must be >= 0")
    if a.ndim == 0:  # a scalar: the same recursion on Python floats (bit-identical, ~20x faster)
        x, bs = float(a), 1.0
        for k in range(1, c + 1):
            ab = x * bs
            bs = ab / (k + ab)
        return bs
    b = np.ones_like(a)
    for k in range(1, c + 1):
        ab = a * b
        b = ab / (k + ab)
    return b if b.ndim else float(b)


def erlang_c(servers: int, offered_load: ArrayLike) -> float | np.ndarray:
    """Erlang C, P(wait > 0) in M/M/c: C(c, a) = c·B / (c - a·(1 - B)) with B = Erlang B(c, a).

    Gross & Harris §2.3 / Kleinrock §3.5. a = λ/μ in Erlangs; C = 1 when a >= c (unstable queue).
    Vectorized over offered_load; C(1, a) = a for a < 1.
    """
    c = _check_servers(servers)
    a = np.asarray(offered_load, dtype=float)
    b = np.asarray(erlang_b(c, a))
    stable = a < c
    with np.errstate(divide="ignore", invalid="ignore"):
        cw = np.where(stable, c * b / (c - a * (1.0 - b)), 1.0)
    cw = np.clip(cw, 0.0, 1.0)
    return cw if cw.ndim else float(cw)


@dataclass(frozen=True)
class QueueWait:
    """Steady-state waiting time (time in queue, before service) of an M/M/c or M/G/c FIFO queue.

    The wait law is P(W > t) = p_wait · exp(-tail_rate_per_s · t): exact for M/M/c, the mean-matched
    exponential-tail approximation for M/G/c (see module docstring). ``overloaded`` (utilization >= 1)
    gives infinite waits rather than an exception so sweeps can run through saturation.
    """

    rate_per_s: float
    service_s: float
    servers: int
    service_scv: float
    arrival_scv: float
    utilization: float
    p_wait: float
    mean_wait_s: float
    tail_rate_per_s: float
    overloaded: bool

    @property
    def mean_response_s(self) -> float:
        """Mean wait plus mean service: T = W_q + S."""
        return self.mean_wait_s + self.service_s

    def wait_quantile_s(self, p: ArrayLike) -> float | np.ndarray:
        """p-quantile of the wait: max(0, ln(C / (1 - p)) / θ) with θ = cμ - λ (M/M/c) or C / W_q (M/G/c)."""
        p = np.asarray(p, dtype=float)
        if np.any((p < 0) | (p >= 1)):
            raise ValueError("quantile p must be in [0, 1)")
        if self.overloaded:
            q = np.full_like(p, np.inf)
        elif self.p_wait <= 0.0:
            q = np.zeros_like(p)
        else:
            q = np.maximum(0.0, np.log(self.p_wait / (1.0 - p)) / self.tail_rate_per_s)
        return q if q.ndim else float(q)

    def wait_tail(self, t_s: ArrayLike) -> float | np.ndarray:
        """P(W > t) = C · exp(-θ t) for t >= 0 (1 for t < 0)."""
        t = np.asarray(t_s, dtype=float)
        if self.overloaded:
            out = np.ones_like(t)
        else:
            out = np.where(t < 0, 1.0, self.p_wait * np.exp(-self.tail_rate_per_s * np.maximum(t, 0.0)))
        return out if out.ndim else float(out)


def mgc_wait(
    rate_per_s: float,
    service_s: float,
    servers: int,
    *,
    service_scv: float = 1.0,
    arrival_scv: float = 1.0,
) -> QueueWait:
    """G/G/c wait by Allen-Cunneen: W_q ≈ C(c, a) / (cμ - λ) · (ca² + cs²)/2, a = λ·S, μ = 1/S.

    Allen (1990) §6.3. ca² = 1 for Poisson arrivals, cs² = Var(S)/S². Exact for M/M/c (both SCVs 1) and
    for M/G/1 (Pollaczek-Khinchine). P(W > 0) is taken as Erlang C and the tail as exponential with its
    rate θ = C / W_q chosen to match the mean. Utilization λS/c >= 1 returns ``overloaded=True`` with
    infinite waits.
    """
    c = _check_servers(servers)
    lam, s = float(rate_per_s), float(service_s)
    if lam < 0 or s <= 0 or service_scv < 0 or arrival_scv < 0:
        raise ValueError("need rate_per_s >= 0, service_s > 0 and non-negative SCVs")
    a = lam * s
    rho = a / c
    common: dict[str, Any] = dict(  # the fields every outcome shares
        rate_per_s=lam,
        service_s=s,
        servers=c,
        service_scv=float(service_scv),
        arrival_scv=float(arrival_scv),
        utilization=rho,
    )
    if rho >= 1.0:
        return QueueWait(**common, p_wait=1.0, mean_wait_s=math.inf, tail_rate_per_s=0.0, overloaded=True)
    pw = float(erlang_c(c, a))
    decay_per_s = c / s - lam  # cμ - λ
    factor = 0.5 * (arrival_scv + service_scv)
    mean_wait = pw / decay_per_s * factor
    if pw <= 0.0 or factor <= 0.0:
        return QueueWait(**common, p_wait=0.0, mean_wait_s=0.0, tail_rate_per_s=math.inf, overloaded=False)
    return QueueWait(
        **common, p_wait=pw, mean_wait_s=mean_wait, tail_rate_per_s=decay_per_s / factor, overloaded=False
    )


def mmc_wait(rate_per_s: float, service_s: float, servers: int) -> QueueWait:
    """M/M/c wait: W_q = C(c, a) / (cμ - λ), P(W > t) = C · exp(-(cμ - λ) t) (Gross & Harris §2.3)."""
    return mgc_wait(rate_per_s, service_s, servers, service_scv=1.0, arrival_scv=1.0)


def response_tail(t: float, wait: QueueWait, shape: float, rate: float) -> float:
    """P(W + S > t) for the atom+exponential wait law and S ~ Gamma(shape, rate), W and S independent.

    P(W + S > t) = Ḡ(t) + C · ∫_0^t g(s) e^{-θ(t - s)} ds, with a closed form when rate > θ.
    """
    from scipy import special

    if t <= 0:
        return 1.0
    surv = float(special.gammaincc(shape, rate * t))
    c, th = wait.p_wait, wait.tail_rate_per_s
    if c <= 0.0:
        return surv
    if rate > th * (1.0 + 1e-9):
        # ∫_0^t g(s) e^{θs} ds = (rate/(rate-θ))^k · P(Gamma(k, rate-θ) <= t); combine in log space.
        d = rate - th
        lower = float(special.gammainc(shape, d * t))
        if lower <= 0.0:
            return surv
        return surv + c * math.exp(-th * t + shape * math.log(rate / d) + math.log(lower))
    from scipy import integrate, stats

    dist = stats.gamma(shape, scale=1.0 / rate)
    val, _ = integrate.quad(lambda x: dist.pdf(x) * math.exp(-th * (t - x)), 0.0, t, limit=200)
    return surv + c * float(val)


def response_quantiles_s(
    wait: QueueWait, service_s: float, ps: ArrayLike, *, service_scv: float = 0.0
) -> float | np.ndarray:
    """p-quantiles of the response time R = W + S (e.g. TTFT = queueing + prefill).

    ``service_scv`` = 0 (default): deterministic service, R_p = W_p + S exactly. ``service_scv`` > 0:
    S ~ Gamma(mean service_s, SCV service_scv), convolved with the wait law of ``wait`` (atom at 0 plus
    exponential tail; W independent of the customer's own S under FIFO) and inverted with brentq.
    Overloaded queues give inf. Vectorized over ps.
    """
    p = np.atleast_1d(np.asarray(ps, dtype=float))
    scalar = np.ndim(ps) == 0
    if np.any((p < 0) | (p >= 1)):
        raise ValueError("quantile p must be in [0, 1)")
    if wait.overloaded:
        out = np.full_like(p, np.inf)
    elif service_scv <= 0.0:
        out = np.asarray(wait.wait_quantile_s(p)) + float(service_s)
    else:
        from scipy import optimize, stats

        shape = 1.0 / service_scv
        rate = shape / float(service_s)
        out = np.empty_like(p)
        for i, pi in enumerate(p):
            if pi == 0.0:
                out[i] = 0.0
                continue
            # P(W+S > w_q + s_q) <= P(W > w_q) + P(S > s_q) = 1 - p for q = (1 + p)/2: a valid upper bracket.
            q = 0.5 * (1.0 + pi)
            hi = float(wait.wait_quantile_s(q)) + float(stats.gamma.ppf(q, shape, scale=1.0 / rate))
            hi = max(hi, 1e-12 * service_s)
            out[i] = optimize.brentq(
                lambda t, target=1.0 - pi: response_tail(t, wait, shape, rate) - target,
                0.0,
                hi,
                xtol=1e-12 * service_s,
                rtol=1e-10,
            )
    return float(out[0]) if scalar else out


def zipf_popularity(n_items: int, skew: float) -> np.ndarray:
    """Zipf request probabilities p_i = i^-skew / Σ_j j^-skew for ranks i = 1..n_items (skew 0 is uniform)."""
    n = int(n_items)
    if n < 1:
        raise ValueError("n_items must be >= 1")
    w = np.arange(1, n + 1, dtype=float) ** (-float(skew))
    w /= w.sum()
    return w


def che_lru_hit_rate(cache_items: float, popularity: ArrayLike) -> float:
    """LRU hit rate under the independent reference model by Che's approximation (Che et al. 2002).

    Solve Σ_i (1 - e^{-p_i T}) = C for the characteristic time T (brentq), then h = Σ_i p_i (1 - e^{-p_i T}).
    ``popularity`` is normalized to sum 1. C <= 0 gives 0; if C is at least the number of items with p_i > 0
    every such item stays resident in steady state (no evictions), so h = 1 (cold misses are ignored).
    """
    p = np.asarray(popularity, dtype=float).ravel()
    if p.size == 0 or np.any(p < 0) or p.sum() <= 0:
        raise ValueError("popularity must be a non-empty vector of non-negative weights with positive sum")
    p = p[p > 0] / p.sum()
    cap = float(cache_items)
    if cap <= 0:
        return 0.0
    if cap >= p.size:
        return 1.0
    from scipy import optimize

    def filled(t: float) -> float:
        return float(-np.expm1(-p * t).sum()) - cap

    # Σ(1 - e^{-p T}) <= Σ p T = T, so T >= C; double the upper end until the cache overfills.
    lo, hi = cap, 2.0 * cap
    while filled(hi) < 0:
        lo, hi = hi, 2.0 * hi
    t_char = optimize.brentq(filled, lo, hi, xtol=1e-12 * hi, rtol=1e-12)
    return float(np.dot(p, -np.expm1(-p * t_char)))
