"""The fast paths of serve / serve --size / optimize give the numbers of the slow ones.

No scipy on the serve and optimize paths (``queueing.find_root`` is scipy's brentq step for step,
``queueing.normal_cdf`` is Cephes ``ndtr``); the decode curves of many pools in one evaluate equal one pool
at a time; the pruned decode search (HBM cut, accepted-only ranking, staircase before the Pareto sort)
equals the exhaustive one; the prefill search's one evaluate equals one call per instance size.
"""

from __future__ import annotations

import functools
import math
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from cmperf import prefill, queueing, search, serving, specs
from cmperf.deployment import Deployment
from cmperf.queueing import erlang_b, erlang_c, find_root, mgc_wait, response_quantiles_s


@pytest.fixture(scope="module")
def cm():
    return specs.load_system("cloudmatrix384"), specs.load_model("deepseek-r1")


@pytest.fixture(scope="module")
def h200():
    return specs.load_system("hgx-h200"), specs.load_model("deepseek-r1")


# ------------------------------------------------------------------------------------------ no scipy


@pytest.mark.parametrize(
    "args",
    [
        ["serve", "--rate", "40", "--format", "json"],
        ["optimize", "--format", "json"],
        ["serve", "--size", "--devices-total", "384", "--format", "json"],
    ],
)
def test_serve_and_optimize_do_not_import_scipy(args):
    code = (
        "import sys; from cmperf.cli import main; from click.testing import CliRunner; "
        f"r = CliRunner().invoke(main, {args!r}); assert r.exit_code == 0, r.output; "
        "print(sorted(m for m in sys.modules if m == 'scipy' or m.startswith('scipy.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ------------------------------------------------------------------------------------------ maths


def _functions():
    for a in (0.3, 1.0, 5.0, 40.0):
        for b in (-1.3, 0.2, 2.7):
            yield lambda x, a=a, b=b: math.tanh(a * (x - b)) + 0.1 * x**3 - 0.05
    for k in (0.1, 1.0, 2.0):
        yield lambda x, k=k: math.exp(x) - k * x - 3.0
    yield lambda x: 1.0 if x > 1.234 else -1.0  # a step: bisection only


def test_find_root_is_scipy_brentq_step_for_step():
    brentq = pytest.importorskip("scipy.optimize").brentq
    rng = np.random.default_rng(1)
    n = 0
    for f in _functions():
        for _ in range(12):
            lo, hi = float(rng.uniform(-5, 0.1)), float(rng.uniform(2.9, 15))
            if f(lo) * f(hi) >= 0:
                continue
            for xtol, rtol in (
                (2e-12, 4 * np.finfo(float).eps),
                (1e-3, 4 * np.finfo(float).eps),
                (1e-9, 1e-12),
            ):
                assert find_root(f, lo, hi, xtol=xtol, rtol=rtol) == brentq(f, lo, hi, xtol=xtol, rtol=rtol)
                n += 1
    assert n > 300
    assert find_root(lambda x: x * x - 2.0, 0.0, 2.0) == pytest.approx(math.sqrt(2.0), rel=1e-15)
    with pytest.raises(ValueError, match="opposite signs"):
        find_root(lambda x: x * x + 1.0, -1.0, 1.0)


def test_norm_cdf_is_scipys():
    norm = pytest.importorskip("scipy.stats").norm
    for x in np.concatenate([np.linspace(-9, 9, 721), [-38.0, -0.5, 0.0, 1e-9, 2.3263478740408408]]):
        got, want = queueing.normal_cdf(float(x)), float(norm.cdf(x))
        assert got == pytest.approx(want, rel=1e-13, abs=1e-300), x
    assert queueing.normal_cdf(2.3263478740408408) == pytest.approx(0.99, rel=1e-12)


def test_scalar_erlang_and_quantile_paths_equal_the_array_paths():
    for c in (1, 4, 16, 300, 5000):
        for rho in (0.05, 0.5, 0.9, 0.999):
            a = rho * c
            assert erlang_c(c, a) == pytest.approx(float(erlang_c(c, np.array([a]))[0]), rel=1e-15)
            w = mgc_wait(rho * c / 2.0, 2.0, c, service_scv=0.0)
            for q in (0.5, 0.9, 0.99):
                fast = response_quantiles_s(w, 2.0, q)
                slow = float(response_quantiles_s(w, 2.0, [q])[0])
                assert fast == pytest.approx(slow, rel=1e-14, abs=1e-15)
    assert erlang_c(8, 8.0) == 1.0 and erlang_b(1, 1.0) == 0.5


# ------------------------------------------------------------------------------------------ serving


def test_decode_curves_of_many_pools_equal_one_pool_at_a_time(cm):
    s, m = cm
    wl = serving.Workload(rate_per_s=1.0)
    pools = serving.default_pools(s, m).resolve(s, m)
    devices = [16, 32, 72, 160, 200]
    many = serving.decode_curves(s, m, wl, pools, devices)
    slo = serving.SLO()
    limits = serving.tpot_limits_rps(many, slo)
    for d, curve, lim in zip(devices, many, limits, strict=True):
        one = serving._DecodeCurve(s, m, wl, pools.split(pools.prefill_devices, d))
        assert curve.max_batch == one.max_batch and curve.ep == one.ep == 2 * d
        np.testing.assert_array_equal(curve.grid_b, one.grid_b)
        np.testing.assert_array_equal(curve.grid_tpot, one.grid_tpot)
        assert lim == serving.tpot_limit_rps(one, slo) > 0
    assert limits[-1] > limits[0]  # a bigger pool carries more


def test_decode_curves_mark_pools_that_hold_no_sequence(h200):
    s, m = h200
    wl = serving.Workload(rate_per_s=1.0)
    pools = serving.default_pools(s, m)
    curves = serving.decode_curves(s, m, wl, pools, [1, 8])
    with pytest.raises(Exception, match="not even one"):
        serving._DecodeCurve(s, m, wl, pools.split(pools.prefill_devices, 1))
    assert curves[0] is None and curves[1] is not None


# ------------------------------------------------------------------------------------------ search


def test_group_sizes_covers_every_size_once_and_respects_the_cap():
    assert [g.tolist() for g in search.group_sizes(np.array([3, 3, 50]), 1, 10**6, 10)] == [[0, 1], [2]]
    rng = np.random.default_rng(7)
    nb = rng.integers(1, 120, 60)
    groups = search.group_sizes(nb, 46, 40_000)
    assert sorted(np.concatenate(groups).tolist()) == list(range(60))
    assert all(g.size == 1 or g.size * nb[g].max() * 46 <= 40_000 for g in groups)


def test_staircase_keeps_what_pareto_keeps():
    rng = np.random.default_rng(5)
    for _ in range(30):
        n = 400
        x = rng.integers(0, 30, n).astype(float)  # coarse values: many exact ties
        y = rng.integers(0, 30, n).astype(float)
        t1, t2 = rng.integers(0, 3, n).astype(float), rng.permutation(n).astype(float)
        full = np.flatnonzero(search.pareto_mask(x, y, t1, t2))
        cand = np.flatnonzero(search.staircase(x, y))
        kept = cand[search.pareto_mask(x[cand], y[cand], t1[cand], t2[cand])]
        np.testing.assert_array_equal(kept, full)
        assert cand.size < n


def _exhaustive(monkeypatch):
    monkeypatch.setattr(
        search, "evaluate_decode_grid", functools.partial(search.evaluate_decode_grid, prune=False)
    )


@pytest.mark.parametrize("slo_s", [0.05, 0.015, 0.001])  # 1 ms: nothing meets it (the closest list)
def test_pruned_decode_search_equals_the_exhaustive_one(h200, monkeypatch, slo_s):
    s, m = h200
    kw = dict(prompt_len=4096, output_len=256, tpot_slo_s=slo_s, devices=32)
    fast, g_fast = search.search_decode(s, m, **kw)
    with monkeypatch.context() as mp:
        _exhaustive(mp)
        slow, g_slow = search.search_decode(s, m, **kw)
    assert fast == slow  # best, binding, top, Pareto, closest, rejected counts: every float the same
    assert np.isnan(g_fast.tpot_s).sum() > np.isnan(g_slow.tpot_s).sum()  # the cut evaluated fewer
    np.testing.assert_array_equal(g_fast.hbm_ok, g_slow.hbm_ok)
    ev = np.isfinite(g_fast.tpot_s)
    np.testing.assert_array_equal(g_fast.tpot_s[ev], g_slow.tpot_s[ev])
    if slo_s == 0.05:
        assert fast.best is not None and fast.rejected["HBM fit"] > 0
    if slo_s == 0.001:
        assert fast.best is None and fast.closest


def test_hbm_cut_leaves_a_witness_on_every_line(cm):
    s, m = cm
    base = Deployment(kv_len=4224.0, kv_capacity_len=4352.0).resolve(s, m)
    space = search.decode_space(s, m, base)
    nb = search.hbm_batches(s, m, space, base)
    assert nb.min() == 1 and nb.max() == space.batch_per_device.size  # 1-8 NPUs: no batch fits at all
    g = search.evaluate_decode_grid(s, m, space, base)
    shape = (len(space.mtp), -1, space.devices.size, space.batch_per_device.size)
    hbm = g.hbm_ok.reshape(shape)[:, :, space.placement_ok]
    for j, n in enumerate(nb):
        assert not hbm[:, :, j, n - 1 :].any() or n == space.batch_per_device.size


def test_prefill_search_one_call_equals_one_call_per_size(h200):
    s, m = h200
    res = search.search_prefill(s, m, prompt_len=4096, ttft_slo_s=2.0)
    base = replace(Deployment(phase="prefill"), prompt_len=4096.0)
    for c in res.top[:4] + res.pareto[:4]:
        ev = prefill.evaluate(
            s,
            m,
            replace(
                base,
                tokens_per_device=c.tokens_per_device,
                devices=c.devices,
                ep_size=c.ep_size,
                microbatches=c.microbatches,
            ),
        )
        assert float(ev.ttft_s) == c.ttft_s and float(ev.tokens_per_s_per_device) == c.tokens_per_s_per_device
    assert res.best is not None and res.rejected["TTFT SLO"] + res.rejected["HBM fit"] > 0


# ------------------------------------------------------------------------- decode grid per-call shortcuts


def _bits(x) -> bytes:
    a = np.ascontiguousarray(np.asarray(x, dtype=float))
    return bytes(str(a.shape), "ascii") + a.tobytes()


@pytest.mark.parametrize("system_name", ["cloudmatrix384", "hgx-h200"])
@np.errstate(invalid="ignore")  # inf * 0 in the general path: NaN, as it gives
def test_ep_collective_time_without_zero_scaleout_bytes_keeps_every_bit(system_name):
    """``_split_bytes(drop_zero=True)`` (all EP groups inside the scale-up domain: no scale-out bytes) gives
    the link and ideal times of the general path, bit for bit, and the general path runs whenever a
    payload is negative, infinite or NaN (where the zeros would matter) or a group leaves the domain."""
    from cmperf import comm

    s = specs.load_system(system_name)
    c = s.collective("dispatch", "decode")
    ep = np.array([1.0, 2.0, 8.0, 16.0, 64.0, 320.0])[:, None]
    for payload in (
        np.array([0.0, -0.0, 1.0, 7e3, 3.3e7])[None, :],
        np.array([1.0, -2.0])[None, :],
        np.array([1.0, np.inf])[None, :],
        np.array([1.0, np.nan])[None, :],
    ):
        for e in (ep, ep[:3], ep[:2]):
            up, out = comm._split_bytes(s, c.plane, payload, e, c.local_copies == "send")
            up2, out2 = comm._split_bytes(s, c.plane, payload, e, c.local_copies == "send", drop_zero=True)
            assert _bits(up2) == _bits(up)
            if out2 is None:
                assert np.isfinite(payload).all() and (payload >= 0).all()
            else:
                assert _bits(out2) == _bits(out)
            args = (c.efficiency, c.scaleout_efficiency)
            link = comm._link_s(s, c.plane, c.scaleout_plane, up, out, *args, group=e)
            link2 = comm._link_s(s, c.plane, c.scaleout_plane, up2, out2, *args, group=e)
            assert _bits(link2) == _bits(link)
            ideal = comm._ideal_link_s(s, c.plane, c.scaleout_plane, up, out, group=e)
            ideal2 = comm._ideal_link_s(s, c.plane, c.scaleout_plane, up2, out2, group=e)
            assert _bits(ideal2) == _bits(ideal)


def test_moe_load_power_only_where_co_located_keeps_every_bit(cm):
    """``moe_load`` on EP sizes on both sides of the routed-expert count (dedicated and co-located
    points) equals its formula computed on every point."""
    from cmperf import decode
    from cmperf.deployment import placement_arrays

    _, m = cm
    ep = np.array([16.0, 64.0, 256.0, 288.0, 320.0, 768.0])[:, None]
    tokens = np.array([0.0, 0.5, 1.0, 7.0, 96.0, 1e4])[None, :]
    pl = placement_arrays(m, ep)
    assert pl["dedicated"].any() and not pl["dedicated"].all()
    imb = np.full((ep.size, tokens.size), 1.25)
    _, exp_read, _ = decode.moe_load(m, pl, ep, tokens, imb)
    k, r = m.num_experts_per_tok, m.n_routed_experts
    co_read = pl["slots"] * (1.0 - (1.0 - k / max(r, 1)) ** (ep * tokens)) + m.n_shared_experts
    assert _bits(exp_read) == _bits(np.where(pl["dedicated"], 1.0, co_read))
    # the dedicated-only and co-located-only grids take the branches without the masked power
    for sub in (ep[:2], ep[3:]):
        p = placement_arrays(m, sub)
        _, r2, _ = decode.moe_load(m, p, sub, tokens, imb[: sub.size])
        want_r = np.where(
            p["dedicated"],
            1.0,
            p["slots"] * (1.0 - (1.0 - k / max(r, 1)) ** (sub * tokens)) + m.n_shared_experts,
        )
        assert _bits(np.broadcast_to(r2, want_r.shape)) == _bits(want_r)


def test_cached_imbalance_constants_equal_uncached():
    from cmperf.imbalance import imbalance_constants

    for args in ((256, 32, 288, 1, 1.0), (256, 32, 32, 9, 0.8), (256, 0, 64, 4, 0.0)):
        assert imbalance_constants(*args) == imbalance_constants.__wrapped__(*args)
