"""cmperf.routing against the measured routing statistics of ../shared/reference/routing.md.

The TensorRT-LLM EP blog's table (DeepSeek-R1 decode, 32 GB200, machine translation, 128 tokens per rank)
is development data: of its 12 numbers, the no-EPLB by-rank and by-slot (max-mean)/mean (with the coolest
layer, 0.459) fix the skew profile and the group share, and the two EPLB by-rank stds fix D_COPY; the
other 8 (the no-EPLB stds, the EPLB rows' by-rank and by-slot max and by-slot std) are predictions.
Tolerance 15% on every number (the issue's requirement).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from cmperf import routing
from cmperf.errors import CmperfError

E, K, G = 256, 8, 8  # DeepSeek-R1: routed experts, top-k, routing groups (cloudmatrix384.md §3)
TOK = routing.TRT_TOKENS_PER_RANK
MODES = ("none", "static", "dynamic", "perfect")


def stats(ep, slots, eplb, tokens=TOK, seqs=None, dataset="translation", **kw):
    seqs = tokens if seqs is None else seqs
    return routing.rank_load_stats(E, K, ep, slots, eplb, dataset, tokens, seqs, n_groups=G, **kw)


# --- the TensorRT-LLM table ------------------------------------------------------------------------


@pytest.mark.parametrize(("row", "measured"), list(routing.TRT_TABLE.items()), ids=str)
def test_trt_table_within_15_percent(row, measured):
    eplb, ep, slots = row
    s = stats(ep, slots, eplb)
    model = (
        float(s["recv_max_over_mean"]) - 1.0,
        float(s["recv_cv"]),
        float(s["slot_max_over_mean"]) - 1.0,
        float(s["slot_cv"]),
    )
    names = ("by-rank (max-mean)/mean", "by-rank std/mean", "by-slot (max-mean)/mean", "by-slot std/mean")
    for name, got, want in zip(names, model, measured, strict=True):
        assert got == pytest.approx(want, rel=0.15), f"{row} {name}: model {got:.4f}, measured {want:.4f}"


def test_trt_per_layer_spread():
    """No EPLB, EP32: the measured layers span 0.459 (layer 5) to 2.461 (layer 58); the model's layers
    must cover that range (within 15%). EPLB at EP36: every measured layer 0.08-0.11; every model layer
    inside that band widened by 15%."""
    none = stats(32, 8, "none", layer="all")["recv_max_over_mean"] - 1.0
    assert none.shape == (58,)
    assert none.min() <= 0.459 * 1.15
    assert none.max() >= 2.461 * 0.85
    eplb = stats(36, 8, "perfect", layer="all")["recv_max_over_mean"] - 1.0
    assert eplb.min() >= 0.08 / 1.15
    assert eplb.max() <= 0.11 * 1.15


def test_constants_are_their_fits():
    """The fitted constants are what fit_* give on the table (development data), to 2%."""
    d = routing.fit_copy_dispersion()
    assert d == pytest.approx(routing.D_COPY, rel=0.02)
    lo, hi, group = routing.fit_translation(routing.D_COPY)
    ds = routing.DATASETS["translation"]
    assert lo == pytest.approx(ds.sigma_lo, rel=0.02)
    assert hi == pytest.approx(ds.sigma_hi, rel=0.02)
    assert group == pytest.approx(routing.GROUP_CORR, abs=0.005)


def test_xdeepserve_sharegpt_layer():
    """xDeepServe §4.5 (ShareGPT, one layer): 20% of experts above the mean load (15%), the hottest
    expert ~30x the mean: some model layer reaches it (15%); none exceeds the top-k cap E/k = 32 by more
    than the per-step noise."""
    sig = routing.layer_sigmas("sharegpt")
    median = int(np.argsort(sig)[sig.size // 2])
    p = routing.popularity("sharegpt")[median]
    assert float((p > 1.0 / E).mean()) == pytest.approx(0.20, rel=0.15)
    hottest = stats(32, 8, "none", dataset="sharegpt", layer="all")["slot_max_over_mean"]
    assert hottest.max() >= 30 * 0.85
    assert np.all(routing.popularity("sharegpt") <= 1.0 / K + 1e-12)  # a token picks distinct experts


def test_hot_layer_changes_with_dataset():
    """routing.md: the hot layer is 36 for translation and 57 for GSM8K (DeepSeek-R1 layer ids)."""
    first = 3  # DeepSeek-R1's first MoE layer
    assert int(np.argmax(routing.layer_sigmas("translation"))) + first == 36
    assert int(np.argmax(routing.layer_sigmas("gsm8k"))) + first == 57
    tr = stats(32, 8, "none", layer="all")["recv_max_over_mean"]
    assert int(np.argmax(tr)) + first == 36


# --- the mechanisms ---------------------------------------------------------------------------------


@pytest.mark.parametrize("eplb", ("static", "dynamic", "perfect"))
def test_more_slots_less_imbalance(eplb):
    r = stats(32, np.arange(8, 17), eplb)["recv_max_over_mean"]
    assert np.all(np.diff(r) <= 1e-9), r
    assert r[-1] < r[0]


def test_no_eplb_ignores_redundant_slots():
    r = stats(32, np.arange(8, 13), "none")["recv_max_over_mean"]
    assert np.allclose(r, r[0])


@pytest.mark.parametrize("eplb", MODES)
def test_more_tokens_less_noise(eplb):
    tok = np.geomspace(1, 65536, 17)
    s = stats(32, 9, eplb, tokens=tok, seqs=tok)
    for key in ("recv_max_over_mean", "slot_max_over_mean", "send_max_over_mean"):
        assert np.all(np.diff(s[key]) <= 1e-9), (key, s[key])
    # the noise vanishes: perfect EPLB tends to its placement residual (< 1.5% at 288 slots)
    if eplb == "perfect":
        assert s["recv_max_over_mean"][-1] < 1.015


def test_sequence_correlation():
    """At a fixed token count, fewer (longer) sequences are fewer independent samples: more imbalance;
    with one token per sequence (decode without MTP) the correlation does not matter."""
    seqs = np.array([1, 2, 8, 64, 512, 8192])
    r = stats(32, 9, "perfect", tokens=8192, seqs=seqs)["recv_max_over_mean"]
    assert np.all(np.diff(r) < 0), r
    one = stats(32, 9, "perfect", tokens=128, seqs=128, seq_corr=1.0)["recv_max_over_mean"]
    zero = stats(32, 9, "perfect", tokens=128, seqs=128, seq_corr=0.0)["recv_max_over_mean"]
    assert one == pytest.approx(zero, rel=1e-12)
    # at rho = 1 the effective samples are the sequences: 8192 tokens of 64 sequences = 64 tokens of 64
    long = stats(32, 9, "perfect", tokens=8192, seqs=64)["recv_max_over_mean"]
    short = stats(32, 9, "perfect", tokens=64, seqs=64)["recv_max_over_mean"]
    assert long == pytest.approx(short, rel=1e-9)


def test_mode_ordering():
    """perfect <= dynamic <= static <= none: on average over EP sizes, batches and datasets, and at every
    point with at least 256 sequences in the EP group (below that the dynamic plan's window of one
    batch is a noisier estimate than another dataset's statistics, which the model keeps)."""
    eps = [(8, 36), (32, 9), (36, 8), (72, 4), (144, 2)]
    tok = np.array([1.0, 8, 64, 512, 8192, 8192])
    seq = np.array([1.0, 8, 64, 512, 2, 64])
    means: dict[str, list[float]] = {m: [] for m in MODES}
    for dataset in ("translation", "sharegpt"):  # gsm8k has translation's skews
        for ep, slots in eps:
            r = {
                m: stats(ep, slots, m, tokens=tok, seqs=seq, dataset=dataset)["recv_max_over_mean"]
                for m in MODES
            }
            for m in MODES:
                means[m].append(r[m].mean())
            big = seq * ep >= 256
            assert np.all(r["perfect"] <= r["dynamic"] + 1e-12)
            assert np.all(r["dynamic"][big] <= r["static"][big])
            assert np.all(r["static"] <= r["none"] + 1e-12)
    avg = [float(np.mean(means[m])) for m in ("perfect", "dynamic", "static", "none")]
    assert avg == sorted(avg) and avg[0] < avg[-1]


def test_dynamic_approximation_matches_replanning():
    """``dynamic`` is the perfect plan at ε² + the window's error; against EPLB re-planned on sampled
    window estimates (seeded) it is within 3%."""
    rng = np.random.default_rng(5)
    p = routing.popularity("translation").reshape(-1, E)
    for ranks, slots, tok, seq in [(32, 9, 128, 128), (32, 9, 16, 16), (36, 8, 128, 128)]:
        eps = routing.noise_level(K, ranks, "perfect", tok, seq).reshape(1)
        n_win = seq * ranks * K / routing.D_COPY  # the window's effective copies (rho = 1, one batch)
        got = []
        for _ in range(2):
            est = rng.poisson(p * n_win) / n_win + 1e-15
            place = routing.placement(est / est.sum(1, keepdims=True), E, p.shape[0], ranks, slots)
            got.append(routing._row_stats(p, *place, ranks, K, eps)["recv_max_over_mean"].mean())
        model = float(stats(ranks, slots, "dynamic", tokens=tok, seqs=seq)["recv_max_over_mean"])
        assert model == pytest.approx(np.mean(got), rel=0.03)


def test_normal_approximation_at_small_batch():
    """Clark's normal approximation against Poisson counts (seeded Monte Carlo, D = 1), down to one
    token per rank: within 5%."""
    rng = np.random.default_rng(7)
    p = routing.popularity("translation").reshape(-1, E)[::8]
    rows = p.shape[0]
    for ranks, slots, tok, plan in [(32, 9, 128, "perfect"), (32, 9, 1, "perfect"), (32, 8, 2, "none")]:
        expert, copies, rank = routing.placement(None if plan == "none" else p, E, rows, ranks, slots)
        n = tok * ranks * K
        eps = routing.noise_level(K, ranks, plan, tok, tok, copy_dispersion=1.0).reshape(1)
        model = routing._row_stats(p, expert, copies, rank, ranks, K, eps)["recv_max_over_mean"].mean()
        mc = []
        for _ in range(100):
            per_slot = np.take_along_axis(rng.poisson(n * p), expert, axis=1) / copies
            load = np.zeros((rows, ranks))
            np.add.at(load, (np.broadcast_to(np.arange(rows)[:, None], rank.shape), rank), per_slot)
            mc.append((load.max(axis=1) / (n / ranks)).mean())
        assert model == pytest.approx(np.mean(mc), rel=0.05)


def test_expected_max_clark():
    """E[max] of n standard normals (32: 2.0697, 288: 2.8643, by Monte Carlo) within 1%."""
    for n, want in [(8, 1.4236), (32, 2.0697), (288, 2.8643)]:
        got = routing.expected_max(np.zeros((1, n)), np.ones((1, n)), np.array([1.0]))[0, 0]
        assert got == pytest.approx(want, rel=0.01)
    # no noise: the largest mean
    mu = np.array([[0.3, 0.9, 0.1]])
    assert routing.expected_max(mu, np.ones_like(mu), np.array([0.0]))[0, 0] == pytest.approx(0.9)


def test_send_and_dedup_volumes():
    """With attention DP every rank sends its own tokens: the busiest sender is within a few percent of
    the mean while the busiest receiver is not; one message per destination rank has at most min(k, EP)
    messages per token, near EP (1 - (1 - 1/EP)^k) once EPLB balances the ranks."""
    s = stats(32, 8, "none")
    assert 1.0 <= float(s["send_max_over_mean"]) < 1.05
    assert float(s["recv_max_over_mean"]) > 2.0
    assert 1.0 < float(s["recv_rank_max_over_mean"]) < float(s["recv_max_over_mean"])
    for ep, slots in [(8, 36), (32, 9), (144, 2)]:
        per_tok = float(stats(ep, slots, "perfect")["rank_copies_per_token"])
        uniform = ep * (1.0 - (1.0 - 1.0 / ep) ** K)
        assert per_tok <= min(K, ep) + 1e-9
        assert per_tok == pytest.approx(uniform, rel=0.05)


# --- the API ----------------------------------------------------------------------------------------


def test_broadcast_and_layers():
    ep = np.array([32, 36])[:, None]
    slots = np.array([9, 8])[:, None]
    tok = np.array([[16.0, 128.0, 1024.0]])
    s = stats(ep, slots, "dynamic", tokens=tok, seqs=tok)
    for v in s.values():
        assert v.shape == (2, 3)
    one = stats(36, 8, "dynamic", tokens=128.0, seqs=128.0)
    assert float(one["recv_max_over_mean"]) == s["recv_max_over_mean"][1, 1]
    per_layer = stats(ep, slots, "dynamic", tokens=tok, seqs=tok, layer="all")
    assert per_layer["recv_max_over_mean"].shape == (2, 3, 58)
    assert np.allclose(per_layer["recv_max_over_mean"].mean(axis=-1), s["recv_max_over_mean"])
    l33 = stats(ep, slots, "dynamic", tokens=tok, seqs=tok, layer=33)
    assert np.array_equal(l33["slot_max_over_mean"], per_layer["slot_max_over_mean"][..., 33])


def test_deterministic():
    a = stats(32, 9, "static", tokens=np.array([4.0, 128.0]))
    routing._tables.cache_clear()
    b = stats(32, 9, "static", tokens=np.array([4.0, 128.0]))
    for k in a:
        assert np.array_equal(a[k], b[k])
    assert np.array_equal(routing.popularity("gsm8k"), routing.popularity("gsm8k"))


def test_ideal_and_empty():
    s = stats(np.array([32, 288]), np.array([9, 1]), "ideal")
    for k in ("recv_max_over_mean", "send_max_over_mean", "slot_max_over_mean"):
        assert np.all(s[k] == 1.0)
    assert np.all(s["recv_cv"] == 0.0) and np.all(s["slot_cv"] == 0.0)
    assert s["rank_copies_per_token"][0] == pytest.approx(32 * (1 - (31 / 32) ** 8))
    z = stats(32, 9, "none", tokens=np.array([0.0, 128.0]), seqs=1.0)
    assert z["recv_max_over_mean"][0] == 1.0 and z["recv_max_over_mean"][1] > 2.0
    assert z["recv_cv"][0] == 0.0


def test_errors():
    with pytest.raises(CmperfError, match="eplb"):
        stats(32, 9, "greedy")
    with pytest.raises(CmperfError, match="dataset"):
        stats(32, 9, "none", dataset="mmlu")
    with pytest.raises(CmperfError, match="hold"):
        stats(16, 8, "perfect")
    with pytest.raises(CmperfError, match="layer"):
        stats(32, 9, "perfect", layer=58)
    with pytest.raises(CmperfError, match="groups"):
        routing.rank_load_stats(E, K, 32, 9, "none", "translation", 1, 1, n_groups=3)


def test_cached_call_is_cheap():
    """After the first call per (EP, slots) the grid is numpy arithmetic: 10^5 points well under 1 s
    (generous: the machine is shared)."""
    import time

    tok = np.geomspace(1, 20000, 100_000)
    stats(32, 9, "dynamic", tokens=tok[:2], seqs=tok[:2])
    t = time.perf_counter()
    stats(32, 9, "dynamic", tokens=tok, seqs=np.maximum(tok / 4, 1))
    assert time.perf_counter() - t < 1.0
    assert math.isfinite(float(stats(32, 9, "dynamic")["recv_max_over_mean"]))


def test_prefill_measured_routing_moves_the_all_to_all_and_the_experts():
    """Prefill takes the measured modes: dgx-h800 EP32 (one 4,096-token prompt per rank and microbatch) runs
    9,094 tokens/s per GPU balanced and 5,161 / 4,531 / 4,054 with dynamic / static / no EPLB (max/mean
    2.21 / 2.60 / 2.98); the dispatch is timed at its busiest rank, so it slows too, not only the experts."""
    from cmperf import prefill, specs
    from cmperf.deployment import Deployment

    h800 = specs.load_system("dgx-h800")
    r1 = specs.load_model("deepseek-r1")
    runs = {
        e: prefill.predict(h800, r1, Deployment(phase="prefill", devices=32, ep_size=32, eplb=e))
        for e in ("perfect", "dynamic", "static", "none")
    }
    tps = [runs[e].tokens_per_s_per_device for e in ("perfect", "dynamic", "static", "none")]
    assert tps == pytest.approx([9094, 5161, 4531, 4054], rel=0.02)
    assert runs["none"].imbalance == pytest.approx(2.98, rel=0.02)

    def op(p, name):
        return next(o for o in p.ops if o.name == name).total_s

    assert op(runs["none"], "moe.dispatch") > 1.5 * op(runs["perfect"], "moe.dispatch")
    assert op(runs["none"], "moe.experts.up") > 1.5 * op(runs["perfect"], "moe.experts.up")
