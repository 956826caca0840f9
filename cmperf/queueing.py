"""Queueing formulas for request admission (M/M/c, M/G/c) and Che's LRU approximation for prefix caches.

All times are seconds, rates per second, loads in Erlangs (a = λ·S). Functions are pure; numpy in, numpy
out where a vector argument is natural. Sources: Kleinrock, *Queueing Systems* vol. 1 (1975) §3.5;
Gross & Harris, *Fundamentals of Queueing Theory* (Erlang B/C, M/M/c waiting-time distribution);
Allen, *Probability, Statistics, and Queueing Theory* 2nd ed. (1990) §6.3 (Allen-Cunneen M/G/c);
Che, Tung & Wang, IEEE JSAC 20(7) 2002 (LRU characteristic time); Brent, *Algorithms for Minimization
Without Derivatives* (1973) ch. 4 (``find_root``).

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

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "QueueWait",
    "che_lru_hit_rate",
    "che_lru_hit_rate_zipf",
    "erlang_b",
    "erlang_c",
    "find_root",
    "mgc_wait",
    "mmc_wait",
    "response_quantiles_s",
    "zipf_harmonic",
    "zipf_popularity",
]


@functools.lru_cache(maxsize=64)
def normal_quantile(p: float) -> float:
    """Standard normal quantile z_p (z_0.99 = 2.3263); stdlib and cached: the sizing calls it for every
    grid batch of every decode pool, and scipy.stats alone takes ~0.9 s to import."""
    from statistics import NormalDist  # here, not at import: ~2.5 ms of every serve start-up

    return NormalDist().inv_cdf(p)


def normal_cdf(x: float) -> float:
    """Standard normal CDF Φ(x) from the error function, branch for branch as Cephes ``ndtr`` (the code
    behind scipy.stats.norm.cdf): 1/2 + erf(x/√2)/2 near 0, erfc(|x|/√2)/2 in the tails (no cancellation
    below Φ = 1e-16). Φ(2.3263) = 0.99 (Abramowitz & Stegun 26.2.2, 7.1.2)."""
    y = x * math.sqrt(0.5)
    z = abs(y)
    if z < math.sqrt(0.5):
        return 0.5 + 0.5 * math.erf(y)
    tail = 0.5 * math.erfc(z)
    return 1.0 - tail if y > 0 else tail


def _check_servers(servers: int) -> int:
    c = int(servers)
    if c != servers or c < 1:
        raise ValueError(f"servers must be a positive integer, got {servers!r}")
    return c


#: Default relative tolerance of ``find_root``: 4 machine epsilons (the tightest a float step resolves).
ROOT_RTOL = 4 * 2.220446049250313e-16


def find_root(
    f: Callable[[float], float],
    lo: float,
    hi: float,
    *,
    xtol: float = 2e-12,
    rtol: float = ROOT_RTOL,
    maxiter: int = 100,
) -> float:
    """Root of a continuous ``f`` bracketed by [lo, hi] (f(lo), f(hi) of opposite signs), by Brent's method.

    Brent (1973) ch. 4 / Press et al., *Numerical Recipes* 2nd ed. §9.3 (van Wijngaarden-Dekker-Brent):
    inverse quadratic interpolation (secant with two points) when it stays inside the bracket and shrinks
    it fast enough, bisection otherwise; stops when the bracket is below xtol + rtol·|x|. The iteration is
    step for step that of ``scipy.optimize.brentq`` (its C ``brentq``), so the root is the same float
    (tests/test_queueing.py), without importing scipy. Worked number: x² - 2 on [0, 2] -> 1.4142135623731.
    """
    xpre, xcur = float(lo), float(hi)
    fpre, fcur = float(f(xpre)), float(f(xcur))
    if fpre == 0.0:
        return xpre
    if fcur == 0.0:
        return xcur
    if math.copysign(1.0, fpre) == math.copysign(1.0, fcur):
        raise ValueError(f"find_root: f({lo:g}) and f({hi:g}) must have opposite signs")
    xblk = fblk = spre = scur = 0.0
    for _ in range(maxiter):
        if fpre != 0.0 and fcur != 0.0 and math.copysign(1.0, fpre) != math.copysign(1.0, fcur):
            xblk, fblk = xpre, fpre
            spre = scur = xcur - xpre
        if abs(fblk) < abs(fcur):  # keep the best estimate in xcur, the bracket's other end in xblk
            xpre, xcur, xblk = xcur, xblk, xcur
            fpre, fcur, fblk = fcur, fblk, fcur
        delta = (xtol + rtol * abs(xcur)) / 2.0
        sbis = (xblk - xcur) / 2.0
        if fcur == 0.0 or abs(sbis) < delta:
            return xcur
        if abs(spre) > delta and abs(fcur) < abs(fpre):
            if xpre == xblk:  # secant
                stry = -fcur * (xcur - xpre) / (fcur - fpre)
            else:  # inverse quadratic interpolation
                dpre = (fpre - fcur) / (xpre - xcur)
                dblk = (fblk - fcur) / (xblk - xcur)
                stry = -fcur * (fblk * dblk - fpre * dpre) / (dblk * dpre * (fblk - fpre))
            if 2.0 * abs(stry) < min(abs(spre), 3.0 * abs(sbis) - delta):
                spre, scur = scur, stry  # a short interpolated step
            else:
                spre = scur = sbis
        else:
            spre = scur = sbis
        xpre, fpre = xcur, fcur
        xcur += scur if abs(scur) > delta else (delta if sbis > 0 else -delta)
        fcur = float(f(xcur))
    raise RuntimeError(f"find_root: no convergence in {maxiter} iterations on [{lo:g}, {hi:g}]")


def erlang_b(servers: int, offered_load: ArrayLike) -> float | np.ndarray:
    """Erlang B blocking probability by the recursion B(k) = a·B(k-1) / (k + a·B(k-1)), B(0) = 1.

    Gross & Harris §2.5. Never forms a^c/c!, so it is stable for c in the thousands. Vectorized over a.
    """
    c = _check_servers(servers)
    a = np.asarray(offered_load, dtype=float)
    if np.any(a < 0):
        raise ValueError("offered_load must be >= 0")
    if a.ndim == 0:  # a scalar: the same recursion on Python floats (bit-identical, ~20x faster)
        x, bs, k = float(a), 1.0, 1
        while k <= c and bs > 0.0:  # in blocks: once B underflows to 0 the recursion stays at 0
            for j in range(k, min(k + 256, c + 1)):
                ab = x * bs
                bs = ab / (j + ab)
            k += 256
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
    if a.ndim == 0:  # a scalar: plain floats (the sizing's bisections call this thousands of times)
        x = float(a)
        if not x < c:
            return 1.0
        bs = erlang_b(c, x)
        return min(max(c * bs / (c - x * (1.0 - bs)), 0.0), 1.0)
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

    def wait_quantile_s(self, p: float | ArrayLike) -> float | np.ndarray:
        """p-quantile of the wait: max(0, ln(C / (1 - p)) / θ) with θ = cμ - λ (M/M/c) or C / W_q (M/G/c)."""
        if isinstance(p, float | int):  # a scalar: plain floats
            if not 0.0 <= p < 1.0:
                raise ValueError("quantile p must be in [0, 1)")
            if self.overloaded:
                return math.inf
            if self.p_wait <= 0.0:
                return 0.0
            return max(0.0, math.log(self.p_wait / (1.0 - p)) / self.tail_rate_per_s)
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
    wait: QueueWait, service_s: float, ps: float | ArrayLike, *, service_scv: float = 0.0
) -> float | np.ndarray:
    """p-quantiles of the response time R = W + S (e.g. TTFT = queueing + prefill).

    ``service_scv`` = 0 (default): deterministic service, R_p = W_p + S exactly. ``service_scv`` > 0:
    S ~ Gamma(mean service_s, SCV service_scv), convolved with the wait law of ``wait`` (atom at 0 plus
    exponential tail; W independent of the customer's own S under FIFO) and inverted by ``find_root``.
    Overloaded queues give inf. Vectorized over ps.
    """
    if service_scv <= 0.0 and isinstance(ps, float | int):  # one quantile, fixed service: plain floats
        return wait.wait_quantile_s(float(ps)) + float(service_s)
    p = np.atleast_1d(np.asarray(ps, dtype=float))
    scalar = np.ndim(ps) == 0
    if np.any((p < 0) | (p >= 1)):
        raise ValueError("quantile p must be in [0, 1)")
    if wait.overloaded:
        out = np.full_like(p, np.inf)
    elif service_scv <= 0.0:
        out = np.asarray(wait.wait_quantile_s(p)) + float(service_s)
    else:
        from scipy import stats

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
            target = 1.0 - float(pi)

            def excess(t: float, target: float = target) -> float:
                return response_tail(t, wait, shape, rate) - target

            out[i] = find_root(excess, 0.0, hi, xtol=1e-12 * service_s, rtol=1e-10)
    return float(out[0]) if scalar else out


#: Largest popularity vector ``zipf_popularity`` builds (16M ranks, 128 MB); beyond it the closed forms
#: below (``zipf_harmonic``, ``che_lru_hit_rate_zipf``) take O(1) memory for any number of items.
ZIPF_MAX_VECTOR = 2**24
#: Ranks the Zipf sums add term by term; the ranks above go to the Euler-Maclaurin tail.
ZIPF_EXACT_RANKS = 2**14


def zipf_popularity(n_items: int, skew: float) -> np.ndarray:
    """Zipf request probabilities p_i = i^-skew / Σ_j j^-skew for ranks i = 1..n_items (skew 0 is uniform).

    Builds the vector: at most ``ZIPF_MAX_VECTOR`` items (``zipf_harmonic`` and ``che_lru_hit_rate_zipf``
    take O(1) memory for any count)."""
    n = int(n_items)
    if n < 1:
        raise ValueError("n_items must be >= 1")
    if n > ZIPF_MAX_VECTOR:
        raise ValueError(f"n_items {n} > {ZIPF_MAX_VECTOR}: use che_lru_hit_rate_zipf (O(1) memory)")
    w = np.arange(1, n + 1, dtype=float) ** (-float(skew))
    w /= w.sum()
    return w


def che_lru_hit_rate(cache_items: float, popularity: ArrayLike) -> float:
    """LRU hit rate under the independent reference model by Che's approximation (Che et al. 2002).

    Solve Σ_i (1 - e^{-p_i T}) = C for the characteristic time T (``find_root``), then
    h = Σ_i p_i (1 - e^{-p_i T}).
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

    def filled(t: float) -> float:
        return float(-np.expm1(-p * t).sum()) - cap

    # Σ(1 - e^{-p T}) <= Σ p T = T, so T >= C; double the upper end until the cache overfills.
    lo, hi = cap, 2.0 * cap
    if filled(lo) >= 0:  # a cache far below one item: Σ(1 - e^{-pT}) = T to rounding, so T = C
        return float(np.dot(p, -np.expm1(-p * lo)))
    while filled(hi) < 0:
        lo, hi = hi, 2.0 * hi
    t_char = find_root(filled, lo, hi, xtol=1e-12 * hi, rtol=1e-12)
    return float(np.dot(p, -np.expm1(-p * t_char)))


def zipf_harmonic(n_items: float, skew: float) -> float:
    """Generalized harmonic number H(n, s) = Σ_{i=1}^{n} i^{-s} in O(1) memory.

    Exact sum over i <= K = ``ZIPF_EXACT_RANKS``; above, the Euler-Maclaurin formula (Abramowitz & Stegun
    23.1.30; Graham, Knuth & Patashnik, *Concrete Mathematics* §9.5) with f(x) = x^{-s}:
    Σ_{i=K+1}^{n} f(i) = ∫_K^n f + (f(n) - f(K))/2 + (f'(n) - f'(K))/12 - (f⁽³⁾(n) - f⁽³⁾(K))/720 + R,
    ∫_K^n x^{-s} dx = (n^{1-s} - K^{1-s})/(1 - s) (ln(n/K) at s = 1), |R| of order s^5 K^{-s-5}: below
    1e-20 of the sum at K = 16,384. Worked number: H(10^9, 1) = ln(10^9) + γ + 1/(2·10^9) = 21.300481502.
    """
    n, sk = int(n_items), float(skew)
    if n < 1:
        raise ValueError("n_items must be >= 1")
    k = min(n, ZIPF_EXACT_RANKS)
    head = float(np.sum(np.arange(1, k + 1, dtype=float) ** (-sk)))
    if n == k:
        return head
    big_k, big_n = float(k), float(n)
    if abs(sk - 1.0) < 1e-12:
        integral = math.log(big_n / big_k)
    else:
        integral = (math.pow(big_n, 1.0 - sk) - math.pow(big_k, 1.0 - sk)) / (1.0 - sk)

    def d1(x: float) -> float:
        return -sk * math.pow(x, -sk - 1.0)

    def d3(x: float) -> float:
        return -sk * (sk + 1.0) * (sk + 2.0) * math.pow(x, -sk - 3.0)

    ends = (math.pow(big_n, -sk) - math.pow(big_k, -sk)) / 2.0
    return head + integral + ends + (d1(big_n) - d1(big_k)) / 12.0 - (d3(big_n) - d3(big_k)) / 720.0


def _zipf_che_sums(n: int, skew: float, harmonic: float, t_char: float) -> tuple[float, float]:
    """(Σ_i (1 - e^{-p_i T}), Σ_i p_i (1 - e^{-p_i T})) over Zipf(n, skew), p_i = i^{-s}/H, in O(1) memory.

    Exact over i <= ``ZIPF_EXACT_RANKS``, then the midpoint Euler-Maclaurin form
    Σ_{i=K+1}^{n} f(i) = ∫_{K+1/2}^{n+1/2} f(x) dx - (f'(n+½) - f'(K+½))/24 + O(f⁽³⁾), the integral by
    adaptive quadrature in t = ln x (scipy.integrate.quad: the integrand is smooth and slowly varying
    there). f(x) = 1 - e^{-u} with u = T x^{-s}/H, f' = -s u e^{-u}/x; g(x) = p(x) f(x),
    g' = -(s p/x)(f + u e^{-u})."""
    k = min(n, ZIPF_EXACT_RANKS)
    p = np.arange(1, k + 1, dtype=float) ** (-skew) / harmonic
    miss = -np.expm1(-p * t_char)
    occ, hit = float(miss.sum()), float(np.dot(p, miss))
    if n == k:
        return occ, hit
    from scipy import integrate

    a = t_char / harmonic

    def parts(x: float) -> tuple[float, float, float, float]:
        """(p(x), u(x), f(x), e^{-u(x)})."""
        xs = math.pow(x, -skew)
        u = a * xs
        return xs / harmonic, u, -math.expm1(-u), math.exp(-u)

    def f_t(t: float) -> float:
        x = math.exp(t)
        return parts(x)[2] * x

    def g_t(t: float) -> float:
        x = math.exp(t)
        px, _, f, _ = parts(x)
        return px * f * x

    def f1(x: float) -> float:
        _, u, _, e = parts(x)
        return -skew * u * e / x

    def g1(x: float) -> float:
        px, u, f, e = parts(x)
        return -(skew * px / x) * (f + u * e)

    lo, hi = k + 0.5, n + 0.5
    tl, th = math.log(lo), math.log(hi)
    # tolerance: 1e-11 of the tail, or 1e-13 of the whole sum when the tail is negligible beside the head
    occ_tail = integrate.quad(f_t, tl, th, epsabs=1e-13 * occ, epsrel=1e-11, limit=200)[0]
    hit_tail = integrate.quad(g_t, tl, th, epsabs=1e-13 * hit, epsrel=1e-11, limit=200)[0]
    occ += occ_tail - (f1(hi) - f1(lo)) / 24.0
    hit += hit_tail - (g1(hi) - g1(lo)) / 24.0
    return occ, min(hit, 1.0)


def che_lru_hit_rate_zipf(cache_items: float, n_items: float, skew: float) -> float:
    """``che_lru_hit_rate`` for Zipf(skew) popularity over ``n_items`` in O(1) memory (10^9 prefixes cost
    what 10^5 do).

    The characteristic time T solves Σ_i (1 - e^{-p_i T}) = C and h = Σ_i p_i (1 - e^{-p_i T}), both sums
    by ``_zipf_che_sums`` (exact head, Euler-Maclaurin tail) and H by ``zipf_harmonic``. The continuum form
    of Che's approximation for Zipf laws: Fricker, Robert & Roberts, "A versatile and accurate approximation
    for LRU cache performance", ITC 24 (2012). Equal to ``che_lru_hit_rate(C, zipf_popularity(n, s))``
    within 1e-9 (up to rounding for n <= ``ZIPF_EXACT_RANKS``, where both sum the same terms). Worked
    number: 10^9 prefixes, Zipf 1.0, a cache of 10^7 of them: h = 0.7197."""
    n, sk = int(n_items), float(skew)
    if n < 1 or not math.isfinite(sk) or sk < 0:
        raise ValueError("need n_items >= 1 and a finite skew >= 0")
    cap = float(cache_items)
    if not cap > 0:
        return 0.0
    if cap >= n:
        return 1.0
    h = zipf_harmonic(n, sk)
    if cap < 1e-6:  # a millionth of an item: T = C to first order, h = C Σ p_i² = C H(n, 2s) / H(n, s)²
        return cap * zipf_harmonic(n, 2.0 * sk) / h**2

    def filled(t: float) -> float:
        return _zipf_che_sums(n, sk, h, t)[0] - cap

    lo, hi = cap, 2.0 * cap
    if filled(lo) >= 0:  # a cache far below one item: Σ(1 - e^{-pT}) = T to rounding, so T = C
        return _zipf_che_sums(n, sk, h, lo)[1]
    for _ in range(200):  # Σ(1 - e^{-pT}) <= T, so T >= C; double the upper end until the cache overfills
        if filled(hi) >= 0:
            break
        lo, hi = hi, 2.0 * hi
    else:  # C within rounding of n: every item stays resident
        return _zipf_che_sums(n, sk, h, hi)[1]
    t_char = find_root(filled, lo, hi, xtol=1e-12 * hi, rtol=1e-12)
    return _zipf_che_sums(n, sk, h, t_char)[1]
