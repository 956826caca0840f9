"""Properties of the deployment search (cmperf.search) and the P/D/cache sizing (cmperf.sizing), hypothesis.

Drawn: hgx-h200 (8..32 GPUs), dgx-h800 (16..64), cloudmatrix384 (16..64 NPUs), deepseek-r1; prompt
256..16,384, output 16..2,048, TPOT SLO 8..200 ms and TTFT SLO 0.3..5 s (log-uniform). Whatever is drawn,
the search raises ``CmperfError`` (an allowed outcome: nothing fits) or returns a result where

1. the decode best meets its TPOT SLO, uses at most the devices given, is placeable and fits HBM (batch
   <= its ``max_batch_per_device``); re-predicting it with ``decode.evaluate`` and ``decode.predict`` on
   ``config_deployment`` of the search's base (the workload's KV knobs, as ``cmperf decode --prompt-len
   --output-len`` sets them) gives the same TPOT and tokens/s exactly (==: the grid is one broadcast
   ``decode.evaluate`` and a point is elementwise the same arithmetic; measured 0.0 difference; the
   prefill best likewise meets the TTFT SLO and fits; ``cmperf decode --format json`` with its knobs prints
   the same TPOT (the CLI test, to 1e-12 relative: JSON round-trips floats exactly, but the CLI parses
   lengths itself);
2. optimal on its own space: no row of the grid that fits, is within the device total and meets the SLO
   has more tokens/s per device (exact: the ranking is an argmax over the same array), and a sample of
   such rows re-predicted one by one with ``decode.evaluate`` is never better than the best (1e-12 relative:
   the one-point call vs the grid; test_search.py measures the grid against the scalar path to 1e-12);
3. monotone: loosening the TPOT SLO never lowers the best tokens/s per device (nor loses a best), and more
   devices never lower it either (the instance sizes and the batch axis only grow with the device total);
4. the Pareto frontier (decode and prefill): every point fits within the device total, no point dominates
   another, the decode frontier is sorted by TPOT with tokens/s rising, no fitting row of the whole grid
   strictly dominates a frontier point (thinning to ``pareto_max`` only drops points), and no frontier point
   meeting the SLO beats the best; ``cmperf pareto --format json`` prints that frontier;
5. ``sizing.size`` (``serve --size``): the split uses at most the devices given, and ``serving.evaluate`` on
   the returned pools (split, cache DRAM) at (1 - 1e-6) x the best goodput is not overloaded, with TTFT on
   the SLO quantile <= the SLO to 1e-6 relative (a root), and TPOT too (a bisection on the exact TPOT of
   the quantile batch); in rate mode the split serves the rate
   and uses no more devices than the total-mode split that reached it;
6. the same inputs give == results (or the same error).

Regressions (bugs this file found, fixed in ``serving.tpot_limits_rps``): a TPOT-bound split at ~4
sequences per device whose sized rate gave a TPOT p99 2.2% over the SLO (a chord across the concave TPOT
curve's grid cell, now a bisection on the exact TPOT); a split at the decode HBM cap whose goodput was
exactly the capacity, which ``serving.evaluate`` called overloaded (utilization 1 + 1 ulp).

Derandomized (the ``CMPERF_HYPOTHESIS`` profiles of tests/test_fuzz_cli.py); a search here is 10-100 ms,
~11 s on two cores.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import replace

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from test_fuzz_cli import examples  # one set of hypothesis profiles (CMPERF_HYPOTHESIS)

import cmperf
from cmperf import decode, search, serving, sizing
from cmperf.cli import main
from cmperf.deployment import Deployment, kv_lengths
from cmperf.errors import CmperfError

#: A warning would be printed before the user's result: it fails these tests (as tests/test_properties.py).
pytestmark = pytest.mark.filterwarnings("error")

#: (system, device totals drawn, prefill instance devices for the sizing): small systems, fast searches.
SYSTEMS = {
    "hgx-h200": ((8, 16, 24, 32), 8),
    "dgx-h800": ((16, 32, 48, 64), 16),
    "cloudmatrix384": ((16, 32, 48, 64), 16),
}
#: re-prediction one point vs the grid (test_search.test_grid_matches_scalar_predictor's tolerance)
POINT_REL = 1e-12
#: sizing limits are roots (TTFT: bisection on the rate; TPOT: bisection on the exact TPOT of the batch):
#: the SLO met at the limit rate to this relative error; the rate is checked at (1 - ROOT_REL) of the limit
ROOT_REL = 1e-6


@functools.cache
def specs(name: str):
    return cmperf.load_system(name), cmperf.load_model("deepseek-r1")


def log_uniform(lo, hi):
    return st.floats(math.log10(lo), math.log10(hi)).map(lambda e: 10.0**e)


SYSTEM_DEVICES = st.sampled_from(sorted(SYSTEMS)).flatmap(
    lambda s: st.tuples(st.just(s), st.sampled_from(SYSTEMS[s][0]))
)
PROMPT = st.integers(256, 16384)
OUTPUT = st.integers(16, 2048)
TPOT = log_uniform(8e-3, 0.2)
TTFT = log_uniform(0.3, 5.0)


@functools.lru_cache(maxsize=256)
def run_decode(system: str, devices: int, p: int, o: int, tpot: float | None):
    """(result, grid) or None when the model refuses the inputs (cached: properties share searches)."""
    try:
        return search.search_decode(
            *specs(system),
            prompt_len=float(p),
            output_len=float(o),
            devices=devices,
            tpot_slo_s=tpot,
            explain=False,
        )
    except CmperfError:
        return None


def base_of(system: str, p: int, o: int) -> Deployment:
    """The search's base record: the workload's KV knobs (search_decode)."""
    s, m = specs(system)
    kv, cap, cv = kv_lengths(m, float(p), float(o))
    return replace(Deployment(), kv_len=kv, kv_capacity_len=cap, kv_cv=cv).resolve(s, m)


def fits(g, total: int) -> np.ndarray:
    return (g.devices <= total) & g.placement_ok & g.hbm_ok


def check_best(system, devices, p, o, tpot):
    out = run_decode(system, devices, p, o, tpot)
    if out is None:
        return None
    r, _ = out
    b = r.best
    if b is None:
        assert r.accepted == 0 and r.top == [], (system, devices, p, o, tpot)
        return out
    assert b.tpot_s <= tpot, (b, tpot)
    assert b.devices <= devices and b.batch_per_device <= b.max_batch_per_device, b
    s, m = specs(system)
    dep = search.config_deployment(base_of(system, p, o), b)
    ev = decode.evaluate(s, m, dep)
    assert bool(np.all(ev.feasible)), (system, devices, p, o, b)
    assert float(ev.tpot_s) == b.tpot_s, (float(ev.tpot_s), b.tpot_s)
    assert float(ev.tokens_per_s_per_device) == b.tokens_per_s_per_device, (ev.tokens_per_s_per_device, b)
    pr = decode.predict(s, m, dep)
    assert pr.tpot_s == b.tpot_s and pr.tokens_per_s_per_device == b.tokens_per_s_per_device, (pr.tpot_s, b)
    return out


@settings(examples(25), deadline=None)
@given(SYSTEM_DEVICES, PROMPT, OUTPUT, TPOT)
def test_best_meets_slo_fits_and_repredicts(sd, p, o, tpot):
    check_best(*sd, p, o, tpot)


@settings(examples(25), deadline=None)
@given(SYSTEM_DEVICES, PROMPT, OUTPUT, TPOT, st.randoms(use_true_random=False))
def test_best_is_optimal_on_its_grid(sd, p, o, tpot, rnd):
    system, devices = sd
    out = run_decode(system, devices, p, o, tpot)
    if out is None:
        return
    r, g = out
    ok = fits(g, devices) & (g.tpot_s <= tpot)
    assert int(ok.sum()) == r.accepted, (int(ok.sum()), r.accepted)
    assert np.all(g.batch_per_device[g.hbm_ok] <= g.max_batch_per_device[g.hbm_ok])
    if r.best is None:
        assert not ok.any()
        return
    assert r.best.tokens_per_s_per_device == float(np.max(g.tokens_per_s_per_device[ok]))
    s, m = specs(system)
    base = base_of(system, p, o)
    rows = np.flatnonzero(ok)
    for i in rnd.sample(list(rows), min(3, rows.size)):
        c = search._decode_row(g, int(i))
        ev = decode.evaluate(s, m, search.config_deployment(base, c))
        assert float(ev.tpot_s) == pytest.approx(c.tpot_s, rel=POINT_REL), (c, float(ev.tpot_s))
        tps = float(ev.tokens_per_s_per_device)
        assert tps <= r.best.tokens_per_s_per_device * (1 + POINT_REL), (c, tps, r.best)


@settings(examples(20), deadline=None)
@given(SYSTEM_DEVICES, PROMPT, OUTPUT, TPOT, st.floats(1.0, 4.0))
def test_looser_slo_never_lowers_the_best(sd, p, o, tpot, k):
    system, devices = sd
    tight, loose = run_decode(system, devices, p, o, tpot), run_decode(system, devices, p, o, tpot * k)
    if tight is None or tight[0].best is None:
        return
    assert loose is not None and loose[0].best is not None, (sd, p, o, tpot, k)
    assert loose[0].best.tokens_per_s_per_device >= tight[0].best.tokens_per_s_per_device, (
        sd,
        p,
        o,
        tpot,
        k,
        tight[0].best,
        loose[0].best,
    )


@settings(examples(20), deadline=None)
@given(st.sampled_from(sorted(SYSTEMS)), PROMPT, OUTPUT, TPOT, st.data())
def test_more_devices_never_lower_the_best(system, p, o, tpot, data):
    a, b = sorted(data.draw(st.lists(st.sampled_from(SYSTEMS[system][0]), min_size=2, max_size=2)))
    small, large = run_decode(system, a, p, o, tpot), run_decode(system, b, p, o, tpot)
    if small is None or small[0].best is None:
        return
    assert large is not None and large[0].best is not None, (system, a, b, p, o, tpot)
    assert large[0].best.tokens_per_s_per_device >= small[0].best.tokens_per_s_per_device, (
        system,
        a,
        b,
        p,
        o,
        tpot,
        small[0].best,
        large[0].best,
    )


def dominates(a, b) -> bool:
    """a has tokens/s >= and TPOT <= b, one strictly."""
    return (
        a.tokens_per_s_per_device >= b.tokens_per_s_per_device
        and a.tpot_s <= b.tpot_s
        and (a.tokens_per_s_per_device > b.tokens_per_s_per_device or a.tpot_s < b.tpot_s)
    )


@settings(examples(25), deadline=None)
@given(SYSTEM_DEVICES, PROMPT, OUTPUT, TPOT)
def test_decode_pareto_frontier(sd, p, o, tpot):
    system, devices = sd
    out = run_decode(system, devices, p, o, tpot)
    if out is None:
        return
    r, g = out
    front = r.pareto
    assert len(front) <= 40
    for c in front:
        assert c.devices <= devices and c.batch_per_device <= c.max_batch_per_device, c
    for a in front:
        for b in front:
            assert a is b or not dominates(a, b), (a, b)
    tpots = [c.tpot_s for c in front]
    tps = [c.tokens_per_s_per_device for c in front]
    assert tpots == sorted(tpots) and tps == sorted(tps), (tpots, tps)
    f = fits(g, devices)
    gx, gy = g.tokens_per_s_per_device[f], g.tpot_s[f]
    if f.any():
        assert front, (sd, p, o)
    for c in front:
        strict = (gx >= c.tokens_per_s_per_device) & (gy <= c.tpot_s)
        strict &= (gx > c.tokens_per_s_per_device) | (gy < c.tpot_s)
        assert not strict.any(), (c, gx[strict][:3], gy[strict][:3])
        if r.best is not None and c.tpot_s <= tpot:
            assert c.tokens_per_s_per_device <= r.best.tokens_per_s_per_device, (c, r.best)


@settings(examples(20), deadline=None)
@given(SYSTEM_DEVICES, PROMPT, TTFT)
def test_prefill_best_and_frontier(sd, p, ttft):
    system, devices = sd
    s, m = specs(system)
    try:
        r = search.search_prefill(s, m, prompt_len=float(p), devices=devices, ttft_slo_s=ttft)
    except CmperfError:
        return
    if r.best is not None:
        assert r.best.ttft_s <= ttft and r.best.devices <= devices, (r.best, ttft)
        assert all(c.ttft_s <= ttft for c in r.top)
    for a in r.pareto:
        assert a.devices <= devices
        for b in r.pareto:
            assert a is b or not (
                a.tokens_per_s_per_device >= b.tokens_per_s_per_device
                and a.ttft_s <= b.ttft_s
                and (a.tokens_per_s_per_device > b.tokens_per_s_per_device or a.ttft_s < b.ttft_s)
            ), (a, b)
        if r.best is not None and a.ttft_s <= ttft:
            assert a.tokens_per_s_per_device <= r.best.tokens_per_s_per_device, (a, r.best)


def size_or_none(system, total, p, o, ttft, tpot, rate=None):
    s, m = specs(system)
    pools = serving.default_pools(s, m).with_instance(SYSTEMS[system][1])
    wl = serving.Workload(rate_per_s=rate, prompt_len=float(p), output_len=float(o))
    slo = serving.SLO(ttft_s=ttft, tpot_s=tpot)
    try:
        return sizing.size(s, m, wl, pools, slo, total_devices=total), pools, wl, slo
    except CmperfError:
        return None


def serve_split(system, pools, wl, slo, best, rate):
    s, m = specs(system)
    pp = replace(
        pools.split(best["prefill_devices"], best["decode_devices"]),
        cache_dram_bytes=best["cache_dram_bytes"],
    )
    return serving.evaluate(s, m, replace(wl, rate_per_s=rate), pp, slo)


SIZE_TOTALS = st.sampled_from([("hgx-h200", 16), ("hgx-h200", 32), ("dgx-h800", 48), ("cloudmatrix384", 48)])


@settings(examples(8), deadline=None)
@given(SIZE_TOTALS, PROMPT, OUTPUT, TTFT, log_uniform(0.02, 0.2), st.floats(0.1, 1.0))
def test_sizing_split_serves_its_rate(st_, p, o, ttft, tpot, frac):
    system, total = st_
    out = size_or_none(system, total, p, o, ttft, tpot)
    if out is None:
        return
    res, pools, wl, slo = out
    b = res.best
    assert b["devices"] == b["prefill_devices"] + b["decode_devices"] <= total, b
    if not b["feasible"]:
        return
    q = slo.percentile_label
    sr = serve_split(system, pools, wl, slo, b, b["goodput_rps"] * (1 - ROOT_REL))
    assert not sr.overloaded, (st_, p, o, ttft, tpot, b, sr.overload_reasons)
    assert sr.ttft_s[q] <= ttft * (1 + ROOT_REL), (st_, p, o, ttft, tpot, b, sr.ttft_s)
    assert sr.tpot_s[q] <= tpot * (1 + ROOT_REL), (st_, p, o, ttft, tpot, b, sr.tpot_s)
    # rate mode at a rate the total-mode split reaches: served, on no more devices
    rate = b["goodput_rps"] * frac
    out_r = size_or_none(system, total, p, o, ttft, tpot, rate)
    assert out_r is not None
    br = out_r[0].best
    assert br["feasible"] and br["devices"] <= b["devices"], (rate, br, b)
    sr = serve_split(system, pools, wl, slo, br, rate * (1 - ROOT_REL))
    assert (
        not sr.overloaded and sr.ttft_s[q] <= ttft * (1 + ROOT_REL) and sr.tpot_s[q] <= tpot * (1 + ROOT_REL)
    ), (
        rate,
        br,
        sr.ttft_s,
        sr.tpot_s,
    )


@settings(examples(5), deadline=None)
@given(SYSTEM_DEVICES, PROMPT, OUTPUT, TPOT)
def test_deterministic(sd, p, o, tpot):
    system, devices = sd
    s, m = specs(system)

    def once():
        try:
            r, g = search.search_decode(
                s, m, prompt_len=float(p), output_len=float(o), devices=devices, tpot_slo_s=tpot
            )
        except CmperfError as e:
            return str(e)
        return r, g

    a, b = once(), once()
    if isinstance(a, str):
        assert a == b
        return
    assert a[0] == b[0]
    for k in search.DecodeGrid.__dataclass_fields__:
        np.testing.assert_array_equal(getattr(a[1], k), getattr(b[1], k), err_msg=k)


def test_cli_decode_and_pareto_agree_with_the_search():
    """``cmperf decode`` with the best's knobs prints its TPOT; ``cmperf pareto --format json``, the
    frontier."""
    runner = CliRunner(env={"CMPERF_PATH": None, "COLUMNS": "100"})
    system, devices, p, o, tpot = "hgx-h200", 32, 4096, 256, 0.05
    r, _ = run_decode(system, devices, p, o, tpot)
    b = r.best
    args = ["decode", "--system", system, "--devices", str(b.devices), "--ep", str(b.ep_size)]
    args += ["--batch", repr(b.batch_per_device), "--microbatches", str(b.microbatches), "--mtp", str(b.mtp)]
    args += ["--prompt-len", str(p), "--output-len", str(o), "--format", "json"]
    if b.attention_cube_cores is not None:
        args += ["--attn-cores", str(b.attention_cube_cores)]
    res = runner.invoke(main, args)
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["tpot_s"] == pytest.approx(b.tpot_s, rel=POINT_REL), (doc["tpot_s"], b.tpot_s)
    res = runner.invoke(main, ["pareto", "--system", system, "--devices", str(devices), "--format", "json"])
    assert res.exit_code == 0, res.output
    front = json.loads(res.output)
    pts = front["pareto"] if isinstance(front, dict) else front
    mine = run_decode(system, devices, 4096, 256, None)[0].pareto
    # the pareto JSON prints 11 significant digits (0.010995410853 for 0.01099541085303497)
    assert len(pts) == len(mine)
    for c, d in zip(pts, mine, strict=True):
        assert c["tpot_s"] == pytest.approx(d.tpot_s, rel=1e-9), (c, d)
        assert c["tokens_per_s_per_device"] == pytest.approx(d.tokens_per_s_per_device, rel=1e-9), (c, d)


def test_sizing_tpot_limit_small_batch():
    system, total, p, o, ttft, tpot = "hgx-h200", 16, 256, 16, 1.0, 10.0**-1.5
    res, pools, wl, slo = size_or_none(system, total, p, o, ttft, tpot)
    b = res.best  # 8 prefill + 8 decode, 62.005 req/s (64.513 from the chord), decode (TPOT) binding
    assert b["binding"] == "decode (TPOT)", b
    sr = serve_split(system, pools, wl, slo, b, b["goodput_rps"] * (1 - ROOT_REL))
    # the limit is the root: met at it, and not pessimistic (the SLO reached to 1e-4)
    assert tpot * (1 - 1e-4) <= sr.tpot_s["p99"] <= tpot * (1 + ROOT_REL), (b, sr.tpot_s)


def test_sizing_goodput_at_the_hbm_cap_is_served():
    system, total, p, o, ttft, tpot = "hgx-h200", 16, 256, 243, 1.0, 0.1
    res, pools, wl, slo = size_or_none(system, total, p, o, ttft, tpot)
    b = res.best  # 8 + 8, 290.944 req/s = the decode pool's capacity at its HBM cap of 601 per device
    sr = serve_split(system, pools, wl, slo, b, b["goodput_rps"])
    assert not sr.overloaded, (b, sr.utilization, sr.overload_reasons)
