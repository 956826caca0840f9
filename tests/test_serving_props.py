"""Properties of the disaggregated serving model (cmperf.serving, hypothesis) over four systems.

Drawn: cloudmatrix384, dgx-h800, hgx-h200, gb200-nvl72, each with its default pools
(``serving.default_pools``, what ``cmperf serve`` runs without pool flags) and three other splits the CLI
accepts (prefill devices a multiple of the instance, prefill + decode within the system); no framework
profile, SGLang's, TensorRT-LLM's or CloudMatrix-Infer's on both pools (``serve --framework``); Poisson
rates 1e-3..3e3 req/s (log-uniform) or closed loops of 1..100,000 users; prompt 128..32,768, output
16..8,192, optional prompt / output CV, direct ``cache_hit``. Whatever is drawn, ``serving.evaluate`` raises
``CmperfError`` (a prompt or sequence that does not fit: an allowed outcome) or returns a result where

1. no time is NaN; every TTFT and TPOT is finite and > 0 unless the result is overloaded, the throughput
   is finite and > 0; ``overloaded`` is exactly "some utilization (prefill, decode, cache link) >= 1", a
   pool is overloaded exactly when its utilization is >= 1, and an overloaded pool's times are inf;
2. at fixed pools, every TTFT value (mean, p50, p90, p99) and the TPOT mean and p99 never fall as the
   Poisson rate rises (``prefill_pool``'s lower envelope over the batch grid, the decode fixed point on a
   rising TPOT curve; tests/test_serving.py checks both on one pool), and overload never clears;
3. TTFT p50 <= p90 <= p99 and TPOT mean <= p99;
4. the closed loop obeys Little's law, N = X (mean TTFT + O mean TPOT), to the solver's tolerance:
   ``_concurrency_rate`` solves that very equation in X with Brent's method to xtol = 1e-9 of the capacity,
   on the reported TTFT and TPOT, so the error is that xtol times the elasticity of the response time in X,
   which near the prefill pool's pole (utilization u) is ~1 / (1 - u): |err| <= 1e-6 + 4e-9 / (1 - u)
   (measured: 1e-8 away from saturation, 3e-5 at u = 0.999995, where the bound is 8e-4). A loop of more
   users than the decode pool's HBM holds runs at the decode capacity, and the rest wait for KV memory:
   ``ttft_memory_wait_s`` = (N - X (TTFT + O TPOT)) / X is in every TTFT, so the law holds there too
   (``test_closed_loop_beyond_the_decode_cap``: without it 82,815 of 100,000 users were in no queue);
5. the decode pool obeys its own Little's law, D b = X O TPOT (the fixed point b = (X/D) O TPOT(b), solved
   on the TPOT curve linearly interpolated on CURVE_POINTS batches up to the HBM cap and LOW_POINTS
   geometric ones below the first of them, the reported TPOT exact at the solved b): within 2e-3
   (test_serving's tolerance) from 20 grid cells up (measured: 2e-5) and within 2e-2 below (1.8% measured).
   Before the geometric points the curve was held flat under b = 0.25 and the first cell spanned cap / 400
   sequences over which TPOT(b) is strongly concave: 22% off in both (``test_decode_littles_law_below_the_
   curve_grid``, ``..._in_the_first_grid_cell``);
6. the context cache (a direct ``cache_hit`` h): the reported token hit rate is h, the prefill tokens saved
   are X h P per second and the KV loads X h P bytes-per-token; per prefill batch size B the compute
   (``prefill.evaluate`` with the load made free) never rises with h, and with the load the batch takes
   at most its compute at h = 0 plus the whole cache load (``cache_load_s``). A cached batch may be slower
   than an uncached one (loading beyond the crossover hit rate costs more than the compute it saves:
   cmperf.prefill docstring), so "TTFT falls with the cache" is not claimed;
7. the same inputs give == results (or the same error);
8. ``cmperf serve ... --format json`` prints exactly the library's result (``render.to_json`` of
   ``finite_or_none``) and exits 0, or 3 when it is overloaded, or 2 (one line on stderr) on an input the
   model refuses; never a traceback.

Derandomized (the ``CMPERF_HYPOTHESIS`` profiles of tests/test_fuzz_cli.py); a prompt CV > 0 costs ~0.5 s
an evaluation (gamma response quantiles inverted per batch size), so it is drawn in one case of five;
~40 s on two cores.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
from dataclasses import replace

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import event, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from test_aggregated_props import assert_percentiles_in_order
from test_fuzz_cli import examples  # one set of hypothesis profiles (CMPERF_HYPOTHESIS)

import cmperf
from cmperf import prefill as pre
from cmperf import render, serving
from cmperf.cli import main
from cmperf.errors import CmperfError

#: A warning would be printed before the user's result: it fails these tests (as tests/test_properties.py).
pytestmark = pytest.mark.filterwarnings("error")

#: Pool splits drawn per system, (prefill devices, decode devices, devices per prefill instance); None is
#: ``serving.default_pools`` (cloudmatrix384 96 + 160 of 16, dgx-h800 32 + 112, hgx-h200 32 + 96,
#: gb200-nvl72 32 + 40, all of 32).
SPLITS = {
    "cloudmatrix384": [None, (32, 64, 16), (192, 192, 32), (16, 32, 16)],
    "dgx-h800": [None, (16, 64, 16), (64, 80, 32), (32, 32, 32)],
    "hgx-h200": [None, (16, 32, 8), (64, 64, 32), (8, 16, 8)],
    "gb200-nvl72": [None, (8, 16, 8), (36, 36, 36), (16, 56, 16)],
}
POOLS = [(system, split) for system, splits in SPLITS.items() for split in splits]
FRAMEWORKS = [None, "sglang", "tensorrt-llm", "cloudmatrix-infer"]

#: Tolerances of the decode pool's Little's law (module docstring, item 5): from 20 grid cells up, and
#: from the grid's first point up.
DECODE_REL, DECODE_REL_GRID = 2e-3, 2e-2


@functools.cache
def specs(name: str):
    return cmperf.load_system(name), cmperf.load_model("deepseek-r1")


def pools_for(system: str, split, framework: str | None) -> serving.Pools:
    """The pools ``cmperf serve`` builds: the system's defaults, the instance, the split, the framework on
    both pools (serve_cmd.serve)."""
    p = serving.default_pools(*specs(system))
    if split is not None:
        prefill, decode, inst = split
        p = p.with_instance(inst).split(prefill, decode)
    return replace(
        p, decode=replace(p.decode, framework=framework), prefill=replace(p.prefill, framework=framework)
    )


def workload(load, p, o, pcv, ocv, hit) -> serving.Workload:
    kind, x = load
    return serving.Workload(
        rate_per_s=x if kind == "rate" else None,
        concurrency=x if kind == "users" else None,
        prompt_len=float(p),  # as `cmperf serve` parses them (its inputs echo 16.0, not 16)
        output_len=float(o),
        prompt_cv=pcv,
        output_cv=ocv,
        cache_hit=hit,
    )


def _event(what: str) -> None:
    """hypothesis.event inside a property; nothing in a plain test (the pinned examples)."""
    with contextlib.suppress(InvalidArgument):
        event(what)


def evaluate(pool, framework, load, p, o, pcv=0.0, ocv=0.0, hit=None, *, limits=False):
    """The result, or None when the model refuses the inputs (CmperfError)."""
    system, split = pool
    try:
        r = serving.evaluate(
            *specs(system),
            workload(load, p, o, pcv, ocv, hit),
            pools_for(system, split, framework),
            limits=limits,
        )
    except CmperfError:
        _event("refused (CmperfError)")
        return None
    _event("overloaded" if r.overloaded else "served")
    return r


#: Poisson rates log-uniform over 1e-3..3e3 req/s (light load on the largest pools to overload of the
#: smallest), closed loops of 1..2,000 or 2,000..100,000 users.
LOG_RATES = st.floats(-3.0, 3.5).map(lambda e: 10.0**e)
RATES = LOG_RATES.map(lambda x: ("rate", x))
USERS = st.one_of(st.integers(1, 2_000), st.integers(2_000, 100_000)).map(lambda n: ("users", n))
PROMPT_CV = st.sampled_from((0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.25, 1.0))  # CV > 0: slow, 1 in 5
OUTPUT_CV = st.sampled_from((0.0, 0.5, 1.5))
HIT = st.one_of(st.none(), st.floats(0.0, 0.95))


def cases(loads):
    return st.tuples(
        st.sampled_from(POOLS),
        st.sampled_from(FRAMEWORKS),
        loads,
        st.integers(128, 32768),
        st.integers(16, 8192),
        PROMPT_CV,
        OUTPUT_CV,
        HIT,
    )


def _times(r) -> dict[str, float]:
    return {**{f"ttft_{k}": v for k, v in r.ttft_s.items()}, **{f"tpot_{k}": v for k, v in r.tpot_s.items()}}


def _waits_for_memory(r) -> bool:
    """A closed loop of more users than the decode pool holds at its HBM cap (item 4)."""
    return r.ttft_memory_wait_s > 0


@settings(examples(60), deadline=None)
@given(cases(st.one_of(RATES, USERS)))
def test_outputs_finite_unless_overloaded(case):
    r = evaluate(*case)
    if r is None:
        return
    times = _times(r)
    assert not any(math.isnan(v) for v in times.values()), (case, times)
    assert math.isfinite(r.rate_rps) and r.rate_rps > 0, (case, r.rate_rps)
    u = r.utilization
    assert r.overloaded == (max(u.values()) >= 1), (case, u, r.overload_reasons)
    assert r.overloaded == bool(r.overload_reasons), case
    assert r.prefill.overloaded == (u["prefill"] >= 1), (case, u)
    assert r.decode.overloaded == (u["decode"] >= 1), (case, u)
    if r.prefill.overloaded:
        assert all(math.isinf(r.ttft_s[k]) for k in r.ttft_s), (case, r.ttft_s)
    if r.decode.overloaded:
        assert all(math.isinf(r.tpot_s[k]) for k in r.tpot_s), (case, r.tpot_s)
    if not r.overloaded:
        assert all(math.isfinite(v) and v > 0 for v in times.values()), (case, times)
        assert r.decode.tokens_per_s_per_device > 0, case


@settings(examples(50), deadline=None)
@given(cases(st.just(None)), st.lists(LOG_RATES, min_size=2, max_size=3))
def test_times_never_fall_as_the_rate_rises(case, rates):
    pool, framework, _, p, o, pcv, ocv, hit = case
    prev = None
    for x in sorted(rates):
        r = evaluate(pool, framework, ("rate", x), p, o, pcv, ocv, hit)
        if r is None:
            return
        cur = (x, r.overloaded, _times(r))
        if prev is not None:
            assert cur[1] or not prev[1], (case, prev, cur)  # overload never clears
            for k, v in cur[2].items():
                assert v >= prev[2][k], (case, k, prev, cur)
        prev = cur


@settings(examples(50), deadline=None)
@given(cases(st.one_of(RATES, USERS)))
def test_percentiles_in_order(case):
    assert_percentiles_in_order(case, evaluate(*case))


def _little(case, r) -> float:
    """Relative error of N = X (mean TTFT + O mean TPOT)."""
    n, o = case[2][1], case[4]
    return r.rate_rps * (r.ttft_s["mean"] + o * r.tpot_s["mean"]) / n - 1


@settings(examples(60), deadline=None)
@given(cases(USERS))
def test_littles_law_of_the_closed_loop(case):
    r = evaluate(*case)
    if r is None or r.overloaded:
        return
    u = r.utilization["prefill"]
    event(f"prefill utilization {'>= 0.999' if u >= 0.999 else '< 0.999'}")
    event("waits for KV memory" if _waits_for_memory(r) else "every user fits")
    err = _little(case, r)
    assert abs(err) <= 1e-6 + 4e-9 / (1 - u), (case, err, r.utilization)


def test_closed_loop_beyond_the_decode_cap():
    """hgx-h200's default pools, 100,000 users of 128 / 8,192 tokens: the decode pool serves 34.29 req/s at
    its HBM cap, where X (TTFT + O TPOT) = 34.29 x (0.037 s + 8,192 x 61.2 ms) holds 17,185 users; the other
    82,815 wait for KV memory, 82,815 / 34.29 = 2,415 s, in every TTFT (they were in no queue: TTFT 0.037 s
    and Little's law 83% off); not an overload (the loop limits itself), and the CLI says so."""
    case = (("hgx-h200", None), None, ("users", 100_000), 128, 8192, 0.0, 0.0, None)
    r = evaluate(*case)
    assert r.utilization["decode"] == pytest.approx(1.0, abs=1e-6) and not r.overloaded
    assert r.ttft_memory_wait_s == pytest.approx(2415.4, rel=1e-3)
    assert r.ttft_s["mean"] - r.prefill.ttft_mean_s == pytest.approx(r.ttft_memory_wait_s, rel=1e-12)
    assert abs(_little(case, r)) <= 1e-6, (_little(case, r), r.rate_rps, r.ttft_s["mean"])
    out = CliRunner().invoke(main, ["serve", "--system", "hgx-h200", "--concurrency", "100000",
                                    "--prompt-len", "128", "--output-len", "8192"])  # fmt: skip
    assert out.exit_code == 0 and "TTFT wait for KV memory" in out.output, out.output


def _decode_little(r) -> float:
    """Relative error of D b = X O TPOT (the decode pool's fixed point)."""
    d, o = r.decode, r.inputs["output_len"]
    return d.devices * d.batch_per_device / (r.rate_rps * o * d.tpot_mean_s) - 1


def _decode_cells(r) -> float:
    """The solved batch in cells of the decode curve's linear grid (cap / CURVE_POINTS apart)."""
    d = r.decode
    return d.batch_per_device / (d.max_batch_per_device / serving.CURVE_POINTS)


@settings(examples(80), deadline=None)
@given(cases(st.one_of(RATES, USERS)))
def test_littles_law_of_the_decode_pool(case):
    r = evaluate(*case)
    if r is None or r.decode.overloaded or _waits_for_memory(r):
        return
    cells = _decode_cells(r)
    event("from 20 cells up" if cells >= 20 else "below 20 cells")
    err = _decode_little(r)
    assert abs(err) <= (DECODE_REL if cells >= 20 else DECODE_REL_GRID), (case, err, cells)


def test_decode_littles_law_below_the_curve_grid():
    """dgx-h800, 32 + 32 GPUs, CloudMatrix-Infer's profile, 0.0018 req/s of 26,394 / 6,908 tokens (prompt
    CV 1.54): b = 0.0059 per GPU, far below the grid's first point 0.25, where ``np.interp`` holds TPOT at
    its value at 0.25: D b = 0.189 but X O TPOT = 0.154, 22% apart. The aggregated engine had the same
    defect and got geometric points below its grid (``serving.batch_grid``); serving's too now."""
    case = (("dgx-h800", (32, 32, 32)), "cloudmatrix-infer", ("rate", 0.0018107377812607536), 26394, 6908)
    r = evaluate(*case, 1.5431184654386987)
    assert _decode_cells(r) < 1
    assert abs(_decode_little(r)) <= DECODE_REL_GRID, _decode_little(r)


def test_decode_littles_law_in_the_first_grid_cell():
    """gb200-nvl72, 8 + 16 GPUs, TensorRT-LLM's profile, 56.26 req/s of 284 / 84 tokens: the HBM cap is
    3,515 sequences per GPU, the grid's first cell spans 0.25..9.06, and b = 2.77 sits in it: TPOT(b) is
    concave there, its chord understated it, and D b = 44.4 was 22.7% below X O TPOT = 57.4."""
    case = (("gb200-nvl72", (8, 16, 8)), "tensorrt-llm", ("rate", 56.25694605990634), 284, 84)
    r = evaluate(*case)
    assert 0 <= _decode_cells(r) < 1
    assert abs(_decode_little(r)) <= DECODE_REL_GRID, _decode_little(r)


@settings(examples(40), deadline=None)
@given(
    st.sampled_from(POOLS),
    st.sampled_from(FRAMEWORKS),
    LOG_RATES,
    st.integers(128, 32768),
    st.integers(16, 8192),
    st.floats(0.01, 0.95),
)
def test_cache_saves_prefill_compute(pool, framework, rate, p, o, h):
    system, split = pool
    sysm, model = specs(system)
    r = evaluate(pool, framework, ("rate", rate), p, o, hit=h)
    if r is None:
        return
    c = r.cache
    assert c["model"] == "direct" and c["token_hit_rate"] == h, c
    assert c["prefill_tokens_saved_per_s"] == pytest.approx(rate * h * p, rel=1e-12), c
    dep = pools_for(system, split, framework).resolve(sysm, model).prefill
    # the default prefix: half the prompt (serving.cache_pool)
    per_tok = serving.kv_bytes_per_token(model, dep.precision.kv, p / 2)
    assert c["kv_load_bytes_per_s"] == pytest.approx(rate * h * p * per_tok, rel=1e-12), c
    # per batch size of the scheduler's grid (serving.prefill_grid's prefill call)
    b = np.asarray(serving.PREFILL_BATCH_GRID, dtype=float)
    dep = replace(dep, tokens_per_device=b * p / dep.devices, prompt_len=p)
    none = pre.evaluate(sysm, model, replace(dep, cache_hit=0.0))
    free = pre.evaluate(sysm, model, replace(dep, cache_hit=h), load_cache=False)
    hit = pre.evaluate(sysm, model, replace(dep, cache_hit=h))
    base = np.broadcast_to(np.asarray(none.batch_s, dtype=float), b.shape)
    ok = np.broadcast_to(np.asarray(none.feasible, dtype=bool), b.shape)
    compute = np.broadcast_to(np.asarray(free.batch_s, dtype=float), b.shape)
    loaded = np.broadcast_to(np.asarray(hit.batch_s, dtype=float), b.shape)
    load = np.broadcast_to(np.asarray(hit.cache_load_s, dtype=float), b.shape)
    tol = 1e-12 * base
    assert np.all(compute[ok] <= base[ok] + tol[ok]), (pool, framework, p, h, compute[ok] / base[ok])
    assert np.all(loaded[ok] <= base[ok] + load[ok] + tol[ok]), (pool, framework, p, h)


@settings(examples(15), deadline=None)
@given(cases(st.one_of(RATES, USERS)))
def test_same_inputs_same_result(case):
    pool, framework, load, p, o, pcv, ocv, hit = case
    wl = workload(load, p, o, pcv, ocv, hit)
    outcomes = []
    for _ in range(2):
        try:
            outcomes.append(serving.evaluate(*specs(pool[0]), wl, pools_for(*pool, framework), limits=False))
        except CmperfError as e:
            outcomes.append(("CmperfError", str(e)))
    assert outcomes[0] == outcomes[1], case


RUNNER = CliRunner(env={"CMPERF_PATH": None, "COLUMNS": "100"})


def _cli_args(case) -> list[str]:
    (system, split), framework, (kind, x), p, o, pcv, ocv, hit = case
    args = ["serve", "--system", system, "--model", "deepseek-r1", "--format", "json"]
    args += ["--rate", repr(x)] if kind == "rate" else ["--concurrency", str(x)]
    args += [
        "--prompt-len",
        str(p),
        "--output-len",
        str(o),
        "--prompt-cv",
        repr(pcv),
        "--output-cv",
        repr(ocv),
    ]
    if hit is not None:
        args += ["--cache-hit", repr(hit)]
    if split is not None:
        args += ["--prefill-devices", str(split[0]), "--decode-devices", str(split[1])]
        args += ["--prefill-instance-devices", str(split[2])]
    if framework is not None:
        args += ["--framework", framework]
    return args


@settings(examples(12), deadline=None)
@given(cases(st.one_of(RATES, USERS)).filter(lambda c: c[5] == 0.0))  # the slow prompt CV: no news here
def test_cli_prints_the_library_result(case):
    res = RUNNER.invoke(main, _cli_args(case))
    assert res.exception is None or isinstance(res.exception, SystemExit), (case, res.exc_info)
    assert "Traceback" not in res.output, case
    pool, framework, load, p, o, pcv, ocv, hit = case
    try:
        lib = serving.evaluate(
            *specs(pool[0]), workload(load, p, o, pcv, ocv, hit), pools_for(*pool, framework)
        )
    except CmperfError as e:
        assert res.exit_code == 2, (case, res.exit_code, res.output)
        lines = [ln for ln in res.stderr.splitlines() if ln]
        assert lines == [f"cmperf: error: {e}"], (case, res.stderr)
        return
    assert res.exit_code == (3 if lib.overloaded else 0), (case, res.exit_code, res.stderr)
    # the whole document: TTFT, TPOT, rate, pools, cache, limits (its floats at render's 12 digits)
    assert res.stdout == render.to_json(serving.finite_or_none(lib), "serve"), case
    doc = json.loads(res.stdout)
    assert doc["overloaded"] is lib.overloaded, case
    for k, v in lib.ttft_s.items():
        assert doc["ttft_s"][k] == (pytest.approx(v, rel=1e-11) if math.isfinite(v) else None), (case, k)
