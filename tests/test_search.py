"""Search: vectorized Pareto filter, ranking, reason counts, grid vs the scalar predictor, CLI contracts."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import ddep

from cmperf import decode, search, specs
from cmperf.cli import main


@pytest.fixture(scope="module")
def cm():
    return specs.load_system("cloudmatrix384"), specs.load_model("deepseek-r1")


@pytest.fixture(scope="module")
def res50(cm):
    s, m = cm
    return search.search_decode(s, m, prompt_len=4096, output_len=256, tpot_slo_s=0.05)


def brute_pareto(x, y):
    n = len(x)
    return np.array(
        [
            not any((x[j] >= x[i]) and (y[j] <= y[i]) and ((x[j] > x[i]) or (y[j] < y[i])) for j in range(n))
            for i in range(n)
        ]
    )


def test_pareto_mask_matches_brute_force():
    rng = np.random.default_rng(1)
    for _ in range(20):
        x = rng.integers(0, 30, 200).astype(float)  # integers: many ties
        y = rng.integers(0, 30, 200).astype(float)
        got = search.pareto_mask(x, y)
        want = brute_pareto(x, y)
        # duplicates of a frontier point: exactly one copy is kept
        for i in np.flatnonzero(want):
            same = (x == x[i]) & (y == y[i])
            assert got[same].sum() == 1
        assert not got[~want].any()


def test_rank_is_total_and_stable():
    tps = np.array([5.0, 7.0, 7.0, 1.0])
    tpot = np.array([1.0, 3.0, 2.0, 0.5])
    assert search.rank(tps, tpot).tolist() == [2, 1, 0, 3]


def test_first_reason_counts_each_candidate_once():
    a = np.array([True, False, False, True, True])
    b = np.array([False, False, True, True, False])
    ok, counts = search.first_reason([("a", a), ("b", b)])
    assert counts == {"a": 2, "b": 2}
    assert ok.tolist() == [False, False, False, True, False]


def test_instance_sizes_from_hardware(cm):
    s, m = cm
    sizes = search.instance_sizes(s)
    assert sizes[:5].tolist() == [1, 2, 4, 8, 16]
    assert sizes[-1] == 384 and len(sizes) == 51  # 3 sub-node + 48 whole nodes
    assert search.placement_ok(m, [0, 257, 320]).tolist() == [
        False,
        True,
        True,
    ]  # place_experts raises on EP0
    assert 16 in search.core_splits(s)  # the paper's 16 AIC attention stream is in the space


def test_grid_matches_scalar_predictor(cm, res50):
    s, m = cm
    _, g = res50
    rng = np.random.default_rng(3)
    evaluated = np.isfinite(g.tpot_s)  # placeable sizes, batches up to the HBM cut (search.hbm_batches)
    assert evaluated.sum() > g.hbm_ok.sum() and np.all(g.placement_ok[evaluated])
    for i in rng.choice(np.flatnonzero(evaluated), 12, replace=False):
        c = search._decode_row(g, int(i))
        ev = decode.evaluate(
            s,
            m,
            ddep(
                batch_per_device=c.batch_per_device,
                kv_len=4224.0,
                ep_size=c.ep_size,
                microbatches=c.microbatches,
                mtp=c.mtp,
                attention_cube_cores=c.attention_cube_cores,
                kv_capacity_len=4352.0,
                kv_cv=256 / 12**0.5 / 4224.0,  # the workload's spread (deployment.kv_lengths), as decode
            ),
        )
        assert float(ev.tpot_s) == pytest.approx(c.tpot_s, rel=1e-12)


def test_decode_search_under_50ms(res50):
    r, g = res50
    assert r.evaluated == g.size == r.accepted + sum(r.rejected.values())
    assert r.rejected["TPOT SLO"] > 0 and r.rejected["HBM fit"] > 0
    b = r.best
    assert b.tpot_s <= 0.05
    ok = g.placement_ok & g.hbm_ok & (g.tpot_s <= 0.05)
    assert b.tokens_per_s_per_device == pytest.approx(np.max(g.tokens_per_s_per_device[ok]), rel=1e-12)
    assert b.microbatches > 1  # microbatching on wins at 50 ms (the paper's choice too)
    assert r.binding.constraint in ("TPOT SLO", "HBM fit")
    assert r.binding.max_batch_under_slo >= b.batch_per_device  # root finding agrees with the grid
    assert r.binding.max_batch_under_slo < b.batch_per_device + 2 or r.binding.constraint == "HBM fit"
    tps = [c.tokens_per_s_per_device for c in r.pareto]
    tpot = [c.tpot_s for c in r.pareto]
    assert tpot == sorted(tpot) and tps == sorted(tps)  # a frontier: slower TPOT buys more throughput


def test_tighter_slo_costs_throughput_and_batch(cm, res50):
    s, m = cm
    r30, _ = search.search_decode(s, m, prompt_len=4096, output_len=256, tpot_slo_s=0.03, explain=False)
    r50 = res50[0]
    assert r30.best.tokens_per_s_per_device < r50.best.tokens_per_s_per_device
    assert r30.best.batch_per_device < r50.best.batch_per_device


def test_optimize_json_deterministic_and_unmeetable_slo_exits_1():
    runner = CliRunner()
    args = ["optimize", "--format", "json", "--top", "3"]
    a = runner.invoke(main, args)
    b = runner.invoke(main, args)
    assert a.exit_code == 0, a.output
    assert a.output == b.output
    doc = json.loads(a.output)
    for k in (
        "ep_size",
        "batch_per_device",
        "microbatches",
        "prefill_devices",
        "decode_devices",
        "mtp",
        "attention_cube_cores",
        "tpot_s",
        "tokens_per_s_per_device",
    ):
        assert k in doc["best"]
    assert len(doc["top"]) == 3 and doc["pareto"] and set(doc["rejected"]) == set(search.DECODE_REASONS)
    bad = runner.invoke(main, ["optimize", "--tpot-slo", "1ms", "--format", "markdown"])
    assert bad.exit_code == 1
    assert "no configuration meets --tpot-slo 1.00 ms" in bad.output
    assert "closest decode configurations" in bad.output
    assert runner.invoke(main, ["optimize", "--tpot-slo", "fast"]).exit_code == 2


def test_pareto_command_markdown():
    r = CliRunner().invoke(main, ["pareto", "--phase", "decode", "--format", "markdown"])
    assert r.exit_code == 0, r.output
    assert r.output.startswith("# Pareto frontier: decode tokens/s per device vs TPOT")


def test_grid_is_few_calls_and_splitting_changes_nothing(cm):
    s, m = cm
    base = ddep(kv_len=4224.0, kv_capacity_len=4352.0)
    space = search.decode_space(s, m, base)
    calls = []
    one = search.evaluate_decode_grid(s, m, space, base, progress=lambda i, n: calls.append((i, n)))
    # CM384: the 1-8 NPU sizes (no batch fits: one witness batch each) and the rest, two calls
    assert calls == [(1, 2), (2, 2)] and one.size == space.size
    calls.clear()
    split = search.evaluate_decode_grid(
        s,
        m,
        space,
        base,
        max_points=space.size // 7,
        progress=lambda i, n: calls.append((i, n)),
    )
    assert len(calls) >= 7 and calls[-1][0] == calls[-1][1]
    for f in search.DecodeGrid.__dataclass_fields__:
        np.testing.assert_array_equal(getattr(one, f), getattr(split, f), err_msg=f)
    # every (mtp, microbatches, cores, size, batch) configuration exactly once; cores only with > 1 microbatch
    keys = np.stack([one.mtp, one.microbatches, one.attention_cube_cores, one.devices, one.batch_per_device])
    assert np.unique(keys, axis=1).shape[1] == one.size
    assert np.all((one.attention_cube_cores < 0) == (one.microbatches == 1))


def test_pareto_ties_go_to_the_tie_keys():
    x = np.array([5.0, 5.0, 5.0, 1.0])
    y = np.array([2.0, 2.0, 2.0, 1.0])
    assert search.pareto_mask(x, y).tolist() == [True, False, False, True]  # first position by default
    assert search.pareto_mask(x, y, np.array([3.0, 1.0, 2.0, 0.0])).tolist() == [False, True, False, True]
