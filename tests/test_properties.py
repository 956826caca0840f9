"""Monotonicity properties of the model on every shipped system (hypothesis), and the O(1)-memory Zipf sums.

More batch or more KV never makes a decode step faster; more prompt tokens never make a prefill batch
faster; a higher arrival rate never lowers a reported TTFT percentile, the mean TTFT or the TPOT; more
prefill devices never raise the TTFT; a larger cache never lowers the hit rate. Each property is drawn
over every system in hardware/ (derandomized, as tests/test_fuzz_cli.py).
"""

from __future__ import annotations

import functools
import math
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_fuzz_cli import examples  # one set of hypothesis profiles (CMPERF_HYPOTHESIS)

import cmperf
from cmperf import decode, prefill, queueing, serving
from cmperf.deployment import Deployment

ROOT = Path(__file__).resolve().parent.parent
#: Any warning (numpy's RuntimeWarning, scipy's IntegrationWarning...) fails these tests: a user would see it
#: printed before the result, and pytest's own capture would hide it from the one-line-stderr checks.
pytestmark = pytest.mark.filterwarnings("error")
SYSTEMS = sorted(p.stem for p in (ROOT / "hardware").glob("*.toml") if 'kind = "system"' in p.read_text())


@functools.cache
def specs(name: str):
    return cmperf.load_system(name), cmperf.load_model("deepseek-r1")


@functools.cache
def service(name: str, prefill_devices: int | None = None):
    system, model = specs(name)
    pools = serving.default_pools(system, model)
    if prefill_devices is not None:
        pools = pools.split(prefill_devices, pools.decode_devices)
    return serving._Service(system, model, serving.Workload(rate_per_s=1.0), pools, serving.SLO())


def _pair(lo: float, hi: float) -> st.SearchStrategy[tuple[float, float]]:
    return st.tuples(st.floats(lo, hi), st.floats(lo, hi)).map(sorted).map(tuple)


def nondecreasing(a: float, b: float, rel: float = 1e-9) -> bool:
    return b >= a * (1 - rel) - 1e-15


@examples(30)
@given(st.sampled_from(SYSTEMS), _pair(0.25, 256), st.sampled_from([1, 2, "auto"]))
def test_decode_tpot_never_falls_with_batch(name, batches, microbatches):
    system, model = specs(name)
    dep = Deployment(batch_per_device=np.asarray(batches), microbatches=microbatches)
    if microbatches == "auto":
        t = [decode.predict(system, model, Deployment(batch_per_device=b)).tpot_s for b in batches]
    else:
        t = np.asarray(decode.evaluate(system, model, dep.resolve(system, model)).tpot_s)
    assert nondecreasing(t[0], t[1]), (name, batches, t)


@examples(30)
@given(st.sampled_from(SYSTEMS), _pair(1, 150_000), st.sampled_from([1.0, 8.0, 64.0]))
def test_decode_tpot_never_falls_with_kv_length(name, kvs, batch):
    system, model = specs(name)
    dep = Deployment(kv_len=np.asarray(kvs), batch_per_device=batch, microbatches=1)
    t = np.asarray(decode.evaluate(system, model, dep.resolve(system, model)).tpot_s)
    assert nondecreasing(t[0], t[1]), (name, kvs, t)


@examples(20)
@given(st.sampled_from(SYSTEMS), _pair(4096, 65536))
def test_prefill_batch_never_faster_with_more_tokens(name, tokens):
    system, model = specs(name)
    dep = Deployment(phase="prefill", tokens_per_device=np.asarray(tokens))
    t = np.asarray(prefill.evaluate(system, model, dep.resolve(system, model)).batch_s)
    assert nondecreasing(t[0], t[1]), (name, tokens, t)


def _ttft_tpot(p, d) -> np.ndarray:
    return np.array([p.ttft_p50_s, p.ttft_p90_s, p.ttft_p99_s, p.ttft_mean_s, d.tpot_mean_s, d.tpot_p99_s])


@examples(30)
@given(st.sampled_from(SYSTEMS), _pair(0.001, 0.999))
def test_ttft_and_tpot_never_fall_as_the_rate_rises(name, loads):
    """Every reported TTFT percentile, the mean TTFT and TPOT mean/p99 (the prefill pool's envelope over its
    batch policies, serving.prefill_pool; the decode pool's Little's-law batch)."""
    svc = service(name)
    cap = min(svc.grid.capacity_rps, svc.curve.capacity_rps())
    a, b = (_ttft_tpot(*svc.at(x * cap)) for x in loads)
    assert np.all(b >= a * (1 - 1e-9)), (name, loads, a, b)


def test_ttft_rises_with_the_rate_where_the_batch_policy_switches():
    """The issue's case: hgx-h20's p99-best prefill batch falls from 2 to 1 prompts between 1.01055 and
    2.0211 req/s; the p50 fell from 0.211 s to 0.112 s when it was the p99-best batch's p50 (0.087 s with
    Hopper's own fitted efficiencies, scripts/fit_gpu_pipeline.py)."""
    svc = service("hgx-h20")
    lo, hi = (svc.at(r)[0] for r in (1.01055, 2.0211))
    assert lo.batch_prompts == 2.0 and hi.batch_prompts == 1.0  # the SLO (p99) batch does switch
    for k in ("ttft_p50_s", "ttft_p90_s", "ttft_p99_s", "ttft_mean_s"):
        assert getattr(hi, k) >= getattr(lo, k), k
    assert lo.ttft_p50_s == pytest.approx(0.0869, abs=1e-4)  # the 1-prompt batch's, not the 2-prompt's
    assert lo.ttft_batch_prompts == {"p50": 1.0, "p90": 1.0, "p99": 2.0, "mean": 1.0}


@examples(12)
@given(st.sampled_from(SYSTEMS), st.integers(1, 4), st.integers(0, 3), st.floats(0.05, 0.95))
def test_more_prefill_devices_never_raise_the_ttft(name, n, more, load):
    system, model = specs(name)
    pools = serving.default_pools(system, model)
    inst = pools.prefill_instance_devices
    free = system.num_devices - pools.decode_devices
    n2 = min(n + more, free // inst)
    if n2 < 1:
        return
    n = min(n, n2)
    small, big = service(name, n * inst), service(name, n2 * inst)
    rate = load * small.grid.capacity_rps
    a, b = small.at(rate)[0], big.at(rate)[0]
    for k in ("ttft_p50_s", "ttft_p90_s", "ttft_p99_s", "ttft_mean_s"):
        assert getattr(b, k) <= getattr(a, k) * (1 + 1e-9), (name, n, n2, k)


@examples(25)
@given(
    st.sampled_from([10, 1000, 10**5, 10**9, 10**12]),
    st.floats(0, 4),
    _pair(0, 1),
)
def test_cache_hit_rate_never_falls_with_cache_size(n, skew, fractions):
    a, b = (queueing.che_lru_hit_rate_zipf(f * n, n, skew) for f in fractions)
    assert 0 <= a <= b * (1 + 1e-9) + 1e-12 and b <= 1 + 1e-12, (n, skew, fractions, a, b)


@pytest.mark.parametrize("skew", [0.0, 0.5, 0.99, 1.0, 1.01, 2.0, 4.0])
def test_zipf_closed_forms_match_the_sums(skew):
    """Above ZIPF_EXACT_RANKS the Euler-Maclaurin tail replaces the sum: the same numbers (H to 1e-12,
    Che's hit rate to 1e-9) where the vector is still cheap to build."""
    for n in (100, queueing.ZIPF_EXACT_RANKS + 1, 200_000, 2_000_000):
        exact = float(np.sum(np.arange(1, n + 1, dtype=float) ** -skew))
        assert queueing.zipf_harmonic(n, skew) == pytest.approx(exact, rel=1e-12)
        p = queueing.zipf_popularity(n, skew)
        for frac in (1e-4, 0.01, 0.3, 0.9):
            got = queueing.che_lru_hit_rate_zipf(frac * n, n, skew)
            assert got == pytest.approx(queueing.che_lru_hit_rate(frac * n, p), abs=1e-9), (n, frac)


def test_a_billion_prefixes_in_bounded_memory_and_time():
    """serve --prefixes 1e9 allocated 16 GB for the popularity vector (OOM-killed); now O(1) memory.
    H(10^9, 1) = ln(10^9) + γ + 1/(2·10^9); the hit rate of a cache of 1% of the prefixes is 0.7197."""
    tracemalloc.start()
    h = queueing.zipf_harmonic(10**9, 1.0)
    hit = queueing.che_lru_hit_rate_zipf(10**7, 10**9, 1.0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert h == pytest.approx(math.log(1e9) + 0.5772156649015329 + 0.5e-9, rel=1e-14)
    assert hit == pytest.approx(0.7197, abs=1e-4)
    assert peak < 8 * 2**20  # the exact head: 16,384 ranks
    with pytest.raises(ValueError, match="O\\(1\\) memory"):
        queueing.zipf_popularity(10**9, 1.0)
