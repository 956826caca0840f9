import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import ddep

from cmperf import decode
from cmperf.cli import main

PAPER = {96: (1943.0, 49.4e-3), 8: (538.0, 14.9e-3)}  # CM384 §5: tokens/s per NPU, TPOT


def test_vectorized_matches_scalar(cm384, r1):
    b = np.array([8.0, 32.0, 96.0])
    ev = decode.evaluate(cm384, r1, ddep(batch_per_device=b, kv_len=4096, ep_size=320))
    for i, bi in enumerate(b):
        p = decode.predict(cm384, r1, ddep(batch_per_device=float(bi)))
        assert p.tpot_s == pytest.approx(float(ev.tpot_s[i]), rel=1e-12)


def test_tpot_monotone_in_batch_and_kv(cm384, r1):
    b = np.arange(1, 257, dtype=float)[:, None]
    kv = np.array([512.0, 1024, 2048, 4096, 8192, 16384, 32768])[None, :]
    ev = decode.evaluate(cm384, r1, ddep(batch_per_device=b, kv_len=kv, ep_size=320))
    assert np.all(np.diff(ev.tpot_s, axis=0) >= -1e-12), "TPOT falls as batch grows"
    assert np.all(np.diff(ev.tpot_s, axis=1) >= -1e-12), "TPOT falls as KV grows"
    thr = np.where(ev.feasible, ev.tokens_per_s_per_device, np.inf)
    ok = np.diff(ev.tokens_per_s_per_device, axis=0) >= -1e-9
    assert np.all(ok | ~np.isfinite(thr[1:])), "tokens/s per device falls as batch grows while it fits"


def test_memory_limit_and_infeasible(cm384, r1):
    p = decode.predict(cm384, r1, ddep(batch_per_device=96, kv_len=4096))
    assert p.feasible and 150 < p.max_batch_per_device < 400
    big = decode.predict(cm384, r1, ddep(batch_per_device=96, kv_len=32768))
    assert not big.feasible and "largest batch that fits" in big.reasons[0]
    assert big.max_batch_per_device < 96


def test_microbatching_and_mtp_effects(cm384, r1):
    base = decode.predict(cm384, r1, ddep())
    no_mtp = decode.predict(cm384, r1, ddep(mtp=0))
    # MTP: the step grows (verifying 2 tokens) but TPOT falls, since 1.7 tokens are emitted per step
    assert no_mtp.step_s < base.step_s and no_mtp.tpot_s > base.tpot_s
    one = decode.predict(cm384, r1, ddep(microbatches=1))
    assert one.step_s > base.step_s  # overlap of the two streams helps at batch 96
    perfect = decode.predict(cm384, r1, ddep(eplb="perfect"))
    assert perfect.imbalance == 1.0 and base.imbalance > 1.0
    assert perfect.tpot_s <= base.tpot_s


def test_bounds_bracket_prediction(cm384, r1):
    for b in (1, 8, 96, 200):
        p = decode.predict(cm384, r1, ddep(batch_per_device=b))
        assert p.lower_tpot_s < p.tpot_s < p.upper_tpot_s


def test_breakdown_names_and_bounds(cm384, r1):
    p = decode.predict(cm384, r1, ddep())
    names = {r.name for r in p.ops}
    for n in (
        "mla.q_down",
        "mla.q_up",
        "mla.kv_down",
        "mla.k_absorb",
        "mla.attention",
        "mla.v_absorb",
        "mla.o_proj",
        "moe.gate",
        "moe.dispatch",
        "moe.experts.up",
        "moe.experts.down",
        "moe.combine",
        "lm_head",
        "embed",
        "mtp.proj",
        "dense.up",
    ):
        assert n in names
    att = next(r for r in p.ops if r.stage == "moe" and r.name == "mla.attention")
    assert att.bound == "compute"  # 2 query tokens x 128 heads over 4K latent KV at batch 48 per die
    small = decode.predict(cm384, r1, ddep(batch_per_device=8))
    disp = next(r for r in small.ops if r.stage == "moe" and r.name == "moe.dispatch")
    assert disp.bound == "latency"


# ---------- --microbatches auto


@pytest.mark.parametrize("batch", [2, 4, 8, 32, 96, 200])
def test_auto_microbatches_is_the_min_over_explicit(cm384, r1, batch):
    auto = decode.predict(cm384, r1, ddep(batch_per_device=batch, microbatches="auto"))
    cands = decode.microbatch_candidates(cm384, batch)
    explicit = {n: decode.predict(cm384, r1, ddep(batch_per_device=batch, microbatches=n)) for n in cands}
    tried = auto.deployment["microbatches_auto_tpot_s"]
    assert auto.deployment["microbatches_auto"] is True
    assert {int(k): v for k, v in tried.items()} == {n: p.tpot_s for n, p in explicit.items()}  # exact
    best = min(cands, key=lambda n: (explicit[n].tpot_s, n))  # ties: fewer microbatches
    assert auto.deployment["microbatches"] == best
    assert auto.tpot_s == explicit[best].tpot_s and auto.step_s == explicit[best].step_s
    assert [r.total_s for r in auto.ops] == [r.total_s for r in explicit[best].ops]


def test_auto_candidates_need_a_sequence_per_microbatch(cm384, r1):
    rpd = cm384.ranks_per_device
    assert decode.microbatch_candidates(cm384, 1 * rpd) == (1,)
    assert decode.microbatch_candidates(cm384, 2 * rpd) == (1, 2)
    assert decode.microbatch_candidates(cm384, 3 * rpd) == (1, 2, 3)
    assert decode.microbatch_candidates(cm384, 0.5) == (1,)


def test_auto_prefers_configurations_that_fit(cm384, r1, monkeypatch):
    """If the lowest-TPOT count does not fit in HBM but another does, auto takes the one that fits."""
    real = decode.evaluate

    def fake(system, model, dep):
        ev = real(system, model, dep)
        n = np.asarray(dep.microbatches, dtype=float)
        tpot = np.where(n == 3, 1e-6, ev.tpot_s)  # 3 microbatches "fastest" but does not fit
        return decode.DecodeEval(**{**ev.__dict__, "tpot_s": tpot, "feasible": n < 3})

    monkeypatch.setattr(decode, "evaluate", fake)
    p = decode.predict(cm384, r1, ddep(batch_per_device=96, microbatches="auto"))
    tried = {int(k): v for k, v in p.deployment["microbatches_auto_tpot_s"].items()}
    n = p.deployment["microbatches"]
    assert tried[3] == 1e-6 and n == min((1, 2), key=lambda k: (tried[k], k))


def test_cli_auto_is_the_default_and_marked(cm384, r1):
    import json

    from click.testing import CliRunner

    from cmperf.cli import main

    def run(*args):
        r = CliRunner().invoke(main, ["decode", *args])
        assert r.exit_code == 0, r.output
        return r.output

    for batch in ("8", "96"):
        auto = json.loads(run("--batch", batch, "--format", "json"))
        dep = auto["deployment"]
        chosen = dep["microbatches"]
        assert dep["microbatches_auto"] is True and chosen in (1, 2, 3)
        tried = dep["microbatches_auto_tpot_s"]
        assert str(chosen) == min(tried, key=lambda k: (tried[k], int(k)))
        explicit = json.loads(run("--batch", batch, "--microbatches", str(chosen), "--format", "json"))
        assert "microbatches_auto" not in explicit["deployment"]  # explicit output is unchanged
        for k in ("deployment", "kind"):
            auto.pop(k), explicit.pop(k)
        assert auto == explicit  # same numbers as asking for the chosen count
        md = run("--batch", batch, "--format", "markdown")
        assert (
            f"{chosen} microbatch{'es' if chosen > 1 else ''} (auto)" in md
            and "| microbatches (auto: lowest TPOT) |" in md
        )
        assert f"{chosen} microbatch{'es' if chosen > 1 else ''} (auto)" in run("--batch", batch)
    assert "(auto)" not in run("--microbatches", "2", "--format", "markdown")
    bad = CliRunner().invoke(main, ["decode", "--microbatches", "two"])
    assert bad.exit_code == 2 and bad.output.strip().splitlines() == [
        "cmperf: error: --microbatches: 'two' is not a count; give auto or 1, 2, 3, 4"
    ]


def test_scenario_accepts_auto(tmp_path):
    import json
    from pathlib import Path

    from click.testing import CliRunner

    from cmperf.cli import main

    src = Path(__file__).resolve().parent.parent / "scenarios" / "cm384-decode-15ms.toml"
    text = src.read_text().replace("microbatches = 2", 'microbatches = "auto"')
    text = text.replace('name = "cm384-decode-15ms"', 'name = "auto-mb"')
    assert 'microbatches = "auto"' in text
    (tmp_path / "auto-mb.toml").write_text(text)
    r = CliRunner().invoke(main, ["decode", "--scenario", str(tmp_path / "auto-mb.toml"), "--format", "json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["deployment"]["microbatches_auto"] is True
    r2 = CliRunner().invoke(
        main,
        ["decode", "--scenario", str(tmp_path / "auto-mb.toml"), "--microbatches", "3", "--format", "json"],
    )
    assert json.loads(r2.output)["deployment"]["microbatches"] == 3  # the flag overrides the file


# ---------- step composition: the list schedule (cmperf.step) and the coarse "ideal" period


def test_streams_report_list_schedule_and_ideal_periods(cm384, r1):
    from cmperf import specs
    from cmperf.deployment import default_precision

    p = decode.predict(cm384, r1, ddep(microbatches=2))
    moe = p.streams["moe"]
    # split cores, [attention][MoE] per layer: the list schedule's steady state is the coarse period
    assert moe["period_s"] == pytest.approx(moe["ideal_period_s"], rel=1e-12)
    assert moe["binding"] == moe["ideal_binding"] == "attention stream"
    assert p.moe_layer_s == moe["period_s"]
    # the step differs from the coarse sum by fill, drain and the stage boundaries only (+0.6% here)
    ideal = sum(s["count"] * s["ideal_period_s"] for s in p.streams.values())
    assert p.step_s == pytest.approx(ideal, rel=0.01) and p.step_s > ideal
    h800 = specs.load_system("dgx-h800")
    dep = ddep(
        devices=144, ep_size=144, batch_per_device=64, microbatches=2, precision=default_precision(h800)
    )
    g = decode.predict(h800, r1, dep)
    # compute-comm: the combine waits behind the short expert segment, the period exceeds the coarse max
    assert g.streams["moe"]["period_s"] > 1.2 * g.streams["moe"]["ideal_period_s"]
    assert g.streams["head"]["period_s"] == g.streams["head"]["ideal_period_s"]  # serial stage
    assert g.lower_tpot_s < g.tpot_s < g.upper_tpot_s


def test_straggler_kv_len_worked_number_and_limits():
    # CM384 batch 96, 2 microbatches: 24 sequences per die and microbatch, EP320; outputs of 1,024 tokens at
    # uniformly spread positions around a 4,608 mean: CV = 1024 / sqrt(12) / 4608 = 0.0642
    assert float(decode.expected_max_normal(320)) == pytest.approx(2.898, rel=0.01)  # quadrature value
    assert float(decode.expected_max_normal(1)) == 0.0
    kv = float(decode.straggler_kv_len(4608.0, 1024 / 12**0.5 / 4608, 24, 320))
    assert kv == pytest.approx(4608 * (1 + 2.898 * 0.0642 / 24**0.5), rel=2e-3)  # ~4,782
    assert float(decode.straggler_kv_len(4608.0, 0.0, 24, 320)) == 4608.0
    more_ranks = decode.straggler_kv_len(4096.0, 0.3, 24, np.array([8.0, 64.0, 320.0]))
    assert np.all(np.diff(more_ranks) > 0)  # the slowest of more ranks is slower


def test_kv_spread_slows_attention_bound_decode(cm384, r1):
    cv = np.array([0.0, 0.1, 0.3, 1.0])
    ev = decode.evaluate(cm384, r1, ddep(batch_per_device=96, kv_len=4096, ep_size=320, kv_cv=cv))
    t = np.asarray(ev.tpot_s)
    assert np.all(np.diff(t) > 0)
    # memory holds the mean KV: the spread changes time, not capacity
    assert np.all(np.asarray(ev.hbm_bytes_per_rank) == np.asarray(ev.hbm_bytes_per_rank).reshape(-1)[0])
    r = CliRunner().invoke(
        main, ["decode", "--prompt-len", "4096", "--output-len", "1024", "--format", "json"]
    )
    d = json.loads(r.output)
    assert d["deployment"]["kv_cv"] == pytest.approx(1024 / 12**0.5 / 4608, rel=1e-9)
    assert d["straggler_kv_len"] > d["deployment"]["kv_len"] == 4608


def test_step_overhead_knob_reaches_every_caller(cm384, r1, tmp_path):
    """A knob is a record field, the code that reads it and its flag: the scenario file, the search grid and
    the serving pools get it through the record. 0.7 ms per step (CM384 §5.4.2 names graph dispatch at
    0.6-0.8 ms) adds 0.7/1.7 = 0.41 ms to TPOT at MTP 1 @ 0.7."""
    import json
    from dataclasses import replace

    from click.testing import CliRunner

    from cmperf import search
    from cmperf.cli import main

    base = decode.predict(cm384, r1, ddep())
    slow = decode.predict(cm384, r1, ddep(step_overhead_s=0.7e-3))
    assert slow.tpot_s - base.tpot_s == pytest.approx(0.7e-3 / 1.7, rel=1e-9)
    assert slow.lower_tpot_s - base.lower_tpot_s == pytest.approx(0.7e-3 / 1.7, rel=1e-9)
    assert [r.name for r in slow.ops if r.stage == "step"] == ["step.overhead"]
    # the flag (a unit is required) and a scenario's [deployment] field give the same number
    run = CliRunner().invoke
    flag = json.loads(
        run(main, ["decode", "--microbatches", "2", "--step-overhead", "0.7ms", "--format", "json"]).stdout
    )
    sc = tmp_path / "slow.toml"
    sc.write_text(
        'name = "slow"\ncommand = "decode"\n[deployment]\nmicrobatches = 2\nstep_overhead_s = 0.0007\n'
    )
    file = json.loads(run(main, ["decode", "--scenario", str(sc), "--format", "json"]).stdout)
    assert flag["tpot_s"] == file["tpot_s"] == pytest.approx(slow.tpot_s, rel=1e-11)
    bad = run(main, ["decode", "--step-overhead", "0.7"])
    assert bad.exit_code == 2 and "--step-overhead: '0.7' has no unit" in bad.stderr
    # the search evaluates the base record's knob on every grid point
    res, _ = search.search_decode(
        cm384,
        r1,
        prompt_len=4096,
        output_len=256,
        tpot_slo_s=0.05,
        base=ddep(step_overhead_s=0.7e-3),
        top_k=1,
    )
    c = res.best
    one = decode.evaluate(
        cm384, r1, replace(search.config_deployment(res_base(r1, cm384), c), step_overhead_s=0.7e-3)
    )
    assert float(one.tpot_s) == pytest.approx(c.tpot_s, rel=1e-12)


def res_base(r1, cm384):
    """The base record search_decode builds from a workload of 4096 + 256 tokens."""
    from dataclasses import replace

    from cmperf.deployment import kv_lengths

    kv, cap, cv = kv_lengths(r1, 4096, 256)
    return replace(ddep(), kv_len=kv, kv_capacity_len=cap, kv_cv=cv)
